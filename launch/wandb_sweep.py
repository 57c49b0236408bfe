"""W&B sweeps: `create` (the config W&B receives), `agent` (supervised `wandb agent` processes) and pruning under them.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launch.sweep_spec import SweepSpec
from trainer import config as config_mod
from trainer.errors import UserError

PRUNE_ENV = "LIPSWEEP_PRUNE"  # JSON: storage, study, pruner block, metric, direction
RECORDS = "wandb_sweeps"  # <train.run_dir>/wandb_sweeps/<sweep id>/: the YAML as written and as sent
ENGINES = ("wandb", "optuna")  # W&B's built-in methods (+ hyperband), or its Optuna engine with our study factory


@dataclass
class CreatedSweep:
    sweep_id: str
    entity: str | None
    project: str
    record_dir: Path
    config: dict[str, Any] | None = None  # as sent

    @property
    def path(self) -> str:
        return "/".join(p for p in (self.entity, self.project, self.sweep_id) if p)


def _base_config(spec: SweepSpec) -> config_mod.Config:
    return config_mod.load_config(spec.base_config, spec.command_overrides)


def sent_config(spec: SweepSpec, engine: str = "wandb") -> dict[str, Any]:
    """The config W&B receives: project-only keys stripped; for engine optuna (or a YAML with a scheduler
    block) method custom and the scheduler block naming the project's study factory."""
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: one of {', '.join(ENGINES)}")
    if engine == "optuna" or spec.raw.get("scheduler"):
        from launch.wandb_scheduler import scheduler_config

        return scheduler_config(spec)
    return spec.wandb_config()


def create_sweep(
    spec: SweepSpec,
    project: str | None = None,
    entity: str | None = None,
    send: Callable[..., str] | None = None,
    records: Path | None = None,
    engine: str = "wandb",
) -> CreatedSweep:
    """Create the W&B sweep from a validated spec (see `sent_config`); keep both YAMLs under `records`.

    `send` is `wandb.sweep` (tests pass a fake); `records` defaults to <train.run_dir>/wandb_sweeps.
    The config sent is validated again first (a refused key would otherwise reach W&B).
    """
    from launch.sweep_spec import SweepError, check_sweep

    cfg = _base_config(spec)
    config = sent_config(spec, engine)
    problems = check_sweep(SweepSpec(config, spec.path))
    if problems:
        raise SweepError(f"{spec.path} as sent to W&B", problems)
    project = project or config.get("project") or cfg.tracking.project
    entity = entity or config.get("entity") or cfg.tracking.entity or None
    if send is None:
        import wandb

        send = wandb.sweep
    sweep_id = send(config, entity=entity, project=project)
    record = Path(records or Path(cfg.train.run_dir) / RECORDS) / sweep_id
    record.mkdir(parents=True, exist_ok=True)
    (record / "sweep.yaml").write_text(yaml.safe_dump(spec.raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (record / "sent.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return CreatedSweep(sweep_id, entity, project, record, config)


def find_record(sweep_id: str, run_dir: str = "runs") -> Path | None:
    """The YAML `create` kept for a sweep id (`ID`, `project/ID` or `entity/project/ID`)."""
    path = Path(run_dir) / RECORDS / sweep_id.rsplit("/", 1)[-1] / "sweep.yaml"
    return path if path.exists() else None


# --------------------------------------------------------------------------- agents


def agent_env(gpu: str | None, prune: dict[str, Any] | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of one `wandb agent`: its GPU, our interpreter first on PATH, no flapping stop, the pruning study."""
    env = dict(os.environ if base is None else base)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])  # ${interpreter} is `python`
    env["WANDB_AGENT_DISABLE_FLAPPING"] = "true"  # a run that fails early must not stop the agent
    env["WANDB_AGENT_MAX_INITIAL_FAILURES"] = "1000000"
    env["PYTHONUNBUFFERED"] = "1"
    if prune:
        env[PRUNE_ENV] = json.dumps(prune)
    else:
        env.pop(PRUNE_ENV, None)
    return env


def _pump(stream: Any, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        print(f"[{prefix}] {line}", end="", flush=True)
    stream.close()


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
    command = list(agent_command or [sys.executable, "-m", "wandb", "agent"])
    if count:
        command += ["--count", str(count)]
    command.append(sweep_id)
    slots = [(gpu, k) for gpu in gpus for k in range(per_gpu)]
    procs: dict[str, subprocess.Popen[str]] = {}
    codes: dict[str, list[int]] = {}
    envs: dict[str, dict[str, str]] = {}

    def start(label: str) -> None:
        p = subprocess.Popen(
            command, env=envs[label], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(target=_pump, args=(p.stdout, label), daemon=True).start()
        procs[label] = p

    for gpu, k in slots:
        label = f"{'gpu' + gpu if gpu is not None else 'agent'}.{k}"
        envs[label] = agent_env(gpu, prune)
        codes[label] = []
        print(
            f"[{label}] {' '.join(command)}" + (f" (CUDA_VISIBLE_DEVICES={gpu})" if gpu is not None else ""), flush=True
        )
        start(label)
    try:
        while procs:
            time.sleep(poll_s)
            for label, p in list(procs.items()):
                code = p.poll()
                if code is None:
                    continue
                codes[label].append(code)
                del procs[label]
                if code == 0:
                    print(f"[{label}] agent finished", flush=True)
                elif len(codes[label]) <= max_restarts:
                    print(
                        f"[{label}] agent exited with code {code}; restarting it ({len(codes[label])}/{max_restarts})",
                        flush=True,
                    )
                    start(label)
                else:
                    print(
                        f"[{label}] agent exited with code {code}; {max_restarts} restarts used, giving up on this slot",
                        flush=True,
                    )
    finally:
        for p in procs.values():  # Ctrl-C: stop our agents (each forwards the stop to its run)
            p.terminate()
        for p in procs.values():
            p.wait()
    return codes


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
        import optuna

        from launch.local_sweep import make_pruner, make_storage

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
        import optuna

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
        import optuna

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
