"""The command line: instant help, version, and no heavy imports at start-up."""

from __future__ import annotations

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


def test_help_does_not_import_torch_monai_dipy_or_pybids():
    code = (
        "import sys; from dmri_revgan.cli import app; "
        "heavy = [m for m in ('torch', 'monai', 'dipy', 'nibabel', 'bids', 'SimpleITK', "
        "'safetensors') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
