"""The ``infer`` run for 3D inputs: the network input on the HR grid, the prediction turned back
to the input's orientation, and the outputs written atomically with their JSON sidecar."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dmri_revgan.errors import InputError
from dmri_revgan.inference.adapt import adapt_model
from dmri_revgan.inference.ensemble import predict_ensemble, test_time_transforms
from dmri_revgan.inference.images import translate_images
from dmri_revgan.inference.inputs import (
    Acquisition,
    ModelFrame,
    TensorInput,
    check_brain,
    default_output,
    network_input,
    read_tensor_input,
)
from dmri_revgan.inference.predict import DIRECTIONS, predict_volume
from dmri_revgan.inference.runtime import check_precision
from dmri_revgan.inference.tiles import DEFAULT_MAX_MEMORY_GIB, TilingStats
from dmri_revgan.model import LoadedModel, load_model


@dataclass
class Prediction:
    """What :func:`infer_volume` returns, on the output grid, in the input's orientation."""

    tensor: np.ndarray  # (X, Y, Z, 6) FSL order, mm²/s; zero outside ``mask``
    affine: np.ndarray  # of the output grid
    mask: np.ndarray  # (X, Y, Z) bool: the voxels predicted on
    sd: np.ndarray | None = None  # (X, Y, Z) test-time spread, mm²/s (uncertainty > 1)
    repaired: int = 0  # voxels whose eigenvalues were clipped into [0, 3.5e-3] mm²/s


# The NIfTI descrip of infer's two main outputs (also evaluate's and the bundle's).
SR_TENSOR = "super-resolved tensor FSL order mm2/s"
SR_MASK = "brain mask predicted on"

MASK_METHOD = {
    "up": "LR brain mask upsampled by nearest neighbour, then dilated by r HR voxels (a cube): "
    "every LR block touching a brain block (dmri_revgan.data.degrade.estimate_hr_mask)",
    "down": "LR voxels whose r³ block of the input holds any brain voxel",
}


def infer_volume(
    model: LoadedModel,
    data: TensorInput,
    direction: str = "up",
    uncertainty: int = 1,
    **options: Any,
) -> Prediction:
    """Super-resolve (up) or degrade (down) a tensor volume.

    up: the LR tensor onto the HR grid (:func:`network_input`), F on the HR brain mask estimated
    from the LR one (:data:`MASK_METHOD`: the real brain reaches up to r HR voxels beyond the
    blocky upsampled LR mask, and zeroing it there costs most of the total error), zero outside;
    the HR affine puts each HR voxel centre where ``data/degrade.py``'s relation says.
    down: G on the HR grid, then the mean of each r³ block, on the LR grid with its affine.
    ``uncertainty`` > 1: the mean over that many test-time transforms, and its per-voxel
    spread (X, Y, Z) in mm²/s (:func:`predict_ensemble`); SD is None otherwise. ``options``:
    :func:`predict_volume`'s (``roi``, ``overlap``, ``max_memory_gib``, ``device``,
    ``precision``, ``stats``).
    """
    from dmri_revgan.data.degrade import block_mean, estimate_hr_mask, hr_affine, lr_affine
    from dmri_revgan.dti import repair

    check_brain(data)
    r = model.cfg.data.factor
    affine = data.image.affine
    # Turn the input as the network sees it, run, and turn the result back: outputs keep the
    # input's orientation and tensor convention.
    frame = ModelFrame.of(affine, model)
    x = frame.tensor_in(data.tensor)
    lr_mask = frame.grid_in(data.mask)
    if direction == "up":
        x = network_input(model, x, lr_mask)
        mask = estimate_hr_mask(lr_mask, r)
        out_affine = hr_affine(affine, r)
    else:
        mask = lr_mask
        out_affine = affine
    sd = None
    args = (model.gen, x, model.mean, model.std, mask)
    if uncertainty > 1:
        out, sd = predict_ensemble(*args, uncertainty, direction=direction, **options)
    else:
        out = predict_volume(*args, direction=direction, **options)
    out = frame.tensor_out(out)
    mask = frame.grid_out(mask)
    if sd is not None:
        sd = frame.grid_out(sd)
    tensor = np.moveaxis(out, 0, -1)
    if direction == "down":  # the mean of each r³ block (data/degrade.py), on the LR grid
        tensor = block_mean(tensor, r)
        mask = block_mean(mask.astype(np.float32), r) > 0
        sd = block_mean(sd, r) if sd is not None else None
        out_affine = lr_affine(affine, r)
    mask = np.ascontiguousarray(mask, bool)
    # A physical tensor, as prepare makes the references: eigenvalues in [0, 3.5e-3] mm²/s (the
    # network may leave a few voxels slightly negative, which tractography tools and dipy's
    # fit would clip on their own). Brain voxels only: the eigen-decomposition is float64.
    tensor = np.where(mask[..., None], tensor, 0).astype(np.float32)
    inside, repaired = repair(tensor[mask], np.ones(int(mask.sum()), bool))
    tensor[mask] = inside
    return Prediction(tensor, out_affine, mask, sd, repaired)


