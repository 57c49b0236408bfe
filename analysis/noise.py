"""How much of a difference in val CER is noise: bootstrap over the validation clips.

Which clips land in a ~200-clip validation split moves CER by a few points; a ranking by the raw number
hides that. For each run with predictions (analysis/predictions.py):
- `<metric>_low`, `<metric>_high`: the 95% percentile interval of its CER over RESAMPLES resamples of
  its clips with replacement (each resample's CER is a ratio of sums, sum(edits) / sum(ref_tokens), as
  the run's own CER is);
- `tied`: the paired bootstrap of the difference from the reference run (the best-ranked run with
  predictions) over the clips both decoded (matched by id, the same resamples for both): True when the
  95% interval of the difference contains 0, i.e. the data cannot tell the two apart. The reference is
  tied with itself. Ranked by val/cer_ctc_greedy, the same is done with the CTC-greedy edits; ranked by any
  other metric, the intervals and ties are of val CER, against the best-ranked run.
Seeded (SEED), so a ranking prints the same intervals every time; vectorised: one (resamples x clips)
count matrix per clip count, and a matrix product per run.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
PER_CLIP = {"val/cer": "edits", "val/cer_ctc_greedy": "ctc_edits"}  # metric -> its per-clip edit column


@lru_cache(maxsize=8)
def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n): how often each of n clips is drawn in each resample (each row sums to n)."""
    picks = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (B, n) clip indices
    flat = (picks + n * np.arange(resamples)[:, None]).ravel()
    counts = np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)
    counts.setflags(write=False)
    return counts


def resampled_cer(
    edits: np.ndarray, ref_tokens: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED
) -> np.ndarray:
    """(resamples,): the CER of each resample of the clips."""
    counts = resample_counts(len(edits), resamples, seed)  # (B, n)
    return (counts @ edits.astype(np.float64)) / np.maximum(counts @ ref_tokens.astype(np.float64), 1.0)


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def cer_interval(
    edits: np.ndarray, ref_tokens: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL
) -> tuple[float, float]:
    """The bootstrap percentile interval of val CER over the clips."""
    return interval(resampled_cer(np.asarray(edits), np.asarray(ref_tokens), resamples, seed), level)


def paired_difference(
    a: pd.DataFrame, b: pd.DataFrame, edits: str = "edits", *, resamples: int = RESAMPLES, seed: int = SEED,
    level: float = LEVEL,
) -> tuple[float, float, int]:  # fmt: skip
    """The bootstrap interval of CER(a) - CER(b) over the clips both decoded (matched by id), and their count."""
    both = a[["id", edits, "ref_tokens"]].merge(b[["id", edits, "ref_tokens"]], on="id", suffixes=("_a", "_b"))
    if both.empty:
        return float("nan"), float("nan"), 0
    both = both.sort_values("id", kind="stable")
    cer_a = resampled_cer(both[f"{edits}_a"].to_numpy(), both["ref_tokens_a"].to_numpy(), resamples, seed)
    cer_b = resampled_cer(both[f"{edits}_b"].to_numpy(), both["ref_tokens_b"].to_numpy(), resamples, seed)
    low, high = interval(cer_a - cer_b, level)
    return low, high, len(both)


def _tied(pred: pd.DataFrame, cer: np.ndarray, ref: pd.DataFrame, ref_cer: np.ndarray, edits: str) -> bool | None:
    """Whether a run is tied with the reference; the resamples already drawn serve when both decoded the same clips."""
    if len(pred) == len(ref) and (pred["id"].to_numpy() == ref["id"].to_numpy()).all():
        low, high = interval(cer - ref_cer)
    else:
        low, high, n = paired_difference(pred, ref, edits)
        if n == 0:
            return None
    return bool(low <= 0 <= high)


def noise_columns(ranked: pd.DataFrame, predictions: list[pd.DataFrame | None], metric: str) -> pd.DataFrame:
    """`<metric>_low`, `<metric>_high` and `tied` for a ranked table (best first), one predictions table (sorted by
    id, as analysis/predictions.py reads them) or None per row; rows without predictions get empty cells.
    attrs["tied_with"] names the reference run."""
    edits = PER_CLIP.get(metric, "edits")
    metric = metric if metric in PER_CLIP else "val/cer"
    ranked_rows = ranked["rank"].notna().to_numpy()
    cers = [None if p is None else resampled_cer(p[edits].to_numpy(), p["ref_tokens"].to_numpy()) for p in predictions]
    ref = next((i for i, c in enumerate(cers) if c is not None and ranked_rows[i]), None)
    low, high = np.full(len(ranked), np.nan), np.full(len(ranked), np.nan)
    tied: list[bool | None] = [None] * len(ranked)
    for i, (pred, cer) in enumerate(zip(predictions, cers, strict=True)):
        if pred is None or cer is None:
            continue
        low[i], high[i] = interval(cer)
        if ref is not None and ranked_rows[i]:
            tied[i] = _tied(pred, cer, predictions[ref], cers[ref], edits)  # type: ignore[arg-type]
    out = ranked.assign(**{f"{metric}_low": low, f"{metric}_high": high, "tied": pd.array(tied, dtype="boolean")})
    out.attrs = dict(ranked.attrs, interval_of=metric, tied_with=None if ref is None else ranked["name"].iloc[ref])
    return out
