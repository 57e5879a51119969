"""Evaluation metrics. Tensor RMSE is reported in 10⁻⁵ mm²/s (the paper's Table 3 scale).

Regions (paper §5.2, after IQT): ``total`` = all brain voxels; ``interior`` = brain voxels whose
5×5×5 neighbourhood lies entirely inside the brain mask; ``exterior`` = total minus interior.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

UNIT = "1e-5 mm^2/s"
SCALE = 1e5  # mm²/s → 10⁻⁵ mm²/s
REGIONS = ("interior", "total", "exterior")


def region_masks(mask: np.ndarray, neighbourhood: int = 5) -> dict[str, np.ndarray]:
    """Boolean (X, Y, Z) masks of the three regions; outside the volume counts as non-brain."""
    brain = np.asarray(mask) > 0
    cube = np.ones((neighbourhood,) * brain.ndim, dtype=bool)
    interior = ndimage.binary_erosion(brain, structure=cube, border_value=0)
    return {"interior": interior, "total": brain, "exterior": brain & ~interior}


def tensor_rmse(pred: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    """RMSE over the 6 unique tensor elements of the voxels in ``region``, in 10⁻⁵ mm²/s.

    ``pred``/``target``: (6, X, Y, Z) in mm²/s (channels first, FSL order); ``region``: (X, Y, Z).
    NaN when the region is empty.
    """
    if not region.any():
        return float("nan")
    diff = (pred[:, region].astype(np.float64) - target[:, region].astype(np.float64)) * SCALE
    return float(np.sqrt(np.mean(diff**2)))


def region_rmse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """{region: RMSE} for interior, total and exterior (10⁻⁵ mm²/s)."""
    return {name: tensor_rmse(pred, target, m) for name, m in region_masks(mask).items()}
