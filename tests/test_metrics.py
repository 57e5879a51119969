"""DTI accuracy measures of `dmri_revgan.metrics`: FA MAE, MD RMSE, principal-direction angle."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from dipy.reconst.dti import decompose_tensor, fractional_anisotropy, mean_diffusivity
from scipy.spatial.transform import Rotation

from dmri_revgan.dti import fa_md
from dmri_revgan.metrics import (
    DTI_KEYS,
    REGIONS,
    dti_errors,
    region_masks,
    region_rmse,
    region_scores,
)

SHAPE = (3, 4, 5)
N = int(np.prod(SHAPE))


def fsl(matrices: np.ndarray, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    """(N, 3, 3) → (6, *shape) FSL order (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz), channels first."""
    m = matrices
    six = [m[:, 0, 0], m[:, 0, 1], m[:, 0, 2], m[:, 1, 1], m[:, 1, 2], m[:, 2, 2]]
    return np.stack(six).reshape(6, *shape)


def tensors(rotations: np.ndarray, evals=(1.7e-3, 0.4e-3, 0.3e-3)) -> np.ndarray:
    """(N, 3, 3) tensors with the given eigenvalues; principal direction = rotation's 1st column."""
    return np.einsum("nij,j,nkj->nik", rotations, np.asarray(evals), rotations)


def turned(rotations: np.ndarray, degrees: float) -> np.ndarray:
    """Each rotation followed by a turn of ``degrees`` about its own 2nd axis (⊥ the principal)."""
    axes = rotations[:, :, 1] * np.radians(degrees)
    return Rotation.from_rotvec(axes).as_matrix() @ rotations


def random_rotations(seed: int = 0) -> np.ndarray:
    return Rotation.random(N, random_state=seed).as_matrix()


def everywhere() -> np.ndarray:
    return np.ones(SHAPE, bool)


def test_matches_dipy_on_random_spd_tensors():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, N, 3, 3))
    mats_p = (a @ a.transpose(0, 2, 1) + 0.1 * np.eye(3)) * 1e-3
    # A random isotropic part so that some reference voxels fall below FA 0.2.
    iso = rng.uniform(0.1, 3.0, (N, 1, 1)) * np.eye(3)
    mats_t = (b @ b.transpose(0, 2, 1) / 3 + iso) * 1e-3
    region = rng.random(SHAPE) < 0.8
    out = dti_errors(fsl(mats_p), fsl(mats_t), region)

    keep = region.reshape(-1)
    ev_p, vec_p = decompose_tensor(mats_p[keep])
    ev_t, vec_t = decompose_tensor(mats_t[keep])
    fa_p, fa_t = fractional_anisotropy(ev_p), fractional_anisotropy(ev_t)
    md_err = (mean_diffusivity(ev_p) - mean_diffusivity(ev_t)) * 1e5
    scored = fa_t > 0.2
    dots = np.abs(np.sum(vec_p[scored, :, 0] * vec_t[scored, :, 0], -1))
    angles = np.degrees(np.arccos(np.clip(dots, 0, 1)))
    assert 0 < scored.sum() < keep.sum()  # the threshold does exclude some of these voxels
    assert set(out) == set(DTI_KEYS)
    assert out["fa_mae"] == pytest.approx(np.mean(np.abs(fa_p - fa_t)), rel=1e-9)
    assert out["md_rmse"] == pytest.approx(np.sqrt(np.mean(md_err**2)), rel=1e-9)
    assert out["v1_voxels"] == scored.sum()
    assert out["v1_angle_deg"] == pytest.approx(angles.mean(), abs=1e-6)
    assert out["v1_angle_median_deg"] == pytest.approx(np.median(angles), abs=1e-6)


@pytest.mark.parametrize(("turn", "expected"), [(30, 30), (75, 75), (90, 90), (150, 30), (180, 0)])
def test_a_turned_tensor_field_gives_the_known_sign_free_angle(turn, expected):
    rot = random_rotations()
    target = fsl(tensors(rot))
    pred = fsl(tensors(turned(rot, turn)))
    out = dti_errors(pred, target, everywhere())
    assert out["v1_angle_deg"] == pytest.approx(expected, abs=1e-6)
    assert out["v1_angle_median_deg"] == pytest.approx(expected, abs=1e-6)
    assert out["v1_voxels"] == N
    # A rigid turn keeps the eigenvalues, so FA and MD are untouched.
    assert out["fa_mae"] == pytest.approx(0, abs=1e-9)
    assert out["md_rmse"] == pytest.approx(0, abs=1e-9)


