"""The paper's objectives, in one place.

Notation: F: X → Y (generator.forward), G: Y → X (generator.reverse), D_Y judges Y, D_X judges X.

- eq. 4–5, GAN term: L_GAN(F, D_Y) = E[log D_Y(y)] + E[log(1 − D_Y(F(x)))]; in the conditional
  (paired) case D sees the input beside the output, D_Y(x, y). Trained non-saturating: the
  generator maximises log D(fake). ``gan_mode="lsgan"`` uses least squares instead.
- eq. 6–7, L1 term: L_L1(F) = E‖y − F(x)‖₁ (and L_L1(G) = E‖x − G(y)‖₁). Deviations for real
  tensors, off by default: squared error instead (``pixel="l2"``, the RMSE that is reported) and
  the mean over HR-brain voxels only (``mask``: background voxels are not scored).
- eq. 12, paired: L = λ(L_L1(F) + L_L1(G)) + L_cGAN(F, D_Y) + L_cGAN(G, D_X), λ = 100;
  "w/o L_GAN" drops both GAN terms.
- eq. 13, unpaired: L = L_GAN(F, D_Y) + L_GAN(G, D_X) + λ(‖G(F(x)) − x‖₁ + ‖F(G(y)) − y‖₁),
  λ = 10.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as fn
from torch import nn

from dmri_revgan.config import LossConfig
from dmri_revgan.nets.generators import RevGenerator

GAN_MODES = ("vanilla", "lsgan")
OBJECTIVES = ("paired", "unpaired")
PIXEL_LOSSES = ("l1", "l2")


def pixel_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: str = "l1", mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean absolute ("l1", eq. 6–7) or squared ("l2") error of (B, C, *S) tensors, over all
    voxels or, with ``mask`` (B, 1, *S) in {0, 1}, over the masked voxels only."""
    if kind not in PIXEL_LOSSES:
        raise ValueError(f"loss.pixel {kind!r}: choose one of {PIXEL_LOSSES}")
    diff = pred - target
    err = diff.abs() if kind == "l1" else diff.square()
    if mask is None:
        return err.mean()
    weight = mask.expand_as(err)
    return (err * weight).sum() / weight.sum().clamp_min(1.0)


def gan_loss(logits: torch.Tensor, real: bool, mode: str = "vanilla") -> torch.Tensor:
    """GAN loss of patch logits against an all-real or all-fake target (eq. 4, per patch)."""
    target = torch.full_like(logits, 1.0 if real else 0.0)
    if mode == "vanilla":
        return fn.binary_cross_entropy_with_logits(logits, target)
    if mode == "lsgan":
        return fn.mse_loss(logits, target)
    raise ValueError(f"unknown gan_mode {mode!r}; choose one of {GAN_MODES}")


def discriminator_loss(
    disc: nn.Module, real: torch.Tensor, fake: torch.Tensor, mode: str = "vanilla"
) -> torch.Tensor:
    """½[L(D(real), real) + L(D(fake), fake)]; ``fake`` is detached so G gets no gradient here."""
    return 0.5 * (gan_loss(disc(real), True, mode) + gan_loss(disc(fake.detach()), False, mode))


@dataclass
class GeneratorStep:
    """The generator loss of one step with its named terms (for logging) and generated images.

    ``fakes`` maps a discriminator name ("d_x", "d_y") to the (real, fake) inputs it should judge
    in the discriminator step — conditional pairs (input ⊕ image) for the paired objective.
    """

    loss: torch.Tensor
    terms: dict[str, float]
    fakes: dict[str, tuple[torch.Tensor, torch.Tensor]]


def paired_objective(
    gen: RevGenerator,
    d_x: nn.Module | None,
    d_y: nn.Module | None,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: LossConfig,
    mask: torch.Tensor | None = None,
) -> GeneratorStep:
    """Eq. 12 (with ``cfg.use_gan=False``: the paper's "w/o L_GAN" variant).

    ``mask`` (B, 1, *S) restricts the pixel terms to brain voxels when ``cfg.mask`` is set.
    ``cfg.reverse_weight`` scales G's pixel term (the paper: 1); with 0 and no GAN, G is not run.
    """
    m = mask if cfg.mask else None
    fake_y = gen(x)
    l1_f = pixel_loss(fake_y, y, cfg.pixel, m)
    loss = cfg.lambda_l1 * l1_f
    terms = {"l1_F": l1_f.item()}
    if cfg.reverse_weight > 0 or cfg.use_gan:
        fake_x = gen.reverse(y)
        l1_g = pixel_loss(fake_x, x, cfg.pixel, m)
        loss = loss + cfg.lambda_l1 * cfg.reverse_weight * l1_g
        terms["l1_G"] = l1_g.item()
    fakes: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    if cfg.use_gan:
        assert d_x is not None and d_y is not None
        real_xy, fake_xy = torch.cat((x, y), 1), torch.cat((x, fake_y), 1)
        real_yx, fake_yx = torch.cat((y, x), 1), torch.cat((y, fake_x), 1)
        gan_f = gan_loss(d_y(fake_xy), True, cfg.gan_mode)
        gan_g = gan_loss(d_x(fake_yx), True, cfg.gan_mode)
        loss = loss + gan_f + gan_g
        terms |= {"gan_F": gan_f.item(), "gan_G": gan_g.item()}
        fakes = {"d_y": (real_xy, fake_xy), "d_x": (real_yx, fake_yx)}
    terms["loss_G"] = loss.item()
    return GeneratorStep(loss, terms, fakes)


def unpaired_objective(
    gen: RevGenerator,
    d_x: nn.Module,
    d_y: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: LossConfig,
    mask: torch.Tensor | None = None,
) -> GeneratorStep:
    """Eq. 13: GAN terms both ways plus λ-weighted cycle consistency through the shared core."""
    fake_y, fake_x = gen(x), gen.reverse(y)
    cycle_x, cycle_y = fn.l1_loss(gen.reverse(fake_y), x), fn.l1_loss(gen(fake_x), y)
    gan_f = gan_loss(d_y(fake_y), True, cfg.gan_mode)
    gan_g = gan_loss(d_x(fake_x), True, cfg.gan_mode)
    loss = gan_f + gan_g + cfg.lambda_l1 * (cycle_x + cycle_y)
    terms = {
        "gan_F": gan_f.item(),
        "gan_G": gan_g.item(),
        "cycle_X": cycle_x.item(),
        "cycle_Y": cycle_y.item(),
        "loss_G": loss.item(),
    }
    return GeneratorStep(loss, terms, {"d_y": (y, fake_y), "d_x": (x, fake_x)})


Objective = Callable[..., GeneratorStep]


def objective(cfg: LossConfig) -> Objective:
    """The generator objective named by the config."""
    if cfg.gan_mode not in GAN_MODES:
        raise ValueError(f"loss.gan_mode {cfg.gan_mode!r}: choose one of {GAN_MODES}")
    if cfg.pixel not in PIXEL_LOSSES:
        raise ValueError(f"loss.pixel {cfg.pixel!r}: choose one of {PIXEL_LOSSES}")
    if cfg.objective == "paired":
        return paired_objective
    if cfg.objective == "unpaired":
        if not cfg.use_gan:
            raise ValueError("loss.use_gan=false needs the paired objective")
        return unpaired_objective
    raise ValueError(f"loss.objective {cfg.objective!r}: choose one of {OBJECTIVES}")
