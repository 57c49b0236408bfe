"""What a sweep prints about itself: its header, a status of its trials after each one, its final table.

On a terminal the status comes after every trial with a bar; without one (Kaggle's logs, a file) it is
one plain line at most every `interval` seconds, and always at the end. Trials' own W&B output is
silenced (`quiet_wandb`): the sweep's lines say what each trial did.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import IO

import optuna

from analysis.rank import rank_table, ranking_notes, with_pareto
from analysis.runs import load_runs
from analysis.tables import format_table
from launch.engine.plan import LocalSweep
from launch.engine.spec import describe
from launch.engine.trials import retried_from
from trainer.progress import STATUS_EVERY

INTERVAL_S = STATUS_EVERY  # without a terminal: at most one status line this often (as every progress line)
BAR = 20  # characters of the bar on a terminal
ORDER = ("finished", "pruned", "failed", "stopped", "retried", "running", "queued")


def header(sweep: LocalSweep, workers: int) -> str:
    """The sweep's first line: what it runs (the resolved pruner named once), how many trials and workers."""
    return f"sweep {sweep.study}: {describe(sweep.spec, sweep.pruner)}; {sweep.budget} trial(s), {workers} worker(s)"


@contextlib.contextmanager
def quiet_wandb() -> Iterator[None]:
    """Trials' W&B runs print nothing of their own (no per-run header, summary or footer): WANDB_SILENT=true
    while the sweep runs, unless the user set WANDB_SILENT or WANDB_QUIET. wandb reads its variables once per
    process, so a wandb set up here (with no run open) is torn down before and after, to read them again."""
    if "WANDB_SILENT" in os.environ or "WANDB_QUIET" in os.environ:
        yield
        return
    _teardown_wandb()
    os.environ["WANDB_SILENT"] = "true"
    try:
        yield
    finally:
        del os.environ["WANDB_SILENT"]
        _teardown_wandb()


def _teardown_wandb() -> None:
    wandb = sys.modules.get("wandb")
    if wandb is not None and wandb.run is None:
        wandb.teardown()


def _state(t: optuna.trial.FrozenTrial, retried: set[int]) -> str | None:
    """A trial's state as the status counts it (None: a skipped trial, never run)."""
    if "skipped" in t.user_attrs:
        return None
    if t.state == optuna.trial.TrialState.FAIL:
        if t.user_attrs.get("state") == "stopped":
            return "stopped"
        return "retried" if t.number in retried else "failed"  # a dead worker's trial, run again
    return {
        optuna.trial.TrialState.COMPLETE: "finished",
        optuna.trial.TrialState.PRUNED: "pruned",
        optuna.trial.TrialState.RUNNING: "running",
        optuna.trial.TrialState.WAITING: "queued",
    }[t.state]


def _best(study: optuna.Study, metric: str) -> str:
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return f"no finished trial yet{_best_pruned(study, metric)}"
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} trial(s) on the Pareto front"
    best = study.best_trial
    return f"best {metric} {best.value:.4f} (trial {best.number})"


def _best_pruned(study: optuna.Study, metric: str) -> str:
    """'; best val/cer so far 0.8123 (pruned trial 2, epoch 4)', from the pruned trials' reported values."""
    pruned = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,))
    reports = [(v, t.number, step) for t in pruned for step, v in t.intermediate_values.items()]
    if not reports:
        return ""
    pick = min if study.direction == optuna.study.StudyDirection.MINIMIZE else max
    value, number, step = pick(reports)
    return f"; best {metric} so far {value:.4f} (pruned trial {number}, epoch {step})"


def status(study: optuna.Study, budget: int, metric: str, bar: bool = False) -> str:
    """`[demo] 5/8 trials: 3 finished, 1 pruned, 1 failed, 1 running; best val/cer 0.8052 (trial 2)`."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials if (n := retried_from(t)) is not None}
    counts = Counter(s for t in trials if (s := _state(t, retried)) is not None)
    done = counts["finished"] + counts["pruned"] + counts["failed"]
    shown = ", ".join(f"{counts[s]} {s}" for s in ORDER if counts[s] or s in ("finished", "pruned", "failed"))
    filled = round(BAR * min(done, budget) / max(budget, 1))
    gauge = f"[{'#' * filled}{'.' * (BAR - filled)}] " if bar else ""
    return f"[{study.study_name}] {gauge}{done}/{budget} trials: {shown}; {_best(study, metric)}"


class StatusLine:
    """Prints `status` after each trial on a terminal; without one, at most once every `interval` seconds."""

    def __init__(self, sweep: LocalSweep, stream: IO[str] | None = None, interval: float = INTERVAL_S):
        self.sweep = sweep
        self.stream = stream or sys.stdout
        self.interval = interval
        self.last = -float("inf")

    @property
    def terminal(self) -> bool:
        return self.stream.isatty()

    def __call__(self, study: optuna.Study, final: bool = False) -> None:
        now = time.monotonic()
        if not (self.terminal or final or now - self.last >= self.interval):
            return
        self.last = now
        line = status(study, self.sweep.budget, self.sweep.spec.metric, bar=self.terminal)
        print(line, file=self.stream, flush=True)


def final_table(sweep: LocalSweep) -> str:
    """The sweep's trials ranked by its metric as `runs rank` shows them (analysis.rank.rank_table: intervals,
    ties, collapsed runs, and the Pareto front for several objectives), with its notes."""
    source = f"optuna://{sweep.storage}?study={sweep.study}"
    table = load_runs(source, sweep_yaml=sweep.spec.path)
    objectives = [(name, "min" if goal == "minimize" else "max") for name, goal in sweep.spec.objectives]
    if len(objectives) > 1:
        table = with_pareto(table, objectives, source)
    ranked = rank_table(table, sweep.spec.metric)
    return format_table(ranked) + "".join(f"{note}\n" for note in ranking_notes(ranked))
