"""The reversible core C of RevGAN: additive-coupling blocks and their memory-saving backward.

Paper eq. 8–9 (van der Ouderaa & Worrall 2019, after Gomez et al. 2017): a block splits its input
channels into halves (x1, x2) and computes

    y1 = x1 + NN1(x2),        y2 = x2 + NN2(y1)                       (forward, eq. 8)
    x2 = y2 - NN2(y1),        x1 = y1 - NN1(x2)                       (inverse, eq. 9)

Both directions are the same "coupling step" ``v1 = u1 + s·f(u2); v2 = u2 + s·g(v1)``:
forward is (f, g, s) = (NN1, NN2, +1) on (x1, x2); inverse is (NN2, NN1, -1) on (y2, y1) with the
halves swapped. One backward routine (:func:`_coupling_step_backward`) therefore serves C and C⁻¹.

With ``memory_saving=True`` the whole stack runs inside one autograd function that keeps only the
stack's output. Its backward walks the blocks from last to first, reconstructing each block's input
from its output while computing gradients, the fused way of RevNet (Gomez et al. 2017, alg. 1): each
NN is evaluated once more, with grad, which is exactly what backward needs. Activation memory is
therefore one block's worth, independent of depth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

import torch
from monai.networks.layers.factories import Conv, Norm
from torch import nn

Halves = tuple[torch.Tensor, torch.Tensor]


def _halves(x: torch.Tensor, inverse: bool) -> Halves:
    """(B, C, *spatial) → the coupling step's (u1, u2), each (B, C/2, *spatial), as views.

    The forward step takes (x1, x2); the inverse step takes (y2, y1), so the halves swap.
    """
    if x.shape[1] % 2:
        raise ValueError(f"a coupling needs an even number of channels, got {x.shape[1]}")
    a, b = x.chunk(2, dim=1)
    return (b, a) if inverse else (a, b)


def _whole(halves: Halves, inverse: bool) -> torch.Tensor:
    """Inverse of :func:`_halves`: step-order halves back to one (B, C, *spatial) tensor."""
    a, b = halves
    a, b = center_crop_like(a, b), center_crop_like(b, a)  # valid-convolution inference only
    return torch.cat((b, a) if inverse else (a, b), dim=1)


# Tiled inference (``RevGenerator.valid_copy``): for each spatial axis, whether the (low, high)
# side of the current tile is inside the volume. Inner sides are computed "valid" (no padding:
# the halo supplies the context, the map shrinks); sides on the volume's edge are padded as in
# training. None: every side is inner.
TILE_SIDES: ContextVar[tuple[tuple[bool, bool], ...] | None] = ContextVar(
    "TILE_SIDES", default=None
)


@contextlib.contextmanager
def tile_sides(sides: Sequence[tuple[bool, bool]]) -> Iterator[None]:
    """Run the block(s) inside as one tile whose (low, high) sides per axis are inner or not."""
    token = TILE_SIDES.set(tuple((bool(lo), bool(hi)) for lo, hi in sides))
    try:
        yield
    finally:
        TILE_SIDES.reset(token)


def edge_padding() -> list[tuple[int, int]] | None:
    """Voxels (low, high) per spatial axis that a 3-wide conv of the current tile pads on the
    volume's edge (replicate, as in training); None outside tiled inference or with no edge."""
    sides = TILE_SIDES.get()
    if sides is None or all(lo and hi for lo, hi in sides):
        return None
    return [(0 if lo else 1, 0 if hi else 1) for lo, hi in sides]


def into_edge_padded(
    like: torch.Tensor, pads: Sequence[tuple[int, int]], write: Callable[[torch.Tensor], object]
) -> torch.Tensor:
    """Write a map straight into a buffer that already carries the next conv's edge padding.

    ``write(interior)`` fills the unpadded voxels (shape of ``like``); the faces are replicated
    and the interior view is returned, tagged with its buffer, which the next conv's pre-hook
    takes as is (see ``RevGenerator.valid_copy``): the padding costs no extra copy of the map.
    """
    shape = list(like.shape)
    for i, (lo, hi) in enumerate(pads):
        shape[2 + i] += lo + hi
    layout = torch.channels_last_3d if like.ndim == 5 else torch.channels_last
    buffer = torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=layout)
    inner = buffer
    for i, (lo, _) in enumerate(pads):
        inner = inner.narrow(2 + i, lo, like.shape[2 + i])
    write(inner)
    for i, (lo, hi) in enumerate(pads):  # axis by axis, over the faces already filled before
        view = buffer
        for j, (lo_j, _) in enumerate(pads):
            if j > i:
                view = view.narrow(2 + j, lo_j, like.shape[2 + j])
        n = view.shape[2 + i]
        if lo:
            view.narrow(2 + i, 0, lo).copy_(
                view.narrow(2 + i, lo, 1).expand_as(view.narrow(2 + i, 0, lo))
            )
        if hi:
            edge = view.narrow(2 + i, n - hi - 1, 1)
            view.narrow(2 + i, n - hi, hi).copy_(edge.expand_as(view.narrow(2 + i, n - hi, hi)))
    inner.edge_padded = buffer  # type: ignore[attr-defined]
    return inner


