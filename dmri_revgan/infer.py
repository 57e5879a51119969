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

import contextlib
import ctypes
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmri_revgan.errors import InputError, InputWarning
from dmri_revgan.model import LoadedModel, load_model
from dmri_revgan.nets.generators import RevGenerator

DIRECTIONS = ("up", "down")
PRECISIONS = ("float32", "bf16")
DEFAULT_MAX_MEMORY_GIB = 3.0  # tile activations; an HCP-size volume then peaks under 4 GiB RSS
LEGACY_ROI, LEGACY_OVERLAP = 24, 0.5  # sliding window of instance-norm models
# Bytes of live activations per input voxel of a tile per core channel (float32, inference mode,
# channels-last; 11.9 at 80³ and 12.9 at 120³ measured with width 64, depth 4), with a margin.
_BYTES_PER_VOXEL_CHANNEL = 14.0
# glibc <malloc.h> parameters and their defaults.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_TRIM_DEFAULT, _MMAP_MAX_DEFAULT = 128 * 1024, 65536
_heap_users = 0


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


def _convs(gen: RevGenerator, direction: str) -> list[torch.nn.Module]:
    """The convs of F (up) or G (down) in the order they run, for work accounting."""
    enc, dec = (gen.enc_x, gen.dec_y) if direction == "up" else (gen.enc_y, gen.dec_x)
    blocks = list(gen.core.blocks)
    core = [m for b in (blocks if direction == "up" else blocks[::-1]) for m in b.modules()]
    modules = [*enc.modules(), *core, *dec.modules()]
    return [m for m in modules if isinstance(m, torch.nn.modules.conv._ConvNd)]


def _conv_flop_per_voxel(conv: torch.nn.Module) -> float:
    return 2.0 * conv.in_channels * conv.out_channels * math.prod(conv.kernel_size)


def _axis_ranges(
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


def _tile_work(
    convs: list[torch.nn.Module], extent: tuple[int, ...], sides: tuple[tuple[bool, bool], ...]
) -> float:
    """FLOPs of one tile of input ``extent`` with valid convs on its inner sides."""
    total, size = 0.0, list(extent)
    for conv in convs:
        p = conv.kernel_size[0] // 2
        size = [s - p * (lo + hi) for s, (lo, hi) in zip(size, sides, strict=True)]
        total += _conv_flop_per_voxel(conv) * math.prod(size)
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
            _axis_ranges(a, b, t, n, radius) for a, b, t, n in zip(lo, hi, tile, shape, strict=True)
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


@contextlib.contextmanager
def reuse_freed_maps() -> Iterator[None]:
    """Keep freed activation maps in the process heap while tiles run (glibc only).

    glibc serves every block over 32 MiB (each tile map: hundreds of MB) with a fresh ``mmap``
    and unmaps it on free, so each of the ~30 maps per tile is page-faulted and zeroed by the
    kernel again (HCP size on a 2-core Xeon, fresh processes: 18.8 s without, 15.9 s with). Inside
    this context large blocks come from the heap and freed ones stay there for the next map
    (``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 2 GiB); on leaving, glibc's defaults are restored and
    the heap is trimmed, so the memory goes back to the system. Peak RSS rises by the heap's
    fragmentation (HCP size: 2.37 → 2.92 GiB). Re-entrant; a no-op on other C libraries.
    """
    global _heap_users
    libc = _glibc()
    if libc is None:
        yield
        return
    if _heap_users == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    _heap_users += 1
    try:
        yield
    finally:
        _heap_users -= 1
        if _heap_users == 0:
            libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_DEFAULT)
            libc.malloc_trim(0)


