"""Collapse: a run that gives (nearly) one output for every clip, or that does not beat a constant output.

A model that learned the label prior instead of the frames predicts the most frequent tokens for every
clip: its val CER can still look better than a run that tries. A run is collapsed when any of:
- its distinct share (distinct outputs / validation clips, `val/distinct`) is below DISTINCT_MIN (0.2:
  fewer than one distinct output per five clips);
- its most common output is the output for more than TOP_SHARE_MAX (50%) of the clips;
- it does not beat its baseline, `val/cer_baseline` (the val CER of the best constant output: the one
  training transcript, or the empty output, that scores best over the training clips): the upper end of
  its 95% bootstrap interval (analysis/noise.py) is not below the baseline; without predictions, its val
  CER is not at least BASELINE_MARGIN (0.02) below it.
Without predictions, distinct share or baseline (runs from before these were logged) it is not judged.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from analysis.noise import cer_interval
from analysis.predictions import distinct_share, top_output, val_cer
from analysis.rows import at_best, number

DISTINCT_MIN = 0.2
TOP_SHARE_MAX = 0.5
BASELINE_MARGIN = 0.02
nan = math.nan


@dataclass(frozen=True)
class Collapse:
    collapsed: bool | None  # None: nothing to judge by
    reasons: list[str] = field(default_factory=list)
    distinct: float = nan  # distinct outputs / clips
    top_share: float = nan  # share of clips given the most common output
    output: str = ""  # the most common output
    cer: float = nan
    cer_high: float = nan  # upper end of the 95% bootstrap interval
    baseline: float = nan

    def numbers(self) -> str:
        """The numbers behind the judgement, as one phrase."""
        parts = []
        if not math.isnan(self.cer):
            interval = f" (95% interval up to {self.cer_high:.3f})" if not math.isnan(self.cer_high) else ""
            parts.append(f"val/cer {self.cer:.3f}{interval}")
        if not math.isnan(self.baseline):
            parts.append(f"baseline {self.baseline:.3f} (the best constant output)")
        if not math.isnan(self.distinct):
            parts.append(f"distinct outputs {self.distinct:.0%} of the clips")
        if not math.isnan(self.top_share):
            parts.append(f"the most common output on {self.top_share:.0%} of the clips")
        return ", ".join(parts) or "no predictions, distinct share or baseline recorded"


def beats_baseline(cer: float, cer_high: float, baseline: float) -> bool | None:
    """True when val CER is below the baseline beyond noise; None when either number is missing."""
    if math.isnan(baseline) or (math.isnan(cer) and math.isnan(cer_high)):
        return None
    if not math.isnan(cer_high):
        return cer_high < baseline
    return cer <= baseline - BASELINE_MARGIN


def judge(
    *,
    distinct: float = nan,
    top_share: float = nan,
    output: str = "",
    cer: float = nan,
    cer_high: float = nan,
    baseline: float = nan,
) -> Collapse:
    """The collapse judgement from whatever of these numbers a run has (module docstring)."""
    reasons = []
    if not math.isnan(distinct) and distinct < DISTINCT_MIN:
        reasons.append(f"only {distinct:.0%} of the clips get a distinct output (below {DISTINCT_MIN:.0%})")
    if not math.isnan(top_share) and top_share > TOP_SHARE_MAX:
        shown = output if output.strip() else "the empty output"
        reasons.append(f"{top_share:.0%} of the clips get the same output ({shown!r}; above {TOP_SHARE_MAX:.0%})")
    beats = beats_baseline(cer, cer_high, baseline)
    if beats is False:
        how = "the upper end of its 95% interval" if not math.isnan(cer_high) else f"val/cer less {BASELINE_MARGIN}"
        reasons.append(f"it does not beat the baseline: {how} is not below val/cer_baseline {baseline:.3f}")
    judged = reasons or beats is not None or not (math.isnan(distinct) and math.isnan(top_share))
    collapsed = bool(reasons) if judged else None
    return Collapse(collapsed, reasons, distinct, top_share, output, cer, cer_high, baseline)


def collapse_of(row: Mapping[str, Any], pred: pd.DataFrame | None) -> Collapse:
    """The judgement of one row of the runs table, from its predictions when it has them, else its metrics."""
    baseline = number(row.get(at_best("val/cer_baseline")))
    if pred is None:
        distinct = number(row.get(at_best("val/distinct")))
        return judge(distinct=distinct, cer=number(row.get(at_best("val/cer"))), baseline=baseline)
    output, share = top_output(pred)
    _, high = cer_interval(pred["edits"].to_numpy(), pred["ref_tokens"].to_numpy())
    return judge(
        distinct=distinct_share(pred),
        top_share=share,
        output=output,
        cer=val_cer(pred),
        cer_high=high,
        baseline=baseline,
    )
