"""``prepare tensors``: HR tensor volumes (no DWIs) → the files and manifest of :mod:`prepare`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from dmri_revgan.data.degrade import block_mean, crop_to_multiple, degrade_mask
from dmri_revgan.data.prepare import (
    Outcome,
    check_mask,
    input_stamp,
    run_jobs,
    up_to_date,
    write_prepared_manifest,
    write_subject,
)
from dmri_revgan.errors import InputError
from dmri_revgan.io import read_nifti


def _subject_ids(tensors: Sequence[Path]) -> list[str]:
    """File stems (``sub-01_tensor.nii.gz`` → ``sub-01_tensor``), or the parent folder names when
    the inputs share a file name (``<subject>/dti_tensor.nii.gz``)."""
    stems = [Path(t).name.removesuffix(".gz").removesuffix(".nii") for t in tensors]
    ids = (
        stems if len(set(stems)) == len(stems) else [Path(t).resolve().parent.name for t in tensors]
    )
    if len(set(ids)) != len(ids):
        raise InputError(tensors[0], "cannot tell subjects apart by file or folder name")
    return ids


def _find_mask(tensor: Path, stem: str) -> Path | None:
    for name in ("nodif_brain_mask.nii.gz", f"{stem}_mask.nii.gz", "mask.nii.gz"):
        if (tensor.parent / name).is_file():
            return tensor.parent / name
    return None


def prepare_tensor_subject(
    subject: str,
    tensor_path: Path,
    mask_path: Path | None,
    out_dir: Path,
    order: str,
    factor: int,
    bvalue: float,
) -> Outcome:
    """Prepare one HR tensor volume: repair, crop, LR = mean of each r³ block of the tensor (the
    tensor is linear in the log-signal, so this approximates the IQT DWI averaging when no DWIs
    are available), masks on both grids. Never raises for bad input."""
    from dmri_revgan.dti import dipy_to_fsl, repair

    start = time.perf_counter()
    out = Path(out_dir) / subject
    stamp = input_stamp([tensor_path, mask_path], {"order": order, "factor": factor, "version": 1})
    done = up_to_date(out, stamp)
    if done is not None:
        return Outcome(subject, done, skipped=True)
    try:
        tensor, image = read_nifti(tensor_path, ndim=4)
        if tensor.shape[-1] != 6:
            raise InputError(
                tensor_path, f"has {tensor.shape[-1]} volumes: expected 6 tensor elements"
            )
        tensor = dipy_to_fsl(tensor) if order == "dipy" else tensor
        if mask_path is not None:
            mask = check_mask(mask_path, tensor.shape[:3], image.affine)
        else:
            mask = np.isfinite(tensor).all(-1) & (np.abs(np.nan_to_num(tensor)).sum(-1) > 0)
            mask |= ~np.isfinite(tensor).all(-1)  # non-finite voxels are repaired, not dropped
        tensor, mask = crop_to_multiple(tensor, factor), crop_to_multiple(mask, factor)
        if not mask.any():
            raise InputError(tensor_path, "no brain voxels (empty mask)")
        hr, repaired_hr = repair(tensor, mask)
        lr_mask = degrade_mask(mask, factor)
        lr, repaired_lr = repair(block_mean(np.where(mask[..., None], hr, 0.0), factor), lr_mask)
    except InputError as exc:
        return Outcome(subject, error=f"{subject}: {exc}")
    info = {
        "bvalue": bvalue,
        "repaired_hr": repaired_hr,
        "repaired_lr": repaired_lr,
        "mask_computed": mask_path is None,
        "source_order": order,
    }
    return write_subject(
        out, subject, hr, lr, mask, lr_mask, image.affine, image.header, factor, info, stamp, start
    )


def _prepare_tensor_star(args: tuple) -> Outcome:
    return prepare_tensor_subject(*args)


def prepare_tensors(
    tensors: Sequence[Path],
    out_dir: Path,
    masks: Sequence[Path] | None = None,
    order: str = "fsl",
    factor: int = 2,
    bvalue: float = 1000.0,
    workers: int = 1,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    persons: dict[str, str] | None = None,
    progress: Callable[[Outcome], None] = lambda outcome: None,
) -> tuple[list[Outcome], Path]:
    """``prepare tensors``: HR tensor volumes (FSL ``dti_tensor`` order, or dipy with
    ``order="dipy"``) → the same four files per subject and ``data_manifest.csv`` as
    :func:`prepare_hcp`. Masks: given one per tensor, else ``nodif_brain_mask.nii.gz`` /
    ``<stem>_mask.nii.gz`` beside the tensor, else its non-zero voxels."""
    if order not in ("fsl", "dipy"):
        raise InputError("--order", f"expected fsl or dipy, got {order!r}")
    if masks and len(masks) != len(tensors):
        raise InputError(masks[0], f"{len(masks)} masks for {len(tensors)} tensor files")
    ids = _subject_ids(tensors)
    jobs = []
    for i, (subject, tensor) in enumerate(zip(ids, tensors, strict=True)):
        stem = Path(tensor).name.removesuffix(".gz").removesuffix(".nii")
        mask = Path(masks[i]) if masks else _find_mask(Path(tensor), stem)
        jobs.append((subject, Path(tensor), mask, Path(out_dir), order, factor, bvalue))
    outcomes = run_jobs(_prepare_tensor_star, jobs, workers, progress)
    return outcomes, write_prepared_manifest(outcomes, Path(out_dir), ratios, seed, persons)
