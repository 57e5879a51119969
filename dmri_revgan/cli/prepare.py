"""``prepare hcp|dwi|bids|tensors|phantom``: raw data → HR/LR tensors, masks and a manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmri_revgan.cli.options import (
    FactorOption,
    GradientCheckOption,
    PersonsOption,
    SeedOption,
    ShellOption,
    SlabsOption,
    SplitOption,
    WorkersOption,
    check_gradient_policy,
    fail,
    parse_ratios,
    parse_slabs,
)

prepare_app = typer.Typer(help="Prepare data: HR/LR tensors, masks and a data manifest.")


def _prepare(run, description: str, total: int, split: str, persons: Path | None) -> None:
    """Run ``run(ratios, mapping, progress)`` → (outcomes, manifest) under a progress bar, then
    print one line per subject; exit 1 if any failed."""
    from dmri_revgan.data.persons import read_persons
    from dmri_revgan.errors import InputError
    from dmri_revgan.progress import progress_bar

    try:
        ratios = parse_ratios(split)
        mapping = read_persons(persons) if persons else None
        with progress_bar() as bar:
            task = bar.add_task(description, total=total)
            outcomes, manifest = run(ratios, mapping, lambda o: bar.advance(task))
    except (InputError, typer.BadParameter) as exc:
        fail(str(exc))
    _report_outcomes(outcomes, manifest)


@prepare_app.command("hcp")
def prepare_hcp_command(
    out: Annotated[Path, typer.Option(help="Output folder, e.g. prepared/")],
    hcp_root: Annotated[
        list[Path] | None,
        typer.Option(
            "--hcp-root",
            help="HCP folder with <subject>/T1w/Diffusion/, repeatable: several folders go into "
            "one manifest (subject ids unique across them); default: --persons' folder column",
        ),
    ] = None,
    subjects: Annotated[
        list[str] | None, typer.Option("--subjects", help="Only these subjects (repeatable)")
    ] = None,
    shell: ShellOption = 1000,
    factor: FactorOption = 2,
    workers: WorkersOption = 1,
    split: SplitOption = "0.7,0.15,0.15",
    seed: SeedOption = 0,
    persons: PersonsOption = None,
    gradient_check: GradientCheckOption = "fix",
    slabs: SlabsOption = "",
) -> None:
    """Fit HR tensors, simulate LR ones (IQT) and write data_manifest.csv, split by person.

    e.g. `prepare hcp --persons ../shared/data/persons.csv --split 1,0,0 --out prepared/`."""
    from dmri_revgan.data.hcp import discover
    from dmri_revgan.data.persons import read_persons_roots
    from dmri_revgan.errors import InputError

    def find() -> tuple[list, dict[str, str] | None]:
        if hcp_root:
            return discover(hcp_root, subjects), None
        if persons is None:
            raise InputError("--hcp-root", "give --hcp-root (repeatable) or --persons FILE")
        roots, mapping = read_persons_roots(persons)
        return discover(roots, subjects or list(mapping)), mapping

    _prepare_found(find, out, shell, factor, workers, split, seed, persons, gradient_check, slabs)


@prepare_app.command("dwi")
def prepare_dwi_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="DWI files: NIfTI with .bval/.bvec beside it, 3D Slicer .nrrd/.nhdr, or DICOM "
            "folders / .zip files (converted with dcm2niix into OUT/dicom/)"
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder, e.g. prepared/")],
    shell: ShellOption = 1000,
    factor: FactorOption = 2,
    workers: WorkersOption = 1,
    split: SplitOption = "0.7,0.15,0.15",
    seed: SeedOption = 0,
    persons: PersonsOption = None,
    series: Annotated[
        int | None,
        typer.Option(help="DICOM folders with several series: which one (as listed), e.g. 2"),
    ] = None,
    gradient_check: GradientCheckOption = "fix",
    slabs: SlabsOption = "",
) -> None:
    """Like `prepare hcp`, for loose DWI files (series id = file name stem)."""
    from dmri_revgan.data.prepare import dwi_records

    find = lambda: (dwi_records(files, out / "dicom", series), None)  # noqa: E731
    _prepare_found(find, out, shell, factor, workers, split, seed, persons, gradient_check, slabs)


@prepare_app.command("bids")
def prepare_bids_command(
    bids_root: Annotated[Path, typer.Option(help="BIDS dataset with sub-*/[ses-*/]dwi/")],
    out: Annotated[Path, typer.Option(help="Output folder, e.g. prepared/")],
    participant_label: Annotated[
        list[str] | None,
        typer.Option("--participant-label", help="Only these participants, e.g. 01 (repeatable)"),
    ] = None,
    shell: ShellOption = 1000,
    factor: FactorOption = 2,
    workers: WorkersOption = 1,
    split: SplitOption = "0.7,0.15,0.15",
    seed: SeedOption = 0,
    gradient_check: GradientCheckOption = "fix",
    slabs: SlabsOption = "",
) -> None:
    """Like `prepare hcp`, for the DWI series of a BIDS dataset (split by participant)."""
    from dmri_revgan.data import bids

    def find() -> tuple[list, dict[str, str]]:
        series = bids.find_dwi(bids_root, participant_label)
        return [s.record for s in series], bids.persons(series)

    _prepare_found(find, out, shell, factor, workers, split, seed, None, gradient_check, slabs)


def _prepare_found(
    find,
    out: Path,
    shell: float,
    factor: int,
    workers: int,
    split: str,
    seed: int,
    persons,
    gradient_check: str,
    slabs: str,
) -> None:
    """Find the records once (``find()`` → (records, their persons or None)), then prepare them
    under a progress bar; a person mapping from ``--persons`` wins over the finder's."""
    from dmri_revgan.data.prepare import prepare_records
    from dmri_revgan.errors import InputError

    check_gradient_policy(gradient_check)
    thick = parse_slabs(slabs)
    try:
        records, own = find()
    except InputError as exc:
        fail(str(exc))
    _prepare(
        lambda ratios, mapping, progress: prepare_records(
            records,
            out,
            shell,
            factor,
            workers,
            ratios,
            seed,
            mapping or own,
            progress,
            gradient_check,
            thick,
        ),
        "preparing DWI series",
        len(records) * (1 + len(thick)),
        split,
        persons,
    )


