"""Plots as PNG files (matplotlib, headless).

Every plot keeps to the same rules: epochs on integer ticks, legends outside the axes (never over the
data), and axes that autoscale with a margin, so a curve at 0 or at a CER of 1 is not hidden by the frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def epoch_axis(ax: Any) -> None:
    """Epochs are whole numbers: ticks on integers only."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def outside_legend(ax: Any) -> None:
    """The legend to the right of the axes, off the data (none when nothing is labelled)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)


def save_figure(fig: Any, out: Path) -> Path:
    """Lay out, write as PNG (folders made as needed) and close a figure."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None and "epoch" in r]
    return [p[0] for p in pts], [p[1] for p in pts]


def learning_curves(rows: Sequence[dict[str, Any]], out: Path, title: str = "") -> Path:
    """Train/val loss and train/val CER per epoch, side by side."""
    fig, (ax_loss, ax_cer) = plt.subplots(1, 2, figsize=(11, 4))
    for key, style in (("train/loss", "-"), ("val/loss", "--")):
        ax_loss.plot(*_series(rows, key), style, marker="o", ms=3, label=key)
    for key, style in (("train/cer", "-"), ("val/cer", "--"), ("val/cer_ctc_greedy", ":")):
        xs, ys = _series(rows, key)
        if xs:
            ax_cer.plot(xs, ys, style, marker="o", ms=3, label=key)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_cer.set(xlabel="epoch", ylabel="CER", title="character error rate")
    for ax in (ax_loss, ax_cer):
        ax.grid(alpha=0.3)
        epoch_axis(ax)
        outside_legend(ax)
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def interval_plot(ranked: pd.DataFrame, out: Path) -> Path:
    """Each run with predictions (ranked best first): its CER at its best epoch with the 95% bootstrap interval as an
    error bar; the reference run red, runs tied with it blue, runs worse beyond noise grey."""
    metric = ranked.attrs.get("interval_of", "val/cer")
    runs = ranked[ranked[f"{metric}_low"].notna()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(runs) + 2.5), 4.2))
    ref = ranked.attrs.get("tied_with")
    for i, r in runs.iterrows():
        point = (
            r[f"{metric}@best"] if pd.notna(r.get(f"{metric}@best")) else (r[f"{metric}_low"] + r[f"{metric}_high"]) / 2
        )
        below, above = max(0.0, point - r[f"{metric}_low"]), max(0.0, r[f"{metric}_high"] - point)
        tied = pd.notna(r["tied"]) and bool(r["tied"])
        color = "tab:red" if r["name"] == ref else "tab:blue" if tied else "tab:gray"
        ax.errorbar([i], [point], yerr=[[below], [above]], fmt="o", color=color, capsize=4)
    ax.set_xticks(range(len(runs)), [str(n) for n in runs["name"]], rotation=30, ha="right", fontsize=8)
    ax.set(ylabel=metric, title=f"{metric} with 95% bootstrap intervals (red: {ref}; blue: tied with it; grey: worse)")
    ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out)
