"""Setting a run up: its folder and config, the data (checked before anything is written), the model,
optimizer, schedule and model inputs. trainer/train.py's loop works with the `Run` built here.
"""

from __future__ import annotations

import math
import random
import secrets
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import distributed
from trainer import frontend_cache as fcache
from trainer.checkpoints import TrainState, check_resume, last_checkpoint, rng_state, save_checkpoint, set_rng_state
from trainer.config import Config, config_from_dict, to_dict
from trainer.data import Dataset, load_dataset, make_batches
from trainer.device import Precision
from trainer.errors import ConfigError, UserError
from trainer.evaluate import EvalSet, eval_set
from trainer.inputs import Inputs, autocast
from trainer.io import remove_stale_temporaries
from trainer.metrics import Metric, metric
from trainer.model import LipReader, build_model, count_parameters
from trainer.text import Tokenizer
from trainer.tracking import RunLog

Say = Callable[[str], None]


@dataclass
class Run:
    """What the loop works with, set up once."""

    cfg: Config
    run_dir: Path
    log: RunLog | distributed.RankLog
    device: torch.device
    precision: Precision
    data: Dataset
    train_idx: list[int]
    val: EvalSet
    train_subset: EvalSet  # the fixed training clips of train/cer
    model: LipReader
    net: nn.Module  # the training forward: the model, its FromFeatures view, DDP around either
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    params: list[torch.Tensor]
    inputs: Inputs
    warmup_steps: int
    total_steps: int
    cache_reason: str  # why the frontend cache is not used ('' when it is)
    say: Say
    verbose: bool  # rank 0 prints the epochs and validation progress

    @property
    def interactive(self) -> bool:
        """Progress bars: verbose, on a terminal."""
        return self.verbose and sys.stderr.isatty()

    @property
    def metric(self) -> Metric:
        """train.select_metric's registry entry: best.pt, early stopping and the summary's best follow it."""
        return metric(self.cfg.train.select_metric)

    def batches(self, epoch: int) -> list[list[int]]:
        """The epoch's training batches: a pure function of the seed and the epoch."""
        t = self.cfg.train
        return make_batches(
            self.data.lengths,
            self.train_idx,
            batch_size=t.batch_size,
            batch_frames=t.batch_frames,
            shuffle=True,
            seed=t.seed * 1000 + epoch,
        )

    def checkpoint(self, name: str, state: TrainState) -> None:
        """RUN/checkpoints/<name>.pt, replaced atomically (rank 0 alone writes)."""
        if not distributed.is_main():
            return
        save_checkpoint(
            self.run_dir / "checkpoints" / f"{name}.pt",
            model=self.model.state_dict(),
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            rng=rng_state(),
            config=to_dict(self.cfg),
            wandb_id=self.log.wandb_id,
            **state.to_checkpoint(self.cfg.train.select_metric),
        )


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def new_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def open_run(
    cfg: Config, name: str | None, resume: Path | None, say: Say
) -> tuple[Path, dict[str, Any] | None, Config]:
    """The run folder, the checkpoint to resume from (None for a new run) and the config to run with; writes nothing.

    A resumed run continues with `cfg` when it changes only what a resumed run may change (checkpoints.RESUMABLE).
    """
    if resume is None:
        run_dir = distributed.broadcast_object(Path(cfg.train.run_dir) / (name or cfg.tracking.name or new_run_name()))
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick another --name")
        return run_dir, None, cfg
    run_dir = Path(resume)
    ckpt = last_checkpoint(run_dir)
    saved = config_from_dict(ckpt["config"])
    changes = check_resume(saved, cfg, run_dir)
    if not changes:
        return run_dir, ckpt, saved
    say(f"resuming {run_dir} with " + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changes.items()))
    return run_dir, ckpt, cfg


def nothing_to_do(ckpt: dict[str, Any], cfg: Config, run_dir: Path) -> str:
    """Why a resumed run has nothing left to train ('' when it has): all its epochs done, or stopped early."""
    if ckpt.get("partial"):
        return ""
    epoch, t = int(ckpt["epoch"]), cfg.train
    if epoch >= t.max_epochs:
        return (
            f"{run_dir} has trained all {epoch} epochs (train.max_epochs={t.max_epochs}): nothing to train; "
            f"pass train.max_epochs=N with N > {epoch} to extend it"
        )
    stale = int(ckpt.get("stale", 0))
    if t.patience and stale >= t.patience:
        return (
            f"{run_dir} stopped early: {stale} validations without a better {t.select_metric} "
            f"(train.patience={t.patience}): nothing to train; pass a larger train.patience to continue it"
        )
    return ""


