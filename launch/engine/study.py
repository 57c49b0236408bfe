"""Optuna's side of a sweep: the storage, the sampler of the YAML's method, the pruner block it resolves to,
and sampling one trial's parameters from wandb's distributions."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
import yaml

from launch.engine.params import grid_space
from launch.engine.pruners import check_pruner, hyperband_from_early_terminate
from launch.engine.spec import SweepError, SweepSpec
from trainer.errors import ConfigError

# Two processes opening a new SQLite study at the same moment race in Optuna's schema creation
# (`UNIQUE constraint failed: alembic_version`, `table ... already exists`, `database is locked`):
# the loser retries after a short, jittered back-off and then finds the schema made.
OPEN_ATTEMPTS = 8
_RETRIED = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, optuna.exceptions.StorageInternalError)


def is_journal(storage: str) -> bool:
    return storage.startswith("journal:") or ("://" not in storage and storage.endswith((".log", ".journal")))


def with_retry(what: str, make: Callable[[], Any], attempts: int | None = None) -> Any:
    """`make()`, retried with back-off (0.05 s doubling, jittered) on the database errors of a concurrent creation."""
    attempts = attempts or OPEN_ATTEMPTS
    for attempt in range(attempts):
        try:
            return make()
        except _RETRIED as e:
            if attempt == attempts - 1:
                raise ConfigError(
                    f"{what}: still failing after {attempts} attempts ({type(e).__name__}: {str(e).splitlines()[0]}); "
                    "is another program holding the database?"
                ) from e
            time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def _heartbeat_options(heartbeat: int, max_retry: int) -> dict[str, Any]:
    """RDBStorage's heartbeat and the callback that queues a dead worker's trial again (none when heartbeat is 0)."""
    if heartbeat <= 0:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
            callback = {
                "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            }
        else:
            callback = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}
    return {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat, **callback}


def make_storage(storage: str, heartbeat: int = 60, max_retry: int = 2) -> optuna.storages.BaseStorage:
    """An RDB storage (any SQLAlchemy URL) with heartbeat and retry (heartbeat > 0), or a journal file (`journal:PATH`, *.log).

    Creating the schema is retried (see `with_retry`): workers started together may all find a new database."""
    if is_journal(storage):
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    if "://" not in storage:
        raise ConfigError(
            f"--storage {storage}: give an SQLAlchemy URL (sqlite:///path.db, postgresql://user@host/db) or journal:PATH"
        )
    engine_kwargs: dict[str, Any] = {}
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 120}}
    elif storage.startswith("postgresql"):
        engine_kwargs = {"pool_pre_ping": True}
    retry = _heartbeat_options(heartbeat, max_retry)

    def rdb() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(storage, engine_kwargs=engine_kwargs, **retry)

    try:
        return with_retry(f"--storage {storage}", rdb)
    except ImportError as e:
        raise ConfigError(f"--storage {storage}: {e} (for PostgreSQL: pip install psycopg2-binary)") from None


def make_sampler(spec: SweepSpec, seed: int) -> optuna.samplers.BaseSampler:
    """grid -> GridSampler, random -> RandomSampler, bayes -> TPESampler, all seeded.

    custom (a scheduler sweep written as such) -> TPESampler, which also handles several objectives."""
    if spec.method == "grid":
        return optuna.samplers.GridSampler(grid_space(spec.distributions()), seed=seed)
    if spec.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.method in ("bayes", "custom"):
        return optuna.samplers.TPESampler(seed=seed)
    raise ConfigError(f"method: {spec.method}: `sweep local` runs grid, random, bayes and custom sweeps")


def resolve_pruner(
    spec: SweepSpec, name: str | None = None, options: list[str] | tuple[str, ...] = (), max_epochs: int = 1
) -> dict[str, Any]:
    """The pruner block: `--pruner NAME` (+ `--pruner-opt k=v`), else the YAML's `pruner:`, else early_terminate, else none."""
    if name:
        same = spec.pruner if spec.pruner and spec.pruner.get("type") == name else {}
        block: dict[str, Any] = {**same, "type": name}
        where = "--pruner"
    elif spec.pruner:
        block, where = dict(spec.pruner), "pruner"
    elif spec.early_terminate:
        block, where = hyperband_from_early_terminate(spec.early_terminate, max_epochs), "early_terminate"
    else:
        block, where = {"type": "none"}, "--pruner"
    for opt in options:
        if "=" not in opt:
            raise ConfigError(f"--pruner-opt {opt}: give option=value, for example n_warmup_steps=2")
        key, value = opt.split("=", 1)
        block[key.strip()] = yaml.safe_load(value)
    problems = check_pruner(block, where)
    if problems:
        raise SweepError(spec.path, problems)
    return block


def suggest(trial: optuna.Trial, key: str, dist: Any) -> Any:
    """Sample one parameter from its Optuna distribution."""
    D = optuna.distributions
    if isinstance(dist, D.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, D.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    if isinstance(dist, D.FloatDistribution):
        return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
    raise ValueError(f"{key}: unsupported distribution {dist!r}")
