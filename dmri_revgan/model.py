"""Model files: build a generator from a config, save and load it as data, never as code.

A model file (``checkpoints/best.safetensors``, ``last.safetensors``) is a safetensors file: the
generator's weights plus a JSON header (``__metadata__``) holding everything inference needs —
the resolved config, the per-channel normalisation statistics (mm²/s), the format version, the
tool version and the run's provenance. Reading it executes nothing (no pickle).

Resume state (optimisers, schedulers, image pools, RNG states, epoch) stays a torch file
(``checkpoints/last.pt``) of tensors, numbers and strings only, read with ``weights_only=True`` by
``train --resume`` and never by inference. Older torch-pickle checkpoints are converted once by
``dmri-revgan export --from old.pt``, which also reads them with ``weights_only=True``.

Imported by train, infer, evaluate, report and bench; imports only config, nets, errors and io.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dmri_revgan import __version__
from dmri_revgan.config import Config, config_from_dict
from dmri_revgan.errors import InputError
from dmri_revgan.io import atomic_path
from dmri_revgan.nets.discriminators import PatchDiscriminator
from dmri_revgan.nets.generators import RevGenerator

MODEL_FORMAT = "dmri-revgan-model"
MODEL_FORMAT_VERSION = 2
RESUME_FORMAT = 2  # checkpoints/last.pt, read with weights_only=True
MODEL_SUFFIX = ".safetensors"


def build_generator(cfg: Config) -> RevGenerator:
    """The generator a config describes (weights freshly initialised)."""
    m = cfg.model
    return RevGenerator(
        m.spatial_dims,
        m.in_channels,
        m.out_channels,
        m.width,
        m.depth,
        kind=m.kind,
        memory_saving=m.memory_saving is not False,  # "auto": on until training plans it
        init_std=m.init_std,
        residual=m.residual,
        norm=m.norm,
    )


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


def save_model(
    path: Path,
    gen: RevGenerator,
    cfg: Config,
    mean: np.ndarray,
    std: np.ndarray,
    provenance: dict[str, Any] | None = None,
    epoch: int | None = None,
) -> None:
    """Write a model file atomically: generator weights + JSON metadata (see the module doc)."""
    from safetensors.torch import save_file

    metadata = {
        "format": MODEL_FORMAT,
        "format_version": str(MODEL_FORMAT_VERSION),
        "tool_version": __version__,
        "config": json.dumps(cfg.to_dict()),
        "normalisation": json.dumps(
            {
                "unit": "mm^2/s",
                "mean": np.asarray(mean, float).tolist(),
                "std": np.asarray(std, float).tolist(),
            }
        ),
        "provenance": json.dumps(provenance or {}, default=str),
        "epoch": json.dumps(epoch),
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in gen.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)


def read_metadata(path: Path) -> dict[str, Any]:
    """The decoded JSON header of a model file, checked for format and version (no weights read).

    One-line errors: not a file, an old pickle checkpoint (with the conversion command), not a
    safetensors file, another format, an unsupported version.
    """
    if not path.is_file():
        raise InputError(path, "no such model file")
    with path.open("rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        text = f.read(size) if 0 < size < 100_000_000 else b""
    if not text.startswith(b"{"):
        if path.suffix == ".pt" or head[:2] in (b"PK", b"\x80\x02"):
            raise InputError(
                path,
                "old-format torch checkpoint, not loaded (it could run code); convert it once "
                f"with: dmri-revgan export --from {path}",
            )
        raise InputError(path, "not a dmri-revgan model file (expected .safetensors)")
    try:
        header = json.loads(text)
        meta = dict(header.get("__metadata__") or {})
    except (ValueError, AttributeError) as exc:
        raise InputError(path, "corrupt safetensors header") from exc
    if meta.get("format") != MODEL_FORMAT:
        raise InputError(path, "a safetensors file, but not a dmri-revgan model")
    if meta.get("format_version") != str(MODEL_FORMAT_VERSION):
        raise InputError(
            path,
            f"model format version {meta.get('format_version')!r} is not supported by this "
            f"version of dmri-revgan (expects {MODEL_FORMAT_VERSION})",
        )
    try:
        return {
            "config": json.loads(meta["config"]),
            "normalisation": json.loads(meta["normalisation"]),
            "provenance": json.loads(meta.get("provenance", "{}")),
            "epoch": json.loads(meta.get("epoch", "null")),
            "tool_version": meta.get("tool_version"),
        }
    except (KeyError, ValueError) as exc:
        raise InputError(path, "model metadata is incomplete or not JSON") from exc


# The shipped pretrained model (docs/model_card.md): package data, loaded like any model file.
PRETRAINED_NAME = "default"
PRETRAINED_FILE = Path(__file__).parent / "pretrained" / "dmri-revgan-dti2x-v2.safetensors"


def model_path(path: Path | str) -> Path:
    """A run folder → its ``checkpoints/best.safetensors`` (else ``last.safetensors``); a file
    is returned as given; ``"default"`` names the shipped pretrained model."""
    if str(path) == PRETRAINED_NAME:
        if not PRETRAINED_FILE.is_file():
            raise InputError(PRETRAINED_FILE, "the shipped model is missing from this install")
        return PRETRAINED_FILE
    path = Path(path)
    if path.is_dir():
        folder = path / "checkpoints"
        for name in ("best", "last"):
            if (folder / f"{name}{MODEL_SUFFIX}").is_file():
                return folder / f"{name}{MODEL_SUFFIX}"
        if (folder / "last.pt").is_file():
            raise InputError(
                folder / "last.pt",
                "run folder holds only an old-format checkpoint; convert it with: "
                f"dmri-revgan export --from {folder / 'last.pt'}",
            )
        raise InputError(path, "no model file (checkpoints/best.safetensors) in this folder")
    return path


@dataclass
class LoadedModel:
    """A trained generator with what inference needs from its model file."""

    gen: RevGenerator
    cfg: Config
    mean: np.ndarray  # (C,) mm²/s
    std: np.ndarray  # (C,) mm²/s
    path: Path
    sha256: str  # of the model file's bytes
    # Voxel-axis codes of the training data, e.g. "LAS" (inputs are turned to it); None: as given.
    orientation: str | None = None


def load_model(path: Path | str, device: str = "cpu") -> LoadedModel:
    """Load a run folder, a ``.safetensors`` model file or ``"default"`` (the shipped model).

    Weights that do not fit the architecture the metadata describes (missing or mis-shaped
    tensors) are reported in one line, no traceback.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = model_path(path)
    meta = read_metadata(path)
    try:
        cfg = config_from_dict(meta["config"])
        norm = meta["normalisation"]
        mean = np.asarray(norm["mean"], np.float32)
        std = np.asarray(norm["std"], np.float32)
        gen = build_generator(cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(path, f"model metadata does not describe a model ({exc})") from exc
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise InputError(path, f"corrupt model weights ({exc})") from exc
    expected = gen.state_dict()
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        name = (missing or extra)[0]
        what = "missing" if missing else "unexpected"
        raise InputError(path, f"{what} tensor {name!r} for the architecture in its metadata")
    for name, value in weights.items():
        if value.shape != expected[name].shape:
            raise InputError(
                path,
                f"tensor {name!r} has shape {tuple(value.shape)}, the architecture needs "
                f"{tuple(expected[name].shape)}",
            )
    if mean.shape != (cfg.model.in_channels,) or std.shape != mean.shape or not (std > 0).all():
        raise InputError(path, "normalisation statistics do not match the model's channels")
    gen.load_state_dict(weights)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    orientation = meta["provenance"].get("orientation")
    return LoadedModel(gen.to(device).eval(), cfg, mean, std, path, digest, orientation)


def model_config(path: Path) -> Config:
    """The config stored in a model file (or run folder), without reading the weights."""
    path = model_path(path)
    return config_from_dict(read_metadata(path)["config"])


# ------------------------------------------------------------------------------- resume state


def save_resume_state(path: Path, state: dict[str, Any]) -> None:
    """``torch.save`` of plain data (tensors, numbers, strings, lists, dicts) to a temporary file
    in the target folder, then rename: a crash never leaves a half-written ``path``."""
    with atomic_path(path) as tmp:
        torch.save({"format": RESUME_FORMAT, **state}, tmp)


def load_resume_state(path: Path) -> dict[str, Any]:
    """Read ``checkpoints/last.pt`` (or a run folder's) with ``weights_only=True``: no code runs."""
    if path.is_dir():
        path = path / "checkpoints" / "last.pt"
    if not path.is_file():
        raise InputError(path, "no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means an unusable (or unsafe) file
        raise InputError(
            path, f"not a readable resume checkpoint ({exc.__class__.__name__})"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise InputError(path, "not a dmri-revgan resume checkpoint of this version")
    return state


def convert_checkpoint(source: Path, out: Path | None = None) -> Path:
    """Convert an old torch checkpoint (format 1) into a model file, reading it with
    ``weights_only=True`` (numpy arrays allowed as data, nothing else). Returns the new path."""
    if not source.is_file():
        raise InputError(source, "no such checkpoint")
    out = out or source.with_suffix(MODEL_SUFFIX)
    if out.resolve() == source.resolve():
        raise InputError(out, "output path equals the input")
    core = getattr(np, "_core", None) or np.core
    safe = [core.multiarray._reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    try:
        with torch.serialization.safe_globals(safe):
            ckpt = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unsafe or corrupt: refuse either way
        raise InputError(
            source, f"not a loadable checkpoint with weights_only=True ({exc.__class__.__name__})"
        ) from exc
    if not isinstance(ckpt, dict) or not {"config", "generator", "normalisation"} <= set(ckpt):
        raise InputError(source, "not a dmri-revgan checkpoint")
    try:
        cfg = config_from_dict(ckpt["config"])
        gen = build_generator(cfg)
        gen.load_state_dict(ckpt["generator"])
    except (KeyError, ValueError, RuntimeError) as exc:
        raise InputError(source, "checkpoint from another architecture or version") from exc
    norm = ckpt["normalisation"]
    save_model(
        out, gen, cfg, norm["mean"], norm["std"], {"converted_from": str(source)}, ckpt.get("epoch")
    )
    return out
