"""`dmri-revgan train` as a user runs it: the Table 3 configs on the phantom, a killed run, and
bad --resume arguments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.train import load_checkpoint

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.parametrize(
    "config",
    ["hcp-d0", "hcp-d0-nogan", "hcp-d0-unpaired", "hcp", "hcp-nogan", "hcp-unpaired"],
)
def test_table3_config_runs_one_epoch_on_the_phantom(config, phantom_set, tmp_path):
    _, manifest = phantom_set
    result = runner.invoke(
        app,
        [
            "train",
            config,
            "--manifest",
            str(manifest),
            "--run-dir",
            str(tmp_path / "run"),
            "--set",
            "optim.epochs_constant=1",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cubic" in result.output
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 1
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "val_rmse_interior" in rows[0]


def test_sigkill_mid_epoch_leaves_a_loadable_last_checkpoint(phantom_set, tmp_path):
    _, manifest = phantom_set
    run = tmp_path / "run"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dmri_revgan",
            "train",
            "hcp",
            "--manifest",
            str(manifest),
            "--run-dir",
            str(run),
            "--set",
            "model.width=8",
            "--set",
            "model.depth=1",
            "--set",
            "model.disc_channels=8",
            "--set",
            "data.patch_size=16",
            "--set",
            "optim.epochs_constant=50",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    last = run / "checkpoints" / "last.pt"
    try:
        deadline = time.monotonic() + 120
        while not last.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert last.exists(), "no checkpoint within 2 minutes"
        # Kill during a later save or step: wait for the second epoch's checkpoint to begin.
        first = last.stat().st_mtime_ns
        while last.stat().st_mtime_ns == first and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    ckpt = load_checkpoint(run)
    assert ckpt["epoch"] >= 2
    assert not [p for p in last.parent.iterdir() if p.name.startswith(".")], "temp file left"
    result = runner.invoke(
        app,
        [
            "train",
            "--resume",
            str(run),
            "--set",
            "optim.epochs_constant=" + str(ckpt["epoch"] + 1),
        ],
    )
    assert result.exit_code == 0, result.output
    assert load_checkpoint(run)["epoch"] == ckpt["epoch"] + 1


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated"])
def test_resume_from_a_bad_checkpoint_is_a_one_line_error(kind, phantom_set, trained_run, tmp_path):
    _, manifest = phantom_set
    target = tmp_path / "ckpt.pt"
    if kind == "corrupt":
        target.write_bytes(b"not a checkpoint at all")
    elif kind == "truncated":
        target.write_bytes((trained_run / "checkpoints" / "last.pt").read_bytes()[:5000])
    result = runner.invoke(
        app, ["train", "hcp", "--manifest", str(manifest), "--resume", str(target)]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "ckpt.pt" in lines[0]
