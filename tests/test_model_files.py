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


def _run_folder_with(tmp_path: Path, checkpoint: Path, manifest: Path, name: str) -> Path:
    """A 3D run folder whose config names a real manifest and whose only model file is
    ``checkpoints/<name>``, a copy of ``checkpoint``."""
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(
        f"model: {{spatial_dims: 3}}\ndata: {{manifest: '{manifest}'}}\n", encoding="utf-8"
    )
    (run / "checkpoints" / name).write_bytes(checkpoint.read_bytes())
    return run


@pytest.mark.parametrize(
    "command", ["infer", "evaluate", "report", "report_disguised", "resume", "export"]
)
def test_a_crafted_pickle_never_runs(tmp_path, command, request):
    """Every command reaches the crafted file (the error names it) and refuses it unread."""
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    torch.save({"format": 2, "payload": PickleBomb(marker)}, evil)
    manifest = None
    if command in ("evaluate", "report", "report_disguised"):
        _, manifest = request.getfixturevalue("phantom_set")  # valid: the model is what fails
    name = "best.safetensors" if command == "report_disguised" else "last.pt"
    args = {
        "infer": ["infer", str(_lr_file(tmp_path)), "--model", str(evil)],
        "evaluate": ["evaluate", "--manifest", str(manifest), "--model", str(evil)],
        "report": ["report", str(tmp_path / "run")],
        "report_disguised": ["report", str(tmp_path / "run")],
        "resume": ["train", "--resume", str(evil)],
        "export": ["export", "--from", str(evil)],
    }[command]
    if command.startswith("report"):
        _run_folder_with(tmp_path, evil, manifest, name)
    reached = tmp_path / "run" / "checkpoints" / name if command.startswith("report") else evil
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {reached}: "), result.output
    assert not marker.exists(), "the pickle's payload ran"
    assert not list(tmp_path.rglob("*_sr.nii.gz")) and not list(tmp_path.rglob("report.*"))
    assert [p for p in tmp_path.rglob("*.safetensors") if p != reached] == [], "nothing exported"


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


def package_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Dotted module name → file, for every .py file under ``package``."""
    return {
        ".".join((package.name, *p.relative_to(package).with_suffix("").parts)).removesuffix(
            ".__init__"
        ): p
        for p in package.rglob("*.py")
    }


def _ancestors(module: str) -> set[str]:
    """``a.b.c`` → {``a``, ``a.b``}: the packages whose ``__init__`` importing it runs."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Edges from each module to what importing its imports executes: the module itself and
    every package above it, less the packages that contain the importer (already running, so
    siblings inside one package may import each other through it)."""
    graph = {}
    for module, path in modules.items():
        inside = _ancestors(module) | ({module} if path.name == "__init__.py" else set())
        targets = {t for i in _imports(path) for t in {i} | _ancestors(i)}
        graph[module] = {t for t in targets if t in modules} - inside - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path that ends where it starts, else None."""
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> list[str] | None:
        if state.get(module) == 1:
            return [*path[path.index(module) :], module]
        if state.get(module) == 2:
            return None
        state[module] = 1
        for other in sorted(graph.get(module, ())):
            if cycle := visit(other, [*path, module]):
                return cycle
        state[module] = 2
        return None

    return next((c for m in sorted(graph) if (c := visit(m, []))), None)


def _fake_package(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in {"__init__.py": "", "b/__init__.py": "", **files}.items():
        (root / "dmri_fake" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "dmri_fake" / name).write_text(text)
    return import_graph(package_modules(root / "dmri_fake"))


def test_the_import_graph_runs_through_package_inits(tmp_path):
    """``from a.b.c import x`` also runs ``a.b``'s ``__init__``; a package's own modules
    importing each other through it is no cycle."""
    through_init = _fake_package(
        tmp_path / "one",
        {
            "b/__init__.py": "from dmri_fake.d import helper",
            "b/c.py": "",
            "d.py": "def helper():\n    from dmri_fake.b.c import x",
        },
    )
    assert find_cycle(through_init) == ["dmri_fake.b", "dmri_fake.d", "dmri_fake.b"]
    siblings = _fake_package(
        tmp_path / "two",
        {
            "b/__init__.py": "from dmri_fake.b.c import x",
            "b/c.py": "from dmri_fake.b import e",
            "b/e.py": "",
        },
    )
    assert siblings["dmri_fake.b.c"] == {"dmri_fake.b.e"} and find_cycle(siblings) is None


def test_no_import_cycle_among_the_package_modules():
    graph = import_graph(package_modules())
    assert graph["dmri_revgan"] == set(), "the package's __init__ imports nothing of its own"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_no_module_over_400_lines():
    """Every module of the package stays readable in one sitting."""
    lengths = {
        str(p.relative_to(PACKAGE)): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")
    }
    assert {p: n for p, n in lengths.items() if n > 400} == {}


def test_trainer_is_the_loop_only():
    """The ``Trainer`` class keeps to the epoch loop; steps, batches, schedules live elsewhere."""
    tree = ast.parse((PACKAGE / "training" / "trainer.py").read_text())
    (trainer,) = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Trainer"]
    span = trainer.end_lineno - trainer.lineno
    assert span <= 160, f"Trainer spans {span} lines"
