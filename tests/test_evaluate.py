"""The one evaluation path: scoring hand-made rows, the constant baseline, the tokens dropped, a split decoded."""

from __future__ import annotations

import itertools

import editdistance
import pytest
import torch
from conftest import write_tiny_dataset

from trainer.config import DataConfig
from trainer.data import load_dataset
from trainer.evaluate import (
    EXACT_PAIRS,
    EvalSet,
    best_constant,
    clip_row,
    eval_set,
    evaluate,
    metric_names,
    output_ids,
    score,
)
from trainer.metrics import METRICS
from trainer.model import build_model
from trainer.search import Hypothesis
from trainer.text import Tokenizer
from trainer.tracking import PREDICTION_COLUMNS

TOKENIZER = Tokenizer.from_config(DataConfig())
EOS = TOKENIZER.eos


def row(ref: list[int], hyp: list[int], ctc: list[int] | None = None) -> dict:
    return {"ref_ids": ref, "hyp_ids": hyp, "ctc_ids": hyp if ctc is None else ctc}


def test_one_constant_hypothesis_gives_distinct_one_over_n():
    refs = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10], [11, 12]]
    constant = score([row(r, [1, 2]) for r in refs], TOKENIZER)
    assert constant["val/distinct"] == pytest.approx(1 / 5)
    varied = score([row(r, r[:1]) for r in refs], TOKENIZER)
    assert varied["val/distinct"] == 1.0
    empty = score([row(r, []) for r in refs], TOKENIZER)  # the empty output is one output too
    assert empty["val/distinct"] == pytest.approx(1 / 5) and empty["val/cer"] == 1.0


def test_scores_are_the_error_rates_of_the_rows():
    rows = [row([1, 2, 3, 4], [1, 2], ctc=[1, 2, 3, 4]), row([5, 6], [5, 6, 7, 8], ctc=[])]
    m = score(rows, TOKENIZER, baseline=[1, 2, 3])
    assert m["val/cer"] == pytest.approx((2 + 2) / 6)
    assert m["val/cer_ctc_greedy"] == pytest.approx((0 + 2) / 6)
    assert m["val/hyp_len_ratio"] == pytest.approx(6 / 6)
    assert m["val/cer_baseline"] == pytest.approx((1 + 3) / 6)  # [1,2,3] against each reference
    assert "val/wer" not in m  # no word separator in this vocabulary
    assert set(m) == {n for n, spec in METRICS.items() if spec.validation and n.startswith("val/")} - {
        "val/wer",
        "val/loss",
        "val/loss_ctc",
        "val/loss_att",
    }


def test_metric_names_come_from_the_registry():
    assert metric_names("train") == {"train/cer": "cer"}  # the registry logs only train/cer on training clips
    test_names = metric_names("test")
    assert test_names["test/cer"] == "cer" and "test/distinct" in test_names  # another split: val's names
    assert len(test_names) == len([n for n, m in METRICS.items() if m.validation and n.startswith("val/")])


def brute_force_constant(targets: list[list[int]]) -> tuple[int, ...]:
    candidates = [(), *sorted({tuple(t) for t in targets})]
    return min(candidates, key=lambda c: (sum(editdistance.eval(t, list(c)) for t in targets), len(c), c))


def test_best_constant_is_the_training_transcript_or_empty_with_the_lowest_cer():
    common = [1, 2, 3]
    targets = [common, common, [1, 2, 3, 4], [2, 3], [9, 9, 9, 9, 9, 9], [1, 2]]
    assert best_constant(targets) == list(brute_force_constant(targets)) == common
    unrelated = [[i, i + 1, i + 2] for i in range(1, 60, 3)]  # no token shared: every transcript ties
    assert best_constant(unrelated) == [1, 2, 3]  # ties: the shorter, then the smaller
    assert best_constant([]) == []  # no training clips: the empty output


def test_best_constant_on_a_large_set_is_deterministic_and_never_worse_than_empty():
    rng = torch.Generator().manual_seed(0)
    targets = [torch.randint(1, 30, (int(torch.randint(3, 9, (), generator=rng)),), generator=rng).tolist()
               for _ in range(700)]  # fmt: skip
    targets += [[5, 6, 7]] * 40  # a frequent short transcript: the constant to find
    assert len({tuple(t) for t in targets}) * len(targets) > EXACT_PAIRS  # the subsampled path
    chosen = best_constant(targets)
    assert chosen == best_constant(targets)  # no random draw
    assert chosen == [5, 6, 7] == list(brute_force_constant(targets))


def test_blank_and_eos_are_dropped_from_every_output(tmp_path):
    assert output_ids([3, 0, 4, EOS, 5], TOKENIZER) == [3, 4, 5]
    clips = tiny_eval_set(tmp_path)
    i = clips.indices[0]
    ref = clips.data.targets[i]
    best = Hypothesis([EOS, ref[0], 0, *ref[1:], EOS], -1.5, {})  # a blank in the middle (att_greedy can emit one)
    greedy = Hypothesis([EOS, 0, EOS], -2.0, {})
    r = clip_row(clips, i, best, greedy)
    assert r["hyp_ids"] == ref and r["edits"] == 0 and r["cer"] == 0.0
    assert r["ctc_ids"] == [] and r["ctc_edits"] == len(ref) and r["ctc_hyp"] == ""
    assert r["ref"] == clips.data.texts[i] and " " in r["ref"]  # the label's words, spaces between them
    assert set(PREDICTION_COLUMNS) <= set(r)


def tiny_eval_set(tmp_path) -> EvalSet:
    root = write_tiny_dataset(tmp_path / "data", clips=8)
    cfg = DataConfig(root=str(root), image_size=24, val_ratio=0.25, test_ratio=0.0, cache_dir=str(tmp_path / "cache"))
    data = load_dataset(cfg, TOKENIZER, log=lambda _: None)
    return eval_set(data, TOKENIZER, data.split(cfg), "val")


@pytest.mark.parametrize("method", ["beam", "ctc_greedy", "att_greedy"])
def test_evaluate_decodes_every_clip_in_order_with_ctc_greedy_beside(tiny_config, method):
    from trainer.device import select_precision

    tokenizer = Tokenizer.from_config(tiny_config.data)
    data = load_dataset(tiny_config.data, tokenizer, log=lambda _: None)
    clips = eval_set(data, tokenizer, data.split(tiny_config.data), "all")
    torch.manual_seed(0)
    model = build_model(tiny_config.model, tokenizer.vocab_size)
    device = torch.device("cpu")
    out = evaluate(model, clips, tiny_config, device, select_precision("fp32", device), method=method, prefix="all")
    assert [r["id"] for r in out.rows] == [data.ids[i] for i in clips.indices]
    for r in out.rows:
        assert all(t not in (TOKENIZER.blank, EOS) for t in itertools.chain(r["hyp_ids"], r["ctc_ids"]))
        assert r["edits"] == editdistance.eval(r["ref_ids"], r["hyp_ids"]) and r["ref_tokens"] == len(r["ref_ids"])
    if method == "ctc_greedy":
        assert all(r["hyp_ids"] == r["ctc_ids"] for r in out.rows)
    edits = sum(r["edits"] for r in out.rows)
    assert out.metrics["all/cer"] == edits / sum(r["ref_tokens"] for r in out.rows)
    assert {"all/loss", "all/loss_ctc", "all/loss_att", "all/cer_baseline"} <= set(out.metrics)
