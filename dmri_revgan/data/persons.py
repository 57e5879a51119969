"""The persons file: which person each series belongs to (``subject,person[,folder]``), so that
data are split by person, never by series; its ``folder`` column names the data folders."""

from __future__ import annotations

import csv
from pathlib import Path

from dmri_revgan.errors import InputError


def _persons_rows(path: Path) -> list[tuple[str, str, str]]:
    """(subject, person, folder or "") of each row of a ``subject,person[,folder]`` CSV.

    The header is optional; with one, columns are found by name. Blank lines and ``#`` comments
    are skipped; any other malformed line is an error, so no series silently loses its person.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such persons file")
    lines = [
        (number, [c.strip() for c in next(csv.reader([line]))])
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    header = ["subject", "person", "folder"]
    if lines and "subject" in lines[0][1]:
        header = lines.pop(0)[1]
        if "person" not in header:
            raise InputError(path, "the header has no `person` column")
    rows: dict[str, tuple[str, str, str]] = {}
    for number, cells in lines:
        row = dict(zip(header, cells, strict=False))
        if len(cells) > len(header) or not row.get("subject") or not row.get("person"):
            raise InputError(path, f"line {number}: expected `{','.join(header)}`")
        if row["subject"] in rows:
            raise InputError(path, f"line {number}: subject {row['subject']!r} is listed twice")
        rows[row["subject"]] = (row["subject"], row["person"], row.get("folder", ""))
    if not rows:
        raise InputError(path, "expected lines of `subject,person[,folder]`")
    return list(rows.values())


def read_persons(path: Path) -> dict[str, str]:
    """subject → person from a ``subject,person[,folder]`` CSV (header optional)."""
    return {subject: person for subject, person, _ in _persons_rows(path)}


def read_persons_roots(path: Path) -> tuple[list[Path], dict[str, str]]:
    """The HCP folders of a persons file's ``folder`` column (relative to the file's folder, in
    order of first use) and its subject → person mapping, so that the file alone says what to
    prepare: ``prepare_hcp(roots, out, subjects=list(persons), persons=persons)``."""
    rows = _persons_rows(path)
    missing = [subject for subject, _, folder in rows if not folder]
    if missing:
        raise InputError(path, f"no `folder` for {len(missing)} subject(s), e.g. {missing[0]}")
    roots = list(dict.fromkeys(Path(path).parent / folder for _, _, folder in rows))
    return roots, {subject: person for subject, person, _ in rows}
