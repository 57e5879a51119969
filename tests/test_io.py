"""Atomic writes: a failed write keeps the old file and leaves no temporary file."""

from __future__ import annotations

import numpy as np
import pytest

from dmri_revgan.io import atomic_path, read_nifti, save_nifti, write_csv_atomic


def test_failed_write_keeps_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.csv"
    write_csv_atomic(target, [{"a": 1}, {"a": 2, "b": 3}])
    assert target.read_text().splitlines() == ["a,b", "1,", "2,3"]
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a file")
        raise RuntimeError("interrupted")
    assert target.read_text().splitlines()[0] == "a,b"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.csv"]


def test_temporary_keeps_the_suffixes_so_writers_pick_the_format(tmp_path):
    with atomic_path(tmp_path / "sub.01_sr.nii.gz") as tmp:
        assert tmp.name.endswith(".nii.gz") and tmp.parent == tmp_path
        tmp.write_bytes(b"")
    (tmp_path / "sub.01_sr.nii.gz").unlink()
    data = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    save_nifti(tmp_path / "x.nii.gz", data, np.diag([2.0, 2.0, 2.0, 1.0]))
    back, image = read_nifti(tmp_path / "x.nii.gz")
    np.testing.assert_array_equal(back, data)
    assert image.header.get_data_dtype() == np.float32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.nii.gz"]


@pytest.mark.parametrize("name", ["huge.nii", "huge.nii.gz"])
def test_a_header_declaring_more_than_its_file_holds_is_refused_before_reading(tmp_path, name):
    """2000³ float32 voxels declared over a ~1 kB file: refused from the header alone, at once
    and without allocating the grid."""
    import gzip
    import resource
    import time

    import nibabel as nib

    from dmri_revgan.errors import InputError

    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).header.copy()
    header.set_data_shape((2000, 2000, 2000))
    raw = header.binaryblock + b"\0" * 600
    path = tmp_path / name
    path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(InputError, match="2000×2000×2000 grid .* cannot hold"):
        read_nifti(path)
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB


def _table(n: int = 7) -> tuple[np.ndarray, np.ndarray]:
    g = np.random.default_rng(0).normal(size=(n, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[0] = 0
    return np.r_[0.0, np.full(n - 1, 1000.0)], g


@pytest.mark.parametrize(
    "change, file, message",
    [
        (lambda b, g: (b * 0, g), "bval", "no diffusion-weighted volumes"),
        (lambda b, g: (np.where(np.arange(7) == 2, np.inf, b), g), "bval", "must be finite"),
        (lambda b, g: (b * 1e3, g), "bval", "between 0 and 100000"),
        (lambda b, g: (b, np.where(np.arange(7)[:, None] == 3, np.nan, g)), "bvec", "finite"),
        (lambda b, g: (b, np.where(np.arange(7)[:, None] == 3, 0.0, g)), "bvec", "zero direction"),
        (lambda b, g: (b, np.tile([[1.0, 0, 0]], (7, 1))), "bvec", "six non-collinear"),
    ],
)
def test_gradient_tables_a_tensor_fit_cannot_use_are_one_line_errors(
    tmp_path, change, file, message
):
    from dmri_revgan.errors import InputError
    from dmri_revgan.io import read_bvals_bvecs

    bvals, bvecs = change(*_table())
    np.savetxt(tmp_path / "dwi.bval", bvals[None])
    np.savetxt(tmp_path / "dwi.bvec", bvecs.T)
    with pytest.raises(InputError, match=message) as error:
        read_bvals_bvecs(tmp_path / "dwi.bval", tmp_path / "dwi.bvec", 7)
    assert str(error.value).startswith(str(tmp_path / f"dwi.{file}"))


def test_non_unit_directions_keep_their_b_matrix():
    """|g| ≠ 1: the unit vector with b scaled by |g|², the b·g·gᵀ dipy builds from the file."""
    from dmri_revgan.io import check_gradients

    bvals, bvecs = _table()
    scaled = bvecs * np.r_[1.0, 0.9, 1.0, 1.1, 1.0, 1.0, 0.95][:, None]
    b, g = check_gradients(bvals, scaled, "dwi.bval", "dwi.bvec")
    np.testing.assert_allclose(np.linalg.norm(g[1:], axis=1), 1.0)
    np.testing.assert_allclose(
        np.einsum("n,ni,nj->nij", b, g, g), np.einsum("n,ni,nj->nij", bvals, scaled, scaled)
    )
