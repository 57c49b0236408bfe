"""`sweep local`: a sweep YAML run by Optuna, without a W&B server.

The study (sampler of the YAML's method, pruner of its `pruner:` block or `early_terminate`,
direction of its metric) lives in an Optuna storage: SQLite under the runs folder by default,
any SQLAlchemy URL (PostgreSQL for several machines) or Optuna's journal file. K worker
processes here, and workers on other machines, share it. Each trial is a normal run (its own
run folder `<train.run_dir>/<study>/<study>-tNNN`, its W&B run in the sweep's group when
tracking is on) that reports the metric after each validation for pruning; the run folder
and final metrics are kept as trial attributes. With an RDB storage a heartbeat marks the
trial of a dead worker failed, and a retry of it (resuming its run folder) is queued; a trial
stopped by SIGTERM/SIGINT or the time budget is queued again the same way (it resumes where it
stopped). Worker k of K runs on GPU k mod (visible GPUs) when `train.device` is auto or cuda.
A `metrics:` sweep (several objectives) runs as Optuna's multi-objective study, without pruning.
"""

from __future__ import annotations

import copy
import json
import math
import multiprocessing
import os
import random
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from launch.sweep_spec import SweepError, SweepSpec, check_pruner, grid_size, grid_space
from trainer import config as config_mod
from trainer.errors import ConfigError, UserError

COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
           optuna.trial.TrialState.WAITING)  # fmt: skip
STUDY_DB = "study.db"

# A trainer: `train(cfg, *, name, resume, prune, verbose) -> RunResult` (trainer.train.train, or a fake in tests).
TrainFn = Callable[..., Any]


class TrialFailed(Exception):
    """The trial's run failed, or the trial was skipped (duplicate grid point, budget reached): it is marked FAIL."""


@dataclass
class LocalSweep:
    """Everything a worker needs to run trials of one study (picklable: workers are separate processes)."""

    spec: SweepSpec
    study: str
    storage: str
    sweep_dir: Path
    budget: int
    pruner: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    checkpoint: str | None = None
    heartbeat: int = 60
    max_retry: int = 2
    verbose: bool = True
    device: str = "auto"  # train.device of the base config: worker k takes GPU k mod n when it is auto or cuda
    notes: list[str] = field(default_factory=list)  # what `prepare` changed, for the user (pruning off, ...)


# --------------------------------------------------------------------------- storage, sampler, pruner


def is_journal(storage: str) -> bool:
    return storage.startswith("journal:") or ("://" not in storage and storage.endswith((".log", ".journal")))


# Two processes opening a new SQLite study at the same moment race in Optuna's schema creation
# (`UNIQUE constraint failed: alembic_version`, `table ... already exists`, `database is locked`):
# the loser retries after a short, jittered back-off and then finds the schema made.
OPEN_ATTEMPTS = 8


def with_retry(what: str, make: Callable[[], Any], attempts: int | None = None) -> Any:
    """`make()`, retried with back-off (0.05 s doubling, jittered) on the database errors of a concurrent creation."""
    import sqlalchemy.exc

    attempts = attempts or OPEN_ATTEMPTS

    retried = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError, optuna.exceptions.StorageInternalError)
    for attempt in range(attempts):
        try:
            return make()
        except retried as e:
            if attempt == attempts - 1:
                raise ConfigError(
                    f"{what}: still failing after {attempts} attempts ({type(e).__name__}: {str(e).splitlines()[0]}); "
                    "is another program holding the database?"
                ) from e
            time.sleep(0.05 * 2**attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


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
    retry: dict[str, Any] = {}
    if heartbeat > 0:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if hasattr(optuna.storages, "RetryHeartbeatStaleTrialCallback"):  # optuna >= 4.9
                callback = {
                    "heartbeat_stale_trial_callback": optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=max_retry
                    )
                }
            else:
                callback = {"failed_trial_callback": optuna.storages.RetryFailedTrialCallback(max_retry=max_retry)}
        retry = {"heartbeat_interval": heartbeat, "grace_period": 3 * heartbeat, **callback}

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


