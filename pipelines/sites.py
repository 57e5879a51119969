"""Leave-one-person-out cross-validation over the shared real series (7 people, 7 scanner models).

Every series named in the persons file (``subject,person,folder``) is prepared once into one
manifest. For each person P, the recipe trains on the other people's series for the same
wall-clock budget (``optim.max_minutes``; the schedule follows the budget) and its *last* model
super-resolves every series of P from the LR tensor and LR mask alone, exactly as ``infer`` does
(the HR mask only scores). Scored against nearest, cubic and edge-aware cubic: tensor RMSE
(interior / total / edge band, 10⁻⁵ mm²/s), FA mean absolute error, MD RMSE and the principal
eigenvector's angular error (degrees, reference FA > 0.2), per series, per person (mean of their
series) and as the mean over people.

Writes ``<docs>/<name>.md``, ``.json`` and ``.png``. Finished folds are only scored again
(their scores are cached with the model file's checksum), unfinished ones are resumed, so the
pipeline can be stopped and restarted.

    python pipelines/sites.py --persons ../shared/data/persons.csv --budget-minutes 10
    python pipelines/sites.py --folds B,E --budget-minutes 3 --name sites_quick
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

from dmri_revgan.data.manifest import read_manifest, write_manifest
from dmri_revgan.data.persons import read_persons_roots
from dmri_revgan.evaluate import evaluate_subjects
from dmri_revgan.inference import infer_volume, read_prepared
from dmri_revgan.io import save_figure, write_text_atomic
from dmri_revgan.model import load_model

METHODS = ("model", "edge_cubic", "cubic", "nearest")
KEYS = ("interior", "total", "exterior", "fa_mae_interior", "md_rmse_interior",
        "v1_angle_deg_interior", "v1_angle_deg_total")  # fmt: skip


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=Path, default=Path("../shared/data/persons.csv"))
    parser.add_argument("--work", type=Path, default=Path("results/sites"), help="data, runs")
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"), help="results")
    parser.add_argument("--budget-minutes", type=float, default=10.0, help="per fold")
    parser.add_argument("--recipe", default="hcp", help="CONFIG[+key=value...]")
    parser.add_argument("--folds", default="", help="comma-separated persons (default: all)")
    parser.add_argument("--name", default="sites", help="stem of the result files")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="override for every fold")
    parser.add_argument(
        "--adapt", type=float, default=0.0, help="also score infer --adapt MINUTES per series"
    )
    parser.add_argument(
        "--adapt-from",
        choices=("tensor", "dwi"),
        default="tensor",
        help="--adapt's input: the LR tensor, or the LR DWI (the series' DWI block-averaged 2x)",
    )
    return parser.parse_args()


def prepare(persons: Path, out: Path, workers: int, slabs: tuple[int, ...] = ()) -> Path:
    """Prepare every series of the persons file once, all in one manifest (split set per fold),
    with ``slabs``: and the thick-slice copies of the near-isotropic ones."""
    from dmri_revgan.data.prepare import prepare_hcp

    roots, mapping = read_persons_roots(persons)
    outcomes, manifest = prepare_hcp(
        roots, out, list(mapping), workers=workers, ratios=(1, 0, 0), persons=mapping, slabs=slabs
    )
    failed = [o for o in outcomes if o.error]
    if failed:
        raise SystemExit(f"preparation failed: {failed[0].error}")
    return manifest


def fold_manifest(manifest: Path, person: str) -> Path:
    """The manifest with ``person``'s acquired series in ``val`` and everyone else in ``train``
    (beside it); ``person``'s thick-slice copies are left out."""
    records = [r for r in read_manifest(manifest) if not (r.source and r.person == person)]
    for r in records:
        r.split = "val" if r.person == person else "train"
    path = manifest.with_name(f"lopo-{person}.csv")
    write_manifest(path, records)
    return path


def score_fold(run: Path, records: list[Any], cache: Path) -> dict[str, Any]:
    """Per-series metrics of the fold's last model and the baselines (cached by model SHA)."""
    model = load_model(run / "checkpoints" / "last.safetensors")
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["model_sha256"] == model.sha256:
            return saved
    seconds = 0.0

    def predict(record: Any) -> np.ndarray:
        nonlocal seconds
        start = time.perf_counter()
        pred = infer_volume(model, read_prepared(record))
        seconds += time.perf_counter() - start
        return np.moveaxis(pred.tensor, -1, 0)

    scores = evaluate_subjects(records, predict)
    result = {"model_sha256": model.sha256, "series": scores, "infer_seconds": seconds}
    write_text_atomic(cache, json.dumps(result, indent=2, default=float))
    return result


