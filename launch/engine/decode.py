"""Decoding sweeps: a trained checkpoint evaluated with each trial's decode.* settings, no training."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from launch.engine.schema import SELECT_KEY
from trainer import config as config_mod
from trainer.data import load_dataset
from trainer.device import select_device, select_precision
from trainer.metrics import METRICS, best_key
from trainer.model import build_model
from trainer.text import Tokenizer
from trainer.tracking import RunLog
from trainer.train import evaluate, load_checkpoint


class DecodeEvaluator:
    """A trained checkpoint, its validation split and model, loaded once; each trial decodes with its decode.* settings."""

    def __init__(self, checkpoint: Path, data_overrides: list[str]):
        self.checkpoint = checkpoint
        ckpt = load_checkpoint(checkpoint)
        self.cfg = config_mod.config_from_dict(ckpt["config"])
        if data_overrides:
            config_mod.apply_overrides(self.cfg, data_overrides)
        self.epoch = int(ckpt.get("epoch", 0))
        self.device = select_device(self.cfg.train.device)
        self.precision = select_precision(self.cfg.train.precision, self.device)
        self.tokenizer = Tokenizer.from_config(self.cfg.data)
        self.data = load_dataset(self.cfg.data, self.tokenizer)
        self.val = self.data.split(self.cfg.data)["val"]
        self.model = build_model(self.cfg.model, self.tokenizer.vocab_size)
        self.model.load_state_dict(ckpt["model"])
        self.model.to(self.device)

    def run(self, params: dict[str, Any], run_dir: Path, metric: str) -> dict[str, Any]:
        """Decode the validation split with `params`; writes a run folder (config, one metrics row, summary).

        One evaluation: its value of every validation metric is the run's best (`<metric>_best`)."""
        cfg = config_mod.apply_overrides(copy.deepcopy(self.cfg), {**params, SELECT_KEY: metric})
        log = RunLog(run_dir, cfg, name=run_dir.name)
        log.write_config(cfg)
        started = time.monotonic()
        result = evaluate(
            self.model, self.data, self.val, self.tokenizer, cfg, self.device, self.precision, losses=False
        )
        log.log_epoch({"epoch": self.epoch, **result.metrics, "time/epoch_s": time.monotonic() - started})
        summary = {
            "name": run_dir.name, "state": "finished", "reason": f"decoded {self.checkpoint} (no training)",
            **{best_key(m): v for m, v in result.metrics.items() if m in METRICS and METRICS[m].validation},
            "epoch_best": self.epoch, "epochs": self.epoch,
            "runtime_s": time.monotonic() - started, "checkpoint": str(self.checkpoint), "wandb_id": log.wandb_id,
        }  # fmt: skip
        log.write_summary(summary)
        log.finish("finished")
        return summary
