"""One pandas table of runs from local run folders, an Optuna storage or a W&B sweep or project.

Sources (as given on the command line):
- a folder: every run folder below it (a folder with `summary.json` or `metrics.jsonl`), or one run folder;
- `optuna://URL?study=NAME` (e.g. `optuna://sqlite:///sweeps/lr.db?study=lr`): the trials of an Optuna
  study; a trial's run folder and final metrics are its user attrs (`run_dir`, `val/cer_best`, ...);
- `wandb://entity/project[/sweep_id]`: the runs of a W&B sweep (or of the whole project), through the
  public API (`wandb.Api()`, injectable as `api=`); histories are fetched only for the runs that need them.

Columns: `run_id` (the run's W&B id when it had a W&B run, else its run folder's name, whichever source
it is read from), `name`, `state` (finished, pruned, stopped, failed, running), one column per swept
parameter (dotted config keys; `table.attrs["params"]` lists them), the metric columns of
analysis/rows.py (from the metric registry), `select_metric`, `trial` (Optuna), `location` (run folder
or URL), `reason`. Swept parameters: a W&B sweep's or a sweep YAML's parameters (given, or the
`sweep.yaml` that `sweep local` keeps in a sweep folder), an Optuna trial's params; otherwise the config
keys whose values differ between the runs (bookkeeping keys, `rows.NOT_PARAMETERS`, left out).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from analysis.local_runs import local_rows
from analysis.optuna_runs import log_parameters, optuna_history, optuna_rows
from analysis.rows import (
    HEAD_COLUMNS,
    METRIC_COLUMNS,
    NON_PARAMETER_COLUMNS,
    TAIL_COLUMNS,
    Source,
    is_parameter,
    parse_source,
)
from analysis.wandb_runs import wandb_api, wandb_history, wandb_rows
from trainer.errors import ConfigError
from trainer.tracking import read_metrics

SWEEP_COPY = "sweep.yaml"  # `sweep local` keeps the sweep's YAML in its folder
# W&B's distributions that sample on a log scale
LOG_SCALES = {"log_uniform", "log_uniform_values", "q_log_uniform", "q_log_uniform_values", "inv_log_uniform",
              "inv_log_uniform_values"}  # fmt: skip


def load_runs(
    source: str | Path | Source,
    *,
    api: Any = None,
    sweep_yaml: str | Path | None = None,
) -> pd.DataFrame:
    """The table of runs of `source` (see the module docstring); `api` replaces `wandb.Api()`.

    attrs: `params` (the swept parameters), `source`, `log_params` (the parameters the sweep samples on a log
    scale; None when no sweep spec is known), `wandb_tables` ({run_id: its predictions table file})."""
    src = parse_source(source)
    declared = sweep_parameters(load_yaml(Path(sweep_yaml))) if sweep_yaml else None
    tables: dict[str, str] = {}
    if src.kind == "local":
        if declared is None and (Path(src.path) / SWEEP_COPY).is_file():  # the copy `sweep local` keeps
            declared = sweep_parameters(load_yaml(Path(src.path) / SWEEP_COPY))
        rows, configs = local_rows(Path(src.path))
        params = list(declared) if declared is not None else differing_keys(configs)
    elif src.kind == "optuna":
        rows, trial_params = optuna_rows(src)
        params = list(declared) if declared is not None else trial_params
    else:
        rows, configs, tables = wandb_rows(src, api=api)
        if declared is None and src.sweep:
            declared = sweep_parameters(wandb_api(api).sweep(f"{src.path}/{src.sweep}").config)
        params = list(declared) if declared is not None else differing_keys(configs)
    table = make_table(rows, params, src)
    table.attrs["wandb_tables"] = tables
    if declared is not None:
        table.attrs["log_params"] = sorted(k for k, spec in declared.items() if spec.get("distribution") in LOG_SCALES)
    elif src.kind == "optuna":
        table.attrs["log_params"] = sorted(log_parameters(src))
    return table


def make_table(rows: list[dict[str, Any]], params: Iterable[str], source: Source | str) -> pd.DataFrame:
    params = [p for p in dict.fromkeys(params) if p not in NON_PARAMETER_COLUMNS]
    columns = HEAD_COLUMNS + params + METRIC_COLUMNS + TAIL_COLUMNS
    table = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
    for col in METRIC_COLUMNS:
        table[col] = pd.to_numeric(table[col], errors="raise").astype("float64")
    table["trial"] = table["trial"].astype("Int64")
    table["select_metric"] = table["select_metric"].fillna("")
    table.attrs["params"] = params
    table.attrs["source"] = str(source)
    table.attrs["log_params"] = None
    return table


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Config keys whose values differ between runs (in schema order of the first config), bookkeeping keys left out."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    out = []
    for key in keys:
        if not is_parameter(key):
            continue
        values = {json.dumps(c[key], sort_keys=True, default=str) if key in c else "<absent>" for c in configs}
        if len(values) > 1:
            out.append(key)
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"sweep file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a sweep YAML is a mapping with a `parameters` section")
    return tree


def sweep_parameters(sweep: Mapping[str, Any] | str) -> dict[str, Mapping[str, Any]]:
    """The swept parameters of a W&B sweep config (text or mapping) with their specs: nested `parameters` joined
    with dots, fixed `value`s left out."""
    if isinstance(sweep, str):
        sweep = yaml.safe_load(sweep) or {}

    def walk(params: Mapping[str, Any], prefix: str) -> dict[str, Mapping[str, Any]]:
        found: dict[str, Mapping[str, Any]] = {}
        for name, spec in params.items():
            if isinstance(spec, Mapping) and isinstance(spec.get("parameters"), Mapping):
                found.update(walk(spec["parameters"], f"{prefix}{name}."))
            elif not (isinstance(spec, Mapping) and set(spec) == {"value"}):
                found[f"{prefix}{name}"] = spec if isinstance(spec, Mapping) else {}
        return found

    params = sweep.get("parameters") if isinstance(sweep, Mapping) else None
    if not isinstance(params, Mapping):
        raise ConfigError("the sweep config has no `parameters` mapping")
    return walk(params, "")


def sweep_parameter_names(sweep: Mapping[str, Any] | str) -> list[str]:
    return list(sweep_parameters(sweep))


def run_history(source: str | Path | Source, row: Mapping[str, Any], api: Any = None) -> list[dict[str, Any]]:
    """The per-epoch metrics of one row of the table (run folder, Optuna trial or W&B run)."""
    src = parse_source(source)
    if src.kind == "local":
        return read_metrics(Path(row["location"]))
    if src.kind == "optuna":
        return optuna_history(src, row)
    return wandb_history(wandb_api(api).run(f"{src.path}/{row['run_id']}"))
