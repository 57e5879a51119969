"""MONAI bundle export: MONAI parses it, builds the network, loads the weights as data and
reproduces `dmri-revgan infer`."""

from __future__ import annotations

import json
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch
from conftest import randomise
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.config import Config
from dmri_revgan.model import build_generator, save_model

runner = CliRunner()


def test_bundle_runs_in_monai_and_matches_infer(phantom_set, tmp_path):
    from monai.bundle import ConfigParser

    from dmri_revgan.data.manifest import read_manifest

    cfg = Config(name="bundle")
    cfg.model.width, cfg.model.depth, cfg.model.norm, cfg.model.residual = 8, 2, "none", True
    cfg.data.input = "edge_cubic"
    model = tmp_path / "model.safetensors"
    stats = ([7e-4, 0, 0, 7e-4, 0, 7e-4], [3e-4, 1e-4, 1e-4, 3e-4, 1e-4, 3e-4])
    save_model(model, randomise(build_generator(cfg), 0.05), cfg, *stats)
    bundle = tmp_path / "bundle"
    result = runner.invoke(app, ["export", str(model), "--bundle", str(bundle)])
    assert result.exit_code == 0, result.output
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    image = meta["network_data_format"]["inputs"]["image"]
    assert image["num_channels"] == 6 and image["channel_def"]["0"] == "Dxx"
    assert "mm^2/s" in image["units"] and meta["license"] and meta["references"]
    assert (bundle / "docs" / "README.md").is_file() and (bundle / "LICENSE").is_file()

    parser = ConfigParser()
    parser.read_config(bundle / "configs" / "inference.json")
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    state = torch.load(bundle / "models" / "model.pt", weights_only=True)
    network.load_state_dict(state)
    assert sum(p.numel() for p in network.parameters()) == sum(v.numel() for v in state.values())

    record = read_manifest(phantom_set[1])[0]
    lr = tmp_path / "lr.nii.gz"
    lr.write_bytes(record.lr_tensor.read_bytes())
    result = runner.invoke(app, ["infer", str(lr), "--model", str(model)])
    assert result.exit_code == 0, result.output
    out = tmp_path / "bundle_sr.nii.gz"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            str(bundle / "configs" / "inference.json"),
            "--bundle_root",
            str(bundle),
            "--input_path",
            str(lr),
            "--output_path",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    ours = np.asarray(nib.load(tmp_path / "lr_sr.nii.gz").dataobj)
    theirs = np.asarray(nib.load(out).dataobj)
    scale = np.sqrt((ours**2).mean())
    assert np.abs(ours - theirs).max() <= 1e-5 * scale
    np.testing.assert_allclose(nib.load(out).affine, nib.load(tmp_path / "lr_sr.nii.gz").affine)


def test_export_needs_one_mode(tmp_path):
    result = runner.invoke(app, ["export"])
    assert result.exit_code == 1 and "--bundle" in result.output
