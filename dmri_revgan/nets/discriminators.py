"""PatchGAN discriminator for 2D images and 3D volumes (supplement §1.2, after pix2pix).

``n_layers`` stride-2 convs of kernel 4 (64 channels, doubling up to 8 × 64), InstanceNorm after
all but the first, LeakyReLU 0.2, then a kernel-1 conv to one channel: a map of real/fake logits,
one per receptive-field patch. A 24³ volume gives a 3³ map, a 256² image a 32² map (n_layers = 3).
For the conditional GAN of the paired objective, concatenate input and output along channels and
pass ``in_channels`` = their sum.
"""

from __future__ import annotations

import torch
from monai.networks.layers.factories import Conv, Norm
from torch import nn

from dmri_revgan.nets.generators import init_weights


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, in_channels, *S) → (B, 1, *S / 2**n_layers) logits.

    Args:
        spatial_dims: 2 or 3.
        in_channels: channels of the judged image (input + output channels when conditional).
        channels: width of the first conv; doubled at each further layer, capped at 8×.
        n_layers: number of stride-2 convs; each spatial size must be divisible by 2**n_layers.
        init_std: standard deviation of the N(0, σ) weight initialisation.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int = 64,
        n_layers: int = 3,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(n_layers):
            c_out = channels * min(2**i, 8)
            layers.append(conv(c_in, c_out, 4, stride=2, padding=1))
            if i > 0:
                layers.append(Norm[Norm.INSTANCE, spatial_dims](c_out))
            layers.append(nn.LeakyReLU(0.2))
            c_in = c_out
        layers.append(conv(c_in, 1, 1))
        self.model = nn.Sequential(*layers)
        init_weights(self, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits (B, 1, *S / 2**n_layers)."""
        return self.model(x)
