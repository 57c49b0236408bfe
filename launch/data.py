"""`python -m launch data ...`: check a dataset (and, from trainer.synthetic, write synthetic clips)."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from trainer.config import load_config
from trainer.data import BadClip, open_cache
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
    tokens, the dataset's warnings, then every bad clip with its reason. Exits with status 1 when any
    clip is bad. It builds the data cache that `train` with the same --config and data.* settings then
    reuses (or reads the one a run built). OVERRIDES are dotted data.* settings (data.max_frames=40).
    """
    cfg = load_config(config_path, [*overrides, f"data.root={root}"]).data
    tokenizer = Tokenizer.from_config(cfg)
    folder, index, built = open_cache(cfg, tokenizer, log=lambda line: click.echo(line, err=True))
    bad = [BadClip(f, r) for f, r in index["skipped"]]
    echo = click.echo
    echo(f"dataset: {root}")
    echo(f"clips: {len(index['ids']) + len(bad)} ({len(index['ids'])} good, {len(bad)} bad)")
    print_lengths(index)
    sizes = Counter(tuple(s) for s in index["sizes"])
    echo("frame sizes: " + ", ".join(f"{h}x{w}: {n}" for (h, w), n in sorted(sizes.items())))
    if any(s != (cfg.image_size, cfg.image_size) for s in sizes):
        echo(f"  clips not {cfg.image_size}x{cfg.image_size} are resized in the cache (data.image_size)")
    print_tokens(index["targets"], tokenizer, top)
    for note in index["notes"]:
        echo(note)
    if (folder / "index.json").exists():
        echo(f"cache: {folder} ({'built now' if built else 'already built'}; train reuses it)")
    else:
        echo("cache: not written (bad clips): fix them, or check with data.skip_bad=true to write it without them")
    if bad:
        echo(f"bad clips ({len(bad)}):")
        for b in bad:
            echo(f"  {b}")
        echo("Fix or remove them; training stops on bad clips unless data.skip_bad=true.")
        sys.exit(1)
    echo("no bad clips")


def print_lengths(index: dict[str, Any]) -> None:
    """Histograms of frames per clip and tokens per label, and words per label."""
    frame_lengths, label_lengths = index["lengths"], [len(t) for t in index["targets"]]
    click.echo(summary("frames per clip", frame_lengths))
    for line in histogram(frame_lengths):
        click.echo(line)
    click.echo(summary("tokens per label", label_lengths))
    for line in histogram(label_lengths):
        click.echo(line)
    click.echo(summary("words per label", [len(text.split()) for text in index["texts"]]))


def print_tokens(targets: Sequence[Sequence[int]], tokenizer: Tokenizer, top: int) -> None:
    """Vocabulary coverage, the tokens never seen and the most frequent ones."""
    tokens = Counter(i for t in targets for i in t)
    n_vocab = len(tokenizer.tokens)
    seen = [i for i in range(1, n_vocab + 1) if tokens[i]]
    click.echo(f"token coverage: {len(seen)} of {n_vocab} vocabulary tokens seen, {sum(tokens.values())} tokens in all")
    unseen = [tokenizer.token(i) for i in range(1, n_vocab + 1) if not tokens[i]]
    if unseen:
        more = f" ... and {len(unseen) - 60} more" if len(unseen) > 60 else ""
        click.echo(f"  never seen ({len(unseen)}): " + " ".join(unseen[:60]) + more)
    click.echo(f"top {min(top, len(tokens))} tokens:")
    for i, n in tokens.most_common(top):
        click.echo(f"  {tokenizer.token(i) if i != tokenizer.separator else '<sep>'}: {n}")
