"""One trial of a local sweep: a normal run of the trial's config, its value, pruning through the trainer's hook."""

from __future__ import annotations

import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from launch.engine.decode import DecodeEvaluator
from launch.engine.plan import LocalSweep
from launch.engine.schema import SELECT_KEY
from launch.engine.study import suggest
from launch.engine.trials import COUNTED, TrialFailed, counts, format_params, requeue_stopped, retried_from
from trainer import config as config_mod
from trainer.config import Config
from trainer.metrics import best_key
from trainer.tracking import read_metrics, wandb_mode

# A trainer: `train(cfg, *, name, resume, prune, verbose) -> RunResult` (trainer.train.train, or a fake in tests).
TrainFn = Callable[..., Any]


def _number(value: Any) -> float | None:
    """A finite metric value as a float, else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def run_values(run_dir: Path, summary: dict[str, Any], objectives: list[tuple[str, str]]) -> list[float] | None:
    """The run's value of each objective: the first as the summary's `<metric>_best` (the epoch the trainer kept
    as best.pt), the others as logged at that epoch (`epoch_best`). None when one is missing."""
    first = _number(summary.get(best_key(objectives[0][0])))
    if first is None:
        return None
    if len(objectives) == 1:
        return [first]
    row = next((r for r in read_metrics(run_dir) if r.get("epoch") == summary.get("epoch_best")), {})
    rest = [v for name, _ in objectives[1:] if (v := _number(row.get(name))) is not None]
    return [first, *rest] if len(rest) == len(objectives) - 1 else None


def final_metrics(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's numbers and the last epoch's metrics."""
    rows = read_metrics(run_dir)
    last = {
        k: v for k, v in (rows[-1] if rows else {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    keep = ("epoch_best", "epochs", "runtime_s")
    return {**last, **{k: v for k, v in summary.items() if k.endswith("_best") or k in keep}}


class Objective:
    """Runs one trial as a normal run and returns its best metric; prunes through the trainer's hook."""

    def __init__(self, sweep: LocalSweep, worker: int, train_fn: TrainFn | None):
        self.sweep = sweep
        self.worker = worker
        self.train_fn = train_fn
        self.stop = False
        self.distributions = sweep.spec.distributions()
        self._evaluator: DecodeEvaluator | None = None

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

    def _run_folder(self, trial: optuna.Trial, params: dict[str, Any]) -> tuple[str, Path | None, int | None]:
        """(name under train.run_dir, run folder to resume or None, the trial this one retries or None).

        A dead worker's (or a stopped) trial continues its run folder when it has a checkpoint."""
        records = {t.number: t for t in trial.study.get_trials(deepcopy=False)}
        retry_of = retried_from(records[trial.number])
        name = f"{self.sweep.study}/{self.sweep.study}-t{trial.number:03d}"  # under <train.run_dir>
        if retry_of is not None:
            old_dir = Path(records[retry_of].user_attrs.get("run_dir", "-"))
            if (old_dir / "checkpoints" / "last.pt").exists():
                return old_dir.name, old_dir, retry_of
        return name, None, retry_of

    def trial_config(self, trial: optuna.Trial, params: dict[str, Any]) -> Config:
        """The base config with the sweep's overrides and the trial's values, selecting by the sweep's metric;
        W&B runs in the sweep's group."""
        sweep = self.sweep
        cfg = config_mod.load_config(sweep.spec.base_config, [*sweep.spec.local_overrides, *sweep.overrides])
        cfg = config_mod.apply_overrides(
            cfg, {**params, SELECT_KEY: sweep.spec.metric}, where=f"trial {trial.number}: "
        )
        cfg.tracking.name = ""
        if wandb_mode(cfg) != "disabled":
            cfg.tracking.group = cfg.tracking.group or sweep.study
            cfg.tracking.tags = [*cfg.tracking.tags, f"sweep:{sweep.study}"]
        return cfg

    def _prune_hook(self, trial: optuna.Trial) -> Callable[[int, dict[str, float]], bool] | None:
        """The trainer's hook: report the sweep's metric after each validation (single-objective studies only)."""
        if self.sweep.spec.multi_objective:
            return None
        metric = self.sweep.spec.metric

        def prune(epoch: int, metrics: dict[str, float]) -> bool:
            value = metrics.get(metric)
            if value is None or not math.isfinite(value):
                return False
            trial.report(float(value), step=epoch)
            return trial.should_prune()

        return prune

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        params = {key: suggest(trial, key, dist) for key, dist in self.distributions.items()}
        reason = self._skip_reason(trial, params)
        if reason:
            trial.set_user_attr("skipped", reason)
            raise TrialFailed(f"skipped: {reason}")
        name, resume, retry_of = self._run_folder(trial, params)
        run_dir = resume or self.sweep.sweep_dir.parent / name
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        self.say(
            f"trial {trial.number} starts: {format_params(params)}"
            + (f" (retry of trial {retry_of}, resuming {resume})" if resume else "")
        )
        started = time.monotonic()
        if self.sweep.checkpoint:
            return self._decode_trial(trial, params, run_dir, started)
        result = self._train(trial, self.trial_config(trial, params), name, resume)
        return self._finish(trial, Path(result.run_dir), result.state, result.summary, started)

    def _train(self, trial: optuna.Trial, cfg: Config, name: str, resume: Path | None) -> Any:
        """The run; a run that raises is a failed trial (its folder says why) and the sweep goes on."""
        train_fn = self.train_fn
        if train_fn is None:  # the real trainer, with the plots analysis draws at the end of each run
            from analysis.plots import run_plots
            from trainer.train import train

            train_fn = functools.partial(train, on_finish=run_plots)
        try:
            return train_fn(
                cfg, name=None if resume else name, resume=resume, prune=self._prune_hook(trial),
                verbose=self.sweep.verbose,
            )  # fmt: skip
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:
            trial.set_user_attr("state", "failed")
            trial.set_user_attr("reason", f"{type(e).__name__}: {e}")
            self.say(f"trial {trial.number} failed: {type(e).__name__}: {e}")
            raise TrialFailed(str(e)) from e

    def _value(self, run_dir: Path, summary: dict[str, Any]) -> tuple[float | list[float] | None, str]:
        """The trial's value(s) (see `run_values`) and how to show them."""
        objectives = self.sweep.spec.objectives
        values = run_values(run_dir, summary, objectives)
        if values is None:
            return None, "no " + " and ".join(best_key(n) if i == 0 else n for i, (n, _) in enumerate(objectives))
        shown = ", ".join(f"{n} {v:.4f}" for (n, _), v in zip(objectives, values, strict=True))
        return (values if len(values) > 1 else values[0]), shown

    def _finish(
        self, trial: optuna.Trial, run_dir: Path, state: str, summary: dict[str, Any], started: float
    ) -> float | list[float]:
        final = final_metrics(run_dir, summary)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("state", state)
        trial.set_user_attr("metrics", final)
        if summary.get("reason"):
            trial.set_user_attr("reason", summary["reason"])
        value, shown = self._value(run_dir, summary)
        took = time.monotonic() - started
        link = f"; W&B run {summary['wandb_url']}" if summary.get("wandb_url") else ""
        self.say(f"trial {trial.number} {state}: {shown} after {final.get('epochs', '?')} epoch(s), {took:.0f} s{link}")
        if state == "pruned":
            raise optuna.TrialPruned(f"pruned after epoch {final.get('epochs')}")
        if state == "stopped":  # SIGTERM/SIGINT or the time budget: queue it again (it resumes), stop this worker
            self.stop = True
            requeue_stopped(trial)
            self.say(f"trial {trial.number} stopped ({summary.get('reason') or 'stopped'}); queued to resume {run_dir}")
            raise TrialFailed(summary.get("reason") or "stopped")
        if state != "finished":
            raise TrialFailed(summary.get("reason") or state)
        if value is None:
            reason = f"{run_dir / 'summary.json'} has no {best_key(self.sweep.spec.metric)}"
            trial.set_user_attr("state", "failed")
            trial.set_user_attr("reason", reason)
            raise TrialFailed(reason)
        return value

    def _decode_trial(self, trial: optuna.Trial, params: dict[str, Any], run_dir: Path, started: float) -> float:
        if self._evaluator is None:
            self._evaluator = DecodeEvaluator(Path(self.sweep.checkpoint or ""), self.sweep.overrides)
        summary = self._evaluator.run(params, run_dir, self.sweep.spec.metric)
        return self._finish(trial, run_dir, summary["state"], summary, started)
