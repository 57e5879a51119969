"""Self-adaptation to the input (``infer --adapt MINUTES``), after SMORE (Zhao et al., IEEE TMI
2021): before super-resolving a scan, fine-tune a copy of the model on pairs made from the scan
itself, one scale down.

The pair: the input tensor (6, X, Y, Z) is the target. The LR side is made as ``prepare`` makes
training inputs: from a DWI input, its signal averaged over r³ voxel blocks and fitted; from a
tensor input, which has no signal, the tensor's block mean (``data/degrade.block_mean``, the
closest tensor equivalent: for voxels whose tensors differ little the mean of the signals fits
the mean tensor). Its mask is ``degrade_mask``'s; the network input is that LR side brought back
to the input grid exactly as ``infer`` brings an input to the HR grid (``network_input``).

Training as in ``train``: random 24³ corners with ≥ 1 % brain (a small input is zero-padded),
tensor-consistent flips and permutations, the config's masked pixel loss, Adam at a small rate.
One volume is easy to overfit, so the input's last quarter along its longest axis is held back:
every ``check_every`` steps the masked L1 error there (predicted as ``infer`` predicts, within
its memory budget) decides which weights are kept, and the unadapted model is the first
candidate — adaptation never returns weights that do worse on the held-back part than the model
it started from. Deterministic for a seed and step count; the model file is never touched (the
copy lives in memory only). Measured in ``docs/benchmarks/sites_adapt.md``: it does not help on
the shared series, so ``infer`` runs it only when asked.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dmri_revgan.inference.inputs import ModelFrame, TensorInput, network_input
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
    degradation: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def one_scale_down(
    data: TensorInput, r: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The input cropped to whole r³ blocks and its LR side, on the input's own grid: tensor
    (X', Y', Z', 6) and mask, LR tensor (X'/r, Y'/r, Z'/r, 6) and LR mask, FSL order, mm²/s
    (:func:`degradation` says how the LR side is made)."""
    from dmri_revgan.data.degrade import block_mean, crop_to_multiple, degrade_mask
    from dmri_revgan.dti import fit_tensor

    tensor = crop_to_multiple(data.tensor, r)
    mask = crop_to_multiple(data.mask, r).astype(bool)
    lr_mask = degrade_mask(mask, r)
    if not lr_mask.any():
        raise ValueError("--adapt: the input's brain is too small to make a pair one scale down")
    acquisition = data.acquisition
    if acquisition is not None and acquisition.dwi is not None:
        signal = block_mean(crop_to_multiple(acquisition.dwi, r), r)
        lr, _, _ = fit_tensor(signal, acquisition.bvals, acquisition.bvecs, lr_mask)
    else:
        lr = block_mean(tensor, r)
    return tensor, mask, lr, lr_mask


def self_pair(model: LoadedModel, data: TensorInput) -> dict[str, np.ndarray]:
    """The input as a training pair one scale down (:func:`one_scale_down`), turned to the
    model's voxel orientation and tensor frame as ``infer`` turns an input, normalised:
    {"input", "target": (6, X', Y', Z'), "mask": (1, X', Y', Z')}."""
    tensor, mask, lr, lr_mask = one_scale_down(data, model.cfg.data.factor)
    frame = ModelFrame.of(data.image.affine, model)
    target, mask = frame.tensor_in(tensor), frame.grid_in(mask)
    x = network_input(model, frame.tensor_in(lr), frame.grid_in(lr_mask))
    mean, std = model.mean[:, None, None, None], model.std[:, None, None, None]
    return {
        "input": ((x - mean) / std).astype(np.float32),
        "target": ((target - mean) / std).astype(np.float32),
        "mask": mask[None].astype(np.float32),
    }


def degradation(data: TensorInput) -> str:
    """How :func:`self_pair` makes the input's LR side (recorded in the sidecar)."""
    if data.acquisition is not None and data.acquisition.dwi is not None:
        return "DWI signal block mean over r³ voxels, then the tensor fit (as prepare simulates)"
    return "tensor block mean over r³ voxels (the closest tensor equivalent of prepare's DWI mean)"


def _split(pair: dict[str, np.ndarray], held: float) -> tuple[dict, tuple[slice, ...]]:
    """The part patches are drawn from, and the held-back slab (last ``held`` of the longest
    axis) as a window of the whole volume."""
    shape = pair["mask"].shape[1:]
    axis = int(np.argmax(shape))
    cut = shape[axis] - max(1, round(held * shape[axis]))
    train = tuple(slice(0, cut) if a == axis else slice(None) for a in range(3))
    heldout = tuple(slice(cut, None) if a == axis else slice(None) for a in range(3))
    return {k: v[(slice(None), *train)] for k, v in pair.items()}, heldout


