"""Full-volume inference with MONAI's sliding-window inferer.

The network is trained on 24³ patches and InstanceNorm statistics are per patch, so full volumes
are processed as overlapping ROI windows blended with gaussian weights: memory stays bounded by
``sw_batch`` windows whatever the volume size.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from dmri_revgan.config import Config
from dmri_revgan.errors import InputError
from dmri_revgan.nets.generators import RevGenerator

DIRECTIONS = ("up", "down")


def predict_volume(
    gen: RevGenerator,
    volume: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    direction: str = "up",
    roi: int = 24,
    overlap: float = 0.5,
    sw_batch: int = 4,
    device: str | torch.device = "cpu",
    mode: str = "gaussian",
) -> np.ndarray:
    """Run F ("up": LR-on-HR-grid → HR) or G ("down": HR → LR-on-HR-grid) over a whole volume.

    Args:
        volume: (C, X, Y, Z) tensor volume in mm²/s, channels first, on the HR grid.
        mean, std: per-channel normalisation statistics (C,), mm²/s, saved with the model.
        roi, overlap, sw_batch, mode: MONAI sliding-window settings (window edge in voxels,
            fractional overlap, windows per forward pass, "gaussian" or "constant" blending).

    Returns: (C, X, Y, Z) float32 in mm²/s.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    run = gen.forward if direction == "up" else gen.reverse
    shift = torch.as_tensor(np.asarray(mean, np.float32)).view(-1, 1, 1, 1)
    scale = torch.as_tensor(np.asarray(std, np.float32)).view(-1, 1, 1, 1)
    x = (torch.as_tensor(np.asarray(volume, np.float32)) - shift) / scale
    was_training = gen.training
    gen.eval()
    try:
        with torch.inference_mode():
            out = sliding_window_inference(
                x[None],
                roi_size=(roi,) * (x.ndim - 1),
                sw_batch_size=sw_batch,
                predictor=run,
                overlap=overlap,
                mode=mode,
                sw_device=device,
                device="cpu",
                progress=False,
            )[0]
    finally:
        gen.train(was_training)
    return (out * scale + shift).numpy()


@dataclass
class LoadedModel:
    """A trained generator with what inference needs from its checkpoint."""

    gen: RevGenerator
    cfg: Config
    mean: np.ndarray  # (C,) mm²/s
    std: np.ndarray  # (C,) mm²/s
    path: Path
    sha256: str


