"""What one row of the runs table holds, and the helpers every source fills it with.

The metric columns come from the registry (trainer/metrics.py):
- `<metric>_best` for every metric a run may select by (`SELECTABLE`): its best value over the run's
  epochs, goal-aware (the lowest CER, the highest distinct share);
- `<metric>@best` for every metric: its value at the run's best epoch, the epoch where the run's own
  `select_metric` (summary.json; val/cer for older runs) is best (the first on ties);
- `val/cer_last`, `epoch_best`, `epochs`, `runtime_s`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from trainer.errors import ConfigError, DataError
from trainer.metrics import DEFAULT, METRICS, SELECTABLE, best_key, best_row

LAST = f"{DEFAULT}_last"


def at_best(name: str) -> str:
    """The column of a metric's value at the run's best epoch: 'val/cer_ctc_greedy' -> 'val/cer_ctc_greedy@best'."""
    return f"{name}@best"


HEAD_COLUMNS = ["run_id", "name", "state"]
BEST_COLUMNS = [best_key(name) for name in SELECTABLE]
AT_BEST_COLUMNS = [at_best(name) for name in METRICS]
METRIC_COLUMNS = [*BEST_COLUMNS, LAST, "epoch_best", "epochs", "runtime_s", *AT_BEST_COLUMNS]
TAIL_COLUMNS = ["select_metric", "trial", "location", "reason"]
# Every column of the table that is not a swept parameter (rank and the noise columns are added by ranking).
NON_PARAMETER_COLUMNS = (*HEAD_COLUMNS, *METRIC_COLUMNS, *TAIL_COLUMNS)
STATES = ("finished", "pruned", "stopped", "failed", "running")
# Config keys (or key prefixes, ending in ".") that differ between runs without being hyperparameters.
NOT_PARAMETERS = ("tracking.", "train.run_dir", "train.device", "data.cache_dir")


def is_parameter(key: str) -> bool:
    return not any(key == k or (k.endswith(".") and key.startswith(k)) for k in NOT_PARAMETERS)


@dataclass(frozen=True)
class Source:
    """Where runs come from: `kind` local (a folder), optuna (storage URL + study) or wandb (entity/project + sweep)."""

    kind: Literal["local", "optuna", "wandb"]
    path: str  # folder, storage URL, or entity/project
    study: str = ""
    sweep: str = ""

    def __str__(self) -> str:
        if self.kind == "optuna":
            return f"optuna://{self.path}" + (f"?study={self.study}" if self.study else "")
        if self.kind == "wandb":
            return f"wandb://{self.path}" + (f"/{self.sweep}" if self.sweep else "")
        return self.path


def _optuna_source(text: str) -> Source:
    url = text.removeprefix("optuna://")
    base, _, query = url.partition("?")
    pairs = parse_qsl(query, keep_blank_values=True)
    study = next((v for k, v in pairs if k == "study"), "")
    rest = [(k, v) for k, v in pairs if k != "study"]
    if not base:
        raise ConfigError(f"source {text!r}: no storage URL; write optuna://sqlite:///path/to/study.db?study=NAME")
    if "://" not in base and not base.startswith("journal:"):  # optuna://runs/x/study.db: a file, not a URL
        base = _study_file(text, Path(base))
    return Source("optuna", base + ("?" + urlencode(rest) if rest else ""), study=study)


def _study_file(text: str, path: Path) -> str:
    """The storage URL of a study file: SQLite (.db, .sqlite, .sqlite3) or Optuna's journal (.log, .journal)."""
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return f"sqlite:///{path}"
    if path.suffix in (".log", ".journal"):
        return f"journal:{path}"
    raise ConfigError(
        f"source {text!r}: {str(path)!r} is neither a storage URL nor a study file (.db, .log); write "
        "optuna://sqlite:///path/to/study.db?study=NAME, or give the .db file itself"
    )


