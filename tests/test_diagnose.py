"""Diagnose: each section on crafted metric files (verdicts, gradient flow, CTC vs joint, worst clips, confusions,
hyperparameter sanity), and the whole report, from the run's files and from decoding a real checkpoint."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest
from runfolders import TINY, epochs, write_run

from analysis.diagnose import (
    confusion_heatmap,
    confusion_matrix,
    confusions_from_csv,
    ctc_vs_joint,
    diagnose,
    error_kind,
    fitting_verdict,
    gradient_flow,
    hyperparameter_checks,
)
from trainer.config import load_config
from trainer.errors import DataError

# --------------------------------------------------------------------------- 2. verdicts

CASES = {
    # train CER falls to near zero, val CER bottoms out at 0.50 (epoch 6) and climbs back
    "over-fitting": dict(
        train_cer=[0.9, 0.7, 0.5, 0.35, 0.25, 0.15, 0.1, 0.07, 0.05],
        val_cer=[0.95, 0.8, 0.7, 0.6, 0.55, 0.50, 0.52, 0.56, 0.60],
    ),
    # train CER still high (0.45) and still falling; val follows it
    "under-fitting": dict(
        train_cer=[0.95, 0.9, 0.82, 0.74, 0.66, 0.58, 0.52, 0.48, 0.45],
        val_cer=[0.97, 0.93, 0.86, 0.79, 0.71, 0.64, 0.58, 0.55, 0.52],
    ),
    # both high and flat
    "stuck": dict(
        train_cer=[0.96, 0.93, 0.92, 0.92, 0.91, 0.92, 0.91, 0.91, 0.91],
        val_cer=[0.97, 0.95, 0.94, 0.94, 0.94, 0.93, 0.94, 0.93, 0.94],
    ),
    # both fall, small gap
    "healthy": dict(
        train_cer=[0.9, 0.7, 0.5, 0.35, 0.25, 0.18, 0.13, 0.10, 0.08],
        val_cer=[0.95, 0.75, 0.56, 0.42, 0.32, 0.25, 0.20, 0.17, 0.15],
    ),
}


@pytest.mark.parametrize("kind", list(CASES))
def test_each_verdict_is_detected_with_its_numbers(kind: str):
    case = CASES[kind]
    verdict = fitting_verdict(epochs(case["val_cer"], train_cer=case["train_cer"]))
    assert verdict.kind == kind
    assert verdict.numbers["val_cer_last"] == case["val_cer"][-1]
    assert verdict.numbers["train_cer_last"] == case["train_cer"][-1]
    gap = case["val_cer"][-1] - case["train_cer"][-1]
    assert verdict.numbers["gap"] == pytest.approx(gap)
    assert f"gap val - train CER at epoch 9: {gap:+.3f}" in verdict.evidence
    assert verdict.advice


def test_verdict_numbers_name_the_window_and_the_best_epoch():
    v = fitting_verdict(epochs(CASES["over-fitting"]["val_cer"], train_cer=CASES["over-fitting"]["train_cer"]))
    assert "val/cer 0.520 -> 0.600 over epochs 7-9 (rose 15.4%)" in v.evidence  # the last third
    assert "best val/cer 0.500 at epoch 6" in v.evidence
    assert any("rose +0.100 above its best (epoch 6)" in e for e in v.evidence)
    assert (v.numbers["epoch_best"], v.numbers["window_start"]) == (6, 7)


def test_verdicts_without_train_cer_use_the_loss():
    val = [0.95, 0.8, 0.65, 0.55, 0.5, 0.52, 0.56, 0.6]
    falling_loss = [60, 45, 35, 28, 22, 17, 13, 10]
    assert fitting_verdict(epochs(val, train_loss=falling_loss)).kind == "over-fitting"  # val rises, loss falls
    flat = fitting_verdict(epochs([0.97, 0.95, 0.95, 0.94, 0.95, 0.94], train_loss=[80, 79, 79, 79, 78, 79]))
    assert flat.kind == "stuck" and any("train/cer not logged" in e for e in flat.evidence)
    improving = fitting_verdict(epochs([0.99, 0.95, 0.9, 0.8, 0.7, 0.6], train_loss=[80, 70, 60, 50, 45, 40]))
    assert improving.kind == "under-fitting"


def test_too_few_validations():
    assert fitting_verdict(epochs([0.9, 0.8], train_cer=[0.9, 0.7])).kind == "not enough data"


def test_verdict_does_not_depend_on_unrelated_metrics():
    rows = epochs(CASES["healthy"]["val_cer"], train_cer=CASES["healthy"]["train_cer"])
    noisy = [{**r, "train/lr": 0.5, "val/loss": 99.0, "grad_norm/encoder": 1e-9} for r in rows]
    assert fitting_verdict(noisy) == fitting_verdict(rows)


# --------------------------------------------------------------------------- 3. gradient flow


def by_topic(findings) -> dict:
    return {f.topic: f for f in findings}


def test_gradient_flow_flags_frozen_zero_vanishing_and_unexpected_gradients():
    n = 4
    grad = {
        "proj_encoder": [1e-2, 1e-4, 1e-5, 2e-6],  # vanishing against the encoder's 1.0
        "adapter": [0.0] * n,  # zero
        "encoder": [1.0] * n,
        "decoder": [0.8] * n,
        "ctc": [0.5, 0.05, 0.005, 0.004],  # fell by more than 100x: a note
    }
    cfg = load_config("small", [*TINY, "model.freeze.frontend=true", "model.adapter=linear"])
    flags = by_topic(gradient_flow(epochs([0.5] * n, grad=grad), cfg))
    assert flags["frontend_stem"].level == "ok" and "frozen by model.freeze.frontend" in flags["frontend_stem"].message
    assert flags["proj_encoder"].level == "warning" and flags["proj_encoder"].message.startswith("vanishing: 2.00e-06")
    assert "2.0e-06 of encoder's 1.00e+00" in flags["proj_encoder"].message
    assert flags["adapter"].level == "warning" and "zero gradient at epoch 4" in flags["adapter"].message
    assert flags["encoder"].level == "ok" and flags["decoder"].level == "ok"
    assert flags["ctc"].level == "note" and "fell from 5.00e-01" in flags["ctc"].message
    # not frozen but no gradient logged; frozen but gradients logged
    unfrozen = by_topic(gradient_flow(epochs([0.5] * n, grad=grad), load_config("small", TINY)))
    assert (
        unfrozen["frontend_last"].level == "warning"
        and "although the config trains it" in unfrozen["frontend_last"].message
    )
    leaking = dict(grad, frontend_last=[0.3] * n)
    frozen = by_topic(gradient_flow(epochs([0.5] * n, grad=leaking), cfg))
    assert (
        frozen["frontend_last"].level == "warning"
        and "frozen by model.freeze.frontend but" in frozen["frontend_last"].message
    )


# --------------------------------------------------------------------------- 4. CTC vs joint


@pytest.mark.parametrize(
    ("joint", "ctc", "phrase"),
    [
        (0.80, 0.81, "problem lies upstream"),
        (0.20, 0.21, "The two agree"),
        (0.30, 0.45, "add context that the CTC alignment alone lacks"),
        (0.30, 0.70, "CTC alone is poor"),
        (0.45, 0.30, "the decoder hurts"),
    ],
)
def test_ctc_vs_joint_gap_text(joint, ctc, phrase):
    text = ctc_vs_joint(joint, ctc)
    assert phrase in text
    assert (
        f"CTC-only greedy CER {ctc:.3f} vs joint beam-search CER {joint:.3f} (CTC - joint = {ctc - joint:+.3f})" in text
    )


# --------------------------------------------------------------------------- 6. confusions


def test_confusion_matrix_and_kinds_on_hand_made_counts(tmp_path: Path):
    counts = Counter({("بَ", "بِ"): 5, ("بَ", "مَ"): 3, ("تُ", None): 2, (None, "ا"): 4, ("ل", "ن"): 1})
    rows, cols, m = confusion_matrix(counts, top=3)
    assert rows == ["بَ", "بِ", "ا", "∅"] and cols == ["بَ", "بِ", "ا", "∅"]  # the three tokens most involved
    assert m[0, 1] == 5 and m[3, 2] == 4 and m.sum() == 9  # (بَ->مَ), (تُ->∅), (ل->ن) fall outside the top 3
    assert error_kind("بَ", "بِ") == "diacritic" and error_kind("بَ", "مَ") == "letter"
    assert error_kind("أَ", "اَ") == "letter"  # the hamza seat belongs to the letter
    assert error_kind("تُ", None) == "deletion" and error_kind(None, "ا") == "insertion"
    png = confusion_heatmap(counts, tmp_path / "c.png", top=3)
    assert png.stat().st_size > 5000


def test_confusions_csv_round_trip_and_errors(tmp_path: Path):
    run = write_run(tmp_path, "r", epochs([0.5]), confusions=[["substitution", "بَ", "بِ", 5], ["deletion", "تُ", "", 2],
                                                              ["insertion", "", "ا", 4]])  # fmt: skip
    assert confusions_from_csv(run / "confusions.csv") == Counter({("بَ", "بِ"): 5, ("تُ", None): 2, (None, "ا"): 4})
    (run / "confusions.csv").write_text("kind,ref,hyp,count\nsubstitution,a,b,many\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 2: count 'many' is not an integer"):
        confusions_from_csv(run / "confusions.csv")


# --------------------------------------------------------------------------- 7. hyperparameters


def warnings_of(overrides: list[str], **kwargs) -> dict:
    cfg = load_config("small", [*TINY, *overrides])
    return {f.topic: f for f in hyperparameter_checks(cfg, **kwargs) if f.level == "warning"}


@pytest.mark.parametrize("name", ["small", "base"])
def test_the_shipped_configs_raise_no_warning(name: str):
    assert [str(f) for f in hyperparameter_checks(load_config(name), vocab_size=228) if f.level == "warning"] == []


@pytest.mark.parametrize(
    ("overrides", "kwargs", "topic", "phrase"),
    [
        (["optim.warmup_epochs=20", "train.max_epochs=20"], {}, "optim.warmup_epochs", "never reaches its peak"),
        (["optim.warmup_epochs=8", "train.max_epochs=20"], {}, "optim.warmup_epochs", "takes 40% of training"),
        (["optim.warmup_epochs=0", "optim.lr=1e-3"], {}, "optim.warmup_epochs", "no warm-up"),
        (["optim.lr=5e-3"], {}, "optim.lr", "above the usual range for training from scratch"),
        (["optim.lr=2e-3", "model.pretrained.path=vsr.pth"], {}, "optim.lr", "above the usual range for fine-tuning"),
        (["optim.lr=1e-5"], {}, "optim.lr", "below the usual range"),
        (["model.ctc_weight=0", "decode.ctc_weight=0"], {}, "model.ctc_weight", "no CTC loss"),
        (["model.ctc_weight=1", "decode.ctc_weight=0.3"], {}, "model.ctc_weight", "never trained"),
        (["model.ctc_weight=0.05"], {}, "model.ctc_weight", "the attention loss dominates"),
        (["model.ctc_weight=0", "decode.ctc_weight=0.3"], {}, "decode.ctc_weight", "never trained"),
        (["decode.beam_size=300"], {"vocab_size": 228}, "decode.beam_size", "not smaller than the vocabulary"),
        (["train.batch_size=2", "train.accumulate=2"], {}, "train.accumulate", "effective batch of 4 clips"),
        (["train.batch_size=64"], {"steps_per_epoch": 3}, "train.accumulate", "leaves 3 optimizer steps"),
        (["model.freeze.frontend=true"], {}, "model.freeze.frontend", "not loaded from a checkpoint"),
        (["model.freeze.encoder_layers=-1"], {}, "model.freeze.encoder_layers", "not loaded from a checkpoint"),
        (["augment.time_mask_window=20"], {}, "augment.time_mask_window", "20 of every 25 frames"),
    ],
)
def test_each_hyperparameter_warning_with_its_reason(overrides, kwargs, topic, phrase):
    found = warnings_of(overrides, **kwargs)
    assert topic in found, found
    assert phrase in found[topic].message + found[topic].reason
    assert found[topic].reason  # every warning says why


def test_frozen_part_with_gradients_and_pretrained_frozen_frontend():
    grad = {"frontend_last": [0.2, 0.2, 0.2], "encoder": [1.0] * 3}
    found = warnings_of(
        ["model.freeze.frontend=true", "model.pretrained.path=vsr.pth"], rows=epochs([0.5] * 3, grad=grad)
    )
    assert "model.freeze.frontend" in found and "receives gradients" in found["model.freeze.frontend"].message
    assert "not loaded" not in found["model.freeze.frontend"].message  # it is loaded: that is fine
    pre_beam = {
        f.topic: f for f in hyperparameter_checks(load_config("small", ["decode.beam_size=160"]), vocab_size=228)
    }
    assert (
        pre_beam["decode.beam_size"].level == "note"
        and "covers the whole vocabulary" in pre_beam["decode.beam_size"].message
    )


# --------------------------------------------------------------------------- the report


def crafted_run(root: Path) -> Path:
    case = CASES["over-fitting"]
    grad = {"frontend_stem": [0.5] * 9, "frontend_last": [0.4] * 9, "proj_encoder": [1e-6] * 9, "encoder": [1.0] * 9,
            "decoder": [0.9] * 9, "ctc": [0.7] * 9}  # fmt: skip
    samples = [["00017", 31, "بِسْمِ", "بَسَمَ", 0.667, -12.5], ["00004", 35, "قَالَ", "قَلَ", 0.25, -8.1]]
    confusions = [["substitution", "بِ", "بَ", 7], ["substitution", "سْ", "سَ", 4], ["deletion", "ا", "", 3],
                  ["insertion", "", "لْ", 2], ["substitution", "قَ", "كَ", 1]]  # fmt: skip
    return write_run(root, "overfit-run", epochs(case["val_cer"], train_cer=case["train_cer"], grad=grad),
                     ["optim.lr=5e-3"], samples=samples, confusions=confusions)  # fmt: skip


def test_report_from_the_run_files(tmp_path: Path):
    run = crafted_run(tmp_path)
    page = diagnose(run)
    assert page == run / "diagnose" / "report.html"
    md = (run / "diagnose" / "report.md").read_text(encoding="utf-8")
    for heading in ["1. Learning curves", "2. Collapse, over- or under-fitting", "3. Gradient flow", "4. CTC-only greedy",
                    "5. Worst validation clips (up to 10)", "6. Token confusions", "7. Hyperparameter sanity", "8. Sanity model"]:  # fmt: skip
        assert f"## {heading}" in md
    assert "**Verdict: over-fitting**" in md
    assert "no checkpoint" in md  # it says where sections 4 to 6 come from
    assert "proj_encoder: vanishing" in md and "optim.lr: 0.005 is above the usual range" in md
    assert "| 00017 | 31 | بِسْمِ | بَسَمَ |" in md  # the worst clip from samples/epoch_006.csv (best epoch 6)
    assert "Errors by kind: diacritic 11 (65%), deletion 3 (18%), insertion 2 (12%), letter 1 (6%)." in md
    pngs = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", md)
    assert sorted(pngs) == ["confusions.png", "gradient_flow.png", "learning_curves.png"]
    assert all((run / "diagnose" / p).stat().st_size > 5000 for p in pngs)
    html = page.read_text(encoding="utf-8")
    assert html.count('<img src="data:image/png;base64,') == 3  # the page holds its plots
    assert '<td class="ar" dir="rtl" lang="ar">بِسْمِ</td>' in html
    assert '<p class="verdict">Verdict: over-fitting</p>' in html


def test_report_needs_metrics(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no metrics.jsonl"):
        diagnose(tmp_path / "empty")


@pytest.mark.slow
def test_report_from_decoding_a_real_checkpoint(tmp_path: Path):
    """A real (tiny) run; diagnose decodes its validation split again with best.pt: frames shown, confusions counted."""
    from trainer.synthetic import write_dataset
    from trainer.train import train

    write_dataset(tmp_path / "data", 10, seed=2, fmt="npy")
    cfg = load_config("small", [*TINY, f"data.root={tmp_path / 'data'}", f"data.cache_dir={tmp_path / 'cache'}",
                                "data.image_size=32", "augment.crop_size=24", "train.max_epochs=2", "train.batch_size=4",
                                f"train.run_dir={tmp_path / 'runs'}", "data.val_ratio=0.3", "data.test_ratio=0",
                                "decode.beam_size=2", "train.train_cer_clips=3"])  # fmt: skip
    result = train(cfg, name="real", verbose=False)
    page = diagnose(result.run_dir, tmp_path / "report", worst_k=2, checkpoint="last")
    md = page.with_suffix(".md").read_text(encoding="utf-8")
    assert "the last checkpoint (epoch 2), decoding the 3 validation clips again" in md
    clips = sorted((tmp_path / "report" / "clips").glob("*.png"))
    assert len(clips) == 2 and all(f"![](clips/{c.name})" in md for c in clips)
    assert "## 6. Token confusions" in md and "confusions.png" in md


@pytest.mark.parametrize(
    ("hyp_len", "phrase"),
    [(4, "too short, deletions dominate"), (10, "(100%)."), (15, "too long, insertions dominate")],
)
def test_length_note(hyp_len: int, phrase: str):
    from analysis.diagnose import length_note

    rows = [
        {"ref_ids": [1] * 5, "hyp_ids": [2] * (hyp_len // 2)},
        {"ref_ids": [1] * 5, "hyp_ids": [2] * (hyp_len - hyp_len // 2)},
    ]
    text = length_note(rows)
    assert text.startswith(f"The hypotheses hold {hyp_len} tokens for 10 reference tokens") and phrase in text
