"""`sweep create`: the config W&B receives (built-in methods, or its Optuna engine with our factory), and the
YAMLs kept beside the sweep id under `<train.run_dir>/wandb_sweeps/<id>/` (as written and as sent)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launch.engine.login import require_login
from launch.engine.spec import SweepError, SweepSpec, check_sweep
from trainer import config as config_mod
from trainer.errors import ConfigError, UserError

RECORDS = "wandb_sweeps"  # <train.run_dir>/wandb_sweeps/<sweep id>/: the YAML as written and as sent
ENGINES = ("wandb", "optuna")  # W&B's built-in methods (+ hyperband), or its Optuna engine with our study factory
SOURCE = "launch/engine/wandb_scheduler.py"  # the factory's file, relative to the project root
FACTORY = "make_study"


@dataclass
class CreatedSweep:
    sweep_id: str
    entity: str | None
    project: str
    record_dir: Path
    config: dict[str, Any] | None = None  # as sent

    @property
    def path(self) -> str:
        return "/".join(p for p in (self.entity, self.project, self.sweep_id) if p)


def scheduler_config(spec: SweepSpec) -> dict[str, Any]:
    """The config W&B receives for its Optuna engine: method custom, the project's factory, no project-only keys.

    `early_terminate` goes (W&B refuses it beside a scheduler): the factory builds the same hyperband
    pruner from it that `sweep local` does. A YAML that already has a scheduler block keeps it.
    """
    config = spec.wandb_config()
    sched = config.get("scheduler")
    if sched is not None:
        if sched.get("engine") != "optuna":
            raise ConfigError(
                f"{spec.path}: scheduler.engine is {sched.get('engine')}; --engine optuna needs engine optuna or no scheduler block"
            )
        return config
    config.pop("early_terminate", None)
    config["method"] = "custom"
    config["scheduler"] = {"engine": "optuna", "source": SOURCE, "optimizer": FACTORY}
    return config


def sent_config(spec: SweepSpec, engine: str = "wandb") -> dict[str, Any]:
    """The config W&B receives: project-only keys stripped; for engine optuna (or a YAML with a scheduler
    block) method custom and the scheduler block naming the project's study factory."""
    if engine not in ENGINES:
        raise UserError(f"--engine {engine}: one of {', '.join(ENGINES)}")
    if engine == "optuna" or spec.raw.get("scheduler"):
        return scheduler_config(spec)
    return spec.wandb_config()


def create_sweep(
    spec: SweepSpec,
    project: str | None = None,
    entity: str | None = None,
    send: Callable[..., str] | None = None,
    records: Path | None = None,
    engine: str = "wandb",
) -> CreatedSweep:
    """Create the W&B sweep from a validated spec (see `sent_config`); keep both YAMLs under `records`.

    `send` is `wandb.sweep` (tests pass a fake); `records` defaults to <train.run_dir>/wandb_sweeps.
    The config sent is validated again first (a refused key would otherwise reach W&B).
    """
    cfg = config_mod.load_config(spec.base_config, spec.command_overrides)
    config = sent_config(spec, engine)
    problems = check_sweep(SweepSpec(config, spec.path))
    if problems:
        raise SweepError(f"{spec.path} as sent to W&B", problems)
    project = project or config.get("project") or cfg.tracking.project
    entity = entity or config.get("entity") or cfg.tracking.entity or None
    if send is None:
        require_login("sweep create")
        import wandb

        send = wandb.sweep
    sweep_id = send(config, entity=entity, project=project)
    record = Path(records or Path(cfg.train.run_dir) / RECORDS) / sweep_id
    record.mkdir(parents=True, exist_ok=True)
    (record / "sweep.yaml").write_text(yaml.safe_dump(spec.raw, sort_keys=False, allow_unicode=True), encoding="utf-8")
    (record / "sent.yaml").write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return CreatedSweep(sweep_id, entity, project, record, config)


def find_record(sweep_id: str, run_dir: str = "runs") -> Path | None:
    """The YAML `create` kept for a sweep id (`ID`, `project/ID` or `entity/project/ID`)."""
    path = Path(run_dir) / RECORDS / sweep_id.rsplit("/", 1)[-1] / "sweep.yaml"
    return path if path.exists() else None
