"""Resume states for bit-identical continuation: weights, optimisers, schedules, pools, RNG
states and counters, as tensors, numbers and strings only (read with
``torch.load(weights_only=True)``, :func:`dmri_revgan.model.load_resume_state`)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from dmri_revgan import __version__
from dmri_revgan.config import Config, config_from_dict
from dmri_revgan.errors import InputError
from dmri_revgan.training.memory import MemoryPlan, apply_plan
from dmri_revgan.training.pools import ImagePool
from dmri_revgan.training.schedule import Optimisers


def rng_state() -> dict[str, Any]:
    """RNG states as tensors, strings and numbers only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Resumable(Protocol):
    """What a resume state holds of a trainer (:class:`dmri_revgan.training.trainer.Trainer`)."""

    cfg: Config
    gen: nn.Module
    discs: dict[str, nn.Module]
    opts: Optimisers
    pools: dict[str, ImagePool]
    mean: np.ndarray
    std: np.ndarray
    epoch: int
    best: float
    train_seconds: float
    last_epoch_seconds: float
    plan: tuple[int, int] | None
    memory: MemoryPlan | None
    provenance: dict[str, Any]
    device: str


def resume_state(t: Resumable) -> dict[str, Any]:
    """The resume state of trainer ``t`` after its last finished epoch."""
    return {
        "version": __version__,
        "epoch": t.epoch,
        "config": t.cfg.to_dict(),
        "normalisation": {"mean": t.mean.tolist(), "std": t.std.tolist()},
        "generator": t.gen.state_dict(),
        "discriminators": {k: d.state_dict() for k, d in t.discs.items()},
        **t.opts.state_dict(),
        "pools": {k: pool.images for k, pool in t.pools.items()},
        "best": t.best,
        "train_seconds": t.train_seconds,
        "last_epoch_seconds": t.last_epoch_seconds,
        "plan": list(t.plan) if t.plan else None,
        "memory_plan": t.memory.to_dict() if t.memory else None,
        "rng": rng_state(),
        "provenance": t.provenance,
    }


def restore_state(t: Resumable, ckpt: dict[str, Any], source: Path) -> None:
    """Continue trainer ``t`` from a resume state of the same architecture and objective."""
    saved = config_from_dict(ckpt["config"])
    # How backward saves memory changes no weight: a run from before memory plans (true/false)
    # resumes under "auto", and a recorded plan below decides how it steps.
    saved.model.memory_saving = t.cfg.model.memory_saving
    if saved.model != t.cfg.model or saved.loss != t.cfg.loss:
        raise InputError(source, "checkpoint was trained with another model or objective")
    t.gen.load_state_dict(ckpt["generator"])
    for k, d in t.discs.items():
        d.load_state_dict(ckpt["discriminators"][k])
    t.opts.load_state_dict(ckpt)
    for k, pool in t.pools.items():
        pool.images = [image.to(t.device) for image in ckpt["pools"][k]]
    t.mean = np.asarray(ckpt["normalisation"]["mean"], np.float32)
    t.std = np.asarray(ckpt["normalisation"]["std"], np.float32)
    t.epoch, t.best = ckpt["epoch"], ckpt["best"]
    t.train_seconds = float(ckpt.get("train_seconds", 0.0))
    t.last_epoch_seconds = float(ckpt.get("last_epoch_seconds", 0.0))
    t.plan = tuple(ckpt["plan"]) if ckpt.get("plan") else None  # type: ignore[assignment]
    if t.plan:
        t.opts.follow(*t.plan, t.cfg.optim.schedule)
    if ckpt.get("memory_plan"):  # step as the killed run did (batch, recomputation)
        t.memory = MemoryPlan.from_dict(ckpt["memory_plan"])
        apply_plan(t.memory, t.cfg, t.gen)
    set_rng_state(ckpt["rng"])
