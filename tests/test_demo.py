"""The demo's wiring end to end (tiny training; `make demo` itself is timed in the closing note)."""

from __future__ import annotations

import json

from dmri_revgan.demo import run_demo


def test_demo_runs_every_stage_into_one_folder(tmp_path):
    messages: list[str] = []
    tiny = [
        "model.width=8",
        "model.depth=1",
        "model.disc_channels=8",
        "model.disc_layers=2",
        "optim.epochs_constant=1",
        "optim.epochs_decay=0",
        "data.max_steps_per_epoch=2",
    ]
    result = run_demo(tmp_path, subjects=3, workers=1, say=messages.append, overrides=tiny)
    assert [m.split("] ")[1][:3] for m in messages[:5]] == ["1/5", "2/5", "3/5", "4/5", "5/5"]
    run = tmp_path / "run"
    assert (run / "checkpoints" / "last.pt").is_file()
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics == result["evaluation"]
    assert set(metrics["summary"]) == {"model", "nearest", "trilinear", "cubic", "edge_cubic"}
    assert len(metrics["subjects"]) == 1
    assert result["report"] == run / "report.html" and result["report"].is_file()
    assert (tmp_path / "prepared" / "data_manifest.csv").is_file()
