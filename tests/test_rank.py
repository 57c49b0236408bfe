"""Ranking: best first, ties share a rank and are ordered by how soon they got there, failed runs last; Pareto front."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.rank import best_run, format_table, pareto_front, rank_runs
from analysis.runs import make_table
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
