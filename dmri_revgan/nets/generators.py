"""RevGenerator: F = Dec_Y ∘ C ∘ Enc_X and its weight-tied reverse G = Dec_X ∘ C⁻¹ ∘ Enc_Y.

Two kinds of encoder/decoder, one code path chosen by ``kind`` and ``spatial_dims``:

- ``"srcnn"`` (the paper's 3D super-resolution model): Enc = 3³ conv in→K + norm + ReLU,
  Dec = 1³ conv K→out; the core runs at K channels. Depth 0 is the plain 3D-SRCNN baseline.
- ``"resnet"`` (the 2D image-to-image model, supplement §1.1): Enc = 7×7 conv in→K, then two
  stride-2 3×3 convs doubling the channels (the core runs at 4K); Dec = two stride-2 transposed
  convs halving them, then a 7×7 conv to the output and Tanh. Norm + ReLU after every conv
  but the last; reflection padding.

``norm`` is the paper's ``"instance"`` (statistics of whatever window the network sees) or
``"none"`` (a deviation: the network is then a fixed function of its input, so full-volume
inference gives one answer whatever the tiling; see :mod:`dmri_revgan.inference`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.networks.layers.factories import Conv
from torch import nn

from dmri_revgan.nets.reversible import (
    center_crop_like,
    edge_padding,
    into_edge_padded,
    make_core,
    norm_layer,
)

KINDS = ("srcnn", "resnet")
NORMS = ("instance", "none")


@dataclass(frozen=True)
class _Layer:
    """One conv of an encoder/decoder: channel multipliers of the width, kernel, stride, kind."""

    in_mult: int  # in channels = in_mult · width (0: the image's own channels)
    out_mult: int  # out channels = out_mult · width (0: the image's own channels)
    kernel: int
    stride: int = 1
    transpose: bool = False


# The encoders; each decoder mirrors its encoder (see _decoder_layers).
_ENCODERS: dict[str, tuple[_Layer, ...]] = {
    "srcnn": (_Layer(0, 1, 3),),
    "resnet": (_Layer(0, 1, 7), _Layer(1, 2, 3, 2), _Layer(2, 4, 3, 2)),
}
_DECODERS: dict[str, tuple[_Layer, ...]] = {
    "srcnn": (_Layer(1, 0, 1),),
    "resnet": (_Layer(4, 2, 3, 2, True), _Layer(2, 1, 3, 2, True), _Layer(1, 0, 7)),
}
_PADDING = {"srcnn": "replicate", "resnet": "reflect"}


def _stage(
    spatial_dims: int,
    layers: tuple[_Layer, ...],
    image_channels: int,
    width: int,
    padding_mode: str,
    final_activation: nn.Module | None,
    normalise_last: bool,
    norm: str,
) -> nn.Sequential:
    """Build an encoder or decoder from its layer list.

    Stride-1 convs keep the shape with ``padding_mode`` padding; stride-2 convs use zero padding 1
    (transposed ones output_padding 1) so they halve or double each spatial size exactly.
    """
    modules: list[nn.Module] = []
    for i, layer in enumerate(layers):
        c_in = layer.in_mult * width or image_channels
        c_out = layer.out_mult * width or image_channels
        if layer.transpose:
            conv = Conv[Conv.CONVTRANS, spatial_dims](
                c_in, c_out, layer.kernel, stride=2, padding=1, output_padding=1
            )
        elif layer.stride > 1:
            conv = Conv[Conv.CONV, spatial_dims](
                c_in, c_out, layer.kernel, stride=layer.stride, padding=1
            )
        else:
            conv = Conv[Conv.CONV, spatial_dims](
                c_in, c_out, layer.kernel, padding=layer.kernel // 2, padding_mode=padding_mode
            )
        modules.append(conv)
        if normalise_last or i < len(layers) - 1:
            modules += [*norm_layer(norm, spatial_dims, c_out), nn.ReLU()]
    if final_activation is not None:
        modules.append(final_activation)
    return nn.Sequential(*modules)


class _ReluEdgePadded(nn.Module):
    """ReLU of tiled inference, written straight into the next conv's edge-padded input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = edge_padding()
        if pads is None:
            return x.relu_()
        return into_edge_padded(x, pads, lambda out: torch.clamp(x, min=0, out=out))


