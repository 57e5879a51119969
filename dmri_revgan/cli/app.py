"""The `dmri-revgan` command line.

Thin by design: each command parses its options, imports the heavy libraries (torch, MONAI,
dipy) inside its body so that `--help` answers instantly, calls one library function and prints
the result.
User mistakes end with exit code 1 and a single line `error: <file>: <problem>`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from dmri_revgan import __version__
from dmri_revgan.cli import bench, evaluate, infer, prepare, train
from dmri_revgan.cli.options import DEBUG_VARIABLE, choose_huge_pages

app = typer.Typer(
    name="dmri-revgan",
    help="Reversible GANs (RevGAN) for memory-efficient super-resolution of diffusion MRI.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"dmri-revgan {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help=f"Show the traceback behind an error line (or set {DEBUG_VARIABLE}=1).",
        ),
    ] = False,
) -> None:
    """Reversible GANs (RevGAN) for memory-efficient super-resolution of diffusion MRI."""
    choose_huge_pages(ctx.invoked_subcommand)
    if debug:
        import os

        os.environ[DEBUG_VARIABLE] = "1"


app.command()(train.train)
app.add_typer(bench.bench_app, name="bench")
app.add_typer(prepare.prepare_app, name="prepare")
app.command()(infer.infer)
app.command()(evaluate.evaluate)
app.command("bids")(infer.bids_app)
app.command()(train.export)
app.command()(evaluate.report)
app.command()(train.demo)
