"""Test-time transforms: the mean and spread of predictions over tensor-aware flips and axis
permutations of the volume (``infer --uncertainty N``)."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from dmri_revgan.inference.predict import predict_volume
from dmri_revgan.inference.runtime import reuse_freed_maps
from dmri_revgan.nets.generators import RevGenerator


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
