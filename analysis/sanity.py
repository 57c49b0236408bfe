"""The quick sanity model: can the training loop overfit a handful of clips?

A loop of its own over `clips` training clips in one fixed batch (no augmentation: the centre crop of
validation), with the run's model, optimizer settings and warm-up/cosine schedule, decoding the same
clips with the joint beam search every `eval_every` steps. Frontends:
- `real`: the model as configured; train CER must reach near zero, else the loop, the labels or the
  learning rate are broken;
- `linear`: the Conv3d + ResNet frontend replaced by a linear projection of each frame; it should learn too;
- `noise`: fresh Gaussian noise instead of the frames at every step, every clip padded to the same
  length (so neither the pixels nor the clip length say which clip it is); the model can only learn the
  label prior, so train CER must stay high. If it learns anyway, labels leak from outside the frames.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from trainer.augment import augment_batch
from trainer.config import Config
from trainer.data import load_dataset
from trainer.device import select_device
from trainer.errors import DataError
from trainer.evaluate import EvalSet, decode_rows, score
from trainer.model import build_model
from trainer.search import SearchOptions
from trainer.setup import seed_everything
from trainer.steps import get_lr
from trainer.text import Tokenizer

Frontend = Literal["real", "noise", "linear"]
NEAR_ZERO = 0.1  # a train CER at or below this: the loop learned the clips
NOT_LEARNED = 0.5  # a train CER at or above this (noise): the content was not learned
MODES = {"real": "the configured frontend", "linear": "a linear frontend", "noise": "noise instead of frames"}


class LinearFrontend(nn.Module):
    """Each frame (1, H, W) flattened and projected to `dim` features: the frontend of the `linear` sanity model."""

    def __init__(self, pixels: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(pixels, dim)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x (B, T, 1, H, W) -> (B, T, dim); padded frames give zero features."""
        real = torch.arange(x.size(1), device=x.device)[None, :] < lengths[:, None]  # (B, T)
        return self.proj(x.flatten(2)) * real[..., None].to(x.dtype)  # (B, T, dim)


@dataclass
class SanityResult:
    frontend: str
    clips: int
    steps: int
    cer: float  # train CER of the joint beam search after the last step
    cer_ctc_greedy: float
    learned: bool  # cer <= NEAR_ZERO
    verdict: str
    ok: bool  # the outcome the frontend should give: real/linear learn, noise does not
    history: list[dict[str, float]] = field(default_factory=list)  # step, loss, cer, cer_ctc_greedy
    seconds: float = 0.0


def verdict_for(frontend: str, cer: float, steps: int, clips: int) -> tuple[str, bool]:
    """The sentence printed at the end, and whether the outcome is the expected one."""
    if frontend == "noise":
        if cer >= NOT_LEARNED:
            return (f"as expected: with noise instead of frames the loop cannot learn the content (train CER {cer:.3f} "
                    f">= {NOT_LEARNED} after {steps} steps); it learns only which labels are common."), True  # fmt: skip
        return (f"PROBLEM: train CER {cer:.3f} < {NOT_LEARNED} with noise instead of frames: the labels leak from "
                "outside the frames (clip lengths, batch order, targets reaching the decoder's input)."), False  # fmt: skip
    what = "the model" if frontend == "real" else "the model with a linear frontend"
    if cer <= NEAR_ZERO:
        return f"the loop can learn: {what} overfits {clips} clips to train CER {cer:.3f} in {steps} steps.", True
    return (f"PROBLEM: {what} did not overfit {clips} clips: train CER {cer:.3f} > {NEAR_ZERO} after {steps} steps. "
            "Look for a bug in the loop (targets, lengths, masks), a learning rate too low or too high, "
            "or frozen random parts; try more --steps first."), False  # fmt: skip


@dataclass
class FixedBatch:
    """The clips the sanity model overfits, in one batch: the centre crop of validation, no augmentation."""

    clips: EvalSet
    video: Tensor  # (B, T, 1, crop, crop)
    lengths: Tensor  # (B,) frames; every clip as long as the longest for the noise frontend
    targets: Tensor  # (B, L) padded with -1


