"""The reversible core: exact inversion, gradients equal to plain autograd, constant memory."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import randomise

from dmri_revgan.bench import SavedTensorMeter
from dmri_revgan.nets.reversible import AdditiveCoupling, ReversibleCore, make_core

PAD = {2: "reflect", 3: "replicate"}


def core_pair(dims: int, channels: int, depth: int, dtype=torch.float64):
    """A memory-saving core with random weights and a naive copy with the same weights."""
    saving = randomise(make_core(dims, channels, depth, PAD[dims], memory_saving=True)).to(dtype)
    naive = copy.deepcopy(saving)
    naive.memory_saving = False
    return saving, naive


def grads(core: ReversibleCore, x: torch.Tensor, loss_fn) -> list[torch.Tensor]:
    """dL/dx and dL/dθ for every parameter, in parameter order."""
    x = x.clone().requires_grad_(True)
    core.zero_grad()
    loss_fn(core, x).backward()
    return [x.grad, *(p.grad for p in core.parameters())]


def weighted_sum(core: ReversibleCore, x: torch.Tensor) -> torch.Tensor:
    out = core(x)
    return (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum()


def forward_then_inverse(core: ReversibleCore, x: torch.Tensor) -> torch.Tensor:
    """F-like and G-like uses in one graph: C(x), then C⁻¹ of a function of it, as a cycle does."""
    y = core(x)
    back = core.inverse(torch.tanh(y) * 1.5)
    return (y**2).mean() + (back**3).mean() + (core.inverse(x) * x).sum()


def assert_close_rel(a: torch.Tensor, b: torch.Tensor, rel: float) -> None:
    """Max-abs error relative to the reference's magnitude; conv biases before InstanceNorm have a
    true gradient of 0 (the norm removes the mean), so their magnitude is floored at 1e-6
    (an absolute tolerance of 1e-12)."""
    scale = b.abs().max().clamp_min(1e-6)
    assert (a - b).abs().max() / scale < rel


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("loss_fn", [weighted_sum, forward_then_inverse])
def test_memory_saving_gradients_equal_naive(dims, depth, loss_fn):
    saving, naive = core_pair(dims, 4, depth)
    x = torch.randn(2, 4, *([6] * dims), dtype=torch.float64)
    for g_saving, g_naive in zip(grads(saving, x, loss_fn), grads(naive, x, loss_fn), strict=True):
        assert g_saving is not None and g_naive is not None
        assert_close_rel(g_saving, g_naive, 1e-6)


@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_gradcheck_input_and_parameters(direction):
    core = randomise(make_core(3, 2, 2, "replicate", memory_saving=True), std=0.3).double()
    params = list(core.parameters())
    x = torch.randn(1, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    run = getattr(core, direction)
    # Parameters passed as inputs: gradcheck perturbs them in place and checks their gradients.
    assert torch.autograd.gradcheck(lambda x, *ps: run(x), (x, *params), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("dims", [2, 3])
def test_inverse_recovers_input_fp32(dims):
    core = randomise(make_core(dims, 64, 8, PAD[dims]), std=0.02).eval()
    x = torch.randn(1, 64, *([16] * dims))
    with torch.no_grad():
        assert (core.inverse(core(x)) - x).abs().max() < 1e-4
        assert (core(core.inverse(x)) - x).abs().max() < 1e-4


def test_block_inverse_and_fresh_identity():
    core = make_core(3, 8, 3, "replicate")
    x = torch.randn(1, 8, 5, 5, 5)
    assert torch.equal(core(x), x), "a fresh core (zero-initialised last convs) is the identity"
    block = randomise(core.blocks[0])
    assert isinstance(block, AdditiveCoupling)
    y = block(x)
    x1, x2 = x.chunk(2, 1)
    y1 = x1 + block.nn1(x2)
    assert torch.allclose(y, torch.cat((y1, x2 + block.nn2(y1)), 1)), "eq. 8"
    assert torch.allclose(block.inverse(y), x, atol=1e-6), "eq. 9"


def test_works_without_grad_inference_mode_eval_and_frozen_input():
    saving, naive = core_pair(3, 4, 3, dtype=torch.float32)
    x = torch.randn(1, 4, 6, 6, 6)
    with torch.no_grad():
        expected = naive(x)
        assert torch.allclose(saving(x), expected, atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(saving(x), expected, atol=1e-6)
        assert torch.allclose(saving.inverse(expected), x, atol=1e-5)
    for mode in (True, False):
        saving.train(mode)
        naive.train(mode)
        # Input without grad: only parameter gradients flow.
        saving.zero_grad()
        naive.zero_grad()
        saving(x).square().sum().backward()
        naive(x).square().sum().backward()
        # fp32 recomputation by inversion: agreement to fp32 round-off of the largest gradient.
        scale = max(p.grad.abs().max() for p in naive.parameters())
        for a, b in zip(saving.parameters(), naive.parameters(), strict=True):
            assert (a.grad - b.grad).abs().max() <= 1e-5 * scale


def test_frozen_parameters_get_no_grad():
    saving, naive = core_pair(2, 4, 2)
    for core in (saving, naive):
        core.blocks[0].nn1.requires_grad_(False)
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64)
    for a, b in zip(grads(saving, x, weighted_sum), grads(naive, x, weighted_sum), strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            assert_close_rel(a, b, 1e-6)


def saved_bytes(core: ReversibleCore, x: torch.Tensor) -> int:
    meter = SavedTensorMeter(exclude=core.parameters())
    with meter.measure():
        out = core(x.requires_grad_(True))
    out.sum().backward()
    return meter.bytes


@pytest.mark.parametrize("dims", [2, 3])
def test_saved_activation_memory_constant_in_depth(dims):
    x = torch.randn(1, 8, *([12] * dims))
    saving = [saved_bytes(make_core(dims, 8, d, PAD[dims]), x.clone()) for d in (2, 16)]
    naive = [
        saved_bytes(make_core(dims, 8, d, PAD[dims], memory_saving=False), x.clone())
        for d in (2, 16)
    ]
    assert saving[0] > 0
    assert abs(saving[1] - saving[0]) <= 0.01 * saving[0]
    assert naive[1] >= 4 * naive[0]
    assert saving[1] < naive[0]


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("depth", [0, 2])
def test_halves_are_the_output_channels_without_concatenation(inverse, depth):
    core = randomise(make_core(3, 8, depth, "replicate")).double()
    x = torch.randn(2, 8, 5, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        whole = core.inverse(x) if inverse else core(x)
        first, second = core.halves(x, inverse)
    assert torch.equal(torch.cat((first, second), 1), whole)
    with pytest.raises(RuntimeError, match="inference"):
        core.halves(x, inverse)
