"""How the brain mask a prediction is made on moves the scores of one model.

The same model's validation series predicted three ways, all scored on the HR brain mask:
on the HR mask itself (what benchmark tables did before session 14 — a user never has it), on
the HR mask `infer` estimates from the LR mask (what it does now), and on the blocky nearest
upsampling of the LR mask (what `infer` wrote before). Tensor RMSE in 1e-5 mm²/s.

    python pipelines/mask_effect.py --model results/sites/runs-B/hcp \
        --manifest results/sites/prepared/lopo-B.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from dmri_revgan.data.degrade import upsample
from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.data.patches import load_lr_mask, load_pair
from dmri_revgan.dti import voxel_frame
from dmri_revgan.evaluate import evaluate_subjects
from dmri_revgan.inference import infer_volume, predict_volume, read_prepared
from dmri_revgan.model import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder or model file")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    model = load_model(args.model)
    records = [r for r in read_manifest(args.manifest) if r.split == args.split]

    def on(mask_of: Any):
        def predict(record: Any) -> np.ndarray:
            pair = load_pair(record, model.cfg.data.input)
            mask = mask_of(record, pair)
            x = voxel_frame(pair["input"], pair["affine"])
            out = predict_volume(model.gen, x, model.mean, model.std, mask)
            return voxel_frame(out, pair["affine"])

        return predict

    ways = {
        "HR mask (tables before session 14)": on(lambda r, pair: pair["mask"][0] > 0),
        "estimated HR mask (infer now)": lambda r: np.moveaxis(
            infer_volume(model, read_prepared(r)).tensor, -1, 0
        ),
        "blocky LR mask (infer before)": on(
            lambda r, pair: upsample(load_lr_mask(r)[None], r.factor, 0)[0]
        ),
    }
    rows = {}
    for name, predict in ways.items():
        scores = evaluate_subjects(records, predict)
        for method in (name, "edge_cubic", "cubic"):
            key = "model" if method == name else method
            rows[method] = {
                region: float(np.mean([s[key][region] for s in scores.values()]))
                for region in ("interior", "total", "exterior")
            }
    print(json.dumps({"model": str(model.path), "series": len(records), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
