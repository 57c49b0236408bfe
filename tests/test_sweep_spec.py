"""Sweep YAMLs: W&B's schema, our config keys, wandb's mapping to Optuna, the grid, and the shipped sweeps."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from launch.engine.params import grid_size, grid_space
from launch.engine.spec import SweepSpec, check_sweep, load_sweep, validate_sweep
from launch.engine.study import suggest
from trainer import config as config_mod
from trainer.errors import ConfigError
from trainer.metrics import METRICS, SELECTABLE

ROOT = Path(__file__).resolve().parents[1]
COMMAND = ["${env}", "${interpreter}", "-m", "launch", "train", "--config", "configs/small.yaml", "${args}"]


def sweep(parameters: dict, **top) -> SweepSpec:
    raw = {"method": "random", "metric": {"name": "val/cer", "goal": "minimize"}, "parameters": parameters,
           "command": COMMAND, **top}  # fmt: skip
    return SweepSpec(raw)


def problems(parameters: dict | None = None, **top) -> list[str]:
    return check_sweep(sweep(parameters or {"optim.lr": {"values": [1e-3]}}, **top))


# --------------------------------------------------------------------------- every distribution kind

KINDS = {
    "values": ("model.adapter", {"values": ["none", "linear", "mlp"]}, optuna.distributions.CategoricalDistribution),
    "constant": ("decode.beam_size", {"value": 5}, optuna.distributions.CategoricalDistribution),
    "int_uniform": ("model.encoder.layers", {"distribution": "int_uniform", "min": 1, "max": 4}, optuna.distributions.IntDistribution),
    "inferred int": ("decode.beam_size", {"min": 1, "max": 8}, optuna.distributions.IntDistribution),
    "uniform": ("model.dropout", {"distribution": "uniform", "min": 0.0, "max": 0.5}, optuna.distributions.FloatDistribution),
    "inferred float": ("model.ctc_weight", {"min": 0.1, "max": 0.9}, optuna.distributions.FloatDistribution),
    "log_uniform_values": ("optim.lr", {"distribution": "log_uniform_values", "min": 1e-5, "max": 1e-2}, optuna.distributions.FloatDistribution),
    "q_uniform int": ("augment.time_mask_window", {"distribution": "q_uniform", "min": 0, "max": 20, "q": 5}, optuna.distributions.IntDistribution),
    "q_uniform float": ("decode.ctc_weight", {"distribution": "q_uniform", "min": 0.0, "max": 0.6, "q": 0.1}, optuna.distributions.FloatDistribution),
    "q_log_uniform_values int": ("decode.beam_size", {"distribution": "q_log_uniform_values", "min": 1, "max": 64}, optuna.distributions.IntDistribution),
    "q_log_uniform_values float": ("optim.weight_decay", {"distribution": "q_log_uniform_values", "min": 1e-4, "max": 1e-1, "q": 0.5}, optuna.distributions.FloatDistribution),
    "categorical": ("augment.time_warp", {"distribution": "categorical", "values": [True, False]}, optuna.distributions.CategoricalDistribution),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_distribution_kind_samples_in_range_and_of_the_key_type(kind):
    from wandb.sdk.sweeps.scheduler.optuna import sweep_parameter_to_distribution

    key, spec, dist_type = KINDS[kind]
    s = sweep({key: spec})
    assert check_sweep(s) == []
    dist = s.distributions()[key]
    assert dist == sweep_parameter_to_distribution(spec)  # one mapping: wandb's own
    assert isinstance(dist, dist_type)
    keyspec = config_mod.schema()[key]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        value = suggest(study.ask(), key, dist)
        seen.add(value)
        assert config_mod.coerce(keyspec, value) == value  # right type, in the key's range
        if "min" in spec:
            assert spec["min"] <= value <= spec["max"]
        if "values" in spec:
            assert value in spec["values"]
        if kind.startswith("q_uniform"):
            assert abs(value / spec["q"] - round(value / spec["q"])) < 1e-9
        if keyspec.type is int:
            assert type(value) is int
    if "value" not in spec:
        assert len(seen) > 1


@pytest.mark.parametrize(
    "spec, reason",
    [
        ({"distribution": "normal", "mu": 0.001, "sigma": 0.0001}, "'normal' has no optuna equivalent"),
        ({"distribution": "log_uniform", "min": -9.0, "max": -3.0}, "'log_uniform' has no optuna equivalent"),
        ({"distribution": "inv_log_uniform_values", "min": 1e-4, "max": 1e-2}, "no optuna equivalent"),
    ],
)
def test_distributions_wandbs_mapping_refuses_are_refused_with_its_reason(spec, reason):
    out = problems({"optim.lr": spec})
    assert len(out) == 1 and out[0].startswith("parameters.optim.lr: ") and reason in out[0]


# --------------------------------------------------------------------------- validate: one line per problem, with its path


def test_misspelt_key_gets_the_suggestion():
    assert problems({"optim.lrr": {"values": [1e-3]}}) == [
        "parameters.optim.lrr: unknown config key; did you mean optim.lr?"
    ]


@pytest.mark.parametrize(
    "spec, expected",
    [
        (
            {"distribution": "normal", "mean": 0.0, "sigma": 1.0},
            "parameters.optim.lr.mean: not a field of the normal distribution",
        ),
        ({"values": [1e-3], "min": 1e-4}, "parameters.optim.lr.min: not a field of the categorical distribution"),
        ({"distribution": "uniform", "min": 1e-4}, "parameters.optim.lr.max: required by the uniform distribution"),
        (
            {"distribution": "unifrom", "min": 1e-4, "max": 1e-3},
            "parameters.optim.lr.distribution: unknown distribution 'unifrom'; did you mean uniform?",
        ),
        (
            {"distribution": "log_uniform_values", "min": 0.0, "max": 1e-3},
            "parameters.optim.lr.min: the log_uniform_values distribution needs min > 0",
        ),
        ({"min": 0, "max": 0.01}, "ambiguous"),
        ({"distribution": "q_uniform", "min": 0.0, "max": 1.0, "q": 0}, "parameters.optim.lr.q: must be above 0"),
    ],
)
def test_wrong_distribution_fields(spec, expected):
    out = problems({"optim.lr": spec})
    assert len(out) == 1 and expected in out[0], out


@pytest.mark.parametrize(
    "key, spec, expected",
    [
        (
            "augment.time_warp",
            {"values": [True, "sometimes"]},
            "parameters.augment.time_warp.values[1]: augment.time_warp: 'sometimes'",
        ),
        ("model.encoder.layers", {"distribution": "uniform", "min": 1.0, "max": 4.0}, "is an integer; use int_uniform"),
        ("model.dropout", {"distribution": "uniform", "min": 0.0, "max": 1.5}, "expected float in [0, 0.9]"),
        ("model.adapter", {"values": ["none", "big"]}, "parameters.model.adapter.values[1]"),
        ("decode.beam_size", {"values": [0, 4]}, "parameters.decode.beam_size.values[0]"),
        ("model.frontend.widths", {"values": [[8, 16, 32, 64]]}, "Optuna samples only scalars"),
        ("model.adapter", {"min": 1, "max": 3}, "sweep it with values"),
    ],
)
def test_value_of_the_wrong_type_or_range(key, spec, expected):
    out = problems({key: spec})
    assert len(out) == 1 and expected in out[0], out


@pytest.mark.parametrize(
    "metric, expected",
    [
        (
            {"name": "val_cer", "goal": "minimize"},
            "metric.name: 'val_cer' is not a metric lipsweep logs; did you mean val/cer?",
        ),
        ({"name": "val/cer", "goal": "min"}, "metric.goal: 'min' must be minimize or maximize"),
        ({"goal": "minimize"}, "metric.name: missing"),
        ({"name": "val/cer", "goall": "minimize"}, "metric.goall: not a metric field"),
    ],
)
def test_bad_metric(metric, expected):
    out = problems(metric=metric)
    assert len(out) == 1 and out[0].startswith(expected), out


@pytest.mark.parametrize(
    "top, expected",
    [
        ({"method": "grdi"}, "method: 'grdi' is not one of grid, random, bayes, custom; did you mean grid?"),
        ({"run_cap": 0}, "run_cap: must be an integer above 0"),
        (
            {"early_termination": {"type": "hyperband"}},
            "early_termination: not a W&B sweep key (nor base_config/pruner); did you mean early_terminate?",
        ),
        (
            {"early_terminate": {"type": "hyperband", "eta": 3}},
            "early_terminate: needs min_iter, or max_iter together with s",
        ),
        (
            {"early_terminate": {"type": "hyperband", "min_iter": 2, "eta": 1}},
            "early_terminate.eta: must be a number above 1",
        ),
        ({"pruner": {"type": "medain"}}, "pruner.type: must be one of none, median"),
        ({"pruner": {"type": "median", "warmup": 2}}, "pruner.warmup: not an option of the median pruner"),
        ({"pruner": {"type": "patient"}}, "pruner.patience: required by the patient pruner"),
        ({"command": ["python", "train.py", "${args}"]}, "command: must run lipsweep's entrypoint `-m launch train`"),
        ({"command": [*COMMAND[:-1], "${args_json}"]}, "command: ${args_json} is not understood"),
        ({"command": [*COMMAND, "optim.lrr=1"]}, "command: optim.lrr=1: unknown config key; did you mean optim.lr?"),
        ({"base_config": "configs/nope.yaml"}, "base_config: configs/nope.yaml differs from the command's --config"),
        ({"scheduler": {"engine": "optuna"}}, "scheduler.engine: optuna needs method: custom"),
    ],
)
def test_top_level_problems(top, expected):
    out = problems(**top)
    assert any(p.startswith(expected) for p in out), out


def test_program_without_command_is_refused():
    raw = {
        "method": "grid",
        "metric": {"name": "val/cer"},
        "parameters": {"optim.lr": {"values": [1e-3]}},
        "program": "train.py",
    }
    out = check_sweep(SweepSpec(raw))
    assert len(out) == 1 and out[0].startswith("program: W&B would run `python train.py --key=value`")


def test_constraints_between_keys_are_checked_on_the_base_config():
    out = problems({"model.encoder.dim": {"values": [64, 96]}})  # decoder.dim stays 64 in small.yaml
    assert len(out) == 1 and "model.decoder.dim (64) must equal model.encoder.dim (96)" in out[0]
    assert problems({"model.encoder.dim": {"values": [64, 96]}, "model.decoder.dim": {"values": [64, 96]}}) != []
    assert problems({"model.encoder.layers": {"values": [1, 2]}}) == []


def test_decoding_sweep_on_a_checkpoint_varies_only_decode_keys():
    cfg = config_mod.load_config("configs/small.yaml")
    s = sweep({"decode.beam_size": {"values": [1, 2]}, "optim.lr": {"values": [1e-3]}})
    assert check_sweep(s, checkpoint_config=cfg) == [
        "parameters.optim.lr: a sweep on a trained checkpoint can only vary decode.* keys"
    ]


def test_validate_raises_with_every_problem_and_the_cli_exits_non_zero(tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli

    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"method": "grid", "metric": {"name": "val/cerr"}, "command": COMMAND,
                                    "parameters": {"optim.lrr": {"values": [1]}, "decode.beam_size": {"values": [0]}}}))  # fmt: skip
    with pytest.raises(ConfigError) as e:
        validate_sweep(path)
    assert len(e.value.problems) == 3
    result = CliRunner().invoke(cli, ["sweep", "validate", str(path)])
    assert result.exit_code == 1
    lines = [line for line in result.output.splitlines() if line.startswith(f"{path}: ")]
    assert f"{path}: parameters.optim.lrr: unknown config key; did you mean optim.lr?" in lines
    assert any("metric.name: 'val/cerr'" in line for line in lines)
    assert any("parameters.decode.beam_size.values[0]" in line for line in lines)


# --------------------------------------------------------------------------- grid


def test_grid_space_and_size():
    s = sweep({"decode.beam_size": {"distribution": "int_uniform", "min": 1, "max": 4},
               "decode.ctc_weight": {"distribution": "q_uniform", "min": 0.0, "max": 0.4, "q": 0.2},
               "augment.time_warp": {"values": [True, False]}}, method="grid")  # fmt: skip
    assert check_sweep(s) == []
    space = grid_space(s.distributions())
    assert space["decode.beam_size"] == [1, 2, 3, 4]
    assert space["decode.ctc_weight"] == pytest.approx([0.0, 0.2, 0.4])
    assert grid_size(space) == 4 * 3 * 2


def test_grid_refuses_continuous_parameters():
    out = problems({"optim.lr": {"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-2}}, method="grid")
    assert out == ["parameters.optim.lr: method grid needs discrete values (values:, int_uniform or q_uniform)"]


# --------------------------------------------------------------------------- the shipped sweeps


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_are_valid_and_commented(path):
    spec = load_sweep(path)
    assert check_sweep(spec) == []
    assert spec.metric == "val/cer" and spec.goal == "minimize"
    assert path.read_text(encoding="utf-8").startswith("#")  # says what it asks and what it costs
    assert all("." in key for key in spec.parameters)


def test_all_six_sweeps_exist():
    names = {p.stem for p in (ROOT / "sweeps").glob("*.yaml")}
    assert {"lr_warmup", "ctc_weight", "decoding", "augmentation", "architecture", "demo"} <= names


# --------------------------------------------------------------------------- scheduler sweeps and several objectives

SCHEDULER = {"engine": "optuna", "source": "launch/engine/wandb_scheduler.py", "optimizer": "make_study"}
TWO_METRICS = [{"name": "val/cer", "goal": "minimize"}, {"name": "time/epoch_s", "goal": "minimize"}]


def custom(**top) -> SweepSpec:
    raw = {"method": "custom", "metrics": TWO_METRICS, "scheduler": dict(SCHEDULER), "command": COMMAND,
           "parameters": {"optim.lr": {"values": [1e-3, 1e-2]}}, **top}  # fmt: skip
    return SweepSpec({k: v for k, v in raw.items() if v is not None})


def test_scheduler_and_multi_objective_sweeps_are_valid():
    assert check_sweep(custom()) == []
    assert check_sweep(custom(metrics=None, metric={"name": "val/cer"})) == []
    assert check_sweep(custom(scheduler={"engine": "optuna"})) == []  # wandb's own study: no source needed
    spec = custom(metrics=[TWO_METRICS[0], {"name": "train/clips_per_s", "goal": "maximize"}])
    assert check_sweep(spec) == [] and spec.directions == ["minimize", "maximize"] and spec.multi_objective
    assert spec.metric == "val/cer" and spec.objectives[1] == ("train/clips_per_s", "maximize")


@pytest.mark.parametrize(
    "top, expected",
    [
        ({"method": "random"}, "scheduler.engine: optuna needs method: custom"),
        ({"scheduler": {"engine": "wandb"}}, "scheduler.engine: wandb needs method grid, random or bayes"),
        ({"scheduler": {"engine": "optuan"}}, "scheduler.engine: must be one of optuna, ax, wandb"),
        ({"scheduler": {"engine": "optuna", "optimizer": "make_study"}}, "scheduler.optimizer: needs scheduler.source"),
        (
            {"scheduler": {"engine": "optuna", "search_space": "space"}},
            "scheduler.search_space: needs scheduler.source",
        ),
        ({"scheduler": {**SCHEDULER, "sampler": "tpe"}}, "scheduler.sampler: not a scheduler field"),
        ({"scheduler": {**SCHEDULER, "optimizer": "make_studdy"}}, "scheduler.optimizer: "),
        ({"scheduler": None}, "method: custom needs a scheduler: block"),
        ({"early_terminate": {"type": "hyperband", "min_iter": 2}}, "early_terminate: cannot be used beside scheduler"),
        ({"metrics": [TWO_METRICS[0]]}, "metrics: a list of two or more metrics"),
        ({"metric": {"name": "val/cer"}}, "metrics: cannot be used beside metric"),
        (
            {"metrics": [TWO_METRICS[0], {"name": "val/werr"}]},
            "metrics[1].name: 'val/werr' is not a metric lipsweep logs; did you mean val/wer?",
        ),
        ({"metrics": [TWO_METRICS[0], {"name": "time/epoch_s", "goal": "min"}]}, "metrics[1].goal: 'min' must be"),
    ],
)
def test_each_broken_scheduler_or_metrics_variant_is_refused_with_its_path(top, expected):
    out = check_sweep(custom(**top))
    assert any(p.startswith(expected) for p in out), out


def test_metrics_need_method_custom():
    s = sweep({"optim.lr": {"values": [1e-3]}})
    raw = {k: v for k, v in s.raw.items() if k != "metric"}
    out = check_sweep(SweepSpec({**raw, "metrics": TWO_METRICS}))
    assert out == ["metrics: several objectives need method: custom with a scheduler"]


# --------------------------------------------------------------------------- metrics from the registry (trainer/metrics.py)


@pytest.mark.parametrize("name", SELECTABLE)
def test_every_selectable_metric_is_a_sweep_metric_with_its_registry_goal(name):
    goal = METRICS[name].goal
    assert problems(metric={"name": name, "goal": goal}) == []
    other = "maximize" if goal == "minimize" else "minimize"
    out = problems(metric={"name": name, "goal": other})
    assert out == [f"metric.goal: {name} is better {'lower' if goal == 'minimize' else 'higher'}, but the YAML "
                   f"has goal {other}; write goal: {goal}"]  # fmt: skip


def test_a_logged_metric_that_cannot_select_a_checkpoint_is_refused_as_the_first_metric():
    assert "train/loss" in METRICS and "train/loss" not in SELECTABLE
    (out,) = problems(metric={"name": "train/loss", "goal": "minimize"})
    assert out.startswith("metric.name: 'train/loss' cannot be a sweep's (first) metric") and "val/cer" in out
    (out,) = problems(metric={"name": "val/cer_ctc_greedyy"})
    assert out == "metric.name: 'val/cer_ctc_greedyy' is not a metric lipsweep logs; did you mean val/cer_ctc_greedy?"


def test_a_maximized_metric_needs_its_goal_written():
    maximized = next(n for n in SELECTABLE if METRICS[n].goal == "maximize")
    (out,) = problems(metric={"name": maximized})
    assert out.startswith(f"metric.goal: {maximized} is better higher, but the YAML has no goal (W&B then minimizes)")


def test_trials_select_by_the_sweep_metric_so_nothing_may_set_it_otherwise():
    ctc = {"name": "val/cer_ctc_greedy", "goal": "minimize"}
    assert problems(metric=ctc, command=[*COMMAND[:-1], "train.select_metric=val/cer_ctc_greedy", "${args}"]) == []
    (out,) = problems(metric=ctc, command=[*COMMAND[:-1], "--train.select_metric=val/cer", "${args}"])
    assert out.startswith("command: --train.select_metric=val/cer differs from the sweep's metric val/cer_ctc_greedy")
    (out,) = problems({"optim.lr": {"values": [1e-3]}, "train.select_metric": {"values": ["val/cer", "val/loss"]}})
    assert out.startswith("parameters.train.select_metric: set by the sweep's metric (val/cer) for every trial")
    (out,) = check_sweep(sweep({"optim.lr": {"values": [1e-3]}}), ["train.select_metric=val/loss"])
    assert out.startswith("overrides: train.select_metric=val/loss differs from the sweep's metric val/cer")
    (out,) = check_sweep(sweep({"optim.lr": {"values": [1e-3]}}), ["optim.lr"])  # not key=value: one problem
    assert out.startswith("command: override 'optim.lr' is not of the form key=value")


def test_the_command_w_and_b_receives_selects_by_the_sweep_metric():
    spec = sweep({"optim.lr": {"values": [1e-3]}}, metric={"name": "val/cer_ctc_greedy", "goal": "minimize"})
    assert spec.wandb_config()["command"] == [*COMMAND[:-1], "train.select_metric=val/cer_ctc_greedy", "${args}"]
    written = [*COMMAND[:-1], "train.select_metric=val/cer_ctc_greedy", "${args}"]
    kept = sweep({"optim.lr": {"values": [1e-3]}}, metric=spec.raw["metric"], command=written)
    assert kept.wandb_config()["command"] == written  # set in the YAML: sent as written
    assert check_sweep(SweepSpec(spec.wandb_config())) == []


# --------------------------------------------------------------------------- every problem of a parameter (#16.7)


def test_every_problem_of_one_parameter_is_reported_not_only_the_first():
    assert problems({"decode.beam_sizee": {"distribution": "int_uniform", "min": 4, "max": 1, "mean": 2}}) == [
        "parameters.decode.beam_sizee: unknown config key; did you mean decode.beam_size?",
        "parameters.decode.beam_sizee.mean: not a field of the int_uniform distribution (fields: min, max); did you mean min?",
        "parameters.decode.beam_sizee: min (4) is above max (1)",
    ]
    assert problems({"decode.beam_size": {"distribution": "q_uniform", "min": "a", "max": "b", "q": -1}}) == [
        "parameters.decode.beam_size.min: must be a number, got 'a'",
        "parameters.decode.beam_size.max: must be a number, got 'b'",
        "parameters.decode.beam_size.q: must be above 0",
    ]
    assert problems({"decode.beam_size": {"min": -2, "max": 0}}) == [  # both ends outside the key's range
        "parameters.decode.beam_size: decode.beam_size: -2 is not allowed; expected int >= 1",
        "parameters.decode.beam_size: decode.beam_size: 0 is not allowed; expected int >= 1",
    ]


def test_validate_adds_the_config_keys_hint_to_key_errors_only(tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli

    def validate(parameters: dict) -> list[str]:
        path = tmp_path / "s.yaml"
        path.write_text(yaml.safe_dump(sweep(parameters).raw))
        result = CliRunner().invoke(cli, ["sweep", "validate", str(path)])
        assert result.exit_code == 1
        return result.output.splitlines()

    lines = validate({"decode.beam_size": {"values": [0, 2]}})
    assert not any("config keys" in line for line in lines) and lines[-1].endswith(": 1 problem(s)")
    lines = validate({"zzz.qqq": {"values": [1]}, "decode.beam_size": {"values": [0]}})
    hinted = [line for line in lines if "config keys" in line]
    assert (
        len(hinted) == 1 and "parameters.zzz.qqq: unknown config key; see `python -m launch config keys`" in hinted[0]
    )