def _heldout_error(
    model: LoadedModel, gen: torch.nn.Module, pair: dict[str, np.ndarray], window, **options: Any
) -> float:
    """Mean absolute error (normalised units) of F on the held-back slab's brain voxels,
    predicted over the whole volume as ``infer`` predicts (tiles within its memory budget)."""
    from dmri_revgan.inference.predict import predict_volume

    mean, std = model.mean[:, None, None, None], model.std[:, None, None, None]
    held = np.zeros(pair["mask"].shape[1:], bool)
    held[window] = pair["mask"][0][window] > 0
    gen.eval()
    out = predict_volume(gen, pair["input"] * std + mean, model.mean, model.std, held, **options)
    gen.train()
    err = np.abs((out - mean) / std - pair["target"])[:, held]
    return float(err.mean()) if err.size else 0.0


def _batches(
    patches: Any, batch: int, epoch: int, seed: int, device: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, y, mask) batches of one epoch in a seeded order; the last one may be short, so a
    small input with fewer patches than a batch still trains."""
    patches.set_epoch(epoch)
    order = np.random.default_rng((seed, epoch, 2)).permutation(len(patches))
    layout = torch.channels_last_3d
    for i in range(0, len(order), batch):
        items = [patches[int(j)] for j in order[i : i + batch]]
        x, y, m = (
            torch.stack([it[k] for it in items]).to(device) for k in ("input", "target", "mask")
        )
        yield x.contiguous(memory_format=layout), y.contiguous(memory_format=layout), m


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
    **predict_options: Any,
) -> tuple[LoadedModel, Adaptation]:
    """A copy of ``model`` fine-tuned for ``minutes`` of wall clock on ``data``'s own pair (see
    the module notes), and what happened. ``model`` itself is not changed, nor the caller's
    random state. ``max_steps``: stop after that many steps instead (``minutes`` still caps it):
    the same steps and seed give the same weights on any machine, which a wall-clock budget
    alone cannot promise. ``predict_options``: :func:`predict_volume`'s (``max_memory_gib``...)
    for the held-back checks."""
    from dmri_revgan.data.patches import Normalisation, PatchDataset
    from dmri_revgan.losses import objective

    started = time.perf_counter()
    loss = copy.deepcopy(model.cfg.loss)
    loss.mask, loss.use_gan, loss.reverse_weight = True, False, 0.0
    pair = self_pair(model, data)
    part, window = _split(pair, held)
    patches = PatchDataset(
        [part],
        model.cfg.data.patch_size,
        "corner",
        None,
        model.cfg.data.min_brain_fraction,
        64,
        seed,
        augment=True,
        normalisation=Normalisation(model.mean, model.std),
    )
    options = {"device": device, **predict_options}
    batch, budget = model.cfg.optim.batch_size, 60.0 * minutes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = copy.deepcopy(model.gen).to(device)
        gen.core.memory_saving = False  # one volume's batches fit anywhere inference fits
        best_state = copy.deepcopy(gen.state_dict())
        before = best = _heldout_error(model, gen, pair, window, **options)
        opt = torch.optim.Adam(gen.xy_parameters(), lr=lr, betas=(0.9, 0.999))
        step_fn, kept, steps, epoch = objective(loss), 0, 0, 0

        def done() -> bool:
            return time.perf_counter() - started >= budget or (
                max_steps is not None and steps >= max_steps
            )

        while not done() and len(patches):
            for x, y, mask in _batches(patches, batch, epoch, seed, device):
                opt.zero_grad(set_to_none=True)
                step_fn(gen, None, None, x, y, loss, mask).loss.backward()
                opt.step()
                steps += 1
                if steps % check_every == 0:
                    error = _heldout_error(model, gen, pair, window, **options)
                    if error < best:
                        best, kept, best_state = error, steps, copy.deepcopy(gen.state_dict())
                if done():
                    break
            epoch += 1
    gen.load_state_dict(best_state)
    gen.eval()
    adapted = dataclasses.replace(model, gen=gen)
    seconds = time.perf_counter() - started
    how = degradation(data)
    return adapted, Adaptation(minutes, seconds, steps, kept, before, best, lr, seed, how)
