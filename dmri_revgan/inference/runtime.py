"""Process switches around inference: glibc heap reuse for large maps, full-float32 cuDNN, and
the bfloat16 capability check."""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Iterator

import torch

PRECISIONS = ("float32", "bf16")

# glibc <malloc.h> parameters and their defaults.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4

_TRIM_DEFAULT, _MMAP_MAX_DEFAULT = 128 * 1024, 65536

_heap_users = 0


@contextlib.contextmanager
def reuse_freed_maps() -> Iterator[None]:
    """Keep freed activation maps in the process heap while tiles run (glibc only).

    glibc serves every block over 32 MiB (each tile map: hundreds of MB) with a fresh ``mmap``
    and unmaps it on free, so each of the ~30 maps per tile is page-faulted and zeroed by the
    kernel again (HCP size on a 2-core Xeon, fresh processes: 18.8 s without, 15.9 s with). Inside
    this context large blocks come from the heap and freed ones stay there for the next map
    (``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` 2 GiB); on leaving, glibc's defaults are restored and
    the heap is trimmed, so the memory goes back to the system. Peak RSS rises by the heap's
    fragmentation (HCP size: 2.37 → 2.92 GiB). A block allocated inside that outlives the context
    keeps the freed space below it in the heap: later large blocks reuse that space and stay
    resident when freed, until the next trim (reused, never grown). Re-entrant; a no-op on other
    C libraries.
    """
    global _heap_users
    libc = _glibc()
    if libc is None:
        yield
        return
    if _heap_users == 0:
        libc.mallopt(_M_MMAP_MAX, 0)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    _heap_users += 1
    try:
        yield
    finally:
        _heap_users -= 1
        if _heap_users == 0:
            libc.mallopt(_M_MMAP_MAX, _MMAP_MAX_DEFAULT)
            libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_DEFAULT)
            libc.malloc_trim(0)


@contextlib.contextmanager
def ieee_float32(device: str | torch.device) -> Iterator[None]:
    """cuDNN convolutions in full float32 inside, not TF32 (PyTorch's default for convs on
    Ampere and later, ~1e-3 relative error): "float32" then means the CPU's answer up to float
    rounding, the same for any tiling. ``--precision bf16`` is the fast GPU choice."""
    if torch.device(device).type != "cuda":
        yield
        return
    conv = getattr(torch.backends.cudnn, "conv", None)  # PyTorch ≥ 2.9; before: allow_tf32
    owner, name, value = (
        (conv, "fp32_precision", "ieee")
        if conv is not None
        else (torch.backends.cudnn, "allow_tf32", False)
    )
    before = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, before)


def _glibc() -> ctypes.CDLL | None:
    """The process's C library if it is glibc (``mallopt``/``malloc_trim``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it
        libc.mallopt, libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def check_precision(precision: str, device: str | torch.device = "cpu") -> None:
    """Refuse bf16 where ``device`` would emulate it slowly: CPUs without AVX-512 BF16 / AMX,
    GPUs older than Ampere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "bf16":
        return
    if torch.device(device).type == "cuda":
        if not torch.cuda.is_bf16_supported(including_emulation=False):
            raise ValueError("--precision bf16: this GPU has no native bfloat16 — use float32")
    elif not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        raise ValueError(
            "--precision bf16: this CPU has no native bfloat16 convolutions (AVX-512 BF16 / "
            "AMX); it would be emulated slowly — use float32"
        )
