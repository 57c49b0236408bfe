"""`sweep agent`: supervised `wandb agent` processes, and pruning under them through a shared Optuna study.

`wandb agent` starts one process per run with the sweep's `command:` (so GPU memory is freed
between runs) and passes the sampled values as `--key=value`. `sweep agent` starts K such
agents per GPU, each pinned with CUDA_VISIBLE_DEVICES; a run that fails is logged by its
agent, which goes on (W&B's flapping check is turned off), and an agent process that dies is
logged and restarted. With `--prune-storage URL` every run also joins a shared Optuna study
used only for pruning decisions: `pruning_from_env()` gives `launch train` the hook.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna

from launch.engine.login import require_login
from launch.engine.pruners import make_pruner
from launch.engine.spec import SweepSpec
from launch.engine.study import make_storage
from trainer.errors import UserError

PRUNE_ENV = "LIPSWEEP_PRUNE"  # JSON: storage, study, pruner block, metric, direction


def agent_env(gpu: str | None, prune: dict[str, Any] | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one `wandb agent`: its GPU, our interpreter first on PATH, no flapping stop, the pruning study."""
    env = dict(os.environ if base is None else base)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # ${interpreter} is `python`
    env["WANDB_AGENT_DISABLE_FLAPPING"] = "true"  # a run that fails early must not stop the agent
    env["WANDB_AGENT_MAX_INITIAL_FAILURES"] = "1000000"
    env["PYTHONUNBUFFERED"] = "1"
    if "WANDB_SILENT" not in env and "WANDB_QUIET" not in env:
        env["WANDB_QUIET"] = "true"  # each run prints its URL, not W&B's summary panel (the agent's lines stay)
    if prune:
        env[PRUNE_ENV] = json.dumps(prune)
    else:
        env.pop(PRUNE_ENV, None)
    return env


