"""Evaluation against the interpolation baselines, on the subjects of a data manifest.

For every subject of a split: the model's super-resolved tensor and the nearest-neighbour,
trilinear and cubic-spline interpolations of the LR tensor, each compared with the HR tensor on the
same masks: tensor RMSE (interior / total / exterior, 10⁻⁵ mm²/s), FA mean absolute error and MD
RMSE (10⁻⁵ mm²/s). Written as ``metrics.json`` and ``metrics.csv``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from dmri_revgan.metrics import SCALE, UNIT, region_masks, tensor_rmse

BASELINES = {"nearest": 0, "trilinear": 1, "cubic": 3}  # spline order of each baseline


def interpolate_to_hr(lr: np.ndarray, factor: int, order: int) -> np.ndarray:
    """Interpolate a channels-first LR volume (C, x, y, z) onto the HR grid (C, r·x, r·y, r·z).

    ``grid_mode=True`` maps HR voxel centre j to LR coordinate (j − (r−1)/2) / r, matching the
    LR/HR affines of ``data/degrade.py`` (an LR voxel centre is the mean of its r³ children's);
    order 0 is nearest neighbour (each HR voxel takes its parent block's value), 1 trilinear,
    3 cubic spline. Edges are extended by replication.
    """
    return np.stack(
        [
            ndimage.zoom(c.astype(np.float64), factor, order=order, mode="nearest", grid_mode=True)
            for c in lr
        ]
    ).astype(np.float32)


def fa_md_channels_first(tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FA and MD (mm²/s) of a (6, X, Y, Z) FSL-order tensor volume."""
    from dmri_revgan.dti import fa_md

    return fa_md(np.moveaxis(tensor, 0, -1))


def compare(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Tensor RMSE per region plus FA MAE and MD RMSE (10⁻⁵ mm²/s) on interior and total."""
    regions = region_masks(mask)
    out = {name: tensor_rmse(pred, target, m) for name, m in regions.items()}
    fa_p, md_p = fa_md_channels_first(pred)
    fa_t, md_t = fa_md_channels_first(target)
    for name in ("interior", "total"):
        m = regions[name]
        out[f"fa_mae_{name}"] = float(np.abs(fa_p[m] - fa_t[m]).mean()) if m.any() else np.nan
        md_err = (md_p[m].astype(np.float64) - md_t[m]) * SCALE
        out[f"md_rmse_{name}"] = float(np.sqrt(np.mean(md_err**2))) if m.any() else np.nan
    return out


def summarise(subjects: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """{method: {metric: {"mean", "std"}}} over subjects (population std, ddof 0)."""
    methods = dict.fromkeys(m for per in subjects.values() for m in per)
    summary: dict[str, Any] = {}
    for method in methods:
        keys = dict.fromkeys(k for per in subjects.values() for k in per.get(method, {}))
        summary[method] = {
            k: {
                "mean": float(np.nanmean(values)),
                "std": float(np.nanstd(values)),
            }
            for k in keys
            for values in [[per[method][k] for per in subjects.values() if method in per]]
        }
    return summary


def write_metrics(
    subjects: dict[str, dict[str, dict[str, float]]], out_dir: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write ``metrics.json`` and ``metrics.csv`` (one row per subject and method) atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"unit": UNIT, **extra, "subjects": subjects, "summary": summarise(subjects)}
    rows = [
        {"subject": s, "method": m, **values}
        for s, per in subjects.items()
        for m, values in per.items()
    ]
    fields = list(dict.fromkeys(k for r in rows for k in r))
    json_tmp = out_dir / f".metrics.json.tmp-{os.getpid()}"
    json_tmp.write_text(json.dumps(result, indent=2))
    csv_tmp = out_dir / f".metrics.csv.tmp-{os.getpid()}"
    with csv_tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(json_tmp, out_dir / "metrics.json")
    os.replace(csv_tmp, out_dir / "metrics.csv")
    return result


def evaluate_subjects(
    records: Sequence[Any],
    predict: Callable[[Any], np.ndarray] | None,
    progress: Callable[[str], None] = lambda s: None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics of the model (``predict(record)`` → (6, X, Y, Z) mm²/s) and of every baseline."""
    from dmri_revgan.data.patches import load_pair

    subjects: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        progress(record.subject)
        pair = load_pair(record)
        target, mask = pair["target"], pair["mask"][0] > 0
        lr = load_lr(record)
        per: dict[str, dict[str, float]] = {}
        if predict is not None:
            per["model"] = compare(predict(record), target, mask)
        for name, order in BASELINES.items():
            per[name] = compare(interpolate_to_hr(lr, record.factor, order), target, mask)
        subjects[record.subject] = per
    return subjects


def load_lr(record: Any) -> np.ndarray:
    """The LR tensor of a manifest record, channels first (6, x, y, z), mm²/s."""
    import nibabel as nib

    return np.moveaxis(np.asarray(nib.load(record.lr_tensor).dataobj, np.float32), -1, 0)
