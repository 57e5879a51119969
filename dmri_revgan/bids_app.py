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

# The maps are named by the diffusion-derivatives proposal (BEP016, as QSIRecon names them),
# which the current specification does not include yet: the validator is told to skip exactly
# those; the masks (and sidecars) are named the specification's way and are validated.
BIDSIGNORE = ("*_dwimap.nii.gz", "*_dwimap.json")


def _code_url() -> dict[str, str]:
    """``CodeURL`` from the installed package's project URLs, when it declares one."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("dmri-revgan").get_all("Project-URL") or []
    except PackageNotFoundError:
        return {}
    return {"CodeURL": urls[0].split(",", 1)[1].strip()} if urls else {}


def _readme(factor: int) -> str:
    return f"""# dmri-revgan derivatives

Diffusion tensors super-resolved {factor}x by dmri-revgan {__version__} (RevGAN, van der Ouderaa
& Worrall, CVPR 2019), one set per DWI series of the source dataset, on a grid with 1/{factor} of
the source's voxel size (`res-sr{factor}x`) in the source's space and orientation (`space-orig`).

- `*_model-tensor_dwimap.nii.gz`: the tensor, FSL order (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz), mm²/s,
  0 outside the brain mask; `*_param-fa_` / `*_param-md_`: FA (unitless) and MD (mm²/s).
  Named by the BIDS diffusion-derivatives proposal (BEP016), listed in `.bidsignore`.
- `*_desc-brain_mask.nii.gz`: the HR brain mask the tensor was predicted on.
- `*_desc-sr{factor}x_dwi.nii.gz`: the DWI the tensor predicts, for any DWI pipeline, on the
  source's own gradient table: `<source>_dwi.bval` / `.bvec` beside it (FSL convention; BIDS
  inheritance), e.g. MRtrix `mrconvert … -fslgrad <source>_dwi.bvec <source>_dwi.bval`.
- Every file has a JSON sidecar: its source series, the model file and its SHA-256.
"""


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
    dwi: bool = True,
    report: Callable[[str], None] = lambda s: None,
    gradient_check: str = "fix",
) -> list[Path]:
    """Run the participant level; returns the written files. Every series is computed before
    its files are written (temporary names, then renamed together). ``gradient_check``: each
    series' table is checked against the anatomy first ("fix", "warn" or "off")."""
    import nibabel as nib
    import numpy as np

    from dmri_revgan import io
    from dmri_revgan.data.bids import find_dwi
    from dmri_revgan.dti import fa_md
    from dmri_revgan.inference import MASK_METHOD, SR_MASK, infer_volume, read_tensor_input
    from dmri_revgan.inference.run import synthesised_dwi
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
                **_code_url(),
            }
        ],
        "Authors": ["dmri-revgan developers"],
        "SourceDatasets": [{"URL": bids_root.resolve().as_uri()}],
    }
    io.write_text_atomic(deriv / "dataset_description.json", json.dumps(description, indent=2))
    io.write_text_atomic(deriv / "README", _readme(model.cfg.data.factor))
    io.write_text_atomic(deriv / ".bidsignore", "".join(f"{p}\n" for p in BIDSIGNORE))
    written = []
    for s in series:
        report(s.record.subject)
        data = read_tensor_input(s.record.dwi, mask=s.record.mask, gradient_check=gradient_check)
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
            **(
                {"GradientCheck": data.gradient_check.to_dict()}
                if data.gradient_check is not None
                else {}
            ),
        }
        mask_path = folder / f"{base}_desc-brain_mask.nii.gz"
        voxel = np.linalg.norm(affine[:3, :3], axis=0)
        mask_sidecar = {
            "Sources": sidecar["Sources"],
            # space-orig: the source series' own space, on a grid r times finer
            "SpatialReference": sidecar["Sources"][0],
            "Resolution": f"sr{model.cfg.data.factor}x: {model.cfg.data.factor}x finer than the "
            f"source series, {'×'.join(f'{v:.3g}' for v in voxel)} mm voxels",
            "Type": "Brain",
            "Description": MASK_METHOD["up"],
            "ToolVersion": __version__,
        }
        maps = {
            "model-tensor": (
                tensor,
                {"Units": "mm^2/s", "TensorOrder": "FSL (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz)"},
            ),
            "model-tensor_param-fa": (fa, {"Units": "arbitrary", "Description": "FA"}),
            "model-tensor_param-md": (md, {"Units": "mm^2/s", "Description": "mean diffusivity"}),
        }
        outputs = {folder / f"{base}_{name}_dwimap.nii.gz": (volume, sidecar | extra, name)
                   for name, (volume, extra) in maps.items()}  # fmt: skip
        outputs[mask_path] = (pred.mask.astype(np.uint8), mask_sidecar, SR_MASK)
        factor = model.cfg.data.factor
        dwi_path = folder / f"{base}_desc-sr{factor}x_dwi.nii.gz"
        with_dwi = dwi and data.acquisition is not None  # no b≈0 volume: no S0 to carry it
        signal, tables = (
            synthesised_dwi(pred, data.acquisition, data.mask, factor) if with_dwi else (None, {})
        )
        dwi_sidecar = {
            **{k: v for k, v in mask_sidecar.items() if k not in ("Type", "Description")},
            "SkullStripped": False,
            **_source_metadata(s.record.dwi),
            "Description": "DWI synthesised from the super-resolved tensor on the source's "
            "gradient table (S = S0 exp(-b g^T D g); S0: the source's mean b0, edge-aware cubic "
            "spline in the brain mask, cubic outside)",
            "ModelSHA256": model.sha256,
        }
        if with_dwi:
            outputs[dwi_path] = (signal, dwi_sidecar, "DWI synthesised from the SR tensor")
        with contextlib.ExitStack() as stack:
            for target, (volume, side_values, what) in outputs.items():
                tmp = stack.enter_context(io.atomic_path(target))
                image = io.nifti_image(
                    volume, affine, data.image.header, f"SR {what}", time_axis=target == dwi_path
                )
                nib.save(image, tmp)
                side = stack.enter_context(
                    io.atomic_path(target.with_name(target.name.replace(".nii.gz", ".json")))
                )
                side.write_text(json.dumps(side_values, indent=2), encoding="utf-8")
                written.append(target)
            # FSL convention (infer also writes MRtrix's .b). BIDS allows .bval/.bvec only with
            # the source's entities; by the inheritance principle they apply to the DWI above.
            for suffix in (".bval", ".bvec") if with_dwi else ():
                table = folder / f"{s.record.subject}_dwi{suffix}"
                stack.enter_context(io.atomic_path(table)).write_text(tables[suffix])
    return written
