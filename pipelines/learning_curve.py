"""Learning curve: leave-one-person-out quality against training compute, budgets in patches.

For every recipe, budget (patches trained, ``optim.max_patches``: the same count on any CPU) and
left-out person, the recipe trains on the other people's series (a cosine schedule over the
epochs that reach the budget) and its *last* model super-resolves every series of that person
from its LR tensor and LR mask alone, as ``infer`` does (``pipelines/sites.py`` scores it: tensor
RMSE interior / total / edge band in 10⁻⁵ mm²/s and the principal eigenvector's angle, against
cubic and edge-aware cubic).

The work is a list of *units* (recipe, budget, person), smallest budget first. A finished unit's
scores go into ``<docs>/<name>.json`` at once, and a unit found there is never trained again: the
committed JSON carries the curve from one machine to the next, and an interrupted unit resumes
from its run folder under ``--work``. ``--max-hours`` stops before a unit that the measured speed
says would not finish in time. Every run writes ``.md`` and ``.png`` from all units so far, with a
log-linear fit of the gain per tenfold patches and the budget it predicts for a target gain.

    python pipelines/learning_curve.py --budgets 4000,12000,40000 --folds B,C,D,G
    python pipelines/learning_curve.py --recipes hcp+model.depth=8 --budgets 40000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from real_data import machine, train
from sites import fold_manifest, person_means, prepare, score_fold

from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.io import save_figure, write_text_atomic

TARGETS = {"interior": ("cubic", 20.0), "total": ("edge_cubic", 12.0)}  # issue 29's goals, %


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=Path, default=Path("../shared/data/persons.csv"))
    parser.add_argument("--work", type=Path, default=Path("results/learning_curve"))
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"), help="results")
    parser.add_argument("--budgets", default="4000,12000,40000", help="patches per fold")
    parser.add_argument(
        "--recipes", default="hcp", help="comma-separated CONFIG[+key=value...][+slabs]"
    )
    parser.add_argument("--folds", default="B,C,D,G", help="left-out persons (D: thick slices)")
    parser.add_argument("--name", default="learning_curve", help="stem of the result files")
    parser.add_argument("--precision", choices=("auto", "float32", "bf16"), default="auto",
                        help="auto: bf16 where the CPU has it natively")  # fmt: skip
    parser.add_argument("--max-hours", type=float, default=None, help="stop before overrunning")
    parser.add_argument("--report-only", action="store_true", help="tabulate, train nothing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="override for every unit")
    return parser.parse_args()


def native_precision() -> str:
    """bf16 where this CPU runs it natively (the recipe's speed-up), else float32."""
    from dmri_revgan.inference.runtime import check_precision

    try:
        check_precision("bf16", "cpu")
    except ValueError:
        return "float32"
    return "bf16"


SLABS = (2, 3)  # a recipe "CONFIG+slabs" trains on these thick-slice copies too (prepare --slabs)


def split_recipe(recipe: str) -> tuple[str, tuple[int, ...]]:
    """``hcp+slabs`` → (``hcp``, :data:`SLABS`): the training recipe and its data's slab copies."""
    parts = recipe.split("+")
    return "+".join(p for p in parts if p != "slabs"), SLABS if "slabs" in parts else ()


def unit_key(recipe: str, budget: int, person: str) -> str:
    return f"{recipe}|{budget}|{person}"


def run_unit(
    args: argparse.Namespace, manifest: Path, recipe: str, budget: int, person: str
) -> dict[str, Any]:
    """Train (or resume) one fold at one budget and score its last model on the left-out
    person's series."""
    fold = fold_manifest(manifest, person)
    config, slabs = split_recipe(recipe)
    runs = args.work / f"runs-{person}-{budget}{'-slabs' if slabs else ''}"
    started = time.perf_counter()
    run, cfg = train(config, fold, runs, budget, args, unit="patches")
    records = read_manifest(fold)
    held_out = [r for r in records if r.split == "val"]
    train_series = [r for r in records if r.split == "train"]
    scored = score_fold(run, held_out, runs / "scores.json")
    epochs = (run / "metrics.csv").read_text().splitlines()
    head = epochs[0].split(",")
    rows = [dict(zip(head, line.split(","), strict=True)) for line in epochs[1:]]
    return {
        "recipe": recipe,
        "budget_patches": budget,
        "person": person,
        "series": [r.subject for r in held_out],
        "train_series": len(train_series),
        "train_slab_copies": sum(bool(r.source) for r in train_series),
        "patches": int(sum(float(r["patches"]) for r in rows)),
        "epochs": len(rows),
        "train_minutes": float(rows[-1]["train_minutes"]),
        "patches_per_s": float(np.mean([float(r["patches_per_s"]) for r in rows])),
        "precision": cfg.optim.precision,
        "machine": machine(),
        "wall_minutes": (time.perf_counter() - started) / 60,
        "per_series": scored["series"],
        "means": person_means(scored["series"]),
    }


def gain(means: dict[str, dict[str, float]], region: str) -> float:
    """The model's RMSE percentage below the region's baseline (:data:`TARGETS`)."""
    base = TARGETS[region][0]
    return 100.0 * (1.0 - means["model"][region] / means[base][region])


def curve_points(units: dict[str, Any], recipe: str) -> dict[int, dict[str, Any]]:
    """{budget: {person: unit}} of one recipe."""
    points: dict[int, dict[str, Any]] = {}
    for u in units.values():
        if u["recipe"] == recipe:
            points.setdefault(u["budget_patches"], {})[u["person"]] = u
    return dict(sorted(points.items()))


def fit_budget(points: dict[int, dict[str, Any]], people: list[str], region: str) -> str:
    """Least-squares line of the mean gain against log10(patches) over the budgets every
    person in ``people`` has, and the budget it predicts for the target gain (an extrapolation
    of measured points, labelled as such)."""
    full = {b: p for b, p in points.items() if all(q in p for q in people)}
    if len(full) < 2:
        return "needs two complete budgets"
    x = np.log10(list(full))
    y = np.array([np.mean([gain(p[q]["means"], region) for q in people]) for p in full.values()])
    slope, intercept = np.polyfit(x, y, 1)
    goal = TARGETS[region][1]
    text = f"{slope:+.2f} points per 10× patches"
    if y[-1] >= goal:
        return text + f"; {goal:g} % reached"
    if slope <= 0:
        return text + f"; {goal:g} % not reached by more patches of this data"
    return text + f"; {goal:g} % predicted at ≈ {10 ** ((goal - intercept) / slope):,.0f} patches"


def table(units: dict[str, Any], recipe: str, people: list[str]) -> list[str]:
    """One row per budget: per-person interior gain, the means and the worst person."""
    head = ["patches / fold", *[f"{p}: % below cubic (int.)" for p in people],
            "mean int. / total / edge (model)", "mean % below cubic (int.)",
            "mean % below edge-cubic (total)", "worst person (int.)",
            "V1 ° model / cubic / edge-cubic (mean)", "people with V1 < cubic"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for budget, found in curve_points(units, recipe).items():
        present = [p for p in people if p in found]
        means = [found[p]["means"] for p in present]

        def mean(method: str, key: str, means: list[Any] = means) -> float:
            return float(np.mean([m[method][key] for m in means]))

        v1 = "v1_angle_deg_interior"
        cells = [
            f"{budget:,}",
            *[f"{gain(found[p]['means'], 'interior'):+.1f}" if p in found else "…" for p in people],
            f"{mean('model', 'interior'):.2f} / {mean('model', 'total'):.2f} / "
            f"{mean('model', 'exterior'):.2f}",
            f"{np.mean([gain(m, 'interior') for m in means]):+.1f}",
            f"{np.mean([gain(m, 'total') for m in means]):+.1f}",
            f"{min(gain(m, 'interior') for m in means):+.1f}",
            f"{mean('model', v1):.2f} / {mean('cubic', v1):.2f} / {mean('edge_cubic', v1):.2f}",
            f"{sum(m['model'][v1] < m['cubic'][v1] for m in means)} of {len(means)}",
        ]
        if len(present) < len(people):
            cells[0] += f" ({len(present)} of {len(people)} folds)"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(units: dict[str, Any], recipes: list[str], people: list[str], path: Path) -> None:
    """Gain vs patches per fold (log scale): each person thin, the mean thick, per recipe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharex=True)
    for ax, region in zip(axes, TARGETS, strict=True):
        for i, recipe in enumerate(recipes):
            points = curve_points(units, recipe)
            colour = f"C{i}"
            for person in people:
                xs = [b for b, p in points.items() if person in p]
                ys = [gain(points[b][person]["means"], region) for b in xs]
                ax.plot(xs, ys, color=colour, alpha=0.35, lw=1, marker=".")
                if xs:
                    ax.annotate(person, (xs[-1], ys[-1]), fontsize=7, color=colour)
            full = [b for b, p in points.items() if all(q in p for q in people)]
            means = [np.mean([gain(points[b][q]["means"], region) for q in people]) for b in full]
            ax.plot(full, means, color=colour, lw=2.5, marker="o", label=f"{recipe} (mean)")
        base, goal = TARGETS[region]
        ax.axhline(goal, color="grey", ls="--", lw=1, label=f"goal {goal:g} %")
        ax.set(xscale="log", xlabel="patches trained per fold",
               ylabel=f"% RMSE below {base.replace('_', '-')} ({region})")  # fmt: skip
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def write_docs(summary: dict[str, Any], args: argparse.Namespace) -> str:
    """``<name>.json`` (every unit), ``.md`` (a table per recipe) and ``.png``."""
    units, people = summary["units"], summary["folds"]
    recipes = list(dict.fromkeys(u["recipe"] for u in units.values()))
    write_text_atomic(args.docs / f"{args.name}.json", json.dumps(summary, indent=2, default=float))
    if not units:
        return ""
    plot(units, recipes, people, args.docs / f"{args.name}.png")
    machines = sorted({f"{u['machine']} ({u['precision']})" for u in units.values()})
    lines = [
        "# Learning curve: leave-one-person-out quality against patches trained",
        "",
        f"Command: `{summary['command']}`  ",
        f"Machines: {'; '.join(machines)}  ",
        f"Left-out people: {', '.join(people)} (D: the thick-slice series). Each fold trains the "
        "recipe on every other person's series for a budget of patches (cosine decay over the "
        "epochs that reach it) and its *last* model super-resolves every series of the left-out "
        "person from its LR tensor and LR mask, as `infer` does. Tensor RMSE in 10⁻⁵ mm²/s "
        "(interior / total / edge band); gains are per person (mean of their series), then "
        "averaged over people; V1: principal eigenvector angle (degrees, reference FA > 0.2).",
    ]
    for recipe in recipes:
        points = curve_points(units, recipe)
        lines += ["", f"## `{recipe}`", "", *table(units, recipe, people), ""]
        for region, (base, goal) in TARGETS.items():
            lines.append(f"- {region} vs {base.replace('_', '-')} (goal {goal:g} %): "
                         f"{fit_budget(points, people, region)}")  # fmt: skip
    lines += ["", f"![learning curve]({args.name}.png)"]
    text = "\n".join(lines) + "\n"
    write_text_atomic(args.docs / f"{args.name}.md", text)
    return text


def main() -> None:
    args = parse_args()
    budgets = sorted(int(float(b)) for b in args.budgets.split(","))
    recipes = [r for r in args.recipes.split(",") if r]
    people = [p for p in args.folds.split(",") if p]
    precision = native_precision() if args.precision == "auto" else args.precision
    args.set = ["validate_every=100000", f"optim.precision={precision}", *args.set]
    path = args.docs / f"{args.name}.json"
    summary = json.loads(path.read_text()) if path.is_file() else {"units": {}}
    summary |= {"command": "python " + " ".join(sys.argv), "folds": people,
                "unit": "tensor RMSE 1e-5 mm^2/s; V1 angle degrees (ref FA > 0.2)"}  # fmt: skip
    todo = [(r, b, p) for b in budgets for r in recipes for p in people
            if unit_key(r, b, p) not in summary["units"]]  # fmt: skip
    deadline = time.time() + 3600 * args.max_hours if args.max_hours else None
    manifests: dict[tuple[int, ...], Path] = {}
    here = machine()
    for recipe, budget, person in [] if args.report_only else todo:
        rates = [u["patches_per_s"] for u in summary["units"].values()  # this machine's only
                 if u["machine"] == here and u["precision"] == precision]  # fmt: skip
        if deadline and rates and time.time() + budget / min(rates) > deadline:
            print(f"stopping before {recipe} {budget} {person}: would overrun --max-hours")
            break
        slabs = split_recipe(recipe)[1]
        if slabs not in manifests:
            folder = args.work / ("prepared" + "".join(f"-slab{k}" for k in slabs))
            manifests[slabs] = prepare(args.persons, folder, args.workers, slabs)
        unit = run_unit(args, manifests[slabs], recipe, budget, person)
        summary["units"][unit_key(recipe, budget, person)] = unit
        write_docs(summary, args)
        print(json.dumps({unit_key(recipe, budget, person): unit["means"]["model"]}), flush=True)
    print(write_docs(summary, args))


if __name__ == "__main__":
    main()
