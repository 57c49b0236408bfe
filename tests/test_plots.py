"""The plots' rules, checked on the matplotlib objects: integer epoch ticks, legends outside the axes, curves at
0 or 1 inside the frame, a log axis for every parameter the sweep samples on a log scale, white zero cells."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from runfolders import epochs, write_run

from analysis.compare import overlay_curves, parallel_coordinates, param_scatter
from analysis.diagnose import confusion_heatmap, confusion_matrix, gradient_plot
from analysis.plots import learning_curves
from analysis.runs import load_runs


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions draw, kept open (save_figure closes them) for the test to look at."""
    monkeypatch.setattr(plt, "close", lambda *a, **k: None)
    before = set(plt.get_fignums())

    def new() -> list:
        return [plt.figure(n) for n in plt.get_fignums() if n not in before]

    yield new
    monkeypatch.undo()
    plt.close("all")


def legend_outside(ax) -> bool:
    ax.figure.canvas.draw()
    legend, frame = ax.get_legend(), ax.get_window_extent()
    box = legend.get_window_extent()
    return box.x0 >= frame.x1 or box.x1 <= frame.x0 or box.y0 >= frame.y1 or box.y1 <= frame.y0


def integer_ticks(ax) -> bool:
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    return len(ticks) >= 2 and all(float(t).is_integer() for t in ticks)


def curves() -> list[dict]:
    """Three epochs (a default locator puts ticks at 1.25, 1.5, ...); val/cer reaches 0, train/cer stays at 1."""
    return epochs([0.5, 0.2, 0.0], train_cer=[1.0, 1.0, 1.0], ctc_greedy=[1.0, 1.0, 1.0])


def test_learning_curves(tmp_path: Path, figures):
    learning_curves(curves(), tmp_path / "c.png")
    (fig,) = figures()
    ax_loss, ax_cer = fig.axes
    assert integer_ticks(ax_loss) and integer_ticks(ax_cer)
    assert legend_outside(ax_loss) and legend_outside(ax_cer)
    low, high = ax_cer.get_ylim()
    assert low < 0.0 and high > 1.0  # the curve at 0 and the one at 1 are not drawn on the frame


def test_overlay_and_gradient_plots(tmp_path: Path, figures):
    overlay_curves([("a", curves()), ("b", epochs([1.0, 1.0, 1.0]))], tmp_path / "o.png")
    grads = {"encoder": [1.0, 0.5, 0.2], "decoder": [0.3, 0.2, 0.1]}
    gradient_plot(epochs([0.5, 0.4, 0.3], grad=grads), tmp_path / "g.png")
    overlay, gradients = figures()
    ax_cer, ax_loss = overlay.axes
    assert integer_ticks(ax_cer) and integer_ticks(ax_loss) and legend_outside(ax_loss)
    assert ax_cer.get_ylim()[0] < 0.0 and ax_cer.get_ylim()[1] > 1.0
    ax_g, ax_lr = gradients.axes
    assert integer_ticks(ax_g) and integer_ticks(ax_lr) and legend_outside(ax_g)


def swept(root: Path, spec: str) -> pd.DataFrame:
    """Three runs whose lr spans only a factor of 9 (the old rule kept that linear) and a warm-up of 1 to 50."""
    for i, (lr, warmup) in enumerate([(1e-3, 1), (3e-3, 10), (9e-3, 50)]):
        write_run(root, f"r{i}", epochs([0.9, 0.5 + i / 10]), [f"optim.lr={lr}", f"optim.warmup_epochs={warmup}",
                                                              "train.max_epochs=100"])  # fmt: skip
    if spec:
        (root / "sweep.yaml").write_text(spec)
    return load_runs(root)


LOG_LR = """method: random
parameters:
  optim.lr: {distribution: log_uniform_values, min: 0.001, max: 0.01}
  optim.warmup_epochs: {distribution: int_uniform, min: 1, max: 50}
"""


def test_parameters_sampled_on_a_log_scale_get_a_log_axis(tmp_path: Path, figures):
    table = swept(tmp_path, LOG_LR)
    assert table.attrs["log_params"] == ["optim.lr"]
    param_scatter(table, "optim.lr", "val/cer_best", tmp_path / "lr.png")
    param_scatter(table, "optim.warmup_epochs", "val/cer_best", tmp_path / "w.png")
    parallel_coordinates(table, ["optim.lr", "optim.warmup_epochs"], "val/cer_best", tmp_path / "p.png")
    lr, warmup, parallel = figures()
    assert lr.axes[0].get_xscale() == "log" and legend_outside(lr.axes[0])
    assert lr.axes[0].get_legend_handles_labels()[1] == ["finished", "best"]  # the runs table's state words
    assert warmup.axes[0].get_xscale() == "linear"  # spans a factor of 50 but is sampled uniformly
    runs = [line for line in parallel.axes[0].get_lines() if len(line.get_ydata()) == 3]  # one line a run
    heights = sorted(round(float(line.get_ydata()[0]), 3) for line in runs)  # on the optim.lr axis
    assert heights == [0.0, 0.5, 1.0]  # 3e-3 halfway between 1e-3 and 9e-3 on a log axis (0.25 on a linear one)


def test_optuna_log_distributions_and_no_spec(tmp_path: Path):
    import optuna

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    study.optimize(lambda t: t.suggest_float("optim.lr", 1e-4, 1e-2, log=True) + t.suggest_int("decode.beam_size", 1, 9),
                   n_trials=2)  # fmt: skip
    assert load_runs(f"optuna://{storage}").attrs["log_params"] == ["optim.lr"]
    assert swept(tmp_path / "local", "").attrs["log_params"] is None  # no spec: the factor-of-20 rule decides


def test_zero_cells_of_the_heatmap_are_white(tmp_path: Path, figures):
    counts = Counter({("بَ", "بِ"): 5, ("بَ", "مَ"): 3, (None, "ا"): 4})
    confusion_heatmap(counts, tmp_path / "h.png", top=3)
    (fig,) = figures()
    image = fig.axes[0].get_images()[0]
    assert image.get_cmap().get_bad() == pytest.approx((1.0, 1.0, 1.0, 1.0))
    _, _, m = confusion_matrix(counts, top=3)
    assert (np.ma.getmaskarray(image.get_array()) == (m == 0)).all() and (m > 0).sum() == 2  # zero cells: "bad"
    assert image.get_cmap()(image.norm(1))[:3] != pytest.approx((1.0, 1.0, 1.0))  # a count of 1 is coloured
