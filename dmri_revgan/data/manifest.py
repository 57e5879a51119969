"""``data_manifest.csv``: one row per prepared subject, read by everything that needs data.

Columns: subject, person, split (train / val / test), the four prepared files (paths relative to
the manifest's folder), HR and LR shapes ("XxYxZ"), voxel sizes in mm ("XxYxZ"), factor, the
b-value of the fitted shell (s/mm²), the number of repaired (non-physical) tensor voxels and,
optionally, ``source``: the acquired series a derived one (a thick-slice copy) was made from,
empty for acquired series. Lines starting with ``#`` are comments. Splits are by person: all
subjects of a person share a split.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from dmri_revgan.errors import InputError
from dmri_revgan.io import write_text_atomic

SPLITS = ("train", "val", "test")
PATH_FIELDS = ("hr_tensor", "lr_tensor", "hr_mask", "lr_mask")


@dataclass
class SubjectRecord:
    """One manifest row; paths are absolute once read."""

    subject: str
    person: str
    split: str
    hr_tensor: Path
    lr_tensor: Path
    hr_mask: Path
    lr_mask: Path
    hr_shape: tuple[int, int, int]
    lr_shape: tuple[int, int, int]
    hr_voxel_mm: tuple[float, float, float]
    lr_voxel_mm: tuple[float, float, float]
    factor: int
    bvalue: float
    repaired_voxels: int
    source: str = ""


def _triple(text: str, kind: type) -> tuple:
    return tuple(kind(v) for v in text.split("x"))


def _format(value: object) -> str:
    if isinstance(value, tuple):
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return str(value)


def read_manifest(path: Path) -> list[SubjectRecord]:
    """Read and validate a manifest; paths are resolved relative to its folder."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such manifest (create one with `dmri-revgan prepare`)")
    try:
        text = path.read_text(encoding="utf-8")
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
        rows = list(csv.DictReader(lines))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(path, f"not a UTF-8 CSV manifest ({exc})") from exc
    names = [f.name for f in fields(SubjectRecord) if f.name != "source"]  # source: optional
    if not rows:
        raise InputError(path, "manifest lists no subjects")
    missing = [n for n in names if n not in rows[0]]
    if missing:
        raise InputError(path, f"missing columns: {', '.join(missing)}")
    records = []
    for i, row in enumerate(rows, start=2):
        try:
            record = SubjectRecord(
                subject=row["subject"],
                person=row["person"],
                split=row["split"],
                **{k: (path.parent / row[k]).resolve() for k in PATH_FIELDS},
                hr_shape=_triple(row["hr_shape"], int),
                lr_shape=_triple(row["lr_shape"], int),
                hr_voxel_mm=_triple(row["hr_voxel_mm"], float),
                lr_voxel_mm=_triple(row["lr_voxel_mm"], float),
                factor=int(row["factor"]),
                bvalue=float(row["bvalue"]),
                repaired_voxels=int(row["repaired_voxels"]),
                source=row.get("source") or "",
            )
        except (ValueError, TypeError, AttributeError) as exc:  # AttributeError: a short row
            raise InputError(path, f"row {i}: missing or malformed values ({exc})") from exc
        if record.split not in SPLITS:
            raise InputError(path, f"row {i}: split {record.split!r} is not one of {SPLITS}")
        records.append(record)
    persons: dict[str, set[str]] = {}
    for r in records:
        persons.setdefault(r.person, set()).add(r.split)
    straddling = sorted(p for p, s in persons.items() if len(s) > 1)
    if straddling:
        raise InputError(path, f"person(s) {', '.join(straddling)} straddle splits")
    return records


def write_manifest(path: Path, records: Iterable[SubjectRecord]) -> None:
    """Write a manifest atomically, with paths relative to its folder."""
    path = Path(path)
    names = [f.name for f in fields(SubjectRecord)]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=names, lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = {n: _format(getattr(r, n)) for n in names}
        for k in PATH_FIELDS:
            row[k] = Path(getattr(r, k)).resolve().relative_to(path.parent.resolve()).as_posix()
        writer.writerow(row)
    write_text_atomic(path, buffer.getvalue())


def assign_splits(
    persons: Sequence[str], ratios: tuple[float, float, float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, str]:
    """Map each person to a split: persons are shuffled with ``seed`` and cut by ``ratios``.

    Every split with a non-zero ratio gets at least one person while there are persons to spare
    (train first), so a small set still yields train, validation and test subjects.
    """
    unique = sorted(set(persons))
    rng = np.random.default_rng(seed)
    order = [unique[i] for i in rng.permutation(len(unique))]
    weights = np.asarray(ratios, float) / sum(ratios)
    counts = np.floor(weights * len(order)).astype(int)
    for i in np.argsort(-weights):  # give remaining persons to the largest ratios
        if counts.sum() >= len(order):
            break
        counts[i] += 1
    for i in range(len(SPLITS)):  # non-zero ratios get at least one person, taken from train
        if weights[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[i] += 1
            counts[0] -= 1
    out: dict[str, str] = {}
    start = 0
    for split, n in zip(SPLITS, counts, strict=True):
        for person in order[start : start + n]:
            out[person] = split
        start += n
    return out
