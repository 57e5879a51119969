"""Training samples: (input, target, mask) 24³ patches on the HR grid.

input = the LR tensor upsampled ×r by nearest neighbour (the paper's setting), target = the HR
tensor, both channels first (6, X, Y, Z) and normalised per channel with statistics of the
training split's brain voxels. Patches with less than ``min_brain_fraction`` brain voxels are
skipped. Samplers: a grid (MONAI's ``dense_patch_slices``, configurable stride), "random"
(patches centred on random brain voxels) and "corner" (uniformly random corners, kept when they
hold enough brain); random positions are new every epoch and reproducible from (seed, epoch).
With ``augment`` every patch gets a random tensor-consistent axis flip / permutation
(:func:`dmri_revgan.dti.flip_permute`), drawn from (seed, epoch, index).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from dmri_revgan.data.degrade import interpolate
from dmri_revgan.data.manifest import SubjectRecord
from dmri_revgan.dti import voxel_frame
from dmri_revgan.errors import InputError
from dmri_revgan.io import read_nifti

SAMPLERS = ("grid", "random", "corner")


def load_lr(record: SubjectRecord) -> np.ndarray:
    """The LR tensor of a manifest record, channels first (6, x, y, z), mm²/s."""
    lr, _ = read_nifti(record.lr_tensor, ndim=4)
    return np.moveaxis(lr, -1, 0)


def load_lr_mask(record: SubjectRecord) -> np.ndarray:
    """The LR brain mask of a manifest record, (x, y, z) bool."""
    mask, _ = read_nifti(record.lr_mask)
    return mask.reshape(mask.shape[:3]) > 0


def load_pair(record: SubjectRecord, input: str = "nearest") -> dict[str, Any]:
    """Full volumes of one subject on the HR grid: ``input`` (the LR tensor interpolated onto the
    HR grid by ``input``, see :func:`dmri_revgan.data.degrade.interpolate`) and ``target``
    (6, X, Y, Z) float32 in mm²/s, ``mask`` (1, X, Y, Z) float32, and the HR ``affine``."""
    target, mask, affine = _read_hr(record)
    lr_mask = load_lr_mask(record) if input == "edge_cubic" else None
    x = interpolate(load_lr(record), record.factor, input, lr_mask)
    if x.shape != target.shape:
        raise InputError(
            record.lr_tensor,
            f"LR grid ×{record.factor} = {x.shape[1:]} does not match HR grid {target.shape[1:]}",
        )
    return {"input": x, "target": target, "mask": mask.astype(np.float32)[None], "affine": affine}


def load_hr(record: SubjectRecord) -> tuple[np.ndarray, np.ndarray]:
    """The HR tensor (6, X, Y, Z) in mm²/s and the HR brain mask (X, Y, Z) bool of a subject."""
    target, mask, _ = _read_hr(record)
    return target, mask


def _read_hr(record: SubjectRecord) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    target, image = read_nifti(record.hr_tensor, ndim=4)
    mask, _ = read_nifti(record.hr_mask)
    target = np.moveaxis(target, -1, 0)
    return target, mask.reshape(target.shape[1:]) > 0, image.affine


@dataclass
class Normalisation:
    """Per-channel mean and standard deviation (mm²/s) applied as (x − mean) / std."""

    mean: list[float]
    std: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "unit": "mm^2/s"}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Normalisation:
        return cls(list(values["mean"]), list(values["std"]))

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """(C, ...) mm²/s → normalised."""
        shape = (-1,) + (1,) * (volume.ndim - 1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        return (volume - mean) / np.asarray(self.std, np.float32).reshape(shape)

    def invert(self, volume: np.ndarray) -> np.ndarray:
        """Normalised (C, ...) → mm²/s."""
        shape = (-1,) + (1,) * (volume.ndim - 1)
        std = np.asarray(self.std, np.float32).reshape(shape)
        return volume * std + np.asarray(self.mean, np.float32).reshape(shape)


def compute_normalisation(records: Sequence[SubjectRecord]) -> Normalisation:
    """Statistics of the HR tensors over the brain voxels of ``records``, in each grid's own
    frame as the network sees them (pass only training subjects, so no validation or test
    information leaks into the model)."""
    total = np.zeros(6)
    squares = np.zeros(6)
    count = 0
    for record in records:
        target, mask, affine = _read_hr(record)
        values = voxel_frame(target, affine)[:, mask].T.astype(np.float64)
        total += values.sum(0)
        squares += (values**2).sum(0)
        count += len(values)
    if count == 0:
        raise InputError(records[0].hr_mask if records else "manifest", "no brain voxels")
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0)) + 1e-12
    return Normalisation(mean.tolist(), std.tolist())


class PatchDataset(Dataset):
    """Patches of several subjects held in memory (normalised float32).

    Items are ``{"input", "target": (6, P, P, P), "mask": (1, P, P, P)}`` tensors. Volumes smaller
    than a patch are zero-padded (mask 0) at their high end.
    """

    def __init__(
        self,
        volumes: Sequence[dict[str, np.ndarray]],
        patch_size: int,
        sampler: str,
        stride: int | None,
        min_brain_fraction: float,
        samples_per_volume: int,
        seed: int,
        augment: bool = False,
        normalisation: Normalisation | None = None,
    ) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"data.sampler must be one of {SAMPLERS}, got {sampler!r}")
        self.patch = (patch_size,) * 3
        self.sampler, self.seed, self.epoch = sampler, seed, 0
        self.min_brain = min_brain_fraction * patch_size**3
        self.samples_per_volume = samples_per_volume
        self.augment, self.normalisation = augment, normalisation
        self.volumes = [self._pad(v) for v in volumes]
        self.stride = stride or patch_size
        self.index: list[tuple[int, tuple[slice, ...]]] = []
        self.set_epoch(0)

    def _pad(self, volume: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        shape = volume["mask"].shape[1:]
        pad = [(0, 0)] + [(0, max(0, p - s)) for p, s in zip(self.patch, shape, strict=True)]
        return {k: np.pad(volume[k], pad) for k in ("input", "target", "mask")}

    def _brainy(self, v: int, window: tuple[slice, ...]) -> bool:
        return self.volumes[v]["mask"][(0, *window)].sum() >= self.min_brain

    def set_epoch(self, epoch: int) -> None:
        """Grid: fixed patches; random: ``samples_per_volume`` new brain patches per volume,
        drawn from (seed, epoch)."""
        from monai.data.utils import dense_patch_slices

        self.epoch = epoch
        if self.sampler == "grid" and self.index:
            return
        index = []
        for v, volume in enumerate(self.volumes):
            shape = volume["mask"].shape[1:]
            if self.sampler == "grid":
                windows = dense_patch_slices(shape, self.patch, (self.stride,) * 3)
                index += [(v, w) for w in windows if self._brainy(v, w)]
                continue
            rng = np.random.default_rng((self.seed, epoch, v))
            brain = np.argwhere(volume["mask"][0] > 0)
            found = 0
            for _ in range(20 * self.samples_per_volume):
                if found == self.samples_per_volume or len(brain) == 0:
                    break
                if self.sampler == "corner":
                    start = [
                        int(rng.integers(s - p + 1)) for p, s in zip(self.patch, shape, strict=True)
                    ]
                else:
                    centre = brain[rng.integers(len(brain))]
                    start = [
                        int(np.clip(c - p // 2, 0, s - p))
                        for c, p, s in zip(centre, self.patch, shape, strict=True)
                    ]
                window = tuple(slice(s, s + p) for s, p in zip(start, self.patch, strict=True))
                if self._brainy(v, window):
                    index.append((v, window))
                    found += 1
        self.index = index

    @property
    def patches_per_volume(self) -> float:
        """Mean number of (brain) patches per volume."""
        return len(self.index) / max(len(self.volumes), 1)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        v, window = self.index[i]
        volume = self.volumes[v]
        item = {k: volume[k][(slice(None), *window)] for k in ("input", "target", "mask")}
        if self.augment:
            item = self._augment(item, np.random.default_rng((self.seed, self.epoch, i, 1)))
        return {k: torch.from_numpy(np.ascontiguousarray(a)) for k, a in item.items()}

    def _augment(self, item: dict[str, np.ndarray], rng: np.random.Generator) -> dict:
        """A random axis permutation and flips, tensors turned with the grid in mm²/s (the
        per-channel normalisation does not commute with the component sign flips)."""
        from dmri_revgan.dti import flip_permute, turn_grid

        perm = tuple(int(p) for p in rng.permutation(3))
        flips = tuple(bool(f) for f in rng.integers(0, 2, 3))
        norm = self.normalisation
        out = {}
        for key in ("input", "target"):
            physical = norm.invert(item[key]) if norm is not None else item[key]
            turned = flip_permute(physical, perm, flips)  # type: ignore[arg-type]
            out[key] = norm.apply(turned) if norm is not None else turned
        out["mask"] = turn_grid(item["mask"], perm, flips)
        return {k: np.ascontiguousarray(a, dtype=np.float32) for k, a in out.items()}


def make_patch_dataset(
    records: Sequence[SubjectRecord],
    patch_size: int = 24,
    sampler: str = "grid",
    stride: int | None = None,
    min_brain_fraction: float = 0.01,
    samples_per_volume: int = 64,
    seed: int = 0,
    normalisation: Normalisation | None = None,
    augment: bool = False,
    input: str = "nearest",
) -> PatchDataset:
    """Load the subjects' volumes (``input`` interpolation, in their grid's own tensor frame,
    :func:`dmri_revgan.dti.voxel_frame`; normalised if given) and index their brain patches."""
    volumes = []
    for record in records:
        pair = load_pair(record, input)
        for key in ("input", "target"):
            pair[key] = voxel_frame(pair[key], pair["affine"])
        if normalisation is not None:
            pair["input"] = normalisation.apply(pair["input"])
            pair["target"] = normalisation.apply(pair["target"])
        volumes.append(pair)
    return PatchDataset(
        volumes,
        patch_size,
        sampler,
        stride,
        min_brain_fraction,
        samples_per_volume,
        seed,
        augment,
        normalisation,
    )
