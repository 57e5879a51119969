"""Shared test helpers: deterministic seeds and small random-weight models."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def randomise(module: nn.Module, std: float = 0.05) -> nn.Module:
    """Give every parameter random non-zero values (fresh coupling blocks are the identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)
    return module
