"""2D image datasets in the pix2pix / CycleGAN folder formats (Cityscapes, Maps).

- aligned: ``<root>/<phase>/*.png|jpg``, each file the A and B images side by side (A | B);
- unaligned: ``<root>/<phase>A/*`` and ``<root>/<phase>B/*``, unrelated images of each domain.

Training items are resized to ``load_size``, randomly cropped to ``image_size`` and flipped
horizontally with probability ½ (the same crop and flip for A and B, as pix2pix does); evaluation
items are resized to ``image_size``. Pixels are scaled to [-1, 1] (the generators end in Tanh).
Items are ``{"input": (3, S, S), "target": (3, S, S), "path": str}``; ``direction="BtoA"`` swaps
the domains. Randomness depends only on (seed, epoch, index): reproducible and resumable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from dmri_revgan.errors import InputError

EXTENSIONS = (".png", ".jpg", ".jpeg")
DIRECTIONS = ("AtoB", "BtoA")


def list_images(folder: Path) -> list[Path]:
    """Sorted image files of a folder; a one-line error when it is missing or empty."""
    if not folder.is_dir():
        raise InputError(folder, "no such image folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    if not files:
        raise InputError(folder, f"no {'/'.join(EXTENSIONS)} images")
    return files


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8; a one-line error when the file is not a readable image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(path, f"not a readable image ({exc.__class__.__name__})") from exc


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) float in [-1, 1]."""
    return torch.from_numpy(image).permute(2, 0, 1).float() / 127.5 - 1.0


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] → (H, W, 3) uint8 (rounded, clipped)."""
    values = (tensor.detach().cpu().clamp(-1, 1) + 1.0) * 127.5
    return values.round().byte().permute(1, 2, 0).numpy()


class _ImageDataset(Dataset):
    """Images of ``<root>/<phase>…`` resized to ``image_size`` (training: from ``load_size``
    with a random crop and flip per epoch and item, reproducible from ``seed``); ``train``
    defaults to ``phase == "train"``. Subclasses find their files in :meth:`_find`."""

    def __init__(
        self,
        root: Path,
        phase: str = "train",
        direction: str = "AtoB",
        image_size: int = 256,
        load_size: int | None = None,
        train: bool | None = None,
        seed: int = 0,
    ) -> None:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
        self.image_size = image_size
        self.load_size = load_size or round(image_size * 286 / 256)  # pix2pix: 286 for 256
        self.train = phase == "train" if train is None else train
        self.seed, self.epoch = seed, 0
        self._find(Path(root), phase, direction)

    def _find(self, root: Path, phase: str, direction: str) -> None:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        """Choose the random jitter of an epoch (called by the Trainer)."""
        self.epoch = epoch

    def _transform(self, images: list[np.ndarray], index: int) -> list[torch.Tensor]:
        """Resize (and for training crop + flip) several images identically."""
        from PIL import Image

        size = self.load_size if self.train else self.image_size
        resized = [
            np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in images
        ]
        if self.train:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            top, left = rng.integers(0, size - self.image_size + 1, size=2)
            flip = rng.random() < 0.5
            s = self.image_size
            resized = [im[top : top + s, left : left + s] for im in resized]
            if flip:
                resized = [im[:, ::-1] for im in resized]
        return [to_tensor(np.array(im)) for im in resized]  # copy: writable, contiguous


class AlignedImages(_ImageDataset):
    """Paired A|B images from ``<root>/<phase>/`` (pix2pix "aligned" format)."""

    def _find(self, root: Path, phase: str, direction: str) -> None:
        self.files = list_images(root / phase)
        self.swap = direction == "BtoA"

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        both = read_rgb(self.files[index])
        if both.shape[1] % 2:
            raise InputError(self.files[index], "width is odd: expected A and B side by side")
        half = both.shape[1] // 2
        a, b = self._transform([both[:, :half], both[:, half:]], index)
        if self.swap:
            a, b = b, a
        return {"input": a, "target": b, "path": str(self.files[index])}


class UnalignedImages(_ImageDataset):
    """Unpaired images from ``<root>/<phase>A/`` and ``<root>/<phase>B/`` (CycleGAN format).

    Item i pairs A[i mod |A|] with B[i mod |B|]; the Trainer draws the B side from an independent
    shuffle, so the pairs it sees are unrelated.
    """

    def _find(self, root: Path, phase: str, direction: str) -> None:
        a, b = list_images(root / f"{phase}A"), list_images(root / f"{phase}B")
        self.a_files, self.b_files = (b, a) if direction == "BtoA" else (a, b)

    def __len__(self) -> int:
        return max(len(self.a_files), len(self.b_files))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        a_path = self.a_files[index % len(self.a_files)]
        b_path = self.b_files[index % len(self.b_files)]
        (a,) = self._transform([read_rgb(a_path)], index)
        (b,) = self._transform([read_rgb(b_path)], index + len(self))
        return {"input": a, "target": b, "path": str(a_path)}
