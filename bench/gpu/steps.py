"""Rows of the GPU check that time training steps: the device, the step itself, the largest batch in the cap.

A step here is the training loop's own (trainer/train.py): augmentation on the device, forward under
autocast, the scaled backward, unscale, gradient clipping, AdamW through the grad scaler. The batches are
synthetic clips of 38 frames (the longest, the peak memory) at the config's default batch.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.gpu.data import FRAMES, device_batch
from bench.gpu.harness import FAILED, NA, OOM, Context, Report
from bench.run import machine
from trainer import frontend_cache as fcache
from trainer.augment import augment_batch
from trainer.config import Config, load_config
from trainer.device import Precision, check_gpu_supported
from trainer.errors import UserError
from trainer.model import LipReader, attention, build_model
from trainer.text import Tokenizer


def grad_scaler(device: torch.device, enabled: bool):
    """torch.amp.GradScaler (torch >= 2.3), torch.cuda.amp.GradScaler before it."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device.type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device.type == "cuda")


@dataclass
class Trainee:
    """A model with the loop's optimizer and scaler, at one precision."""

    model: LipReader
    opt: torch.optim.Optimizer
    scaler: object
    precision: Precision
    grad_clip: float

    def autocast(self):
        if self.precision.dtype is None:
            return nullcontext()
        return torch.autocast(next(self.model.parameters()).device.type, dtype=self.precision.dtype)

    def at(self, precision: Precision) -> Trainee:
        """The same model and optimizer at another precision (a fresh grad scaler)."""
        device = next(self.model.parameters()).device
        return Trainee(self.model, self.opt, grad_scaler(device, precision.scaler), precision, self.grad_clip)

    def step(self, forward: Callable[[], torch.Tensor]) -> torch.Tensor:
        """One optimizer step of the loss `forward()` returns, as the training loop makes it; the loss, detached."""
        with self.autocast():
            loss = forward()
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        params = [p for p in self.model.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, self.grad_clip or math.inf)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


def row_config(ctx: Context, extra: list[str] | None = None) -> Config:
    return load_config(ctx.sizes.config, [*ctx.overrides(), *(extra or [])])


def trainee(ctx: Context, cfg: Config, precision: Precision, lr: float | None = None) -> Trainee:
    torch.manual_seed(0)
    model = build_model(cfg.model, Tokenizer.from_config(cfg.data).vocab_size).to(ctx.device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        params, lr=lr or cfg.optim.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=cfg.optim.weight_decay
    )
    return Trainee(model, opt, grad_scaler(ctx.device, precision.scaler), precision, cfg.optim.grad_clip)


