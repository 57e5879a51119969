"""The gradient table checked against the anatomy: flips and permutations found and corrected."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from dmri_revgan import dti
from dmri_revgan.cli import app
from dmri_revgan.gradient_check import (
    IDENTITY,
    VARIANTS,
    apply_variant,
    check_table,
    fit_checked,
    variant_name,
)

FLIPS = [((0, 1, 2), (-1, 1, 1)), ((0, 1, 2), (1, -1, 1)), ((0, 1, 2), (1, 1, -1))]
SWAP = ((1, 0, 2), (1, 1, 1))
CYCLE = ((1, 2, 0), (1, 1, -1))


def bundle_dwi(neurological: bool = False, fa: bool = True, seed: int = 0):
    """A 36³ brain (2 mm) of isotropic tissue crossed by three straight oblique tracts
    (λ∥ 1.7, λ⊥ 0.3 × 10⁻³ mm²/s; or none with ``fa=False``), its DWI (2 b0 + 30 directions,
    b = 1000, SNR 30) and the right FSL table. ``neurological``: stored with a positive
    determinant, where FSL's x runs against voxel axis i."""
    from dmri_revgan.data.phantom import hemisphere_directions

    rng = np.random.default_rng(seed)
    shape = (36, 36, 36)
    grid = np.stack(np.meshgrid(*[np.arange(n) - 17.5 for n in shape], indexing="ij"), -1)
    mask = np.linalg.norm(grid / [17, 17, 16], axis=-1) < 1
    tensor = np.zeros((*shape, 3, 3))
    tensor[mask] = 0.8e-3 * np.eye(3)
    tracts = [((1, 1, 0.4), (0, 0, -5)), ((1, -0.8, 0.3), (0, 0, 5)), ((0.3, 0.6, 1), (-6, 4, 0))]
    for direction, offset in tracts if fa else []:
        d = np.asarray(direction) / np.linalg.norm(direction)
        rel = grid - offset
        distance = np.linalg.norm(rel - (rel @ d)[..., None] * d, axis=-1)
        inside = mask & (distance < 3.0)
        tensor[inside] = 0.3e-3 * np.eye(3) + 1.4e-3 * np.outer(d, d)
    voxel = dti.from_matrix(tensor).astype(np.float32)  # in the voxel axes' frame
    affine = np.diag([2.0 if neurological else -2.0, 2.0, 2.0, 1.0])
    fsl = np.moveaxis(dti.voxel_frame(np.moveaxis(voxel, -1, 0), affine), 0, -1)
    bvals = np.concatenate([[0.0, 0.0], np.full(30, 1000.0)])
    bvecs = np.concatenate([np.zeros((2, 3)), hemisphere_directions(30)])
    s0 = np.where(mask, 1000.0, 0.0)
    clean = dti.synthesise_dwi(fsl, s0, bvals, bvecs)
    sigma = 1000.0 / 30
    noisy = np.hypot(
        clean + sigma * rng.normal(size=clean.shape), sigma * rng.normal(size=clean.shape)
    )
    return noisy.astype(np.float32), bvals, bvecs, mask, affine


@pytest.fixture(scope="module")
def scan():
    return bundle_dwi()


def test_there_are_24_distinct_variants_and_each_is_named():
    assert len(VARIANTS) == 24 and len({variant_name(v) for v in VARIANTS}) == 24
    assert variant_name(IDENTITY) == "as given"
    assert variant_name(FLIPS[0]) == "x mirrored" and variant_name(SWAP) == "x and y swapped"
    g = np.eye(3)
    assert np.array_equal(apply_variant(g, CYCLE), [[0, 0, -1], [1, 0, 0], [0, 1, 0]])


@pytest.mark.parametrize("neurological", [False, True])
def test_the_right_table_passes_quietly(neurological):
    dwi, bvals, bvecs, mask, affine = bundle_dwi(neurological)
    tensor, _, _, used, check = fit_checked(dwi, bvals, bvecs, mask, affine)
    assert check.verdict == "ok" and check.message() is None
    assert np.array_equal(used, bvecs)
    ranked = sorted(check.scores.values(), reverse=True)
    assert check.scores["as given"] == ranked[0] and ranked[1] < 0.8 * ranked[0]


@pytest.mark.parametrize("wrong", [*FLIPS, SWAP, CYCLE], ids=variant_name)
def test_a_flipped_or_permuted_table_is_named_and_corrected(scan, wrong):
    """The check names the correction, the table it applies is the right one, and the tensor
    equals the right table's bit for bit."""
    dwi, bvals, bvecs, mask, affine = scan
    right, _, _ = dti.fit_tensor(dwi, bvals, bvecs, mask)
    broken = apply_variant(bvecs, wrong)
    tensor, _, _, used, check = fit_checked(dwi, bvals, broken, mask, affine)
    assert check.verdict == "corrected"
    assert np.allclose(used, bvecs, atol=1e-12)
    assert np.array_equal(tensor, right)
    assert "relative to the anatomy; corrected" in check.message()
    assert variant_name(check.variant) in check.message()
    if wrong in (*FLIPS, SWAP):  # these are their own inverse: the correction has their name
        assert variant_name(check.variant) == variant_name(wrong)


def test_warn_keeps_the_table_and_off_skips_the_check(scan):
    dwi, bvals, bvecs, mask, affine = scan
    broken = apply_variant(bvecs, FLIPS[0])
    _, _, _, used, check = fit_checked(dwi, bvals, broken, mask, affine, "warn")
    assert check.verdict == "mismatch" and np.array_equal(used, broken)
    assert "x mirrored; kept as given" in check.message()
    _, _, _, used, check = fit_checked(dwi, bvals, broken, mask, affine, "off")
    assert check.verdict == "off" and check.message() is None and not check.scores
    with pytest.raises(ValueError, match="--gradient-check"):
        check_table(np.zeros((2, 2, 2, 6)), np.ones((2, 2, 2), bool), affine, "maybe")


