"""Memory and speed measurement helpers for the benchmarks (and the memory tests)."""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dmri_revgan.io import atomic_path, write_text_atomic
from dmri_revgan.nets.generators import RevGenerator
from dmri_revgan.nets.reversible import ReversibleCore


class SavedTensorMeter:
    """Bytes of distinct tensor storages that autograd saves for backward (activation memory).

    Storages in ``exclude`` (typically the model's parameters, counted as parameter memory) are
    skipped; a storage saved several times (e.g. by a conv and by the op after it) counts once.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: dict[int, int] = {}

    @property
    def bytes(self) -> int:
        """Total bytes saved so far."""
        return sum(self._seen.values())

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._excluded:
            self._seen[ptr] = storage.nbytes()
        return t

    @contextmanager
    def measure(self) -> Iterator[SavedTensorMeter]:
        """Count what is saved for backward inside the ``with`` block."""
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self


# ---------------------------------------------------------------------------------------------
# Memory / speed benchmark of generator training steps (paper Table 5).

MODES = ("naive", "revgan", "checkpoint", "memcnn")


class _BenchCore(nn.Module):
    """The alternatives to our memory-saving core, on the same coupling blocks (benchmark only).

    ``checkpoint``: ``torch.utils.checkpoint`` around each block (stores block inputs,
    recomputes inside). ``memcnn``: MemCNN 1.5.2's ``InvertibleModuleWrapper`` +
    ``AdditiveCoupling``; on torch 2.13 it needs ``keep_input`` on the first block
    (``keep_input_inverse`` on the last), or backward fails in-place on the encoder's ReLU output.
    """

    def __init__(self, core: ReversibleCore, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.blocks = core.blocks
        if mode == "memcnn":
            import memcnn

            n = len(core.blocks)
            self.wrapped = nn.ModuleList(
                memcnn.InvertibleModuleWrapper(
                    memcnn.AdditiveCoupling(b.nn1, b.nn2, split_dim=1),
                    keep_input=i == 0,
                    keep_input_inverse=i == n - 1,
                )
                for i, b in enumerate(core.blocks)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "memcnn":
            for w in self.wrapped:
                x = w(x)
            return x
        for b in self.blocks:
            x = checkpoint(b, x, use_reentrant=False)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.mode == "memcnn":
            for w in reversed(self.wrapped):
                y = w.inverse(y)
            return y
        for b in reversed(self.blocks):
            y = checkpoint(b.inverse, y, use_reentrant=False)
        return y


def bench_generator(dims: int, width: int, depth: int, mode: str) -> RevGenerator:
    """3D: the HCP SRCNN generator (6 channels); 2D: the Maps-style ResNet generator (RGB)."""
    kind, channels = ("srcnn", 6) if dims == 3 else ("resnet", 3)
    gen = RevGenerator(dims, channels, channels, width, depth, kind, memory_saving=mode == "revgan")
    if mode in ("checkpoint", "memcnn"):
        gen.core = _BenchCore(gen.core, mode)  # type: ignore[assignment]
    return gen


def unpaired_generator_step(gen: RevGenerator, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The generator half of an unpaired step without discriminators: F, G and both cycles."""
    fake_y, fake_x = gen(x), gen.reverse(y)
    return (
        (gen.reverse(fake_y) - x).abs().mean()
        + (gen(fake_x) - y).abs().mean()
        + fake_y.square().mean()
        + fake_x.square().mean()
    )


def conv_flops(model: nn.Module, run) -> int:
    """Forward FLOPs (2 per multiply-add) of the convs that ``run()`` executes (forward hooks)."""
    total = 0

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(module.kernel_size)
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            positions = inputs[0][0, 0].numel() * inputs[0].shape[0]
            macs = positions * module.in_channels * module.out_channels // module.groups * kernel
        else:
            positions = output[0, 0].numel() * output.shape[0]
            macs = positions * module.out_channels * module.in_channels // module.groups * kernel
        total += 2 * macs

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.modules.conv._ConvNd)
    ]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return total


