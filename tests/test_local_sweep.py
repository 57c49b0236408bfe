"""`sweep local`: samplers, pruners, workers on one study, retries, run folders; fake trainers with synthetic curves."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import signal
import time
from pathlib import Path

import optuna
import pytest
import yaml

from launch.engine.local import open_study, run_local_sweep, run_worker
from launch.engine.plan import prepare
from launch.engine.pruners import hyperband_from_early_terminate, make_pruner
from launch.engine.spec import SweepError, SweepSpec, load_sweep
from launch.engine.study import make_sampler, resolve_pruner
from launch.engine.trials import trial_rows
from trainer.config import save_config
from trainer.errors import ConfigError

COMMAND = ["${env}", "${interpreter}", "-m", "launch", "train", "--config", "configs/small.yaml", "${args}"]
GOOD_LR = 1e-3


# --------------------------------------------------------------------------- fake trainers (module level: workers unpickle them)


def fake_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """A run folder with a synthetic val/cer curve: 0.2 + |log10(lr / 1e-3)| / 2 + 0.8 / epoch."""
    from trainer.train import RunResult

    run_dir = Path(resume) if resume else Path(cfg.train.run_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    if cfg.optim.lr >= 0.5:
        raise RuntimeError("loss is NaN (fake)")
    offset = abs(math.log10(cfg.optim.lr / GOOD_LR)) / 2
    state, rows = "finished", []
    for epoch in range(1, cfg.train.max_epochs + 1):
        row = {"epoch": epoch, "val/cer": 0.2 + offset + 0.8 / epoch, "train/loss": 1.0 / epoch}
        rows.append(row)
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if prune is not None and prune(epoch, row):
            state = "pruned"
            break
    best = min(r["val/cer"] for r in rows)
    summary = {
        "state": state,
        "val/cer_best": best,
        "epoch_best": len(rows),
        "epochs": len(rows),
        "resumed": resume is not None,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return RunResult(run_dir, state, summary)


def hanging_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """Writes a last.pt, reports one epoch, then hangs (until the test kills its worker)."""
    run_dir = Path(cfg.train.run_dir) / name
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints" / "last.pt").write_bytes(b"fake")
    prune(1, {"val/cer": 0.9})
    time.sleep(120)


# --------------------------------------------------------------------------- helpers


def write_sweep(tmp_path: Path, parameters: dict, **top) -> SweepSpec:
    raw = {
        "method": "grid",
        "metric": {"name": "val/cer", "goal": "minimize"},
        "parameters": parameters,
        "command": COMMAND,
        **top,
    }
    if "metrics" in top:  # several objectives replace the one metric
        del raw["metric"]
    path = tmp_path / f"{top.get('name', 'sw')}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return load_sweep(path)


def overrides(tmp_path: Path, epochs: int = 4) -> list[str]:
    return [f"train.run_dir={tmp_path / 'runs'}", f"train.max_epochs={epochs}"]


def states(study: optuna.Study) -> list[str]:
    return [t.state.name for t in study.get_trials()]


# --------------------------------------------------------------------------- samplers and pruners


@pytest.mark.parametrize("method, sampler", [("grid", optuna.samplers.GridSampler), ("random", optuna.samplers.RandomSampler),
                                             ("bayes", optuna.samplers.TPESampler)])  # fmt: skip
def test_method_picks_the_sampler(tmp_path, method, sampler):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 2e-3]}}, method=method)
    assert isinstance(make_sampler(spec, seed=0), sampler)


@pytest.mark.parametrize(
    "block, pruner",
    [
        ({"type": "none"}, optuna.pruners.NopPruner),
        ({"type": "median", "n_warmup_steps": 2}, optuna.pruners.MedianPruner),
        ({"type": "percentile", "percentile": 25.0}, optuna.pruners.PercentilePruner),
        ({"type": "halving", "min_resource": 1, "reduction_factor": 3}, optuna.pruners.SuccessiveHalvingPruner),
        ({"type": "hyperband", "min_resource": 1, "max_resource": 9}, optuna.pruners.HyperbandPruner),
        ({"type": "patient", "patience": 2}, optuna.pruners.PatientPruner),
    ],
)
def test_pruner_blocks(block, pruner):
    assert isinstance(make_pruner(block), pruner)


def test_pruner_precedence_and_wandb_hyperband(tmp_path):
    params = {"optim.lr": {"values": [1e-3]}}
    spec = write_sweep(tmp_path, params, pruner={"type": "median", "n_warmup_steps": 3})
    assert resolve_pruner(spec) == {"type": "median", "n_warmup_steps": 3}
    assert resolve_pruner(spec, "median", ["n_startup_trials=1"]) == {
        "type": "median",
        "n_warmup_steps": 3,
        "n_startup_trials": 1,
    }
    assert resolve_pruner(spec, "percentile", ["percentile=30"]) == {"type": "percentile", "percentile": 30}
    with pytest.raises(SweepError, match="--pruner.percentile: required by the percentile pruner"):
        resolve_pruner(spec, "percentile")
    et = write_sweep(tmp_path, params, early_terminate={"type": "hyperband", "min_iter": 2, "eta": 3}, name="et")
    assert resolve_pruner(et, max_epochs=20) == {
        "type": "hyperband",
        "min_resource": 2,
        "max_resource": 20,
        "reduction_factor": 3,
    }
    # max_iter + s: the first bracket is max_iter / eta^s epochs
    assert (
        hyperband_from_early_terminate({"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}, 50)["min_resource"] == 3
    )
    assert resolve_pruner(write_sweep(tmp_path, params, name="plain")) == {"type": "none"}


def test_budget_needs_trials_or_run_cap_for_random(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"min": 1e-4, "max": 1e-2}}, method="random")
    with pytest.raises(ConfigError, match="needs --trials N or run_cap"):
        prepare(spec, overrides=overrides(tmp_path))
    assert prepare(spec, trials=7, overrides=overrides(tmp_path)).budget == 7
    capped = write_sweep(tmp_path, {"optim.lr": {"min": 1e-4, "max": 1e-2}}, method="random", run_cap=3, name="capped")
    assert prepare(capped, trials=7, overrides=overrides(tmp_path)).budget == 3


# --------------------------------------------------------------------------- one worker


def test_trials_are_runs_with_attributes_and_overrides(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1e-2, 1e-4]}}, name="g3")
    sweep = prepare(spec, overrides=overrides(tmp_path, epochs=3), heartbeat=0, verbose=False)
    assert sweep.storage == f"sqlite:///{tmp_path / 'runs' / 'g3' / 'study.db'}"
    study = run_local_sweep(sweep, workers=1, train_fn=fake_train)
    trials = study.get_trials()
    assert states(study) == ["COMPLETE"] * 3
    for t in trials:
        run_dir = Path(t.user_attrs["run_dir"])
        assert run_dir == tmp_path / "runs" / "g3" / f"g3-t{t.number:03d}"
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert cfg["train"]["max_epochs"] == 3  # the trailing override reached every trial
        assert cfg["optim"]["lr"] == t.params["optim.lr"]
        assert t.user_attrs["state"] == "finished" and t.user_attrs["metrics"]["epochs"] == 3
        assert t.value == pytest.approx(0.2 + abs(math.log10(t.params["optim.lr"] / GOOD_LR)) / 2 + 0.8 / 3)
    rows = trial_rows(study)
    assert rows[0]["params"] == {"optim.lr": 1e-3} and [r["value"] for r in rows] == sorted(r["value"] for r in rows)
    assert (tmp_path / "runs" / "g3" / "sweep.yaml").exists()


def test_run_cap_is_honoured_and_a_failed_run_does_not_stop_the_sweep(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 0.5, 1e-2, 1e-4, 3e-3]}}, run_cap=4, name="cap")
    sweep = prepare(spec, overrides=overrides(tmp_path, epochs=2), heartbeat=0, verbose=False)
    study = run_local_sweep(sweep, workers=1, train_fn=fake_train)
    trials = study.get_trials()
    assert len(trials) == 4
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert all(t.params["optim.lr"] == 0.5 for t in failed)
    assert all("NaN" in t.user_attrs["reason"] for t in failed)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4 - len(failed)


def test_median_pruner_prunes_the_clearly_worse_run(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1.2e-3, 1e-1]}}, name="pr",
                       pruner={"type": "median", "n_startup_trials": 2, "n_warmup_steps": 2})  # fmt: skip
    sweep = prepare(spec, overrides=overrides(tmp_path, epochs=6), heartbeat=0, verbose=False)
    study = open_study(sweep)
    for lr in (1e-3, 1.2e-3, 1e-1):  # the two good runs finish first
        study.enqueue_trial({"optim.lr": lr})
    run_worker(sweep, 0, fake_train)
    by_lr = {t.params["optim.lr"]: t for t in study.get_trials()}
    assert by_lr[1e-3].state == by_lr[1.2e-3].state == optuna.trial.TrialState.COMPLETE
    bad = by_lr[1e-1]
    assert bad.state == optuna.trial.TrialState.PRUNED
    summary = json.loads((Path(bad.user_attrs["run_dir"]) / "summary.json").read_text())
    assert summary["state"] == "pruned" and summary["epochs"] == 2  # its first report once the warm-up (2) is over
    assert bad.user_attrs["state"] == "pruned"


def ctc_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """val/cer and val/cer_ctc_greedy disagree: the summary's `<select_metric>_best` is the selected metric's best."""
    from trainer.train import RunResult

    run_dir = Path(cfg.train.run_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    offset = abs(math.log10(cfg.optim.lr / GOOD_LR))
    rows = [{"epoch": e, "val/cer": 0.9 - 0.1 * e, "val/cer_ctc_greedy": 0.5 + offset + 0.2 / e} for e in (1, 2, 3)]
    for row in rows:
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        if prune is not None and prune(row["epoch"], row):
            break
    selected = cfg.train.select_metric
    best = min(rows, key=lambda r: r[selected])
    summary = {"state": "finished", f"{selected}_best": best[selected], "epoch_best": best["epoch"], "epochs": 3}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return RunResult(run_dir, "finished", summary)


def test_trials_select_prune_and_are_valued_by_the_sweep_metric(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1e-2]}}, name="ctc",
                       metric={"name": "val/cer_ctc_greedy", "goal": "minimize"})  # fmt: skip
    sweep = prepare(spec, overrides=overrides(tmp_path, 3), heartbeat=0, verbose=False)
    study = run_local_sweep(sweep, workers=1, train_fn=ctc_train)
    assert states(study) == ["COMPLETE", "COMPLETE"]
    for t in study.get_trials():
        run_dir = Path(t.user_attrs["run_dir"])
        assert yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["select_metric"] == "val/cer_ctc_greedy"
        offset = abs(math.log10(t.params["optim.lr"] / GOOD_LR))
        assert t.value == pytest.approx(0.5 + offset + 0.2 / 3)  # not val/cer's best (0.6)
        assert t.intermediate_values == pytest.approx({e: 0.5 + offset + 0.2 / e for e in (1, 2, 3)})
        assert t.user_attrs["metrics"]["val/cer_ctc_greedy_best"] == pytest.approx(t.value)


def test_a_run_without_the_sweep_metric_in_its_summary_is_a_failed_trial(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3]}}, name="nokey",
                       metric={"name": "val/loss", "goal": "minimize"})  # fmt: skip
    sweep = prepare(spec, overrides=overrides(tmp_path, 2), heartbeat=0, verbose=False)
    study = run_local_sweep(sweep, workers=1, train_fn=fake_train)  # its summary holds val/cer_best only
    (trial,) = study.get_trials()
    assert trial.state == optuna.trial.TrialState.FAIL
    assert trial.user_attrs["reason"] == f"{trial.user_attrs['run_dir']}/summary.json has no val/loss_best"


def test_journal_storage(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1e-2]}}, name="jr")
    sweep = prepare(
        spec, storage=f"journal:{tmp_path / 'journal.log'}", overrides=overrides(tmp_path, 2), verbose=False
    )
    study = run_local_sweep(sweep, workers=1, train_fn=fake_train)
    assert states(study) == ["COMPLETE", "COMPLETE"]
    assert (tmp_path / "journal.log").stat().st_size > 0


# --------------------------------------------------------------------------- several workers, one study


def run_two_workers(tmp_path: Path, storage: str | None, name: str) -> optuna.Study:
    lrs = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
    spec = write_sweep(tmp_path, {"optim.lr": {"values": lrs}, "model.ctc_weight": {"values": [0.1, 0.3]}}, name=name)
    sweep = prepare(spec, storage=storage, overrides=overrides(tmp_path, 2), heartbeat=2, verbose=False)
    study = run_local_sweep(sweep, workers=2, train_fn=fake_train)
    done = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    points = [tuple(sorted(t.params.items())) for t in done]
    assert len(done) == 12 and len(set(points)) == 12  # the whole grid, no point twice
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers ran trials
    assert all(t.state != optuna.trial.TrialState.RUNNING for t in study.get_trials())
    return study


@pytest.mark.slow
def test_two_workers_share_one_sqlite_study_without_duplicates(tmp_path):
    run_two_workers(tmp_path, None, "two")


@pytest.mark.postgres
def test_two_workers_share_one_postgresql_study(tmp_path):
    url = os.environ.get("LIPSWEEP_TEST_POSTGRES")
    if not url:
        pytest.skip("LIPSWEEP_TEST_POSTGRES is not set (CI starts a server with scripts/start_postgres.sh)")
    run_two_workers(tmp_path, url, f"pg{os.getpid()}{int(time.time())}")


def _hang_worker(sweep) -> None:
    run_worker(sweep, 0, hanging_train)


def test_a_killed_workers_trial_is_retried_and_resumes_its_run_folder(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1e-2]}}, name="kill")
    sweep = prepare(spec, overrides=overrides(tmp_path, 2), heartbeat=1, verbose=False)
    study = open_study(sweep)
    proc = multiprocessing.get_context("spawn").Process(target=_hang_worker, args=(sweep,))
    proc.start()
    deadline = time.monotonic() + 60
    while not list(Path(sweep.sweep_dir).glob("*/checkpoints/last.pt")):  # killed only once it has a checkpoint
        assert time.monotonic() < deadline and proc.is_alive(), "the worker never wrote its trial's last.pt"
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.join()
    run_worker(sweep, 1, fake_train)  # waits for the heartbeat to go stale, then runs the retry and the rest
    trials = study.get_trials()
    killed = trials[0]
    assert killed.state == optuna.trial.TrialState.FAIL
    retry = next(t for t in trials if optuna.storages.RetryFailedTrialCallback.retried_trial_number(t) == killed.number)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == killed.params
    assert retry.user_attrs["run_dir"] == killed.user_attrs["run_dir"]  # continued from its last.pt
    assert json.loads((Path(retry.user_attrs["run_dir"]) / "summary.json").read_text())["resumed"] is True
    assert sorted(t.params["optim.lr"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE) == [1e-3, 1e-2]


# --------------------------------------------------------------------------- end to end: the real trainer, a tiny model


@pytest.mark.slow
def test_real_tiny_sweep_then_a_decoding_sweep_on_its_best_checkpoint(tiny_config, tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli

    base = tmp_path / "tiny.yaml"
    save_config(tiny_config, base)
    command = [*COMMAND[:6], str(base), "${args}"]
    train_yaml = tmp_path / "tiny_sweep.yaml"
    train_yaml.write_text(yaml.safe_dump({"name": "tiny", "method": "grid", "metric": {"name": "val/cer", "goal": "minimize"},
                                          "parameters": {"optim.lr": {"values": [1e-3, 3e-3]}}, "command": command}))  # fmt: skip
    result = CliRunner().invoke(cli, ["sweep", "local", str(train_yaml), "--heartbeat", "0", "train.max_epochs=1"])
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'runs' / 'tiny' / 'study.db'}")
    assert states(study) == ["COMPLETE", "COMPLETE"]
    best = Path(study.best_trial.user_attrs["run_dir"])
    summary = json.loads((best / "summary.json").read_text())
    assert summary["state"] == "finished" and summary["epochs"] == 1
    assert study.best_value == pytest.approx(summary["val/cer_best"])

    decode_yaml = tmp_path / "decode.yaml"
    decode_yaml.write_text(yaml.safe_dump({"name": "dec", "method": "grid", "metric": {"name": "val/cer", "goal": "minimize"},
                                           "parameters": {"decode.beam_size": {"values": [1, 2]}}, "command": command}))  # fmt: skip
    checkpoint = best / "checkpoints" / "best.pt"
    result = CliRunner().invoke(
        cli, ["sweep", "local", str(decode_yaml), "--checkpoint", str(checkpoint), "--heartbeat", "0"]
    )
    assert result.exit_code == 0, result.output
    dec = optuna.load_study(study_name="dec", storage=f"sqlite:///{tmp_path / 'runs' / 'dec' / 'study.db'}")
    assert states(dec) == ["COMPLETE", "COMPLETE"]
    for t in dec.get_trials():
        run_dir = Path(t.user_attrs["run_dir"])
        assert (
            yaml.safe_load((run_dir / "config.yaml").read_text())["decode"]["beam_size"] == t.params["decode.beam_size"]
        )
        assert not (run_dir / "checkpoints").exists()  # evaluated, not trained
    assert {t.params["decode.beam_size"]: t.value for t in dec.get_trials()}[2] <= summary["val/cer_best"] + 1.0


# --------------------------------------------------------------------------- #8: concurrent creation, GPUs per worker, stopped trials


def _open_at_once(sweep, start, results) -> None:
    start.wait()
    try:
        open_study(sweep)
        results.put("ok")
    except Exception as e:  # reported to the test, which asserts on it
        results.put(f"{type(e).__name__}: {e}")


@pytest.mark.slow
def test_two_processes_creating_one_new_sqlite_study_at_the_same_moment_both_succeed(tmp_path):
    """Optuna's schema creation races (UNIQUE constraint failed: alembic_version); both must get the study."""
    ctx = multiprocessing.get_context("fork")
    for round_ in range(3):  # unretried, about half the rounds fail
        spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1e-2]}}, name=f"race{round_}")
        sweep = prepare(spec, overrides=overrides(tmp_path), heartbeat=1, verbose=False)
        start, results = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_open_at_once, args=(sweep, start, results)) for _ in range(2)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(60)
        assert [results.get(timeout=5) for _ in procs] == ["ok", "ok"]
        assert [p.exitcode for p in procs] == [0, 0]
        assert optuna.study.get_all_study_names(sweep.storage) == [f"race{round_}"]


