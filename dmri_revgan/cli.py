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
