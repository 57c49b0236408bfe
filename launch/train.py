"""`python -m launch train`: one run (every sweep trial is one too), or `--resume RUN` to continue one."""

from __future__ import annotations

import shlex
from pathlib import Path

import click

import trainer.train as training
from launch.engine.wandb_agent import pruning_from_env
from trainer.checkpoints import resume_config
from trainer.config import load_config
from trainer.errors import UserError

DEFAULT_CONFIG = "configs/small.yaml"


@click.command("train", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--config",
    "config_path",
    default=None,
    help=f"YAML config (path or name in configs/; default {DEFAULT_CONFIG}); beside --resume it must match the run",
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
    config_path: str | None, data_root: str | None, name: str | None, resume: Path | None, overrides: tuple[str, ...]
) -> None:
    """Train one run. OVERRIDES are dotted key=value pairs (optim.lr=3e-4); W&B's --key=value form works too.

    With --resume RUN the run continues from RUN/checkpoints/last.pt with its own config. OVERRIDES may then
    change how long it runs and when it stops (train.max_epochs, train.max_minutes, train.patience,
    train.val_every, ...), decode.* and tracking.*, recorded in RUN/config.yaml; any other change is refused.
    """
    extra = [f"data.root={data_root}"] if data_root else []
    if resume is None:
        cfg = load_config(config_path or DEFAULT_CONFIG, [*extra, *overrides])
    elif name is not None:
        raise UserError(f"--name names a new run; --resume continues {resume} in its own folder: drop one of them")
    else:
        cfg = resume_config(resume, config_path, [*extra, *overrides])
    prune = pruning_from_env()  # under `sweep agent --prune-storage`: a shared Optuna study decides
    from analysis.plots import run_plots  # matplotlib: loaded only when a run is trained

    result = training.train(cfg, name=name, resume=resume, prune=prune, on_finish=run_plots)
    if prune is not None:
        prune.finish(result)
    if result.state == "stopped":
        click.echo(f"to continue this run: python -m launch train --resume {shlex.quote(str(result.run_dir))}")
    if result.state == "failed":
        raise SystemExit(1)
