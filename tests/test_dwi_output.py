"""``infer --dwi``: the super-resolved DWI a DWI pipeline can start from — dipy's fit of it gives
back the super-resolved tensor — and its gradient tables in the FSL and MRtrix conventions."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.dti import dipy_to_fsl, scanner_gradients, synthesise_dwi

runner = CliRunner()


def _dipy_fit(dwi: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray):
    """dipy's own WLS tensor fit (no clipping), FSL order."""
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    gtab = gradient_table(bvals, bvecs=bvecs, b0_threshold=50)
    fit = TensorModel(gtab, fit_method="WLS").fit(dwi.astype(np.float64), mask=mask)
    return dipy_to_fsl(fit.lower_triangular())


def _relative_error(fitted: np.ndarray, tensor: np.ndarray, mask: np.ndarray) -> float:
    return float(np.linalg.norm(fitted[mask] - tensor[mask]) / np.linalg.norm(tensor[mask]))


def _infer_dwi(source, tmp_path, *options):
    out = tmp_path / "sr.nii.gz"
    result = runner.invoke(app, ["infer", str(source), *options, "--output", str(out), "--dwi"])
    assert result.exit_code == 0, result.output
    tensor = np.asarray(nib.load(out).dataobj, np.float64)
    mask = np.asarray(nib.load(tmp_path / "sr_mask.nii.gz").dataobj) > 0
    image = nib.load(tmp_path / "sr_dwi.nii.gz")
    bvals = np.loadtxt(tmp_path / "sr_dwi.bval")
    bvecs = np.loadtxt(tmp_path / "sr_dwi.bvec").T
    return out, tensor, mask, image, bvals, bvecs


def test_the_synthesised_signal_fits_back_to_its_tensor():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 5, 3, 3, 3)) * 0.02
    matrices = np.eye(3) * 0.8e-3 + np.einsum("...ij,...kj->...ik", a, a) * 1e-1
    tensor = np.stack([matrices[..., i, j] for i, j in
                       ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))], -1)  # fmt: skip
    bvecs = rng.normal(size=(30, 3))
    bvecs /= np.linalg.norm(bvecs, axis=1, keepdims=True)
    bvals = np.r_[0, 0, np.full(14, 1000.0), np.full(14, 2000.0)]
    s0 = rng.uniform(500, 1500, size=tensor.shape[:3])
    dwi = synthesise_dwi(tensor, s0, bvals, bvecs)
    assert dwi.shape == (*tensor.shape[:3], 30) and dwi.dtype == np.float32
    np.testing.assert_allclose(dwi[..., 0], s0, rtol=1e-6)
    mask = np.ones(tensor.shape[:3], bool)
    assert _relative_error(_dipy_fit(dwi, bvals, bvecs, mask), tensor, mask) < 1e-4


def test_world_gradients_follow_the_affine_and_not_the_storage_order():
    """MRtrix's world-frame table from FSL bvecs: rotating the affine rotates it; storing x the
    other way round (LAS vs RAS, same bvecs by the FSL rule) leaves it unchanged."""
    g = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0.6, 0.8, 0]])
    ras, las = np.diag([2.0, 2, 2, 1]), np.diag([-2.0, 2, 2, 1])
    np.testing.assert_allclose(scanner_gradients(g, ras), g * [-1, 1, 1])
    np.testing.assert_allclose(scanner_gradients(g, las), scanner_gradients(g, ras))
    c, s = np.cos(0.3), np.sin(0.3)
    turn = np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    for affine in (ras, las):
        rotated = scanner_gradients(g, turn @ affine)
        np.testing.assert_allclose(rotated, scanner_gradients(g, affine) @ turn[:3, :3].T)
        np.testing.assert_allclose(np.linalg.norm(rotated, axis=1), 1.0)


def test_infer_dwi_on_a_phantom_dwi_writes_a_fittable_series(phantom_set, trained_run, tmp_path):
    raw, _ = phantom_set
    source = raw / "raw" / "phantom-01" / "T1w" / "Diffusion" / "data.nii.gz"
    out, tensor, mask, image, bvals, bvecs = _infer_dwi(
        source, tmp_path, "--model", str(trained_run), "--maps"
    )
    src = nib.load(source)
    assert image.shape == (*tensor.shape[:3], src.shape[3])
    written = sorted(tmp_path.glob("*.nii.gz"))  # tensor, mask, FA, MD, colour FA, DWI
    assert len(written) == 6
    for path in written:  # every NIfTI of `infer --maps --dwi`: mm, time only on the DWI
        units = nib.load(path).header.get_xyzt_units()
        assert units == ("mm", "sec" if path.name == "sr_dwi.nii.gz" else "unknown"), path.name
    np.testing.assert_allclose(bvals, np.loadtxt(source.parent / "bvals"))
    world = np.loadtxt(tmp_path / "sr_dwi.b")
    np.testing.assert_allclose(world[:, :3], scanner_gradients(bvecs, image.affine), atol=1e-5)
    fitted = _dipy_fit(np.asarray(image.dataobj), bvals, bvecs, mask)
    assert _relative_error(fitted, tensor, mask) < 1e-3
    tensor_only = runner.invoke(app, ["infer", str(out), "--model", str(trained_run), "--dwi"])
    assert tensor_only.exit_code == 1 and "--dwi needs a DWI input" in tensor_only.output


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_infer_dwi_on_a_real_series_with_the_shipped_model(tmp_path):
    source = SHARED_DATA / "xa30-10" / "T1w" / "Diffusion" / "data.nii.gz"
    _, tensor, mask, image, bvals, bvecs = _infer_dwi(source, tmp_path)
    assert image.shape[3] == nib.load(source).shape[3]
    fitted = _dipy_fit(np.asarray(image.dataobj), bvals, bvecs, mask)
    assert _relative_error(fitted, tensor, mask) < 1e-3