def test_with_retry_backs_off_then_names_the_database_when_it_keeps_failing():
    import sqlalchemy.exc

    from launch.engine.study import with_retry

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed"))
        return "storage"

    assert with_retry("x", flaky) == "storage" and len(calls) == 3

    def broken():
        raise sqlalchemy.exc.OperationalError("CREATE", {}, Exception("database is locked"))

    with pytest.raises(ConfigError, match="--storage sqlite:///a.db: still failing after 2 attempts"):
        with_retry("--storage sqlite:///a.db", broken, attempts=2)


@pytest.mark.parametrize(
    "device, gpus, expected",
    [
        ("auto", ["0", "1"], ["0", "1", "0", "1", "0"]),
        ("cuda", ["0", "1", "2"], ["0", "1", "2", "0", "1"]),
        ("auto", ["3", "5"], ["3", "5", "3", "5", "3"]),  # CUDA_VISIBLE_DEVICES=3,5 set by the user
        ("auto", [], [None] * 5),  # no GPU: nothing set
        ("cpu", ["0", "1"], [None] * 5),
        ("cuda:1", ["0", "1"], [None] * 5),  # an explicit GPU is the user's choice
    ],
)
def test_worker_k_gets_gpu_k_mod_n(device, gpus, expected):
    from launch.engine.local import worker_env

    got = [worker_env(k, device, gpus).get("CUDA_VISIBLE_DEVICES") for k in range(5)]
    assert got == expected