def load_model(path: Path, device: str = "cpu") -> LoadedModel:
    """Load a run folder (its best.pt, else last.pt) or a checkpoint file.

    A checkpoint whose weights do not fit the architecture its config describes is reported as
    "from another architecture" — one line, no traceback.
    """
    from dmri_revgan.config import config_from_dict
    from dmri_revgan.train import build_generator, load_checkpoint

    if path.is_dir():
        best = path / "checkpoints" / "best.pt"
        path = best if best.is_file() else path / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    try:
        cfg = config_from_dict(ckpt["config"])
        gen = build_generator(cfg)
        gen.load_state_dict(ckpt["generator"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise InputError(path, "checkpoint from another architecture or version") from exc
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    norm = ckpt["normalisation"]
    return LoadedModel(
        gen.to(device).eval(),
        cfg,
        np.asarray(norm["mean"], np.float32),
        np.asarray(norm["std"], np.float32),
        path,
        digest,
    )


@dataclass
class TensorInput:
    """A tensor volume read from the user's input, on its own (LR) grid."""

    tensor: np.ndarray  # (X, Y, Z, 6) FSL order, mm²/s
    mask: np.ndarray  # (X, Y, Z) bool
    image: Any  # the nibabel image whose header and orientation the outputs keep
    source: Path


def _beside(path: Path, names: tuple[str, ...]) -> Path | None:
    """The first existing file among ``names`` next to ``path`` (``{stem}`` = name sans .nii.gz)."""
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    for name in names:
        candidate = path.parent / name.format(stem=stem)
        if candidate.is_file():
            return candidate
    return None


def read_tensor_input(path: Path, order: str = "fsl", mask: Path | None = None) -> TensorInput:
    """Read INPUT as ``infer`` accepts it: a 6-channel tensor NIfTI (FSL order, or dipy with
    ``order="dipy"``), a 4D DWI with .bval/.bvec (or bvals/bvecs) beside it (the tensor is fitted
    first), or an HCP subject folder (``<subject>/T1w/Diffusion``)."""
    from dmri_revgan import dti, io

    if path.is_dir():
        folder = path / "T1w" / "Diffusion" if (path / "T1w").is_dir() else path
        path = folder / "data.nii.gz"
        if not path.is_file():
            raise InputError(path, "no such file (expected an HCP subject folder)")
    data, image = io.read_nifti(path, ndim=4)
    bval = _beside(path, ("{stem}.bval", "bvals", "{stem}.bvals"))
    if bval is not None:
        bvec = _beside(path, ("{stem}.bvec", "bvecs", "{stem}.bvecs"))
        if bvec is None:
            raise InputError(path, f"{bval.name} found but no .bvec/bvecs beside it")
        bvals, bvecs = io.read_bvals_bvecs(bval, bvec, data.shape[-1])
        given_mask = _read_mask(mask, data.shape[:3]) if mask else None
        brain = given_mask if given_mask is not None else dti.brain_mask(data, bvals)
        tensor, _, _ = dti.fit_tensor(data, bvals, bvecs, brain)
        return TensorInput(tensor, brain, image, path)
    if data.shape[-1] != 6:
        raise InputError(
            path,
            f"has {data.shape[-1]} volumes: expected a 6-channel tensor, or a DWI with "
            ".bval/.bvec beside it",
        )
    bad = int((~np.isfinite(data)).any(-1).sum())
    if bad:
        raise InputError(path, f"{bad} voxels contain NaN or Inf")
    tensor = dti.dipy_to_fsl(data) if order == "dipy" else data
    brain = _read_mask(mask, data.shape[:3]) if mask else np.abs(tensor).sum(-1) > 0
    return TensorInput(tensor, brain, image, path)


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from dmri_revgan import io

    data, _ = io.read_nifti(path)
    if data.shape[:3] != tuple(shape):
        raise InputError(path, f"mask shape {data.shape} does not match the input grid {shape}")
    return data.reshape(shape) > 0


def default_output(source: Path, direction: str) -> Path:
    """``subject.nii.gz`` → ``subject_sr.nii.gz`` (up) or ``subject_lr.nii.gz`` (down); an HCP
    folder ``…/100307`` → ``…/100307_sr.nii.gz`` beside it."""
    suffix = "_sr" if direction == "up" else "_lr"
    if source.name == "data.nii.gz" and source.parent.name == "Diffusion":
        subject = source.parent.parent.parent
        return subject.parent / f"{subject.name}{suffix}.nii.gz"
    stem = source.name.removesuffix(".gz").removesuffix(".nii")
    return source.parent / f"{stem}{suffix}.nii.gz"


def infer_volume(
    model: LoadedModel,
    data: TensorInput,
    direction: str = "up",
    roi: int = 24,
    overlap: float = 0.5,
    sw_batch: int = 4,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Super-resolve (up) or degrade (down) a tensor volume; returns ((X, Y, Z, 6), affine).

    up: nearest-neighbour ×r onto the HR grid, F, zero outside the (upsampled) mask; the HR affine
    puts each HR voxel centre where the LR/HR relation of ``data/degrade.py`` says.
    down: G on the HR grid, then the mean of each r³ block, on the LR grid with its affine.
    """
    from dmri_revgan.data.degrade import hr_affine, lr_affine, upsample

    r = model.cfg.data.factor
    affine = data.image.affine
    x = np.moveaxis(data.tensor, -1, 0)
    if direction == "up":
        x = upsample(x, r, 0)
        mask = upsample(data.mask[None], r, 0)[0]
        out_affine = hr_affine(affine, r)
    else:
        mask = data.mask
        out_affine = affine
    out = predict_volume(
        model.gen, x, model.mean, model.std, direction, roi, overlap, sw_batch, device
    )
    out *= mask[None]
    if direction == "down":
        c, *shape = out.shape
        crop = [s - s % r for s in shape]
        out = out[:, : crop[0], : crop[1], : crop[2]]
        out = out.reshape(c, crop[0] // r, r, crop[1] // r, r, crop[2] // r, r).mean((2, 4, 6))
        out_affine = lr_affine(affine, r)
    return np.moveaxis(out, 0, -1).astype(np.float32), out_affine


def run_inference(
    source: Path,
    model_path: Path,
    output: Path | None = None,
    mask: Path | None = None,
    direction: str = "up",
    order: str = "fsl",
    roi: int = 24,
    overlap: float = 0.5,
    sw_batch: int = 4,
    device: str = "cpu",
    maps: bool = False,
) -> list[Path]:
    """The ``infer`` command for 3D inputs: read, check, predict, write atomically + sidecar.

    Nothing is written unless every check passed and every output was computed.
    """
    import json

    from dmri_revgan import __version__, io
    from dmri_revgan.dti import colour_fa, fa_md

    if direction not in DIRECTIONS:
        raise InputError(source, f"--direction must be one of {DIRECTIONS}")
    if not source.exists():
        raise InputError(source, "no such file or folder")
    if output is not None and output.resolve() == source.resolve():
        raise InputError(output, "output path equals the input; choose another --output")
    model = load_model(model_path, device)
    if model.cfg.model.spatial_dims == 2:
        return translate_images(source, model, output, direction, device)
    data = read_tensor_input(source, order, mask)
    output = output or default_output(source, direction)
    if output.resolve() == data.source.resolve():
        raise InputError(output, "output path equals the input; choose another --output")
    tensor, affine = infer_volume(model, data, direction, roi, overlap, sw_batch, device)
    stem = output.name.removesuffix(".gz").removesuffix(".nii")
    volumes = {output: tensor}
    if maps:
        fa, md = fa_md(tensor)
        volumes[output.with_name(f"{stem}_FA.nii.gz")] = fa
        volumes[output.with_name(f"{stem}_MD.nii.gz")] = md
        volumes[output.with_name(f"{stem}_colFA.nii.gz")] = colour_fa(tensor)
    for path, volume in volumes.items():
        io.save_nifti(path, volume, affine, data.image.header)
    sidecar = output.with_name(f"{stem}.json")
    io.write_text_atomic(
        sidecar,
        json.dumps(
            {
                "Description": "dmri-revgan "
                + ("super-resolved" if direction == "up" else "synthesised low-resolution")
                + " tensor",
                "TensorOrder": "FSL (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz)",
                "Units": "mm^2/s",
                "Direction": direction,
                "Model": str(model.path.resolve()),
                "ModelSHA256": model.sha256,
                "ModelConfig": model.cfg.name,
                "ToolVersion": __version__,
                "Input": str(data.source.resolve()),
                "SlidingWindow": {
                    "roi": roi,
                    "overlap": overlap,
                    "batch": sw_batch,
                    "blending": "gaussian",
                },
            },
            indent=2,
        ),
    )
    return [*volumes, sidecar]


def translate_images(
    source: Path,
    model: LoadedModel,
    output: Path | None = None,
    direction: str = "up",
    device: str = "cpu",
) -> list[Path]:
    """The ``infer`` command for 2D models: translate a PNG/JPEG image or a folder of them with
    F ("up": the config's A→B) or G ("down": B→A), at the config's ``image_size``.

    A file ``photo.png`` → ``photo_AtoB.png`` beside it (``_BtoA`` for down); a folder ``dir`` →
    ``dir_AtoB/`` with the same file names as PNG. Every input is read before anything is
    written; each output is written to a temporary file and renamed.
    """
    from PIL import Image

    from dmri_revgan.data.images import EXTENSIONS, list_images, read_rgb, to_tensor, to_uint8
    from dmri_revgan.io import atomic_path

    d = model.cfg.data
    tag = d.direction if direction == "up" else {"AtoB": "BtoA", "BtoA": "AtoB"}[d.direction]
    if source.is_dir():
        files = list_images(source)
        folder = output or source.parent / f"{source.name}_{tag}"
        targets = [folder / f"{f.stem}.png" for f in files]
    else:
        if source.suffix.lower() not in EXTENSIONS:
            raise InputError(source, f"not a {'/'.join(EXTENSIONS)} image for a 2D model")
        files = [source]
        targets = [output or source.with_name(f"{source.stem}_{tag}.png")]
    resolved = {f.resolve() for f in files}
    clash = [t for t in targets if t.resolve() in resolved]
    if clash:
        raise InputError(clash[0], "output path equals an input; choose another --output")
    size = d.image_size
    images = [
        np.asarray(Image.fromarray(read_rgb(f)).resize((size, size), Image.BICUBIC)) for f in files
    ]
    run = model.gen.forward if direction == "up" else model.gen.reverse
    outputs = []
    with torch.inference_mode():
        for image in images:
            x = to_tensor(np.array(image))[None].to(device)
            outputs.append(to_uint8(run(x)[0]))
    for target, result in zip(targets, outputs, strict=True):
        with atomic_path(target) as tmp:
            Image.fromarray(result).save(tmp)
    return targets
