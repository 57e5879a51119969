"""Shared test helpers: deterministic seeds and small random-weight models."""

from __future__ import annotations

from pathlib import Path

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


SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hcp-like"


def real_persons(subjects) -> dict[str, str]:
    """The shared data's persons (its README): Siemens XA30 series are person B, the rest A."""
    return {s: "B" if s.startswith("xa30") else "A" for s in subjects}


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory):
    """Four small phantom subjects, raw (HCP layout) and prepared (manifest), shared by tests."""
    from dmri_revgan.data.phantom import write_phantom_dataset
    from dmri_revgan.data.prepare import prepare_hcp

    root = tmp_path_factory.mktemp("phantom")
    write_phantom_dataset(root / "raw", n_subjects=4, seed=3, shape=(40, 44, 32))
    outcomes, manifest = prepare_hcp(root / "raw", root / "prepared", ratios=(0.5, 0.25, 0.25))
    assert all(o.error is None for o in outcomes)
    return root, manifest


@pytest.fixture(scope="session")
def trained_run(phantom_set, tmp_path_factory):
    """A tiny paired RevGAN (width 8, 1 block) trained for a few steps on the phantom set."""
    from dmri_revgan.config import Config
    from dmri_revgan.training import run_training

    _, manifest = phantom_set
    cfg = Config(name="tiny")
    cfg.model.width, cfg.model.depth, cfg.model.disc_channels, cfg.model.disc_layers = 8, 1, 8, 2
    cfg.optim.epochs_constant, cfg.optim.batch_size = 1, 2
    cfg.data.manifest, cfg.data.patch_size, cfg.data.max_steps_per_epoch = str(manifest), 16, 3
    run = tmp_path_factory.mktemp("run")
    run_training(cfg, run, progress=False)
    return run


class PickleBomb:
    """Unpickling this runs a shell command that creates ``marker``: a crafted model file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def rewrite_model_file(source: Path, target: Path, tensors=None, **metadata) -> Path:
    """Copy a .safetensors model file, changing its tensors (``tensors(weights)``) and/or
    metadata entries (strings), to make broken or foreign model files."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(source), "pt") as f:
        old = dict(f.metadata())
        weights = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    save_file(tensors(weights) if tensors else weights, str(target), {**old, **metadata})
    return target
