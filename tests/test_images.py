"""2D data (pix2pix / CycleGAN folders), 2D metrics, 2D configs and training steps."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from dmri_revgan.config import load_config
from dmri_revgan.data.images import AlignedImages, UnalignedImages, to_uint8
from dmri_revgan.errors import InputError
from dmri_revgan.metrics import (
    CITYSCAPES_CLASSES,
    IGNORE,
    colours_to_labels,
    confusion,
    image_errors,
    segmentation_scores,
)
from dmri_revgan.training import Trainer


def write_aligned(root, n=3, size=40):
    """A|B images where A is red-ish, B blue-ish, so the halves are distinguishable."""
    (root / "train").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        a = np.zeros((size, size, 3), np.uint8)
        a[..., 0] = 200
        b = np.zeros((size, size, 3), np.uint8)
        b[..., 2] = 200
        a[..., 1] = b[..., 1] = rng.integers(0, 255, (size, size))
        Image.fromarray(np.concatenate([a, b], 1)).save(root / "train" / f"{i}.png")
    return root


def write_unaligned(root, n_a=3, n_b=2, size=40):
    for domain, n, channel in (("A", n_a, 0), ("B", n_b, 2)):
        (root / f"train{domain}").mkdir(parents=True)
        for i in range(n):
            image = np.zeros((size, size, 3), np.uint8)
            image[..., channel] = 100 + i
            Image.fromarray(image).save(root / f"train{domain}" / f"{i}.jpg")
    return root


def test_aligned_loading_shapes_range_direction_and_jitter(tmp_path):
    root = write_aligned(tmp_path / "facades")
    data = AlignedImages(root, "train", "AtoB", image_size=32, seed=0)
    item = data[0]
    assert item["input"].shape == item["target"].shape == (3, 32, 32)
    assert item["input"].min() >= -1 and item["input"].max() <= 1
    assert item["input"][0].mean() > 0.3 and item["target"][2].mean() > 0.3  # A red, B blue
    # The same crop and flip for A and B: the shared green channel is identical.
    assert torch.equal(item["input"][1], item["target"][1])
    swapped = AlignedImages(root, "train", "BtoA", image_size=32, seed=0)[0]
    assert torch.equal(swapped["input"], item["target"])
    again = AlignedImages(root, "train", "AtoB", image_size=32, seed=0)[0]
    assert torch.equal(again["input"], item["input"]), "deterministic under the seed"
    data.set_epoch(1)
    assert not torch.equal(data[0]["input"], item["input"]), "jitter changes with the epoch"
    test = AlignedImages(root, "train", image_size=32, train=False)[0]
    assert test["input"].shape == (3, 32, 32)


def test_unaligned_loading_and_errors(tmp_path):
    root = write_unaligned(tmp_path / "horse2zebra")
    data = UnalignedImages(root, "train", image_size=32, seed=0)
    assert len(data) == 3
    item = data[2]
    assert item["input"][0].mean() > item["input"][2].mean()
    assert item["target"][2].mean() > item["target"][0].mean()
    flipped = UnalignedImages(root, "train", "BtoA", image_size=32)[0]
    assert flipped["input"][2].mean() > flipped["input"][0].mean()
    with pytest.raises(InputError, match="no such image folder"):
        UnalignedImages(tmp_path / "missing")
    (tmp_path / "bad" / "train").mkdir(parents=True)
    (tmp_path / "bad" / "train" / "x.png").write_bytes(b"not a png")
    with pytest.raises(InputError, match="x.png: not a readable image"):
        AlignedImages(tmp_path / "bad")[0]


def test_image_errors_match_scikit_image():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (48, 48, 3)).astype(np.uint8)
    b = np.clip(a.astype(int) + rng.integers(-40, 40, a.shape), 0, 255).astype(np.uint8)
    errors = image_errors(b, a)
    assert errors["mae"] == pytest.approx(np.abs(a.astype(float) - b).mean())
    assert errors["psnr"] == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), rel=1e-9)
    reference = structural_similarity(
        a,
        b,
        channel_axis=-1,
        data_range=255,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
    )
    assert errors["ssim"] == pytest.approx(reference, rel=1e-6)
    assert image_errors(a, a)["ssim"] == pytest.approx(1.0)


def palette_image(labels):
    colours = np.array([c for _, c in CITYSCAPES_CLASSES], np.uint8)
    return colours[labels]


def test_segmentation_scores_perfect_and_known_confusion():
    labels = np.array([[0, 0, 1, 1], [2, 2, 2, 2]])
    noisy = np.clip(palette_image(labels).astype(int) + 6, 0, 255)  # JPEG-like colour noise
    pred = colours_to_labels(noisy)
    assert np.array_equal(pred, labels)
    perfect = segmentation_scores(confusion(pred, labels, 19))
    assert perfect == {"pixel_accuracy": 1.0, "class_accuracy": 1.0, "class_iou": 1.0}
    # Predict class 1 where the truth is 0 in one pixel: class 0 IoU 1/2, class 1 IoU 2/3.
    wrong = labels.copy()
    wrong[0, 0] = 1
    scores = segmentation_scores(confusion(wrong, labels, 19))
    assert scores["pixel_accuracy"] == pytest.approx(7 / 8)
    assert scores["class_accuracy"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert scores["class_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    void = colours_to_labels(np.zeros((1, 1, 3), np.uint8), max_distance=20)
    assert void[0, 0] == IGNORE


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("cityscapes", 1.3),
        ("cityscapes-w56", 3.9),
        ("maps", 1.7),
        ("maps-w58", 5.6),
        ("maps-w64", 6.8),
        ("maps-w64-unpaired", 6.8),
    ],
)
def test_2d_config_parameter_counts(name, millions):
    from dmri_revgan.model import build_generator

    cfg = load_config(name)
    count = sum(p.numel() for p in build_generator(cfg).parameters())
    assert abs(count / 1e6 - millions) <= 0.03 * millions
    assert (cfg.optim.epochs_constant, cfg.optim.epochs_decay, cfg.optim.batch_size) == (
        100,
        100,
        1,
    )
    assert cfg.loss.lambda_l1 == (10.0 if "unpaired" in name else 100.0)


@pytest.mark.parametrize("objective", ["paired", "unpaired"])
def test_2d_training_steps_lower_the_loss(tmp_path, objective):
    root = (write_aligned if objective == "paired" else write_unaligned)(tmp_path / "data")
    suffix = "" if objective == "paired" else "-unpaired"
    cfg = load_config(
        f"maps{suffix}",
        ["model.width=4", "model.depth=2", "model.disc_channels=8", "data.image_size=32"],
    )
    dataset = (AlignedImages if objective == "paired" else UnalignedImages)(
        root, image_size=32, seed=0
    )
    trainer = Trainer(cfg, tmp_path / "run", dataset, np.zeros(3), np.ones(3), progress=False)
    x = torch.stack([dataset[i]["input"] for i in range(2)])
    y = torch.stack([dataset[i]["target"] for i in range(2)])
    key = "l1_F" if objective == "paired" else "cycle_X"
    first = trainer.train_step(x, y)[key]
    for _ in range(15):
        last = trainer.train_step(x, y)[key]
    assert last < first
    assert to_uint8(trainer.gen(x)[0]).shape == (32, 32, 3)
