"""Diagnose one run: the user's checklist as a report (Markdown + PNGs, and an HTML page holding them).

1. learning curves (train loss and val CER per epoch, side by side);
2. a fitting verdict: over-fitting, under-fitting, stuck or healthy, with the numbers behind it;
3. gradient flow per module group, flagging frozen (no gradient), zero and vanishing groups;
4. CTC-only greedy CER beside the joint beam-search CER, and what the gap means;
5. the worst-k validation clips (frames, target, prediction, score, CER);
6. token confusions (a heatmap of the most confused tokens, the top pairs, base-letter vs diacritic errors);
7. hyperparameter sanity warnings, each with its reason.
(8, the sanity model, is `python -m launch sanity`, analysis/sanity.py.)

With a checkpoint and the dataset at hand, the validation split is decoded again with the chosen
checkpoint (best or last); otherwise sections 5 and 6 use the CSVs the run wrote.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.fonts import arabic_rc  # noqa: E402
from analysis.plots import learning_curves, save_figure  # noqa: E402
from analysis.report import Report  # noqa: E402
from analysis.runs import number, read_run_summary  # noqa: E402
from trainer.config import Config, load_config  # noqa: E402
from trainer.errors import DataError  # noqa: E402
from trainer.text import split_token  # noqa: E402
from trainer.tracking import read_metrics  # noqa: E402

# Fitting verdict thresholds (CER is a fraction: 0.5 = half the tokens wrong).
HIGH_CER = 0.5  # a CER at or above this is high
LOW_TRAIN_CER = 0.2  # a train CER above this means the model does not fit its training data yet
GAP = 0.15  # val CER this far above train CER: a generalisation gap
FLAT = 0.05  # a relative improvement below this over the recent window is "not improving"
RISE = 0.03  # val CER this far above its best at the end, with training still improving: over-fitting
MIN_VALIDATIONS = 3
# Gradient flow thresholds.
VANISH = 1e-3  # a group's norm below this fraction of the largest group's: vanishing
DECAY = 1e-2  # a group's norm below this fraction of its first epoch's: fell sharply
# CTC vs joint.
CLOSE = 0.02  # CER difference below this: the two decoders agree
GROUPS = ("frontend_stem", "frontend_last", "proj_encoder", "adapter", "encoder", "decoder", "ctc")
MEAN_FRAMES = 30.84  # the user's mean clip length, to turn train.batch_frames into clips
EMPTY = "∅"


@dataclass
class Finding:
    """One line of a section: a warning, a note or an ok, about a config key or module group, with its reason."""

    level: Literal["warning", "note", "ok"]
    topic: str
    message: str
    reason: str = ""

    def __str__(self) -> str:
        return f"{self.topic}: {self.message}" + (f" ({self.reason})" if self.reason else "")


@dataclass
class Verdict:
    kind: str  # over-fitting | under-fitting | stuck | healthy | not enough data
    evidence: list[str]
    numbers: dict[str, float] = field(default_factory=dict)
    advice: str = ""


def series(rows: Sequence[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """(epoch, value) for the epochs that logged `key` with a finite value."""
    return [(int(r["epoch"]), float(r[key])) for r in rows if "epoch" in r and not math.isnan(number(r.get(key)))]


def _gain(points: list[tuple[int, float]]) -> float:
    """Relative improvement (a fall) from the first to the last point; positive = improving."""
    first, last = points[0][1], points[-1][1]
    return (first - last) / max(abs(first), 1e-9)


def _change(gain: float) -> str:
    return f"fell {gain:.1%}" if gain > 0 else f"rose {-gain:.1%}" if gain < 0 else "unchanged"


# --------------------------------------------------------------------------- 2. verdict


def fitting_verdict(rows: Sequence[dict[str, Any]]) -> Verdict:
    """Over-fitting, under-fitting, stuck or healthy, from train vs val CER and their trends over the last third."""
    val = series(rows, "val/cer")
    if len(val) < MIN_VALIDATIONS:
        return Verdict(
            "not enough data",
            [f"{len(val)} validated epochs; at least {MIN_VALIDATIONS} are needed to see a trend"],
            advice="train longer or validate more often (train.val_every)",
        )
    window = max(MIN_VALIDATIONS, math.ceil(len(val) / 3))
    recent = val[-window:]
    start_epoch, last_epoch = recent[0][0], val[-1][0]
    best_epoch, best = min(val, key=lambda p: p[1])
    v_last, v_gain = val[-1][1], _gain(recent)
    train = series(rows, "train/cer")
    numbers = {
        "val_cer_last": v_last,
        "val_cer_best": best,
        "epoch_best": best_epoch,
        "val_gain_recent": v_gain,
        "window_start": start_epoch,
        "window_end": last_epoch,
    }
    evidence = [
        f"val/cer {recent[0][1]:.3f} -> {v_last:.3f} over epochs {start_epoch}-{last_epoch} ({_change(v_gain)})",
        f"best val/cer {best:.3f} at epoch {best_epoch}",
    ]
    t_last: float | None = None
    if train:
        t_recent = [p for p in train if p[0] >= start_epoch] or train[-1:]
        t_recent = t_recent if len(t_recent) > 1 else train[-2:]
        t_last, t_gain = train[-1][1], _gain(t_recent)
        both = sorted(set(dict(train)) & set(dict(val)))
        at = both[-1] if both else last_epoch
        gap = dict(val).get(at, v_last) - dict(train).get(at, t_last)
        numbers.update({"train_cer_last": t_last, "train_gain_recent": t_gain, "gap": gap, "gap_epoch": at})
        evidence.append(
            f"train/cer {t_recent[0][1]:.3f} -> {t_last:.3f} over epochs {t_recent[0][0]}-{t_recent[-1][0]} ({_change(t_gain)})"
        )
        evidence.append(f"gap val - train CER at epoch {at}: {gap:+.3f}")
    else:
        loss = series(rows, "train/loss")
        loss_recent = [p for p in loss if p[0] >= start_epoch] or loss[-2:]
        t_gain = _gain(loss_recent) if len(loss_recent) > 1 else 0.0
        gap = math.nan
        numbers.update({"train_loss_gain_recent": t_gain})
        evidence.append(
            f"train/cer not logged (train.train_cer_every=0); train/loss {_change(t_gain)} over the same epochs"
        )

    rising = v_last - best >= RISE and best_epoch < last_epoch and t_gain >= FLAT
    if v_last >= HIGH_CER and (t_last is None or t_last >= HIGH_CER) and v_gain < FLAT and t_gain < FLAT:
        kind = "stuck"
        evidence.append(f"both high (>= {HIGH_CER}) and neither improved by {FLAT:.0%} over the window")
        advice = (
            "Both CERs are high and flat: a representational bottleneck or bad optimisation. Check the gradient "
            "flow (frozen or vanishing groups), the learning rate and warm-up, the CTC-only CER below, and run "
            "the sanity model (`python -m launch sanity`)."
        )
    elif (t_last is not None and t_last < HIGH_CER and gap >= GAP) or rising:
        kind = "over-fitting"
        if t_last is not None and gap >= GAP:
            evidence.append(f"train/cer {t_last:.3f} is low but val/cer {v_last:.3f} is {gap:.3f} higher (>= {GAP})")
        if rising:
            evidence.append(
                f"val/cer rose {v_last - best:+.3f} above its best (epoch {best_epoch}) while training still improved"
            )
        advice = (
            f"The model learns its training clips better than it generalises. Use the best checkpoint (epoch "
            f"{best_epoch}); add augmentation (augment.time_mask_window, augment.time_warp), dropout "
            "(model.dropout) or weight decay; freeze more of a pretrained model; stop early (train.patience)."
        )
    elif (t_last is not None and t_last >= LOW_TRAIN_CER) or (t_last is None and v_last >= HIGH_CER):
        kind = "under-fitting"
        level = f"train/cer {t_last:.3f}" if t_last is not None else f"val/cer {v_last:.3f} (train/cer not logged)"
        evidence.append(f"{level} is still high (>= {LOW_TRAIN_CER if t_last is not None else HIGH_CER})")
        advice = (
            "Training CER stays high: model capacity or optimisation. Train longer (train.max_epochs), check the "
            "learning rate and warm-up, unfreeze parts, or use a larger model; see the gradient flow below."
        )
    else:
        kind = "healthy"
        if t_last is not None:
            evidence.append(f"train/cer {t_last:.3f} is low and the gap {gap:+.3f} is below {GAP}")
        advice = "Train and validation CER fall together." + (
            " val/cer still improved at the end: more epochs may help." if v_gain >= FLAT else ""
        )
    return Verdict(kind, evidence, numbers, advice)


# --------------------------------------------------------------------------- 3. gradient flow


def frozen_groups(cfg: Config) -> dict[str, str]:
    """Groups the config freezes -> the key that does it (as trainer.model.apply_freezing does)."""
    frozen = {}
    if cfg.model.freeze.frontend:
        frozen.update({"frontend_stem": "model.freeze.frontend", "frontend_last": "model.freeze.frontend"})
    n = cfg.model.freeze.encoder_layers
    if n != 0:
        frozen["proj_encoder"] = "model.freeze.encoder_layers"
        if n < 0 or n >= cfg.model.encoder.layers:
            frozen["encoder"] = "model.freeze.encoder_layers"
    return frozen


def gradient_flow(rows: Sequence[dict[str, Any]], cfg: Config | None) -> list[Finding]:
    """A finding per module group: frozen as configured, no gradient, frozen but with gradient, zero, vanishing, ok."""
    out: list[Finding] = []

    def add(level: str, topic: str, message: str, reason: str = "") -> None:
        out.append(Finding(level, topic, message, reason))  # type: ignore[arg-type]

    frozen = frozen_groups(cfg) if cfg is not None else {}
    groups = [g for g in GROUPS if g != "adapter" or (cfg is not None and cfg.model.adapter != "none")]
    groups += [g for g in GROUPS if g not in groups and series(rows, f"grad_norm/{g}")]
    last_epoch = max((int(r["epoch"]) for r in rows if any(k.startswith("grad_norm/") for k in r)), default=None)
    at_last = {g: dict(series(rows, f"grad_norm/{g}")).get(last_epoch) for g in groups} if last_epoch else {}
    present = {g: v for g, v in at_last.items() if v is not None}
    peak_group = max(present, key=present.get) if present else None
    for g in groups:
        values = series(rows, f"grad_norm/{g}")
        if not values:
            if g in frozen:
                add("ok", g, f"no gradient: frozen by {frozen[g]}, as configured")
            elif cfg is None:
                add("note", g, "no gradient logged (the config is unknown: frozen or absent?)")
            else:
                add(
                    "warning",
                    g,
                    "no gradient logged although the config trains it",
                    "the loss does not reach it: a detached path, or a part the forward pass skips",
                )
            continue
        last = values[-1][1]
        if g in frozen:
            add(
                "warning",
                g,
                f"frozen by {frozen[g]} but its gradient norm is {last:.2e}",
                "freezing did not take effect, so the optimizer's learning rate reaches it",
            )
        elif last == 0:
            add(
                "warning",
                g,
                f"zero gradient at epoch {values[-1][0]}",
                "nothing flows back into this group: check for a detach or a zero-initialised gate",
            )
        elif peak_group and present.get(g) is not None and present[g] < VANISH * present[peak_group]:
            add(
                "warning",
                g,
                f"vanishing: {present[g]:.2e} at epoch {last_epoch}, "
                f"{present[g] / present[peak_group]:.1e} of {peak_group}'s {present[peak_group]:.2e}",
                "it barely learns; the learning rate or the schedule may keep it from adapting",
            )
        elif values[0][1] > 0 and last < DECAY * values[0][1]:
            add(
                "note",
                g,
                f"fell from {values[0][1]:.2e} (epoch {values[0][0]}) to {last:.2e} (epoch {values[-1][0]})",
                "a sharp fall: converged, or starved by the schedule",
            )
        else:
            add("ok", g, f"{last:.2e} at epoch {values[-1][0]}")
    return out


def gradient_plot(rows: Sequence[dict[str, Any]], out: Path) -> Path:
    """Gradient norm per group per epoch (log scale), beside the learning rate."""
    fig, (ax_g, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for g in GROUPS:
        pts = series(rows, f"grad_norm/{g}")
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax_g.plot(xs, [max(y, 1e-12) for y in ys], marker="o", ms=3, label=g)
    ax_g.set(
        xlabel="epoch", ylabel="mean gradient L2 norm per step", title="gradient flow by module group", yscale="log"
    )
    ax_g.grid(alpha=0.3, which="both")
    if ax_g.lines:
        ax_g.legend(fontsize=8)
    lr = series(rows, "train/lr")
    if lr:
        ax_lr.plot(*zip(*lr, strict=True), marker="o", ms=3, color="tab:purple")
    ax_lr.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="learning rate")
    ax_lr.grid(alpha=0.3)
    return save_figure(fig, out)


# --------------------------------------------------------------------------- 4. CTC vs joint


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


# --------------------------------------------------------------------------- 6. confusions


def confusions_from_csv(path: Path) -> Counter:
    """confusions.csv (kind, ref, hyp, count) -> Counter of (ref token or None, hyp token or None)."""
    import csv

    counts: Counter = Counter()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"kind", "ref", "hyp", "count"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns kind, ref, hyp, count")
        for line, r in enumerate(reader, start=2):
            try:
                n = int(r["count"])
            except ValueError:
                raise DataError(f"{path}, row {line}: count {r['count']!r} is not an integer") from None
            ref = None if r["kind"] == "insertion" else r["ref"]
            hyp = None if r["kind"] == "deletion" else r["hyp"]
            counts[(ref, hyp)] += n
    return counts


def error_kind(ref: str | None, hyp: str | None) -> str:
    """deletion, insertion, diacritic (same base letter, other marks) or letter (another base letter)."""
    if hyp is None:
        return "deletion"
    if ref is None:
        return "insertion"
    return "diacritic" if split_token(ref)[0] == split_token(hyp)[0] else "letter"


def confusion_matrix(counts: Counter, top: int = 15) -> tuple[list[str], list[str], np.ndarray]:
    """The `top` tokens most involved in errors: row labels (ref + ∅ for insertions), column labels (hyp + ∅), counts."""
    involvement: Counter = Counter()
    for (r, h), n in counts.items():
        for t in (r, h):
            if t is not None:
                involvement[t] += n
    tokens = [t for t, _ in involvement.most_common(top)]
    refs, hyps = [*tokens, None], [*tokens, None]
    matrix = np.array([[counts.get((r, h), 0) for h in hyps] for r in refs], dtype=int)  # (top + 1, top + 1)
    label = lambda t: EMPTY if t is None else t  # noqa: E731
    return [label(t) for t in refs], [label(t) for t in hyps], matrix


def confusion_heatmap(counts: Counter, out: Path, top: int = 15) -> Path:
    """Heatmap of the most confused tokens: rows the reference token, columns what was decoded (∅: nothing)."""
    rows, cols, m = confusion_matrix(counts, top)
    with plt.rc_context(arabic_rc()):
        size = 1.4 + 0.42 * len(cols)
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        image = ax.imshow(m, cmap="Reds")
        ax.set_xticks(range(len(cols)), cols, fontsize=13)
        ax.set_yticks(range(len(rows)), rows, fontsize=13)
        for i, j in zip(*np.nonzero(m), strict=True):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if m[i, j] > 0.6 * m.max() else "black",
            )
        ax.set(
            xlabel=f"decoded token ({EMPTY}: deleted)",
            ylabel=f"reference token ({EMPTY}: inserted)",
            title=f"token confusions: the {len(cols) - 1} most confused tokens",
        )
        fig.colorbar(image, ax=ax, shrink=0.8, label="count")
        return save_figure(fig, out)


def length_note(rows: Sequence[dict[str, Any]]) -> str:
    """How long the hypotheses are against the references, and what too short or too long suggests."""
    ref = sum(len(r["ref_ids"]) for r in rows)
    hyp = sum(len(r["hyp_ids"]) for r in rows)
    ratio = hyp / max(1, ref)
    text = f"The hypotheses hold {hyp} tokens for {ref} reference tokens ({ratio:.0%})"
    if ratio < 0.8:
        return text + ": too short, deletions dominate (the search ends early; try a length bonus, decode.penalty > 0)."
    if ratio > 1.2:
        return (
            text
            + ": too long, insertions dominate (repeats; try a smaller decode.penalty or a larger decode.ctc_weight)."
        )
    return text + "."


# --------------------------------------------------------------------------- 7. hyperparameters


def hyperparameter_checks(
    cfg: Config,
    *,
    steps_per_epoch: float | None = None,
    vocab_size: int | None = None,
    rows: Sequence[dict[str, Any]] = (),
) -> list[Finding]:
    """Warnings (with reasons) on warm-up, learning rate, CTC weight, beam vs vocabulary, batch and frozen parts."""
    out: list[Finding] = []

    def add(level: str, topic: str, message: str, reason: str = "") -> None:
        out.append(Finding(level, topic, message, reason))  # type: ignore[arg-type]

    o, t, m, d = cfg.optim, cfg.train, cfg.model, cfg.decode
    # warm-up vs total
    share = o.warmup_epochs / t.max_epochs
    if o.warmup_epochs >= t.max_epochs:
        add(
            "warning",
            "optim.warmup_epochs",
            f"warm-up ({o.warmup_epochs:g} epochs) is not shorter than training ({t.max_epochs} epochs)",
            "the rate never reaches its peak and the cosine decay never starts",
        )
    elif share > 0.3:
        add(
            "warning",
            "optim.warmup_epochs",
            f"warm-up takes {share:.0%} of training",
            "auto_avsr warms up 5 of 75 epochs (7%); a long warm-up leaves little time at a useful rate",
        )
    elif o.warmup_epochs == 0 and o.lr >= 1e-4:
        add(
            "warning",
            "optim.warmup_epochs",
            f"no warm-up at a peak rate of {o.lr:g}",
            "Transformers trained with AdamW without warm-up often diverge in the first steps",
        )
    else:
        add("ok", "optim.warmup_epochs", f"{o.warmup_epochs:g} of {t.max_epochs} epochs ({share:.0%})")
    if steps_per_epoch:
        warmup_steps, total = round(o.warmup_epochs * steps_per_epoch), round(t.max_epochs * steps_per_epoch)
        if total < 1000:
            add(
                "note",
                "train.max_epochs",
                f"{total} optimizer steps in all ({steps_per_epoch:.0f} an epoch, {warmup_steps} of warm-up)",
                "few updates: raise train.max_epochs or lower the effective batch",
            )
    # learning rate
    fine_tuning = bool(m.pretrained.path)
    lo, hi = (1e-5, 1e-3) if fine_tuning else (1e-4, 3e-3)
    what = "fine-tuning a pretrained model" if fine_tuning else "training from scratch"
    if o.lr > hi:
        add(
            "warning",
            "optim.lr",
            f"{o.lr:g} is above the usual range for {what} ({lo:g} to {hi:g})",
            "large steps wash out pretrained features"
            if fine_tuning
            else "Conformer/Transformer training with AdamW diverges or plateaus at such rates (auto_avsr: 1e-3)",
        )
    elif o.lr < lo:
        add(
            "warning",
            "optim.lr",
            f"{o.lr:g} is below the usual range for {what} ({lo:g} to {hi:g})",
            "the updates are too small to learn much in the epochs a small dataset allows",
        )
    else:
        add("ok", "optim.lr", f"{o.lr:g} is in the usual range for {what} ({lo:g} to {hi:g})")
    # CTC weight
    if m.ctc_weight == 0:
        add(
            "warning",
            "model.ctc_weight",
            "0: no CTC loss",
            "the encoder gets no alignment signal, and CTC greedy decoding and the beam search's CTC "
            "prefix scores use an untrained head; auto_avsr uses 0.1",
        )
    elif m.ctc_weight == 1:
        add(
            "warning",
            "model.ctc_weight",
            "1: the attention decoder is never trained",
            "the joint beam search then follows an untrained decoder; decode with decode.ctc_weight=1",
        )
    elif m.ctc_weight < 0.1:
        add(
            "warning",
            "model.ctc_weight",
            f"{m.ctc_weight:g}: the attention loss dominates",
            "a dominating decoder can over-smooth its outputs (checklist item 7); 0.1 to 0.3 is usual",
        )
    else:
        add("ok", "model.ctc_weight", f"{m.ctc_weight:g} (training), {d.ctc_weight:g} (decoding)")
    if d.ctc_weight > 0 and m.ctc_weight == 0:
        add(
            "warning",
            "decode.ctc_weight",
            f"{d.ctc_weight:g} weights a CTC head that was never trained",
            "its prefix scores are noise; set decode.ctc_weight=0 or train with model.ctc_weight > 0",
        )
    # beam vs vocabulary
    if vocab_size:
        pre_beam = int(1.5 * d.beam_size)
        if d.beam_size >= vocab_size:
            add(
                "warning",
                "decode.beam_size",
                f"{d.beam_size} is not smaller than the vocabulary ({vocab_size})",
                "a beam that wide keeps every continuation: only compute, no gain",
            )
        elif pre_beam >= vocab_size:
            add(
                "note",
                "decode.beam_size",
                f"the pre-beam (1.5 x {d.beam_size} = {pre_beam}) covers the whole vocabulary ({vocab_size})",
                "every token is CTC-scored at every step; a smaller beam is cheaper",
            )
        elif d.beam_size == 1:
            add("note", "decode.beam_size", "1: greedy joint decoding", "a beam of 5 to 40 usually lowers CER")
        else:
            add("ok", "decode.beam_size", f"{d.beam_size} for {vocab_size} output tokens (pre-beam {pre_beam})")
    # effective batch
    per_batch = t.batch_size if t.batch_frames == 0 else t.batch_frames / MEAN_FRAMES
    effective = per_batch * t.accumulate
    how = (
        f"{t.batch_size} clips"
        if t.batch_frames == 0
        else f"~{per_batch:.0f} clips of ~{MEAN_FRAMES:g} frames in {t.batch_frames} frames"
    ) + f" x {t.accumulate} accumulated"
    if effective < 8:
        add(
            "warning",
            "train.accumulate",
            f"effective batch of {effective:.0f} clips ({how})",
            "noisy gradients, and BatchNorm statistics from very few clips; raise train.accumulate",
        )
    elif steps_per_epoch is not None and steps_per_epoch < 5:
        add(
            "warning",
            "train.accumulate",
            f"effective batch of {effective:.0f} clips leaves {steps_per_epoch:.0f} optimizer steps an epoch",
            "few updates per epoch on a small dataset",
        )
    else:
        add("ok", "train.batch_size", f"effective batch of {effective:.0f} clips ({how})")
    # frozen parts
    loaded = set(m.pretrained.parts) if m.pretrained.path else set()
    if m.freeze.frontend and "frontend" not in loaded:
        add(
            "warning",
            "model.freeze.frontend",
            "the frozen frontend is not loaded from a checkpoint",
            "it stays at its random initialisation: the encoder only ever sees random features",
        )
    if m.freeze.encoder_layers != 0 and "encoder" not in loaded:
        add(
            "warning",
            "model.freeze.encoder_layers",
            "frozen encoder blocks are not loaded from a checkpoint",
            "they stay random and can only scramble the features they pass on",
        )
    if (
        m.freeze.frontend
        and (m.freeze.encoder_layers < 0 or m.freeze.encoder_layers >= m.encoder.layers)
        and m.adapter == "none"
    ):
        add(
            "note",
            "model.adapter",
            "frontend and encoder frozen, no adapter: only the decoder and CTC head train",
            "the features cannot adapt to this data; model.adapter=mlp adds a small trained layer",
        )
    for group, key in frozen_groups(cfg).items():
        if series(rows, f"grad_norm/{group}"):
            add(
                "warning",
                key,
                f"the frozen {group} receives gradients",
                "its parameters are trained with the optimizer's learning rate although the config freezes them",
            )
    # smaller things
    if o.grad_clip == 0:
        add("note", "optim.grad_clip", "0: no gradient clipping", "fp16 Transformer training can blow up without it")
    if cfg.augment.time_mask_window > cfg.augment.time_mask_stride / 2:
        add(
            "warning",
            "augment.time_mask_window",
            f"{cfg.augment.time_mask_window} of every {cfg.augment.time_mask_stride} frames may be masked",
            "over half a clip hidden: labels become unguessable",
        )
    if m.dropout > 0.3:
        add("note", "model.dropout", f"{m.dropout:g} is high", "auto_avsr uses 0.1; high dropout slows fitting")
    if o.weight_decay > 0.1:
        add("note", "optim.weight_decay", f"{o.weight_decay:g} is high", "AdamW recipes use about 0.01")
    return out


# --------------------------------------------------------------------------- decoding a checkpoint


@dataclass
class Decoded:
    """The validation split decoded with one checkpoint."""

    epoch: int
    metrics: dict[str, float]
    rows: list[dict[str, Any]]  # id, frames, ref, hyp, cer, score, ref_ids, hyp_ids
    cfg: Config
    tokenizer: Any
    data: Any
    index: dict[str, int]  # clip id -> dataset index


def decode_validation(checkpoint: Path, device: str = "auto") -> Decoded:
    """Rebuild the model of a lipsweep checkpoint and decode its validation split (joint beam search + CTC greedy)."""
    from trainer.checkpoints import load_for_eval
    from trainer.device import select_device, select_precision
    from trainer.evaluate import evaluate, load_eval_set

    loaded = load_for_eval(checkpoint)
    cfg = loaded.cfg
    clips = load_eval_set(cfg, "val", log=lambda msg: None)
    dev = select_device(device)
    result = evaluate(loaded.model.to(dev), clips, cfg, dev, select_precision(cfg.train.precision, dev))
    return Decoded(
        loaded.epoch or 0,
        result.metrics,
        result.rows,
        cfg,
        clips.tokenizer,
        clips.data,
        {clip_id: i for i, clip_id in enumerate(clips.data.ids)},
    )


def filmstrip(frames: np.ndarray, out: Path, count: int = 8, crop: int | None = None) -> Path:
    """`count` evenly spaced frames of a (T, H, W) uint8 clip side by side (centre-cropped to `crop`) as a PNG."""
    t, h, w = frames.shape
    picks = np.linspace(0, t - 1, min(count, t)).round().astype(int)
    if crop is not None and crop < min(h, w):
        top, left = (h - crop) // 2, (w - crop) // 2
        frames = frames[:, top : top + crop, left : left + crop]
    strip = np.concatenate([frames[i] for i in picks], axis=1)  # (H, count * W)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(out, strip, cmap="gray", vmin=0, vmax=255)
    return out


# --------------------------------------------------------------------------- the report


def frontend_line(summary: dict[str, Any], cfg: Config | None) -> str:
    """Whether the frontend ran from the frozen-frontend feature cache (trainer/frontend_cache.py), and with how many views."""
    if "frontend_cache/used" not in summary:
        return "Frontend: the run did not record whether it ran from the feature cache (a run from before the cache)."
    if not summary["frontend_cache/used"]:
        reason = summary.get("frontend_cache/reason") or "not recorded"
        return f"Frontend: ran live at every step, not from the feature cache ({reason})."
    views = summary.get("frontend_cache/views", "?")
    origin = "built by this run" if summary.get("frontend_cache/built") else "read from a cache an earlier run built"
    text = (
        f"Frontend: ran from the feature cache with {views} training view{'' if views == 1 else 's'} and the validation view "
        f"({origin}; on {summary.get('frontend_cache/residency') or 'an unrecorded device'})."
    )
    if cfg is not None and cfg.augment.time_mask_window > 0:
        text += " Time masking set masked frames to the clip's mean feature (the live path masks pixels)."
    return text


def _samples_csv(run_dir: Path, epoch: int | None) -> tuple[Path | None, list[dict[str, Any]]]:
    """The worst-k CSV of `epoch` (else the latest one) and its rows."""
    import csv

    folder = run_dir / "samples"
    files = sorted(folder.glob("epoch_*.csv")) if folder.is_dir() else []
    wanted = folder / f"epoch_{epoch:03d}.csv" if epoch is not None else None
    path = wanted if wanted is not None and wanted.exists() else (files[-1] if files else None)
    if path is None:
        return None, []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for line, r in enumerate(rows, start=2):
        for key in ("cer", "score"):
            try:
                r[key] = float(r[key])
            except (KeyError, ValueError):
                raise DataError(f"{path}, row {line}: column {key!r} is missing or not a number") from None
    return path, rows


def diagnose(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    checkpoint: Literal["best", "last"] = "best",
    decode: bool = True,
    worst_k: int = 10,
    top_tokens: int = 15,
    device: str = "auto",
) -> Path:
    """Write the diagnosis of a run folder to `out` (default RUN_DIR/diagnose); returns the HTML page."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "diagnose"
    rows = read_metrics(run_dir)
    if not rows:
        raise DataError(f"{run_dir}: no metrics.jsonl (or it is empty); is this a lipsweep run folder?")
    summary = read_run_summary(run_dir)
    cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else None
    val = series(rows, "val/cer")
    ckpt_path = run_dir / "checkpoints" / f"{checkpoint}.pt"

    # --- decode the validation split with the checkpoint when possible ----------------------------
    decoded: Decoded | None = None
    why_not = ""
    if not decode:
        why_not = "decoding switched off (--no-decode)"
    elif not ckpt_path.exists():
        why_not = f"no checkpoint {ckpt_path}"
    elif cfg is not None and not Path(cfg.data.root).exists():
        why_not = f"the dataset {cfg.data.root} is not here"
    else:
        decoded = decode_validation(ckpt_path, device)
        cfg = decoded.cfg
    if decoded is not None:
        epoch = decoded.epoch
    elif checkpoint == "best" and val:
        epoch = min(val, key=lambda p: p[1])[0]
    else:
        epoch = val[-1][0] if val else int(rows[-1]["epoch"])
    at = next((r for r in rows if r.get("epoch") == epoch), rows[-1])
    metrics = dict(at) | (decoded.metrics if decoded else {})

    name = summary.get("name", run_dir.name)
    report = Report(f"Diagnosis of run {name}")
    state = f"State {summary.get('state', 'unknown')}" + (f" ({summary['reason']})" if summary.get("reason") else "")
    if val:
        best_epoch, best = min(val, key=lambda p: p[1])
        state += f"; {len(rows)} epochs logged; best val/cer {best:.4f} at epoch {best_epoch}."
    report.text(state)
    report.text(frontend_line(summary, cfg))
    report.text(
        f"Sections 4 to 6 use the {checkpoint} checkpoint (epoch {epoch}), "
        + (
            f"decoding the {len(decoded.rows)} validation clips again."
            if decoded
            else f"from the files the run wrote ({why_not})."
        )
    )

    # 1. learning curves
    report.heading("1. Learning curves")
    report.image(learning_curves(rows, out / "learning_curves.png", title=name), "train/val loss and CER per epoch")

    # 2. verdict
    verdict = fitting_verdict(rows)
    report.heading("2. Over- or under-fitting")
    report.text(f"Verdict: {verdict.kind}", css="verdict")
    report.bullets(verdict.evidence)
    if verdict.advice:
        report.text(verdict.advice)

    # 3. gradient flow
    report.heading("3. Gradient flow")
    report.image(
        gradient_plot(rows, out / "gradient_flow.png"), "gradient norm per module group, and the learning rate"
    )
    report.bullets([(f.level, str(f)) for f in gradient_flow(rows, cfg)])

    # 4. CTC vs joint
    report.heading("4. CTC-only greedy decoding vs the joint beam search")
    report.text(ctc_vs_joint(number(metrics.get("val/cer")), number(metrics.get("val/cer_ctc_greedy"))))

    # 5. worst clips
    report.heading(f"5. Worst validation clips (up to {worst_k})")
    columns = ["id", "frames", "target", "prediction", "score", "CER"]
    table: list[list[Any]] = []
    if decoded is not None:
        worst = sorted(decoded.rows, key=lambda r: (-r["cer"], r["id"]))[:worst_k]
        crop = decoded.cfg.augment.crop_size
        columns.insert(2, "clip")
        for r in worst:
            strip = filmstrip(decoded.data.video(decoded.index[r["id"]]), out / "clips" / f"{r['id']}.png", crop=crop)
            table.append([r["id"], r["frames"], strip, r["ref"], r["hyp"], round(r["score"], 2), round(r["cer"], 3)])
    else:
        path, samples = _samples_csv(run_dir, epoch)
        if path is not None:
            report.text(f"From {path.relative_to(run_dir)} (frames are shown when the checkpoint is decoded).")
        for r in sorted(samples, key=lambda r: -r["cer"])[:worst_k]:
            table.append([r["id"], r["frames"], r["ref"], r["hyp"], round(r["score"], 2), round(r["cer"], 3)])
    if table:
        report.table(columns, table, rtl=("target", "prediction"), images=("clip",))
    else:
        report.text("No samples: the run wrote none (train.worst_k=0) and no checkpoint was decoded.")

    # 6. confusions
    report.heading("6. Token confusions")
    if decoded is not None:
        from analysis.confusions import confusion_counts

        ids = confusion_counts([r["ref_ids"] for r in decoded.rows], [r["hyp_ids"] for r in decoded.rows])
        token = lambda t: None if t is None else decoded.tokenizer.decode([t])  # noqa: E731
        counts = Counter({(token(r), token(h)): n for (r, h), n in ids.items()})
    elif (run_dir / "confusions.csv").exists():
        counts = confusions_from_csv(run_dir / "confusions.csv")
        report.text("From confusions.csv: the run's last validation.")
    else:
        counts = Counter()
    if counts:
        report.image(
            confusion_heatmap(counts, out / "confusions.png", top_tokens),
            "rows: reference token; columns: decoded token; ∅ marks insertions and deletions",
        )
        kinds = Counter()
        for (r, h), n in counts.items():
            kinds[error_kind(r, h)] += n
        total = sum(kinds.values())
        report.text("Errors by kind: " + ", ".join(f"{k} {n} ({n / total:.0%})" for k, n in kinds.most_common()) + ".")
        if decoded is not None:
            report.text(length_note(decoded.rows))
        report.table(
            ["reference", "decoded", "kind", "count"],
            [[r or EMPTY, h or EMPTY, error_kind(r, h), n] for (r, h), n in counts.most_common(15)],
            rtl=("reference", "decoded"),
        )
    else:
        report.text("No confusions recorded.")
    letter, marks = number(metrics.get("val/letter_er")), number(metrics.get("val/diacritic_er"))
    if not math.isnan(letter) and not math.isnan(marks):
        report.text(
            f"Base-letter error rate {letter:.3f}, diacritic error rate {marks:.3f}: "
            + (
                "the diacritics (short vowels, barely visible on the lips) are the main difficulty."
                if marks > 1.5 * letter
                else "the letters themselves are the main difficulty."
                if letter > 1.5 * marks
                else "letters and diacritics are about equally hard."
            )
        )

    # 7. hyperparameters
    report.heading("7. Hyperparameter sanity")
    if cfg is None:
        report.text("No config.yaml in the run folder: nothing to check.")
    else:
        steps = number(summary.get("step")) / number(summary.get("epochs")) if summary.get("epochs") else None
        vocab = decoded.tokenizer.vocab_size if decoded else _vocab_size(cfg)
        findings = hyperparameter_checks(
            cfg, steps_per_epoch=steps if steps and not math.isnan(steps) else None, vocab_size=vocab, rows=rows
        )
        report.bullets([(f.level, str(f)) for f in findings])
    report.heading("8. Sanity model")
    report.text(
        f"Overfit 10 clips with this config: python -m launch sanity --config {run_dir / 'config.yaml'} "
        "(and --frontend noise: it must not learn)."
    )
    return report.write(out, "report")[1]


def _vocab_size(cfg: Config) -> int | None:
    from trainer.config import PROJECT_ROOT
    from trainer.text import Tokenizer

    path = Path(cfg.data.vocab)
    if not path.exists() and not (PROJECT_ROOT / path).exists():
        return None
    return Tokenizer.from_config(cfg.data).vocab_size
