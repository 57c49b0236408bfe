"""Checklist item 2: over-fitting, under-fitting, stuck or healthy, from train vs val CER and their trends."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from analysis.diagnose.common import HIGH_CER, Verdict, series

LOW_TRAIN_CER = 0.2  # a train CER above this means the model does not fit its training data yet
GAP = 0.15  # val CER this far above train CER: a generalisation gap
FLAT = 0.05  # a relative improvement below this over the recent window is "not improving"
RISE = 0.03  # val CER this far above its best at the end, with training still improving: over-fitting
MIN_VALIDATIONS = 3


def _gain(points: list[tuple[int, float]]) -> float:
    """Relative improvement (a fall) from the first to the last point; positive = improving."""
    first, last = points[0][1], points[-1][1]
    return (first - last) / max(abs(first), 1e-9)


def _change(gain: float) -> str:
    return f"fell {gain:.1%}" if gain > 0 else f"rose {-gain:.1%}" if gain < 0 else "unchanged"


@dataclass
class Trend:
    """val and train CER over the last third of the validations (at least MIN_VALIDATIONS)."""

    start_epoch: int
    last_epoch: int
    best_epoch: int
    best: float
    v_last: float
    v_gain: float
    t_last: float | None  # None when train/cer is not logged
    t_gain: float  # of train/cer, or of train/loss without it
    gap: float  # val - train CER at the last epoch with both (NaN without train/cer)
    numbers: dict[str, float] = field(default_factory=dict)
    evidence: list[str] = field(default_factory=list)


def _train_side(rows: Sequence[dict[str, Any]], trend: Trend, val: list[tuple[int, float]]) -> None:
    """Fill the train side of `trend`: train/cer's trend and the gap, or train/loss's trend without train/cer."""
    train = series(rows, "train/cer")
    if train:
        t_recent = [p for p in train if p[0] >= trend.start_epoch] or train[-1:]
        t_recent = t_recent if len(t_recent) > 1 else train[-2:]
        trend.t_last, trend.t_gain = train[-1][1], _gain(t_recent)
        both = sorted(set(dict(train)) & set(dict(val)))
        at = both[-1] if both else trend.last_epoch
        trend.gap = dict(val).get(at, trend.v_last) - dict(train).get(at, trend.t_last)
        trend.numbers.update(
            {"train_cer_last": trend.t_last, "train_gain_recent": trend.t_gain, "gap": trend.gap, "gap_epoch": at}
        )
        trend.evidence.append(
            f"train/cer {t_recent[0][1]:.3f} -> {trend.t_last:.3f} over epochs {t_recent[0][0]}-{t_recent[-1][0]} "
            f"({_change(trend.t_gain)})"
        )
        trend.evidence.append(f"gap val - train CER at epoch {at}: {trend.gap:+.3f}")
        return
    loss = series(rows, "train/loss")
    loss_recent = [p for p in loss if p[0] >= trend.start_epoch] or loss[-2:]
    trend.t_gain = _gain(loss_recent) if len(loss_recent) > 1 else 0.0
    trend.numbers["train_loss_gain_recent"] = trend.t_gain
    trend.evidence.append(
        f"train/cer not logged (train.train_cer_every=0); train/loss {_change(trend.t_gain)} over the same epochs"
    )


def trend_of(rows: Sequence[dict[str, Any]], val: list[tuple[int, float]]) -> Trend:
    window = max(MIN_VALIDATIONS, math.ceil(len(val) / 3))
    recent = val[-window:]
    best_epoch, best = min(val, key=lambda p: p[1])
    trend = Trend(recent[0][0], val[-1][0], best_epoch, best, val[-1][1], _gain(recent), None, 0.0, math.nan)
    trend.numbers = {
        "val_cer_last": trend.v_last,
        "val_cer_best": best,
        "epoch_best": best_epoch,
        "val_gain_recent": trend.v_gain,
        "window_start": trend.start_epoch,
        "window_end": trend.last_epoch,
    }
    trend.evidence = [
        f"val/cer {recent[0][1]:.3f} -> {trend.v_last:.3f} over epochs {trend.start_epoch}-{trend.last_epoch} "
        f"({_change(trend.v_gain)})",
        f"best val/cer {best:.3f} at epoch {best_epoch}",
    ]
    _train_side(rows, trend, val)
    return trend


def _stuck(t: Trend) -> str | None:
    if t.v_last >= HIGH_CER and (t.t_last is None or t.t_last >= HIGH_CER) and t.v_gain < FLAT and t.t_gain < FLAT:
        t.evidence.append(f"both high (>= {HIGH_CER}) and neither improved by {FLAT:.0%} over the window")
        return (
            "Both CERs are high and flat: a representational bottleneck or bad optimisation. Check the gradient "
            "flow (frozen or vanishing groups), the learning rate and warm-up, the CTC-only CER below, and run "
            "the sanity model (`python -m launch sanity`)."
        )
    return None


def _over_fitting(t: Trend) -> str | None:
    gapped = t.t_last is not None and t.t_last < HIGH_CER and t.gap >= GAP
    rising = t.v_last - t.best >= RISE and t.best_epoch < t.last_epoch and t.t_gain >= FLAT
    if not (gapped or rising):
        return None
    if t.t_last is not None and t.gap >= GAP:
        t.evidence.append(
            f"train/cer {t.t_last:.3f} is low but val/cer {t.v_last:.3f} is {t.gap:.3f} higher (>= {GAP})"
        )
    if rising:
        t.evidence.append(
            f"val/cer rose {t.v_last - t.best:+.3f} above its best (epoch {t.best_epoch}) while training still improved"
        )
    return (
        f"The model learns its training clips better than it generalises. Use the best checkpoint (epoch "
        f"{t.best_epoch}); add augmentation (augment.time_mask_window, augment.time_warp), dropout "
        "(model.dropout) or weight decay; freeze more of a pretrained model; stop early (train.patience)."
    )


def _under_fitting(t: Trend) -> str | None:
    if not ((t.t_last is not None and t.t_last >= LOW_TRAIN_CER) or (t.t_last is None and t.v_last >= HIGH_CER)):
        return None
    level = f"train/cer {t.t_last:.3f}" if t.t_last is not None else f"val/cer {t.v_last:.3f} (train/cer not logged)"
    t.evidence.append(f"{level} is still high (>= {LOW_TRAIN_CER if t.t_last is not None else HIGH_CER})")
    return (
        "Training CER stays high: model capacity or optimisation. Train longer (train.max_epochs), check the "
        "learning rate and warm-up, unfreeze parts, or use a larger model; see the gradient flow below."
    )


def _healthy(t: Trend) -> str:
    if t.t_last is not None:
        t.evidence.append(f"train/cer {t.t_last:.3f} is low and the gap {t.gap:+.3f} is below {GAP}")
    return "Train and validation CER fall together." + (
        " val/cer still improved at the end: more epochs may help." if t.v_gain >= FLAT else ""
    )


def fitting_verdict(rows: Sequence[dict[str, Any]]) -> Verdict:
    """Over-fitting, under-fitting, stuck or healthy, from train vs val CER and their trends over the last third."""
    val = series(rows, "val/cer")
    if len(val) < MIN_VALIDATIONS:
        return Verdict(
            "not enough data",
            [f"{len(val)} validated epochs; at least {MIN_VALIDATIONS} are needed to see a trend"],
            advice="train longer or validate more often (train.val_every)",
        )
    trend = trend_of(rows, val)
    for kind, check in (("stuck", _stuck), ("over-fitting", _over_fitting), ("under-fitting", _under_fitting)):
        advice = check(trend)
        if advice is not None:
            return Verdict(kind, trend.evidence, trend.numbers, advice)
    return Verdict("healthy", trend.evidence, trend.numbers, _healthy(trend))
