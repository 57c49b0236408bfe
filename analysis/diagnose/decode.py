"""The re-decode: the validation split decoded again with one checkpoint of a run (joint beam search + CTC greedy).

Kept apart so that the one evaluation path of the trainer is the only thing it calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.config import Config, config_from_dict
from trainer.data import load_dataset
from trainer.device import select_device, select_precision
from trainer.model import LipReader
from trainer.text import Tokenizer
from trainer.train import evaluate, load_checkpoint


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
    state = load_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"])
    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log=lambda msg: None)
    model = LipReader(cfg.model, tokenizer.vocab_size)
    model.load_state_dict(state["model"])
    dev = select_device(device)
    model.to(dev)
    val_idx = data.split(cfg.data)["val"]
    result = evaluate(model, data, val_idx, tokenizer, cfg, dev, select_precision(cfg.train.precision, dev))
    return Decoded(
        int(state["epoch"]),
        result.metrics,
        result.rows,
        cfg,
        tokenizer,
        data,
        {clip_id: i for i, clip_id in enumerate(data.ids)},
    )
