"""Evaluation metrics. Tensor RMSE is reported in 10⁻⁵ mm²/s (the paper's Table 3 scale).

Regions (paper §5.2, after IQT): ``total`` = all brain voxels; ``interior`` = brain voxels whose
5×5×5 neighbourhood lies entirely inside the brain mask; ``exterior`` = total minus interior.

DTI accuracy (what tractography reads): FA mean absolute error, MD RMSE (10⁻⁵ mm²/s) and the
sign-free angle between the principal eigenvectors (degrees) over voxels whose reference FA
exceeds :data:`FA_THRESHOLD`. FA / MD / eigenvectors come from :mod:`dmri_revgan.dti`.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from dmri_revgan.dti import eig

UNIT = "1e-5 mm^2/s"
SCALE = 1e5  # mm²/s → 10⁻⁵ mm²/s
REGIONS = ("interior", "total", "exterior")
DTI_REGIONS = ("interior", "total")  # the regions evaluate.py has always reported FA / MD on
FA_THRESHOLD = 0.2  # principal-direction error only where the reference is this anisotropic
DTI_KEYS = ("fa_mae", "md_rmse", "v1_angle_deg", "v1_angle_median_deg", "v1_voxels")


def region_masks(mask: np.ndarray, neighbourhood: int = 5) -> dict[str, np.ndarray]:
    """Boolean (X, Y, Z) masks of the three regions; outside the volume counts as non-brain."""
    brain = np.asarray(mask) > 0
    cube = np.ones((neighbourhood,) * brain.ndim, dtype=bool)
    interior = ndimage.binary_erosion(brain, structure=cube, border_value=0)
    return {"interior": interior, "total": brain, "exterior": brain & ~interior}


def tensor_rmse(pred: np.ndarray, target: np.ndarray, region: np.ndarray) -> float:
    """RMSE over the 6 unique tensor elements of the voxels in ``region``, in 10⁻⁵ mm²/s.

    ``pred``/``target``: (6, X, Y, Z) in mm²/s (channels first, FSL order); ``region``: (X, Y, Z).
    NaN when the region is empty.
    """
    if not region.any():
        return float("nan")
    diff = (pred[:, region].astype(np.float64) - target[:, region].astype(np.float64)) * SCALE
    return float(np.sqrt(np.mean(diff**2)))


def region_rmse(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """{region: RMSE} for interior, total and exterior (10⁻⁵ mm²/s)."""
    return {name: tensor_rmse(pred, target, m) for name, m in region_masks(mask).items()}


def _decompose(tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FA, MD (mm²/s) and principal eigenvector (N, 3) of (N, 6) FSL tensors from one
    :func:`dmri_revgan.dti.eig`: FA and MD exactly as :func:`dmri_revgan.dti.fa_md` defines them
    (dipy's FA of the same eigenvalues, NaN → 0; MD = mean eigenvalue), without a second
    decomposition — eigh is the cost of these metrics (tests pin the agreement with ``fa_md``)."""
    from dipy.reconst.dti import fractional_anisotropy

    evals, evecs = eig(tensor)
    fa = np.nan_to_num(fractional_anisotropy(evals))
    return fa, evals.mean(-1), evecs[..., 0]