def test_a_brain_without_white_matter_is_inconclusive():
    dwi, bvals, bvecs, mask, affine = bundle_dwi(fa=False)
    _, _, _, used, check = fit_checked(dwi, bvals, apply_variant(bvecs, SWAP), mask, affine)
    assert check.verdict == "inconclusive" and "FA > 0.3" in check.message()
    assert "kept as given" in check.message() and np.array_equal(used, bvecs[:, [1, 0, 2]])


def write_dwi(folder: Path, name: str, scan, bvecs: np.ndarray) -> Path:
    dwi, bvals, _, _, affine = scan
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.nii.gz"
    nib.save(nib.Nifti1Image(dwi, affine), path)
    (folder / f"{name}.bval").write_text(" ".join(f"{b:g}" for b in bvals) + "\n")
    (folder / f"{name}.bvec").write_text(
        "\n".join(" ".join(f"{v:.8f}" for v in row) for row in bvecs.T) + "\n"
    )
    return path


def test_infer_corrects_a_mirrored_table_and_gives_the_right_tables_output(
    scan, trained_run, tmp_path
):
    runner = CliRunner()
    model = trained_run / "checkpoints" / "last.safetensors"
    right = write_dwi(tmp_path / "right", "dwi", scan, scan[2])
    wrong = write_dwi(tmp_path / "wrong", "dwi", scan, apply_variant(scan[2], FLIPS[1]))
    ok = runner.invoke(app, ["infer", str(right), "--model", str(model)])
    fixed = runner.invoke(app, ["infer", str(wrong), "--model", str(model)])
    assert ok.exit_code == 0 and fixed.exit_code == 0, fixed.output
    assert "gradient table" not in ok.output
    line = f"warning: {tmp_path / 'wrong' / 'dwi.bvec'}: gradient table: y mirrored relative "
    assert line in fixed.output and "--gradient-check warn keeps it" in fixed.output
    a = nib.load(tmp_path / "right" / "dwi_sr.nii.gz").get_fdata()
    b = nib.load(tmp_path / "wrong" / "dwi_sr.nii.gz").get_fdata()
    assert np.array_equal(a, b)
    record = json.loads((tmp_path / "wrong" / "dwi_sr.json").read_text())["GradientCheck"]
    assert record["Verdict"] == "corrected" and record["BestVariant"] == "y mirrored"
    assert np.allclose(record["BVecsUsed"], scan[2], atol=1e-6) and len(record["Scores"]) == 24
    kept = runner.invoke(
        app,
        [
            "infer",
            str(wrong),
            "--model",
            str(model),
            "--gradient-check",
            "warn",
            "-o",
            str(tmp_path / "kept.nii.gz"),
        ],  # fmt: skip
    )
    assert kept.exit_code == 0 and "kept as given" in kept.output
    assert not np.array_equal(nib.load(tmp_path / "kept.nii.gz").get_fdata(), a)
    bad = runner.invoke(app, ["infer", str(wrong), "--gradient-check", "maybe"])
    assert bad.exit_code == 1 and "--gradient-check: expected fix, warn or off" in bad.output


def test_prepare_corrects_a_swapped_table_before_both_fits(scan, tmp_path):
    runner = CliRunner()
    right = write_dwi(tmp_path / "in", "right", scan, scan[2])
    wrong = write_dwi(tmp_path / "in", "wrong", scan, apply_variant(scan[2], SWAP))
    result = runner.invoke(
        app,
        [
            "prepare",
            "dwi",
            str(right),
            str(wrong),
            "--out",
            str(tmp_path / "out"),
            "--split",
            "1,0,0",
        ],  # fmt: skip
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("gradient table") == 1
    assert f"{tmp_path / 'in' / 'wrong.bvec'}: gradient table: x and y swapped" in result.output
    info = json.loads((tmp_path / "out" / "wrong" / "prepare.json").read_text())
    assert info["gradient_check"]["Verdict"] == "corrected"
    for name in ("hr_tensor.nii.gz", "lr_tensor.nii.gz"):
        a = nib.load(tmp_path / "out" / "right" / name).get_fdata()
        b = nib.load(tmp_path / "out" / "wrong" / name).get_fdata()
        assert np.array_equal(a, b), name


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
@pytest.mark.parametrize("series", ["hcp-like/xa30-10", "more-sites/bangalore-1201"])
def test_real_series_pass_as_given_and_a_mirror_of_them_is_corrected(series):
    """Two vendors (Siemens 3 mm, Philips 1.75 × 1.75 × 2.5 mm): the given table passes, and the
    x-mirrored one is named and corrected to it."""
    from dmri_revgan.io import read_bvals_bvecs, read_nifti

    folder = SHARED / series / "T1w" / "Diffusion"
    dwi, image = read_nifti(folder / "data.nii.gz", ndim=4)
    bvals, bvecs = read_bvals_bvecs(folder / "bvals", folder / "bvecs", dwi.shape[-1])
    mask = dti.brain_mask(dwi, bvals)
    right, _, _, _, check = fit_checked(dwi, bvals, bvecs, mask, image.affine)
    assert check.verdict == "ok"
    tensor, _, _, used, check = fit_checked(
        dwi, bvals, apply_variant(bvecs, FLIPS[0]), mask, image.affine
    )
    assert check.verdict == "corrected" and variant_name(check.variant) == "x mirrored"
    assert np.allclose(used, bvecs) and np.array_equal(tensor, right)