def _report_outcomes(outcomes: list, manifest: Path) -> None:
    """One line per subject (errors on stderr); exit 1 when any subject failed."""
    from dmri_revgan.data.manifest import read_manifest

    failed = [o for o in outcomes if o.error]
    for o in outcomes:
        if o.error:
            typer.echo(f"error: {o.error}", err=True)
            continue
        if o.excluded:
            typer.echo(f"{o.subject}: {o.excluded}")
            continue
        i = o.info
        note = " (up to date)" if o.skipped else ""
        mask = "; mask computed" if i["mask_computed"] else ""
        typer.echo(
            f"{o.subject}: b={i['bvalue']:.0f}, HR {i['hr_shape']}, LR {i['lr_shape']}, "
            f"repaired {i['repaired_hr']} HR / {i['repaired_lr']} LR voxels{mask}{note}"
        )
        if i.get("gradient_message"):
            typer.echo(f"warning: {i['gradient_message']}", err=True)
    if len(failed) < len(outcomes):
        typer.echo(f"manifest: {manifest} ({len(read_manifest(manifest))} series)")
    if failed:
        raise typer.Exit(code=1)


@prepare_app.command("tensors")
def prepare_tensors_command(
    tensors: Annotated[
        list[Path], typer.Argument(help="HR tensor NIfTIs (X, Y, Z, 6), e.g. */dti_tensor.nii.gz")
    ],
    out: Annotated[Path, typer.Option(help="Output folder, e.g. prepared/")],
    mask: Annotated[
        list[Path] | None,
        typer.Option(help="Brain mask per tensor, in order (default: nodif_brain_mask beside it)"),
    ] = None,
    order: Annotated[str, typer.Option(help="Channel order: fsl (dtifit) or dipy")] = "fsl",
    bvalue: Annotated[float, typer.Option(help="b-value the tensors were fitted at (s/mm²)")] = (
        1000
    ),
    factor: FactorOption = 2,
    workers: WorkersOption = 1,
    split: SplitOption = "0.7,0.15,0.15",
    seed: SeedOption = 0,
    persons: PersonsOption = None,
) -> None:
    """Prepare existing HR tensor volumes: masks, LR tensors (r³ block means) and the manifest."""
    from dmri_revgan.data.prepare_tensors import prepare_tensors

    _prepare(
        lambda ratios, mapping, progress: prepare_tensors(
            tensors, out, mask, order, factor, bvalue, workers, ratios, seed, mapping, progress
        ),
        "preparing tensors",
        len(tensors),
        split,
        persons,
    )


@prepare_app.command("phantom")
def prepare_phantom_command(
    out: Annotated[Path, typer.Option(help="Output folder (HCP layout), e.g. phantom/")],
    subjects: Annotated[int, typer.Option(help="Number of synthetic subjects")] = 6,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same subjects")] = 0,
    snr: Annotated[float, typer.Option(help="b=0 white-matter SNR of the Rician noise")] = 30.0,
) -> None:
    """Generate a synthetic DTI brain phantom in the HCP folder layout (true tensors included)."""
    from dmri_revgan.data.phantom import write_phantom_dataset
    from dmri_revgan.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task("generating phantom subjects", total=subjects)
        folders = write_phantom_dataset(
            out, subjects, seed, snr=snr, report=lambda s: bar.advance(task)
        )
    typer.echo(f"{len(folders)} phantom subjects in {out}")
