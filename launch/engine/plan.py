"""What the workers of a local sweep run: a validated sweep resolved into study, storage, budget, pruner and folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launch.engine.params import grid_size, grid_space
from launch.engine.spec import SweepSpec
from launch.engine.study import resolve_pruner
from trainer import config as config_mod
from trainer.config import Config
from trainer.errors import ConfigError

STUDY_DB = "study.db"


@dataclass
class LocalSweep:
    """Everything a worker needs to run trials of one study (picklable: workers are separate processes)."""

    spec: SweepSpec
    study: str
    storage: str
    sweep_dir: Path
    budget: int
    pruner: dict[str, Any]
    overrides: list[str] = field(default_factory=list)
    seed: int = 0
    checkpoint: str | None = None
    heartbeat: int = 60
    max_retry: int = 2
    verbose: bool = True
    device: str = "auto"  # train.device of the base config: worker k takes GPU k mod n when it is auto or cuda
    notes: list[str] = field(default_factory=list)  # what `prepare` changed, for the user (pruning off, ...)
    objective: type | None = None  # what runs a trial: objective.Objective by default (sweep confirm: its own)
    configs: dict[str, dict[str, Any]] = field(default_factory=dict)  # sweep confirm: label -> resolved flat config


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / STUDY_DB).as_posix()}"


def trial_budget(spec: SweepSpec, trials: int | None) -> int:
    """How many trials the study runs in all: --trials, run_cap and the grid size, whichever is smallest."""
    caps = [n for n in (trials, spec.run_cap) if n]
    if spec.method == "grid":
        caps.append(grid_size(grid_space(spec.distributions())))
    if not caps:
        raise ConfigError(f"{spec.path}: a {spec.method} sweep needs --trials N or run_cap: in the YAML")
    return min(caps)


def _check_runnable(spec: SweepSpec) -> None:
    if spec.method not in ("grid", "random", "bayes", "custom"):
        raise ConfigError(
            f"{spec.path}: method {spec.method}: `sweep local` runs grid, random, bayes and custom sweeps"
        )
    if (spec.raw.get("scheduler") or {}).get("search_space"):
        raise ConfigError(
            f"{spec.path}: scheduler.search_space: `sweep local` samples the YAML's parameters; a search_space "
            "function is used only by W&B's scheduler (drop it, or run the sweep with `sweep scheduler`)"
        )


def base_config(spec: SweepSpec, overrides: list[str], checkpoint: str | None) -> Config:
    """The config trials start from: the checkpoint's (decoding sweeps), else the base config with the overrides."""
    if not checkpoint:
        return config_mod.load_config(spec.base_config, [*spec.local_overrides, *overrides])
    from trainer.checkpoints import load_checkpoint

    base = config_mod.config_from_dict(load_checkpoint(Path(checkpoint))["config"])
    if overrides:
        config_mod.apply_overrides(base, list(overrides))
    return base


def _single_objective_pruner(spec: SweepSpec, block: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Optuna prunes single-objective studies only: several objectives turn pruning off, with a note."""
    if not spec.multi_objective or block["type"] == "none":
        return block, []
    note = (
        f"pruning off: the {block['type']} pruner compares one metric across trials, and this sweep has "
        f"{len(spec.objectives)} objectives ({', '.join(n for n, _ in spec.objectives)}); Optuna prunes "
        "single-objective studies only"
    )
    return {"type": "none"}, [note]


def prepare(
    spec: SweepSpec,
    *,
    trials: int | None = None,
    storage: str | None = None,
    study: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    pruner: str | None = None,
    pruner_options: list[str] | tuple[str, ...] = (),
    checkpoint: str | None = None,
    seed: int = 0,
    heartbeat: int = 60,
    max_retry: int = 2,
    verbose: bool = True,
) -> LocalSweep:
    """Resolve a validated sweep into what the workers run: study name, storage, budget, pruner, sweep folder."""
    _check_runnable(spec)
    base = base_config(spec, list(overrides), checkpoint)
    name = study or spec.name
    sweep_dir = Path(base.train.run_dir) / name
    block, notes = _single_objective_pruner(spec, resolve_pruner(spec, pruner, pruner_options, base.train.max_epochs))
    return LocalSweep(
        spec=spec, study=name, storage=storage or default_storage(sweep_dir), sweep_dir=sweep_dir,
        budget=trial_budget(spec, trials), pruner=block, overrides=list(overrides), seed=seed,
        checkpoint=checkpoint, heartbeat=heartbeat, max_retry=max_retry, verbose=verbose,
        device=base.train.device, notes=notes,
    )  # fmt: skip
