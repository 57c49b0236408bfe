"""Checkpoints: a run's written and read back, one loaded for evaluation, and what a resumed run may change.

A run's checkpoint (`last.pt`, `best.pt`) holds the model, optimizer, grad scaler and RNG states, the
training state (trainer/train.py's `TrainState`: epoch, step, best value and epoch of `train.select_metric`,
validations since, the partial-epoch sums of a mid-epoch stop), the resolved config and the W&B run id.
Files are written to a temporary name and renamed (trainer/io.py), so a kill never leaves half of one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import Config, apply_overrides, config_from_dict, load_config, to_flat
from trainer.errors import CheckpointError, ConfigError, TrainingFailed
from trainer.io import atomic_torch_save
from trainer.metrics import Metric
from trainer.model import LipReader
from trainer.model.pretrained import load_state, read_checkpoint, unwrap
from trainer.text import Tokenizer

EVAL_PARTS = ("frontend", "proj_encoder", "encoder", "decoder", "ctc")  # and the adapter, when the model has one

# What `train --resume RUN key=value` may change: how long the run goes on and when it stops, how it
# validates, decodes and reports. Anything else would change what the checkpoint holds or how it trains.
RESUMABLE = (
    "train.max_epochs",
    "train.max_minutes",
    "train.patience",
    "train.val_every",
    "train.train_cer_every",
    "train.train_cer_clips",
    "train.worst_k",
    "train.max_bad_steps",
    "train.run_dir",
    "data.cache_dir",
)
RESUMABLE_SECTIONS = ("decode.", "tracking.")
PATH_KEYS = ("data.root", "data.vocab", "data.cache_dir", "model.pretrained.path", "train.run_dir")
WHY = {
    "model": "the checkpoint holds the weights of the run's own architecture",
    "data": "the run trains and validates on its own clips, labels and split",
    "augment": "it changes what the run trains on",
    "optim": "it changes how the run trains (the optimizer state and schedule are the run's)",
    "train": "it changes how the run trains",
}


# --------------------------------------------------------------------------- a run's checkpoints


@dataclass
class TrainState:
    """Where a run is: what its checkpoint holds beyond the weights, and what the loop updates."""

    epoch: int = 0  # the last finished epoch
    step: int = 0  # optimizer steps taken
    best: float = math.inf  # the best value of train.select_metric so far
    best_epoch: int = 0
    stale: int = 0  # validations since the best one
    best_metrics: dict[str, float] = field(default_factory=dict)  # every validation metric at the best epoch
    partial: dict[str, Any] | None = None  # a mid-epoch stop: its epoch, next batch, generator and running sums

    @classmethod
    def start(cls, ckpt: dict[str, Any] | None, selected: Metric) -> TrainState:
        """A new run's state, or the one a checkpoint holds."""
        if ckpt is None:
            return cls(best=selected.worst)
        best = ckpt["best"] if "best" in ckpt else ckpt["best_cer"]  # checkpoints from before train.select_metric
        return cls(
            epoch=int(ckpt["epoch"]),
            step=int(ckpt["step"]),
            best=float(best),
            best_epoch=int(ckpt["best_epoch"]),
            stale=int(ckpt["stale"]),
            best_metrics=dict(ckpt.get("best_metrics") or {}),
            partial=ckpt.get("partial"),
        )

    def to_checkpoint(self, select_metric: str) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "select_metric": select_metric,
            "best": self.best,
            "best_epoch": self.best_epoch,
            "stale": self.stale,
            "best_metrics": dict(self.best_metrics),
            "partial": self.partial,
        }


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write a checkpoint atomically; a failed write (a full disk) leaves the previous one whole."""
    try:
        atomic_torch_save(path, state)
    except OSError as e:
        raise TrainingFailed(
            f"could not write {path} ({e.strerror or e}); the previous checkpoint is intact: free space, then --resume {path.parent.parent}"
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A lipsweep checkpoint, read with weights_only=True; a CheckpointError naming the file otherwise."""
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not {"model", "config", "epoch"} <= set(ckpt):
        raise CheckpointError(
            f"{path}: not a lipsweep training checkpoint (no model, config and epoch); --resume needs a run folder's last.pt"
        )
    return ckpt


def last_checkpoint(run_dir: Path) -> dict[str, Any]:
    """RUN's last.pt, what `--resume RUN` continues; a CheckpointError saying how to start RUN again when it has none."""
    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints" / "last.pt").exists() and (run_dir / "config.yaml").exists():
        raise CheckpointError(
            f"{run_dir} has no checkpoint to resume: it stopped before its first optimizer step ended. Start it "
            f"again (its folder is reused): python -m launch train --config {run_dir / 'config.yaml'} --name {run_dir.name}"
        )
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


