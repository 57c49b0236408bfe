"""Decoding sweeps: a trained checkpoint evaluated with each trial's decode.* settings, no training."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from launch.engine.schema import SELECT_KEY
from trainer import config as config_mod
from trainer.checkpoints import load_for_eval
from trainer.device import select_device, select_precision
from trainer.evaluate import evaluate, load_eval_set
from trainer.metrics import METRICS, best_key
from trainer.tracking import RunLog


class DecodeEvaluator:
    """A trained checkpoint, its validation split and model, loaded once; each trial decodes with its decode.* settings."""

    def __init__(self, checkpoint: Path, data_overrides: list[str]):
        self.checkpoint = checkpoint
        loaded = load_for_eval(checkpoint, None, data_overrides)
        self.cfg = loaded.cfg
        self.epoch = loaded.epoch or 0
        self.device = select_device(self.cfg.train.device)
        self.precision = select_precision(self.cfg.train.precision, self.device)
        self.val = load_eval_set(self.cfg, "val")
        self.model = loaded.model.to(self.device)

    def run(self, params: dict[str, Any], run_dir: Path, metric: str) -> dict[str, Any]:
        """Decode the validation split with `params`; writes a run folder (config, one metrics row, summary).

        One evaluation: its value of every validation metric is the run's best (`<metric>_best`)."""
        cfg = config_mod.apply_overrides(copy.deepcopy(self.cfg), {**params, SELECT_KEY: metric})
        log = RunLog(run_dir, cfg, name=run_dir.name)
        log.write_config(cfg)
        started = time.monotonic()
        result = evaluate(self.model, self.val, cfg, self.device, self.precision, losses=False)
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
