"""`python -m launch train` (every run and sweep trial) and `python -m launch demo`."""

from __future__ import annotations

from pathlib import Path

import click

from trainer.config import load_config


@click.command("train", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--config",
    "config_path",
    default="configs/small.yaml",
    show_default=True,
    help="YAML config (path or name in configs/)",
)
@click.option("--data", "data_root", default=None, help="dataset folder or manifest (sets data.root)")
@click.option("--name", default=None, help="run folder name under train.run_dir (default: time + random suffix)")
@click.option(
    "--resume",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="run folder to continue from its last.pt",
)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def train_command(
    config_path: str, data_root: str | None, name: str | None, resume: Path | None, overrides: tuple[str, ...]
) -> None:
    """Train one run. OVERRIDES are dotted key=value pairs (optim.lr=3e-4); W&B's --key=value form works too."""
    from launch.engine.wandb_agent import pruning_from_env
    from trainer.train import train

    extra = [f"data.root={data_root}"] if data_root else []
    cfg = load_config(config_path, [*extra, *overrides])
    prune = pruning_from_env()  # under `sweep agent --prune-storage`: a shared Optuna study decides
    result = train(cfg, name=name, resume=resume, prune=prune)
    if prune is not None:
        prune.finish(result)
    if result.state == "failed":
        raise SystemExit(1)
