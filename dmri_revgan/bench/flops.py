"""Convolution work: the FLOPs a model's convolutions execute in one run, and the practical
convolution peak of this machine (the yardstick of ``peak_fraction``)."""

from __future__ import annotations

import math
import time

import torch
from torch import nn


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
    from dmri_revgan.inference.runtime import ieee_float32

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
