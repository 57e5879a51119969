"""What ``infer`` reads: a tensor NIfTI, a DWI (NIfTI + b-table, or Slicer NRRD) or an HCP folder,
its brain mask, the checks it must pass, its re-orientation and the default output name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dmri_revgan.errors import InputError, InputWarning

if TYPE_CHECKING:  # reading inputs needs no torch
    from dmri_revgan.gradient_check import GradientCheck
    from dmri_revgan.model import LoadedModel


@dataclass
class Acquisition:
    """What a DWI input adds to its fitted tensor: the mean b≈0 image (X, Y, Z) and the gradient
    table (b-values (N,) s/mm², FSL-convention unit vectors (N, 3)), for ``infer --dwi``; the
    signal itself (X, Y, Z, N) only when asked (``infer --adapt`` simulates from it)."""

    b0: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    dwi: np.ndarray | None = None

    @classmethod
    def from_signal(
        cls, dwi: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, keep_dwi: bool = True
    ) -> Acquisition | None:
        """The acquisition of the signal ``dwi`` (X, Y, Z, N), keeping the signal itself if
        asked; None without a b≈0 volume (``--dwi`` needs one)."""
        from dmri_revgan.dti import B0_THRESHOLD

        b0 = bvals < B0_THRESHOLD
        if not b0.any():
            return None
        mean_b0 = dwi[..., b0].mean(-1).astype(np.float32)
        return cls(mean_b0, bvals, bvecs, dwi if keep_dwi else None)


@dataclass
class TensorInput:
    """A tensor volume read from the user's input, on its own (LR) grid."""

    tensor: np.ndarray  # (X, Y, Z, 6) FSL order, mm²/s
    mask: np.ndarray  # (X, Y, Z) bool
    image: Any  # the nibabel image whose header and orientation the outputs keep
    source: Path
    acquisition: Acquisition | None = None  # DWI inputs only
    metadata: dict[str, Any] = field(default_factory=dict)  # DICOM: acquisition, converter
    gradient_check: GradientCheck | None = None  # DWI inputs: the table checked (gradient_check)


def read_tensor_input(
    path: Path,
    order: str = "fsl",
    mask: Path | None = None,
    series: int | None = None,
    keep_dwi: bool = False,
    gradient_check: str = "fix",
) -> TensorInput:
    """Read INPUT as ``infer`` accepts it: a 6-channel tensor NIfTI (FSL order, or dipy with
    ``order="dipy"``), a 4D DWI with .bval/.bvec (or bvals/bvecs) beside it or a 3D Slicer DWI
    NRRD (the tensor is fitted first), an HCP subject folder (``<subject>/T1w/Diffusion``), or a
    folder / .zip of one DICOM DWI series (``series``: which, when it holds several).
    ``keep_dwi``: a DWI input's signal stays in ``acquisition.dwi``. ``gradient_check``: a DWI's
    table is checked against the anatomy first (:mod:`dmri_revgan.gradient_check`; "fix",
    "warn" or "off"); what it says is an :class:`InputWarning` naming the b-vector file."""
    import tempfile

    from dmri_revgan.data import dicom

    if dicom.is_dicom_source(path):
        with tempfile.TemporaryDirectory(prefix="dmri-revgan-dicom-") as work:
            converted = dicom.convert(path, Path(work), series)
            data = _read_file(
                converted.nifti,
                order,
                mask,
                keep_dwi,
                gradient_check,
                converted.bval,
                converted.bvec,
                shown=path,
            )
        data.source, data.metadata = path, converted.metadata
        return data
    if series is not None:
        raise InputError(path, "--series picks a series of a DICOM folder; this is not one")
    return _read_file(path, order, mask, keep_dwi, gradient_check)


