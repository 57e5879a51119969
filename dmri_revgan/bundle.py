"""MONAI bundle export: a trained model in the layout MONAI users run without reading our docs.

``dmri-revgan export RUN --bundle OUT/`` writes::

    OUT/configs/metadata.json    inputs/outputs (channel order, units), versions, authors,
                                 licence, references
    OUT/configs/inference.json   `python -m monai.bundle run --config_file configs/inference.json
                                 --input_path lr.nii.gz --output_path sr.nii.gz`; the network is
                                 under the conventional ``network_def`` key
    OUT/models/model.pt          a plain state dict (``torch.load(weights_only=True)`` loads it)
    OUT/docs/README.md
    OUT/LICENSE

The bundle's run step calls :func:`super_resolve`, i.e. exactly ``dmri-revgan infer``'s path, so
its output equals the tool's (dmri-revgan must be installed where the bundle runs).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from dmri_revgan import __version__
from dmri_revgan.errors import InputError
from dmri_revgan.io import atomic_path, write_text_atomic
from dmri_revgan.model import LoadedModel, load_model

CHANNELS = ["Dxx", "Dxy", "Dxz", "Dyy", "Dyz", "Dzz"]
REFERENCES = [
    "van der Ouderaa TFA, Worrall DE. Reversible GANs for Memory-efficient Image-to-Image "
    "Translation. CVPR 2019.",
    "Alexander DC et al. Image quality transfer and applications in diffusion MRI. "
    "NeuroImage 2017 (low-resolution simulation).",
]


def _network_def(model: LoadedModel) -> dict[str, Any]:
    m = model.cfg.model
    return {
        "_target_": "dmri_revgan.nets.generators.RevGenerator",
        "spatial_dims": m.spatial_dims,
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "width": m.width,
        "depth": m.depth,
        "kind": m.kind,
        "memory_saving": m.memory_saving is not False,
        "init_std": m.init_std,
        "residual": m.residual,
        "norm": m.norm,
    }


def export_bundle(model_path: Path, out: Path) -> Path:
    """Write a MONAI bundle of a 3D model (run folder or model file) into ``out``."""
    import monai
    import numpy as np

    model = load_model(model_path)
    if model.cfg.model.spatial_dims != 3:
        raise InputError(model.path, "bundle export is for 3D tensor models")
    if out.exists() and any(out.iterdir()):
        raise InputError(out, "bundle folder exists and is not empty; choose another")
    tensor = {
        "type": "image",
        "format": "diffusion tensor",
        "modality": "DTI",
        "num_channels": 6,
        "spatial_shape": ["*", "*", "*"],
        "dtype": "float32",
        "value_range": [-0.004, 0.004],
        "is_patch_data": False,
        "channel_def": dict(enumerate(CHANNELS)),
        "units": "mm^2/s, FSL dtifit order, 4D NIfTI (X, Y, Z, 6)",
    }
    metadata = {
        "schema": "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/"
        "0.8.1/meta_schema_20220324.json",
        "version": __version__,
        "changelog": {__version__: f"exported from {model.path.name} (SHA-256 {model.sha256})"},
        "monai_version": monai.__version__,
        "pytorch_version": torch.__version__.split("+")[0],
        "numpy_version": np.__version__,
        "optional_packages_version": {"dmri-revgan": __version__, "nibabel": _version("nibabel")},
        "name": "dmri-revgan 2x diffusion-tensor super-resolution",
        "task": f"{model.cfg.data.factor}x super-resolution of diffusion tensor volumes",
        "description": "RevGAN generator F (reversible core, SRCNN encoder/decoder) that maps an "
        "LR diffusion tensor volume to the tensor on a grid with half the voxel size. The LR "
        f"tensor is interpolated onto the HR grid ({model.cfg.data.input}) before the network; "
        "voxels outside the brain mask are 0.",
        "authors": "dmri-revgan developers",
        "copyright": "Copyright (c) dmri-revgan developers",
        "license": "BSD-3-Clause",
        "references": REFERENCES,
        "network_data_format": {
            "inputs": {"image": {**tensor, "description": "LR tensor volume"}},
            "outputs": {"pred": {**tensor, "description": "super-resolved tensor volume"}},
        },
    }
    settings = {
        "config": model.cfg.to_dict(),
        "mean": model.mean.tolist(),
        "std": model.std.tolist(),
        "orientation": model.orientation,
        "model_sha256": model.sha256,
    }
    inference = {
        "imports": ["$import torch", "$import dmri_revgan.bundle as dmri_bundle"],
        "bundle_root": ".",
        "device": "cpu",
        "checkpoint": "$@bundle_root + '/models/model.pt'",
        "input_path": "",
        "output_path": "",
        "settings": settings,
        "network_def": _network_def(model),
        "network": "$dmri_bundle.load_weights(@network_def, @checkpoint, @device)",
        "run": [
            "$dmri_bundle.super_resolve(@network, @settings, @input_path, @output_path, @device)"
        ],
    }
    readme = f"""# {metadata["name"]}

