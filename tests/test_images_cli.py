"""2D runs through the command line: train, infer on images, evaluate both ways, report."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from test_images import palette_image, write_aligned
from typer.testing import CliRunner

from dmri_revgan.cli import app
from dmri_revgan.metrics import CITYSCAPES_CLASSES

runner = CliRunner()
TINY = [
    "--set", "model.width=4", "--set", "model.depth=1", "--set", "model.disc_channels=8",
    "--set", "data.image_size=32", "--set", "optim.epochs_constant=1",
    "--set", "optim.epochs_decay=0",
]  # fmt: skip


def write_cityscapes_like(root, n=3, size=40):
    """photo|label pairs: random photos, label maps in the Cityscapes palette."""
    rng = np.random.default_rng(1)
    for phase in ("train", "test"):
        (root / phase).mkdir(parents=True)
        for i in range(n):
            photo = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
            labels = np.repeat(np.arange(size)[None] * 19 // size, size, 0)
            pair = np.concatenate([photo, palette_image(labels)], 1)
            Image.fromarray(pair).save(root / phase / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny Maps-style and a tiny Cityscapes-style paired run."""
    base = tmp_path_factory.mktemp("runs2d")
    maps = write_aligned(base / "maps")
    shutil.copytree(maps / "train", maps / "test")
    cityscapes = write_cityscapes_like(base / "cityscapes")
    out = {}
    for name, data in (("maps", maps), ("cityscapes", cityscapes)):
        result = runner.invoke(
            app, ["train", name, "--data", str(data), "--run-dir", str(base / name), *TINY]
        )
        assert result.exit_code == 0, result.output
        out[name] = (base / name, data)
    return out


def test_infer_translates_an_image_and_a_folder_both_ways(runs, tmp_path):
    run, data = runs["maps"]
    image = tmp_path / "photo.png"
    Image.fromarray(np.asarray(Image.open(data / "test" / "0.png"))[:, :40]).save(image)
    result = runner.invoke(app, ["infer", str(image), "--model", str(run)])
    assert result.exit_code == 0, result.output
    out = np.asarray(Image.open(tmp_path / "photo_AtoB.png"))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    result = runner.invoke(app, ["infer", str(image), "--model", str(run), "--direction", "down"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "photo_BtoA.png").is_file()
    folder = runner.invoke(app, ["infer", str(data / "test"), "--model", str(run)])
    assert folder.exit_code == 0, folder.output
    assert sorted(p.name for p in (data / "test_AtoB").iterdir()) == ["0.png", "1.png", "2.png"]
    same = runner.invoke(app, ["infer", str(image), "--model", str(run), "-o", str(image)])
    assert same.exit_code == 1 and same.output.startswith("error: ")


def test_evaluate_scores_both_directions_and_report_shows_samples(runs):
    run, _ = runs["maps"]
    result = runner.invoke(app, ["evaluate", "--model", str(run)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert metrics["kind"] == "images" and len(metrics["subjects"]) == 3
    for direction in ("F", "G"):
        assert set(metrics["summary"][direction]) == {"mae", "psnr", "ssim"}
    first = next(iter(metrics["subjects"].values()))["F"]
    assert 0 <= first["mae"] <= 255 and -1 <= first["ssim"] <= 1
    report = runner.invoke(app, ["report", str(run)])
    assert report.exit_code == 0, report.output
    text = (run / "report.html").read_text()
    assert "Sample translations" in text and 'class="method-F"' in text
    assert all(s.startswith("data:image/png") for s in re.findall(r"src='([^']*)'", text))


def test_cityscapes_photo_to_label_gets_segmentation_scores(runs):
    run, _ = runs["cityscapes"]
    result = runner.invoke(app, ["evaluate", "--model", str(run)])
    assert result.exit_code == 0, result.output
    assert "FCN-score not computed" in result.output
    metrics = json.loads((run / "evaluation" / "metrics.json").read_text())
    assert set(metrics["summary"]["F"]) == {"pixel_accuracy", "class_accuracy", "class_iou"}
    assert set(metrics["summary"]["G"]) == {"mae", "psnr", "ssim"}
    assert 0 <= metrics["dataset"]["F"]["class_iou"] <= 1
    assert len(CITYSCAPES_CLASSES) == 19


def test_fcn_score_with_a_user_supplied_segmenter(runs, tmp_path):
    import torch

    class Road(torch.nn.Module):
        """Calls every pixel class 0 (road)."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            logits = torch.zeros(x.shape[0], 19, x.shape[2], x.shape[3])
            logits[:, 0] = 1.0
            return logits

    path = tmp_path / "segmenter.pt2"
    torch.export.save(torch.export.export(Road(), (torch.zeros(1, 3, 32, 32),)), str(path))
    run, _ = runs["cityscapes"]
    out = tmp_path / "eval"
    result = runner.invoke(
        app, ["evaluate", "--model", str(run), "--segmenter", str(path), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    # "Road" everywhere: pixel accuracy = the share of road among the labelled truth pixels.
    from dmri_revgan.data.images import AlignedImages, to_uint8
    from dmri_revgan.metrics import IGNORE, colours_to_labels

    _, data = runs["cityscapes"]
    test = AlignedImages(data, "test", image_size=32, train=False)
    truth = np.stack([colours_to_labels(to_uint8(test[i]["target"]), 30.0) for i in range(3)])
    expected = (truth == 0).sum() / (truth != IGNORE).sum()
    assert 0 < expected < 1
    assert metrics["dataset"]["fcn"]["pixel_accuracy"] == pytest.approx(expected)
    bad = runner.invoke(
        app, ["evaluate", "--model", str(run), "--segmenter", str(tmp_path / "none.pt2")]
    )
    assert bad.exit_code == 1 and "no such segmentation model" in bad.output
