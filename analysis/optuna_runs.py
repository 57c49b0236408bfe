"""The runs of an Optuna study: one row a trial that ran, from its user attrs, its values and its run folder."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from analysis.local_runs import is_run_dir, run_dir_row
from analysis.rows import DEFAULT, LAST, METRIC_COLUMNS, STATES, Source, at_best, best_key, cell, fill, number
from trainer.errors import ConfigError, DataError
from trainer.metrics import METRICS, metric
from trainer.tracking import METRICS as METRICS_FILE
from trainer.tracking import read_metrics


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
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ConfigError(
            f"{source}: {url!r} is not a storage URL ({e}); write optuna://sqlite:///path/to/study.db?study=NAME, "
            "optuna://postgresql://user@host/db?study=NAME or journal:PATH, or give the .db file itself"
        ) from None
    file = parsed.database if parsed.drivername.startswith("sqlite") else None
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


def study_metric(study: Any) -> str:
    """The metric the study's values are (its first metric name when it was given one, else val/cer)."""
    names = getattr(study, "metric_names", None) or []
    return names[0] if names and names[0] in METRICS else DEFAULT


def trial_state(trial: Any) -> str:
    """The run's own state when the sweep recorded it (user attr `state`), else the trial's, in the runs table's words."""
    from optuna.trial import TrialState

    recorded = trial.user_attrs.get("state")
    if recorded in STATES and trial.state != TrialState.RUNNING:
        return recorded
    return {TrialState.COMPLETE: "finished", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed"}.get(
        trial.state, "running"
    )


def _trial_values(trial: Any, name: str, single: bool) -> dict[str, float]:
    """Metric columns from the trial's own numbers: its intermediate values and objective are `name` per epoch."""
    out: dict[str, float] = {}
    steps = sorted(trial.intermediate_values)
    if steps:
        better = metric(name).better
        best_step = steps[0]
        for s in steps[1:]:
            if better(trial.intermediate_values[s], trial.intermediate_values[best_step]):
                best_step = s
        out.update({best_key(name): trial.intermediate_values[best_step], "epoch_best": best_step, "epochs": steps[-1]})
        out[at_best(name)] = trial.intermediate_values[best_step]
        if name == DEFAULT:
            out[LAST] = trial.intermediate_values[steps[-1]]
    if single and trial.values is not None:
        out[best_key(name)] = trial.values[0]
    if trial.datetime_start is not None and trial.datetime_complete is not None:
        out["runtime_s"] = (trial.datetime_complete - trial.datetime_start).total_seconds()
    return out


def _study_folder(source: Source) -> Path | None:
    """The folder of a study file (SQLite or journal), where `sweep local` keeps the trials' run folders."""
    from sqlalchemy.engine import make_url

    if source.path.startswith("journal:"):
        return Path(source.path.removeprefix("journal:")).parent
    if source.path.startswith("sqlite:"):
        database = make_url(source.path).database
        return Path(database).parent if database and database != ":memory:" else None
    return None


def trial_folder(run_dir: str | None, beside: Path | None) -> Path | None:
    """A trial's run folder as recorded (relative to where the sweep ran), else in `beside`, the study file's
    folder (the same layout read from another folder, or copied elsewhere); None when it is in neither place."""
    if not run_dir:
        return None
    places = [Path(run_dir), *([beside / Path(run_dir).name] if beside is not None else [])]
    return next((where for where in places if is_run_dir(where)), None)


def trial_row(trial: Any, source: Source, name: str, single: bool, beside: Path | None) -> dict[str, Any]:
    """One trial's row: its own values, then the column-named user attrs, then its run folder (when it is here:
    see `trial_folder`; `beside` is the study file's folder)."""
    attrs = {**trial.user_attrs.get("metrics", {}), **trial.user_attrs}
    run_dir = attrs.get("run_dir")
    where = trial_folder(run_dir, beside)
    folder = run_dir_row(where) if where is not None else {}
    run_dir = str(where) if where is not None else run_dir
    row: dict[str, Any] = {
        "run_id": attrs.get("wandb_id") or (Path(run_dir).name if run_dir else f"trial-{trial.number}"),
        "name": attrs.get("name") or (Path(run_dir).name if run_dir else f"trial-{trial.number}"),
        "state": trial_state(trial),
        "reason": attrs.get("reason", ""),
        "location": run_dir or f"{source} trial {trial.number}",
        "select_metric": folder.get("select_metric", name),
    }
    fill(row, _trial_values(trial, name, single))
    fill(row, {k: number(v) for k, v in attrs.items() if k in METRIC_COLUMNS})
    fill(row, folder)
    row["run_id"] = folder.get("run_id", row["run_id"])
    row["trial"] = trial.number
    row.update({k: cell(v) for k, v in trial.params.items()})
    return row


def optuna_rows(source: Source) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of every trial that ran (skipped ones left out), and the parameters the trials sampled."""
    study = load_study(source)
    name = study_metric(study)
    single = len(study.directions) == 1
    rows, params, beside = [], [], _study_folder(source)
    for t in study.trials:
        if "skipped" in t.user_attrs:
            continue
        rows.append(trial_row(t, source, name, single, beside))
        params += [k for k in t.params if k not in params]
    return rows, params


def log_parameters(source: Source) -> set[str]:
    """The parameters the study samples on a log scale (a FloatDistribution or IntDistribution with log=True)."""
    study = load_study(source)
    return {k for t in study.trials for k, d in t.distributions.items() if getattr(d, "log", False)}


def optuna_history(source: Source, row: Any) -> list[dict[str, Any]]:
    """A trial's per-epoch rows: its run folder's metrics, else its intermediate values under the study's metric."""
    study = load_study(source)
    number_ = row.get("trial")
    trial = next((t for t in study.trials if not math.isnan(number(number_)) and t.number == int(number_)), None)
    if trial is None:
        raise DataError(f"{source}: no trial {number_}")
    where = trial_folder(trial.user_attrs.get("run_dir"), _study_folder(source))
    if where is not None and (where / METRICS_FILE).exists():
        return read_metrics(where)
    name = study_metric(study)
    return [{"epoch": s, name: v} for s, v in sorted(trial.intermediate_values.items())]
