"""The training loop, read top-down: set-up, the epoch's steps, validation, checkpoints, the stop decision.

`train(cfg)` is what `python -m launch train`, every sweep trial and the demo call. It writes a run folder
(trainer/tracking.py), validates every `train.val_every` epochs (trainer/evaluate.py), keeps `best.pt` by
`train.select_metric` and `last.pt`, and resumes from `last.pt` after a kill. Set-up is in
trainer/setup.py, the epoch's steps in trainer/steps.py, what a checkpoint holds in trainer/checkpoints.py.

Signals (SIGTERM, SIGINT) and the time budget `train.max_minutes` follow one rule: checked after every
optimizer step and after every epoch, either one saves `last.pt` there (inside an epoch with its position
and running sums) and ends the run as `stopped`; `--resume` continues exactly there.
"""

from __future__ import annotations

import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import distributed
from trainer.checkpoints import TrainState
from trainer.config import Config, apply_overrides
from trainer.confusions import confusion_counts, confusion_rows
from trainer.device import select_device, select_precision
from trainer.evaluate import EvalSet, evaluate
from trainer.metrics import METRICS, best_key
from trainer.setup import Run, build_run, cache_summary, load_data, nothing_to_do, open_run, start_log
from trainer.steps import Stop, train_epoch
from trainer.tracking import PREDICTION_COLUMNS, RunLog, read_summary

# A pruner's hook: called after each validation with (epoch, metrics); True stops the run as pruned.
PruneHook = Callable[[int, dict[str, float]], bool]
# Called with the run folder before the W&B run closes; returns images to log with it: {key: png path}.
OnFinish = Callable[[Path], dict[str, Path]]


@dataclass
class RunResult:
    run_dir: Path
    state: str  # finished | pruned | stopped | failed
    summary: dict[str, Any] = field(default_factory=dict)


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves `last.pt` at the next optimizer step and exits cleanly."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if sys.platform != "win32" and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def stop_reason(signals: StopRequest, started: float, max_minutes: float) -> str:
    """Why the run must stop now, a signal or the time budget on any rank ('' to go on)."""
    received = signals.signal
    over = bool(max_minutes) and (time.monotonic() - started) / 60 > max_minutes
    if not distributed.any_rank(bool(received) or over):
        return ""
    if received:
        return f"received {received}"
    if over:
        return f"time budget of {max_minutes:g} min reached"
    return "received a stop signal (on another rank)"


