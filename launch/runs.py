"""`python -m launch runs rank|compare|export-best SOURCE`: the runs of a sweep from W&B, Optuna or run folders."""

from __future__ import annotations

from pathlib import Path

import click

SOURCE_HELP = (
    "SOURCE: a folder of run folders (runs/), optuna://URL?study=NAME (e.g. optuna://sqlite:///runs/lr/study.db?study=lr, "
    "or the .db file itself), or wandb://entity/project[/sweep_id] (W&B's public API; needs `wandb login`)."
)

BY_HELP = (
    "metric to rank by: any metric lipsweep logs (val/cer, val/cer_ctc_greedy, val/distinct, train/loss, ...) or its "
    "short column name (cer, cer_ctc, ...), or a numeric column of the table; the metric's goal sets the direction"
)


def needs_login(source: str, command: str) -> None:
    """A W&B source needs a login: a clear error instead of W&B's prompt or traceback."""
    if source.startswith("wandb://"):
        from launch.engine.login import require_login

        require_login(f"runs {command}")


@click.group("runs")
def runs_group() -> None:
    """Rank, compare and export the runs of a sweep (W&B, Optuna or local run folders)."""


@runs_group.command("rank", epilog=SOURCE_HELP)
@click.argument("source")
@click.option("--top", type=click.IntRange(min=1), default=None, help="show only the best K runs")
@click.option("--by", default="val/cer", show_default=True, help=BY_HELP)
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "markdown"]), default="table", show_default=True)
@click.option("--wide", is_flag=True, help="every column (table and markdown fit 120 columns by default; csv has all)")
@click.option("--sweep", "sweep_yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="sweep YAML whose parameters are the swept ones (default: config keys that differ between runs)")  # fmt: skip
@click.option("--pareto", "pareto", default=None,
              help="mark the Pareto-optimal runs on these metrics, e.g. val/cer,time/epoch_s (`:max` for a goal to "
                   "maximize); default: the sweep YAML's metrics: when it has several")  # fmt: skip
def rank_command(
    source: str, top: int | None, by: str, fmt: str, wide: bool, sweep_yaml: Path | None, pareto: str | None
) -> None:
    """Print the runs of SOURCE ranked by --by (best val/cer): ties share a rank, failed runs come last; for runs with
    validation predictions, the 95% bootstrap interval and whether each is tied with the best; collapsed runs marked."""
    from analysis.rank import parse_objectives, rank_table, ranking_notes, sweep_objectives, with_pareto
    from analysis.runs import SWEEP_COPY, load_runs
    from analysis.tables import format_table

    needs_login(source, "rank")
    table = load_runs(source, sweep_yaml=sweep_yaml)
    objectives = parse_objectives(pareto) if pareto else None
    kept = sweep_yaml or (Path(source) / SWEEP_COPY if (Path(source) / SWEEP_COPY).is_file() else None)
    if objectives is None and kept is not None:
        objectives = sweep_objectives(kept)
    if objectives:
        table = with_pareto(table, objectives, source)
    ranked = rank_table(table, by, top=top)
    click.echo(format_table(ranked, fmt, wide=wide), nl=False)
    for note in ranking_notes(ranked):
        click.echo(note, err=fmt == "csv")
    if objectives:
        names = ", ".join(f"{n} ({g})" for n, g in objectives)
        click.echo(f"pareto: {int(ranked['pareto'].sum())} run(s) no other run beats on {names}")


@runs_group.command("compare", epilog=SOURCE_HELP)
@click.argument("source")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True, help="runs whose curves are overlaid")
@click.option("--by", default="val/cer", show_default=True, help=BY_HELP)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="folder for the PNGs and report"
)
@click.option("--sweep", "sweep_yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="sweep YAML whose parameters are the swept ones")  # fmt: skip
def compare_command(source: str, top: int, by: str, out: Path, sweep_yaml: Path | None) -> None:
    """Learning curves of the top runs, parameter vs val/cer scatters, parallel coordinates and parameter importance."""
    from analysis.compare import compare
    from analysis.runs import load_runs

    needs_login(source, "compare")
    page = compare(load_runs(source, sweep_yaml=sweep_yaml), out, top=top, by=by)
    click.echo(f"wrote {page} and {page.with_suffix('.md')} with their PNGs in {out}")


@runs_group.command("export-best", epilog=SOURCE_HELP + " Or a `sweep confirm` folder (its confirm.csv).")
@click.argument("source")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("configs/best.yaml"), show_default=True
)
@click.option("--by", default="val/cer", show_default=True, help=BY_HELP)
@click.option("--force", is_flag=True, help="export even a collapsed run (one output for most clips, or no better "
              "than the best constant output)")  # fmt: skip
def export_best_command(source: str, out: Path, by: str, force: bool) -> None:
    """Write the best run's resolved config as a YAML that `python -m launch train --config OUT` takes as it is;
    from a confirm folder, the config with the best mean over its seeds. Exit status 1 when the best is collapsed
    (without --force)."""
    from analysis.export import ExportRefused, export_best

    try:
        needs_login(source, "export-best")
        path = export_best(source, out, by=by, force=force)
    except ExportRefused as e:
        click.echo(f"refused: {e}", err=True)
        raise SystemExit(1) from None
    click.echo(f"wrote {path}; train it with: python -m launch train --config {path}")
