"""Full-volume validation during training: each validation subject predicted from its LR tensor
and LR mask exactly as ``infer`` does, scored against the HR tensor on the HR mask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dmri_revgan.inference import TensorInput, infer_volume, read_prepared
from dmri_revgan.metrics import region_rmse
from dmri_revgan.model import LoadedModel


@dataclass
class ValidationVolume:
    """A validation subject: its LR tensor and mask as ``infer`` reads them, and the HR target
    (6, X, Y, Z) in mm²/s with its (X, Y, Z) HR brain mask, which only scores."""

    subject: str
    lr: TensorInput
    target: np.ndarray
    mask: np.ndarray


def load_validation(records: Sequence[Any]) -> list[ValidationVolume]:
    """The validation subjects of a manifest (:class:`ValidationVolume`)."""
    from dmri_revgan.data.patches import load_hr

    volumes = []
    for r in records:
        target, mask = load_hr(r)
        volumes.append(ValidationVolume(r.subject, read_prepared(r), target, mask))
    return volumes


def validate(
    model: LoadedModel, volumes: Sequence[ValidationVolume], device: str
) -> dict[str, float]:
    """Mean full-volume RMSE (10⁻⁵ mm²/s) over the validation subjects, per region, of the
    prediction ``infer`` makes from each LR input (:func:`infer_volume`)."""
    if not volumes:
        return {}
    per_subject = [
        region_rmse(
            np.moveaxis(infer_volume(model, v.lr, device=device).tensor, -1, 0), v.target, v.mask
        )
        for v in volumes
    ]
    return {f"val_rmse_{k}": float(np.mean([r[k] for r in per_subject])) for k in per_subject[0]}