def run_inference(
    source: Path,
    model_path: Path | str,
    output: Path | None = None,
    mask: Path | None = None,
    direction: str = "up",
    order: str = "fsl",
    roi: int | None = None,
    overlap: float | None = None,
    max_memory_gib: float = DEFAULT_MAX_MEMORY_GIB,
    device: str = "cpu",
    maps: bool = False,
    precision: str = "float32",
    uncertainty: int = 1,
    output_format: str = "nifti",
    adapt_minutes: float = 0.0,
    adapt_steps: int | None = None,
    dwi: bool = False,
    series: int | None = None,
    gradient_check: str = "fix",
) -> list[Path]:
    """The ``infer`` command for 3D inputs: read, check, predict, write atomically + sidecar.

    ``adapt_minutes`` > 0: first fine-tune a copy of the model on the input itself
    (:func:`dmri_revgan.inference.adapt.adapt_model`, at most ``adapt_steps`` steps); the model
    file is not changed, and the sidecar records what the adaptation did.

    ``dwi``: also ``<out>_dwi.nii.gz`` with ``.bval``/``.bvec`` (FSL convention, the input's own
    table) and ``.b`` (MRtrix: world-frame directions), the signal the super-resolved tensor
    predicts on the input's gradient table from the input's mean b≈0 image brought to the HR
    grid (:func:`synthesised_dwi`: edge-aware cubic in the mask, floored at 5 % of the brain's
    median, cubic outside); DWI inputs with b≈0 volumes only.

    ``output_format`` "nrrd" writes every volume as NRRD (the tensor as a Slicer
    ``3D-symmetric-matrix`` with its measurement frame) instead of NIfTI.

    ``uncertainty`` N > 1 writes the mean of N test-time transforms and ``<out>_sd.nii.gz``.

    ``gradient_check``: a DWI input's gradient table is checked against the anatomy ("fix"
    corrects a mirrored or permuted axis, "warn" keeps it, "off";
    :mod:`dmri_revgan.gradient_check`); the sidecar records the check and the b-vectors used.

    Nothing is written unless every check passed and every output was computed.
    """
    import contextlib
    import dataclasses
    import json

    import nibabel as nib

    from dmri_revgan import __version__, io
    from dmri_revgan.data.nrrd import write_nrrd
    from dmri_revgan.dti import colour_fa, fa_md

    if direction not in DIRECTIONS:
        raise InputError(source, f"--direction must be one of {DIRECTIONS}")
    if not source.exists():
        raise InputError(source, "no such file or folder")
    if output is not None and output.resolve() == source.resolve():
        raise InputError(output, "output path equals the input; choose another --output")
    try:
        check_precision(precision, device)
    except ValueError as exc:
        raise InputError(source, str(exc)) from exc
    model = load_model(model_path, device)
    if model.cfg.model.spatial_dims == 2:
        if dwi or adapt_minutes or series is not None:
            raise InputError(source, "--dwi, --adapt and --series are for 3D tensor models")
        return translate_images(source, model, output, direction, device)
    if output_format not in ("nifti", "nrrd"):
        raise InputError(source, f"--output-format must be nifti or nrrd, got {output_format!r}")
    data = read_tensor_input(source, order, mask, series, adapt_minutes > 0, gradient_check)
    output = output or default_output(source, direction)
    if output_format == "nrrd" and output.suffix != ".nrrd":
        output = output.with_name(output.name.removesuffix(".gz").removesuffix(".nii") + ".nrrd")
    if output.resolve() == data.source.resolve():
        raise InputError(output, "output path equals the input; choose another --output")
    if dwi and (data.acquisition is None or direction != "up" or output_format != "nifti"):
        raise InputError(
            source,
            "--dwi needs a DWI input with b≈0 volumes (with .bval/.bvec or a NRRD DWI: a tensor "
            "has no gradient table), --direction up and NIfTI output",
        )
    stats: list[TilingStats] = []
    adaptation = None
    try:
        test_time_transforms(uncertainty)
        if adapt_minutes > 0:
            if direction != "up":
                raise ValueError("--adapt fine-tunes F: it needs --direction up")
            model, adaptation = adapt_model(
                model,
                data,
                adapt_minutes,
                device=device,
                max_steps=adapt_steps,
                max_memory_gib=max_memory_gib,
            )
            if data.acquisition is not None:
                data.acquisition.dwi = None  # the pair is made: free the signal before inference
        pred = infer_volume(
            model,
            data,
            direction,
            uncertainty,
            roi=roi,
            overlap=overlap,
            max_memory_gib=max_memory_gib,
            device=device,
            precision=precision,
            stats=stats,
        )
    except ValueError as exc:
        raise InputError(source, str(exc)) from exc
    stem = output.name.removesuffix(".gz").removesuffix(".nii").removesuffix(".nrrd")
    ext = ".nrrd" if output_format == "nrrd" else ".nii.gz"
    tensor, affine = pred.tensor, pred.affine
    what = SR_TENSOR if direction == "up" else "synthesised LR tensor FSL order mm2/s"
    volumes = {
        output: (tensor, what),
        output.with_name(f"{stem}_mask{ext}"): (pred.mask.astype(np.uint8), SR_MASK),
    }
    if maps:
        fa, md = fa_md(tensor)
        volumes[output.with_name(f"{stem}_FA{ext}")] = (fa, "fractional anisotropy")
        volumes[output.with_name(f"{stem}_MD{ext}")] = (md, "mean diffusivity mm2/s")
        volumes[output.with_name(f"{stem}_colFA{ext}")] = (colour_fa(tensor), "colour FA RGB")
    if pred.sd is not None:
        volumes[output.with_name(f"{stem}_sd{ext}")] = (pred.sd, "test-time SD mm2/s")
    tables: dict[Path, str] = {}
    tables_of: set[Path] = set()  # volumes whose 4th axis is time (the DWI), with b-tables
    if dwi:
        assert data.acquisition is not None
        signal, tables = synthesised_dwi(pred, data.acquisition, data.mask, model.cfg.data.factor)
        dwi_path = output.with_name(f"{stem}_dwi.nii.gz")
        volumes[dwi_path] = (signal, "DWI synthesised from the SR tensor")
        tables_of.add(dwi_path)
        tables = {dwi_path.with_name(f"{stem}_dwi{suffix}"): t for suffix, t in tables.items()}
    sidecar = output.with_name(f"{stem}.json")
    _refuse_overwriting_inputs([*volumes, *tables, sidecar], data.source, mask)
    tiling = {k: v for k, v in dataclasses.asdict(stats[0]).items() if "flop" not in k}
    text = json.dumps(
        {
            "Description": "dmri-revgan "
            + ("super-resolved" if direction == "up" else "synthesised low-resolution")
            + " tensor",
            "TensorOrder": "FSL (Dxx, Dxy, Dxz, Dyy, Dyz, Dzz)",
            "Units": "mm^2/s",
            "OutsideMask": 0.0,
            "EigenvaluesClipped": {"RangeMm2PerS": [0.0, 3.5e-3], "Voxels": pred.repaired},
            "Mask": {"File": f"{stem}_mask{ext}", "Method": MASK_METHOD[direction]},
            "Direction": direction,
            "Model": str(model.path.resolve()),
            "ModelSHA256": model.sha256,
            "ModelConfig": model.cfg.name,
            "ToolVersion": __version__,
            "Input": str(data.source.resolve()),
            **data.metadata,
            "Precision": precision,
            "Tiling": tiling,
            "TestTimeTransforms": uncertainty,
            "Adaptation": adaptation.to_dict() if adaptation is not None else None,
            "GradientCheck": data.gradient_check.to_dict() if data.gradient_check else None,
            "DWI": (
                {
                    "File": f"{stem}_dwi.nii.gz",
                    "Method": "S_k = S0 exp(-b_k g_k^T D g_k) on the input's gradient table; "
                    "S0: the input's mean b<50 image on the HR grid, edge-aware cubic spline "
                    "in the mask (the brain's values carried to its edge, at least 5 % of their "
                    "median), cubic outside; the "
                    "tensor was fitted to the b0 volumes and one shell, so other shells are its "
                    "prediction",
                    "Gradients": "FSL convention in .bval/.bvec (voxel axes, x mirrored when "
                    "the affine's determinant is positive), MRtrix world frame in .b",
                }
                if dwi
                else None
            ),
        },
        indent=2,
        default=float,
    )
    # Every output goes to a temporary file first; they are renamed only once all are written,
    # so a failure (disk full, folder not writable) leaves none of them behind.
    with contextlib.ExitStack() as stack:
        for path, (volume, description) in volumes.items():
            tmp = stack.enter_context(io.atomic_path(path))
            if output_format == "nrrd":
                write_nrrd(tmp, volume, affine, tensor=volume is tensor)
            else:
                image = io.nifti_image(
                    volume,
                    affine,
                    data.image.header,
                    description,
                    time_axis=path in tables_of,
                )
                nib.save(image, tmp)
        for path, table in tables.items():
            stack.enter_context(io.atomic_path(path)).write_text(table, encoding="utf-8")
        stack.enter_context(io.atomic_path(sidecar)).write_text(text, encoding="utf-8")
    return [*volumes, *tables, sidecar]


