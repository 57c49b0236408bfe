"""A local sweep's trials as the study records them: which count towards the budget, retries, the rows table."""

from __future__ import annotations

import warnings
from typing import Any

import optuna

COUNTED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.RUNNING,
           optuna.trial.TrialState.WAITING)  # fmt: skip


class TrialFailed(Exception):
    """The trial's run failed, or the trial was skipped (duplicate grid point, budget reached): it is marked FAIL."""


def counts(t: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts towards the budget (run_cap): done, running, queued, or a run that failed.

    Skipped trials never ran; a dead worker's trial is retried (its retry counts) and a stopped one can run again.
    """
    if "skipped" in t.user_attrs:
        return False
    return t.state in COUNTED or (t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("state") == "failed")


def counted_trials(study: optuna.Study) -> int:
    return sum(counts(t) for t in study.get_trials(deepcopy=False))


def frozen(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The stored record of a running trial."""
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def requeue_stopped(trial: optuna.Trial) -> None:
    """Queue a stopped trial again, as the heartbeat retry queues a dead worker's: same parameters, same run folder.

    Its retry resumes the run from `last.pt` (see `Objective`); a stop is the user's, so there is no retry limit."""
    record = frozen(trial)
    history = [*record.system_attrs.get("retry_history", []), trial.number]
    trial.study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=record.params,
            distributions=record.distributions,
            user_attrs={"run_dir": record.user_attrs.get("run_dir", ""), "requeued": "stopped"},
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


def format_params(params: dict[str, Any]) -> str:
    """`optim.lr=0.001, model.ctc_weight=0.3` (floats to 4 significant digits)."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
