"""Regenerate the paper's Table 3 (3D HCP super-resolution) on a prepared data manifest.

Trains the 3D-SRCNN (depth 0) and RevGAN with 2, 4 and 8 reversible blocks, each paired, paired
without the GAN terms and unpaired, then reports the test-split tensor RMSE (interior / total,
10⁻⁵ mm²/s) next to the interpolation baselines on the same subjects. Runs already in
``--runs`` are resumed, so the recipe can be interrupted and restarted.

    python pipelines/hcp_table3.py --data prepared/data_manifest.csv --out results
    python pipelines/hcp_table3.py --data data_manifest.csv --configs hcp-d0,hcp-d2 \
        --set optim.epochs_constant=2        # a quick pass on the demo phantom
"""

from __future__ import annotations

from paper_tables import parse_args, run_table

from dmri_revgan.evaluate import run_evaluation
from dmri_revgan.training import run_training

CONFIGS = [
    f"hcp-d{d}{v}" if d != 4 else f"hcp{v or '-paper'}"
    for d in (0, 2, 4, 8)
    for v in ("", "-nogan", "-unpaired")
]
COLUMNS = [
    (f"{method} {region}", method, region)
    for method in ("model", "cubic", "trilinear", "nearest")
    for region in ("interior", "total")
]


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], CONFIGS, "prepared data_manifest.csv")
    run_table(
        args,
        "table3_hcp",
        lambda cfg, run, resume: run_training(cfg, run, resume, args.device),
        lambda run: run_evaluation(args.data, run, split=args.split, device=args.device),
        COLUMNS,
        "data.manifest",
    )


if __name__ == "__main__":
    main()
