"""Self-contained HTML report of a run (figures embedded as PNG) and its PDF rendering.

Sections: configuration and data summary; training curves; metrics of the model against the
interpolation baselines (10⁻⁵ mm²/s); per test subject, axial / coronal / sagittal slices of MD
and colour-FA for the LR input, HR truth, SR output and cubic baseline, with absolute-error maps
(like the paper's Fig. 5).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dmri_revgan import __version__
from dmri_revgan.errors import InputError
from dmri_revgan.figures import PANELS, png_bytes, sample_grid, subject_figure, training_curves
from dmri_revgan.io import atomic_path, write_text_atomic
from dmri_revgan.metrics import UNIT

_HEADINGS = {
    "exterior": "edge band",
    "pct_below_cubic_interior": "% below cubic (interior)",
    "pct_below_edge_cubic_interior": "% below edge-aware cubic (interior)",
    "pct_below_cubic_total": "% below cubic (total)",
    "pct_below_edge_cubic_total": "% below edge-aware cubic (total)",
    "v1_angle_deg_interior": "V1 angle, degrees (interior, FA > 0.2)",
    "v1_angle_deg_total": "V1 angle, degrees (total, FA > 0.2)",
}


def _metric_keys(summary: dict[str, Any]) -> list[str]:
    """3D: the regions, the FA/MD errors and the eigenvector angle; 2D: every metric present."""
    keys = [
        k
        for k in (
            "interior",
            "total",
            "exterior",
            "pct_below_cubic_interior",
            "pct_below_edge_cubic_interior",
            "pct_below_cubic_total",
            "pct_below_edge_cubic_total",
            "fa_mae_interior",
            "md_rmse_interior",
            "v1_angle_deg_interior",
            "v1_angle_deg_total",
        )
        if any(k in v for v in summary.values())
    ]
    return keys or list(dict.fromkeys(k for v in summary.values() for k in v))


def _metrics_table(result: dict[str, Any]) -> str:
    summary = result["summary"]
    keys = _metric_keys(summary)
    head = "".join(f"<th>{html.escape(_HEADINGS.get(k, k))}</th>" for k in keys)
    rows = []
    for method, values in summary.items():
        cells = "".join(
            f"<td>{values[k]['mean']:.3f} ± {values[k]['std']:.3f}</td>" if k in values else "<td/>"
            for k in keys
        )
        rows.append(
            f'<tr class="method-{html.escape(method)}"><th>{html.escape(method)}</th>{cells}</tr>'
        )
    if result.get("kind") == "images":
        note = (
            f"<p>Mean ± std over {len(result['subjects'])} images of the {result['split']} split; "
            "MAE on 0–255, PSNR in dB, SSIM unitless; label scores are fractions. F = "
            f"{html.escape(result['directions']['F'])}, G = reverse. "
            f"{html.escape(result['fcn_score'])}.</p>"
        )
    else:
        note = (
            f"<p>Tensor RMSE in {html.escape(result['unit'])} (mean ± std over "
            f"{len(result['subjects'])} subjects) over the brain's interior (voxels whose 5×5×5 "
            "neighbourhood is brain), all brain voxels (total) and the edge band (total minus "
            "interior). <em>% below</em> columns: how much lower the model's RMSE is than cubic "
            "spline and than edge-aware cubic (the LR tensor extended outside the brain by its "
            "nearest in-mask value before the spline); negative means worse. FA error is a mean "
            f"absolute error (unitless), MD RMSE in {html.escape(result['unit'])}.</p>"
        )
    return note + f'<table class="metrics"><tr><th>method</th>{head}</tr>{"".join(rows)}</table>'


def _metrics_page(name: str, result: dict[str, Any]) -> Any:
    """The metrics table as a matplotlib page, for the PDF."""
    import matplotlib.pyplot as plt

    regions = _metric_keys(result["summary"])[:6]
    rows = [
        [method] + [f"{v[r]['mean']:.3f} ± {v[r]['std']:.3f}" if r in v else "" for r in regions]
        for method, v in result["summary"].items()
    ]
    fig, ax = plt.subplots(figsize=(8.3, 3))
    ax.axis("off")
    unit = "" if result.get("kind") == "images" else f" — tensor RMSE ({result['unit']})"
    ax.set_title(f"dmri-revgan: {name}{unit}")
    ax.table(cellText=rows, colLabels=["method", *regions], loc="center")
    return fig


def _dict_table(values: dict[str, Any], prefix: str = "") -> list[str]:
    rows = []
    for k, v in values.items():
        if isinstance(v, dict):
            rows += _dict_table(v, f"{prefix}{k}.")
        else:
            rows.append(
                f"<tr><th>{html.escape(prefix + k)}</th><td>{html.escape(str(v))}</td></tr>"
            )
    return rows


def write_report(
    run_dir: Path,
    evaluation: dict[str, Any],
    subject_volumes: Sequence[tuple],
    data_summary: dict[str, Any],
    out: Path | None = None,
    pdf: bool = True,
    extra_figures: Sequence[tuple[str, Any]] = (),
) -> dict[str, Path]:
    """Write ``report.html`` (and ``report.pdf``) into ``out`` (default ``run_dir``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise InputError(run_dir, "not a run folder (no config.yaml)")
    config = yaml.safe_load(config_path.read_text())
    figures: list[tuple[str, Any]] = []
    curves = training_curves(run_dir / "metrics.csv")
    if curves is not None:
        figures.append(("Training curves", curves))
    for subject, volumes, mask, *spread in subject_volumes:
        figure = subject_figure(subject, volumes, mask, *spread)
        figures.append((f"Test subject {subject}", figure))
    figures += list(extra_figures)

    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>dmri-revgan report: {html.escape(config.get('name', run_dir.name))}</title>",
        "<style>body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:left}img{max-width:100%}</style></head><body>",
        f"<h1>dmri-revgan report: {html.escape(config.get('name', run_dir.name))}</h1>",
        f"<p>Run folder <code>{html.escape(str(run_dir))}</code>; generated {stamp} by "
        f"dmri-revgan {__version__}.</p>",
        "<h2>Data</h2><table>",
        *_dict_table(data_summary),
        "</table>",
        "<h2>Metrics: model vs interpolation baselines</h2>",
        _metrics_table(evaluation),
    ]
    for title, fig in figures:
        parts.append(
            f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' src='{png_bytes(fig)}'>"
        )
    parts += ["<h2>Configuration</h2><table>", *_dict_table(config), "</table></body></html>"]

    target = out or run_dir
    target.mkdir(parents=True, exist_ok=True)
    paths = {"html": target / "report.html"}
    write_text_atomic(paths["html"], "\n".join(parts))
    if pdf:
        paths["pdf"] = target / "report.pdf"
        with atomic_path(paths["pdf"]) as tmp, PdfPages(tmp) as pages:
            pages.savefig(_metrics_page(config.get("name", run_dir.name), evaluation))
            for _, fig in figures:
                pages.savefig(fig)
    for _, fig in figures:
        plt.close(fig)
    return paths


