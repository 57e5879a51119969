"""``train``, ``export`` and ``demo``: make a model, convert one, or run the whole chain on a
phantom."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmri_revgan.cli.evaluate import print_metrics
from dmri_revgan.cli.options import fail


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
    precision: Annotated[
        str | None,
        typer.Option(
            help="float32, or bf16 (autocast; CPUs with AVX-512 BF16 / AMX, GPUs from Ampere); "
            "default: the config's"
        ),
    ] = None,
    max_memory: Annotated[
        float | None,
        typer.Option(
            help="GiB the training process may use (default: what is free); plans the batch and "
            "whether the memory-saving backward is needed"
        ),
    ] = None,
) -> None:
    """Train a RevGAN on prepared data (paired, paired w/o GAN or unpaired, per the config)."""
    import sys

    from dmri_revgan.config import load_config
    from dmri_revgan.errors import InputError
    from dmri_revgan.training import run_training

    overrides = list(set_ or [])
    if manifest is not None:
        overrides.append(f"data.manifest={manifest}")
    if data is not None:
        overrides.append(f"data.root={data}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    if precision is not None:
        overrides.append(f"optim.precision={precision}")
    if max_memory is not None:
        overrides.append(f"optim.max_memory_gib={max_memory}")
    try:
        if resume is not None and run_dir is None:
            run_dir = resume if resume.is_dir() else resume.parent.parent
        if config is None:
            own = run_dir / "config.yaml" if resume is not None and run_dir else None
            config = str(own) if own is not None and own.is_file() else "hcp"
        cfg = load_config(config, overrides)
        folder = run_dir or Path("runs") / cfg.name
        summary = run_training(cfg, folder, resume, device, argv=sys.argv)
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
    print_metrics(result["evaluation"])
    typer.echo(f"report: {result['report']}")
