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
from trainer.metrics import METRICS


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
    rows = [{**r, "val/cer_ctc_greedy_best": 1 - r["val/cer_best"], "val/distinct_best": r["val/cer_best"],
             "val/hyp_len_ratio@best": r["val/cer_best"]} for r in RUNS]  # fmt: skip
    assert list(rank_runs(table(rows), top=2)["name"]) == ["best", "fast-tie"]
    by_greedy = rank_runs(table(rows), "val/cer_ctc_greedy")  # a selectable metric: its best over the epochs
    assert by_greedy["name"].iloc[0] == "worst" and by_greedy.attrs["ranked_by"] == "val/cer_ctc_greedy_best"
    assert list(rank_runs(table(rows), "cer_ctc")["name"]) == list(by_greedy["name"])  # the registry's short name
    by_distinct = rank_runs(table(rows), "val/distinct")  # the registry says: higher is better
    assert by_distinct["name"].iloc[0] == "worst" and by_distinct.attrs["lower_is_better"] is False
    by_ratio = rank_runs(table(rows), "val/hyp_len_ratio")  # not selectable: its value at the best epoch
    assert by_ratio.attrs["ranked_by"] == "val/hyp_len_ratio@best" and by_ratio["name"].iloc[0] == "worst"
    by_lr = rank_runs(table(RUNS), "optim.lr", lower_is_better=False)
    assert by_lr["name"].iloc[0] == "fast-tie"
    with pytest.raises(ConfigError, match="cannot rank by 'val/cerr'.*did you mean val/cer"):
        rank_runs(table(RUNS), "val/cerr")


@pytest.mark.parametrize("name", list(METRICS))
def test_every_registry_metric_ranks_the_way_its_goal_says(tmp_path, name):
    from runfolders import epochs, write_run

    for run, value in (("low", 0.2), ("high", 0.8)):
        rows = epochs([0.5, 0.4])
        for r in rows:
            r[name] = value
        write_run(tmp_path, run, rows)
    ranked = rank_runs(load_runs(tmp_path), name)
    assert list(ranked["name"]) == (["low", "high"] if METRICS[name].goal == "minimize" else ["high", "low"])
    assert list(rank_runs(load_runs(tmp_path), METRICS[name].column)["name"]) == list(ranked["name"])


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
    assert text[0].split() == ["rank", "name", "state", "lr", "val/cer_best", "epoch_best"]  # empty columns left out
    assert text[1].split()[:3] == ["1", "best", "finished"]
    assert text[-1].startswith("(") and "--wide shows them all" in text[-1]
    md = format_table(ranked, "markdown").splitlines()
    assert md[0].startswith("| rank | name | state | lr |") and md[1].startswith("|---|") and md[5] == ""
    wide = format_table(ranked, "table", wide=True).splitlines()
    assert wide[0].split()[:5] == ["rank", "run_id", "name", "state", "optim.lr"] and len(wide) == 4
    csv = format_table(ranked, "csv").splitlines()
    assert csv[0].startswith("rank,run_id,name,state,optim.lr,val/cer_best") and csv[1].startswith(
        "1,best,best,finished"
    )


def test_the_ranking_fits_120_columns_with_long_names_and_many_parameters(tmp_path):
    from runfolders import epochs, write_run

    keys = ["optim.lr", "optim.warmup_epochs", "model.ctc_weight", "decode.ctc_weight", "model.dropout",
            "augment.time_mask_window", "decode.beam_size", "model.encoder.layers", "model.decoder.layers"]  # fmt: skip
    values = [
        ["1e-3", "2", "0.3", "0.5", "0.1", "3", "5", "2", "2"],
        ["2e-3", "3", "0.5", "1.0", "0.2", "5", "10", "3", "1"],
    ]
    for i, vals in enumerate(values):
        write_run(tmp_path, f"a-rather-long-sweep-name-trial-{i:04d}-with-suffix", epochs([0.9, 0.5 + i / 10]),
                  [f"{k}={v}" for k, v in zip(keys, vals, strict=True)])  # fmt: skip
    from analysis.rank import rank_table

    ranked = rank_table(load_runs(tmp_path))
    lines = format_table(ranked, "table").splitlines()
    assert max(map(len, lines)) <= 120 and lines[0].split()[:3] == ["rank", "name", "state"]
    header = lines[0].split()
    shown = [k for k in keys if k in header or k.split(".", 1)[1] in header]  # headers: the shortest unique suffix
    assert "model.ctc_weight" in header and "val/cer_best" in header and len(shown) >= 3
    footer = " ".join(lines[lines.index("") + 1 :] if "" in lines else lines[3:])
    assert footer.startswith("(") and all(k in footer for k in keys if k not in shown)  # the hidden ones are named
    assert "a-rather-long…00-with-suffix" in lines[1]  # the ends of a long name are kept
    assert max(map(len, format_table(ranked, "table", wide=True).splitlines())) > 120



