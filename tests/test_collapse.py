"""Collapse: one output for most clips, or no better than the best constant output; judged from what a run has."""

from __future__ import annotations

import math

import pytest
from runfolders import constant_predictions, epochs, fixture_predictions, write_run

from analysis.collapse import DISTINCT_MIN, TOP_SHARE_MAX, collapse_of, judge
from analysis.predictions import distinct_share, predictions_frame, top_output
from analysis.runs import load_runs


def frame(rows):
    return predictions_frame(
        ["id", "frames", "ref", "hyp", "edits", "ref_tokens", "ctc_hyp", "ctc_edits"], rows, "test"
    )


def test_a_constant_prediction_file_has_distinct_share_one_over_n_and_is_collapsed():
    pred = frame(constant_predictions(40))
    assert distinct_share(pred) == 1 / 40
    assert top_output(pred) == ("ٱلْٱلْ", 1.0)
    judged = collapse_of({"val/cer_baseline@best": 0.95}, pred)  # it even beats the baseline (5/6 < 0.95)
    assert judged.collapsed and judged.cer == pytest.approx(5 / 6) and judged.cer_high < 0.95
    assert any("only 2% of the clips get a distinct output" in r for r in judged.reasons)
    assert any("100% of the clips get the same output" in r for r in judged.reasons)
    assert not any("baseline" in r for r in judged.reasons)


@pytest.mark.parametrize(
    ("numbers", "collapsed", "phrase"),
    [
        ({"distinct": DISTINCT_MIN - 0.01}, True, "get a distinct output"),
        ({"distinct": DISTINCT_MIN}, False, ""),
        ({"top_share": TOP_SHARE_MAX + 0.01, "output": ""}, True, "the empty output"),
        ({"top_share": TOP_SHARE_MAX}, False, ""),
        ({"cer": 0.7, "cer_high": 0.75, "baseline": 0.74}, True, "upper end of its 95% interval"),
        ({"cer": 0.7, "cer_high": 0.73, "baseline": 0.74}, False, ""),
        ({"cer": 0.73, "baseline": 0.74}, True, "val/cer less 0.02"),  # no interval: a fixed margin
        ({"cer": 0.72, "baseline": 0.74}, False, ""),
        ({"cer": 0.7}, None, ""),  # no baseline, no outputs: not judged
    ],
)
def test_each_rule_and_its_threshold(numbers, collapsed, phrase):
    judged = judge(**numbers)
    assert judged.collapsed is collapsed
    assert phrase in " ".join(judged.reasons)


def test_a_run_row_is_judged_by_its_predictions_else_its_metrics(tmp_path):
    rows = epochs([0.9, 0.4])
    for r in rows:
        r.update({"val/cer_baseline": 0.8, "val/distinct": 0.1})
    write_run(tmp_path, "no-file", rows)
    write_run(tmp_path, "with-file", rows, predictions=fixture_predictions("a"))
    table = load_runs(tmp_path).set_index("name")
    by_metrics = collapse_of(table.loc["no-file"], None)
    assert by_metrics.collapsed and by_metrics.distinct == 0.1 and math.isnan(by_metrics.top_share)
    from analysis.predictions import read_predictions

    by_file = collapse_of(table.loc["with-file"], read_predictions(tmp_path / "with-file" / "val_predictions.csv"))
    assert by_file.collapsed is False and by_file.distinct > 0.5  # the file wins over the logged share
