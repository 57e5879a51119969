"""Regenerate the paper's Table 4 (Maps 256², aerial photo ↔ map) on a pix2pix "maps" folder.

Trains RevGAN with 9 reversible blocks at widths 32, 58 and 64, paired and unpaired, and reports
MAE, PSNR and SSIM (0–255 images) of both directions on the test split. Runs already in
``--runs`` are resumed.

    python pipelines/maps_table4.py --data datasets/maps --out results --split val
"""

from __future__ import annotations

from paper_tables import parse_args, run_table

from dmri_revgan.evaluate import evaluate_images
from dmri_revgan.training import run_training

CONFIGS = [f"maps{w}{v}" for v in ("", "-unpaired") for w in ("", "-w58", "-w64")]
COLUMNS = [
    (f"{direction} {metric}", direction, metric)
    for direction in ("F", "G")
    for metric in ("mae", "psnr", "ssim")
]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CONFIGS, "pix2pix maps folder (train/, val/)")
    run_table(
        args,
        "table4_maps",
        lambda cfg, run, resume: run_training(cfg, run, resume, args.device),
        lambda run: evaluate_images(run, args.data, args.split, device=args.device),
        COLUMNS,
        "data.root",
    )


if __name__ == "__main__":
    main()
