"""Checklist item 4: CTC-only greedy CER beside the joint beam-search CER, and what the gap means; what a CER of
1.0 or above 1 means, and the baseline the run must beat."""

from __future__ import annotations

import math

from analysis.diagnose.common import HIGH_CER, Context
from analysis.predictions import empty_share
from analysis.report import Report
from analysis.rows import number
from trainer.config import Config

CLOSE = 0.02  # CER difference below this: the two decoders agree
nan = math.nan


def _joint_worse(head: str, cfg: Config | None) -> str:
    """The joint search is worse than CTC alone: the decoder hurts; what to try that this config leaves room for."""
    tries = []
    if cfg is None or cfg.decode.ctc_weight < 1:
        tries.append("a larger decode.ctc_weight")
    tries.append("a length bonus (decode.penalty)")
    if cfg is None or cfg.model.label_smoothing > 0:
        tries.append("less label smoothing")
    return head + (
        "The joint search is worse than CTC alone: the decoder hurts. It may dominate the loss and over-smooth its "
        f"outputs (checklist item 7); try {', '.join(tries)}, and look for too short or too long hypotheses below."
    )


UPSTREAM = (
    "the problem lies upstream, in the frontend and encoder features; the decoder cannot recover what the encoder "
    "does not see. Check the frontend (pretrained? frozen?), the gradient flow into proj_encoder/adapter, and the "
    "sanity model."
)


def _gap_meaning(head: str, joint: float, ctc: float, cfg: Config | None) -> str:
    gap = ctc - joint
    if cfg is not None and cfg.decode.ctc_weight >= 1:
        text = head + (
            "decode.ctc_weight is 1.0: the decoder takes no part in decoding and the search is a CTC prefix beam "
            "search, so CTC - joint measures what the beam adds over greedy CTC decoding, not the decoder."
        )
        return text + (f" Both are poor: {UPSTREAM}" if min(joint, ctc) >= HIGH_CER else "")
    if abs(gap) < CLOSE:
        if joint >= HIGH_CER:
            return head + f"CTC alone is as poor as the joint search: {UPSTREAM}"
        return head + "The two agree: the encoder's alignment carries the result and the decoder adds little."
    if gap < 0:
        return _joint_worse(head, cfg)
    text = head + "The attention decoder and the beam add context that the CTC alignment alone lacks."
    if ctc >= HIGH_CER:
        text += " CTC alone is poor, so the decoder does most of the work, partly as a language model over the training texts"
        more = cfg is None or cfg.model.ctc_weight < 1
        text += "; a larger model.ctc_weight makes the encoder align better." if more else "."
    return text


def _extremes(joint: float, ctc: float, empty_ctc: float) -> list[str]:
    """What a CTC-greedy CER of 1.0 and a CER above 1 mean."""
    out = []
    if ctc == 1.0:
        if not math.isnan(empty_ctc):
            out.append(
                f"A CTC-greedy CER of 1.000 means empty outputs: the CTC head emits only blanks ({empty_ctc:.0%} of the "
                "clips get no token), so every reference token counts as deleted."
            )
        else:
            out.append("A CTC-greedy CER of exactly 1.000 is what empty outputs give (every reference token deleted).")
    for name, value in (("val/cer", joint), ("val/cer_ctc_greedy", ctc)):
        if value > 1:
            out.append(
                f"{name} {value:.3f} is above 1: the outputs hold more tokens than the references (insertions count "
                "as errors, so a CER has no ceiling at 1)."
            )
    return out


def baseline_line(joint: float, baseline: float) -> str:
    """The run's CER against the best constant output."""
    if math.isnan(baseline) or math.isnan(joint):
        return ""
    how = f"beats it by {baseline - joint:.3f}" if joint < baseline else f"does not beat it ({joint - baseline:+.3f})"
    return (
        f"The baseline, val/cer_baseline {baseline:.3f}, is the CER of the best constant output (one training "
        f"transcript, or nothing, for every clip): val/cer {joint:.3f} {how}."
    )


def ctc_vs_joint(
    joint: float, ctc: float, *, cfg: Config | None = None, baseline: float = nan, empty_ctc: float = nan
) -> str:
    """What the gap between CTC-only greedy CER and the joint beam-search CER means, for this run's weights."""
    if math.isnan(ctc) or math.isnan(joint):
        return "val/cer_ctc_greedy or val/cer is missing: no comparison."
    head = f"CTC-only greedy CER {ctc:.3f} vs joint beam-search CER {joint:.3f} (CTC - joint = {ctc - joint:+.3f}). "
    parts = [_gap_meaning(head, joint, ctc, cfg), *_extremes(joint, ctc, empty_ctc), baseline_line(joint, baseline)]
    return " ".join(p for p in parts if p)


def ctc_section(report: Report, ctx: Context) -> None:
    report.heading("4. CTC-only greedy decoding vs the joint beam search")
    baseline = next(
        (
            number(r["val/cer_baseline"])
            for r in [ctx.metrics, *ctx.rows]
            if not math.isnan(number(r.get("val/cer_baseline")))
        ),
        nan,
    )
    empty = empty_share(ctx.predictions) if ctx.predictions is not None else nan
    joint, ctc = number(ctx.metrics.get("val/cer")), number(ctx.metrics.get("val/cer_ctc_greedy"))
    report.text(ctc_vs_joint(joint, ctc, cfg=ctx.cfg, baseline=baseline, empty_ctc=empty))
