"""`python -m launch sweep ...`: validate, create, agent, scheduler, local, confirm. Every command given a sweep YAML validates it first."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from launch.engine.login import require_login
from launch.engine.pruners import PRUNER_NAMES
from launch.engine.spec import SweepSpec, check_sweep, describe, load_sweep
from trainer.errors import UserError


def _checkpoint_config(checkpoint: str | None):
    if not checkpoint:
        return None
    from trainer.checkpoints import load_checkpoint
    from trainer.config import config_from_dict

    return config_from_dict(load_checkpoint(Path(checkpoint))["config"])


def validated(path: str, overrides: tuple[str, ...] | list[str] = (), checkpoint: str | None = None) -> SweepSpec:
    """Load and check a sweep YAML; on problems print each on its own line and exit 1."""
    spec = load_sweep(path)
    problems = check_sweep(spec, list(overrides), checkpoint_config=_checkpoint_config(checkpoint))
    if problems:
        for p in problems:
            click.echo(f"{path}: {p}", err=True)
        click.echo(f"{path}: {len(problems)} problem(s)", err=True)
        sys.exit(1)
    return spec


@click.group("sweep")
def sweep_group() -> None:
    """Sweep YAMLs (W&B's format, dotted config keys): validate, create on W&B, run agents, or run locally with Optuna."""


@sweep_group.command("validate")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--checkpoint", default=None, help="validate as a decoding sweep on this trained checkpoint")
@click.argument("overrides", nargs=-1)
def validate_command(sweep_file: str, checkpoint: str | None, overrides: tuple[str, ...]) -> None:
    """Check SWEEP_FILE against W&B's sweep schema, the config keys, their types and ranges, and the command."""
    spec = validated(sweep_file, overrides, checkpoint)
    click.echo(f"{sweep_file}: ok: {describe(spec)}")


@sweep_group.command("create")
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option("--project", default=None, help="W&B project (default: the YAML's, else tracking.project)")
@click.option("--entity", default=None, help="W&B entity (default: the YAML's, else tracking.entity, else yours)")
@click.option("--engine", type=click.Choice(["wandb", "optuna"]), default=None,
              help="wandb: W&B's built-in methods (+ hyperband); optuna: W&B's Optuna engine with the project's study "
                   "factory, run by `sweep scheduler` (default: optuna when the YAML has a scheduler block)")  # fmt: skip
def create_command(sweep_file: str, project: str | None, entity: str | None, engine: str | None) -> None:
    """Create the W&B sweep (base_config/pruner stripped, kept beside the id) and print the commands to run."""
    from launch.engine.wandb_create import create_sweep

    spec = validated(sweep_file)
    engine = engine or ("optuna" if spec.raw.get("scheduler") else "wandb")
    created = create_sweep(spec, project=project, entity=entity, engine=engine)
    click.echo(f"sweep {created.path} created; the YAML as written and as sent: {created.record_dir}")
    if engine == "optuna":
        click.echo("1. the scheduler (one process, on your machine, from this folder; it samples and prunes):")
        click.echo(
            f"  python -m launch sweep scheduler {created.path}  [--storage sqlite:///runs/{created.sweep_id}-study.db]"
        )
        click.echo("2. the agents (plain W&B agents, one process per run, K per GPU):")
        click.echo(f"  python -m launch sweep agent {created.path} --gpus 0 --per-gpu 1")
        click.echo(f"  or: wandb agent {created.path}")
        return
    click.echo("run agents (one process per run, K per GPU):")
    click.echo(f"  python -m launch sweep agent {created.path} --gpus 0 --per-gpu 1")
    if spec.pruner:
        click.echo(
            f"  (with the YAML's {spec.pruner['type']} pruner: add --prune-storage sqlite:///runs/{created.sweep_id}-pruning.db)"
        )
    click.echo("or W&B's own agent, anywhere this project is installed:")
    click.echo(f"  wandb agent {created.path}")


@sweep_group.command("scheduler")
@click.argument("sweep_id")
@click.option("--storage", default=None,
              help="Optuna storage URL for the study (e.g. sqlite:///runs/ID-study.db): a restarted scheduler continues "
                   "it, pruning history included (default: in memory; a restart rebuilds it from W&B's finished runs)")  # fmt: skip
@click.option("--sweep-file", default=None, help="the sweep YAML as written (default: the one `sweep create` kept)")
@click.option("--entity", default=None, help="W&B entity (default: from SWEEP_ID, else yours)")
@click.option("--project", default=None, help="W&B project (default: from SWEEP_ID, else wandb's default)")
@click.option("--batch-size", type=click.IntRange(min=1), default=10, show_default=True, help="runs kept in flight")
@click.option(
    "--poll-interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True, help="seconds between polls"
)
@click.option("--seed", type=int, default=0, show_default=True, help="sampler seed (a restart adds the trials so far)")
def scheduler_command(
    sweep_id: str, storage: str | None, sweep_file: str | None, entity: str | None, project: str | None,
    batch_size: int, poll_interval: float, seed: int,
) -> None:  # fmt: skip
    """Run W&B's sweep scheduler for SWEEP_ID (`wandb sweep-scheduler`) with the project's Optuna study factory."""
    from launch.engine.wandb_scheduler import run_scheduler

    if sweep_file:
        validated(sweep_file)
    click.echo(f"scheduler for {sweep_id}: study storage {storage or 'in memory'}; Ctrl-C once stops it cleanly")
    run_scheduler(
        sweep_id, storage=storage, sweep_file=sweep_file, entity=entity, project=project,
        batch_size=batch_size, poll_interval=poll_interval, seed=seed,
    )  # fmt: skip


@sweep_group.command("agent")
@click.argument("sweep_id")
@click.option(
    "--count", type=click.IntRange(min=1), default=None, help="runs per agent (default: until the sweep ends)"
)
@click.option("--gpus", default=None, help="comma-separated GPU ids, one group of agents each (default: no pinning)")
@click.option(
    "--per-gpu", type=click.IntRange(min=1), default=1, show_default=True, help="agents (runs at a time) per GPU"
)
@click.option(
    "--prune-storage", default=None, help="Optuna storage URL of a study shared by the runs, used only for pruning"
)
@click.option("--pruner", type=click.Choice(PRUNER_NAMES), default=None)
@click.option("--pruner-opt", "pruner_opts", multiple=True, help="pruner option key=value (repeatable)")
@click.option("--sweep-file", default=None, help="the sweep YAML (default: the one `sweep create` kept for this id)")
def agent_command(
    sweep_id: str, count: int | None, gpus: str | None, per_gpu: int, prune_storage: str | None,
    pruner: str | None, pruner_opts: tuple[str, ...], sweep_file: str | None,
) -> None:  # fmt: skip
    """Run W&B agents for SWEEP_ID: one process per run, pinned with CUDA_VISIBLE_DEVICES, PER_GPU at a time per GPU."""
    from launch.engine.study import resolve_pruner
    from launch.engine.wandb_agent import prune_settings, run_agents
    from launch.engine.wandb_create import find_record

    path = sweep_file or find_record(sweep_id)
    spec = validated(str(path)) if path else None
    if spec is None:
        click.echo(
            f"note: no sweep YAML kept for {sweep_id} under runs/wandb_sweeps; W&B checked it when it was created"
        )
    prune = None
    if prune_storage:
        if spec is None:
            raise UserError("--prune-storage needs the sweep's YAML for its metric and pruner: pass --sweep-file")
        from trainer.config import load_config

        max_epochs = load_config(spec.base_config, spec.command_overrides).train.max_epochs
        block = resolve_pruner(spec, pruner, pruner_opts, max_epochs)
        prune = prune_settings(spec, prune_storage, f"{sweep_id.rsplit('/', 1)[-1]}-pruning", block)
        click.echo(f"pruning: {block} on {prune_storage}")
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else [None]
    codes = run_agents(sweep_id, count=count, gpus=gpu_list, per_gpu=per_gpu, prune=prune)
    failed = {k: v for k, v in codes.items() if v and v[-1] != 0}
    if failed:
        raise SystemExit(1)


@sweep_group.command("local", context_settings={"ignore_unknown_options": True})
@click.argument("sweep_file", type=click.Path(dir_okay=False))
@click.option(
    "--trials", type=click.IntRange(min=1), default=None, help="trials in all (default: run_cap, or the whole grid)"
)
@click.option(
    "--storage", default=None, help="SQLAlchemy URL or journal:PATH (default: sqlite under <train.run_dir>/<study>/)"
)
@click.option("--study", "study_name", default=None, help="study name (default: the YAML's name, else its file stem)")
@click.option(
    "--workers", type=click.IntRange(min=1), default=1, show_default=True, help="worker processes on this machine"
)
@click.option("--data", "data_root", default=None, help="dataset folder or manifest (sets data.root)")
@click.option("--pruner", type=click.Choice(PRUNER_NAMES), default=None,
              help="default: the YAML's pruner: block, else its early_terminate, else none")  # fmt: skip
@click.option(
    "--pruner-opt", "pruner_opts", multiple=True, help="pruner option key=value (repeatable), e.g. n_warmup_steps=2"
)
@click.option(
    "--checkpoint", default=None, help="decoding sweep: evaluate each trial's decode.* settings on this checkpoint"
)
@click.option("--seed", type=int, default=0, show_default=True, help="sampler seed (worker i uses seed + i)")
@click.option(
    "--heartbeat",
    type=click.IntRange(min=0),
    default=60,
    show_default=True,
    help="seconds; a trial silent for 3x this is retried",
)
@click.option(
    "--max-retry", type=click.IntRange(min=0), default=2, show_default=True, help="retries of a dead worker's trial"
)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def local_command(
    sweep_file: str, trials: int | None, storage: str | None, study_name: str | None, workers: int, data_root: str | None,
    pruner: str | None, pruner_opts: tuple[str, ...], checkpoint: str | None, seed: int, heartbeat: int, max_retry: int,
    overrides: tuple[str, ...],
) -> None:  # fmt: skip
    """Run SWEEP_FILE with Optuna, no W&B server needed. OVERRIDES (key=value) apply to every trial."""
    from launch.engine.local import run_local_sweep
    from launch.engine.plan import prepare
    from launch.engine.progress import final_table, header

    extra = [*([f"data.root={data_root}"] if data_root else []), *overrides]
    spec = validated(sweep_file, extra, checkpoint)
    sweep = prepare(
        spec, trials=trials, storage=storage, study=study_name, overrides=extra, pruner=pruner,
        pruner_options=pruner_opts, checkpoint=checkpoint, seed=seed, heartbeat=heartbeat, max_retry=max_retry,
        verbose=workers == 1,
    )  # fmt: skip
    click.echo(header(sweep, workers))
    for note in sweep.notes:
        click.echo(f"note: {note}")
    click.echo(f"storage {sweep.storage}; run folders under {sweep.sweep_dir}")
    run_local_sweep(sweep, workers=workers)
    click.echo(final_table(sweep), nl=False)


@sweep_group.command("confirm", context_settings={"ignore_unknown_options": True})
@click.argument("source")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True, help="how many of the best configs")
@click.option("--seeds", type=click.IntRange(min=2), default=3, show_default=True,
              help="training seeds per config: train.seed = the source run's seed + 1 ... + N (same data split)")  # fmt: skip
