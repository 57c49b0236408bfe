"""How large a val/cer difference is real on the synthetic set: the interval's width by validation size, and
the spread over training seeds.

Two kinds of noise sit under every ranking. Which clips are validated: one trained model (RUN's best.pt)
is decoded on its own validation split and on fresh synthetic clips (another generator seed, so none of
them was trained on), and the 95% bootstrap interval of its CER (analysis/noise.py, as `runs rank` shows
it) is taken on the first 80 and on all 200 fresh clips. Which training seed: a `sweep confirm` folder's
confirm.csv gives the mean and std of val/cer over the seeds of each config it re-trained. Without --run,
only the cost of the ranking's noise columns: 100 runs of 200 clips, against a plain loop over the
resamples measured in the same run.

    python bench/noise.py [--run RUN_DIR [--fresh data/synthetic-seed1]] [--confirm RUNS/SWEEP-confirm]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.noise import RESAMPLES, cer_interval, noise_columns  # noqa: E402
from launch.demo import ensure_dataset  # noqa: E402
from trainer.checkpoints import load_for_eval  # noqa: E402
from trainer.device import select_device, select_precision  # noqa: E402
from trainer.evaluate import evaluate, load_eval_set  # noqa: E402

FRESH_CLIPS = 200
SIZES = (80, 200)


def decode(run: Path, data_root: str | None, split: str) -> pd.DataFrame:
    """Per-clip token edits and reference tokens of RUN's best.pt on `split` of its data (or of `data_root`)."""
    loaded = load_for_eval(run / "checkpoints" / "best.pt", None, [f"data.root={data_root}"] if data_root else [])
    cfg = loaded.cfg
    device = select_device(cfg.train.device)
    clips = load_eval_set(cfg, split, log=lambda _: None)
    out = evaluate(loaded.model.to(device), clips, cfg, device, select_precision(cfg.train.precision, device),
                   prefix=split, losses=False)  # fmt: skip
    return pd.DataFrame({"edits": [r["edits"] for r in out.rows], "ref_tokens": [r["ref_tokens"] for r in out.rows]})


def width_row(where: str, pred: pd.DataFrame) -> dict:
    low, high = cer_interval(pred["edits"].to_numpy(), pred["ref_tokens"].to_numpy())
    cer = pred["edits"].sum() / pred["ref_tokens"].sum()
    return {"clips": f"{len(pred)} {where}", "val/cer": cer, "low": low, "high": high, "width": high - low}


def seed_rows(folder: Path) -> list[dict]:
    """Each confirmed config's seeds, mean and std of val/cer, from the folder's confirm.csv."""
    table = pd.read_csv(folder / "confirm.csv")
    return [{"config": r["config"], "seeds": int(r["seeds"]), "mean": r["val/cer_mean"], "std": r["val/cer_std"],
             "values": ", ".join(f"{r[c]:.4f}" for c in table.columns if c.startswith("val/cer_seed"))}
            for _, r in table.iterrows()]  # fmt: skip


def timing(runs: int = 100, clips: int = 200) -> tuple[float, float]:
    """Seconds for `runs` x `clips` noise columns (vectorised) and for one run's interval by a plain loop, x runs."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 12, size=clips)
    ids = [f"c{i:03d}" for i in range(clips)]
    preds = [pd.DataFrame({"id": ids, "edits": rng.binomial(tokens, p), "ref_tokens": tokens, "ctc_edits": tokens})
             for p in np.linspace(0.3, 0.6, runs)]  # fmt: skip
    ranked = pd.DataFrame({"rank": pd.array(range(1, runs + 1), dtype="Int64"), "name": [f"r{i}" for i in range(runs)]})
    started = time.perf_counter()
    noise_columns(ranked, preds, "val/cer")
    vectorised = time.perf_counter() - started
    started = time.perf_counter()
    edits, draw = preds[0]["edits"].to_numpy(), np.random.default_rng(1)
    for _ in range(RESAMPLES):  # the reference: one resample at a time, one run
        pick = draw.integers(0, clips, clips)
        edits[pick].sum() / tokens[pick].sum()
    loop = (time.perf_counter() - started) * runs * 2  # each run's interval and its paired difference
    return vectorised, loop


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, default=None, help="a trained run folder (its checkpoints/best.pt)")
    parser.add_argument("--fresh", default="data/synthetic-seed1", help=f"{FRESH_CLIPS} fresh clips, written if absent")
    parser.add_argument("--confirm", type=Path, default=None, help="a `sweep confirm` folder: the spread over seeds")
    args = parser.parse_args()

    vectorised, loop = timing()
    print(f"noise columns of 100 runs x 200 clips, {RESAMPLES} resamples: {vectorised:.2f} s "
          f"(a plain loop over the resamples: {loop:.1f} s, {loop / vectorised:.0f}x)")  # fmt: skip
    if args.run is not None:
        widths(args.run, args.fresh)
    if args.confirm is not None:
        print(f"\nval/cer over training seeds ({args.confirm / 'confirm.csv'})")
        for r in seed_rows(args.confirm):
            print(f"{r['config']}: {r['seeds']} seeds, mean {r['mean']:.4f}, std {r['std']:.4f} ({r['values']})")
    return 0


def widths(run: Path, fresh_root: str) -> None:
    """The interval of RUN's best.pt on its own val split and on the first 80 / all 200 fresh clips."""
    ensure_dataset(Path(fresh_root), FRESH_CLIPS, seed=1)
    own = decode(run, None, "val")
    fresh = decode(run, fresh_root, "all")
    rows = [width_row("(the run's own val split)", own)]
    rows += [width_row(f"fresh (first {n})", fresh.iloc[:n]) for n in SIZES if n <= len(fresh)]
    print(f"\n95% bootstrap interval of val/cer, {run}'s best.pt")
    print(f"{'clips':<34} {'val/cer':>8} {'interval':>18} {'width':>7}")
    for r in rows:
        print(f"{r['clips']:<34} {r['val/cer']:>8.4f} [{r['low']:.4f}, {r['high']:.4f}] {r['width']:>7.4f}")
    small, large = rows[1]["width"], rows[-1]["width"]
    print(f"width at {SIZES[0]} / {SIZES[-1]} clips: {small / large:.2f} (1/sqrt(n) predicts "
          f"{math.sqrt(SIZES[-1] / SIZES[0]):.2f})")  # fmt: skip


if __name__ == "__main__":
    raise SystemExit(main())
