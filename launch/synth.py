"""`python -m launch data synth`: write synthetic clips in the user's format."""

from __future__ import annotations

import time
from pathlib import Path

import click

from trainer.progress import Progress


@click.command("synth")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), required=True, help="folder to write the clips to"
)
@click.option("--clips", type=click.IntRange(min=1), default=800, show_default=True, help="number of clips")
@click.option("--seed", type=int, default=0, show_default=True, help="clip i depends only on (seed, i)")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["mp4", "npy"]),
    default="mp4",
    show_default=True,
    help="video files: H.264 .mp4 (gray, 25 fps) or .npy (T x 112 x 112 uint8)",
)
def synth_command(out: Path, clips: int, seed: int, fmt: str) -> None:
    """Write CLIPS synthetic clips as OUT/NNNNN.mp4 (or .npy) + OUT/NNNNN.csv (header `word`, a word a row)."""
    from trainer.synthetic import write_dataset

    start = time.perf_counter()
    with Progress(clips, "data synth", log=lambda line: click.echo(line, err=True)) as progress:
        paths = write_dataset(out, clips, seed=seed, fmt=fmt, on_clip=lambda _: progress.update())
    click.echo(f"wrote {len(paths)} clips to {out} in {time.perf_counter() - start:.1f} s")
