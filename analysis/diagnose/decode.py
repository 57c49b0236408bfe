"""The re-decode: the validation split decoded again with one checkpoint of a run (joint beam search + CTC greedy).

Kept apart so that the one evaluation path of the trainer is the only thing it calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainer.checkpoints import load_for_eval
from trainer.config import Config
from trainer.device import select_device, select_precision
from trainer.evaluate import evaluate, load_eval_set


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
    loaded = load_for_eval(checkpoint)
    cfg = loaded.cfg
    clips = load_eval_set(cfg, "val", log=lambda msg: None)
    dev = select_device(device)
    result = evaluate(loaded.model.to(dev), clips, cfg, dev, select_precision(cfg.train.precision, dev))
    return Decoded(
        loaded.epoch or 0,
        result.metrics,
        result.rows,
        cfg,
        clips.tokenizer,
        clips.data,
        {clip_id: i for i, clip_id in enumerate(clips.data.ids)},
    )