class _Pointwise(nn.Module):
    """A 1³ (1²) conv computed as ``F.linear`` over the channel axis: on a channels-last map this
    is one GEMM on a zero-copy view (PyTorch's conv would take its slow im2col path here)."""

    def __init__(self, conv: nn.Module) -> None:
        super().__init__()
        self.weight = nn.Parameter(conv.weight.detach().flatten(1), requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), False)
        self.kernel_size, self.in_channels = conv.kernel_size, conv.in_channels
        self.out_channels = conv.out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = x.movedim(1, -1)
        return torch.nn.functional.linear(last, self.weight, self.bias).movedim(-1, 1)

    def of_halves(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """The conv of the two halves' concatenation along channels, without building it:
        W·[a; b] = W_a·a + W_b·b, each product on its half's own (uncropped, so zero-copy) map;
        the larger result is cut to the smaller's voxels (``center_crop_like``)."""
        n = first.shape[1]
        ya = torch.nn.functional.linear(first.movedim(1, -1), self.weight[:, :n])
        yb = torch.nn.functional.linear(second.movedim(1, -1), self.weight[:, n:], self.bias)
        ya, yb = ya.movedim(-1, 1), yb.movedim(-1, 1)
        return center_crop_like(ya, yb).add_(center_crop_like(yb, ya))


def _pad_volume_edges(conv: nn.Module, args: tuple[torch.Tensor]) -> tuple[torch.Tensor]:
    """Before a valid conv of a tile: pad the tile's sides that lie on the volume's edge the way
    the trained conv pads (replicate), leaving inner sides to shrink (see ``tile_sides``)."""
    edges = edge_padding()  # voxels per side for a 3-wide kernel: 0 inside, 1 on the edge
    if edges is None:
        return args
    ready = getattr(args[0], "edge_padded", None)
    if ready is not None and conv.edge_pad == 1:  # written into its padded buffer already
        return (ready,)
    pad = [n * conv.edge_pad for lo, hi in reversed(edges) for n in (lo, hi)]  # last axis first
    return (torch.nn.functional.pad(args[0], pad, mode=conv.edge_mode),)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """Initialise conv weights N(0, std) and biases 0 (pix2pix / RevGAN), keeping zero-init convs.

    Convs whose weights are all zero (the last conv of each coupling NN) stay at zero so that a
    fresh reversible block is the identity.
    """
    for m in module.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and bool(m.weight.detach().any()):
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class RevGenerator(nn.Module):
    """Paired generators F: X → Y and G: Y → X sharing one reversible core.

    Args:
        spatial_dims: 2 (images) or 3 (volumes).
        in_channels: channels of domain X (6 for diffusion tensors, 3 for RGB).
        out_channels: channels of domain Y.
        width: K, the encoder's output width (the core runs at K for "srcnn", 4K for "resnet").
        depth: number of reversible blocks in the core (0: no core, the SRCNN baseline).
        kind: "srcnn" or "resnet" encoders/decoders (see the module docstring).
        memory_saving: recompute core activations in backward instead of storing them.
        init_std: standard deviation of the N(0, σ) weight initialisation.
        residual: add the input to the output (F(x) = x + Dec_Y(C(Enc_X(x))), likewise G), so the
            network learns a correction. Needed for tensors: the encoder's InstanceNorm makes
            Enc_X blind to a patch's overall diffusivity scale, which the skip carries instead.
            Requires in_channels == out_channels; off for the paper-exact model.
        norm: "instance" (the paper) or "none" (tiling-exact inference; see the module docstring).

    Shapes: ``forward`` (B, in_channels, *S) → (B, out_channels, *S); ``reverse`` the other way.
    For "resnet", each spatial size must be divisible by 4.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        width: int,
        depth: int,
        kind: str = "srcnn",
        memory_saving: bool = True,
        init_std: float = 0.02,
        residual: bool = False,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; choose one of {NORMS}")
        if residual and in_channels != out_channels:
            raise ValueError("a residual generator needs in_channels == out_channels")
        if kind not in KINDS:
            raise ValueError(f"unknown generator kind {kind!r}; choose one of {KINDS}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        self.spatial_dims, self.kind, self.residual, self.norm = spatial_dims, kind, residual, norm
        pad = _PADDING[kind]
        core_channels = width * _ENCODERS[kind][-1].out_mult
        is_resnet = kind == "resnet"

        def encoder(channels: int) -> nn.Sequential:
            return _stage(spatial_dims, _ENCODERS[kind], channels, width, pad, None, True, norm)

        def decoder(channels: int) -> nn.Sequential:
            tanh = nn.Tanh() if is_resnet else None
            return _stage(spatial_dims, _DECODERS[kind], channels, width, pad, tanh, False, norm)

        self.enc_x, self.dec_y = encoder(in_channels), decoder(out_channels)
        self.enc_y, self.dec_x = encoder(out_channels), decoder(in_channels)
        self.core = make_core(spatial_dims, core_channels, depth, pad, memory_saving, norm)
        init_weights(self, init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """F(x) = Dec_Y(C(Enc_X(x))) (+ x when residual): X → Y."""
        return self._translate(x, self.enc_x, self.dec_y, inverse=False)

    def reverse(self, y: torch.Tensor) -> torch.Tensor:
        """G(y) = Dec_X(C⁻¹(Enc_Y(y))) (+ y when residual): Y → X, core weights tied to F's."""
        return self._translate(y, self.enc_y, self.dec_x, inverse=True)

    def _translate(
        self, x: torch.Tensor, enc: nn.Module, dec: nn.Sequential, inverse: bool
    ) -> torch.Tensor:
        h = enc(x)
        if isinstance(dec[0], _Pointwise) and len(dec) == 1:  # valid copy: no concatenated map
            y = dec[0].of_halves(*self.core.halves(h, inverse))
        else:
            y = dec(self.core.inverse(h) if inverse else self.core(h))
        return center_crop_like(x, y) + y if self.residual else y

    @property
    def receptive_radius(self) -> int:
        """Voxels each output depends on in every direction: Σ (kernel // 2) over F's convs.

        Only defined for stride-1 generators ("srcnn"); G has the same radius.
        """
        if self.kind != "srcnn":
            raise ValueError("the receptive radius is defined for srcnn generators only")
        convs = [
            m
            for part in (self.enc_x, self.core, self.dec_y)
            for m in part.modules()
            if isinstance(m, nn.modules.conv._ConvNd)
        ]
        return sum(m.kernel_size[0] // 2 for m in convs)

    def valid_copy(self) -> RevGenerator:
        """A copy whose convs use no padding ("valid" convolution), for tiled inference.

        Each output voxel then depends only on the input within :attr:`receptive_radius`, so a
        volume can be cut into tiles carrying that halo, with no blending: run under
        ``reversible.tile_sides``, a tile's inner sides shrink by the radius and its sides on the
        volume's edge are padded per conv exactly as the trained network pads them, so the tiles
        together equal the network's forward over the whole volume. Needs ``norm="none"``
        (InstanceNorm would still see the window) and kind "srcnn" (stride 1 everywhere).
        """
        import copy

        if self.norm != "none" or self.kind != "srcnn":
            raise ValueError(
                "valid (tiling-exact) inference needs an srcnn generator with norm none"
            )
        clone = copy.deepcopy(self)
        for parent in clone.modules():  # 1³ convs as one matrix product over channels-last maps
            for name, m in parent.named_children():
                if isinstance(m, nn.modules.conv._ConvNd) and m.kernel_size[0] == 1:
                    setattr(parent, name, _Pointwise(m))
                elif isinstance(m, nn.ReLU):
                    setattr(parent, name, _ReluEdgePadded())
        for m in clone.modules():
            if isinstance(m, nn.modules.conv._ConvNd) and m.kernel_size[0] > 1:
                m.edge_pad, m.edge_mode = m.kernel_size[0] // 2, m.padding_mode
                m.padding = (0,) * len(m.kernel_size)
                m.padding_mode = "zeros"
                m.register_forward_pre_hook(_pad_volume_edges)
        return clone

    def xy_parameters(self) -> list[nn.Parameter]:
        """The parameters used by F alone (Enc_X, core, Dec_Y), e.g. for the paper's counts."""
        return [*self.enc_x.parameters(), *self.core.parameters(), *self.dec_y.parameters()]
