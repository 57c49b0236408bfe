"""Sweep YAMLs: loading, validation against W&B's sweep schema and our config schema, and the grid.

A sweep YAML is W&B's own format (method, metric, parameters, early_terminate, run_cap,
command, ...) with parameters named by dotted config keys (`optim.lr:`), plus two keys of
this project that `create` strips before W&B sees them: `base_config:` (the config every
trial starts from) and `pruner:` (an Optuna pruner with its options, for `sweep local` and
for the pruning study under a W&B agent).

`check_sweep` returns every problem as one line `YAML.path: what is wrong`; every sweep
command runs it first. One mapping of parameter specs to Optuna distributions is used
everywhere: wandb's own (`sweep_parameter_to_distribution`), so a spec that mapping refuses
is refused here with its reason.
"""

from __future__ import annotations

import copy
import difflib
import itertools
import math
import typing
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trainer import config as config_mod
from trainer.config import Config, KeySpec
from trainer.errors import ConfigError

# Top-level keys of W&B's sweep schema (its JSON schema refuses any other).
WANDB_KEYS = (
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
)  # fmt: skip
PROJECT_KEYS = ("base_config", "pruner")
METHODS = ("grid", "random", "bayes", "custom")
LOCAL_METHODS = ("grid", "random", "bayes")

# What a trial logs (trainer/train.py: one metrics.jsonl row an epoch) and so what a sweep can optimise.
METRICS = (
    "val/cer", "val/cer_ctc_greedy", "val/letter_er", "val/diacritic_er", "val/loss", "val/loss_ctc", "val/loss_att",
    "train/cer", "train/loss", "train/loss_ctc", "train/loss_att", "train/acc", "time/epoch_s", "train/clips_per_s",
)  # fmt: skip

# Each W&B distribution and the fields its schema allows (the first group is required).
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "constant": (("value",), ()),
    "categorical": (("values",), ()),
    "categorical_w_probabilities": (("values", "probabilities"), ()),
    "int_uniform": (("min", "max"), ()),
    "uniform": (("min", "max"), ()),
    "q_uniform": (("min", "max"), ("q",)),
    "log_uniform": (("min", "max"), ()),
    "log_uniform_values": (("min", "max"), ()),
    "q_log_uniform": (("min", "max"), ("q",)),
    "q_log_uniform_values": (("min", "max"), ("q",)),
    "inv_log_uniform": (("min", "max"), ()),
    "inv_log_uniform_values": (("min", "max"), ()),
    "normal": ((), ("mu", "sigma")),
    "q_normal": ((), ("mu", "sigma", "q")),
    "log_normal": ((), ("mu", "sigma")),
    "q_log_normal": ((), ("mu", "sigma", "q")),
    "beta": ((), ("a", "b")),
    "q_beta": ((), ("a", "b", "q")),
}
HYPERBAND_FIELDS = ("type", "min_iter", "max_iter", "s", "eta", "strict")
METRIC_FIELDS = ("name", "goal", "target", "impute", "impute_while_running")
SCHEDULER_ENGINES = ("optuna", "ax", "wandb")

# The project's pruners and their options: option -> (type, minimum, required).
_STARTUP = {"n_startup_trials": (int, 0, False), "n_warmup_steps": (int, 0, False), "interval_steps": (int, 1, False),
            "n_min_trials": (int, 1, False)}  # fmt: skip
PRUNERS: dict[str, dict[str, tuple[type, float | None, bool]]] = {
    "none": {},
    "median": dict(_STARTUP),
    "percentile": {"percentile": (float, 0.0, True), **_STARTUP},
    "halving": {
        "min_resource": (int, 1, False),
        "reduction_factor": (int, 2, False),
        "min_early_stopping_rate": (int, 0, False),
        "bootstrap_count": (int, 0, False),
    },  # fmt: skip
    "hyperband": {
        "min_resource": (int, 1, False),
        "max_resource": (int, 1, False),
        "reduction_factor": (int, 2, False),
        "bootstrap_count": (int, 0, False),
    },  # fmt: skip
    "patient": {"patience": (int, 0, True), "min_delta": (float, 0.0, False), **_STARTUP},
}
ROOT = Path(__file__).resolve().parents[1]  # the project root
GRID_LIMIT = 10_000  # grids larger than this are refused: nobody runs them, and enumerating them is slow


