"""`python -m launch demo`: synthetic clips if absent, `sweeps/demo.yaml` run locally with its pruner, ranked, best exported.

The design (measured in the README, "The demo"): 800 clips (640 train / 80 val), a grid of 8 trials
of up to 20 epochs, successive halving at epochs 4 and 12, two workers of one thread each on a
two-core machine (two single-thread trainings do more work per second than one on two threads).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from trainer.config import PROJECT_ROOT

DEMO_SWEEP = PROJECT_ROOT / "sweeps" / "demo.yaml"
DEMO_CLIPS = 800  # as `data synth`: 640 training clips are what the small model needs to read the mouths
LEARNED = ("val/cer", "val/cer_baseline", "val/distinct", "val/cer_ctc_greedy")  # the best epoch's evidence


def wandb_offline_error(folder: Path) -> str | None:
    """None when an offline W&B run can be written here, else why not."""
    try:
        import wandb

        run = wandb.init(
            mode="offline", dir=str(folder), project="lipsweep-demo", name="offline-check", reinit="finish_previous"
        )
        run.finish()
    except Exception as e:  # any failure means: run the demo without W&B, and say so
        return f"{type(e).__name__}: {e}"
    return None


def ensure_dataset(root: Path, clips: int, seed: int = 0) -> None:
    """Write `clips` synthetic clips to `root` unless it already holds clips."""
    if root.exists() and any(root.glob("*.csv")):
        click.echo(f"data: {root} exists ({sum(1 for _ in root.glob('*.csv'))} clips)")
        return
    from trainer.synthetic import write_dataset

    started = time.monotonic()
    click.echo(f"data: writing {clips} synthetic clips to {root} ...")
    write_dataset(root, clips, seed=seed)
    click.echo(f"data: {clips} clips in {time.monotonic() - started:.0f} s")


def build_data_cache(base_config: str, overrides: list[str]) -> str:
    """Decode the clips into the data cache once, before the workers start (else each would decode them); the split."""
    from trainer.config import load_config
    from trainer.data import load_dataset
    from trainer.text import Tokenizer

    cfg = load_config(base_config, overrides)
    data = load_dataset(cfg.data, Tokenizer.from_config(cfg.data), lambda message: click.echo(f"data: {message}"))
    split = data.split(cfg.data)
    return ", ".join(f"{len(split[part])} {part}" for part in ("train", "val", "test"))


def rank_and_export(storage: str, study: str, sweep_dir: Path) -> tuple[Path | None, Path]:
    """Print the ranking with its intervals, ties and collapse marks; write the best run's config as
    `<sweep folder>/best.yaml` unless export-best refuses it (collapsed: then None); return it and the best run."""
    from analysis.export import ExportRefused, export_best
    from analysis.rank import best_run, format_table, rank_table, ranking_notes
    from analysis.runs import load_runs

    table = load_runs(f"optuna://{storage}?study={study}", sweep_yaml=DEMO_SWEEP)
    ranked = rank_table(table)
    click.echo(format_table(ranked, "table"), nl=False)
    for note in ranking_notes(ranked):
        click.echo(note)
    best_dir = Path(best_run(table)["location"])
    try:
        return export_best(table, sweep_dir / "best.yaml"), best_dir
    except ExportRefused as e:
        click.echo(f"not exported: {e}")
        return None, best_dir


def learned_line(run_dir: Path) -> str:
    """What the best run's best epoch shows: its CER beside the constant baseline's, and how many outputs differ."""
    from trainer.metrics import best_row
    from trainer.tracking import read_metrics

    rows = read_metrics(run_dir)
    row: dict[str, Any] = best_row(rows, "val/cer") or {}
    shown = [f"{key} {row[key]:.4f}" for key in LEARNED if isinstance(row.get(key), (int, float))]
    missing = [key for key in LEARNED if key not in row]
    epochs = max((int(r["epoch"]) for r in rows), default=0)
    return (
        f"{run_dir.name} at epoch {row.get('epoch', '?')} of {epochs}: "
        + ", ".join(shown)
        + (f" (not logged: {', '.join(missing)})" if missing else "")
    )


@click.command("demo", context_settings={"ignore_unknown_options": True})
@click.option(
    "--data", "data_root", default="data/synthetic", show_default=True, help="synthetic clips (written if absent)"
)
@click.option("--clips", type=click.IntRange(min=20), default=DEMO_CLIPS, show_default=True,
              help="clips to write when absent")  # fmt: skip
@click.option("--trials", type=click.IntRange(min=1), default=8, show_default=True, help="trials of sweeps/demo.yaml")
@click.option("--workers", type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1), show_default=True,
              help="trials run at once, each on cpus/workers threads")  # fmt: skip
@click.option("--pruner", type=click.Choice(["median", "percentile", "halving", "hyperband", "patient", "none"]), default=None,
              help="default: the YAML's (successive halving)")  # fmt: skip
@click.option("--wandb", "wandb_mode", type=click.Choice(["offline", "disabled"]), default="offline", show_default=True)
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def demo_command(
    data_root: str,
    clips: int,
    trials: int,
    workers: int,
    pruner: str | None,
    wandb_mode: str,
    overrides: tuple[str, ...],
) -> None:
    """The whole loop on synthetic data: clips, a pruned local sweep, the ranking, the best config exported."""
    from launch.engine.local import run_local_sweep
    from launch.engine.plan import prepare
    from launch.engine.progress import header
    from launch.engine.trials import trial_rows
    from launch.sweep import validated
    from trainer.config import load_config

    started = time.monotonic()
    root = Path(data_root)
    ensure_dataset(root, clips)
    run_dir = Path(load_config(None, list(overrides)).train.run_dir)
    if wandb_mode == "offline":
        run_dir.mkdir(parents=True, exist_ok=True)
        error = wandb_offline_error(run_dir)
        if error:
            click.echo(f"note: W&B offline runs cannot be written here ({error}); the demo runs with tracking disabled")
            wandb_mode = "disabled"
    extra = [f"data.root={root}", f"tracking.wandb={wandb_mode}", *overrides]
    spec = validated(str(DEMO_SWEEP), extra)
    click.echo(f"data: split {build_data_cache(spec.base_config, [*spec.command_overrides, *extra])} clips")
    study = "demo-" + time.strftime("%Y%m%d-%H%M%S")
    sweep = prepare(spec, trials=trials, study=study, overrides=extra, pruner=pruner)
    click.echo(f"{header(sweep, workers)}, W&B {wandb_mode}")
    click.echo(f"storage {sweep.storage}; run folders under {sweep.sweep_dir}")
    result = run_local_sweep(sweep, workers=workers)
    rows = trial_rows(result)
    epochs = sum(r["epochs"] or 0 for r in rows)
    pruned = sum(r["state"] == "pruned" for r in rows)
    click.echo(f"\n{len(rows)} trials ({pruned} pruned), {epochs} epochs in all, {time.monotonic() - started:.0f} s")
    best, best_dir = rank_and_export(sweep.storage, study, sweep.sweep_dir)
    from analysis.diagnose import diagnose

    report = diagnose(best_dir, best_dir / "diagnose")
    click.echo(f"\nbest run: {learned_line(best_dir)}")
    if best is not None:
        click.echo(f"best config: {best}\n  train it:   python -m launch train --config {best}")
    click.echo(f"  diagnosis of the best run: {report}")
    click.echo(f"  the runs:   python -m launch runs rank {sweep.sweep_dir}")
    click.echo(f"  over seeds: python -m launch sweep confirm {sweep.sweep_dir} --top 2 --seeds 3 --workers 2"
               "   # one seed a trial: is the best one lucky?")  # fmt: skip
    if wandb_mode == "offline":
        click.echo(f"  to W&B:     wandb sync {sweep.sweep_dir}/*/wandb/offline-run-*")
    click.echo(f"demo done in {time.monotonic() - started:.0f} s")
    if best is None:  # the sweep found nothing that reads the frames: a failed demo, said so by the exit status
        raise SystemExit(1)
