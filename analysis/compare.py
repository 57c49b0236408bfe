"""Compare the runs of a sweep: the ranking with its noise (intervals as error bars, which differences are
real), overlaid learning curves of the top runs, parameter vs metric scatters (a log axis for every
parameter the sweep samples on a log scale), parallel coordinates and parameter importance, as PNGs and a
Markdown/HTML report.

Parameter importance: for an Optuna source, Optuna's own evaluator on the study (fANOVA when
scikit-learn is installed, else PED-ANOVA), over its finished trials and their objective. For other
sources (or too few finished trials), a simpler estimate: for each parameter alone, the share of the
variance of the metric between groups of runs with the same value (numeric parameters with more than
four values are cut into up to four quantile bins of at least two runs), corrected for the number of
groups (epsilon^2: the between-group sum of squares less what that many groups explain by chance,
over the total, clipped at 0); the shares are then normalised to sum to 1 as Optuna does. It ignores
interactions and is noisy below about ten runs.
"""

from __future__ import annotations

import importlib.util
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.optuna_runs import load_study  # noqa: E402
from analysis.plots import epoch_axis, interval_plot, outside_legend, save_figure  # noqa: E402
from analysis.rank import lower_is_better_for, rank_table, ranking_notes  # noqa: E402
from analysis.report import Report  # noqa: E402
from analysis.rows import STATES, Source, parse_source  # noqa: E402
from analysis.runs import load_runs, run_history  # noqa: E402
from analysis.tables import format_table  # noqa: E402
from trainer.io import atomic_write_text  # noqa: E402

FINAL = ("finished", "stopped")  # runs whose metric is final (pruned runs stopped early)
MIN_RUNS = 3  # fewer finished or stopped runs than this: no importance estimate


# --------------------------------------------------------------------------- parameter values


def numeric_values(values: pd.Series) -> pd.Series | None:
    """The values as floats when every present value is a number (not a bool), else None (categorical)."""
    present = values.dropna()
    if present.empty or any(
        isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.number)) for v in present
    ):
        return None
    return values.astype("float64")


def log_scaled(table: pd.DataFrame, param: str, x: pd.Series) -> bool:
    """A parameter the sweep samples on a log scale is shown on a log axis; without a sweep spec, positive values
    spanning at least a factor of 20 (a learning rate) are."""
    declared = table.attrs.get("log_params")
    if declared is not None:
        return param in declared
    x = x.dropna()
    return bool(len(x) > 1 and (x > 0).all() and x.max() / x.min() >= 20)


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


# --------------------------------------------------------------------------- plots


