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
stopped; a stop sent to this process alone reaches its workers). Worker k of K runs on GPU k mod
(visible GPUs) when `train.device` is auto or cuda.
A `metrics:` sweep (several objectives) runs as Optuna's multi-objective study, without pruning.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator
from typing import Any

import optuna

from launch.engine.objective import Objective, TrainFn
from launch.engine.plan import LocalSweep
from launch.engine.progress import StatusLine, quiet_wandb
from launch.engine.pruners import make_pruner
from launch.engine.study import is_journal, make_sampler, make_storage, with_retry
from launch.engine.trials import TrialFailed, counted_trials
from trainer.errors import UserError


def open_study(sweep: LocalSweep, worker: int = 0) -> optuna.Study:
    """Create the study or join it (several workers, several machines)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(sweep.storage, sweep.heartbeat, sweep.max_retry)
    # grid: one seed for all (trial n takes point n of one shuffled grid); else one seed a worker
    sampler = make_sampler(sweep.spec, sweep.seed + (0 if sweep.spec.method == "grid" else worker))
    return with_retry(
        f"study {sweep.study} on {sweep.storage}",
        lambda: optuna.create_study(
            study_name=sweep.study,
            storage=storage,
            sampler=sampler,
            pruner=make_pruner(sweep.pruner),
            directions=sweep.spec.directions,
            load_if_exists=True,
        ),  # fmt: skip
    )


def _more_to_run(study: optuna.Study, sweep: LocalSweep, heartbeat: bool) -> bool | None:
    """True: run a trial; False: the sweep is done; None: wait (a running trial may yet die and need a retry)."""
    if heartbeat:  # a dead worker's trial becomes FAIL and its retry is queued
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
    if counted_trials(study) >= sweep.budget and not waiting:
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        return None if heartbeat and running else False
    sampler = study.sampler
    return not (isinstance(sampler, optuna.samplers.GridSampler) and sampler.is_exhausted(study) and not waiting)


def run_worker(sweep: LocalSweep, worker: int = 0, train_fn: TrainFn | None = None) -> int:
    """Run trials of the study until its budget is spent; returns how many this worker ran."""
    study = open_study(sweep, worker)
    objective = (sweep.objective or Objective)(sweep, worker, train_fn)
    show = StatusLine(sweep)
    heartbeat = sweep.heartbeat > 0 and not is_journal(sweep.storage)
    ran = 0
    while not objective.stop:
        more = _more_to_run(study, sweep, heartbeat)
        if more is None:
            time.sleep(min(sweep.heartbeat, 5))
            continue
        if not more:
            break
        if ran:  # the status after each trial but the last (the sweep's final status follows that one)
            show(study)
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


def _join(sweep: LocalSweep, procs: list[multiprocessing.process.BaseProcess]) -> list[int]:
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


@contextlib.contextmanager
def forwarding_stops(sweep: LocalSweep, procs: list[multiprocessing.process.BaseProcess]) -> Iterator[None]:
    """SIGINT/SIGTERM sent to this process alone (`kill PID`, a scheduler's stop) reach the workers too.

    Each worker then stops its trial as `train` does (last.pt saved at the next step; the trial queued
    again) and exits; this process waits for them and prints the sweep's status. A Ctrl-C in a terminal
    reaches the workers directly as well: the stop flag is set twice, which changes nothing."""

    def forward(signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        print(f"[{sweep.study}] received {name}: each worker saves its trial's last.pt at its next step and stops; "
              "run the same command again to continue the sweep", flush=True)  # fmt: skip
        for p in procs:
            if p.is_alive() and p.pid is not None:
                os.kill(p.pid, signum)

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


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
        pinned = ", ".join(f"worker {i} on GPU {e['CUDA_VISIBLE_DEVICES']}" for i, e in enumerate(envs))
        print(f"[{sweep.study}] {pinned}", flush=True)
    ctx = multiprocessing.get_context("spawn")
    procs = [
        ctx.Process(target=_worker_main, args=(sweep, i, train_fn, threads, envs[i]), name=f"worker{i}")
        for i in range(workers)
    ]
    with forwarding_stops(sweep, procs):
        for p in procs:
            p.start()
        return _join(sweep, procs)


def run_local_sweep(sweep: LocalSweep, workers: int = 1, train_fn: TrainFn | None = None) -> optuna.Study:
    """Run the sweep with K workers and return the study."""
    if workers < 1:
        raise UserError("--workers must be at least 1")
    sweep.sweep_dir.mkdir(parents=True, exist_ok=True)
    if sweep.spec.path is not None:
        (sweep.sweep_dir / "sweep.yaml").write_text(sweep.spec.path.read_text(encoding="utf-8"), encoding="utf-8")
    with quiet_wandb():  # set before the workers start: they inherit it
        run_workers(sweep, workers, train_fn)
    study = open_study(sweep)
    StatusLine(sweep)(study, final=True)
    return study
