"""The paper-table recipes run end to end on tiny settings and write their tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from test_images import write_aligned

PIPELINES = Path(__file__).resolve().parents[1] / "pipelines"
TINY = ["--set", "model.width=8", "--set", "model.disc_channels=8", "--set", "model.disc_layers=2",
        "--set", "optim.epochs_constant=1", "--set", "optim.epochs_decay=0"]  # fmt: skip


def _run(script: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run a recipe with tiny models, results in ``tmp_path/results``, runs in ``tmp_path/runs``."""
    out = ["--out", str(tmp_path / "results"), "--runs", str(tmp_path / "runs"), *TINY]
    return subprocess.run(
        [sys.executable, str(PIPELINES / script), *out, *args], capture_output=True, text=True
    )


def test_hcp_table3_recipe_trains_evaluates_and_tabulates(phantom_set, tmp_path):
    _, manifest = phantom_set
    done = _run(
        "hcp_table3.py", tmp_path, "--data", str(manifest), "--configs", "hcp-d0,hcp-d2-nogan",
        "--set", "data.patch_size=16", "--set", "data.max_steps_per_epoch=2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "results" / "table3_hcp.json").read_text())
    assert [(r["config"], r["depth"], r["objective"]) for r in rows] == [
        ("hcp-d0", 0, "paired"),
        ("hcp-d2-nogan", 2, "paired w/o GAN"),
    ]
    assert all(r["model interior"] > 0 and r["cubic interior"] > 0 for r in rows)
    assert "| hcp-d2-nogan |" in (tmp_path / "results" / "table3_hcp.md").read_text()


def test_maps_table4_recipe_scores_both_directions(tmp_path):
    data = write_aligned(tmp_path / "maps")
    done = _run(
        "maps_table4.py", tmp_path, "--data", str(data), "--configs", "maps", "--split", "train",
        "--set", "model.depth=1", "--set", "data.image_size=32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "results" / "table4_maps.json").read_text())
    assert {"F mae", "F psnr", "F ssim", "G mae", "G psnr", "G ssim"} <= set(row)
    assert 0 <= row["F mae"] <= 255


def test_cityscapes_table2_recipe_reports_label_scores(tmp_path):
    from test_images_cli import write_cityscapes_like

    data = write_cityscapes_like(tmp_path / "cityscapes")
    done = _run(
        "cityscapes_table2.py", tmp_path, "--data", str(data), "--configs", "cityscapes",
        "--set", "model.depth=1", "--set", "data.image_size=32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads((tmp_path / "results" / "table2_cityscapes.json").read_text())
    assert all(0 <= row[k] <= 1 for k in ("pixel accuracy", "class accuracy", "class iou"))


def test_sites_cross_validation_leaves_each_person_out(phantom_set, tmp_path):
    """Leave-one-person-out on phantom 'sites' named by a persons file: each fold trains
    without the left-out person and scores only their series, with every DTI measure."""
    raw, _ = phantom_set
    for folder, names in (("site-a", ["a1", "a2"]), ("site-b", ["b1", "b2"])):
        (tmp_path / folder).mkdir()
        for name in names:
            index = {"a1": 1, "a2": 2, "b1": 3, "b2": 4}[name]
            (tmp_path / folder / name).symlink_to(raw / "raw" / f"phantom-{index:02d}")
    persons = tmp_path / "persons.csv"
    persons.write_text(
        "subject,person,folder\na1,P,site-a\na2,Q,site-a\nb1,P,site-b\nb2,R,site-b\n"
    )
    tiny = ["model.width=8", "model.depth=1", "data.patch_size=16", "data.samples_per_volume=2",
            "optim.batch_size=2", "optim.epochs_decay=1"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, str(PIPELINES / "sites.py"), "--persons", str(persons),
         "--work", str(tmp_path / "work"), "--docs", str(tmp_path / "docs"), "--folds", "P,R",
         "--budget-minutes", "5", "--adapt", "0.01", "--adapt-from", "dwi",
         *(a for s in tiny for a in ("--set", s))],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "docs" / "sites.json").read_text())
    assert list(result["folds"]) == ["P", "R"]
    assert result["folds"]["P"]["series"] == ["a1", "b1"]
    assert result["folds"]["R"]["series"] == ["b2"]
    fold_p = (tmp_path / "work" / "prepared" / "lopo-P.csv").read_text()
    assert "a1,P,val" in fold_p and "b1,P,val" in fold_p and "a2,Q,train" in fold_p
    for fold in result["folds"].values():
        for method in ("model", "cubic", "edge_cubic", "nearest"):
            values = fold["means"][method]
            assert values["total"] > 0 and 0 <= values["v1_angle_deg_interior"] <= 90
    table = (tmp_path / "docs" / "sites.md").read_text()
    assert "| P | a1, b1 |" in table and "| **mean** |" in table
    assert "infer --adapt 0.01" in table and "of 2 left-out people" in table
    assert result["folds"]["R"]["adapted"]["means"]["interior"] > 0
    runs = [r for f in result["folds"].values() for r in f["adapted"]["runs"]]
    assert len(runs) == 3 and all(r["degradation"].startswith("DWI signal") for r in runs)
    assert (tmp_path / "docs" / "sites.png").read_bytes()[:4] == b"\x89PNG"
    # Two recipes compared: the same folds, one of them called deeper.
    deeper = dict(result, command=result["command"] + " --set model.depth=2")
    (tmp_path / "docs" / "deeper.json").write_text(json.dumps(deeper))
    done = subprocess.run(
        [sys.executable, str(PIPELINES / "sites_compare.py"), str(tmp_path / "docs" / "sites.json"),
         str(tmp_path / "docs" / "deeper.json"), "--out", str(tmp_path / "docs" / "arch")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "docs" / "arch.json").read_text())
    assert [(r["depth"], r["width"]) for r in rows] == [(1, 8), (2, 8)]
    assert rows[1]["parameters"] > rows[0]["parameters"]
    epochs = result["folds"]["P"]["epochs"]
    assert rows[0]["patches_per_fold"] == {
        "P": epochs * 2 * 2,
        "R": result["folds"]["R"]["epochs"] * 2 * 3,
    }
    assert "| 1 × 8 |" in (tmp_path / "docs" / "arch.md").read_text()