class SweepError(ConfigError):
    """A sweep YAML has problems; `problems` holds one `path: message` line each."""

    def __init__(self, path: str | Path | None, problems: list[str]):
        self.problems = problems
        head = f"{path}: " if path else ""
        super().__init__(f"{head}{len(problems)} problem(s) in the sweep:\n" + "\n".join(f"  {p}" for p in problems))


@dataclass
class SweepSpec:
    """A loaded sweep YAML (not yet validated: see `check_sweep`)."""

    raw: dict[str, Any]
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or (self.path.stem if self.path else "sweep"))

    @property
    def method(self) -> str:
        return str(self.raw.get("method", ""))

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """[(metric name, goal)]: the `metrics:` list, else the one `metric:` (val/cer, minimize by default)."""
        metrics = self.raw.get("metrics")
        if not isinstance(metrics, list) or not metrics:
            metrics = [self.raw.get("metric") or {}]
        return [
            (str(m.get("name", "val/cer")), "maximize" if m.get("goal") == "maximize" else "minimize")
            for m in metrics
            if isinstance(m, dict)
        ]

    @property
    def metric(self) -> str:
        """The (first) metric's name."""
        return self.objectives[0][0]

    @property
    def goal(self) -> str:
        return self.objectives[0][1]

    @property
    def direction(self) -> str:
        """Optuna's study direction for the (first) metric's goal."""
        return self.goal

    @property
    def directions(self) -> list[str]:
        """Optuna's study directions, one per objective (as wandb's `sweep_directions`)."""
        return [goal for _, goal in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw.get("parameters") or {})

    @property
    def run_cap(self) -> int | None:
        return self.raw.get("run_cap")

    @property
    def early_terminate(self) -> dict[str, Any] | None:
        return self.raw.get("early_terminate")

    @property
    def pruner(self) -> dict[str, Any] | None:
        return self.raw.get("pruner")

    @property
    def base_config(self) -> str:
        """`base_config:`, else the command's `--config`, else configs/small.yaml."""
        return str(self.raw.get("base_config") or command_config(self.raw.get("command")) or "configs/small.yaml")

    @property
    def command_overrides(self) -> list[str]:
        """Fixed `key=value` arguments of the command (for example `tracking.wandb=online`)."""
        return [a for a in command_tail(self.raw.get("command")) if "=" in a and not a.startswith("--config")]

    def wandb_config(self) -> dict[str, Any]:
        """The config W&B receives: the YAML without the project's own keys."""
        return {k: copy.deepcopy(v) for k, v in self.raw.items() if k not in PROJECT_KEYS}

    def distributions(self) -> dict[str, Any]:
        """{key: optuna distribution}, by wandb's own mapping (one mapping everywhere)."""
        return {key: wandb_mapping()(spec) for key, spec in self.parameters.items()}


def wandb_mapping() -> Any:
    """wandb's `sweep_parameter_to_distribution` (wandb >= 0.31): sweep parameter spec -> Optuna distribution."""
    try:
        from wandb.sdk.sweeps.scheduler.optuna import sweep_parameter_to_distribution
    except ImportError as e:
        raise ConfigError(
            f"sweeps need wandb >= 0.31 (its Optuna mapping of sweep parameters): {e}; pip install -U wandb"
        ) from None
    return sweep_parameter_to_distribution


