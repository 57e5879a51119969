"""Regenerate the paper's Table 2 (Cityscapes 128², photo → label) on a pix2pix "cityscapes"
folder.

Trains RevGAN with 6 reversible blocks at widths 32 and 56, paired and unpaired, and reports
per-pixel accuracy, per-class accuracy and class IoU of the photo → label direction over all
pixels of the split. The label → photo FCN-score needs a pretrained segmenter, which this recipe
does not have; use ``dmri-revgan evaluate --segmenter`` for it. Runs in ``--runs`` are resumed.

    python pipelines/cityscapes_table2.py --data datasets/cityscapes --out results --split val
"""

from __future__ import annotations

from paper_tables import parse_args, run_table

from dmri_revgan.evaluate import evaluate_images
from dmri_revgan.training import run_training

CONFIGS = [f"cityscapes{w}{v}" for v in ("", "-unpaired") for w in ("", "-w56")]
COLUMNS = [
    (metric.replace("_", " "), "F", metric)
    for metric in ("pixel_accuracy", "class_accuracy", "class_iou")
]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CONFIGS, "pix2pix cityscapes folder (train/, val/)")
    run_table(
        args,
        "table2_cityscapes",
        lambda cfg, run, resume: run_training(cfg, run, resume, args.device),
        lambda run: _dataset_scores(
            evaluate_images(run, args.data, args.split, device=args.device)
        ),
        COLUMNS,
        "data.root",
    )


def _dataset_scores(result: dict) -> dict:
    """Use the scores over all pixels of the split (as the paper reports), not per-image means."""
    summary = {"F": {k: {"mean": v} for k, v in result["dataset"].get("F", {}).items()}}
    return {**result, "summary": summary}


if __name__ == "__main__":
    main()