def _rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _bench_setup(
    dims: int, depth: int, mode: str, width: int, size: int, device: str
) -> tuple[RevGenerator, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """Generator (seed 0), its Adam optimiser and one random (x, y) pair, batch 1."""
    torch.manual_seed(0)
    gen = bench_generator(dims, width, depth, mode).to(device)
    opt = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    channels = 6 if dims == 3 else 3
    x = torch.randn(1, channels, *([size] * dims), device=device)
    return gen, opt, x, torch.randn_like(x)


def _timed_step(
    gen: RevGenerator,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    forward_context: AbstractContextManager | None = None,
) -> float:
    """Seconds of one full generator training step: unpaired objective, backward, Adam.

    ``forward_context`` wraps the forward pass only (e.g. a :class:`SavedTensorMeter`, which
    must not count what backward recomputes)."""
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with forward_context or nullcontext():
        loss = unpaired_generator_step(gen, x, y)
    loss.backward()
    opt.step()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_training_step(
    dims: int, depth: int, mode: str, width: int, size: int, device: str = "cpu", steps: int = 3
) -> dict[str, Any]:
    """Measure one configuration in this process (call it in a fresh one: peak RSS is global)."""
    gen, opt, x, y = _bench_setup(dims, depth, mode, width, size, device)
    flops = 3 * conv_flops(gen, lambda: unpaired_generator_step(gen, x, y))
    params = list(gen.parameters())
    meter = SavedTensorMeter(exclude=params)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_bytes()
    times = []
    for i in range(steps + 1):  # the first step warms up (and allocates Adam's state)
        seconds = _timed_step(gen, opt, x, y, meter.measure() if i == 0 else None)
        if i:
            times.append(seconds)
    peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - base
    median = statistics.median(times)
    return {
        "mode": mode,
        "dims": dims,
        "depth": depth,
        "width": width,
        "size": size,
        "device": device,
        "activation_bytes": meter.bytes,
        "peak_bytes": int(peak),
        "param_bytes": sum(p.numel() * p.element_size() for p in params),
        "step_seconds_median": median,
        "step_seconds_min": min(times),
        "step_seconds_max": max(times),
        "steps": steps,
        "gflops": flops / median / 1e9,
        "step_gflop": flops / 1e9,
        "torch_threads": torch.get_num_threads(),
    }


def interleaved_step_times(
    dims: int,
    depth: int,
    modes: Sequence[str],
    width: int,
    size: int,
    device: str = "cpu",
    rounds: int = 5,
) -> dict[str, list[float]]:
    """Step seconds of every mode, alternating mode by mode for ``rounds`` rounds in one process.

    Timings taken in separate processes minutes apart carry the machine's drift into the ratios
    between modes (±15 % on a shared VM); alternating exposes all modes to the same conditions.
    The first round is a warm-up and is dropped.
    """
    setups = {m: _bench_setup(dims, depth, m, width, size, device) for m in modes}
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(rounds + 1):
        for mode, setup in setups.items():
            seconds = _timed_step(*setup)
            if i:
                times[mode].append(seconds)
    return times


def memcnn_available() -> bool:
    """Whether the optional MemCNN package (the ``bench`` extra) is importable."""
    import importlib.util

    return importlib.util.find_spec("memcnn") is not None


def _in_subprocess(function: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Run ``dmri_revgan.bench.<function>(**kwargs)`` in a fresh interpreter; return its JSON."""
    code = (
        "import json, sys, warnings; warnings.filterwarnings('ignore'); "
        f"from dmri_revgan.bench import {function} as f; "
        "print(json.dumps(f(**json.loads(sys.argv[1]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True
    )
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["failed"])[-1]
        return {**kwargs, "error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def memory_benchmark(
    dims: int,
    depths: Sequence[int],
    modes: Sequence[str],
    width: int,
    size: int,
    device: str = "cpu",
    steps: int = 3,
    rounds: int = 5,
    report=print,
) -> list[dict[str, Any]]:
    """Memory and speed of every (mode, depth), each in its own subprocess, then per depth one
    subprocess timing all modes interleaved (``rounds`` steps each), which gives the
    ``step_seconds_interleaved_*`` keys and the ``ratio_to_naive`` the table reports.
    MemCNN is skipped with a message when absent."""
    unknown = set(modes) - set(MODES)
    if unknown:
        raise ValueError(f"unknown modes {sorted(unknown)}; choose from {', '.join(MODES)}")
    if "memcnn" in modes and not memcnn_available():
        report("memcnn is not installed (pip install --no-deps memcnn==1.5.2): mode skipped")
        modes = [m for m in modes if m != "memcnn"]
    rows = []
    for depth in depths:
        for mode in modes:
            row = _in_subprocess(
                "measure_training_step",
                dict(
                    dims=dims,
                    depth=depth,
                    mode=mode,
                    width=width,
                    size=size,
                    device=device,
                    steps=steps,
                ),
            )
            report(_describe(row))
            rows.append(row)
        _add_interleaved(rows[-len(modes) :], dims, depth, modes, width, size, device, rounds)
        report(_describe_ratios(rows[-len(modes) :]))
    return rows


def _add_interleaved(
    rows: Sequence[dict[str, Any]],
    dims: int,
    depth: int,
    modes: Sequence[str],
    width: int,
    size: int,
    device: str,
    rounds: int,
) -> None:
    """Add interleaved step-time medians, spreads and ratios to naive to one depth's rows."""
    ok = [r["mode"] for r in rows if "error" not in r]
    kwargs = dict(dims=dims, depth=depth, modes=ok, width=width, size=size, device=device)
    times = _in_subprocess("interleaved_step_times", {**kwargs, "rounds": rounds})
    if "error" in times:
        for r in rows:
            r["interleaved_error"] = times["error"]
        return
    medians = {m: statistics.median(t) for m, t in times.items()}
    for r in rows:
        if r["mode"] in times:
            r["step_seconds_interleaved"] = times[r["mode"]]
            r["step_seconds_interleaved_median"] = medians[r["mode"]]
            if "naive" in medians:
                r["ratio_to_naive"] = medians[r["mode"]] / medians["naive"]


def _describe_ratios(rows: Sequence[dict[str, Any]]) -> str:
    ratios = [f"{r['mode']} {r['ratio_to_naive']:.2f}" for r in rows if "ratio_to_naive" in r]
    return "    interleaved step time × naive: " + (", ".join(ratios) or "n/a")


def _describe(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['mode']:>10} depth {row['depth']:>2}: error: {row['error']}"
    return (
        f"{row['mode']:>10} depth {row['depth']:>2}: "
        f"activations {row['activation_bytes'] / 2**20:8.1f} MiB, "
        f"peak {row['peak_bytes'] / 2**20:8.1f} MiB, step {row['step_seconds_median']:.3f} s,"
        f" {row['gflops']:.1f} GFLOP/s"
    )


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Table 5 style: one row per (depth, mode), memory in MiB, the step time measured in the
    mode's own process (median, min–max) and interleaved with the other modes, and the
    interleaved ratio to naive (n/a when naive was not run)."""
    lines = [
        "| dims | size | width | depth | mode | activations (MiB) | peak (MiB) | params (MiB) "
        "| step s, own process: median (min–max) | step s, interleaved | × naive | GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['dims']}D | {r['size']} | {r['width']} | {r['depth']} | {r['mode']} "
        if "error" in r:
            lines.append(head + f"| error: {r['error']} | | | | | | |")
            continue
        interleaved = r.get("step_seconds_interleaved_median")
        ratio = r.get("ratio_to_naive")
        lines.append(
            head + f"| {r['activation_bytes'] / 2**20:.1f} | {r['peak_bytes'] / 2**20:.1f} "
            f"| {r['param_bytes'] / 2**20:.2f} | {r['step_seconds_median']:.3f} "
            f"({r['step_seconds_min']:.3f}–{r['step_seconds_max']:.3f}) "
            f"| {'n/a' if interleaved is None else f'{interleaved:.3f}'} "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} | {r['gflops']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Memory vs depth and time vs depth (the interleaved medians behind the ratios, where
    measured), one line per mode (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        ok = sorted(
            (r for r in rows if r["mode"] == mode and "error" not in r), key=lambda r: r["depth"]
        )
        depths = [r["depth"] for r in ok]
        ax_mem.plot(depths, [r["peak_bytes"] / 2**20 for r in ok], "o-", label=mode)
        seconds = [r.get("step_seconds_interleaved_median", r["step_seconds_median"]) for r in ok]
        ax_time.plot(depths, seconds, "o-", label=mode)
    ax_mem.set(xlabel="reversible blocks", ylabel="peak memory above baseline (MiB)")
    ax_time.set(xlabel="reversible blocks", ylabel="training step (s, median; interleaved if run)")
    ax_mem.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_results(rows: Sequence[dict[str, Any]], out_dir: Path, stem: str) -> dict[str, Path]:
    """``<stem>.json`` (list of rows), ``<stem>.md`` (table) and ``<stem>.png`` (plot)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"{stem}.json",
        "md": out_dir / f"{stem}.md",
        "png": out_dir / f"{stem}.png",
    }
    write_text_atomic(paths["json"], json.dumps(list(rows), indent=2))
    write_text_atomic(paths["md"], markdown_table(rows))
    plot(rows, paths["png"])
    return paths


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


def conv_peak_gflops(
    channels: int = 32,
    size: int = 40,
    batch: int = 4,
    precision: str = "float32",
    device: str = "cpu",
    repeats: int = 5,
) -> float:
    """The practical conv3d peak of this machine: the core's own conv (channels → channels, 3³,
    stride 1) on ``batch`` size³ inputs in ``channels_last_3d`` under inference mode, best of
    ``repeats`` after a warm-up, in GFLOP/s (2 FLOPs per multiply-add). On GPUs in full
    float32 (no TF32), as ``infer`` runs."""
    from dmri_revgan.infer import ieee_float32

    conv = torch.nn.Conv3d(channels, channels, 3).to(device, memory_format=torch.channels_last_3d)
    x = torch.randn(batch, channels, size, size, size, device=device)
    x = x.contiguous(memory_format=torch.channels_last_3d)
    autocast = torch.autocast(
        "cuda" if str(device).startswith("cuda") else "cpu",
        torch.bfloat16,
        enabled=precision == "bf16",
    )
    flop = 2.0 * channels * channels * 27 * batch * (size - 2) ** 3
    best = float("inf")
    with torch.inference_mode(), autocast, ieee_float32(device):  # the precision infer runs
        for i in range(repeats + 1):
            start = time.perf_counter()
            conv(x)
            if str(device).startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                best = min(best, time.perf_counter() - start)
    return flop / best / 1e9


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
    from dmri_revgan.infer import DEFAULT_MAX_MEMORY_GIB, TilingStats, predict_volume

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
        "peak_rss_bytes": _peak_rss_bytes(),
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
    rows = run_in_subprocesses("measure_inference", configs, report)
    old = {
        tuple(r["shape"]): r["seconds"]
        for r in rows
        if r.get("method") == "old_default" and "error" not in r
    }
    for r in rows:
        if "error" not in r and tuple(r["shape"]) in old:
            r["speedup_vs_old_default"] = old[tuple(r["shape"])] / r["seconds"]
    return rows


def measure_training_speed(
    depth: int,
    memory_saving: bool,
    width: int = 64,
    size: int = 24,
    batch: int = 1,
    steps: int = 5,
    device: str = "cpu",
    config: str = "hcp-paper",
) -> dict[str, Any]:
    """Samples/s of full RevGAN training steps of ``config``'s objective (generator both ways,
    L1/cycle + GAN terms, then the discriminator update) on random size³ patches (3D) or
    size² images (2D), after one warm-up step."""
    import tempfile

    from torch.utils.data import TensorDataset

    from dmri_revgan.config import load_config
    from dmri_revgan.train import Trainer

    class _Pairs(TensorDataset):
        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            x, y = super().__getitem__(i)
            return {"input": x, "target": y}

    cfg = load_config(config)
    cfg.model.width, cfg.model.depth, cfg.model.memory_saving = width, depth, memory_saving
    cfg.optim.batch_size = batch
    g = torch.Generator().manual_seed(0)
    n = batch * (steps + 1)
    shape = (n, cfg.model.in_channels, *([size] * cfg.model.spatial_dims))
    data = _Pairs(*(torch.randn(shape, generator=g) for _ in range(2)))
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(
            cfg, Path(tmp), data, np.zeros(6), np.ones(6), device=device, progress=False
        )
        times = []
        for i, (x, y, _) in enumerate(trainer._batches()):
            start = time.perf_counter()
            trainer.train_step(x, y)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "kind": "training",
        "config": config,
        "objective": cfg.loss.objective,
        "depth": depth,
        "width": width,
        "size": size,
        "batch": batch,
        "memory_saving": memory_saving,
        "device": device,
        "steps": len(times),
        "step_seconds_median": median,
        "patches_per_s": batch / median,
        "peak_rss_bytes": _peak_rss_bytes(),
        "torch_threads": torch.get_num_threads(),
    }


