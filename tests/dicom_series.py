"""Write synthetic MR DICOM series (classic 2D "MR Image Storage", one file per
slice per volume) that dcm2niix converts into a NIfTI (+ .bval/.bvec for DWI).

Geometry: axial slices, ImageOrientationPatient = [1,0,0, 0,1,0] (LPS).
Array axis i (X) -> DICOM column index (patient +x, i.e. towards Left),
array axis j (Y) -> DICOM row index   (patient +y, i.e. towards Posterior),
array axis k (Z) -> slice index       (patient +z, i.e. towards Superior).
Gradient directions in `bvecs` are given in the array's voxel axes (i, j, k);
with this identity orientation they are written unchanged as the LPS patient
DiffusionGradientOrientation (0018,9089).

See README.md for what dcm2niix makes of this (observed axis flips / bvec signs).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

# dcm2niix reads the standard (0018,9087)/(0018,9089) tags of classic MR images
# for Canon without any private tags and without warnings (Philips/GE/Siemens
# also work but print warnings; "UIH" gives all-zero bvecs). See README.md.
MANUFACTURER = "Canon Medical Systems"

_STUDY_UID = generate_uid()
_FOR_UID = generate_uid()


def _base_dataset(
    series_uid: str,
    series_number: int,
    description: str,
    rows: int,
    cols: int,
    voxel_mm: float,
    study_uid: str,
    for_uid: str,
) -> Dataset:
    ds = Dataset()
    now = _dt.datetime(2024, 1, 1, 12, 0, 0)
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
    ds.SOPClassUID = MRImageStorage
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.Modality = "MR"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "Synthetic"
    ds.InstitutionName = "Synthetic"
    ds.SeriesDescription = description
    ds.ProtocolName = description
    ds.PatientName = "Synthetic^Subject"
    ds.PatientID = "SYNTH001"
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.SliceThickness = f"{voxel_mm:g}"
    ds.SpacingBetweenSlices = f"{voxel_mm:g}"
    ds.RepetitionTime = "5000"
    ds.EchoTime = "80"
    ds.EchoNumbers = 1
    ds.MagneticFieldStrength = "3"
    ds.ImagingFrequency = "127.8"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PatientPosition = "HFS"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [f"{voxel_mm:g}", f"{voxel_mm:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    return ds


def _write_volume_slices(
    folder: Path,
    template: Dataset,
    vol: np.ndarray,
    vol_index: int,
    voxel_mm: float,
    prefix: str,
    extra=None,
) -> None:
    nx, ny, nz = vol.shape
    for k in range(nz):
        ds = template.copy()
        inst = vol_index * nz + k + 1
        ds.SOPInstanceUID = generate_uid()
        ds.InstanceNumber = inst
        ds.AcquisitionNumber = vol_index + 1
        ds.TemporalPositionIdentifier = vol_index + 1
        ds.ImagePositionPatient = [0.0, 0.0, f"{k * voxel_mm:g}"]
        ds.SliceLocation = f"{k * voxel_mm:g}"
        if extra is not None:
            extra(ds)
        # DICOM pixel array is (Rows, Columns) = (Y, X): transpose the XY plane.
        px = np.ascontiguousarray(vol[:, :, k].T.astype(np.uint16))
        ds.PixelData = px.tobytes()
        ds.SmallestImagePixelValue = int(px.min())
        ds.LargestImagePixelValue = int(px.max())
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
        ds.file_meta = meta
        ds.save_as(folder / f"{prefix}_{inst:05d}.dcm", enforce_file_format=True)


def _prefix(ds: Dataset) -> str:
    # Series number + UID hash, so two series never overwrite each other's files.
    h = hashlib.sha1(ds.SeriesInstanceUID.encode()).hexdigest()[:8]
    return f"s{int(ds.SeriesNumber):03d}_{h}"


def _check_uint16(a: np.ndarray) -> None:
    if a.size and (np.min(a) < 0 or np.max(a) > 65535):
        raise ValueError("values must be representable as uint16")
    if np.issubdtype(a.dtype, np.floating) and not np.all(np.equal(np.mod(a, 1), 0)):
        raise ValueError("values must be integers")


def _template(
    volume: np.ndarray,
    series_uid: str | None,
    series_number: int,
    description: str,
    voxel_mm: float,
    study_uid: str | None,
    frame_of_reference_uid: str | None,
) -> Dataset:
    """The dataset every slice of a series copies, for a uint16-valued (X, Y, Z[, N]) volume."""
    _check_uint16(volume)
    nx, ny = volume.shape[:2]
    return _base_dataset(
        series_uid or generate_uid(),
        series_number,
        description,
        rows=ny,
        cols=nx,
        voxel_mm=voxel_mm,
        study_uid=study_uid or _STUDY_UID,
        for_uid=frame_of_reference_uid or _FOR_UID,
    )


def write_dwi_series(
    folder: Path,
    dwi: np.ndarray,
    bvals: np.ndarray,
    bvecs: np.ndarray,
    affine_mm_voxel: float = 2.0,
    series_number: int = 1,
    series_uid: str | None = None,
    description: str = "DWI",
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
) -> None:
    """Write a 4D DWI array (X, Y, Z, N) as N*Z classic MR DICOM files.

    bvals: (N,), bvecs: (N, 3) unit vectors in array-axis (i, j, k) order;
    b=0 volumes should have zero vectors. Voxels are isotropic
    `affine_mm_voxel` mm.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dwi = np.asarray(dwi)
    bvals = np.asarray(bvals, dtype=float).reshape(-1)
    bvecs = np.asarray(bvecs, dtype=float).reshape(-1, 3)
    if dwi.ndim != 4 or dwi.shape[3] != bvals.size or bvecs.shape[0] != bvals.size:
        raise ValueError(
            f"shape mismatch: dwi {dwi.shape}, bvals {bvals.shape}, bvecs {bvecs.shape}"
        )
    tmpl = _template(dwi, series_uid, series_number, description, affine_mm_voxel, study_uid,
                     frame_of_reference_uid)  # fmt: skip
    nvol = dwi.shape[3]
    tmpl.SequenceName = "ep_b"
    for n in range(nvol):
        b, g = float(bvals[n]), bvecs[n]

        def extra(ds: Dataset, b=b, g=g) -> None:
            ds.DiffusionBValue = b
            if b > 0 and np.linalg.norm(g) > 0:
                ds.DiffusionDirectionality = "DIRECTIONAL"
                ds.DiffusionGradientOrientation = [float(v) for v in g]
            else:
                ds.DiffusionDirectionality = "NONE"
                ds.DiffusionGradientOrientation = [0.0, 0.0, 0.0]

        _write_volume_slices(folder, tmpl, dwi[..., n], n, affine_mm_voxel, _prefix(tmpl), extra)


def write_non_dwi_series(
    folder: Path,
    volume: np.ndarray,
    series_number: int = 1,
    series_uid: str | None = None,
    description: str = "T1",
    affine_mm_voxel: float = 2.0,
    study_uid: str | None = None,
    frame_of_reference_uid: str | None = None,
) -> None:
    """Write a plain 3D (X, Y, Z) volume as Z classic MR DICOM files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"volume must be 3D, got {volume.shape}")
    tmpl = _template(volume, series_uid, series_number, description, affine_mm_voxel, study_uid,
                     frame_of_reference_uid)  # fmt: skip
    tmpl.ScanningSequence = "GR"
    tmpl.RepetitionTime = "2000"
    tmpl.EchoTime = "3"
    _write_volume_slices(folder, tmpl, volume, 0, affine_mm_voxel, _prefix(tmpl))
