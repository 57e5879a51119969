"""Model files are data: safetensors + JSON metadata; pickles are never executed."""

from __future__ import annotations

import ast
import json
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import PickleBomb, randomise, rewrite_model_file
from safetensors.torch import save_file
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.config import Config
from dmri_revgan.errors import InputError
from dmri_revgan.model import build_generator, convert_checkpoint, load_model, save_model

runner = CliRunner()
PACKAGE = Path(__file__).resolve().parents[1] / "dmri_revgan"


def _tiny_model(tmp_path: Path) -> tuple[Path, Config, torch.nn.Module]:
    cfg = Config(name="tiny")
    cfg.model.width, cfg.model.depth, cfg.model.norm, cfg.model.residual = 8, 1, "none", True
    gen = randomise(build_generator(cfg), 0.05)
    path = tmp_path / "model.safetensors"
    save_model(path, gen, cfg, np.full(6, 5e-4), np.full(6, 1e-4), {"seed": 0}, epoch=3)
    return path, cfg, gen


def test_round_trip_keeps_weights_config_statistics_and_checksum(tmp_path):
    import hashlib

    path, cfg, gen = _tiny_model(tmp_path)
    loaded = load_model(path)
    assert loaded.cfg == cfg
    np.testing.assert_allclose(loaded.mean, 5e-4)
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.randn(1, 6, 12, 12, 12)
    with torch.no_grad():
        assert torch.equal(loaded.gen(x), gen.eval()(x))


@pytest.mark.parametrize("case", ["missing", "misshaped", "version", "not_json", "foreign"])
def test_broken_model_files_are_one_line_errors(tmp_path, case):
    path, _, _ = _tiny_model(tmp_path)
    bad = tmp_path / "bad.safetensors"
    if case == "missing":
        rewrite_model_file(path, bad, lambda w: {k: v for k, v in w.items() if "core" not in k})
        expected = "missing tensor"
    elif case == "misshaped":
        rewrite_model_file(path, bad, lambda w: {k: v[..., :1].clone() for k, v in w.items()})
        expected = "has shape"
    elif case == "version":
        rewrite_model_file(path, bad, format_version="99")
        expected = "format version '99'"
    elif case == "not_json":
        rewrite_model_file(path, bad, config="{not json")
        expected = "not JSON"
    else:
        save_file({"w": torch.zeros(2)}, str(bad))
        expected = "not a dmri-revgan model"
    with pytest.raises(InputError, match=expected):
        load_model(bad)


def _lr_file(tmp_path: Path) -> Path:
    data = np.zeros((10, 10, 8, 6), np.float32)
    data[2:8, 2:8, 2:6] = [7e-4, 0, 0, 6e-4, 0, 5e-4]
    path = tmp_path / "lr.nii.gz"
    nib.save(nib.Nifti1Image(data, np.eye(4)), path)
    return path


def _run_folder_with(tmp_path: Path, checkpoint: Path) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        "model: {spatial_dims: 3}\ndata: {manifest: m.csv}\n", encoding="utf-8"
    )
    (run / "checkpoints" / "last.pt").write_bytes(checkpoint.read_bytes())
    return run


@pytest.mark.parametrize("command", ["infer", "evaluate", "report", "resume", "export"])
def test_a_crafted_pickle_never_runs(tmp_path, command):
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 2, "payload": PickleBomb(marker)}, evil)
    manifest = tmp_path / "m.csv"
    manifest.write_text("subject\n")
    args = {
        "infer": ["infer", str(_lr_file(tmp_path)), "--model", str(evil)],
        "evaluate": ["evaluate", "--manifest", str(manifest), "--model", str(evil)],
        "report": ["report", str(_run_folder_with(tmp_path, evil))],
        "resume": ["train", "--resume", str(evil)],
        "export": ["export", "--from", str(evil)],
    }[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert not marker.exists(), "the pickle's payload ran"
    assert not list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*_sr.nii.gz"))


def test_old_pt_for_inference_names_the_conversion_command(tmp_path):
    old = tmp_path / "best.pt"
    torch.save({"format": 1}, old)
    result = runner.invoke(app, ["infer", str(_lr_file(tmp_path)), "--model", str(old)])
    assert result.exit_code == 1
    assert f"dmri-revgan export --from {old}" in result.output


def test_export_converts_an_old_checkpoint_with_numpy_rng_state(tmp_path):
    cfg = Config(name="old")
    cfg.model.width, cfg.model.depth = 8, 1
    gen = randomise(build_generator(cfg), 0.05)
    old = tmp_path / "last.pt"
    torch.save(
        {
            "format": 1,
            "epoch": 2,
            "config": cfg.to_dict(),
            "normalisation": {"mean": [5e-4] * 6, "std": [1e-4] * 6},
            "generator": gen.state_dict(),
            "rng": {"numpy": np.random.get_state(), "python": random.getstate()},
        },
        old,
    )
    result = runner.invoke(app, ["export", "--from", str(old)])
    assert result.exit_code == 0, result.output
    loaded = load_model(tmp_path / "last.safetensors")
    x = torch.randn(1, 6, 10, 10, 10)
    with torch.no_grad():
        assert torch.equal(loaded.gen(x), gen.eval()(x))
    assert json.loads(json.dumps(loaded.cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(InputError, match="equals the input"):
        convert_checkpoint(old, old)


def test_no_pickle_loading_in_the_package():
    offenders = [
        f"{p.name}:{i}"
        for p in PACKAGE.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if any(s in line for s in ("weights_only=False", "import pickle", "pickle.load"))
    ]
    assert offenders == []


def _imports(path: Path) -> set[str]:
    """Package modules imported anywhere in ``path`` (top level or inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dmri_"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dmri_revgan")}
    return found


def test_no_import_cycle_among_the_package_modules():
    modules = {
        ".".join(("dmri_revgan", *p.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): p
        for p in PACKAGE.rglob("*.py")
    }
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    graph["dmri_revgan"] = set()  # the package's __init__ (version only)
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == 1:
            raise AssertionError("import cycle: " + " → ".join([*path, module]))
        if state.get(module) == 2:
            return
        state[module] = 1
        for other in sorted(graph[module]):
            visit(other, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        visit(module, [])
