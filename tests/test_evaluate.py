"""`dmri-revgan evaluate` and `report`: regions, baselines, metrics files and the HTML report."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.evaluate import BASELINES, evaluate_subjects
from dmri_revgan.metrics import region_masks

runner = CliRunner()
# Column headings of the report's metrics table → metrics.json keys (others are the key itself).
_COLUMNS = {
    "edge band": "exterior",
    "% below cubic (interior)": "pct_below_cubic_interior",
    "% below edge-aware cubic (interior)": "pct_below_edge_cubic_interior",
    "% below cubic (total)": "pct_below_cubic_total",
    "% below edge-aware cubic (total)": "pct_below_edge_cubic_total",
    "V1 angle, degrees (interior, FA > 0.2)": "v1_angle_deg_interior",
    "V1 angle, degrees (total, FA > 0.2)": "v1_angle_deg_total",
}


def test_regions_agree_with_an_independent_scipy_computation():
    rng = np.random.default_rng(0)
    brain = ndimage.gaussian_filter(rng.random((30, 26, 22)), 3) > 0.5
    brain[0, 10:20, 5:15] = True  # touches the volume edge: outside counts as non-brain
    # Independent: a voxel is interior when the minimum over its 5³ cube (zero-padded) is 1.
    interior = ndimage.minimum_filter(brain.astype(np.uint8), size=5, mode="constant", cval=0) > 0
    regions = region_masks(brain)
    np.testing.assert_array_equal(regions["interior"], interior)
    np.testing.assert_array_equal(regions["total"], brain)
    np.testing.assert_array_equal(regions["exterior"], brain & ~interior)
    assert 0 < interior.sum() < brain.sum()


def _direct_rmse(record, order: int, region: str) -> float:
    """Interpolate the LR tensor with map_coordinates at HR voxel centres, RMSE in 1e-5 mm²/s."""
    lr = np.asarray(nib.load(record.lr_tensor).dataobj, np.float64)
    hr = np.asarray(nib.load(record.hr_tensor).dataobj, np.float64)
    brain = np.asarray(nib.load(record.hr_mask).dataobj) > 0
    r = record.factor
    # HR voxel j's centre sits at LR coordinate (j - (r - 1) / 2) / r (the affine relation).
    coords = np.stack(
        np.meshgrid(*[(np.arange(n) - (r - 1) / 2) / r for n in hr.shape[:3]], indexing="ij")
    )
    if order == 0:
        pred = lr.repeat(r, 0).repeat(r, 1).repeat(r, 2)
    else:
        channels = [
            ndimage.map_coordinates(lr[..., c], coords, order=order, mode="nearest")
            for c in range(6)
        ]
        pred = np.stack(channels, axis=-1)
    interior = ndimage.minimum_filter(brain.astype(np.uint8), 5, mode="constant", cval=0) > 0
    m = {"total": brain, "interior": interior, "exterior": brain & ~interior}[region]
    return float(np.sqrt(np.mean(((pred[m] - hr[m]) * 1e5) ** 2)))


def test_baseline_rmse_matches_a_direct_computation(phantom_set):
    _, manifest = phantom_set
    record = read_manifest(manifest)[0]
    metrics = evaluate_subjects([record], None)[record.subject]
    assert set(metrics) == set(BASELINES)
    for name, order in {"nearest": 0, "trilinear": 1, "cubic": 3}.items():
        for region in ("interior", "total", "exterior"):
            expected = _direct_rmse(record, order, region)
            assert metrics[name][region] == pytest.approx(expected, rel=1e-6), (name, region)


def test_evaluate_command_writes_metrics_and_hr_grid_predictions(
    phantom_set, trained_run, tmp_path
):
    _, manifest = phantom_set
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        ["evaluate", "--manifest", str(manifest), "--model", str(trained_run), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "cubic" in result.output and "model" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["unit"] == "1e-5 mm^2/s"
    test = [r for r in read_manifest(manifest) if r.split == "test"]
    assert set(metrics["subjects"]) == {r.subject for r in test}
    for per in metrics["subjects"].values():
        assert set(per) == {"model", "nearest", "trilinear", "cubic", "edge_cubic"}
        for values in per.values():
            assert {"interior", "total", "exterior"} <= set(values)
            assert all(np.isfinite(values[k]) for k in ("interior", "total", "exterior"))
        # The model's standing against cubic and edge-aware cubic, per region.
        for base in ("cubic", "edge_cubic"):
            expected = 100 * (1 - per["model"]["total"] / per[base]["total"])
            assert per["model"][f"pct_below_{base}_total"] == pytest.approx(expected)
    assert "edge band" in result.output and "vs edge-aware cubic" in result.output
    for method in ("model", "nearest", "trilinear", "cubic", "edge_cubic"):
        assert set(metrics["summary"][method]["interior"]) == {"mean", "std"}
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 * len(test)
    prediction = nib.load(out / "predictions" / f"{test[0].subject}_sr.nii.gz")
    np.testing.assert_allclose(prediction.affine, nib.load(test[0].hr_tensor).affine)
    # The same predictions read back as a folder give the same model numbers.
    again = runner.invoke(
        app,
        [
            "evaluate",
            "--manifest",
            str(manifest),
            "--predictions",
            str(out / "predictions"),
            "--out",
            str(tmp_path / "again"),
        ],
    )
    assert again.exit_code == 0, again.output
    model_again = json.loads((tmp_path / "again" / "metrics.json").read_text())["summary"]["model"]
    assert model_again["interior"]["mean"] == pytest.approx(
        metrics["summary"]["model"]["interior"]["mean"], rel=1e-5
    )


def test_evaluate_rejects_an_empty_split(phantom_set, trained_run, tmp_path):
    _, manifest = phantom_set
    result = runner.invoke(
        app,
        ["evaluate", "--manifest", str(manifest), "--model", str(trained_run), "--split", "nope"],
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ") and "nope" in result.output


@pytest.fixture(scope="module")
def report_html(phantom_set, trained_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("reported") / "run"
    shutil.copytree(trained_run, run)
    result = runner.invoke(app, ["report", str(run), "--uncertainty", "2"])
    assert result.exit_code == 0, result.output
    return run / "report.html"


def test_report_embeds_every_figure_and_tabulates_model_and_baselines(report_html):
    text = report_html.read_text(encoding="utf-8")
    sources = re.findall(r"""src=['"]([^'"]*)['"]""", text)
    # Training curves + one figure per test subject, all embedded PNGs; nothing fetched.
    assert len(sources) >= 2
    assert all(s.startswith("data:image/png;base64,") and len(s) > 1000 for s in sources)
    assert not re.search(r"""(href|src)=['"]https?:""", text)
    for method in ("model", "nearest", "trilinear", "cubic", "edge_cubic"):
        assert f'class="method-{method}"' in text, method
    assert "1e-5 mm^2/s" in text and "edge band" in text
    assert "% below edge-aware cubic (total)" in text
    pdf = report_html.with_suffix(".pdf")
    assert pdf.read_bytes()[:4] == b"%PDF"


def test_report_table_shows_the_numbers_of_metrics_json(report_html):
    """Each cell of the HTML metrics table is metrics.json's mean ± std of that method and column,
    in the columns the header names; a method's missing metric is an empty cell."""
    summary = json.loads((report_html.parent / "evaluation" / "metrics.json").read_text())[
        "summary"
    ]
    text = report_html.read_text(encoding="utf-8")
    (table,) = re.findall(r'<table class="metrics">(.*?)</table>', text, re.S)
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", table.split("</tr>")[0])]
    keys = [_COLUMNS.get(h, h) for h in header[1:]]
    assert header[0] == "method" and {"interior", "total", "exterior"} <= set(keys)
    rows = dict(re.findall(r'<tr class="method-(\w+)"><th>\1</th>(.*?)</tr>', table))
    assert list(rows) == list(summary)
    for method, values in summary.items():
        cells = re.findall(r"<td>(.*?)</td>|<td/>", rows[method])
        expected = [
            f"{values[k]['mean']:.3f} ± {values[k]['std']:.3f}" if k in values else "" for k in keys
        ]
        assert cells == expected, method
    assert all(k in keys for v in summary.values() for k in v if k in _COLUMNS.values())


CHROMIUM = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed")
def test_report_renders_in_headless_chromium(report_html, tmp_path):
    shot = tmp_path / "report.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            report_html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)[..., :3]
    assert pixels.std() > 0.05, "the screenshot is blank"


def test_subject_figure_shows_the_test_time_sd_beside_the_error():
    from dmri_revgan.figures import PANELS, subject_figure

    rng = np.random.default_rng(0)
    volume = (
        rng.normal(size=(6, 10, 10, 10)) * 1e-4
        + np.array([7, 0, 0, 7, 0, 7])[:, None, None, None] * 1e-4
    )
    mask = np.ones((10, 10, 10), bool)
    volumes = dict.fromkeys(PANELS, volume)
    plain = subject_figure("s", volumes, mask)
    with_sd = subject_figure("s", volumes, mask, np.full((10, 10, 10), 1e-5))
    titles = [ax.get_title() for ax in with_sd.axes if ax.get_title()]
    assert "test-time SD" in titles and "|SR − truth| tensor" in titles
    assert len(with_sd.axes) == len(plain.axes) + 2 * 6
