"""A sweep's `parameters:`: W&B's distributions, their fit to the config schema, constraints between keys, the grid.

One mapping of parameter specs to Optuna distributions is used everywhere: wandb's own
(`sweep_parameter_to_distribution`), so a spec that mapping refuses is refused here with its reason.
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from typing import Any

import optuna

from launch.engine.schema import KEYS_HINT, is_int, is_number
from trainer import config as config_mod
from trainer.config import Config, KeySpec
from trainer.errors import ConfigError
from trainer.metrics import suggest

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
GRID_LIMIT = 10_000  # grids larger than this are refused: nobody runs them, and enumerating them is slow


def wandb_mapping() -> Any:
    """wandb's `sweep_parameter_to_distribution` (wandb >= 0.31): sweep parameter spec -> Optuna distribution."""
    try:
        from wandb.sdk.sweeps.scheduler.optuna import sweep_parameter_to_distribution
    except ImportError as e:
        raise ConfigError(
            f"sweeps need wandb >= 0.31 (its Optuna mapping of sweep parameters): {e}; pip install -U wandb"
        ) from None
    return sweep_parameter_to_distribution


def distribution_name(spec: dict[str, Any]) -> str | None:
    """The W&B distribution a parameter spec means (W&B infers it when `distribution:` is absent)."""
    if "distribution" in spec:
        return str(spec["distribution"])
    if "value" in spec:
        return "constant"
    if "values" in spec:
        return "categorical_w_probabilities" if "probabilities" in spec else "categorical"
    if "min" in spec and "max" in spec:
        return "int_uniform" if is_int(spec["min"]) and is_int(spec["max"]) else "uniform"
    return None


def _field_problems(spec: dict[str, Any], dist: str, where: str) -> list[str]:
    """The distribution's fields: none unknown, every required one present."""
    required, optional = DISTRIBUTIONS[dist]
    allowed = ("distribution", *required, *optional)
    out = [
        f"{where}.{field}: not a field of the {dist} distribution (fields: {', '.join(allowed[1:])}){suggest(str(field), allowed)}"
        for field in spec
        if field not in allowed
    ]
    return out + [f"{where}.{field}: required by the {dist} distribution" for field in required if field not in spec]


def _values_problems(spec: dict[str, Any], dist: str, where: str) -> list[str]:
    """`values:` and `probabilities:` as W&B wants them."""
    values = spec.get("values")
    if "values" in spec and (not isinstance(values, list) or not values):
        return [f"{where}.values: must be a non-empty list"]
    if dist != "categorical_w_probabilities" or "probabilities" not in spec:
        return []
    probs = spec["probabilities"]
    if not (isinstance(probs, list) and len(probs) == len(values) and all(is_number(p) and p >= 0 for p in probs)):
        return [f"{where}.probabilities: must be one non-negative number per value"]
    if abs(sum(probs) - 1.0) > 1e-6:
        return [f"{where}.probabilities: must sum to 1 (they sum to {sum(probs):g})"]
    return []


def _bounds_problems(spec: dict[str, Any], dist: str, where: str) -> list[str]:
    """min and max (numbers by now): integers where the distribution needs them, unambiguous, ordered, positive."""
    lo, hi = spec["min"], spec["max"]
    out = []
    if dist == "int_uniform" and not (is_int(lo) and is_int(hi)):
        out.append(f"{where}: int_uniform needs integer min and max")
    if "distribution" not in spec and is_int(lo) != is_int(hi):
        out.append(
            f"{where}: min and max are an int and a float: W&B refuses this as ambiguous; write both as floats (uniform) or ints (int_uniform)"
        )
    if lo > hi:
        out.append(f"{where}: min ({lo}) is above max ({hi})")
    if dist.endswith("_values") and lo <= 0:
        out.append(f"{where}.min: the {dist} distribution needs min > 0")
    return out


def _number_problems(spec: dict[str, Any], dist: str, where: str) -> list[str]:
    """The numeric fields: numbers, then the bounds and the step."""
    out = [
        f"{where}.{field}: must be a number, got {spec[field]!r}"
        for field in ("min", "max", "q", "mu", "sigma", "a", "b")
        if field in spec and not is_number(spec[field])
    ]
    if "min" in spec and "max" in spec and is_number(spec["min"]) and is_number(spec["max"]):
        out += _bounds_problems(spec, dist, where)
    if is_number(spec.get("q")) and spec["q"] <= 0:
        out.append(f"{where}.q: must be above 0")
    return out


def check_spec_fields(spec: dict[str, Any], where: str, out: list[str]) -> str | None:
    """W&B's schema for one parameter: a known distribution, its fields, their types, every problem of them.

    Returns the distribution when the spec has none."""
    dist = distribution_name(spec)
    if dist is None:
        out.append(f"{where}: give values: [...], value: X, or min: and max: (with an optional distribution:)")
        return None
    if dist not in DISTRIBUTIONS:
        out.append(f"{where}.distribution: unknown distribution '{dist}'{suggest(dist, DISTRIBUTIONS)}")
        return None
    problems = [
        *_field_problems(spec, dist, where),
        *_values_problems(spec, dist, where),
        *_number_problems(spec, dist, where),
    ]
    out.extend(problems)
    return None if problems else dist


