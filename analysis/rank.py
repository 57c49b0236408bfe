"""Rank runs by a metric: ties share a rank, failed runs come last; a Pareto front for several objectives.

`--by` names any metric of the registry (trainer/metrics.py) or its short column name; its goal sets the
direction. A metric runs may select by ranks by its best over each run's epochs (`val/cer` ->
`val/cer_best`), any other by its value at the run's best epoch (`val/hyp_len_ratio@best`).

Several objectives (a `metrics:` sweep): `with_pareto` adds one column per objective (the values at the
epoch where the first objective is best, as `sweep local` tells its multi-objective study) and a `pareto`
column marking the runs no other run beats.

Order: runs that did not fail and have the metric, best first; equal values share a rank (1, 2, 2, 4) and
are ordered by how soon they got there (`epoch_best`, then `runtime_s`), then by name. Failed runs and
runs without the metric follow, unranked.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from analysis.collapse import collapse_of
from analysis.noise import noise_columns
from analysis.predictions import run_predictions
from analysis.rows import Source, at_best
from analysis.runs import load_runs, load_yaml, run_history
from analysis.tables import format_table as format_table  # the one formatter; launch/demo.py imports it from here
from trainer.errors import ConfigError
from trainer.metrics import DEFAULT, METRICS, SELECTABLE, Metric, best_key, suggest

UNRANKED_STATES = ("failed",)
SHORT_NAMES = {m.column: name for name, m in METRICS.items()}  # `--by cer` is `--by val/cer`
SUFFIXES = ("@best", "_best", "_last", "_low", "_high")


def column_metric(column: str) -> Metric | None:
    """The registry metric a table column summarises ('val/cer_best' -> val/cer), or None."""
    if column in METRICS:
        return METRICS[column]
    for suffix in SUFFIXES:
        if column.endswith(suffix) and column.removesuffix(suffix) in METRICS:
            return METRICS[column.removesuffix(suffix)]
    return None


def metric_column(table: pd.DataFrame, by: str) -> str:
    """The column `--by` names: a column of the table as it is, else a registry metric (or its short name): its
    best over each run's epochs when runs may select by it, else its value at the run's best epoch."""
    name = SHORT_NAMES.get(by, by)
    if by not in table.columns and name in METRICS:
        column = best_key(name) if name in SELECTABLE else at_best(name)
    else:
        column = by
    if column not in table.columns:
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        raise ConfigError(
            f"cannot rank by {by!r}: not a metric lipsweep logs nor a column{suggest(by, [*METRICS, *numeric])}; "
            f"metrics: {', '.join(METRICS)}"
        )
    if not pd.api.types.is_numeric_dtype(table[column]):
        raise ConfigError(f"cannot rank by {by!r}: the column is not numeric")
    return column


def lower_is_better_for(column: str) -> bool:
    """A metric column's direction from its goal in the registry; other columns (parameters) lower first."""
    m = column_metric(column)
    return m is None or m.goal == "minimize"


def rank_runs(
    source: pd.DataFrame | str | Path | Source,
    by: str = DEFAULT,
    *,
    top: int | None = None,
    lower_is_better: bool | None = None,
    api: Any = None,
) -> pd.DataFrame:
    """The runs of `source` (a table from `load_runs`, or a source for it) sorted best first with a `rank` column;
    the direction follows the metric's goal unless `lower_is_better` says otherwise."""
    table = source if isinstance(source, pd.DataFrame) else load_runs(source, api=api)
    column = metric_column(table, by)
    lower = lower_is_better_for(column) if lower_is_better is None else lower_is_better
    metric = table[column]
    rankable = metric.notna() & ~table["state"].isin(UNRANKED_STATES)
    key = metric if lower else -metric
    ranked = table[rankable].assign(_key=key[rankable])
    ranked = ranked.sort_values(["_key", "epoch_best", "runtime_s", "name"], na_position="last", kind="stable")
    ranks = ranked["_key"].rank(method="min").astype("Int64")
    ranked = ranked.drop(columns="_key").assign(rank=ranks)
    rest = table[~rankable].sort_values(["state", "name"], kind="stable").assign(rank=pd.NA)
    out = pd.concat([ranked, rest]) if len(rest) else ranked
    out["rank"] = out["rank"].astype("Int64")
    out = out[["rank", *[c for c in out.columns if c != "rank"]]].reset_index(drop=True)
    out.attrs = dict(table.attrs, ranked_by=column, lower_is_better=lower)
    return out.head(top) if top is not None else out


def rank_table(
    source: pd.DataFrame | str | Path | Source,
    by: str = DEFAULT,
    *,
    top: int | None = None,
    api: Any = None,
    sweep_yaml: str | Path | None = None,
) -> pd.DataFrame:
    """The ranking every command shows: `rank_runs`, then for the runs with validation predictions the bootstrap
    interval and `tied` (analysis/noise.py), and `collapsed` for every run it can judge (analysis/collapse.py);
    runs without predictions get empty cells."""
    table = source if isinstance(source, pd.DataFrame) else load_runs(source, api=api, sweep_yaml=sweep_yaml)
    ranked = rank_runs(table, by)
    tables = table.attrs.get("wandb_tables", {})
    preds = [run_predictions(table.attrs["source"], row, tables, api) for _, row in ranked.iterrows()]
    metric = column_metric(ranked.attrs["ranked_by"])
    ranked = noise_columns(ranked, preds, metric.name if metric is not None else DEFAULT)
    judged = [collapse_of(row, pred).collapsed for (_, row), pred in zip(ranked.iterrows(), preds, strict=True)]
    ranked["collapsed"] = pd.array(judged, dtype="boolean")
    return ranked.head(top) if top is not None else ranked