def _read_file(
    path: Path,
    order: str,
    mask: Path | None,
    keep_dwi: bool = False,
    gradient_check: str = "fix",
    bval: Path | None = None,
    bvec: Path | None = None,
    shown: Path | None = None,
) -> TensorInput:
    """A NIfTI/NRRD tensor or DWI, or an HCP folder (see :func:`read_tensor_input`); ``bval``
    and ``bvec`` name the b-tables when they are not beside the file; ``shown`` is the path a
    message names in their place (a DICOM input's)."""
    import warnings

    from dmri_revgan import dti, io
    from dmri_revgan.gradient_check import fit_checked

    if path.is_dir():
        folder = path / "T1w" / "Diffusion" if (path / "T1w").is_dir() else path
        path = folder / "data.nii.gz"
        if not path.is_file():
            raise InputError(path, "no such file (expected an HCP subject folder)")
    from dmri_revgan.data.nrrd import is_nrrd, read_nrrd_dwi

    if is_nrrd(path):  # a 3D Slicer DWI: gradients and b-value in the header
        data, image, bvals, bvecs = read_nrrd_dwi(path)
    else:
        data, image = io.read_nifti(path, ndim=4)
        if bval is None:
            bval, bvec = io.find_tables(path) or (None, None)
    if bval is not None and bvec is not None:
        bvals, bvecs = io.read_bvals_bvecs(bval, bvec, data.shape[-1])
    if bval is not None or is_nrrd(path):
        given_mask = _read_mask(mask, data.shape[:3]) if mask else None
        brain = given_mask if given_mask is not None else dti.brain_mask(data, bvals)
        tensor, _, _, bvecs, check = fit_checked(
            data, bvals, bvecs, brain, image.affine, gradient_check
        )
        if check.message():
            warnings.warn(f"{shown or bvec or path}: {check.message()}", InputWarning, 2)
        acquisition = Acquisition.from_signal(data, bvals, bvecs, keep_dwi)
        return TensorInput(tensor, brain, image, path, acquisition, gradient_check=check)
    if data.shape[-1] != 6:
        raise InputError(
            path,
            f"has {data.shape[-1]} volumes: expected a 6-channel tensor, or a DWI with "
            ".bval/.bvec beside it",
        )
    bad = int((~np.isfinite(data)).any(-1).sum())
    if bad:
        raise InputError(path, f"{bad} voxels contain NaN or Inf")
    tensor = dti.dipy_to_fsl(data) if order == "dipy" else data
    brain = _read_mask(mask, data.shape[:3]) if mask else np.abs(tensor).sum(-1) > 0
    return TensorInput(tensor, brain, image, path)


def read_prepared(record: Any) -> TensorInput:
    """A prepared subject's LR tensor and LR mask (a ``data_manifest.csv`` row) read as
    ``dmri-revgan infer <lr_tensor> --mask <lr_mask>`` reads them."""
    return read_tensor_input(Path(record.lr_tensor), mask=Path(record.lr_mask))


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from dmri_revgan import io

    data, _ = io.read_nifti(path)
    if data.shape[:3] != tuple(shape):
        raise InputError(path, f"mask shape {data.shape} does not match the input grid {shape}")
    return data.reshape(shape) > 0


def default_output(source: Path, direction: str) -> Path:
    """``subject.nii.gz`` → ``subject_sr.nii.gz`` (up) or ``subject_lr.nii.gz`` (down); an HCP
    folder ``…/100307`` → ``…/100307_sr.nii.gz`` beside it."""
    suffix = "_sr" if direction == "up" else "_lr"
    if source.name == "data.nii.gz" and source.parent.name == "Diffusion":
        subject = source.parent.parent.parent
        return subject.parent / f"{subject.name}{suffix}.nii.gz"
    stem = source.name.removesuffix(".gz").removesuffix(".nii")
    stem = stem.removesuffix(".nrrd").removesuffix(".nhdr")
    if source.suffix.lower() == ".zip":  # a zipped DICOM series
        stem = source.stem
    return source.parent / f"{stem}{suffix}.nii.gz"


