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
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer import frontend_cache as fcache  # noqa: E402
from trainer.augment import augment_batch, noise_frames  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.data import load_dataset, make_batches  # noqa: E402
from trainer.device import select_precision  # noqa: E402
from trainer.model import build_model  # noqa: E402
from trainer.search import SearchOptions, beam_search, ctc_greedy  # noqa: E402
from trainer.synthetic import write_dataset  # noqa: E402
from trainer.text import Tokenizer  # noqa: E402

PHASES = ("data", "augment", "forward", "backward", "optimizer")


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
        return
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    root = args.data
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="lipsweep-bench-")) / "clips"
        write_dataset(root, args.clips, seed=0)
    cfg = load_config(args.config, [f"data.root={root}", *args.overrides])
    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log=lambda *a: None)
    split = data.split(cfg.data)
    model = build_model(cfg.model, tokenizer.vocab_size).to(device)
    precision = select_precision(args.precision, device)
    autocast = torch.autocast(device.type, dtype=precision.dtype) if precision.dtype else nullcontext()
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = make_batches(
        data.lengths,
        split["train"],
        batch_size=cfg.train.batch_size,
        batch_frames=cfg.train.batch_frames,
        shuffle=True,
        seed=0,
    )
    gen = torch.Generator(device=device).manual_seed(0)

    times = dict.fromkeys(PHASES, 0.0)
    clips = 0

    def timed(phase: str, fn):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times[phase] += time.perf_counter() - t0
        return out

    model.train()
    for i in range(args.steps + 1):  # the first step warms up and is not counted
        if i == 1:
            times = dict.fromkeys(PHASES, 0.0)
            clips = 0
        idx = batches[i % len(batches)]
        batch = timed("data", lambda idx=idx: data.collate(idx).to(device))
        x = timed("augment", lambda b=batch: augment_batch(b.video, b.lengths, cfg.augment, train=True, generator=gen))

        def forward(x=x, b=batch):
            with autocast:
                return model(x, b.lengths, b.targets)

        out = timed("forward", forward)
        timed("backward", lambda out=out: scaler.scale(out.loss).backward())
        timed("optimizer", lambda: (scaler.step(opt), scaler.update(), opt.zero_grad(set_to_none=True)))
        clips += len(batch.ids)
    step_total = sum(times.values())

    model.eval()
    val = split["val"]
    options = SearchOptions.from_config(cfg.decode)
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        for idx in make_batches(data.lengths, val, batch_size=cfg.decode.batch_size, shuffle=False):
            b = data.collate(idx).to(device)
            x = augment_batch(b.video, b.lengths, cfg.augment, train=False)
            enc, lengths = model.encode(x, b.lengths)
            logp = model.ctc_log_probs(enc)
            beam_search(model.decoder, enc, lengths, logp, options, eos=tokenizer.eos)
            ctc_greedy(logp, lengths, eos=tokenizer.eos)
    sync()
    val_s = time.perf_counter() - t0

    name = Path(args.config).stem
    print(
        f"training steps of `{name}` ({args.steps} steps, {clips} clips, batch {cfg.train.batch_size}), "
        f"{device.type}, {precision.name}, {args.threads} CPU threads"
    )
    print("| config | clips/s | " + " | ".join(PHASES) + " | validation decode (clips/s) |")
    print("|---|---:|" + "---:|" * len(PHASES) + "---:|")
    shares = " | ".join(f"{100 * times[p] / step_total:.0f} %" for p in PHASES)
    print(f"| {name} | {clips / step_total:.1f} | {shares} | {len(val) / val_s:.1f} (beam {cfg.decode.beam_size}) |")


def cache_rows(args: argparse.Namespace) -> None:
    """Step time with a frozen frontend, live vs from the feature cache, interleaved on the same batches."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    root = args.data
    if root is None:
        root = Path(tempfile.mkdtemp(prefix="lipsweep-bench-")) / "clips"
        write_dataset(root, args.clips, seed=0)
    overrides = ["model.freeze.frontend=true", "train.frontend_cache_views=1", *args.overrides]
    cfg = load_config(args.config, [f"data.root={root}", "data.val_ratio=0.0", "data.test_ratio=0.0", *overrides])
    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log=lambda *a: None)
    model = build_model(cfg.model, tokenizer.vocab_size).to(device)
    precision = select_precision(args.precision, device)
    autocast = torch.autocast(device.type, dtype=precision.dtype) if precision.dtype else nullcontext()
    t0 = time.perf_counter()
    cache = fcache.load_or_build(
        model, data, cfg, device, precision=precision.name, autocast=autocast, log=lambda *a: None, progress=False
    )
    build_s = time.perf_counter() - t0
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    batches = make_batches(data.lengths, list(range(len(data))), batch_size=cfg.train.batch_size, shuffle=True, seed=0)
    gen = torch.Generator(device=device).manual_seed(0)
    aug = cfg.augment

    def live_step(idx: list[int]) -> None:
        batch = data.collate(idx).to(device)
        x = augment_batch(batch.video, batch.lengths, aug, train=True, generator=gen)
        if cfg.train.noise_input:
            x = noise_frames(x, batch.lengths, gen)
        with autocast:
            out = model(x, batch.lengths, batch.targets)
        scaler.scale(out.loss).backward()

    def cached_step(idx: list[int], b: int) -> None:
        x, lengths = cache.gather(idx, cache.train_views(len(idx), cfg.train.seed, 1, b))
        x = fcache.mask_features(x, lengths, aug.time_mask_window, aug.time_mask_stride, gen)
        with autocast:
            out = model.forward_from_features(x, lengths, data.padded_targets(idx)[0].to(device))
        scaler.scale(out.loss).backward()

    def timed(step) -> float:
        sync()
        t = clock()
        step()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sync()
        return clock() - t

    model.train()
    live: list[float] = []
    cached: list[float] = []
    frames = 0
    for i in range(args.steps + 1):  # the first pair warms up and is not counted
        idx = batches[i % len(batches)]
        pair = [("live", lambda idx=idx: live_step(idx)), ("cached", lambda idx=idx, i=i: cached_step(idx, i))]
        for name, step in pair if i % 2 == 0 else pair[::-1]:  # alternate which goes first
            took = timed(step)
            if i:
                (live if name == "live" else cached).append(took)
        frames += int(data.lengths[idx].sum()) if i else 0
    live_ms, cached_ms = 1000 * sum(live) / len(live), 1000 * sum(cached) / len(cached)
    name = Path(args.config).stem
    what = "CPU time" if device.type == "cpu" else "wall time"
    print(
        f"`{name}` with a frozen frontend, batch {cfg.train.batch_size} ({frames / args.steps:.0f} frames a step), "
        f"{device.type}, {precision.name}, {args.threads} threads, {what} per step, mean of {args.steps} interleaved "
        f"steps each; cache built in {build_s:.1f} s for {len(data)} clips x {cache.views + 1} views"
    )
    print("| config | frontend | ms / step | speed-up |")
    print("|---|---|---:|---:|")
    print(f"| {name}, frozen frontend | live | {live_ms:.0f} | 1.00x |")
    print(f"| {name}, frozen frontend | feature cache | {cached_ms:.0f} | {live_ms / cached_ms:.2f}x |")


if __name__ == "__main__":
    main()
