"""The runs table: local run folders, an Optuna study of a tiny real sweep (same rows), W&B through the public API."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import optuna
import pandas as pd
import pytest
from runfolders import FIXTURE, TINY, RecordedApi, epochs, write_run

from analysis.runs import Source, load_runs, parse_source, run_history
from trainer.config import load_config
from trainer.errors import ConfigError, DataError

SAME = [
    "run_id",
    "name",
    "state",
    "optim.lr",
    "val/cer_best",
    "val/cer_last",
    "epoch_best",
    "epochs",
    "val/cer_ctc_greedy@best",
]


# --------------------------------------------------------------------------- local folders


def test_local_folders_give_one_row_per_run_with_the_swept_keys(tmp_path: Path):
    write_run(tmp_path, "a", epochs([0.9, 0.5, 0.6], ctc_greedy=[0.95, 0.55, 0.7]), ["optim.lr=1e-3"])
    write_run(tmp_path / "nested", "b", epochs([0.8, 0.7]), ["optim.lr=3e-3", "tracking.name=b"], state="pruned")
    write_run(tmp_path, "c", epochs([0.99]), ["optim.lr=1e-2"], state="failed", reason="TrainingFailed: NaN")
    table = load_runs(tmp_path)
    assert table.attrs["params"] == ["optim.lr"]  # tracking.name differs too but is bookkeeping
    assert sorted(table["name"]) == ["a", "b", "c"]
    a = table.set_index("name").loc["a"]
    assert a["optim.lr"] == pytest.approx(1e-3)
    assert (a["val/cer_best"], a["epoch_best"], a["val/cer_last"], a["epochs"]) == (0.5, 2, 0.6, 3)
    assert a["val/cer_ctc_greedy@best"] == pytest.approx(0.55)
    assert a["state"] == "finished" and a["location"] == str(tmp_path / "a")
    rows = table.set_index("name")
    assert rows.loc["b", "state"] == "pruned" and rows.loc["c", "reason"] == "TrainingFailed: NaN"


def test_one_run_folder_is_a_source_and_lists_become_text(tmp_path: Path):
    run = write_run(tmp_path, "only", epochs([0.7, 0.4]), ["model.frontend.widths=[4,4,8,16]"])
    table = load_runs(run)
    assert list(table["name"]) == ["only"] and table.attrs["params"] == []
    write_run(tmp_path, "other", epochs([0.7]))
    table = load_runs(tmp_path)
    assert table.attrs["params"] == ["model.frontend.widths"]
    assert set(table["model.frontend.widths"]) == {"[4, 4, 8, 16]", "[4, 4, 8, 8]"}


def test_first_epoch_wins_a_tie_for_best(tmp_path: Path):
    write_run(tmp_path, "tie", epochs([0.6, 0.4, 0.4, 0.5]))
    row = load_runs(tmp_path).iloc[0]
    assert (row["val/cer_best"], row["epoch_best"], row["val/cer_last"]) == (0.4, 2, 0.5)


def test_best_epoch_follows_the_runs_select_metric_and_each_best_its_goal(tmp_path: Path):
    rows = epochs([0.6, 0.5, 0.55, 0.7], ctc_greedy=[0.9, 0.8, 0.6, 0.65])
    for r, distinct in zip(rows, [0.1, 0.9, 0.4, 0.5], strict=True):
        r["val/distinct"] = distinct
    run = write_run(tmp_path, "greedy", rows)
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "select_metric": "val/cer_ctc_greedy"}))
    row = load_runs(tmp_path).iloc[0]
    assert row["select_metric"] == "val/cer_ctc_greedy"
    assert row["epoch_best"] == 3  # where val/cer_ctc_greedy is lowest, not val/cer
    assert (row["val/cer_ctc_greedy@best"], row["val/cer@best"], row["val/distinct@best"]) == (0.6, 0.55, 0.4)
    assert (row["val/cer_best"], row["val/cer_ctc_greedy_best"], row["val/cer_last"]) == (0.5, 0.6, 0.7)
    assert row["val/distinct_best"] == 0.9  # a metric to maximise: its highest value
    (run / "summary.json").write_text(json.dumps({**summary, "select_metric": "val/nope"}))
    with pytest.raises(DataError, match="greedy/summary.json: select_metric 'val/nope' is not a metric"):
        load_runs(tmp_path)


def test_every_column_but_the_parameters_has_one_source(tmp_path: Path):
    from analysis.rows import NON_PARAMETER_COLUMNS
    from trainer.metrics import SELECTABLE, best_key

    write_run(tmp_path, "a", epochs([0.5]), ["optim.lr=1e-3", "tracking.project=p1", "tracking.tags=[x]"])
    write_run(tmp_path, "b", epochs([0.6]), ["optim.lr=2e-3", "tracking.project=p2", "train.device=cpu"])
    table = load_runs(tmp_path)
    assert table.attrs["params"] == ["optim.lr"]  # tracking.* and the device are bookkeeping
    assert [c for c in table.columns if c not in table.attrs["params"]] == list(NON_PARAMETER_COLUMNS)
    assert {best_key(n) for n in SELECTABLE} <= set(table.columns)  # one column per registry objective


def test_run_id_is_the_wandb_id_when_the_run_had_one(tmp_path: Path):
    run = write_run(tmp_path, "with-wandb", epochs([0.5]))
    summary = json.loads((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps({**summary, "wandb_id": "a1b2c3d4"}))
    write_run(tmp_path, "without", epochs([0.6]))
    assert dict(zip(*[load_runs(tmp_path)[c] for c in ("name", "run_id")], strict=True)) == {
        "with-wandb": "a1b2c3d4", "without": "without"}  # fmt: skip


def test_sweep_yaml_names_the_parameters(tmp_path: Path):
    write_run(tmp_path, "a", epochs([0.5]), ["optim.lr=1e-3", "model.dropout=0.2"])
    write_run(tmp_path, "b", epochs([0.6]), ["optim.lr=2e-3", "model.dropout=0.1"])
    sweep = tmp_path / "lr.yaml"
    sweep.write_text(
        "method: grid\nparameters:\n  optim.lr:\n    values: [0.001, 0.002]\n  decode.beam_size:\n    value: 5\n"
    )
    assert load_runs(tmp_path / "a").attrs["params"] == []
    assert load_runs(tmp_path, sweep_yaml=sweep).attrs["params"] == ["optim.lr"]
    assert load_runs(tmp_path).attrs["params"] == ["model.dropout", "optim.lr"]  # the keys that differ
    sweep.rename(tmp_path / "sweep.yaml")  # the copy `sweep local` keeps in the sweep folder
    assert load_runs(tmp_path).attrs["params"] == ["optim.lr"]


def test_bad_sources_and_damaged_runs_are_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="not a folder of runs"):
        load_runs(tmp_path / "missing")
    with pytest.raises(ConfigError, match="wandb://entity/project"):
        parse_source("wandb://only-entity")
    with pytest.raises(ConfigError, match="does not exist"):
        load_runs("optuna://sqlite:///" + str(tmp_path / "none.db"))
    with pytest.raises(DataError, match="no run folders"):
        load_runs(tmp_path)
    run = write_run(tmp_path, "bad", epochs([0.5]))
    (run / "summary.json").write_text("{not json")
    with pytest.raises(DataError, match=r"bad/summary.json: not valid JSON"):
        load_runs(tmp_path)


def test_source_parsing():
    assert parse_source("optuna://sqlite:///runs/lr/study.db?study=lr") == Source(
        "optuna", "sqlite:///runs/lr/study.db", "lr"
    )
    pg = parse_source("optuna://postgresql://u@h/db?sslmode=require&study=s")
    assert pg == Source("optuna", "postgresql://u@h/db?sslmode=require", "s")
    assert parse_source("wandb://team/proj/sweeps/abc") == Source("wandb", "team/proj", sweep="abc")
    assert parse_source("wandb://team/proj") == Source("wandb", "team/proj")
    assert str(parse_source("optuna://sqlite:///x.db?study=lr")) == "optuna://sqlite:///x.db?study=lr"


# --------------------------------------------------------------------------- a tiny real sweep


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory) -> tuple[Path, str]:
    """Three real training runs driven by an Optuna study (one pruned after epoch 1), with the trial attrs that
    `sweep local` keeps (run_dir, state, reason, metrics); returns the runs folder and the storage URL."""
    from trainer.config import load_config
    from trainer.synthetic import write_dataset
    from trainer.train import train

    root = tmp_path_factory.mktemp("sweep")
    write_dataset(root / "data", 12, seed=1, fmt="npy")
    storage = f"sqlite:///{root / 'study.db'}"
    study = optuna.create_study(study_name="tiny", storage=storage, direction="minimize")
    lrs = [3e-3, 1e-3, 1e-2]
    base = [*TINY, f"data.root={root / 'data'}", f"data.cache_dir={root / 'cache'}", "data.image_size=32",
            "augment.crop_size=24", "train.max_epochs=2", "train.batch_size=4", f"train.run_dir={root / 'runs'}",
            "data.val_ratio=0.25", "data.test_ratio=0", "decode.beam_size=2", "train.train_cer_clips=3", "train.worst_k=3"]  # fmt: skip

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("optim.lr", 1e-4, 1e-1, log=True)
        cfg = load_config("small", [*base, f"optim.lr={lr}"])

        def prune(epoch: int, metrics: dict) -> bool:
            trial.report(metrics["val/cer"], epoch)
            return trial.number == 2

        result = train(cfg, name=f"tiny-t{trial.number:03d}", prune=prune, verbose=False)
        trial.set_user_attr("run_dir", str(result.run_dir))
        trial.set_user_attr("state", result.state)
        keep = ("val/cer_best", "epoch_best", "epochs", "runtime_s")
        trial.set_user_attr("metrics", {k: result.summary[k] for k in keep})
        if result.state == "pruned":
            raise optuna.TrialPruned()
        return result.summary["val/cer_best"]

    for lr in lrs:
        study.enqueue_trial({"optim.lr": lr})
    study.optimize(objective, n_trials=3)
    return root / "runs", storage


@pytest.mark.slow
def test_local_and_optuna_tables_have_the_same_rows(tiny_sweep):
    runs, storage = tiny_sweep
    local = load_runs(runs).set_index("name").sort_index()
    study = load_runs(f"optuna://{storage}?study=tiny").set_index("name").sort_index()
    assert local.attrs["params"] == study.attrs["params"] == ["optim.lr"]
    assert list(local.index) == list(study.index) == ["tiny-t000", "tiny-t001", "tiny-t002"]
    same = [c for c in SAME if c != "name"]  # the index
    pd.testing.assert_frame_equal(local[same], study[same], check_dtype=False)  # run_id too: the folder's name
    assert list(study["state"]) == ["finished", "finished", "pruned"]
    assert list(study["epochs"]) == [2, 2, 1]
    assert list(local["location"]) == [str(runs / n) for n in local.index]
    assert all(local["runtime_s"] > 0)
    # the trial's history is its run folder's metrics
    row = study.reset_index().iloc[0]
    history = run_history(f"optuna://{storage}?study=tiny", row)
    assert [r["epoch"] for r in history] == [1, 2] and "train/loss" in history[0]


def test_optuna_trial_without_run_folder_uses_its_own_values(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    for values in ([0.9, 0.5, 0.6], [0.8, 0.7]):
        trial = study.ask({"model.ctc_weight": optuna.distributions.FloatDistribution(0.0, 1.0)})
        for epoch, v in enumerate(values, start=1):
            trial.report(v, epoch)
        study.tell(trial, min(values))
    skipped = study.ask()
    skipped.set_user_attr("skipped", "grid point already taken by trial 0")
    study.tell(skipped, state=optuna.trial.TrialState.FAIL)
    table = load_runs(f"optuna://{storage}")  # the storage holds one study: no need to name it
    assert len(table) == 2  # the skipped trial never ran
    first = table.iloc[0]
    assert (first["val/cer_best"], first["epoch_best"], first["val/cer_last"], first["epochs"]) == (0.5, 2, 0.6, 3)
    assert first["state"] == "finished" and first["name"] == "trial-0"
    history = run_history(f"optuna://{storage}?study=s", first)
    assert history == [{"epoch": 1, "val/cer": 0.9}, {"epoch": 2, "val/cer": 0.5}, {"epoch": 3, "val/cer": 0.6}]
    with pytest.raises(ConfigError, match="has no study 'nope'"):
        load_runs(f"optuna://{storage}?study=nope")


def test_a_studys_run_folders_are_found_beside_its_file_from_another_folder(tmp_path: Path, monkeypatch):
    """`sweep local` records run folders relative to where it ran; read from elsewhere, they sit beside study.db."""
    sweep = tmp_path / "project" / "runs" / "lr"
    write_run(sweep, "lr-t000", epochs([0.9, 0.4]))
    study = optuna.create_study(study_name="lr", storage=f"sqlite:///{sweep / 'study.db'}")
    trial = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    trial.set_user_attr("run_dir", "runs/lr/lr-t000")  # relative to tmp_path/project, where it ran
    study.tell(trial, 0.4)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    for source in (f"optuna://{sweep / 'study.db'}", f"optuna://sqlite:///{sweep / 'study.db'}", sweep / "study.db"):
        row = load_runs(source).iloc[0]
        assert row["location"] == str(sweep / "lr-t000") and row["epochs"] == 2, source  # from the run folder
    with pytest.raises(ConfigError, match="is neither a storage URL nor a study file"):
        load_runs("optuna://runs/lr/notes.txt")
    with pytest.raises(ConfigError, match="is not a storage URL"):
        load_runs("optuna://sqlite:/x.db:://?")


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_optuna_values_are_the_studys_metric(tmp_path: Path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    study.set_metric_names(["val/distinct"])
    trial = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)})
    for epoch, v in enumerate([0.2, 0.7, 0.5], start=1):
        trial.report(v, epoch)
    study.tell(trial, 0.7)
    row = load_runs(f"optuna://{storage}").iloc[0]
    assert (row["val/distinct_best"], row["epoch_best"], row["trial"]) == (0.7, 2, 0)  # the highest: maximised
    assert math.isnan(row["val/cer_best"]) and row["select_metric"] == "val/distinct"
    assert run_history(f"optuna://{storage}", row) == [{"epoch": 1, "val/distinct": 0.2},
        {"epoch": 2, "val/distinct": 0.7}, {"epoch": 3, "val/distinct": 0.5}]  # fmt: skip


# --------------------------------------------------------------------------- W&B


@pytest.fixture
def recorded_api() -> RecordedApi:
    return RecordedApi(json.loads(FIXTURE.read_text(encoding="utf-8")))


def test_wandb_sweep_table_from_the_public_api(recorded_api: RecordedApi):
    table = load_runs("wandb://lipteam/lipsweep/k3x9q2ab", api=recorded_api).set_index("run_id")
    assert table.attrs["params"] == ["optim.lr", "model.ctc_weight"]  # train.max_epochs is a fixed value
    assert list(table["state"]) == ["finished", "finished", "failed", "pruned", "running"]
    a, b = table.loc["a1b2c3d4"], table.loc["e5f6g7h8"]
    assert a["name"] == "brave-fox-1" and a["location"] == "https://wandb.ai/lipteam/lipsweep/runs/a1b2c3d4"
    assert a["optim.lr"] == 1e-3 and a["model.ctc_weight"] == 0.3
    # the best epoch is the last one: everything comes from the summary
    assert (a["val/cer_best"], a["epoch_best"], a["val/cer_last"], a["val/cer_ctc_greedy@best"]) == (
        0.35,
        8,
        0.35,
        0.43,
    )
    assert a["runtime_s"] == 480.5
    # the best epoch (4) is not the last (8): its last and greedy-at-best values come from the history
    assert (b["val/cer_best"], b["epoch_best"], b["val/cer_last"], b["val/cer_ctc_greedy@best"]) == (
        0.30,
        4,
        0.37,
        0.36,
    )
    assert table.loc["i9j0k1l2", "runtime_s"] == 130  # no runtime_s in the summary: W&B's _runtime
    queried = {name for name, _ in recorded_api.service.queries}
    assert queried == {"e5f6g7h8"}  # history fetched only for the run that needed it


def test_wandb_history_of_one_run_is_one_query_by_epoch(recorded_api: RecordedApi):
    table = load_runs("wandb://lipteam/lipsweep/k3x9q2ab", api=recorded_api)
    row = table.set_index("run_id").loc["m3n4o5p6"].copy()
    row["run_id"] = "m3n4o5p6"
    history = run_history("wandb://lipteam/lipsweep/k3x9q2ab", row, api=recorded_api)
    assert [r["epoch"] for r in history] == [1, 2, 3]
    assert history[2]["val/cer"] == 0.75 and history[2]["train/loss"] == 64
    assert not any(k.startswith("_") for r in history for k in r)  # W&B's own _step, _runtime left out
    assert recorded_api.service.queries[-1] == ("m3n4o5p6", 10_000)  # one query for every key


def test_wandb_summary_with_the_values_at_the_best_epoch_needs_no_history():
    fixture = json.loads(FIXTURE.read_text(encoding="utf-8"))
    run = next(r for r in fixture["runs"] if r["attrs"]["name"] == "e5f6g7h8")  # best epoch 4 of 8
    summary = json.loads(run["attrs"]["summaryMetrics"])
    summary.update({"select_metric": "val/cer", "val/cer_ctc_greedy@best": 0.36, "val/distinct@best": 0.8,
                    "val/distinct": {"max": 0.9}})  # fmt: skip
    run["attrs"]["summaryMetrics"] = json.dumps(summary)
    api = RecordedApi(fixture)
    row = load_runs("wandb://lipteam/lipsweep/k3x9q2ab", api=api).set_index("run_id").loc["e5f6g7h8"]
    assert (row["val/cer_best"], row["val/cer@best"], row["epoch_best"]) == (0.30, 0.30, 4)
    assert (row["val/cer_ctc_greedy@best"], row["val/distinct@best"], row["val/distinct_best"]) == (0.36, 0.8, 0.9)
    assert math.isnan(row["val/cer_last"])  # W&B's summary keeps val/cer's minimum, not its last value
    assert api.service.queries == []


def test_wandb_project_without_sweep_uses_differing_config_keys(recorded_api: RecordedApi):
    table = load_runs("wandb://lipteam/lipsweep", api=recorded_api)
    assert table.attrs["params"] == ["optim.lr", "model.ctc_weight"]
    assert len(table) == 5 and not table["val/cer_best"].isna().any()


# --------------------------------------------------------------------------- compare and the CLI


def sweep_folder(root: Path) -> Path:
    """Eight runs: val/cer follows optim.lr (best near 2e-3), model.dropout does nothing; one pruned, one failed."""
    lrs = [1e-4, 3e-4, 1e-3, 2e-3, 3e-3, 6e-3, 1e-2, 2e-2]
    for i, lr in enumerate(lrs):
        final = 0.3 + 0.2 * abs(math.log10(lr / 2e-3))
        curve = [min(1.0, final + 0.5 / (e + 1)) for e in range(6)]
        state = "pruned" if i == 0 else "failed" if i == 7 else "finished"
        write_run(root, f"r{i}", epochs(curve[: 2 if state == "pruned" else 6]),
                  [f"optim.lr={lr}", f"model.dropout={0.1 if i % 2 else 0.2}"], state=state)  # fmt: skip
    return root


def test_compare_writes_the_plots_and_a_report(tmp_path: Path):
    from analysis.compare import compare

    runs = sweep_folder(tmp_path / "runs")
    page = compare(runs, tmp_path / "cmp", top=3)
    out = tmp_path / "cmp"
    for name in ["learning_curves_top.png", "scatter_optim.lr.png", "scatter_model.dropout.png",
                 "parallel_coordinates.png", "importance.png"]:  # fmt: skip
        assert (out / name).stat().st_size > 5000, name
    md = (out / "compare.md").read_text(encoding="utf-8")
    assert "8 runs (6 finished, 1 pruned, 1 failed)" in md
    assert "Method: variance share of each parameter alone" in md and "over 6 finished or stopped runs" in md
    importance = dict(re.findall(r"\| (optim\.lr|model\.dropout) \| ([0-9.]+) \|", md))
    assert float(importance["optim.lr"]) > 0.8 > float(importance["model.dropout"])
    ranking = (out / "ranking.md").read_text(encoding="utf-8").splitlines()
    assert ranking[2].startswith("| 1 | r3 | finished | 0.1 | 0.002 |")  # lr 2e-3 is best
    assert page.read_text(encoding="utf-8").count("data:image/png;base64,") == 5


def test_variance_share_is_one_for_a_deciding_parameter_and_zero_for_a_constant_one():
    from analysis.compare import variance_share

    y = pd.Series([0.1, 0.1, 0.5, 0.5, 0.9, 0.9])
    assert variance_share(pd.Series(["a", "a", "b", "b", "c", "c"]), y) == pytest.approx(1.0)
    assert variance_share(pd.Series(["a", "b", "a", "b", "a", "b"]), y) == pytest.approx(0.0)
    # invariant to relabelling the groups and to reordering the runs
    assert variance_share(pd.Series(["z", "z", "x", "x", "y", "y"]), y) == pytest.approx(1.0)
    order = [5, 2, 0, 6, 4, 1, 3]
    x = pd.Series([1e-4, 2e-4, 1e-3, 2e-3, 1e-2, 2e-2, 3e-2])
    yy = pd.Series([0.9, 0.8, 0.5, 0.4, 0.3, 0.2, 0.1])
    assert variance_share(x, yy) == pytest.approx(variance_share(x[order].reset_index(drop=True),
                                                                 yy[order].reset_index(drop=True)))  # fmt: skip


def test_optuna_source_uses_optunas_evaluator(tmp_path: Path):
    from analysis.compare import param_importance

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: abs(math.log10(t.suggest_float("optim.lr", 1e-4, 1e-2, log=True) / 1e-3))
                   + 0.0 * t.suggest_float("model.dropout", 0.0, 0.3), n_trials=12)  # fmt: skip
    importance = param_importance(load_runs(f"optuna://{storage}?study=s"))
    assert importance.method.startswith("Optuna")
    assert set(importance.values) == {"optim.lr", "model.dropout"}
    assert importance.values["optim.lr"] > importance.values["model.dropout"]


def test_cli_rank_compare_export(tmp_path: Path):
    from click.testing import CliRunner

    from launch.cli import cli

    runs = sweep_folder(tmp_path / "runs")
    runner = CliRunner()
    ranked = runner.invoke(cli, ["runs", "rank", str(runs), "--top", "2", "--format", "csv"])
    assert ranked.exit_code == 0, ranked.output
    lines = ranked.stdout.splitlines()  # the notes go to stderr beside a CSV
    assert len(lines) == 3 and lines[1].startswith("1,r3,r3,finished") and lines[2].startswith("2,")
    out = tmp_path / "best.yaml"
    exported = runner.invoke(cli, ["runs", "export-best", str(runs), "--out", str(out)])
    assert exported.exit_code == 0 and "python -m launch train --config" in exported.output
    assert load_config(out).optim.lr == 2e-3
    compared = runner.invoke(cli, ["runs", "compare", str(runs), "--out", str(tmp_path / "cmp"), "--top", "2"])
    assert compared.exit_code == 0 and (tmp_path / "cmp" / "compare.html").exists()
    bad = runner.invoke(cli, ["runs", "rank", str(runs), "--by", "val/nope"])
    assert bad.exit_code != 0 and "cannot rank by 'val/nope'" in str(bad.exception)


# --------------------------------------------------------------------------- the same words in every source


def test_states_and_run_ids_mean_the_same_in_every_source(tmp_path: Path, recorded_api: RecordedApi):
    from analysis.rows import STATES

    with_wandb = write_run(tmp_path / "runs", "t0", epochs([0.5]), summary={"wandb_id": "w1a2b3c4"})
    without = write_run(tmp_path / "runs", "t1", epochs([0.6]))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="s", storage=storage)
    for run_dir, state in ((with_wandb, optuna.trial.TrialState.COMPLETE), (without, optuna.trial.TrialState.PRUNED)):
        trial = study.ask()
        trial.set_user_attr("run_dir", str(run_dir))  # no recorded state: the trial's own, in our words
        study.tell(trial, 0.5 if state == optuna.trial.TrialState.COMPLETE else None, state=state)
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    local = load_runs(tmp_path / "runs")
    trials = load_runs(f"optuna://{storage}")
    remote = load_runs("wandb://lipteam/lipsweep/k3x9q2ab", api=recorded_api)
    for table in (local, trials, remote):
        assert set(table["state"]) <= set(STATES)
    assert list(trials["state"]) == ["finished", "pruned", "failed"]
    assert list(local["run_id"]) == list(trials["run_id"][:2]) == ["w1a2b3c4", "t1"]  # the W&B id, else the folder
    assert trials["run_id"][2] == "trial-2" and list(trials["trial"]) == [0, 1, 2]
