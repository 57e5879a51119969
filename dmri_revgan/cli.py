"""The `dmri-revgan` command line.

Thin by design: each command parses its options, imports the heavy libraries (torch, MONAI,
dipy) inside its body so that `--help` answers instantly, calls one library function and prints
the result.
User mistakes end with exit code 1 and a single line `error: <file>: <problem>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmri_revgan import __version__

app = typer.Typer(
    name="dmri-revgan",
    help="Reversible GANs (RevGAN) for memory-efficient super-resolution of diffusion MRI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class UserError(Exception):
    """A mistake in the user's input: reported as one line, never as a traceback."""


def fail(message: str) -> None:
    """Print `error: <message>` to stderr and exit with status 1."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dmri-revgan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Reversible GANs (RevGAN) for memory-efficient super-resolution of diffusion MRI."""


@app.command()
def train(
    config: Annotated[
        str | None,
        typer.Argument(
            help="Config name in configs/ (e.g. hcp, hcp-d8-unpaired) or a path; default hcp, "
            "or with --resume the run's own config.yaml."
        ),
    ] = None,
    manifest: Annotated[
        Path | None,
        typer.Option(
            help="Data manifest (e.g. prepared/data_manifest.csv); default: the config's."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="2D configs: pix2pix/CycleGAN image folder, e.g. datasets/maps"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, repeatable: --set model.depth=8"),
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run folder (default runs/<config name>), e.g. runs/hcp8")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue a run from its folder or a checkpoint, e.g. runs/hcp"),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    seed: Annotated[int | None, typer.Option(help="Random seed (overrides the config's)")] = None,
) -> None:
    """Train a RevGAN on prepared data (paired, paired w/o GAN or unpaired, per the config)."""
    import sys

    from dmri_revgan.config import load_config
    from dmri_revgan.errors import InputError
    from dmri_revgan.train import train_from_manifest, train_images

    overrides = list(set_ or [])
    if manifest is not None:
        overrides.append(f"data.manifest={manifest}")
    if data is not None:
        overrides.append(f"data.root={data}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    try:
        if resume is not None and run_dir is None:
            run_dir = resume if resume.is_dir() else resume.parent.parent
        if config is None:
            own = run_dir / "config.yaml" if resume is not None and run_dir else None
            config = str(own) if own is not None and own.is_file() else "hcp"
        cfg = load_config(config, overrides)
        folder = run_dir or Path("runs") / cfg.name
        run = train_images if cfg.model.spatial_dims == 2 else train_from_manifest
        summary = run(cfg, folder, resume, device, argv=sys.argv)
    except (InputError, ValueError) as exc:
        fail(str(exc))
    _print_training_summary(summary)


def _print_training_summary(summary: dict) -> None:
    typer.echo(f"run folder: {summary['run_dir']} ({summary['epochs']} epochs)")
    if summary.get("patches_per_s"):
        typer.echo(f"training speed: {summary['patches_per_s']:.2f} patches/s")
    if "model" in summary:
        typer.echo("validation RMSE (1e-5 mm^2/s):   interior    total")
        for method in ("model", "cubic", "edge_cubic"):
            r = summary[method]
            typer.echo(f"  {method:<28} {r['interior']:9.3f} {r['total']:8.3f}")


bench_app = typer.Typer(help="Memory and speed benchmarks (JSON, markdown and PNG results).")
app.add_typer(bench_app, name="bench")


@bench_app.command("memory")
def bench_memory(
    dims: Annotated[int, typer.Option(help="2 (Maps-style ResNet) or 3 (HCP SRCNN)")] = 3,
    depths: Annotated[str, typer.Option(help="Comma-separated depths, e.g. 2,4,8,16,32")] = (
        "2,4,8,16,32"
    ),
    modes: Annotated[
        str, typer.Option(help="Comma-separated: naive,revgan,checkpoint,memcnn")
    ] = "naive,revgan,checkpoint,memcnn",
    width: Annotated[int, typer.Option(help="Generator width K, e.g. 64")] = 64,
    size: Annotated[
        int | None, typer.Option(help="Patch edge (default 24 in 3D, 256 in 2D)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    steps: Annotated[int, typer.Option(help="Timed steps after one warm-up step")] = 3,
    rounds: Annotated[
        int, typer.Option(help="Interleaved rounds per depth for the × naive ratio")
    ] = 5,
    out: Annotated[Path, typer.Option(help="Results folder, e.g. results/")] = Path("results"),
) -> None:
    """Activation memory, peak memory and step time of training steps vs depth (paper Table 5)."""
    from dmri_revgan.bench import memory_benchmark, write_results

    try:
        depth_list = [int(d) for d in depths.split(",")]
        rows = memory_benchmark(
            dims,
            depth_list,
            modes.split(","),
            width,
            size or (24 if dims == 3 else 256),
            device,
            steps,
            rounds,
            report=typer.echo,
        )
    except ValueError as exc:
        fail(f"--depths/--modes: {exc}")
    paths = write_results(rows, out, f"memory_{dims}d")
    typer.echo(paths["md"].read_text())
    typer.echo(f"written: {', '.join(str(p) for p in paths.values())}")


def _int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        fail(f"{option}: expected comma-separated integers, got {text!r}")
        raise


def _write_speed(rows: list, out: Path, stem: str) -> None:
    from dmri_revgan.bench import speed_table, write_json
    from dmri_revgan.io import write_text_atomic

    table = speed_table(rows)
    write_json(rows, out / f"{stem}.json")
    write_text_atomic(out / f"{stem}.md", table)
    typer.echo(table)
    typer.echo(f"written: {out / f'{stem}.json'}, {out / f'{stem}.md'}")


@bench_app.command("infer")
def bench_infer(
    shapes: Annotated[
        str,
        typer.Option(
            help="HR volumes X,Y,Z separated by ';' (HCP size, then the shared real grids)"
        ),
    ] = "145,174,145;80,80,40;64,64,40;72,72,38",
    depth: Annotated[int, typer.Option(help="Reversible blocks")] = 4,
    width: Annotated[int, typer.Option(help="Generator width K")] = 64,
    precisions: Annotated[
        str, typer.Option(help="Comma-separated: float32, bf16 (bf16 only where native)")
    ] = "float32",
    old_default: Annotated[
        bool, typer.Option(help="Also time the old default (24³ sliding window) in this run")
    ] = True,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    out: Annotated[Path, typer.Option(help="Results folder")] = Path("results"),
) -> None:
    """Full-volume inference: seconds, bbox_work_ratio, peak_fraction, speedup_vs_old_default,
    peak RSS — each configuration in a fresh process (JSON + markdown)."""
    from dmri_revgan.bench import inference_rows
    from dmri_revgan.infer import check_precision

    volumes = [tuple(_int_list(s, "--shapes")) for s in shapes.split(";") if s.strip()]
    kinds = [p.strip() for p in precisions.split(",") if p.strip()]
    try:
        for p in kinds:
            check_precision(p, device)
    except ValueError as exc:
        fail(str(exc))
    rows = inference_rows(volumes, depth, width, kinds, old_default, device, report=typer.echo)
    _write_speed(rows, out, "inference" if device == "cpu" else f"inference_{device[:4]}")


@bench_app.command("train")
def bench_train(
    depths: Annotated[str, typer.Option(help="Comma-separated depths")] = "0,2,4,8",
    width: Annotated[int, typer.Option(help="Generator width K")] = 64,
    size: Annotated[int, typer.Option(help="Patch edge")] = 24,
    batch: Annotated[int, typer.Option(help="Patches per step (paper: 1)")] = 1,
    steps: Annotated[int, typer.Option(help="Timed steps after one warm-up step")] = 5,
    device: Annotated[str, typer.Option(help="cpu or cuda")] = "cpu",
    out: Annotated[Path, typer.Option(help="Results folder")] = Path("results"),
    configs: Annotated[
        str, typer.Option(help="Comma-separated configs whose objective to run, e.g. maps")
    ] = "hcp-paper",
    name: Annotated[str, typer.Option(help="Results file stem")] = "training_speed",
) -> None:
    """Samples/s of full RevGAN training steps, memory saving on and off, per config and depth."""
    from dmri_revgan.bench import run_in_subprocesses

    runs = [
        dict(
            depth=d,
            memory_saving=m,
            width=width,
            size=size,
            batch=batch,
            steps=steps,
            device=device,
            config=c,
        )
        for c in configs.split(",")
        for d in _int_list(depths, "--depths")
        for m in (True, False)
    ]
    rows = run_in_subprocesses("measure_training_speed", runs, report=typer.echo)
    _write_speed(rows, out, name if device == "cpu" else f"{name}_{device[:4]}")


prepare_app = typer.Typer(help="Prepare data: HR/LR tensors, masks and a data manifest.")
app.add_typer(prepare_app, name="prepare")


def _ratios(text: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise typer.BadParameter("expected three non-negative numbers, e.g. 0.7,0.15,0.15")
    return values  # type: ignore[return-value]


# Options shared by the `prepare` commands that write a manifest.
FactorOption = Annotated[int, typer.Option(help="Down-sampling factor r of the LR simulation")]
WorkersOption = Annotated[int, typer.Option(help="Parallel processes, e.g. 2")]
SplitOption = Annotated[
    str, typer.Option(help="Train,val,test ratios over persons, e.g. 0.8,0.2,0")
]
SeedOption = Annotated[int, typer.Option(help="Seed of the split by person")]
ShellOption = Annotated[float, typer.Option(help="b-value to fit (s/mm²); nearest shell used")]
PersonsOption = Annotated[
    Path | None, typer.Option(help="CSV `subject,person` (default: one person per subject)")
]


def _prepare(run, description: str, total: int, split: str, persons: Path | None) -> None:
    """Run ``run(ratios, mapping, progress)`` → (outcomes, manifest) under a progress bar, then
    print one line per subject; exit 1 if any failed."""
    from dmri_revgan.data.prepare import read_persons
    from dmri_revgan.errors import InputError
    from dmri_revgan.progress import progress_bar

    try:
        ratios = _ratios(split)
        mapping = read_persons(persons) if persons else None
        with progress_bar() as bar:
            task = bar.add_task(description, total=total)
            outcomes, manifest = run(ratios, mapping, lambda o: bar.advance(task))
    except (InputError, typer.BadParameter) as exc:
        fail(str(exc))
    _report_outcomes(outcomes, manifest)


@prepare_app.command("hcp")
def prepare_hcp_command(
    hcp_root: Annotated[Path, typer.Option(help="HCP folder with <subject>/T1w/Diffusion/")],
    out: Annotated[Path, typer.Option(help="Output folder, e.g. prepared/")],
    subjects: Annotated[
        list[str] | None, typer.Option("--subjects", help="Only these subjects (repeatable)")
    ] = None,
    shell: ShellOption = 1000,
    factor: FactorOption = 2,
    workers: WorkersOption = 1,
    split: SplitOption = "0.7,0.15,0.15",
    seed: SeedOption = 0,
    persons: PersonsOption = None,
) -> None:
    """Fit HR tensors, simulate LR ones (IQT) and write data_manifest.csv."""
    from dmri_revgan.data.hcp import discover

    find = lambda: (discover(hcp_root, subjects), None)  # noqa: E731
    _prepare_found(find, out, shell, factor, workers, split, seed, persons)


@prepare_app.command("dwi")
def prepare_dwi_command(
    files: Annotated[
        list[Path],
        typer.Argument(
            help="DWI files: NIfTI with .bval/.bvec beside it, or 3D Slicer .nrrd/.nhdr"
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder, e.g. prepared/")],
    shell: ShellOption = 1000,
    factor: FactorOption = 2,
    workers: WorkersOption = 1,
    split: SplitOption = "0.7,0.15,0.15",
    seed: SeedOption = 0,
    persons: PersonsOption = None,
) -> None:
    """Like `prepare hcp`, for loose DWI files (series id = file name stem)."""
    from dmri_revgan.data.prepare import dwi_records

    find = lambda: (dwi_records(files), None)  # noqa: E731
    _prepare_found(find, out, shell, factor, workers, split, seed, persons)


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
) -> None:
    """Like `prepare hcp`, for the DWI series of a BIDS dataset (split by participant)."""
    from dmri_revgan.data import bids

    def find() -> tuple[list, dict[str, str]]:
        series = bids.find_dwi(bids_root, participant_label)
        return [s.record for s in series], bids.persons(series)

    _prepare_found(find, out, shell, factor, workers, split, seed, None)


def _prepare_found(
    find, out: Path, shell: float, factor: int, workers: int, split: str, seed: int, persons
) -> None:
    """Find the records once (``find()`` → (records, their persons or None)), then prepare them
    under a progress bar; a person mapping from ``--persons`` wins over the finder's."""
    from dmri_revgan.data.prepare import prepare_records
    from dmri_revgan.errors import InputError

    try:
        records, own = find()
    except InputError as exc:
        fail(str(exc))
    _prepare(
        lambda ratios, mapping, progress: prepare_records(
            records, out, shell, factor, workers, ratios, seed, mapping or own, progress
        ),
        "preparing DWI series",
        len(records),
        split,
        persons,
    )


def _report_outcomes(outcomes: list, manifest: Path) -> None:
    """One line per subject (errors on stderr); exit 1 when any subject failed."""
    failed = [o for o in outcomes if o.error]
    for o in outcomes:
        if o.error:
            typer.echo(f"error: {o.error}", err=True)
            continue
        i = o.info
        note = " (up to date)" if o.skipped else ""
        mask = "; mask computed" if i["mask_computed"] else ""
        typer.echo(
            f"{o.subject}: b={i['bvalue']:.0f}, HR {i['hr_shape']}, LR {i['lr_shape']}, "
            f"repaired {i['repaired_hr']} HR / {i['repaired_lr']} LR voxels{mask}{note}"
        )
    if len(failed) < len(outcomes):
        typer.echo(f"manifest: {manifest} ({len(outcomes) - len(failed)} subjects)")
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
    from dmri_revgan.data.prepare import prepare_tensors

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


@app.command()
def infer(
    input_: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="LR tensor NIfTI (6 channels), a 4D DWI with .bval/.bvec beside it, an HCP "
            "subject folder, or (2D models) a PNG/JPEG image or folder of them",
        ),
    ],
    model: Annotated[
        Path,
        typer.Option(
            help="Run folder (uses checkpoints/best.safetensors) or a .safetensors model file"
        ),
    ],
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
) -> None:
    """Super-resolve a diffusion tensor volume, or translate images with a 2D model.

    The result does not depend on --max-memory or --roi (tiles with a receptive-field halo, no
    blending); voxels outside the brain mask are 0. --direction down runs the weight-tied
    reverse generator G (HR → LR, or B → A for images).
    """
    from dmri_revgan.errors import InputError
    from dmri_revgan.infer import run_inference

    if order not in ("fsl", "dipy"):
        fail(f"--order: expected fsl or dipy, got {order!r}")
    if (overlap is not None and not 0 <= overlap < 1) or (roi is not None and roi < 4):
        fail("--overlap must be in [0, 1) and --roi ≥ 4")
    if max_memory <= 0:
        fail("--max-memory must be positive (GiB)")
    import warnings

    from dmri_revgan.errors import InputWarning

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", InputWarning)
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
            )
    except InputError as exc:
        fail(str(exc))
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            typer.echo(f"warning: {warning.message}", err=True)
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )
    for path in written:
        typer.echo(f"written: {path}")


def _print_metrics(result: dict) -> None:
    typer.echo(
        f"tensor RMSE ({result['unit']}), mean ± std over {len(result['subjects'])} subjects"
    )
    typer.echo(f"  {'method':<10} {'interior':>16} {'total':>16} {'edge band':>16}")
    for method, values in result["summary"].items():
        cells = " ".join(
            f"{values[r]['mean']:8.3f} ± {values[r]['std']:5.3f}"
            for r in ("interior", "total", "exterior")
        )
        typer.echo(f"  {method:<10} {cells}")
    model = result["summary"].get("model", {})
    if "pct_below_cubic_interior" in model:
        pct = {k: model[k]["mean"] for k in model if k.startswith("pct_below_")}
        typer.echo(
            "  model vs cubic: "
            f"{pct['pct_below_cubic_interior']:+.1f} % interior, "
            f"{pct['pct_below_cubic_total']:+.1f} % total; vs edge-aware cubic: "
            f"{pct['pct_below_edge_cubic_interior']:+.1f} % interior, "
            f"{pct['pct_below_edge_cubic_total']:+.1f} % total (positive = lower RMSE)"
        )


@app.command()
def evaluate(
    manifest: Annotated[
        Path | None, typer.Option(help="3D: data manifest, e.g. prepared/data_manifest.csv")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Run folder or checkpoint whose predictions to score")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Or a folder of <subject>_sr.nii.gz predictions")
    ] = None,
    split: Annotated[str, typer.Option(help="Manifest split to evaluate: train, val or test")] = (
        "test"
    ),
    out: Annotated[
        Path | None, typer.Option(help="Results folder (default <run>/evaluation)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    data: Annotated[
        Path | None, typer.Option(help="2D: aligned image folder (default: the run's data.root)")
    ] = None,
    segmenter: Annotated[
        Path | None,
        typer.Option(
            help="2D Cityscapes: segmenter (torch.export .pt2 or TorchScript) for the FCN-score"
        ),
    ] = None,
) -> None:
    """Score a model against interpolation baselines (3D) or in both directions (2D).

    3D: tensor RMSE interior / total / exterior (1e-5 mm²/s), FA and MD errors, for the model and
    nearest / trilinear / cubic / edge-aware cubic interpolation, the edge band (total minus
    interior) and the model's % below cubic and edge-aware cubic. 2D: MAE / PSNR / SSIM or
    Cityscapes label scores.
    """
    from dmri_revgan.errors import InputError
    from dmri_revgan.evaluate import run_evaluation
    from dmri_revgan.progress import progress_bar

    if model is not None and predictions is not None:
        fail("give either --model or --predictions, not both")
    try:
        if model is not None and _is_2d(model):
            _evaluate_images(model, data, split, out, device, segmenter)
            return
        if manifest is None:
            fail("--manifest is required for 3D evaluation")
        with progress_bar() as bar:
            task = bar.add_task(f"evaluating the {split} split", total=None)
            result = run_evaluation(
                manifest,
                model,
                predictions,
                split,
                out,
                device,
                report=lambda s: bar.update(task, description=f"evaluating {s}", advance=1),
            )
    except InputError as exc:
        fail(str(exc))
    _print_metrics(result)
    folder = out or ((model if model.is_dir() else model.parent.parent) / "evaluation")
    typer.echo(f"written: {folder / 'metrics.json'}, {folder / 'metrics.csv'}")


def _is_2d(model: Path) -> bool:
    from dmri_revgan.model import model_config

    return model_config(model).model.spatial_dims == 2


def _evaluate_images(
    model: Path, data: Path | None, split: str, out: Path | None, device: str, seg: Path | None
) -> None:
    from dmri_revgan.evaluate import evaluate_images
    from dmri_revgan.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task(f"evaluating the {split} images", total=None)
        result = evaluate_images(
            model, data, split, out, device, seg, report=lambda s: bar.advance(task)
        )
    typer.echo(f"{len(result['subjects'])} images of {result['data']}/{split}")
    for direction, values in result["summary"].items():
        cells = ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.3g}" for k, v in values.items())
        dataset = ", ".join(f"{k} {v:.4g}" for k, v in result["dataset"].get(direction, {}).items())
        typer.echo(f"  {direction} ({result['directions'].get(direction, 'FCN-score')}): {cells}")
        if dataset:
            typer.echo(f"      over all pixels: {dataset}")
    if result["label_domain"] and "fcn" not in result["summary"]:
        typer.echo(f"  note: {result['fcn_score']}")


@app.command("bids")
def bids_app(
    bids_dir: Annotated[Path, typer.Argument(help="BIDS dataset, e.g. ds000001/")],
    output_dir: Annotated[Path, typer.Argument(help="Derivatives folder, e.g. derivatives/")],
    analysis_level: Annotated[str, typer.Argument(help="participant (the only level)")],
    model: Annotated[Path, typer.Option(help="Run folder or .safetensors model file")],
    participant_label: Annotated[
        list[str] | None,
        typer.Option("--participant-label", help="Participants to run, e.g. 01 (repeatable)"),
    ] = None,
    max_memory: Annotated[float, typer.Option(help="GiB for tile activations, e.g. 3")] = 3.0,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
) -> None:
    """BIDS App: super-resolve every DWI of the participants into BIDS derivatives
    (OUT/dmri-revgan/sub-*/[ses-*/]dwi/*_res-sr2x_model-tensor_dwimap.nii.gz, FA, MD)."""
    from dmri_revgan.bids_app import run_bids_app
    from dmri_revgan.errors import InputError

    try:
        written = run_bids_app(
            bids_dir,
            output_dir,
            analysis_level,
            participant_label,
            model,
            max_memory,
            device,
            report=lambda s: typer.echo(f"super-resolving {s}"),
        )
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"written: {len(written)} maps under {output_dir / 'dmri-revgan'}")


