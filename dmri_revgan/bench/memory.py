"""Training-step memory and time against depth (paper Table 5): activations saved for backward
and peak memory of naive autograd, the reversible core, ``torch.utils.checkpoint`` and MemCNN."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dmri_revgan.bench.flops import conv_flops
from dmri_revgan.bench.process import in_subprocess, peak_rss_bytes, rss_bytes
from dmri_revgan.bench.tables import describe_ratios, describe_row
from dmri_revgan.nets.generators import RevGenerator
from dmri_revgan.nets.reversible import ReversibleCore
from dmri_revgan.training.memory import SavedTensorMeter

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
        base = rss_bytes()
    times = []
    for i in range(steps + 1):  # the first step warms up (and allocates Adam's state)
        seconds = _timed_step(gen, opt, x, y, meter.measure() if i == 0 else None)
        if i:
            times.append(seconds)
    peak = (torch.cuda.max_memory_allocated() if cuda else peak_rss_bytes()) - base
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
    common = {"dims": dims, "width": width, "size": size, "device": device}
    for depth in depths:
        for mode in modes:
            kwargs = {**common, "depth": depth, "mode": mode, "steps": steps}
            row = in_subprocess(measure_training_step, kwargs)
            report(describe_row(row))
            rows.append(row)
        _add_interleaved(rows[-len(modes) :], {**common, "depth": depth}, rounds)
        report(describe_ratios(rows[-len(modes) :]))
    return rows


def _add_interleaved(rows: Sequence[dict[str, Any]], common: dict[str, Any], rounds: int) -> None:
    """Add interleaved step-time medians, spreads and ratios to naive to one depth's rows."""
    ok = [r["mode"] for r in rows if "error" not in r]
    times = in_subprocess(interleaved_step_times, {**common, "modes": ok, "rounds": rounds})
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