def test_visible_gpus_follow_cuda_visible_devices():
    from launch.engine.local import visible_gpus

    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def _report_gpu_worker(sweep, worker, train_fn, threads, env, out) -> None:
    from launch.engine.local import _worker_main

    _worker_main(sweep, worker, train_fn, threads, env)
    out.put((worker, os.environ.get("CUDA_VISIBLE_DEVICES")))


def test_run_workers_pins_each_worker_before_it_starts(tmp_path, monkeypatch):
    """Through the real spawn path: each worker process sees only its GPU (faked visible GPUs, no CUDA needed)."""
    import launch.engine.local as L

    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1e-2, 1e-4]}}, name="gpus")
    sweep = prepare(spec, overrides=overrides(tmp_path, 1), heartbeat=0, verbose=False)
    assert sweep.device == "auto"
    monkeypatch.setattr(L, "visible_gpus", lambda environ=None: ["4", "7"])
    seen = []

    class FakeProcess:
        def __init__(self, target, args, name):
            self.args = args
            self.exitcode = 0

        def start(self):
            seen.append(self.args[4])

        def join(self):
            pass

    class FakeContext:
        Process = FakeProcess

    monkeypatch.setattr(L.multiprocessing, "get_context", lambda kind: FakeContext())
    L.run_workers(sweep, 3, fake_train)
    assert seen == [{"CUDA_VISIBLE_DEVICES": "4"}, {"CUDA_VISIBLE_DEVICES": "7"}, {"CUDA_VISIBLE_DEVICES": "4"}]


