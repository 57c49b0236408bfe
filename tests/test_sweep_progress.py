"""What a sweep prints (#16.5): its header names the pruner once, a status of its trials after each one (a bar on a
terminal, at most one line every 30 s without one), no W&B output of its own for each trial."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from launch.engine.plan import prepare
from launch.engine.progress import StatusLine, header, quiet_wandb, status
from launch.engine.spec import load_sweep
from launch.engine.wandb_agent import agent_env
from trainer.config import save_config

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["${env}", "${interpreter}", "-m", "launch", "train", "--config", "configs/small.yaml", "${args}"]


def write(tmp_path: Path, name: str = "st", **top) -> Path:
    raw = {"name": name, "method": "grid", "metric": {"name": "val/cer", "goal": "minimize"}, "command": COMMAND,
           "parameters": {"optim.lr": {"values": [1e-3, 1e-2]}}, **top}  # fmt: skip
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def a_study() -> optuna.Study:
    """Two finished trials, one pruned, one failed, one stopped, one skipped, one running, one retried (queued)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(study_name="st")
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    S = optuna.trial.TrialState

    def add(trial_state, value=None, system_attrs=None, **attrs):
        study.add_trial(optuna.trial.create_trial(state=trial_state, value=value, params={"x": 0.5}, distributions=dist,
                                                  user_attrs=attrs, system_attrs=system_attrs,
                                                  intermediate_values={1: 0.9}))  # fmt: skip

    add(S.COMPLETE, 0.61)
    add(S.COMPLETE, 0.4321)
    add(S.PRUNED)
    add(S.FAIL, state="failed")
    add(S.FAIL, state="stopped")
    add(S.FAIL, skipped="grid point already taken")
    add(S.RUNNING)
    add(S.FAIL)  # trial 7: a dead worker's, retried by trial 8 (queued)
    add(S.WAITING, system_attrs={"failed_trial": 7, "retry_history": [7]})
    return study


def test_status_counts_every_state_and_names_the_best_trial():
    line = status(a_study(), budget=8, metric="val/cer")
    assert line == (
        "[st] 4/8 trials: 2 finished, 1 pruned, 1 failed, 1 stopped, 1 retried, 1 running, 1 queued; "
        "best val/cer 0.4321 (trial 1)"
    )
    assert status(a_study(), budget=8, metric="val/cer", bar=True).startswith("[st] [##########..........] 4/8")
    empty = optuna.create_study(study_name="e")
    assert status(empty, budget=3, metric="val/cer") == (
        "[e] 0/3 trials: 0 finished, 0 pruned, 0 failed; no finished trial yet"
    )
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    for values in ({1: 0.95, 4: 0.81}, {1: 0.9}):  # only pruned trials so far: their best report, named as such
        empty.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={"x": 0.5},
                                                  distributions=dist, intermediate_values=values))  # fmt: skip
    assert status(empty, budget=3, metric="val/cer").endswith(
        "2 pruned, 0 failed; no finished trial yet; best val/cer so far 0.8100 (pruned trial 0, epoch 4)"
    )


class Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_status_after_each_trial_on_a_terminal_and_at_most_every_30_s_without(tmp_path):
    sweep = prepare(load_sweep(write(tmp_path)), overrides=[f"train.run_dir={tmp_path}"], heartbeat=0)
    study = a_study()
    terminal, log = Stream(tty=True), Stream(tty=False)
    on_terminal, in_log = StatusLine(sweep, terminal), StatusLine(sweep, log)
    for _ in range(3):
        on_terminal(study)
        in_log(study)
    in_log(study, final=True)
    assert len(terminal.getvalue().splitlines()) == 3 and "[####" in terminal.getvalue()
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "#" not in log.getvalue()  # the first, then nothing for 30 s, then the final one
    in_log.last -= 30.0
    in_log(study)
    assert len(log.getvalue().splitlines()) == 3


def test_the_header_names_the_resolved_pruner_once(tmp_path):
    path = write(tmp_path, pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1})
    sweep = prepare(load_sweep(path), overrides=[f"train.run_dir={tmp_path}"], pruner_options=["n_warmup_steps=3"])
    line = header(sweep, 2)
    assert line.count("pruner") == 1 and line.count("median") == 1
    assert "pruner median (n_startup_trials 2, n_warmup_steps 3)" in line and line.endswith("2 trial(s), 2 worker(s)")


def test_trials_run_with_wandb_silent_and_agents_runs_quiet(monkeypatch):
    for key in ("WANDB_SILENT", "WANDB_QUIET"):
        monkeypatch.delenv(key, raising=False)
    with quiet_wandb():
        assert os.environ["WANDB_SILENT"] == "true"
    assert "WANDB_SILENT" not in os.environ  # for the sweep only
    monkeypatch.setenv("WANDB_QUIET", "false")  # the user's own choice stays
    with quiet_wandb():
        assert "WANDB_SILENT" not in os.environ and os.environ["WANDB_QUIET"] == "false"
    assert agent_env(None, None, base={"PATH": ""})["WANDB_QUIET"] == "true"
    assert "WANDB_QUIET" not in agent_env(None, None, base={"PATH": "", "WANDB_SILENT": "true"})


@pytest.mark.slow
def test_a_sweep_without_a_terminal_prints_no_wandb_output_per_trial_and_few_status_lines(tiny_config, tmp_path):
    base = tmp_path / "tiny.yaml"
    save_config(tiny_config, base)
    path = write(tmp_path, name="quiet", pruner={"type": "median"}, command=[*COMMAND[:6], str(base), "${args}"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    proc = subprocess.run(
        [sys.executable, "-m", "launch", "sweep", "local", str(path), "--heartbeat", "0", "train.max_epochs=1",
         "tracking.wandb=offline"],
        cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert out.splitlines()[0].count("pruner") == 1
    assert "wandb:" not in out  # no W&B header, summary panel or sync footer for either trial
    statuses = [line for line in proc.stdout.splitlines() if line.startswith("[quiet] ") and " trials: " in line]
    assert len(statuses) == 2 and statuses[-1].startswith("[quiet] 2/2 trials: 2 finished")  # after trial 0, the end
    assert len(list((tmp_path / "runs" / "quiet").glob("quiet-t*/wandb/offline-run-*"))) == 2  # W&B did log them