@pytest.mark.parametrize("name_width", [10, 25])
def test_an_intervals_two_ends_are_shown_together_or_not_at_all(name_width):
    """Ranked by a long metric name, the width runs out around the interval: never one end without the other."""
    metric = "val/cer_ctc_greedy"
    table = pd.DataFrame({"rank": [1, 2], "name": ["n" * name_width, "m" * name_width], "state": ["finished"] * 2,
                          f"{metric}_best": [0.5035, 0.8415], f"{metric}_low": [0.4776, 0.8223],
                          f"{metric}_high": [0.5301, 0.8602], "tied": [True, False], "collapsed": [False, True]})  # fmt: skip
    table.attrs.update({"ranked_by": f"{metric}_best", "interval_of": metric})
    from analysis.tables import fitting_columns

    widths = {len(" ".join(fitting_columns(table, w)[0])) for w in range(60, 130)}
    for width in range(60, 130):
        shown = fitting_columns(table, width)[0]
        assert (f"{metric}_low" in shown) == (f"{metric}_high" in shown), (width, shown)
    assert len(widths) > 2  # the widths tried do cut the table in several places


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


# --------------------------------------------------------------------------- noise and collapse in the ranking


def cer_of(predictions: list[list]) -> float:
    return sum(int(r[4]) for r in predictions) / sum(int(r[5]) for r in predictions)


def noisy_runs(root):
    """best and its twin (the same predictions), far (3 more errors a clip), old (no predictions), flat (one output
    for every clip, scored well below the others by its own metrics but worse than its baseline)."""
    from runfolders import constant_predictions, epochs, fixture_predictions, write_run

    a, far, flat = fixture_predictions("a"), fixture_predictions("a", 3), constant_predictions(60)
    base = {"val/cer_baseline": 0.9}
    for name, preds in (("best", a), ("twin", a), ("far", far), ("flat", flat)):
        rows = epochs([0.95, cer_of(preds) + (0.0001 if name == "twin" else 0)])
        for r in rows:
            r.update(base)
        write_run(root, name, rows, predictions=preds)
    write_run(root, "old", epochs([0.9, 0.5]))
    return root


def test_rank_table_shows_intervals_ties_and_collapsed_runs(tmp_path):
    from analysis.rank import rank_table, ranking_notes

    ranked = rank_table(noisy_runs(tmp_path)).set_index("name")
    assert ranked.loc["best", "tied"] and ranked.loc["twin", "tied"] and not ranked.loc["far", "tied"]
    assert pd.isna(ranked.loc["old", "tied"]) and math.isnan(ranked.loc["old", "val/cer_low"])
    assert ranked.loc["best", "val/cer_low"] < cer_of(fixture("a")) < ranked.loc["best", "val/cer_high"]
    assert ranked.loc["flat", "collapsed"] and not ranked.loc["best", "collapsed"]
    assert pd.isna(ranked.loc["old", "collapsed"])  # nothing to judge it by
    notes = "\n".join(ranking_notes(rank_table(tmp_path)))
    assert "tied with best: twin" in notes and "really worse than best: far" in notes and "collapsed" in notes


def fixture(name):
    from runfolders import fixture_predictions

    return fixture_predictions(name)


@pytest.mark.parametrize("fmt", ["table", "markdown", "csv"])
def test_rank_command_shows_the_noise_in_every_format(tmp_path, fmt):
    from click.testing import CliRunner

    from launch.cli import cli

    result = CliRunner().invoke(cli, ["runs", "rank", str(noisy_runs(tmp_path)), "--format", fmt])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0]
    for column in ("val/cer_low", "val/cer_high", "tied", "collapsed"):
        assert column in header
    assert "tied with best: twin" in result.output


def test_wandb_runs_give_their_predictions_table_from_the_run(tmp_path):
    """A run's `val/predictions` wandb.Table, as the summary points to it and the run's files hold it."""
    import json

    from runfolders import FIXTURE, PREDICTION_COLUMNS, RecordedApi, fixture_predictions

    from analysis.rank import rank_table

    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    table_path = "media/table/val/predictions_7_e12d677ec9d85ea1b2da.table.json"
    files = {}
    for run, extra in (("a1b2c3d4", 0), ("e5f6g7h8", 0)):  # two runs with the same predictions: tied
        attrs = next(r["attrs"] for r in fixture["runs"] if r["attrs"]["name"] == run)
        summary = json.loads(attrs["summaryMetrics"])
        summary["val/predictions"] = {"_type": "table-file", "path": table_path, "ncols": 8, "nrows": 60}
        attrs["summaryMetrics"] = json.dumps(summary)
        rows = [
            [r[0], int(r[1]), r[2], r[3], int(r[4]), int(r[5]), r[6], int(r[7])]
            for r in fixture_predictions("a", extra)
        ]
        files[run] = {table_path: json.dumps({"columns": PREDICTION_COLUMNS, "data": rows})}
    api = RecordedApi(fixture, files)
    ranked = rank_table("wandb://lipteam/lipsweep/k3x9q2ab", api=api).set_index("run_id")
    assert ranked.loc["e5f6g7h8", "tied"] and ranked.loc["a1b2c3d4", "tied"]  # e5f6g7h8 is the best (0.30)
    assert ranked.loc["a1b2c3d4", "val/cer_low"] == ranked.loc["e5f6g7h8", "val/cer_low"]
    assert ranked["val/cer_low"].notna().sum() == 2  # the others logged no table: empty cells, no request
    assert ranked.attrs["tied_with"] == ranked.loc["e5f6g7h8", "name"]


def test_compare_draws_the_intervals_and_says_which_differences_are_real(tmp_path):
    from analysis.compare import compare

    page = compare(noisy_runs(tmp_path / "runs"), tmp_path / "cmp")
    md = page.with_suffix(".md").read_text(encoding="utf-8")
    assert "![" in md and "intervals.png" in md and (tmp_path / "cmp" / "intervals.png").stat().st_size > 5000
    assert "tied with best: twin; really worse than best: far" in md
