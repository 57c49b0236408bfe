"""The demo sweep with and without pruning: trials, epochs, CPU and wall time, best val/cer and whether the bests are tied.

Both sweeps run the same grid (`sweeps/demo.yaml`: trial n takes point n of one seeded grid) and
train each trial the same way (same training seed), so the only difference is the pruner. The
best run of each is decoded on the validation split (`launch eval --output`), and a seeded
bootstrap over the clips gives each best's 95% interval and the paired interval of their
difference: the bests are tied when that interval contains 0. Targets: pruning runs at least 50%
fewer epochs, and its best is tied with the unpruned sweep's best.

    python bench/sweep.py [--data data/synthetic] [--clips 800] [--workers 2] [--pruner halving] [key=value ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.noise import cer_interval, paired_difference  # noqa: E402
from launch.demo import DEMO_CLIPS, DEMO_SWEEP, ensure_dataset  # noqa: E402
from launch.engine.local import run_local_sweep  # noqa: E402
from launch.engine.plan import prepare  # noqa: E402
from launch.engine.spec import validate_sweep  # noqa: E402
from launch.engine.trials import trial_rows  # noqa: E402


def cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the sweep workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run(pruner: str, args: argparse.Namespace, tag: str) -> dict:
    overrides = [f"data.root={args.data}", "tracking.wandb=disabled", f"train.run_dir={args.runs}", *args.overrides]
    spec = validate_sweep(DEMO_SWEEP, overrides)
    sweep = prepare(spec, trials=args.trials, study=f"bench-{pruner}-{tag}", overrides=overrides, pruner=pruner,
                    seed=args.seed, heartbeat=0, verbose=False)  # fmt: skip
    started, cpu = time.monotonic(), cpu_seconds()
    study = run_local_sweep(sweep, workers=args.workers)
    wall, cpu = time.monotonic() - started, cpu_seconds() - cpu
    rows = trial_rows(study)
    done = [r for r in rows if r["value"] is not None]
    best = min(done, key=lambda r: r["value"]) if done else None
    return {
        "pruner": sweep.pruner["type"], "trials": len(rows), "pruned": sum(r["state"] == "pruned" for r in rows),
        "epochs": sum(r["epochs"] or 0 for r in rows), "wall_s": wall, "cpu_s": cpu,
        "best_val_cer": best["value"] if best else None, "best_run": best["run_dir"] if best else None,
        "best_params": best["params"] if best else None, "study": sweep.study, "storage": sweep.storage,
    }  # fmt: skip


def clip_errors(run_dir: str, scratch: Path) -> pd.DataFrame:
    """Per-clip `id`, token `edits` and `ref_tokens` of the run's best checkpoint on its validation split."""
    out = scratch / f"{Path(run_dir).name}.jsonl"
    checkpoint = Path(run_dir) / "checkpoints" / "best.pt"
    command = [sys.executable, "-m", "launch", "eval", "--checkpoint", str(checkpoint), "--output", str(out), "--quiet"]
    subprocess.run(command, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    return pd.DataFrame({k: [r[k] for r in rows] for k in ("id", "edits", "ref_tokens")})


def tie_test(unpruned: str, pruned: str, scratch: Path) -> dict:
    """95% intervals of both bests' val CER and of their paired difference (pruned - unpruned); tied if it holds 0.

    The intervals are analysis/noise.py's, as `runs rank` prints them."""
    a, b = clip_errors(unpruned, scratch), clip_errors(pruned, scratch)
    if set(a["id"]) != set(b["id"]):
        raise SystemExit(f"the two best runs were validated on different clips: {unpruned}, {pruned}")
    point = [float(p["edits"].sum() / p["ref_tokens"].sum()) for p in (a, b)]
    low, high, clips = paired_difference(b, a)
    return {
        "clips": clips, "val_cer": point,
        "interval": [list(cer_interval(p["edits"].to_numpy(), p["ref_tokens"].to_numpy())) for p in (a, b)],
        "difference": point[1] - point[0], "difference_interval": [low, high],
        "tied": bool(low <= 0 <= high), "not_worse": bool(low <= 0),
    }  # fmt: skip


def report(results: list[dict], tie: dict | None, machine: str, trials: int) -> tuple[float, bool, bool]:
    """Print the table and the verdicts; returns (epochs cut, cut target met, tie target met)."""
    print(f"\ndemo sweep, {trials} trials, {machine}")
    print(
        f"{'pruner':<8} {'trials':>6} {'pruned':>6} {'epochs':>6} {'wall s':>7} {'cpu s':>7} {'best val/cer':>12}  best run"
    )
    for r in results:
        best = f"{r['best_val_cer']:.4f}" if r["best_val_cer"] is not None else "-"
        print(f"{r['pruner']:<8} {r['trials']:>6} {r['pruned']:>6} {r['epochs']:>6} {r['wall_s']:>7.0f} "
              f"{r['cpu_s']:>7.0f} {best:>12}  {r['best_run'] or '-'}")  # fmt: skip
    cut = 1 - results[1]["epochs"] / max(1, results[0]["epochs"])
    print(f"epochs cut by {cut:.0%} (target >= 50%): {'ok' if cut >= 0.5 else 'NOT MET'}")
    if tie is None:
        print("best val/cer: missing in a sweep, no tie test")
        return cut, cut >= 0.5, False
    (lo0, hi0), (lo1, hi1) = tie["interval"]
    d_lo, d_hi = tie["difference_interval"]
    print(f"best val/cer on {tie['clips']} clips, 95% bootstrap interval: unpruned {tie['val_cer'][0]:.4f} "
          f"[{lo0:.4f}, {hi0:.4f}], pruned {tie['val_cer'][1]:.4f} [{lo1:.4f}, {hi1:.4f}]")  # fmt: skip
    print(f"pruned - unpruned: {tie['difference']:+.4f}, paired 95% interval [{d_lo:+.4f}, {d_hi:+.4f}]: "
          f"{'tied (ok)' if tie['tied'] else 'better (ok)' if tie['not_worse'] else 'worse (NOT MET)'}")  # fmt: skip
    return cut, cut >= 0.5, tie["not_worse"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/synthetic")
    parser.add_argument("--clips", type=int, default=DEMO_CLIPS, help="synthetic clips written when --data is absent")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="as the demo: trials at once")
    parser.add_argument("--pruner", default="halving", help="the pruner of the pruned sweep (the YAML's options apply)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed, the same for both sweeps")
    parser.add_argument("--runs", default="runs/bench-sweep", help="train.run_dir of both sweeps")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="key=value for every trial (e.g. train.max_epochs=4)")
    args = parser.parse_args()
    args.data, args.runs = (
        str(Path(args.data).resolve()),
        str(Path(args.runs).resolve()),
    )  # eval runs from the repo root
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // args.workers))
    ensure_dataset(Path(args.data), args.clips)
    tag = time.strftime("%Y%m%d-%H%M%S")
    results = [run("none", args, tag), run(args.pruner, args, tag)]
    scratch = Path(args.runs) / f"bench-{tag}-predictions"
    scratch.mkdir(parents=True, exist_ok=True)
    best_runs = [r["best_run"] for r in results]
    tie = tie_test(best_runs[0], best_runs[1], scratch) if all(best_runs) else None
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, {args.workers} worker(s), " \
              f"torch {torch.__version__}, load average {os.getloadavg()[0]:.1f}"  # fmt: skip
    cut, ok_cut, ok_tie = report(results, tie, machine, args.trials)
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"machine": machine, "results": results, "epochs_cut": cut, "tie": tie}, indent=2, default=str))  # fmt: skip
    return 0 if ok_cut and ok_tie else 1


if __name__ == "__main__":
    sys.exit(main())
