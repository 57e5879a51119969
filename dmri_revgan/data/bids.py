"""BIDS input (pybids): the DWI series of a BIDS dataset as the records ``prepare`` uses.

``sub-<label>/[ses-<label>/]dwi/*_dwi.nii[.gz]`` with ``.bval``/``.bvec`` beside it (the JSON
sidecar is used when present, never required); a brain mask ``*_desc-brain_mask.nii.gz`` beside
it is used when present, otherwise ``prepare`` computes one (dipy ``median_otsu`` on the mean
b0). A series' id is its file name without ``_dwi``; its person is the ``sub-`` label, so the
sessions of one participant never straddle splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dmri_revgan.data.hcp import HcpSubject
from dmri_revgan.errors import InputError


@dataclass(frozen=True)
class BidsDwi:
    """One BIDS DWI series: the prepare record, its participant and its entities."""

    record: HcpSubject
    participant: str
    entities: dict[str, str]
    relative: Path  # the DWI file relative to the dataset root


def persons(series: list[BidsDwi]) -> dict[str, str]:
    """Series id → person (``sub-<label>``), so a participant's sessions share one split."""
    return {s.record.subject: f"sub-{s.participant}" for s in series}


def find_dwi(root: Path, participants: list[str] | None = None) -> list[BidsDwi]:
    """Every DWI series of the dataset (or of ``participants``, labels without ``sub-``)."""
    from bids import BIDSLayout

    root = Path(root).absolute()  # pybids reports absolute paths
    if not (root / "dataset_description.json").is_file():
        raise InputError(root, "not a BIDS dataset (no dataset_description.json)")
    layout = BIDSLayout(str(root), validate=False)
    labels = [p.removeprefix("sub-") for p in participants or []]
    missing = sorted(set(labels) - set(layout.get_subjects()))
    if missing:
        raise InputError(root, f"no participant sub-{missing[0]} in this dataset")
    query = {"subject": labels} if labels else {}
    files = layout.get(suffix="dwi", extension=[".nii.gz", ".nii"], **query)
    if not files:
        raise InputError(root, "no sub-*/[ses-*/]dwi/*_dwi.nii.gz series found")
    found = []
    for f in sorted(files, key=lambda f: f.path):
        path = Path(f.path)
        stem = path.name.removesuffix(".gz").removesuffix(".nii").removesuffix("_dwi")
        bval, bvec = path.with_name(f"{stem}_dwi.bval"), path.with_name(f"{stem}_dwi.bvec")
        for side in (bval, bvec):
            if not side.is_file():
                raise InputError(side, "no such file (a BIDS DWI needs .bval and .bvec beside it)")
        mask = path.with_name(f"{stem}_desc-brain_mask.nii.gz")
        entities = {k: str(v) for k, v in f.get_entities().items() if isinstance(v, str | int)}
        found.append(
            BidsDwi(
                HcpSubject(stem, path, bval, bvec, mask if mask.is_file() else None),
                str(f.get_entities()["subject"]),
                entities,
                path.relative_to(root),
            )
        )
    return found
