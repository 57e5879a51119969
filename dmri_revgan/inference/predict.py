"""Full-volume inference: one answer per volume, whatever the tiling.

Models trained with ``model.norm: none`` (the default recipe) are a fixed function of their
input: with "valid" convolutions (no padding, :meth:`RevGenerator.valid_copy`) every output voxel
depends only on the input within the receptive radius R (17 voxels for 4 blocks). The brain's
bounding box is cut into equal tiles; each tile is run with its R-voxel halo, its inner sides
shrinking through the valid convs and its sides on the volume's edge padded per conv as in
training, and its core is copied out — no blending, no window-dependent statistics — so the
tiles together equal the network's forward over the whole volume, for any tile size, up to float
rounding. Tiles are sized from a memory budget (``max_memory_gib``), batched, run in
``channels_last_3d`` under ``torch.inference_mode`` (oneDNN kernels; cuDNN in full float32 on
GPUs), optionally in bfloat16, with freed maps kept in the heap between layers and tiles
(:func:`reuse_freed_maps`). Voxels outside the brain mask are zero and cost nothing.

Models with InstanceNorm (the paper's) see per-window statistics, so no tiling can be exact for
them; they keep MONAI's sliding window (24³ windows, overlap 0.5, gaussian blending), the setting
they were trained for. This module's :func:`predict_volume` is the one path that ``infer``,
``evaluate``, training validation, the demo, the report and the benchmark call.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from dmri_revgan.inference.runtime import check_precision, ieee_float32, reuse_freed_maps
from dmri_revgan.inference.tiles import (
    DEFAULT_MAX_MEMORY_GIB,
    TilingStats,
    axis_ranges,
    conv_flop_per_voxel,
    conv_layers,
    plan_tiles,
    tile_work,
)
from dmri_revgan.nets.generators import RevGenerator

DIRECTIONS = ("up", "down")

LEGACY_ROI, LEGACY_OVERLAP = 24, 0.5  # sliding window of instance-norm models


def predict_volume(
    gen: RevGenerator,
    volume: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    mask: np.ndarray | None = None,
    direction: str = "up",
    roi: int | None = None,
    overlap: float | None = None,
    max_memory_gib: float = DEFAULT_MAX_MEMORY_GIB,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    stats: list[TilingStats] | None = None,
) -> np.ndarray:
    """Run F ("up": LR-on-HR-grid → HR) or G ("down") over a whole volume, zero outside ``mask``.

    Args:
        volume: (C, X, Y, Z) tensor volume in mm²/s, channels first, on the HR grid (2D
            models: (C, H, W) images, same rules).
        mean, std: per-channel normalisation statistics (C,), mm²/s, saved with the model.
        mask: (X, Y, Z) bool brain mask; only its bounding box is computed. None: everything.
        roi: tile edge in voxels (default: from ``max_memory_gib``); for instance-norm models the
            sliding-window edge (default 24). ``overlap``: sliding window only (default 0.5).
        precision: "float32" or "bf16" (autocast; devices with native bfloat16 only).
        stats: if given, a :class:`TilingStats` is appended (tiles, work ratio, FLOPs).

    Returns: (C, X, Y, Z) float32 in mm²/s.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    check_precision(precision, device)
    shape = volume.shape[1:]
    brain = np.ones(shape, bool) if mask is None else np.asarray(mask, bool).reshape(shape)
    out = np.zeros(volume.shape, np.float32)
    if not brain.any():
        return out
    shift = np.asarray(mean, np.float32).reshape(-1, *(1,) * len(shape))
    scale = np.asarray(std, np.float32).reshape(-1, *(1,) * len(shape))
    x = (np.asarray(volume, np.float32) - shift) / scale
    where = np.argwhere(brain)
    lo, hi = where.min(0), where.max(0) + 1
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    was_training = gen.training
    gen.eval()
    autocast = torch.autocast(
        torch.device(device).type, torch.bfloat16, enabled=precision == "bf16"
    )
    try:
        with torch.inference_mode(), autocast, ieee_float32(device):
            if gen.norm == "none" and gen.kind == "srcnn":
                with reuse_freed_maps():
                    y, info = _predict_exact(gen, x, lo, hi, direction, roi, max_memory_gib, device)
            else:
                y, info = _predict_sliding(gen, x, box, direction, roi, overlap, device)
    finally:
        gen.train(was_training)
    out[(slice(None), *box)] = y * scale + shift
    out *= brain[None]
    if stats is not None:
        stats.append(info)
    return out


