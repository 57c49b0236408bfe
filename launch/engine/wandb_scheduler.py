"""W&B's Optuna engine with the project's study factory (wandb >= 0.31, experimental in wandb).

A scheduler sweep is a W&B sweep with `method: custom` and `scheduler: {engine: optuna,
source: launch/engine/wandb_scheduler.py, optimizer: make_study}`. `wandb sweep-scheduler ID` (or
`python -m launch sweep scheduler ID`) runs on the user's machine: wandb's own
`OptunaDeclarativeOptimizer` asks the study from `make_study` for each run's parameters (from
wandb's mapping of the sweep's `parameters:`), feeds it each run's logged history, and stops the
runs its pruner prunes. The agents stay plain `wandb agent`.

W&B keeps only its own keys, so `make_study` reads the project's (`pruner:`, `base_config:`,
the original `method:`) from the YAML `sweep create` kept under `<train.run_dir>/wandb_sweeps/ID/`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from collections import Counter
from typing import Any

import optuna

from launch.engine.login import require_login
from launch.engine.pruners import make_pruner
from launch.engine.schema import scheduler_source
from launch.engine.spec import SweepSpec, load_sweep
from launch.engine.study import make_sampler, make_storage, resolve_pruner, with_retry
from launch.engine.wandb_create import find_record
from trainer import config as config_mod
from trainer.errors import UserError

STORAGE_ENV = "LIPSWEEP_SCHEDULER_STORAGE"  # an Optuna storage URL: a restarted scheduler continues the study
SWEEP_FILE_ENV = "LIPSWEEP_SCHEDULER_SWEEP"  # the sweep YAML as written (default: the one `create` kept)
SEED_ENV = "LIPSWEEP_SCHEDULER_SEED"


def kept_spec(sweep: Any) -> SweepSpec:
    """The sweep YAML as written (method, pruner, base_config) for a wandb `SweepInfo`.

    `$LIPSWEEP_SCHEDULER_SWEEP` when set, else the copy `sweep create` kept for the sweep id, else W&B's config."""
    path = os.environ.get(SWEEP_FILE_ENV)
    if path:
        return load_sweep(path)
    sent = SweepSpec(copy.deepcopy(sweep.config))
    run_dir = config_mod.load_config(sent.base_config, sent.command_overrides).train.run_dir
    record = find_record(sweep.id, run_dir)
    if record is not None:
        return load_sweep(record)
    print(
        f"[scheduler] no sweep YAML kept for {sweep.id} under {run_dir}/wandb_sweeps: no pruner: block; "
        f"set {SWEEP_FILE_ENV} to the YAML (or pass --sweep-file)",
        flush=True,
    )
    return sent


class ResumedStudy(optuna.Study):
    """A stored study reopened by a restarted scheduler.

    On start wandb's optimizer re-adds every finished run of the sweep (`add_trial`); those already in
    the storage are skipped, one for one, so a restart duplicates nothing. Trials the previous scheduler
    left RUNNING are failed: wandb adopts their runs again as new trials and replays their history."""

    def __init__(self, study_name: str, storage: Any, sampler: Any, pruner: Any):
        super().__init__(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)
        self.stored = Counter(_params_key(t.params) for t in self.get_trials(deepcopy=False, states=done))
        for t in self.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self.tell(t.number, state=optuna.trial.TrialState.FAIL)

    def add_trial(self, trial: optuna.trial.FrozenTrial) -> None:
        key = _params_key(trial.params)
        if self.stored[key] > 0:
            self.stored[key] -= 1
            return
        super().add_trial(trial)


def _params_key(params: dict[str, Any]) -> str:
    return repr(sorted(params.items()))


