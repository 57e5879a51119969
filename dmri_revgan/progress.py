"""Progress bars that show on a terminal and stay silent in logs.

Rich draws a live bar on an interactive terminal; redirected to a file it would leave blank lines
behind, so there the bar is disabled and commands print plain one-line summaries instead.
"""

from __future__ import annotations

from typing import Any


def progress_bar(*columns: Any, disable: bool = False, **kwargs: Any) -> Any:
    """A transient ``rich.progress.Progress``; disabled when stderr/stdout is not a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    kwargs.setdefault("transient", True)
    return Progress(*columns, disable=disable or not Console().is_terminal, **kwargs)