def train(
    cfg: Config,
    *,
    name: str | None = None,
    resume: Path | None = None,
    prune: PruneHook | None = None,
    verbose: bool = True,
    on_finish: OnFinish | None = None,
) -> RunResult:
    """Train one run as `cfg` says, or continue run folder `resume` with `cfg`; its folder, final state and summary.

    On resume `cfg` may change only what checkpoints.RESUMABLE lists (a ConfigError names any other change).
    Under `torchrun --nproc_per_node=N` the N processes train one run together (trainer/distributed.py);
    rank 0 alone writes the run folder, the checkpoints and the W&B run.
    """
    # --- set-up: the data is read and checked before the run folder or the W&B run exists ------------
    distributed.init_from_env(cfg.train.device)
    verbose = verbose and distributed.is_main()
    say = print if verbose else _quiet
    run_dir, ckpt, cfg = open_run(cfg, name, resume, say)
    done = nothing_to_do(ckpt, cfg, run_dir) if ckpt is not None else ""
    if done and (summary := read_summary(run_dir)).get("state") != "running":
        say(done)
        return RunResult(run_dir, summary.get("state", "finished"), summary)
    last_epoch = int(ckpt["epoch"]) if ckpt and done else cfg.train.max_epochs  # done yet "running": killed in finish()
    device = distributed.local_device(select_device(cfg.train.device))
    precision = select_precision(cfg.train.precision, device)
    data, parts = load_data(cfg, say)
    log = start_log(run_dir, cfg, ckpt)
    data_cfg = dataclasses.replace(cfg.data)
    if log.sweep_params and ckpt is None:
        cfg = apply_overrides(cfg, log.sweep_params, where="wandb.config: ")
    cfg = distributed.broadcast_object(cfg)  # a W&B sweep's values reach rank 0 only
    if cfg.data != data_cfg:
        data, parts = load_data(cfg, say)
    log.write_config(cfg)
    summary: dict[str, Any] = read_summary(run_dir) if ckpt else {}
    summary.update({"name": run_dir.name, "state": "running", "wandb_id": log.wandb_id, "wandb_url": log.wandb_url})
    summary["select_metric"] = cfg.train.select_metric
    log.write_summary(summary)

    try:
        run = build_run(cfg, run_dir, log, device, precision, data, parts, ckpt, verbose)
        state = TrainState.start(ckpt, run.metric)
        if ckpt is not None:
            at = f", batch {state.partial['batch']}" if state.partial else ""
            say(f"resuming {run_dir} " + (f"to finish it ({done})" if done else f"at epoch {state.epoch + 1}{at}"))
        summary.update(cache_summary(run, summary))
        log.write_summary(summary)
        log.note_config({k: summary[k] for k in ("frontend_cache/used", "frontend_cache/views")})
        distributed.seed_rank(cfg.train.seed + state.step)
        started = time.monotonic()
        end, reason = "finished", ""
        with StopRequest() as signals:

            def stop() -> str:
                return stop_reason(signals, started, cfg.train.max_minutes)

            for epoch in range(state.epoch + 1, last_epoch + 1):
                # --- the epoch's steps ---------------------------------------------------------------
                t0 = time.monotonic()
                sums, reason = train_epoch(run, state, epoch, stop)
                if reason:
                    end = "stopped"
                    break
                metrics: dict[str, Any] = {"epoch": epoch}
                metrics.update(sums.metrics(run.optimizer.param_groups[0]["lr"], time.monotonic() - t0))

                # --- validation ----------------------------------------------------------------------
                validated = epoch % cfg.train.val_every == 0 or epoch == cfg.train.max_epochs
                improved = validated and validate(run, state, epoch, metrics)
                metrics["time/epoch_s"] = time.monotonic() - t0
                log.log_epoch(metrics)

                # --- checkpoints (best.pt first: a kill between the two redoes this epoch) -------------
                record(run, state, epoch, metrics, validated, improved)
                if improved:
                    run.checkpoint("best", state)
                run.checkpoint("last", state)
                summary.update(best_summary(run, state))
                log.write_summary(summary)
                say(epoch_line(metrics, cfg.train.max_epochs))

                # --- the stop decision: pruned, early stop, the last epoch, a signal or the budget ------
                end, reason = decide(run, state, epoch, metrics, validated, prune, stop)
                if end != "running":
                    break
    except Exception as e:
        summary.update({"state": "failed", "reason": f"{type(e).__name__}: {e}"})
        log.write_summary(summary)
        log.finish("failed")
        raise
    return finish(run, state, summary, end, reason, time.monotonic() - started, on_finish)


def validate(run: Run, state: TrainState, epoch: int, metrics: dict[str, Any]) -> bool:
    """Decode the validation split (and train/cer's subset when due) into `metrics` and write its tables.

    Returns whether train.select_metric improved; then val_predictions.csv (and its W&B table) is written too.
    """
    cfg, features = run.cfg, run.inputs.features
    val = evaluate(run.model, run.val, cfg, run.device, run.precision, features=features, progress=run.verbose)
    metrics.update(val.metrics)
    if cfg.train.train_cer_every and epoch % cfg.train.train_cer_every == 0:
        subset = evaluate(
            run.model, run.train_subset, cfg, run.device, run.precision, prefix="train", losses=False, features=features
        )
        metrics.update(subset.metrics)
    write_samples(run.log, epoch, val.rows, cfg.train.worst_k)
    write_confusions(run.log, val.rows, run.val)
    improved = run.metric.better(metrics[cfg.train.select_metric], state.best)
    if improved:
        rows = [[r[c] for c in PREDICTION_COLUMNS] for r in val.rows]
        run.log.write_table("val_predictions.csv", PREDICTION_COLUMNS, rows, wandb_key="val_predictions")
    return improved


