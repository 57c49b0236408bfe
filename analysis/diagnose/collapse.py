"""Checked before the fitting verdict: a collapsed run (analysis/collapse.py) gives one output for most clips or
does not beat the best constant output; its curves then say nothing about lip reading."""

from __future__ import annotations

import math

import pandas as pd

from analysis.collapse import Collapse, collapse_of
from analysis.diagnose.common import Context, Verdict
from analysis.diagnose.decode import Decoded
from analysis.predictions import FILE, predictions_frame, read_predictions
from analysis.rows import at_best, number
from trainer.config import Config
from trainer.tracking import PREDICTION_COLUMNS


def decoded_predictions(decoded: Decoded) -> pd.DataFrame:
    """The decoded split as a predictions table (the rows of trainer/evaluate.py carry every column)."""
    rows = [[r[c] for c in PREDICTION_COLUMNS] for r in decoded.rows]
    return predictions_frame(list(PREDICTION_COLUMNS), rows, f"the decoding of epoch {decoded.epoch}")


def context_predictions(ctx: Context) -> tuple[pd.DataFrame | None, str]:
    """The predictions the diagnosis judges by, and where they come from."""
    if ctx.decoded is not None:
        return decoded_predictions(ctx.decoded), f"the {len(ctx.decoded.rows)} clips decoded again"
    path = ctx.run_dir / FILE
    if path.is_file():
        best = ctx.summary.get("epoch_best")
        return read_predictions(path), f"{FILE} (the best epoch{f', {best}' if best is not None else ''})"
    return None, ""


def judge_run(ctx: Context) -> Collapse:
    """The collapse judgement of the diagnosed checkpoint: its predictions, else its epoch's metrics."""
    row = {at_best(k): v for k, v in ctx.metrics.items()}
    if math.isnan(number(row.get(at_best("val/cer_baseline")))):  # constant over a run: any epoch's value
        row[at_best("val/cer_baseline")] = next(
            (r["val/cer_baseline"] for r in ctx.rows if not math.isnan(number(r.get("val/cer_baseline")))), math.nan
        )
    return collapse_of(row, ctx.predictions)


def collapse_advice(cfg: Config | None) -> str:
    """What to try, for this config: never raising a weight already at its maximum."""
    if cfg is not None and cfg.train.noise_input:
        return (
            "This is a noise-control run (train.noise_input=true): its frames are noise, so nothing but the labels' "
            "prior can be learned and collapse is the expected outcome; runs on the real frames must beat it."
        )
    tries = [
        "check that the frames reach the model: `python -m launch sanity` with this config must learn, and with "
        "--frontend noise must not"
    ]
    if cfg is not None:
        tries.append(f"a lower learning rate (optim.lr is {cfg.optim.lr:g}) or a longer warm-up (optim.warmup_epochs)")
        if cfg.model.ctc_weight < 1:
            tries.append(
                f"a larger model.ctc_weight ({cfg.model.ctc_weight:g} now): CTC ties the outputs to the frames"
            )
        tries.append(
            f"more epochs (train.max_epochs is {cfg.train.max_epochs}): outputting the prior is an early phase"
        )
    return (
        "The model gives (nearly) the same output whatever the frames: it learned which tokens are frequent, not "
        "how the lips move, so its val/cer says nothing about lip reading. Try: " + "; ".join(tries) + "."
    )


def collapse_verdict(ctx: Context) -> Verdict | None:
    """`collapsed` with its numbers and what to try, or None when the run is not (or cannot be judged) collapsed."""
    judged = judge_run(ctx)
    if not judged.collapsed:
        return None
    evidence = [*judged.reasons, f"from {ctx.predictions_from or 'the logged metrics'}: {judged.numbers()}"]
    numbers = {"distinct": judged.distinct, "top_share": judged.top_share, "cer": judged.cer, "cer_high": judged.cer_high,
               "baseline": judged.baseline}  # fmt: skip
    return Verdict("collapsed", evidence, numbers, collapse_advice(ctx.cfg))
