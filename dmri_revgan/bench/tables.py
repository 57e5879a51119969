"""Benchmark results as JSON, markdown tables and plots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dmri_revgan.io import save_figure, write_text_atomic


def describe_ratios(rows: Sequence[dict[str, Any]]) -> str:
    ratios = [f"{r['mode']} {r['ratio_to_naive']:.2f}" for r in rows if "ratio_to_naive" in r]
    return "    interleaved step time × naive: " + (", ".join(ratios) or "n/a")


def describe_row(row: dict[str, Any]) -> str:
    if "error" in row:
        return f"{row['mode']:>10} depth {row['depth']:>2}: error: {row['error']}"
    return (
        f"{row['mode']:>10} depth {row['depth']:>2}: "
        f"activations {row['activation_bytes'] / 2**20:8.1f} MiB, "
        f"peak {row['peak_bytes'] / 2**20:8.1f} MiB, step {row['step_seconds_median']:.3f} s,"
        f" {row['gflops']:.1f} GFLOP/s"
    )


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Table 5 style: one row per (depth, mode), memory in MiB, the step time measured in the
    mode's own process (median, min–max) and interleaved with the other modes, and the
    interleaved ratio to naive (n/a when naive was not run)."""
    lines = [
        "| dims | size | width | depth | mode | activations (MiB) | peak (MiB) | params (MiB) "
        "| step s, own process: median (min–max) | step s, interleaved | × naive | GFLOP/s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        head = f"| {r['dims']}D | {r['size']} | {r['width']} | {r['depth']} | {r['mode']} "
        if "error" in r:
            lines.append(head + f"| error: {r['error']} | | | | | | |")
            continue
        interleaved = r.get("step_seconds_interleaved_median")
        ratio = r.get("ratio_to_naive")
        lines.append(
            head + f"| {r['activation_bytes'] / 2**20:.1f} | {r['peak_bytes'] / 2**20:.1f} "
            f"| {r['param_bytes'] / 2**20:.2f} | {r['step_seconds_median']:.3f} "
            f"({r['step_seconds_min']:.3f}–{r['step_seconds_max']:.3f}) "
            f"| {'n/a' if interleaved is None else f'{interleaved:.3f}'} "
            f"| {'n/a' if ratio is None else f'{ratio:.2f}'} | {r['gflops']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Memory vs depth and time vs depth (the interleaved medians behind the ratios, where
    measured), one line per mode (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(10, 4))
    for mode in dict.fromkeys(r["mode"] for r in rows):
        ok = sorted(
            (r for r in rows if r["mode"] == mode and "error" not in r), key=lambda r: r["depth"]
        )
        depths = [r["depth"] for r in ok]
        ax_mem.plot(depths, [r["peak_bytes"] / 2**20 for r in ok], "o-", label=mode)
        seconds = [r.get("step_seconds_interleaved_median", r["step_seconds_median"]) for r in ok]
        ax_time.plot(depths, seconds, "o-", label=mode)
    ax_mem.set(xlabel="reversible blocks", ylabel="peak memory above baseline (MiB)")
    ax_time.set(xlabel="reversible blocks", ylabel="training step (s, median; interleaved if run)")
    ax_mem.legend()
    fig.tight_layout()
    save_figure(fig, path)


def write_results(rows: Sequence[dict[str, Any]], out_dir: Path, stem: str) -> dict[str, Path]:
    """``<stem>.json`` (list of rows), ``<stem>.md`` (table) and ``<stem>.png`` (plot)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / f"{stem}.json",
        "md": out_dir / f"{stem}.md",
        "png": out_dir / f"{stem}.png",
    }
    write_text_atomic(paths["json"], json.dumps(list(rows), indent=2))
    write_text_atomic(paths["md"], markdown_table(rows))
    plot(rows, paths["png"])
    return paths


def write_json(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Write benchmark rows as JSON atomically."""
    write_text_atomic(path, json.dumps(list(rows), indent=2))
    return path


def speed_table(rows: Sequence[dict[str, Any]]) -> str:
    """Markdown table of inference or training-speed rows."""
    ok = [r for r in rows if "error" not in r]
    failed = [f"- {r.get('depth')}: error: {r['error']}" for r in rows if "error" in r]
    if ok and ok[0]["kind"] == "inference":
        lines = [
            "| volume (HR voxels) | depth / width | method | precision | tiles × tile (batch) "
            "| seconds | bbox_work_ratio | useful GFLOP/s | peak GFLOP/s | peak_fraction "
            "| speedup_vs_old_default | peak RSS (GiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {'×'.join(map(str, r['shape']))} | {r['depth']} / {r['width']} "
                f"| {r['method']} | {r['precision']} "
                f"| {r['tiles'] or 'windows'} × {'×'.join(map(str, r['tile']))} ({r['batch']}) "
                f"| {r['seconds']:.1f} | {r['bbox_work_ratio']:.2f} "
                f"| {r['useful_gflop_per_s']:.0f} | {r['peak_gflop_per_s']:.0f} "
                f"| {r['peak_fraction']:.2f} | {r.get('speedup_vs_old_default', float('nan')):.1f} "
                f"| {r['peak_rss_bytes'] / 2**30:.2f} |"
                for r in ok
            ),
        ]
        lines += [
            f"- bf16 vs float32 on {'×'.join(map(str, r['shape']))}: relative RMS difference "
            f"{r['bf16_rel_rms_error']:.2e} over the brain"
            for r in ok
            if "bf16_rel_rms_error" in r
        ]
    else:
        lines = [
            "| config | objective | size | width | depth | memory saving | precision | batch "
            "| step (s, median) | samples/s | useful GFLOP/s | peak GFLOP/s | peak_fraction "
            "| step RSS (GiB) | planned (GiB) | peak RSS (GiB) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
            *(
                f"| {r['config']} | {r['objective']} | {r['size']} | {r['width']} | {r['depth']} "
                f"| {'on' if r['memory_saving'] else 'off'} | {r['precision']} "
                f"| {r['batch']} | {r['step_seconds_median']:.3f} | {r['patches_per_s']:.2f} "
                f"| {r['useful_gflop_per_s']:.0f} | {r['peak_gflop_per_s']:.0f} "
                f"| {r['peak_fraction']:.2f} | {r['step_rss_bytes'] / 2**30:.2f} "
                f"| {r['planned_step_bytes'] / 2**30:.2f} | {r['peak_rss_bytes'] / 2**30:.2f} |"
                for r in ok
            ),
        ]
    return "\n".join(lines + failed) + "\n"
