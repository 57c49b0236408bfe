"""One pandas table of runs from local run folders, an Optuna storage or a W&B sweep or project.

Sources (as given on the command line):
- a folder: every run folder below it (a folder with `summary.json` or `metrics.jsonl`), or one run folder;
- `optuna://URL?study=NAME` (e.g. `optuna://sqlite:///sweeps/lr.db?study=lr`): the trials of an Optuna
  study; a trial's run folder and final metrics are its user attrs (`run_dir`, `val/cer_best`, ...);
- `wandb://entity/project[/sweep_id]`: the runs of a W&B sweep (or of the whole project), through the
  public API (`wandb.Api()`, injectable as `api=`); histories are fetched only for the runs that need them.

Columns: `run_id`, `name`, `state` (finished, pruned, stopped, failed, running), one column per swept
parameter (dotted config keys; `table.attrs["params"]` lists them), `val/cer_best`, `val/cer_last`,
`epoch_best`, `epochs`, `runtime_s`, `val/cer_ctc_greedy@best`, `location` (run folder or URL), `reason`.
Swept parameters: a W&B sweep's or a sweep YAML's parameters (given, or the `sweep.yaml` that `sweep local`
keeps in a sweep folder), an Optuna trial's params; otherwise the config keys whose values differ between
the runs (bookkeeping keys in `NOT_PARAMETERS` left out).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

import pandas as pd
import yaml

from trainer.errors import ConfigError, DataError
from trainer.tracking import METRICS, SUMMARY, read_metrics

METRIC_COLUMNS = [
    "val/cer_best",
    "val/cer_last",
    "epoch_best",
    "epochs",
    "runtime_s",
    "val/cer_ctc_greedy@best",
]
HEAD_COLUMNS = ["run_id", "name", "state"]
SWEEP_COPY = "sweep.yaml"  # `sweep local` keeps the sweep's YAML in its folder
TAIL_COLUMNS = ["location", "reason"]
STATES = ("finished", "pruned", "stopped", "failed", "running")
# Config keys that differ between runs without being hyperparameters.
NOT_PARAMETERS = {
    "tracking.name",
    "tracking.group",
    "tracking.tags",
    "tracking.wandb",
    "tracking.log_checkpoint",
    "train.run_dir",
    "train.device",
    "data.cache_dir",
}
# W&B history keys, grouped as they are logged together: every validation, every epoch, every train_cer_every epochs
VAL_KEYS = ["val/cer", "val/cer_ctc_greedy", "val/loss"]
HISTORY_GROUPS = [VAL_KEYS, ["train/loss"], ["train/cer"]]


@dataclass(frozen=True)
class Source:
    """Where runs come from: `kind` local (a folder), optuna (storage URL + study) or wandb (entity/project + sweep)."""

    kind: Literal["local", "optuna", "wandb"]
    path: str  # folder, storage URL, or entity/project
    study: str = ""
    sweep: str = ""

    def __str__(self) -> str:
        if self.kind == "optuna":
            return f"optuna://{self.path}" + (f"?study={self.study}" if self.study else "")
        if self.kind == "wandb":
            return f"wandb://{self.path}" + (f"/{self.sweep}" if self.sweep else "")
        return self.path


def parse_source(text: str | Path | Source) -> Source:
    """`optuna://URL?study=NAME`, `wandb://entity/project[/sweep_id]`, a `sqlite:///file.db` URL or a folder."""
    if isinstance(text, Source):
        return text
    text = str(text)
    if text.startswith("optuna://") or text.startswith(("sqlite://", "postgresql://", "postgresql+", "mysql://")):
        url = text.removeprefix("optuna://")
        base, _, query = url.partition("?")
        pairs = parse_qsl(query, keep_blank_values=True)
        study = next((v for k, v in pairs if k == "study"), "")
        rest = [(k, v) for k, v in pairs if k != "study"]
        if not base:
            raise ConfigError(f"source {text!r}: no storage URL; write optuna://sqlite:///path/to/study.db?study=NAME")
        return Source("optuna", base + ("?" + urlencode(rest) if rest else ""), study=study)
    if text.startswith("wandb://"):
        parts = [p for p in text.removeprefix("wandb://").split("/") if p]
        if len(parts) == 4 and parts[2] == "sweeps":  # entity/project/sweeps/id, as in the sweep's URL
            parts = [parts[0], parts[1], parts[3]]
        if len(parts) not in (2, 3):
            raise ConfigError(f"source {text!r}: write wandb://entity/project or wandb://entity/project/sweep_id")
        return Source("wandb", "/".join(parts[:2]), sweep=parts[2] if len(parts) == 3 else "")
    path = Path(text)
    if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3"):
        return Source("optuna", f"sqlite:///{path}")
    if path.is_file() and path.suffix in (".log", ".journal"):
        return Source("optuna", f"journal:{path}")
    if not path.is_dir():
        raise ConfigError(
            f"source {text!r} is not a folder of runs, optuna://URL?study=NAME or wandb://entity/project[/sweep_id]"
        )
    return Source("local", str(path))


def load_runs(
    source: str | Path | Source,
    *,
    api: Any = None,
    sweep_yaml: str | Path | None = None,
) -> pd.DataFrame:
    """The table of runs of `source` (see the module docstring); `api` replaces `wandb.Api()`."""
    src = parse_source(source)
    declared = sweep_parameter_names(load_yaml(Path(sweep_yaml))) if sweep_yaml else None
    if src.kind == "local":
        if declared is None and (Path(src.path) / SWEEP_COPY).is_file():  # the copy `sweep local` keeps
            declared = sweep_parameter_names(load_yaml(Path(src.path) / SWEEP_COPY))
        rows, configs = local_rows(Path(src.path))
        params = declared if declared is not None else differing_keys(configs)
    elif src.kind == "optuna":
        rows, trial_params = optuna_rows(src)
        params = declared if declared is not None else trial_params
    else:
        rows, params = wandb_rows(src, api=api)
        params = declared if declared is not None else params
    return make_table(rows, params, src)


def make_table(rows: list[dict[str, Any]], params: Iterable[str], source: Source | str) -> pd.DataFrame:
    params = list(dict.fromkeys(params))
    columns = HEAD_COLUMNS + params + METRIC_COLUMNS + TAIL_COLUMNS
    table = pd.DataFrame([{c: row.get(c) for c in columns} for row in rows], columns=columns)
    for col in METRIC_COLUMNS:
        table[col] = pd.to_numeric(table[col], errors="raise").astype("float64")
    table.attrs["params"] = params
    table.attrs["source"] = str(source)
    return table


# --------------------------------------------------------------------------- helpers


def number(value: Any) -> float:
    """A metric value as a float; W&B's `{"min": x}` summaries unwrapped; missing or non-finite values NaN."""
    if isinstance(value, Mapping):
        value = value.get("min", value.get("last"))
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"metric value {value!r} is not a number") from None
    return x if math.isfinite(x) else math.nan