def default_clips(cfg: Config, most: int = 0) -> int:
    """Clips of 38 frames in the config's default batch (train.batch_frames // 38, else train.batch_size), at most `most`."""
    clips = max(1, cfg.train.batch_frames // FRAMES) if cfg.train.batch_frames else cfg.train.batch_size
    return min(clips, most) if most else clips


def live_forward(t: Trainee, cfg: Config, batch, gen: torch.Generator) -> Callable[[], torch.Tensor]:
    video, lengths, targets = batch
    return lambda: t.model(augment_batch(video, lengths, cfg.augment, train=True, generator=gen), lengths, targets).loss


def timed(ctx: Context, step: Callable[[], torch.Tensor], warmup: int, steps: int, what: str) -> dict[str, float]:
    """Seconds per step (mean of `steps` after `warmup`), peak memory, and whether every loss was finite."""
    losses = [step() for _ in range(warmup)]
    ctx.check_time(what)
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats(ctx.device)
    ctx.sync()
    start = time.perf_counter()
    losses += [step() for _ in range(steps)]
    ctx.sync()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated(ctx.device) / 2**30 if ctx.cuda else None
    return {"s": seconds, "peak_gib": peak, "finite": bool(torch.isfinite(torch.stack(losses)).all())}


def timed_in_memory(ctx: Context, t: Trainee, step: Callable[[], torch.Tensor], what: str) -> dict[str, float] | None:
    """`timed` at the row's sizes; None when the step ran out of GPU memory (under the cap: a result, not a fault)."""
    try:
        return timed(ctx, step, ctx.sizes.warmup, ctx.sizes.steps, what)
    except torch.cuda.OutOfMemoryError:
        pass  # the caller reports it (None); the memory is freed below, once the traceback holding it is gone
    t.opt.zero_grad(set_to_none=True)
    release(ctx)
    return None


def out_of_memory(ctx: Context) -> str:
    return f"out of memory within {f'the {ctx.cap_gib:.1f} GiB cap' if ctx.cap_gib else 'the GPU'}"


def step_result(m: dict[str, float], clips: int) -> tuple[str, str]:
    peak = f"peak {m['peak_gib']:.2f} GiB" if m["peak_gib"] is not None else "peak memory n/a on cpu"
    text = f"{1000 * m['s']:,.0f} ms/step, {clips / m['s']:,.1f} clips/s, {peak}"
    return (text, "ok") if m["finite"] else (text + "; a loss was inf/NaN", FAILED)


# --------------------------------------------------------------------------- device


def device_row(ctx: Context, report: Report) -> None:
    versions = f"torch {torch.__version__}, CUDA {torch.version.cuda or 'none (a CPU build)'}"
    if not ctx.cuda:
        report.add("device", f"cpu: {machine('cpu', torch.get_num_threads())[1]}")
        report.add("torch / CUDA", versions, torch=torch.__version__)
        report.add("kernel check (trainer.device.check_gpu_supported)", "n/a on cpu: no GPU to check", NA)
        report.add("T4 emulation", "n/a on cpu: fp32, no grad scaler, no memory cap", NA)
        return
    props = torch.cuda.get_device_properties(ctx.device)
    major, minor = torch.cuda.get_device_capability(ctx.device)
    gib = props.total_memory / 2**30
    report.add(
        "device", f"{props.name}, sm_{major}{minor}, {gib:.1f} GiB, {props.multi_processor_count} SMs", gpu=props.name
    )
    report.add("torch / CUDA / cuDNN", f"{versions}, cuDNN {torch.backends.cudnn.version()}", torch=torch.__version__)
    try:
        check_gpu_supported(ctx.device)
        report.add(
            "kernel check (trainer.device.check_gpu_supported)",
            f"ok: built for {', '.join(torch.cuda.get_arch_list())}",
        )
    except UserError as e:
        report.add("kernel check (trainer.device.check_gpu_supported)", str(e), FAILED)
    if ctx.emulate != "t4":
        report.add("T4 emulation", f"off: train.precision auto is {ctx.precision().name}, no memory cap", NA)
        return
    try:
        ctx.precision("bf16")
        refused = "bf16 NOT refused"
    except UserError:
        refused = "bf16 refused"
    try:
        probe = torch.empty(int((ctx.cap_gib + 0.5) * 2**30), dtype=torch.uint8, device=ctx.device)
        del probe
        enforced = False
    except torch.cuda.OutOfMemoryError:
        enforced = True
    torch.cuda.empty_cache()
    text = f"fp16 autocast + grad scaler, {refused}, memory capped at {ctx.cap_gib:.1f} of {gib:.1f} GiB"
    text += " (an allocation over the cap fails)" if enforced else " (an allocation over the cap SUCCEEDED)"
    report.add("T4 emulation", text, "ok" if enforced and refused == "bf16 refused" else FAILED, cap_gib=ctx.cap_gib)


# --------------------------------------------------------------------------- the training step


def release(ctx: Context) -> None:
    """Return the memory of what is no longer referenced to the device (between variants, after an OOM)."""
    gc.collect()
    if ctx.cuda:
        torch.cuda.empty_cache()


def train_step_row(ctx: Context, report: Report) -> None:
    cfg = row_config(ctx)
    clips = default_clips(cfg, ctx.sizes.max_clips)
    batch = device_batch(cfg, ctx.device, clips, ctx.sizes.bank)
    name = f"training step, {ctx.sizes.config} config, {clips} clips x {FRAMES} frames"
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    trained_steps(ctx, report, cfg, name, batch, gen)
    release(ctx)  # the first model and its optimizer state are gone before the frozen one is built
    frozen_step(ctx, report, name, batch, gen)


def trained_steps(ctx: Context, report: Report, cfg: Config, name: str, batch, gen: torch.Generator) -> None:
    """The whole model trained: fp32 and fp16, SDPA and the plain attention math."""
    clips = len(batch[1])
    t = trainee(ctx, cfg, ctx.precision("fp32"))
    for precision in ("fp32", "fp16"):
        if precision == "fp16" and not ctx.cuda:
            report.add(f"{name}, fp16", "n/a on cpu: fp16 autocast with a grad scaler is the CUDA path", NA)
            continue
        for sdpa in (True, False):
            attention.USE_SDPA = sdpa
            try:
                tp = t.at(ctx.precision(precision))
                m = timed_in_memory(ctx, tp, lambda tp=tp: tp.step(live_forward(tp, cfg, batch, gen)), name)
            finally:
                attention.USE_SDPA = True
            what = f"{name}, {precision}, {'SDPA' if sdpa else 'plain attention math'}, frontend trained"
            if m is None:
                report.add(what, out_of_memory(ctx), OOM)
                continue
            text, status = step_result(m, clips)
            report.add(what, text, status, ms=1000 * m["s"], clips_per_s=clips / m["s"], peak_gib=m["peak_gib"])


def stored_features(t: Trainee, cfg: Config, batch, gen: torch.Generator) -> fcache.FrontendCache:
    """A FrontendCache of the batch's clips as the trainer builds one: a validation and a training view, fp16."""
    video, lengths, _ = batch
    plain = dataclasses.replace(cfg.augment, time_mask_window=0, time_warp=False)  # masks come later, on features
    with torch.no_grad(), t.autocast():
        views = [
            t.model.frontend(augment_batch(video, lengths, plain, train=v > 0, generator=gen), lengths) for v in (0, 1)
        ]
    features = torch.cat([v.reshape(-1, v.shape[-1]) for v in views]).half()  # (2 * B * T, widths[-1])
    n, frames = len(lengths), int(lengths.sum())
    offsets = torch.arange(n) * FRAMES
    device = lengths.device
    return fcache.FrontendCache(
        features=features, offsets=offsets, lengths=lengths.cpu(), views=1, device=device, residency=device.type,
        path=Path("memory"), key="bench", built=True, frames=frames,
    )  # fmt: skip


def frozen_step(ctx: Context, report: Report, name: str, batch, gen: torch.Generator) -> None:
    """Frozen frontend: the step live against the step from the feature cache (gather, time mask, the rest)."""
    cfg = row_config(ctx, ["model.freeze.frontend=true"])
    t = trainee(ctx, cfg, ctx.precision())
    cache = stored_features(t, cfg, batch, gen)
    net = fcache.FromFeatures(t.model)
    aug, targets, clips = cfg.augment, batch[2], len(batch[1])

    def cached() -> torch.Tensor:
        x, lengths = cache.gather(list(range(clips)), 1)  # (B, T, widths[-1]) float32
        x = fcache.mask_features(x, lengths, aug.time_mask_window, aug.time_mask_stride, gen)
        return net(x, lengths, targets).loss

    ms: dict[str, float] = {}
    for path, forward in (("live", live_forward(t, cfg, batch, gen)), ("from the feature cache", cached)):
        what = f"{name}, {t.precision.name}, SDPA, frozen frontend {path}"
        m = timed_in_memory(ctx, t, lambda f=forward: t.step(f), what)
        if m is None:
            report.add(what, out_of_memory(ctx), OOM)
            continue
        ms[path] = 1000 * m["s"]
        text, status = step_result(m, clips)
        if path != "live" and "live" in ms:
            text += f" ({ms['live'] / ms[path]:.2f}x the live step)"
        report.add(what, text, status, ms=ms[path], clips_per_s=clips / m["s"], peak_gib=m["peak_gib"])


# --------------------------------------------------------------------------- the largest batch in the cap


def largest_fitting(
    fits: Callable[[int], bool], start: int, unit: int, limit: int, stop: Callable[[], bool] = lambda: False
) -> tuple[int, int | None, list[tuple[int, bool]]]:
    """The largest multiple of `unit` in [unit, limit] for which `fits` holds, by doubling from `start` then bisection.

    Returns (largest that fit (0: none), smallest that did not (None: none failed), every try in order);
    `stop()` true ends the search early with the bounds found so far.
    """
    tries: list[tuple[int, bool]] = []

    def test(n: int) -> bool:
        tries.append((n, fits(n)))
        return tries[-1][1]

    lo, hi, n = 0, None, max(unit, start // unit * unit)
    while n <= limit and not stop():
        if not test(n):
            hi = n
            break
        lo, n = n, 2 * n
    while hi is not None and hi - lo > unit and not stop():
        mid = (lo + hi) // 2 // unit * unit
        if mid <= lo:
            break
        lo, hi = (mid, hi) if test(mid) else (lo, mid)
    return lo, hi, tries


def fits_in_memory(ctx: Context, t: Trainee, cfg: Config, frames: int) -> tuple[bool, float | None]:
    """Whether `fit_steps` training steps at train.batch_frames=`frames` run; the peak memory (GiB) if so."""
    gen = torch.Generator(device=ctx.device).manual_seed(0)
    t = t.at(t.precision)  # a fresh grad scaler: an OOM inside its step would leave it half-way
    torch.cuda.reset_peak_memory_stats(ctx.device)
    try:
        batch = device_batch(cfg, ctx.device, frames // FRAMES, ctx.sizes.bank)
        for _ in range(ctx.sizes.fit_steps):
            t.step(live_forward(t, cfg, batch, gen))
        ctx.sync()
        return True, torch.cuda.max_memory_allocated(ctx.device) / 2**30
    except torch.cuda.OutOfMemoryError:
        return False, None
    finally:
        t.opt.zero_grad(set_to_none=True)


def batch_frames_row(ctx: Context, report: Report) -> None:
    cfg = row_config(ctx)
    start = cfg.train.batch_frames or cfg.train.batch_size * FRAMES
    what = f"largest train.batch_frames that fits, {ctx.sizes.config} config, {ctx.precision().name}, clips of {FRAMES} frames"
    t = trainee(ctx, cfg, ctx.precision())
    if not ctx.cuda:  # no cap to fit: one step at the (quick) default batch shows the path runs
        clips = default_clips(cfg, ctx.sizes.max_clips)
        batch = device_batch(cfg, ctx.device, clips, ctx.sizes.bank)
        m = timed(ctx, lambda: t.step(live_forward(t, cfg, batch, torch.Generator().manual_seed(0))), 0, 1, what)
        ran = f"{clips} clips x {FRAMES} frames ran: {1000 * m['s']:,.0f} ms/step"
        report.add(what, f"n/a on cpu: no memory cap to search ({ran})", NA)
        return
    peaks: dict[int, float | None] = {}

    def fits(frames: int) -> bool:
        ok, peaks[frames] = fits_in_memory(ctx, t, cfg, frames)
        release(ctx)  # here, once the failed try's traceback (and the activations it holds) is gone
        return ok

    lo, hi, tries = largest_fitting(fits, start, FRAMES, 256 * start, stop=lambda: ctx.left() < 0)
    cap = f"the {ctx.cap_gib:.1f} GiB cap" if ctx.cap_gib else "the whole GPU (no cap)"
    if lo == 0:
        report.add(what, f"nothing fits {cap}: batch_frames={start} ran out of memory", FAILED, tries=tries)
        return
    text = f"{lo:,} frames ({lo // FRAMES} clips) fit {cap}, peak {peaks[lo]:.2f} GiB; "
    text += f"{hi:,} did not" if hi is not None else "the search stopped before one failed"
    status = "ok" if hi is not None and hi - lo <= FRAMES else "timed out"
    report.add(
        what, text + f" ({len(tries)} tries; the default is {start:,})", status, largest=lo, failed=hi, tries=tries
    )
