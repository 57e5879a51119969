"""``prepare``: raw diffusion data → HR / LR tensors and masks → ``data_manifest.csv``.

Per subject (``<out>/<subject>/``): the HR grid is cropped at its high end to a multiple of r, the
tensor is fitted (b≈0 + one shell, WLS, non-physical voxels repaired), the low-resolution
acquisition is simulated the IQT way (mean over r³ blocks of each DWI volume, then a tensor fit on
the LR grid) and four files are written with the affines of their grids:
``hr_tensor.nii.gz``, ``lr_tensor.nii.gz``, ``hr_mask.nii.gz``, ``lr_mask.nii.gz``, plus
``prepare.json`` (what was done, and the input stamps used to skip up-to-date subjects).
With ``slabs`` (e.g. (2, 3)) every near-isotropic series also yields thick-slice copies
``<series>-slab<k>``: its DWI averaged over k slices before both fits, so that training sees the
1:1:k voxels of clinical scans; they train only (their person's split must be train).
The gradient table is checked against the anatomy first (:mod:`dmri_revgan.gradient_check`): a
wrong axis is corrected before both fits (training must not see mirrored anatomy).
A failing subject is reported in one line and the others still complete.
"""

from __future__ import annotations

import hashlib
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
from dmri_revgan.data.nrrd import is_nrrd, read_nrrd_dwi
from dmri_revgan.dti import brain_mask, fit_tensor
from dmri_revgan.errors import InputError
from dmri_revgan.gradient_check import fit_checked
from dmri_revgan.io import read_bvals_bvecs, read_nifti, save_nifti, write_text_atomic

OUTPUTS = ("hr_tensor.nii.gz", "lr_tensor.nii.gz", "hr_mask.nii.gz", "lr_mask.nii.gz")


@dataclass
class Outcome:
    """What happened to one subject: its info (from ``prepare.json``) or its one-line error."""

    subject: str
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    skipped: bool = False
    excluded: str = ""  # why a thick-slice copy was not made (not an error)


NEAR_ISOTROPIC = 1.2  # largest / smallest voxel side of a series that gets thick-slice copies
SLICE_AXIS = 2  # dcm2niix stores the slice direction as the third array axis


def input_stamp(paths: Sequence[Path | None], options: dict[str, Any]) -> dict[str, Any]:
    """Sizes and mtimes of the inputs plus the options: a subject is redone when they change."""
    files = {str(p): [p.stat().st_size, p.stat().st_mtime_ns] for p in paths if p and p.exists()}
    return {"inputs": files, "options": options}


def _voxel_mm(affine: np.ndarray) -> tuple[float, float, float]:
    return tuple(round(float(v), 4) for v in np.linalg.norm(affine[:3, :3], axis=0))


