"""RevGenerator (2D ResNet and 3D SRCNN kinds) and the PatchGAN discriminator."""

from __future__ import annotations

import pytest
import torch
from conftest import randomise

from dmri_revgan.nets.discriminators import PatchDiscriminator
from dmri_revgan.nets.generators import RevGenerator


def n_params(params) -> int:
    return sum(p.numel() for p in params)


@pytest.mark.parametrize(
    ("width", "depth", "paper_millions"),
    [(32, 6, 1.3), (56, 6, 3.9), (32, 9, 1.7), (58, 9, 5.6), (64, 9, 6.8)],
)
def test_2d_parameter_counts_match_paper_tables_2_and_4(width, depth, paper_millions):
    """All four encoders/decoders plus the core (paper Tables 2 and 4), within 3 %."""
    model = RevGenerator(2, 3, 3, width, depth, kind="resnet")
    count = n_params(model.parameters())
    assert abs(count / 1e6 - paper_millions) <= 0.03 * paper_millions, count


def test_3d_srcnn_parameter_arithmetic():
    """X→Y path: 3³ conv 6→64 (10,432) + 1³ conv 64→6 (390) = 10,822; each block two NNs of two
    3³ convs 32→32 = 4 · (32·32·27 + 32) = 110,720."""
    for depth in (0, 1, 4, 8):
        model = RevGenerator(3, 6, 6, 64, depth, kind="srcnn")
        assert n_params(model.xy_parameters()) == 10_822 + 110_720 * depth


@pytest.mark.parametrize("depth", [0, 2])
def test_3d_shapes_both_directions_and_initialisation(depth):
    model = RevGenerator(3, 6, 6, 16, depth)
    x = torch.randn(2, 6, 12, 12, 12)
    assert model(x).shape == x.shape
    assert model.reverse(x).shape == x.shape
    enc_weight = model.enc_x[0].weight
    assert abs(enc_weight.std().item() - 0.02) < 0.003 and enc_weight.mean().abs() < 0.003
    for block in model.core.blocks:
        for nn_fn in (block.nn1, block.nn2):
            assert not nn_fn[-1].weight.any() and not nn_fn[-1].bias.any()
            assert nn_fn[0].weight.std() > 0.01


def test_2d_resnet_shapes_tanh_and_layers():
    model = RevGenerator(2, 3, 3, 8, 2, kind="resnet")
    x = torch.randn(1, 3, 64, 64)
    y = model(x)
    assert y.shape == x.shape and y.abs().max() <= 1
    assert model.reverse(y).shape == x.shape
    kernels = [m.kernel_size for m in model.enc_x if isinstance(m, torch.nn.Conv2d)]
    assert kernels == [(7, 7), (3, 3), (3, 3)]
    assert model.enc_x[0].padding_mode == "reflect"
    assert model.core.blocks[0].nn1[0].in_channels == 16  # core at 4K = 32, halves of 16


def test_forward_and_reverse_share_the_core():
    """G uses C⁻¹ with F's weights: with identity encoders/decoders G undoes F, also after a
    change to one core weight (which changes G's output)."""
    model = randomise(RevGenerator(3, 6, 6, 8, 3), std=0.05).double()
    x = torch.randn(1, 6, 6, 6, 6, dtype=torch.float64)
    model(x).sum().backward()
    model.reverse(x).sum().backward()
    assert all(p.grad is not None for p in model.core.parameters())
    assert model.enc_x[0].weight.grad is not None and model.enc_y[0].weight.grad is not None
    for name in ("enc_x", "dec_y", "enc_y", "dec_x"):
        setattr(model, name, torch.nn.Sequential(torch.nn.Identity()))  # F = C, G = C⁻¹
    z = torch.randn(1, 8, 6, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        before = model.reverse(z)
        assert torch.allclose(model.reverse(model(z)), z, rtol=0, atol=1e-10)
        weight = model.core.blocks[1].nn2[0].weight
        weight.add_(0.1 * torch.randn_like(weight))
        assert not torch.allclose(model.reverse(z), before, atol=1e-3), "G ignores F's core"
        assert torch.allclose(model.reverse(model(z)), z, rtol=0, atol=1e-10)
        assert torch.allclose(model(model.reverse(z)), z, rtol=0, atol=1e-10)


@pytest.mark.parametrize(("dims", "size", "expected"), [(3, 24, 3), (2, 128, 16), (2, 256, 32)])
def test_patch_discriminator_maps(dims, size, expected):
    channels = 6 if dims == 3 else 3  # tensors or RGB
    disc = PatchDiscriminator(dims, 2 * channels)
    x = torch.randn(1, channels, *([size] * dims))
    conditional = torch.cat((x, x), dim=1)  # input and output concatenated
    out = disc(conditional)
    assert out.shape == (1, 1, *([expected] * dims))
    convs = [m for m in disc.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert [c.out_channels for c in convs] == [64, 128, 256, 1]
    assert all(c.kernel_size == (4,) * dims and c.stride == (2,) * dims for c in convs[:-1])
    assert convs[-1].kernel_size == (1,) * dims


def test_residual_generator_adds_the_input_in_both_directions():
    plain = RevGenerator(3, 6, 6, width=8, depth=2)
    skip = RevGenerator(3, 6, 6, width=8, depth=2, residual=True)
    skip.load_state_dict(plain.state_dict())
    x, y = torch.randn(2, 6, 8, 8, 8), torch.randn(2, 6, 8, 8, 8)
    torch.testing.assert_close(skip(x), x + plain(x))
    torch.testing.assert_close(skip.reverse(y), y + plain.reverse(y))
    with pytest.raises(ValueError, match="in_channels == out_channels"):
        RevGenerator(2, 3, 1, width=8, depth=1, kind="resnet", residual=True)


@pytest.mark.parametrize("dims", [2, 3])
def test_pointwise_decoder_reads_halves_of_different_sizes(dims):
    """The 1³ decoder of a valid copy takes the core's halves as they are; the larger (the one
    computed first in valid-convolution inference) is cut to the smaller's voxels."""
    gen = randomise(RevGenerator(dims, 6, 6, 8, 1, residual=True, norm="none")).double()
    dec = gen.valid_copy().dec_y[0]
    big = torch.randn(1, 4, *(9,) * dims, dtype=torch.float64)
    small = torch.randn(1, 4, *(7,) * dims, dtype=torch.float64)
    inner = (slice(None), slice(None), *(slice(1, 8),) * dims)
    with torch.no_grad():
        expected = gen.dec_y(torch.cat((big[inner], small), 1))
        assert torch.allclose(dec.of_halves(big, small), expected, rtol=0, atol=1e-12)
        assert torch.allclose(
            dec.of_halves(small, big), gen.dec_y(torch.cat((small, big[inner]), 1)), atol=1e-12
        )
