"""Regenerate the shipped pretrained model from every series of a persons file.

Prepares all series named in the persons file (``subject,person,folder``; by default the 24
shared real series of 7 people) into one manifest with every person in ``train``, trains the
default recipe (``configs/hcp.yaml``) for a fixed number of epochs (reproducible on any machine,
unlike a wall-clock budget), and copies the last model file into the package
(``dmri_revgan/pretrained/``), where ``dmri-revgan infer`` finds it when ``--model`` is absent.
Resumable: a finished run is only copied again.

    python pipelines/pretrained.py --persons ../shared/data/persons.csv --epochs 14 \
        --set optim.precision=bf16
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
from pathlib import Path

from dmri_revgan.config import load_config
from dmri_revgan.io import atomic_path
from dmri_revgan.model import PRETRAINED_FILE
from dmri_revgan.training import run_training


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--persons", type=Path, default=Path("../shared/data/persons.csv"))
    parser.add_argument("--work", type=Path, default=Path("results/pretrained"), help="data, run")
    parser.add_argument("--recipe", default="hcp")
    parser.add_argument("--epochs", type=int, default=14, help="cosine epochs over all series")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], help="extra config override")
    parser.add_argument("--target", type=Path, default=PRETRAINED_FILE, help="where it ships")
    args = parser.parse_args()

    from sites import prepare

    manifest = prepare(args.persons, args.work / "prepared", args.workers)
    overrides = [
        f"data.manifest={manifest}",
        f"optim.epochs_decay={args.epochs}",
        "optim.epochs_constant=0",
        "optim.max_minutes=null",
        f"seed={args.seed}",
        *args.set,
    ]
    cfg = load_config(args.recipe, overrides)
    run = args.work / "run"
    resume = run if (run / "checkpoints" / "last.pt").is_file() else None
    run_training(cfg, run, resume, args.device, argv=sys.argv)
    args.target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.target) as tmp:
        shutil.copyfile(run / "checkpoints" / "last.safetensors", tmp)
    digest = hashlib.sha256(args.target.read_bytes()).hexdigest()
    print(f"shipped model: {args.target} (SHA-256 {digest})")


if __name__ == "__main__":
    main()
