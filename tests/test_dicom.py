"""DICOM DWI in (``infer`` / ``prepare dwi`` on a folder or zip, converted with dcm2niix), on
synthetic series written with pydicom (``dicom_series.py``): one series, several series (listed,
chosen with --series), a non-DWI series (refused), a zip."""

from __future__ import annotations

import json
import shutil
import zipfile

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.dti import synthesise_dwi

pytest.importorskip("pydicom", reason="DICOM tests need pydicom (dev extra)")
pytest.importorskip("dcm2niix", reason="DICOM input needs dcm2niix (pip install '.[dicom]')")
from dicom_series import write_dwi_series, write_non_dwi_series  # noqa: E402

runner = CliRunner()


def _phantom_dwi(shape=(24, 24, 12)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A small head-like DWI: an ellipsoid of anisotropic tensors, 1 b=0 + 12 directions."""
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = sum(g**2 for g in grid) < 0.8
    tensor = np.zeros((*shape, 6))
    tensor[head] = [1.2e-3, 0.1e-3, 0, 0.6e-3, 0, 0.5e-3]
    g = np.random.default_rng(0).normal(size=(13, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    g[0] = 0
    bvals = np.r_[0.0, np.full(12, 1000.0)]
    dwi = synthesise_dwi(tensor, np.where(head, 1000.0, 5.0), bvals, g)
    return np.round(dwi).astype(np.uint16), bvals, g


def _infer(*args):
    return runner.invoke(app, ["infer", *map(str, args)])


def test_infer_on_a_dicom_folder_writes_the_super_resolved_tensor(tmp_path):
    dwi, bvals, bvecs = _phantom_dwi()
    folder = tmp_path / "scan"
    write_dwi_series(folder, dwi, bvals, bvecs, series_number=3, description="DTI_axial")
    before = sorted(p.name for p in folder.iterdir())
    out = tmp_path / "sr.nii.gz"
    result = _infer(folder, "--output", out, "--maps")
    assert result.exit_code == 0, result.output
    tensor = nib.load(out)
    assert tensor.shape == (48, 48, 24, 6)
    assert np.isfinite(np.asarray(tensor.dataobj)).all()
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    assert sidecar["Converter"].startswith("dcm2niix ")
    assert sidecar["SourceAcquisition"]["SeriesDescription"] == "DTI_axial"
    assert sidecar["Input"] == str(folder.resolve())
    assert sorted(p.name for p in folder.iterdir()) == before, "the input is never written to"
    # the same series as a zip
    archive = tmp_path / "scan.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in folder.iterdir():
            z.write(p, p.name)
    zipped = _infer(archive, "--output", tmp_path / "zip_sr.nii.gz")
    assert zipped.exit_code == 0, zipped.output
    np.testing.assert_array_equal(
        np.asarray(nib.load(tmp_path / "zip_sr.nii.gz").dataobj), np.asarray(tensor.dataobj)
    )


def test_several_series_are_listed_and_one_is_chosen_never_guessed(tmp_path):
    dwi, bvals, bvecs = _phantom_dwi()
    folder = tmp_path / "study"
    write_dwi_series(folder, dwi, bvals, bvecs, series_number=4, description="DTI_A")
    write_dwi_series(folder, dwi[::-1].copy(), bvals, bvecs, series_number=5, description="DTI_B")
    write_non_dwi_series(folder, dwi[..., 0], series_number=6, description="T1")
    out = tmp_path / "sr.nii.gz"
    ambiguous = _infer(folder, "--output", out)
    assert ambiguous.exit_code == 1 and "holds 3 series" in ambiguous.output
    assert "--series N" in ambiguous.output and "Traceback" not in ambiguous.output
    assert not out.exists()
    chosen = _infer(folder, "--output", out, "--series", "2")
    assert chosen.exit_code == 0, chosen.output
    assert json.loads((tmp_path / "sr.json").read_text())["SourceAcquisition"]["SeriesNumber"] == 5
    not_dwi = _infer(folder, "--output", tmp_path / "t1.nii.gz", "--series", "3")
    assert not_dwi.exit_code == 1 and "not a DWI series" in not_dwi.output
    assert not (tmp_path / "t1.nii.gz").exists()


def test_a_non_dwi_series_alone_is_refused_in_one_line(tmp_path):
    dwi, _, _ = _phantom_dwi()
    folder = tmp_path / "t1"
    write_non_dwi_series(folder, dwi[..., 0], series_number=2, description="T1")
    result = _infer(folder, "--output", tmp_path / "sr.nii.gz")
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output
    assert "not a DWI series (it needs b-values)" in errors[0]


def test_prepare_dwi_takes_a_dicom_folder(tmp_path):
    dwi, bvals, bvecs = _phantom_dwi()
    folders = []
    for i in range(2):
        folder = tmp_path / f"scan{i}"
        write_dwi_series(folder, dwi, bvals, bvecs, series_number=1 + i)
        folders.append(folder)
    out = tmp_path / "prepared"
    result = runner.invoke(
        app, ["prepare", "dwi", *map(str, folders), "--out", str(out), "--split", "0.5,0.5,0"]
    )
    assert result.exit_code == 0, result.output
    assert (out / "scan0" / "hr_tensor.nii.gz").is_file()
    assert len(list((out / "dicom").glob("scan1-*/nifti/*.nii.gz"))) == 1  # kept beside
    again = runner.invoke(
        app, ["prepare", "dwi", *map(str, folders), "--out", str(out), "--split", "0.5,0.5,0"]
    )
    assert again.exit_code == 0, again.output  # converts afresh, never into old files


def test_missing_converter_says_how_to_install_it(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dcm2niix(name, *args, **kwargs):
        if name == "dcm2niix":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dcm2niix)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    dwi, bvals, bvecs = _phantom_dwi((8, 8, 4))
    write_dwi_series(tmp_path / "scan", dwi, bvals, bvecs)
    result = _infer(tmp_path / "scan", "--output", tmp_path / "sr.nii.gz")
    assert result.exit_code == 1 and "pip install 'dmri-revgan[dicom]'" in result.output