def load_sweep(path: str | Path) -> SweepSpec:
    """Read a sweep YAML (its syntax only; `check_sweep` validates it)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"sweep file not found: {path}")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise SweepError(p, ["(top level): a sweep YAML is a mapping (method:, metric:, parameters:, ...)"])
    return SweepSpec(raw, p)


def validate_sweep(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), *, checkpoint_config: Config | None = None
) -> SweepSpec:
    """Load and check a sweep YAML; raises SweepError listing every problem."""
    spec = load_sweep(path)
    problems = check_sweep(spec, overrides, checkpoint_config=checkpoint_config)
    if problems:
        raise SweepError(path, problems)
    return spec


def _suggest(word: str, known: typing.Iterable[str]) -> str:
    hits = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
    return f"; did you mean {hits[0]}?" if hits else ""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------- the command


def command_tail(command: Any) -> list[str]:
    """The arguments after `-m launch train` in a sweep command."""
    if not isinstance(command, list):
        return []
    words = [str(c) for c in command]
    for i in range(len(words) - 2):
        if words[i : i + 3] == ["-m", "launch", "train"]:
            return words[i + 3 :]
    return []


def command_config(command: Any) -> str | None:
    tail = command_tail(command)
    for i, word in enumerate(tail):
        if word == "--config" and i + 1 < len(tail):
            return tail[i + 1]
        if word.startswith("--config="):
            return word.split("=", 1)[1]
    return None


def _check_command(raw: dict[str, Any], out: list[str]) -> None:
    command = raw.get("command")
    example = "[${env}, ${interpreter}, -m, launch, train, --config, configs/small.yaml, ${args}]"
    if command is None:
        if "program" in raw:
            out.append(
                f"program: W&B would run `python {raw['program']} --key=value`, which is not lipsweep's entrypoint; add command: {example}"
            )
        else:
            out.append(f"command: missing; W&B's agents need it to start a trial: command: {example}")
        return
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        out.append(f"command: must be a list of words, for example {example}")
        return
    words = [str(c) for c in command]
    if not any(words[i : i + 3] == ["-m", "launch", "train"] for i in range(len(words) - 2)):
        out.append(f"command: must run lipsweep's entrypoint `-m launch train`, for example {example}")
        return
    macros = [w for w in words if w.startswith("${") and w.endswith("}")]
    for m in macros:
        if m not in ("${env}", "${interpreter}", "${args}", "${args_no_hyphens}", "${program}"):
            out.append(
                f"command: {m} is not understood by `launch train` (it takes ${{args}}: --key=value, or ${{args_no_hyphens}}: key=value)"
            )
    if "${args}" not in words and "${args_no_hyphens}" not in words:
        out.append("command: has no ${args}; the swept values would reach the run only through wandb.config")
    tail = command_tail(command)
    for i, word in enumerate(tail):
        if (
            word.startswith("${")
            or word == "--config"
            or (i and tail[i - 1] == "--config")
            or word.startswith("--config=")
        ):
            continue
        if word.startswith(("--data", "--name", "--resume")):
            continue
        if "=" not in word:
            continue
        key, value = config_mod.parse_override(word)
        specs = config_mod.schema()
        if key not in specs:
            hint = config_mod.closest_key(key)
            out.append(f"command: {word}: unknown config key" + (f"; did you mean {hint}?" if hint else ""))
            continue
        try:
            config_mod.coerce(specs[key], value)
        except ConfigError as e:
            out.append(f"command: {e}")


# --------------------------------------------------------------------------- metric, scheduler, early_terminate


def _check_metric(metric: Any, where: str, out: list[str]) -> None:
    if not isinstance(metric, dict):
        out.append(f"{where}: must be a mapping like {{name: val/cer, goal: minimize}}")
        return
    for field in metric:
        if field not in METRIC_FIELDS:
            out.append(
                f"{where}.{field}: not a metric field (allowed: {', '.join(METRIC_FIELDS)}){_suggest(str(field), METRIC_FIELDS)}"
            )
    name = metric.get("name")
    if not isinstance(name, str):
        out.append(f"{where}.name: missing; the metric to optimise, for example val/cer")
    elif name not in METRICS:
        out.append(f"{where}.name: '{name}' is not a metric lipsweep logs{_suggest(name, METRICS)}")
    if metric.get("goal", "minimize") not in ("minimize", "maximize"):
        out.append(f"{where}.goal: '{metric['goal']}' must be minimize or maximize")
    if "target" in metric and not _is_number(metric["target"]):
        out.append(f"{where}.target: must be a number")
    for field, allowed in (
        ("impute", ("latest", "best", "worst")),
        ("impute_while_running", ("latest", "best", "worst", "false")),
    ):
        if field in metric and metric[field] not in allowed:
            out.append(f"{where}.{field}: must be one of {', '.join(allowed)}")


def _check_scheduler(raw: dict[str, Any], out: list[str]) -> None:
    sched = raw["scheduler"]
    if not isinstance(sched, dict):
        out.append("scheduler: must be a mapping with engine: optuna|ax|wandb")
        return
    for field in sched:
        if field not in ("engine", "source", "optimizer", "search_space"):
            out.append(f"scheduler.{field}: not a scheduler field (allowed: engine, source, optimizer, search_space)")
    engine = sched.get("engine")
    if engine not in SCHEDULER_ENGINES:
        out.append(f"scheduler.engine: must be one of {', '.join(SCHEDULER_ENGINES)}")
    for field in ("source", "optimizer", "search_space"):
        if field in sched and not isinstance(sched[field], str):
            out.append(f"scheduler.{field}: must be a string")
    for field in ("optimizer", "search_space"):
        if field in sched and "source" not in sched:
            out.append(f"scheduler.{field}: needs scheduler.source, the file that defines it")
    method = raw.get("method")
    if engine in ("optuna", "ax") and method != "custom":
        out.append(f"scheduler.engine: {engine} needs method: custom")
    if engine == "wandb" and method not in ("grid", "random", "bayes"):
        out.append("scheduler.engine: wandb needs method grid, random or bayes")
    if "early_terminate" in raw:
        out.append("early_terminate: cannot be used beside scheduler (the scheduler's pruner stops runs)")
    if isinstance(sched.get("source"), str):
        out.extend(check_scheduler_source(sched))


def check_scheduler_source(sched: dict[str, Any]) -> list[str]:
    """`scheduler.source` exists (relative to where the scheduler runs: here) and defines `optimizer` and
    `search_space` as wandb's scheduler calls them: optimizer(SweepInfo), search_space(optuna.Trial) -> dict."""
    import inspect

    source = sched["source"]
    if not Path(source).is_file() and (ROOT / source).is_file():  # `sweep scheduler` finds it from anywhere
        source = str(ROOT / source)
    if not Path(source).is_file():
        return [
            f"scheduler.source: {source} not found (from {Path.cwd()}); wandb's scheduler imports it from the folder it runs in"
        ]
    from wandb.sdk.sweeps.scheduler.client import load_source_object
    from wandb.sdk.sweeps.sweep_info import SweepInfo

    out: list[str] = []
    for field in ("optimizer", "search_space"):
        name = sched.get(field)
        if not isinstance(name, str):
            continue
        try:
            obj = load_source_object(source, name)
        except ValueError as e:
            out.append(f"scheduler.{field}: {e}")
            continue
        except Exception as e:  # the file itself fails to import: the scheduler would fail the same way
            out.append(f"scheduler.source: importing {source} fails: {type(e).__name__}: {e}")
            return out
        if not callable(obj):
            out.append(f"scheduler.{field}: {name!r} in {source} is {type(obj).__name__}, not a function")
            continue
        probe: Any = SweepInfo("id", "name", "entity", "project", {}, "") if field == "optimizer" else object()
        try:
            inspect.signature(obj).bind(probe)
        except TypeError:
            what = "one SweepInfo argument" if field == "optimizer" else "one optuna.Trial argument"
            out.append(
                f"scheduler.{field}: {name!r} in {source} cannot be called with {what}, as wandb's scheduler calls it"
            )
    return out