@contextlib.contextmanager
def ieee_float32(device: str | torch.device) -> Iterator[None]:
    """cuDNN convolutions in full float32 inside, not TF32 (PyTorch's default for convs on
    Ampere and later, ~1e-3 relative error): "float32" then means the CPU's answer up to float
    rounding, the same for any tiling. ``--precision bf16`` is the fast GPU choice."""
    if torch.device(device).type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)  # PyTorch ≥ 2.9; before: allow_tf32
    owner, name, value = (
        (conv, "fp32_precision", "ieee")
        if conv is not None
        else (torch.backends.cudnn, "allow_tf32", False)
    )
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (``mallopt``/``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def check_precision(precision: str, device: str | torch.device = "cpu") -> None:
    """Refuse bf16 where ``device`` would emulate it slowly: CPUs without AVX-512 BF16 / AMX,
    GPUs older than Ampere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "bf16":
        return
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ValueError("--precision bf16: this GPU has no native bfloat16 — use float32")
    elif not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError(
            "--precision bf16: this CPU has no native bfloat16 convolutions (AVX-512 BF16 / "
            "AMX); it would be emulated slowly — use float32"
        )


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
    convs = _convs(gen, direction)
    width = max(c.out_channels for c in convs)
    box_lo, box_hi = tuple(int(v) for v in lo), tuple(int(v) for v in hi)
    shape = x.shape[1:]
    tile, batch = plan_tiles(box_lo, box_hi, shape, radius, width, max_memory_gib, roi)
    axes = [
        _axis_ranges(a, b, t, n, radius)
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
        executed += len(members) * _tile_work(convs, tuple(k[0] for k in key), sides)
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
    useful = sum(_conv_flop_per_voxel(c) for c in convs) * math.prod(extent)
    info = TilingStats(
        "exact", extent, tile, count, batch, radius, executed / useful, useful, executed
    )
    return y, info


def test_time_transforms(n: int) -> list[tuple[tuple[int, ...], tuple[bool, ...]]]:
    """The first ``n`` of the 48 axis permutations × flips (identity first, then the 7 flips
    of the identity order, then the other permutations), as (perm, flips) for ``flip_permute``."""
    perms = list(itertools.permutations(range(3)))
    flips = sorted(itertools.product((False, True), repeat=3), key=sum)
    every = [(p, f) for p in perms for f in flips]
    if not 1 <= n <= len(every):
        raise ValueError(f"--uncertainty takes 1 to {len(every)} transforms, got {n}")
    return every[:n]


def predict_ensemble(
    gen: RevGenerator,
    volume: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    mask: np.ndarray,
    n: int,
    **kwargs: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread of :func:`predict_volume` over ``n`` tensor-aware test-time transforms.

    Each transform re-orients the (6, X, Y, Z) tensor field (mm²/s) with
    :func:`dmri_revgan.dti.flip_permute` — the helper training augmentation uses — runs the
    model, and turns the result back. Returns the mean (6, X, Y, Z) and the per-voxel standard
    deviation, the RMS over the 6 components (X, Y, Z), mm²/s; zero outside the mask.
    """
    from dmri_revgan.dti import flip_permute, turn_grid, unflip_permute

    total = np.zeros(volume.shape, np.float64)
    squares = np.zeros(volume.shape, np.float64)
    with reuse_freed_maps():  # the passes reuse one another's maps
        for perm, flips in test_time_transforms(n):
            turned = flip_permute(volume, perm, flips)  # type: ignore[arg-type]
            turned_mask = turn_grid(mask[None], perm, flips)[0]
            out = predict_volume(gen, turned, mean, std, turned_mask, **kwargs)
            back = unflip_permute(out, perm, flips).astype(np.float64)  # type: ignore[arg-type]
            total += back
            squares += back**2
    avg = total / n
    spread = np.sqrt(np.maximum(squares / n - avg**2, 0).mean(0)) * mask
    return avg.astype(np.float32), spread.astype(np.float32)


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
    useful = sum(_conv_flop_per_voxel(c) for c in _convs(gen, direction)) * math.prod(extent)
    info = TilingStats(
        "sliding", extent, (roi,) * len(extent), useful_flop=useful, extra={"overlap": overlap}
    )
    return full.float().numpy()[(slice(None), *box)], info


@dataclass
class TensorInput:
    """A tensor volume read from the user's input, on its own (LR) grid."""

    tensor: np.ndarray  # (X, Y, Z, 6) FSL order, mm²/s
    mask: np.ndarray  # (X, Y, Z) bool
    image: Any  # the nibabel image whose header and orientation the outputs keep
    source: Path


def _beside(path: Path, names: tuple[str, ...]) -> Path | None:
    """The first existing file among ``names`` next to ``path`` (``{stem}`` = name sans .nii.gz)."""
    stem = path.name.removesuffix(".gz").removesuffix(".nii")
    for name in names:
        candidate = path.parent / name.format(stem=stem)
        if candidate.is_file():
            return candidate
    return None


def read_tensor_input(path: Path, order: str = "fsl", mask: Path | None = None) -> TensorInput:
    """Read INPUT as ``infer`` accepts it: a 6-channel tensor NIfTI (FSL order, or dipy with
    ``order="dipy"``), a 4D DWI with .bval/.bvec (or bvals/bvecs) beside it or a 3D Slicer DWI
    NRRD (the tensor is fitted first), or an HCP subject folder (``<subject>/T1w/Diffusion``)."""
    from dmri_revgan import dti, io

    if path.is_dir():
        folder = path / "T1w" / "Diffusion" if (path / "T1w").is_dir() else path
        path = folder / "data.nii.gz"
        if not path.is_file():
            raise InputError(path, "no such file (expected an HCP subject folder)")
    from dmri_revgan.data.nrrd import is_nrrd, read_nrrd_dwi

    bval = None
    if is_nrrd(path):  # a 3D Slicer DWI: gradients and b-value in the header
        data, image, bvals, bvecs = read_nrrd_dwi(path)
    else:
        data, image = io.read_nifti(path, ndim=4)
        bval = _beside(path, ("{stem}.bval", "bvals", "{stem}.bvals"))
    if bval is not None:
        bvec = _beside(path, ("{stem}.bvec", "bvecs", "{stem}.bvecs"))
        if bvec is None:
            raise InputError(path, f"{bval.name} found but no .bvec/bvecs beside it")
        bvals, bvecs = io.read_bvals_bvecs(bval, bvec, data.shape[-1])
    if bval is not None or is_nrrd(path):
        given_mask = _read_mask(mask, data.shape[:3]) if mask else None
        brain = given_mask if given_mask is not None else dti.brain_mask(data, bvals)
        tensor, _, _ = dti.fit_tensor(data, bvals, bvecs, brain)
        return TensorInput(tensor, brain, image, path)
    if data.shape[-1] != 6:
        raise InputError(
            path,
            f"has {data.shape[-1]} volumes: expected a 6-channel tensor, or a DWI with "
            ".bval/.bvec beside it",
        )
    bad = int((~np.isfinite(data)).any(-1).sum())
    if bad:
        raise InputError(path, f"{bad} voxels contain NaN or Inf")
    tensor = dti.dipy_to_fsl(data) if order == "dipy" else data
    brain = _read_mask(mask, data.shape[:3]) if mask else np.abs(tensor).sum(-1) > 0
    return TensorInput(tensor, brain, image, path)


def _read_mask(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    from dmri_revgan import io

    data, _ = io.read_nifti(path)
    if data.shape[:3] != tuple(shape):
        raise InputError(path, f"mask shape {data.shape} does not match the input grid {shape}")
    return data.reshape(shape) > 0


def default_output(source: Path, direction: str) -> Path:
    """``subject.nii.gz`` → ``subject_sr.nii.gz`` (up) or ``subject_lr.nii.gz`` (down); an HCP
    folder ``…/100307`` → ``…/100307_sr.nii.gz`` beside it."""
    suffix = "_sr" if direction == "up" else "_lr"
    if source.name == "data.nii.gz" and source.parent.name == "Diffusion":
        subject = source.parent.parent.parent
        return subject.parent / f"{subject.name}{suffix}.nii.gz"
    stem = source.name.removesuffix(".gz").removesuffix(".nii")
    stem = stem.removesuffix(".nrrd").removesuffix(".nhdr")
    return source.parent / f"{stem}{suffix}.nii.gz"


def network_input(model: LoadedModel, lr: np.ndarray, lr_mask: np.ndarray) -> np.ndarray:
    """The LR tensor (6, x, y, z) on the HR grid as the model was trained to take it
    (``data.input``: nearest neighbour as in the paper, or edge-aware cubic)."""
    from dmri_revgan.data.degrade import interpolate

    return interpolate(lr, model.cfg.data.factor, model.cfg.data.input, lr_mask)


def reorientation(
    affine: np.ndarray, target: str | None
) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """(perm, flips) for :func:`dmri_revgan.dti.flip_permute` that turn a volume with ``affine``
    into the voxel orientation ``target`` (axis codes such as "LAS"; None: no change)."""
    import nibabel as nib
    from nibabel import orientations

    if target is None:
        return (0, 1, 2), (False, False, False)
    transform = orientations.ornt_transform(
        nib.io_orientation(affine), orientations.axcodes2ornt(tuple(target))
    )
    perm, flips = [0, 0, 0], [False, False, False]
    for old, (new, flip) in enumerate(transform):
        perm[int(new)], flips[int(new)] = old, bool(flip < 0)
    return tuple(perm), tuple(flips)  # type: ignore[return-value]


def check_brain(data: TensorInput) -> None:
    """Refuse an input with nothing to super-resolve; warn once when most tensors are
    non-physical (negative mean diffusivity)."""
    import warnings

    if not data.mask.any():
        raise InputError(data.source, "empty brain mask: no voxel to super-resolve")
    md = data.tensor[data.mask][:, [0, 3, 5]].mean(-1)
    negative = int((md < 0).sum())
    if not np.isfinite(md).all() or (md == 0).all():
        raise InputError(data.source, "no finite non-zero tensor inside the brain mask")
    if negative > md.size / 2:
        warnings.warn(
            f"{data.source}: {negative} of {md.size} brain voxels have negative mean "
            "diffusivity (non-physical tensors); check the channel order (--order)",
            InputWarning,
            stacklevel=2,
        )


def infer_volume(
    model: LoadedModel,
    data: TensorInput,
    direction: str = "up",
    roi: int | None = None,
    overlap: float | None = None,
    max_memory_gib: float = DEFAULT_MAX_MEMORY_GIB,
    device: str = "cpu",
    precision: str = "float32",
    stats: list[TilingStats] | None = None,
    uncertainty: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Super-resolve (up) or degrade (down) a tensor volume; returns ((X, Y, Z, 6), affine, SD).

    up: the LR tensor onto the HR grid (:func:`network_input`), F, zero outside the (upsampled)
    mask; the HR affine puts each HR voxel centre where ``data/degrade.py``'s relation says.
    down: G on the HR grid, then the mean of each r³ block, on the LR grid with its affine.
    ``uncertainty`` > 1: the mean over that many test-time transforms, and its per-voxel
    spread (X, Y, Z) in mm²/s (:func:`predict_ensemble`); SD is None otherwise.
    """
    from dmri_revgan.data.degrade import hr_affine, lr_affine, upsample
    from dmri_revgan.dti import flip_permute, turn_grid, unflip_permute

    check_brain(data)
    r = model.cfg.data.factor
    affine = data.image.affine
    # Turn the input to the training data's voxel orientation (tensor components with it), run,
    # and turn the result back: outputs keep the input's orientation.
    perm, flips = reorientation(affine, model.orientation)
    x = flip_permute(np.moveaxis(data.tensor, -1, 0), perm, flips)
    lr_mask = np.ascontiguousarray(turn_grid(data.mask[None], perm, flips)[0])
    if direction == "up":
        x = network_input(model, x, lr_mask)
        mask = upsample(lr_mask[None], r, 0)[0]
        out_affine = hr_affine(affine, r)
    else:
        mask = lr_mask
        out_affine = affine
    options = dict(
        direction=direction,
        roi=roi,
        overlap=overlap,
        max_memory_gib=max_memory_gib,
        device=device,
        precision=precision,
        stats=stats,
    )
    sd = None
    if uncertainty > 1:
        out, sd = predict_ensemble(
            model.gen, x, model.mean, model.std, mask, uncertainty, **options
        )
    else:
        out = predict_volume(model.gen, x, model.mean, model.std, mask, **options)
    out = unflip_permute(out, perm, flips)
    if sd is not None:
        sd = turn_grid(sd[None], perm, flips, inverse=True)[0]
    if direction == "down":
        c, *shape = out.shape
        crop = [s - s % r for s in shape]
        blocks = (crop[0] // r, r, crop[1] // r, r, crop[2] // r, r)
        out = out[:, : crop[0], : crop[1], : crop[2]].reshape(c, *blocks).mean((2, 4, 6))
        if sd is not None:
            sd = sd[: crop[0], : crop[1], : crop[2]].reshape(*blocks).mean((1, 3, 5))
        out_affine = lr_affine(affine, r)
    return np.moveaxis(out, 0, -1).astype(np.float32), out_affine, sd


def run_inference(
    source: Path,
    model_path: Path,
    output: Path | None = None,
    mask: Path | None = None,
    direction: str = "up",
    order: str = "fsl",
    roi: int | None = None,
    overlap: float | None = None,
    max_memory_gib: float = DEFAULT_MAX_MEMORY_GIB,
    device: str = "cpu",
    maps: bool = False,
    precision: str = "float32",
    uncertainty: int = 1,
    output_format: str = "nifti",
) -> list[Path]:
    """The ``infer`` command for 3D inputs: read, check, predict, write atomically + sidecar.

    ``output_format`` "nrrd" writes every volume as NRRD (the tensor as a Slicer
    ``3D-symmetric-matrix`` with its measurement frame) instead of NIfTI.

    ``uncertainty`` N > 1 writes the mean of N test-time transforms and ``<out>_sd.nii.gz``.

    Nothing is written unless every check passed and every output was computed.
    """
    import contextlib
    import dataclasses
    import json

    import nibabel as nib

    from dmri_revgan import __version__, io
    from dmri_revgan.data.nrrd import write_nrrd
    from dmri_revgan.dti import colour_fa, fa_md

    if direction not in DIRECTIONS:
        raise InputError(source, f"--direction must be one of {DIRECTIONS}")
    if not source.exists():
        raise InputError(source, "no such file or folder")
    if output is not None and output.resolve() == source.resolve():
        raise InputError(output, "output path equals the input; choose another --output")
    try:
        check_precision(precision, device)
    except ValueError as exc:
        raise InputError(source, str(exc)) from exc
    model = load_model(model_path, device)
    if model.cfg.model.spatial_dims == 2:
        return translate_images(source, model, output, direction, device)
    if output_format not in ("nifti", "nrrd"):
        raise InputError(source, f"--output-format must be nifti or nrrd, got {output_format!r}")
    data = read_tensor_input(source, order, mask)
    output = output or default_output(source, direction)
    if output_format == "nrrd" and output.suffix != ".nrrd":
        output = output.with_name(output.name.removesuffix(".gz").removesuffix(".nii") + ".nrrd")
    if output.resolve() == data.source.resolve():
        raise InputError(output, "output path equals the input; choose another --output")
    stats: list[TilingStats] = []
    try:
        test_time_transforms(uncertainty)
        tensor, affine, sd = infer_volume(
            model,
            data,
            direction,
            roi,
            overlap,
            max_memory_gib,
            device,
            precision,
            stats,
            uncertainty,
        )
    except ValueError as exc:
        raise InputError(source, str(exc)) from exc
    stem = output.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".nrrd")
    ext = ".nrrd" if output_format == "nrrd" else ".nii.gz"
    volumes = {output: tensor}
    if maps:
        fa, md = fa_md(tensor)
        volumes[output.with_name(f"{stem}_FA{ext}")] = fa
        volumes[output.with_name(f"{stem}_MD{ext}")] = md
        volumes[output.with_name(f"{stem}_colFA{ext}")] = colour_fa(tensor)
    if sd is not None:
        volumes[output.with_name(f"{stem}_sd{ext}")] = sd
    sidecar = output.with_name(f"{stem}.json")
    tiling = {k: v for k, v in dataclasses.asdict(stats[0]).items() if "flop" not in k}
    text = json.dumps(
        {
            "Description": "dmri-revgan "
            + ("super-resolved" if direction == "up" else "synthesised low-resolution")
            + " tensor",
            "TensorOrder": "FSL (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz)",
            "Units": "mm^2/s",
            "OutsideMask": 0.0,
            "Direction": direction,
            "Model": str(model.path.resolve()),
            "ModelSHA256": model.sha256,
            "ModelConfig": model.cfg.name,
            "ToolVersion": __version__,
            "Input": str(data.source.resolve()),
            "Precision": precision,
            "Tiling": tiling,
            "TestTimeTransforms": uncertainty,
        },
        indent=2,
        default=float,
    )
    # Every output goes to a temporary file first; they are renamed only once all are written,
    # so a failure (disk full, folder not writable) leaves none of them behind.
    with contextlib.ExitStack() as stack:
        for path, volume in volumes.items():
            tmp = stack.enter_context(io.atomic_path(path))
            if output_format == "nrrd":
                write_nrrd(tmp, volume, affine, tensor=volume is tensor)
            else:
                nib.save(io.nifti_image(volume, affine, data.image.header), tmp)
        stack.enter_context(io.atomic_path(sidecar)).write_text(text, encoding="utf-8")
    return [*volumes, sidecar]


def translate_images(
    source: Path,
    model: LoadedModel,
    output: Path | None = None,
    direction: str = "up",
    device: str = "cpu",
) -> list[Path]:
    """The ``infer`` command for 2D models: translate a PNG/JPEG image or a folder of them with
    F ("up": the config's A→B) or G ("down": B→A), at the config's ``image_size``.

    A file ``photo.png`` → ``photo_AtoB.png`` beside it (``_BtoA`` for down); a folder ``dir`` →
    ``dir_AtoB/`` with the same file names as PNG. Every input is read before anything is
    written; each output is written to a temporary file and renamed.
    """
    from PIL import Image

    from dmri_revgan.data.images import EXTENSIONS, list_images, read_rgb, to_tensor, to_uint8
    from dmri_revgan.io import atomic_path

    d = model.cfg.data
    tag = d.direction if direction == "up" else {"AtoB": "BtoA", "BtoA": "AtoB"}[d.direction]
    if source.is_dir():
        files = list_images(source)
        folder = output or source.parent / f"{source.name}_{tag}"
        targets = [folder / f"{f.stem}.png" for f in files]
    else:
        if source.suffix.lower() not in EXTENSIONS:
            raise InputError(source, f"not a {'/'.join(EXTENSIONS)} image for a 2D model")
        files = [source]
        targets = [output or source.with_name(f"{source.stem}_{tag}.png")]
    resolved = {f.resolve() for f in files}
    clash = [t for t in targets if t.resolve() in resolved]
    if clash:
        raise InputError(clash[0], "output path equals an input; choose another --output")
    size = d.image_size
    images = [
        np.asarray(Image.fromarray(read_rgb(f)).resize((size, size), Image.BICUBIC)) for f in files
    ]
    run = model.gen.forward if direction == "up" else model.gen.reverse
    outputs = []
    with torch.inference_mode():
        for image in images:
            x = to_tensor(np.array(image))[None].to(device)
            outputs.append(to_uint8(run(x)[0]))
    for target, result in zip(targets, outputs, strict=True):
        with atomic_path(target) as tmp:
            Image.fromarray(result).save(tmp)
    return targets
