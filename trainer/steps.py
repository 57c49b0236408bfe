"""One epoch's training steps: micro-batches, the optimizer step and the running sums.

The hot loop makes one host sync per optimizer step (is the step's loss and gradient finite?), as a
grad scaler makes anyway; the running sums stay 0-d tensors on the device until the epoch ends or a
stop saves them in `last.pt` (`EpochSums.saved`), from where `--resume` continues the same epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from tqdm import tqdm

from trainer import distributed
from trainer.checkpoints import TrainState
from trainer.errors import TrainingFailed
from trainer.inputs import autocast
from trainer.model import GRAD_GROUPS
from trainer.setup import Run

SUMMED = ("loss", "loss_ctc", "loss_att", "acc")  # LossOutput fields summed over clips: train/<name>
Stop = Callable[[], str]  # why the run must stop now, '' to go on


def get_lr(step: int, lr: float, warmup_steps: int, total_steps: int) -> float:
    """auto_avsr's WarmupCosineScheduler: the rate for optimizer step `step` (1-based, as torch counts it)."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


def grad_group_norms(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The gradient L2 norm of each group present in the model, as 0-d tensors on its device (no sync)."""
    grads: dict[str, list[torch.Tensor]] = {g: [] for g in GRAD_GROUPS}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        for group, prefixes in GRAD_GROUPS.items():
            if name.startswith(prefixes):
                grads[group].append(p.grad.detach())
                break
    return {g: torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gs))) for g, gs in grads.items() if gs}


@dataclass
class Pending:
    """The micro-batches of the optimizer step under way: summed losses (device tensors) and clips."""

    sums: dict[str, torch.Tensor]
    clips: int = 0


@dataclass
class EpochSums:
    """An epoch's running sums over clips and steps (0-d tensors on the device) and its counts."""

    sums: dict[str, torch.Tensor]
    norms: dict[str, torch.Tensor]  # summed grad_norm/<group> over optimizer steps
    clips: int = 0
    steps: int = 0
    bad_total: int = 0
    bad_in_row: int = 0

    @classmethod
    def start(cls, device: torch.device, partial: dict[str, Any] | None) -> EpochSums:
        """Zero, or the sums a mid-epoch stop saved (over all ranks: rank 0 carries them on)."""
        if partial is None:
            return cls({k: torch.zeros((), device=device) for k in SUMMED}, {})
        own = distributed.is_main()
        return cls(
            {k: torch.tensor(v if own else 0.0, device=device) for k, v in partial["sums"].items()},
            {k: torch.tensor(v, device=device) for k, v in partial["norms"].items()},
            partial["clips"] if own else 0,
            partial["steps"],
            partial["bad_total"],
        )

    def add(self, pending: Pending, norms: dict[str, torch.Tensor]) -> None:
        """A finished optimizer step's losses and gradient norms."""
        for k in self.sums:
            self.sums[k] += pending.sums[k]
            pending.sums[k].zero_()
        for g, v in norms.items():
            self.norms[g] = self.norms.get(g, torch.zeros_like(v)) + v
        self.clips += pending.clips
        self.steps += 1

    def saved(self, epoch: int, batch: int, generator: torch.Generator) -> dict[str, Any]:
        """What a stop before batch `batch` of `epoch` saves: the position, the generator, the sums over all ranks."""
        totals = distributed.sum_over_ranks({**self.sums, "clips": self.clips})
        return {
            "epoch": epoch,
            "batch": batch,
            "generator": generator.get_state(),
            "sums": {k: totals[k].item() for k in self.sums},
            "norms": {k: v.item() for k, v in self.norms.items()},
            "clips": totals["clips"],
            "steps": self.steps,
            "bad_total": self.bad_total,
        }

    def metrics(self, lr: float, seconds: float) -> dict[str, float]:
        """The epoch's train/* means and grad_norm/* per step."""
        totals = distributed.sum_over_ranks({**self.sums, "clips": self.clips})
        out = {f"train/{k}": totals[k].item() / max(1, totals["clips"]) for k in self.sums}
        out["train/lr"] = lr
        out["train/clips_per_s"] = totals["clips"] / max(seconds, 1e-9)
        out["train/bad_steps"] = self.bad_total
        out.update({f"grad_norm/{g}": v.item() / max(1, self.steps) for g, v in self.norms.items()})
        return out


def train_epoch(run: Run, state: TrainState, epoch: int, stop: Stop) -> tuple[EpochSums, str]:
    """Train `epoch` from its first batch (or the one a mid-epoch stop saved); its sums, and a stop's reason or ''.

    A stop (checked after every optimizer step) saves `last.pt` with the epoch's position before returning.
    """
    generator = torch.Generator(device=run.device)
    generator.manual_seed(run.cfg.train.seed * 1000 + epoch)
    sums = EpochSums.start(run.device, state.partial)
    first = 0
    if state.partial is not None:
        generator.set_state(state.partial["generator"])
        first, state.partial = state.partial["batch"], None
    batches = run.batches(epoch)
    accumulate = run.cfg.train.accumulate
    pending = Pending({k: torch.zeros((), device=run.device) for k in SUMMED})
    run.model.train()
    bar = tqdm(total=len(batches), initial=first, desc=f"epoch {epoch}", disable=not run.interactive, leave=False)
    try:
        for b in range(first, len(batches)):
            steps_here = (b + 1) % accumulate == 0 or b + 1 == len(batches)
            micro_batch(run, pending, batches[b], generator, epoch, b, steps_here)
            bar.update(1)
            if not steps_here:
                continue
            optimizer_step(run, state, sums, pending, epoch)
            reason = stop()
            if reason:
                state.partial = sums.saved(epoch, b + 1, generator)
                run.checkpoint("last", state)
                return sums, reason
    finally:
        bar.close()
    return sums, ""


def micro_batch(
    run: Run, pending: Pending, indices: list[int], generator: torch.Generator, epoch: int, batch: int, sync: bool
) -> None:
    """Forward and backward this rank's rows of one batch, adding its losses to `pending`."""
    x, lengths, targets = run.inputs.batch(indices, generator, train=True, epoch=epoch, batch=batch)
    rows, n_clips, weight = distributed.batch_share(len(indices))
    x, lengths, targets = x[rows], lengths[rows], targets[rows]
    try:
        with distributed.grad_sync(run.net, sync):
            with autocast(run.device, run.precision):
                out = run.net(x, lengths, targets)
            run.scaler.scale(out.loss * weight / run.cfg.train.accumulate).backward()
    except torch.cuda.OutOfMemoryError:
        raise TrainingFailed(
            f"out of GPU memory on a batch of {tuple(x.shape)} ({run.inputs.shape_names}); "
            "lower train.batch_frames or train.batch_size, or use train.precision=fp16"
        ) from None
    for k in pending.sums:
        pending.sums[k] += getattr(out, k).detach().float() * n_clips
    pending.clips += n_clips


def optimizer_step(run: Run, state: TrainState, sums: EpochSums, pending: Pending, epoch: int) -> None:
    """Unscale, check, clip, schedule and step; a step with a NaN/inf loss or gradient is skipped and counted."""
    cfg = run.cfg
    run.scaler.unscale_(run.optimizer)
    norms = grad_group_norms(run.model)
    total_norm = torch.nn.utils.clip_grad_norm_(run.params, cfg.optim.grad_clip or math.inf)
    finite = torch.isfinite(distributed.all_reduce_sum(pending.sums["loss"]) + total_norm)
    if not finite:  # the one host sync per optimizer step
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.update()
        for t in pending.sums.values():
            t.zero_()
        pending.clips = 0
        sums.bad_total += 1
        sums.bad_in_row += 1
        if sums.bad_in_row >= cfg.train.max_bad_steps:
            raise TrainingFailed(
                f"{sums.bad_in_row} optimizer steps in a row had a NaN/inf loss or gradient (epoch {epoch}); "
                "lower optim.lr, check the data, or raise train.max_bad_steps"
            )
        return
    sums.bad_in_row = 0
    state.step += 1
    for group in run.optimizer.param_groups:
        group["lr"] = get_lr(state.step, cfg.optim.lr, run.warmup_steps, run.total_steps)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    sums.add(pending, norms)
    pending.clips = 0
