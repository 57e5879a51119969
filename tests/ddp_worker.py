"""Run by tests/test_distributed.py under torchrun: a few distributed steps, then each rank saves
its generator and discriminator weights so the test can compare ranks."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from test_train import SyntheticPairs, tiny_config  # noqa: E402

from dmri_revgan.training import Trainer, distributed_session  # noqa: E402


def main(out: Path) -> None:
    with distributed_session("cpu"):
        rank = dist.get_rank()
        cfg = tiny_config("paired", epochs=1)
        cfg.data.max_steps_per_epoch = 3
        trainer = Trainer(
            cfg, out / "run", SyntheticPairs(n=12), np.zeros(6), np.ones(6), progress=False
        )
        rows = trainer.fit()
        state = {
            "gen": trainer.gen.state_dict(),
            **{k: d.state_dict() for k, d in trainer.discs.items()},
            "patches": rows[-1]["patches"],
            "world": dist.get_world_size(),
        }
        torch.save(state, out / f"rank{rank}.pt")
    assert not dist.is_initialized(), "the session left the process group"


if __name__ == "__main__":
    main(Path(sys.argv[1]))
