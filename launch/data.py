"""`python -m launch data ...`: check a dataset (and, from trainer.synthetic, write synthetic clips)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import click

from trainer.config import load_config
from trainer.data import BadClip, ClipData, find_clips, load_clips, unknown_report
from trainer.text import Tokenizer


@click.group("data")
def data_group() -> None:
    """Check datasets and write synthetic clips."""


def histogram(values: Sequence[int], max_rows: int = 24, width: int = 40) -> list[str]:
    """Text histogram: one row per value, or per bin when the values spread over more than `max_rows`."""
    if not values:
        return ["  (none)"]
    lo, hi = min(values), max(values)
    step = max(1, -(-(hi - lo + 1) // max_rows))
    counts = Counter((v - lo) // step for v in values)
    top = max(counts.values())
    rows = []
    for b in range((hi - lo) // step + 1):
        start = lo + b * step
        label = f"{start}" if step == 1 else f"{start}-{start + step - 1}"
        n = counts.get(b, 0)
        rows.append(f"  {label:>7} | {'#' * round(width * n / top):<{width}} {n}")
    return rows


def summary(name: str, values: Sequence[int]) -> str:
    if not values:
        return f"{name}: none"
    return f"{name}: min {min(values)}, mean {sum(values) / len(values):.2f}, max {max(values)}"


@data_group.command("check")
@click.argument("root", type=click.Path(exists=True, path_type=Path))
@click.argument("overrides", nargs=-1)
@click.option(
    "--config", "config_path", default=None, help="YAML config whose data section applies (path or name in configs/)"
)
@click.option("--top", default=30, show_default=True, help="how many of the most frequent tokens to list")
def data_check(root: Path, overrides: tuple[str, ...], config_path: str | None, top: int) -> None:
    """Check every clip of ROOT (a folder of clips or a manifest CSV) and report the bad ones.

    Prints clip count, frame-length and label-length histograms, token coverage and the most frequent
    tokens, then every bad clip with its reason. Exits with status 1 when any clip is bad.
    OVERRIDES are dotted data.* settings (data.max_frames=40).
    """
    cfg = load_config(config_path, [*overrides, f"data.root={root}"]).data
    tokenizer = Tokenizer.from_config(cfg)
    clips, bad = find_clips(root)
    unknown: Counter = Counter()
    good: list[ClipData] = []
    for item in load_clips(clips, cfg, tokenizer, unknown):
        if isinstance(item, BadClip):
            bad.append(item)
        else:
            good.append(replace(item, video=None))  # keep the numbers, not the frames
    frame_lengths = [c.length for c in good]
    label_lengths = [len(c.targets) for c in good]
    words = [len(c.text.split()) for c in good]
    tokens = Counter(i for c in good for i in c.targets)

    echo = click.echo
    echo(f"dataset: {root}")
    echo(f"clips: {len(good) + len(bad)} ({len(good)} good, {len(bad)} bad)")
    echo(summary("frames per clip", frame_lengths))
    for line in histogram(frame_lengths):
        echo(line)
    echo(summary("tokens per label", label_lengths))
    for line in histogram(label_lengths):
        echo(line)
    echo(summary("words per label", words))
    sizes = Counter(c.original_size for c in good)
    echo("frame sizes: " + ", ".join(f"{h}x{w}: {n}" for (h, w), n in sorted(sizes.items())))
    if any(s != (cfg.image_size, cfg.image_size) for s in sizes):
        echo(f"  clips not {cfg.image_size}x{cfg.image_size} are resized when the cache is built (data.image_size)")

    n_vocab = len(tokenizer.tokens)
    seen = [i for i in range(1, n_vocab + 1) if tokens[i]]
    echo(f"token coverage: {len(seen)} of {n_vocab} vocabulary tokens seen, {sum(tokens.values())} tokens in all")
    unseen = [tokenizer.token(i) for i in range(1, n_vocab + 1) if not tokens[i]]
    if unseen:
        more = f" ... and {len(unseen) - 60} more" if len(unseen) > 60 else ""
        echo(f"  never seen ({len(unseen)}): " + " ".join(unseen[:60]) + more)
    echo(f"top {min(top, len(tokens))} tokens:")
    for i, n in tokens.most_common(top):
        echo(f"  {tokenizer.token(i) if i != tokenizer.separator else '<sep>'}: {n}")
    if unknown:
        echo(unknown_report(unknown))

    if bad:
        echo(f"bad clips ({len(bad)}):")
        for b in bad:
            echo(f"  {b}")
        echo("Fix or remove them; training stops on bad clips unless data.skip_bad=true.")
        sys.exit(1)
    echo("no bad clips")
