"""The one-command demo (``dmri-revgan demo`` / ``make demo``): the whole chain on a phantom.

phantom → prepare (tensor fit, IQT LR simulation, manifest) → train a small paired RevGAN
(``configs/demo.yaml``) → sliding-window inference on the test subjects → evaluation against the
interpolation baselines → HTML/PDF report. Everything lands under one folder::

    <out>/phantom/            generated DWIs in the HCP layout (true tensors beside them)
    <out>/prepared/           HR/LR tensors and masks, data_manifest.csv
    <out>/run/                the training run; run/evaluation/ metrics + predictions;
                              run/report.html and run/report.pdf
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dmri_revgan.errors import InputError

DEMO_CONFIG = "demo"


def run_demo(
    out: Path,
    subjects: int = 6,
    seed: int = 0,
    workers: int = 2,
    say: Callable[[str], None] = print,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the demo into ``out``; returns {"evaluation": metrics dict, "report": html path, ...}.

    Re-running reuses the phantom and prepared data (the preparation skips up-to-date subjects)
    and retrains from scratch: ``<out>/run`` belongs to the demo and is replaced.
    """
    from dmri_revgan.config import load_config
    from dmri_revgan.data.phantom import write_phantom_dataset
    from dmri_revgan.data.prepare import prepare_hcp
    from dmri_revgan.evaluate import run_evaluation
    from dmri_revgan.progress import progress_bar
    from dmri_revgan.report import report_run
    from dmri_revgan.training import run_training

    if subjects < 3:
        raise InputError("--subjects", "the demo needs at least 3 subjects (train, val, test)")
    start = time.perf_counter()

    def step(message: str) -> None:
        say(f"[{time.perf_counter() - start:5.0f} s] {message}")

    raw, prepared, run = out / "phantom", out / "prepared", out / "run"
    step(f"1/5 generating {subjects} phantom subjects in {raw}")
    with progress_bar() as bar:
        task = bar.add_task("phantom subjects", total=subjects)
        write_phantom_dataset(raw, subjects, seed, report=lambda s: bar.advance(task))

    step(f"2/5 preparing HR/LR tensors in {prepared}")
    with progress_bar() as bar:
        task = bar.add_task("preparing subjects", total=subjects)
        outcomes, manifest = prepare_hcp(
            raw, prepared, workers=workers, seed=seed, progress=lambda o: bar.advance(task)
        )
    failed = [o.error for o in outcomes if o.error]
    if failed:
        raise InputError(prepared, f"preparation failed: {failed[0]}")

    cfg = load_config(
        DEMO_CONFIG, [f"data.manifest={manifest}", f"seed={seed}", *(overrides or [])]
    )
    step(
        f"3/5 training the default recipe (width {cfg.model.width}, reversible blocks "
        f"{cfg.model.depth}, epochs {cfg.optim.epochs_constant + cfg.optim.epochs_decay}) in {run}"
    )
    if run.exists():
        shutil.rmtree(run)
    summary = run_training(cfg, run, argv=["dmri-revgan", "demo", str(out)])

    step("4/5 inferring and evaluating the test subjects against the baselines")
    evaluation = run_evaluation(manifest, run, split="test", out=run / "evaluation")

    step("5/5 writing the report")
    paths = report_run(run)
    step(f"done: report at {paths['html']}")
    return {"evaluation": evaluation, "report": paths["html"], "training": summary}
