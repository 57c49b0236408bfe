"""Ranking: best first, ties share a rank and are ordered by how soon they got there, failed runs last; Pareto front."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.rank import (
    best_run,
    format_table,
    pareto_front,
    parse_objectives,
    rank_runs,
    sweep_objectives,
    with_pareto,
)
from analysis.runs import load_runs, make_table
from trainer.errors import ConfigError


def table(rows: list[dict]) -> pd.DataFrame:
    base = {"epoch_best": math.nan, "runtime_s": math.nan, "location": "", "reason": ""}
    return make_table([{**base, "run_id": r["name"], **r} for r in rows], ["optim.lr"], "runs")


RUNS = [
    {"name": "slow-tie", "state": "finished", "val/cer_best": 0.30, "epoch_best": 9, "optim.lr": 1e-3},
    {"name": "crashed-early-but-good", "state": "failed", "val/cer_best": 0.10, "epoch_best": 2, "optim.lr": 1e-2},
    {"name": "best", "state": "finished", "val/cer_best": 0.25, "epoch_best": 7, "optim.lr": 2e-3},
    {"name": "fast-tie", "state": "pruned", "val/cer_best": 0.30, "epoch_best": 4, "optim.lr": 3e-3},
    {"name": "no-validation", "state": "running", "val/cer_best": math.nan, "optim.lr": 5e-4},
    {"name": "worst", "state": "stopped", "val/cer_best": 0.60, "epoch_best": 3, "optim.lr": 1e-4},
]


def test_order_ties_and_failed_runs_last():
    ranked = rank_runs(table(RUNS))
    assert list(ranked["name"]) == ["best", "fast-tie", "slow-tie", "worst", "crashed-early-but-good", "no-validation"]
    assert list(ranked["rank"][:4]) == [1, 2, 2, 4]  # equal values share a rank; the next rank skips
    assert ranked["rank"][4:].isna().all()  # failed and metric-less runs are not ranked
    assert ranked.attrs["params"] == ["optim.lr"]


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 0, 5, 3, 1, 4]])
def test_ranking_does_not_depend_on_the_input_order(order):
    assert list(rank_runs(table([RUNS[i] for i in order]))["name"]) == list(rank_runs(table(RUNS))["name"])


def test_top_and_other_metrics_and_direction():
    rows = [{**r, "val/cer_ctc_greedy@best": 1 - r["val/cer_best"]} for r in RUNS]
    assert list(rank_runs(table(rows), top=2)["name"]) == ["best", "fast-tie"]
    by_greedy = rank_runs(table(rows), "val/cer_ctc_greedy")  # alias of the column at the best epoch
    assert by_greedy["name"].iloc[0] == "worst"
    by_lr = rank_runs(table(RUNS), "optim.lr", lower_is_better=False)
    assert by_lr["name"].iloc[0] == "fast-tie"
    with pytest.raises(ConfigError, match="cannot rank by 'val/wer'"):
        rank_runs(table(RUNS), "val/wer")


def test_best_run_and_no_usable_run():
    assert best_run(table(RUNS))["name"] == "best"
    only_failed = table([RUNS[1], RUNS[4]])
    with pytest.raises(ConfigError, match="no run that did not fail"):
        best_run(only_failed)


def test_pareto_front_marks_the_undominated_runs():
    runs = table(
        [
            {"name": "a", "state": "finished", "val/cer_best": 0.2, "runtime_s": 100},
            {"name": "b", "state": "finished", "val/cer_best": 0.3, "runtime_s": 50},
            {"name": "c", "state": "finished", "val/cer_best": 0.3, "runtime_s": 80},  # dominated by b
            {"name": "d", "state": "finished", "val/cer_best": 0.2, "runtime_s": 100},  # equal to a: both stay
            {"name": "e", "state": "failed", "val/cer_best": 0.1, "runtime_s": 10},  # failed: never on the front
        ]
    )
    front = pareto_front(runs, {"val/cer_best": "min", "runtime_s": "min"})
    assert list(runs["name"][front]) == ["a", "b", "d"]
    faster_is_worse = pareto_front(runs, {"val/cer_best": "min", "runtime_s": "max"})
    assert list(runs["name"][faster_is_worse]) == ["a", "d"]


def test_formats():
    ranked = rank_runs(table(RUNS), top=3)
    text = format_table(ranked, "table").splitlines()
    assert text[0].split()[:3] == ["rank", "run_id", "name"] and text[1].split()[:3] == ["1", "best", "best"]
    md = format_table(ranked, "markdown").splitlines()
    assert md[0].startswith("| rank | run_id | name |") and md[1].startswith("|---|") and len(md) == 5
    csv = format_table(ranked, "csv").splitlines()
    assert csv[0].startswith("rank,run_id,name,state,optim.lr,val/cer_best") and csv[1].startswith(
        "1,best,best,finished"
    )


# --------------------------------------------------------------------------- several objectives: `runs rank` marks the front


def timed_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """val/cer falls as the CTC weight rises, the epoch time rises with it (a trade-off); lr 0.1 is worse on both."""
    import json
    from pathlib import Path

    from trainer.config import save_config
    from trainer.train import RunResult

    run_dir = Path(cfg.train.run_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    w, bad = cfg.model.ctc_weight, cfg.optim.lr > 0.05
    rows = [{"epoch": e, "val/cer": 1.0 - w + 0.5 / e + bad, "time/epoch_s": 10 + 20 * w + e + 5 * bad} for e in (1, 2)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"name": name.split("/")[-1], "state": "finished", "val/cer_best": rows[-1]["val/cer"], "epoch_best": 2,
               "epochs": 2, "runtime_s": 1.0}  # fmt: skip
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return RunResult(run_dir, "finished", summary)


def test_a_multi_objective_local_sweep_is_ranked_with_its_pareto_front_marked(tmp_path):
    import yaml
    from click.testing import CliRunner

    from launch.cli import cli
    from launch.engine.local import run_local_sweep
    from launch.engine.plan import prepare
    from launch.engine.spec import load_sweep

    raw = {"name": "mo", "method": "custom", "run_cap": 6,
           "metrics": [{"name": "val/cer", "goal": "minimize"}, {"name": "time/epoch_s", "goal": "minimize"}],
           "scheduler": {"engine": "optuna"},
           "parameters": {"model.ctc_weight": {"values": [0.1, 0.3, 0.5]}, "optim.lr": {"values": [1e-3, 1e-1]}},
           "command": ["${env}", "${interpreter}", "-m", "launch", "train", "--config", "configs/small.yaml", "${args}"]}  # fmt: skip
    path = tmp_path / "mo.yaml"
    path.write_text(yaml.safe_dump(raw))
    sweep = prepare(load_sweep(path), overrides=[f"train.run_dir={tmp_path / 'runs'}", "train.max_epochs=2"],
                    heartbeat=0, verbose=False)  # fmt: skip
    study = run_local_sweep(sweep, workers=1, train_fn=timed_train)
    on_front = {t.user_attrs["run_dir"].split("/")[-1] for t in study.best_trials}
    assert len(study.trials) == 6 and 0 < len(on_front) < 6

    folder = tmp_path / "runs" / "mo"
    table = with_pareto(load_runs(folder), sweep_objectives(folder / "sweep.yaml"), folder)
    assert set(table["name"][table["pareto"]]) == on_front  # the same front as Optuna's own
    for _, row in table.iterrows():
        assert row["time/epoch_s"] == pytest.approx(
            10 + 20 * row["model.ctc_weight"] + 2 + 5 * (row["optim.lr"] > 0.05)
        )

    result = CliRunner().invoke(cli, ["runs", "rank", str(folder), "--format", "csv"])  # objectives from sweep.yaml
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = lines[0].split(",")
    marked = {r.split(",")[header.index("name")] for r in lines[1:7] if r.split(",")[header.index("pareto")] == "True"}
    assert marked == on_front
    assert lines[-1].startswith(
        f"pareto: {len(on_front)} run(s) no other run beats on val/cer (min), time/epoch_s (min)"
    )
    optuna_source = f"optuna://sqlite:///{folder / 'study.db'}?study=mo"
    result = CliRunner().invoke(cli, ["runs", "rank", optuna_source, "--pareto", "val/cer,time/epoch_s"])
    assert result.exit_code == 0, result.output
    assert f"pareto: {len(on_front)} run(s)" in result.output


def test_parse_objectives():
    assert parse_objectives("val/cer, time/epoch_s:min,train/clips_per_s:max") == [
        ("val/cer", "min"), ("time/epoch_s", "min"), ("train/clips_per_s", "max")]  # fmt: skip
    with pytest.raises(ConfigError, match="two or more"):
        parse_objectives("val/cer")