def center_crop_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` cut to ``like``'s spatial shape on the tile's inner sides (both sides equally when
    both are inner); axes where ``x`` is not larger are left alone.

    The identity during training (shapes agree); in valid-convolution inference an NN's output
    is smaller than its input, and the other half of the coupling is cut to the same voxels.
    """
    sides = TILE_SIDES.get() or ((True, True),) * (x.ndim - 2)
    keep, cut = [], False
    for n, m, (lo, hi) in zip(x.shape[2:], like.shape[2:], sides, strict=True):
        d = max(0, n - m)
        start = d // 2 if lo and hi else (d if lo else 0)
        keep.append(slice(start, start + n - d))
        cut |= d > 0
    return x[(slice(None), slice(None), *keep)] if cut else x


def _apply_steps(blocks: Sequence[AdditiveCoupling], u: Halves, inverse: bool) -> Halves:
    """Run the blocks' coupling steps (eq. 8, or eq. 9 in reverse block order) on step halves.

    A step's output halves are the next step's input halves in both directions, so the channels
    are concatenated only once, by the caller.
    """
    u1, u2 = u
    for block in reversed(blocks) if inverse else blocks:
        f, g, s = block.steps(inverse)
        u1 = _couple(u1, f(u2), s)
        u2 = _couple(u2, g(u1), s)
    return u1, u2


def _couple(u: torch.Tensor, update: torch.Tensor, s: float) -> torch.Tensor:
    """u + s·update (u cut to update's voxels). Without autograd the sum is written into the
    NN's fresh output: no new full-size map, which matters for whole-volume inference. A
    bfloat16 update of a float32 stream (bf16 training, also inside the memory-saving forward)
    gives a float32 sum."""
    u = center_crop_like(u, update)
    if torch.is_grad_enabled() or update.dtype != u.dtype:  # bf16 training: float32 sums
        return torch.add(u, update, alpha=s)
    pads = edge_padding()
    if pads is not None:  # tiled inference: the sum goes straight into the next conv's input
        return into_edge_padded(update, pads, lambda out: torch.add(u, update, alpha=s, out=out))
    return update.add_(u) if s > 0 else update.neg_().add_(u)


def _couple_blocks(
    blocks: Sequence[AdditiveCoupling], x: torch.Tensor, inverse: bool
) -> torch.Tensor:
    """C (or C⁻¹) of ``blocks`` on a whole (B, C, *spatial) tensor; no blocks is the identity."""
    if not blocks:
        return x
    return _whole(_apply_steps(blocks, _halves(x, inverse), inverse), inverse)


class AdditiveCoupling(nn.Module):
    """One additive-coupling block, y = (x1 + NN1(x2), x2 + NN2(y1)); exactly invertible.

    Args:
        nn1: maps the second half to the first half's shape (C/2 → C/2 channels).
        nn2: maps the first output half to the second half's shape (C/2 → C/2 channels).
    """

    def __init__(self, nn1: nn.Module, nn2: nn.Module) -> None:
        super().__init__()
        self.nn1 = nn1
        self.nn2 = nn2

    def steps(self, inverse: bool) -> tuple[nn.Module, nn.Module, float]:
        """The (f, g, sign) of this block's coupling step in the given direction."""
        return (self.nn2, self.nn1, -1.0) if inverse else (self.nn1, self.nn2, 1.0)

    def couple(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        """Apply the block (eq. 8) or its inverse (eq. 9)."""
        return _couple_blocks([self], x, inverse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 8: (B, C, *spatial) → (B, C, *spatial)."""
        return self.couple(x, inverse=False)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Eq. 9: undoes :meth:`forward` up to floating-point rounding."""
        return self.couple(y, inverse=True)


def _coupling_step_backward(
    v: Halves, grad_v: Halves, f: nn.Module, g: nn.Module, s: float
) -> tuple[Halves, Halves, list[torch.Tensor | None], list[torch.Tensor | None]]:
    """Reconstruct the input of one coupling step from its output and back-propagate through it.

    The step is ``v1 = u1 + s·f(u2); v2 = u2 + s·g(v1)``. Given the output halves v and dL/dv this
    returns (u, dL/du, [dL/dθ for θ in f's parameters], [dL/dθ for θ in g's parameters]), None for
    frozen parameters. f and g run once each, with grad: their outputs reconstruct u and their
    graphs give the gradients. The sign s is applied to the small parameter gradients and inside
    fused adds, never as an extra pass over a full tensor.
    """
    (v1, v2), (dv1, dv2) = v, grad_v
    f_params = [p for p in f.parameters() if p.requires_grad]
    g_params = [p for p in g.parameters() if p.requires_grad]
    with torch.enable_grad():
        v1 = v1.detach().requires_grad_(True)
        g_v1 = g(v1)
        u2 = torch.add(v2, g_v1.detach(), alpha=-s).requires_grad_(True)
        f_u2 = f(u2)
    u1 = torch.add(v1.detach(), f_u2.detach(), alpha=-s)
    # Through v2 = u2 + s·g(v1): the total gradient of v1 picks up g's vector-Jacobian product.
    dv1_from_g, *g_grads = torch.autograd.grad(g_v1, [v1, *g_params], dv2)
    dv1 = torch.add(dv1, dv1_from_g, alpha=s)
    # Through v1 = u1 + s·f(u2).
    du2_from_f, *f_grads = torch.autograd.grad(f_u2, [u2, *f_params], dv1)
    du2 = torch.add(dv2, du2_from_f, alpha=s)
    if s < 0:
        f_grads, g_grads = [-gr for gr in f_grads], [-gr for gr in g_grads]
    return (u1, u2.detach()), (dv1, du2), _align(f, f_grads), _align(g, g_grads)


def _align(module: nn.Module, grads: Sequence[torch.Tensor]) -> list[torch.Tensor | None]:
    """Spread gradients of a module's trainable parameters over all of them (None if frozen)."""
    it = iter(grads)
    return [next(it) if p.requires_grad else None for p in module.parameters()]


class _MemorySavingStack(torch.autograd.Function):
    """Runs coupling blocks keeping only the final output; backward recomputes inputs by inversion.

    Inputs to ``apply``: (x, blocks, inverse, *params) — the parameters are passed explicitly so
    that autograd routes their gradients through this function.
    """

    @staticmethod
    def forward(ctx, x, blocks, inverse, *params):  # type: ignore[override]
        ctx.blocks = blocks
        ctx.inverse = inverse
        # Backward re-runs the NNs under the forward's autocast (bf16 training), so that the
        # recomputed activations are the forward's own and the inversion stays exact.
        device = x.device.type
        ctx.autocast = (device, torch.get_autocast_dtype(device), torch.is_autocast_enabled(device))
        out = _couple_blocks(blocks, x, inverse)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (out,) = ctx.saved_tensors
        blocks: Sequence[AdditiveCoupling] = ctx.blocks
        inverse: bool = ctx.inverse
        v, grad = _halves(out, inverse), _halves(grad_out, inverse)
        param_grads: dict[int, list[torch.Tensor | None]] = {}
        device, dtype, enabled = ctx.autocast
        for block in blocks if inverse else list(reversed(blocks)):
            f, g, s = block.steps(inverse)
            with torch.autocast(device, dtype=dtype, enabled=enabled):
                v, grad, f_grads, g_grads = _coupling_step_backward(v, grad, f, g, s)
            # Back to the block's parameter order, (nn1, nn2); the inverse step has f = nn2.
            param_grads[id(block)] = g_grads + f_grads if inverse else f_grads + g_grads
        flat = [gr for block in blocks for gr in param_grads[id(block)]]
        grad_in = _whole(grad, inverse) if ctx.needs_input_grad[0] else None
        return (grad_in, None, None, *flat)


class ReversibleCore(nn.Module):
    """C: a stack of :class:`AdditiveCoupling` blocks with forward C and inverse C⁻¹.

    Args:
        blocks: the coupling blocks, applied in order by :meth:`forward` and in reverse order by
            :meth:`inverse`. An empty list is the identity (the paper's depth-0 baseline).
        memory_saving: keep only the output for backward and recompute block inputs by inversion
            (activation memory constant in depth). ``False`` is plain autograd, the naive baseline.

    Shapes: (B, C, *spatial) → (B, C, *spatial), C even.
    """

    def __init__(self, blocks: Sequence[AdditiveCoupling], memory_saving: bool = True) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = memory_saving

    def _run(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        blocks = list(self.blocks)
        params = [p for block in blocks for p in block.parameters()]
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in params)
        )
        if needs_graph and torch.is_autocast_enabled(x.device.type):
            # bf16 training: the coupling sums stay float32 (only the NNs run in bf16), so that
            # the memory-saving backward's inversion is exact up to float32 rounding.
            x = x.float()
        if self.memory_saving and needs_graph and blocks:
            return _MemorySavingStack.apply(x, blocks, inverse, *params)
        return _couple_blocks(blocks, x, inverse)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """C(x)."""
        return self._run(x, inverse=False)

    def halves(self, x: torch.Tensor, inverse: bool) -> Halves:
        """C(x) (or C⁻¹(x)) as its two channel halves in channel order, not concatenated, for
        inference only (no autograd): a consumer that is linear in the channels (a 1³ decoder)
        reads them as they are, sparing a full-size copy. In valid-convolution inference the
        halves may differ in size (the one computed first is larger on inner sides)."""
        if torch.is_grad_enabled():
            raise RuntimeError("ReversibleCore.halves is for inference (no autograd)")
        a, b = _apply_steps(list(self.blocks), _halves(x, inverse), inverse)
        return (b, a) if inverse else (a, b)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """C⁻¹(y)."""
        return self._run(y, inverse=True)


def norm_layer(norm: str, spatial_dims: int, channels: int) -> list[nn.Module]:
    """The normalisation after a conv: ``"instance"`` (the paper; no affine parameters or running
    statistics, so train and eval mode compute the same function and recomputation in backward is
    exact) or ``"none"`` (no layer)."""
    if norm == "instance":
        return [
            Norm[Norm.INSTANCE, spatial_dims](channels, affine=False, track_running_stats=False)
        ]
    if norm == "none":
        return []
    raise ValueError(f"unknown norm {norm!r}; choose instance or none")


def coupling_nn(
    spatial_dims: int, channels: int, padding_mode: str, norm: str = "instance"
) -> nn.Sequential:
    """One NN function of a coupling block (supplement §1.1): conv, norm, ReLU, conv.

    Kernel 3 with padding 1 (``padding_mode`` "replicate" or "reflect") so shapes are kept; the
    norm is :func:`norm_layer`'s. The last conv starts at zero, so a fresh block is the identity.
    Shape: (B, channels, *spatial) → same.
    """
    conv_type = Conv[Conv.CONV, spatial_dims]
    last = conv_type(channels, channels, 3, padding=1, padding_mode=padding_mode)
    nn.init.zeros_(last.weight)
    nn.init.zeros_(last.bias)
    block = nn.Sequential(
        conv_type(channels, channels, 3, padding=1, padding_mode=padding_mode),
        *norm_layer(norm, spatial_dims, channels),
        nn.ReLU(),
        last,
    )
    block.register_forward_pre_hook(_autocast_input)
    return block


def _autocast_input(module: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
    """Under autocast (bf16 training), cast an NN's float32 input (the coupling stream) to the
    autocast type before the first conv pads it, instead of after: the same values, but the
    padding copies half the bytes (channels-last float32 replicate padding is ~9x slower than
    bfloat16's on CPU). The coupling sums stay float32, so the inversion stays exact."""
    device = args[0].device.type
    if not torch.is_autocast_enabled(device):
        return args
    return (args[0].to(torch.get_autocast_dtype(device)),)


def make_core(
    spatial_dims: int,
    channels: int,
    depth: int,
    padding_mode: str,
    memory_saving: bool = True,
    norm: str = "instance",
) -> ReversibleCore:
    """A :class:`ReversibleCore` of ``depth`` blocks on ``channels`` channels (halves of C/2)."""
    half = channels // 2
    blocks = [
        AdditiveCoupling(
            coupling_nn(spatial_dims, half, padding_mode, norm),
            coupling_nn(spatial_dims, half, padding_mode, norm),
        )
        for _ in range(depth)
    ]
    return ReversibleCore(blocks, memory_saving=memory_saving)