def lr_dwi_input(record: Any, roots: list[Path]) -> Any:
    """A series as ``infer`` reads a user's LR DWI: the raw DWI averaged over r³ blocks
    (``prepare``'s own simulation, so its fit is the prepared LR tensor) with its gradient table,
    that LR tensor and the LR mask."""
    from dmri_revgan.data.degrade import block_mean, crop_to_multiple
    from dmri_revgan.data.hcp import discover
    from dmri_revgan.inference.inputs import Acquisition
    from dmri_revgan.io import read_bvals_bvecs, read_nifti

    (subject,) = discover(roots, [record.subject])
    dwi, _ = read_nifti(subject.dwi, ndim=4)
    bvals, bvecs = read_bvals_bvecs(subject.bvals, subject.bvecs, dwi.shape[-1])
    dwi = block_mean(crop_to_multiple(dwi, record.factor), record.factor)
    data = read_prepared(record)
    data.acquisition = Acquisition.from_signal(dwi, bvals, bvecs)
    return data


def score_adapted(
    run: Path, records: list[Any], cache: Path, minutes: float, roots: list[Path] | None = None
) -> dict[str, Any]:
    """Per-series metrics of the fold's last model after ``infer --adapt minutes`` on each
    series (``adapt_model``, then ``infer_volume``), with what each adaptation did. With
    ``roots`` (the raw series' folders) the input is the LR DWI (:func:`lr_dwi_input`), else
    the LR tensor."""
    from dmri_revgan.inference.adapt import adapt_model

    model = load_model(run / "checkpoints" / "last.safetensors")
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved["model_sha256"] == model.sha256 and saved["minutes"] == minutes:
            return saved
    adaptations: dict[str, Any] = {}

    def predict(record: Any) -> np.ndarray:
        data = lr_dwi_input(record, roots) if roots else read_prepared(record)
        adapted, report = adapt_model(model, data, minutes)
        adaptations[record.subject] = report.to_dict()
        return np.moveaxis(infer_volume(adapted, data).tensor, -1, 0)

    scores = evaluate_subjects(records, predict)
    result = {
        "model_sha256": model.sha256,
        "minutes": minutes,
        "series": {s: v["model"] for s, v in scores.items()},
        "adaptation": adaptations,
    }
    write_text_atomic(cache, json.dumps(result, indent=2, default=float))
    return result