def load_data(cfg: Config, say: Say) -> tuple[Dataset, dict[str, list[int]]]:
    """The dataset and its split; a DataError or UserError (bad clips, empty split) before any run folder exists."""
    tokenizer = Tokenizer.from_config(cfg.data)
    data = distributed.main_first(lambda: load_dataset(cfg.data, tokenizer, log=say))
    parts = distributed.main_first(lambda: data.split(cfg.data))
    if not parts["train"] or not parts["val"]:
        raise UserError(
            f"{cfg.data.root}: the split has {len(parts['train'])} training and {len(parts['val'])} validation clips; "
            "both must be non-empty"
        )
    if cfg.train.select_metric == "val/wer" and not cfg.data.word_separator:
        raise ConfigError("train.select_metric=val/wer needs data.word_separator=true (no word error rate without it)")
    return data, parts


def start_log(run_dir: Path, cfg: Config, ckpt: dict[str, Any] | None) -> RunLog | distributed.RankLog:
    """The run folder's writer (rank 0; the others get a stand-in): the folder and the W&B run begin here."""
    if not distributed.is_main():
        return distributed.RankLog(run_dir)
    if ckpt is not None:
        remove_stale_temporaries(run_dir / "checkpoints")  # what a kill -9 mid-write left
    return RunLog(
        run_dir,
        cfg,
        name=run_dir.name,
        wandb_id=ckpt.get("wandb_id") if ckpt else None,
        resume_epoch=int(ckpt["epoch"]) if ckpt else None,
    )


def build_run(
    cfg: Config,
    run_dir: Path,
    log: RunLog | distributed.RankLog,
    device: torch.device,
    precision: Precision,
    data: Dataset,
    parts: dict[str, list[int]],
    ckpt: dict[str, Any] | None,
    verbose: bool,
) -> Run:
    """The model (with the checkpoint's weights and states when resuming), optimizer, scaler, inputs and schedule."""
    say: Say = print if verbose else _quiet
    tokenizer = Tokenizer.from_config(cfg.data)
    model, optimizer, scaler = build_model_and_optimizer(cfg, tokenizer.vocab_size, device, precision, ckpt, say)
    features, reason = frontend_features(cfg, model, data, device, precision, say, verbose and sys.stderr.isatty())
    inputs = Inputs(data, cfg, device, features)
    val = eval_set(data, tokenizer, parts, "val")
    train_idx = parts["train"]
    subset = sorted(random.Random(cfg.train.seed).sample(train_idx, min(cfg.train.train_cer_clips, len(train_idx))))
    run = Run(
        cfg=cfg,
        run_dir=run_dir,
        log=log,
        device=device,
        precision=precision,
        data=data,
        train_idx=train_idx,
        val=val,
        train_subset=EvalSet(data, tokenizer, subset, val.baseline),
        model=model,
        net=distributed.wrap_model(inputs.step_model(model), device),  # DDP under torchrun
        optimizer=optimizer,
        scaler=scaler,
        params=[p for p in model.parameters() if p.requires_grad],
        inputs=inputs,
        warmup_steps=0,
        total_steps=0,
        cache_reason=reason,
        say=say,
        verbose=verbose,
    )
    steps_per_epoch = math.ceil(len(run.batches(0)) / cfg.train.accumulate)
    run.warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
    run.total_steps = cfg.train.max_epochs * steps_per_epoch  # the cosine ends at train.max_epochs
    return run


def build_model_and_optimizer(
    cfg: Config, odim: int, device: torch.device, precision: Precision, ckpt: dict[str, Any] | None, say: Say
) -> tuple[LipReader, torch.optim.Optimizer, torch.amp.GradScaler]:
    """The seeded model on `device` (pretrained parts loaded, parts frozen), AdamW and the grad scaler.

    Resuming, all three and every RNG take the checkpoint's states.
    """
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model, odim)
    if model.load_report is not None and ckpt is None:
        say(model.load_report.table())
    model.to(device)
    say(str(count_parameters(model)))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=cfg.optim.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=cfg.optim.weight_decay
    )
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
    return model, optimizer, scaler


def frontend_features(
    cfg: Config, model: LipReader, data: Dataset, device: torch.device, precision: Precision, say: Say, progress: bool
) -> tuple[fcache.FrontendCache | None, str]:
    """The frozen frontend's feature cache when the run may use it (trainer/frontend_cache.py), else None; and why not."""
    use, why_not = fcache.decide(cfg, model, say)
    if not use:
        return None, why_not
    features = distributed.main_first(
        lambda: fcache.load_or_build(
            model,
            data,
            cfg,
            device,
            precision=precision.name,
            autocast=autocast(device, precision),
            log=say,
            progress=progress,
        )
    )
    say(f"the frontend runs from its feature cache {features.path}: {features.describe()}")
    return features, ""


def cache_summary(run: Run, summary: dict[str, Any]) -> dict[str, Any]:
    """The summary's frontend_cache/* entries: which path the run took, and why."""
    features = run.inputs.features
    return {
        "frontend_cache/used": features is not None,
        "frontend_cache/views": features.views if features is not None else 0,
        "frontend_cache/reason": run.cache_reason,
        "frontend_cache/built": bool(summary.get("frontend_cache/built")) or (features is not None and features.built),
        "frontend_cache/residency": features.residency if features is not None else "",
    }


def _quiet(*args: Any, **kwargs: Any) -> None:
    return None