def cell(value: Any) -> Any:
    """A parameter value for a table cell: lists become their JSON text (hashable, comparable)."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return value


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted key: value}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """Config keys whose values differ between runs (in schema order of the first config), bookkeeping keys left out."""
    keys = list(dict.fromkeys(k for c in configs for k in c))
    out = []
    for key in keys:
        if key in NOT_PARAMETERS:
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


def sweep_parameter_names(sweep: Mapping[str, Any]) -> list[str]:
    """The swept parameters of a W&B sweep config (nested `parameters` joined with dots; fixed `value`s left out)."""

    def walk(params: Mapping[str, Any], prefix: str) -> list[str]:
        names = []
        for name, spec in params.items():
            if isinstance(spec, Mapping) and isinstance(spec.get("parameters"), Mapping):
                names += walk(spec["parameters"], f"{prefix}{name}.")
            elif isinstance(spec, Mapping) and set(spec) == {"value"}:
                continue
            else:
                names.append(f"{prefix}{name}")
        return names

    params = sweep.get("parameters")
    if not isinstance(params, Mapping):
        raise ConfigError("the sweep config has no `parameters` mapping")
    return walk(params, "")


def best_of(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Best and last val/cer of per-epoch rows, the epoch of the best (the first on ties) and the greedy CER there."""
    val = [r for r in history if not math.isnan(number(r.get("val/cer")))]
    if not val:
        return {}
    best = min(val, key=lambda r: number(r["val/cer"]))  # min keeps the first of equal values
    return {
        "val/cer_best": number(best["val/cer"]),
        "epoch_best": number(best.get("epoch")),
        "val/cer_last": number(val[-1]["val/cer"]),
        "val/cer_ctc_greedy@best": number(best.get("val/cer_ctc_greedy")),
        "epochs": max(number(r.get("epoch")) for r in history),
    }


# --------------------------------------------------------------------------- local run folders


def is_run_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file() or (path / METRICS).is_file()


