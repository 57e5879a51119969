"""Does `infer --uncertainty N` point at the errors? Measured on the validation series.

For each subject of the manifest's validation split: one pass of the model, and the mean and
spread (per-voxel RMS over the 6 tensor components of the standard deviation) over N
tensor-aware test-time transforms; then the voxelwise Spearman correlation between the spread
and the actual error of the mean (per-voxel RMS over the 6 components) over the brain, and the
RMSE of the single pass and of the mean. Writes ``<docs>/uncertainty.md`` and ``.json``.

    python pipelines/uncertainty.py --model results/real_data/runs/hcp \\
        --manifest results/real_data/prepared/data_manifest.csv --transforms 8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from dmri_revgan.data.manifest import read_manifest
from dmri_revgan.data.patches import load_hr
from dmri_revgan.inference import infer_volume, read_prepared
from dmri_revgan.io import write_text_atomic
from dmri_revgan.metrics import SCALE, region_rmse
from dmri_revgan.model import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="run folder or model file")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--transforms", type=int, default=8)
    parser.add_argument("--docs", type=Path, default=Path("docs/benchmarks"))
    args = parser.parse_args()
    model = load_model(args.model)
    rows = []
    for record in [r for r in read_manifest(args.manifest) if r.split == args.split]:
        data = read_prepared(record)  # what `infer` reads; the HR tensor and mask only score
        target, mask = load_hr(record)
        start = time.perf_counter()
        single = np.moveaxis(infer_volume(model, data).tensor, -1, 0)
        single_s = time.perf_counter() - start
        start = time.perf_counter()
        pred = infer_volume(model, data, uncertainty=args.transforms)
        ensemble_s = time.perf_counter() - start
        mean, spread = np.moveaxis(pred.tensor, -1, 0), pred.sd
        error = np.sqrt(((mean - target) ** 2).mean(0))
        rho = stats.spearmanr(spread[mask], error[mask]).statistic
        row = {
            "subject": record.subject,
            "transforms": args.transforms,
            "spearman_sd_vs_error": float(rho),
            "single_pass": region_rmse(single, target, mask),
            "mean_of_transforms": region_rmse(mean, target, mask),
            "mean_sd": float(spread[mask].mean() * SCALE),
            "seconds_single": single_s,
            "seconds_ensemble": ensemble_s,
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    command = "python " + " ".join(sys.argv)
    write_text_atomic(
        args.docs / "uncertainty.json",
        json.dumps({"command": command, "model": str(model.path), "rows": rows}, indent=2),
    )
    lines = [
        "# Uncertainty maps (`infer --uncertainty N`) on the validation series",
        "",
        f"Command: `{command}`  ",
        f"Model: `{model.path}` (SHA-256 {model.sha256[:12]}…). RMSE and mean SD in 10⁻⁵ mm²/s.",
        "",
        "| subject | N | Spearman ρ (SD vs error) | single pass interior / total "
        "| mean of N interior / total | mean SD | seconds single / N |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['subject']} | {r['transforms']} | {r['spearman_sd_vs_error']:.3f} "
            f"| {r['single_pass']['interior']:.3f} / {r['single_pass']['total']:.3f} "
            f"| {r['mean_of_transforms']['interior']:.3f} / {r['mean_of_transforms']['total']:.3f} "
            f"| {r['mean_sd']:.3f} | {r['seconds_single']:.1f} / {r['seconds_ensemble']:.1f} |"
            for r in rows
        ),
    ]
    write_text_atomic(args.docs / "uncertainty.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
