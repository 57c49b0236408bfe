"""`sweep confirm` (#15.5): the best configs of a sweep re-trained over fresh seeds, ranked by their mean with a noise
verdict, each seed its own run folder; rerunning continues it, and a kill loses no finished seed."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, TINY_MODEL, write_tiny_dataset
from runfolders import epochs, write_run

from analysis.tables import format_table
from launch.engine.confirm import CSV, confirm_table, prepare_confirm, write_table
from launch.engine.local import run_local_sweep
from launch.engine.seed_noise import mean_std, t_quantile, t_tail, welch_half_width, welch_within_noise
from trainer.errors import ConfigError, UserError
from trainer.tracking import read_summary

LRS = {"src-t000": (3e-3, 0.5), "src-t001": (1e-3, 0.3), "src-t002": (2e-3, 0.4)}  # run: (optim.lr, best val/cer)
COLUMNS = ["config", "source_run", "params", "seeds", "val/cer_mean", "val/cer_std", "val/cer_seed1",
           "val/cer_seed2", "run_dirs", "within_noise"]  # fmt: skip


def write_source(tmp_path: Path, overrides: list[str] = ()) -> Path:
    """A finished local sweep's folder: three runs over optim.lr and the sweep YAML `sweep local` keeps beside them."""
    folder = tmp_path / "runs" / "src"
    for name, (lr, best) in LRS.items():
        write_run(folder, name, epochs([best + 0.2, best]),
                  [f"optim.lr={lr}", f"train.run_dir={tmp_path / 'runs'}", *overrides])  # fmt: skip
    sweep = {"name": "src", "method": "grid", "metric": {"name": "val/cer", "goal": "minimize"},
             "parameters": {"optim.lr": {"values": [lr for lr, _ in LRS.values()]}}}  # fmt: skip
    (folder / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    return folder


CALLS: list[str] = []


def seeded_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """A run whose best val/cer depends on its lr and its seed: lr * 100 + seed / 1000."""
    from trainer.config import save_config
    from trainer.train import RunResult

    run_dir = Path(resume) if resume else Path(cfg.train.run_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    CALLS.append(run_dir.name)
    value = cfg.optim.lr * 100 + cfg.train.seed / 1000
    summary = {"state": "finished", "val/cer_best": value, "epoch_best": 1, "epochs": 1}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return RunResult(run_dir, "finished", summary)


def test_the_best_configs_are_retrained_over_fresh_seeds_and_a_rerun_trains_nothing_again(tmp_path):
    source = write_source(tmp_path)
    CALLS.clear()
    sweep = prepare_confirm(str(source), top=2, seeds=2, heartbeat=0, verbose=False)
    assert sweep.study == "src-confirm" and sweep.sweep_dir == tmp_path / "runs" / "src-confirm"
    table = confirm_table(sweep, run_local_sweep(sweep, workers=1, train_fn=seeded_train))
    assert sorted(CALLS) == ["c1-s1", "c1-s2", "c2-s1", "c2-s2"]
    for label, source_run, k in (("c1", "src-t001", 1), ("c1", "src-t001", 2), ("c2", "src-t002", 2)):
        cfg = yaml.safe_load((sweep.sweep_dir / f"{label}-s{k}" / "config.yaml").read_text())
        original = yaml.safe_load((source / source_run / "config.yaml").read_text())
        assert cfg["optim"]["lr"] == original["optim"]["lr"] and cfg["train"]["seed"] == original["train"]["seed"] + k
        assert cfg["data"]["split_seed"] == original["data"]["split_seed"]  # the same split
        assert cfg["train"]["select_metric"] == "val/cer" and cfg["tracking"]["group"] == "src-confirm"
    assert list(table.columns) == COLUMNS and list(table["config"]) == ["c1", "c2"]
    c1 = table.iloc[0]
    values = [1e-3 * 100 + 43 / 1000, 1e-3 * 100 + 44 / 1000]
    assert c1["val/cer_seed1"] == pytest.approx(values[0]) and c1["val/cer_seed2"] == pytest.approx(values[1])
    assert c1["val/cer_mean"] == pytest.approx(sum(values) / 2) and c1["seeds"] == 2
    assert c1["val/cer_std"] == pytest.approx(abs(values[1] - values[0]) / math.sqrt(2))
    assert json.loads(c1["params"]) == {"optim.lr": 1e-3} and c1["source_run"] == str(source / "src-t001")
    assert c1["run_dirs"] == f"{sweep.sweep_dir / 'c1-s1'};{sweep.sweep_dir / 'c1-s2'}"
    assert list(table["within_noise"]) == [
        True,
        False,
    ]  # the top one is tied with itself; c2 is 0.1 worse, spread 0.0007
    path = write_table(sweep, table)
    assert path == sweep.sweep_dir / CSV and list(pd.read_csv(path).columns) == COLUMNS
    header, first = format_table(table).splitlines()[:2]  # what the command prints: the table's own columns first
    assert header.split()[:6] == ["config", "seeds", "val/cer_mean", "val/cer_std", "within_noise", "val/cer_seed1"]
    assert first.split()[:5] == ["c1", "2", f"{c1['val/cer_mean']:.4g}", f"{c1['val/cer_std']:.4g}", "True"]

    again = prepare_confirm(str(source), top=2, seeds=2, heartbeat=0, verbose=False)
    run_local_sweep(again, workers=1, train_fn=seeded_train)
    assert len(CALLS) == 4  # every seed was finished: nothing trained again
    with pytest.raises(UserError, match="was started with --top 2 --seeds 2"):
        prepare_confirm(str(source), top=3, seeds=2, heartbeat=0, verbose=False)


def test_a_seed_killed_before_its_first_checkpoint_starts_afresh_in_its_own_folder(tmp_path):
    sweep = prepare_confirm(str(write_source(tmp_path)), top=1, seeds=2, heartbeat=0, verbose=False)
    partial = sweep.sweep_dir / "c1-s1"
    partial.mkdir(parents=True)
    (partial / "metrics.jsonl").write_text('{"epoch": 1, "val/cer": 9.0}\n')  # no checkpoints/last.pt
    run_local_sweep(sweep, workers=1, train_fn=seeded_train)
    assert not (partial / "metrics.jsonl").exists() and read_summary(partial)["state"] == "finished"


def test_the_metric_is_the_source_sweeps_and_a_source_without_runs_is_refused(tmp_path):
    source = write_source(tmp_path)
    sweep = prepare_confirm(str(source), top=1, seeds=2, by="val/cer_ctc_greedy", heartbeat=0, verbose=False)
    assert sweep.spec.metric == "val/cer_ctc_greedy" and sweep.spec.goal == "minimize"
    with pytest.raises(ConfigError, match="--by val/cer_greedy: not a metric .*; did you mean val/cer_ctc_greedy"):
        prepare_confirm(str(source), top=1, seeds=2, by="val/cer_greedy", heartbeat=0, verbose=False)
    assert prepare_confirm(str(source), top=1, seeds=2, heartbeat=0, storage=f"sqlite:///{tmp_path / 'b.db'}",
                           verbose=False).spec.metric == "val/cer"  # fmt: skip
    failed = tmp_path / "failed"
    write_run(failed, "r1", epochs([0.5]), [f"train.run_dir={tmp_path / 'runs'}"], state="failed")
    with pytest.raises(UserError, match="no run that did not fail has val/cer; nothing to confirm"):
        prepare_confirm(str(failed), top=1, seeds=2, heartbeat=0, verbose=False)


def test_a_local_sweeps_optuna_storage_is_a_source_too(tmp_path):
    from launch.engine.plan import prepare
    from launch.engine.spec import load_sweep

    path = tmp_path / "lr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "lr", "method": "grid", "metric": {"name": "val/cer", "goal": "minimize"},
        "parameters": {"optim.lr": {"values": [3e-3, 1e-3, 2e-3]}},
        "command": ["${env}", "${interpreter}", "-m", "launch", "train", "--config", "configs/small.yaml", "${args}"],
    }))  # fmt: skip
    sweep = prepare(load_sweep(path), overrides=[f"train.run_dir={tmp_path / 'runs'}"], heartbeat=0, verbose=False)
    run_local_sweep(sweep, workers=1, train_fn=seeded_train)
    confirm = prepare_confirm(str(tmp_path / "runs" / "lr" / "study.db"), top=1, seeds=2, heartbeat=0, verbose=False)
    assert confirm.study == "lr-confirm" and confirm.spec.metric == "val/cer"
    table = confirm_table(confirm, run_local_sweep(confirm, workers=1, train_fn=seeded_train))
    assert list(table["config"]) == ["c1"] and json.loads(table.iloc[0]["params"]) == {"optim.lr": 1e-3}
    assert table.iloc[0]["val/cer_mean"] == pytest.approx(1e-3 * 100 + (42 + 1.5) / 1000)


