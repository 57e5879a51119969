"""Full-volume inference with MONAI's sliding-window inferer.

The network is trained on 24³ patches and InstanceNorm statistics are per patch, so full volumes
are processed as overlapping ROI windows blended with gaussian weights: memory stays bounded by
``sw_batch`` windows whatever the volume size.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.inferers import sliding_window_inference

from dmri_revgan.nets.generators import RevGenerator

DIRECTIONS = ("up", "down")


def predict_volume(
    gen: RevGenerator,
    volume: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    direction: str = "up",
    roi: int = 24,
    overlap: float = 0.5,
    sw_batch: int = 4,
    device: str | torch.device = "cpu",
    mode: str = "gaussian",
) -> np.ndarray:
    """Run F ("up": LR-on-HR-grid → HR) or G ("down": HR → LR-on-HR-grid) over a whole volume.

    Args:
        volume: (C, X, Y, Z) tensor volume in mm²/s, channels first, on the HR grid.
        mean, std: per-channel normalisation statistics (C,), mm²/s, saved with the model.
        roi, overlap, sw_batch, mode: MONAI sliding-window settings (window edge in voxels,
            fractional overlap, windows per forward pass, "gaussian" or "constant" blending).

    Returns: (C, X, Y, Z) float32 in mm²/s.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    run = gen.forward if direction == "up" else gen.reverse
    shift = torch.as_tensor(np.asarray(mean, np.float32)).view(-1, 1, 1, 1)
    scale = torch.as_tensor(np.asarray(std, np.float32)).view(-1, 1, 1, 1)
    x = (torch.as_tensor(np.asarray(volume, np.float32)) - shift) / scale
    was_training = gen.training
    gen.eval()
    try:
        with torch.inference_mode():
            out = sliding_window_inference(
                x[None],
                roi_size=(roi,) * (x.ndim - 1),
                sw_batch_size=sw_batch,
                predictor=run,
                overlap=overlap,
                mode=mode,
                sw_device=device,
                device="cpu",
                progress=False,
            )[0]
    finally:
        gen.train(was_training)
    return (out * scale + shift).numpy()
