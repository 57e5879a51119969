"""Tile planning for tiling-exact inference: how a brain's bounding box is cut into equal tiles
with an R-voxel halo, sized from a memory budget, and what the convolutions cost over them."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import torch

from dmri_revgan.nets.generators import RevGenerator

DEFAULT_MAX_MEMORY_GIB = 3.0  # tile activations; an HCP-size volume then peaks under 4 GiB RSS

# Bytes the process grows by per input voxel of a tile per core channel (float32, inference
# mode, channels-last, width 64, depth 4): 11.9 at 80³ and 12.9 at 120³ for the live maps alone,
# 18.4 as peak RSS for a 64³ tile with freed maps kept in the heap (reuse_freed_maps fragments
# it), and run-to-run spread on top, so that --max-memory bounds the real peak
# (tests/test_infer_exact.py measures it in a fresh process).
_BYTES_PER_VOXEL_CHANNEL = 22.0


@dataclass
class TilingStats:
    """How a volume was covered, for benchmarks and sidecars."""

    method: str  # "exact" (valid convolutions + halo) or "sliding" (instance-norm models)
    bbox: tuple[int, ...]  # brain bounding-box extent in voxels
    tile: tuple[int, ...] = ()  # core tile edge per axis (exact) / window (sliding)
    tiles: int = 0
    batch: int = 0
    halo: int = 0  # receptive radius R
    work_ratio: float = float("nan")  # executed conv work ÷ the same convs over the bbox only
    useful_flop: float = 0.0  # FLOPs of the convs over the bbox voxels
    executed_flop: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def conv_layers(gen: RevGenerator, direction: str) -> list[torch.nn.Module]:
    """The convs of F (up) or G (down) in the order they run, for work accounting."""
    enc, dec = (gen.enc_x, gen.dec_y) if direction == "up" else (gen.enc_y, gen.dec_x)
    blocks = list(gen.core.blocks)
    core = [m for b in (blocks if direction == "up" else blocks[::-1]) for m in b.modules()]
    modules = [*enc.modules(), *core, *dec.modules()]
    return [m for m in modules if isinstance(m, torch.nn.modules.conv._ConvNd)]


def conv_flop_per_voxel(conv: torch.nn.Module) -> float:
    return 2.0 * conv.in_channels * conv.out_channels * math.prod(conv.kernel_size)


def axis_ranges(
    lo: int, hi: int, size: int, n: int, radius: int
) -> list[tuple[int, int, bool, bool]]:
    """Tiles of one axis: (input start, input stop, low side inner, high side inner).

    Cores of ``size`` cover the box [lo, hi) (the last one shifted back inside); each input adds
    the halo ``radius`` where the volume (0..n) has it — such a side is "inner" and shrinks
    through the network — and stops at the volume's edge otherwise (padded like training).
    """
    count = max(1, math.ceil((hi - lo) / size))
    cores = sorted({min(lo + i * size, hi - size) for i in range(count)})
    return [
        (max(0, c - radius), min(n, c + size + radius), c - radius >= 0, c + size + radius <= n)
        for c in cores
    ]


def tile_work(
    convs: list[torch.nn.Module], extent: tuple[int, ...], sides: tuple[tuple[bool, bool], ...]
) -> float:
    """FLOPs of one tile of input ``extent`` with valid convs on its inner sides."""
    total, size = 0.0, list(extent)
    for conv in convs:
        p = conv.kernel_size[0] // 2
        size = [s - p * (lo + hi) for s, (lo, hi) in zip(size, sides, strict=True)]
        total += conv_flop_per_voxel(conv) * math.prod(size)
    return total


def plan_tiles(
    lo: tuple[int, ...],
    hi: tuple[int, ...],
    shape: tuple[int, ...],
    radius: int,
    channels: int,
    max_memory_gib: float,
    roi: int | None = None,
) -> tuple[tuple[int, ...], int]:
    """Core tile size and batch for the box [lo, hi) of a volume of ``shape``.

    With ``roi`` the tile is that cube (clipped to the box). Otherwise, of the splits of the box
    into equal tiles whose largest input (core + halo) fits ``max_memory_gib`` of activations,
    the one that runs the network over the fewest voxels is chosen (halos make small tiles
    expensive). The batch is how many such tiles fit the budget together (≤ 8).
    """
    budget = max_memory_gib * 2**30 / (_BYTES_PER_VOXEL_CHANNEL * channels)
    extent = [b - a for a, b in zip(lo, hi, strict=True)]

    def inputs(tile: tuple[int, ...]) -> list[list[tuple[int, int, bool, bool]]]:
        return [
            axis_ranges(a, b, t, n, radius) for a, b, t, n in zip(lo, hi, tile, shape, strict=True)
        ]

    def largest(axes: list[list[tuple[int, int, bool, bool]]]) -> int:
        return math.prod(max(stop - start for start, stop, _, _ in axis) for axis in axes)

    if roi is not None:
        tile = tuple(min(roi, e) for e in extent)
    else:
        best: tuple[float, tuple[int, ...]] | None = None
        for counts in itertools.product(*(range(1, min(e, 16) + 1) for e in extent)):
            tile = tuple(math.ceil(e / c) for e, c in zip(extent, counts, strict=True))
            axes = inputs(tile)
            if largest(axes) > budget:
                continue
            # Voxels the network runs over, halving each inner halo (the map shrinks through it).
            cost = math.prod(
                sum(stop - start - radius * (i_lo + i_hi) / 2 for start, stop, i_lo, i_hi in axis)
                for axis in axes
            )
            if best is None or cost < best[0]:
                best = (cost, tile)
        if best is None:
            raise ValueError(f"--max-memory {max_memory_gib} GiB is too small for one tile")
        tile = best[1]
    return tile, int(max(1, min(8, budget // largest(inputs(tile)))))
