"""Full-volume inference: tile planning (``tiles``), the tiling-exact and sliding predictors
(``predict``), test-time transforms (``ensemble``), input reading (``inputs``), the run that
writes outputs (``run``), 2D images (``images``) and process switches (``runtime``)."""

from dmri_revgan.inference.ensemble import predict_ensemble, test_time_transforms
from dmri_revgan.inference.images import translate_images
from dmri_revgan.inference.inputs import (
    TensorInput,
    default_output,
    network_input,
    read_prepared,
    read_tensor_input,
)
from dmri_revgan.inference.predict import DIRECTIONS, predict_volume
from dmri_revgan.inference.run import (
    MASK_METHOD,
    SR_MASK,
    SR_TENSOR,
    Prediction,
    infer_volume,
    run_inference,
)
from dmri_revgan.inference.runtime import PRECISIONS, check_precision
from dmri_revgan.inference.tiles import DEFAULT_MAX_MEMORY_GIB, TilingStats, plan_tiles

__all__ = [
    "MASK_METHOD",
    "SR_MASK",
    "SR_TENSOR",
    "DEFAULT_MAX_MEMORY_GIB",
    "DIRECTIONS",
    "PRECISIONS",
    "Prediction",
    "TensorInput",
    "TilingStats",
    "check_precision",
    "default_output",
    "infer_volume",
    "network_input",
    "plan_tiles",
    "predict_ensemble",
    "predict_volume",
    "read_prepared",
    "read_tensor_input",
    "run_inference",
    "test_time_transforms",
    "translate_images",
]