@app.command()
def export(
    run: Annotated[
        Path | None,
        typer.Argument(help="Run folder or .safetensors model file to export, e.g. runs/hcp"),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Write a MONAI bundle into this folder, e.g. bundle/")
    ] = None,
    from_: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="Old-format torch checkpoint to convert, e.g. runs/old/checkpoints/best.pt",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="With --from: model file to write (default: beside it)")
    ] = None,
) -> None:
    """Export a model as a MONAI bundle (RUN --bundle OUT), or convert an old torch checkpoint
    into a safe model file (--from OLD.pt).

    Old files are read with torch.load(weights_only=True): plain tensors and numbers only, so a
    crafted pickle cannot run code; anything else is refused.
    """
    from dmri_revgan.errors import InputError

    if (from_ is None) == (run is None or bundle is None):
        fail("give either RUN --bundle OUT (MONAI bundle) or --from OLD.pt (conversion)")
    try:
        if from_ is not None:
            from dmri_revgan.model import convert_checkpoint

            written = convert_checkpoint(from_, out)
        else:
            from dmri_revgan.bundle import export_bundle

            written = export_bundle(run, bundle)
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"written: {written}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder, e.g. runs/hcp")],
    split: Annotated[str, typer.Option(help="Split to evaluate when not yet evaluated")] = "test",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    uncertainty: Annotated[
        int, typer.Option(help="N > 1: show each subject's test-time SD beside its error, e.g. 8")
    ] = 1,
) -> None:
    """Write <run>/report.html (self-contained, figures embedded) and report.pdf."""
    from dmri_revgan.errors import InputError
    from dmri_revgan.report import report_run

    try:
        paths = report_run(run_dir, split, device, uncertainty)
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"written: {', '.join(str(p) for p in paths.values())}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for everything the demo makes")] = Path(
        "demo_output"
    ),
    subjects: Annotated[int, typer.Option(help="Phantom subjects (train/val/test by person)")] = 6,
    seed: Annotated[int, typer.Option(help="Seed of the phantom, the split and training")] = 0,
    workers: Annotated[int, typer.Option(help="Processes for data preparation")] = 2,
) -> None:
    """Phantom → prepare → train a small paired RevGAN → infer → evaluate → report, in minutes."""
    from dmri_revgan.demo import run_demo
    from dmri_revgan.errors import InputError

    try:
        result = run_demo(out, subjects, seed, workers, say=typer.echo)
    except InputError as exc:
        fail(str(exc))
    _print_metrics(result["evaluation"])
    typer.echo(f"report: {result['report']}")
