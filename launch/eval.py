"""`python -m launch eval`: decode a dataset split with a checkpoint, print its error rates, write one JSON line per clip."""

from __future__ import annotations

import json
from pathlib import Path

import click

from trainer.checkpoints import load_for_eval
from trainer.config import Config
from trainer.data import find_clips, read_video
from trainer.device import select_device, select_precision
from trainer.errors import DataError
from trainer.evaluate import evaluate, load_eval_set
from trainer.io import atomic_write_text


def already_cropped_size(cfg: Config) -> int | None:
    """The frame side when the dataset's first clip is already crop-sized (88 x 88): then no resize, else None."""
    side = cfg.augment.crop_size
    if cfg.data.image_size == side:
        return None
    clips, _ = find_clips(cfg.data.root)
    for clip in clips:
        try:
            frames = read_video(clip.video)
        except DataError:
            if cfg.data.skip_bad:  # the dataset loader lists it with the other bad clips
                continue
            raise
        return side if frames.shape[1:3] == (side, side) else None
    return None


@click.command("eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(path_type=Path),
    help="lipsweep checkpoint (best.pt, last.pt) or an auto_avsr state dict",
)
@click.option(
    "--config", "config_path", default=None, help="YAML config; default: the one saved in a lipsweep checkpoint"
)
@click.option("--data", "data_root", default=None, help="dataset folder or manifest (sets data.root)")
@click.option("--split", type=click.Choice(["val", "test", "all"]), default="val", show_default=True)
@click.option(
    "--decoder", "method", type=click.Choice(["beam", "ctc_greedy", "att_greedy"]), default="beam", show_default=True
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write one JSON line per clip here"
)
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def eval_command(
    checkpoint: Path,
    config_path: str | None,
    data_root: str | None,
    split: str,
    method: str,
    output: Path | None,
    quiet: bool,
    overrides: tuple[str, ...],
) -> None:
    """Decode a dataset split with CHECKPOINT and print its error rates (CER first), as training's validation does.

    OVERRIDES are dotted key=value pairs (decode.beam_size=10 decode.ctc_weight=0.3). Clips that are
    already crop-sized (88 x 88) are used as they are: the centre crop leaves them unchanged.
    """
    extra = [f"data.root={data_root}"] if data_root else []
    loaded = load_for_eval(checkpoint, config_path, [*extra, *overrides])
    cfg = loaded.cfg
    side = already_cropped_size(cfg)
    if side is not None:
        click.echo(f"clips are {side} x {side}, already cropped: data.image_size={side} (no resize)", err=True)
        cfg.data.image_size = side
    clips = load_eval_set(cfg, split)
    device = select_device(cfg.train.device)
    precision = select_precision(cfg.train.precision, device)
    out = evaluate(
        loaded.model.to(device), clips, cfg, device, precision, method=method, prefix=split, losses=False,
        progress=not quiet,
    )  # fmt: skip

    if output is not None:
        atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out.rows))
    n = len(out.rows)
    click.echo(f"{split}: {n} clips decoded with {method} in {out.seconds:.1f} s ({n / out.seconds:.1f} utt/s)")
    edits, tokens = sum(r["edits"] for r in out.rows), sum(r["ref_tokens"] for r in out.rows)
    for key, value in out.metrics.items():
        short = key.split("/", 1)[1]
        click.echo(
            f"{short:<15}{value:.4f}" + (f"  ({edits} edits / {tokens} reference tokens)" if short == "cer" else "")
        )
    if output is not None:
        click.echo(f"predictions: {output}")
