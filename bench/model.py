"""Forward + backward time per training batch (8 clips x 30 frames of 88 x 88) for each model part.

    python bench/model.py                          # small and base configs on the CPU, SDPA on and off
    python bench/model.py --configs small --repeats 5
    python bench/model.py --device cuda --dtypes fp32 fp16 bf16

Parts: `frontend` (Conv3d + ResNet-18), `encoder` (proj_encoder + Conformer, from cached frontend features),
`decoder+ctc` (teacher-forced decoder, CTC head and both losses, from a cached encoder output) and `total`
(the whole training forward + backward). Prints a Markdown table (median milliseconds per batch).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainer.config import load_config  # noqa: E402
from trainer.model import LipReader, attention  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def timed(fn: Callable[[], None], repeats: int, device: torch.device) -> float:
    """Median seconds of `fn` over `repeats` runs after one warm-up."""
    times = []
    for i in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(
    config: str, device: torch.device, dtype: str, sdpa: bool, repeats: int, clips: int, frames: int, odim: int
) -> dict[str, float]:
    """Milliseconds per batch of each part's forward + backward."""
    attention.USE_SDPA = sdpa
    torch.manual_seed(0)
    cfg = load_config(config)
    model = LipReader(cfg.model, odim).to(device).train()
    video = torch.randn(clips, frames, 1, 88, 88, device=device)
    lengths = torch.full((clips,), frames, device=device)
    targets = torch.randint(1, odim - 1, (clips, 14), device=device)  # 14: the mean label length
    autocast = torch.autocast(device.type, DTYPES[dtype], enabled=dtype != "fp32")

    with torch.no_grad(), autocast:
        features = model.frontend(video, lengths)
        enc, _ = model.encode_features(features, lengths)

    def run(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def step() -> None:
            model.zero_grad(set_to_none=True)
            with autocast:
                out = forward()
            out.float().sum().backward()

        return step

    parts = {
        "frontend": run(lambda: model.frontend(video, lengths)),
        "encoder": run(lambda: model.encode_features(features, lengths)[0]),
        "decoder+ctc": run(lambda: model.losses(enc, lengths, targets).loss),
        "total": run(lambda: model(video, lengths, targets).loss),
    }
    return {name: 1000 * timed(fn, repeats, device) for name, fn in parts.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["small", "base"], help="config names or paths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtypes", nargs="+", default=["fp32"], choices=list(DTYPES))
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after one warm-up (the median is shown)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--odim", type=int, default=228)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} threads"
    print(
        f"forward + backward per batch of {args.clips} clips x {args.frames} frames, ms (median of {args.repeats}), {name}"
    )
    print("| config | dtype | attention | frontend | encoder | decoder+ctc | total |")
    print("|---|---|---|---:|---:|---:|---:|")
    for config in args.configs:
        for dtype in args.dtypes:
            for sdpa in (True, False):
                ms = bench(config, device, dtype, sdpa, args.repeats, args.clips, args.frames, args.odim)
                cells = " | ".join(f"{ms[k]:.0f}" for k in ("frontend", "encoder", "decoder+ctc", "total"))
                print(f"| {config} | {dtype} | {'SDPA' if sdpa else 'math'} | {cells} |", flush=True)


if __name__ == "__main__":
    main()
