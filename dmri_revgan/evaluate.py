"""Evaluation against the interpolation baselines, on the subjects of a data manifest.

For every subject of a split: the model's super-resolved tensor and the nearest-neighbour,
trilinear, cubic-spline and edge-aware cubic (:func:`dmri_revgan.data.degrade.interpolate`)
interpolations of the LR tensor, each compared with the HR tensor on the same masks: tensor RMSE
(interior / total / exterior = the edge band, 10⁻⁵ mm²/s), FA mean absolute error, MD RMSE
(10⁻⁵ mm²/s), the angular error of the principal eigenvector (degrees, sign-free, where the
reference FA > 0.2: what tractography follows), and the model's percentage below cubic and
below edge-aware cubic (a model that beats only the naive baselines shows so). Written as
``metrics.json`` and ``metrics.csv``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dmri_revgan.data.degrade import INTERPOLATIONS, interpolate
from dmri_revgan.errors import InputError
from dmri_revgan.io import atomic_path, write_csv_atomic, write_text_atomic
from dmri_revgan.metrics import FA_THRESHOLD, UNIT, region_scores

BASELINES = INTERPOLATIONS  # nearest, trilinear, cubic, edge_cubic


def fa_md_channels_first(tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FA and MD (mm²/s) of a (6, X, Y, Z) FSL-order tensor volume."""
    from dmri_revgan.dti import fa_md

    return fa_md(np.moveaxis(tensor, 0, -1))


