"""How large a val/cer difference is real on the synthetic set: the interval's width by validation size, and
the spread over training seeds.

Two kinds of noise sit under every ranking. Which clips are validated: one trained model (RUN's best.pt)
is decoded on its own validation split and on fresh synthetic clips (another generator seed, so none of
them was trained on), and the 95% bootstrap interval of its CER (analysis/noise.py, as `runs rank` shows
it) is taken on the first 80 and on all 200 fresh clips. Which training seed: a `sweep confirm` folder's
confirm.csv gives the mean and std of val/cer over the seeds of each config it re-trained.

    python bench/noise.py --run RUN_DIR [--fresh data/synthetic-seed1] [--confirm RUNS/SWEEP-confirm]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.noise import cer_interval  # noqa: E402
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder (its checkpoints/best.pt)")
    parser.add_argument("--fresh", default="data/synthetic-seed1", help=f"{FRESH_CLIPS} fresh clips, written if absent")
    parser.add_argument("--confirm", type=Path, default=None, help="a `sweep confirm` folder: the spread over seeds")
    args = parser.parse_args()

    ensure_dataset(Path(args.fresh), FRESH_CLIPS, seed=1)
    own = decode(args.run, None, "val")
    fresh = decode(args.run, args.fresh, "all")
    rows = [width_row("(the run's own val split)", own)]
    rows += [width_row(f"fresh (first {n})", fresh.iloc[:n]) for n in SIZES if n <= len(fresh)]
    print(f"\n95% bootstrap interval of val/cer, {args.run}'s best.pt")
    print(f"{'clips':<34} {'val/cer':>8} {'interval':>18} {'width':>7}")
    for r in rows:
        print(f"{r['clips']:<34} {r['val/cer']:>8.4f} [{r['low']:.4f}, {r['high']:.4f}] {r['width']:>7.4f}")
    small, large = rows[1]["width"], rows[-1]["width"]
    print(f"width at {SIZES[0]} / {SIZES[-1]} clips: {small / large:.2f} (1/sqrt(n) predicts "
          f"{math.sqrt(SIZES[-1] / SIZES[0]):.2f})")  # fmt: skip
    if args.confirm is not None:
        print(f"\nval/cer over training seeds ({args.confirm / 'confirm.csv'})")
        for r in seed_rows(args.confirm):
            print(f"{r['config']}: {r['seeds']} seeds, mean {r['mean']:.4f}, std {r['std']:.4f} ({r['values']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
