"""Trainer: paired / unpaired RevGAN steps, validation, checkpoints, resume, logging, DDP.

One step alternates a generator update (both directions through the shared memory-saving core)
and a discriminator update, as pix2pix / CycleGAN do. A run folder holds everything needed to
reproduce and continue the run::

    run_dir/config.yaml           resolved configuration
    run_dir/normalisation.json    per-channel mean / std (mm²/s) of the training split
    run_dir/command.txt           command line, package versions, seed, manifest checksum
    run_dir/metrics.csv           one row per epoch: losses, learning rate, patches/s, validation
    run_dir/events.*              TensorBoard scalars (when tensorboard is installed)
    run_dir/checkpoints/last.pt            resume state (weights_only-loadable), every epoch
    run_dir/checkpoints/last.safetensors   model file of the last epoch (see model.py)
    run_dir/checkpoints/best.safetensors   model file with the lowest validation interior RMSE

Distributed: started by ``torchrun``, each rank trains on its shard of the patches
(DistributedSampler) and gradients are averaged over ranks after every backward pass; only rank 0
writes files.
"""

from __future__ import annotations

import csv
import json
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from dmri_revgan import __version__
from dmri_revgan.config import Config, config_from_dict
from dmri_revgan.errors import InputError
from dmri_revgan.infer import predict_volume
from dmri_revgan.io import write_csv_atomic, write_text_atomic
from dmri_revgan.losses import discriminator_loss, objective
from dmri_revgan.metrics import region_rmse
from dmri_revgan.model import build_generator, load_resume_state, save_model, save_resume_state
from dmri_revgan.nets.discriminators import PatchDiscriminator

SCHEDULES = ("linear", "cosine")


@dataclass
class ValidationVolume:
    """A validation subject on the HR grid: (6, X, Y, Z) input, target (mm²/s); (X, Y, Z) mask."""

    subject: str
    input: np.ndarray
    target: np.ndarray
    mask: np.ndarray


def build_discriminators(cfg: Config) -> tuple[nn.Module, nn.Module] | None:
    """D_X and D_Y, conditional (input ⊕ image channels) for the paired objective; None w/o GAN."""
    m, loss = cfg.model, cfg.loss
    if not loss.use_gan:
        return None
    paired = loss.objective == "paired"
    c_x = m.in_channels + (m.out_channels if paired else 0)
    c_y = m.out_channels + (m.in_channels if paired else 0)
    make = lambda c: PatchDiscriminator(  # noqa: E731
        m.spatial_dims, c, m.disc_channels, m.disc_layers, m.init_std
    )
    return make(c_x), make(c_y)


def lr_lambda(epochs_constant: int, epochs_decay: int, schedule: str = "linear"):
    """Multiplier of the learning rate at an epoch: 1 for ``epochs_constant`` epochs, then a
    decay reaching 0 after ``epochs_decay`` more, linear (pix2pix's policy) or cosine."""
    import math

    if schedule not in SCHEDULES:
        raise ValueError(f"optim.schedule {schedule!r}: choose one of {SCHEDULES}")

    def factor(epoch: int) -> float:
        t = max(0, epoch + 1 - epochs_constant) / float(epochs_decay + 1)
        return 1.0 - t if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


class ImagePool:
    """Buffer of past generated images for the unpaired discriminators (Shrivastava et al. 2017).

    Once full, each query returns, with probability ½, a stored image (replacing it by the new one)
    and otherwise the new image. Uses the torch RNG, so it is reproducible and checkpointed.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        out = []
        for image in images.detach():
            image = image[None]
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(len(self.images), ()))
                out.append(self.images[i].clone())
                self.images[i] = image.clone()
            else:
                out.append(image)
        return torch.cat(out)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def init_distributed(device: str) -> None:
    """Join the process group when run by torchrun (WORLD_SIZE > 1): gloo on CPU, NCCL on GPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")


