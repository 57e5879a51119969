"""Training options that real tensors need (issue: real-data recipe), each with its behaviour."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from test_train import make_trainer, tiny_config

from dmri_revgan.config import LossConfig, load_config
from dmri_revgan.data.degrade import fill_outside, interpolate
from dmri_revgan.data.patches import Normalisation, PatchDataset
from dmri_revgan.dti import eig, fa_md, flip_permute, from_matrix, to_matrix, unflip_permute
from dmri_revgan.losses import paired_objective, pixel_loss
from dmri_revgan.nets.generators import RevGenerator
from dmri_revgan.training import lr_lambda


def _spd_field(shape=(5, 6, 7), seed=0) -> np.ndarray:
    """A (6, X, Y, Z) field of random symmetric positive-definite tensors, FSL order."""
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(*shape, 3, 3))
    matrices = a @ np.swapaxes(a, -1, -2) * 1e-4 + np.eye(3) * 1e-4
    return np.moveaxis(from_matrix(matrices), -1, 0)


@pytest.mark.parametrize(
    "perm, flips",
    [((0, 1, 2), (True, False, False)), ((2, 0, 1), (False, True, True)), ((1, 0, 2), (0, 0, 0))],
)
def test_flip_permute_turns_tensors_with_the_grid(perm, flips):
    field = _spd_field()
    turned = flip_permute(field, perm, flips)
    assert turned.shape[1:] == tuple(field.shape[1 + p] for p in perm)
    np.testing.assert_allclose(unflip_permute(turned, perm, flips), field, rtol=1e-12)
    # Voxel p of the original lands at q with q_i = p_perm[i] (mirrored on flipped axes).
    p = (1, 4, 2)
    q = tuple(
        field.shape[1 + perm[i]] - 1 - p[perm[i]] if flips[i] else p[perm[i]] for i in range(3)
    )
    before, after = field[(slice(None), *p)], turned[(slice(None), *q)]
    vals_b, vecs_b = eig(before[None])
    vals_a, vecs_a = eig(after[None])
    np.testing.assert_allclose(vals_a, vals_b, rtol=1e-10)  # same eigenvalues
    fa_b, md_b = fa_md(before.reshape(1, 6))
    fa_a, md_a = fa_md(after.reshape(1, 6))
    np.testing.assert_allclose([fa_a, md_a], [fa_b, md_b], rtol=1e-10)
    # Eigenvectors are the old ones with components permuted (and negated on flipped axes).
    sign = np.array([-1.0 if f else 1.0 for f in flips])
    expected = sign[:, None] * vecs_b[0][list(perm), :]
    np.testing.assert_allclose(np.abs(np.sum(expected * vecs_a[0], 0)), 1.0, rtol=1e-8)
    np.testing.assert_allclose(
        to_matrix(after), to_matrix(before)[np.ix_(perm, perm)] * np.outer(sign, sign), rtol=1e-12
    )


def test_augmented_patches_keep_input_target_and_mask_aligned():
    field = _spd_field((8, 8, 8)).astype(np.float32)
    mask = np.zeros((1, 8, 8, 8), np.float32)
    mask[0, :3, 1:5, 2:] = 1
    norm = Normalisation([5e-4] * 6, [2e-4] * 6)
    volume = {"input": norm.apply(field), "target": norm.apply(2 * field), "mask": mask}
    data = PatchDataset(
        [volume], 8, "grid", None, 0.01, 1, seed=0, augment=True, normalisation=norm
    )
    seen = set()
    for epoch in range(6):
        data.set_epoch(epoch)
        item = data[0]
        x, y = (norm.invert(item[k].numpy()) for k in ("input", "target"))
        np.testing.assert_allclose(y, 2 * x, rtol=1e-4, atol=1e-9)
        assert item["mask"].sum() == mask.sum()
        for perm, flips in itertools.product(
            itertools.permutations(range(3)), itertools.product((False, True), repeat=3)
        ):
            if np.allclose(flip_permute(field, perm, flips), x, atol=1e-9, rtol=1e-4):
                turned_mask = np.transpose(mask, (0, *(1 + p for p in perm)))
                axes = tuple(1 + a for a in range(3) if flips[a])
                np.testing.assert_array_equal(np.flip(turned_mask, axes), item["mask"].numpy())
                seen.add((perm, flips))
                break
        else:
            raise AssertionError("augmented patch is not a flip/permutation of the original")
    assert len(seen) > 1, "augmentation draws different transforms across epochs"


def test_corner_sampler_draws_brain_patches_reproducibly():
    mask = np.zeros((1, 40, 40, 30), np.float32)
    mask[0, 10:30, 10:30, 5:25] = 1
    volume = {"input": np.zeros((6, 40, 40, 30), np.float32), "target": None, "mask": mask}
    volume["target"] = volume["input"]

    def windows(epoch):
        data = PatchDataset([volume], 16, "corner", None, 0.01, 12, seed=3)
        data.set_epoch(epoch)
        return data.index

    first = windows(0)
    assert len(first) == 12 and first == windows(0) and first != windows(1)
    for _, w in first:
        assert mask[(0, *w)].sum() >= 0.01 * 16**3


def test_masked_pixel_losses_ignore_the_background():
    pred, target = torch.zeros(1, 6, 4, 4, 4), torch.zeros(1, 6, 4, 4, 4)
    target[..., :2] = 1.0  # error only where the mask is 0
    pred[..., 3] = 0.5  # error 0.5 inside the mask
    mask = torch.zeros(1, 1, 4, 4, 4)
    mask[..., 2:] = 1
    assert pixel_loss(pred, target, "l1", mask).item() == pytest.approx(0.25)
    assert pixel_loss(pred, target, "l2", mask).item() == pytest.approx(0.125)
    assert pixel_loss(pred, target, "l1").item() == pytest.approx((32 * 6 + 16 * 6 * 0.5) / 384)
    with pytest.raises(ValueError, match="pixel"):
        pixel_loss(pred, target, "huber")


def test_reverse_weight_zero_trains_f_only():
    gen = RevGenerator(3, 6, 6, 8, 1, residual=True, norm="none")
    x, y = torch.randn(2, 6, 8, 8, 8), torch.randn(2, 6, 8, 8, 8)
    mask = torch.ones(2, 1, 8, 8, 8)
    cfg = LossConfig(use_gan=False, pixel="l2", mask=True, reverse_weight=0.0)
    step = paired_objective(gen, None, None, x, y, cfg, mask)
    assert "l1_G" not in step.terms
    assert step.loss.item() == pytest.approx(100 * ((gen(x) - y) ** 2).mean().item(), rel=1e-5)
    both = paired_objective(gen, None, None, x, y, LossConfig(use_gan=False), mask)
    assert "l1_G" in both.terms


def test_cosine_schedule_decays_to_zero_smoothly():
    """1 for the constant epochs, then half a cosine, falling at every epoch, that is exactly 0
    once the decay epochs are over (the scheduler's value after the last epoch, as linear's)."""
    constant, decay = 2, 8
    f = lr_lambda(constant, decay, "cosine")
    values = [f(e) for e in range(constant + decay + 1)]
    assert values[:constant] == [1.0] * constant
    assert all(a > b for a, b in itertools.pairwise(values[constant - 1 :]))
    t = (np.arange(constant, constant + decay + 1) + 1 - constant) / (decay + 1)
    np.testing.assert_allclose(values[constant:], 0.5 * (1 + np.cos(np.pi * t)), atol=1e-15)
    assert values[-1] == 0.0 == lr_lambda(constant, decay, "linear")(constant + decay)
    with pytest.raises(ValueError, match="schedule"):
        lr_lambda(1, 1, "step")


def test_time_budget_stops_before_an_epoch_would_overrun(tmp_path):
    cfg = tiny_config("paired", use_gan=False, epochs=5)
    cfg.optim.max_minutes = 1e-9
    trainer = make_trainer(tmp_path, cfg)
    rows = trainer.fit()
    assert len(rows) == 1 and trainer.epoch == 1  # the first epoch's time is unknown beforehand


def test_edge_aware_cubic_extends_the_brain_before_the_spline():
    lr = np.zeros((1, 8, 8, 8), np.float32)
    lr[0, 2:6, 2:6, 2:6] = 7.0
    mask = lr[0] > 0
    filled = fill_outside(lr, mask)
    assert (filled == 7.0).all()
    edge = interpolate(lr, 2, "edge_cubic", mask)
    plain = interpolate(lr, 2, "cubic")
    hr_mask = np.repeat(np.repeat(np.repeat(mask, 2, 0), 2, 1), 2, 2)
    np.testing.assert_allclose(edge[0][hr_mask], 7.0, rtol=1e-5)  # no background mixed in
    assert plain[0][hr_mask].min() < 6.9
    with pytest.raises(ValueError, match="mask"):
        interpolate(lr, 2, "edge_cubic")


def test_the_default_and_paper_recipes_are_both_reachable():
    real, paper = load_config("hcp"), load_config("hcp-paper")
    assert (real.model.norm, real.loss.mask, real.data.augment) == ("none", True, True)
    assert (paper.model.norm, paper.loss.mask, paper.loss.use_gan) == ("instance", False, True)
    assert (paper.optim.lr, paper.optim.batch_size, paper.loss.lambda_l1) == (2e-4, 1, 100.0)
    assert load_config("hcp-d8").model.norm == "instance"


def test_a_finished_time_budget_stays_finished_after_resume(tmp_path):
    from dmri_revgan.model import load_resume_state

    cfg = tiny_config("paired", use_gan=False, epochs=5)
    cfg.optim.max_minutes = 1e-9
    make_trainer(tmp_path, cfg).fit()
    again = make_trainer(tmp_path, cfg)
    again.load_state(load_resume_state(tmp_path), tmp_path)
    assert again.fit() == [] and again.epoch == 1
