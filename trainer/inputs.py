"""A batch's model input, from live frames or from the frozen frontend's feature cache: the one place that chooses.

Live: the clips are collated, augmented on the device (`trainer/augment.py`; the centre crop for
validation) and, for the `train.noise_input` control, replaced by noise. Cached (trainer/frontend_cache.py):
the stored features of one training view per clip (view 0, the centre crop, for validation), time-masked
when training; the model then runs from `proj_encoder` on.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer import frontend_cache as fcache
from trainer.augment import augment_batch, noise_frames
from trainer.config import Config
from trainer.data import Dataset
from trainer.device import Precision
from trainer.model import LipReader


def autocast(device: torch.device, precision: Precision) -> AbstractContextManager:
    """Mixed precision for the forward pass; nothing in fp32."""
    if precision.dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


@dataclass
class Inputs:
    """Where the model's input comes from: `features` is the frontend cache, None for live frames."""

    data: Dataset
    cfg: Config
    device: torch.device
    features: fcache.FrontendCache | None = None

    @property
    def shape_names(self) -> str:
        """What the dimensions of `batch()`'s x are, for messages."""
        return "clips, frames, features" if self.features is not None else "clips, frames, 1, H, W"

    def batch(
        self, indices: Sequence[int], generator: torch.Generator, *, train: bool, epoch: int = 0, batch: int = 0
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(x, lengths (B,), targets (B, L) padded with -1) of the clips `indices`.

        x is (B, T, 1, crop, crop) frames, or (B, T, widths[-1]) cached features. Training draws crops,
        flips, masks (and the cache's views, a pure function of seed, epoch and batch) from `generator`.
        """
        idx = [int(i) for i in indices]
        if self.features is not None:
            views = self.features.train_views(len(idx), self.cfg.train.seed, epoch, batch) if train else 0
            x, lengths = self.features.gather(idx, views)  # (B, T, widths[-1])
            if train:
                aug = self.cfg.augment
                x = fcache.mask_features(x, lengths, aug.time_mask_window, aug.time_mask_stride, generator)
            return x, lengths, self.data.padded_targets(idx)[0].to(self.device, non_blocking=True)
        clips = self.data.collate(idx).to(self.device)
        x = augment_batch(clips.video, clips.lengths, self.cfg.augment, train=train, generator=generator)
        if self.cfg.train.noise_input:
            x = noise_frames(x, clips.lengths, generator)  # (B, T, 1, crop, crop)
        return x, clips.lengths, clips.targets

    def encode(self, model: LipReader, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The encoder output (B, T, D) and its lengths from `batch()`'s x."""
        if self.features is not None:
            return model.encode_features(x, lengths)
        return model.encode(x, lengths)

    def step_model(self, model: LipReader) -> nn.Module:
        """The module whose forward(x, lengths, targets) gives the training losses (DDP wraps this one)."""
        return fcache.FromFeatures(model) if self.features is not None else model
