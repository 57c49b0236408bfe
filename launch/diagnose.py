"""`python -m launch diagnose RUN_DIR` (the user's checklist as a report) and `python -m launch sanity` (overfit 10 clips)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("diagnose")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="checkpoint whose validation decoding gives the worst clips and confusions")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="report folder (default: RUN_DIR/diagnose)")  # fmt: skip
@click.option("--worst-k", type=click.IntRange(min=1), default=10, show_default=True, help="worst clips shown")
@click.option("--decode/--no-decode", default=True, show_default=True,
              help="decode the validation split again with the checkpoint (needs the dataset); else use the run's CSVs")  # fmt: skip
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N (for decoding)")
def diagnose_command(run_dir: Path, checkpoint: str, out: Path | None, worst_k: int, decode: bool, device: str) -> None:
    """Diagnose a run: learning curves, fitting verdict, gradient flow, CTC vs joint CER, worst clips, confusions,
    hyperparameter sanity; writes report.md, report.html (which holds the plots) and the PNGs."""
    from analysis.diagnose import diagnose

    page = diagnose(run_dir, out, checkpoint=checkpoint, decode=decode, worst_k=worst_k, device=device)  # type: ignore[arg-type]
    click.echo(f"wrote {page} (open it in a browser) and {page.with_suffix('.md')}")


@click.command("sanity", context_settings={"ignore_unknown_options": True})
@click.option(
    "--config", "config_path", default="configs/small.yaml", show_default=True, help="YAML config (path or name)"
)
@click.option("--clips", type=click.IntRange(min=1), default=10, show_default=True, help="training clips to overfit")
@click.option("--frontend", type=click.Choice(["real", "noise", "linear"]), default="real", show_default=True,
              help="real: the model as configured; noise: noise instead of frames (must not learn); linear: a linear "
              "projection of each frame instead of the Conv3d + ResNet frontend")  # fmt: skip
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="optimizer steps")
@click.option(
    "--eval-every", type=click.IntRange(min=1), default=50, show_default=True, help="decode the clips every N steps"
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def sanity_command(
    config_path: str, clips: int, frontend: str, steps: int, eval_every: int, device: str, overrides: tuple[str, ...]
) -> None:
    """Overfit CLIPS training clips and say whether train CER reaches near zero (exit status 1 when the outcome is not
    the expected one: real/linear must learn, noise must not). OVERRIDES are dotted key=value pairs."""
    from analysis.sanity import run_sanity
    from trainer.config import load_config

    cfg = load_config(config_path, list(overrides))
    result = run_sanity(cfg, clips=clips, frontend=frontend, steps=steps, eval_every=eval_every, device=device)  # type: ignore[arg-type]
    click.echo(f"verdict ({result.seconds:.0f} s): {result.verdict}")
    if not result.ok:
        raise SystemExit(1)
