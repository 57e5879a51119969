"""HCP folder discovery: ``<root>/<subject>/T1w/Diffusion/{data.nii.gz, bvals, bvecs,
nodif_brain_mask.nii.gz}`` under one root or several → subject records."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
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


def discover(roots: Path | Sequence[Path], subjects: list[str] | None = None) -> list[HcpSubject]:
    """Subjects that have a ``T1w/Diffusion`` folder under one HCP folder or several (or exactly
    ``subjects``, each from the folder that holds it).

    Several folders feed one manifest, where a subject id names one output folder and one row: an
    id found under two folders is an error naming both.
    """
    roots = [Path(roots)] if isinstance(roots, str | PathLike) else [Path(r) for r in roots]
    if not roots:
        raise InputError("--hcp-root", "no HCP folder given")
    folders: dict[str, list[Path]] = {}
    for root in roots:
        if not root.is_dir():
            raise InputError(root, "no such HCP folder")
        dirs = sorted(d for d in root.iterdir() if diffusion_folder(d).is_dir())
        if not dirs and not subjects:
            raise InputError(root, "no <subject>/T1w/Diffusion folders found")
        for d in dirs:
            folders.setdefault(d.name, []).append(d)
    found = []
    for name in subjects or folders:
        if name not in folders:
            others = "".join(f" (nor under {r})" for r in roots[1:])
            raise InputError(diffusion_folder(roots[0] / name), f"no such subject folder{others}")
        if len(folders[name]) > 1:
            first, second = folders[name][:2]
            raise InputError(
                second, f"subject id {name!r} is also {first}: ids must be unique across folders"
            )
        folder = diffusion_folder(folders[name][0])
        mask = folder / "nodif_brain_mask.nii.gz"
        found.append(
            HcpSubject(
                name,
                folder / "data.nii.gz",
                folder / "bvals",
                folder / "bvecs",
                mask if mask.exists() else None,
            )
        )
    return found
