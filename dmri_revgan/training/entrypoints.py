"""The training entry point: a 3D model from a data manifest or a 2D model from pix2pix /
CycleGAN image folders, new or resumed, with the run folder's files and a summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from dmri_revgan.config import Config
from dmri_revgan.errors import InputError
from dmri_revgan.model import load_resume_state
from dmri_revgan.training.distributed import distributed_session, rank
from dmri_revgan.training.run_files import orientation, provenance, write_run_files
from dmri_revgan.training.trainer import Trainer
from dmri_revgan.training.validation import ValidationVolume, load_validation


@dataclass
class TrainingData:
    """What a run trains on (normalised patches or images), its per-channel statistics (C,)
    in mm²/s, its validation volumes and what the run records about the data."""

    train_set: Dataset
    mean: np.ndarray
    std: np.ndarray
    validation: list[ValidationVolume]
    provenance: dict[str, Any]


def run_training(
    cfg: Config,
    run_dir: Path,
    resume: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    argv: Sequence[str] = (),
) -> dict[str, Any]:
    """Train (or resume from ``resume``) the model of ``cfg``: 3D from ``cfg.data.manifest``,
    2D from the image folder ``cfg.data.root``.

    Returns a summary; with validation subjects, also the last validation RMSE (10⁻⁵ mm²/s) of
    the model and of cubic / edge-aware cubic interpolation on the same subjects and masks.
    """
    with distributed_session(device):
        ckpt = load_resume_state(resume) if resume is not None else None
        data = (_images if cfg.model.spatial_dims == 2 else _manifest)(cfg, ckpt, argv)
        trainer = Trainer(
            cfg, run_dir, data.train_set, data.mean, data.std, data.validation, device, progress,
            data.provenance,
        )  # fmt: skip
        if ckpt is not None and resume is not None:
            trainer.load_state(ckpt, resume)
            if rank() == 0:  # what a killed writer left half-done: never read, now removed
                for stale in (run_dir / "checkpoints").glob(".*tmp*"):
                    stale.unlink(missing_ok=True)
        if trainer.memory is not None:  # the plan this run (or the run it resumes) steps by
            data.provenance["memory_plan"] = trainer.memory.to_dict()
            if rank() == 0 and progress:
                print(trainer.memory.line(), flush=True)
        write_run_files(cfg, run_dir, trainer.mean, trainer.std, data.provenance)
        rows = trainer.fit()
        summary: dict[str, Any] = {
            "run_dir": str(run_dir),
            "epochs": trainer.epoch,
            "train_samples": len(data.train_set),
            "patches_per_s": float(np.mean([r["patches_per_s"] for r in rows])) if rows else None,
            "patches_per_volume": getattr(data.train_set, "patches_per_volume", None),
        }
        if data.validation and rows:
            last = rows[-1]
            summary["model"] = {
                k.removeprefix("val_rmse_"): last[k] for k in last if k.startswith("val_rmse_")
            }
            summary |= _baselines(data.validation, cfg.data.factor)
        return summary


def _manifest(cfg: Config, ckpt: dict[str, Any] | None, argv: Sequence[str]) -> TrainingData:
    """Patches of the manifest's train split (statistics from it, or from the resume state)
    and its val split for validation."""
    from dmri_revgan.data.manifest import read_manifest
    from dmri_revgan.data.patches import Normalisation, compute_normalisation, make_patch_dataset

    manifest = Path(cfg.data.manifest)
    records = read_manifest(manifest)
    train_records = [r for r in records if r.split == "train"]
    if not train_records:
        raise InputError(manifest, "no subjects in the train split")
    if ckpt is not None:
        norm = Normalisation.from_dict(ckpt["normalisation"])
    else:
        norm = compute_normalisation(train_records)
    d = cfg.data
    train_set = make_patch_dataset(
        train_records,
        patch_size=d.patch_size,
        sampler=d.sampler,
        stride=d.stride,
        min_brain_fraction=d.min_brain_fraction,
        samples_per_volume=d.samples_per_volume,
        seed=cfg.seed,
        normalisation=norm,
        augment=d.augment,
        input=d.input,
    )
    return TrainingData(
        train_set,
        np.asarray(norm.mean, np.float32),
        np.asarray(norm.std, np.float32),
        load_validation([r for r in records if r.split == "val"]),
        provenance(cfg, manifest, argv) | {"orientation": orientation(train_records)},
    )


def _images(cfg: Config, ckpt: dict[str, Any] | None, argv: Sequence[str]) -> TrainingData:
    """A pix2pix (paired) or CycleGAN (unpaired) image folder, images in [-1, 1]."""
    from dmri_revgan.data.images import AlignedImages, UnalignedImages

    d = cfg.data
    if d.root is None:
        raise InputError("data.root", "a 2D config needs the image folder (--data DIR)")
    kind = AlignedImages if cfg.loss.objective == "paired" else UnalignedImages
    train_set = kind(Path(d.root), "train", d.direction, d.image_size, d.load_size, seed=cfg.seed)
    channels = cfg.model.in_channels
    return TrainingData(
        train_set, np.zeros(channels), np.ones(channels), [], provenance(cfg, None, argv)
    )


def _baselines(validation: Sequence[ValidationVolume], factor: int) -> dict[str, Any]:
    """Mean validation RMSE of cubic and edge-aware cubic interpolation of each LR input."""
    from dmri_revgan.data.degrade import interpolate
    from dmri_revgan.metrics import region_rmse

    out = {}
    for method in ("cubic", "edge_cubic"):
        scores = [
            region_rmse(
                interpolate(np.moveaxis(v.lr.tensor, -1, 0), factor, method, v.lr.mask),
                v.target,
                v.mask,
            )
            for v in validation
        ]
        out[method] = {k: float(np.mean([s[k] for s in scores])) for k in scores[0]}
    return out
