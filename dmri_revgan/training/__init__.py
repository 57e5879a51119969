"""Training: the Trainer loop (``trainer``), one step (``step``), batches, optimisers and
schedules, GAN pools, distributed helpers, resume state, run files, validation, and the entry
points from a manifest or image folders (``entrypoints``)."""

from dmri_revgan.training.distributed import distributed_session
from dmri_revgan.training.entrypoints import run_training
from dmri_revgan.training.pools import ImagePool
from dmri_revgan.training.schedule import lr_lambda
from dmri_revgan.training.trainer import Trainer
from dmri_revgan.training.validation import ValidationVolume

__all__ = [
    "ImagePool",
    "Trainer",
    "ValidationVolume",
    "distributed_session",
    "lr_lambda",
    "run_training",
]