def check_mask(mask_path: Path, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A given brain mask as bool, checked to lie on the data's grid."""
    mask, image = read_nifti(mask_path)
    mask = mask.reshape(mask.shape[:3]) if mask.ndim == 4 and mask.shape[3] == 1 else mask
    if mask.shape != shape or not np.allclose(image.affine, affine, atol=1e-3):
        raise InputError(mask_path, f"mask grid {mask.shape} differs from the DWI grid {shape}")
    return mask > 0


def prepare_subject(
    subject: HcpSubject,
    out_dir: Path,
    shell: float = 1000.0,
    factor: int = 2,
    gradient_check: str = "fix",
    slab: int = 1,
) -> Outcome:
    """Prepare one subject (see the module docstring), or with ``slab`` > 1 its thick-slice copy
    (the gradient table checked on the acquired grid); never raises for bad input."""
    start = time.perf_counter()
    name = subject.subject if slab == 1 else f"{subject.subject}-slab{slab}"
    out = Path(out_dir) / name
    options = {"shell": shell, "factor": factor, "version": 1, "gradient_check": gradient_check}
    options |= {"slab": slab} if slab > 1 else {}
    stamp = input_stamp([subject.dwi, subject.bvals, subject.bvecs, subject.mask], options)
    done = up_to_date(out, stamp)
    if done is not None:
        return Outcome(name, done, skipped=True)
    try:
        if is_nrrd(subject.dwi):  # 3D Slicer DWI: the b-table is in the header
            dwi, image, bvals, bvecs = read_nrrd_dwi(subject.dwi)
        else:
            dwi, image = read_nifti(subject.dwi, ndim=4)
            bvals, bvecs = read_bvals_bvecs(subject.bvals, subject.bvecs, dwi.shape[-1])
        affine = image.affine
        if subject.mask is not None:
            mask = check_mask(subject.mask, dwi.shape[:3], affine)
        else:
            mask = brain_mask(dwi, bvals)
        voxel = _voxel_mm(affine)
        if slab > 1 and max(voxel) > NEAR_ISOTROPIC * min(voxel):
            return Outcome(name, excluded=f"not near-isotropic ({voxel} mm): no slab copy")
        try:
            if slab > 1:  # the table is checked on the acquired grid, then the slices thickened
                *_, bvecs, check = fit_checked(
                    dwi, bvals, bvecs, mask, affine, gradient_check, shell
                )
                k = [1, 1, 1]
                k[SLICE_AXIS] = slab
                dwi, mask = block_mean(dwi, tuple(k)), degrade_mask(mask, tuple(k))
                affine = lr_affine(affine, tuple(k))
            dwi, mask = crop_to_multiple(dwi, factor), crop_to_multiple(mask, factor)
            if slab > 1:
                hr, repaired_hr, bvalue = fit_tensor(dwi, bvals, bvecs, mask, shell)
            else:
                hr, repaired_hr, bvalue, bvecs, check = fit_checked(
                    dwi, bvals, bvecs, mask, affine, gradient_check, shell
                )
            lr_mask = degrade_mask(mask, factor)
            lr, repaired_lr, _ = fit_tensor(block_mean(dwi, factor), bvals, bvecs, lr_mask, shell)
        except ValueError as exc:
            raise InputError(subject.bvals, str(exc)) from exc
    except InputError as exc:
        return Outcome(name, error=f"{name}: {exc}")
    info = {
        "source": subject.subject if slab > 1 else "",
        "slab": slab,
        "bvalue": bvalue,
        "repaired_hr": repaired_hr,
        "repaired_lr": repaired_lr,
        "mask_computed": subject.mask is None,
        "gradient_check": check.to_dict(),  # and the line the CLI shows, naming the table
        "gradient_message": check.message() and f"{subject.bvecs}: {check.message()}",
    }
    return write_subject(
        out, name, hr, lr, mask, lr_mask, affine, image.header, factor, info, stamp, start
    )


def write_subject(
    out: Path,
    subject: str,
    hr: np.ndarray,
    lr: np.ndarray,
    mask: np.ndarray,
    lr_mask: np.ndarray,
    affine: np.ndarray,
    header: Any,
    factor: int,
    info: dict[str, Any],
    stamp: dict[str, Any],
    start: float,
) -> Outcome:
    """Write the four NIfTIs (each with its grid's affine) and ``prepare.json`` (last, so an
    interrupted subject is redone next time)."""
    lr_aff = lr_affine(affine, factor)
    save_nifti(out / "hr_tensor.nii.gz", hr, affine, header, "HR tensor FSL order mm2/s")
    save_nifti(out / "lr_tensor.nii.gz", lr, lr_aff, header, "simulated LR tensor mm2/s")
    save_nifti(out / "hr_mask.nii.gz", mask.astype(np.uint8), affine, header, "HR mask")
    save_nifti(out / "lr_mask.nii.gz", lr_mask.astype(np.uint8), lr_aff, header, "LR brain mask")
    info = {
        "subject": subject,
        "hr_shape": list(hr.shape[:3]),
        "lr_shape": list(lr.shape[:3]),
        "hr_voxel_mm": list(_voxel_mm(affine)),
        "lr_voxel_mm": list(_voxel_mm(lr_aff)),
        "factor": factor,
        **info,
        "brain_voxels": int(mask.sum()),
        "seconds": round(time.perf_counter() - start, 2),
        "stamp": stamp,
    }
    write_text_atomic(out / "prepare.json", json.dumps(info, indent=2))
    return Outcome(subject, info)


def up_to_date(out: Path, stamp: dict[str, Any]) -> dict[str, Any] | None:
    """The stored ``prepare.json`` when every output exists and was made from the same inputs."""
    info_path = out / "prepare.json"
    if info_path.is_file() and all((out / name).is_file() for name in OUTPUTS):
        info = json.loads(info_path.read_text())
        if info.get("stamp") == stamp:
            return info
    return None


def _prepare_star(args: tuple[HcpSubject, Path, float, int, str, int]) -> Outcome:
    return prepare_subject(*args)


def prepare_records(
    records: Sequence[HcpSubject],
    out_dir: Path,
    shell: float = 1000.0,
    factor: int = 2,
    workers: int = 1,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    persons: dict[str, str] | None = None,
    progress: Callable[[Outcome], None] = lambda outcome: None,
    gradient_check: str = "fix",
    slabs: Sequence[int] = (),
) -> tuple[list[Outcome], Path]:
    """Prepare every record (in ``workers`` processes) and write ``<out>/data_manifest.csv``.

    The records come from :func:`~dmri_revgan.data.hcp.discover` (HCP folders),
    :func:`~dmri_revgan.data.bids.find_dwi` (BIDS) or :func:`dwi_records` (loose DWI files).
    ``persons`` maps subject → person (default: each subject is its own person); splits are drawn
    by person with ``ratios`` (train, val, test) and ``seed``. Returns the outcomes (failed ones
    carry a one-line error) and the manifest path. ``gradient_check``: "fix", "warn" or "off".
    ``slabs``: thick-slice copies (slices averaged) of each near-isotropic record, training only.
    """
    if any(k < 2 for k in slabs):
        raise InputError("--slabs", f"slab thicknesses must be 2 or more slices, got {slabs}")
    person = {r.subject: (persons or {}).get(r.subject, r.subject) for r in records}
    split = assign_splits(list(person.values()), ratios, seed)
    jobs = [
        (r, Path(out_dir), shell, factor, gradient_check, k)
        for k in (1, *slabs)
        for r in records
        if k == 1 or split[person[r.subject]] == "train"
    ]
    outcomes = run_jobs(_prepare_star, jobs, workers, progress)
    return outcomes, write_prepared_manifest(outcomes, Path(out_dir), ratios, seed, persons)


def prepare_hcp(
    hcp_root: Path | Sequence[Path],
    out_dir: Path,
    subjects: list[str] | None = None,
    **options: Any,
) -> tuple[list[Outcome], Path]:
    """:func:`prepare_records` (``options``: its keyword arguments) of the subjects of one HCP
    folder or several (or exactly ``subjects``) into one manifest; subject ids must be unique
    across the folders."""
    return prepare_records(discover(hcp_root, subjects), out_dir, **options)


def dwi_records(
    paths: Sequence[Path], dicom_out: Path | None = None, series: int | None = None
) -> list[HcpSubject]:
    """Records for loose DWI files: a NIfTI with ``<stem>.bval``/``.bvec`` beside it, a 3D
    Slicer NRRD (its header holds the b-table), or a DICOM folder / zip (converted with dcm2niix
    into ``dicom_out/<name>/``, kept: ``series`` picks one of several). The series id is the
    file or folder name's stem."""
    from dmri_revgan.data import dicom

    records = []
    for path in map(Path, paths):
        if dicom.is_dicom_source(path):
            name = path.stem if path.suffix.lower() == ".zip" else path.name
            tag = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
            work = (dicom_out or path.parent / "dicom-converted") / f"{name}-{tag}"
            converted = dicom.convert(path, work, series)
            assert converted.bval is not None and converted.bvec is not None
            records.append(HcpSubject(name, converted.nifti, converted.bval, converted.bvec, None))
            continue
        if not path.is_file():
            raise InputError(path, "no such file")
        stem = path.name
        for suffix in (".gz", ".nii", ".nrrd", ".nhdr"):
            stem = stem.removesuffix(suffix)
        if is_nrrd(path):
            records.append(HcpSubject(stem, path, path, path, None))
            continue
        bval, bvec = path.with_name(f"{stem}.bval"), path.with_name(f"{stem}.bvec")
        for side in (bval, bvec):
            if not side.is_file():
                raise InputError(side, "no such file (a NIfTI DWI needs .bval and .bvec beside it)")
        records.append(HcpSubject(stem, path, bval, bvec, None))
    if len({r.subject for r in records}) != len(records):
        raise InputError(paths[0], "two inputs share a file name; series ids must be unique")
    return records


def run_jobs(
    function: Callable[[Any], Outcome],
    jobs: Sequence[Any],
    workers: int,
    progress: Callable[[Outcome], None],
) -> list[Outcome]:
    """``function(job)`` for every job, in ``workers`` processes, reporting each outcome."""
    outcomes: list[Outcome] = []
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for outcome in pool.map(function, jobs):
                progress(outcome)
                outcomes.append(outcome)
    else:
        for job in jobs:
            outcome = function(job)
            progress(outcome)
            outcomes.append(outcome)
    return outcomes


def write_prepared_manifest(
    outcomes: Sequence[Outcome],
    out_dir: Path,
    ratios: tuple[float, float, float],
    seed: int,
    persons: dict[str, str] | None,
) -> Path:
    """``<out>/data_manifest.csv`` of the prepared subjects, split by person; thick-slice copies
    go in only where their person trains (scores are for acquired series)."""
    done = [o for o in outcomes if o.error is None and not o.excluded]
    persons = persons or {}
    source = {o.subject: o.info.get("source") or o.subject for o in done}
    person_of = {o.subject: persons.get(source[o.subject], source[o.subject]) for o in done}
    split_of = assign_splits(list(person_of.values()), ratios, seed)
    done = [
        o for o in done if not o.info.get("source") or split_of[person_of[o.subject]] == "train"
    ]
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
            source=o.info.get("source", ""),
        )
        for o in done
    ]
    manifest = Path(out_dir) / "data_manifest.csv"
    if records:
        write_manifest(manifest, records)
    return manifest
