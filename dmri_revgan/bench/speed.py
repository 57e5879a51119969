"""Speed of what users run: full-volume inference (``dmri-revgan infer``'s path) and training
steps of a config's recipe, as patches per second and a fraction of the conv peak."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmri_revgan.bench.flops import conv_peak_gflops
from dmri_revgan.bench.process import peak_rss_bytes, run_in_subprocesses
from dmri_revgan.nets.generators import RevGenerator


def synthetic_tensor_volume(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    """A brain-sized (6, X, Y, Z) FSL-order tensor volume in mm²/s: an ellipsoidal head of
    isotropic 0.8e-3 tensors with smooth anisotropic perturbations, zero outside."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    head = sum(g**2 for g in grid) < 0.85
    volume = np.zeros((6, *shape), np.float32)
    for c, base in enumerate((0.8e-3, 0, 0, 0.8e-3, 0, 0.8e-3)):
        smooth = ndimage.zoom(rng.normal(size=[max(2, n // 16) for n in shape]), 16, order=1)
        smooth = smooth[: shape[0], : shape[1], : shape[2]]
        pad = [(0, n - s) for n, s in zip(shape, smooth.shape, strict=True)]
        volume[c] = (base + 1e-4 * np.pad(smooth, pad, mode="edge")) * head
    return volume


def measure_inference(
    shape: Sequence[int],
    depth: int,
    width: int = 64,
    method: str = "exact",
    max_memory_gib: float | None = None,
    roi: int | None = None,
    precision: str = "float32",
    device: str = "cpu",
) -> dict[str, Any]:
    """Seconds, peak RSS, work and conv speed of super-resolving one synthetic HR-grid tensor
    volume (call in a fresh process: peak RSS is per process).

    ``method="exact"``: the default tiling-exact path (a ``norm: none`` model). ``"old_default"``:
    the previous default, MONAI's sliding window (24³, overlap 0.5, 4 windows per pass, gaussian
    blending) over the whole volume with the paper's InstanceNorm model. The row also carries the
    practical conv peak measured in the same process (:func:`conv_peak_gflops`), and for bf16 the
    output's relative RMS difference from float32 over the brain.
    """
    from dmri_revgan.inference import DEFAULT_MAX_MEMORY_GIB, TilingStats, predict_volume

    torch.manual_seed(0)
    norm = "none" if method == "exact" else "instance"
    gen = RevGenerator(3, 6, 6, width, depth, residual=True, norm=norm).to(device)
    for p in gen.parameters():  # a trained-like model: no identity blocks
        p.data.normal_(0.0, 0.02)
    volume = synthetic_tensor_volume(shape)
    mask = np.abs(volume).sum(0) > 0
    mean, std = np.full(6, 4e-4, np.float32), np.full(6, 4e-4, np.float32)
    memory = DEFAULT_MAX_MEMORY_GIB if max_memory_gib is None else max_memory_gib
    stats: list[TilingStats] = []
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    kwargs: dict[str, Any] = {"device": device}
    if method == "exact":
        kwargs |= {"roi": roi, "max_memory_gib": memory, "precision": precision}
    start = time.perf_counter()
    out = predict_volume(gen, volume, mean, std, mask, stats=stats, **kwargs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    assert np.isfinite(out).all()
    info = stats[0]
    peak = conv_peak_gflops(max(width // 2, 1), precision=precision, device=device)
    useful_rate = info.useful_flop / seconds / 1e9  # the convs over the brain's bounding box
    row = {
        "kind": "inference",
        "method": method,
        "shape": list(shape),
        "depth": depth,
        "width": width,
        "precision": precision if method == "exact" else "float32",
        "max_memory_gib": memory if method == "exact" else None,
        "tile": list(info.tile),
        "tiles": info.tiles,
        "batch": info.batch if method == "exact" else 4,
        "halo": info.halo,
        "bbox": list(info.bbox),
        "device": device,
        "seconds": seconds,
        # Executed conv work ÷ the same convs over the brain's bounding box only (FLOP-weighted;
        # the old default: the windows' voxels, 5.9× the volume's at overlap 0.5).
        "bbox_work_ratio": info.work_ratio if method == "exact" else _sliding_ratio(shape, info),
        "useful_gflop_per_s": useful_rate,
        "peak_gflop_per_s": peak,
        "peak_fraction": useful_rate / peak,
        "peak_rss_bytes": peak_rss_bytes(),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if cuda else None,
        "torch_threads": torch.get_num_threads(),
    }
    if precision == "bf16" and method == "exact":
        reference = predict_volume(gen, volume, mean, std, mask, roi=roi, max_memory_gib=memory)
        diff = (out - reference)[:, mask]
        row["bf16_rel_rms_error"] = float(
            np.sqrt((diff**2).mean()) / np.sqrt((reference[:, mask] ** 2).mean())
        )
    return row


def _sliding_ratio(shape: Sequence[int], info: Any) -> float:
    """Voxels MONAI's sliding window runs the network over ÷ the brain's bounding-box voxels."""
    from monai.data.utils import dense_patch_slices

    roi = info.tile[0]
    overlap = info.extra["overlap"]
    interval = [max(1, int(roi * (1 - overlap))) for _ in shape]
    windows = dense_patch_slices(tuple(shape), (roi,) * len(shape), interval)
    return len(windows) * roi ** len(shape) / math.prod(info.bbox)


def inference_rows(
    shapes: Sequence[Sequence[int]],
    depth: int = 4,
    width: int = 64,
    precisions: Sequence[str] = ("float32",),
    old_default: bool = True,
    device: str = "cpu",
    report=print,
) -> list[dict[str, Any]]:
    """Every shape with the exact path (each precision) and, in the same run, the old default;
    each row carries ``speedup_vs_old_default`` (old seconds ÷ this row's)."""
    configs = []
    for shape in shapes:
        common = dict(shape=list(shape), depth=depth, width=width, device=device)
        configs += [dict(common, method="exact", precision=p) for p in precisions]
        if old_default:
            configs.append(dict(common, method="old_default"))
    rows = run_in_subprocesses(measure_inference, configs, report)
    old = {
        tuple(r["shape"]): r["seconds"]
        for r in rows
        if r.get("method") == "old_default" and "error" not in r
    }
    for r in rows:
        if "error" not in r and tuple(r["shape"]) in old:
            r["speedup_vs_old_default"] = old[tuple(r["shape"])] / r["seconds"]
    return rows


def _generator_step_flops(trainer: Any, x: torch.Tensor, y: torch.Tensor) -> int:
    """Useful conv FLOPs of one generator update: 3× the generator's forward convs (forward,
    input gradient, weight gradient) and 2× the discriminators' (frozen in this update: forward
    and input gradient); the discriminator update itself is not counted."""
    from dmri_revgan.bench.flops import conv_flops

    discs = trainer.discs

    def forward() -> None:
        trainer.objective(trainer.gen, discs.get("d_x"), discs.get("d_y"), x, y, trainer.cfg.loss)

    judged = sum(conv_flops(d, forward) for d in discs.values())
    return 3 * conv_flops(trainer.gen, forward) + 2 * judged


def measure_training_speed(
    depth: int,
    memory_saving: bool,
    width: int = 64,
    size: int = 24,
    batch: int = 1,
    steps: int = 5,
    device: str = "cpu",
    config: str = "hcp-paper",
    precision: str = "float32",
) -> dict[str, Any]:
    """Samples/s of full RevGAN training steps of ``config``'s objective (the Trainer's own step:
    generator, then the discriminator when the config has GAN terms) on random size³ patches (3D)
    or size² images (2D), after one warm-up step; with the step's peak RSS above the resting
    process (what ``train --max-memory`` plans, :func:`training.memory.step_bytes`) and its
    useful conv FLOP/s as a fraction of the same run's practical conv peak (``peak_fraction``:
    3× the forward convs' FLOPs — forward, input gradient, weight gradient — per step, so the
    memory-saving backward's recomputation counts as overhead, not work)."""
    import tempfile

    from torch.utils.data import TensorDataset

    from dmri_revgan.config import load_config
    from dmri_revgan.training import Trainer
    from dmri_revgan.training.memory import rss_bytes, step_bytes

    class _Pairs(TensorDataset):
        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            x, y = super().__getitem__(i)
            return {"input": x, "target": y}

    cfg = load_config(config)
    cfg.model.width, cfg.model.depth, cfg.model.memory_saving = width, depth, memory_saving
    cfg.optim.batch_size, cfg.optim.precision = batch, precision
    g = torch.Generator().manual_seed(0)
    n = batch * (steps + 1)
    shape = (n, cfg.model.in_channels, *([size] * cfg.model.spatial_dims))
    data = _Pairs(*(torch.randn(shape, generator=g) for _ in range(2)))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            cfg, Path(tmp), data, np.zeros(6), np.ones(6), device=device, progress=False
        )
        times = []
        resting = rss_bytes()
        for i, (x, y, _) in enumerate(trainer._batches()):
            if i == 0:
                flops = _generator_step_flops(trainer, x, y)
            start = time.perf_counter()
            trainer.train_step(x, y)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
        peak = peak_rss_bytes()
    median = statistics.median(times)
    peak_gflops = conv_peak_gflops(precision=precision, device=device)
    useful = flops / median / 1e9
    return {
        "kind": "training",
        "config": config,
        "objective": cfg.loss.objective,
        "depth": depth,
        "width": width,
        "size": size,
        "batch": batch,
        "memory_saving": memory_saving,
        "precision": precision,
        "device": device,
        "steps": len(times),
        "step_seconds_median": median,
        "patches_per_s": batch / median,
        "useful_gflop_per_s": useful,
        "peak_gflop_per_s": peak_gflops,
        "peak_fraction": useful / peak_gflops,
        "peak_rss_bytes": peak,
        "step_rss_bytes": peak - resting,
        "planned_step_bytes": step_bytes(cfg, batch, memory_saving),
        "torch_threads": torch.get_num_threads(),
    }
