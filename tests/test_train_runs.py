"""`dmri-revgan train` as a user runs it: the Table 3 configs on the phantom, a killed run, and
bad --resume arguments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.model import load_resume_state as load_checkpoint

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
            "--set",
            "optim.epochs_decay=0",  # hcp (the real-data recipe) is all cosine decay
        ],
    )
    assert result.exit_code == 0, result.output
    assert "cubic" in result.output
    ckpt = load_checkpoint(tmp_path / "run")
    assert ckpt["epoch"] == 1
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and "val_rmse_interior" in rows[0]


def _train_command(manifest, run, epochs: int) -> list[str]:
    tiny = [
        "model.width=8",
        "model.depth=1",
        "model.disc_channels=8",
        "model.disc_layers=2",
        "data.patch_size=16",
        "data.max_steps_per_epoch=6",
        f"optim.epochs_constant={epochs}",
    ]
    sets = [arg for item in tiny for arg in ("--set", item)]
    return [
        sys.executable,
        "-m",
        "dmri_revgan",
        "train",
        "hcp-paper",
        "--manifest",
        str(manifest),
    ] + ["--run-dir", str(run), *sets]


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run / "checkpoints" / "last.safetensors"))


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def uninterrupted(phantom_set, tmp_path_factory):
    _, manifest = phantom_set
    run = tmp_path_factory.mktemp("straight") / "run"
    subprocess.run(_train_command(manifest, run, 4), env=ENV, check=True, capture_output=True)
    return run


@pytest.mark.parametrize("when", ["mid-epoch", "during a checkpoint write"])
def test_sigkill_then_resume_gives_bit_identical_weights(
    when, phantom_set, uninterrupted, tmp_path
):
    _, manifest = phantom_set
    run = tmp_path / "run"
    folder = run / "checkpoints"
    process = subprocess.Popen(
        _train_command(manifest, run, 4),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while not (folder / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.005)
        assert (folder / "last.pt").exists(), "no checkpoint within 2 minutes"
        first = (folder / "last.pt").stat().st_mtime_ns
        if when == "mid-epoch":
            time.sleep(0.3)
        else:  # the next epoch's checkpoint: kill while one of its temporary files exists
            while time.monotonic() < deadline and not any(
                p.name.startswith(".") for p in folder.iterdir()
            ):
                time.sleep(0.0005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    ckpt = load_checkpoint(run)  # the last complete checkpoint, never a half-written one
    assert 1 <= ckpt["epoch"] < 4
    if when != "mid-epoch":
        assert (folder / "last.pt").stat().st_mtime_ns == first or ckpt["epoch"] >= 2
    # Resumed like the runs it is compared with: a new process with the same thread count (the
    # float reduction order, hence the bits, depends on it).
    resume = [sys.executable, "-m", "dmri_revgan", "train", "--resume", str(run)]
    result = subprocess.run(resume, env=ENV, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not [p for p in folder.iterdir() if p.name.startswith(".")], "temp file left"
    assert load_checkpoint(run)["epoch"] == 4
    straight, resumed = _weights(uninterrupted), _weights(run)
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight), "weights differ"


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
