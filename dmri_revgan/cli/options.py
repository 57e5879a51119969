"""What every verb shares: the one-line error exit and the option types of several verbs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

DEBUG_VARIABLE = "DMRI_REVGAN_DEBUG"  # set (or `dmri-revgan --debug …`) to see tracebacks
# The commands whose time goes to whole-volume inference.
HUGE_PAGE_COMMANDS = frozenset({"infer", "bids", "evaluate", "report"})


def choose_huge_pages(command: str | None) -> None:
    """Back PyTorch's large CPU tensors with transparent huge pages (``THP_MEM_ALLOC_ENABLE``)
    for the commands that run whole-volume inference, and not for the others (PyTorch's
    default). Inference allocates maps of hundreds of MB whose first-touch page faults cost a
    third of its time without them (HCP-size volume 29.9 s → 19.8 s); a training step's many
    smaller blocks take ≈ 20 % more memory and run slower with them (depth 4, batch 8,
    float32: step RSS 0.82–0.87 vs 1.02–1.05 GiB and 8.8–9.5 vs 5.4–5.8 patches/s with
    memory-saving off, 7.1–7.3 vs 6.5–6.9 patches/s with it on). PyTorch reads the variable
    once, at its first allocation, so this runs before any command imports torch. A value the
    user set wins."""
    if command in HUGE_PAGE_COMMANDS:
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")


def fail(message: str) -> None:
    """Print `error: <message>` to stderr and exit with status 1; in debug mode the traceback
    of the exception being handled (a dependency's original error) comes first."""
    import os
    import sys
    import traceback

    if os.environ.get(DEBUG_VARIABLE) and sys.exc_info()[0] is not None:
        traceback.print_exc()
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=1)


def int_list(text: str, option: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        fail(f"{option}: expected comma-separated integers, got {text!r}")
        raise


def parse_ratios(text: str) -> tuple[float, float, float]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != 3 or min(values) < 0 or sum(values) <= 0:
        raise typer.BadParameter("expected three non-negative numbers, e.g. 0.7,0.15,0.15")
    return values  # type: ignore[return-value]


# A DWI's gradient table checked against the anatomy (infer, bids, prepare).
GradientCheckOption = Annotated[
    str,
    typer.Option(
        "--gradient-check",
        help="DWI inputs: fix a b-vector axis that is mirrored or permuted relative to the "
        "anatomy (found by tracking, as MRtrix dwigradcheck), warn only, or off; e.g. warn",
    ),
]


@contextlib.contextmanager
def input_warnings() -> Iterator[None]:
    """Show every :class:`~dmri_revgan.errors.InputWarning` raised inside as one
    ``warning: ...`` line on stderr once the block has succeeded; other warnings as Python
    shows them."""
    import warnings

    from dmri_revgan.errors import InputWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        yield
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            typer.echo(f"warning: {warning.message}", err=True)
        else:
            warnings.showwarning(
                warning.message, warning.category, warning.filename, warning.lineno
            )


def check_gradient_policy(policy: str) -> None:
    """Exit with one line unless ``policy`` is one of :data:`gradient_check.POLICIES`."""
    from dmri_revgan.gradient_check import POLICIES

    if policy not in POLICIES:
        choices = f"{', '.join(POLICIES[:-1])} or {POLICIES[-1]}"
        fail(f"--gradient-check: expected {choices}, got {policy!r}")


# Options shared by the `prepare` commands that write a manifest.
FactorOption = Annotated[int, typer.Option(help="Down-sampling factor r of the LR simulation")]

SlabsOption = Annotated[
    str,
    typer.Option(
        help="Also train on thick-slice copies of the near-isotropic series: slices averaged "
        "per copy, e.g. 2,3 (voxels 1:1:2 and 1:1:3, as clinical scans); training split only"
    ),
]


def parse_slabs(text: str) -> tuple[int, ...]:
    """``--slabs 2,3`` → (2, 3); empty → no copies; exits with one line otherwise."""
    try:
        slabs = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        slabs = (0,)
    if any(k < 2 for k in slabs) or len(set(slabs)) != len(slabs):
        fail(f"--slabs: expected distinct slice counts of 2 or more, e.g. 2,3; got {text!r}")
    return slabs


WorkersOption = Annotated[int, typer.Option(help="Parallel processes, e.g. 2")]

SplitOption = Annotated[
    str,
    typer.Option(help="Train,val,test ratios over persons, e.g. 0.8,0.2,0 (1,0,0: all in train)"),
]

SeedOption = Annotated[int, typer.Option(help="Seed of the split by person")]

ShellOption = Annotated[float, typer.Option(help="b-value to fit (s/mm²); nearest shell used")]

PersonsOption = Annotated[
    Path | None,
    typer.Option(
        help="CSV `subject,person[,folder]` (folder relative to the file), e.g. persons.csv; "
        "default: one person per subject"
    ),
]