def adapt_table(folds: dict[str, dict[str, Any]], minutes: float) -> list[str]:
    """Adapted vs not, per left-out person (mean of their series), and how many it helps."""
    head = ["left out", "interior: model / adapted", "total: model / adapted",
            "V1 angle: model / adapted (°)", "adaptation s per series", "steps (kept)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    helped = 0
    for person, fold in folds.items():
        m, a, runs = fold["means"]["model"], fold["adapted"]["means"], fold["adapted"]["runs"]
        helped += a["interior"] < m["interior"]
        cells = [
            person,
            f"{m['interior']:.2f} / {a['interior']:.2f}",
            f"{m['total']:.2f} / {a['total']:.2f}",
            f"{m['v1_angle_deg_interior']:.2f} / {a['v1_angle_deg_interior']:.2f}",
            f"{np.mean([r['seconds'] for r in runs]):.0f}",
            ", ".join(f"{r['steps']} ({r['kept_step']})" for r in runs),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"`infer --adapt {minutes:g}` lowers the interior RMSE for {helped} of "
              f"{len(folds)} left-out people (the bar for making it the default: at least 5 of "
              "the 7 shared people; `infer` keeps it off unless asked)."]  # fmt: skip
    return lines


def person_means(series: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """{method: {key: mean over the person's series}}."""
    return {
        m: {k: float(np.mean([s[m][k] for s in series.values()])) for k in KEYS} for m in METHODS
    }


def mean_over_people(folds: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """{method: {key: mean over the left-out people}} (each person weighs the same)."""
    means = [f["means"] for f in folds.values()]
    return {m: {k: float(np.mean([v[m][k] for v in means])) for k in KEYS} for m in METHODS}


def pct_below(model: float, base: float) -> float:
    return 100.0 * (1.0 - model / base)


def table(folds: dict[str, dict[str, Any]]) -> list[str]:
    """One row per left-out person and the mean over people."""
    head = ["left out", "series", "epochs / min", "model int. / total / edge",
            "cubic int. / total", "edge-aware cubic int. / total", "% below cubic (int.)",
            "% below edge-cubic (total)", "V1 angle model / cubic / edge-cubic (°)",
            "FA MAE model / cubic (int.)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    means = {p: f["means"] for p, f in folds.items()}
    for person, v in [*means.items(), ("**mean**", mean_over_people(folds))]:
        fold = folds.get(person, {})
        m, c, e = v["model"], v["cubic"], v["edge_cubic"]
        cells = [
            person,
            ", ".join(fold.get("series", [])) or f"{len(folds)} people",
            f"{fold['epochs']} / {fold['train_minutes']:.1f}" if fold else "",
            f"{m['interior']:.2f} / {m['total']:.2f} / {m['exterior']:.2f}",
            f"{c['interior']:.2f} / {c['total']:.2f}",
            f"{e['interior']:.2f} / {e['total']:.2f}",
            f"{pct_below(m['interior'], c['interior']):+.1f}",
            f"{pct_below(m['total'], e['total']):+.1f}",
            f"{m['v1_angle_deg_interior']:.2f} / {c['v1_angle_deg_interior']:.2f} / "
            f"{e['v1_angle_deg_interior']:.2f}",
            f"{m['fa_mae_interior']:.4f} / {c['fa_mae_interior']:.4f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def plot(folds: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    people = list(folds)
    x = np.arange(len(people))
    fig, ax = plt.subplots(figsize=(8, 4))
    bars = (("cubic", "interior", "vs cubic, interior"),
            ("edge_cubic", "total", "vs edge-aware cubic, total"))  # fmt: skip
    for i, (base, region, label) in enumerate(bars):
        values = [
            pct_below(folds[p]["means"]["model"][region], folds[p]["means"][base][region])
            for p in people
        ]
        ax.bar(x + (i - 0.5) * 0.4, values, 0.4, label=label)
    ax.axhline(0, color="black", lw=0.8)
    ax.set(xticks=x, xticklabels=people, xlabel="left-out person", ylabel="% RMSE below")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    args = parse_args()
    args.set = [
        "validate_every=100000",
        *args.set,
    ]  # the whole budget trains; the last model scores
    manifest = prepare(args.persons, args.work / "prepared", args.workers)
    records = read_manifest(manifest)
    people = sorted({r.person for r in records})
    chosen = [p for p in args.folds.split(",") if p] or people
    folds: dict[str, dict[str, Any]] = {}
    dwi = args.adapt_from == "dwi"  # --adapt from each series' LR DWI, found under these roots
    roots = read_persons_roots(args.persons)[0] if dwi else None
    for person in chosen:
        fold = fold_manifest(manifest, person)
        run, _ = train(args.recipe, fold, args.work / f"runs-{person}", args.budget_minutes, args)
        held_out = [r for r in read_manifest(fold) if r.split == "val"]
        scored = score_fold(run, held_out, args.work / f"scores-{person}.json")
        curve = (run / "metrics.csv").read_text().splitlines()
        last = dict(zip(curve[0].split(","), curve[-1].split(","), strict=True))
        folds[person] = {
            "series": [r.subject for r in held_out],
            "epochs": int(float(last["epoch"])),
            "train_minutes": float(last["train_minutes"]),
            "infer_seconds": scored["infer_seconds"],
            "per_series": scored["series"],
            "means": person_means(scored["series"]),
        }
        if args.adapt > 0:
            cache = args.work / f"scores-{person}-adapt{args.adapt:g}{'-dwi' * dwi}.json"
            adapted = score_adapted(run, held_out, cache, args.adapt, roots)
            keys = ("interior", "total", "v1_angle_deg_interior")
            series = adapted["series"].values()
            folds[person]["adapted"] = {
                "per_series": adapted["series"],
                "means": {k: float(np.mean([v[k] for v in series])) for k in keys},
                "runs": list(adapted["adaptation"].values()),
            }
        print(json.dumps({person: folds[person]["means"]["model"]}), flush=True)
    args.docs.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    summary = {
        "command": command,
        "machine": machine(),
        "recipe": args.recipe,
        "budget_minutes_per_fold": args.budget_minutes,
        "series_total": len(records),
        "unit": "tensor and MD RMSE 1e-5 mm^2/s; FA MAE unitless; V1 angle degrees (ref FA > 0.2)",
        "folds": folds,
        "mean_over_people": mean_over_people(folds),
    }
    write_text_atomic(args.docs / f"{args.name}.json", json.dumps(summary, indent=2, default=float))
    plot(folds, args.docs / f"{args.name}.png")
    lines = [
        "# Leave-one-person-out: the default recipe on people and scanners it never saw",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"Recipe `{args.recipe}`, {args.budget_minutes:g} minutes of training per fold on the "
        "other people's series; the *last* model of each fold super-resolves every series of the "
        "left-out person from its LR tensor and LR mask (as `infer`). Tensor RMSE in "
        "10⁻⁵ mm²/s (interior / total / edge band = total minus interior), per person the mean "
        "of their series; V1 angle: principal eigenvector, degrees, where the reference FA > 0.2.",
        "",
        *table(folds),
        "",
        f"![per-person gains]({args.name}.png)",
    ]
    if args.adapt > 0:
        lines += [
            "",
            f"## Self-adaptation: `infer --adapt {args.adapt:g}` on each left-out series",
            "",
            "The fold's model fine-tuned on each series' own pair one scale down ("
            + (
                "the LR DWI — the series' DWI averaged over 2³ blocks — averaged again and fitted"
                if dwi
                else "the LR tensor block-averaged 2×"
            )
            + ", edge-aware cubic back; `dmri_revgan/inference/adapt.py`) for "
            f"{args.adapt:g} minute(s), weights kept by a held-back quarter of the series.",
            "",
            *adapt_table(folds, args.adapt),
        ]
    write_text_atomic(args.docs / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
