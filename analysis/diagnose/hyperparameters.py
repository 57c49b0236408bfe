"""Checklist item 7: hyperparameter sanity, each warning with its reason."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from analysis.diagnose.common import Context, Finding, series
from analysis.diagnose.gradients import frozen_groups
from analysis.report import Report
from analysis.rows import number
from trainer.config import PROJECT_ROOT, Config
from trainer.text import Tokenizer

MEAN_FRAMES = 30.84  # the user's mean clip length, to turn train.batch_frames into clips


def warmup_checks(cfg: Config, steps_per_epoch: float | None) -> list[Finding]:
    """Warm-up against the training length, and the optimizer steps in all."""
    o, t = cfg.optim, cfg.train
    share = o.warmup_epochs / t.max_epochs
    if o.warmup_epochs >= t.max_epochs:
        out = [
            Finding(
                "warning",
                "optim.warmup_epochs",
                f"warm-up ({o.warmup_epochs:g} epochs) is not shorter than training ({t.max_epochs} epochs)",
                "the rate never reaches its peak and the cosine decay never starts",
            )
        ]
    elif share > 0.3:
        out = [
            Finding(
                "warning",
                "optim.warmup_epochs",
                f"warm-up takes {share:.0%} of training",
                "auto_avsr warms up 5 of 75 epochs (7%); a long warm-up leaves little time at a useful rate",
            )
        ]
    elif o.warmup_epochs == 0 and o.lr >= 1e-4:
        out = [
            Finding(
                "warning",
                "optim.warmup_epochs",
                f"no warm-up at a peak rate of {o.lr:g}",
                "Transformers trained with AdamW without warm-up often diverge in the first steps",
            )
        ]
    else:
        out = [Finding("ok", "optim.warmup_epochs", f"{o.warmup_epochs:g} of {t.max_epochs} epochs ({share:.0%})")]
    if steps_per_epoch:
        warmup_steps, total = round(o.warmup_epochs * steps_per_epoch), round(t.max_epochs * steps_per_epoch)
        if total < 1000:
            out.append(
                Finding(
                    "note",
                    "train.max_epochs",
                    f"{total} optimizer steps in all ({steps_per_epoch:.0f} an epoch, {warmup_steps} of warm-up)",
                    "few updates: raise train.max_epochs or lower the effective batch",
                )
            )
    return out


def lr_checks(cfg: Config) -> list[Finding]:
    """The peak rate against the usual range, from scratch or fine-tuning."""
    lr = cfg.optim.lr
    fine_tuning = bool(cfg.model.pretrained.path)
    lo, hi = (1e-5, 1e-3) if fine_tuning else (1e-4, 3e-3)
    what = "fine-tuning a pretrained model" if fine_tuning else "training from scratch"
    if lr > hi:
        why = (
            "large steps wash out pretrained features"
            if fine_tuning
            else "Conformer/Transformer training with AdamW diverges or plateaus at such rates (auto_avsr: 1e-3)"
        )
        return [Finding("warning", "optim.lr", f"{lr:g} is above the usual range for {what} ({lo:g} to {hi:g})", why)]
    if lr < lo:
        return [
            Finding(
                "warning",
                "optim.lr",
                f"{lr:g} is below the usual range for {what} ({lo:g} to {hi:g})",
                "the updates are too small to learn much in the epochs a small dataset allows",
            )
        ]
    return [Finding("ok", "optim.lr", f"{lr:g} is in the usual range for {what} ({lo:g} to {hi:g})")]


def ctc_weight_checks(cfg: Config) -> list[Finding]:
    """The training CTC weight (0, 1, dominated by attention) and a decoding weight on an untrained CTC head."""
    m, d = cfg.model, cfg.decode
    if m.ctc_weight == 0:
        out = [
            Finding(
                "warning",
                "model.ctc_weight",
                "0: no CTC loss",
                "the encoder gets no alignment signal, and CTC greedy decoding and the beam search's CTC "
                "prefix scores use an untrained head; auto_avsr uses 0.1",
            )
        ]
    elif m.ctc_weight == 1 and d.ctc_weight == 1:
        out = [Finding("ok", "model.ctc_weight", "1 (training) and 1 (decoding): a CTC-only model, no decoder in use")]
    elif m.ctc_weight == 1:
        out = [
            Finding(
                "warning",
                "model.ctc_weight",
                "1: the attention decoder is never trained",
                "the joint beam search then follows an untrained decoder; decode with decode.ctc_weight=1",
            )
        ]
    elif m.ctc_weight < 0.1:
        out = [
            Finding(
                "warning",
                "model.ctc_weight",
                f"{m.ctc_weight:g}: the attention loss dominates",
                "a dominating decoder can over-smooth its outputs (checklist item 7); 0.1 to 0.3 is usual",
            )
        ]
    else:
        out = [Finding("ok", "model.ctc_weight", f"{m.ctc_weight:g} (training), {d.ctc_weight:g} (decoding)")]
    if d.ctc_weight > 0 and m.ctc_weight == 0:
        out.append(
            Finding(
                "warning",
                "decode.ctc_weight",
                f"{d.ctc_weight:g} weights a CTC head that was never trained",
                "its prefix scores are noise; set decode.ctc_weight=0 or train with model.ctc_weight > 0",
            )
        )
    return out


def beam_checks(cfg: Config, vocab_size: int | None) -> list[Finding]:
    """The beam (and the CTC pre-beam, 1.5 x beam) against the vocabulary."""
    if not vocab_size:
        return []
    beam = cfg.decode.beam_size
    pre_beam = int(1.5 * beam)
    if beam >= vocab_size:
        return [
            Finding(
                "warning",
                "decode.beam_size",
                f"{beam} is not smaller than the vocabulary ({vocab_size})",
                "a beam that wide keeps every continuation: only compute, no gain",
            )
        ]
    if pre_beam >= vocab_size:
        return [
            Finding(
                "note",
                "decode.beam_size",
                f"the pre-beam (1.5 x {beam} = {pre_beam}) covers the whole vocabulary ({vocab_size})",
                "every token is CTC-scored at every step; a smaller beam is cheaper",
            )
        ]
    if beam == 1:
        return [Finding("note", "decode.beam_size", "1: greedy joint decoding", "a beam of 5 to 40 usually lowers CER")]
    return [Finding("ok", "decode.beam_size", f"{beam} for {vocab_size} output tokens (pre-beam {pre_beam})")]


def batch_checks(cfg: Config, steps_per_epoch: float | None) -> list[Finding]:
    """The effective batch in clips, and the optimizer steps it leaves per epoch."""
    t = cfg.train
    per_batch = t.batch_size if t.batch_frames == 0 else t.batch_frames / MEAN_FRAMES
    effective = per_batch * t.accumulate
    how = (
        f"{t.batch_size} clips"
        if t.batch_frames == 0
        else f"~{per_batch:.0f} clips of ~{MEAN_FRAMES:g} frames in {t.batch_frames} frames"
    ) + f" x {t.accumulate} accumulated"
    if effective < 8:
        return [
            Finding(
                "warning",
                "train.accumulate",
                f"effective batch of {effective:.0f} clips ({how})",
                "noisy gradients, and BatchNorm statistics from very few clips; raise train.accumulate",
            )
        ]
    if steps_per_epoch is not None and steps_per_epoch < 5:
        return [
            Finding(
                "warning",
                "train.accumulate",
                f"effective batch of {effective:.0f} clips leaves {steps_per_epoch:.0f} optimizer steps an epoch",
                "few updates per epoch on a small dataset",
            )
        ]
    return [Finding("ok", "train.batch_size", f"effective batch of {effective:.0f} clips ({how})")]


def frozen_checks(cfg: Config, rows: Sequence[dict[str, Any]]) -> list[Finding]:
    """Frozen parts left at their random initialisation, or receiving gradients."""
    m = cfg.model
    loaded = set(m.pretrained.parts) if m.pretrained.path else set()
    out = []
    if m.freeze.frontend and "frontend" not in loaded:
        out.append(
            Finding(
                "warning",
                "model.freeze.frontend",
                "the frozen frontend is not loaded from a checkpoint",
                "it stays at its random initialisation: the encoder only ever sees random features",
            )
        )
    if m.freeze.encoder_layers != 0 and "encoder" not in loaded:
        out.append(
            Finding(
                "warning",
                "model.freeze.encoder_layers",
                "frozen encoder blocks are not loaded from a checkpoint",
                "they stay random and can only scramble the features they pass on",
            )
        )
    whole_encoder = m.freeze.encoder_layers < 0 or m.freeze.encoder_layers >= m.encoder.layers
    if m.freeze.frontend and whole_encoder and m.adapter == "none":
        out.append(
            Finding(
                "note",
                "model.adapter",
                "frontend and encoder frozen, no adapter: only the decoder and CTC head train",
                "the features cannot adapt to this data; model.adapter=mlp adds a small trained layer",
            )
        )
    for group, key in frozen_groups(cfg).items():
        if series(rows, f"grad_norm/{group}"):
            out.append(
                Finding(
                    "warning",
                    key,
                    f"the frozen {group} receives gradients",
                    "its parameters are trained with the optimizer's learning rate although the config freezes them",
                )
            )
    return out


def other_checks(cfg: Config) -> list[Finding]:
    """Gradient clipping off, time masks wider than half the stride, high dropout or weight decay."""
    o, m, a = cfg.optim, cfg.model, cfg.augment
    out = []
    if o.grad_clip == 0:
        out.append(
            Finding(
                "note", "optim.grad_clip", "0: no gradient clipping", "fp16 Transformer training can blow up without it"
            )
        )
    if a.time_mask_window > a.time_mask_stride / 2:
        out.append(
            Finding(
                "warning",
                "augment.time_mask_window",
                f"{a.time_mask_window} of every {a.time_mask_stride} frames may be masked",
                "over half a clip hidden: labels become unguessable",
            )
        )
    if m.dropout > 0.3:
        out.append(
            Finding("note", "model.dropout", f"{m.dropout:g} is high", "auto_avsr uses 0.1; high dropout slows fitting")
        )
    if o.weight_decay > 0.1:
        out.append(Finding("note", "optim.weight_decay", f"{o.weight_decay:g} is high", "AdamW recipes use about 0.01"))
    return out


def hyperparameter_checks(
    cfg: Config,
    *,
    steps_per_epoch: float | None = None,
    vocab_size: int | None = None,
    rows: Sequence[dict[str, Any]] = (),
) -> list[Finding]:
    """Warnings (with reasons) on warm-up, learning rate, CTC weight, beam vs vocabulary, batch and frozen parts."""
    return [
        *warmup_checks(cfg, steps_per_epoch),
        *lr_checks(cfg),
        *ctc_weight_checks(cfg),
        *beam_checks(cfg, vocab_size),
        *batch_checks(cfg, steps_per_epoch),
        *frozen_checks(cfg, rows),
        *other_checks(cfg),
    ]


def vocab_size(cfg: Config) -> int | None:
    """The vocabulary size of the run's tokenizer (None when its vocabulary file is not here)."""
    path = Path(cfg.data.vocab)
    if not path.exists() and not (PROJECT_ROOT / path).exists():
        return None
    return Tokenizer.from_config(cfg.data).vocab_size


def hyperparameter_section(report: Report, ctx: Context) -> None:
    report.heading("7. Hyperparameter sanity")
    if ctx.cfg is None:
        report.text("No config.yaml in the run folder: nothing to check.")
        return
    summary = ctx.summary
    steps = number(summary.get("step")) / number(summary.get("epochs")) if summary.get("epochs") else None
    vocab = ctx.decoded.tokenizer.vocab_size if ctx.decoded else vocab_size(ctx.cfg)
    findings = hyperparameter_checks(
        ctx.cfg, steps_per_epoch=steps if steps and not math.isnan(steps) else None, vocab_size=vocab, rows=ctx.rows
    )
    report.bullets([(f.level, str(f)) for f in findings])
