"""Every metric lipsweep logs, declared once.

A run logs one row an epoch (`metrics.jsonl`, W&B history) with these names. Sweep validation's
metric list, the runs table's columns and best-of logic, `runs rank`'s aliases, W&B's
`define_metric`, the epoch line and the tests' expected keys all come from `METRICS`.
Adding a metric is one entry here plus its computation (trainer/evaluate.py for validation,
trainer/train.py for training).

Gradient norms (`grad_norm/<group>`, one per group of `trainer.model.GRAD_GROUPS`) are logged
too; they are diagnostics, not objectives, and are not listed here.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Goal = Literal["minimize", "maximize"]


@dataclass(frozen=True)
class Metric:
    name: str  # as logged: "val/cer"
    goal: Goal  # which way is better, for selection, sweeps and ranking
    summary: Literal["min", "max", "last"]  # what W&B's run summary keeps (define_metric)
    column: str  # short column name in printed tables
    meaning: str  # one line, for `config keys`-style listings and reports
    on_epoch_line: bool = False  # printed on the one-line epoch report
    validation: bool = False  # computed only on the epochs that validate
    objective: bool = False  # a sweep may optimise it and train.select_metric may select by it

    def better(self, a: float, b: float) -> bool:
        """True when value `a` is strictly better than `b` (NaN is never better)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.goal == "minimize" else a > b

    @property
    def worst(self) -> float:
        """The starting value of a running best."""
        return math.inf if self.goal == "minimize" else -math.inf


def _m(
    name: str, goal: Goal, column: str, meaning: str, *, line: bool = False, val: bool = False, objective: bool = True
) -> Metric:
    # the run summary keeps a validation metric's best, anything else its last value
    summary = ("min" if goal == "minimize" else "max") if val else "last"
    return Metric(name, goal, summary, column, meaning, on_epoch_line=line, validation=val, objective=val and objective)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        _m(
            "val/cer",
            "minimize",
            "cer",
            "token CER of the joint CTC/attention beam search on validation",
            line=True,
            val=True,
        ),
        _m(
            "val/cer_ctc_greedy",
            "minimize",
            "cer_ctc",
            "token CER of CTC greedy decoding on validation",
            line=True,
            val=True,
        ),
        _m(
            "val/letter_er",
            "minimize",
            "letter_er",
            "error rate of the base letters (marks removed), beam search",
            val=True,
        ),
        _m("val/diacritic_er", "minimize", "diac_er", "error rate of each token's marks, beam search", val=True),
        _m("val/wer", "minimize", "wer", "word error rate (only with data.word_separator)", val=True),
        _m("val/loss", "minimize", "val_loss", "joint loss on validation", line=True, val=True),
        _m("val/loss_ctc", "minimize", "val_ctc", "CTC loss on validation", val=True),
        _m("val/loss_att", "minimize", "val_att", "attention (label-smoothed) loss on validation", val=True),
        _m(
            "val/distinct",
            "maximize",
            "distinct",
            "distinct beam-search outputs / validation clips (1/N: collapsed)",
            val=True,
        ),
        _m(
            "val/hyp_len_ratio",
            "maximize",
            "len_ratio",
            "output tokens / reference tokens on validation (1 is right)",
            val=True,
            objective=False,
        ),
        _m(
            "val/cer_baseline",
            "minimize",
            "baseline",
            "val CER of the best constant output (a training transcript or empty)",
            val=True,
            objective=False,
        ),
        _m(
            "train/cer",
            "minimize",
            "train_cer",
            "beam-search CER on a fixed subset of training clips",
            line=True,
            val=True,
            objective=False,
        ),
        _m("train/loss", "minimize", "loss", "joint training loss, mean over the epoch", line=True),
        _m("train/loss_ctc", "minimize", "loss_ctc", "CTC training loss"),
        _m("train/loss_att", "minimize", "loss_att", "attention training loss"),
        _m("train/acc", "maximize", "acc", "decoder token accuracy under teacher forcing"),
        _m("train/lr", "maximize", "lr", "learning rate at the end of the epoch"),
        _m("train/clips_per_s", "maximize", "clips/s", "training throughput", line=True),
        _m("train/bad_steps", "minimize", "bad_steps", "optimizer steps skipped for a NaN/inf loss or gradient"),
        _m("time/epoch_s", "minimize", "epoch_s", "wall time of the epoch, validation included", line=True),
    )
}

# What a sweep may optimise and a run may select its best checkpoint by.
SELECTABLE = tuple(name for name, m in METRICS.items() if m.objective)
DEFAULT = "val/cer"


def metric(name: str, where: str = "") -> Metric:
    """The registry entry of `name`; a KeyError naming the closest known metric otherwise."""
    if name in METRICS:
        return METRICS[name]
    raise KeyError(f"{where}'{name}' is not a metric lipsweep logs{suggest(name, METRICS)}")


def suggest(name: str, known: Iterable[str]) -> str:
    """'; did you mean X?' for the closest of `known`, or ''."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    return f"; did you mean {close[0]}?" if close else ""


def best_key(name: str) -> str:
    """The summary key of a metric's best value: 'val/cer' -> 'val/cer_best'."""
    return f"{name}_best"


def best_row(rows: list[dict], name: str) -> dict | None:
    """The row where metric `name` is best (the first on ties); None when no row has a number for it."""
    m = metric(name)
    best: dict | None = None
    for row in rows:
        value = row.get(name)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or math.isnan(value):
            continue
        if best is None or m.better(float(value), float(best[name])):
            best = row
    return best
