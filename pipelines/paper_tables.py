"""Shared recipe of the paper-table pipelines: train each config, evaluate it, tabulate.

Used by ``hcp_table3.py``, ``cityscapes_table2.py`` and ``maps_table4.py``; each row is one config
trained to the end of its schedule (or resumed when its run folder already has a checkpoint) and
scored on the test split. Results: ``<out>/<stem>.json`` (rows) and ``<out>/<stem>.md``.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dmri_revgan.config import load_config
from dmri_revgan.io import write_text_atomic


def parse_args(description: str, configs: Sequence[str], data_help: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", type=Path, required=True, help=data_help)
    parser.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    parser.add_argument("--runs", type=Path, default=Path("runs"), help="run folders")
    parser.add_argument("--configs", default=",".join(configs), help="comma-separated configs")
    parser.add_argument("--split", default="test", help="split to score")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--set", action="append", default=[], help="override for every config, e.g. epochs"
    )
    return parser.parse_args()


def run_table(
    args: argparse.Namespace,
    stem: str,
    train: Callable[[Any, Path, Path | None], dict[str, Any]],
    evaluate: Callable[[Path], dict[str, Any]],
    columns: Sequence[tuple[str, str, str]],
    data_key: str,
) -> list[dict[str, Any]]:
    """Train and evaluate every config; ``columns`` = (header, method, metric) of the summary."""
    rows = []
    for name in args.configs.split(","):
        cfg = load_config(name, [f"{data_key}={args.data}", *args.set])
        run = args.runs / cfg.name
        resume = run if (run / "checkpoints" / "last.pt").is_file() else None
        train(cfg, run, resume)
        summary = evaluate(run)["summary"]
        row: dict[str, Any] = {"config": name, "depth": cfg.model.depth, "width": cfg.model.width}
        row["objective"] = cfg.loss.objective + ("" if cfg.loss.use_gan else " w/o GAN")
        for header, method, metric in columns:
            value = summary.get(method, {}).get(metric)
            row[header] = None if value is None else value["mean"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    headers = ["config", "objective", "depth", "width", *(h for h, _, _ in columns)]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        cells = [f"{row[h]:.3f}" if isinstance(row[h], float) else str(row[h]) for h in headers]
        lines.append("| " + " | ".join(cells) + " |")
    write_text_atomic(args.out / f"{stem}.json", json.dumps(rows, indent=2))
    write_text_atomic(args.out / f"{stem}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return rows