def rng_state() -> dict[str, Any]:
    """Every RNG's state, in types `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached": cached,
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- for evaluation


@dataclass
class ForEval:
    """A model with every weight of a checkpoint, the config that describes it, and the checkpoint's epoch."""

    model: LipReader
    cfg: Config
    epoch: int | None  # None for an imported (auto_avsr, LRW, Lightning) checkpoint


def eval_config(checkpoint_obj: Any, checkpoint: Path, config: str | Path | None, overrides: Sequence[str]) -> Config:
    """--config if given, else the config saved in a lipsweep checkpoint; then the overrides."""
    if config is not None:
        return load_config(config, list(overrides))
    saved = checkpoint_obj.get("config") if isinstance(checkpoint_obj, dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(
            f"{checkpoint}: holds no lipsweep config (an auto_avsr or other imported checkpoint): pass the config that "
            "describes its architecture with --config, e.g. --config configs/base.yaml for auto_avsr's base model"
        )
    cfg = config_from_dict(saved)  # as trained: model.pretrained.path says where it started (its weights are all here)
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def load_for_eval(checkpoint: Path, config: str | Path | None = None, overrides: Sequence[str] = ()) -> ForEval:
    """The model of a checkpoint in eval mode, every weight loaded; a CheckpointError if any is missing or does not fit.

    The config is `config` (a path or a name in configs/) when given, else the checkpoint's own; then `overrides`.
    """
    checkpoint = Path(checkpoint)
    obj = read_checkpoint(checkpoint)
    cfg = eval_config(obj, checkpoint, config, overrides)
    model = LipReader(cfg.model, Tokenizer.from_config(cfg.data).vocab_size)
    state, fmt = unwrap(obj, checkpoint)
    parts = [*EVAL_PARTS, "adapter"] if model.adapter is not None else list(EVAL_PARTS)
    report = load_state(model, state, parts, source=str(checkpoint), fmt=fmt)
    if report.reinitialised:
        missing = "; ".join(f"{k}: {why}" for k, why in list(report.reinitialised.items())[:4])
        raise CheckpointError(
            f"{checkpoint}: cannot evaluate, {len(report.reinitialised)} weights of the model are not in this {fmt}-format "
            f"checkpoint or do not fit ({missing}). Pass the --config (and data.vocab) that describe the checkpoint"
        )
    epoch = obj.get("epoch") if fmt == "lipsweep" else None
    return ForEval(model.eval(), cfg, int(epoch) if isinstance(epoch, int) else None)


# --------------------------------------------------------------------------- resuming with changes


def resume_config(run_dir: Path, config: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """The config to continue RUN with: `config` when given (it must match the run), else the run's own; then `overrides`.

    `train` compares it with the run's checkpoint (`check_resume`) and refuses any change it cannot make.
    """
    if config is not None:
        return load_config(config, list(overrides))
    cfg = config_from_dict(last_checkpoint(run_dir)["config"])
    return apply_overrides(cfg, list(overrides)) if overrides else cfg


def resumable(key: str) -> bool:
    return key in RESUMABLE or key.startswith(RESUMABLE_SECTIONS)


def config_changes(saved: Config, cfg: Config) -> dict[str, tuple[Any, Any]]:
    """{key: (the run's value, the new value)} for every key that differs (paths compared resolved)."""
    old, new = to_flat(saved), to_flat(cfg)
    return {k: (old[k], new[k]) for k in old if not _same(k, old[k], new[k])}


def _same(key: str, a: Any, b: Any) -> bool:
    if key in PATH_KEYS and a and b:
        return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()
    return a == b


def check_resume(saved: Config, cfg: Config, run_dir: Path) -> dict[str, tuple[Any, Any]]:
    """The changes `cfg` makes to the run's config; a ConfigError naming every one a resumed run cannot make, and why."""
    changes = config_changes(saved, cfg)
    refused = [k for k in changes if not resumable(k)]
    if not refused:
        return changes
    lines = []
    for key in refused:
        old, new = changes[key]
        if key == "train.select_metric":
            why = f"best.pt and the best value so far were chosen by {old}; a run selects by one metric"
        else:
            why = WHY[key.split(".", 1)[0]]
        lines.append(f"  {key}={new!r} (the run has {old!r}): {why}")
    raise ConfigError(
        f"cannot resume {run_dir} with these changes (from --config, --data or key=value):\n" + "\n".join(lines) + "\n"
        f"A resumed run may change only {', '.join(RESUMABLE)} and the decode.* and tracking.* keys. To train with "
        f"other values, start a new run instead: python -m launch train --config {Path(run_dir) / 'config.yaml'} "
        "KEY=VALUE ... --name NEW (or your own --config, without --resume)"
    )
