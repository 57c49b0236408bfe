"""Faults, each as it happens to a user: kill -9 and SIGTERM of a real training process, a sweep worker killed
mid-trial, a full disk while a checkpoint is written, several processes writing one SQLite study at once.

The training subprocesses run `python -m launch train` on a tiny model; an uninterrupted run of the same config
(`reference`) is what a stopped-then-resumed run must reproduce.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
import yaml
from conftest import ROOT, TINY_MODEL, write_tiny_dataset

from launch.engine.local import open_study, run_local_sweep, run_worker
from launch.engine.plan import prepare
from launch.engine.spec import load_sweep
from launch.engine.trials import retried_from
from trainer import train as T
from trainer.config import load_config, save_config
from trainer.errors import TrainingFailed
from trainer.tracking import read_metrics, read_summary

EPOCHS = 3  # the signals arrive in epoch 2 with a whole epoch to spare


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> dict:
    """A tiny config on 16 random clips (14 train, 2 val: 4 steps an epoch) and its uninterrupted run."""
    root = tmp_path_factory.mktemp("faults")
    data = write_tiny_dataset(root / "data", clips=16)
    overrides = [*TINY_MODEL, f"data.root={data}", "data.val_ratio=0.1", "data.test_ratio=0.0",
                 f"train.run_dir={root / 'runs'}", f"train.max_epochs={EPOCHS}", "train.train_cer_every=0",
                 "train.worst_k=1"]  # fmt: skip
    cfg = load_config(None, overrides)
    save_config(cfg, root / "tiny.yaml")
    reference = T.train(cfg, name="reference", verbose=False)
    return {"root": root, "yaml": root / "tiny.yaml", "cfg": cfg, "reference": read_metrics(reference.run_dir)}


def start(args: list[str], log: Path) -> subprocess.Popen:
    """`python -m launch ARGS` as its own process, output to `log`."""
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    out = open(log, "w")  # noqa: SIM115  closed with the process
    return subprocess.Popen([sys.executable, "-m", "launch", *args], cwd=ROOT, env=env, stdout=out, stderr=out)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"the process ended ({proc.returncode}) before the test could act:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def last_checkpoint(run: Path) -> dict | None:
    path = run / "checkpoints" / "last.pt"
    return torch.load(path, weights_only=True) if path.exists() else None


def curve(rows: list[dict]) -> list[tuple]:
    return [(r["epoch"], r["train/loss"], r["train/lr"], r["val/cer"], r["val/loss"]) for r in rows]


def assert_same_curve(rows: list[dict], reference: list[dict]) -> None:
    assert [r["epoch"] for r in rows] == list(range(1, EPOCHS + 1))
    for got, want in zip(curve(rows), curve(reference), strict=True):
        assert got == pytest.approx(want, rel=1e-4), (got, want)


# --------------------------------------------------------------------------- kill -9, SIGTERM


@pytest.mark.slow
def test_kill_9_mid_epoch_then_resume_loses_no_finished_epoch(setup):
    run = setup["root"] / "runs" / "killed"
    log = setup["root"] / "killed.log"
    proc = start(["train", "--config", str(setup["yaml"]), "--name", "killed"], log)
    wait_for(lambda: (run / "checkpoints" / "last.pt").exists(), proc, log)  # epoch 1 is finished and saved
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL

    before = read_metrics(run)
    ckpt = last_checkpoint(run)  # the atomic writes left a whole file, never a half one
    saved = ckpt["epoch"]
    assert 1 <= saved <= len(before) <= saved + 1 and not ckpt.get("partial")
    assert read_summary(run)["state"] == "running"  # no chance to say more: the resume does
    # a kill inside a checkpoint write may leave its temporary beside the whole files: the resume clears it
    (run / "checkpoints" / ".best.pt.stale.tmp").write_bytes(b"half a checkpoint")

    resumed = T.train(setup["cfg"], resume=run, verbose=False)
    after = read_metrics(run)
    assert resumed.state == "finished" and read_summary(run)["state"] == "finished"
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert after[:saved] == before[:saved]  # finished epochs kept as they were, not redone
    assert_same_curve(after, setup["reference"])  # and the rest continues exactly


@pytest.mark.slow
def test_sigterm_saves_mid_epoch_and_exits_cleanly_then_resumes(setup):
    run = setup["root"] / "runs" / "termed"
    log = setup["root"] / "termed.log"
    proc = start(["train", "--config", str(setup["yaml"]), "--name", "termed"], log)
    wait_for(lambda: (run / "checkpoints" / "last.pt").exists(), proc, log)
    time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0, log.read_text()[-3000:]

    output = log.read_text()
    assert "Traceback" not in output and "stopped: best val/cer" in output and "(received SIGTERM)" in output
    assert f"to continue this run: python -m launch train --resume {run}\n" in output
    summary = read_summary(run)
    assert summary["state"] == "stopped" and summary["reason"] == "received SIGTERM"
    ckpt = last_checkpoint(run)
    if ckpt["partial"]:  # the usual case: stopped at the next optimizer step, inside the epoch
        assert ckpt["partial"]["epoch"] == ckpt["epoch"] + 1 and ckpt["partial"]["batch"] > 0
    assert len(read_metrics(run)) == ckpt["epoch"]

    resumed = T.train(setup["cfg"], resume=run, verbose=False)
    assert resumed.state == "finished"
    assert_same_curve(read_metrics(run), setup["reference"])


# --------------------------------------------------------------------------- a failed start


@pytest.mark.slow
@pytest.mark.parametrize("case", ["a missing folder", "an empty folder", "a bad clip"])
def test_a_failed_start_leaves_no_run_folder_and_no_wandb_run(tmp_path, case):
    """`train` with data it cannot use stops with `error:` before the run folder and the W&B run exist."""
    data = tmp_path / "data"
    if case == "an empty folder":
        data.mkdir()
    elif case == "a bad clip":
        write_tiny_dataset(data, clips=6)
        np.save(data / "00003.npy", np.zeros((8, 24, 24), np.float32))  # float frames: a bad clip
    cfg = load_config(None, [*TINY_MODEL, f"train.run_dir={tmp_path / 'runs'}", "tracking.wandb=offline"])
    save_config(cfg, tmp_path / "tiny.yaml")
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path / "wandb"), "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, "-m", "launch", "train", "--config", str(tmp_path / "tiny.yaml"), "--data", str(data),
         "--name", "never"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "Traceback" not in output and "error: " in output, output
    assert str(data) in output, output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "wandb").exists()  # no run folder, no W&B run


# --------------------------------------------------------------------------- a full disk


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tiny_config, monkeypatch):
    tiny_config.train.train_cer_every = 0
    real_save = torch.save
    writes = {"last": 0}

    def save_until_the_disk_is_full(obj, f, *args, **kwargs):
        name = Path(f).name
        if name.startswith(".last.pt."):
            writes["last"] += 1
            if writes["last"] == 2:  # epoch 2's last.pt: half written, then the disk is full
                Path(f).write_bytes(b"PK\x03\x04" + b"\x00" * 100)
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    with pytest.raises(TrainingFailed, match=r"No space left on device.*previous checkpoint is intact.*--resume"):
        T.train(tiny_config, name="full", verbose=False)
    run = Path(tiny_config.train.run_dir) / "full"
    summary = read_summary(run)
    assert summary["state"] == "failed" and "No space left on device" in summary["reason"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no temporary left
    assert last_checkpoint(run)["epoch"] == 1  # the previous checkpoint, whole

    monkeypatch.setattr(torch, "save", real_save)  # space freed: resume
    resumed = T.train(tiny_config, resume=run, verbose=False)
    assert resumed.state == "finished" and [r["epoch"] for r in read_metrics(run)] == [1, 2]


# --------------------------------------------------------------------------- sweeps


def sweep_yaml(path: Path, config: Path, parameters: dict, **top) -> Path:
    command = ["${env}", "${interpreter}", "-m", "launch", "train", "--config", str(config), "${args}"]
    raw = {"method": "grid", "metric": {"name": "val/cer", "goal": "minimize"}, "parameters": parameters,
           "command": command, **top}  # fmt: skip
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_sweep_worker_killed_mid_trial_is_retried_and_the_study_stays_intact(setup):
    root = setup["root"]
    # two trials that train alike (decode.beam_size only changes the validation search)
    params = {"optim.lr": {"values": [1e-3]}, "decode.beam_size": {"values": [1, 2]}}
    path = sweep_yaml(root / "killsweep.yaml", setup["yaml"], params, name="ks")
    log = root / "ks.log"
    proc = start(["sweep", "local", str(path), "--heartbeat", "1"], log)
    first = root / "runs" / "ks" / "ks-t000"
    wait_for(lambda: (first / "checkpoints" / "last.pt").exists(), proc, log)  # trial 0 is inside its run
    time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = read_metrics(first)
    saved = last_checkpoint(first)["epoch"]

    storage = f"sqlite:///{root / 'runs' / 'ks' / 'study.db'}"
    killed = optuna.load_study(study_name="ks", storage=storage).get_trials()
    assert [t.state for t in killed] == [optuna.trial.TrialState.RUNNING]  # what a dead worker leaves behind

    # the same command again: the dead trial goes stale (3 heartbeats), is failed and retried from its last.pt
    sweep = prepare(load_sweep(path), heartbeat=1, verbose=False)
    study = run_local_sweep(sweep, workers=1)
    trials = study.get_trials()
    by_state = {s: [t for t in trials if t.state == s] for s in optuna.trial.TrialState}
    assert len(by_state[optuna.trial.TrialState.FAIL]) == 1 and by_state[optuna.trial.TrialState.FAIL][0].number == 0
    done = by_state[optuna.trial.TrialState.COMPLETE]
    assert sorted(t.params["decode.beam_size"] for t in done) == [1, 2] and len(trials) == 3
    retry = next(t for t in done if retried_from(t) == 0)
    assert Path(retry.user_attrs["run_dir"]) == first  # resumed in the dead trial's own run folder
    after = read_metrics(first)
    assert after[:saved] == before[:saved] and [r["epoch"] for r in after] == list(range(1, EPOCHS + 1))
    losses = [r["train/loss"] for r in after]
    assert losses == pytest.approx([r["train/loss"] for r in setup["reference"]], rel=1e-4)  # continued exactly
    assert retry.value == pytest.approx(min(r["val/cer"] for r in after))


def quick_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """A trial that only writes its run folder: one metrics line a few ms after it starts."""
    run_dir = Path(resume) if resume else Path(cfg.train.run_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    time.sleep(0.01)
    value = abs(cfg.optim.lr - 1e-3)
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val/cer": value}) + "\n")
    if prune is not None:
        prune(1, {"val/cer": value})
    return T.RunResult(run_dir, "finished", {"state": "finished", "val/cer_best": value, "epochs": 1})


def _concurrent_worker(sweep, worker: int) -> None:
    run_worker(sweep, worker, quick_train)


@pytest.mark.slow
def test_concurrent_workers_write_one_sqlite_study(tmp_path):
    """Three worker processes race for the trials of one SQLite study, as `sweep local --workers 3` runs them.

    The study is created first, as `run_workers` does (Optuna's schema set-up on a fresh file is not safe
    against several processes at once).
    """
    path = sweep_yaml(
        tmp_path / "race.yaml",
        ROOT / "configs" / "small.yaml",
        {"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}},
        name="race",
        method="random",
        run_cap=18,
    )
    sweep = prepare(load_sweep(path), overrides=[f"train.run_dir={tmp_path / 'runs'}"], heartbeat=0, verbose=False)
    open_study(sweep)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_concurrent_worker, args=(sweep, i)) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0]

    study = open_study(sweep)
    trials = study.get_trials()
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 18  # the budget, exactly: racing workers skip what would exceed it
    assert all(
        t.state == optuna.trial.TrialState.FAIL and "skipped" in t.user_attrs for t in trials if t not in complete
    )
    assert len({t.user_attrs["worker"] for t in complete}) >= 2
    for t in complete:  # every finished trial has its attributes and its own run folder
        assert Path(t.user_attrs["run_dir"]) == sweep.sweep_dir / f"race-t{t.number:03d}"
        assert t.value == pytest.approx(abs(t.params["optim.lr"] - 1e-3))
    with sqlite3.connect(sweep.sweep_dir / "study.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
