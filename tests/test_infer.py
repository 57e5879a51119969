"""`dmri-revgan infer`: grids and affines of the outputs, input kinds, and bad inputs."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.data.degrade import estimate_hr_mask
from dmri_revgan.data.manifest import read_manifest

runner = CliRunner()


def _records(manifest, split="test"):
    return [r for r in read_manifest(manifest) if r.split == split]


def _infer(*args):
    return runner.invoke(app, ["infer", *map(str, args)])


def test_sr_output_sits_on_the_prepared_hr_grid(phantom_set, trained_run, tmp_path):
    _, manifest = phantom_set
    record = _records(manifest)[0]
    out = tmp_path / "sr.nii.gz"
    result = _infer(record.lr_tensor, "--model", trained_run, "--output", out, "--maps")
    assert result.exit_code == 0, result.output
    hr = nib.load(record.hr_tensor)
    sr = nib.load(out)
    assert sr.shape == hr.shape
    np.testing.assert_allclose(sr.affine, hr.affine, atol=1e-6)
    data = np.asarray(sr.dataobj)
    assert np.isfinite(data).all()
    # Without --mask the LR brain is the LR tensor's non-zero support; the HR mask predicted on
    # is its upsampling grown by 2 HR voxels (estimate_hr_mask), written beside the output.
    support = np.abs(np.asarray(nib.load(record.lr_tensor).dataobj)).sum(-1) > 0
    brain = estimate_hr_mask(support, 2)
    assert np.all(data[~brain] == 0) and np.all(np.abs(data[brain]).sum(-1) > 0)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "sr_mask.nii.gz").dataobj), brain)
    for name in ("sr_FA", "sr_MD", "sr_colFA", "sr.json"):
        suffix = "" if name.endswith(".json") else ".nii.gz"
        assert (tmp_path / f"{name}{suffix}").is_file(), name
    md = np.asarray(nib.load(tmp_path / "sr_MD.nii.gz").dataobj)
    np.testing.assert_allclose(md, data[..., [0, 3, 5]].mean(-1), rtol=1e-4, atol=1e-9)


def test_down_direction_lands_on_the_lr_grid(phantom_set, trained_run, tmp_path):
    _, manifest = phantom_set
    record = _records(manifest)[0]
    out = tmp_path / "lr.nii.gz"
    result = _infer(record.hr_tensor, "--model", trained_run, "--direction", "down", "-o", out)
    assert result.exit_code == 0, result.output
    lr = nib.load(record.lr_tensor)
    assert nib.load(out).shape == lr.shape
    np.testing.assert_allclose(nib.load(out).affine, lr.affine, atol=1e-6)


def test_hcp_subject_folder_is_fitted_then_super_resolved(phantom_set, trained_run, tmp_path):
    root, _ = phantom_set
    subject = tmp_path / "phantom-02"
    shutil.copytree(root / "raw" / "phantom-02", subject)
    dwi = nib.load(subject / "T1w" / "Diffusion" / "data.nii.gz")
    result = _infer(subject, "--model", trained_run / "checkpoints" / "last.safetensors")
    assert result.exit_code == 0, result.output
    sr = nib.load(tmp_path / "phantom-02_sr.nii.gz")
    assert sr.shape == (*(2 * s for s in dwi.shape[:3]), 6)
    np.testing.assert_allclose(np.diag(sr.affine)[:3], np.diag(dwi.affine)[:3] / 2)


def _five_channels(tmp_path, record):
    img = nib.load(record.lr_tensor)
    path = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :5], img.affine), path)
    return [path], "5 volumes"


def _dwi_without_bvecs(tmp_path, record, root):
    folder = root / "raw" / record.subject / "T1w" / "Diffusion"
    shutil.copy(folder / "data.nii.gz", tmp_path / "dwi.nii.gz")
    shutil.copy(folder / "bvals", tmp_path / "dwi.bval")
    return [tmp_path / "dwi.nii.gz"], "bvec"


def _nan_voxels(tmp_path, record):
    img = nib.load(record.lr_tensor)
    data = np.asarray(img.dataobj).copy()
    data[3, 4, 5, 2] = np.nan
    path = tmp_path / "nan.nii.gz"
    nib.save(nib.Nifti1Image(data, img.affine), path)
    return [path], "NaN"


def _other_architecture(tmp_path, record, run):
    from conftest import rewrite_model_file

    from dmri_revgan.model import read_metadata

    source = run / "checkpoints" / "last.safetensors"
    config = read_metadata(source)["config"]
    config["model"]["width"] = 16
    rewrite_model_file(source, tmp_path / "other.safetensors", config=json.dumps(config))
    shutil.copy(record.lr_tensor, tmp_path / "lr.nii.gz")
    return [tmp_path / "lr.nii.gz", "--model", tmp_path / "other.safetensors"], "has shape"


def _output_is_input(tmp_path, record):
    path = tmp_path / "lr.nii.gz"
    shutil.copy(record.lr_tensor, path)
    return [path, "--output", path], "equals the input"


@pytest.mark.parametrize(
    "case", ["five_channels", "dwi_without_bvecs", "nan_voxels", "other_architecture", "output"]
)
def test_bad_input_gives_one_line_error_and_writes_nothing(
    case, phantom_set, trained_run, tmp_path
):
    root, manifest = phantom_set
    record = _records(manifest)[0]
    work = tmp_path / "work"
    work.mkdir()
    make = {
        "five_channels": lambda: _five_channels(work, record),
        "dwi_without_bvecs": lambda: _dwi_without_bvecs(work, record, root),
        "nan_voxels": lambda: _nan_voxels(work, record),
        "other_architecture": lambda: _other_architecture(work, record, trained_run),
        "output": lambda: _output_is_input(work, record),
    }[case]
    args, expected = make()
    if "--model" not in args:
        args += ["--model", trained_run]
    before = {p: p.stat().st_mtime_ns for p in work.iterdir()}
    result = runner.invoke(app, ["infer", *map(str, args)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert expected in lines[0]
    assert {p: p.stat().st_mtime_ns for p in work.iterdir()} == before, "a file was written"


def test_every_written_nifti_says_mm_what_it_is_and_keeps_the_frame_codes(
    phantom_set, trained_run, tmp_path
):
    """The headers of all of infer's NIfTIs (tensor, mask, maps, SD): spatial units mm, no time
    axis, descrip naming the tool and the volume, the input's qform/sform codes."""
    _, manifest = phantom_set
    record = _records(manifest)[0]
    out = tmp_path / "sr.nii.gz"
    result = _infer(
        record.lr_tensor, "--model", trained_run, "--output", out, "--maps", "--uncertainty", "2"
    )
    assert result.exit_code == 0, result.output
    source = nib.load(record.lr_tensor).header
    written = sorted(tmp_path.glob("*.nii.gz"))
    assert len(written) == 6  # tensor, mask, FA, MD, colour FA, SD
    for path in written:
        header = nib.load(path).header
        assert header.get_xyzt_units() == ("mm", "unknown"), path.name
        assert bytes(header["descrip"]).startswith(b"dmri-revgan "), path.name
        for code in ("qform_code", "sform_code"):
            assert int(header[code]) == (int(source[code]) or 1), (path.name, code)
    tensor = bytes(nib.load(out).header["descrip"]).decode()
    assert "super-resolved tensor" in tensor