def _pump(stream: Any, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        print(f"[{prefix}] {line}", end="", flush=True)
    stream.close()


class _Agents:
    """The agent processes of `run_agents`, one a slot, each restarted up to `max_restarts` times."""

    def __init__(self, command: list[str], max_restarts: int):
        self.command = command
        self.max_restarts = max_restarts
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.codes: dict[str, list[int]] = {}
        self.envs: dict[str, dict[str, str]] = {}

    def start(self, label: str) -> None:
        p = subprocess.Popen(
            self.command, env=self.envs[label], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(target=_pump, args=(p.stdout, label), daemon=True).start()
        self.procs[label] = p

    def ended(self, label: str, code: int) -> None:
        """Record an agent's exit; restart it unless it finished or used its restarts."""
        self.codes[label].append(code)
        del self.procs[label]
        if code == 0:
            print(f"[{label}] agent finished", flush=True)
        elif len(self.codes[label]) <= self.max_restarts:
            print(
                f"[{label}] agent exited with code {code}; restarting it ({len(self.codes[label])}/{self.max_restarts})",
                flush=True,
            )
            self.start(label)
        else:
            print(
                f"[{label}] agent exited with code {code}; {self.max_restarts} restarts used, giving up on this slot",
                flush=True,
            )

    def stop(self) -> None:
        """Ctrl-C: stop our agents (each forwards the stop to its run)."""
        for p in self.procs.values():
            p.terminate()
        for p in self.procs.values():
            p.wait()


def run_agents(
    sweep_id: str,
    *,
    count: int | None = None,
    gpus: Sequence[str | None] = (None,),
    per_gpu: int = 1,
    prune: dict[str, Any] | None = None,
    agent_command: Sequence[str] | None = None,
    max_restarts: int = 3,
    poll_s: float = 0.5,
) -> dict[str, list[int]]:
    """Run `per_gpu` agents on each GPU until they finish; returns each agent's exit codes (restarts included)."""
    if per_gpu < 1:
        raise UserError("--per-gpu must be at least 1")
    if agent_command is None:
        require_login("sweep agent")
    command = list(agent_command or [sys.executable, "-m", "wandb", "agent"])
    if count:
        command += ["--count", str(count)]
    command.append(sweep_id)
    agents = _Agents(command, max_restarts)
    for gpu in gpus:
        for k in range(per_gpu):
            label = f"{'gpu' + gpu if gpu is not None else 'agent'}.{k}"
            agents.envs[label] = agent_env(gpu, prune)
            agents.codes[label] = []
            pinned = f" (CUDA_VISIBLE_DEVICES={gpu})" if gpu is not None else ""
            print(f"[{label}] {' '.join(command)}{pinned}", flush=True)
            agents.start(label)
    try:
        while agents.procs:
            time.sleep(poll_s)
            for label, p in list(agents.procs.items()):
                code = p.poll()
                if code is not None:
                    agents.ended(label, code)
    finally:
        agents.stop()
    return agents.codes


# --------------------------------------------------------------------------- pruning under a W&B agent


def prune_settings(spec: SweepSpec, storage: str, study: str, pruner: dict[str, Any]) -> dict[str, Any]:
    return {"storage": storage, "study": study, "pruner": pruner, "metric": spec.metric, "direction": spec.direction}


class SharedPruning:
    """One run's trial in a shared Optuna study used only for pruning decisions (no parameters are sampled).

    Call it after each validation as the trainer's prune hook; `finish(result)` records the outcome
    (if it is never called, the trial is closed at exit with the best value it reported).
    """

    def __init__(
        self, storage: str, study: str, pruner: dict[str, Any], metric: str = "val/cer", direction: str = "minimize"
    ):
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.metric = metric
        self.direction = direction
        self.study = optuna.create_study(
            study_name=study, storage=make_storage(storage, heartbeat=0), pruner=make_pruner(pruner),
            direction=direction, load_if_exists=True,
        )  # fmt: skip
        self.trial = self.study.ask()
        self.values: list[float] = []
        self.done = False
        run_id = os.environ.get("WANDB_RUN_ID")
        if run_id:
            self.trial.set_user_attr("wandb_id", run_id)
        atexit.register(self._close)

    @classmethod
    def from_env(cls) -> SharedPruning | None:
        text = os.environ.get(PRUNE_ENV)
        if not text:
            return None
        s = json.loads(text)
        return cls(s["storage"], s["study"], s["pruner"], s.get("metric", "val/cer"), s.get("direction", "minimize"))

    def __call__(self, epoch: int, metrics: dict[str, float]) -> bool:
        value = metrics.get(self.metric)
        if self.done or value is None or not math.isfinite(value):
            return False
        self.values.append(float(value))
        self.trial.report(float(value), step=epoch)
        if self.trial.should_prune():
            self.study.tell(self.trial, state=optuna.trial.TrialState.PRUNED)
            self.done = True
            return True
        return False

    def _best(self) -> float | None:
        if not self.values:
            return None
        return min(self.values) if self.direction == "minimize" else max(self.values)

    def finish(self, result: Any) -> None:
        """Close the trial as the run ended: COMPLETE with its best value, PRUNED (already told) or FAIL."""
        if self.done:
            return
        self.trial.set_user_attr("run_dir", str(getattr(result, "run_dir", "")))
        state = getattr(result, "state", "failed")
        best = self._best()
        if state in ("finished", "stopped") and best is not None:
            self.study.tell(self.trial, best)
        else:
            self.study.tell(self.trial, state=optuna.trial.TrialState.FAIL)
        self.done = True

    def _close(self) -> None:
        if not self.done:
            self.finish(type("Ended", (), {"state": "finished" if self.values else "failed", "run_dir": ""})())


def pruning_from_env() -> SharedPruning | None:
    """The prune hook for `launch train` under `sweep agent --prune-storage` (None otherwise)."""
    return SharedPruning.from_env()