def _average_gradients(params: Sequence[nn.Parameter]) -> None:
    """All-reduce the gradients of ``params`` (one flat buffer) and divide by the world size."""
    grads = [p.grad for p in params if p.grad is not None]
    if _world() == 1 or not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= _world()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def _rng_state() -> dict[str, Any]:
    """RNG states as tensors, strings and numbers only (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Trains a RevGAN on a patch dataset and validates on full volumes.

    Args:
        cfg: the experiment configuration.
        run_dir: the run folder (created; rank 0 writes into it).
        train_set: dataset of dicts {"input", "target"} of (C, *patch) normalised tensors.
        mean, std: per-channel normalisation statistics (C,), mm²/s.
        validation: full validation volumes (may be empty: no validation, no best.pt).
        device: "cpu" or "cuda[:n]".
        progress: show a rich progress bar (rank 0 only).
        provenance: what the model files record about the run (command, versions, data).
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: Path,
        train_set: Dataset,
        mean: np.ndarray,
        std: np.ndarray,
        validation: Sequence[ValidationVolume] = (),
        device: str = "cpu",
        progress: bool = True,
        provenance: dict[str, Any] | None = None,
    ) -> None:
        self.cfg, self.run_dir, self.train_set = cfg, Path(run_dir), train_set
        self.provenance = provenance or {}
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        self.validation, self.device, self.progress = list(validation), device, progress
        self.objective = objective(cfg.loss)
        torch.manual_seed(cfg.seed)
        # 3D convs run ≈ 12 % faster per step in channels-last layout on CPU (oneDNN); values and
        # state dicts are the same in either layout.
        self.layout = (
            torch.channels_last_3d if cfg.model.spatial_dims == 3 else torch.preserve_format
        )
        self.gen = build_generator(cfg).to(device, memory_format=self.layout)
        discs = build_discriminators(cfg)
        self.discs = (
            {
                k: d.to(device, memory_format=self.layout)
                for k, d in zip(("d_x", "d_y"), discs, strict=True)
            }
            if discs
            else {}
        )
        o = cfg.optim
        betas = (o.beta1, o.beta2)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=o.lr, betas=betas)
        d_params = [p for d in self.discs.values() for p in d.parameters()]
        self.opt_d = torch.optim.Adam(d_params, lr=o.lr, betas=betas) if d_params else None
        schedule = lr_lambda(o.epochs_constant, o.epochs_decay, o.schedule)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, schedule)
        self.sched_d = (
            torch.optim.lr_scheduler.LambdaLR(self.opt_d, schedule) if self.opt_d else None
        )
        unpaired = cfg.loss.objective == "unpaired"
        self.pools = {k: ImagePool(o.pool_size if unpaired else 0) for k in self.discs}
        self.epoch = 0  # next epoch to run
        self.best = float("inf")
        self.train_seconds = 0.0  # wall time spent in finished epochs (optim.max_minutes)
        self.last_epoch_seconds = 0.0
        for module in (self.gen, *self.discs.values()):
            for p in module.parameters():
                if dist.is_initialized():
                    dist.broadcast(p.data, src=0)

    @property
    def epochs(self) -> int:
        return self.cfg.optim.epochs_constant + self.cfg.optim.epochs_decay

    # ---------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "version": __version__,
            "epoch": self.epoch,
            "config": self.cfg.to_dict(),
            "normalisation": {"mean": self.mean.tolist(), "std": self.std.tolist()},
            "generator": self.gen.state_dict(),
            "discriminators": {k: d.state_dict() for k, d in self.discs.items()},
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict() if self.opt_d else None,
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict() if self.sched_d else None,
            "pools": {k: pool.images for k, pool in self.pools.items()},
            "best": self.best,
            "train_seconds": self.train_seconds,
            "last_epoch_seconds": self.last_epoch_seconds,
            "rng": _rng_state(),
            "provenance": self.provenance,
        }

    def load_state(self, ckpt: dict[str, Any], source: Path) -> None:
        """Continue from a checkpoint of the same architecture."""
        saved = config_from_dict(ckpt["config"])
        if saved.model != self.cfg.model or saved.loss != self.cfg.loss:
            raise InputError(source, "checkpoint was trained with another model or objective")
        self.gen.load_state_dict(ckpt["generator"])
        for k, d in self.discs.items():
            d.load_state_dict(ckpt["discriminators"][k])
        self.opt_g.load_state_dict(ckpt["opt_g"])
        self.sched_g.load_state_dict(ckpt["sched_g"])
        if self.opt_d and self.sched_d:
            self.opt_d.load_state_dict(ckpt["opt_d"])
            self.sched_d.load_state_dict(ckpt["sched_d"])
        for k, pool in self.pools.items():
            pool.images = [t.to(self.device) for t in ckpt["pools"][k]]
        self.mean = np.asarray(ckpt["normalisation"]["mean"], np.float32)
        self.std = np.asarray(ckpt["normalisation"]["std"], np.float32)
        self.epoch, self.best = ckpt["epoch"], ckpt["best"]
        self.train_seconds = float(ckpt.get("train_seconds", 0.0))
        self.last_epoch_seconds = float(ckpt.get("last_epoch_seconds", 0.0))
        _set_rng_state(ckpt["rng"])

    def _save(self, best: bool) -> None:
        """Model file(s) first, then the resume state: a crash between them resumes from the
        previous epoch and rewrites both. Each file is written to a temporary name and renamed."""
        if _rank() != 0:
            return
        folder = self.run_dir / "checkpoints"
        args = (self.gen, self.cfg, self.mean, self.std, self.provenance, self.epoch)
        save_model(folder / "last.safetensors", *args)
        if best:
            save_model(folder / "best.safetensors", *args)
        save_resume_state(folder / "last.pt", self.state())

    # ---------------------------------------------------------------- training
    def _loader(self, salt: int) -> DataLoader:
        """Shuffled loader whose order depends only on (seed, epoch, salt): resumable."""
        seed = self.cfg.seed * 1_000_003 + self.epoch * 7919 + salt
        if _world() > 1:
            sampler: Any = DistributedSampler(self.train_set, seed=seed, drop_last=True)
            sampler.set_epoch(self.epoch)
        else:
            sampler = RandomSampler(self.train_set, generator=torch.Generator().manual_seed(seed))
        d = self.cfg.data
        return DataLoader(
            self.train_set,
            batch_size=self.cfg.optim.batch_size,
            sampler=sampler,
            num_workers=d.num_workers,
            drop_last=True,
        )

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """(x, y, mask of y) batches; for the unpaired objective y comes from an independent
        shuffle (and the mask is None)."""
        set_epoch = getattr(self.train_set, "set_epoch", None)
        if set_epoch is not None:
            set_epoch(self.epoch)
        xs = iter(self._loader(0))
        # Paired: input and target of the same patches, so one pass over one loader (iterating a
        # loader twice would draw two different shuffles). Unpaired: an independent shuffle.
        ys = iter(self._loader(1)) if self.cfg.loss.objective == "unpaired" else None
        limit = self.cfg.data.max_steps_per_epoch
        for i, bx in enumerate(xs):
            if limit is not None and i >= limit:
                return
            by = bx if ys is None else next(ys, None)
            if by is None:
                return
            mask = bx["mask"].to(self.device) if ys is None and "mask" in bx else None
            x = bx["input"].to(self.device, memory_format=self.layout)
            yield x, by["target"].to(self.device, memory_format=self.layout), mask

    def train_step(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, float]:
        """One generator update then one discriminator update; returns the named loss terms.

        ``mask`` (B, 1, *S): the target's brain voxels, used when ``loss.mask`` is set."""
        for d in self.discs.values():
            d.requires_grad_(False)
        self.opt_g.zero_grad(set_to_none=True)
        step = self.objective(
            self.gen, self.discs.get("d_x"), self.discs.get("d_y"), x, y, self.cfg.loss, mask
        )
        step.loss.backward()
        _average_gradients(list(self.gen.parameters()))
        self.opt_g.step()
        terms = dict(step.terms)
        if self.opt_d is not None:
            for d in self.discs.values():
                d.requires_grad_(True)
            self.opt_d.zero_grad(set_to_none=True)
            for k, (real, fake) in step.fakes.items():
                fake = self.pools[k].query(fake)
                loss = discriminator_loss(self.discs[k], real, fake, self.cfg.loss.gan_mode)
                loss.backward()
                terms[f"loss_{k.upper()}"] = loss.item()
            _average_gradients([p for d in self.discs.values() for p in d.parameters()])
            self.opt_d.step()
        return terms

    def validate(self) -> dict[str, float]:
        """Mean full-volume RMSE (10⁻⁵ mm²/s) over the validation subjects, per region."""
        if not self.validation:
            return {}
        per_subject = [
            region_rmse(
                predict_volume(self.gen, v.input, self.mean, self.std, v.mask, device=self.device),
                v.target,
                v.mask,
            )
            for v in self.validation
        ]
        return {
            f"val_rmse_{k}": float(np.mean([r[k] for r in per_subject])) for k in per_subject[0]
        }

    def fit(self, epochs: int | None = None) -> list[dict[str, float]]:
        """Train until the schedule ends (or for ``epochs`` more); returns the per-epoch rows."""
        end = self.epochs if epochs is None else min(self.epochs, self.epoch + epochs)
        rows = []
        writer = _tensorboard(self.run_dir) if _rank() == 0 else None
        budget = self.cfg.optim.max_minutes
        while self.epoch < end:
            # No epoch starts that the last one's duration says would overrun the budget.
            if budget is not None and self.train_seconds + self.last_epoch_seconds > 60 * budget:
                break
            started = time.perf_counter()
            row = self._train_epoch()
            if self.validation and (self.epoch + 1) % self.cfg.validate_every == 0:
                row |= self.validate()
            self.sched_g.step()
            if self.sched_d:
                self.sched_d.step()
            improved = row.get("val_rmse_interior", float("inf")) < self.best
            if improved:
                self.best = row["val_rmse_interior"]
            self.epoch += 1
            self.last_epoch_seconds = time.perf_counter() - started
            self.train_seconds += self.last_epoch_seconds
            row["train_minutes"] = self.train_seconds / 60
            self._save(best=improved)
            self._log(row, writer)
            rows.append(row)
        if writer is not None:
            writer.close()
        return rows

    def _train_epoch(self) -> dict[str, float]:
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

        from dmri_revgan.progress import progress_bar

        self.gen.train()
        totals: dict[str, float] = {}
        n_steps, n_patches, start = 0, 0, time.perf_counter()
        limit = self.cfg.data.max_steps_per_epoch
        per_rank = len(self.train_set) // (_world() * self.cfg.optim.batch_size)
        total = min(per_rank, limit) if limit is not None else per_rank
        with progress_bar(
            TextColumn(f"epoch {self.epoch + 1}/{self.epochs}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            disable=not self.progress or _rank() != 0,
        ) as bar:
            task = bar.add_task("train", total=total, info="")
            for x, y, mask in self._batches():
                terms = self.train_step(x, y, mask)
                for k, v in terms.items():
                    totals[k] = totals.get(k, 0.0) + v
                n_steps += 1
                n_patches += x.shape[0] * _world()
                rate = n_patches / (time.perf_counter() - start)
                info = f"G {terms['loss_G']:.3f}  {rate:.1f} patches/s"
                bar.update(task, advance=1, info=info)
        seconds = time.perf_counter() - start
        row = {k: v / max(n_steps, 1) for k, v in totals.items()}
        row |= {
            "epoch": self.epoch + 1,
            "lr": self.opt_g.param_groups[0]["lr"],
            "patches": n_patches,
            "seconds": seconds,
            "patches_per_s": n_patches / seconds if seconds > 0 else 0.0,
        }
        return row

    def _log(self, row: dict[str, float], writer: Any) -> None:
        if _rank() != 0:
            return
        path = self.run_dir / "metrics.csv"
        rows: list[dict[str, Any]] = []
        if path.exists():
            with path.open(newline="") as f:
                rows = list(csv.DictReader(f))
        rows.append(row)
        write_csv_atomic(path, rows)
        if writer is not None:
            for k, v in row.items():
                if k != "epoch":
                    writer.add_scalar(k, v, int(row["epoch"]))
        if self.progress:
            print(_epoch_line(row, self.epochs), flush=True)


def _epoch_line(row: dict[str, Any], epochs: int) -> str:
    """One line per finished epoch (kept after the transient progress bar; readable in logs)."""
    parts = [f"epoch {int(row['epoch'])}/{epochs}"]
    parts += [f"{k} {row[k]:.4g}" for k in ("loss_G", "l1_F", "cycle_X") if k in row]
    parts.append(f"{row['patches_per_s']:.2f} samples/s")
    if "val_rmse_interior" in row:
        parts.append(
            f"val RMSE interior {row['val_rmse_interior']:.3f} / total "
            f"{row['val_rmse_total']:.3f} (1e-5 mm^2/s)"
        )
    return ", ".join(parts)


def _tensorboard(run_dir: Path) -> Any:
    """A TensorBoard SummaryWriter, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir))


def write_run_files(
    cfg: Config, run_dir: Path, mean: np.ndarray, std: np.ndarray, provenance: dict[str, Any]
) -> None:
    """Resolved config, normalisation statistics and provenance (rank 0)."""
    if _rank() != 0:
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    files = {
        "config.yaml": yaml.safe_dump(cfg.to_dict(), sort_keys=False),
        "normalisation.json": json.dumps(
            {"unit": "mm^2/s", "mean": np.asarray(mean).tolist(), "std": np.asarray(std).tolist()},
            indent=2,
        ),
        "provenance.json": json.dumps(provenance, indent=2, default=str),
    }
    for name, text in files.items():
        write_text_atomic(run_dir / name, text)


def provenance(cfg: Config, manifest: Path | None, argv: Sequence[str]) -> dict[str, Any]:
    """What a run folder records to be reproducible: command, seed, versions, manifest checksum."""
    import hashlib
    import platform
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for package in ("dmri-revgan", "torch", "monai", "dipy", "nibabel", "numpy", "scipy"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "command": list(argv),
        "seed": cfg.seed,
        "manifest": str(manifest.resolve()) if manifest else None,
        "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest else None,
        "data_root": cfg.data.root,
        "versions": versions,
        "python": platform.python_version(),
        "world_size": _world(),
    }


def load_validation(records: Sequence[Any], input: str = "nearest") -> list[ValidationVolume]:
    """Full HR-grid volumes of the validation subjects (network input by ``input``)."""
    from dmri_revgan.data.patches import load_pair

    volumes = []
    for r in records:
        pair = load_pair(r, input)
        volumes.append(
            ValidationVolume(r.subject, pair["input"], pair["target"], pair["mask"][0] > 0)
        )
    return volumes


def train_from_manifest(
    cfg: Config,
    run_dir: Path,
    resume: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    argv: Sequence[str] = (),
) -> dict[str, Any]:
    """Build the training patches from ``cfg.data.manifest``, train (or resume) the model.

    Returns a summary with the last validation RMSE (10⁻⁵ mm²/s) of the model and of cubic-spline
    interpolation of the LR tensor on the same validation subjects and masks.
    """
    from dmri_revgan.data.degrade import interpolate
    from dmri_revgan.data.manifest import read_manifest
    from dmri_revgan.data.patches import (
        Normalisation,
        compute_normalisation,
        load_lr,
        load_lr_mask,
        make_patch_dataset,
    )
    from dmri_revgan.metrics import region_rmse

    init_distributed(device)
    manifest = Path(cfg.data.manifest)
    records = read_manifest(manifest)
    train_records = [r for r in records if r.split == "train"]
    val_records = [r for r in records if r.split == "val"]
    if not train_records:
        raise InputError(manifest, "no subjects in the train split")
    ckpt = load_resume_state(resume) if resume is not None else None
    if ckpt is not None:
        norm = Normalisation.from_dict(ckpt["normalisation"])
    else:
        norm = compute_normalisation(train_records)
    d = cfg.data
    train_set = make_patch_dataset(
        train_records,
        patch_size=d.patch_size,
        sampler=d.sampler,
        stride=d.stride,
        min_brain_fraction=d.min_brain_fraction,
        samples_per_volume=d.samples_per_volume,
        seed=cfg.seed,
        normalisation=norm,
        augment=d.augment,
        input=d.input,
    )
    validation = load_validation(val_records, d.input)
    mean, std = np.asarray(norm.mean, np.float32), np.asarray(norm.std, np.float32)
    trainer, rows, summary = _run(
        cfg,
        run_dir,
        train_set,
        mean,
        std,
        validation,
        ckpt,
        resume,
        device,
        progress,
        provenance(cfg, manifest, argv) | {"orientation": _orientation(train_records)},
    )
    summary["patches_per_volume"] = getattr(train_set, "patches_per_volume", None)
    if validation and rows:
        summary["model"] = {
            k.removeprefix("val_rmse_"): rows[-1][k] for k in rows[-1] if k.startswith("val_rmse_")
        }
        for method in ("cubic", "edge_cubic"):
            scores = [
                region_rmse(
                    interpolate(load_lr(r), r.factor, method, load_lr_mask(r)), v.target, v.mask
                )
                for r, v in zip(val_records, validation, strict=True)
            ]
            summary[method] = {k: float(np.mean([c[k] for c in scores])) for k in scores[0]}
    return summary


def _orientation(records: Sequence[Any]) -> str:
    """The voxel-axis orientation (e.g. "LAS") of most training volumes: inference re-orients
    inputs to it, so the network always sees the layout (and tensor frame) it learned."""
    import nibabel as nib

    codes = ["".join(nib.aff2axcodes(nib.load(r.hr_tensor).affine)) for r in records]
    return max(sorted(set(codes)), key=codes.count)


def _run(
    cfg: Config,
    run_dir: Path,
    train_set: Dataset,
    mean: np.ndarray,
    std: np.ndarray,
    validation: Sequence[ValidationVolume],
    ckpt: dict[str, Any] | None,
    resume: Path | None,
    device: str,
    progress: bool,
    prov: dict[str, Any],
) -> tuple[Trainer, list[dict[str, float]], dict[str, Any]]:
    """Create the Trainer, restore a checkpoint, write the run files and train to the end."""
    trainer = Trainer(cfg, run_dir, train_set, mean, std, validation, device, progress, prov)
    if ckpt is not None and resume is not None:
        trainer.load_state(ckpt, resume)
        if _rank() == 0:  # what a killed writer left half-done: never read, now removed
            for stale in (run_dir / "checkpoints").glob(".*tmp*"):
                stale.unlink(missing_ok=True)
    write_run_files(cfg, run_dir, trainer.mean, trainer.std, prov)
    rows = trainer.fit()
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "epochs": trainer.epoch,
        "train_samples": len(train_set),
        "patches_per_s": float(np.mean([r["patches_per_s"] for r in rows])) if rows else None,
    }
    return trainer, rows, summary


def train_images(
    cfg: Config,
    run_dir: Path,
    resume: Path | None = None,
    device: str = "cpu",
    progress: bool = True,
    argv: Sequence[str] = (),
) -> dict[str, Any]:
    """Train a 2D model on a pix2pix (paired) or CycleGAN (unpaired) image folder."""
    from dmri_revgan.data.images import AlignedImages, UnalignedImages

    init_distributed(device)
    d = cfg.data
    if d.root is None:
        raise InputError("data.root", "a 2D config needs the image folder (--data DIR)")
    kind = AlignedImages if cfg.loss.objective == "paired" else UnalignedImages
    train_set = kind(Path(d.root), "train", d.direction, d.image_size, d.load_size, seed=cfg.seed)
    ckpt = load_resume_state(resume) if resume is not None else None
    channels = cfg.model.in_channels
    prov = provenance(cfg, None, argv)
    _, _, summary = _run(
        cfg,
        run_dir,
        train_set,
        np.zeros(channels),
        np.ones(channels),
        (),
        ckpt,
        resume,
        device,
        progress,
        prov,
    )
    return summary
