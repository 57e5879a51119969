"""File input/output with one-line errors and atomic writes.

Reads raise :class:`~dmri_revgan.errors.InputError` ("<file>: <problem>"); writes go to a temporary
file in the target folder and are renamed into place, so no partial file is ever left behind.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from dmri_revgan.dti import B0_THRESHOLD
from dmri_revgan.errors import InputError


def read_nifti(path: Path, ndim: int | None = None) -> tuple[np.ndarray, Any]:
    """(data as float32, nibabel image); the whole file is read, so truncation is caught here."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    image = _load_header(path)
    with _nifti_errors(path):
        data = np.asarray(image.dataobj, dtype=np.float32)
    if ndim is not None and data.ndim != ndim:
        raise InputError(path, f"expected a {ndim}D volume, got shape {data.shape}")
    return data, image


@contextmanager
def _nifti_errors(path: Path) -> Iterator[None]:
    """Whatever nibabel, numpy or zlib raise while reading ``path``, as one InputError line."""
    try:
        yield
    except InputError:
        raise
    except MemoryError as exc:
        raise InputError(path, "does not fit in memory as float32") from exc
    except Exception as exc:  # noqa: BLE001 - any dependency error on bad data
        raise InputError(path, f"not a readable NIfTI file (truncated or corrupt: {exc})") from exc


def _load_header(path: Path) -> Any:
    """The nibabel image of ``path`` (header only), its declared grid checked against the file."""
    import nibabel as nib

    with _nifti_errors(path):
        image = nib.load(path)
        _check_declared_size(path, image)
    return image


# deflate cannot shrink data by more than 1032:1, so a .nii.gz whose header declares more than
# that many times its own size is corrupt; a plain .nii must hold what its header declares.
_MAX_GZIP_RATIO = 1032
MAX_VOLUME_BYTES = 16 * 2**30  # float32 bytes of the largest volume read (an HCP DWI: ~4 GB)


def _check_declared_size(path: Path, image: Any) -> None:
    """Refuse, before reading any voxel, a header whose grid cannot be in the file behind it or
    would not fit in memory as float32 (a 2000³ grid over a 1 kB file is refused at once)."""
    shape = image.header.get_data_shape()
    if any(int(n) < 0 for n in shape):
        raise InputError(path, f"header declares a negative dimension {tuple(shape)}")
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    stored = voxels * image.header.get_data_dtype().itemsize
    if path.suffix == ".hdr":  # an Analyze-style pair: the voxels are in the .img beside it
        path = path.with_suffix(".img")
        if not path.is_file():
            raise InputError(path, "no such file (the image file of a .hdr/.img pair)")
    size = path.stat().st_size
    limit = size * _MAX_GZIP_RATIO if path.name.endswith(".gz") else size
    if stored > limit:
        raise InputError(
            path,
            f"header declares a {'×'.join(map(str, shape))} grid ({stored / 2**20:.0f} MiB of "
            f"data), which a {size}-byte file cannot hold (truncated or corrupt header)",
        )
    if voxels * 4 > MAX_VOLUME_BYTES:
        raise InputError(
            path, f"a {'×'.join(map(str, shape))} grid is {voxels * 4 / 2**30:.0f} GiB as float32"
        )


def nifti_image(
    data: np.ndarray,
    affine: np.ndarray,
    header: Any = None,
    description: str = "",
    time_axis: bool = False,
) -> Any:
    """A NIfTI image as every tool reads it: spatial units mm (the affine's), seconds on a 4th
    axis that is time (a DWI series; a tensor's 6 components are not), the reference header's
    qform/sform codes (scanner when it has none), and ``descrip`` "dmri-revgan <version>
    <description>" (80 bytes at most)."""
    import nibabel as nib

    from dmri_revgan import __version__

    image = nib.Nifti1Image(np.asarray(data), affine)
    qcode = int(header["qform_code"]) if header is not None else 0
    scode = int(header["sform_code"]) if header is not None else 0
    image.set_qform(affine, code=qcode or 1)
    image.set_sform(affine, code=scode or 1)
    image.header.set_xyzt_units("mm", "sec" if time_axis else "unknown")
    text = f"dmri-revgan {__version__} {description}".strip()
    image.header["descrip"] = text.encode("utf-8")[:79]
    return image


