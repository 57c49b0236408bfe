"""Checklist item 4: CTC-only greedy CER beside the joint beam-search CER, and what the gap means."""

from __future__ import annotations

import math

from analysis.diagnose.common import HIGH_CER

CLOSE = 0.02  # CER difference below this: the two decoders agree


def ctc_vs_joint(joint: float, ctc: float) -> str:
    """What the gap between CTC-only greedy CER and the joint beam-search CER means."""
    if math.isnan(ctc) or math.isnan(joint):
        return "val/cer_ctc_greedy or val/cer is missing: no comparison."
    gap = ctc - joint
    head = f"CTC-only greedy CER {ctc:.3f} vs joint beam-search CER {joint:.3f} (CTC - joint = {gap:+.3f}). "
    if abs(gap) < CLOSE:
        if joint >= HIGH_CER:
            return head + (
                "CTC alone is as poor as the joint search: the problem lies upstream, in the frontend and "
                "encoder features; the decoder cannot recover what the encoder does not see. Check the "
                "frontend (pretrained? frozen?), the gradient flow into proj_encoder/adapter, and the sanity model."
            )
        return head + "The two agree: the encoder's alignment carries the result and the decoder adds little."
    if gap > 0:
        text = head + "The attention decoder and the beam add context that the CTC alignment alone lacks."
        if ctc >= HIGH_CER:
            text += (
                " CTC alone is poor, so the decoder does most of the work, partly as a language model over the "
                "training texts; a larger model.ctc_weight makes the encoder align better."
            )
        return text
    return head + (
        "The joint search is worse than CTC alone: the decoder hurts. It may dominate the loss and "
        "over-smooth its outputs (checklist item 7); try a larger decode.ctc_weight, a length bonus "
        "(decode.penalty), less label smoothing, and look for too short or too long hypotheses below."
    )
