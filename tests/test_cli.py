"""The command line: instant help, version, and no heavy imports at start-up."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

from typer.testing import CliRunner

from dmri_revgan import __version__
from dmri_revgan.cli import app


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"dmri-revgan {__version__}"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "RevGAN" in result.output


# Runs the real entry point's `--help` in a fresh interpreter, then lists the heavy libraries
# that got imported (on stderr, after click's exit).
_HELP = """
import json, sys
from dmri_revgan.cli import app
try:
    app(["--help"], prog_name="dmri-revgan")
    code = "returned"
except SystemExit as exc:
    code = exc.code
heavy = ("torch", "monai", "dipy", "nibabel", "bids", "SimpleITK", "safetensors")
print(json.dumps({"exit": code, "heavy": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
"""


def test_help_does_not_import_torch_monai_dipy_or_pybids():
    out = subprocess.run([sys.executable, "-c", _HELP], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stderr.strip().splitlines()[-1])
    assert result == {"exit": 0, "heavy": []}, result
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.stdout)  # rich colours it where CI forces colour
    assert text.lstrip().startswith("Usage: dmri-revgan [OPTIONS] COMMAND [ARGS]..."), text
    assert "RevGAN" in text
    for command in ("train", "infer", "evaluate", "report", "export", "prepare", "bench"):
        assert re.search(rf"^\W*{command}\b", text, re.M), command


def test_debug_shows_the_traceback_behind_an_error_line(tmp_path):
    """An input error is one line; with --debug the dependency's original error is shown too."""
    import subprocess
    import sys

    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not a nifti")
    run = [sys.executable, "-m", "dmri_revgan", "infer", str(bad)]
    plain = subprocess.run(run, capture_output=True, text=True)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        f"error: {bad}: not a readable NIfTI file (truncated or corrupt: File {bad} is not a "
        "gzip file)"
    ]
    debug = subprocess.run([*run[:3], "--debug", *run[3:]], capture_output=True, text=True)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "gzip" in debug.stderr


def test_huge_pages_only_for_the_commands_that_run_whole_volume_inference(monkeypatch):
    """THP_MEM_ALLOC_ENABLE=1 (read by PyTorch at its first allocation) speeds inference's big
    maps and slows training: each command sets it before importing torch; a user's value wins."""
    variable = "THP_MEM_ALLOC_ENABLE"
    cases = {"infer": "1", "bids": "1", "evaluate": "1", "bench infer": "1", "train": None}
    cases |= {"bench train": None, "demo": None}
    for command, expected in cases.items():
        monkeypatch.delenv(variable, raising=False)
        result = CliRunner().invoke(app, [*command.split(), "--help"])
        assert result.exit_code == 0, result.output
        assert os.environ.get(variable) == expected, command
    monkeypatch.setenv(variable, "0")
    CliRunner().invoke(app, ["infer", "--help"])
    assert os.environ[variable] == "0"