def _voxel_errors(
    pred: np.ndarray, target: np.ndarray, fa_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-voxel errors of (N, 6) FSL tensors: |ΔFA|, ΔMD (10⁻⁵ mm²/s), principal-eigenvector
    angle (degrees, 0 where not scored) and whether the voxel is scored (reference FA > threshold).
    """
    fa_p, md_p, u = _decompose(pred)
    fa_t, md_t, v = _decompose(target)
    scored = fa_t > fa_threshold
    u, v = u[scored], v[scored]
    u = u * np.where(np.sum(u * v, -1) < 0, -1.0, 1.0)[:, None]  # sign-free: v ≡ −v
    # 2·atan2(|u − v|, |u + v|) is arccos(u·v) without arccos's loss of precision near 0°.
    rad = 2 * np.arctan2(np.linalg.norm(u - v, axis=-1), np.linalg.norm(u + v, axis=-1))
    angle = np.zeros(len(target))
    angle[scored] = np.nan_to_num(np.degrees(rad), nan=90.0)  # undefined direction: 90°
    return np.abs(fa_p - fa_t), (md_p - md_t) * SCALE, angle, scored


def _summarise_errors(
    fa_err: np.ndarray, md_err: np.ndarray, angle: np.ndarray, scored: np.ndarray
) -> dict[str, float]:
    nan = float("nan")
    n, k = fa_err.size, int(scored.sum())
    return {
        "fa_mae": float(np.mean(fa_err)) if n else nan,
        "md_rmse": float(np.sqrt(np.mean(md_err**2))) if n else nan,
        "v1_angle_deg": float(np.mean(angle[scored])) if k else nan,
        "v1_angle_median_deg": float(np.median(angle[scored])) if k else nan,
        "v1_voxels": k,
    }


def dti_errors(
    pred: np.ndarray, target: np.ndarray, region: np.ndarray, fa_threshold: float = FA_THRESHOLD
) -> dict[str, float]:
    """DTI accuracy of ``pred`` against the reference ``target`` over the voxels in ``region``.

    ``pred``/``target``: (6, X, Y, Z) in mm²/s (channels first, FSL order); ``region``: (X, Y, Z).
    Returns (keys of :data:`DTI_KEYS`):

    - ``fa_mae``: mean |FA_pred − FA_ref| (FA unitless, :func:`dmri_revgan.dti.fa_md`);
    - ``md_rmse``: RMSE of mean diffusivity, 10⁻⁵ mm²/s;
    - ``v1_angle_deg`` / ``v1_angle_median_deg``: mean / median angle in degrees (0–90, sign-free:
      arccos |v1_pred · v1_ref|) between the principal eigenvectors, over the region's voxels whose
      *reference* FA > ``fa_threshold``;
    - ``v1_voxels``: how many voxels that angle is over (int).

    Non-physical tensors give finite numbers: NaN components count as 0 (as in ``dti``), negative
    eigenvalues are taken as they are (FA may then exceed 1). Means are NaN (and ``v1_voxels`` 0)
    when there are no voxels to score.
    """
    region = np.asarray(region, bool)
    return _summarise_errors(*_voxel_errors(pred[:, region].T, target[:, region].T, fa_threshold))


def region_scores(
    pred: np.ndarray,
    target: np.ndarray,
    mask: np.ndarray,
    dti_regions: tuple[str, ...] = DTI_REGIONS,
    fa_threshold: float = FA_THRESHOLD,
) -> dict[str, float]:
    """Everything evaluate.py reports for one volume: tensor RMSE per region (keys ``interior``,
    ``total``, ``exterior``; 10⁻⁵ mm²/s) plus :func:`dti_errors` on each of ``dti_regions``,
    flat: ``fa_mae_interior``, ``md_rmse_total``, ``v1_angle_deg_interior``, ``v1_voxels_total``…
    Each voxel is decomposed once."""
    masks = region_masks(mask)
    out = {name: tensor_rmse(pred, target, m) for name, m in masks.items()}
    if not dti_regions:
        return out
    union = np.logical_or.reduce([masks[r] for r in dti_regions])
    errors = _voxel_errors(pred[:, union].T, target[:, union].T, fa_threshold)
    for name in dti_regions:
        within = masks[name][union]
        for key, value in _summarise_errors(*(e[within] for e in errors)).items():
            out[f"{key}_{name}"] = value
    return out


# ---------------------------------------------------------------------------------------------
# 2D: Maps (photo ↔ map) image errors and Cityscapes (photo → label) segmentation scores.

# The 19 Cityscapes training classes and their colours in the pix2pix label images.
CITYSCAPES_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
)
IGNORE = 255


def image_errors(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """MAE, PSNR (dB) and SSIM of two (H, W, 3) uint8 images on the 0–255 scale.

    SSIM is MONAI's (gaussian window 11, σ 1.5, K1 0.01, K2 0.03, data range 255), averaged over
    the colour channels.
    """
    import torch
    from monai.metrics import SSIMMetric

    p, t = pred.astype(np.float64), target.astype(np.float64)
    mse = float(np.mean((p - t) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)
    to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].double()  # noqa: E731
    ssim = SSIMMetric(spatial_dims=2, data_range=255.0)(to_t(p), to_t(t))
    return {"mae": float(np.mean(np.abs(p - t))), "psnr": psnr, "ssim": float(ssim.mean())}


def colours_to_labels(image: np.ndarray, max_distance: float | None = None) -> np.ndarray:
    """(H, W, 3) colours → (H, W) class indices of the nearest Cityscapes palette colour.

    With ``max_distance`` (RGB Euclidean), pixels farther than it from every class colour (void,
    unlabelled) get :data:`IGNORE` — use it for ground-truth label images.
    """
    palette = np.array([c for _, c in CITYSCAPES_CLASSES], np.float64)
    dist = np.linalg.norm(image[..., None, :].astype(np.float64) - palette, axis=-1)
    labels = dist.argmin(-1).astype(np.uint8)
    if max_distance is not None:
        labels[dist.min(-1) > max_distance] = IGNORE
    return labels


def confusion(pred: np.ndarray, target: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n) pixel counts, rows = true class, columns = predicted; IGNORE targets skipped."""
    keep = target != IGNORE
    idx = target[keep].astype(np.int64) * n_classes + pred[keep].astype(np.int64)
    return np.bincount(idx, minlength=n_classes**2).reshape(n_classes, n_classes)


def segmentation_scores(conf: np.ndarray) -> dict[str, float]:
    """Per-pixel accuracy, mean per-class accuracy and mean class IoU (pix2pix / FCN-score).

    Class means are over classes present in the ground truth.
    """
    diag = np.diag(conf).astype(np.float64)
    true_counts, pred_counts = conf.sum(1), conf.sum(0)
    present = true_counts > 0
    iou = diag[present] / (true_counts + pred_counts - diag)[present]
    return {
        "pixel_accuracy": float(diag.sum() / max(conf.sum(), 1)),
        "class_accuracy": float(np.mean(diag[present] / true_counts[present])),
        "class_iou": float(np.mean(iou)),
    }
