"""The HR brain mask `infer` predicts on, and `evaluate` scoring exactly what `infer` writes.

The real brain reaches beyond the blocky nearest-neighbour upsampling of the LR mask; `infer`
predicts on the LR mask grown by r HR voxels (`estimate_hr_mask`), writes that mask beside the
output, and `evaluate` / training validation / the pipelines predict the same way, from the LR
tensor and LR mask alone — the HR mask only scores.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.data.degrade import estimate_hr_mask, upsample
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.metrics import region_rmse

runner = CliRunner()


def _infer(record, run, out):
    result = runner.invoke(
        app,
        [
            "infer",
            str(record.lr_tensor),
            "--mask",
            str(record.lr_mask),
            "--model",
            str(run),
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_evaluate_scores_exactly_what_infer_writes(phantom_set, trained_run, tmp_path):
    _, manifest = phantom_set
    out = tmp_path / "eval"
    args = ["evaluate", "--manifest", str(manifest), "--model", str(trained_run), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    for record in [r for r in read_manifest(manifest) if r.split == "test"]:
        written = _infer(record, trained_run, tmp_path / f"{record.subject}_sr.nii.gz")
        by_infer = np.asarray(nib.load(written).dataobj)
        scored = np.asarray(nib.load(out / "predictions" / f"{record.subject}_sr.nii.gz").dataobj)
        np.testing.assert_array_equal(scored, by_infer)  # voxel for voxel
        mask_file = written.with_name(f"{record.subject}_sr_mask.nii.gz")
        np.testing.assert_array_equal(
            np.asarray(nib.load(out / "predictions" / f"{record.subject}_sr_mask.nii.gz").dataobj),
            np.asarray(nib.load(mask_file).dataobj),
        )
        # ... and its numbers are those of infer's file against the HR tensor on the HR mask.
        target = np.moveaxis(np.asarray(nib.load(record.hr_tensor).dataobj, np.float32), -1, 0)
        hr_mask = np.asarray(nib.load(record.hr_mask).dataobj) > 0
        expected = region_rmse(np.moveaxis(by_infer, -1, 0), target, hr_mask)
        model = metrics["subjects"][record.subject]["model"]
        for region in ("interior", "total", "exterior"):
            assert model[region] == expected[region]


def test_infer_predicts_on_the_estimated_hr_mask_and_writes_it(phantom_set, trained_run, tmp_path):
    _, manifest = phantom_set
    record = read_manifest(manifest)[0]
    written = _infer(record, trained_run, tmp_path / "sr.nii.gz")
    tensor = np.asarray(nib.load(written).dataobj)
    mask_image = nib.load(tmp_path / "sr_mask.nii.gz")
    mask = np.asarray(mask_image.dataobj) > 0
    np.testing.assert_allclose(mask_image.affine, nib.load(written).affine)
    lr_mask = np.asarray(nib.load(record.lr_mask).dataobj) > 0
    np.testing.assert_array_equal(mask, estimate_hr_mask(lr_mask, record.factor))
    blocky = upsample(lr_mask[None], record.factor, 0)[0]
    rim = mask & ~blocky
    assert rim.sum() > 0.1 * blocky.sum()
    # The rim beyond the blocky LR mask gets a real prediction; outside the mask nothing.
    assert (np.abs(tensor[rim]).sum(-1) > 0).mean() > 0.99
    assert not tensor[~mask].any()
    # The rim holds real brain that the blocky mask would zero.
    hr_mask = np.asarray(nib.load(record.hr_mask).dataobj) > 0
    assert (hr_mask & ~blocky).any() and not (hr_mask & ~mask).any()
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    assert sidecar["Mask"]["File"] == "sr_mask.nii.gz"
    assert "dilated by r HR voxels" in sidecar["Mask"]["Method"]