def reorientation(
    affine: np.ndarray, target: str | None
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """(perm, flips) for :func:`dmri_revgan.dti.flip_permute` that turn a volume with ``affine``
    into the voxel orientation ``target`` (axis codes such as "LAS"; None: no change)."""
    import nibabel as nib
    from nibabel import orientations

    if target is None:
        return (0, 1, 2), (False, False, False)
    transform = orientations.ornt_transform(
        nib.io_orientation(affine), orientations.axcodes2ornt(tuple(target))
    )
    perm, flips = [0, 0, 0], [False, False, False]
    for old, (new, flip) in enumerate(transform):
        perm[int(new)], flips[int(new)] = old, bool(flip < 0)
    return tuple(perm), tuple(flips)  # type: ignore[return-value]


@dataclass(frozen=True, eq=False)
class ModelFrame:
    """How an input reaches the network and comes back: its tensors in their own grid's frame
    (:func:`dmri_revgan.dti.voxel_frame`), its grid turned to the model's voxel orientation
    (:func:`reorientation`), tensor components turned with it."""

    affine: np.ndarray
    perm: tuple[int, int, int]
    flips: tuple[bool, bool, bool]

    @classmethod
    def of(cls, affine: np.ndarray, model: LoadedModel) -> ModelFrame:
        return cls(affine, *reorientation(affine, model.orientation))

    def tensor_in(self, tensor: np.ndarray) -> np.ndarray:
        """(X, Y, Z, 6) FSL-convention mm²/s → the network's (6, X', Y', Z')."""
        from dmri_revgan.dti import flip_permute, voxel_frame

        turned = voxel_frame(np.moveaxis(tensor, -1, 0), self.affine)
        return flip_permute(turned, self.perm, self.flips)

    def tensor_out(self, volume: np.ndarray) -> np.ndarray:
        """The network's (6, X', Y', Z') → (6, X, Y, Z) FSL convention, the input's grid."""
        from dmri_revgan.dti import unflip_permute, voxel_frame

        return voxel_frame(unflip_permute(volume, self.perm, self.flips), self.affine)

    def grid_in(self, volume: np.ndarray) -> np.ndarray:
        """A (X, Y, Z) mask or scalar map onto the network's grid (contiguous)."""
        from dmri_revgan.dti import turn_grid

        return np.ascontiguousarray(turn_grid(volume[None], self.perm, self.flips)[0])

    def grid_out(self, volume: np.ndarray) -> np.ndarray:
        """The inverse of :meth:`grid_in`."""
        from dmri_revgan.dti import turn_grid

        return turn_grid(volume[None], self.perm, self.flips, inverse=True)[0]


def check_brain(data: TensorInput) -> None:
    """Refuse an input with nothing to super-resolve; warn once when most tensors are
    non-physical (negative mean diffusivity)."""
    import warnings

    if not data.mask.any():
        raise InputError(data.source, "empty brain mask: no voxel to super-resolve")
    md = data.tensor[data.mask][:, [0, 3, 5]].mean(-1)
    negative = int((md < 0).sum())
    if not np.isfinite(md).all() or (md == 0).all():
        raise InputError(data.source, "no finite non-zero tensor inside the brain mask")
    if negative > md.size / 2:
        warnings.warn(
            f"{data.source}: {negative} of {md.size} brain voxels have negative mean "
            "diffusivity (non-physical tensors); check the channel order (--order)",
            InputWarning,
            stacklevel=2,
        )


def network_input(model: LoadedModel, lr: np.ndarray, lr_mask: np.ndarray) -> np.ndarray:
    """The LR tensor (6, x, y, z) on the HR grid as the model was trained to take it
    (``data.input``: nearest neighbour as in the paper, or edge-aware cubic)."""
    from dmri_revgan.data.degrade import interpolate

    return interpolate(lr, model.cfg.data.factor, model.cfg.data.input, lr_mask)
