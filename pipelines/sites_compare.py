"""Compare recipes (e.g. architectures) by their leave-one-person-out results.

Reads the ``.json`` that ``pipelines/sites.py`` wrote for each recipe (same people, same
budget per fold) and writes one table: per recipe the parameter count, the patches each fold
trained (epochs × ``data.samples_per_volume`` × training series), the mean over people of
interior / total RMSE, the gain over cubic (interior) and edge-aware cubic (total), the worst
person's interior gain, the principal-eigenvector angle against cubic's, FA error; then each
person's interior gain per recipe. The recipe that wins the mean interior and total is named.

    python pipelines/sites_compare.py docs/benchmarks/sites.json \
        docs/benchmarks/sites_depth8.json docs/benchmarks/sites_width96.json \
        --out docs/benchmarks/sites_architecture
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path
from typing import Any

from sites import pct_below

from dmri_revgan.config import load_config
from dmri_revgan.io import write_text_atomic
from dmri_revgan.model import build_generator


def recipe_of(summary: dict[str, Any]) -> tuple[str, list[str]]:
    """The recipe name and the ``--set`` overrides of the command that made ``summary``."""
    words = shlex.split(summary["command"])
    sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
    return summary["recipe"], sets


def describe(summary: dict[str, Any]) -> dict[str, Any]:
    """One row of the comparison: the recipe's size and its cross-validated means."""
    name, sets = recipe_of(summary)
    cfg = load_config(name, sets)
    params = sum(p.numel() for p in build_generator(cfg).xy_parameters())
    folds = summary["folds"]
    n_series = summary.get("series_total") or sum(len(f["series"]) for f in folds.values())
    patches = {
        p: f["epochs"] * cfg.data.samples_per_volume * (n_series - len(f["series"]))
        for p, f in folds.items()
    }
    means = summary["mean_over_people"]
    m, c, e = means["model"], means["cubic"], means["edge_cubic"]
    gains = {
        p: pct_below(f["means"]["model"]["interior"], f["means"]["cubic"]["interior"])
        for p, f in folds.items()
    }
    v1_wins = sum(
        f["means"]["model"]["v1_angle_deg_interior"] < f["means"]["cubic"]["v1_angle_deg_interior"]
        for f in folds.values()
    )
    return {
        "recipe": " ".join([name, *sets]),
        "depth": cfg.model.depth,
        "width": cfg.model.width,
        "parameters": params,
        "budget_minutes_per_fold": summary["budget_minutes_per_fold"],
        "patches_per_fold": patches,
        "interior": m["interior"],
        "total": m["total"],
        "pct_below_cubic_interior": pct_below(m["interior"], c["interior"]),
        "pct_below_edge_cubic_total": pct_below(m["total"], e["total"]),
        "worst_person_pct_below_cubic_interior": min(gains.values()),
        "per_person_pct_below_cubic_interior": gains,
        "v1_angle_deg_interior": m["v1_angle_deg_interior"],
        "v1_angle_cubic": c["v1_angle_deg_interior"],
        "people_v1_below_cubic": v1_wins,
        "people": len(folds),
        "fa_mae_interior": m["fa_mae_interior"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path, nargs="+", help="sites.py .json files")
    parser.add_argument("--out", type=Path, required=True, help="stem of the .md and .json")
    args = parser.parse_args()
    summaries = [json.loads(p.read_text()) for p in args.results]
    budgets = {s["budget_minutes_per_fold"] for s in summaries}
    people = [sorted(s["folds"]) for s in summaries]
    if len(budgets) != 1 or any(p != people[0] for p in people):
        raise SystemExit("the results must share the budget per fold and the left-out people")
    rows = [describe(s) for s in summaries]
    best = min(rows, key=lambda r: (r["interior"], r["total"]))
    head = ["recipe", "depth × width", "parameters", "patches per fold (min–max)",
            "interior / total", "vs cubic (int.)", "vs edge-cubic (total)",
            "worst person vs cubic (int.)", "V1 angle ° (cubic)", "people V1 < cubic",
            "FA MAE"]  # fmt: skip
    lines = [
        "# Architecture at equal wall clock: leave-one-person-out",
        "",
        f"Each fold trains {budgets.pop():g} minutes on six people and scores the seventh "
        "(`pipelines/sites.py`); means over the 7 people, tensor RMSE in 10⁻⁵ mm²/s, V1 angle "
        "where the reference FA > 0.2. Made by `python pipelines/sites_compare.py "
        + " ".join(str(p) for p in args.results)
        + f" --out {args.out}`.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        patches = r["patches_per_fold"].values()
        lines.append(
            "| "
            + " | ".join([
                f"`{r['recipe']}`",
                f"{r['depth']} × {r['width']}",
                f"{r['parameters'] / 1e6:.2f} M",
                f"{min(patches):,}–{max(patches):,}",
                f"{r['interior']:.2f} / {r['total']:.2f}",
                f"{r['pct_below_cubic_interior']:+.1f} %",
                f"{r['pct_below_edge_cubic_total']:+.1f} %",
                f"{r['worst_person_pct_below_cubic_interior']:+.1f} %",
                f"{r['v1_angle_deg_interior']:.2f} ({r['v1_angle_cubic']:.2f})",
                f"{r['people_v1_below_cubic']} of {r['people']}",
                f"{r['fa_mae_interior']:.4f}",
            ])
            + " |"
        )  # fmt: skip
    persons = sorted(rows[0]["per_person_pct_below_cubic_interior"])
    lines += ["", "Interior RMSE below cubic, per left-out person:", ""]
    lines += ["| recipe | " + " | ".join(persons) + " |", "|" + "---|" * (len(persons) + 1)]
    for r in rows:
        gains = r["per_person_pct_below_cubic_interior"]
        cells = [f"{gains[p]:+.1f} %" for p in persons]
        lines.append(f"| {r['depth']} × {r['width']} | " + " | ".join(cells) + " |")
    winner = f"depth {best['depth']} × width {best['width']}"
    lines += ["", f"Best mean interior (then total): {winner}."]
    write_text_atomic(args.out.with_suffix(".md"), "\n".join(lines) + "\n")
    write_text_atomic(args.out.with_suffix(".json"), json.dumps(rows, indent=2, default=float))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
