"""The bad-input battery: every user mistake across prepare, train, infer, evaluate and report
ends with exit code 1 and one line ``error: <file>: <problem>`` — no traceback, no output file,
the inputs unchanged. Plus the awkward inputs that must simply work (tiny or thin volumes,
non-RAS orientation, HTML in subject names)."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import PickleBomb, randomise, rewrite_model_file
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.config import Config
from dmri_revgan.model import build_generator, save_model

runner = CliRunner()
TENSOR = [7e-4, 1e-5, -2e-5, 6e-4, 3e-5, 5e-4]


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    cfg = Config(name="battery")
    cfg.model.width, cfg.model.depth, cfg.model.norm, cfg.model.residual = 8, 1, "none", True
    path = tmp_path_factory.mktemp("model") / "model.safetensors"
    save_model(path, randomise(build_generator(cfg), 0.02), cfg, TENSOR, [1e-4] * 6)
    return path


def _tensor_volume(shape=(10, 12, 8)) -> np.ndarray:
    data = np.zeros((*shape, 6), np.float32)
    data[1:-1, 1:-1, 1:-1] = TENSOR
    return data


def _nifti(path: Path, data: np.ndarray, affine=None) -> Path:
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2, 2, 1]) if affine is None else affine), path)
    return path


def _case(name: str, w: Path, model: Path, phantom) -> tuple[list, str]:
    """Build the files of one case in ``w``; return (argv, text the error line must contain)."""
    lr = lambda: _nifti(w / "lr.nii.gz", _tensor_volume())  # noqa: E731
    root, manifest = phantom
    if name == "infer: missing input":
        return ["infer", w / "nope.nii.gz", "--model", model], "no such file"
    if name == "infer: text renamed .nii.gz":
        (w / "text.nii.gz").write_text("hello")
        return ["infer", w / "text.nii.gz", "--model", model], "not a readable NIfTI"
    if name == "infer: truncated gzip":
        data = gzip.compress(lr().read_bytes())
        (w / "cut.nii.gz").write_bytes(data[: len(data) // 2])
        (w / "lr.nii.gz").unlink()
        return ["infer", w / "cut.nii.gz", "--model", model], "not a readable NIfTI"
    if name == "infer: wrong channel count":
        _nifti(w / "five.nii.gz", _tensor_volume()[..., :5])
        return ["infer", w / "five.nii.gz", "--model", model], "5 volumes"
    if name == "infer: 3D volume":
        _nifti(w / "three.nii.gz", _tensor_volume()[..., 0])
        return ["infer", w / "three.nii.gz", "--model", model], "expected a 4D volume"
    if name == "infer: mask on another grid":
        _nifti(w / "mask.nii.gz", np.ones((5, 5, 5), np.uint8))
        return ["infer", lr(), "--model", model, "--mask", w / "mask.nii.gz"], "does not match"
    if name == "infer: DWI without bvecs":
        folder = root / "raw" / "phantom-01" / "T1w" / "Diffusion"
        shutil.copy(folder / "data.nii.gz", w / "dwi.nii.gz")
        shutil.copy(folder / "bvals", w / "dwi.bval")
        return ["infer", w / "dwi.nii.gz", "--model", model], "no .bvec"
    if name == "infer: output equals input":
        return ["infer", lr(), "--model", model, "-o", w / "lr.nii.gz"], "equals the input"
    if name == "infer: crafted pickle model":
        torch.save({"x": PickleBomb(w / "marker")}, w / "evil.pt")
        return ["infer", lr(), "--model", w / "evil.pt"], "export --from"
    if name == "infer: safetensors missing tensor":
        bad = rewrite_model_file(model, w / "m.safetensors", lambda t: dict(list(t.items())[1:]))
        return ["infer", lr(), "--model", bad], "missing tensor"
    if name == "infer: safetensors mis-shaped tensor":
        bad = rewrite_model_file(
            model, w / "m.safetensors", lambda t: {k: v[:1].clone() for k, v in t.items()}
        )
        return ["infer", lr(), "--model", bad], "has shape"
    if name == "infer: wrong format version":
        bad = rewrite_model_file(model, w / "m.safetensors", format_version="1")
        return ["infer", lr(), "--model", bad], "format version"
    if name == "infer: empty mask":
        _nifti(w / "mask.nii.gz", np.zeros((10, 12, 8), np.uint8))
        return ["infer", lr(), "--model", model, "--mask", w / "mask.nii.gz"], "empty brain mask"
    if name == "infer: all-zero volume":
        _nifti(w / "zero.nii.gz", np.zeros((10, 12, 8, 6), np.float32))
        return ["infer", w / "zero.nii.gz", "--model", model], "empty brain mask"
    if name == "infer: all-NaN volume":
        _nifti(w / "nan.nii.gz", np.full((10, 12, 8, 6), np.nan, np.float32))
        return ["infer", w / "nan.nii.gz", "--model", model], "NaN or Inf"
    if name == "infer: some Inf voxels":
        data = _tensor_volume()
        data[3, 3, 3, 1] = np.inf
        _nifti(w / "inf.nii.gz", data)
        return ["infer", w / "inf.nii.gz", "--model", model], "1 voxels contain NaN or Inf"
    if name == "infer: output folder is a file":
        (w / "file").write_text("x")
        return ["infer", lr(), "--model", model, "-o", w / "file" / "sr.nii.gz"], "cannot write"
    if name == "infer: bf16 or bad precision":
        return ["infer", lr(), "--model", model, "--precision", "fp8"], "precision"
    if name == "infer: run folder without a model":
        (w / "run" / "checkpoints").mkdir(parents=True)
        return ["infer", lr(), "--model", w / "run"], "no model file"
    if name == "evaluate: missing manifest":
        return ["evaluate", "--manifest", w / "m.csv", "--model", model], "no such manifest"
    if name == "evaluate: empty split":
        return [
            "evaluate",
            "--manifest",
            manifest,
            "--model",
            model,
            "--split",
            "nosuch",
            "--out",
            w / "eval",
        ], "no subjects in the 'nosuch' split"
    if name == "evaluate: missing model":
        args = ["evaluate", "--manifest", manifest, "--model", w / "none.safetensors"]
        return args, "no such model file"
    if name == "report: not a run folder":
        (w / "run").mkdir()
        return ["report", w / "run"], "no config.yaml"
    if name == "train: unknown config key":
        return ["train", "hcp", "--manifest", manifest, "--set", "optim.nope=1"], "unknown key"
    if name == "train: missing manifest":
        return ["train", "hcp", "--manifest", w / "none.csv"], "no such manifest"
    if name == "train: resume from a pickle":
        torch.save({"x": PickleBomb(w / "marker")}, w / "evil.pt")
        return ["train", "--resume", w / "evil.pt", "--run-dir", w / "run"], "evil.pt"
    if name == "prepare: missing HCP folder":
        return ["prepare", "hcp", "--hcp-root", w / "none", "--out", w / "out"], "no such HCP"
    if name == "prepare: missing persons file":
        args = ["prepare", "hcp", "--hcp-root", root / "raw", "--out", w / "out"]
        return [*args, "--persons", w / "p.csv"], "no such persons file"
    if name == "export: not a checkpoint":
        (w / "old.pt").write_bytes(b"garbage")
        return ["export", "--from", w / "old.pt"], "not a loadable checkpoint"
    raise KeyError(name)


CASES = [
    "infer: missing input",
    "infer: text renamed .nii.gz",
    "infer: truncated gzip",
    "infer: wrong channel count",
    "infer: 3D volume",
    "infer: mask on another grid",
    "infer: DWI without bvecs",
    "infer: output equals input",
    "infer: crafted pickle model",
    "infer: safetensors missing tensor",
    "infer: safetensors mis-shaped tensor",
    "infer: wrong format version",
    "infer: empty mask",
    "infer: all-zero volume",
    "infer: all-NaN volume",
    "infer: some Inf voxels",
    "infer: output folder is a file",
    "infer: bf16 or bad precision",
    "infer: run folder without a model",
    "evaluate: missing manifest",
    "evaluate: empty split",
    "evaluate: missing model",
    "report: not a run folder",
    "train: unknown config key",
    "train: missing manifest",
    "train: resume from a pickle",
    "prepare: missing HCP folder",
    "prepare: missing persons file",
    "export: not a checkpoint",
]


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_one_line_and_leaves_no_trace(name, model_file, phantom_set, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    args, expected = _case(name, work, model_file, phantom_set)
    before = _snapshot(work)
    model_before = hashlib.sha256(model_file.read_bytes()).hexdigest()
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert expected in lines[0], lines[0]
    assert _snapshot(work) == before, "an output was written or an input changed"
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == model_before
    assert not (work / "marker").exists(), "a pickle payload ran"


def test_disk_full_while_writing_leaves_no_partial_output(model_file, tmp_path, monkeypatch):
    lr = _nifti(tmp_path / "lr.nii.gz", _tensor_volume())
    before = _snapshot(tmp_path)
    real_save = nib.save

    def failing_save(image, path):
        real_save(image, path)
        if "_FA" in str(path):  # the second of several outputs
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(nib, "save", failing_save)
    result = runner.invoke(app, ["infer", str(lr), "--model", str(model_file), "--maps"])
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: ") and "No space left" in result.output
    assert _snapshot(tmp_path) == before, "a partial output was left behind"


@pytest.mark.parametrize("shape", [(3, 3, 3), (10, 12, 1)], ids=["smaller than a tile", "thin"])
def test_tiny_and_one_voxel_thick_volumes_are_super_resolved(model_file, tmp_path, shape):
    data = np.zeros((*shape, 6), np.float32)
    data[...] = TENSOR
    lr = _nifti(tmp_path / "lr.nii.gz", data)
    result = runner.invoke(app, ["infer", str(lr), "--model", str(model_file)])
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / "lr_sr.nii.gz")
    assert out.shape == (*(2 * s for s in shape), 6)
    assert np.isfinite(np.asarray(out.dataobj)).all()


def test_html_in_a_subject_id_is_escaped_in_the_report(phantom_set, trained_run, tmp_path):
    from dmri_revgan.report import write_report

    values = {r: {"mean": 1.0, "std": 0.0} for r in ("interior", "total", "exterior")}
    evaluation = {
        "unit": "1e-5 mm^2/s",
        "subjects": {"<script>alert(1)</script>": {"model": {"interior": 1.0}}},
        "summary": {"model": values, "cubic": values},
    }
    mask = np.zeros((8, 8, 8), bool)
    mask[2:6, 2:6, 2:6] = True
    volume = np.moveaxis(_tensor_volume((8, 8, 8)), -1, 0)
    panels = {k: volume for k in ("LR input", "HR truth", "SR output", "edge-aware cubic")}
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(trained_run / "config.yaml", run / "config.yaml")
    paths = write_report(
        run, evaluation, [("<script>alert(1)</script>", panels, mask)], {"note": "<b>"}
    )
    text = paths["html"].read_text()
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;" in text


def test_mostly_non_physical_tensors_warn_once_with_the_count(model_file, tmp_path):
    data = _tensor_volume()
    data[..., [0, 3, 5]] *= -1  # negative diagonal: negative mean diffusivity everywhere
    lr = _nifti(tmp_path / "neg.nii.gz", data)
    result = runner.invoke(app, ["infer", str(lr), "--model", str(model_file)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    brain = int((np.abs(data).sum(-1) > 0).sum())
    assert len(warnings) == 1 and f"{brain} of {brain} brain voxels" in warnings[0]
