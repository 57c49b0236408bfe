"""Training throughput and where the time goes: data, augmentation, forward, backward, optimizer, validation decoding.

    python bench/train.py                           # configs/small.yaml on 200 synthetic clips, CPU
    python bench/train.py --config base --device cuda --precision fp16
    python bench/train.py --data DIR --steps 30
    python bench/train.py --frontend-cache --config base --clips 16 --steps 6 --threads 1 train.batch_frames=0 train.batch_size=4

Runs `--steps` training steps of the config's batch on the synthetic set (or --data), timing each
phase with a device sync around it, then decodes the validation split with the config's beam search
and CTC greedy. Prints a Markdown table: clips/s and the share of the measured step time in each
phase (the phases of one run against each other: what to speed up first).

`--frontend-cache` instead times a whole training step (batch, augmentation, forward, backward,
optimizer) with the frontend frozen, live and from the frozen-frontend feature cache
(trainer/frontend_cache.py), alternating the two on the same batches in one process; on the CPU it
counts CPU time (`time.process_time`), which a machine shared with other work disturbs least.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import frontend_cache as fcache  # noqa: E402
from trainer.augment import augment_batch  # noqa: E402
from trainer.config import Config, load_config  # noqa: E402
from trainer.data import Dataset, load_dataset, make_batches  # noqa: E402
from trainer.device import Precision, select_precision  # noqa: E402
from trainer.evaluate import eval_set, evaluate  # noqa: E402
from trainer.inputs import Inputs, autocast  # noqa: E402
from trainer.model import LipReader, build_model  # noqa: E402
from trainer.synthetic import write_dataset  # noqa: E402
from trainer.text import Tokenizer  # noqa: E402

PHASES = ("data", "augment", "forward", "backward", "optimizer")


@dataclass
class Bench:
    """The config's model on the benchmark's clips, with its optimizer and grad scaler."""

    cfg: Config
    device: torch.device
    precision: Precision
    tokenizer: Tokenizer
    data: Dataset
    model: LipReader
    scaler: torch.amp.GradScaler
    opt: torch.optim.Optimizer
    sync: Callable[[], None]

    def optimizer_step(self) -> None:
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)


def set_up(args: argparse.Namespace, overrides: list[str]) -> Bench:
    """The synthetic set (or --data), the config with `overrides` then the command line's, the model on --device."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    root = args.data
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="lipsweep-bench-")) / "clips"
        write_dataset(root, args.clips, seed=0)
    cfg = load_config(args.config, [f"data.root={root}", *overrides, *args.overrides])
    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log=lambda *a: None)
    model = build_model(cfg.model, tokenizer.vocab_size).to(device)
    precision = select_precision(args.precision, device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return Bench(cfg, device, precision, tokenizer, data, model, scaler, opt, sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="small")
    parser.add_argument("--data", type=Path, default=None, help="folder of clips (default: synthetic, temporary)")
    parser.add_argument("--clips", type=int, default=200)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frontend-cache", action="store_true", help="frozen frontend: step time live vs cached")
    parser.add_argument("overrides", nargs="*", help="dotted key=value config overrides")
    args = parser.parse_args()
    if args.frontend_cache:
        cache_rows(args)
    else:
        step_rows(args)


def step_rows(args: argparse.Namespace) -> None:
    """Each phase's share of `--steps` training steps, then the validation decode, as a Markdown row."""
    b = set_up(args, [])
    cfg, device = b.cfg, b.device
    split = b.data.split(cfg.data)
    batches = make_batches(
        b.data.lengths, split["train"], batch_size=cfg.train.batch_size, batch_frames=cfg.train.batch_frames,
        shuffle=True, seed=0,
    )  # fmt: skip
    gen = torch.Generator(device=device).manual_seed(0)
    times = dict.fromkeys(PHASES, 0.0)

    def timed(phase: str, fn):
        b.sync()
        t0 = time.perf_counter()
        out = fn()
        b.sync()
        times[phase] += time.perf_counter() - t0
        return out

    def forward(x, batch):
        with autocast(device, b.precision):
            return b.model(x, batch.lengths, batch.targets)

    b.model.train()
    clips = 0
    for i in range(args.steps + 1):  # the first step warms up and is not counted
        if i == 1:
            times, clips = dict.fromkeys(PHASES, 0.0), 0
        batch = timed("data", lambda idx=batches[i % len(batches)]: b.data.collate(idx).to(device))
        x = timed("augment", lambda c=batch: augment_batch(c.video, c.lengths, cfg.augment, train=True, generator=gen))
        out = timed("forward", lambda x=x, c=batch: forward(x, c))
        timed("backward", lambda out=out: b.scaler.scale(out.loss).backward())
        timed("optimizer", b.optimizer_step)
        clips += len(batch.ids)
    step_total = sum(times.values())

    val = eval_set(b.data, b.tokenizer, split, "val")
    b.sync()
    t0 = time.perf_counter()
    evaluate(b.model, val, cfg, device, b.precision, losses=False)  # the validation decode: beam search and CTC greedy
    b.sync()
    val_s = time.perf_counter() - t0

    name = Path(args.config).stem
    print(
        f"training steps of `{name}` ({args.steps} steps, {clips} clips, batch {cfg.train.batch_size}), "
        f"{device.type}, {b.precision.name}, {args.threads} CPU threads"
    )
    print("| config | clips/s | " + " | ".join(PHASES) + " | validation decode (clips/s) |")
    print("|---|---:|" + "---:|" * len(PHASES) + "---:|")
    shares = " | ".join(f"{100 * times[p] / step_total:.0f} %" for p in PHASES)
    decode = f"{len(val.indices) / val_s:.1f} (beam {cfg.decode.beam_size})"
    print(f"| {name} | {clips / step_total:.1f} | {shares} | {decode} |")


def cache_rows(args: argparse.Namespace) -> None:
    """Step time with a frozen frontend, live vs from the feature cache, interleaved on the same batches."""
    frozen = ["data.val_ratio=0.0", "data.test_ratio=0.0", "model.freeze.frontend=true", "train.frontend_cache_views=1"]
    b = set_up(args, frozen)
    cfg, device = b.cfg, b.device
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    t0 = time.perf_counter()
    cache = fcache.load_or_build(
        b.model, b.data, cfg, device, precision=b.precision.name, autocast=autocast(device, b.precision),
        log=lambda *a: None, progress=False,
    )  # fmt: skip
    build_s = time.perf_counter() - t0
    batches = make_batches(
        b.data.lengths, list(range(len(b.data))), batch_size=cfg.train.batch_size, shuffle=True, seed=0
    )
    gen = torch.Generator(device=device).manual_seed(0)
    sources = {"live": Inputs(b.data, cfg, device), "cached": Inputs(b.data, cfg, device, cache)}

    def timed(source: Inputs, idx: list[int], batch: int) -> float:
        b.sync()
        t = clock()
        x, lengths, targets = source.batch(idx, gen, train=True, epoch=1, batch=batch)
        with autocast(device, b.precision):
            out = source.step_model(b.model)(x, lengths, targets)
        b.scaler.scale(out.loss).backward()
        b.optimizer_step()
        b.sync()
        return clock() - t

    b.model.train()
    took: dict[str, list[float]] = {"live": [], "cached": []}
    frames = 0
    for i in range(args.steps + 1):  # the first pair warms up and is not counted
        idx = batches[i % len(batches)]
        for kind in ("live", "cached") if i % 2 == 0 else ("cached", "live"):  # alternate which goes first
            seconds = timed(sources[kind], idx, i)
            if i:
                took[kind].append(seconds)
        frames += int(b.data.lengths[idx].sum()) if i else 0
    live_ms, cached_ms = (1000 * sum(took[k]) / len(took[k]) for k in ("live", "cached"))
    name = Path(args.config).stem
    what = "CPU time" if device.type == "cpu" else "wall time"
    print(
        f"`{name}` with a frozen frontend, batch {cfg.train.batch_size} ({frames / args.steps:.0f} frames a step), "
        f"{device.type}, {b.precision.name}, {args.threads} threads, {what} per step, mean of {args.steps} interleaved "
        f"steps each; cache built in {build_s:.1f} s for {len(b.data)} clips x {cache.views + 1} views"
    )
    print("| config | frontend | ms / step | speed-up |")
    print("|---|---|---:|---:|")
    print(f"| {name}, frozen frontend | live | {live_ms:.0f} | 1.00x |")
    print(f"| {name}, frozen frontend | feature cache | {cached_ms:.0f} | {live_ms / cached_ms:.2f}x |")


if __name__ == "__main__":
    main()
