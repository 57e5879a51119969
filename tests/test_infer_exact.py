"""Tiling-exact full-volume inference (inference.predict_volume with norm "none" models)."""

from __future__ import annotations

import sys

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import randomise
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.config import Config
from dmri_revgan.inference import TilingStats, plan_tiles, predict_volume
from dmri_revgan.inference.runtime import _glibc, ieee_float32
from dmri_revgan.model import build_generator, save_model
from dmri_revgan.nets.generators import RevGenerator

runner = CliRunner()
SHAPE = (34, 38, 30)


def _volume_and_mask(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    volume = (rng.normal(size=(6, *shape)) * 1e-4 + 5e-4).astype(np.float32)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = sum(g**2 for g in grid) < 0.7
    return volume, mask


def _rel_max_diff(a, b, mask):
    rms = np.sqrt(np.mean(a[:, mask] ** 2))
    return float(np.abs(a - b).max() / rms)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_any_tiling_gives_the_same_volume(direction):
    gen = randomise(RevGenerator(3, 6, 6, 8, 2, residual=True, norm="none"), 0.05)
    volume, mask = _volume_and_mask()
    mean, std = np.full(6, 5e-4, np.float32), np.full(6, 1e-4, np.float32)
    outputs, stats = {}, []
    for name, kwargs in {
        "roi16": {"roi": 16},
        "default": {},
        "roi7": {"roi": 7},
        "whole": {"roi": 64},
        "tiny budget": {"max_memory_gib": 0.002},
    }.items():
        outputs[name] = predict_volume(
            gen, volume, mean, std, mask, direction, stats=stats, **kwargs
        )
    assert stats[2].tiles > stats[1].tiles == 1 and stats[4].tiles > 1
    for name, out in outputs.items():
        assert _rel_max_diff(outputs["whole"], out, mask) <= 1e-4, name
        assert not out[:, ~mask].any(), "voxels outside the mask must be 0"
    # The tiles together compute exactly the network's own forward over the whole volume.
    assert gen.receptive_radius == 1 + 4 * 2
    x = torch.from_numpy((volume - mean[:, None, None, None]) / std[:, None, None, None])
    with torch.no_grad():
        run = gen.forward if direction == "up" else gen.reverse
        full = run(x[None])[0].numpy() * std[:, None, None, None] + mean[:, None, None, None]
    for out in outputs.values():
        np.testing.assert_allclose(out[:, mask], full[:, mask], rtol=0, atol=1e-9)


@pytest.mark.parametrize("direction", ["up", "down"])
def test_2d_models_are_tiling_exact_too(direction):
    """Every tiling of an image gives the network's own forward (or reverse) of the whole image."""
    gen = randomise(RevGenerator(2, 3, 3, 8, 2, residual=True, norm="none"), 0.05)
    rng = np.random.default_rng(1)
    image = rng.normal(size=(3, 50, 44)).astype(np.float32)
    zero, one = np.zeros(3, np.float32), np.ones(3, np.float32)
    with torch.no_grad():
        run = gen.forward if direction == "up" else gen.reverse
        full = run(torch.from_numpy(image)[None])[0].numpy()
    stats: list[TilingStats] = []
    for roi in (8, 17, None, 100):
        out = predict_volume(gen, image, zero, one, None, direction, roi=roi, stats=stats)
        np.testing.assert_allclose(out, full, rtol=0, atol=1e-5, err_msg=f"roi {roi}")
    assert stats[0].tiles > stats[1].tiles > 1 == stats[3].tiles


def test_instance_norm_models_keep_the_sliding_window():
    gen = randomise(RevGenerator(3, 6, 6, 8, 1, residual=True), 0.05)
    volume, mask = _volume_and_mask((24, 24, 24))
    stats: list[TilingStats] = []
    predict_volume(gen, volume, np.zeros(6), np.ones(6), mask, stats=stats)
    assert stats[0].method == "sliding" and stats[0].tile == (24, 24, 24)


def test_tile_plan_fits_the_memory_budget_and_prefers_few_tiles():
    box = ((20, 10, 20), (150, 170, 150))
    big, batch = plan_tiles(*box, (170, 180, 170), 17, 64, 3.0)
    small, _ = plan_tiles(*box, (170, 180, 170), 17, 64, 0.5)
    voxels = lambda t: np.prod([s + 34 for s in t])  # noqa: E731
    assert voxels(big) * 14 * 64 <= 3.0 * 2**30 and voxels(small) * 14 * 64 <= 0.5 * 2**30
    assert np.prod(big) > np.prod(small) and batch >= 1
    # Halos stop at the volume's edge: a box that fills the volume fits in fewer tiles.
    assert plan_tiles((0, 0, 0), (64, 64, 64), (64, 64, 64), 17, 64, 1.0)[0] == (64, 64, 64)
    assert plan_tiles((0,) * 3, (30,) * 3, (30,) * 3, 5, 8, 1.0, roi=16)[0] == (16, 16, 16)
    with pytest.raises(ValueError, match="too small"):
        plan_tiles((0,) * 3, (30,) * 3, (60,) * 3, 17, 64, 1e-6)


# Inference of a width-64 depth-4 generator (the default recipe's size) over an n³ volume in a
# fresh process: how much its peak RSS rose over the baseline after imports.
_PEAK_RSS = """
import json, sys
import dmri_revgan
import numpy as np
import torch
from dmri_revgan.bench.process import peak_rss_bytes, rss_bytes
from dmri_revgan.inference import predict_volume
from dmri_revgan.nets.generators import RevGenerator

budget, n = float(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(2)
gen = RevGenerator(3, 6, 6, 64, 4, residual=True, norm="none")
small = np.full((6, 24, 24, 24), 6e-4, np.float32)  # oneDNN's one-off set-up is not a tile's
predict_volume(gen, small, np.full(6, 5e-4), np.full(6, 1e-4))
base = rss_bytes()
volume = np.full((6, n, n, n), 6e-4, np.float32)
stats = []
predict_volume(gen, volume, np.full(6, 5e-4), np.full(6, 1e-4), max_memory_gib=budget, stats=stats)
increase = peak_rss_bytes() - base
print(json.dumps({"increase": increase, "volume": volume.nbytes, "tiles": stats[0].tiles}))
"""


def peak_rss_increase(max_memory_gib: float, n: int) -> dict:
    """Run ``_PEAK_RSS`` in a fresh interpreter: its RSS increase, volume bytes and tiles."""
    import json
    import subprocess

    args = [sys.executable, "-c", _PEAK_RSS, str(max_memory_gib), str(n)]
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a memory target: its RSS depends on the machine's state (huge pages)
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RSS from /proc (Linux)")
def test_real_peak_memory_stays_within_max_memory():
    """--max-memory bounds what inference really adds to the process: at most the budget plus
    volume-sized arrays (the input, its normalised copy, the assembled tiles, the output).
    Marked slow (``make test-all``): 401-490 MiB of the 593 allowed in fresh runs, but 670
    after a long loaded session, when transparent huge pages round more of the heap up."""
    budget = 0.5
    run = peak_rss_increase(budget, 96)  # 96³ needs two tiles under 0.5 GiB
    assert run["tiles"] > 1, run
    allowed = budget * 2**30 + 4 * run["volume"]
    mib = {k: round(run[k] / 2**20) for k in ("increase", "volume")}
    assert run["increase"] <= allowed, f"{mib} MiB; allowed {allowed / 2**20:.0f} MiB"


def test_bf16_is_refused_or_close_to_float32():
    from dmri_revgan.inference import check_precision

    gen = randomise(RevGenerator(3, 6, 6, 8, 1, residual=True, norm="none"), 0.05)
    volume, mask = _volume_and_mask((20, 20, 20))
    args = (gen, volume, np.full(6, 5e-4), np.full(6, 1e-4), mask)
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        with pytest.raises(ValueError, match="bfloat16"):
            check_precision("bf16")
        return
    f32 = predict_volume(*args)
    b16 = predict_volume(*args, precision="bf16")
    assert _rel_max_diff(f32, b16, mask) < 0.05


def _model_and_input(tmp_path):
    cfg = Config(name="exact")
    cfg.model.width, cfg.model.depth, cfg.model.norm, cfg.model.residual = 8, 2, "none", True
    gen = randomise(build_generator(cfg), 0.05)
    model = tmp_path / "model.safetensors"
    save_model(model, gen, cfg, np.full(6, 5e-4), np.full(6, 1e-4))
    volume, mask = _volume_and_mask((17, 19, 15), seed=2)
    lr = tmp_path / "lr.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(volume * mask, 0, -1), np.diag([2, 2, 2, 1.0])), lr)
    return model, lr


def test_cli_output_does_not_depend_on_roi_or_memory(tmp_path):
    model, lr = _model_and_input(tmp_path)
    outputs = []
    for i, extra in enumerate([[], ["--roi", "16"], ["--max-memory", "0.0015"], ["--roi", "9"]]):
        out = tmp_path / f"sr{i}.nii.gz"
        result = runner.invoke(
            app, ["infer", str(lr), "--model", str(model), "-o", str(out), *extra]
        )
        assert result.exit_code == 0, result.output
        outputs.append(np.moveaxis(np.asarray(nib.load(out).dataobj), -1, 0))
    mask = np.abs(outputs[0]).sum(0) > 0
    assert mask.sum() > 1000
    for out in outputs[1:]:
        assert _rel_max_diff(outputs[0], out, mask) <= 1e-4


@pytest.mark.parametrize("kind", ["zeros", "nan"])
def test_empty_or_nan_only_input_is_refused(tmp_path, kind):
    model, lr = _model_and_input(tmp_path)
    shape = nib.load(lr).shape
    data = np.zeros(shape, np.float32) if kind == "zeros" else np.full(shape, np.nan, np.float32)
    bad = tmp_path / "bad.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), bad)
    result = runner.invoke(app, ["infer", str(bad), "--model", str(model)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {bad}")
    assert not (tmp_path / "bad_sr.nii.gz").exists()


def test_test_time_transforms_undo_exactly_and_measure_spread():
    from dmri_revgan.inference import predict_ensemble, test_time_transforms

    assert len(set(test_time_transforms(48))) == 48
    assert test_time_transforms(1) == [((0, 1, 2), (False, False, False))]
    volume, mask = _volume_and_mask((14, 12, 10))
    mean, std = np.full(6, 5e-4, np.float32), np.full(6, 1e-4, np.float32)
    identity = RevGenerator(3, 6, 6, 8, 1, residual=True, norm="none")
    for p in identity.parameters():
        p.data.zero_()  # F(x) = x: commutes with every re-orientation of the tensor field
    avg, sd = predict_ensemble(identity, volume, mean, std, mask, 8)
    np.testing.assert_allclose(avg[:, mask], volume[:, mask], rtol=1e-5)
    assert sd.shape == mask.shape and np.abs(sd).max() < 1e-9
    gen = randomise(RevGenerator(3, 6, 6, 8, 1, residual=True, norm="none"), 0.05)
    avg, sd = predict_ensemble(gen, volume, mean, std, mask, 6)
    assert (sd[mask] > 0).all() and not sd[~mask].any()
    with pytest.raises(ValueError, match="1 to 48"):
        test_time_transforms(49)


def test_cli_uncertainty_writes_the_spread_map(tmp_path):
    model, lr = _model_and_input(tmp_path)
    result = runner.invoke(app, ["infer", str(lr), "--model", str(model), "--uncertainty", "4"])
    assert result.exit_code == 0, result.output
    sd = nib.load(tmp_path / "lr_sr_sd.nii.gz")
    assert sd.shape == tuple(2 * s for s in nib.load(lr).shape[:3])
    assert np.asarray(sd.dataobj).max() > 0


def test_reorientation_to_the_training_orientation():
    from dmri_revgan.inference.inputs import reorientation

    las = np.diag([-2.0, 2, 2, 1])
    assert reorientation(las, "LAS") == ((0, 1, 2), (False, False, False))
    assert reorientation(np.diag([2.0, 2, 2, 1]), "LAS") == ((0, 1, 2), (True, False, False))
    swapped = np.array([[0, 2.0, 0, 0], [2, 0, 0, 0], [0, 0, 2, 0], [0, 0, 0, 1]])  # A, R, S
    assert reorientation(swapped, "RAS") == ((1, 0, 2), (False, False, False))
    assert reorientation(swapped, None) == ((0, 1, 2), (False, False, False))


def test_a_non_ras_input_keeps_its_orientation_and_matches_the_ras_run(tmp_path):
    from conftest import rewrite_model_file

    from dmri_revgan.dti import flip_permute

    model, _ = _model_and_input(tmp_path)
    ras_model = rewrite_model_file(  # a model trained on RAS data
        model, tmp_path / "ras.safetensors", provenance='{"orientation": "RAS"}'
    )
    volume, mask = _volume_and_mask((11, 13, 9), seed=4)
    ras = np.moveaxis(volume * mask, 0, -1)
    affine = np.diag([2.0, 2, 2, 1])
    _nifti = lambda data, aff, name: nib.save(nib.Nifti1Image(data, aff), tmp_path / name)  # noqa: E731
    _nifti(ras, affine, "ras.nii.gz")
    # The same head stored L-P-S: x and y voxel axes reversed, tensor components turned with them.
    lps = np.moveaxis(flip_permute(volume * mask, (0, 1, 2), (True, True, False)), 0, -1)
    flip = np.diag([-1.0, -1, 1, 1])
    flip[:2, 3] = [10, 12]  # voxel i of the LPS file is voxel 10 - i of the RAS one
    _nifti(lps, affine @ flip, "lps.nii.gz")
    for name in ("ras", "lps"):
        result = runner.invoke(
            app, ["infer", str(tmp_path / f"{name}.nii.gz"), "--model", str(ras_model)]
        )
        assert result.exit_code == 0, result.output
    out_ras = nib.load(tmp_path / "ras_sr.nii.gz")
    out_lps = nib.load(tmp_path / "lps_sr.nii.gz")
    assert nib.aff2axcodes(out_lps.affine) == ("L", "P", "S")
    back = flip_permute(
        np.moveaxis(np.asarray(out_lps.dataobj), -1, 0), (0, 1, 2), (True, True, False)
    )
    expected = np.moveaxis(np.asarray(out_ras.dataobj), -1, 0)
    np.testing.assert_allclose(back, expected, rtol=1e-5, atol=1e-10)
    # Same world position for voxel 0 of the RAS output and its mirror in the LPS output.
    corner = out_ras.affine @ [0, 0, 0, 1]
    mirrored = out_lps.affine @ [out_lps.shape[0] - 1, out_lps.shape[1] - 1, 0, 1]
    np.testing.assert_allclose(corner, mirrored)


def test_one_head_stored_radiological_or_neurological_gives_one_answer(tmp_path):
    """FSL's b-vectors (so every tensor fitted from them) run along the voxel axes with x
    mirrored where the affine's determinant is positive: the same head stored L→R or R→L holds
    the same tensor values on x-reversed grids. The model must see one tensor field either way
    (``dti.voxel_frame``); before, the neurological copy reached it with Dxy and Dxz negated."""
    from conftest import rewrite_model_file

    model, _ = _model_and_input(tmp_path)
    las_model = rewrite_model_file(
        model, tmp_path / "las.safetensors", provenance='{"orientation": "LAS"}'
    )
    volume, mask = _volume_and_mask((11, 13, 9), seed=5)
    las = np.moveaxis(volume * mask, 0, -1)
    affine = np.diag([-2.0, 2, 2, 1])
    flip = np.diag([-1.0, 1, 1, 1])
    flip[0, 3] = 10  # voxel i of the RAS file is voxel 10 - i of the LAS one
    nib.save(nib.Nifti1Image(las, affine), tmp_path / "las.nii.gz")
    nib.save(nib.Nifti1Image(las[::-1].copy(), affine @ flip), tmp_path / "ras.nii.gz")
    for name in ("las", "ras"):
        source = tmp_path / f"{name}.nii.gz"
        result = runner.invoke(app, ["infer", str(source), "--model", str(las_model)])
        assert result.exit_code == 0, result.output
    out_las = np.asarray(nib.load(tmp_path / "las_sr.nii.gz").dataobj)
    out_ras = np.asarray(nib.load(tmp_path / "ras_sr.nii.gz").dataobj)
    assert np.abs(out_las[..., 1:3]).max() > 0
    np.testing.assert_allclose(out_ras[::-1], out_las, rtol=1e-5, atol=1e-10)


def test_nrrd_output_for_slicer(tmp_path):
    import SimpleITK as sitk

    model, lr = _model_and_input(tmp_path)
    result = runner.invoke(
        app, ["infer", str(lr), "--model", str(model), "--output-format", "nrrd", "--maps"]
    )
    assert result.exit_code == 0, result.output
    nifti = runner.invoke(
        app, ["infer", str(lr), "--model", str(model), "-o", str(tmp_path / "n.nii.gz")]
    )
    assert nifti.exit_code == 0, nifti.output
    path = tmp_path / "lr_sr.nrrd"
    header = path.read_bytes()[:2000].decode("latin-1")
    assert "3D-symmetric-matrix" in header and "measurement frame:" in header
    # SimpleITK has no symmetric-matrix pixel type (Slicer's ITK does): read it as a vector.
    plain = tmp_path / "plain.nrrd"
    plain.write_bytes(path.read_bytes().replace(b"3D-symmetric-matrix", b"vector", 1))
    image = sitk.ReadImage(str(plain))
    values = np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0, 3))
    reference = nib.load(tmp_path / "n.nii.gz")
    np.testing.assert_allclose(values, np.asarray(reference.dataobj), rtol=1e-6)
    lps = np.diag([-1.0, -1, 1])
    np.testing.assert_allclose(image.GetOrigin(), lps @ reference.affine[:3, 3], atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), np.linalg.norm(reference.affine[:3, :3], axis=0))
    assert (tmp_path / "lr_sr_FA.nrrd").is_file() and (tmp_path / "lr_sr.json").is_file()


