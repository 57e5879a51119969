"""One training step: a generator update through the objective of ``losses.py`` (both directions
through the shared memory-saving core), then a discriminator update on pooled fakes."""

from __future__ import annotations

import torch
from torch import nn

from dmri_revgan.config import LossConfig
from dmri_revgan.losses import Objective, discriminator_loss
from dmri_revgan.training.distributed import average_gradients
from dmri_revgan.training.pools import ImagePool
from dmri_revgan.training.schedule import Optimisers


def train_step(
    gen: nn.Module,
    discs: dict[str, nn.Module],
    pools: dict[str, ImagePool],
    opts: Optimisers,
    objective: Objective,
    loss: LossConfig,
    x: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor | None = None,
    precision: str = "float32",
) -> dict[str, float]:
    """One generator update then one discriminator update; returns the named loss terms.

    ``x``, ``y``: (B, C, *S) normalised input and target; ``mask`` (B, 1, *S): the target's brain
    voxels, used when ``loss.mask`` is set. ``discs`` holds "d_x" / "d_y" (empty without GAN).
    ``precision`` "bf16": the forward passes run under bfloat16 autocast (convolutions in bf16;
    weights, gradients, optimiser state, losses and the reversible core's coupling sums stay
    float32); backward follows autocast's choices."""
    autocast = torch.autocast(x.device.type, torch.bfloat16, enabled=precision == "bf16")
    for d in discs.values():
        d.requires_grad_(False)
    opts.g.zero_grad(set_to_none=True)
    with autocast:
        step = objective(gen, discs.get("d_x"), discs.get("d_y"), x, y, loss, mask)
    step.loss.backward()
    average_gradients(list(gen.parameters()))
    opts.g.step()
    terms = dict(step.terms)
    if opts.d is not None:
        for d in discs.values():
            d.requires_grad_(True)
        opts.d.zero_grad(set_to_none=True)
        for k, (real, fake) in step.fakes.items():
            with autocast:
                d_loss = discriminator_loss(discs[k], real, pools[k].query(fake), loss.gan_mode)
            d_loss.backward()
            terms[f"loss_{k.upper()}"] = d_loss.item()
        average_gradients([p for d in discs.values() for p in d.parameters()])
        opts.d.step()
    return terms
