"""3D Slicer NRRD DWI (``.nrrd`` / ``.nhdr``) read with SimpleITK, as NIfTI + FSL b-tables.

Slicer stores the gradients in the header: ``DWMRI_b-value`` (s/mm²) and one
``DWMRI_gradient_NNNN`` per volume, expressed in the ``measurement frame`` (a rotation to the
LPS world frame); a gradient's squared length scales the b-value. This module returns what the
NIfTI path works with: the data (X, Y, Z, N), a RAS affine, b-values and FSL-convention bvecs
(the image's voxel axes, x flipped when the affine's determinant is positive), so the tensor is
fitted exactly as for a NIfTI DWI with .bval/.bvec.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from dmri_revgan.dti import fsl_x_mirrored
from dmri_revgan.errors import InputError
from dmri_revgan.io import check_gradients, length_scale

SUFFIXES = (".nrrd", ".nhdr")
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def is_nrrd(path: Path) -> bool:
    return Path(path).suffix.lower() in SUFFIXES


def _header(path: Path) -> dict[str, str]:
    """The NRRD header's fields (``key: value``) and key/values (``key:=value``)."""
    fields: dict[str, str] = {}
    with Path(path).open("rb") as f:
        if not f.readline().startswith(b"NRRD"):
            raise InputError(path, "not a NRRD file (no NRRD magic line)")
        for raw in f:
            line = raw.decode("latin-1").rstrip("\r\n")
            if not line:
                break
            if line.startswith("#"):
                continue
            key, sep, value = line.partition(":=") if ":=" in line else line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
    return fields


def _vectors(text: str) -> list[list[float]]:
    return [[float(v) for v in group.split(",")] for group in re.findall(r"\(([^)]*)\)", text)]


def read_nrrd_dwi(path: Path) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray]:
    """(data (X, Y, Z, N) float32, a nibabel NIfTI image carrying the RAS affine, bvals (N,),
    bvecs (N, 3) in FSL convention) of a Slicer DWI NRRD; one-line errors for anything else."""
    import nibabel as nib
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    header = _header(path)
    if header.get("modality") != "DWMRI":
        raise InputError(path, "not a diffusion NRRD (no modality:=DWMRI)")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise InputError(path, f"not a readable NRRD file ({str(exc).splitlines()[-1]})") from exc
    array = sitk.GetArrayFromImage(image)  # (Z, Y, X, N) for a vector image
    if image.GetDimension() != 3 or array.ndim != 4:
        raise InputError(path, f"expected a 3D volume of gradient vectors, got {array.shape}")
    data = np.ascontiguousarray(np.transpose(array, (2, 1, 0, 3)), dtype=np.float32)
    n = data.shape[-1]
    try:
        bvalue = float(header["DWMRI_b-value"])
        gradients = np.array(
            [[float(v) for v in header[f"DWMRI_gradient_{i:04d}"].split()] for i in range(n)]
        )
    except (KeyError, ValueError) as exc:
        raise InputError(path, f"missing or bad DWMRI header key ({exc})") from exc
    frame = np.eye(3)
    if "measurement frame" in header:
        frame = np.array(_vectors(header["measurement frame"])).T  # columns = frame vectors
    direction = np.array(image.GetDirection()).reshape(3, 3)  # LPS, columns = voxel axes
    spacing, origin = np.array(image.GetSpacing()), np.array(image.GetOrigin())
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = _LPS_TO_RAS @ origin
    norms = np.linalg.norm(gradients, axis=1)
    bvals = bvalue * length_scale(norms)  # NRRD codes each shell's b in |g|²
    world = (frame @ gradients.T).T  # LPS world frame
    voxel = (direction.T @ world.T).T  # the image's voxel axes
    unit = np.divide(voxel, norms[:, None], out=np.zeros_like(voxel), where=norms[:, None] > 0)
    if fsl_x_mirrored(affine):
        unit[:, 0] *= -1  # FSL's bvec convention
    bvals, unit = check_gradients(bvals, unit, path, path)
    return data, nib.Nifti1Image(data, affine), bvals, unit


def write_nrrd(path: Path, data: np.ndarray, affine: np.ndarray, tensor: bool = False) -> None:
    """Write a volume (X, Y, Z) or (X, Y, Z, C) with a RAS ``affine`` as NRRD (gzip) at ``path``.

    With ``tensor`` the 6 components (FSL order: Dxx, Dxy, Dxz, Dyy, Dyz, Dzz, mm²/s) are marked
    ``3D-symmetric-matrix`` and a ``measurement frame`` maps the tensor's frame — the voxel axes
    in FSL's bvec convention (x flipped when the affine's determinant is positive) — to LPS
    world, so 3D Slicer shows the tensors correctly oriented. Write to a temporary path and
    rename (see ``io.atomic_path``).
    """
    import SimpleITK as sitk

    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = _LPS_TO_RAS @ affine[:3, :3] / spacing
    array = np.asarray(data, np.float32)
    axes = (2, 1, 0, 3) if array.ndim == 4 else (2, 1, 0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, axes)), array.ndim == 4)
    image.SetSpacing(spacing.tolist())
    image.SetDirection(direction.flatten().tolist())
    image.SetOrigin((_LPS_TO_RAS @ affine[:3, 3]).tolist())
    sitk.WriteImage(image, str(path), useCompression=True)
    if not tensor:
        return
    frame = direction.copy()
    if fsl_x_mirrored(affine):
        frame[:, 0] *= -1
    raw = Path(path).read_bytes()
    cut = raw.index(b"\n\n")
    header = raw[:cut].decode("latin-1").split("\n")
    for i, line in enumerate(header):
        if line.startswith("kinds:"):
            header[i] = line.replace("vector", "3D-symmetric-matrix", 1)
    columns = " ".join("(" + ",".join(f"{v:.10g}" for v in frame[:, j]) + ")" for j in range(3))
    header.append(f"measurement frame: {columns}")
    Path(path).write_bytes("\n".join(header).encode("latin-1") + raw[cut:])
