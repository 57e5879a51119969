"""Measuring a benchmark's process: resident memory now and at peak, and running one
measurement in a fresh interpreter so that each configuration starts from the same state."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dmri_revgan.training.memory import rss_bytes  # noqa: F401 - re-exported to the benchmarks


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def in_subprocess(
    function: Callable[..., dict[str, Any]], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Run ``function(**kwargs)`` (a module-level function) in a fresh interpreter; return its
    JSON result, or ``kwargs`` with the last line of the error."""
    code = (
        "import json, sys, warnings; warnings.filterwarnings('ignore'); "
        f"from {function.__module__} import {function.__name__} as f; "
        "print(json.dumps(f(**json.loads(sys.argv[1]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True
    )
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["failed"])[-1]
        return {**kwargs, "error": tail}
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_in_subprocesses(
    function: Callable[..., dict[str, Any]],
    configs: Sequence[dict[str, Any]],
    report: Callable[[str], Any] = print,
) -> list[dict[str, Any]]:
    """Each configuration of ``measure_inference`` / ``measure_training_speed`` in its own
    fresh process; rows in order (a failed one carries ``error``)."""
    rows = []
    for kwargs in configs:
        row = in_subprocess(function, kwargs)
        report(json.dumps({k: v for k, v in row.items() if k != "torch_threads"}))
        rows.append(row)
    return rows
