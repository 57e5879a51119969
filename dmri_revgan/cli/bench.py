"""``bench memory|infer|train``: the benchmarks, written as JSON, markdown and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmri_revgan.cli.options import choose_huge_pages, fail, int_list

bench_app = typer.Typer(help="Memory and speed benchmarks (JSON, markdown and PNG results).")


@bench_app.callback()
def _bench(ctx: typer.Context) -> None:
    """Memory and speed benchmarks (JSON, markdown and PNG results)."""
    choose_huge_pages(ctx.invoked_subcommand)  # bench infer measures what infer runs with


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
    from dmri_revgan.inference import check_precision

    volumes = [tuple(int_list(s, "--shapes")) for s in shapes.split(";") if s.strip()]
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
    precisions: Annotated[
        str, typer.Option(help="Comma-separated: float32, bf16 (native bfloat16 only)")
    ] = "float32",
) -> None:
    """Patches/s, useful conv FLOP/s against the same run's conv peak, and the step's peak
    memory of full training steps, memory saving on and off, per config, depth and precision."""
    from dmri_revgan.bench import measure_training_speed, run_in_subprocesses
    from dmri_revgan.inference.runtime import check_precision

    kinds = precisions.split(",")
    try:
        for p in kinds:
            check_precision(p, device)
    except ValueError as exc:
        fail(str(exc))
    common = {"width": width, "size": size, "batch": batch, "steps": steps, "device": device}
    runs = [
        {**common, "depth": d, "memory_saving": m, "config": c, "precision": p}
        for c in configs.split(",")
        for d in int_list(depths, "--depths")
        for p in kinds
        for m in (True, False)
    ]
    rows = run_in_subprocesses(measure_training_speed, runs, report=typer.echo)
    _write_speed(rows, out, name if device == "cpu" else f"{name}_{device[:4]}")
