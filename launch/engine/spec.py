"""Sweep YAMLs: loading, and validation against W&B's sweep schema and our config schema.

A sweep YAML is W&B's own format (method, metric, parameters, early_terminate, run_cap,
command, ...) with parameters named by dotted config keys (`optim.lr:`), plus two keys of
this project that `create` strips before W&B sees them: `base_config:` (the config every
trial starts from) and `pruner:` (an Optuna pruner with its options, for `sweep local` and
for the pruning study under a W&B agent).

`check_sweep` returns every problem as one line `YAML.path: what is wrong`; every sweep
command runs it first.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launch.engine import params as params_mod
from launch.engine import schema
from launch.engine.pruners import check_pruner, describe_pruner
from trainer import config as config_mod
from trainer.config import Config
from trainer.errors import ConfigError
from trainer.metrics import suggest

# Top-level keys of W&B's sweep schema (its JSON schema refuses any other).
WANDB_KEYS = (
    "apiVersion", "kind", "controller", "description", "program", "job", "image_uri", "entity", "project",
    "method", "command", "name", "run_cap", "metric", "metrics", "scheduler", "early_terminate", "parameters",
)  # fmt: skip
PROJECT_KEYS = ("base_config", "pruner")
METHODS = ("grid", "random", "bayes", "custom")
LOCAL_METHODS = ("grid", "random", "bayes")
STRING_FIELDS = ("name", "description", "project", "entity", "program", "apiVersion", "job", "image_uri")


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
        return str(
            self.raw.get("base_config") or schema.command_config(self.raw.get("command")) or "configs/small.yaml"
        )

    @property
    def command_overrides(self) -> list[str]:
        """Fixed `key=value` arguments of the command (for example `tracking.wandb=online`)."""
        return schema.command_overrides(self.raw.get("command"))

    @property
    def local_overrides(self) -> list[str]:
        """The command's fixed overrides less tracking.* (those set up W&B agents' runs, not local trials)."""
        return [o for o in self.command_overrides if not o.lstrip("-").startswith("tracking.")]

    def wandb_config(self) -> dict[str, Any]:
        """The config W&B receives: the YAML without the project's own keys, its command selecting by the metric."""
        config = {k: copy.deepcopy(v) for k, v in self.raw.items() if k not in PROJECT_KEYS}
        if "command" in config:
            config["command"] = schema.with_select_metric(config["command"], self.metric)
        return config

    def distributions(self) -> dict[str, Any]:
        """{key: optuna distribution}, by wandb's own mapping (one mapping everywhere)."""
        to_distribution = params_mod.wandb_mapping()
        return {key: to_distribution(spec) for key, spec in self.parameters.items()}


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


# --------------------------------------------------------------------------- the whole sweep


def _check_top(raw: dict[str, Any], out: list[str]) -> None:
    """Top-level keys, method, run_cap, the plain string and mapping fields."""
    for key in raw:
        if key not in WANDB_KEYS and key not in PROJECT_KEYS:
            out.append(
                f"{key}: not a W&B sweep key (nor base_config/pruner){suggest(str(key), WANDB_KEYS + PROJECT_KEYS)}"
            )
    method = raw.get("method")
    if method is None:
        out.append(f"method: missing; one of {', '.join(LOCAL_METHODS)}")
    elif method not in METHODS:
        out.append(f"method: '{method}' is not one of {', '.join(METHODS)}{suggest(str(method), METHODS)}")
    if "run_cap" in raw and not (schema.is_int(raw["run_cap"]) and raw["run_cap"] > 0):
        out.append("run_cap: must be an integer above 0")
    for field in STRING_FIELDS:
        if field in raw and not isinstance(raw[field], str):
            out.append(f"{field}: must be a string")
    if "kind" in raw and raw["kind"] != "sweep":
        out.append("kind: must be sweep")
    controller = raw.get("controller")
    if "controller" in raw and not (isinstance(controller, dict) and controller.get("type") in ("local", "cloud")):
        out.append("controller: must be {type: local} or {type: cloud}")


def _check_blocks(raw: dict[str, Any], out: list[str]) -> None:
    """scheduler, early_terminate, pruner, command, and base_config against the command's --config."""
    if "scheduler" in raw:
        schema.check_scheduler(raw, out)
    elif raw.get("method") == "custom":
        out.append("method: custom needs a scheduler: block (engine: optuna or ax)")
    if "early_terminate" in raw:
        schema.check_early_terminate(raw["early_terminate"], out)
    if "pruner" in raw:
        out.extend(check_pruner(raw["pruner"]))
    schema.check_command(raw, out)
    command_cfg = schema.command_config(raw.get("command"))
    if "base_config" in raw and command_cfg and Path(str(raw["base_config"])) != Path(command_cfg):
        out.append(
            f"base_config: {raw['base_config']} differs from the command's --config {command_cfg}; W&B and local trials would start from different configs"
        )


def _base(spec: SweepSpec, overrides: list[str] | tuple[str, ...], checkpoint: Config | None, out: list[str]):
    """The config every trial starts from (a checkpoint's, or the base config with the overrides), None if it fails."""
    if checkpoint is not None:
        if overrides:
            out.append(
                "overrides: a decoding sweep on a checkpoint takes its config from the checkpoint; put decode.* keys in parameters"
            )
        return checkpoint
    try:
        return config_mod.load_config(spec.base_config, [*spec.command_overrides, *overrides])
    except ConfigError as e:
        out.append(f"{'base_config' if 'base_config' in spec.raw else 'command'}: {e}")
        return None


def check_sweep(
    spec: SweepSpec, overrides: list[str] | tuple[str, ...] = (), *, checkpoint_config: Config | None = None
) -> list[str]:
    """Every problem of the sweep, one `path: message` line each (empty: the sweep is valid)."""
    raw = spec.raw
    out: list[str] = []
    _check_top(raw, out)
    schema.check_objectives(raw, out)
    _check_blocks(raw, out)
    schema.check_select_metric(raw, spec.metric, list(overrides), out)
    distributions = params_mod.check_parameters(raw, checkpoint_config is not None, out)
    base = _base(spec, overrides, checkpoint_config, out)
    if base is not None and distributions:
        out.extend(params_mod.check_combinations(base, distributions))
    if raw.get("method") == "grid" and distributions:
        params_mod.check_grid(distributions, out)
    return out


def describe(spec: SweepSpec, pruner: dict[str, Any] | None = None) -> str:
    """One line: method, parameters, grid size or run cap, base config, pruner (`pruner`: the resolved block)."""
    dists = spec.distributions()
    parts = [f"method {spec.method}", f"{len(dists)} parameter(s)", f"metric {spec.metric} ({spec.goal})"]
    if spec.multi_objective:
        parts[2] = "metrics " + ", ".join(f"{name} ({goal})" for name, goal in spec.objectives)
    if spec.method == "grid":
        parts.append(f"grid of {params_mod.grid_size(params_mod.grid_space(dists))} point(s)")
    if spec.run_cap:
        parts.append(f"run_cap {spec.run_cap}")
    parts.append(f"base config {spec.base_config}")
    sched = spec.raw.get("scheduler")
    if sched:
        parts.append(
            f"scheduler {sched.get('engine')}" + (f" ({sched['optimizer']})" if sched.get("optimizer") else "")
        )
    if pruner is not None:
        parts.append(f"pruner {describe_pruner(pruner)}")
    elif spec.pruner:
        parts.append(f"pruner {spec.pruner.get('type')}")
    elif spec.early_terminate:
        parts.append("early_terminate hyperband")
    return ", ".join(parts)