def _check_early_terminate(et: Any, out: list[str]) -> None:
    if not isinstance(et, dict):
        out.append("early_terminate: must be a mapping like {type: hyperband, min_iter: 3, eta: 3}")
        return
    for field in et:
        if field not in HYPERBAND_FIELDS:
            out.append(
                f"early_terminate.{field}: not a hyperband field (allowed: {', '.join(HYPERBAND_FIELDS)}){_suggest(str(field), HYPERBAND_FIELDS)}"
            )
    if et.get("type") != "hyperband":
        out.append("early_terminate.type: must be hyperband (W&B's only early-termination type)")
    if not ("min_iter" in et or ("max_iter" in et and "s" in et)):
        out.append("early_terminate: needs min_iter, or max_iter together with s")
    for field in ("min_iter", "max_iter"):
        if field in et and not (_is_int(et[field]) and et[field] >= 1):
            out.append(f"early_terminate.{field}: must be an integer >= 1 (epochs)")
    if "s" in et and not _is_number(et["s"]):
        out.append("early_terminate.s: must be a number")
    if "eta" in et and not (_is_number(et["eta"]) and et["eta"] > 1):
        out.append("early_terminate.eta: must be a number above 1")
    if "strict" in et and not isinstance(et["strict"], bool):
        out.append("early_terminate.strict: must be true or false")