def compare(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """Tensor RMSE per region; FA MAE, MD RMSE (10⁻⁵ mm²/s) and the principal eigenvector's
    angular error (degrees, where the reference FA > 0.2; ``v1_voxels`` counts them) on
    interior and total (:func:`dmri_revgan.metrics.region_scores`)."""
    return region_scores(pred, target, mask)


def summarise(subjects: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """{method: {metric: {"mean", "std"}}} over subjects (population std, ddof 0)."""
    methods = dict.fromkeys(m for per in subjects.values() for m in per)
    summary: dict[str, Any] = {}
    for method in methods:
        keys = dict.fromkeys(k for per in subjects.values() for k in per.get(method, {}))
        summary[method] = {
            k: {
                "mean": float(np.nanmean(values)),
                "std": float(np.nanstd(values)),
            }
            for k in keys
            for values in [[per[method][k] for per in subjects.values() if method in per]]
        }
    return summary


def write_metrics(
    subjects: dict[str, dict[str, dict[str, float]]], out_dir: Path, extra: dict[str, Any]
) -> dict[str, Any]:
    """Write ``metrics.json`` and ``metrics.csv`` (one row per subject and method) atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"unit": UNIT, **extra, "subjects": subjects, "summary": summarise(subjects)}
    rows = [
        {"subject": s, "method": m, **values}
        for s, per in subjects.items()
        for m, values in per.items()
    ]
    write_csv_atomic(out_dir / "metrics.csv", rows)
    write_text_atomic(out_dir / "metrics.json", json.dumps(result, indent=2))
    return result


def evaluate_subjects(
    records: Sequence[Any],
    predict: Callable[[Any], np.ndarray] | None,
    progress: Callable[[str], None] = lambda s: None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Metrics of the model (``predict(record)`` → (6, X, Y, Z) mm²/s) and of every baseline."""
    from dmri_revgan.data.patches import load_lr, load_lr_mask, load_pair

    subjects: dict[str, dict[str, dict[str, float]]] = {}
    for record in records:
        progress(record.subject)
        pair = load_pair(record)
        target, mask = pair["target"], pair["mask"][0] > 0
        lr, lr_mask = load_lr(record), load_lr_mask(record)
        per: dict[str, dict[str, float]] = {}
        if predict is not None:
            per["model"] = compare(predict(record), target, mask)
        for name in BASELINES:
            per[name] = compare(interpolate(lr, record.factor, name, lr_mask), target, mask)
        if "model" in per:
            per["model"] |= improvement(per["model"], per)
        subjects[record.subject] = per
    return subjects


def improvement(model: dict[str, float], methods: dict[str, dict[str, float]]) -> dict:
    """The model's RMSE percentage below cubic and edge-aware cubic, per region (positive =
    better than that baseline): ``pct_below_cubic_interior``, ``pct_below_edge_cubic_total``…"""
    out = {}
    for base in ("cubic", "edge_cubic"):
        for region in ("interior", "total", "exterior"):
            ref = methods[base][region]
            out[f"pct_below_{base}_{region}"] = 100.0 * (1.0 - model[region] / ref)
    return out


def run_evaluation(
    manifest: Path,
    model: Path | None = None,
    predictions: Path | None = None,
    split: str = "test",
    out: Path | None = None,
    device: str = "cpu",
    report: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """The ``evaluate`` command: metrics of a model (or a folder of predictions) and baselines.

    With ``model`` (a run folder or model file) each subject is super-resolved from its LR
    tensor and LR mask exactly as ``infer`` does (:func:`infer_volume`; the HR mask only
    scores) and saved as ``<out>/predictions/<subject>_sr.nii.gz`` with ``_sr_mask.nii.gz``.
    With ``predictions``, ``<folder>/<subject>_sr.nii.gz`` (or ``<subject>.nii.gz``) are read.
    Results go to ``<out>/metrics.json`` and ``metrics.csv`` (default out: ``<model>/evaluation``).
    """
    import nibabel as nib

    from dmri_revgan import io
    from dmri_revgan.data.manifest import read_manifest
    from dmri_revgan.inference import SR_MASK, SR_TENSOR, infer_volume, read_prepared
    from dmri_revgan.model import load_model

    records = [r for r in read_manifest(manifest) if r.split == split]
    if not records:
        raise InputError(manifest, f"no subjects in the {split!r} split")
    if out is None:
        if model is None:
            raise InputError(manifest, "give --out when evaluating a folder of predictions")
        out = (model if model.is_dir() else model.parent.parent) / "evaluation"
    loaded = load_model(model, device) if model is not None else None

    def predict(record: Any) -> np.ndarray:
        if loaded is not None:
            # Exactly what `dmri-revgan infer <lr_tensor> --mask <lr_mask>` writes: the HR mask
            # only scores (evaluate_subjects), the prediction sees the LR data alone.
            data = read_prepared(record)
            pred = infer_volume(loaded, data, device=device)
            folder, header = out / "predictions", data.image.header
            io.save_nifti(
                folder / f"{record.subject}_sr.nii.gz", pred.tensor, pred.affine, header, SR_TENSOR
            )
            mask = pred.mask.astype(np.uint8)
            io.save_nifti(
                folder / f"{record.subject}_sr_mask.nii.gz", mask, pred.affine, header, SR_MASK
            )
            return np.moveaxis(pred.tensor, -1, 0)
        assert predictions is not None
        for name in (f"{record.subject}_sr.nii.gz", f"{record.subject}.nii.gz"):
            if (predictions / name).is_file():
                volume = np.asarray(nib.load(predictions / name).dataobj, np.float32)
                return np.moveaxis(volume, -1, 0)
        raise InputError(predictions / f"{record.subject}_sr.nii.gz", "no such prediction")

    use_predictions = loaded is not None or predictions is not None
    subjects = evaluate_subjects(records, predict if use_predictions else None, report)
    extra = {
        "manifest": str(manifest.resolve()),
        "split": split,
        "model": str(loaded.path) if loaded else None,
        "model_sha256": loaded.sha256 if loaded else None,
        "predictions": str(predictions) if predictions else None,
        "fa_threshold": FA_THRESHOLD,
        "regions": {
            "total": "all brain-mask voxels",
            "interior": "brain voxels whose 5x5x5 neighbourhood lies inside the mask",
            "exterior": "total minus interior",
        },
    }
    return write_metrics(subjects, out, extra)


# ---------------------------------------------------------------------------------------------
# 2D runs (Cityscapes, Maps): both directions of an aligned test folder.

FCN_NOTE = (
    "label→photo FCN-score not computed: it needs a pretrained Cityscapes segmentation model, "
    "which dmri-revgan cannot download; pass one with --segmenter FILE (torch.export .pt2 or "
    "TorchScript, (1, 3, H, W) in [-1, 1] → (1, 19, H, W) logits)"
)


def _label_domain(cfg: Any) -> str | None:
    """Which side of the aligned images is a colour-coded label map: B for Cityscapes (pix2pix
    stores photo|label), none for Maps. Returned as "input" / "target" / None after direction."""
    if not cfg.name.startswith("cityscapes"):
        return None
    return "target" if cfg.data.direction == "AtoB" else "input"


def _scores(pred: np.ndarray, truth: np.ndarray, labels: bool) -> dict[str, float]:
    from dmri_revgan.metrics import (
        CITYSCAPES_CLASSES,
        colours_to_labels,
        confusion,
        image_errors,
        segmentation_scores,
    )

    if not labels:
        return image_errors(pred, truth)
    conf = confusion(
        colours_to_labels(pred), colours_to_labels(truth, 30.0), len(CITYSCAPES_CLASSES)
    )
    return {**segmentation_scores(conf), "_confusion": conf}


def evaluate_images(
    model_path: Path,
    root: Path | None = None,
    split: str = "test",
    out: Path | None = None,
    device: str = "cpu",
    segmenter: Path | None = None,
    samples: int = 4,
    report: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Metrics of a 2D run on ``<root>/<split>/`` (aligned A|B images) in both directions.

    F (input → target) and G (target → input) outputs are scored on 0–255 images: MAE, PSNR and
    SSIM, or — where the output domain is the Cityscapes label map — per-pixel accuracy, per-class
    accuracy and class IoU from the confusion summed over all images (as pix2pix reports them).
    With a ``segmenter`` the label→photo outputs also get the FCN-score. Writes metrics.json /
    metrics.csv and ``samples/`` (input | output | truth strips, for the report) into ``out``.
    """
    from PIL import Image

    from dmri_revgan.data.images import AlignedImages, to_uint8
    from dmri_revgan.model import load_model

    loaded = load_model(model_path, device)
    cfg = loaded.cfg
    root = Path(root or cfg.data.root or "")
    data = AlignedImages(root, split, cfg.data.direction, cfg.data.image_size, train=False)
    seg = _load_segmenter(segmenter, device) if segmenter else None
    if out is None:
        out = (model_path if model_path.is_dir() else model_path.parent.parent) / "evaluation"
    labels = _label_domain(cfg)
    images: dict[str, dict[str, dict[str, float]]] = {}
    confusions: dict[str, np.ndarray] = {}
    strips = []
    with torch.inference_mode():
        for i in range(len(data)):
            item = data[i]
            name = Path(item["path"]).stem
            report(name)
            x, y = item["input"][None].to(device), item["target"][None].to(device)
            fake_y, fake_x = loaded.gen(x)[0], loaded.gen.reverse(y)[0]
            real_x, real_y = to_uint8(item["input"]), to_uint8(item["target"])
            out_y, out_x = to_uint8(fake_y), to_uint8(fake_x)
            per = {
                "F": _scores(out_y, real_y, labels == "target"),
                "G": _scores(out_x, real_x, labels == "input"),
            }
            if seg is not None and labels is not None:
                photo, truth = (out_x, real_y) if labels == "target" else (out_y, real_x)
                per["fcn"] = _scores(_segment(seg, photo, device), truth, True)
            for direction, values in per.items():
                conf = values.pop("_confusion", None)
                if conf is not None:
                    confusions[direction] = confusions.get(direction, 0) + conf
            images[name] = per
            if len(strips) < samples:
                strips.append((name, np.concatenate([real_x, out_y, real_y, out_x], axis=1)))
    from dmri_revgan.metrics import segmentation_scores

    extra = {
        "kind": "images",
        "config": cfg.name,
        "data": str(root.resolve()),
        "split": split,
        "model": str(loaded.path),
        "model_sha256": loaded.sha256,
        "directions": {
            "F": f"{cfg.data.direction} (input → target)",
            "G": "reverse (target → input)",
        },
        "label_domain": labels,
        "fcn_score": "computed (fcn)" if seg is not None and labels else FCN_NOTE,
        # Label scores over all pixels of the split (the summed confusion), as pix2pix reports.
        "dataset": {d: segmentation_scores(np.asarray(c)) for d, c in confusions.items()},
    }
    result = write_metrics(images, out, extra)
    folder = out / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    for name, strip in strips:
        with atomic_path(folder / f"{name}.png") as tmp:
            Image.fromarray(strip).save(tmp)
    return result


def _load_segmenter(path: Path, device: str) -> Any:
    if not path.is_file():
        raise InputError(path, "no such segmentation model")
    import warnings

    try:
        if path.suffix == ".pt2":  # torch.export.save
            return torch.export.load(str(path)).module().to(device)
        with warnings.catch_warnings():  # TorchScript is deprecated but still what many share
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001 - any load failure is the user's file
        raise InputError(
            path, f"not a torch.export (.pt2) or TorchScript model ({exc.__class__.__name__})"
        ) from exc


def _segment(model: Any, photo: np.ndarray, device: str) -> np.ndarray:
    """Colour-coded label image of a (H, W, 3) uint8 photo from a 19-class segmenter."""
    from dmri_revgan.data.images import to_tensor
    from dmri_revgan.metrics import CITYSCAPES_CLASSES

    logits = model(to_tensor(photo)[None].to(device))
    classes = logits.argmax(1)[0].cpu().numpy()
    palette = np.array([c for _, c in CITYSCAPES_CLASSES], np.uint8)
    return palette[classes]
