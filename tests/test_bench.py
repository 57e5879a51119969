"""The benchmark runs on a tiny configuration and writes valid results (no timing asserted)."""

from __future__ import annotations

import json

import torch

from dmri_revgan.bench import conv_flops, memory_benchmark, write_results
from dmri_revgan.nets.generators import RevGenerator


def test_conv_flops_counts_the_encoder_arithmetic():
    gen = RevGenerator(3, 6, 6, 4, 0)
    x = gen.enc_x(torch.zeros(1, 6, 5, 5, 5))
    flops = conv_flops(gen.dec_y, lambda: gen.dec_y(x))
    assert flops == 2 * 125 * 6 * 4  # 1³ conv 4 → 6 at 125 positions


def test_tiny_memory_benchmark_writes_json_table_and_plot(tmp_path):
    rows = memory_benchmark(
        3, [1, 3], ["naive", "revgan"], width=8, size=8, steps=1, rounds=2, report=lambda s: None
    )
    assert len(rows) == 4 and not any("error" in r for r in rows)
    paths = write_results(rows, tmp_path, "tiny")
    loaded = json.loads(paths["json"].read_text())
    keys = {
        "mode",
        "dims",
        "depth",
        "width",
        "size",
        "activation_bytes",
        "peak_bytes",
        "param_bytes",
        "step_seconds_median",
        "gflops",
    }
    assert all(keys <= set(r) for r in loaded)
    by = {(r["mode"], r["depth"]): r for r in loaded}
    assert by[("revgan", 3)]["activation_bytes"] == by[("revgan", 1)]["activation_bytes"]
    assert by[("naive", 3)]["activation_bytes"] > by[("naive", 1)]["activation_bytes"]
    assert by[("naive", 3)]["param_bytes"] == by[("revgan", 3)]["param_bytes"]
    # Interleaved timing: two rounds per mode, ratio = median / naive's median.
    for depth in (1, 3):
        naive, rev = by[("naive", depth)], by[("revgan", depth)]
        assert len(rev["step_seconds_interleaved"]) == 2 and naive["ratio_to_naive"] == 1.0
        expected = rev["step_seconds_interleaved_median"] / naive["step_seconds_interleaved_median"]
        assert rev["ratio_to_naive"] == expected > 0
    assert "| revgan |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_tiny_inference_and_training_speed_benchmarks_write_json(tmp_path):
    from typer.testing import CliRunner

    from dmri_revgan.cli import app

    runner = CliRunner()
    common = ["--width", "8", "--out", str(tmp_path)]
    infer = runner.invoke(
        app, ["bench", "infer", "--shapes", "30,26,28;20,20,20", "--depth", "1", *common]
    )
    assert infer.exit_code == 0, infer.output
    rows = json.loads((tmp_path / "inference.json").read_text())
    assert [r["method"] for r in rows] == ["exact", "old_default"] * 2
    assert all(r["seconds"] > 0 and r["peak_rss_bytes"] > 0 for r in rows)
    for r in rows:
        assert 0 < r["peak_fraction"] and r["peak_gflop_per_s"] > 0
        assert r["speedup_vs_old_default"] > 0 and r["bbox_work_ratio"] >= 1
    exact = rows[0]
    assert exact["halo"] == 5 and exact["tiles"] >= 1  # 1 block: 1 + 4 convs of radius 1
    assert "bbox_work_ratio" in (tmp_path / "inference.md").read_text()
    train = runner.invoke(
        app, ["bench", "train", "--depths", "1", "--size", "16", "--steps", "1", *common]
    )
    assert train.exit_code == 0, train.output
    rows = json.loads((tmp_path / "training_speed.json").read_text())
    assert [r["memory_saving"] for r in rows] == [True, False]
    for r in rows:
        assert r["patches_per_s"] > 0 and 0 < r["peak_fraction"] and r["peak_gflop_per_s"] > 0
        assert r["precision"] == "float32" and r["step_rss_bytes"] <= r["peak_rss_bytes"]
        assert r["planned_step_bytes"] > 0
    assert (
        "| hcp-paper | paired | 16 | 8 | 1 | on | float32 |"
        in (tmp_path / "training_speed.md").read_text()
    )
