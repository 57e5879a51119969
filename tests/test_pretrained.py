"""The shipped pretrained model: safe data inside the package, used when `--model` is absent."""

from __future__ import annotations

import hashlib
import json
import struct

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.model import PRETRAINED_FILE, load_model

runner = CliRunner()


def test_the_shipped_model_is_a_small_safetensors_file_of_the_default_recipe():
    data = PRETRAINED_FILE.read_bytes()
    assert len(data) < 8 * 2**20
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])  # plain JSON: nothing in the file can execute
    metadata = header["__metadata__"]
    assert json.loads(metadata["config"])["name"] == "hcp"
    model = load_model("default")
    assert model.path == PRETRAINED_FILE
    assert model.sha256 == hashlib.sha256(data).hexdigest()
    assert model.cfg.model.norm == "none" and model.cfg.data.input == "edge_cubic"
    assert model.orientation is not None


def test_infer_without_model_uses_the_shipped_model(phantom_set, tmp_path):
    _, manifest = phantom_set
    record = read_manifest(manifest)[0]
    out = tmp_path / "sr.nii.gz"
    result = runner.invoke(app, ["infer", str(record.lr_tensor), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0].startswith("model: the shipped pretrained model")
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    assert sidecar["ModelSHA256"] == hashlib.sha256(PRETRAINED_FILE.read_bytes()).hexdigest()
    named = tmp_path / "named.nii.gz"
    again = runner.invoke(
        app, ["infer", str(record.lr_tensor), "--model", "default", "--output", str(named)]
    )
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(nib.load(out).get_fdata(), nib.load(named).get_fdata())


def test_evaluate_accepts_the_shipped_model(phantom_set, tmp_path):
    _, manifest = phantom_set
    args = ["evaluate", "--manifest", str(manifest), "--model", "default", "--out", str(tmp_path)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["model_sha256"] == load_model("default").sha256


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_the_shipped_model_super_resolves_a_real_dwi_series(tmp_path):
    """A user's command on a real scan from another site (3 mm Philips): DWI in, tensor fitted,
    super-resolved to 1.5 mm with the shipped model, FA plausible inside the predicted mask."""
    series = SHARED_DATA.parent / "more-sites" / "vanderbilt-601"
    out = tmp_path / "sr.nii.gz"
    result = runner.invoke(app, ["infer", str(series), "--output", str(out), "--maps"])
    assert result.exit_code == 0, result.output
    source = nib.load(series / "T1w" / "Diffusion" / "data.nii.gz")
    image = nib.load(out)
    assert image.shape == (*(2 * s for s in source.shape[:3]), 6)
    np.testing.assert_allclose(np.linalg.norm(image.affine[:3, :3], axis=0), 1.5, atol=1e-4)
    mask = np.asarray(nib.load(tmp_path / "sr_mask.nii.gz").dataobj) > 0
    fa = np.asarray(nib.load(tmp_path / "sr_FA.nii.gz").dataobj)
    md = np.asarray(nib.load(tmp_path / "sr_MD.nii.gz").dataobj)
    assert 0.1 < np.median(fa[mask]) < 0.4
    assert 5e-4 < np.median(md[mask]) < 1.1e-3
