"""Optimisers and learning-rate schedules: Adam, constant then linear (pix2pix) or cosine decay
to 0 over the configured epochs."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from dmri_revgan.config import OptimConfig

SCHEDULES = ("linear", "cosine")


def lr_lambda(epochs_constant: int, epochs_decay: int, schedule: str = "linear"):
    """Multiplier of the learning rate at an epoch: 1 for ``epochs_constant`` epochs, then a
    decay reaching 0 after ``epochs_decay`` more, linear (pix2pix's policy) or cosine."""
    import math

    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule {schedule!r}: choose one of {SCHEDULES}")

    def factor(epoch: int) -> float:
        t = max(0, epoch + 1 - epochs_constant) / float(epochs_decay + 1)
        return 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def _scaled(o: OptimConfig, epochs: int) -> tuple[int, int]:
    """(constant, decay) epochs in the configured proportion over ``epochs`` (≥ 1) in all, the
    decay (if any) at least one epoch so it ends at a learning rate of 0."""
    total = o.epochs_constant + o.epochs_decay
    epochs = max(epochs, 1)
    constant = round(o.epochs_constant * epochs / total)
    if o.epochs_decay > 0:
        constant = min(constant, epochs - 1)
    return constant, epochs - constant


def plan_epochs(o: OptimConfig, epoch_seconds: float) -> tuple[int, int]:
    """(constant, decay) epochs that fit the budget ``o.max_minutes`` at ``epoch_seconds`` per
    epoch: the configured counts when they fit, else both scaled down so the decay still ends at
    a learning rate of 0 (a slower machine anneals its model instead of stopping mid-decay)."""
    total = o.epochs_constant + o.epochs_decay
    fit = int(60.0 * (o.max_minutes or 0.0) // max(epoch_seconds, 1e-9))
    if o.max_minutes is None or fit >= total:
        return o.epochs_constant, o.epochs_decay
    return _scaled(o, fit)


def plan_patches(o: OptimConfig, patches_per_epoch: int) -> tuple[int, int]:
    """(constant, decay) epochs that train ``o.max_patches`` patches at ``patches_per_epoch``:
    the fewest whole epochs that reach the budget, in the configured proportion, whether that
    is fewer or more epochs than configured (a small training set runs more epochs)."""
    if not o.max_patches or o.max_patches < 1:
        raise ValueError(f"optim.max_patches must be a positive patch count, got {o.max_patches}")
    return _scaled(o, -(-o.max_patches // max(patches_per_epoch, 1)))


@dataclass
class Optimisers:
    """Adam for the generator and, when there are any, the discriminators, each with its
    per-epoch learning-rate schedule (one scheduler step per epoch)."""

    g: torch.optim.Optimizer
    d: torch.optim.Optimizer | None
    sched_g: LambdaLR
    sched_d: LambdaLR | None

    @classmethod
    def build(cls, o: OptimConfig, gen: nn.Module, discs: Iterable[nn.Module]) -> Optimisers:
        betas = (o.beta1, o.beta2)
        g = torch.optim.Adam(gen.parameters(), lr=o.lr, betas=betas)
        d_params = [p for d in discs for p in d.parameters()]
        d = torch.optim.Adam(d_params, lr=o.lr, betas=betas) if d_params else None
        factor = lr_lambda(o.epochs_constant, o.epochs_decay, o.schedule)
        return cls(g, d, LambdaLR(g, factor), LambdaLR(d, factor) if d else None)

    @property
    def lr(self) -> float:
        return self.g.param_groups[0]["lr"]

    def follow(self, constant: int, decay: int, schedule: str) -> None:
        """Lay the schedule over ``constant`` + ``decay`` epochs (a budget's plan), from the
        next epoch on."""
        factor = lr_lambda(constant, decay, schedule)
        for sched in (self.sched_g, self.sched_d):
            if sched is not None:
                sched.lr_lambdas = [factor] * len(sched.lr_lambdas)
                for group, base in zip(sched.optimizer.param_groups, sched.base_lrs, strict=True):
                    group["lr"] = base * factor(sched.last_epoch)
                sched._last_lr = [group["lr"] for group in sched.optimizer.param_groups]

    def step_schedules(self) -> None:
        self.sched_g.step()
        if self.sched_d:
            self.sched_d.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "opt_g": self.g.state_dict(),
            "opt_d": self.d.state_dict() if self.d else None,
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict() if self.sched_d else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["opt_g"])
        self.sched_g.load_state_dict(state["sched_g"])
        if self.d and self.sched_d:
            self.d.load_state_dict(state["opt_d"])
            self.sched_d.load_state_dict(state["sched_d"])