def ranking_notes(ranked: pd.DataFrame) -> list[str]:
    """What the noise and collapse columns of a `rank_table` say, one line each."""
    metric = ranked.attrs.get("interval_of", DEFAULT)
    with_preds = ranked[f"{metric}_low"].notna()
    if not with_preds.any():
        notes = ["no run has val_predictions.csv (older runs): no intervals, no ties"]
    else:
        ref = ranked.attrs.get("tied_with")
        tied = ranked["name"][ranked["tied"].fillna(False).astype(bool) & (ranked["name"] != ref)]
        apart = ranked["name"][(~ranked["tied"].fillna(True).astype(bool))]
        notes = [
            f"{metric}_low/_high: 95% bootstrap interval over each run's validation clips ({int(with_preds.sum())} of "
            f"{len(ranked)} runs have predictions); tied: the paired difference from {ref} is within noise",
            f"tied with {ref}: {', '.join(tied) or 'none'}; really worse than {ref}: {', '.join(apart) or 'none'}",
        ]
    collapsed = ranked["name"][ranked["collapsed"].fillna(False).astype(bool)]
    if len(collapsed):
        notes.append(
            f"collapsed (one output for most clips, or no better than the best constant output): {', '.join(collapsed)}"
        )
    return notes


def best_run(table: pd.DataFrame, by: str = DEFAULT, lower_is_better: bool | None = None) -> pd.Series:
    """The first run of the ranking; a ConfigError when no run has the metric."""
    ranked = rank_runs(table, by, lower_is_better=lower_is_better)
    if ranked.empty or pd.isna(ranked.loc[0, "rank"]):
        states = ", ".join(f"{s}: {n}" for s, n in table["state"].value_counts().items()) or "no runs"
        raise ConfigError(f"{table.attrs.get('source', 'the source')}: no run that did not fail has {by} ({states})")
    return ranked.iloc[0]


def pareto_front(table: pd.DataFrame, objectives: Mapping[str, Literal["min", "max"]]) -> pd.Series:
    """True for runs that no other run beats: as good on every objective and better on one; failed or incomplete runs False."""
    if not objectives:
        raise ValueError("pareto_front needs at least one objective")
    for col, goal in objectives.items():
        if col not in table.columns:
            raise ConfigError(f"no column {col!r} for the Pareto front")
        if goal not in ("min", "max"):
            raise ValueError(f"objective {col}: goal must be 'min' or 'max', got {goal!r}")
    values = np.column_stack([table[c].to_numpy(float) * (1 if g == "min" else -1) for c, g in objectives.items()])
    valid = ~np.isnan(values).any(axis=1) & ~table["state"].isin(UNRANKED_STATES).to_numpy()
    v = values[valid]  # (n, k), lower is better in every column
    no_worse = (v[:, None, :] <= v[None, :, :]).all(-1)  # [i, j]: i is at least as good as j everywhere
    better = (v[:, None, :] < v[None, :, :]).any(-1)
    dominated = (no_worse & better).any(axis=0)  # j is dominated by some i
    front = np.zeros(len(table), dtype=bool)
    front[np.flatnonzero(valid)] = ~dominated
    return pd.Series(front, index=table.index, name="pareto")


def parse_objectives(text: str) -> list[tuple[str, str]]:
    """`val/cer,time/epoch_s:min,train/clips_per_s:max` -> [(metric, min|max)] (min by default)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, _, goal = part.rpartition(":") if part.endswith((":min", ":max")) else (part, "", "min")
        out.append((name, goal))
    if len(out) < 2:
        raise ConfigError(f"--pareto {text!r}: name two or more metrics, e.g. val/cer,time/epoch_s")
    return out


def sweep_objectives(sweep_yaml: str | Path) -> list[tuple[str, str]] | None:
    """A sweep YAML's `metrics:` as [(metric, min|max)], or None when it has one metric."""
    metrics = load_yaml(Path(sweep_yaml)).get("metrics")
    if not isinstance(metrics, list) or len(metrics) < 2:
        return None
    return [(str(m["name"]), "max" if m.get("goal") == "maximize" else "min") for m in metrics]


def _at_best_epoch(history: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> dict[str, float]:
    """Every objective at the epoch where the first is best, among epochs that logged them all."""
    names = [n for n, _ in objectives]
    complete = [r for r in history if all(isinstance(r.get(n), (int, float)) and np.isfinite(r[n]) for n in names)]
    if not complete:
        return {}
    first, goal = objectives[0]
    best = (min if goal == "min" else max)(complete, key=lambda r: float(r[first]))
    return {n: float(best[n]) for n in names}


def with_pareto(
    table: pd.DataFrame, objectives: list[tuple[str, str]], source: str | Path | Source | None = None, api: Any = None
) -> pd.DataFrame:
    """The table with one column per objective (from each run's history) and `pareto` (True: on the front)."""
    names = [n for n, _ in objectives]
    src = source if source is not None else table.attrs.get("source")
    values = []
    for _, row in table.iterrows():
        history = run_history(src, row, api=api) if src is not None and row["state"] not in UNRANKED_STATES else []
        values.append(_at_best_epoch(history, objectives))
    out = table.copy()
    for name in names:
        out[name] = pd.Series([v.get(name, np.nan) for v in values], index=table.index, dtype="float64")
    out["pareto"] = pareto_front(out, dict(objectives))
    out.attrs = dict(table.attrs, objectives=objectives)
    return out
