"""Figures of the report, as PNG bytes: training curves, per-subject slices of MD and colour-FA
with error maps (like the paper's Fig. 5), and sample translations of 2D models."""

from __future__ import annotations

import base64
import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from dmri_revgan.metrics import UNIT

PANELS = ("LR input", "HR truth", "SR output", "edge-aware cubic")


def png_bytes(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def mid_slices(volume: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through the brain's centre of mass (X, Y, Z[, 3])."""
    centre = (
        np.round(np.argwhere(mask).mean(axis=0)).astype(int)
        if mask.any()
        else np.array(mask.shape) // 2
    )
    x, y, z = centre
    return [
        np.rot90(volume[:, :, z]),
        np.rot90(volume[:, y, :]),
        np.rot90(volume[x, :, :]),
    ]


def training_curves(metrics_csv: Path) -> Any | None:
    """Losses and validation RMSE per epoch from ``metrics.csv``; None when absent."""
    import matplotlib.pyplot as plt

    if not metrics_csv.is_file():
        return None
    with metrics_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return None
    epochs = [int(float(r["epoch"])) for r in rows]
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in rows[0]:
        if key.startswith(("loss_", "l1_", "gan_", "cycle_")):
            values = [float(r[key]) if r.get(key) else np.nan for r in rows]
            ax_loss.plot(epochs, values, "o-", label=key)
        if key.startswith("val_rmse_"):
            values = [float(r[key]) if r.get(key) else np.nan for r in rows]
            ax_val.plot(epochs, values, "o-", label=key.removeprefix("val_rmse_"))
    ax_loss.set(xlabel="epoch", ylabel="training loss (mean per step)", yscale="log")
    ax_loss.legend(fontsize=7)
    ax_val.set(xlabel="epoch", ylabel=f"validation RMSE ({UNIT})")
    if ax_val.lines:
        ax_val.legend(fontsize=7)
    else:
        ax_val.text(0.5, 0.5, "no validation (2D runs are scored by evaluate)", ha="center")
    fig.tight_layout()
    return fig


def subject_figure(
    subject: str,
    volumes: dict[str, np.ndarray],
    mask: np.ndarray,
    spread: np.ndarray | None = None,
) -> Any:
    """MD and colour-FA slices of each panel plus |error| of MD for SR and cubic (Fig. 5 style).

    ``volumes`` maps each of :data:`PANELS` to a (6, X, Y, Z) FSL-order tensor in mm²/s on the HR
    grid (the LR input already upsampled by nearest neighbour). With ``spread`` (X, Y, Z), the
    test-time SD of ``infer --uncertainty`` (mm²/s), it is shown beside the SR's actual tensor
    error (per-voxel RMS over the 6 components), on one colour scale.
    """
    import matplotlib.pyplot as plt

    from dmri_revgan.dti import colour_fa
    from dmri_revgan.evaluate import fa_md_channels_first

    md = {k: fa_md_channels_first(v)[1] * 1e3 for k, v in volumes.items()}  # 10⁻³ mm²/s
    rgb = {k: np.clip(colour_fa(np.moveaxis(v, 0, -1)), 0, 1) for k, v in volumes.items()}
    error_panels = {
        "|SR − truth| MD": np.abs(md["SR output"] - md["HR truth"]),
        "|edge cubic − truth| MD": np.abs(md["edge-aware cubic"] - md["HR truth"]),
    }
    vmax_err = max(float(np.percentile(e[mask], 99)) for e in error_panels.values()) or 1.0
    scales = dict.fromkeys(error_panels, vmax_err)
    if spread is not None:
        tensor_error = np.sqrt(((volumes["SR output"] - volumes["HR truth"]) ** 2).mean(0)) * 1e3
        tensor_panels = {"|SR − truth| tensor": tensor_error, "test-time SD": spread * 1e3}
        vmax_tensor = max(float(np.percentile(e[mask], 99)) for e in tensor_panels.values())
        error_panels |= tensor_panels
        scales |= dict.fromkeys(tensor_panels, vmax_tensor or 1.0)
    columns = [*PANELS, *error_panels]
    fig, axes = plt.subplots(6, len(columns), figsize=(2.1 * len(columns), 12.5))
    for j, name in enumerate(columns):
        if name in PANELS:
            md_views = mid_slices(np.where(mask, md[name], 0), mask)
            rgb_views = mid_slices(rgb[name] * mask[..., None], mask)
        else:
            md_views = mid_slices(np.where(mask, error_panels[name], 0), mask)
            rgb_views = None
        for i in range(3):
            ax = axes[i, j]
            if name in PANELS:
                ax.imshow(md_views[i], cmap="gray", vmin=0, vmax=3.0)
            else:
                ax.imshow(md_views[i], cmap="inferno", vmin=0, vmax=scales[name])
            ax_rgb = axes[3 + i, j]
            if rgb_views is not None:
                ax_rgb.imshow(rgb_views[i])
            ax.set_xticks([])
            ax.set_yticks([])
            ax_rgb.axis("off")
        axes[0, j].set_title(name, fontsize=9)
    for i, view in enumerate(("axial", "coronal", "sagittal")):
        axes[i, 0].set_ylabel(f"MD {view}", fontsize=8)
        axes[3 + i, 0].axis("on")
        axes[3 + i, 0].set_xticks([])
        axes[3 + i, 0].set_yticks([])
        axes[3 + i, 0].set_ylabel(f"colour-FA {view}", fontsize=8)
    fig.suptitle(f"{subject}: MD (0–3 × 10⁻³ mm²/s) and colour-FA; errors in 10⁻³ mm²/s")
    fig.tight_layout()
    return fig


def sample_grid(folder: Path) -> Any | None:
    """The evaluation's sample strips (input | F(input) | target | G(target)), one row each."""
    import matplotlib.image
    import matplotlib.pyplot as plt

    files = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if not files:
        return None
    fig, axes = plt.subplots(len(files), 1, figsize=(10, 2.7 * len(files)), squeeze=False)
    for ax, path in zip(axes[:, 0], files, strict=True):
        ax.imshow(matplotlib.image.imread(path))
        ax.set_title(f"{path.stem}: input | F(input) | target | G(target)", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig
