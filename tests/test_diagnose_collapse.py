"""Diagnose: `collapsed` before the fitting verdicts, with its numbers and advice that fits the run; what CERs of 1.0
and above 1 mean; the baseline named; references with their spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from runfolders import TINY, constant_predictions, epochs, fixture_predictions, write_run

from analysis.diagnose import ctc_vs_joint, diagnose, length_note
from analysis.diagnose.collapse import collapse_advice
from trainer.config import load_config

STUCK = dict(  # flat and high: `stuck` by the fitting rules alone
    train_cer=[0.96, 0.93, 0.92, 0.92, 0.91, 0.92],
    val_cer=[0.97, 0.95, 0.94, 0.94, 0.94, 0.93],
)


def collapsed_run(root: Path, overrides=(), predictions=None) -> Path:
    rows = epochs(STUCK["val_cer"], train_cer=STUCK["train_cer"], ctc_greedy=[1.0] * 6)
    for r in rows:
        r.update({"val/cer_baseline": 0.91, "val/distinct": 1 / 60})
    preds = predictions if predictions is not None else constant_predictions(60, hyp="ٱلْٱلْٱلْ")
    return write_run(root, "flat", rows, list(overrides), predictions=preds)


def test_a_collapsed_run_is_named_so_before_stuck_with_its_numbers(tmp_path: Path):
    md = diagnose(collapsed_run(tmp_path)).with_suffix(".md").read_text(encoding="utf-8")
    assert "**Verdict: collapsed**" in md and "Verdict: stuck" not in md
    assert "100% of the clips get the same output ('ٱلْٱلْٱلْ'; above 50%)" in md
    assert "distinct outputs 2% of the clips" in md and "baseline 0.910 (the best constant output)" in md
    assert "from val_predictions.csv (the best epoch, 6)" in md
    assert "a larger model.ctc_weight (0.5 now)" in md and "python -m launch sanity" in md


def test_a_run_that_learned_is_not_collapsed(tmp_path: Path):
    rows = epochs([0.9, 0.7, 0.5, 0.4, 0.35], train_cer=[0.85, 0.6, 0.4, 0.3, 0.25])
    for r in rows:
        r.update({"val/cer_baseline": 0.9})
    run = write_run(tmp_path, "learns", rows, predictions=fixture_predictions("a"))
    md = diagnose(run).with_suffix(".md").read_text(encoding="utf-8")
    assert "Verdict: collapsed" not in md and "**Verdict: " in md


def test_advice_never_raises_a_weight_at_its_maximum():
    cfg = load_config("small", [*TINY, "model.ctc_weight=1", "decode.ctc_weight=1"])
    assert "model.ctc_weight" not in collapse_advice(cfg)
    text = ctc_vs_joint(0.45, 0.30, cfg=cfg)  # the search is worse than greedy CTC
    assert "the decoder takes no part in decoding" in text and "not the decoder" in text
    assert "the decoder hurts" not in text and "larger decode.ctc_weight" not in text
    poor_ctc = ctc_vs_joint(
        0.30, 0.70, cfg=load_config("small", [*TINY, "model.ctc_weight=1", "decode.ctc_weight=0.3"])
    )
    assert "CTC alone is poor" in poor_ctc and "larger model.ctc_weight" not in poor_ctc
    rows = [{"ref_ids": [1] * 5, "hyp_ids": [2] * 8}]
    assert "larger decode.ctc_weight" not in length_note(rows, cfg) and "smaller decode.penalty" in length_note(
        rows, cfg
    )
    assert "larger decode.ctc_weight" in length_note(rows, load_config("small", [*TINY, "decode.ctc_weight=0.3"]))
    no_smoothing = load_config("small", [*TINY, "decode.ctc_weight=0.3", "model.label_smoothing=0"])
    assert "less label smoothing" not in ctc_vs_joint(0.45, 0.30, cfg=no_smoothing)
    assert "noise-control run" in collapse_advice(load_config("small", [*TINY, "train.noise_input=true"]))


def test_cer_of_one_means_empty_outputs_and_above_one_insertions():
    empty = ctc_vs_joint(0.8, 1.0, empty_ctc=1.0)
    assert "A CTC-greedy CER of 1.000 means empty outputs" in empty and "100% of the clips get no token" in empty
    assert "what empty outputs give" in ctc_vs_joint(0.8, 1.0)
    above = ctc_vs_joint(1.35, 0.9)
    assert "val/cer 1.350 is above 1" in above and "insertions count as errors" in above
    assert "above 1" not in ctc_vs_joint(0.8, 0.9)


def test_the_baseline_is_named_with_the_gap(tmp_path: Path):
    assert "val/cer_baseline 0.910, is the CER of the best constant output" in ctc_vs_joint(0.4, 0.5, baseline=0.91)
    assert "beats it by 0.510" in ctc_vs_joint(0.4, 0.5, baseline=0.91)
    md = diagnose(collapsed_run(tmp_path)).with_suffix(".md").read_text(encoding="utf-8")
    assert "val/cer 0.930 does not beat it (+0.020)" in md
    assert "A CTC-greedy CER of 1.000 means empty outputs" in md  # every ctc_hyp of the file is empty


def test_worst_clips_show_references_with_their_spaces(tmp_path: Path):
    preds = fixture_predictions("a")
    md = diagnose(collapsed_run(tmp_path, predictions=preds)).with_suffix(".md").read_text(encoding="utf-8")
    spaced = [r[2] for r in preds if " " in r[2]]
    assert spaced and any(f"| {ref} |" in md for ref in spaced)
    assert "From val_predictions.csv (the best epoch, 6): 60 clips" in md


def test_a_run_trained_on_noise_is_collapsed_and_export_best_refuses_it(tiny_config, tmp_path: Path):
    """The noise control, trained for real: the frames carry nothing, so the verdict and the export must say so."""
    from analysis.export import ExportRefused, export_best
    from trainer.train import train

    tiny_config.train.noise_input, tiny_config.train.max_epochs = True, 3
    run = train(tiny_config, name="noise", verbose=False).run_dir
    md = diagnose(run).with_suffix(".md").read_text(encoding="utf-8")
    assert "**Verdict: collapsed**" in md, md
    assert "noise-control run" in md
    out = tmp_path / "best.yaml"
    with pytest.raises(ExportRefused, match="the best run noise is collapsed"):
        export_best(run.parent, out)
    assert not out.exists()
    export_best(run.parent, out, force=True)
    assert load_config(out).train.noise_input and "Exported with --force although collapsed" in out.read_text("utf-8")
