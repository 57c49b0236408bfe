"""The cached clips as a Dataset (frames in one memmap, labels in lists), its split, and padded batches."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from trainer.config import DataConfig
from trainer.data.clips import BadClip
from trainer.errors import ConfigError
from trainer.io import atomic_write_json

SPLITS = ("train", "val", "test")


@dataclass
class Batch:
    ids: list[str]
    video: torch.Tensor  # (B, T, H, W) uint8, zero after each clip's length
    lengths: torch.Tensor  # (B,) int64 frames
    targets: torch.Tensor  # (B, L) int64, -1 after each label's length
    target_lengths: torch.Tensor  # (B,) int64

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(self.ids, move(self.video), move(self.lengths), move(self.targets), move(self.target_lengths))


@dataclass
class Dataset:
    """The cached clips: frames in one memmap, labels in lists. `dataset[i]` is (frames (T, H, W), target ids)."""

    folder: Path
    ids: list[str]
    offsets: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    targets: list[list[int]]
    texts: list[str]
    manifest_splits: list[str | None]
    skipped: list[BadClip] = field(default_factory=list)  # bad clips left out under data.skip_bad
    built: bool = False  # True when this call decoded the clips, False when it reused the cache
    frames: np.ndarray = field(init=False, repr=False)  # (total_frames, H, W) uint8 memmap

    def __post_init__(self) -> None:
        shape = tuple(json.loads((self.folder / "index.json").read_text())["frame_shape"])
        if shape[0] == 0:
            self.frames = np.zeros(shape, np.uint8)
        else:
            self.frames = np.memmap(self.folder / "frames.u8", dtype=np.uint8, mode="r", shape=shape)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, list[int]]:
        return self.video(i), self.targets[i]

    def video(self, i: int) -> np.ndarray:
        """(T, H, W) uint8 view into the memmap."""
        start = int(self.offsets[i])
        return self.frames[start : start + int(self.lengths[i])]

    def collate(self, indices: Sequence[int]) -> Batch:
        """A padded batch of the clips at `indices`."""
        indices = [int(i) for i in indices]
        lengths = self.lengths[indices]
        _, h, w = self.frames.shape
        video = np.zeros((len(indices), int(lengths.max()), h, w), np.uint8)  # (B, T, H, W)
        for b, i in enumerate(indices):
            video[b, : lengths[b]] = self.video(i)
        targets, target_lengths = self.padded_targets(indices)
        return Batch(
            [self.ids[i] for i in indices],
            torch.from_numpy(video),
            torch.from_numpy(lengths.astype(np.int64)),
            targets,
            target_lengths,
        )

    def padded_targets(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ids of the clips at `indices`, (B, L) padded with -1, and their lengths (B,); no frames read."""
        target_lengths = [len(self.targets[int(i)]) for i in indices]
        targets = torch.full((len(target_lengths), max(target_lengths)), -1, dtype=torch.int64)  # (B, L)
        for b, i in enumerate(indices):
            targets[b, : target_lengths[b]] = torch.tensor(self.targets[int(i)], dtype=torch.int64)
        return targets, torch.tensor(target_lengths, dtype=torch.int64)

    def split(self, cfg: DataConfig) -> dict[str, list[int]]:
        """Train/val/test indices: the manifest's split column, else a seeded shuffle; kept in split.json."""
        path = self.folder / "split.json"
        params = {"seed": cfg.split_seed, "val_ratio": cfg.val_ratio, "test_ratio": cfg.test_ratio}
        if all(s is not None for s in self.manifest_splits) and self.ids:
            params = {"from": "manifest split column"}
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("params") == params and sorted(sum((saved[s] for s in SPLITS), [])) == sorted(self.ids):
                return self._indices(saved)
        if "from" in params:
            by_id = {s: [i for i, sp in zip(self.ids, self.manifest_splits, strict=True) if sp == s] for s in SPLITS}
        else:
            by_id = split_ids(self.ids, cfg.split_seed, cfg.val_ratio, cfg.test_ratio)
        atomic_write_json(path, {"params": params, **by_id})
        return self._indices(by_id)

    def _indices(self, by_id: dict[str, list[str]]) -> dict[str, list[int]]:
        pos = {clip_id: i for i, clip_id in enumerate(self.ids)}
        return {s: sorted(pos[c] for c in by_id[s]) for s in SPLITS}


def split_ids(ids: Sequence[str], seed: int, val_ratio: float, test_ratio: float) -> dict[str, list[str]]:
    """A seeded shuffle of the sorted ids cut into val, test and train (the rest)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_val, n_test = round(len(order) * val_ratio), round(len(order) * test_ratio)
    return {
        "train": sorted(order[n_val + n_test :]),
        "val": sorted(order[:n_val]),
        "test": sorted(order[n_val : n_val + n_test]),
    }


def make_batches(
    lengths: Sequence[int] | np.ndarray,
    indices: Sequence[int],
    *,
    batch_size: int = 16,
    batch_frames: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> list[list[int]]:
    """Index batches: by padded frames (B x longest clip <= batch_frames, similar lengths together) or of batch_size.

    With `shuffle`, the membership among equal lengths and the batch order come from `seed`.
    """
    rng = random.Random(seed)
    order = [int(i) for i in indices]
    if shuffle:
        rng.shuffle(order)
    if batch_frames <= 0:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    longest = max((int(lengths[i]) for i in order), default=0)
    if longest > batch_frames:
        raise ConfigError(f"train.batch_frames={batch_frames} is below the longest clip ({longest} frames); raise it")
    order.sort(key=lambda i: int(lengths[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * int(lengths[i]) > batch_frames:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches
