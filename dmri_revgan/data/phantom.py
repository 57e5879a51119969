"""A deterministic synthetic DTI brain in the HCP folder layout: the embedded default data.

Anatomy (per-subject variation from the seed): an ellipsoidal head-shaped brain mask with a
smoothly perturbed surface; a CSF rim and two lateral ventricles (isotropic, 3.0e-3 mm²/s); a
cortical grey-matter ribbon and deep grey-matter nuclei (MD ≈ 0.8e-3 mm²/s, FA < 0.2); white matter
with a smoothly varying orientation (FA ≈ 0.45) and five fibre bundles with smoothly curving
centre lines — a corpus-callosum arc (left–right), two corticospinal tracts (inferior–superior)
and two cingulum-like tracts (anterior–posterior), FA 0.6–0.8 — which cross where they meet
(two-compartment signal).

Signal: S = S0 Σ_c f_c exp(−b gᵀ D_c g) for b = 0 and ``n_directions`` directions at b = 1000
s/mm², with Rician noise of σ = S0_WM / SNR. The true tensor (compartment-weighted mean, FSL
order) is saved beside the DWI. The default grid, 64 × 64 × 48 voxels of 2 mm, keeps a subject to
a few seconds to generate and the demo to minutes of CPU training, while leaving bundles several
voxels wide at both 2 mm and the simulated 4 mm resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from dmri_revgan.dti import from_matrix
from dmri_revgan.io import save_nifti, write_text_atomic

DEFAULT_SHAPE = (64, 64, 48)
CSF, GM, WM = 1, 2, 3
# Eigenvalues (λ∥, λ⊥) in mm²/s and b = 0 signal of each tissue.
CSF_D, GM_D = 3.0e-3, 0.8e-3
S0 = {CSF: 1600.0, GM: 1150.0, WM: 1000.0}


@dataclass
class Phantom:
    """One synthetic subject; arrays are (X, Y, Z[, N or 6])."""

    dwi: np.ndarray  # float32 signal
    bvals: np.ndarray  # (N,) s/mm²
    bvecs: np.ndarray  # (N, 3) unit vectors
    mask: np.ndarray  # bool brain mask
    labels: np.ndarray  # 0 background, 1 CSF, 2 GM, 3 WM
    bundles: np.ndarray  # number of fibre bundles through each voxel (0, 1, 2)
    true_tensor: np.ndarray  # (X, Y, Z, 6) FSL order, mm²/s
    affine: np.ndarray


def hemisphere_directions(n: int) -> np.ndarray:
    """``n`` near-uniform unit vectors on the upper hemisphere (Fibonacci spiral)."""
    i = np.arange(n) + 0.5
    z = 1 - i / n  # (0, 1]
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z**2)
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], -1)


def _cylindrical(direction: np.ndarray, parallel: float, perpendicular: float) -> np.ndarray:
    """(..., 3, 3) tensors λ⊥ I + (λ∥ − λ⊥) e eᵀ for unit vectors e (..., 3)."""
    outer = direction[..., :, None] * direction[..., None, :]
    return perpendicular * np.eye(3) + (parallel - perpendicular) * outer


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return field / (np.abs(field).max() + 1e-12)


def _tube(points: np.ndarray, centre, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Membership of (V, 3) points in a tube around a parametric centre line, and the line's unit
    tangent at the nearest line point. ``centre(t)`` gives (T, 3) points for t in [−1, 1]."""
    from scipy.spatial import cKDTree

    line = centre(np.linspace(-1, 1, 401))
    tangent = np.gradient(line, axis=0)
    tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True)
    dist, nearest = cKDTree(line).query(points)
    return dist < radius, tangent[nearest]


