"""The demo sweep with and without pruning: trials, epochs run, wall time and best val/cer of each.

Both sweeps sample the same trials (random sampler, same seed) and train each one the same way
(same training seed), so the only difference is the pruner. Pruning should cut the epochs run by
at least 30% while the best val/cer stays within 10% (relative) of the unpruned sweep's.

    python bench/sweep.py [--data data/synthetic] [--clips 200] [--trials 8] [--pruner median] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from launch.demo import DEMO_SWEEP, ensure_dataset  # noqa: E402
from launch.engine.local import run_local_sweep  # noqa: E402
from launch.engine.plan import prepare  # noqa: E402
from launch.engine.spec import validate_sweep  # noqa: E402
from launch.engine.trials import trial_rows  # noqa: E402


def run(pruner: str, args: argparse.Namespace, tag: str) -> dict:
    overrides = [f"data.root={args.data}", "tracking.wandb=disabled", f"train.run_dir={args.runs}", *args.overrides]
    spec = validate_sweep(DEMO_SWEEP, overrides)
    sweep = prepare(spec, trials=args.trials, study=f"bench-{pruner}-{tag}", overrides=overrides, pruner=pruner,
                    seed=args.seed, heartbeat=0, verbose=False)  # fmt: skip
    started = time.monotonic()
    study = run_local_sweep(sweep, workers=1)
    wall = time.monotonic() - started
    rows = trial_rows(study)
    values = [r["value"] for r in rows if r["value"] is not None]
    return {
        "pruner": sweep.pruner["type"], "trials": len(rows), "pruned": sum(r["state"] == "pruned" for r in rows),
        "epochs": sum(r["epochs"] or 0 for r in rows), "wall_s": wall, "best_val_cer": min(values) if values else None,
        "study": sweep.study, "storage": sweep.storage,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--clips", type=int, default=200, help="synthetic clips written when --data is absent")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--pruner", default="median", help="the pruner of the pruned sweep (the YAML's options apply)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed, the same for both sweeps")
    parser.add_argument("--runs", default="runs/bench-sweep", help="train.run_dir of both sweeps")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="key=value for every trial (e.g. train.max_epochs=4)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    ensure_dataset(Path(args.data), args.clips)
    tag = time.strftime("%Y%m%d-%H%M%S")
    results = [run("none", args, tag), run(args.pruner, args, tag)]
    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"\ndemo sweep, {args.trials} trials, {machine}")
    print(f"{'pruner':<10} {'trials':>6} {'pruned':>6} {'epochs':>6} {'wall s':>8} {'best val/cer':>12}")
    for r in results:
        best = f"{r['best_val_cer']:.4f}" if r["best_val_cer"] is not None else "-"
        print(f"{r['pruner']:<10} {r['trials']:>6} {r['pruned']:>6} {r['epochs']:>6} {r['wall_s']:>8.0f} {best:>12}")
    base, pruned = results
    cut = 1 - pruned["epochs"] / max(1, base["epochs"])
    ok_cut = cut >= 0.30
    gap = None
    if base["best_val_cer"] and pruned["best_val_cer"] is not None:
        gap = pruned["best_val_cer"] / base["best_val_cer"] - 1
    ok_best = gap is not None and gap <= 0.10
    print(f"epochs cut by {cut:.0%} (target >= 30%): {'ok' if ok_cut else 'NOT MET'}")
    print(f"best val/cer {gap:+.1%} against unpruned (target <= +10%): {'ok' if ok_best else 'NOT MET'}" if gap is not None
          else "best val/cer: missing")  # fmt: skip
    if args.json:
        Path(args.json).write_text(
            json.dumps({"machine": machine, "results": results, "epochs_cut": cut, "best_gap": gap}, indent=2)
        )
    return 0 if ok_cut and ok_best else 1


if __name__ == "__main__":
    sys.exit(main())