def overlay_curves(histories: Sequence[tuple[str, list[dict[str, Any]]]], out: Path, title: str = "") -> Path:
    """val/cer (left) and train/loss (right) per epoch, one line per run."""
    fig, (ax_cer, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, (label, rows) in enumerate(histories):
        color = plt.cm.tab10(i % 10)
        for ax, key in ((ax_cer, "val/cer"), (ax_loss, "train/loss")):
            pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None and "epoch" in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", ms=3, color=color, label=label)
    ax_cer.set(xlabel="epoch", ylabel="val/cer", title="validation CER (joint beam search)")
    ax_loss.set(xlabel="epoch", ylabel="train/loss", title="training loss")
    for ax in (ax_cer, ax_loss):
        ax.grid(alpha=0.3)
        epoch_axis(ax)
    outside_legend(ax_loss)  # the same runs in both: one legend, right of the plots
    if title:
        fig.suptitle(title)
    return save_figure(fig, out)


def param_scatter(table: pd.DataFrame, param: str, column: str, out: Path) -> Path:
    """One point per run: the parameter's value against the metric; pruned runs hollow, the best run starred."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    runs = table[table[column].notna()]
    x = numeric_values(runs[param])
    if x is None:
        cats = sorted({str(v) for v in runs[param]})
        pos = runs[param].map(lambda v: cats.index(str(v))).astype(float)
        jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(pos))
        xs = pos + jitter
        ax.set_xticks(range(len(cats)), cats, rotation=20 if max(map(len, cats)) > 6 else 0)
    else:
        xs = x
        if log_scaled(table, param, x):
            ax.set_xscale("log")
    pruned = (runs["state"] == "pruned").to_numpy()
    others = ", ".join(s for s in STATES if s in set(runs["state"][~pruned]))  # the runs table's own state words
    ax.scatter(np.asarray(xs)[~pruned], runs[column][~pruned], color="tab:blue", label=others)
    if pruned.any():
        ax.scatter(
            np.asarray(xs)[pruned], runs[column][pruned], facecolors="none", edgecolors="tab:gray", label="pruned"
        )
    if len(runs):
        values = runs[column].to_numpy()
        best = int(np.argmin(values) if lower_is_better_for(column) else np.argmax(values))
        ax.scatter([np.asarray(xs)[best]], [runs[column].iloc[best]], marker="*", s=180, color="tab:red", label="best")
    ax.set(xlabel=param, ylabel=column, title=f"{column} vs {param}")
    ax.grid(alpha=0.3)
    outside_legend(ax)
    return save_figure(fig, out)


def parallel_coordinates(table: pd.DataFrame, params: Sequence[str], column: str, out: Path, top: int = 5) -> Path:
    """One line per run across an axis per parameter and the metric, coloured by the metric; the top runs drawn bold."""
    runs = table[table[column].notna()].reset_index(drop=True)
    axes = [*params, column]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.9 * len(axes)), 4.6))
    scaled = np.zeros((len(runs), len(axes)))
    for j, name in enumerate(axes):
        x = numeric_values(runs[name])
        if x is None:
            cats = sorted({str(v) for v in runs[name]})
            pos = runs[name].map(lambda v, c=cats: c.index(str(v))).to_numpy(float)
            scaled[:, j] = pos / max(1, len(cats) - 1)
            ticks = [(i / max(1, len(cats) - 1), c) for i, c in enumerate(cats)]
        else:
            values = np.log10(x.to_numpy()) if log_scaled(table, name, x) else x.to_numpy()
            lo, hi = np.nanmin(values), np.nanmax(values)
            scaled[:, j] = (values - lo) / (hi - lo) if hi > lo else 0.5
            ticks = [(0.0, _short(x.min())), (1.0, _short(x.max()))] if hi > lo else [(0.5, _short(x.min()))]
        ax.axvline(j, color="black", lw=0.8)
        for y, label in ticks:
            ax.text(j + 0.04, y, label, fontsize=8, va="center")
    metric = runs[column].to_numpy()
    norm = plt.Normalize(np.nanmin(metric), np.nanmax(metric)) if len(runs) else plt.Normalize(0, 1)
    order = np.argsort(-metric)  # best drawn last, on top
    for rank_pos, i in enumerate(order):
        bold = rank_pos >= len(order) - top
        ax.plot(
            range(len(axes)),
            scaled[i],
            color=plt.cm.viridis_r(norm(metric[i])),
            lw=2.4 if bold else 0.9,
            alpha=1.0 if bold else 0.55,
        )
    ax.set_xticks(range(len(axes)), axes, rotation=15, fontsize=9)
    ax.set_yticks([])
    ax.set_xlim(-0.2, len(axes) - 0.6)
    fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="viridis_r"), ax=ax, label=column)
    ax.set_title(f"parallel coordinates (bold: top {top} by {column})")
    return save_figure(fig, out)


def importance_plot(importance: Importance, out: Path) -> Path:
    items = sorted(importance.values.items(), key=lambda kv: kv[1])
    fig, ax = plt.subplots(figsize=(6, 0.45 * max(3, len(items)) + 1))
    ax.barh([k for k, _ in items], [v for _, v in items], color="tab:blue")
    ax.set(xlabel="importance (normalised to sum to 1)", title="parameter importance")
    ax.grid(alpha=0.3, axis="x")
    return save_figure(fig, out)


def _short(v: float) -> str:
    return f"{v:.3g}"


# --------------------------------------------------------------------------- importance


@dataclass
class Importance:
    values: dict[str, float]  # parameter -> importance, summing to 1 (empty when not estimated)
    method: str
    note: str = ""


def variance_share(x: pd.Series, y: pd.Series) -> float:
    """The share of y's variance explained by the groups of x, corrected for the number of groups (epsilon^2,
    clipped at 0); numeric x with more than four values is cut into quantile bins of at least two runs."""
    y = y.to_numpy(float)
    total = ((y - y.mean()) ** 2).sum()
    if total == 0:
        return 0.0
    numeric = numeric_values(x)
    if numeric is not None and numeric.nunique() > 4:
        bins = max(2, min(4, len(y) // 2))
        groups = pd.qcut(numeric.rank(method="first"), bins, labels=False).to_numpy()
    else:
        groups = x.map(str).to_numpy()
    labels = pd.unique(groups)
    between = sum((groups == g).sum() * (y[groups == g].mean() - y.mean()) ** 2 for g in labels)
    k, n = len(labels), len(y)
    if n <= k:  # one run a group: nothing is left to tell effect from noise
        return 0.0
    within_mean_square = (total - between) / (n - k)
    return float(max(0.0, (between - (k - 1) * within_mean_square) / total))


def simple_importance(table: pd.DataFrame, params: Sequence[str], column: str) -> Importance:
    """The variance-share estimate (module docstring) over finished or stopped runs with the metric."""
    runs = table[table["state"].isin(FINAL) & table[column].notna()]
    method = "variance share of each parameter alone (epsilon^2, normalised)"
    varying = [p for p in params if runs[p].map(str).nunique() > 1]
    if len(runs) < MIN_RUNS or not varying:
        why = (
            f"{len(runs)} finished or stopped runs"
            if len(runs) < MIN_RUNS
            else "no parameter varies among the finished or stopped runs"
        )
        return Importance({}, method, f"not estimated: {why} (at least {MIN_RUNS} needed)")
    raw = {p: variance_share(runs[p], runs[column]) for p in varying}
    total = sum(raw.values())
    values = {p: (v / total if total > 0 else 0.0) for p, v in raw.items()}
    note = f"over {len(runs)} finished or stopped runs; ignores interactions" + (
        "; fewer than 10 runs: noisy" if len(runs) < 10 else ""
    )
    return Importance(dict(sorted(values.items(), key=lambda kv: -kv[1])), method, note)


def optuna_importance(source: Source, params: Sequence[str]) -> Importance | None:
    """Optuna's evaluator on the study's finished trials (Optuna's COMPLETE); None when too few or nothing varies."""
    import optuna
    from optuna.trial import TrialState

    study = load_study(source)
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    varying = [
        p for p in params if len({repr(t.params.get(p)) for t in complete}) > 1 and all(p in t.params for t in complete)
    ]
    if len(complete) < MIN_RUNS or not varying:
        return None
    if importlib.util.find_spec("sklearn") is not None:
        evaluator, name = optuna.importance.FanovaImportanceEvaluator(seed=0), "Optuna fANOVA"
    else:
        evaluator, name = optuna.importance.PedAnovaImportanceEvaluator(), "Optuna PED-ANOVA (scikit-learn absent)"
    target = (lambda t: t.values[0]) if len(study.directions) > 1 else None
    values = optuna.importance.get_param_importances(study, evaluator=evaluator, params=varying, target=target)
    note = f"over {len(complete)} finished trials' objective" + (
        "; fewer than 10 trials: noisy" if len(complete) < 10 else ""
    )
    return Importance(dict(values), name, note)


def param_importance(table: pd.DataFrame, column: str = "val/cer_best") -> Importance:
    """Optuna's evaluator for an Optuna source ranked by its objective, else the simpler estimate."""
    source = parse_source(table.attrs["source"])
    params = table.attrs.get("params", [])
    if source.kind == "optuna" and column == "val/cer_best":
        found = optuna_importance(source, params)
        if found is not None:
            return found
    return simple_importance(table, params, column)


# --------------------------------------------------------------------------- the report


def ranking_section(report: Report, ranked: pd.DataFrame, params: list[str], out_dir: Path) -> None:
    """The ranking with its noise: the table, the intervals as error bars, and which differences are real."""
    column = ranked.attrs["ranked_by"]
    metric = ranked.attrs.get("interval_of", "val/cer")
    report.heading("Ranking")
    noise = [f"{metric}_low", f"{metric}_high", "tied", "collapsed"]
    shown = ranked[["rank", "name", "state", *params, column, *noise, "epoch_best", "epochs"]]
    report.table(list(shown.columns), [[_plain(v) for v in row] for row in shown.itertuples(index=False)])
    for note in ranking_notes(ranked):
        report.text(note)
    if ranked[f"{metric}_low"].notna().any():
        report.image(interval_plot(ranked, out_dir / "intervals.png"), f"{metric} of each run with its 95% interval")


def parameter_sections(
    report: Report, table: pd.DataFrame, params: list[str], column: str, out_dir: Path, top: int
) -> None:
    """One scatter per parameter, the parallel coordinates and the parameter importance."""
    report.heading(f"Parameters against {column}")
    for p in params:
        report.image(param_scatter(table, p, column, out_dir / f"scatter_{safe_name(p)}.png"), f"{column} vs {p}")
    report.heading("Parallel coordinates")
    report.image(parallel_coordinates(table, params, column, out_dir / "parallel_coordinates.png", top=top))
    report.heading("Parameter importance")
    importance = param_importance(table, column)
    report.text(f"Method: {importance.method}; {importance.note}.")
    if importance.values:
        report.table(["parameter", "importance"], [[k, round(v, 4)] for k, v in importance.values.items()])
        report.image(importance_plot(importance, out_dir / "importance.png"))


def compare(
    source: str | Path | Source | pd.DataFrame,
    out_dir: str | Path,
    *,
    top: int = 5,
    by: str = "val/cer",
    api: Any = None,
) -> Path:
    """Write the comparison plots and `compare.md`/`compare.html` into `out_dir`; returns the HTML page."""
    table = source if isinstance(source, pd.DataFrame) else load_runs(source, api=api)
    out_dir = Path(out_dir)
    ranked = rank_table(table, by, api=api)
    column = ranked.attrs["ranked_by"]
    params = list(table.attrs.get("params", []))
    leaders = ranked[ranked["rank"].notna()].head(top)
    report = Report(f"Runs of {table.attrs['source']}")
    counts = table["state"].value_counts()
    states = ", ".join(f"{counts[s]} {s}" for s in STATES if s in counts)
    direction = "lower" if ranked.attrs["lower_is_better"] else "higher"
    report.text(
        f"{len(table)} runs ({states}); ranked by {column}, {direction} is better; swept parameters: "
        f"{', '.join(params) or 'none found'}."
    )
    ranking_section(report, ranked, params, out_dir)
    report.heading(f"Learning curves of the top {len(leaders)}")
    histories = [
        (f"#{int(r['rank'])} {r['name']} ({r[column]:.3f})", run_history(table.attrs["source"], r, api=api))
        for _, r in leaders.iterrows()
    ]
    report.image(overlay_curves(histories, out_dir / "learning_curves_top.png"), "val/cer and train/loss per epoch")
    if params:
        parameter_sections(report, table, params, column, out_dir, top)
    atomic_write_text(out_dir / "ranking.md", format_table(ranked, "markdown"))
    return report.write(out_dir, "compare")[1]


def _plain(v: Any) -> Any:
    if v is pd.NA:
        return None
    if isinstance(v, float) and not math.isnan(v) and v.is_integer():
        return int(v)
    return v
