"""Bootstrap intervals and the paired test: the vectorised code against plain loops on fixed prediction files;
identical runs are tied, far-apart runs are not; the speed the rankings need."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.noise import cer_interval, noise_columns, paired_difference
from analysis.predictions import read_predictions
from trainer.errors import DataError

FIXTURES = Path(__file__).parent / "fixtures"
A, B = FIXTURES / "val_predictions_a.csv", FIXTURES / "val_predictions_b.csv"  # 60 clips; B's rows shuffled


def percentile(values: list[float], p: float) -> float:
    """The p-quantile with linear interpolation between order statistics (numpy's default), written out."""
    values = sorted(values)
    pos = p * (len(values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def loop_resamples(n: int, resamples: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(i) for i in rng.integers(0, n, size=n)] for _ in range(resamples)]


def loop_cer(edits: list[int], tokens: list[int], pick: list[int]) -> float:
    e = t = 0
    for i in pick:
        e += edits[i]
        t += tokens[i]
    return e / t


def test_interval_matches_a_plain_loop():
    pred = read_predictions(A)
    edits, tokens = list(pred["edits"]), list(pred["ref_tokens"])
    values = [loop_cer(edits, tokens, pick) for pick in loop_resamples(len(edits), 1000, seed=3)]
    expected = (percentile(values, 0.025), percentile(values, 0.975))
    got = cer_interval(pred["edits"].to_numpy(), pred["ref_tokens"].to_numpy(), resamples=1000, seed=3)
    assert got == pytest.approx(expected, abs=1e-12)
    cer = sum(edits) / sum(tokens)
    assert got[0] < cer < got[1] and 0.02 < got[1] - got[0] < 0.3


def test_paired_difference_matches_a_plain_loop_matched_by_id():
    a, b = read_predictions(A), read_predictions(B)
    raw_b = pd.read_csv(B, dtype={"id": str})
    assert list(raw_b["id"]) != sorted(raw_b["id"])  # the file's rows are not in id order
    by_id = {r.id: (r.edits, r.ref_tokens) for r in raw_b.itertuples()}
    ids = sorted(a["id"])
    ea, ta = (
        [int(a.set_index("id").loc[i, "edits"]) for i in ids],
        [int(a.set_index("id").loc[i, "ref_tokens"]) for i in ids],
    )
    eb, tb = [by_id[i][0] for i in ids], [by_id[i][1] for i in ids]
    diffs = [loop_cer(ea, ta, p) - loop_cer(eb, tb, p) for p in loop_resamples(len(ids), 1000, seed=5)]
    low, high, n = paired_difference(a, b, resamples=1000, seed=5)
    assert n == 60
    assert (low, high) == pytest.approx((percentile(diffs, 0.025), percentile(diffs, 0.975)), abs=1e-12)


def ranked(names: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"rank": pd.array(range(1, len(names) + 1), dtype="Int64"), "name": names})


def shifted(pred: pd.DataFrame, extra: int) -> pd.DataFrame:
    """The same clips with `extra` more errors on each (a much worse run)."""
    return pred.assign(edits=pred["edits"] + extra)


def test_identical_runs_are_tied_and_far_apart_runs_are_not():
    a = read_predictions(A)
    table = noise_columns(ranked(["best", "twin", "far", "old"]), [a, a.copy(), shifted(a, 3), None], "val/cer")
    assert list(table["tied"]) == [True, True, False, pd.NA]  # the best is tied with itself; no file: empty
    assert table.attrs["tied_with"] == "best" and table.attrs["interval_of"] == "val/cer"
    assert table["val/cer_low"][0] == table["val/cer_low"][1] and math.isnan(table["val/cer_high"][3])
    assert table["val/cer_high"][0] < table["val/cer_low"][2]
    b = read_predictions(B)
    low, high, _ = paired_difference(b, a)  # the same resamples, drawn once per run in the ranking
    assert noise_columns(ranked(["a", "b"]), [a, b], "val/cer")["tied"][1] == (low <= 0 <= high)
    # a run whose clips do not overlap the best's cannot be compared: empty, not an error
    other = a.assign(id=a["id"] + "-x")
    assert pd.isna(noise_columns(ranked(["best", "elsewhere"]), [a, other], "val/cer")["tied"][1])


def test_the_reference_is_the_best_run_with_predictions_and_ctc_uses_its_edits():
    a, b = read_predictions(A), read_predictions(B)
    table = noise_columns(ranked(["no-file", "a", "b"]), [None, a, b], "val/cer_ctc_greedy")
    assert table.attrs["tied_with"] == "a" and table["tied"][1]
    low, high = cer_interval(a["ctc_edits"].to_numpy(), a["ref_tokens"].to_numpy())
    assert (table["val/cer_ctc_greedy_low"][1], table["val/cer_ctc_greedy_high"][1]) == (low, high)


def test_100_runs_of_200_clips_spread_from_030_to_060_are_partly_tied():
    """The size the issue names (its timing is bench/noise.py's: no timing is asserted here)."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(3, 12, size=200)
    preds = [
        pd.DataFrame(
            {
                "id": [f"c{i:03d}" for i in range(200)],
                "edits": rng.binomial(tokens, p),
                "ref_tokens": tokens,
                "ctc_edits": tokens,
            }
        )  # fmt: skip
        for p in np.linspace(0.3, 0.6, 100)
    ]
    table = noise_columns(ranked([f"r{i}" for i in range(100)]), preds, "val/cer")
    assert table["tied"].notna().all() and table["tied"][:3].all() and not table["tied"][-10:].any()


def test_bad_prediction_files_name_the_row(tmp_path: Path):
    bad = tmp_path / "val_predictions.csv"
    bad.write_text("id,frames,ref,hyp,edits,ref_tokens,ctc_hyp,ctc_edits\nc1,20,a b,ab,x,3,a,1\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"val_predictions.csv, row 2: edits 'x' is not a whole number"):
        read_predictions(bad)
    bad.write_text("id,frames,ref,hyp,edits\nc1,20,a,a,0\n", encoding="utf-8")
    with pytest.raises(DataError, match="missing column.*ref_tokens, ctc_hyp, ctc_edits"):
        read_predictions(bad)
