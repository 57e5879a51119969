"""DICOM DWI in: a folder (or a .zip) holding a DICOM series is converted with dcm2niix into
NIfTI + .bval/.bvec + JSON, which the rest of the tool reads like any DWI.

dcm2niix (Chris Rorden's converter, the one BIDS tools use) comes from the ``dcm2niix`` wheel on
PyPI, an optional extra (``pip install 'dmri-revgan[dicom]'``; the dev extra has it): it is a
compiled binary that NIfTI users do not need, and a platform without a wheel should not lose the
whole tool. Several series in one folder are listed and one is chosen with ``--series N``;
nothing is guessed. A series without b-values is not a DWI and is refused.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmri_revgan.errors import InputError

# Fields of dcm2niix's JSON sidecar that outputs carry as "SourceAcquisition".
ACQUISITION_KEYS = (
    "Manufacturer",
    "ManufacturersModelName",
    "MagneticFieldStrength",
    "SeriesDescription",
    "SeriesNumber",
    "EchoTime",
    "RepetitionTime",
    "PhaseEncodingDirection",
    "SliceThickness",
)
_MAX_ZIP_BYTES = 8 * 2**30  # a DWI series is a few GB at most; beyond is a zip bomb
_TIMEOUT_S = 600


@dataclass
class DicomSeries:
    """One converted series: its NIfTI (and b-tables for a DWI) in a work folder, and what
    the outputs record about the source."""

    nifti: Path
    bval: Path | None
    bvec: Path | None
    metadata: dict[str, Any]

    @property
    def label(self) -> str:
        name = self.nifti.name.removesuffix(".nii.gz")
        kind = "DWI" if self.bval is not None else "no b-values"
        return f"{name} ({kind})"


def is_dicom_source(path: Path) -> bool:
    """A .zip, or a folder with a DICOM file (``DICM`` at byte 128) at its top or one below."""
    if path.is_file():
        return path.suffix.lower() == ".zip"
    if not path.is_dir():
        return False
    try:
        for candidate in [*sorted(path.iterdir())[:50], *sorted(path.glob("*/*"))[:50]]:
            if candidate.is_file():
                with candidate.open("rb") as f:
                    if f.read(132)[128:] == b"DICM":
                        return True
    except OSError as exc:
        raise InputError(path, f"cannot read the folder ({exc})") from exc
    return False


def converter() -> tuple[Path, str]:
    """The dcm2niix executable and its version, or a one-line error saying how to get it."""
    try:
        import dcm2niix

        binary, version = Path(dcm2niix.bin), str(dcm2niix.__version__)
    except ImportError:
        found = shutil.which("dcm2niix")
        if found is None:
            raise InputError(
                "dcm2niix", "DICOM input needs dcm2niix: pip install 'dmri-revgan[dicom]'"
            ) from None
        binary, version = Path(found), "unknown (from PATH)"
    return binary, version


def _unzip(source: Path, folder: Path) -> Path:
    """Extract a zip into ``folder``, refusing members that leave it or sizes beyond reason."""
    try:
        with zipfile.ZipFile(source) as archive:
            members = archive.infolist()
            if sum(m.file_size for m in members) > _MAX_ZIP_BYTES:
                raise InputError(source, "zip holds more than 8 GiB uncompressed; not a DWI series")
            root = folder.resolve()
            for member in members:
                if not (folder / member.filename).resolve().is_relative_to(root):
                    raise InputError(source, f"zip member {member.filename!r} leaves the folder")
            archive.extractall(folder)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - bad zip, encrypted or deflate64 member, bad data
        raise InputError(source, f"not a readable zip file ({exc})") from exc
    return folder


def convert(source: Path, work: Path, series: int | None = None) -> DicomSeries:
    """Convert the DICOM folder or zip ``source`` in ``work``; return its one DWI series, or
    series number ``series`` (1-based, in the listed order) when there are several."""
    binary, version = converter()
    given = source
    out = work / "nifti"
    shutil.rmtree(out, ignore_errors=True)  # a re-run converts afresh, never into old files
    out.mkdir(parents=True)
    unzipped = work / "unzipped"
    if source.is_file():
        source = _unzip(source, unzipped)
    # -ba y: dcm2niix's BIDS anonymisation (no patient name, ID or birth date in the JSON).
    command = [str(binary), "-z", "y", "-b", "y", "-ba", "y", "-f", "%s_%d", "-o", str(out)]
    try:
        done = subprocess.run(
            [*command, str(source)], capture_output=True, text=True, timeout=_TIMEOUT_S
        )
    except subprocess.TimeoutExpired as exc:
        raise InputError(given, f"dcm2niix did not finish in {_TIMEOUT_S} s") from exc
    except OSError as exc:
        raise InputError(binary, f"cannot run dcm2niix ({exc})") from exc
    finally:
        shutil.rmtree(unzipped, ignore_errors=True)  # the DICOM copy is not kept
    source = given
    found = []
    for nifti in sorted(out.glob("*.nii.gz")):
        stem = nifti.name.removesuffix(".nii.gz")
        bval, bvec, side = (out / f"{stem}{s}" for s in (".bval", ".bvec", ".json"))
        try:
            meta = json.loads(side.read_text()) if side.is_file() else {}
        except ValueError:  # a sidecar dcm2niix could not write fully: no metadata
            meta = {}
        acquisition = {k: meta[k] for k in ACQUISITION_KEYS if k in meta}
        metadata = {"SourceAcquisition": acquisition, "Converter": f"dcm2niix {version}"}
        has_table = bval.is_file() and bvec.is_file()
        found.append(DicomSeries(nifti, bval if has_table else None, bvec if has_table else None,
                                 metadata))  # fmt: skip
    if not found:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise InputError(source, f"no DICOM series dcm2niix could convert ({last[0]})")
    if series is not None:
        if not 1 <= series <= len(found):
            raise InputError(source, f"--series {series}: the folder holds {len(found)} series")
        chosen = found[series - 1]
    elif len(found) > 1:
        listing = "; ".join(f"{i}: {s.label}" for i, s in enumerate(found, 1))
        raise InputError(
            source, f"holds {len(found)} series ({listing}): choose one with --series N"
        )
    else:
        chosen = found[0]
    if chosen.bval is None:
        raise InputError(source, f"series {chosen.label}: not a DWI series (it needs b-values)")
    return chosen