def check_pruner(pruner: Any, where: str = "pruner") -> list[str]:
    """Problems of a `pruner:` block ({type: NAME, option: value, ...})."""
    out: list[str] = []
    if not isinstance(pruner, dict):
        return [f"{where}: must be a mapping like {{type: median, n_warmup_steps: 2}}"]
    kind = pruner.get("type")
    if kind not in PRUNERS:
        return [f"{where}.type: must be one of {', '.join(PRUNERS)}{_suggest(str(kind), PRUNERS)}"]
    options = PRUNERS[kind]
    for opt, value in pruner.items():
        if opt == "type":
            continue
        if opt not in options:
            allowed = ", ".join(options) or "none"
            out.append(
                f"{where}.{opt}: not an option of the {kind} pruner (options: {allowed}){_suggest(str(opt), options)}"
            )
            continue
        tp, lo, _ = options[opt]
        if kind == "halving" and opt == "min_resource" and value == "auto":
            continue
        if kind == "hyperband" and opt == "max_resource" and value == "auto":
            continue
        ok = _is_int(value) if tp is int else _is_number(value)
        if not ok or (lo is not None and value < lo):
            out.append(f"{where}.{opt}: {value!r} must be {'an integer' if tp is int else 'a number'} >= {lo:g}")
    for opt, (_, _, required) in options.items():
        if required and opt not in pruner:
            out.append(f"{where}.{opt}: required by the {kind} pruner")
    if kind == "percentile" and _is_number(pruner.get("percentile")) and not 0 <= pruner["percentile"] <= 100:
        out.append(f"{where}.percentile: must be in [0, 100]")
    return out


# --------------------------------------------------------------------------- parameters


