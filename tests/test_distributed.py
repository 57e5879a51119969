"""Distributed data-parallel training with torchrun (gloo on CPU): ranks stay identical."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch


def _rank_logs(folder: Path) -> str:
    """The end of each rank's stdout/stderr (torchrun --redirects): why a rank died."""
    return "".join(
        f"--- {log.relative_to(folder)}\n{log.read_text(errors='replace')[-3000:]}\n"
        for log in sorted(folder.rglob("std*.log"))
    )


@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not installed",
)
def test_torchrun_two_ranks_hold_identical_weights(tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [
            str(torchrun if torchrun.exists() else "torchrun"),
            "--standalone",  # rendezvous on a free local port; a fixed port 0 deadlocks
            "--nproc_per_node",
            "2",
            "--log-dir",  # each rank's own output, for the failure message
            str(tmp_path / "logs"),
            "--redirects",
            "3",
            str(Path(__file__).with_name("ddp_worker.py")),
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert result.returncode == 0, _rank_logs(tmp_path / "logs") + result.stderr[-1500:]
    rank0 = torch.load(tmp_path / "rank0.pt")
    rank1 = torch.load(tmp_path / "rank1.pt")
    assert rank0["world"] == 2 and rank0["patches"] == 2 * 3 * 2  # 2 ranks × 3 steps × batch 2
    for key in ("gen", "d_x", "d_y"):
        for name, value in rank0[key].items():
            assert torch.equal(value, rank1[key][name]), f"{key}.{name} differs between ranks"
    # Only rank 0 writes the run folder.
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
    rows = (tmp_path / "run" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 2, "one header and one epoch row: rank 1 logged nothing"
    assert len(list((tmp_path / "run").glob("events.*"))) <= 1