def find_run_dirs(root: Path) -> list[Path]:
    """`root` itself when it is a run folder, else every run folder below it (not looking inside run folders)."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    found = []
    for folder, subdirs, _ in os.walk(root):
        if is_run_dir(Path(folder)):
            found.append(Path(folder))
            subdirs.clear()
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "wandb")
    return sorted(found)


def read_run_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); the run was written by another tool or damaged") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object")
    return summary


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config as {dotted key: value} ({} when it has no config.yaml)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return {}
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML: {e}") from None
    return flatten_dict(tree)


def run_dir_row(run_dir: Path) -> dict[str, Any]:
    """One row from a run folder: its summary, its metrics and its config values (dotted keys)."""
    run_dir = Path(run_dir)
    summary = read_run_summary(run_dir)
    history = read_metrics(run_dir)
    row: dict[str, Any] = {
        "run_id": run_dir.name,
        "name": summary.get("name") or run_dir.name,
        "state": summary.get("state", "running" if history else "failed"),
        "reason": summary.get("reason", "" if summary else "no summary.json"),
        "location": str(run_dir),
        "epochs": number(summary.get("epochs")),
        "runtime_s": number(summary.get("runtime_s")),
        "val/cer_best": number(summary.get("val/cer_best")),
        "epoch_best": number(summary.get("epoch_best")),
    }
    if math.isnan(row["runtime_s"]) and history:  # a run still going: the sum of its epochs so far
        row["runtime_s"] = sum(number(r.get("time/epoch_s")) for r in history if "time/epoch_s" in r)
    row.update({k: v for k, v in best_of(history).items() if not math.isnan(v)})
    return row


def local_rows(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and flat configs of every run folder under `root`."""
    dirs = find_run_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no run folders (folders holding summary.json or metrics.jsonl) below it")
    rows, configs = [], []
    for d in dirs:
        config = read_run_config(d)
        row = run_dir_row(d)
        row.update({k: cell(v) for k, v in config.items()})
        rows.append(row)
        configs.append(config)
    return rows, configs


# --------------------------------------------------------------------------- Optuna


def open_storage(source: Source) -> Any:
    """An Optuna storage from a URL (`sqlite:///f.db`, `postgresql://...`) or a journal file (`journal:PATH`, `*.log`)."""
    import optuna

    url = source.path
    if url.startswith("journal:") or ("://" not in url and url.endswith((".log", ".journal"))):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal:"))
        if not path.exists():
            raise ConfigError(f"{source}: the journal file {path} does not exist")
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        file = make_url(url).database
        if file and file != ":memory:" and not Path(file).exists():
            raise ConfigError(f"{source}: the SQLite file {file} does not exist")
    return optuna.storages.get_storage(url)


