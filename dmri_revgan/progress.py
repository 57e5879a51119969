"""Progress bars that show on a terminal and stay silent in logs.

Rich draws a live bar on an interactive terminal; redirected to a file it would leave blank lines
behind, so there the bar is disabled and commands print plain one-line summaries instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def progress_bar(*columns: Any, disable: bool = False, **kwargs: Any) -> Any:
    """A transient ``rich.progress.Progress``; disabled when stderr/stdout is not a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    kwargs.setdefault("transient", True)
    return Progress(*columns, disable=disable or not Console().is_terminal, **kwargs)


@contextmanager
def epoch_bar(title: str, total: int, enabled: bool = True) -> Iterator[Callable[[str], None]]:
    """A training epoch's bar ("epoch 3/18 ━━━ 12/48 <info> 0:00:41"); yields ``advance(info)``,
    which moves it one step and shows ``info``."""
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn(title),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    with progress_bar(*columns, disable=not enabled) as bar:
        task = bar.add_task("train", total=total, info="")
        yield lambda info: bar.update(task, advance=1, info=info)