def report_run(
    run_dir: Path, split: str = "test", device: str = "cpu", uncertainty: int = 1
) -> dict[str, Path]:
    """The ``report`` command: evaluate the run if needed, then write report.html and .pdf.

    ``uncertainty`` N > 1 adds each subject's test-time SD map (``infer --uncertainty N``)
    beside its actual error.

    Uses ``<run>/evaluation/metrics.json`` when present (from ``evaluate``), else evaluates the
    run's model on the ``split`` subjects of the manifest named in its config.
    """
    import json

    import nibabel as nib

    from dmri_revgan.data.degrade import interpolate
    from dmri_revgan.data.manifest import read_manifest
    from dmri_revgan.data.patches import load_lr, load_lr_mask, load_pair
    from dmri_revgan.dti import voxel_frame
    from dmri_revgan.evaluate import run_evaluation
    from dmri_revgan.inference import predict_ensemble
    from dmri_revgan.model import load_model

    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise InputError(run_dir, "not a run folder (no config.yaml)")
    config = yaml.safe_load(config_path.read_text())
    if config["model"]["spatial_dims"] == 2:
        return _report_images(run_dir, split, device)
    manifest = Path(config["data"]["manifest"])
    metrics_path = run_dir / "evaluation" / "metrics.json"
    if metrics_path.is_file():
        evaluation = json.loads(metrics_path.read_text())
        manifest = Path(evaluation.get("manifest", manifest))
        split = evaluation.get("split", split)
    else:
        evaluation = run_evaluation(manifest, run_dir, split=split, device=device)
    records = [r for r in read_manifest(manifest) if r.split == split]
    model = load_model(run_dir, device) if uncertainty > 1 else None
    subjects: list[tuple] = []
    for record in records:
        pair = load_pair(record)
        sr_path = run_dir / "evaluation" / "predictions" / f"{record.subject}_sr.nii.gz"
        sr = np.moveaxis(np.asarray(nib.load(sr_path).dataobj, np.float32), -1, 0)
        edge = interpolate(load_lr(record), record.factor, "edge_cubic", load_lr_mask(record))
        volumes = dict(zip(PANELS, (pair["input"], pair["target"], sr, edge), strict=True))
        mask = pair["mask"][0] > 0
        subjects.append((record.subject, volumes, mask))
        if model is not None:
            inputs = load_pair(record, model.cfg.data.input)
            x = voxel_frame(inputs["input"], inputs["affine"])  # the network's frame
            args = (model.gen, x, model.mean, model.std, mask, uncertainty)
            subjects[-1] += (predict_ensemble(*args, device=device)[1],)
    summary = {
        "manifest": str(manifest),
        "split evaluated": split,
        "subjects evaluated": ", ".join(r.subject for r in records),
        "subjects per split": ", ".join(
            f"{s}: {n}" for s, n in _count_splits(read_manifest(manifest)).items()
        ),
        "HR grid (first subject)": f"{records[0].hr_shape} voxels of {records[0].hr_voxel_mm} mm",
        "LR factor": records[0].factor,
        "tensor unit": "mm^2/s (FSL order); RMSE in " + UNIT,
    }
    return write_report(run_dir, evaluation, subjects, summary)


def _count_splits(records: Sequence[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in records:
        counts[r.split] = counts.get(r.split, 0) + 1
    return counts


def _report_images(run_dir: Path, split: str, device: str) -> dict[str, Path]:
    """Report of a 2D run: curves, metrics of both directions, sample translations (Fig. 3–4)."""
    import json

    from dmri_revgan.evaluate import evaluate_images

    metrics_path = run_dir / "evaluation" / "metrics.json"
    if metrics_path.is_file():
        evaluation = json.loads(metrics_path.read_text())
    else:
        evaluation = evaluate_images(run_dir, split=split, device=device)
    grid = sample_grid(run_dir / "evaluation" / "samples")
    summary = {
        "image folder": evaluation["data"],
        "split evaluated": evaluation["split"],
        "images evaluated": len(evaluation["subjects"]),
        "F": evaluation["directions"]["F"],
        "G": evaluation["directions"]["G"],
        "label→photo FCN-score": evaluation["fcn_score"],
    }
    figures = [("Sample translations", grid)] if grid is not None else []
    return write_report(run_dir, evaluation, [], summary, extra_figures=figures)
