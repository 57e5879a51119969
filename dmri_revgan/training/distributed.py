"""Distributed training helpers: rank and world size, joining torchrun's process group, and
averaging gradients over ranks after each backward pass (only rank 0 writes files)."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def init_distributed(device: str) -> bool:
    """Join the process group when run by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU.
    True if this call joined it."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return True
    return False


@contextmanager
def distributed_session(device: str) -> Iterator[None]:
    """Run the body in torchrun's process group and leave it together: every rank waits at a
    barrier before the group is destroyed, so no rank closes its connections while a peer still
    holds them (a gloo peer that sees them close mid-teardown aborts). On an exception the
    group is left as is: torchrun stops the other ranks."""
    joined = init_distributed(device)
    yield
    if joined:
        dist.barrier()
        dist.destroy_process_group()


def average_gradients(params: Sequence[nn.Parameter]) -> None:
    """All-reduce the gradients of ``params`` (one flat buffer) and divide by the world size."""
    grads = [p.grad for p in params if p.grad is not None]
    if world() == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def broadcast_parameters(modules: Sequence[nn.Module]) -> None:
    """Give every rank rank 0's initial weights (a no-op outside torchrun)."""
    if dist.is_initialized():
        for module in modules:
            for p in module.parameters():
                dist.broadcast(p.data, src=0)


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every rank (itself outside torchrun), e.g. the memory plan, so that
    all ranks step with the same batch and backward."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