def fixed_batch(
    cfg: Config, clips: int, frontend: Frontend, dev: torch.device, log: Callable[[str], None]
) -> FixedBatch:
    """The first `clips` training clips of cfg.data; a DataError when the training split has fewer."""
    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log=log)
    train_idx = data.split(cfg.data)["train"]
    if len(train_idx) < clips:
        raise DataError(f"{cfg.data.root}: the training split has {len(train_idx)} clips, fewer than --clips {clips}")
    batch = data.collate(train_idx[:clips]).to(dev)
    video = augment_batch(batch.video, batch.lengths, cfg.augment, train=False)  # (B, T, 1, crop, crop)
    lengths = torch.full_like(batch.lengths, video.size(1)) if frontend == "noise" else batch.lengths
    return FixedBatch(EvalSet(data, tokenizer, train_idx[:clips], baseline=[]), video, lengths, batch.targets)


@torch.no_grad()
def train_cer(model: nn.Module, x: Tensor, batch: FixedBatch, options: SearchOptions) -> tuple[float, float]:
    """CER of the joint beam search and of CTC greedy on the batch's clips (the shared scoring)."""
    model.eval()
    enc, enc_lengths = model.encode(x, batch.lengths)  # (B, T, D)
    rows = decode_rows(model, enc, enc_lengths, batch.clips, batch.clips.indices, options)
    model.train()
    scores = score(rows, batch.clips.tokenizer, prefix="sanity")
    return scores["sanity/cer"], scores["sanity/cer_ctc_greedy"]


def run_sanity(
    cfg: Config,
    *,
    clips: int = 10,
    frontend: Frontend = "real",
    steps: int = 300,
    eval_every: int = 50,
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> SanityResult:
    """Overfit `clips` training clips for `steps` optimizer steps and judge the train CER."""
    if frontend not in ("real", "noise", "linear"):
        raise ValueError(f"frontend must be real, noise or linear, got {frontend!r}")
    if clips < 1 or steps < 1 or eval_every < 1:
        raise ValueError(f"clips, steps and eval_every must be at least 1, got {clips}, {steps}, {eval_every}")
    started = time.monotonic()
    seed_everything(cfg.train.seed)
    dev = select_device(device)
    batch = fixed_batch(cfg, clips, frontend, dev, log)
    model = build_model(cfg.model, batch.clips.tokenizer.vocab_size)
    if frontend == "linear":
        model.frontend = LinearFrontend(batch.video.size(-1) * batch.video.size(-2), cfg.model.frontend.widths[-1])
    model.to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=cfg.optim.weight_decay
    )
    warmup = min(steps // 10, round(cfg.optim.warmup_epochs))  # a short warm-up, then cosine decay to the last step
    noise_gen = torch.Generator(device=dev)
    noise_gen.manual_seed(cfg.train.seed)
    options = SearchOptions.from_config(cfg.decode)

    def inputs() -> Tensor:
        if frontend != "noise":
            return batch.video
        return torch.randn(batch.video.shape, generator=noise_gen, device=dev)  # (B, T, 1, crop, crop)

    log(f"sanity: {clips} clips, {steps} steps, {MODES[frontend]}, lr {cfg.optim.lr:g}, on {dev}")
    history: list[dict[str, float]] = []
    model.train()
    for step in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = get_lr(step, cfg.optim.lr, warmup, steps)
        out = model(inputs(), batch.lengths, batch.targets)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or math.inf)
        optimizer.step()
        if step % eval_every == 0 or step == steps:
            loss = out.loss.item()
            beam_cer, greedy_cer = train_cer(model, inputs(), batch, options)
            history.append({"step": step, "loss": loss, "cer": beam_cer, "cer_ctc_greedy": greedy_cer})
            log(f"step {step:5d}  loss {loss:9.3f}  train CER {beam_cer:.3f}  CTC-greedy CER {greedy_cer:.3f}")
    final = history[-1]
    text, ok = verdict_for(frontend, final["cer"], steps, clips)
    return SanityResult(frontend, clips, steps, final["cer"], final["cer_ctc_greedy"], final["cer"] <= NEAR_ZERO,
                        text, ok, history, time.monotonic() - started)  # fmt: skip
