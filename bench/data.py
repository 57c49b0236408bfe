"""Clips per second of the data path: decoding the .mp4 files every time vs reading the frame cache, and augmentation.

    python bench/data.py                        # 200 synthetic clips written to a temporary folder
    python bench/data.py --data DIR --repeats 5 # your own clips (the cache is built once, beside them)
    python bench/data.py --device cuda          # augmentation on the GPU too

Rows: `synthetic clips` (generation, mp4 written), `decode .mp4` (PyAV + checks + label, what every epoch
would cost without a cache), `cache: read clips` (each clip copied out of the memmap), `cache: padded
batches of 32` (the DataLoader's collate), `augment train / train + time warp / val, batch of 32` (trainer.augment on --device).
Prints a Markdown table (best of --repeats) and fails if the cache is not at least 20x faster than decoding.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.augment import augment_batch  # noqa: E402
from trainer.config import AugmentConfig, DataConfig  # noqa: E402
from trainer.data import find_clips, load_clip, load_dataset  # noqa: E402
from trainer.synthetic import write_dataset  # noqa: E402
from trainer.text import Tokenizer  # noqa: E402

BATCH = 32


def best(fn: Callable[[], None], repeats: int, sync: Callable[[], None] = lambda: None) -> float:
    """Fastest seconds of `fn` over `repeats` runs after one warm-up."""
    times = []
    for i in range(repeats + 1):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        if i:
            times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="folder of clips (default: synthetic, temporary)")
    parser.add_argument("--clips", type=int, default=200, help="synthetic clips to write when --data is not given")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows: list[tuple[str, float]] = []

    with tempfile.TemporaryDirectory() as tmp:
        root = args.data
        if root is None:
            root = Path(tmp) / "synthetic"
            start = time.perf_counter()
            write_dataset(root, args.clips, seed=0)
            rows.append(("synthetic clips (generate + write .mp4)", args.clips / (time.perf_counter() - start)))
        cfg = DataConfig(root=str(root), cache_dir=str(Path(tmp) / "cache") if args.data is None else "")
        tokenizer = Tokenizer.from_config(cfg)
        clips, _ = find_clips(root)
        n = len(clips)

        decode = best(lambda: [load_clip(c, cfg, tokenizer) for c in clips], args.repeats)
        rows.append(("decode .mp4 every time (PyAV + label)", n / decode))

        ds = load_dataset(cfg, tokenizer, log=lambda msg: None)
        read = best(lambda: [np.array(ds.video(i)) for i in range(len(ds))], args.repeats)
        rows.append(("cache: read clips (memmap copy)", len(ds) / read))
        batches = [list(range(i, min(i + BATCH, len(ds)))) for i in range(0, len(ds), BATCH)]
        collate = best(lambda: [ds.collate(b) for b in batches], args.repeats)
        rows.append((f"cache: padded batches of {BATCH}", len(ds) / collate))

        batch = ds.collate(list(range(min(BATCH, len(ds))))).to(device)
        aug = AugmentConfig()
        sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
        warp = dataclasses.replace(aug, time_warp=True)
        for name, train, cfg_aug in [("train", True, aug), ("train + time warp", True, warp), ("val", False, aug)]:
            g = torch.Generator(device).manual_seed(0)
            fn = lambda: augment_batch(batch.video, batch.lengths, cfg_aug, train, g)  # noqa: B023, E731
            rows.append(
                (
                    f"augment {name}, batch of {len(batch.ids)} on {device}",
                    len(batch.ids) / best(fn, args.repeats, sync),
                )
            )

    speedup = (len(ds) / read) / (n / decode)
    print(f"{n} clips from {args.data or 'synthetic data'}, torch threads {args.threads}\n")
    print("| step | clips/s |\n|---|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} |")
    print(f"\ncache vs decoding: {speedup:,.0f}x faster")
    if speedup < 20:
        sys.exit(f"the cache must be at least 20x faster than decoding, got {speedup:.1f}x")


if __name__ == "__main__":
    main()
