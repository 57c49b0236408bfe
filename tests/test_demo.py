"""The README's main command: the demo sweep's pruning budget, its summary line, and the whole loop at a tiny size."""

from __future__ import annotations

import json
import math
import re

import pytest
from click.testing import CliRunner
from runfolders import curve_run

from launch.cli import cli
from launch.demo import DEMO_SWEEP, learned_line
from launch.engine.local import run_local_sweep
from launch.engine.plan import prepare
from launch.engine.spec import load_sweep
from launch.engine.trials import trial_rows


def curve_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """A fake trainer: val/cer falls with the epochs, best at lr 4.6e-3 and CTC weight 0.9, every trial apart."""
    offset = 0.15 * abs(math.log10(cfg.optim.lr / 4.6e-3)) + 0.05 * (cfg.model.ctc_weight < 0.5)
    return curve_run(cfg, name, prune, lambda epoch: 0.3 + offset + 1.0 / epoch)


def demo_sweep(tmp_path, pruner: str | None):
    spec = load_sweep(DEMO_SWEEP)
    sweep = prepare(spec, study=f"demo-{pruner}", overrides=[f"train.run_dir={tmp_path}"], pruner=pruner,
                    heartbeat=0, verbose=False)  # fmt: skip
    return trial_rows(run_local_sweep(sweep, workers=1, train_fn=curve_train))


def test_successive_halving_gives_the_best_trial_its_epochs_at_under_half_the_grids_cost(tmp_path):
    full = demo_sweep(tmp_path, "none")
    pruned = demo_sweep(tmp_path, None)  # the YAML's pruner
    assert len(full) == len(pruned) == 8 and sum(r["epochs"] for r in full) == 8 * 20
    assert {tuple(r["params"].items()) for r in full} == {tuple(r["params"].items()) for r in pruned}  # one grid
    assert sum(r["epochs"] for r in pruned) <= 0.5 * 8 * 20
    assert pruned[0]["params"] == full[0]["params"] and pruned[0]["epochs"] == 20  # the best trial ran to the end
    assert {r["epochs"] for r in pruned if r["state"] == "pruned"} <= {4, 12}  # stopped at the rungs only


def test_learned_line_shows_the_best_epochs_evidence(tmp_path):
    rows = [
        {"epoch": 1, "val/cer": 0.9, "val/cer_baseline": 0.83, "val/distinct": 0.1},
        {"epoch": 2, "val/cer": 0.5, "val/cer_baseline": 0.83, "val/distinct": 0.95, "val/cer_ctc_greedy": 0.52},
        {"epoch": 3, "val/cer": 0.6, "val/cer_baseline": 0.83, "val/distinct": 1.0},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = learned_line(tmp_path)
    assert line.startswith(f"{tmp_path.name} at epoch 2 of 3: val/cer 0.5000, val/cer_baseline 0.8300")
    assert "val/distinct 0.9500" in line and "not logged" not in line
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "val/cer": 0.9}) + "\n")
    assert "(not logged: val/cer_baseline, val/distinct, val/cer_ctc_greedy)" in learned_line(tmp_path)


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    args = ["demo", "--data", str(tmp_path / "clips"), "--clips", "24", "--trials", "2", "--wandb", "disabled",
            "train.max_epochs=1", "data.val_ratio=0.25", f"train.run_dir={runs}"]  # fmt: skip
    result = CliRunner().invoke(cli, args)  # two workers, as the demo's default on a 2-core machine
    # one epoch on 16 clips reads nothing from the frames: the demo says so, exports nothing and exits 1
    assert result.exit_code == 1, result.output
    assert "not exported: the best run" in result.output and "--force" in result.output
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 24
    split = re.search(r"data: split (\d+) train, (\d+) val, (\d+) test clips", result.output)
    assert split and int(split[2]) == 6 and sum(map(int, split.groups())) == 24
    (sweep_dir,) = runs.glob("demo-*")
    trials = sorted(p.name for p in sweep_dir.glob("demo-*-t00*"))
    assert len(trials) == 2
    ranking = result.output.split("epochs in all")[1].split("best run:")[0]
    assert "rank" in ranking and all(t in ranking for t in trials)  # the ranking lists both trials
    assert "95% bootstrap interval" in ranking and "collapsed" in ranking  # its noise and collapse notes
    assert not (sweep_dir / "best.yaml").exists()
    line = next(x for x in result.output.splitlines() if x.startswith("best run: "))
    best_run = line.split()[2]
    assert best_run in trials and " val/cer " in line
    report = sweep_dir / best_run / "diagnose" / "report.html"
    assert report.stat().st_size > 1000 and str(report) in result.output
    assert f"over seeds: python -m launch sweep confirm {sweep_dir} --top 2 --seeds 3" in result.output
