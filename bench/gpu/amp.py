"""The AMP row of the GPU check: fp16 (with its grad scaler) against fp32, from the same weights on the same batches.

Tolerances, on the relative gap |loss_fp16 - loss_fp32| / loss_fp32 of each step: at most 1 % on the first
step (the same weights and batch: rounding alone) and 5 % on average over the run (the two trajectories
drift apart as the updates differ); no inf/NaN loss; the grad scaler steady: at most 5 skipped steps, all
in the first half of the run (its start scale 65536 may overflow early, and it halves until it fits).
"""

from __future__ import annotations

import copy
import math
import statistics

import torch

from bench.gpu.data import FRAMES, device_batch
from bench.gpu.harness import FAILED, NA, Context, Report
from bench.gpu.steps import Trainee, row_config, trainee
from trainer.augment import augment_batch
from trainer.device import Precision

AMP_LR = 1e-4  # constant learning rate of the AMP comparison
AMP_TOLERANCE = {"fp16": (0.01, 0.05), "bf16": (0.03, 0.10)}  # relative loss gap: first step, mean of all steps
MAX_SKIPPED = 5  # grad-scaler skipped steps allowed in the AMP run, all in its first half


def amp_run(ctx: Context, t: Trainee, state: dict, inputs: list, steps: int) -> tuple[list[float], list[float]]:
    """`steps` steps from `state` over `inputs` (cycled): the losses, and the grad scaler's scale before and after each."""
    t.model.load_state_dict(state)
    t.opt.state.clear()
    losses, scales = [], [t.scaler.get_scale() if t.precision.scaler else 1.0]
    for i in range(steps):
        ctx.check_time(f"AMP sanity, {t.precision.name} step {i + 1}")
        x, lengths, targets = inputs[i % len(inputs)]
        losses.append(t.step(lambda x=x, n=lengths, y=targets: t.model(x, n, y).loss))
        scales.append(t.scaler.get_scale() if t.precision.scaler else 1.0)
    return [float(v) for v in torch.stack(losses).float().cpu()], scales


def amp_row(ctx: Context, report: Report) -> None:
    s = ctx.sizes
    cfg = row_config(ctx, ["model.dropout=0.0"])  # no dropout: both runs see the same function
    low = ctx.precision("fp16") if ctx.cuda else Precision("bf16", torch.bfloat16, False)
    t32 = trainee(ctx, cfg, ctx.precision("fp32"), lr=AMP_LR)
    state = copy.deepcopy(t32.model.state_dict())
    inputs = []
    for k in range(4):  # four batches, cycled: the same ones, in the same order, for both runs
        video, lengths, targets = device_batch(cfg, ctx.device, s.amp_clips, s.bank, offset=k * s.amp_clips)
        inputs.append((augment_batch(video, lengths, cfg.augment, train=False), lengths, targets))
    l32, _ = amp_run(ctx, t32, state, inputs, s.amp_steps)
    low_losses, scales = amp_run(ctx, t32.at(low), state, inputs, s.amp_steps)
    amp_report(
        report,
        f"{s.config} config, {s.amp_clips} clips x {FRAMES} frames, {s.amp_steps} steps, lr {AMP_LR:g}",
        low,
        l32,
        low_losses,
        scales,
    )


def amp_report(
    report: Report, setting: str, low: Precision, l32: list[float], llow: list[float], scales: list[float]
) -> None:
    finite = all(map(math.isfinite, l32 + llow))
    gaps = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(llow, l32, strict=True)]
    first_tol, mean_tol = AMP_TOLERANCE[low.name]
    within = finite and gaps[0] <= first_tol and statistics.fmean(gaps) <= mean_tol
    stand_in = (
        "" if low.name == "fp16" else " (on cpu bf16 stands in: fp16 autocast with a grad scaler is the CUDA path)"
    )
    report.add(
        f"AMP sanity: {low.name} against fp32 losses, {setting}, same weights and batches{stand_in}",
        f"gap first step {gaps[0]:.2%}, mean {statistics.fmean(gaps):.2%}, max {max(gaps):.2%} (tolerance: first "
        f"<= {first_tol:.0%}, mean <= {mean_tol:.0%}); last loss {llow[-1]:.3f} vs {l32[-1]:.3f}",
        "ok" if within else FAILED, gaps=gaps, fp32=l32, low=llow,
    )  # fmt: skip
    bad = sum(not math.isfinite(v) for v in l32 + llow)
    report.add("AMP sanity: inf/NaN losses", f"{bad} of {len(l32) + len(llow)}", "ok" if bad == 0 else FAILED)
    if not low.scaler:
        report.add("AMP sanity: grad-scaler scale", f"n/a: {low.name} runs without a grad scaler", NA)
        return
    drops = [i for i in range(1, len(scales)) if scales[i] < scales[i - 1]]  # steps the scaler skipped (1-based)
    steady = len(drops) <= MAX_SKIPPED and all(d <= len(llow) // 2 for d in drops)
    report.add(
        "AMP sanity: grad-scaler scale",
        f"{scales[0]:g} at the start, {scales[-1]:g} at the end; skipped steps {drops or 'none'} "
        f"(steady: at most {MAX_SKIPPED}, all in the first half)",
        "ok" if steady else FAILED, scales=scales,
    )  # fmt: skip
