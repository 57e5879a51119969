"""How much memory a training step needs, and the plan that fits it in a budget (``--max-memory``).

The reversible core can keep its activations (plain autograd: fast, memory grows with depth) or
recompute them from the outputs in backward (the paper's memory-saving backward: 1.25–1.5× the
step time, memory flat in depth). Which one a run needs depends on the machine, so the trainer
decides from numbers instead of a fixed setting:

- the bytes autograd saves for backward are *measured* by running the configured objective once
  at batch 1 on the configured patch with a saved-tensor hook (exact for any architecture:
  encoders, core, decoders, both directions, GAN terms);
- a step's peak is those bytes times ``batch`` plus a working set of ``_WORKING_MAPS`` full-width
  maps (the backward's transient gradients, recomputed block activations and oneDNN buffers),
  calibrated by measuring the peak RSS of real steps in fresh processes (``bench train``).

The plan keeps the configured batch when it fits, prefers plain autograd when that fits, turns
the memory-saving backward on when only that fits, and lowers the batch only when neither does.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from dmri_revgan.config import Config
from dmri_revgan.losses import objective

GIB = 2**30

# A step's peak above the resting process, beyond the saved tensors: ``_WORKING_MAPS`` full-width
# (B, K, *patch) float32 maps (gradients, recomputed blocks, oneDNN buffers, heap fragmentation)
# plus a fixed ``_STEP_OVERHEAD`` (oneDNN primitives and scratch). Fitted from above to the peak
# RSS of real steps in fresh processes (AMD EPYC, float32 and bf16, depth 4/8, width 64/96,
# batch 2/8; measured 256-1785 MiB, predicted 7-40 % more; docs/benchmarks/training_speed.md).
_WORKING_MAPS = 28.0
_STEP_OVERHEAD = 128 * 2**20


@dataclass(frozen=True)
class MemoryPlan:
    """What one training step will use and how it runs: ``batch_size`` patches per step,
    ``memory_saving`` backward on or off, ``step_bytes`` predicted above the process's current
    use, within ``budget_bytes``."""

    batch_size: int
    memory_saving: bool
    step_bytes: int
    budget_bytes: int
    reason: str

    def line(self) -> str:
        """The one line ``train`` prints and the run folder records."""
        mode = "on" if self.memory_saving else "off"
        return (
            f"memory plan: batch {self.batch_size}, memory-saving backward {mode} "
            f"(step ≈ {self.step_bytes / GIB:.2f} GiB of {self.budget_bytes / GIB:.2f} GiB "
            f"available; {self.reason})"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "batch_size": self.batch_size,
            "memory_saving": self.memory_saving,
            "step_bytes": self.step_bytes,
            "budget_bytes": self.budget_bytes,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, values: dict[str, object]) -> MemoryPlan:
        """The plan a run folder or resume state recorded."""
        return cls(**values)  # type: ignore[arg-type]


def rss_bytes() -> int:
    """Current resident set size of this process (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


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


def available_bytes(device: str = "cpu") -> int:
    """Memory a run may use now: the GPU's free memory, or the machine's ``MemAvailable``
    capped by the container's limit (cgroup v2 ``memory.max`` / v1 ``limit_in_bytes``: Docker,
    Slurm), so that a plan never counts on memory the job may not take."""
    if torch.device(device).type == "cuda":
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
    except OSError:
        pass
    return min(free, _cgroup_room())


def _cgroup_room() -> int:
    """Bytes the container's memory limit leaves this job (a very large number without one)."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(int(limit) - usage, 0)
    return 2**62


def saved_bytes_per_patch(cfg: Config, memory_saving: bool) -> int:
    """Bytes autograd keeps for backward per training patch: the configured objective run once
    at batch 1 on a (C, *patch) random pair under a saved-tensor hook (parameters excluded), in
    the configured precision."""
    from dmri_revgan.model import build_discriminators, build_generator

    with torch.random.fork_rng(devices=[]):  # the run's own seeding stays untouched
        torch.manual_seed(0)
        gen = build_generator(cfg)
        discs = build_discriminators(cfg) or (None, None)
        shape = (1, cfg.model.in_channels, *([cfg.data.patch_size] * cfg.model.spatial_dims))
        x, y = torch.randn(shape), torch.randn(shape)
    gen.core.memory_saving = memory_saving
    mask = torch.ones((1, 1, *shape[2:]))
    params = [p for m in (gen, *discs) if m is not None for p in m.parameters()]
    bf16 = cfg.optim.precision == "bf16"  # saved activations are then mostly half as large
    with (
        SavedTensorMeter(exclude=params).measure() as meter,
        torch.autocast("cpu", torch.bfloat16, enabled=bf16),
    ):
        objective(cfg.loss)(gen, *discs, x, y, cfg.loss, mask)
    return meter.bytes


def step_bytes(cfg: Config, batch: int, memory_saving: bool) -> int:
    """Predicted peak bytes of one training step above the process's resting use."""
    voxels = cfg.data.patch_size**cfg.model.spatial_dims
    core_width = cfg.model.width * (4 if cfg.model.kind == "resnet" else 1)
    working = _WORKING_MAPS * 4 * core_width * voxels
    return int(batch * (saved_bytes_per_patch(cfg, memory_saving) + working) + _STEP_OVERHEAD)


def plan_memory(cfg: Config, budget_bytes: int) -> MemoryPlan:
    """The fastest way to run ``cfg``'s steps within ``budget_bytes`` (see the module notes);
    a ValueError when not even one patch fits with the memory-saving backward."""
    batch = cfg.optim.batch_size
    for ms, reason in ((False, "fits without recomputation"), (True, "fits only with it")):
        need = step_bytes(cfg, batch, ms)
        if need <= budget_bytes:
            return MemoryPlan(batch, ms, need, budget_bytes, reason)
    one, more = step_bytes(cfg, 1, True), step_bytes(cfg, 2, True)
    if one > budget_bytes:
        raise ValueError(
            f"max memory: one {cfg.data.patch_size}-voxel patch needs {one / GIB:.2f} GiB even "
            f"with the memory-saving backward, {budget_bytes / GIB:.2f} GiB are available"
        )
    fitting = 1 + (budget_bytes - one) // (more - one)
    need = step_bytes(cfg, fitting, True)
    return MemoryPlan(fitting, True, need, budget_bytes, f"batch {batch} does not fit; lowered")


def run_plan(cfg: Config, device: str, ranks: int = 1) -> MemoryPlan | None:
    """The plan a run steps by, with ``model.memory_saving: auto`` or ``optim.max_memory_gib``
    (None otherwise). The budget is the whole training process's: what it holds now (data,
    model) is taken off ``max_memory_gib``; without it, what is free now (on a CPU shared by
    the ``ranks`` of this machine)."""
    o = cfg.optim
    if cfg.model.memory_saving != "auto" and o.max_memory_gib is None:
        return None
    cpu = torch.device(device).type == "cpu"
    if o.max_memory_gib is not None:
        budget = int(o.max_memory_gib * GIB) - (rss_bytes() if cpu else 0)
    else:
        budget = available_bytes(device) // (max(ranks, 1) if cpu else 1)
    return plan_memory(cfg, budget)


def apply_plan(plan: MemoryPlan | None, cfg: Config, gen: torch.nn.Module) -> None:
    """Step the way ``plan`` says (a fresh plan or a resumed run's recorded one; None: as
    configured): its batch size and whether the core recomputes in backward."""
    if plan is not None:
        cfg.optim.batch_size = plan.batch_size
        gen.core.memory_saving = plan.memory_saving