def make_phantom(
    seed: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    voxel_mm: float = 2.0,
    snr: float = 30.0,
    n_directions: int = 32,
    n_b0: int = 2,
    bvalue: float = 1000.0,
) -> Phantom:
    """Generate one subject; the same seed gives the same subject, bit for bit."""
    rng = np.random.default_rng(seed)
    size = np.array(shape, float) * voxel_mm
    grid = np.stack(
        np.meshgrid(
            *[(np.arange(n) + 0.5) * voxel_mm - s / 2 for n, s in zip(shape, size, strict=True)],
            indexing="ij",
        ),
        -1,
    )
    # Brain: an ellipsoid (semi-axes ≈ 0.44 of the field of view) with a bumpy surface.
    axes = size * np.array([0.40, 0.44, 0.42]) * (1 + rng.normal(0, 0.04, 3))
    radius = np.linalg.norm(grid / axes, axis=-1) + 0.05 * _smooth_field(rng, shape, 4.0)
    labels = np.zeros(shape, np.uint8)
    labels[radius < 1.0] = CSF
    labels[radius < 0.93] = GM
    labels[radius < 0.80] = WM
    rel = grid / axes  # coordinates relative to the brain's semi-axes
    shift = rng.normal(0, 0.03, 4)
    for side in (-1, 1):  # lateral ventricles and deep grey nuclei
        ventricle = np.linalg.norm(
            (rel - [side * (0.14 + shift[0]), 0.05 + shift[1], 0.05]) / [0.07, 0.30, 0.12], axis=-1
        )
        labels[ventricle < 1] = CSF
        nucleus = np.linalg.norm((rel - [side * 0.22, -0.12 + shift[2], -0.12]) / 0.11, axis=-1)
        labels[(nucleus < 1) & (labels == WM)] = GM
    wm = labels == WM

    # Background white matter: smoothly varying orientation, FA ≈ 0.45.
    field = np.stack([_smooth_field(rng, shape, 6.0) for _ in range(3)], -1) + [0.3, 0.3, 0.3]
    field /= np.linalg.norm(field, axis=-1, keepdims=True)
    compartments = [_cylindrical(field, 1.35e-3, 0.55e-3)]
    weights = [np.ones(shape)]

    def arc(t: np.ndarray) -> np.ndarray:  # corpus callosum: left–right arc bowing upwards
        return np.stack([t * 0.55, 0 * t + shift[3], 0.12 + 0.18 * (1 - t**2)], -1) * axes

    def cst(side: int):  # corticospinal tracts: inferior–superior, curving outwards at the top
        return lambda t: (
            np.stack([side * (0.26 + 0.10 * (t + 1) ** 2 / 4), -0.10 + 0.05 * t, t * 0.65], -1)
            * axes
        )

    def cingulum(side: int):  # anterior–posterior, above the ventricles, gently arched
        return lambda t: np.stack([side * 0.30 + 0 * t, t * 0.65, 0.38 - 0.12 * t**2], -1) * axes

    bundle_specs = [
        (arc, 1.75e-3, 0.30e-3),
        (cst(-1), 1.6e-3, 0.35e-3),
        (cst(1), 1.6e-3, 0.35e-3),
        (cingulum(-1), 1.5e-3, 0.45e-3),
        (cingulum(1), 1.5e-3, 0.45e-3),
    ]
    thickness = 0.09 * axes.mean() * (1 + rng.normal(0, 0.05))
    bundles = np.zeros(shape, np.uint8)
    for centre, parallel, perpendicular in bundle_specs:
        inside_wm, tangent_wm = _tube(grid[wm], centre, thickness)
        inside = np.zeros(shape, bool)
        inside[wm] = inside_wm
        tangent = np.zeros((*shape, 3))
        tangent[wm] = tangent_wm
        bundles += inside
        compartments.append(_cylindrical(tangent, parallel, perpendicular))
        weights.append(inside.astype(float))
    # In a bundle the background compartment is replaced; where bundles cross they share equally.
    weights[0] = (bundles == 0).astype(float)
    total = np.maximum(sum(weights), 1e-12)
    weights = [w / total for w in weights]

    bvecs = np.concatenate([np.zeros((n_b0, 3)), hemisphere_directions(n_directions)])
    bvals = np.concatenate([np.zeros(n_b0), np.full(n_directions, bvalue)])
    iso = {CSF: CSF_D * np.eye(3), GM: _cylindrical(field, 0.95e-3, 0.72e-3)}
    true = np.zeros((*shape, 3, 3))
    signal = np.zeros((*shape, len(bvals)))
    gg = np.einsum("ni,nj->nij", bvecs, bvecs)  # (N, 3, 3)
    for tissue, diffusion in iso.items():
        m = labels == tissue
        d = np.broadcast_to(diffusion, (*shape, 3, 3))[m]
        true[m] = d
        signal[m] = S0[tissue] * np.exp(-bvals * np.einsum("vij,nij->vn", d, gg))
    for d, w in zip(compartments, weights, strict=True):
        m = wm & (w > 0)
        true[m] += w[m, None, None] * d[m]
        signal[m] += w[m, None] * S0[WM] * np.exp(-bvals * np.einsum("vij,nij->vn", d[m], gg))
    sigma = S0[WM] / snr
    noisy = np.sqrt(
        (signal + sigma * rng.normal(size=signal.shape)) ** 2
        + (sigma * rng.normal(size=signal.shape)) ** 2
    )
    # Radiological storage (LAS, determinant < 0) as most scanners' NIfTI: there FSL's b-vector
    # frame is the voxel axes' own, so ``bvecs`` and ``true_tensor`` are written as made.
    affine = np.diag([-voxel_mm, voxel_mm, voxel_mm, 1.0])
    affine[:3, 3] = (size / 2 - voxel_mm / 2) * np.array([1.0, -1.0, -1.0])
    return Phantom(
        dwi=noisy.astype(np.float32),
        bvals=bvals,
        bvecs=bvecs,
        mask=labels > 0,
        labels=labels,
        bundles=bundles,
        true_tensor=from_matrix(true).astype(np.float32),
        affine=affine,
    )


def write_phantom_dataset(
    out_dir: Path,
    n_subjects: int = 6,
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    snr: float = 30.0,
    report=lambda subject: None,
) -> list[Path]:
    """Write ``<out>/phantom-NN/T1w/Diffusion/{data.nii.gz, bvals, bvecs,
    nodif_brain_mask.nii.gz, true_tensor.nii.gz, labels.nii.gz}``; every subject is its own
    person. Subject i uses seed ``seed · 1000 + i``."""
    folders = []
    for i in range(n_subjects):
        subject = f"phantom-{i + 1:02d}"
        report(subject)
        p = make_phantom(seed * 1000 + i, shape=shape, snr=snr)
        folder = Path(out_dir) / subject / "T1w" / "Diffusion"
        save_nifti(folder / "data.nii.gz", p.dwi, p.affine, None, "phantom DWI", time_axis=True)
        mask = p.mask.astype(np.uint8)
        save_nifti(folder / "nodif_brain_mask.nii.gz", mask, p.affine, None, "phantom mask")
        save_nifti(folder / "true_tensor.nii.gz", p.true_tensor, p.affine, None, "true tensor")
        labels = (p.labels + 10 * p.bundles).astype(np.uint8)
        save_nifti(folder / "labels.nii.gz", labels, p.affine, None, "phantom tissue labels")
        write_text_atomic(folder / "bvals", " ".join(f"{b:g}" for b in p.bvals) + "\n")
        write_text_atomic(
            folder / "bvecs",
            "\n".join(" ".join(f"{v:.6f}" for v in row) for row in p.bvecs.T) + "\n",
        )
        folders.append(folder.parent.parent)
    return folders
