"""Low-resolution simulation (IQT, Alexander et al. 2017) and the LR ↔ HR grid relation.

An LR voxel is the block of r³ HR voxels (r = factor); its centre is the mean of its children's
centres, so with HR affine A the LR affine is A · S with S = [[r, 0, 0, (r−1)/2], …]. HR volumes are
cropped at the high-index end to a multiple of r, which leaves the HR affine unchanged. The block
functions also take one factor per axis, e.g. (1, 1, 3): thicker slices along the third axis only.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

Factor = int | tuple[int, int, int]  # one for all three axes, or one per axis


def _per_axis(factor: Factor) -> tuple[int, int, int]:
    if isinstance(factor, int):
        return factor, factor, factor
    x, y, z = (int(f) for f in factor)
    return x, y, z


def crop_to_multiple(volume: np.ndarray, factor: Factor) -> np.ndarray:
    """Crop the first three axes at their high end to multiples of ``factor``."""
    x, y, z = (s - s % f for s, f in zip(volume.shape[:3], _per_axis(factor), strict=True))
    return volume[:x, :y, :z]


def _scaling(factor: Factor) -> np.ndarray:
    r = np.asarray(_per_axis(factor), float)
    s = np.diag([*r, 1.0])
    s[:3, 3] = (r - 1) / 2.0
    return s


def lr_affine(hr_affine: np.ndarray, factor: Factor) -> np.ndarray:
    """Affine of the LR grid whose voxel i is the HR block [r·i, r·i + r)."""
    return np.asarray(hr_affine, np.float64) @ _scaling(factor)


def hr_affine(lr_affine_: np.ndarray, factor: Factor) -> np.ndarray:
    """Affine of the HR grid that an LR grid was simulated from (inverse of :func:`lr_affine`)."""
    return np.asarray(lr_affine_, np.float64) @ np.linalg.inv(_scaling(factor))


def block_mean(volume: np.ndarray, factor: Factor) -> np.ndarray:
    """Mean over non-overlapping r³ (or rx·ry·rz) blocks of the first three axes (after
    cropping)."""
    v = crop_to_multiple(volume, factor)
    (rx, ry, rz), rest = _per_axis(factor), v.shape[3:]
    x, y, z = v.shape[0] // rx, v.shape[1] // ry, v.shape[2] // rz
    return v.reshape(x, rx, y, ry, z, rz, *rest).mean(axis=(1, 3, 5))


def degrade_mask(hr_mask: np.ndarray, factor: Factor) -> np.ndarray:
    """LR mask: a block is brain when at least half of its children are."""
    return block_mean(hr_mask.astype(np.float32), factor) >= 0.5


def estimate_hr_mask(lr_mask: np.ndarray, factor: int, margin: int | None = None) -> np.ndarray:
    """HR brain mask (r·x, r·y, r·z) from an LR one: the voxels within ``margin`` HR voxels
    (Chebyshev: a cube) of its nearest-neighbour upsampling; ``margin = 0`` is that upsampling.

    The default ``margin = factor`` takes every block touching (26-neighbour) a brain block:
    :func:`degrade_mask` calls a block background when fewer than half of its r³ children are
    brain, and those children can be anywhere in it, up to r voxels beyond the blocky edge. Only
    brain in blocks touching no brain block stays out (islands, strands thinner than half a block).
    On the 24 shared series (r = 2): recall ≥ 0.99979, mean 0.99996, at most 15 voxels missed per
    series, against ≥ 0.973 (a one-voxel shell, 2% of the brain) for ``margin = 0``. It takes
    in non-brain voxels worth 47% of the brain's volume (4% for the upsampling) and grows the
    bounding box, which inference computes, by 13%; ``margin = 1`` halves both but misses twice
    as many voxels (recall ≥ 0.99965).
    """
    margin = factor if margin is None else margin
    hr = upsample(np.asarray(lr_mask, bool)[None], factor, 0)[0]
    if margin <= 0:
        return hr
    return ndimage.maximum_filter(hr, size=2 * margin + 1, mode="constant", cval=False)


INTERPOLATIONS = ("nearest", "trilinear", "cubic", "edge_cubic")
_ORDERS = {"nearest": 0, "trilinear": 1, "cubic": 3, "edge_cubic": 3}


def fill_outside(lr: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give every voxel outside ``mask`` the value of its nearest in-mask voxel.

    ``lr``: (C, x, y, z); ``mask``: (x, y, z) bool. Splines then stop mixing the background's zeros
    into the brain's edge. An empty mask leaves the volume unchanged.
    """
    if not mask.any() or mask.all():
        return lr
    index = ndimage.distance_transform_edt(~mask, return_distances=False, return_indices=True)
    return lr[(slice(None), *index)]


def interpolate(
    lr: np.ndarray, factor: int, method: str, mask: np.ndarray | None = None
) -> np.ndarray:
    """An LR tensor volume (C, x, y, z) on the HR grid by one of :data:`INTERPOLATIONS`.

    ``edge_cubic`` is the cubic spline of the LR volume after :func:`fill_outside` with the LR
    brain ``mask`` ("edge-aware cubic"): an honest baseline at the brain's edge, where a plain
    cubic spline mixes in background zeros.
    """
    if method not in _ORDERS:
        raise ValueError(f"unknown interpolation {method!r}; choose one of {INTERPOLATIONS}")
    if method == "edge_cubic":
        if mask is None:
            raise ValueError("edge_cubic interpolation needs the LR brain mask")
        lr = fill_outside(lr, np.asarray(mask, bool))
    return upsample(lr, factor, _ORDERS[method])


def upsample(lr: np.ndarray, factor: int, order: int = 0) -> np.ndarray:
    """Interpolate a channels-first LR volume (C, x, y, z) onto the HR grid (C, r·x, r·y, r·z).

    ``grid_mode=True`` maps HR voxel j to LR coordinate (j − (r−1)/2) / r, the affine relation
    above. Order 0 is nearest neighbour (each HR voxel takes its block's LR value: the network's
    input), 1 trilinear, 3 cubic spline; edges are extended by replication.
    """
    if order == 0:
        return np.repeat(np.repeat(np.repeat(lr, factor, 1), factor, 2), factor, 3)
    return np.stack(
        [
            ndimage.zoom(c.astype(np.float64), factor, order=order, mode="nearest", grid_mode=True)
            for c in lr
        ]
    ).astype(np.float32)