def distribution_name(spec: dict[str, Any]) -> str | None:
    """The W&B distribution a parameter spec means (W&B infers it when `distribution:` is absent)."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "min" in spec and "max" in spec:
        return "int_uniform" if _is_int(spec["min"]) and _is_int(spec["max"]) else "uniform"
    return None


def _check_spec_fields(spec: dict[str, Any], where: str, out: list[str]) -> str | None:
    """W&B's schema for one parameter: a known distribution, its fields, their types. Returns the distribution."""
    dist = distribution_name(spec)
    if dist is None:
        out.append(f"{where}: give values: [...], value: X, or min: and max: (with an optional distribution:)")
        return None
    if dist not in DISTRIBUTIONS:
        out.append(f"{where}.distribution: unknown distribution '{dist}'{_suggest(dist, DISTRIBUTIONS)}")
        return None
    required, optional = DISTRIBUTIONS[dist]
    allowed = ("distribution", *required, *optional)
    bad_field = False
    for field in spec:
        if field not in allowed:
            out.append(
                f"{where}.{field}: not a field of the {dist} distribution (fields: {', '.join(allowed[1:])}){_suggest(str(field), allowed)}"
            )
            bad_field = True
    for field in required:
        if field not in spec:
            out.append(f"{where}.{field}: required by the {dist} distribution")
            bad_field = True
    if bad_field:
        return None
    if "values" in spec and (not isinstance(spec["values"], list) or not spec["values"]):
        out.append(f"{where}.values: must be a non-empty list")
        return None
    if dist == "categorical_w_probabilities":
        probs = spec["probabilities"]
        if not (
            isinstance(probs, list)
            and len(probs) == len(spec["values"])
            and all(_is_number(p) and p >= 0 for p in probs)
        ):
            out.append(f"{where}.probabilities: must be one non-negative number per value")
            return None
        if abs(sum(probs) - 1.0) > 1e-6:
            out.append(f"{where}.probabilities: must sum to 1 (they sum to {sum(probs):g})")
            return None
    for field in ("min", "max", "q", "mu", "sigma", "a", "b"):
        if field in spec and not _is_number(spec[field]):
            out.append(f"{where}.{field}: must be a number, got {spec[field]!r}")
            return None
    if dist == "int_uniform" and not (_is_int(spec["min"]) and _is_int(spec["max"])):
        out.append(f"{where}: int_uniform needs integer min and max")
        return None
    if "distribution" not in spec and "min" in spec and _is_int(spec["min"]) != _is_int(spec["max"]):
        out.append(
            f"{where}: min and max are an int and a float: W&B refuses this as ambiguous; write both as floats (uniform) or ints (int_uniform)"
        )
        return None
    if "min" in spec and spec["min"] > spec["max"]:
        out.append(f"{where}: min ({spec['min']}) is above max ({spec['max']})")
        return None
    if dist.endswith("_values") and spec["min"] <= 0:
        out.append(f"{where}.min: the {dist} distribution needs min > 0")
        return None
    if "q" in spec and spec["q"] <= 0:
        out.append(f"{where}.q: must be above 0")
        return None
    return dist


def _check_values_fit_key(key: KeySpec, dist: Any, where: str, out: list[str]) -> None:
    """Every value the distribution can give must be of the key's type and in its range."""
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        for i, choice in enumerate(dist.choices):
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                out.append(f"{where}.values[{i}]: {choice!r}: Optuna samples only scalars (numbers, strings, booleans)")
                continue
            try:
                config_mod.coerce(key, choice)
            except ConfigError as e:
                out.append(f"{where}.values[{i}]: {e}")
        return
    numeric = key.type in (int, float)
    if not numeric:
        out.append(f"{where}: {key.key} is {key.type_name()}; sweep it with values: [...]")
        return
    if key.type is int and not isinstance(dist, optuna.distributions.IntDistribution):
        out.append(f"{where}: {key.key} is an integer; use int_uniform (or q_uniform with integer min, max and q)")
        return
    for bound in (dist.low, dist.high):
        try:
            config_mod.coerce(key, bound)
        except ConfigError as e:
            out.append(f"{where}: {e}")
            return


def _check_parameters(raw: dict[str, Any], checkpoint: bool, out: list[str]) -> dict[str, Any]:
    """Check each parameter; returns {key: optuna distribution} for the ones that are right."""
    sweep_parameter_to_distribution = wandb_mapping()
    params = raw.get("parameters")
    if not isinstance(params, dict) or not params:
        out.append("parameters: must be a non-empty mapping of dotted config keys (optim.lr: {...})")
        return {}
    specs = config_mod.schema()
    good: dict[str, Any] = {}
    for key, spec in params.items():
        where = f"parameters.{key}"
        if str(key) in config_mod.sections() and isinstance(spec, dict) and "parameters" in spec:
            out.append(f"{where}: nested parameters are not used here; name each key flat and dotted ({key}.xxx: ...)")
            continue
        if key not in specs:
            hint = config_mod.closest_key(str(key))
            out.append(
                f"{where}: unknown config key"
                + (f"; did you mean {hint}?" if hint else "; see `python -m launch config keys`")
            )
            continue
        if checkpoint and not str(key).startswith("decode."):
            out.append(f"{where}: a sweep on a trained checkpoint can only vary decode.* keys")
            continue
        if not isinstance(spec, dict):
            out.append(f"{where}: must be a mapping (values: [...], min: / max:, distribution: ...)")
            continue
        if _check_spec_fields(spec, where, out) is None:
            continue
        try:
            with warnings.catch_warnings():  # a list among categorical values: reported below, in our words
                warnings.simplefilter("ignore", UserWarning)
                dist = sweep_parameter_to_distribution(spec)
        except (ValueError, TypeError) as e:
            out.append(f"{where}: {e} (wandb's mapping to Optuna, used by `sweep local` and W&B's Optuna engine)")
            continue
        n_before = len(out)
        _check_values_fit_key(specs[key], dist, where, out)
        if len(out) == n_before:
            good[key] = dist
    return good