def test_a_wandb_sweeps_metric_comes_from_its_config():
    from runfolders import FIXTURE, RecordedApi

    from analysis.runs import parse_source
    from launch.engine.confirm import source_objective

    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    fixture["sweep"]["config"] = fixture["sweep"]["config"].replace("name: val/cer", "name: val/cer_ctc_greedy")
    src = parse_source(f"wandb://{fixture['entity']}/{fixture['project']}/{fixture['sweep']['name']}")
    assert source_objective(src, api=RecordedApi(fixture)) == ("val/cer_ctc_greedy", "minimize")


# --------------------------------------------------------------------------- the noise rule


def test_t_quantiles_match_the_tables_and_the_integral_of_the_density():
    for df, table in ((1, 12.7062047), (2, 4.3026527), (4, 2.7764451), (10, 2.2281389), (30, 2.0422725)):
        assert t_quantile(0.975, df) == pytest.approx(table, abs=1e-6)
    df, q = 2.5, t_quantile(0.975, 2.5)  # a Welch df is rarely an integer: check P(T > q) by integrating the density
    norm = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    steps, top = 200_000, 2000.0
    xs = [q + (top - q) * (i + 0.5) / steps for i in range(steps)]
    tail = sum(norm * (1 + x * x / df) ** (-(df + 1) / 2) for x in xs) * (top - q) / steps
    assert tail == pytest.approx(0.025, abs=2e-5) and t_tail(q, df) == pytest.approx(0.025, abs=1e-9)