def hyperband_from_early_terminate(et: dict[str, Any], max_epochs: int) -> dict[str, Any]:
    """W&B's `early_terminate: {type: hyperband, ...}` as Optuna's HyperbandPruner options (epochs are the resource)."""
    eta = float(et.get("eta", 3))
    if "min_iter" in et:
        min_resource = int(et["min_iter"])
    else:
        min_resource = max(1, round(et["max_iter"] / eta ** float(et["s"])))
    max_resource = int(et.get("max_iter", max_epochs))
    return {"type": "hyperband", "min_resource": min_resource, "max_resource": max(max_resource, min_resource),
            "reduction_factor": max(2, round(eta))}  # fmt: skip


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
        import yaml

        block[key.strip()] = yaml.safe_load(value)
    problems = check_pruner(block, where)
    if problems:
        raise SweepError(spec.path, problems)
    return block


def make_pruner(block: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Optuna's pruner for a checked pruner block; the step is the epoch."""
    opts = {k: v for k, v in block.items() if k != "type"}
    kind = block["type"]
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(**opts)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**opts)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**opts)
    if kind == "patient":  # experimental in Optuna, stable in use
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        patience, min_delta = opts.pop("patience"), opts.pop("min_delta", 0.0)
        return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(**opts), patience=patience, min_delta=min_delta)
    raise ValueError(f"unknown pruner {kind!r}")


def local_overrides(spec: SweepSpec) -> list[str]:
    """The command's fixed key=value arguments, less tracking.* (those set up W&B agents' runs, not local trials)."""
    return [o for o in spec.command_overrides if not o.lstrip("-").startswith("tracking.")]


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / STUDY_DB).as_posix()}"


def trial_budget(spec: SweepSpec, trials: int | None) -> int:
    """How many trials the study runs in all: --trials, run_cap and the grid size, whichever is smallest."""
    caps = [n for n in (trials, spec.run_cap) if n]
    if spec.method == "grid":
        caps.append(grid_size(grid_space(spec.distributions())))
    if not caps:
        raise ConfigError(f"{spec.path}: a {spec.method} sweep needs --trials N or run_cap: in the YAML")
    return min(caps)