# --------------------------------------------------------------------------- grid


def grid_values(dist: Any) -> list[Any] | None:
    """The points of a discrete distribution (categorical, integer or stepped float); None if continuous."""
    import optuna

    if isinstance(dist, optuna.distributions.CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, optuna.distributions.IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, optuna.distributions.FloatDistribution) and dist.step is not None:
        n = int(math.floor((dist.high - dist.low) / dist.step + 1e-9)) + 1
        return [round(dist.low + i * dist.step, 12) for i in range(n)]
    return None


def grid_space(distributions: dict[str, Any]) -> dict[str, list[Any]]:
    """{key: points} for Optuna's GridSampler; raises ConfigError for a continuous parameter."""
    space = {}
    for key, dist in distributions.items():
        values = grid_values(dist)
        if values is None:
            raise ConfigError(f"parameters.{key}: a grid needs discrete values (values:, int_uniform or q_uniform)")
        space[key] = values
    return space


def grid_size(space: dict[str, list[Any]]) -> int:
    return math.prod(len(v) for v in space.values())


# --------------------------------------------------------------------------- the whole sweep


def check_sweep(
    spec: SweepSpec, overrides: list[str] | tuple[str, ...] = (), *, checkpoint_config: Config | None = None
) -> list[str]:
    """Every problem of the sweep, one `path: message` line each (empty: the sweep is valid)."""
    raw = spec.raw
    out: list[str] = []
    for key in raw:
        if key not in WANDB_KEYS and key not in PROJECT_KEYS:
            out.append(
                f"{key}: not a W&B sweep key (nor base_config/pruner){_suggest(str(key), WANDB_KEYS + PROJECT_KEYS)}"
            )
    method = raw.get("method")
    if method is None:
        out.append(f"method: missing; one of {', '.join(LOCAL_METHODS)}")
    elif method not in METHODS:
        out.append(f"method: '{method}' is not one of {', '.join(METHODS)}{_suggest(str(method), METHODS)}")
    if "metrics" in raw:
        if "metric" in raw:
            out.append("metrics: cannot be used beside metric")
        if not isinstance(raw["metrics"], list) or len(raw["metrics"]) < 2:
            out.append("metrics: a list of two or more metrics (for one, use metric:)")
        else:
            for i, m in enumerate(raw["metrics"]):
                _check_metric(m, f"metrics[{i}]", out)
        if method != "custom":
            out.append("metrics: several objectives need method: custom with a scheduler")
    elif "metric" not in raw:
        out.append("metric: missing; for example metric: {name: val/cer, goal: minimize}")
    else:
        _check_metric(raw["metric"], "metric", out)
    if "run_cap" in raw and not (_is_int(raw["run_cap"]) and raw["run_cap"] > 0):
        out.append("run_cap: must be an integer above 0")
    for field in ("name", "description", "project", "entity", "program", "apiVersion", "job", "image_uri"):
        if field in raw and not isinstance(raw[field], str):
            out.append(f"{field}: must be a string")
    if "kind" in raw and raw["kind"] != "sweep":
        out.append("kind: must be sweep")
    if "controller" in raw and not (
        isinstance(raw["controller"], dict) and raw["controller"].get("type") in ("local", "cloud")
    ):
        out.append("controller: must be {type: local} or {type: cloud}")
    if "scheduler" in raw:
        _check_scheduler(raw, out)
    elif method == "custom":
        out.append("method: custom needs a scheduler: block (engine: optuna or ax)")
    if "early_terminate" in raw:
        _check_early_terminate(raw["early_terminate"], out)
    if "pruner" in raw:
        out.extend(check_pruner(raw["pruner"]))
    _check_command(raw, out)
    command_cfg = command_config(raw.get("command"))
    if (
        "base_config" in raw
        and command_cfg
        and "base_config" in raw
        and Path(str(raw["base_config"])) != Path(command_cfg)
    ):
        out.append(
            f"base_config: {raw['base_config']} differs from the command's --config {command_cfg}; W&B and local trials would start from different configs"
        )

    distributions = _check_parameters(raw, checkpoint_config is not None, out)

    # the base config and every parameter's extreme values on top of it
    base: Config | None = checkpoint_config
    if base is None:
        try:
            base = config_mod.load_config(spec.base_config, [*spec.command_overrides, *overrides])
        except ConfigError as e:
            out.append(f"{'base_config' if 'base_config' in raw else 'command'}: {e}")
    elif overrides:
        out.append(
            "overrides: a decoding sweep on a checkpoint takes its config from the checkpoint; put decode.* keys in parameters"
        )
    if base is not None and distributions:
        out.extend(_check_combinations(base, distributions))

    if method == "grid" and distributions:
        continuous = [k for k, d in distributions.items() if grid_values(d) is None]
        for key in continuous:
            out.append(f"parameters.{key}: method grid needs discrete values (values:, int_uniform or q_uniform)")
        if not continuous:
            size = grid_size(grid_space(distributions))
            if size > GRID_LIMIT:
                out.append(
                    f"parameters: the grid has {size:,} points (limit {GRID_LIMIT:,}); use random or bayes with run_cap"
                )
    return out


