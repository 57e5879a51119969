"""Regenerate the paper's Table 5 (memory and speed vs depth) on this machine.

3D: HCP-style SRCNN generator, width 64, 24³ patches, depths 2–32. 2D: Maps-style ResNet
generator, 256² images, depths 6–30. Every configuration runs in a fresh subprocess (one warm-up
step, then timed steps of the unpaired generator objective) for its memory; then, per depth, all
modes are timed alternately in one process (``--rounds``) for the ratios to naive. Writes JSON, a
markdown table and a PNG plot per table into ``--out`` (default ``results/``).

    python pipelines/memory_table5.py --out results --device cpu
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dmri_revgan.bench import MODES, memory_benchmark, write_results

TABLES = {
    "table5_3d": dict(dims=3, depths=[2, 4, 8, 16, 32], width=64, size=24),
    "table5_2d": dict(dims=2, depths=[6, 9, 12, 18, 30], width=32, size=256),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--tables", default=",".join(TABLES))
    args = parser.parse_args()
    for name in args.tables.split(","):
        spec = TABLES[name]
        rows = memory_benchmark(
            modes=args.modes.split(","),
            device=args.device,
            steps=args.steps,
            rounds=args.rounds,
            **spec,
        )
        stem = name if args.device == "cpu" else f"{name}_{args.device.split(':')[0]}"
        print(write_results(rows, args.out, stem)["md"].read_text())


if __name__ == "__main__":
    main()
