"""Memory and speed measurement helpers for the benchmarks (and the memory tests)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch


class SavedTensorMeter:
    """Bytes of distinct tensor storages that autograd saves for backward (activation memory).

    Storages in ``exclude`` (typically the model's parameters, counted as parameter memory) are
    skipped; a storage saved several times (e.g. by a conv and by the op after it) counts once.
    """

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: dict[int, int] = {}

    @property
    def bytes(self) -> int:
        """Total bytes saved so far."""
        return sum(self._seen.values())

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._excluded:
            self._seen[ptr] = storage.nbytes()
        return t

    @contextmanager
    def measure(self) -> Iterator[SavedTensorMeter]:
        """Count what is saved for backward inside the ``with`` block."""
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t):
            yield self