def _check_combinations(base: Config, distributions: dict[str, Any]) -> list[str]:
    """Apply each parameter's extreme values (others at their first) to the base config: constraints between keys."""
    corners: dict[str, list[Any]] = {}
    for key, dist in distributions.items():
        values = grid_values(dist)
        corners[key] = values if values is not None and len(values) <= 16 else [dist.low, dist.high]
    first = {k: v[0] for k, v in corners.items()}
    out: list[str] = []
    seen: set[str] = set()
    candidates = [dict(first, **{key: v}) for key, values in corners.items() for v in values]
    if math.prod(len(v) for v in corners.values()) <= 64:  # small spaces: every combination
        candidates = [dict(zip(corners, combo, strict=True)) for combo in itertools.product(*corners.values())]
    for point in candidates:
        try:
            config_mod.apply_overrides(copy.deepcopy(base), point)
        except ConfigError as e:
            msg = str(e)
            if msg not in seen:
                seen.add(msg)
                shown = ", ".join(f"{k}={v}" for k, v in point.items())
                out.append(f"parameters: with {shown}: {msg}")
    return out


def describe(spec: SweepSpec) -> str:
    """One line: method, parameters, grid size or run cap, base config, pruner."""
    dists = spec.distributions()
    parts = [f"method {spec.method}", f"{len(dists)} parameter(s)", f"metric {spec.metric} ({spec.goal})"]
    if spec.multi_objective:
        parts[2] = "metrics " + ", ".join(f"{name} ({goal})" for name, goal in spec.objectives)
    if spec.method == "grid":
        parts.append(f"grid of {grid_size(grid_space(dists))} point(s)")
    if spec.run_cap:
        parts.append(f"run_cap {spec.run_cap}")
    parts.append(f"base config {spec.base_config}")
    if spec.raw.get("scheduler"):
        sched = spec.raw["scheduler"]
        parts.append(
            f"scheduler {sched.get('engine')}" + (f" ({sched['optimizer']})" if sched.get("optimizer") else "")
        )
    if spec.pruner:
        parts.append(f"pruner {spec.pruner.get('type')}")
    elif spec.early_terminate:
        parts.append("early_terminate hyperband")
    return ", ".join(parts)