def make_study(sweep: Any) -> optuna.Study:
    """The project's study factory for wandb's Optuna engine: `scheduler.optimizer` takes wandb's `SweepInfo`.

    Sampler of the YAML's method (grid, random, TPE for bayes and custom), pruner of its `pruner:` block
    (or early_terminate) built by the same code as `sweep local` (none for several objectives: Optuna's
    pruners judge one), directions from `metric`/`metrics`, and the storage `$LIPSWEEP_SCHEDULER_STORAGE`
    (in memory when unset) so a restarted scheduler continues the same study.
    """
    spec = kept_spec(sweep)
    base = config_mod.load_config(spec.base_config, spec.command_overrides)
    block = resolve_pruner(spec, max_epochs=base.train.max_epochs)
    if spec.multi_objective:
        block = {"type": "none"}
    storage_url = os.environ.get(STORAGE_ENV)
    name = f"wandb-{sweep.id}"
    seed = int(os.environ.get(SEED_ENV, "0"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not storage_url:
        return optuna.create_study(
            study_name=name, sampler=make_sampler(spec, seed), pruner=make_pruner(block), directions=spec.directions
        )
    storage = make_storage(storage_url, heartbeat=0)
    with_retry(
        f"study {name} on {storage_url}",
        lambda: optuna.create_study(study_name=name, storage=storage, directions=spec.directions, load_if_exists=True),
    )
    existing = len(optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False))
    # a new seed after a restart: the same seed would propose the same points again
    return ResumedStudy(name, storage, make_sampler(spec, seed + existing), make_pruner(block))


def project_optimizer(sweep: Any) -> Any:
    """wandb's own optimizer for the sweep (its engine dispatch, as `wandb sweep-scheduler` builds it); a relative
    `scheduler.source` missing from the working folder is taken from the project root."""
    from wandb.sdk.sweeps.scheduler.optimizer import make_optimizer

    sched = dict(sweep.config.get("scheduler") or {})
    source = sched.get("source")
    if source and scheduler_source(source) != source:
        sched["source"] = scheduler_source(source)
        sweep = dataclasses.replace(sweep, config={**sweep.config, "scheduler": sched})
    return make_optimizer(sweep)


def split_sweep_path(path: str, entity: str | None, project: str | None) -> tuple[str | None, str | None, str]:
    """`ID`, `project/ID` or `entity/project/ID` -> (entity, project, ID)."""
    parts = path.split("/")
    if len(parts) > 3 or not all(parts):
        raise UserError(f"sweep {path!r}: write ID, project/ID or entity/project/ID")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return entity, parts[0], parts[1]
    return entity, project, parts[0]


def run_scheduler(
    sweep_path: str,
    *,
    storage: str | None = None,
    sweep_file: str | None = None,
    entity: str | None = None,
    project: str | None = None,
    batch_size: int = 10,
    poll_interval: float = 10.0,
    seed: int = 0,
    run: Any = None,
) -> Any:
    """Run wandb's sweep scheduler (`wandb sweep-scheduler`) with `project_optimizer`.

    `run` replaces wandb's `run_scheduler` (tests); the storage, YAML and seed reach `make_study` through
    the environment, as they would under `wandb sweep-scheduler` itself."""
    entity, project, sweep_id = split_sweep_path(sweep_path, entity, project)
    if storage:
        make_storage(storage, heartbeat=0)  # a bad URL fails here, before W&B is contacted
        os.environ[STORAGE_ENV] = storage
    if sweep_file:
        os.environ[SWEEP_FILE_ENV] = str(sweep_file)
    os.environ[SEED_ENV] = str(seed)
    if run is None:
        require_login("sweep scheduler")
        import wandb
        from wandb.sdk.sweeps.scheduler.client import run_scheduler as run

        api = wandb.Api()
        entity = entity or api.settings["entity"] or api.default_entity
        project = project or api.settings["project"]
    if not entity or not project:
        raise UserError(f"sweep {sweep_path}: pass it as entity/project/ID, or give --entity and --project")
    return run(
        entity=entity, project=project, sweep_id=sweep_id, make_optimizer=project_optimizer,
        batch_size=batch_size, poll_interval=poll_interval,
    )  # fmt: skip
