"""HCP folder discovery: ``<root>/<subject>/T1w/Diffusion/{data.nii.gz, bvals, bvecs,
nodif_brain_mask.nii.gz}`` → subject records."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmri_revgan.errors import InputError


@dataclass(frozen=True)
class HcpSubject:
    """The input files of one HCP-layout subject (the mask may be absent: it is then computed)."""

    subject: str
    dwi: Path
    bvals: Path
    bvecs: Path
    mask: Path | None


def diffusion_folder(subject_dir: Path) -> Path:
    return subject_dir / "T1w" / "Diffusion"


def discover(root: Path, subjects: list[str] | None = None) -> list[HcpSubject]:
    """Subjects under ``root`` that have a ``T1w/Diffusion`` folder (or exactly ``subjects``)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "no such HCP folder")
    if subjects:
        dirs = [root / s for s in subjects]
        for d in dirs:
            if not diffusion_folder(d).is_dir():
                raise InputError(diffusion_folder(d), "no such subject folder")
    else:
        dirs = sorted(d for d in root.iterdir() if diffusion_folder(d).is_dir())
    if not dirs:
        raise InputError(root, "no <subject>/T1w/Diffusion folders found")
    found = []
    for d in dirs:
        folder = diffusion_folder(d)
        mask = folder / "nodif_brain_mask.nii.gz"
        found.append(
            HcpSubject(
                d.name,
                folder / "data.nii.gz",
                folder / "bvals",
                folder / "bvecs",
                mask if mask.exists() else None,
            )
        )
    return found