def check_values_fit_key(key: KeySpec, dist: Any, where: str, out: list[str]) -> None:
    """Every value the distribution can give must be of the key's type and in its range."""
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
    if key.type not in (int, float):
        out.append(f"{where}: {key.key} is {key.type_name()}; sweep it with values: [...]")
        return
    if key.type is int and not isinstance(dist, optuna.distributions.IntDistribution):
        out.append(f"{where}: {key.key} is an integer; use int_uniform (or q_uniform with integer min, max and q)")
        return
    for bound in dict.fromkeys((dist.low, dist.high)):
        try:
            config_mod.coerce(key, bound)
        except ConfigError as e:
            out.append(f"{where}: {e}")


def _key_problem(key: Any, checkpoint: bool) -> str | None:
    """What is wrong with a parameter's name: unknown, or not a decode.* key in a sweep on a checkpoint."""
    where = f"parameters.{key}"
    if key not in config_mod.schema():
        hint = config_mod.closest_key(str(key))
        return f"{where}: unknown config key" + (f"; did you mean {hint}?" if hint else f"; {KEYS_HINT}")
    if checkpoint and not str(key).startswith("decode."):
        return f"{where}: a sweep on a trained checkpoint can only vary decode.* keys"
    return None


def _shape_problem(key: Any, spec: Any) -> str | None:
    """A parameter that is not a mapping, or W&B's nested form: nothing more can be checked."""
    where = f"parameters.{key}"
    if str(key) in config_mod.sections() and isinstance(spec, dict) and "parameters" in spec:
        return f"{where}: nested parameters are not used here; name each key flat and dotted ({key}.xxx: ...)"
    if not isinstance(spec, dict):
        return f"{where}: must be a mapping (values: [...], min: / max:, distribution: ...)"
    return None


def _distribution(spec: dict[str, Any], where: str, out: list[str]) -> Any:
    """wandb's Optuna distribution of a spec W&B's schema accepts (None, with the reason, when wandb refuses it)."""
    try:
        with warnings.catch_warnings():  # a list among categorical values: reported by the key check, in our words
            warnings.simplefilter("ignore", UserWarning)
            return wandb_mapping()(spec)
    except (ValueError, TypeError) as e:
        out.append(f"{where}: {e} (wandb's mapping to Optuna, used by `sweep local` and W&B's Optuna engine)")
        return None


def check_parameter(key: Any, spec: Any, checkpoint: bool, out: list[str]) -> Any:
    """Every problem of one parameter (its name, its W&B spec, its values against the key); its distribution if none."""
    where = f"parameters.{key}"
    shape = _shape_problem(key, spec)
    if shape:
        out.append(shape)
        return None
    n_before = len(out)
    key_problem = _key_problem(key, checkpoint)
    if key_problem:
        out.append(key_problem)
    dist = check_spec_fields(spec, where, out)
    if dist is None or key not in config_mod.schema():
        return None
    optuna_dist = _distribution(spec, where, out)
    if optuna_dist is not None:
        check_values_fit_key(config_mod.schema()[key], optuna_dist, where, out)
    return optuna_dist if len(out) == n_before else None


def check_parameters(raw: dict[str, Any], checkpoint: bool, out: list[str]) -> dict[str, Any]:
    """Check each parameter; returns {key: optuna distribution} for the ones that are right."""
    params = raw.get("parameters")
    if not isinstance(params, dict) or not params:
        out.append("parameters: must be a non-empty mapping of dotted config keys (optim.lr: {...})")
        return {}
    good = {key: check_parameter(key, spec, checkpoint, out) for key, spec in params.items()}
    return {key: dist for key, dist in good.items() if dist is not None}


# --------------------------------------------------------------------------- grid


def grid_values(dist: Any) -> list[Any] | None:
    """The points of a discrete distribution (categorical, integer or stepped float); None if continuous."""
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


def check_grid(distributions: dict[str, Any], out: list[str]) -> None:
    """A grid sweep: every parameter discrete, and not too many points."""
    continuous = [k for k, d in distributions.items() if grid_values(d) is None]
    for key in continuous:
        out.append(f"parameters.{key}: method grid needs discrete values (values:, int_uniform or q_uniform)")
    if not continuous:
        size = grid_size(grid_space(distributions))
        if size > GRID_LIMIT:
            out.append(
                f"parameters: the grid has {size:,} points (limit {GRID_LIMIT:,}); use random or bayes with run_cap"
            )


def check_combinations(base: Config, distributions: dict[str, Any]) -> list[str]:
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
