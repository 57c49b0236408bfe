"""What every section of the diagnosis shares: findings, verdicts and per-epoch series."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from analysis.rows import number
from trainer.config import Config

if TYPE_CHECKING:
    from analysis.diagnose.decode import Decoded

HIGH_CER = 0.5  # a CER at or above this is high (CER is a fraction: 0.5 = half the tokens wrong)
EMPTY = "∅"
Level = Literal["warning", "note", "ok"]


@dataclass
class Finding:
    """One line of a section: a warning, a note or an ok, about a config key or module group, with its reason."""

    level: Level
    topic: str
    message: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.topic}: {self.message}" + (f" ({self.reason})" if self.reason else "")


@dataclass
class Verdict:
    kind: str  # collapsed | over-fitting | under-fitting | stuck | healthy | not enough data
    evidence: list[str]
    numbers: dict[str, float] = field(default_factory=dict)
    advice: str = ""


def series(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(epoch, value) for the epochs that logged `key` with a finite value."""
    return [(int(r["epoch"]), float(r[key])) for r in rows if "epoch" in r and not math.isnan(number(r.get(key)))]


@dataclass
class Context:
    """What every section of one diagnosis reads: the run's files and, when decoded, its validation split."""

    run_dir: Path
    out: Path
    rows: list[dict[str, Any]]  # metrics.jsonl
    summary: dict[str, Any]
    cfg: Config | None
    checkpoint: str  # best | last
    epoch: int  # the checkpoint's epoch
    metrics: dict[str, Any]  # the metrics of that epoch (the decoded ones win)
    decoded: Decoded | None = None
    why_not: str = ""  # why the split was not decoded
    predictions: pd.DataFrame | None = None  # per clip (analysis/predictions.py): decoded, or val_predictions.csv
    predictions_from: str = ""