def _predict_exact(
    gen: RevGenerator,
    x: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    direction: str,
    roi: int | None,
    max_memory_gib: float,
    device: str | torch.device,
) -> tuple[np.ndarray, TilingStats]:
    """Valid-convolution tiles with an R-voxel halo over the box [lo, hi) of normalised ``x``;
    equal to the network's forward over the whole volume, whatever the tiles."""
    from dmri_revgan.nets.reversible import tile_sides

    radius = gen.receptive_radius
    dims = x.ndim - 1
    layout = torch.channels_last_3d if dims == 3 else torch.channels_last
    valid = gen.valid_copy().to(device=device, memory_format=layout)
    run = valid.forward if direction == "up" else valid.reverse
    convs = conv_layers(gen, direction)
    width = max(c.out_channels for c in convs)
    box_lo, box_hi = tuple(int(v) for v in lo), tuple(int(v) for v in hi)
    shape = x.shape[1:]
    tile, batch = plan_tiles(box_lo, box_hi, shape, radius, width, max_memory_gib, roi)
    axes = [
        axis_ranges(a, b, t, n, radius)
        for a, b, t, n in zip(box_lo, box_hi, tile, shape, strict=True)
    ]
    groups: dict[tuple, list[tuple[tuple[int, int, bool, bool], ...]]] = {}
    for ranges in itertools.product(*axes):
        key = tuple((stop - start, i_lo, i_hi) for start, stop, i_lo, i_hi in ranges)
        groups.setdefault(key, []).append(ranges)
    extent = tuple(b - a for a, b in zip(box_lo, box_hi, strict=True))
    y = np.zeros((x.shape[0], *extent), np.float32)
    executed, count = 0.0, 0
    for key, members in groups.items():
        sides = tuple((i_lo, i_hi) for _, i_lo, i_hi in key)
        executed += len(members) * tile_work(convs, tuple(k[0] for k in key), sides)
        for i in range(0, len(members), batch):
            group = members[i : i + batch]
            windows = [x[(slice(None), *(slice(r[0], r[1]) for r in ranges))] for ranges in group]
            inp = torch.from_numpy(np.stack(windows)).to(device)
            with tile_sides(sides):
                res = run(inp.contiguous(memory_format=layout)).float().cpu().numpy()
            for ranges, r in zip(group, res, strict=True):
                # The output starts R voxels in on inner sides, at the input's start elsewhere;
                # copy the part of the box this tile covers.
                src, dst = [], []
                for (start, stop, i_lo, i_hi), a, b in zip(ranges, box_lo, box_hi, strict=True):
                    out_lo = start + (radius if i_lo else 0)
                    out_hi = stop - (radius if i_hi else 0)
                    core_lo, core_hi = max(a, out_lo), min(b, out_hi)
                    src.append(slice(core_lo - out_lo, core_hi - out_lo))
                    dst.append(slice(core_lo - a, core_hi - a))
                y[(slice(None), *dst)] = r[(slice(None), *src)]
            count += len(group)
            del inp, res  # free this batch before the next one is built
    useful = sum(conv_flop_per_voxel(c) for c in convs) * math.prod(extent)
    info = TilingStats(
        "exact", extent, tile, count, batch, radius, executed / useful, useful, executed
    )
    return y, info


def _predict_sliding(
    gen: RevGenerator,
    x: np.ndarray,
    box: tuple[slice, ...],
    direction: str,
    roi: int | None,
    overlap: float | None,
    device: str | torch.device,
) -> tuple[np.ndarray, TilingStats]:
    """MONAI's gaussian-blended sliding window (instance-norm models), over the whole volume as
    before (their answer depends on the windows; the bounding box would change it)."""
    from monai.inferers import sliding_window_inference

    run = gen.forward if direction == "up" else gen.reverse
    roi = roi or LEGACY_ROI
    overlap = LEGACY_OVERLAP if overlap is None else overlap
    full = sliding_window_inference(
        torch.from_numpy(x)[None],
        roi_size=(roi,) * (x.ndim - 1),
        sw_batch_size=4,
        predictor=run,
        overlap=overlap,
        mode="gaussian",
        sw_device=device,
        device="cpu",
        progress=False,
    )[0]
    extent = tuple(s.stop - s.start for s in box)
    useful = sum(conv_flop_per_voxel(c) for c in conv_layers(gen, direction)) * math.prod(extent)
    info = TilingStats(
        "sliding", extent, (roi,) * len(extent), useful_flop=useful, extra={"overlap": overlap}
    )
    return full.float().numpy()[(slice(None), *box)], info
