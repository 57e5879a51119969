"""``prepare``: raw diffusion data → HR / LR tensors and masks → ``data_manifest.csv``.

Per subject (``<out>/<subject>/``): the HR grid is cropped at its high end to a multiple of r, the
tensor is fitted (b≈0 + one shell, WLS, non-physical voxels repaired), the low-resolution
acquisition is simulated the IQT way (mean over r³ blocks of each DWI volume, then a tensor fit on
the LR grid) and four files are written with the affines of their grids:
``hr_tensor.nii.gz``, ``lr_tensor.nii.gz``, ``hr_mask.nii.gz``, ``lr_mask.nii.gz``, plus
``prepare.json`` (what was done, and the input stamps used to skip up-to-date subjects).
A failing subject is reported in one line and the others still complete.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dmri_revgan.data.degrade import block_mean, crop_to_multiple, degrade_mask, lr_affine
from dmri_revgan.data.hcp import HcpSubject, discover
from dmri_revgan.data.manifest import SubjectRecord, assign_splits, write_manifest
from dmri_revgan.dti import brain_mask, fit_tensor
from dmri_revgan.errors import InputError
from dmri_revgan.io import read_bvals_bvecs, read_nifti, save_nifti, write_text_atomic

OUTPUTS = ("hr_tensor.nii.gz", "lr_tensor.nii.gz", "hr_mask.nii.gz", "lr_mask.nii.gz")


@dataclass
class Outcome:
    """What happened to one subject: its info (from ``prepare.json``) or its one-line error."""

    subject: str
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False


def _stamp(paths: Sequence[Path | None], options: dict[str, Any]) -> dict[str, Any]:
    files = {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in paths if p and p.exists()}
    return {"inputs": files, "options": options}


def _voxel_mm(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(round(float(v), 4) for v in np.linalg.norm(affine[:3, :3], axis=0))


def _check_mask(mask_path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    mask, image = read_nifti(mask_path)
    mask = mask.reshape(mask.shape[:3]) if mask.ndim == 4 and mask.shape[3] == 1 else mask
    if mask.shape != shape or not np.allclose(image.affine, affine, atol=1e-3):
        raise InputError(mask_path, f"mask grid {mask.shape} differs from the DWI grid {shape}")
    return mask > 0


def prepare_subject(
    subject: HcpSubject, out_dir: Path, shell: float = 1000.0, factor: int = 2
) -> Outcome:
    """Prepare one subject (see the module docstring); never raises for bad input."""
    start = time.perf_counter()
    out = Path(out_dir) / subject.subject
    options = {"shell": shell, "factor": factor, "version": 1}
    stamp = _stamp([subject.dwi, subject.bvals, subject.bvecs, subject.mask], options)
    info_path = out / "prepare.json"
    if info_path.is_file() and all((out / name).is_file() for name in OUTPUTS):
        info = json.loads(info_path.read_text())
        if info.get("stamp") == stamp:
            return Outcome(subject.subject, info, skipped=True)
    try:
        dwi, image = read_nifti(subject.dwi, ndim=4)
        bvals, bvecs = read_bvals_bvecs(subject.bvals, subject.bvecs, dwi.shape[-1])
        affine = image.affine
        if subject.mask is not None:
            mask = _check_mask(subject.mask, dwi.shape[:3], affine)
        else:
            mask = brain_mask(dwi, bvals)
        dwi, mask = crop_to_multiple(dwi, factor), crop_to_multiple(mask, factor)
        try:
            hr, repaired_hr, bvalue = fit_tensor(dwi, bvals, bvecs, mask, shell)
            lr_mask = degrade_mask(mask, factor)
            lr, repaired_lr, _ = fit_tensor(block_mean(dwi, factor), bvals, bvecs, lr_mask, shell)
        except ValueError as exc:
            raise InputError(subject.bvals, str(exc)) from exc
    except InputError as exc:
        return Outcome(subject.subject, error=f"{subject.subject}: {exc}")
    lr_aff = lr_affine(affine, factor)
    save_nifti(out / "hr_tensor.nii.gz", hr, affine, image.header)
    save_nifti(out / "lr_tensor.nii.gz", lr, lr_aff, image.header)
    save_nifti(out / "hr_mask.nii.gz", mask.astype(np.uint8), affine, image.header)
    save_nifti(out / "lr_mask.nii.gz", lr_mask.astype(np.uint8), lr_aff, image.header)
    info = {
        "subject": subject.subject,
        "hr_shape": list(hr.shape[:3]),
        "lr_shape": list(lr.shape[:3]),
        "hr_voxel_mm": list(_voxel_mm(affine)),
        "lr_voxel_mm": list(_voxel_mm(lr_aff)),
        "factor": factor,
        "bvalue": bvalue,
        "repaired_hr": repaired_hr,
        "repaired_lr": repaired_lr,
        "mask_computed": subject.mask is None,
        "brain_voxels": int(mask.sum()),
        "seconds": round(time.perf_counter() - start, 2),
        "stamp": stamp,
    }
    write_text_atomic(info_path, json.dumps(info, indent=2))
    return Outcome(subject.subject, info)


def _prepare_star(args: tuple[HcpSubject, Path, float, int]) -> Outcome:
    return prepare_subject(*args)


def prepare_hcp(
    hcp_root: Path,
    out_dir: Path,
    subjects: list[str] | None = None,
    shell: float = 1000.0,
    factor: int = 2,
    workers: int = 1,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    persons: dict[str, str] | None = None,
    progress: Callable[[Outcome], None] = lambda outcome: None,
) -> tuple[list[Outcome], Path]:
    """Prepare every subject (in ``workers`` processes) and write ``<out>/data_manifest.csv``.

    ``persons`` maps subject → person (default: each subject is its own person); splits are drawn
    by person with ``ratios`` (train, val, test) and ``seed``. Returns the outcomes (failed ones
    carry a one-line error) and the manifest path.
    """
    found = discover(hcp_root, subjects)
    jobs = [(s, Path(out_dir), shell, factor) for s in found]
    outcomes: list[Outcome] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for outcome in pool.map(_prepare_star, jobs):
                progress(outcome)
                outcomes.append(outcome)
    else:
        for job in jobs:
            outcome = _prepare_star(job)
            progress(outcome)
            outcomes.append(outcome)
    done = [o for o in outcomes if o.error is None]
    persons = persons or {}
    person_of = {o.subject: persons.get(o.subject, o.subject) for o in done}
    split_of = assign_splits(list(person_of.values()), ratios, seed)
    records = [
        SubjectRecord(
            subject=o.subject,
            person=person_of[o.subject],
            split=split_of[person_of[o.subject]],
            **{
                k: Path(out_dir) / o.subject / f"{k}.nii.gz"
                for k in ("hr_tensor", "lr_tensor", "hr_mask", "lr_mask")
            },
            hr_shape=tuple(o.info["hr_shape"]),
            lr_shape=tuple(o.info["lr_shape"]),
            hr_voxel_mm=tuple(o.info["hr_voxel_mm"]),
            lr_voxel_mm=tuple(o.info["lr_voxel_mm"]),
            factor=o.info["factor"],
            bvalue=o.info["bvalue"],
            repaired_voxels=o.info["repaired_hr"],
        )
        for o in done
    ]
    manifest = Path(out_dir) / "data_manifest.csv"
    if records:
        write_manifest(manifest, records)
    return outcomes, manifest


def read_persons(path: Path) -> dict[str, str]:
    """A ``subject,person`` CSV (header optional) → mapping."""
    if not Path(path).is_file():
        raise InputError(path, "no such persons file")
    mapping = {}
    for line in Path(path).read_text().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] and parts[0] != "subject":
            mapping[parts[0]] = parts[1]
    if not mapping:
        raise InputError(path, "expected lines of `subject,person`")
    return mapping
