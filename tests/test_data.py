"""Data pipeline: degradation and affines, tensor fits and orders, phantom, manifest, patches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA

from dmri_revgan.data.degrade import block_mean, hr_affine, lr_affine, upsample
from dmri_revgan.data.manifest import assign_splits, read_manifest, write_manifest
from dmri_revgan.data.patches import (
    compute_normalisation,
    load_hr,
    load_pair,
    make_patch_dataset,
)
from dmri_revgan.data.phantom import make_phantom
from dmri_revgan.dti import convert_order, fa_md, fit_tensor, flip_permute, fsl_to_dipy
from dmri_revgan.errors import InputError
from dmri_revgan.io import read_bvals_bvecs, read_nifti


def assert_lr_hr_affines(hr_aff: np.ndarray, lr_aff: np.ndarray, factor: int, lr_shape) -> None:
    """World centre of every LR voxel = mean of its r³ HR children's centres."""
    lr_index = np.stack(np.meshgrid(*[np.arange(n) for n in lr_shape], indexing="ij"), -1)
    lr_index = lr_index.reshape(-1, 3)[:: max(1, np.prod(lr_shape) // 500)]
    offsets = np.stack(np.meshgrid(*[np.arange(factor)] * 3, indexing="ij"), -1).reshape(-1, 3)
    children = lr_index[:, None, :] * factor + offsets[None]  # (V, r³, 3)
    world = children @ hr_aff[:3, :3].T + hr_aff[:3, 3]
    lr_world = lr_index @ lr_aff[:3, :3].T + lr_aff[:3, 3]
    np.testing.assert_allclose(lr_world, world.mean(1), atol=1e-6)


def test_affines_block_mean_and_nearest_upsampling():
    hr = np.array([[0, 0, -1.5, 10], [1.2, 0, 0, -5], [0, 2.5, 0.1, 3], [0, 0, 0, 1]])
    assert_lr_hr_affines(hr, lr_affine(hr, 2), 2, (5, 4, 3))
    assert_lr_hr_affines(hr, lr_affine(hr, 3), 3, (4, 3, 2))
    np.testing.assert_allclose(hr_affine(lr_affine(hr, 2), 2), hr)
    volume = np.arange(6 * 4 * 2, dtype=float).reshape(6, 4, 2)
    assert block_mean(volume[:5], 2).shape == (2, 2, 1)  # odd edge cropped
    assert block_mean(volume, 2)[0, 0, 0] == volume[:2, :2, :2].mean()
    lr = np.random.default_rng(0).normal(size=(2, 3, 4, 5))
    up = upsample(lr, 2, 0)
    assert up.shape == (2, 6, 8, 10) and np.array_equal(
        up[:, 2:4, 4:6, 8:10].max((1, 2, 3)), lr[:, 1, 2, 4]
    )
    # Every interpolation order reproduces a constant and agrees at the block centres' mean.
    for order in (1, 3):
        np.testing.assert_allclose(upsample(np.ones((1, 3, 3, 3)), 2, order), 1, atol=1e-6)


def test_phantom_tissues_and_fitted_fa_at_snr_30():
    p = make_phantom(1, snr=30)
    fitted, repaired, bvalue = fit_tensor(p.dwi, p.bvals, p.bvecs, p.mask)
    assert bvalue == 1000 and np.isfinite(fitted).all()
    fa, md = fa_md(fitted)
    true_fa, true_md = fa_md(p.true_tensor)
    bundles = p.bundles > 0
    assert bundles.sum() > 500 and (p.bundles == 2).sum() > 20, "bundles and a few crossings"
    assert np.median(np.abs(fa[bundles] - true_fa[bundles])) < 0.1
    assert 0.4 <= np.median(true_fa[p.bundles == 1]) <= 0.8
    csf, gm = p.labels == 1, p.labels == 2
    assert np.median(true_md[csf]) == pytest.approx(3.0e-3, rel=0.01)
    assert np.median(true_md[gm]) == pytest.approx(0.8e-3, rel=0.1) and np.median(true_fa[gm]) < 0.2
    assert p.bvals.tolist().count(0) >= 1 and (p.bvals == 1000).sum() >= 30
    again = make_phantom(1, snr=30)
    assert np.array_equal(again.dwi, p.dwi), "deterministic under the seed"
    assert not np.array_equal(make_phantom(2).mask, p.mask), "anatomy varies with the seed"


def test_fsl_order_conversion_and_fa_md_match_dipy():
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    p = make_phantom(4, shape=(32, 32, 24))
    gtab = gradient_table(p.bvals, bvecs=p.bvecs)
    fit = TensorModel(gtab, fit_method="WLS").fit(p.dwi, mask=p.mask)
    ours, _, _ = fit_tensor(p.dwi, p.bvals, p.bvecs, p.mask)
    ok = p.mask & np.isfinite(fit.fa) & (fit.evals.min(-1) > 0) & (fit.evals.max(-1) < 3.5e-3)
    np.testing.assert_allclose(fsl_to_dipy(ours)[ok], fit.lower_triangular()[ok], atol=1e-9)
    fa, md = fa_md(ours)
    np.testing.assert_allclose(fa[ok], fit.fa[ok], atol=1e-4)
    np.testing.assert_allclose(md[ok], fit.md[ok], rtol=1e-4)
    t = np.arange(6.0)
    assert convert_order(t, "fsl", "dipy").tolist() == [0, 1, 3, 2, 4, 5]


def test_prepared_phantom_manifest_affines_and_splits(phantom_set):
    root, manifest = phantom_set
    records = read_manifest(manifest)
    assert {r.split for r in records} == {"train", "val", "test"}
    for r in records:
        hr, hr_img = read_nifti(r.hr_tensor)
        lr, lr_img = read_nifti(r.lr_tensor)
        assert hr.shape[:3] == r.hr_shape and lr.shape[:3] == r.lr_shape
        assert np.isfinite(hr).all() and np.isfinite(lr).all()
        assert_lr_hr_affines(hr_img.affine, lr_img.affine, r.factor, r.lr_shape)
        assert r.lr_voxel_mm == (4.0, 4.0, 4.0) and r.bvalue == 1000
    copy = root / "copy.csv"
    write_manifest(copy, records)
    assert read_manifest(copy) == records


def test_splits_keep_persons_together_and_manifest_validation(tmp_path, phantom_set):
    persons = ["A"] * 5 + ["B"] * 2 + ["C", "D", "E"]
    split = assign_splits(persons, (0.6, 0.2, 0.2), seed=1)
    assert set(split) == {"A", "B", "C", "D", "E"} and set(split.values()) == {
        "train",
        "val",
        "test",
    }
    assert assign_splits(persons, (0.6, 0.2, 0.2), seed=1) == split
    _, manifest = phantom_set
    text = manifest.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    rows = [text[0]] + [",".join([r.split(",")[0], "same", *r.split(",")[2:]]) for r in text[1:]]
    bad.write_text("\n".join(rows).replace(str(manifest.parent), ""))
    with pytest.raises(InputError, match="straddle splits"):
        read_manifest(bad)


def test_patches_grid_random_normalisation(phantom_set, capsys):
    _, manifest = phantom_set
    records = read_manifest(manifest)
    train = [r for r in records if r.split == "train"]
    norm = compute_normalisation(train)
    # The statistics are those of every training subject's HR brain voxels, per channel.
    voxels = np.concatenate([t[:, m] for t, m in map(load_hr, train)], axis=1).astype(np.float64)
    assert len(train) == 2 and voxels.shape[1] > 1000
    np.testing.assert_allclose(norm.mean, voxels.mean(1), rtol=1e-10)
    np.testing.assert_allclose(norm.std, voxels.std(1), rtol=1e-7)
    normalised = norm.apply(voxels)
    np.testing.assert_allclose(normalised.mean(1), 0, atol=1e-6)
    np.testing.assert_allclose(normalised.std(1), 1, rtol=1e-6)
    pair = load_pair(train[0])
    grid = make_patch_dataset(train, 24, "grid", stride=12, normalisation=norm)
    item = grid[0]
    assert item["input"].shape == item["target"].shape == (6, 24, 24, 24)
    assert item["mask"].shape == (1, 24, 24, 24)
    assert all(grid[i]["mask"].mean() >= 0.01 for i in range(len(grid)))
    strict = make_patch_dataset(train, 24, "grid", stride=12, min_brain_fraction=0.5)
    assert 0 < len(strict) < len(grid)
    rand = make_patch_dataset(train, 16, "random", samples_per_volume=5, seed=7)
    again = make_patch_dataset(train, 16, "random", samples_per_volume=5, seed=7)
    assert len(rand) == 10 and rand.index == again.index
    rand.set_epoch(1)
    assert rand.index != again.index
    # The network input is the nearest-neighbour upsampled LR tensor.
    lr, _ = read_nifti(train[0].lr_tensor)
    assert np.array_equal(pair["input"][:, ::2, ::2, ::2], np.moveaxis(lr, -1, 0))
    full = make_patch_dataset(train, 24, "grid")
    with capsys.disabled():
        print(
            f"\nphantom {pair['target'].shape[1:]}: mean 24³ patches per volume (1 % brain, "
            f"stride 24) = {full.patches_per_volume:.1f}"
        )


def test_training_sees_each_series_in_its_own_grid_frame(phantom_set, tmp_path):
    """The same head stored neurologically (x reversed, determinant > 0) holds the same FSL
    tensor values (FSL's b-vector x follows the mirrored axis): training must see it as the
    mirror image of the radiological copy, tensor turned with the grid."""
    import dataclasses

    import nibabel as nib

    _, manifest = phantom_set
    record = read_manifest(manifest)[0]
    copies = {}
    for key in ("hr_tensor", "lr_tensor", "hr_mask", "lr_mask"):
        image = nib.load(getattr(record, key))
        flip = np.diag([-1.0, 1, 1, 1])
        flip[0, 3] = image.shape[0] - 1
        assert np.linalg.det(image.affine[:3, :3]) < 0  # the phantom is stored radiologically
        copies[key] = tmp_path / Path(getattr(record, key)).name
        data = np.asarray(image.dataobj)[::-1].copy()
        nib.save(nib.Nifti1Image(data, image.affine @ flip), copies[key])
    twin = dataclasses.replace(record, **copies)
    same = make_patch_dataset([record], 24, "grid").volumes[0]
    mirrored = make_patch_dataset([twin], 24, "grid").volumes[0]
    for key in ("input", "target"):
        expected = flip_permute(same[key], (0, 1, 2), (True, False, False))
        np.testing.assert_allclose(mirrored[key], expected, rtol=1e-6)
    assert np.abs(same["target"][1:3]).max() > 0
    # The statistics are the mirror image's too: Dxy and Dxz change sign, spreads do not.
    norm, twin_norm = compute_normalisation([record]), compute_normalisation([twin])
    mirror = np.array([1, -1, -1, 1, 1, 1])
    np.testing.assert_allclose(twin_norm.mean, mirror * norm.mean, rtol=1e-6)
    np.testing.assert_allclose(twin_norm.std, norm.std, rtol=1e-6)


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared/data/hcp-like is absent")
def test_real_data_affines_and_bvecs():
    subject = SHARED_DATA / "toshiba-6006" / "T1w" / "Diffusion"
    dwi, image = read_nifti(subject / "data.nii.gz", ndim=4)
    bvals, bvecs = read_bvals_bvecs(subject / "bvals", subject / "bvecs", dwi.shape[-1])
    assert bvecs.shape == (dwi.shape[-1], 3)
    assert_lr_hr_affines(image.affine, lr_affine(image.affine, 2), 2, (8, 8, 6))
