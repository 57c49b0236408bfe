"""One config key's spec (type, default, meaning, range) and the check of a value against it.

`trainer/config.py` builds the specs from its dataclasses; values from YAML, the command line,
`wandb.config` and Optuna trials all pass through `coerce`.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from trainer.errors import ConfigError


@dataclass(frozen=True)
class KeySpec:
    """One leaf of the schema: dotted key, Python type, default, meaning and range."""

    key: str
    type: Any
    default: Any
    help: str
    min: float | None = None
    max: float | None = None

    @property
    def choices(self) -> tuple[str, ...] | None:
        return typing.get_args(self.type) if typing.get_origin(self.type) is Literal else None

    def type_name(self) -> str:
        if self.choices:
            return "|".join(self.choices)
        if typing.get_origin(self.type) is list:
            return f"list[{typing.get_args(self.type)[0].__name__}]"
        return self.type.__name__

    def allowed(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        text = self.type_name()
        if self.min is not None and self.max is not None:
            return f"{text} in [{self.min:g}, {self.max:g}]"
        if self.min is not None:
            return f"{text} >= {self.min:g}"
        if self.max is not None:
            return f"{text} <= {self.max:g}"
        return text


def coerce(spec: KeySpec, value: Any, where: str = "") -> Any:
    """Check `value` against the key's type and range; parse strings from the command line."""
    bad = ConfigError(f"{where}{spec.key}: {value!r} is not allowed; expected {spec.allowed()}")
    if isinstance(value, str) and spec.type is not str and not spec.choices:
        value = _parse(spec, value, bad)
    if spec.choices:
        if value not in spec.choices:
            raise bad
        return value
    value = _typed(spec.type, value, bad)
    if not isinstance(value, list) and (
        (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max)
    ):
        raise bad
    return value


def _parse(spec: KeySpec, text: str, bad: ConfigError) -> Any:
    """A command-line string read as YAML (`[8,16]`, `3e-4`, `true`); `a,b` is a list for list keys."""
    text = text.strip()
    if typing.get_origin(spec.type) is list and not text.startswith("["):
        text = "[" + text + "]"
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise bad from None
    if spec.type is float and isinstance(value, str):  # YAML 1.1 reads 3e-4 as a string
        try:
            value = float(value)
        except ValueError:
            raise bad from None
    return value


def _typed(tp: Any, value: Any, bad: ConfigError) -> Any:
    """`value` as type `tp` (list[int|str], bool, int, float, str), or `bad` raised."""
    is_bool = isinstance(value, bool)
    if typing.get_origin(tp) is list:
        item = typing.get_args(tp)[0]
        if not isinstance(value, list):
            raise bad
        if item is str:
            return [str(v) for v in value]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise bad
        return list(value)
    if tp is bool:
        if not is_bool:
            raise bad
        return value
    if tp is int:
        if is_bool or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise bad
        return int(value)
    if tp is float:
        if is_bool or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    value = "" if value is None else value  # tp is str
    if not isinstance(value, (str, int, float)) or is_bool:
        raise bad
    return str(value)