def save_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    header: Any = None,
    description: str = "",
    time_axis: bool = False,
) -> None:
    """Write :func:`nifti_image` atomically."""
    import nibabel as nib

    with atomic_path(Path(path)) as tmp:
        nib.save(nifti_image(data, affine, header, description, time_axis), tmp)


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` (same suffixes, so writers keep the format) that is
    renamed over ``path`` when the block succeeds and removed when it fails: readers never see a
    partial file and an interrupted write leaves the old one. A failing write (folder not
    writable, disk full) becomes one :class:`InputError` naming ``path``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{''.join(path.suffixes)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if path.parent.exists() and not path.parent.is_dir():
            reason = f"{path.parent} is a file, not a folder"
        raise InputError(path, f"cannot write ({reason})") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def save_figure(fig: Any, path: Path, dpi: int = 120) -> None:
    """Write a matplotlib figure atomically (format from the suffix) and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_csv_atomic(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write dict rows as CSV atomically; the header is the union of their keys, in order."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def read_bvals_bvecs(bval: Path, bvec: Path, n_volumes: int) -> tuple[np.ndarray, np.ndarray]:
    """b-values (N,) in s/mm² and unit b-vectors (N, 3) (FSL convention), checked against N."""
    for path in (bval, bvec):
        if not Path(path).is_file():
            raise InputError(path, "no such file")
    try:
        bvals = np.loadtxt(bval, ndmin=1).astype(np.float64).ravel()
    except ValueError as exc:
        raise InputError(bval, f"not a list of b-values ({exc})") from exc
    try:
        bvecs = np.loadtxt(bvec, ndmin=2).astype(np.float64)
    except ValueError as exc:
        raise InputError(bvec, f"not a table of b-vectors ({exc})") from exc
    if bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
        bvecs = bvecs.T
    elif bvecs.shape == (3, 3):
        bvecs = bvecs.T  # FSL files hold three rows (x, y, z)
    if bvals.size != n_volumes:
        raise InputError(bval, f"{bvals.size} b-values for {n_volumes} volumes")
    if bvecs.shape != (n_volumes, 3):
        raise InputError(bvec, f"{bvecs.shape} b-vector table for {n_volumes} volumes")
    return check_gradients(bvals, bvecs, bval, bvec)


_MAX_BVALUE = 1e5  # s/mm²: far beyond any human scanner's (≈ 3e4 for ex-vivo work)


def length_scale(norms: np.ndarray) -> np.ndarray:
    """The factor |g|² a b-vector's length puts on its b-value — only where the length is meant
    (off 1 by more than 1e-3): text files round unit vectors to ~1e-6, which must not turn
    b = 1000 into 999.999."""
    return np.where(np.abs(norms - 1.0) > 1e-3, norms**2, 1.0)


def check_gradients(
    bvals: np.ndarray, bvecs: np.ndarray, bval: Path, bvec: Path
) -> tuple[np.ndarray, np.ndarray]:
    """(b-values, unit b-vectors) a tensor fit can use, or a one-line error naming the file.

    b-values must be finite and in [0, 1e5] s/mm², with at least one diffusion-weighted volume
    (b ≥ 50); the weighted volumes' directions must be finite and non-zero, and span at least six
    non-collinear directions (the tensor's six unknowns). Fix-up rule (MRtrix's, and the same
    b-matrix b·g·gᵀ that dipy builds from the vectors as given): a direction of length |g| ≠ 1
    (0.5 ≤ |g| ≤ 2; some tools code b this way) becomes the unit vector with the b-value scaled
    by |g|² (:func:`length_scale`: lengths within 1e-3 of 1 are rounding, not a code); b≈0
    volumes get the zero vector."""
    if not np.isfinite(bvals).all() or (bvals < 0).any() or (bvals > _MAX_BVALUE).any():
        raise InputError(bval, "b-values must be finite and between 0 and 100000 s/mm²")
    weighted = bvals >= B0_THRESHOLD
    if not weighted.any():
        raise InputError(bval, "no diffusion-weighted volumes (every b-value is below 50 s/mm²)")
    if not np.isfinite(bvecs).all():
        raise InputError(bvec, "b-vectors must be finite (NaN or Inf found)")
    norms = np.linalg.norm(bvecs, axis=1)
    zero = weighted & (norms < 1e-6)
    if zero.any():
        raise InputError(bvec, f"volume {int(np.argmax(zero))} has b > 50 but a zero direction")
    if (weighted & ((norms < 0.5) | (norms > 2.0))).any():
        raise InputError(bvec, "b-vectors must have lengths near 1 (found one outside 0.5-2)")
    unit = np.zeros_like(bvecs)
    unit[weighted] = bvecs[weighted] / norms[weighted, None]
    bvals = np.where(weighted, bvals * length_scale(norms), bvals)
    g = unit[weighted]
    design = np.stack(
        [g[:, 0] ** 2, g[:, 1] ** 2, g[:, 2] ** 2, g[:, 0] * g[:, 1], g[:, 0] * g[:, 2],
         g[:, 1] * g[:, 2]], -1,
    )  # fmt: skip
    if np.linalg.matrix_rank(design, tol=1e-3) < 6:
        raise InputError(
            bvec, "fewer than six non-collinear gradient directions: a tensor cannot be fitted"
        )
    return bvals, unit


BVAL_NAMES = ("{stem}.bval", "bvals", "{stem}.bvals")
BVEC_NAMES = ("{stem}.bvec", "bvecs", "{stem}.bvecs")


def beside(path: Path, names: tuple[str, ...]) -> Path | None:
    """The first existing file among ``names`` next to ``path`` (``{stem}`` = name sans .nii.gz)."""
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    for name in names:
        candidate = path.parent / name.format(stem=stem)
        if candidate.is_file():
            return candidate
    return None


def preflight_input(path: Path) -> None:
    """What ``infer`` can check of its input before importing torch (seconds): it exists, a
    NIfTI's header is readable and declares a 4D grid its file can hold, and a DWI's b-tables
    beside it pass :func:`check_gradients`. Other inputs are checked when they are read."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    if not path.is_file() or not path.name.endswith((".nii", ".nii.gz")):
        return
    shape = tuple(int(n) for n in _load_header(path).header.get_data_shape())
    if len(shape) != 4:
        raise InputError(path, f"expected a 4D volume (a tensor or a DWI), got shape {shape}")
    tables = find_tables(path)
    if tables is not None:
        read_bvals_bvecs(*tables, shape[3])


def find_tables(path: Path) -> tuple[Path, Path] | None:
    """The .bval/.bvec (or bvals/bvecs) beside a DWI file; None when there is no b-value file,
    a one-line error when there is one without its b-vector file."""
    bval = beside(path, BVAL_NAMES)
    if bval is None:
        return None
    bvec = beside(path, BVEC_NAMES)
    if bvec is None:
        raise InputError(path, f"{bval.name} found but no .bvec/bvecs beside it")
    return bval, bvec
