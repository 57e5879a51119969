"""Self-adaptation to the input (``infer --adapt MINUTES``), after SMORE (Zhao et al., IEEE TMI
2021): before super-resolving a scan, fine-tune a copy of the model on pairs made from the scan
itself, one scale down.

The pair: the input tensor (6, X, Y, Z) is the target; its block mean over r³ voxels
(``data/degrade.block_mean``, the tensor counterpart of the DWI-level simulation ``prepare``
uses: for voxels whose tensors differ little the mean of the signals fits the mean tensor) is
the LR side, with the LR mask of ``degrade_mask``; the network input is that LR side brought back
to the input grid exactly as ``infer`` brings an input to the HR grid (``network_input``).

Training as in ``train``: random 24³ corners with ≥ 1 % brain (a small input is zero-padded),
tensor-consistent flips and permutations, the config's masked pixel loss, Adam at a small rate.
One volume is easy to overfit, so the input's last quarter along its longest axis is held back:
every ``check_every`` steps the masked L1 error there decides which weights are kept, and the
unadapted model is the first candidate — adaptation never returns weights that do worse on the
held-back part than the model it started from. Deterministic for a seed; the model file is
never touched (the copy lives in memory only).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dmri_revgan.inference.inputs import TensorInput, network_input, reorientation
from dmri_revgan.model import LoadedModel

DEFAULT_LR = 1e-4


@dataclass
class Adaptation:
    """What ``--adapt`` did (recorded in the output's sidecar): held-back masked L1 error
    (normalised units) before and after, steps run and the step whose weights were kept
    (0: the model as shipped)."""

    minutes: float
    seconds: float
    steps: int
    kept_step: int
    heldout_before: float
    heldout_after: float
    lr: float
    seed: int
    degradation: str = "tensor block mean over r³ voxels (data/degrade.block_mean)"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def self_pair(model: LoadedModel, data: TensorInput) -> dict[str, np.ndarray]:
    """The input as a training pair one scale down, in the model's voxel orientation, normalised:
    {"input", "target": (6, X', Y', Z'), "mask": (1, X', Y', Z')} (X' = X cropped to r·⌊X/r⌋)."""
    from dmri_revgan.data.degrade import block_mean, crop_to_multiple, degrade_mask
    from dmri_revgan.dti import flip_permute, turn_grid

    r = model.cfg.data.factor
    perm, flips = reorientation(data.image.affine, model.orientation)
    target = flip_permute(np.moveaxis(data.tensor, -1, 0), perm, flips)
    mask = turn_grid(data.mask[None], perm, flips)[0]
    target = np.moveaxis(crop_to_multiple(np.moveaxis(target, 0, -1), r), -1, 0)
    mask = crop_to_multiple(mask, r).astype(bool)
    lr = np.moveaxis(block_mean(np.moveaxis(target, 0, -1), r), -1, 0)
    lr_mask = degrade_mask(mask, r)
    if not lr_mask.any():
        raise ValueError("--adapt: the input's brain is too small to make a pair one scale down")
    x = network_input(model, lr, lr_mask)
    mean, std = model.mean[:, None, None, None], model.std[:, None, None, None]
    return {
        "input": ((x - mean) / std).astype(np.float32),
        "target": ((target - mean) / std).astype(np.float32),
        "mask": mask[None].astype(np.float32),
    }


def _split(pair: dict[str, np.ndarray], held: float) -> tuple[dict, tuple[slice, ...]]:
    """The part patches are drawn from, and the held-back slab (last ``held`` of the longest
    axis) as a window of the whole volume."""
    shape = pair["mask"].shape[1:]
    axis = int(np.argmax(shape))
    cut = shape[axis] - max(1, round(held * shape[axis]))
    train = tuple(slice(0, cut) if a == axis else slice(None) for a in range(3))
    heldout = tuple(slice(cut, None) if a == axis else slice(None) for a in range(3))
    return {k: v[(slice(None), *train)] for k, v in pair.items()}, heldout


def _heldout_error(gen: torch.nn.Module, pair: dict[str, torch.Tensor], window) -> float:
    """Masked mean absolute error of F on the held-back slab (the whole volume is the context)."""
    gen.eval()
    with torch.no_grad():
        out = gen(pair["input"])
    gen.train()
    sl = (slice(None), slice(None), *window)
    mask = pair["mask"][sl]
    err = (out[sl] - pair["target"][sl]).abs() * mask
    return float(err.sum() / (mask.sum() * out.shape[1]).clamp_min(1.0))


def adapt_model(
    model: LoadedModel,
    data: TensorInput,
    minutes: float,
    seed: int = 0,
    lr: float = DEFAULT_LR,
    held: float = 0.25,
    check_every: int = 5,
    device: str = "cpu",
    max_steps: int | None = None,
) -> tuple[LoadedModel, Adaptation]:
    """A copy of ``model`` fine-tuned for ``minutes`` of wall clock on ``data``'s own pair (see
    the module notes), and what happened. ``model`` itself is not changed. ``max_steps``: stop
    after that many steps instead (``minutes`` still caps it): the same steps and seed give the
    same weights on any machine, which a wall-clock budget alone cannot promise."""
    from dmri_revgan.data.patches import Normalisation, PatchDataset
    from dmri_revgan.losses import objective
    from dmri_revgan.training.batches import epoch_batches

    started = time.perf_counter()
    cfg = copy.deepcopy(model.cfg)
    cfg.loss.mask, cfg.loss.use_gan, cfg.loss.reverse_weight = True, False, 0.0
    cfg.data.sampler, cfg.data.augment, cfg.seed = "corner", True, seed
    pair = self_pair(model, data)
    part, window = _split(pair, held)
    patches = PatchDataset(
        [part],
        cfg.data.patch_size,
        "corner",
        None,
        cfg.data.min_brain_fraction,
        64,
        seed,
        augment=True,
        normalisation=Normalisation(model.mean, model.std),
    )
    torch.manual_seed(seed)
    gen = copy.deepcopy(model.gen).to(device)
    gen.core.memory_saving = False  # one volume's batches fit anywhere inference fits
    whole = {k: torch.from_numpy(v)[None].to(device) for k, v in pair.items()}
    best_state = copy.deepcopy(gen.state_dict())
    before = best = _heldout_error(gen, whole, window)
    opt = torch.optim.Adam(gen.xy_parameters(), lr=lr, betas=(0.9, 0.999))
    step_fn, kept, steps, epoch = objective(cfg.loss), 0, 0, 0
    budget = 60.0 * minutes
    layout = torch.channels_last_3d

    def done() -> bool:
        return time.perf_counter() - started >= budget or (
            max_steps is not None and steps >= max_steps
        )

    while not done() and len(patches):
        patches.set_epoch(epoch)
        for x, y, mask in epoch_batches(patches, cfg, epoch, device, layout):
            opt.zero_grad(set_to_none=True)
            step_fn(gen, None, None, x, y, cfg.loss, mask).loss.backward()
            opt.step()
            steps += 1
            if steps % check_every == 0:
                error = _heldout_error(gen, whole, window)
                if error < best:
                    best, kept, best_state = error, steps, copy.deepcopy(gen.state_dict())
            if done():
                break
        epoch += 1
    gen.load_state_dict(best_state)
    gen.eval()
    adapted = dataclasses.replace(model, gen=gen)
    seconds = time.perf_counter() - started
    return adapted, Adaptation(minutes, seconds, steps, kept, before, best, lr, seed)
