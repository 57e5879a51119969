"""Real-data regression: a short training of the default recipe on person A beats cubic spline
on both person-B series (the shared real DWI; skipped where ../shared is absent)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import SHARED_DATA, real_persons

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data/hcp-like"),
]


def test_short_default_training_beats_cubic_on_person_b(tmp_path):
    from dmri_revgan.config import load_config
    from dmri_revgan.data.hcp import discover
    from dmri_revgan.data.manifest import read_manifest, write_manifest
    from dmri_revgan.data.prepare import prepare_hcp
    from dmri_revgan.evaluate import evaluate_subjects
    from dmri_revgan.inference import infer_volume, read_prepared
    from dmri_revgan.model import load_model
    from dmri_revgan.training import run_training

    persons = real_persons(s.subject for s in discover(SHARED_DATA))
    outcomes, manifest = prepare_hcp(
        SHARED_DATA, tmp_path / "prepared", workers=2, ratios=(1, 1, 0), persons=persons
    )
    assert all(o.error is None for o in outcomes)
    records = read_manifest(manifest)
    for r in records:
        r.split = "val" if r.person == "B" else "train"
    write_manifest(manifest, records)
    cfg = load_config(
        "hcp",
        [
            f"data.manifest={manifest}",
            "optim.epochs_decay=4",
            "optim.max_minutes=8",
        ],
    )
    run_training(cfg, tmp_path / "run", progress=False)
    model = load_model(tmp_path / "run" / "checkpoints" / "last.safetensors")

    def predict(record):  # as `infer` does: from the LR tensor and LR mask alone
        return np.moveaxis(infer_volume(model, read_prepared(record)).tensor, -1, 0)

    person_b = [r for r in read_manifest(manifest) if r.split == "val"]
    assert {r.subject for r in person_b} == {"xa30-10", "xa30-17"}
    scores = evaluate_subjects(person_b, predict)
    for subject, per in scores.items():
        assert per["model"]["interior"] < per["cubic"]["interior"], (subject, per)
        assert per["model"]["total"] < per["edge_cubic"]["total"], (subject, per)
