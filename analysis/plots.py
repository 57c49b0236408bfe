"""Plots as PNG files (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from trainer.tracking import read_metrics  # noqa: E402


def save_figure(fig: Any, out: Path) -> Path:
    """Lay out, write as PNG (folders made as needed) and close a figure."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
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
    ax_cer.set(xlabel="epoch", ylabel="CER", title="character error rate", ylim=(0, None))
    for ax in (ax_loss, ax_cer):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def run_plots(run_dir: Path) -> dict[str, Path]:
    """The plots of a finished run, drawn into RUN/plots/: {W&B key: png}. The trainer's `on_finish` callback."""
    run_dir = Path(run_dir)
    curves = learning_curves(read_metrics(run_dir), run_dir / "plots" / "learning_curves.png", title=run_dir.name)
    return {"plots/learning_curves": curves}