Exported by dmri-revgan {__version__} from `{model.path.name}` (SHA-256 `{model.sha256}`).

Input: a low-resolution diffusion tensor volume, 4D NIfTI (X, Y, Z, 6) in FSL order
(Dxx, Dxy, Dxz, Dyy, Dyz, Dzz), mm²/s; its non-zero voxels are the brain. Output: the tensor on
the {model.cfg.data.factor}x grid (same orientation, correct affine), 0 outside the brain.

    pip install dmri-revgan monai
    python -m monai.bundle run --config_file configs/inference.json \\
        --input_path subject_lr.nii.gz --output_path subject_sr.nii.gz

In Python, `network_def` in `configs/inference.json` builds the network and `models/model.pt`
is a plain state dict: `torch.load("models/model.pt", weights_only=True)`.

References: {" ".join(REFERENCES)}
"""
    files = {
        out / "configs" / "metadata.json": json.dumps(metadata, indent=2),
        out / "configs" / "inference.json": json.dumps(inference, indent=2),
        out / "docs" / "README.md": readme,
        out / "LICENSE": "BSD-3-Clause. Copyright (c) dmri-revgan developers.\n",
    }
    for path, text in files.items():
        write_text_atomic(path, text)
    state = {k: v.detach().cpu().contiguous() for k, v in model.gen.state_dict().items()}
    with atomic_path(out / "models" / "model.pt") as tmp:
        torch.save(state, tmp)
    return out


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def load_weights(network: torch.nn.Module, checkpoint: str, device: str = "cpu") -> Any:
    """The bundle's network with its weights, read as data (``weights_only=True``)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.to(device).eval()


def super_resolve(
    network: Any, settings: dict[str, Any], input_path: str, output_path: str, device: str = "cpu"
) -> Path:
    """The bundle's run step: ``dmri-revgan infer``'s path with the bundle's network."""
    import numpy as np

    from dmri_revgan import io
    from dmri_revgan.config import config_from_dict
    from dmri_revgan.inference import SR_TENSOR, infer_volume, read_tensor_input

    source, target = Path(input_path), Path(output_path)
    if not input_path or not output_path:
        raise InputError("inference.json", "give --input_path and --output_path")
    if target.resolve() == source.resolve():
        raise InputError(target, "output path equals the input")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    model = LoadedModel(
        network,
        config_from_dict(settings["config"]),
        np.asarray(settings["mean"], np.float32),
        np.asarray(settings["std"], np.float32),
        source,
        settings.get("model_sha256", digest),
        settings.get("orientation"),
    )
    data = read_tensor_input(source)
    pred = infer_volume(model, data, device=device)
    io.save_nifti(target, pred.tensor, pred.affine, data.image.header, SR_TENSOR)
    return target
