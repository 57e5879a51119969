"""``evaluate`` and ``report``: score a model against the interpolation baselines and write
the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dmri_revgan.cli.options import fail


def print_metrics(result: dict) -> None:
    typer.echo(
        f"tensor RMSE ({result['unit']}), mean ± std over {len(result['subjects'])} subjects"
    )
    typer.echo(f"  {'method':<10} {'interior':>16} {'total':>16} {'edge band':>16}")
    for method, values in result["summary"].items():
        cells = " ".join(
            f"{values[r]['mean']:8.3f} ± {values[r]['std']:5.3f}"
            for r in ("interior", "total", "exterior")
        )
        typer.echo(f"  {method:<10} {cells}")
    model = result["summary"].get("model", {})
    if "pct_below_cubic_interior" in model:
        pct = {k: model[k]["mean"] for k in model if k.startswith("pct_below_")}
        typer.echo(
            "  model vs cubic: "
            f"{pct['pct_below_cubic_interior']:+.1f} % interior, "
            f"{pct['pct_below_cubic_total']:+.1f} % total; vs edge-aware cubic: "
            f"{pct['pct_below_edge_cubic_interior']:+.1f} % interior, "
            f"{pct['pct_below_edge_cubic_total']:+.1f} % total (positive = lower RMSE)"
        )


def evaluate(
    manifest: Annotated[
        Path | None, typer.Option(help="3D: data manifest, e.g. prepared/data_manifest.csv")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Run folder or checkpoint whose predictions to score")
    ] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Or a folder of <subject>_sr.nii.gz predictions")
    ] = None,
    split: Annotated[str, typer.Option(help="Manifest split to evaluate: train, val or test")] = (
        "test"
    ),
    out: Annotated[
        Path | None, typer.Option(help="Results folder (default <run>/evaluation)")
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    data: Annotated[
        Path | None, typer.Option(help="2D: aligned image folder (default: the run's data.root)")
    ] = None,
    segmenter: Annotated[
        Path | None,
        typer.Option(
            help="2D Cityscapes: segmenter (torch.export .pt2 or TorchScript) for the FCN-score"
        ),
    ] = None,
) -> None:
    """Score a model against interpolation baselines (3D) or in both directions (2D).

    3D: tensor RMSE interior / total / exterior (1e-5 mm²/s), FA and MD errors, for the model and
    nearest / trilinear / cubic / edge-aware cubic interpolation, the edge band (total minus
    interior) and the model's % below cubic and edge-aware cubic. 2D: MAE / PSNR / SSIM or
    Cityscapes label scores.
    """
    from dmri_revgan.errors import InputError
    from dmri_revgan.evaluate import run_evaluation
    from dmri_revgan.progress import progress_bar

    if model is not None and predictions is not None:
        fail("give either --model or --predictions, not both")
    try:
        if model is not None and _is_2d(model):
            _evaluate_images(model, data, split, out, device, segmenter)
            return
        if manifest is None:
            fail("--manifest is required for 3D evaluation")
        with progress_bar() as bar:
            task = bar.add_task(f"evaluating the {split} split", total=None)
            result = run_evaluation(
                manifest,
                model,
                predictions,
                split,
                out,
                device,
                report=lambda s: bar.update(task, description=f"evaluating {s}", advance=1),
            )
    except InputError as exc:
        fail(str(exc))
    print_metrics(result)
    folder = out or ((model if model.is_dir() else model.parent.parent) / "evaluation")
    typer.echo(f"written: {folder / 'metrics.json'}, {folder / 'metrics.csv'}")


def _is_2d(model: Path) -> bool:
    from dmri_revgan.model import model_config

    return model_config(model).model.spatial_dims == 2


def _evaluate_images(
    model: Path, data: Path | None, split: str, out: Path | None, device: str, seg: Path | None
) -> None:
    from dmri_revgan.evaluate import evaluate_images
    from dmri_revgan.progress import progress_bar

    with progress_bar() as bar:
        task = bar.add_task(f"evaluating the {split} images", total=None)
        result = evaluate_images(
            model, data, split, out, device, seg, report=lambda s: bar.advance(task)
        )
    typer.echo(f"{len(result['subjects'])} images of {result['data']}/{split}")
    for direction, values in result["summary"].items():
        cells = ", ".join(f"{k} {v['mean']:.4g} ± {v['std']:.3g}" for k, v in values.items())
        dataset = ", ".join(f"{k} {v:.4g}" for k, v in result["dataset"].get(direction, {}).items())
        typer.echo(f"  {direction} ({result['directions'].get(direction, 'FCN-score')}): {cells}")
        if dataset:
            typer.echo(f"      over all pixels: {dataset}")
    if result["label_domain"] and "fcn" not in result["summary"]:
        typer.echo(f"  note: {result['fcn_score']}")


def report(
    run_dir: Annotated[Path, typer.Argument(help="Run folder, e.g. runs/hcp")],
    split: Annotated[str, typer.Option(help="Split to evaluate when not yet evaluated")] = "test",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N")] = "cpu",
    uncertainty: Annotated[
        int, typer.Option(help="N > 1: show each subject's test-time SD beside its error, e.g. 8")
    ] = 1,
) -> None:
    """Write <run>/report.html (self-contained, figures embedded) and report.pdf."""
    from dmri_revgan.errors import InputError
    from dmri_revgan.report import report_run

    try:
        paths = report_run(run_dir, split, device, uncertainty)
    except InputError as exc:
        fail(str(exc))
    typer.echo(f"written: {', '.join(str(p) for p in paths.values())}")