def load_study(source: Source) -> Any:
    """The Optuna study of `source`; without `study=` the storage must hold exactly one."""
    import optuna

    storage = open_storage(source)
    names = optuna.study.get_all_study_names(storage)
    study = source.study
    if not study:
        if len(names) != 1:
            raise ConfigError(
                f"{source.path} holds {len(names)} studies ({', '.join(names) or 'none'}); "
                f"name one: optuna://{source.path}?study=NAME"
            )
        study = names[0]
    if study not in names:
        raise ConfigError(f"{source.path} has no study {study!r}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study, storage=storage)


def _trial_state(trial: Any) -> str:
    """The run's own state when the sweep recorded it (user attr `state`), else the trial's."""
    from optuna.trial import TrialState

    recorded = trial.user_attrs.get("state")
    if recorded in STATES and trial.state != TrialState.RUNNING:
        return recorded
    return {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(
        trial.state, "running"
    )


def optuna_rows(source: Source) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every trial that ran (skipped ones left out): user attrs first (`metrics` and top level), then the
    trial's objective and intermediate values, then its run folder."""
    study = load_study(source)
    rows, params = [], []
    single = len(study.directions) == 1
    for t in study.trials:
        if "skipped" in t.user_attrs:
            continue
        attrs = {**t.user_attrs.get("metrics", {}), **t.user_attrs}
        run_dir = attrs.get("run_dir")
        steps = sorted(t.intermediate_values)
        row: dict[str, Any] = {
            "run_id": str(t.number),
            "name": attrs.get("name") or (Path(run_dir).name if run_dir else f"trial-{t.number}"),
            "state": _trial_state(t),
            "reason": attrs.get("reason", ""),
            "location": run_dir or f"{source} trial {t.number}",
        }
        if steps:
            best_step = min(steps, key=lambda s: t.intermediate_values[s])
            row.update(
                {
                    "val/cer_best": t.intermediate_values[best_step],
                    "epoch_best": best_step,
                    "val/cer_last": t.intermediate_values[steps[-1]],
                    "epochs": steps[-1],
                }
            )
        if single and t.values is not None:
            row["val/cer_best"] = t.values[0]
        if t.datetime_start is not None and t.datetime_complete is not None:
            row["runtime_s"] = (t.datetime_complete - t.datetime_start).total_seconds()
        folder = run_dir_row(Path(run_dir)) if run_dir and is_run_dir(Path(run_dir)) else {}
        for key in METRIC_COLUMNS:  # user attrs win, then the trial's own values, then the run folder
            if key in attrs:
                row[key] = number(attrs[key])
            elif math.isnan(number(row.get(key))) and key in folder:
                row[key] = folder[key]
        row.update({k: cell(v) for k, v in t.params.items()})
        params += [k for k in t.params if k not in params]
        rows.append(row)
    return rows, params


def optuna_history(source: Source, run_id: str) -> list[dict[str, Any]]:
    """A trial's per-epoch rows: its run folder's metrics, else its intermediate values as val/cer."""
    study = load_study(source)
    trial = next((t for t in study.trials if str(t.number) == str(run_id)), None)
    if trial is None:
        raise DataError(f"{source}: no trial {run_id}")
    run_dir = trial.user_attrs.get("run_dir")
    if run_dir and (Path(run_dir) / METRICS).exists():
        return read_metrics(Path(run_dir))
    return [{"epoch": s, "val/cer": v} for s, v in sorted(trial.intermediate_values.items())]


# --------------------------------------------------------------------------- W&B


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


def wandb_row(run: Any) -> tuple[dict[str, Any], bool]:
    """A row from a public-API run's summary and config; True when its history is needed for the missing metrics."""
    summary = dict(run.summary._json_dict)
    config = flatten_dict({k: v for k, v in run.config.items() if not k.startswith("_")})
    best = number(summary.get("val/cer_best"))
    if math.isnan(best):
        best = number(summary.get("val/cer"))  # define_metric(summary="min") keeps the minimum there
    row: dict[str, Any] = {
        "run_id": run.id,
        "name": run.name or run.id,
        "state": wandb_state(run, summary),
        "reason": summary.get("reason", ""),
        "location": run.url,
        "val/cer_best": best,
        "epoch_best": number(summary.get("epoch_best")),
        "epochs": number(summary.get("epochs", summary.get("epoch"))),
        "runtime_s": number(summary.get("runtime_s", summary.get("_runtime"))),
    }
    last_epoch = number(summary.get("epoch"))
    if not math.isnan(row["epoch_best"]) and row["epoch_best"] == last_epoch:
        # the best epoch is the last one logged: the summary's last values are the values at the best
        row["val/cer_last"] = best
        row["val/cer_ctc_greedy@best"] = number(summary.get("val/cer_ctc_greedy"))
    row.update({k: cell(v) for k, v in config.items()})
    needs_history = any(math.isnan(number(row.get(k))) for k in ("val/cer_best", "epoch_best", "val/cer_last"))
    return row, needs_history and not math.isnan(last_epoch)


def wandb_history(run: Any, groups: list[list[str]] | None = None) -> list[dict[str, Any]]:
    """A public-API run's per-epoch rows: one sampled-history query per group of keys logged together, merged by epoch."""
    by_epoch: dict[float, dict[str, Any]] = {}
    for keys in groups or [VAL_KEYS]:
        frame = run.history(keys=keys, x_axis="epoch", samples=1000, pandas=True)
        for record in frame.to_dict("records") if len(frame) else []:
            epoch = number(record.get("epoch"))
            if math.isnan(epoch):
                continue
            row = by_epoch.setdefault(epoch, {"epoch": int(epoch)})
            row.update({k: v for k, v in record.items() if k in keys and not math.isnan(number(v))})
    return [by_epoch[e] for e in sorted(by_epoch)]


def wandb_runs(source: Source, api: Any = None) -> list[Any]:
    """The public-API runs of a sweep (or project), with config and summary in one paginated query."""
    api = wandb_api(api)
    filters = {"sweep": source.sweep} if source.sweep else None
    return list(api.runs(source.path, filters=filters, per_page=100, lazy=False))


def wandb_rows(source: Source, api: Any = None) -> tuple[list[dict[str, Any]], list[str]]:
    api = wandb_api(api)
    runs = wandb_runs(source, api)
    rows, configs = [], []
    for run in runs:
        row, needs_history = wandb_row(run)
        if needs_history:
            row.update({k: v for k, v in best_of(wandb_history(run)).items() if not math.isnan(v)})
        rows.append(row)
        configs.append(flatten_dict({k: v for k, v in run.config.items() if not k.startswith("_")}))
    if source.sweep:
        params = sweep_parameter_names(api.sweep(f"{source.path}/{source.sweep}").config)
    else:
        params = differing_keys(configs)
    return rows, params


# --------------------------------------------------------------------------- per-run history


def run_history(source: str | Path | Source, row: Mapping[str, Any], api: Any = None) -> list[dict[str, Any]]:
    """The per-epoch metrics of one row of the table (run folder, Optuna trial or W&B run)."""
    src = parse_source(source)
    if src.kind == "local":
        return read_metrics(Path(row["location"]))
    if src.kind == "optuna":
        return optuna_history(src, row["run_id"])
    run = wandb_api(api).run(f"{src.path}/{row['run_id']}")
    return wandb_history(run, HISTORY_GROUPS)
