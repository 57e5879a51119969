"""What a run folder records besides checkpoints: resolved config, normalisation statistics,
provenance, the per-epoch lines and TensorBoard scalars, the training data's orientation."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dmri_revgan.config import Config
from dmri_revgan.io import write_csv_atomic, write_text_atomic
from dmri_revgan.training.distributed import rank, world


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """One line per finished epoch (kept after the transient progress bar; readable in logs)."""
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    parts += [f"{k} {row[k]:.4g}" for k in ("loss_G", "l1_F", "cycle_X") if k in row]
    parts.append(f"{row['patches_per_s']:.2f} samples/s")
    if "val_rmse_interior" in row:
        parts.append(
            f"val RMSE interior {row['val_rmse_interior']:.3f} / total "
            f"{row['val_rmse_total']:.3f} (1e-5 mm^2/s)"
        )
    return ", ".join(parts)


def tensorboard(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))


def write_run_files(
    cfg: Config, run_dir: Path, mean: np.ndarray, std: np.ndarray, provenance: dict[str, Any]
) -> None:
    """Resolved config, normalisation statistics and provenance (rank 0)."""
    if rank() != 0:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "config.yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False),
        "normalisation.json": json.dumps(
            {"unit": "mm^2/s", "mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist()},
            indent=2,
        ),
        "provenance.json": json.dumps(provenance, indent=2, default=str),
    }
    for name, text in files.items():
        write_text_atomic(run_dir / name, text)


def provenance(cfg: Config, manifest: Path | None, argv: Sequence[str]) -> dict[str, Any]:
    """What a run folder records to be reproducible: command, seed, versions, manifest checksum."""
    import hashlib
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for package in ("dmri-revgan", "torch", "monai", "dipy", "nibabel", "numpy", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "command": list(argv),
        "seed": cfg.seed,
        "manifest": str(manifest.resolve()) if manifest else None,
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest else None,
        "data_root": cfg.data.root,
        "versions": versions,
        "python": platform.python_version(),
        "world_size": world(),
    }


def orientation(records: Sequence[Any]) -> str:
    """The voxel-axis orientation (e.g. "LAS") of most training volumes: inference re-orients
    inputs to it, so the network always sees the layout (and tensor frame) it learned."""
    import nibabel as nib

    codes = ["".join(nib.aff2axcodes(nib.load(r.hr_tensor).affine)) for r in records]
    return max(sorted(set(codes)), key=codes.count)


def log_epoch(run_dir: Path, row: dict[str, Any], writer: Any, epochs: int | None) -> None:
    """Record a finished epoch: a row of ``metrics.csv`` (rewritten atomically), TensorBoard
    scalars (``writer``, may be None) and, with ``epochs``, one printed line."""
    path = run_dir / "metrics.csv"
    rows: list[dict[str, Any]] = []
    if path.exists():
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
    rows.append(row)
    write_csv_atomic(path, rows)
    if writer is not None:
        for k, v in row.items():
            if k != "epoch":
                writer.add_scalar(k, v, int(row["epoch"]))
    if epochs is not None:
        print(epoch_line(row, epochs), flush=True)
