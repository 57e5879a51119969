"""Typed experiment configuration: dataclasses, YAML loading, and `--set key=value` overrides.

Every hyper-parameter of the paper has a named key; a config file only lists what differs from the
defaults here (which are the paper's 3D paired setting). Configs may name a ``base`` config file
(relative to themselves) whose values they override, so the Table 3 variants stay one line each.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class ModelConfig:
    """Generator and discriminators (see nets/)."""

    spatial_dims: int = 3
    kind: str = "srcnn"  # "srcnn" (3D tensors) or "resnet" (2D images)
    in_channels: int = 6  # domain X: LR tensor upsampled to the HR grid, FSL order
    out_channels: int = 6  # domain Y: HR tensor
    width: int = 64  # K
    depth: int = 4  # reversible blocks; 0 = SRCNN baseline
    # Recompute core activations in backward (the paper's memory saving): true, false, or "auto"
    # (training plans it from the memory budget, optim.max_memory_gib; see training/memory.py).
    memory_saving: bool | str = True
    disc_channels: int = 64
    disc_layers: int = 3
    init_std: float = 0.02
    residual: bool = False  # F(x) = x + Dec_Y(C(Enc_X(x))); see RevGenerator
    norm: str = "instance"  # "instance" (the paper) or "none" (tiling-exact inference)


@dataclass
class LossConfig:
    """Objective: eq. 12 (paired) or eq. 13 (unpaired)."""

    objective: str = "paired"  # "paired" or "unpaired"
    use_gan: bool = True  # False: the paper's "w/o L_GAN" rows (paired only)
    gan_mode: str = "vanilla"  # "vanilla" (BCE with logits) or "lsgan" (least squares)
    lambda_l1: float = 100.0  # λ: 100 for the paired L1 terms, 10 for the unpaired cycle terms
    pixel: str = "l1"  # paired pixel term: "l1" (the paper's eq. 6-7) or "l2" (squared error)
    mask: bool = False  # paired pixel terms over HR-brain voxels only (background is not scored)
    reverse_weight: float = 1.0  # paired: weight of G's pixel term (0: train F only, half the cost)


@dataclass
class OptimConfig:
    """Adam and the learning-rate schedule: constant for ``epochs_constant`` epochs, then decay to 0
    over ``epochs_decay`` epochs, linear (pix2pix) or cosine, stepped per epoch."""

    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    epochs_constant: int = 20
    epochs_decay: int = 0
    schedule: str = "linear"  # decay shape: "linear" or "cosine"
    batch_size: int = 1
    max_minutes: float | None = None  # wall-clock budget: no epoch starts that would overrun it
    # budget in training patches: the schedule spans the epochs that reach it, however many
    # (epoch counts scaled up or down; independent of the CPU, unlike max_minutes)
    max_patches: int | None = None
    max_memory_gib: float | None = None  # memory budget of the training process; None: free memory
    precision: str = "float32"  # "float32", or "bf16" autocast where the device has it natively
    pool_size: int = 50  # image pool for the unpaired discriminators


@dataclass
class DataConfig:
    """3D: patches from a data manifest (data/patches.py); 2D: image folders (data/images.py)."""

    manifest: str = "data_manifest.csv"
    factor: int = 2  # 3D: super-resolution factor r (LR voxel = r³ HR voxels)
    root: str | None = None  # 2D: pix2pix / CycleGAN dataset folder
    direction: str = "AtoB"  # 2D: which half / folder is the input domain
    image_size: int = 256  # 2D: training crop and evaluation size
    load_size: int | None = None  # 2D: resize before the random crop (None: 286/256 · size)
    patch_size: int = 24
    sampler: str = "grid"  # "grid", "random" (brain-centred) or "corner" (uniform corners)
    stride: int | None = None  # grid stride in voxels; None = patch size
    samples_per_volume: int = 64  # random / corner samplers: patches per volume and epoch
    augment: bool = False  # 3D: random tensor-consistent axis flips and permutations
    input: str = "nearest"  # 3D network input on the HR grid: "nearest" (paper) or "edge_cubic"
    min_brain_fraction: float = 0.01
    num_workers: int = 0
    max_steps_per_epoch: int | None = None  # cap, for quick runs and tests


@dataclass
class Config:
    """A whole experiment."""

    name: str = "hcp"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    validate_every: int = 1  # epochs

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate a (nested) config dataclass, rejecting unknown keys with a clear message."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(f"{where}: unknown key {key!r}; known: {', '.join(fields)}")
        default = getattr(cls(), key)
        if dataclasses.is_dataclass(default):
            if not isinstance(value, dict):
                raise ValueError(f"{where}: {key} must be a mapping")
            kwargs[key] = _build(type(default), value, f"{where}: {key}")
        else:
            kwargs[key] = _coerce(value, default, f"{where}: {key}")
    return cls(**kwargs)


def _coerce(value: Any, default: Any, where: str) -> Any:
    """Give ``value`` the type of the field's default (YAML 1.1 reads ``2e-4`` as a string)."""
    if value is None or default is None or isinstance(default, str):
        return value
    kind = type(default)
    if kind is bool:
        if isinstance(value, bool) or (value == "auto" and where.endswith("memory_saving")):
            return value
    elif isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
            if kind is float or number.is_integer():
                return kind(number)
        except ValueError:
            pass
    raise ValueError(f"{where}: expected {kind.__name__}, got {value!r}")


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ValueError(f"--set {item!r}: expected key=value, e.g. model.depth=8")
    key, raw = item.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: cannot read config ({exc.__class__.__name__})") from exc
    if not isinstance(values, dict):
        raise ValueError(f"{path}: a config must be a mapping")
    base = values.pop("base", None)
    if base is not None:
        values = _merge(_read_yaml(path.parent / base), values)
    return values


def resolve_config_path(name_or_path: str) -> Path:
    """A config given by name (``hcp`` → configs/hcp.yaml) or by path to a YAML file (a folder
    that happens to share a config's name, like ``demo/``, does not shadow the name)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        candidate = path
    else:
        candidate = CONFIG_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
        raise ValueError(f"{candidate}: no such config; known names: {known}")
    return candidate


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Load a config by name or path and apply ``key.sub=value`` overrides (YAML-typed values)."""
    path = resolve_config_path(name_or_path)
    values = _read_yaml(path)
    values.setdefault("name", path.stem)
    for item in overrides or []:
        keys, value = _parse_override(item)
        update: dict[str, Any] = {keys[-1]: value}
        for key in reversed(keys[:-1]):
            update = {key: update}
        values = _merge(values, update)
    return _build(Config, values, str(path))


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a config saved with :meth:`Config.to_dict` (e.g. from a checkpoint)."""
    return _build(Config, values, "checkpoint config")
