"""Training batches of one epoch: a shuffle that depends only on (seed, epoch), so a resumed run
draws exactly the batches an uninterrupted one would; sharded over ranks under torchrun."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from dmri_revgan.config import Config
from dmri_revgan.training.distributed import world


def _loader(train_set: Dataset, cfg: Config, epoch: int, salt: int) -> DataLoader:
    """Shuffled loader whose order depends only on (seed, epoch, salt): resumable."""
    seed = cfg.seed * 1_000_003 + epoch * 7919 + salt
    if world() > 1:
        sampler: Any = DistributedSampler(train_set, seed=seed, drop_last=True)
        sampler.set_epoch(epoch)
    else:
        sampler = RandomSampler(train_set, generator=torch.Generator().manual_seed(seed))
    return DataLoader(
        train_set,
        batch_size=cfg.optim.batch_size,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        drop_last=True,
    )


def steps_per_epoch(train_set: Dataset, cfg: Config) -> int:
    """Optimiser steps per epoch on each rank: whole batches, ``data.max_steps_per_epoch``."""
    per_rank = len(train_set) // (world() * cfg.optim.batch_size)
    limit = cfg.data.max_steps_per_epoch
    return min(per_rank, limit) if limit is not None else per_rank


def patches_per_epoch(train_set: Dataset, cfg: Config) -> int:
    """Patches one epoch trains, over all ranks."""
    return steps_per_epoch(train_set, cfg) * cfg.optim.batch_size * world()


def epoch_batches(
    train_set: Dataset, cfg: Config, epoch: int, device: str, layout: torch.memory_format
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """(x, y, mask of y) batches of ``epoch``; for the unpaired objective y comes from an
    independent shuffle (and the mask is None)."""
    set_epoch = getattr(train_set, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    xs = iter(_loader(train_set, cfg, epoch, 0))
    # Paired: input and target of the same patches, so one pass over one loader (iterating a
    # loader twice would draw two different shuffles). Unpaired: an independent shuffle.
    ys = iter(_loader(train_set, cfg, epoch, 1)) if cfg.loss.objective == "unpaired" else None
    limit = cfg.data.max_steps_per_epoch
    for i, bx in enumerate(xs):
        if limit is not None and i >= limit:
            return
        by = bx if ys is None else next(ys, None)
        if by is None:
            return
        mask = bx["mask"].to(device) if ys is None and "mask" in bx else None
        x = bx["input"].to(device, memory_format=layout)
        yield x, by["target"].to(device, memory_format=layout), mask