def stop_once_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """The first run of a trial is stopped after epoch 1 (SIGTERM); its resumed run finishes."""
    from trainer.train import RunResult

    if resume is None and cfg.optim.lr == 1e-2:
        run_dir = Path(cfg.train.run_dir) / name
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoints" / "last.pt").write_bytes(b"fake")
        save_config(cfg, run_dir / "config.yaml")
        row = {"epoch": 1, "val/cer": 0.9}
        (run_dir / "metrics.jsonl").write_text(json.dumps(row) + "\n")
        summary = {"state": "stopped", "reason": "received SIGTERM", "epochs": 1}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return RunResult(run_dir, "stopped", summary)
    return fake_train(cfg, name=name, resume=resume, prune=prune, verbose=verbose)


def test_a_stopped_trial_is_queued_again_and_resumes_its_run_folder(tmp_path):
    spec = write_sweep(tmp_path, {"optim.lr": {"values": [1e-3, 1e-2, 1e-4]}}, name="stop")
    sweep = prepare(spec, overrides=overrides(tmp_path, 2), heartbeat=0, verbose=False)
    study = open_study(sweep)
    for lr in (1e-2, 1e-3, 1e-4):
        study.enqueue_trial({"optim.lr": lr})
    assert run_worker(sweep, 0, stop_once_train) == 1  # the stop ends this worker
    stopped = study.get_trials()[0]
    assert stopped.state == optuna.trial.TrialState.FAIL and stopped.user_attrs["state"] == "stopped"
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.params for t in waiting if t.system_attrs.get("failed_trial") == 0] == [{"optim.lr": 1e-2}]

    run_worker(sweep, 0, stop_once_train)  # `sweep local` again: the stopped trial comes back first
    trials = study.get_trials()
    retry = next(t for t in trials if t.system_attrs.get("failed_trial") == 0)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == {"optim.lr": 1e-2}
    assert retry.user_attrs["run_dir"] == stopped.user_attrs["run_dir"]
    assert json.loads((Path(retry.user_attrs["run_dir"]) / "summary.json").read_text())["resumed"] is True
    assert sorted(t.params["optim.lr"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE) == [
        1e-4,
        1e-3,
        1e-2,
    ]
    assert len(trials) == 4  # 3 points + the one retry: the budget counts the stopped trial once
    assert {r["trial"]: r["retry_of"] for r in trial_rows(study)}[retry.number] == 0


# --------------------------------------------------------------------------- one mapping: what a local trial samples is wandb's


@pytest.mark.parametrize(
    "key, spec",
    [
        ("model.adapter", {"values": ["none", "linear", "mlp"]}),
        ("model.adapter", {"distribution": "categorical", "values": ["none", "mlp"]}),
        ("decode.beam_size", {"value": 5}),
        ("decode.beam_size", {"distribution": "constant", "value": 3}),
        ("model.encoder.layers", {"distribution": "int_uniform", "min": 1, "max": 4}),
        ("decode.beam_size", {"min": 1, "max": 8}),
        ("model.dropout", {"distribution": "uniform", "min": 0.0, "max": 0.5}),
        ("model.ctc_weight", {"min": 0.1, "max": 0.9}),
        ("optim.lr", {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}),
        ("augment.time_mask_window", {"distribution": "q_uniform", "min": 0, "max": 20, "q": 5}),
        ("decode.ctc_weight", {"distribution": "q_uniform", "min": 0.0, "max": 0.6, "q": 0.1}),
        ("decode.beam_size", {"distribution": "q_log_uniform_values", "min": 1, "max": 64}),
        ("optim.weight_decay", {"distribution": "q_log_uniform_values", "min": 1e-4, "max": 1e-1, "q": 0.5}),
    ],
    ids=lambda v: v.get("distribution", "/".join(v)) if isinstance(v, dict) else v,
)
def test_a_local_trial_samples_from_exactly_wandbs_distribution(key, spec):
    """The Objective's sampling path (spec.distributions + suggest) records wandb's distribution for the trial."""
    from wandb.sdk.sweeps.scheduler.optuna import sweep_parameter_to_distribution

    from launch.engine.study import suggest

    expected = sweep_parameter_to_distribution(spec)
    dist = SweepSpec({"parameters": {key: spec}}).distributions()[key]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        value = suggest(trial, key, dist)
        study.tell(trial, 0.0)
        frozen = study.trials[-1]
        assert frozen.distributions == {key: expected}
        assert frozen.params == {key: value} and expected._contains(expected.to_internal_repr(value))


def test_a_local_sweep_records_wandbs_distributions_for_every_parameter(tmp_path):
    from wandb.sdk.sweeps.scheduler.optuna import search_space_from_sweep_config

    params = {
        "optim.lr": {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2},
        "decode.beam_size": {"distribution": "q_log_uniform_values", "min": 1, "max": 64},
        "augment.time_mask_window": {"distribution": "q_uniform", "min": 0, "max": 20, "q": 5},
        "model.ctc_weight": {"min": 0.1, "max": 0.9},
        "model.adapter": {"values": ["none", "linear"]},
    }
    sweep = prepare(write_sweep(tmp_path, params, method="bayes", run_cap=2, name="all"),
                    overrides=overrides(tmp_path, 1), heartbeat=0, verbose=False)  # fmt: skip
    study = run_local_sweep(sweep, workers=1, train_fn=fake_train)
    assert len(study.trials) == 2
    for t in study.trials:
        assert t.distributions == search_space_from_sweep_config(params)


# --------------------------------------------------------------------------- several objectives


def timed_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """val/cer falls with the CTC weight, the epoch time rises with it: a real trade-off."""
    from trainer.train import RunResult

    assert prune is None  # no pruning for several objectives
    run_dir = Path(cfg.train.run_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    w = cfg.model.ctc_weight
    rows = [{"epoch": e, "val/cer": 1.0 - w + 0.5 / e, "time/epoch_s": 10 + 20 * w + e} for e in (1, 2, 3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"state": "finished", "val/cer_best": rows[-1]["val/cer"], "epoch_best": 3, "epochs": 3}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return RunResult(run_dir, "finished", summary)


def test_a_multi_objective_local_sweep_runs_without_pruning_and_ranks_its_pareto_front(tmp_path, capsys):
    from launch.engine.progress import final_table

    spec = write_sweep(
        tmp_path,
        {"model.ctc_weight": {"values": [0.1, 0.3, 0.5]}, "optim.lr": {"values": [1e-3, 1e-1]}},
        method="custom", name="mo", run_cap=6,
        metrics=[{"name": "val/cer", "goal": "minimize"}, {"name": "time/epoch_s", "goal": "minimize"}],
        scheduler={"engine": "optuna"}, pruner={"type": "median"},
    )  # fmt: skip
    from launch.engine.spec import check_sweep

    assert check_sweep(spec) == []
    sweep = prepare(spec, overrides=overrides(tmp_path, 3), heartbeat=0, verbose=False)
    assert sweep.pruner == {"type": "none"}
    assert "pruning off" in sweep.notes[0] and "2 objectives" in sweep.notes[0]
    study = run_local_sweep(sweep, workers=1, train_fn=timed_train)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    trials = study.get_trials()
    assert len(trials) == 6 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    for t in trials:  # both values at the epoch where val/cer is best (the last)
        w = t.params["model.ctc_weight"]
        assert t.values == pytest.approx([1.0 - w + 0.5 / 3, 10 + 20 * w + 3])
    rows = trial_rows(study)
    front = {r["params"]["model.ctc_weight"] for r in rows if r["pareto"]}
    assert front == {t.params["model.ctc_weight"] for t in study.best_trials} == {0.1, 0.3, 0.5}
    dominated = [r for r in rows if not r["pareto"]]
    assert len(dominated) == 6 - len(study.best_trials)
    text = final_table(sweep).splitlines()  # as `sweep local` prints it: through analysis.rank
    assert "time/epoch_s" in text[0].split() and "pareto" in text[0].split()
    at = text[0].index("pareto")  # the column's cells start where its header does
    marks = [line[at:].split()[0] for line in text[1:7]]
    assert marks.count("True") == len(study.best_trials) and marks.count("False") == 6 - len(study.best_trials)


@pytest.mark.slow
def test_real_tiny_multi_objective_sweep_from_the_cli(tiny_config, tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli

    base = tmp_path / "tiny.yaml"
    save_config(tiny_config, base)
    path = tmp_path / "mo.yaml"
    path.write_text(yaml.safe_dump({
        "name": "mo", "method": "custom", "run_cap": 2, "scheduler": {"engine": "optuna"},
        "metrics": [{"name": "val/cer", "goal": "minimize"}, {"name": "time/epoch_s", "goal": "minimize"}],
        "parameters": {"optim.lr": {"values": [1e-3, 3e-3]}}, "pruner": {"type": "median"},
        "command": [*COMMAND[:6], str(base), "${args}"],
    }))  # fmt: skip
    result = CliRunner().invoke(cli, ["sweep", "local", str(path), "--heartbeat", "0", "train.max_epochs=1"])
    assert result.exit_code == 0, result.output
    assert "note: pruning off: the median pruner compares one metric across trials" in result.output
    study = optuna.load_study(study_name="mo", storage=f"sqlite:///{tmp_path / 'runs' / 'mo' / 'study.db'}")
    assert states(study) == ["COMPLETE", "COMPLETE"]
    for t in study.trials:
        rows = [json.loads(line) for line in (Path(t.user_attrs["run_dir"]) / "metrics.jsonl").read_text().splitlines()]
        assert t.values == pytest.approx([rows[-1]["val/cer"], rows[-1]["time/epoch_s"]])
    header = next(line for line in result.output.splitlines() if line.lstrip().startswith("rank"))
    assert "val/cer" in header and "time/epoch_s" in header and "pareto" in header


@pytest.mark.slow
def test_a_stop_sent_to_the_sweep_process_alone_reaches_its_workers(tiny_config, tmp_path):
    """`kill -INT PID` (or a scheduler's SIGTERM) hits the parent only: its workers must stop too, not train on."""
    import subprocess
    import sys

    from trainer.tracking import read_summary

    tiny_config.train.train_cer_every = 0
    base = tmp_path / "tiny.yaml"
    save_config(tiny_config, base)
    path = tmp_path / "stop.yaml"
    path.write_text(yaml.safe_dump({
        "name": "stop", "method": "grid", "metric": {"name": "val/cer", "goal": "minimize"},
        "parameters": {"optim.lr": {"values": [1e-3, 3e-3, 1e-2]}}, "command": [*COMMAND[:6], str(base), "${args}"],
    }))  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}, "WANDB_MODE": "disabled"}
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "launch", "sweep", "local", str(path), "--workers", "2",
                                 "--heartbeat", "1", "train.max_epochs=500"], cwd=Path(__file__).resolve().parents[1],
                                env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        folder = tmp_path / "runs" / "stop"
        deadline = time.monotonic() + 300
        while len(list(folder.glob("stop-t*/checkpoints/last.pt"))) < 2:  # both workers inside a trial
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGINT)  # the parent alone: its own session, no terminal
        try:
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:  # the workers trained on: kill the whole session
                os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert code == 0 and "received SIGINT: each worker saves its trial's last.pt" in output, output
    stopped = [read_summary(d) for d in folder.glob("stop-t*")]
    assert len(stopped) == 2 and all(s["state"] == "stopped" and s["epochs"] < 500 for s in stopped), stopped
