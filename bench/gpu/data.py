"""Synthetic clips for the GPU check: rendered by trainer.synthetic as arrays, written as .npy (no PyAV needed).

Rendering costs about 20 ms a clip on one core, so a few hundred distinct clips are rendered once per
process and a dataset of N clips repeats them (clip i is bank[i % len(bank)], its own id): the
timings need the sizes and shapes of real clips, not N distinct ones.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from trainer.config import Config
from trainer.data import resize
from trainer.synthetic import Clip, load_vocab, make_clip, token_weights
from trainer.text import Tokenizer

FRAMES = 38  # the longest synthetic clip (29-38 frames): batches of it give the peak memory


@functools.lru_cache(maxsize=2)
def bank(n: int, seed: int = 0) -> tuple[Clip, ...]:
    """`n` synthetic clips (112 x 112, 29-38 frames, their words), clip i from the seed (seed, i)."""
    tokens = load_vocab()
    weights = token_weights(tokens)
    return tuple(make_clip(np.random.default_rng([seed, i]), tokens, weights) for i in range(n))


def write_clips(root: Path, count: int, n_bank: int, image_size: int) -> Path:
    """`count` clips as root/NNNNN.npy + NNNNN.csv at `image_size`, written once (kept when complete)."""
    if root.exists():
        return root
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed row's half-written folder
    tmp.mkdir(parents=True)
    clips = bank(n_bank)
    for i in range(count):
        clip = clips[i % len(clips)]
        frames = clip.frames if image_size == clip.frames.shape[1] else resize(clip.frames, image_size)
        np.save(tmp / f"{i:05d}.npy", frames)
        (tmp / f"{i:05d}.csv").write_text("word\n" + "".join(w + "\n" for w in clip.text), encoding="utf-8")
    os.replace(tmp, root)
    return root


def dataset(scratch: Path, count: int, n_bank: int, image_size: int) -> Path:
    """A dataset folder shared by the rows of one check (they run one after another)."""
    return write_clips(scratch.parent / "data" / f"clips{count}-{image_size}px", count, n_bank, image_size)


def device_batch(
    cfg: Config, device: torch.device, clips: int, n_bank: int, offset: int = 0, frames: int = FRAMES
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A training batch on `device`: video (B, frames, H, W) uint8, lengths (B,), targets (B, L) padded with -1.

    Each clip's frames are repeated in time to `frames`; H = W = cfg.data.image_size.
    """
    tokenizer = Tokenizer.from_config(cfg.data)
    chosen = [bank(n_bank)[(offset + b) % n_bank] for b in range(clips)]
    size = cfg.data.image_size
    video = np.stack([np.resize(c.frames, (frames, *c.frames.shape[1:])) for c in chosen])  # (B, T, 112, 112)
    if size != video.shape[-1]:
        video = np.stack([resize(v, size) for v in video])  # (B, T, size, size)
    ids = [tokenizer.encode(" ".join(c.text)) for c in chosen]
    targets = torch.full((clips, max(map(len, ids))), -1, dtype=torch.int64)  # (B, L)
    for b, row in enumerate(ids):
        targets[b, : len(row)] = torch.tensor(row)
    lengths = torch.full((clips,), frames, dtype=torch.int64)
    return torch.from_numpy(video).to(device), lengths.to(device), targets.to(device)