def _wandb_source(text: str) -> Source:
    parts = [p for p in text.removeprefix("wandb://").split("/") if p]
    if len(parts) == 4 and parts[2] == "sweeps":  # entity/project/sweeps/id, as in the sweep's URL
        parts = [parts[0], parts[1], parts[3]]
    if len(parts) not in (2, 3):
        raise ConfigError(f"source {text!r}: write wandb://entity/project or wandb://entity/project/sweep_id")
    return Source("wandb", "/".join(parts[:2]), sweep=parts[2] if len(parts) == 3 else "")


def parse_source(text: str | Path | Source) -> Source:
    """`optuna://URL?study=NAME`, `wandb://entity/project[/sweep_id]`, a `sqlite:///file.db` URL or a folder."""
    if isinstance(text, Source):
        return text
    text = str(text)
    if text.startswith("optuna://") or text.startswith(("sqlite://", "postgresql://", "postgresql+", "mysql://")):
        return _optuna_source(text)
    if text.startswith("wandb://"):
        return _wandb_source(text)
    path = Path(text)
    if path.is_file() and path.suffix in (".db", ".sqlite", ".sqlite3", ".log", ".journal"):
        return Source("optuna", _study_file(text, path))
    if not path.is_dir():
        raise ConfigError(
            f"source {text!r} is not a folder of runs, optuna://URL?study=NAME or wandb://entity/project[/sweep_id]"
        )
    return Source("local", str(path))


# --------------------------------------------------------------------------- values


def number(value: Any) -> float:
    """A metric value as a float; W&B's `{"min": x}` / `{"max": x}` summaries unwrapped; missing or non-finite NaN."""
    if isinstance(value, Mapping):
        value = next((value[k] for k in ("min", "max", "last") if k in value), None)
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DataError(f"metric value {value!r} is not a number") from None
    return x if math.isfinite(x) else math.nan


def cell(value: Any) -> Any:
    """A parameter value for a table cell: lists become their JSON text (hashable, comparable)."""
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    return value


def flatten_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings -> {dotted key: value}."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_dict(v, key + "."))
        else:
            out[key] = v
    return out


def select_metric_of(summary: Mapping[str, Any], where: str) -> str:
    """The metric that picked the run's best epoch (val/cer for runs from before train.select_metric)."""
    name = summary.get("select_metric") or DEFAULT
    if name not in METRICS:
        raise DataError(f"{where}: select_metric {name!r} is not a metric lipsweep logs")
    return str(name)


def summary_values(summary: Mapping[str, Any]) -> dict[str, float]:
    """The metric columns a run summary holds under their own names (summary.json, a W&B summary)."""
    return {col: number(summary[col]) for col in METRIC_COLUMNS if col in summary}


def _finite_rows(history: Iterable[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    return [r for r in history if not math.isnan(number(r.get(name)))]


def best_of(history: list[dict[str, Any]], select: str = DEFAULT) -> dict[str, float]:
    """The metric columns from per-epoch rows: each selectable metric's best, and every metric at the epoch where
    `select` is best (the first on ties); {} when no epoch logged `select`."""
    rows = [{k: number(v) if k in METRICS else v for k, v in r.items()} for r in history]
    best = best_row(rows, select)
    if best is None:
        return {}
    out = {"epoch_best": number(best.get("epoch")), "epochs": max(number(r.get("epoch")) for r in rows)}
    for name in SELECTABLE:
        row = best_row(rows, name)
        if row is not None:
            out[best_key(name)] = float(row[name])
    out.update({at_best(name): number(best.get(name)) for name in METRICS})
    last = _finite_rows(rows, DEFAULT)
    if last:
        out[LAST] = number(last[-1][DEFAULT])
    return {k: v for k, v in out.items() if not math.isnan(v)}


def fill(row: dict[str, Any], values: Mapping[str, float]) -> None:
    """Set the metric columns of `row` that `values` has a number for."""
    row.update({k: v for k, v in values.items() if k in METRIC_COLUMNS and not math.isnan(number(v))})
