"""W&B's Optuna engine with the project's study factory, without a server: the YAML sent, the factory, wandb's own loop."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from wandb.sdk.sweeps.run_state import RunState
from wandb.sdk.sweeps.scheduler.optimizer import RunConfig, RunWithMetrics
from wandb.sdk.sweeps.scheduler.optuna import OptunaDeclarativeOptimizer, search_space_from_sweep_config
from wandb.sdk.sweeps.sweep_info import SweepInfo

from launch.engine.spec import PROJECT_KEYS, SweepSpec, check_sweep, load_sweep
from launch.engine.wandb_create import FACTORY, SOURCE, create_sweep, scheduler_config
from launch.engine.wandb_scheduler import STORAGE_ENV, SWEEP_FILE_ENV, make_study, project_optimizer, run_scheduler

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))
COMMAND = ["${env}", "${interpreter}", "-m", "launch", "train", "--config", "configs/small.yaml", "${args}"]


@pytest.fixture
def wandb_request(monkeypatch):
    """The real `wandb.sweep`, stopped at the request: what `_upsert_sweep` would send to the server."""
    import wandb
    import wandb.apis.public.sweeps as public_sweeps
    from wandb.sdk import wandb_login

    sent = []

    def upsert(api, config, **kwargs):
        sent.append(json.loads(json.dumps(config)))  # the server gets it as YAML text: plain data only
        return {"name": f"sw{len(sent)}", "project": {"name": "proj", "entity": {"name": "ent"}}}, []

    class Api:
        settings = {"base_url": "https://api.wandb.ai", "entity": "ent", "project": "proj"}
        default_entity = "ent"

    monkeypatch.setattr(public_sweeps, "_upsert_sweep", upsert)
    monkeypatch.setattr(wandb_login, "_login", lambda **kwargs: (True, None))  # logged in: (success, key)
    monkeypatch.setattr(wandb, "Api", Api)
    return sent


def write(tmp_path: Path, name: str = "sw", **raw) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def info(sweep_id: str, config: dict) -> SweepInfo:
    return SweepInfo(id=sweep_id, name=sweep_id, entity="ent", project="proj", config=config, controller_run_name="c")


# --------------------------------------------------------------------------- create --engine optuna: the YAML W&B receives


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_every_shipped_sweep_goes_unchanged_through_both_engines(tmp_path, path, wandb_request):
    from wandb.apis.public.sweeps import _validate_config_and_fill_distribution

    spec = load_sweep(path)
    builtin = create_sweep(spec, records=tmp_path, engine="wandb")
    optuna_engine = create_sweep(spec, records=tmp_path, engine="optuna")
    plain, custom = wandb_request
    raw = {k: v for k, v in spec.raw.items() if k not in PROJECT_KEYS}
    selecting = [*raw["command"][:-1], f"train.select_metric={spec.metric}", "${args}"]  # the one word added
    assert raw["command"][-1] == "${args}" and plain == {**raw, "command": selecting}
    assert not set(PROJECT_KEYS) & set(custom)
    assert custom["method"] == "custom" and "early_terminate" not in custom
    assert custom["scheduler"] == {"engine": "optuna", "source": SOURCE, "optimizer": FACTORY}
    assert custom["parameters"] == spec.raw["parameters"] and custom["command"] == selecting
    for config in (plain, custom):
        assert check_sweep(SweepSpec(config)) == []  # W&B's schema, our keys, the source file and its factory
        _validate_config_and_fill_distribution(config)  # wandb's own client-side check
    for created in (builtin, optuna_engine):  # the YAML as written (pruner, base_config, method) beside the id
        assert yaml.safe_load((created.record_dir / "sweep.yaml").read_text()) == spec.raw
    assert yaml.safe_load((optuna_engine.record_dir / "sent.yaml").read_text()) == custom


def test_a_yaml_with_a_scheduler_block_is_sent_as_written(tmp_path):
    raw = {"method": "custom", "metric": {"name": "val/cer"}, "command": COMMAND,
           "parameters": {"optim.lr": {"values": [1e-3, 1e-2]}}, "pruner": {"type": "median"},
           "scheduler": {"engine": "optuna", "source": SOURCE, "optimizer": FACTORY}}  # fmt: skip
    spec = SweepSpec(raw)
    assert check_sweep(spec) == []
    selecting = [*COMMAND[:-1], "train.select_metric=val/cer", "${args}"]
    assert scheduler_config(spec) == {**{k: v for k, v in raw.items() if k != "pruner"}, "command": selecting}
    with pytest.raises(Exception, match="scheduler.engine is ax"):
        scheduler_config(SweepSpec({**raw, "scheduler": {"engine": "ax"}}))


def test_cli_create_prints_the_scheduler_and_agent_commands(tmp_path, wandb_request):
    from click.testing import CliRunner

    from launch.cli import cli

    path = write(tmp_path, method="random", metric={"name": "val/cer"}, run_cap=4,
                 parameters={"optim.lr": {"values": [1e-3, 1e-2]}}, pruner={"type": "median"},
                 command=[*COMMAND[:-1], f"train.run_dir={tmp_path / 'runs'}", "${args}"])  # fmt: skip
    result = CliRunner().invoke(
        cli, ["sweep", "create", str(path), "--engine", "optuna", "--project", "proj", "--entity", "ent"]
    )
    assert result.exit_code == 0, result.output
    assert "python -m launch sweep scheduler ent/proj/sw1" in result.output
    assert "python -m launch sweep agent ent/proj/sw1" in result.output
    assert wandb_request[0]["method"] == "custom" and "pruner" not in wandb_request[0]
    kept = yaml.safe_load((tmp_path / "runs" / "wandb_sweeps" / "sw1" / "sweep.yaml").read_text())
    assert kept["pruner"] == {"type": "median"} and kept["method"] == "random"


# --------------------------------------------------------------------------- the factory


@pytest.mark.parametrize(
    "method, sampler", [("grid", optuna.samplers.GridSampler), ("random", optuna.samplers.RandomSampler),
                        ("bayes", optuna.samplers.TPESampler), ("custom", optuna.samplers.TPESampler)],
)  # fmt: skip
@pytest.mark.parametrize(
    "extra, pruner",
    [
        ({"pruner": {"type": "median", "n_warmup_steps": 2}}, optuna.pruners.MedianPruner),
        ({"pruner": {"type": "halving", "min_resource": 2}}, optuna.pruners.SuccessiveHalvingPruner),
        ({"pruner": {"type": "patient", "patience": 2}}, optuna.pruners.PatientPruner),
        ({"early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 3}}, optuna.pruners.HyperbandPruner),
        ({}, optuna.pruners.NopPruner),
    ],
)
def test_factory_builds_the_sampler_pruner_and_direction_of_the_yaml(
    tmp_path, monkeypatch, method, sampler, extra, pruner
):
    raw = {"method": method, "metric": {"name": "val/cer", "goal": "minimize"}, "command": COMMAND,
           "parameters": {"optim.lr": {"values": [1e-3, 1e-2]}, "model.ctc_weight": {"values": [0.1, 0.3]}}, **extra}  # fmt: skip
    if method == "custom":
        raw["scheduler"] = {"engine": "optuna", "source": SOURCE, "optimizer": FACTORY}
    path = write(tmp_path, **raw)
    if method == "custom" and "early_terminate" in extra:  # W&B refuses it beside a scheduler: so does validate
        assert check_sweep(load_sweep(path)) == [
            "early_terminate: cannot be used beside scheduler (the scheduler's pruner stops runs)"
        ]
        return
    assert check_sweep(load_sweep(path)) == []
    monkeypatch.setenv(SWEEP_FILE_ENV, str(path))
    study = make_study(info("abc", scheduler_config(load_sweep(path))))
    assert isinstance(study.sampler, sampler) and isinstance(study.pruner, pruner)
    assert study.directions == [optuna.study.StudyDirection.MINIMIZE]


def test_factory_finds_the_kept_yaml_by_sweep_id_and_sets_several_directions(tmp_path, wandb_request):
    runs = tmp_path / "runs"
    path = write(tmp_path, method="custom", run_cap=4, pruner={"type": "median"},
                 metrics=[{"name": "val/cer", "goal": "minimize"}, {"name": "train/clips_per_s", "goal": "maximize"}],
                 scheduler={"engine": "optuna", "source": SOURCE, "optimizer": FACTORY},
                 parameters={"optim.lr": {"values": [1e-3, 1e-2]}},
                 command=[*COMMAND[:-1], f"train.run_dir={runs}", "${args}"])  # fmt: skip
    spec = load_sweep(path)
    assert check_sweep(spec) == []
    created = create_sweep(spec, engine="optuna")  # kept under <train.run_dir>/wandb_sweeps/<id>/
    assert created.record_dir == runs / "wandb_sweeps" / "sw1"
    study = make_study(info("sw1", wandb_request[0]))
    assert [d.name for d in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    assert isinstance(study.pruner, optuna.pruners.NopPruner)  # Optuna prunes one objective only
    optimizer = project_optimizer(info("sw1", wandb_request[0]))  # wandb accepts it: directions match the goals
    assert isinstance(optimizer, OptunaDeclarativeOptimizer)


# --------------------------------------------------------------------------- wandb's own loop, fed recorded histories


def history(start: float, epochs: int) -> list[dict]:
    """A recorded run history as W&B samples it: one row an epoch, val/cer falling."""
    return [{"_step": e - 1, "epoch": e, "val/cer": start + 0.5 / e} for e in range(1, epochs + 1)]


def drive(optimizer, histories: list[list[dict]]) -> dict[str, str]:
    """What wandb's scheduler does: ask, then each poll tell every run's history so far and ask which to prune."""
    suggestions = list(optimizer.ask_n_runs(len(histories)))
    assert len(suggestions) == len(histories)
    outcome: dict[str, str] = {}
    for s, rows in zip(suggestions, histories, strict=True):
        for poll in range(1, len(rows) + 1):
            data = RunWithMetrics(s.config, RunState.RUNNING, f"run{s.run_id}", {}, rows[:poll])
            optimizer.tell_run(s.run_id, data)
            if optimizer.prune_runs([s.run_id], [data]):
                outcome[s.run_id] = f"pruned at poll {poll}"
                killed = RunWithMetrics(s.config, RunState.KILLED, f"run{s.run_id}", {}, rows[:poll])
                optimizer.tell_run(s.run_id, killed)  # the stopped run is reported again: a no-op
                break
        else:
            summary = {"val/cer": rows[-1]["val/cer"]}
            optimizer.tell_run(s.run_id, RunWithMetrics(s.config, RunState.FINISHED, f"run{s.run_id}", summary, rows))
            outcome[s.run_id] = "finished"
    return outcome


def demo_optimizer(monkeypatch, tmp_path, storage: str | None = None, sweep_id: str = "demo1"):
    """The shipped demo sweep with a median pruner (2 startup trials, 1 warm-up step) as `create --engine optuna` sends it.

    (The shipped file prunes by successive halving; the median pruner makes these loop tests' outcomes easy to read.)"""
    raw = yaml.safe_load((ROOT / "sweeps" / "demo.yaml").read_text(encoding="utf-8"))
    raw["pruner"] = {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1}
    sweep_file = tmp_path / "demo.yaml"
    sweep_file.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    monkeypatch.setenv(SWEEP_FILE_ENV, str(sweep_file))
    if storage:
        monkeypatch.setenv(STORAGE_ENV, storage)
    config = scheduler_config(load_sweep(sweep_file))
    return project_optimizer(info(sweep_id, config))


def test_wandbs_optuna_loop_prunes_a_clearly_worse_run_and_completes_the_others(monkeypatch, tmp_path):
    optimizer = demo_optimizer(monkeypatch, tmp_path)
    assert isinstance(optimizer, OptunaDeclarativeOptimizer)  # wandb's own class, loaded from scheduler.source
    assert isinstance(optimizer.study.pruner, optuna.pruners.MedianPruner)
    assert optimizer.distributions == search_space_from_sweep_config(
        load_sweep(ROOT / "sweeps" / "demo.yaml").parameters
    )
    outcome = drive(optimizer, [history(0.30, 6), history(0.35, 6), history(2.0, 6), history(0.32, 6)])
    assert outcome == {"0": "finished", "1": "finished", "2": "pruned at poll 2", "3": "finished"}
    states = {t.number: t.state.name for t in optimizer.study.trials}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED", 3: "COMPLETE"}
    assert optimizer.study.trials[0].value == pytest.approx(0.30 + 0.5 / 6)
    assert optimizer.study.trials[0].intermediate_values[5] == pytest.approx(0.30 + 0.5 / 6)


def test_a_restarted_scheduler_continues_the_stored_study(monkeypatch, tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    first = demo_optimizer(monkeypatch, tmp_path, storage)
    assert drive(first, [history(0.30, 4), history(0.35, 4)]) == {"0": "finished", "1": "finished"}
    left_running = first.ask_n_runs(1)[0]  # in flight when the scheduler stopped
    first.tell_run(left_running.run_id, RunWithMetrics(left_running.config, RunState.RUNNING, "r", {}, history(0.4, 2)))

    restarted = demo_optimizer(monkeypatch, tmp_path, storage)
    for t in first.study.trials[:2]:  # wandb's warm start: every finished run of the sweep is told again
        summary = {"val/cer": t.value}
        data = RunWithMetrics(RunConfig.from_values(t.params), RunState.FINISHED, "r", summary, [])
        restarted.tell_existing_finished_run(data)
    trials = restarted.study.trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL"]  # no duplicate; the orphan closed
    assert trials[0].intermediate_values  # the pruning history survived the restart
    assert drive(restarted, [history(2.0, 4)]) == {"3": "pruned at poll 2"}  # so the pruner acts at once


def test_an_in_memory_restart_warm_starts_values_but_not_pruning_history(monkeypatch, tmp_path):
    first = demo_optimizer(monkeypatch, tmp_path)
    drive(first, [history(0.30, 4), history(0.35, 4)])
    restarted = demo_optimizer(monkeypatch, tmp_path)
    for t in first.study.trials:
        data = RunWithMetrics(RunConfig.from_values(t.params), RunState.FINISHED, "r", {"val/cer": t.value}, [])
        restarted.tell_existing_finished_run(data)
    assert [t.state.name for t in restarted.study.trials] == ["COMPLETE", "COMPLETE"]
    assert not restarted.study.trials[0].intermediate_values
    assert drive(restarted, [history(2.0, 4)]) == {"2": "finished"}  # nothing to compare with at each epoch


# --------------------------------------------------------------------------- `sweep scheduler`


def test_sweep_scheduler_runs_wandbs_scheduler_with_the_project_factory(tmp_path, monkeypatch):
    calls = {}

    def fake_run(**kwargs):
        calls.update(kwargs)
        return "done"

    monkeypatch.delenv(STORAGE_ENV, raising=False)
    storage = f"sqlite:///{tmp_path / 's.db'}"
    sweep_file = ROOT / "sweeps" / "demo.yaml"
    assert (
        run_scheduler("ent/proj/abc", storage=storage, sweep_file=str(sweep_file), batch_size=2, run=fake_run) == "done"
    )
    assert {k: calls[k] for k in ("entity", "project", "sweep_id", "batch_size")} == {
        "entity": "ent", "project": "proj", "sweep_id": "abc", "batch_size": 2}  # fmt: skip
    optimizer = calls["make_optimizer"](info("abc", scheduler_config(load_sweep(sweep_file))))
    assert isinstance(optimizer, OptunaDeclarativeOptimizer)
    assert optuna.study.get_all_study_names(storage) == ["wandb-abc"]
    with pytest.raises(Exception, match="entity/project/ID"):
        run_scheduler("abc", run=fake_run)


def test_cli_sweep_scheduler_passes_its_options(tmp_path, monkeypatch):
    from click.testing import CliRunner

    import launch.engine.wandb_scheduler as S
    from launch.cli import cli

    seen = {}
    monkeypatch.setattr(S, "run_scheduler", lambda sweep_id, **kw: seen.update(kw, sweep_id=sweep_id))
    storage = f"sqlite:///{tmp_path / 's.db'}"
    result = CliRunner().invoke(
        cli, ["sweep", "scheduler", "ent/proj/abc", "--storage", storage, "--poll-interval", "2"]
    )
    assert result.exit_code == 0, result.output
    assert seen["sweep_id"] == "ent/proj/abc" and seen["storage"] == storage and seen["poll_interval"] == 2.0


# --------------------------------------------------------------------------- validate: scheduler.source


def write_source(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sched.py"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text, block, expected",
    [
        ("def study(sweep):\n    pass\n", {"optimizer": "study"}, None),
        ("def space(trial):\n    return {}\n", {"search_space": "space"}, None),
        ("", {"optimizer": "study"}, "scheduler.optimizer: {src} has no attribute 'study'"),
        ("study = 3\n", {"optimizer": "study"}, "scheduler.optimizer: 'study' in {src} is int, not a function"),
        (
            "def study():\n    pass\n",
            {"optimizer": "study"},
            "scheduler.optimizer: 'study' in {src} cannot be called with one SweepInfo argument",
        ),
        (
            "def space(trial, x):\n    pass\n",
            {"search_space": "space"},
            "scheduler.search_space: 'space' in {src} cannot be called with one optuna.Trial argument",
        ),
        (
            "import nope_not_a_module\n",
            {"optimizer": "study"},
            "scheduler.source: importing {src} fails: ModuleNotFoundError",
        ),
    ],
)
def test_scheduler_source_is_checked_as_wandb_calls_it(tmp_path, text, block, expected):
    src = write_source(tmp_path, text)
    raw = {"method": "custom", "metric": {"name": "val/cer"}, "command": COMMAND,
           "parameters": {"optim.lr": {"values": [1e-3]}}, "scheduler": {"engine": "optuna", "source": src, **block}}  # fmt: skip
    out = check_sweep(SweepSpec(raw))
    if expected is None:
        assert out == []
    else:
        assert len(out) == 1 and out[0].startswith(expected.format(src=src).split(": ")[0]), out
        assert expected.format(src=src) in out[0], out


def test_scheduler_source_missing_is_refused_with_its_path(tmp_path):
    raw = {"method": "custom", "metric": {"name": "val/cer"}, "command": COMMAND,
           "parameters": {"optim.lr": {"values": [1e-3]}},
           "scheduler": {"engine": "optuna", "source": str(tmp_path / "gone.py"), "optimizer": "f"}}  # fmt: skip
    out = check_sweep(SweepSpec(raw))
    assert len(out) == 1 and out[0].startswith(f"scheduler.source: {tmp_path / 'gone.py'} not found")


def curve_train(cfg, *, name=None, resume=None, prune=None, verbose=True):
    """A fake trainer: a run folder with a val/cer curve that is best at lr 1e-3."""
    import math

    from runfolders import curve_run

    return curve_run(cfg, name, prune, lambda epoch: 0.2 + abs(math.log10(cfg.optim.lr / 1e-3)) + 0.5 / epoch)


def test_the_demo_yaml_also_runs_unchanged_under_sweep_local(tmp_path):
    """The third engine for the same file: `sweep local` (the other two are checked above up to the request)."""
    from launch.engine.local import run_local_sweep
    from launch.engine.plan import prepare

    spec = load_sweep(ROOT / "sweeps" / "demo.yaml")
    sweep = prepare(spec, trials=3, overrides=[f"train.run_dir={tmp_path}", "train.max_epochs=2"], heartbeat=0,
                    verbose=False)  # fmt: skip
    assert sweep.pruner == spec.pruner
    study = run_local_sweep(sweep, workers=1, train_fn=curve_train)
    assert len(study.trials) == 3 and all(t.state.name in ("COMPLETE", "PRUNED") for t in study.trials)
    assert all(t.distributions == search_space_from_sweep_config(spec.parameters) for t in study.trials)
