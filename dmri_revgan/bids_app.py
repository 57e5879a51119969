"""The BIDS App: ``dmri-revgan bids DS OUT participant [--participant-label 01] --model RUN``.

Super-resolves every DWI series of the selected participants (the tensor is fitted first, as
``infer`` does for a DWI) and writes BIDS derivatives under ``OUT/dmri-revgan/``::

    dataset_description.json                      DatasetType derivative, GeneratedBy
    sub-01/[ses-1/]dwi/sub-01_[ses-1_]…_space-orig_res-sr2x_model-tensor_dwimap.nii.gz
                                   …_model-tensor_param-fa_dwimap.nii.gz   (FA, unitless)
                                   …_model-tensor_param-md_dwimap.nii.gz   (MD, mm²/s)
    and a JSON sidecar beside each (Sources, model file and SHA-256, tool version, units)

``space-`` keeps the source's space label when it has one (``orig`` otherwise: the input's own
grid and orientation); ``res-sr<r>x`` names the grid with 1/r of the input's voxel size.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path

from dmri_revgan import __version__
from dmri_revgan.errors import InputError

LEVELS = ("participant",)


def derivative_base(stem: str, factor: int) -> str:
    """``sub-01_ses-1_run-1`` → ``sub-01_ses-1_run-1_space-orig_res-sr2x`` (a source ``space-``
    entity is kept and moved to its place)."""
    space = re.search(r"_space-([a-zA-Z0-9]+)", stem)
    stem = re.sub(r"_space-[a-zA-Z0-9]+", "", stem)
    return f"{stem}_space-{space.group(1) if space else 'orig'}_res-sr{factor}x"


SOURCE_KEYS = (
    "Manufacturer",
    "ManufacturersModelName",
    "MagneticFieldStrength",
    "PhaseEncodingDirection",
    "EchoTime",
    "RepetitionTime",
)


def _source_metadata(dwi: Path) -> dict[str, object]:
    """Acquisition fields of the source's JSON sidecar, when it has one (never required)."""
    stem = dwi.name.removesuffix(".gz").removesuffix(".nii")
    sidecar = dwi.with_name(f"{stem}.json")
    if not sidecar.is_file():
        return {}
    try:
        values = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(sidecar, f"not a readable JSON sidecar ({exc})") from exc
    found = {k: values[k] for k in SOURCE_KEYS if k in values}
    return {"SourceAcquisition": found} if found else {}


def run_bids_app(
    bids_root: Path,
    out_root: Path,
    level: str,
    participants: list[str] | None,
    model_path: Path | str,
    max_memory_gib: float = 3.0,
    device: str = "cpu",
    report: Callable[[str], None] = lambda s: None,
) -> list[Path]:
    """Run the participant level; returns the written files. Every series is computed before
    its files are written (temporary names, then renamed together)."""
    import nibabel as nib

    from dmri_revgan import io
    from dmri_revgan.data.bids import find_dwi
    from dmri_revgan.dti import fa_md
    from dmri_revgan.inference import infer_volume, read_tensor_input
    from dmri_revgan.model import load_model

    if level not in LEVELS:
        raise InputError(level, "only the participant level exists (there is nothing to pool)")
    if out_root.resolve() == bids_root.resolve():
        raise InputError(out_root, "output folder equals the BIDS dataset; choose another")
    model = load_model(model_path, device)
    if model.cfg.model.spatial_dims != 3:
        raise InputError(model.path, "the BIDS App needs a 3D tensor model")
    series = find_dwi(bids_root, participants)
    deriv = out_root / "dmri-revgan"
    description = {
        "Name": "dmri-revgan super-resolved diffusion tensors",
        "BIDSVersion": "1.9.0",
        "DatasetType": "derivative",
        "GeneratedBy": [
            {
                "Name": "dmri-revgan",
                "Version": __version__,
                "Description": f"RevGAN {model.cfg.data.factor}x tensor super-resolution",
            }
        ],
        "SourceDatasets": [{"URL": bids_root.resolve().as_uri()}],
    }
    io.write_text_atomic(deriv / "dataset_description.json", json.dumps(description, indent=2))
    written = []
    for s in series:
        report(s.record.subject)
        data = read_tensor_input(s.record.dwi, mask=s.record.mask)
        pred = infer_volume(model, data, max_memory_gib=max_memory_gib, device=device)
        tensor, affine = pred.tensor, pred.affine
        fa, md = fa_md(tensor)
        folder = deriv / s.relative.parent
        base = derivative_base(s.record.subject, model.cfg.data.factor)
        sidecar = {
            "Sources": [f"bids:raw:{s.relative.as_posix()}"],
            **_source_metadata(s.record.dwi),
            "Model": str(model.path.resolve()),
            "ModelSHA256": model.sha256,
            "ToolVersion": __version__,
            "OutsideMask": 0.0,
        }
        maps = {
            "model-tensor": (
                tensor,
                {"Units": "mm^2/s", "TensorOrder": "FSL (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz)"},
            ),
            "model-tensor_param-fa": (fa, {"Units": "arbitrary", "Description": "FA"}),
            "model-tensor_param-md": (md, {"Units": "mm^2/s", "Description": "mean diffusivity"}),
        }
        with contextlib.ExitStack() as stack:
            for name, (volume, extra) in maps.items():
                target = folder / f"{base}_{name}_dwimap.nii.gz"
                tmp = stack.enter_context(io.atomic_path(target))
                image = io.nifti_image(volume, affine, data.image.header, f"SR {name}")
                nib.save(image, tmp)
                side = stack.enter_context(
                    io.atomic_path(target.with_name(target.name.replace(".nii.gz", ".json")))
                )
                side.write_text(json.dumps(sidecar | extra, indent=2), encoding="utf-8")
                written.append(target)
    return written