_HEAP_PROBE = """
import torch
from dmri_revgan.bench import rss_bytes
from dmri_revgan.inference.runtime import reuse_freed_maps

size = 256 * 2**20

def churn():  # one map-sized block, written and freed
    torch.ones(size // 4).add_(1)

base = rss_bytes()
churn()
assert rss_bytes() - base < size // 2, "outside the context a freed map goes back at once"
with reuse_freed_maps():
    with reuse_freed_maps():
        churn()
    assert rss_bytes() - base > size // 2, "kept in the heap, also after an inner exit"
assert rss_bytes() - base < size // 2, "trimmed on leaving"
"""


@pytest.mark.skipif(_glibc() is None, reason="glibc only")
def test_freed_maps_stay_in_the_heap_while_tiles_run_and_go_back_after():
    """In a fresh process: glibc's heap is process-wide, and a block that an earlier test left
    alive above a freed hole makes later large blocks reuse the hole instead of ``mmap`` (CI saw
    257 MiB stay resident outside the context after other tests had run inference)."""
    import subprocess

    done = subprocess.run([sys.executable, "-c", _HEAP_PROBE], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("dims", [2, 3])
def test_every_conv_runs_on_the_onednn_fast_path(dims):
    """No conv of the tiled path falls back to PyTorch's slow reference kernels (im2col).

    (PyTorch itself picks them for inputs of batch 1 under 20480 values of N·C·D·H — a 6-channel
    tile under 58×58 voxels in its first two axes — where they are faster; real tiles are larger.)
    """
    if not torch.backends.mkldnn.is_available():
        pytest.skip("PyTorch built without oneDNN")
    gen = randomise(RevGenerator(dims, 6, 6, 64, 1, residual=True, norm="none"))
    volume, mask = _volume_and_mask((64, 64, 12))
    if dims == 2:
        volume, mask = volume[..., 6], mask[..., 6]
    mean, std = np.full(6, 5e-4, np.float32), np.full(6, 1e-4, np.float32)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        predict_volume(gen, volume, mean, std, mask)
    names = {event.key for event in prof.key_averages()}
    assert "aten::mkldnn_convolution" in names
    assert not {n for n in names if "slow_conv" in n or "thnn_conv" in n}, names


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_gives_the_cpu_answer_for_any_tiling_and_runs_bf16():
    gen = randomise(RevGenerator(3, 6, 6, 16, 2, residual=True, norm="none"), 0.05)
    volume, mask = _volume_and_mask()
    mean, std = np.full(6, 5e-4, np.float32), np.full(6, 1e-4, np.float32)
    cpu = predict_volume(gen, volume, mean, std, mask)
    gen.cuda()
    for kwargs in ({}, {"roi": 12}, {"roi": 7}):
        out = predict_volume(gen, volume, mean, std, mask, device="cuda", **kwargs)
        assert _rel_max_diff(cpu, out, mask) <= 1e-4, kwargs
    half = predict_volume(gen, volume, mean, std, mask, device="cuda", precision="bf16")
    diff = (half - cpu)[:, mask]
    assert np.sqrt((diff**2).mean() / (cpu[:, mask] ** 2).mean()) < 1e-2


@pytest.mark.skipif(
    not hasattr(torch.backends.cudnn, "conv"), reason="PyTorch < 2.9 (allow_tf32 instead)"
)
def test_gpu_float32_means_ieee_float32_not_tf32_and_is_restored():
    conv = torch.backends.cudnn.conv
    before = conv.fp32_precision
    with ieee_float32("cpu"):
        assert conv.fp32_precision == before
    with ieee_float32("cuda"):
        assert conv.fp32_precision == "ieee"
    assert conv.fp32_precision == before
