"""User-facing errors: one line naming the file and the problem."""

from __future__ import annotations

from pathlib import Path


class InputWarning(UserWarning):
    """Input that can be processed but looks wrong; the CLI shows it as one ``warning:`` line."""


class InputError(Exception):
    """Bad user input; its text is ``<path>: <problem>``, shown as ``error: <path>: <problem>``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        problem = " ".join(problem.split())  # a dependency's multi-line reason, on one line
        super().__init__(f"{path}: {problem}")
        self.path = Path(path)
        self.problem = problem
