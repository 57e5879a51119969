"""3D Slicer NRRD DWI input (SimpleITK): a shared real series written the way Slicer writes it
gives the same tensors as the NIfTI + .bval/.bvec path."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA
from typer.testing import CliRunner

from dmri_revgan.cli import app

runner = CliRunner()
pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
LPS = np.diag([-1.0, -1.0, 1.0])


def write_slicer_nrrd(source, bvals_path, bvecs_path, target, frame_degrees=30.0):
    """A Slicer-style DWI NRRD: vector image in LPS, gradients in a rotated measurement frame,
    their squared lengths scaling the b-value."""
    import SimpleITK as sitk

    image = nib.load(source)
    data = np.asarray(image.dataobj, np.float32)
    affine = image.affine
    bvals = np.loadtxt(bvals_path)
    bvecs = np.loadtxt(bvecs_path).reshape(3, -1)
    spacing = np.linalg.norm(affine[:3, :3], axis=0)
    direction = LPS @ affine[:3, :3] / spacing
    g_vox = bvecs.copy()
    if np.linalg.det(affine[:3, :3]) > 0:
        g_vox[0] *= -1
    world = direction @ g_vox
    t = np.radians(frame_degrees)
    frame = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    stored = frame.T @ world * np.sqrt(bvals / bvals.max())
    out = sitk.GetImageFromArray(np.transpose(data, (2, 1, 0, 3)), isVector=True)
    out.SetSpacing(spacing.tolist())
    out.SetDirection(direction.flatten().tolist())
    out.SetOrigin((LPS @ affine[:3, 3]).tolist())
    out.SetMetaData("modality", "DWMRI")
    out.SetMetaData("DWMRI_b-value", f"{bvals.max():g}")
    for i, g in enumerate(stored.T):
        out.SetMetaData(f"DWMRI_gradient_{i:04d}", " ".join(f"{v:.10f}" for v in g))
    sitk.WriteImage(out, str(target), useCompression=True)
    raw = target.read_bytes()
    cut = raw.index(b"\n\n")
    columns = " ".join("(" + ",".join(f"{v:.12f}" for v in frame[:, j]) + ")" for j in range(3))
    target.write_bytes(raw[:cut] + f"\nmeasurement frame: {columns}".encode() + raw[cut:])
    return target


def test_slicer_nrrd_gives_the_same_tensors_as_nifti(tmp_path):
    from dmri_revgan.data.nrrd import read_nrrd_dwi

    folder = SHARED_DATA / "xa30-10" / "T1w" / "Diffusion"
    nrrd = write_slicer_nrrd(
        folder / "data.nii.gz", folder / "bvals", folder / "bvecs", tmp_path / "xa30-10.nrrd"
    )
    assert "DWMRI_gradient_0001:=" in nrrd.read_bytes()[:4000].decode("latin-1")
    data, image, bvals, bvecs = read_nrrd_dwi(nrrd)
    reference = nib.load(folder / "data.nii.gz")
    np.testing.assert_allclose(image.affine, reference.affine, atol=1e-5)
    np.testing.assert_array_equal(data, np.asarray(reference.dataobj, np.float32))
    # The same b-matrices b·g·gᵀ, up to the text rounding of unit vectors (|g| = 1 ± 1e-6 in
    # the files: rounding, not a b-value code, io.length_scale).
    file_b, file_g = np.loadtxt(folder / "bvals"), np.loadtxt(folder / "bvecs")
    ours = np.einsum("n,ni,nj->nij", bvals, bvecs, bvecs)
    theirs = np.einsum("n,in,jn->nij", file_b, file_g, file_g)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-2)

    out_nrrd, out_hcp = tmp_path / "from_nrrd", tmp_path / "from_nifti"
    result = runner.invoke(app, ["prepare", "dwi", str(nrrd), "--out", str(out_nrrd)])
    assert result.exit_code == 0, result.output
    args = ["prepare", "hcp", "--hcp-root", str(SHARED_DATA), "--subjects", "xa30-10"]
    assert runner.invoke(app, [*args, "--out", str(out_hcp)]).exit_code == 0
    a = np.asarray(nib.load(out_nrrd / "xa30-10" / "hr_tensor.nii.gz").dataobj)
    b = np.asarray(nib.load(out_hcp / "xa30-10" / "hr_tensor.nii.gz").dataobj)
    assert np.abs(a - b).max() <= 1e-6 * np.abs(b).max()


def test_infer_reads_a_slicer_nrrd_and_writes_nifti_beside_it(tmp_path):
    from conftest import randomise

    from dmri_revgan.config import Config
    from dmri_revgan.model import build_generator, save_model

    folder = SHARED_DATA / "xa30-17" / "T1w" / "Diffusion"
    nrrd = write_slicer_nrrd(
        folder / "data.nii.gz", folder / "bvals", folder / "bvecs", tmp_path / "dwi.nrrd", 0.0
    )
    cfg = Config(name="nrrd")
    cfg.model.width, cfg.model.depth, cfg.model.norm, cfg.model.residual = 8, 1, "none", True
    model = tmp_path / "m.safetensors"
    save_model(model, randomise(build_generator(cfg), 0.01), cfg, [7e-4] * 6, [3e-4] * 6)
    result = runner.invoke(app, ["infer", str(nrrd), "--model", str(model)])
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "dwi_sr.nii.gz")
    source = nib.load(folder / "data.nii.gz")
    assert out.shape == (*(2 * s for s in source.shape[:3]), 6)
    np.testing.assert_allclose(np.diag(out.affine)[:3], np.diag(source.affine)[:3] / 2, atol=1e-5)


def test_a_nrrd_without_dwmri_keys_is_one_line(tmp_path):
    import SimpleITK as sitk

    path = tmp_path / "plain.nrrd"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkFloat32), str(path))
    result = runner.invoke(app, ["prepare", "dwi", str(path), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "plain: " in result.output and "DWMRI" in result.output