def record(run: Run, state: TrainState, epoch: int, metrics: dict[str, Any], validated: bool, improved: bool) -> None:
    """The epoch into the training state: the best value, its epoch and metrics, validations since."""
    state.epoch = epoch
    if improved:
        state.best, state.best_epoch, state.stale = metrics[run.cfg.train.select_metric], epoch, 0
        state.best_metrics = {k: v for k, v in metrics.items() if k in METRICS and METRICS[k].validation}
    elif validated:
        state.stale += 1


def best_summary(run: Run, state: TrainState) -> dict[str, Any]:
    """The summary's progress: <metric>_best and epoch_best of the selected metric, every <name>@best, epochs."""
    out = {best_key(run.cfg.train.select_metric): state.best, "epoch_best": state.best_epoch}
    out.update({f"{k}@best": v for k, v in state.best_metrics.items()})
    return {**out, "epochs": state.epoch, "step": state.step}


def decide(
    run: Run,
    state: TrainState,
    epoch: int,
    metrics: dict[str, Any],
    validated: bool,
    prune: PruneHook | None,
    stop: Stop,
) -> tuple[str, str]:
    """After an epoch: ('running', '') to go on, else the run's end state and why."""
    t = run.cfg.train
    if (
        validated
        and prune is not None
        and distributed.broadcast_object(distributed.is_main() and prune(epoch, metrics))
    ):
        run.log.tag("pruned")
        return "pruned", f"pruned after epoch {epoch}"
    if validated and t.patience and state.stale >= t.patience:
        return "finished", f"early stop: no better {t.select_metric} for {state.stale} validations"
    if epoch >= t.max_epochs:
        return "finished", ""
    reason = stop()
    return ("stopped", reason) if reason else ("running", "")


def finish(
    run: Run,
    state: TrainState,
    summary: dict[str, Any],
    end: str,
    reason: str,
    seconds: float,
    on_finish: OnFinish | None,
) -> RunResult:
    """The caller's images and the best checkpoint to W&B, the final summary, the W&B run closed."""
    log, name = run.log, run.cfg.train.select_metric
    if on_finish is not None and distributed.is_main():
        for key, image in on_finish(run.run_dir).items():
            log.log_image(key, image)
    best = run.run_dir / "checkpoints" / "best.pt"
    if run.cfg.tracking.log_checkpoint and best.exists():
        log.log_checkpoint(best, {name: state.best, "epoch": state.best_epoch})
    summary.update({"state": end, "reason": reason, "runtime_s": summary.get("runtime_s", 0) + seconds})
    log.write_summary(summary)
    log.finish(end)
    result = f"best {name} {state.best:.4f} at epoch {state.best_epoch}" if state.best_epoch else "no validation yet"
    run.say(f"{end}: {result}; run folder {run.run_dir}" + (f" ({reason})" if reason else ""))
    return RunResult(run.run_dir, end, summary)


def epoch_line(m: dict[str, Any], max_epochs: int) -> str:
    """The one-line epoch report: the registry's on_epoch_line metrics that this epoch has."""
    parts = [f"epoch {m['epoch']}/{max_epochs}"]
    parts += [f"{name} {m[name]:.4g}" for name, spec in METRICS.items() if spec.on_epoch_line and name in m]
    return " | ".join(parts)


def write_samples(log: RunLog | distributed.RankLog, epoch: int, rows: list[dict[str, Any]], k: int) -> None:
    """samples/epoch_NNN.csv: the k worst validation clips; a wandb.Table under samples/worst."""
    if k <= 0:
        return
    worst = sorted(rows, key=lambda r: (-r["cer"], r["id"]))[:k]
    columns = ["id", "frames", "ref", "hyp", "cer", "score"]
    log.write_table(
        f"samples/epoch_{epoch:03d}.csv", columns, [[r[c] for c in columns] for r in worst], wandb_key="samples/worst"
    )


def write_confusions(log: RunLog | distributed.RankLog, rows: list[dict[str, Any]], clips: EvalSet) -> None:
    """confusions.csv: token substitutions, deletions and insertions of the last validation."""
    counts = confusion_counts([r["ref_ids"] for r in rows], [r["hyp_ids"] for r in rows])
    decode = clips.tokenizer.decode
    log.write_table("confusions.csv", ["kind", "ref", "hyp", "count"], confusion_rows(counts, lambda t: decode([t])))


def _quiet(*args: Any, **kwargs: Any) -> None:
    return None