def _refuse_overwriting_inputs(outputs: list[Path], source: Path, mask: Path | None) -> None:
    """No output may land on the input, its b-tables or JSON sidecar, or the given mask (an
    ``--output`` stem like the input's, e.g. ``sub-01`` for ``sub-01_dwi.nii.gz`` with --dwi)."""
    from dmri_revgan.io import BVAL_NAMES, BVEC_NAMES, beside

    inputs = {source.resolve()}
    if source.is_file():
        stem = source.name.removesuffix(".gz").removesuffix(".nii")
        tables = (beside(source, BVAL_NAMES), beside(source, BVEC_NAMES))
        sides = (*tables, source.with_name(f"{stem}.json"))
        inputs |= {p.resolve() for p in sides if p is not None}
    if mask is not None:
        inputs.add(mask.resolve())
    for path in outputs:
        if path.resolve() in inputs:
            raise InputError(
                path, "an output would overwrite an input file; choose another --output"
            )


def synthesised_dwi(
    pred: Prediction, acquisition: Acquisition, lr_mask: np.ndarray, factor: int
) -> tuple[np.ndarray, dict[str, str]]:
    """The super-resolved DWI (X, Y, Z, N) float32 and its gradient tables as file texts by
    suffix (".bval", ".bvec": FSL; ".b": MRtrix ``gx gy gz b`` in world coordinates)."""
    from dmri_revgan.data.degrade import interpolate
    from dmri_revgan.dti import scanner_gradients, synthesise_dwi

    # S0 where the tensor was predicted: the edge-aware cubic spline (the LR brain's values
    # carried to the HR mask's edge, so every predicted voxel has signal to carry its tensor);
    # elsewhere the plain cubic spline of the whole b0 image.
    # Where the source itself holds no b0 signal inside the mask (zeroed background of a
    # skull-stripped series), S0 is raised to 5 % of the brain's median, so that the DWI still
    # carries the tensor predicted there.
    b0 = acquisition.b0[None]
    inside = interpolate(b0, factor, "edge_cubic", lr_mask)[0]
    floor = 0.05 * float(np.median(inside[pred.mask])) if pred.mask.any() else 0.0
    inside = np.maximum(inside, floor)
    s0 = np.clip(np.where(pred.mask, inside, interpolate(b0, factor, "cubic")[0]), 0.0, None)
    bvals, bvecs = acquisition.bvals, acquisition.bvecs
    signal = synthesise_dwi(pred.tensor, s0, bvals, bvecs)
    world = scanner_gradients(bvecs, pred.affine)

    def row(values: np.ndarray) -> str:
        return " ".join(f"{v:.6g}" for v in values) + "\n"

    tables = {
        ".bval": row(bvals),
        ".bvec": "".join(row(bvecs[:, i]) for i in range(3)),
        ".b": "".join(row([*g, b]) for g, b in zip(world, bvals, strict=True)),
    }
    return signal, tables