def run_in_subprocesses(function: str, configs: Sequence[dict[str, Any]], report=print) -> list:
    """Each configuration of ``measure_inference`` / ``measure_training_speed`` in its own
    fresh process; rows in order (a failed one carries ``error``)."""
    rows = []
    for kwargs in configs:
        row = _in_subprocess(function, kwargs)
        report(json.dumps({k: v for k, v in row.items() if k != "torch_threads"}))
        rows.append(row)
    return rows


def write_json(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write benchmark rows as JSON atomically."""
    write_text_atomic(path, json.dumps(list(rows), indent=2))
    return path


def speed_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of inference or training-speed rows."""
    ok = [r for r in rows if "error" not in r]
    failed = [f"- {r.get('depth')}: error: {r['error']}" for r in rows if "error" in r]
    if ok and ok[0]["kind"] == "inference":
        lines = [
            "| volume (HR voxels) | depth / width | method | precision | tiles × tile (batch) "
            "| seconds | bbox_work_ratio | useful GFLOP/s | peak GFLOP/s | peak_fraction "
            "| speedup_vs_old_default | peak RSS (GiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {'×'.join(map(str, r['shape']))} | {r['depth']} / {r['width']} "
                f"| {r['method']} | {r['precision']} "
                f"| {r['tiles'] or 'windows'} × {'×'.join(map(str, r['tile']))} ({r['batch']}) "
                f"| {r['seconds']:.1f} | {r['bbox_work_ratio']:.2f} "
                f"| {r['useful_gflop_per_s']:.0f} | {r['peak_gflop_per_s']:.0f} "
                f"| {r['peak_fraction']:.2f} | {r.get('speedup_vs_old_default', float('nan')):.1f} "
                f"| {r['peak_rss_bytes'] / 2**30:.2f} |"
                for r in ok
            ),
        ]
        lines += [
            f"- bf16 vs float32 on {'×'.join(map(str, r['shape']))}: relative RMS difference "
            f"{r['bf16_rel_rms_error']:.2e} over the brain"
            for r in ok
            if "bf16_rel_rms_error" in r
        ]
    else:
        lines = [
            "| config | objective | size | width | depth | memory saving | batch "
            "| step (s, median) | samples/s | peak RSS (GiB) |",
            "|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['config']} | {r['objective']} | {r['size']} | {r['width']} | {r['depth']} "
                f"| {'on' if r['memory_saving'] else 'off'} "
                f"| {r['batch']} | {r['step_seconds_median']:.3f} | {r['patches_per_s']:.2f} "
                f"| {r['peak_rss_bytes'] / 2**30:.2f} |"
                for r in ok
            ),
        ]
    return "\n".join(lines + failed) + "\n"