def test_within_noise_is_the_welch_interval_over_the_seeds():
    a, b = [0.30, 0.32, 0.31], [0.36, 0.38, 0.35]
    va, vb = mean_std(a)[1] ** 2 / 3, mean_std(b)[1] ** 2 / 3
    df = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 2)
    assert welch_half_width(a, b) == pytest.approx(t_quantile(0.975, df) * math.sqrt(va + vb))
    assert welch_within_noise(a, a) and not welch_within_noise(a, b)  # 0.053 apart, half-width ~0.03
    assert welch_within_noise([0.30, 0.40], [0.36, 0.38])  # two seeds with a wide spread: cannot tell
    assert welch_within_noise([0.3, 0.3], [0.3, 0.3]) and not welch_within_noise([0.3, 0.3], [0.31, 0.31])


# --------------------------------------------------------------------------- a real confirm, killed and resumed


def confirm(source: Path, log: Path) -> subprocess.Popen:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}, "WANDB_MODE": "disabled",
           "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}  # fmt: skip
    out = open(log, "w")  # noqa: SIM115  closed with the process
    args = ["sweep", "confirm", str(source), "--top", "2", "--seeds", "2", "--heartbeat", "1", "train.max_epochs=2"]
    return subprocess.Popen([sys.executable, "-m", "launch", *args], cwd=ROOT, env=env, stdout=out, stderr=out,
                            stdin=subprocess.DEVNULL)  # fmt: skip


def finished(folder: Path) -> list[Path]:
    return sorted(d for d in folder.glob("c*-s*") if read_summary(d).get("state") == "finished")


@pytest.mark.slow
def test_a_killed_confirm_resumes_and_keeps_its_finished_seeds(tmp_path):
    data = write_tiny_dataset(tmp_path / "data", clips=8)
    tiny = [*TINY_MODEL, f"data.root={data}", "data.val_ratio=0.25", "data.test_ratio=0.0", "train.train_cer_every=0"]
    source = write_source(tmp_path, tiny)
    folder = tmp_path / "runs" / "src-confirm"
    proc = confirm(source, tmp_path / "first.log")
    deadline = time.monotonic() + 400
    while not (finished(folder) and any((d / "checkpoints" / "last.pt").exists() for d in
                                        set(folder.glob("c*-s*")) - set(finished(folder)))):  # fmt: skip
        assert proc.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, (tmp_path / "first.log").read_text()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # mid-way: one seed finished, another inside its run
    proc.wait(timeout=30)
    done = {d.name: ((d / "metrics.jsonl").read_text(), (d / "summary.json").stat().st_mtime) for d in finished(folder)}
    interrupted = [d for d in folder.glob("c*-s*") if d.name not in done and (d / "checkpoints" / "last.pt").exists()]

    proc = confirm(source, tmp_path / "second.log")
    assert proc.wait(timeout=600) == 0, (tmp_path / "second.log").read_text()
    output = (tmp_path / "second.log").read_text()
    for name, (metrics, mtime) in done.items():  # finished seeds kept, not trained again
        assert (folder / name / "metrics.jsonl").read_text() == metrics
        assert (folder / name / "summary.json").stat().st_mtime == mtime
    for d in interrupted:  # resumed from its last.pt, in its own folder
        assert read_summary(d)["state"] == "finished" and read_summary(d)["epochs"] == 2
        assert f"resuming {d}" in output
    assert sorted(d.name for d in folder.glob("c*-s*")) == ["c1-s1", "c1-s2", "c2-s1", "c2-s2"]
    table = pd.read_csv(folder / CSV)
    assert list(table.columns) == COLUMNS and list(table["seeds"]) == [2, 2]
    for _, row in table.iterrows():
        dirs = [Path(d) for d in row["run_dirs"].split(";")]
        values = [read_summary(d)["val/cer_best"] for d in dirs]
        assert [row["val/cer_seed1"], row["val/cer_seed2"]] == pytest.approx(values)
        assert row["val/cer_mean"] == pytest.approx(sum(values) / 2)
    assert "within_noise: true where the 95% Welch t-interval" in output
