"""Self-adaptation to the input (``infer --adapt``): a copy is fine-tuned, the model file never
changes, the result is reproducible for a seed and step count, and never worse where held back."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.data.degrade import block_mean
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.inference import read_prepared, read_tensor_input
from dmri_revgan.inference.adapt import (
    _heldout_error,
    _split,
    adapt_model,
    degradation,
    one_scale_down,
    self_pair,
)
from dmri_revgan.model import load_model


def _record(manifest):
    return next(r for r in read_manifest(manifest) if r.split == "test")


def _weights(gen: torch.nn.Module) -> list[torch.Tensor]:
    return [t.detach().clone() for t in gen.state_dict().values()]


def test_the_pair_is_the_input_one_scale_down(phantom_set, trained_run):
    _, manifest = phantom_set
    model = load_model(trained_run)
    data = read_prepared(_record(manifest))
    pair = self_pair(model, data)
    x, y, m = pair["input"], pair["target"], pair["mask"]
    assert x.shape == y.shape and m.shape == (1, *y.shape[1:])
    assert y.shape[1:] == tuple(s - s % 2 for s in data.tensor.shape[:3])
    brain = m[0] > 0
    # The input is a smoothed, coarser view of the target: close, but not equal, in the brain.
    assert 0 < abs(x[:, brain] - y[:, brain]).mean() < abs(y[:, brain]).mean()


def test_a_dwi_input_is_taken_one_scale_down_as_prepare_simulates(phantom_set):
    """From a DWI input the LR side is its signal averaged over 2³ blocks and fitted — exactly
    the LR tensor ``prepare`` made from the same series; without the signal (a tensor input),
    the tensor's block mean. ``degradation`` says which."""
    root, manifest = phantom_set
    record = _record(manifest)
    folder = root / "raw" / record.subject / "T1w" / "Diffusion"
    source, mask = folder / "data.nii.gz", folder / "nodif_brain_mask.nii.gz"
    data = read_tensor_input(source, mask=mask, keep_dwi=True)
    tensor, _, lr, lr_mask = one_scale_down(data, 2)
    prepared = np.asarray(nib.load(record.lr_tensor).dataobj)
    assert lr_mask.sum() > 100 and np.array_equal(lr_mask, nib.load(record.lr_mask).get_fdata() > 0)
    np.testing.assert_allclose(lr[lr_mask], prepared[lr_mask], rtol=1e-4, atol=1e-8)
    assert degradation(data).startswith("DWI signal block mean")
    plain = read_tensor_input(source, mask=mask)
    assert plain.acquisition is not None and plain.acquisition.dwi is None
    _, _, lr_plain, _ = one_scale_down(plain, 2)
    np.testing.assert_allclose(lr_plain, block_mean(tensor, 2), rtol=1e-6)
    assert degradation(plain).startswith("tensor block mean")

    # A fit of means is not a mean of fits: 2.7 % apart inside the brain (phantom, SNR 30), 13 %
    # over the whole LR mask, whose edge blocks average in the zeros outside the HR brain.
    def gap(region):
        return np.abs(lr_plain - lr)[region].mean() / np.abs(lr)[region].mean()

    inside = ndimage.binary_erosion(lr_mask)
    assert 0 < gap(inside) < 0.05 and gap(lr_mask) > 2 * gap(inside)


def test_adaptation_changes_a_copy_only_and_is_reproducible(phantom_set, trained_run):
    _, manifest = phantom_set
    model = load_model(trained_run)
    before = _weights(model.gen)
    file_sha = hashlib.sha256(model.path.read_bytes()).hexdigest()
    data = read_prepared(_record(manifest))
    torch.manual_seed(123)
    state = torch.get_rng_state()
    runs = [adapt_model(model, data, 5.0, seed=1, max_steps=6, check_every=2) for _ in range(2)]
    assert torch.equal(torch.get_rng_state(), state), "the caller's random state is untouched"
    (a, report_a), (b, report_b) = runs
    assert report_a.steps == report_b.steps == 6
    # The recorded held-back error is the kept weights' own (recomputed here), never above the
    # starting model's.
    pair = self_pair(model, data)
    _, window = _split(pair, 0.25)
    assert _heldout_error(model, a.gen, pair, window) == pytest.approx(report_a.heldout_after)
    assert _heldout_error(model, model.gen, pair, window) == pytest.approx(report_a.heldout_before)
    assert report_a.heldout_after <= report_a.heldout_before
    assert all(torch.equal(p, q) for p, q in zip(_weights(a.gen), _weights(b.gen), strict=True))
    assert all(torch.equal(p, q) for p, q in zip(before, _weights(model.gen), strict=True))
    assert hashlib.sha256(model.path.read_bytes()).hexdigest() == file_sha
    if report_a.kept_step:  # weights that helped on the held-back slab replaced the originals
        assert any(not torch.equal(p, q) for p, q in zip(before, _weights(a.gen), strict=True))


def test_infer_adapt_records_what_it_did_and_leaves_the_model_file(
    phantom_set, trained_run, tmp_path
):
    _, manifest = phantom_set
    model_file = trained_run / "checkpoints" / "best.safetensors"
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    out = tmp_path / "sr.nii.gz"
    args = [str(_record(manifest).lr_tensor), "--model", str(model_file), "--output", str(out)]
    done = CliRunner().invoke(app, ["infer", *args, "--adapt", "1", "--adapt-steps", "2"])
    assert done.exit_code == 0, done.output
    sidecar = json.loads((tmp_path / "sr.json").read_text())
    assert sidecar["Adaptation"]["steps"] == 2 and sidecar["ModelSHA256"] == sha
    assert sidecar["Adaptation"]["degradation"].startswith("tensor block mean")  # a tensor input
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == sha
    bad = CliRunner().invoke(app, ["infer", *args, "--adapt-steps", "2"])
    assert bad.exit_code == 1 and "--adapt-steps" in bad.output
