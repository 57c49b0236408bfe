"""Shared fixtures: the reference data of ../shared and small configs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def fresh_wandb_setup():
    """wandb reads WANDB_* variables once per process, at its first setup; each test gets a fresh one."""
    yield
    if "wandb" in sys.modules:
        sys.modules["wandb"].teardown()


@pytest.fixture
def reference_dir() -> Path:
    """../shared/reference, or skip: parity tests compare with auto_avsr's own outputs kept there."""
    if not (REFERENCE / "auto_avsr_small" / "expected.json").exists():
        pytest.skip(f"reference data absent ({REFERENCE}): parity with auto_avsr cannot be checked")
    return REFERENCE


TINY_MODEL = [
    "data.image_size=24",
    "augment.crop_size=16",
    "model.frontend.widths=[4,4,8,8]",
    "model.encoder.dim=16",
    "model.encoder.heads=2",
    "model.encoder.ffn_dim=32",
    "model.encoder.layers=1",
    "model.encoder.kernel_size=3",
    "model.decoder.dim=16",
    "model.decoder.heads=2",
    "model.decoder.ffn_dim=32",
    "model.decoder.layers=1",
    "decode.beam_size=2",
    "decode.batch_size=4",
    "train.batch_size=4",
    "train.max_epochs=2",
    "train.worst_k=2",
    "train.train_cer_clips=4",
    "optim.warmup_epochs=1",
    "tracking.wandb=disabled",
]


def write_tiny_dataset(root: Path, clips: int = 12, seed: int = 0) -> Path:
    """`clips` random 24x24 .npy clips of 6-10 frames with 2-3 word labels drawn from the vocabulary."""
    import json

    import numpy as np

    vocab = list(json.loads((ROOT / "configs/vocab/vocab.json").read_text(encoding="utf-8")))
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(clips):
        frames = rng.integers(0, 256, size=(int(rng.integers(6, 11)), 24, 24), dtype=np.uint8)
        np.save(root / f"{i:05d}.npy", frames)
        words = ["".join(rng.choice(vocab, size=int(rng.integers(1, 3)))) for _ in range(int(rng.integers(2, 4)))]
        (root / f"{i:05d}.csv").write_text("word\n" + "\n".join(words) + "\n", encoding="utf-8")
    return root


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A config of a tiny model on a tiny random dataset under tmp_path (runs go to tmp_path/runs)."""
    from trainer.config import load_config

    data = write_tiny_dataset(tmp_path / "data")
    return load_config(
        None,
        [
            *TINY_MODEL,
            f"data.root={data}",
            "data.val_ratio=0.25",
            "data.test_ratio=0.0",
            f"train.run_dir={tmp_path / 'runs'}",
        ],
    )