@click.option("--by", default=None, help="metric to rank by (default: the source sweep's metric, else val/cer)")
@click.option("--data", "data_root", default=None, help="dataset folder or manifest (sets data.root)")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True, help="worker processes")
@click.option("--storage", default=None,
              help="SQLAlchemy URL or journal:PATH (default: sqlite under <train.run_dir>/<sweep>-confirm/)")  # fmt: skip
@click.option("--heartbeat", type=click.IntRange(min=0), default=60, show_default=True,
              help="seconds; a killed seed is retried from its last.pt after 3x this")  # fmt: skip
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def confirm_command(
    source: str, top: int, seeds: int, by: str | None, data_root: str | None, workers: int, storage: str | None,
    heartbeat: int, overrides: tuple[str, ...],
) -> None:  # fmt: skip
    """Re-train the TOP best configs of SOURCE (as `runs rank` takes it) with SEEDS training seeds each; rank them by
    their mean and say which differences are within the seeds' noise. Rerunning the command continues it."""
    from analysis.tables import format_table
    from launch.engine.confirm import NOISE_RULE, confirm_table, prepare_confirm, write_table
    from launch.engine.local import run_local_sweep

    if source.startswith("wandb://"):
        require_login("sweep confirm of a W&B sweep")
    extra = [*([f"data.root={data_root}"] if data_root else []), *overrides]
    sweep = prepare_confirm(
        source, top=top, seeds=seeds, by=by, overrides=extra, storage=storage, heartbeat=heartbeat,
        verbose=workers == 1,
    )  # fmt: skip
    click.echo(f"confirm {sweep.study}: {len(sweep.configs)} config(s) of {source} by {sweep.spec.metric}, "
               f"{seeds} seeds each ({sweep.budget} runs), {workers} worker(s)")  # fmt: skip
    for note in sweep.notes:
        click.echo(f"note: {note}")
    click.echo(f"storage {sweep.storage}; run folders under {sweep.sweep_dir}")
    table = confirm_table(sweep, run_local_sweep(sweep, workers=workers))
    click.echo(format_table(table), nl=False)
    click.echo(f"within_noise: {NOISE_RULE}")
    click.echo(f"wrote {write_table(sweep, table)}")