def open_study(sweep: LocalSweep, worker: int = 0) -> optuna.Study:
    """Create the study or join it (several workers, several machines)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(sweep.storage, sweep.heartbeat, sweep.max_retry)
    return with_retry(
        f"study {sweep.study} on {sweep.storage}",
        lambda: optuna.create_study(
            study_name=sweep.study,
            storage=storage,
            # grid: one seed for all (trial n takes point n of one shuffled grid); else one seed a worker
            sampler=make_sampler(sweep.spec, sweep.seed + (0 if sweep.spec.method == "grid" else worker)),
            pruner=make_pruner(sweep.pruner),
            directions=sweep.spec.directions,
            load_if_exists=True,
        ),
    )


# --------------------------------------------------------------------------- one trial


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


def _finite(row: dict[str, Any], metric: str) -> bool:
    v = row.get(metric)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def best_value(rows: list[dict[str, Any]], metric: str, direction: str) -> float | None:
    values = [float(r[metric]) for r in rows if _finite(r, metric)]
    if not values:
        return None
    return min(values) if direction == "minimize" else max(values)


def objective_values(rows: list[dict[str, Any]], objectives: list[tuple[str, str]]) -> list[float] | None:
    """Several objectives: their values at the epoch where the first one is best (the run's best checkpoint).

    None when no epoch logged them all."""
    first, goal = objectives[0]
    complete = [r for r in rows if all(_finite(r, name) for name, _ in objectives)]
    if not complete:
        return None
    pick = min if goal == "minimize" else max
    best = pick(complete, key=lambda r: float(r[first]))  # the first of equal values
    return [float(best[name]) for name, _ in objectives]


def _final_metrics(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's numbers and the last epoch's metrics."""
    from trainer.tracking import read_metrics

    rows = read_metrics(run_dir)
    last = {
        k: v for k, v in (rows[-1] if rows else {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    keep = ("val/cer_best", "epoch_best", "epochs", "runtime_s")
    return {**last, **{k: summary[k] for k in keep if k in summary}}


class Objective:
    """Runs one trial as a normal run and returns its best metric; prunes through the trainer's hook."""

    def __init__(self, sweep: LocalSweep, worker: int, train_fn: TrainFn | None):
        self.sweep = sweep
        self.worker = worker
        self.train_fn = train_fn
        self.stop = False
        self.distributions = sweep.spec.distributions()
        self._evaluator: Any = None

    def say(self, text: str) -> None:
        print(f"[{self.sweep.study} w{self.worker}] {text}", flush=True)

    def _skip_reason(self, trial: optuna.Trial, params: dict[str, Any]) -> str | None:
        """A duplicate grid point or a trial beyond the budget (workers racing) is skipped, never run."""
        earlier = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and counts(t)]
        if len(earlier) >= self.sweep.budget:
            return f"the sweep's budget of {self.sweep.budget} trials is reached"
        if self.sweep.spec.method == "grid":
            for t in earlier:
                if t.params == params and t.state in COUNTED:
                    return f"grid point already taken by trial {t.number}"
        return None

    def __call__(self, trial: optuna.Trial) -> float:
        sweep = self.sweep
        params = {key: suggest(trial, key, dist) for key, dist in self.distributions.items()}
        reason = self._skip_reason(trial, params)
        if reason:
            trial.set_user_attr("skipped", reason)
            raise TrialFailed(f"skipped: {reason}")
        frozen = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
        retry_of = retried_from(frozen[trial.number])
        name = f"{sweep.study}/{sweep.study}-t{trial.number:03d}"  # under <train.run_dir>, as the config keeps it
        resume = None
        if retry_of is not None:  # a dead worker's trial: continue its run folder when it has a checkpoint
            old_dir = Path(frozen[retry_of].user_attrs.get("run_dir", "-"))
            if (old_dir / "checkpoints" / "last.pt").exists():
                resume, name = old_dir, old_dir.name
        run_dir = sweep.sweep_dir.parent / name if resume is None else resume
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        self.say(
            f"trial {trial.number} starts: {shown}"
            + (f" (retry of trial {retry_of}, resuming {resume})" if resume else "")
        )
        started = time.monotonic()
        if sweep.checkpoint:
            return self._decode_trial(trial, params, run_dir, started)

        cfg = config_mod.load_config(sweep.spec.base_config, [*local_overrides(sweep.spec), *sweep.overrides])
        cfg = config_mod.apply_overrides(cfg, params, where=f"trial {trial.number}: ")
        if cfg.tracking.name:
            cfg.tracking.name = ""
        from trainer.tracking import wandb_mode

        if wandb_mode(cfg) != "disabled":
            cfg.tracking.group = cfg.tracking.group or sweep.study
            cfg.tracking.tags = [*cfg.tracking.tags, f"sweep:{sweep.study}"]
        metric = sweep.spec.metric

        def prune(epoch: int, metrics: dict[str, float]) -> bool:  # Optuna prunes single-objective studies only
            value = metrics.get(metric)
            if value is None or not math.isfinite(value):
                return False
            trial.report(float(value), step=epoch)
            return trial.should_prune()

        train_fn = self.train_fn
        if train_fn is None:
            from trainer.train import train as train_fn
        try:
            result = train_fn(
                cfg,
                name=None if resume else name,
                resume=resume,
                prune=None if sweep.spec.multi_objective else prune,
                verbose=sweep.verbose,
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # the run failed (its folder says why); the sweep goes on
            trial.set_user_attr("state", "failed")
            trial.set_user_attr("reason", f"{type(e).__name__}: {e}")
            self.say(f"trial {trial.number} failed: {type(e).__name__}: {e}")
            raise TrialFailed(str(e)) from e
        return self._finish(trial, Path(result.run_dir), result.state, result.summary, started)

    def _finish(
        self, trial: optuna.Trial, run_dir: Path, state: str, summary: dict[str, Any], started: float
    ) -> float | list[float]:
        from trainer.tracking import read_metrics

        spec = self.sweep.spec
        final = _final_metrics(run_dir, summary)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("state", state)
        trial.set_user_attr("metrics", final)
        if summary.get("reason"):
            trial.set_user_attr("reason", summary["reason"])
        rows = read_metrics(run_dir)
        if spec.multi_objective:
            values = objective_values(rows, spec.objectives)
            value: float | list[float] | None = values
            shown = (
                ", ".join(f"{n} {v:.4g}" for (n, _), v in zip(spec.objectives, values, strict=True))
                if values is not None
                else "not every metric of " + ", ".join(n for n, _ in spec.objectives)
            )
        else:
            value = best_value(rows, spec.metric, spec.direction)
            shown = f"{spec.metric} {value:.4f}" if value is not None else f"no {spec.metric}"
        took = time.monotonic() - started
        self.say(f"trial {trial.number} {state}: {shown} after {final.get('epochs', '?')} epoch(s), {took:.0f} s")
        if state == "pruned":
            raise optuna.TrialPruned(f"pruned after epoch {final.get('epochs')}")
        if state == "stopped":  # SIGTERM/SIGINT or the time budget: queue it again (it resumes), stop this worker
            self.stop = True
            requeue_stopped(trial)
            self.say(f"trial {trial.number} stopped ({summary.get('reason') or 'stopped'}); queued to resume {run_dir}")
            raise TrialFailed(summary.get("reason") or "stopped")
        if state != "finished" or value is None:
            raise TrialFailed(summary.get("reason") or f"the run logged no {spec.metric}")
        return value

    def _decode_trial(self, trial: optuna.Trial, params: dict[str, Any], run_dir: Path, started: float) -> float:
        if self._evaluator is None:
            self._evaluator = DecodeEvaluator(Path(self.sweep.checkpoint or ""), self.sweep.overrides)
        summary = self._evaluator.run(params, run_dir)
        return self._finish(trial, run_dir, summary["state"], summary, started)


class DecodeEvaluator:
    """A trained checkpoint, its validation split and model, loaded once; each trial decodes with its decode.* settings."""

    def __init__(self, checkpoint: Path, data_overrides: list[str]):
        from trainer.checkpoints import load_for_eval
        from trainer.device import select_device, select_precision
        from trainer.evaluate import load_eval_set

        self.checkpoint = checkpoint
        loaded = load_for_eval(checkpoint, None, data_overrides)
        self.cfg = loaded.cfg
        self.epoch = loaded.epoch or 0
        self.device = select_device(self.cfg.train.device)
        self.precision = select_precision(self.cfg.train.precision, self.device)
        self.val = load_eval_set(self.cfg, "val")
        self.model = loaded.model.to(self.device)

    def run(self, params: dict[str, Any], run_dir: Path) -> dict[str, Any]:
        """Decode the validation split with `params`; writes a run folder (config, one metrics row, summary)."""
        from trainer.evaluate import evaluate
        from trainer.tracking import RunLog

        cfg = config_mod.apply_overrides(copy.deepcopy(self.cfg), params)
        log = RunLog(run_dir, cfg, name=run_dir.name)
        log.write_config(cfg)
        started = time.monotonic()
        result = evaluate(self.model, self.val, cfg, self.device, self.precision, losses=False)
        log.log_epoch({"epoch": self.epoch, **result.metrics, "time/epoch_s": time.monotonic() - started})
        summary = {
            "name": run_dir.name, "state": "finished", "reason": f"decoded {self.checkpoint} (no training)",
            "val/cer_best": result.metrics["val/cer"], "epoch_best": self.epoch, "epochs": self.epoch,
            "runtime_s": time.monotonic() - started, "checkpoint": str(self.checkpoint), "wandb_id": log.wandb_id,
        }  # fmt: skip
        log.write_summary(summary)
        log.finish("finished")
        return summary


# --------------------------------------------------------------------------- workers


def counts(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts towards the budget (run_cap): done, running, queued, or a run that failed.

    Skipped trials never ran; a dead worker's trial is retried (its retry counts) and a stopped one can run again.
    """
    if "skipped" in t.user_attrs:
        return False
    return t.state in COUNTED or (t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("state") == "failed")


def counted_trials(study: optuna.Study) -> int:
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def requeue_stopped(trial: optuna.Trial) -> None:
    """Queue a stopped trial again, as the heartbeat retry queues a dead worker's: same parameters, same run folder.

    Its retry resumes the run from `last.pt` (see `Objective`); a stop is the user's, so there is no retry limit."""
    frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
    history = [*frozen.system_attrs.get("retry_history", []), trial.number]
    trial.study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs={"run_dir": frozen.user_attrs.get("run_dir", ""), "requeued": "stopped"},
            system_attrs={"failed_trial": history[0], "retry_history": history},  # Optuna's retry attributes
        )
    )


def retried_from(t: optuna.trial.FrozenTrial) -> int | None:
    """The number of the dead worker's trial this one retries (None if it is not a retry)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = (
            getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
            or optuna.storages.RetryFailedTrialCallback
        )
        return callback.retried_trial_number(t)


def run_worker(sweep: LocalSweep, worker: int = 0, train_fn: TrainFn | None = None) -> int:
    """Run trials of the study until its budget is spent; returns how many this worker ran."""
    study = open_study(sweep, worker)
    objective = Objective(sweep, worker, train_fn)
    heartbeat = sweep.heartbeat > 0 and not is_journal(sweep.storage)
    ran = 0
    while not objective.stop:
        if heartbeat:  # a dead worker's trial becomes FAIL and its retry is queued
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if counted_trials(study) >= sweep.budget and not waiting:
            running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
            if heartbeat and running:  # wait: another worker may die, and its trial must be retried
                time.sleep(min(sweep.heartbeat, 5))
                continue
            break
        sampler = study.sampler
        if isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study) and not waiting:
            break
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
        ran += 1
    return ran


def visible_gpus(environ: dict[str, str] | None = None) -> list[str]:
    """The GPUs this process may use: CUDA_VISIBLE_DEVICES' entries when set, else 0..N-1 as torch counts them."""
    env = os.environ if environ is None else environ
    if "CUDA_VISIBLE_DEVICES" in env:
        return [g.strip() for g in env["CUDA_VISIBLE_DEVICES"].split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(worker: int, device: str, gpus: list[str]) -> dict[str, str]:
    """Environment for worker k: CUDA_VISIBLE_DEVICES=gpus[k mod n] when train.device is auto or cuda (so its
    `cuda`/`cuda:0` is that GPU); nothing for cpu, an explicit cuda:N, or no GPU."""
    if device not in ("auto", "cuda") or not gpus:
        return {}
    return {"CUDA_VISIBLE_DEVICES": gpus[worker % len(gpus)]}


def _worker_main(sweep: LocalSweep, worker: int, train_fn: TrainFn | None, threads: int, env: dict[str, str]) -> None:
    os.environ.update(env)  # before anything initialises CUDA in this process
    import torch

    torch.set_num_threads(threads)
    run_worker(sweep, worker, train_fn)


def run_workers(sweep: LocalSweep, workers: int, train_fn: TrainFn | None = None) -> list[int]:
    """K workers: in this process when K is 1, else K spawned processes sharing the study. Returns their exit codes."""
    open_study(sweep)  # created once here, so the workers only join it
    if workers <= 1:
        run_worker(sweep, 0, train_fn)
        return [0]
    threads = max(1, (os.cpu_count() or 1) // workers)
    gpus = visible_gpus() if sweep.device in ("auto", "cuda") else []
    envs = [worker_env(i, sweep.device, gpus) for i in range(workers)]
    if gpus:
        print(
            f"[{sweep.study}] "
            + ", ".join(f"worker {i} on GPU {e['CUDA_VISIBLE_DEVICES']}" for i, e in enumerate(envs)),
            flush=True,
        )
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(sweep, i, train_fn, threads, envs[i]), name=f"worker{i}")
        for i in range(workers)
    ]
    for p in procs:
        p.start()
    codes = []
    for i, p in enumerate(procs):
        p.join()
        codes.append(p.exitcode)
        if p.exitcode:
            print(
                f"[{sweep.study}] worker {i} exited with code {p.exitcode}; its running trial is retried by the next worker that starts",
                flush=True,
            )
    return codes


# --------------------------------------------------------------------------- the whole local sweep


def prepare(
    spec: SweepSpec,
    *,
    trials: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    pruner: str | None = None,
    pruner_options: list[str] | tuple[str, ...] = (),
    checkpoint: str | None = None,
    seed: int = 0,
    heartbeat: int = 60,
    max_retry: int = 2,
    verbose: bool = True,
) -> LocalSweep:
    """Resolve a validated sweep into what the workers run: study name, storage, budget, pruner, sweep folder."""
    if spec.method not in ("grid", "random", "bayes", "custom"):
        raise ConfigError(
            f"{spec.path}: method {spec.method}: `sweep local` runs grid, random, bayes and custom sweeps"
        )
    if (spec.raw.get("scheduler") or {}).get("search_space"):
        raise ConfigError(
            f"{spec.path}: scheduler.search_space: `sweep local` samples the YAML's parameters; a search_space "
            "function is used only by W&B's scheduler (drop it, or run the sweep with `sweep scheduler`)"
        )
    if checkpoint:
        from trainer.checkpoints import load_checkpoint

        base = config_mod.config_from_dict(load_checkpoint(Path(checkpoint))["config"])
        if overrides:
            config_mod.apply_overrides(base, list(overrides))
    else:
        base = config_mod.load_config(spec.base_config, [*local_overrides(spec), *overrides])
    name = study or spec.name
    sweep_dir = Path(base.train.run_dir) / name
    block = resolve_pruner(spec, pruner, pruner_options, base.train.max_epochs)
    notes = []
    if spec.multi_objective and block["type"] != "none":
        notes.append(
            f"pruning off: the {block['type']} pruner compares one metric across trials, and this sweep has "
            f"{len(spec.objectives)} objectives ({', '.join(n for n, _ in spec.objectives)}); Optuna prunes "
            "single-objective studies only"
        )
        block = {"type": "none"}
    return LocalSweep(
        spec=spec, study=name, storage=storage or default_storage(sweep_dir), sweep_dir=sweep_dir,
        budget=trial_budget(spec, trials), pruner=block, overrides=list(overrides), seed=seed,
        checkpoint=checkpoint, heartbeat=heartbeat, max_retry=max_retry, verbose=verbose,
        device=base.train.device, notes=notes,
    )  # fmt: skip


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row a trial (skipped ones left out), best first: number, state, value, epochs, params, run folder."""
    rows = []
    pareto = {t.number for t in study.best_trials} if len(study.directions) > 1 else set()
    for t in study.get_trials(deepcopy=False):
        if "skipped" in t.user_attrs:
            continue
        metrics = t.user_attrs.get("metrics", {})
        rows.append({
            "trial": t.number, "state": t.state.name.lower(), "value": t.values[0] if t.values else None,
            "values": list(t.values) if t.values else None, "pareto": t.number in pareto,
            "epochs": metrics.get("epochs"), "params": dict(t.params), "run_dir": t.user_attrs.get("run_dir", ""),
            "retry_of": retried_from(t),
        })  # fmt: skip
    sign = -1 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1
    rows.sort(key=lambda r: (r["value"] is None, sign * r["value"] if r["value"] is not None else 0, r["trial"]))
    return rows


def format_rows(rows: list[dict[str, Any]], metric: str | list[str]) -> str:
    """The trials as a table, best first; with several metrics, `*` marks the Pareto-optimal trials."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    multi = len(metrics) > 1
    head = "".join(f"  {m:>12}" for m in metrics)
    lines = [
        f"{'rank':>4}  {'trial':>5}  {'state':<9}{head}  {'epochs':>6}  " + ("pareto  " if multi else "") + "params"
    ]
    for i, r in enumerate(rows, 1):
        values = r.get("values") or ([r["value"]] if r["value"] is not None else None)
        cells = "".join(f"  {v:>12.4f}" for v in values) if values else "".join(f"  {'-':>12}" for _ in metrics)
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["params"].items())
        mark = ("*" if r.get("pareto") else "").ljust(6) + "  " if multi else ""
        epochs = r["epochs"] if r["epochs"] is not None else "-"
        lines.append(f"{i:>4}  {r['trial']:>5}  {r['state']:<9}{cells}  {epochs:>6}  {mark}{params}")
    return "\n".join(lines)


def summary_json(study: optuna.Study) -> str:
    return json.dumps(trial_rows(study), indent=2, default=str)


def run_local_sweep(sweep: LocalSweep, workers: int = 1, train_fn: TrainFn | None = None) -> optuna.Study:
    """Run the sweep with K workers and return the study."""
    if workers < 1:
        raise UserError("--workers must be at least 1")
    sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
    if sweep.spec.path is not None:
        (sweep.sweep_dir / "sweep.yaml").write_text(sweep.spec.path.read_text(encoding="utf-8"), encoding="utf-8")
    run_workers(sweep, workers, train_fn)
    return open_study(sweep)
