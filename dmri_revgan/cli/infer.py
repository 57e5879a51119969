"""``infer`` and the BIDS App ``bids``: super-resolve the user's volumes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmri_revgan.cli.options import (
    GradientCheckOption,
    check_gradient_policy,
    fail,
    input_warnings,
)


def infer(
    input_: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="LR tensor NIfTI (6 channels), a 4D DWI with .bval/.bvec beside it, a 3D Slicer "
            "DWI NRRD, a folder or .zip of DICOM DWI, an HCP subject folder, or (2D models) a "
            "PNG/JPEG image or folder of them",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            help="Run folder (uses checkpoints/best.safetensors), a .safetensors model file, or "
            "'default': the shipped pretrained model (used when --model is absent)"
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="Output NIfTI (default <input>_sr.nii.gz / _lr.nii.gz)"
        ),
    ] = None,
    mask: Annotated[
        Path | None, typer.Option(help="Brain mask on the input grid (default: non-zero voxels)")
    ] = None,
    direction: Annotated[
        str, typer.Option(help="up: LR→HR with F; down: HR→LR with the reverse generator G")
    ] = "up",
    order: Annotated[str, typer.Option(help="Channel order of a tensor input: fsl or dipy")] = (
        "fsl"
    ),
    max_memory: Annotated[
        float,
        typer.Option(help="GiB for tile activations (default fits a 16 GB laptop); e.g. 1.5 or 8"),
    ] = 3.0,
    roi: Annotated[
        int | None,
        typer.Option(help="Tile edge in HR voxels, overriding --max-memory, e.g. 48"),
    ] = None,
    overlap: Annotated[
        float | None,
        typer.Option(help="Instance-norm (paper) models only: sliding-window overlap, e.g. 0.5"),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="float32, or bf16 on CPUs with native bfloat16 (AVX-512/AMX)")
    ] = "float32",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    maps: Annotated[bool, typer.Option(help="Also write FA, MD and colour-FA NIfTIs")] = False,
    uncertainty: Annotated[
        int,
        typer.Option(
            help="N > 1: mean of N tensor-aware flips/permutations, plus <out>_sd.nii.gz "
            "(per-voxel spread, mm²/s), e.g. 8"
        ),
    ] = 1,
    output_format: Annotated[
        str, typer.Option(help="nifti, or nrrd (3D Slicer tensor NRRD), e.g. nrrd")
    ] = "nifti",
    adapt: Annotated[
        float,
        typer.Option(
            help="Minutes to fine-tune a copy of the model on the input itself first (off: 0; "
            "measured in docs/benchmarks/sites_adapt.md), e.g. 1"
        ),
    ] = 0.0,
    adapt_steps: Annotated[
        int | None,
        typer.Option(help="With --adapt: stop after N steps (reproducible on any machine)"),
    ] = None,
    series: Annotated[
        int | None,
        typer.Option(help="DICOM folder with several series: which one (as listed), e.g. 2"),
    ] = None,
    dwi: Annotated[
        bool,
        typer.Option(
            help="DWI inputs: also write the super-resolved DWI (<out>_dwi.nii.gz, .bval/.bvec, "
            "MRtrix .b) synthesised from the tensor on the input's gradient table"
        ),
    ] = False,
    gradient_check: GradientCheckOption = "fix",
) -> None:
    """Super-resolve a diffusion tensor volume, or translate images with a 2D model.

    The result does not depend on --max-memory or --roi (tiles with a receptive-field halo, no
    blending); voxels outside the brain mask are 0. --direction down runs the weight-tied
    reverse generator G (HR → LR, or B → A for images).
    """
    from dmri_revgan.errors import InputError
    from dmri_revgan.io import preflight_input

    try:  # input errors in well under a second, before torch is imported
        preflight_input(input_)
    except InputError as exc:
        fail(str(exc))
    from dmri_revgan.inference import run_inference

    if order not in ("fsl", "dipy"):
        fail(f"--order: expected fsl or dipy, got {order!r}")
    if (overlap is not None and not 0 <= overlap < 1) or (roi is not None and roi < 4):
        fail("--overlap must be in [0, 1) and --roi ≥ 4")
    if max_memory <= 0:
        fail("--max-memory must be positive (GiB)")
    if adapt < 0 or (adapt_steps is not None and (adapt_steps < 1 or adapt == 0)):
        fail("--adapt must be ≥ 0 minutes, and --adapt-steps ≥ 1 needs --adapt")
    check_gradient_policy(gradient_check)
    model = _model_or_default(model)
    try:
        with input_warnings():
            written = run_inference(
                input_,
                model,
                output,
                mask,
                direction,
                order,
                roi,
                overlap,
                max_memory,
                device,
                maps,
                precision,
                uncertainty,
                output_format,
                adapt,
                adapt_steps,
                dwi,
                series,
                gradient_check,
            )
    except InputError as exc:
        fail(str(exc))
    for path in written:
        typer.echo(f"written: {path}")


def bids_app(
    bids_dir: Annotated[Path, typer.Argument(help="BIDS dataset, e.g. ds000001/")],
    output_dir: Annotated[Path, typer.Argument(help="Derivatives folder, e.g. derivatives/")],
    analysis_level: Annotated[str, typer.Argument(help="participant (the only level)")],
    model: Annotated[
        str | None,
        typer.Option(help="Run folder, .safetensors model file or 'default' (when absent)"),
    ] = None,
    participant_label: Annotated[
        list[str] | None,
        typer.Option("--participant-label", help="Participants to run, e.g. 01 (repeatable)"),
    ] = None,
    max_memory: Annotated[float, typer.Option(help="GiB for tile activations, e.g. 3")] = 3.0,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    dwi: Annotated[
        bool,
        typer.Option(
            help="Also write the super-resolved DWI (N volumes on the 2x grid: large for long "
            "series)"
        ),
    ] = True,
    gradient_check: GradientCheckOption = "fix",
) -> None:
    """BIDS App: super-resolve every DWI of the participants into BIDS derivatives
    (OUT/dmri-revgan/sub-*/[ses-*/]dwi/*_res-sr2x_model-tensor_dwimap.nii.gz, FA, MD, brain
    mask, and the super-resolved DWI)."""
    from dmri_revgan.bids_app import run_bids_app
    from dmri_revgan.errors import InputError

    check_gradient_policy(gradient_check)
    try:
        with input_warnings():
            written = run_bids_app(
                bids_dir,
                output_dir,
                analysis_level,
                participant_label,
                _model_or_default(model),
                max_memory,
                device,
                dwi,
                report=lambda s: typer.echo(f"super-resolving {s}"),
                gradient_check=gradient_check,
            )
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"written: {len(written)} maps under {output_dir / 'dmri-revgan'}")


def _model_or_default(model: str | None) -> str:
    """``--model`` as given, or the shipped pretrained model, announced in one line."""
    if model is not None:
        return model
    from dmri_revgan.model import PRETRAINED_FILE, PRETRAINED_NAME

    typer.echo(f"model: the shipped pretrained model ({PRETRAINED_FILE.name}; --model to change)")
    return PRETRAINED_NAME