def test_voxels_with_low_reference_fa_are_not_scored():
    rot = random_rotations(2)
    low = (np.arange(N) % 3 == 0)[:, None, None]  # a third of the reference is near-isotropic
    target = np.where(low, tensors(rot, (0.85e-3, 0.75e-3, 0.7e-3)), tensors(rot))
    ref_fa = fa_md(np.moveaxis(fsl(target), 0, -1))[0].reshape(-1)
    assert np.all(ref_fa[low[:, 0, 0]] < 0.1) and np.all(ref_fa[~low[:, 0, 0]] > 0.6)
    # The prediction is anisotropic everywhere, 30° off where scored and 90° off where not.
    pred = np.where(low, tensors(turned(rot, 90)), tensors(turned(rot, 30)))

    out = dti_errors(fsl(pred), fsl(target), everywhere())
    assert out["v1_voxels"] == N - low.sum()
    assert out["v1_angle_deg"] == pytest.approx(30, abs=1e-6)
    # The FA threshold decides: at 0 every voxel counts, above every reference FA none does.
    all_in = dti_errors(fsl(pred), fsl(target), everywhere(), fa_threshold=0.0)
    assert all_in["v1_voxels"] == N
    assert all_in["v1_angle_deg"] == pytest.approx((30 * (N - low.sum()) + 90 * low.sum()) / N)
    none = dti_errors(fsl(pred), fsl(target), everywhere(), fa_threshold=0.99)
    assert none["v1_voxels"] == 0 and np.isnan(none["v1_angle_deg"])
    assert np.isfinite(none["fa_mae"]) and np.isfinite(none["md_rmse"])


def test_non_physical_tensors_give_finite_numbers_without_warnings():
    rot = random_rotations(3)
    target = tensors(rot)
    target[:4] = tensors(rot[:4], (1e-3, -2e-4, -5e-4))  # negative eigenvalues
    target[4:8] = 0.0  # zero tensors (holes in the reference)
    pred = tensors(turned(rot, 20))
    pred[8:12] = tensors(rot[8:12], (-1e-3, -1e-3, -2e-3))
    pred[12:16] = 0.0
    pred[16], pred[17, 0, 0], pred[18, 1, 2] = np.nan, np.inf, -np.inf
    p, t = fsl(pred).astype(np.float32), fsl(target).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        every = region_scores(p, t, everywhere(), dti_regions=("interior", "total", "exterior"))
        out = {k: v for k, v in every.items() if k not in REGIONS}
        reverse = dti_errors(t, p, everywhere())
    for values in (out, reverse):
        assert all(np.isfinite(v) for k, v in values.items() if "interior" not in k), values
    assert out["v1_voxels_interior"] == 0  # a 3×4×5 volume has no interior
    assert np.isnan(out["fa_mae_interior"]) and np.isnan(out["v1_angle_deg_interior"])
    assert 0 <= out["v1_angle_deg_total"] <= 90
    # FA as dti.fa_md has it for such tensors (NaN components → 0, dipy's FA of the eigenvalues).
    fa_p, fa_t = (fa_md(np.moveaxis(v, 0, -1))[0] for v in (p, t))
    assert out["fa_mae_total"] == pytest.approx(np.abs(fa_p - fa_t).mean(), rel=1e-5)
    assert set(region_scores(p, t, everywhere(), dti_regions=())) == set(REGIONS)


def test_identical_inputs_give_zeros():
    rng = np.random.default_rng(4)
    shape = (12, 12, 12)
    mats = tensors(Rotation.random(12**3, random_state=4).as_matrix())
    mats *= rng.uniform(0.5, 1.5, (12**3, 1, 1))
    volume = fsl(mats, shape).astype(np.float32)
    mask = np.zeros(shape, bool)
    mask[1:11, 1:11, 1:11] = True
    out = region_scores(volume, volume, mask)
    assert out["v1_voxels_total"] == mask.sum() and out["v1_voxels_interior"] > 0
    for key, value in out.items():
        if not key.startswith("v1_voxels"):
            assert value == 0.0, key


def test_regions_keys_and_backwards_compatible_rmse():
    rng = np.random.default_rng(5)
    shape = (10, 11, 12)
    rot = Rotation.random(int(np.prod(shape)), random_state=5).as_matrix()
    target = tensors(rot)
    pred = tensors(turned(rot, 10)) * rng.uniform(0.8, 1.2, (len(rot), 1, 1))
    p, t = fsl(pred, shape), fsl(target, shape)
    mask = np.zeros(shape, bool)
    mask[:, 1:10, 2:11] = True

    scores = region_scores(p, t, mask)
    per_region = {k: v for k, v in scores.items() if k not in REGIONS}
    masks = region_masks(mask)
    assert set(per_region) == {f"{k}_{r}" for k in DTI_KEYS for r in ("interior", "total")}
    for region in ("interior", "total"):
        alone = dti_errors(p, t, masks[region])
        for key in DTI_KEYS:
            assert per_region[f"{key}_{region}"] == pytest.approx(alone[key], rel=1e-12)
    assert per_region["v1_angle_deg_total"] == pytest.approx(10, abs=1e-6)
    assert scores == region_rmse(p, t, mask) | per_region
    # FA MAE and MD RMSE are the numbers evaluate.py has reported (dti.fa_md on the region).
    fa_p, md_p = fa_md(np.moveaxis(p, 0, -1))
    fa_t, md_t = fa_md(np.moveaxis(t, 0, -1))
    m = masks["interior"]
    assert scores["fa_mae_interior"] == pytest.approx(np.abs(fa_p[m] - fa_t[m]).mean(), rel=1e-5)
    md_rmse = np.sqrt(np.mean(((md_p[m].astype(np.float64) - md_t[m]) * 1e5) ** 2))
    assert scores["md_rmse_interior"] == pytest.approx(md_rmse, rel=1e-5)
