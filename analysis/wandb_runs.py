"""The runs of a W&B sweep or project through the public API (`wandb.Api()`, injectable as `api=`).

A run's config and summary come in one paginated query; its history (one query) is fetched only when the
summary cannot give the metric columns (its best epoch is not its last and the summary lacks the values
at the best epoch, as runs from before `<metric>@best` summaries do).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Mapping
from typing import Any

from analysis.rows import (
    DEFAULT,
    LAST,
    METRIC_COLUMNS,
    STATES,
    Source,
    at_best,
    best_key,
    best_of,
    cell,
    fill,
    flatten_dict,
    number,
    select_metric_of,
)
from trainer.errors import DataError
from trainer.metrics import METRICS, SELECTABLE

HISTORY_SAMPLES = 10_000  # history rows a query returns; lipsweep logs one row an epoch
PREDICTIONS_KEY = "val/predictions"  # the wandb.Table of the best epoch's validation predictions


def wandb_api(api: Any = None) -> Any:
    if api is not None:
        return api
    import wandb

    return wandb.Api(timeout=60)


def wandb_state(run: Any, summary: Mapping[str, Any]) -> str:
    """Our state (the `state` the run wrote into its summary) else W&B's: crashed, killed, preempted become failed."""
    ours = summary.get("state")
    if ours in STATES and ours != "running":
        return ours
    if "pruned" in (run.tags or []):
        return "pruned"
    theirs = str(run.state).lower()
    if theirs == "finished":
        return "finished"
    if theirs in ("running", "pending", "preempting"):
        return "running"
    return "failed"


def run_config(run: Any) -> dict[str, Any]:
    """A public-API run's config as {dotted key: value}, W&B's own keys left out."""
    return flatten_dict({k: v for k, v in run.config.items() if not k.startswith("_")})


def summary_columns(summary: Mapping[str, Any], select: str) -> dict[str, float]:
    """The metric columns a W&B summary gives: ours by name, a metric's best from W&B's min/max summary, and the
    last values where the best epoch is the last one logged (a plain number there is the last value)."""
    out = {col: number(summary[col]) for col in METRIC_COLUMNS if col in summary}
    for name in SELECTABLE:
        if best_key(name) not in out and isinstance(summary.get(name), Mapping):
            out[best_key(name)] = number(summary[name])
    if "epochs" not in out and "epoch" in summary:
        out["epochs"] = number(summary["epoch"])
    if "runtime_s" not in out and "_runtime" in summary:
        out["runtime_s"] = number(summary["_runtime"])
    if at_best(select) not in out and best_key(select) in out:  # the best epoch is where `select` is best
        out[at_best(select)] = out[best_key(select)]
    if out.get("epoch_best") == number(summary.get("epoch")):
        for name in METRICS:
            if at_best(name) not in out and not isinstance(summary.get(name), Mapping) and name in summary:
                out[at_best(name)] = number(summary[name])
        if LAST not in out and at_best(DEFAULT) in out:
            out[LAST] = out[at_best(DEFAULT)]
    return {k: v for k, v in out.items() if not math.isnan(v)}


def wandb_row(run: Any) -> tuple[dict[str, Any], bool]:
    """A row from a public-API run's summary and config; True when its history is needed for the missing metrics."""
    summary = dict(run.summary._json_dict)
    select = select_metric_of(summary, f"W&B run {run.id}")
    row: dict[str, Any] = {
        "run_id": run.id,
        "name": run.name or run.id,
        "state": wandb_state(run, summary),
        "reason": summary.get("reason", ""),
        "location": run.url,
        "select_metric": select,
    }
    fill(row, summary_columns(summary, select))
    row.update({k: cell(v) for k, v in run_config(run).items()})
    missing = any(math.isnan(number(row.get(k))) for k in (best_key(select), "epoch_best"))
    # a summary from before `<metric>@best` keys: the values at a best epoch that is not the last are in the history
    old_style = not any(k.endswith("@best") for k in summary) and math.isnan(number(row.get(LAST)))
    return row, (missing or old_style) and not math.isnan(number(summary.get("epoch")))


def wandb_history(run: Any) -> list[dict[str, Any]]:
    """A public-API run's per-epoch rows (one query for every key), numbers only, in epoch order."""
    by_epoch: dict[float, dict[str, Any]] = {}
    for record in run.history(samples=HISTORY_SAMPLES, pandas=False):
        epoch = number(record.get("epoch"))
        if math.isnan(epoch):
            continue
        row = by_epoch.setdefault(epoch, {"epoch": int(epoch)})
        row.update({k: v for k, v in record.items() if not k.startswith("_") and _is_number(v)})
    return [by_epoch[e] for e in sorted(by_epoch)]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def wandb_runs(source: Source, api: Any = None) -> list[Any]:
    """The public-API runs of a sweep (or project), with config and summary in one paginated query."""
    api = wandb_api(api)
    filters = {"sweep": source.sweep} if source.sweep else None
    return list(api.runs(source.path, filters=filters, per_page=100, lazy=False))


def predictions_file(run: Any) -> str | None:
    """The path, among the run's files, of its logged `val/predictions` table (None when it logged none)."""
    entry = dict(run.summary._json_dict).get(PREDICTIONS_KEY)
    if isinstance(entry, Mapping) and entry.get("_type") == "table-file" and entry.get("path"):
        return str(entry["path"])
    return None


def wandb_rows(source: Source, api: Any = None) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, str]]:
    """Rows, flat configs and {run_id: predictions table file} of the runs of `source`."""
    rows, configs, tables = [], [], {}
    for run in wandb_runs(source, api):
        row, needs_history = wandb_row(run)
        if needs_history:
            fill(row, best_of(wandb_history(run), row["select_metric"]))
        rows.append(row)
        configs.append(run_config(run))
        path = predictions_file(run)
        if path:
            tables[run.id] = path
    return rows, configs, tables


def wandb_table(run: Any, path: str) -> tuple[list[str], list[list[Any]]]:
    """Columns and rows of a wandb.Table the run logged, downloaded from its files."""
    with tempfile.TemporaryDirectory() as tmp, run.file(path).download(root=tmp, replace=True) as f:
        text = f.read()
    try:
        table = json.loads(text)
        return list(table["columns"]), [list(r) for r in table["data"]]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise DataError(f"W&B run {run.id}: {path} is not a wandb.Table file") from None
