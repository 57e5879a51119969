"""Losses, the Trainer's steps, schedule, checkpoints and exact resume (tiny models, CPU)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from dmri_revgan.config import Config, LossConfig, load_config
from dmri_revgan.errors import InputError
from dmri_revgan.losses import gan_loss, objective
from dmri_revgan.model import load_resume_state
from dmri_revgan.training import ImagePool, Trainer, ValidationVolume, lr_lambda


class SyntheticPairs(Dataset):
    """(input, target) 8³ patches where the target is a smooth function of the input."""

    def __init__(self, n: int = 6, size: int = 8) -> None:
        g = torch.Generator().manual_seed(1)
        self.y = torch.randn(n, 6, size, size, size, generator=g)
        self.x = torch.nn.functional.avg_pool3d(self.y, 3, 1, 1) * 0.8

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input": self.x[i], "target": self.y[i]}


def tiny_config(objective_name: str = "paired", use_gan: bool = True, epochs: int = 2) -> Config:
    cfg = Config()
    cfg.model.width, cfg.model.depth, cfg.model.disc_channels, cfg.model.disc_layers = 8, 2, 8, 2
    cfg.loss = LossConfig(
        objective_name, use_gan, "vanilla", 100.0 if objective_name == "paired" else 10.0
    )
    cfg.optim.epochs_constant, cfg.optim.pool_size, cfg.optim.batch_size = epochs, 2, 2
    cfg.data.patch_size = 8
    return cfg


def validation_volume() -> ValidationVolume:
    import nibabel as nib

    from dmri_revgan.inference import TensorInput

    rng = np.random.default_rng(0)
    target = rng.normal(size=(6, 12, 12, 12)).astype(np.float32) * 1e-4 + 5e-4
    mask = np.zeros((12, 12, 12), bool)
    mask[1:11, 1:11, 1:11] = True
    lr = np.moveaxis(target[:, ::2, ::2, ::2] * 0.9, 0, -1)
    image = nib.Nifti1Image(lr, np.diag([2.0, 2, 2, 1]))
    lr_input = TensorInput(lr, mask[::2, ::2, ::2].copy(), image, Path("v_lr.nii.gz"))
    return ValidationVolume("v", lr_input, target, mask)


def make_trainer(tmp_path, cfg: Config, validation=()) -> Trainer:
    return Trainer(
        cfg, tmp_path, SyntheticPairs(), np.zeros(6), np.ones(6), validation, progress=False
    )


def test_gan_loss_values():
    zeros = torch.zeros(1, 1, 3, 3, 3)
    assert math.isclose(gan_loss(zeros, True).item(), math.log(2), rel_tol=1e-6)
    assert math.isclose(gan_loss(zeros, False, "lsgan").item(), 0.0)
    assert math.isclose(gan_loss(zeros, True, "lsgan").item(), 1.0)
    with pytest.raises(ValueError):
        gan_loss(zeros, True, "wgan")


@pytest.mark.parametrize(
    ("name", "use_gan", "terms"),
    [
        ("paired", True, {"l1_F", "l1_G", "gan_F", "gan_G", "loss_G", "loss_D_X", "loss_D_Y"}),
        ("paired", False, {"l1_F", "l1_G", "loss_G"}),
        (
            "unpaired",
            True,
            {"gan_F", "gan_G", "cycle_X", "cycle_Y", "loss_G", "loss_D_X", "loss_D_Y"},
        ),
    ],
)
def test_objectives_train_and_lower_the_loss(tmp_path, name, use_gan, terms):
    trainer = make_trainer(tmp_path, tiny_config(name, use_gan))
    data = SyntheticPairs()
    x, y = data.x[:2], data.y[:2]
    first = trainer.train_step(x, y)
    assert set(first) == terms
    for _ in range(25):
        last = trainer.train_step(x, y)
    key = "l1_F" if name == "paired" else "cycle_X"
    assert last[key] < first[key]


def test_paired_objective_is_equation_12(tmp_path):
    cfg = tiny_config()
    trainer = make_trainer(tmp_path, cfg)
    data = SyntheticPairs()
    x, y = data.x[:1], data.y[:1]
    step = objective(cfg.loss)(
        trainer.gen, trainer.discs["d_x"], trainer.discs["d_y"], x, y, cfg.loss
    )
    with torch.no_grad():
        l1 = (trainer.gen(x) - y).abs().mean() + (trainer.gen.reverse(y) - x).abs().mean()
        d_y = trainer.discs["d_y"](torch.cat((x, trainer.gen(x)), 1))
        d_x = trainer.discs["d_x"](torch.cat((y, trainer.gen.reverse(y)), 1))
        expected = 100 * l1 + gan_loss(d_y, True) + gan_loss(d_x, True)
    assert torch.allclose(step.loss, expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["paired", "unpaired"])
def test_batches_pair_input_and_target_of_the_same_patch_only_when_paired(tmp_path, name):
    cfg = tiny_config(name)
    trainer = make_trainer(tmp_path, cfg)
    data = trainer.train_set
    expected = {round(data.x[i].sum().item(), 2): data.y[i] for i in range(len(data))}
    batches = list(trainer._batches())
    assert len(batches) == len(data) // cfg.optim.batch_size
    matched = [
        torch.equal(expected[round(x_i.sum().item(), 2)], y_i)
        for x, y, _ in batches
        for x_i, y_i in zip(x, y, strict=True)
    ]
    assert all(matched) if name == "paired" else not all(matched)


def test_lr_schedule_constant_then_linear_decay():
    f = lr_lambda(100, 100)
    assert f(0) == 1.0 and f(99) == 1.0
    assert math.isclose(f(100), 1 - 1 / 101) and math.isclose(f(199), 1 - 100 / 101)
    assert lr_lambda(20, 0)(19) == 1.0


def test_image_pool_returns_past_images_once_full():
    torch.manual_seed(0)
    pool = ImagePool(2)
    images = [torch.full((1, 1, 2, 2), float(i)) for i in range(40)]
    seen_old = False
    for i, image in enumerate(images):
        out = pool.query(image)
        assert out.shape == image.shape
        seen_old |= out.item() != i if out.numel() == 1 else out[0, 0, 0, 0].item() != i
    assert len(pool.images) == 2 and seen_old


def test_resume_gives_identical_weights(tmp_path):
    straight = make_trainer(tmp_path / "a", tiny_config("unpaired"), [validation_volume()])
    straight.fit()
    first = make_trainer(tmp_path / "b", tiny_config("unpaired"), [validation_volume()])
    first.fit(epochs=1)
    del first
    torch.manual_seed(1234)  # a new process starts with other RNG state
    resumed = make_trainer(tmp_path / "b", tiny_config("unpaired"), [validation_volume()])
    resumed.load_state(load_resume_state(tmp_path / "b"), tmp_path / "b")
    assert resumed.epoch == 1
    resumed.fit()
    assert resumed.epoch == straight.epoch == 2
    for a, b in zip(
        straight.state()["generator"].values(), resumed.state()["generator"].values(), strict=True
    ):
        assert torch.equal(a, b)
    for k in straight.discs:
        for a, b in zip(straight.discs[k].parameters(), resumed.discs[k].parameters(), strict=True):
            assert torch.equal(a, b)
    rows = (tmp_path / "b" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3 and "val_rmse_interior" in rows[0]
    assert (tmp_path / "b" / "checkpoints" / "best.safetensors").is_file()


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(InputError, match="no such checkpoint"):
        load_resume_state(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x02not a checkpoint")
    with pytest.raises(InputError, match="not a readable resume checkpoint"):
        load_resume_state(corrupt)
    trainer = make_trainer(tmp_path / "run", tiny_config("paired", epochs=1))
    trainer.fit()
    other = make_trainer(tmp_path / "other", tiny_config("unpaired"))
    with pytest.raises(InputError, match="another model or objective"):
        other.load_state(load_resume_state(tmp_path / "run"), tmp_path / "run")


def test_config_overrides_and_unknown_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  depth: 2\n")
    cfg = load_config(str(path), ["model.width=16", "loss.use_gan=false", "optim.lr=1e-3"])
    assert (cfg.model.depth, cfg.model.width, cfg.loss.use_gan, cfg.optim.lr) == (
        2,
        16,
        False,
        1e-3,
    )
    with pytest.raises(ValueError, match="unknown key 'depht'"):
        load_config(str(path), ["model.depht=3"])


def test_a_folder_named_like_a_config_does_not_shadow_it(tmp_path, monkeypatch):
    (tmp_path / "demo").mkdir()  # e.g. a folder of earlier outputs in the working directory
    monkeypatch.chdir(tmp_path)
    assert load_config("demo").name == "demo"


@pytest.mark.parametrize(
    ("name", "depth"),
    [
        ("hcp-paper", 4),
        ("hcp-nogan", 4),
        ("hcp-unpaired", 4),
        ("hcp-d0", 0),
        ("hcp-d2-nogan", 2),
        ("hcp-d8-unpaired", 8),
    ],
)
def test_table3_configs_resolve(name, depth):
    cfg = load_config(name)
    assert cfg.name == name and cfg.model.depth == depth and cfg.model.width == 64
    assert cfg.optim.lr == 2e-4 and cfg.optim.batch_size == 1 and cfg.optim.epochs_constant == 20
    assert cfg.loss.use_gan == ("nogan" not in name)
    assert cfg.loss.lambda_l1 == (10.0 if "unpaired" in name else 100.0)


def test_plan_epochs_fits_the_budget_and_keeps_the_decay():
    from dmri_revgan.config import OptimConfig
    from dmri_revgan.training.schedule import plan_epochs

    o = OptimConfig(epochs_constant=0, epochs_decay=18, schedule="cosine", max_minutes=30)
    assert plan_epochs(o, 100.0) == (0, 18)  # 18 fit
    assert plan_epochs(o, 200.0) == (0, 9)  # half the pace: half the epochs, all decaying
    assert plan_epochs(o, 4000.0) == (0, 1)  # at least one
    paper = OptimConfig(epochs_constant=10, epochs_decay=10, max_minutes=10)
    assert plan_epochs(paper, 60.0) == (5, 5)
    assert plan_epochs(OptimConfig(epochs_constant=1000, max_minutes=10), 60.0) == (10, 0)
    assert plan_epochs(OptimConfig(epochs_decay=18), 1e6) == (20, 18)  # no budget: as configured


def test_plan_patches_reaches_the_budget_whatever_the_epoch_size():
    from dmri_revgan.config import OptimConfig
    from dmri_revgan.training.schedule import plan_patches

    o = OptimConfig(epochs_constant=0, epochs_decay=18, schedule="cosine", max_patches=8000)
    assert plan_patches(o, 192) == (0, 42)  # a small training set: past the configured 18
    assert plan_patches(o, 528) == (0, 16)  # 8,448 patches: the fewest epochs reaching 8,000
    assert plan_patches(o, 10_000) == (0, 1)
    paper = OptimConfig(epochs_constant=10, epochs_decay=10, max_patches=4000)
    assert plan_patches(paper, 100) == (20, 20)  # the configured proportion, scaled up
    with pytest.raises(ValueError, match="max_patches"):
        plan_patches(OptimConfig(max_patches=0), 100)


def test_a_patch_budget_runs_past_the_configured_epochs_and_ends_annealed(tmp_path):
    """12 configured cosine epochs of 4 patches (2 steps of 2); a budget of 70 patches plans
    18 epochs (72 patches), laid out before the first, and the rate ends at exactly 0; the
    plan survives a resume."""
    cfg = tiny_config(use_gan=False, epochs=0)
    cfg.optim.epochs_decay, cfg.optim.schedule, cfg.optim.max_patches = 12, "cosine", 70
    cfg.data.max_steps_per_epoch = 2
    first = make_trainer(tmp_path, cfg)
    first.fit(epochs=5)
    assert first.plan == (0, 18)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=True)
    resumed = make_trainer(tmp_path, cfg)
    resumed.load_state(state, tmp_path)
    rows = resumed.fit()
    assert resumed.plan == (0, 18) and resumed.epoch == 18 and len(rows) == 13
    assert sum(r["patches"] for r in rows) + 5 * 4 == 72 and resumed.opts.lr == 0.0


@pytest.mark.parametrize("kill_after", [None, 2])
def test_a_budget_for_half_the_epochs_ends_annealed_and_resumes_exactly(tmp_path, kill_after):
    """Each epoch takes 10 s on a fake clock; a 1-minute budget fits 6 of the configured 12
    cosine epochs: the plan lays the decay over 6, and the learning rate ends at exactly 0."""

    def trainer(folder):
        cfg = tiny_config(use_gan=False, epochs=0)
        cfg.optim.epochs_decay, cfg.optim.schedule, cfg.optim.max_minutes = 12, "cosine", 1.0
        t = make_trainer(folder, cfg)
        ticks = iter(range(0, 10_000, 10))
        t.clock = lambda: float(next(ticks))
        return t

    straight = trainer(tmp_path / "a")
    rows = straight.fit()
    assert straight.plan == (0, 6) and straight.epoch == 6 and len(rows) == 6
    assert straight.opts.lr == 0.0
    lrs = [r["lr"] for r in rows]
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] > 0
    if kill_after is None:
        return
    first = trainer(tmp_path / "b")
    first.fit(epochs=kill_after)
    state = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=True)
    resumed = trainer(tmp_path / "b")
    resumed.load_state(state, tmp_path / "b")
    assert resumed.plan == (0, 6)
    resumed.fit()
    assert resumed.epoch == 6 and resumed.opts.lr == 0.0
    pairs = zip(straight.gen.state_dict().items(), resumed.gen.state_dict().values(), strict=True)
    for (k, a), b in pairs:
        assert torch.equal(a, b), k
