"""BIDS input and the BIDS App, on the shared real series laid out as a BIDS dataset (symlinks;
skipped where ../shared is absent), with sessions and acq-/dir-/run- entities."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import SHARED_DATA, randomise
from typer.testing import CliRunner

from dmri_revgan.bids_app import derivative_base
from dmri_revgan.cli import app
from dmri_revgan.config import Config
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.model import build_generator, save_model

runner = CliRunner()
needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
# (participant, session, extra entities, shared series)
LAYOUT = [
    ("A", "canon", "_acq-b1500_run-1", "canon-3000"),
    ("A", "canon", "_acq-b1500_run-2", "canon-4000"),
    ("A", "toshiba", "_acq-b1500", "toshiba-6006"),
    ("B", "prisma", "_acq-b2500_dir-PA", "xa30-10"),
    ("B", "prisma", "_acq-b2500_dir-AP", "xa30-17"),
]


@pytest.fixture(scope="module")
def bids_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("bids") / "ds"
    root.mkdir()
    (root / "dataset_description.json").write_text('{"Name": "shared", "BIDSVersion": "1.9.0"}')
    for person, session, extra, series in LAYOUT:
        folder = root / f"sub-{person}" / f"ses-{session}" / "dwi"
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"sub-{person}_ses-{session}{extra}_dwi"
        source = SHARED_DATA / series / "T1w" / "Diffusion"
        (folder / f"{stem}.nii.gz").symlink_to(source / "data.nii.gz")
        (folder / f"{stem}.bval").symlink_to(source / "bvals")
        (folder / f"{stem}.bvec").symlink_to(source / "bvecs")
        (folder / f"{stem}.json").symlink_to(source / "acquisition.json")
    return root


@needs_shared
def test_prepare_bids_finds_every_series_and_splits_by_participant(bids_dataset, tmp_path):
    out = tmp_path / "prepared"
    result = runner.invoke(
        app,
        [
            "prepare",
            "bids",
            "--bids-root",
            str(bids_dataset),
            "--out",
            str(out),
            "--split",
            "0.5,0.5,0",
            "--workers",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    records = read_manifest(out / "data_manifest.csv")
    assert {r.subject for r in records} == {f"sub-{p}_ses-{s}{e}" for p, s, e, _ in LAYOUT}
    splits = {r.person: set() for r in records}
    for r in records:
        splits[r.person].add(r.split)
    assert set(splits) == {"sub-A", "sub-B"} and all(len(s) == 1 for s in splits.values())
    assert splits["sub-A"] != splits["sub-B"]
    # The HCP path on the same series gives the same tensors (symlinked files).
    hcp = tmp_path / "hcp"
    runner.invoke(
        app,
        [
            "prepare",
            "hcp",
            "--hcp-root",
            str(SHARED_DATA),
            "--out",
            str(hcp),
            "--subjects",
            "xa30-10",
        ],
    )
    bids_tensor = out / "sub-B_ses-prisma_acq-b2500_dir-PA" / "hr_tensor.nii.gz"
    np.testing.assert_array_equal(
        np.asarray(nib.load(bids_tensor).dataobj),
        np.asarray(nib.load(hcp / "xa30-10" / "hr_tensor.nii.gz").dataobj),
    )


@needs_shared
def test_bids_app_writes_derivatives_for_one_participant(bids_dataset, tmp_path):
    cfg = Config(name="bids")
    cfg.model.width, cfg.model.depth, cfg.model.norm, cfg.model.residual = 8, 1, "none", True
    model = tmp_path / "model.safetensors"
    save_model(model, randomise(build_generator(cfg), 0.01), cfg, [7e-4] * 6, [3e-4] * 6)
    out = tmp_path / "derivatives"
    args = ["bids", str(bids_dataset), str(out), "participant", "--model", str(model)]
    result = runner.invoke(app, [*args, "--participant-label", "B"])
    assert result.exit_code == 0, result.output
    deriv = out / "dmri-revgan"
    description = json.loads((deriv / "dataset_description.json").read_text())
    assert description["DatasetType"] == "derivative"
    assert description["GeneratedBy"][0]["Name"] == "dmri-revgan"
    folder = deriv / "sub-B" / "ses-prisma" / "dwi"
    stem = "sub-B_ses-prisma_acq-b2500_dir-AP_space-orig_res-sr2x"
    tensor = nib.load(folder / f"{stem}_model-tensor_dwimap.nii.gz")
    source = nib.load(SHARED_DATA / "xa30-17" / "T1w" / "Diffusion" / "data.nii.gz")
    assert tensor.shape == (*(2 * s for s in source.shape[:3]), 6)
    for name in ("model-tensor", "model-tensor_param-fa", "model-tensor_param-md"):
        sidecar = json.loads((folder / f"{stem}_{name}_dwimap.json").read_text())
        assert sidecar["Sources"] == [
            "bids:raw:sub-B/ses-prisma/dwi/sub-B_ses-prisma_acq-b2500_dir-AP_dwi.nii.gz"
        ]
        assert len(sidecar["ModelSHA256"]) == 64
        assert sidecar["SourceAcquisition"]["Manufacturer"] == "Siemens"  # from the source JSON
    for path in deriv.rglob("*.nii.gz"):  # what the next tool reads from every header
        header = nib.load(path).header
        assert header.get_xyzt_units()[0] == "mm", path
        assert bytes(header["descrip"]).startswith(b"dmri-revgan"), path
        assert int(header["sform_code"]) == int(source.header["sform_code"]) > 0
    assert not (deriv / "sub-A").exists(), "only the selected participant"
    bad = runner.invoke(app, [*args[:3], "group", *args[4:]])
    assert bad.exit_code == 1 and "participant level" in bad.output


def test_derivative_names_keep_the_entities_in_order():
    assert derivative_base("sub-01_ses-2_run-1", 2) == "sub-01_ses-2_run-1_space-orig_res-sr2x"
    assert derivative_base("sub-01_space-T1w_run-1", 3) == "sub-01_run-1_space-T1w_res-sr3x"


def test_not_a_bids_dataset_is_one_line(tmp_path):
    result = runner.invoke(app, ["prepare", "bids", "--bids-root", str(tmp_path), "--out", "x"])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        == f"error: {tmp_path}: not a BIDS dataset (no dataset_description.json)"
    )


VALIDATOR = shutil.which("bids-validator-deno") or (
    str(Path(sys.executable).parent / "bids-validator-deno")
    if (Path(sys.executable).parent / "bids-validator-deno").is_file()
    else None
)


@pytest.mark.skipif(
    VALIDATOR is None, reason="bids-validator-deno is not installed (pip install -e '.[dev]')"
)
def test_bids_app_output_passes_the_official_validator(phantom_set, tmp_path):
    """The BIDS App's derivatives for two phantom participants: zero validator errors (the
    proposal-named maps are listed in .bidsignore, masks and sidecars are validated)."""
    raw, _ = phantom_set
    ds = tmp_path / "ds"
    for label, index in (("01", 1), ("02", 2)):
        folder = ds / f"sub-{label}" / "dwi"
        folder.mkdir(parents=True)
        source = raw / "raw" / f"phantom-{index:02d}" / "T1w" / "Diffusion"
        for suffix, name in ((".nii.gz", "data.nii.gz"), (".bval", "bvals"), (".bvec", "bvecs")):
            (folder / f"sub-{label}_dwi{suffix}").symlink_to(source / name)
        (folder / f"sub-{label}_dwi.json").write_text('{"PhaseEncodingDirection": "j"}')
    (ds / "dataset_description.json").write_text('{"Name": "phantom", "BIDSVersion": "1.9.0"}')
    cfg = Config(name="bids")
    cfg.model.width, cfg.model.depth, cfg.model.norm, cfg.model.residual = 8, 1, "none", True
    model = tmp_path / "model.safetensors"
    save_model(model, randomise(build_generator(cfg), 0.01), cfg, [7e-4] * 6, [3e-4] * 6)
    out = tmp_path / "derivatives"
    result = runner.invoke(app, ["bids", str(ds), str(out), "participant", "--model", str(model)])
    assert result.exit_code == 0, result.output
    deriv = out / "dmri-revgan"
    folder = deriv / "sub-01" / "dwi"
    assert (folder / "sub-01_space-orig_res-sr2x_desc-brain_mask.nii.gz").is_file()
    assert (deriv / "README").is_file() and (folder / "sub-01_dwi.bvec").is_file()
    dwi = nib.load(folder / "sub-01_space-orig_res-sr2x_desc-sr2x_dwi.nii.gz")
    assert dwi.shape[3] == len((folder / "sub-01_dwi.bval").read_text().split())
    assert dwi.header.get_xyzt_units() == ("mm", "sec")
    done = subprocess.run(
        [VALIDATOR, "--format", "json", str(deriv)], capture_output=True, text=True, timeout=300
    )
    issues = json.loads(done.stdout)["issues"]["issues"]
    errors = [(i["code"], i.get("location")) for i in issues if i["severity"] == "error"]
    assert errors == []
    # one author (the project); the inherited b-tables have no sidecar of their own
    assert {i["code"] for i in issues} <= {"TOO_FEW_AUTHORS", "SIDECAR_KEY_RECOMMENDED"}
