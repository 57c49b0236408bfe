"""The training loop end to end on a tiny model and dataset: files, resume, failures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from analysis.plots import run_plots
from trainer import train as T
from trainer.config import load_config
from trainer.errors import TrainingFailed
from trainer.metrics import METRICS
from trainer.model import GRAD_GROUPS, LipReader
from trainer.tracking import read_metrics, read_summary

# every metric of the registry an epoch logs (val/wer needs data.word_separator), and the gradient groups
EPOCH_KEYS = {"epoch"} | {name for name in METRICS if name != "val/wer"} | {
    f"grad_norm/{g}" for g in GRAD_GROUPS if g != "adapter"
}


def test_one_run_writes_every_file(tiny_config):
    finished = []

    def plots(run_dir):
        finished.append(read_summary(run_dir)["state"])  # called before the run's end is written
        return run_plots(run_dir)

    result = T.train(tiny_config, name="r1", verbose=False, on_finish=plots)
    run = result.run_dir
    assert result.state == "finished" and finished == ["running"]
    for rel in (
        "config.yaml",
        "metrics.jsonl",
        "summary.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "samples/epoch_001.csv",
        "samples/epoch_002.csv",
        "confusions.csv",
        "val_predictions.csv",
        "plots/learning_curves.png",
    ):
        assert (run / rel).exists(), rel
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) == EPOCH_KEYS, EPOCH_KEYS ^ set(rows[0])
    assert rows[-1]["val/cer"] >= 0.0 and rows[0]["train/lr"] > 0
    summary = read_summary(run)
    assert summary["state"] == "finished" and summary["epochs"] == 2 and summary["select_metric"] == "val/cer"
    best = min(rows, key=lambda r: r["val/cer"])
    assert summary["val/cer_best"] == best["val/cer"] and summary["epoch_best"] == best["epoch"]
    for name in ("val/cer", "val/distinct", "val/cer_baseline", "val/loss", "train/cer"):
        assert summary[f"{name}@best"] == best[name], name
    header = (run / "samples/epoch_002.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header == "id,frames,ref,hyp,cer,score"
    assert (run / "confusions.csv").read_text(encoding="utf-8").startswith("kind,ref,hyp,count")
    ckpt = torch.load(run / "checkpoints/last.pt", weights_only=True)
    assert {"model", "optimizer", "scaler", "rng", "step", "epoch", "config"} <= set(ckpt) and ckpt["epoch"] == 2
    assert load_config(run / "config.yaml").model.encoder.dim == 16


def _curve(run):
    return [(r["epoch"], round(r["train/loss"], 5), round(r["val/cer"], 5)) for r in read_metrics(run)]


def _stop_at_fifth_check(monkeypatch) -> type:
    """Make the loop see a SIGTERM at its fifth stop check (inside epoch 2 here); returns the real StopRequest."""
    real_stop = T.StopRequest
    calls = {"n": 0}

    class StopMidEpoch(real_stop):
        @property
        def signal(self):
            calls["n"] += 1
            return "SIGTERM" if calls["n"] == 5 else None

        @signal.setter
        def signal(self, value):
            pass

    monkeypatch.setattr(T, "StopRequest", StopMidEpoch)
    return real_stop


def test_resume_after_a_stop_gives_the_same_metrics(tiny_config, monkeypatch):
    tiny_config.train.max_epochs = 3
    full = T.train(tiny_config, name="full", verbose=False)

    # Stop in the middle of epoch 2 as SIGTERM would, then resume.
    real_stop = _stop_at_fifth_check(monkeypatch)
    stopped = T.train(tiny_config, name="cut", verbose=False)
    assert stopped.state == "stopped" and read_summary(stopped.run_dir)["state"] == "stopped"
    monkeypatch.setattr(T, "StopRequest", real_stop)
    resumed = T.train(tiny_config, resume=stopped.run_dir, verbose=False)
    assert resumed.state == "finished"
    assert _curve(resumed.run_dir) == _curve(full.run_dir)


def test_nan_losses_are_skipped_then_fail_the_run(tiny_config, monkeypatch):
    tiny_config.train.max_bad_steps = 2
    real_forward = LipReader.forward

    def nan_forward(self, *args):
        out = real_forward(self, *args)
        out.loss = out.loss * float("nan")
        return out

    monkeypatch.setattr(LipReader, "forward", nan_forward)
    with pytest.raises(TrainingFailed, match="2 optimizer steps in a row had a NaN/inf loss"):
        T.train(tiny_config, name="nan", verbose=False)
    summary = read_summary(Path(tiny_config.train.run_dir) / "nan")
    assert summary["state"] == "failed" and "NaN" in summary["reason"]


def test_out_of_memory_fails_with_the_batch_shape(tiny_config, monkeypatch):
    def oom(self, *args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(LipReader, "forward", oom)
    with pytest.raises(TrainingFailed, match=r"out of GPU memory on a batch of \(4, \d+, 1, 16, 16\)"):
        T.train(tiny_config, name="oom", verbose=False)
    summary = read_summary(Path(tiny_config.train.run_dir) / "oom")
    assert summary["state"] == "failed" and "out of GPU memory" in summary["reason"]


def test_prune_hook_stops_the_run_as_pruned(tiny_config):
    tiny_config.train.max_epochs = 3
    seen = []
    result = T.train(
        tiny_config, name="p", verbose=False, prune=lambda epoch, m: seen.append(m["val/cer"]) or epoch >= 1
    )
    assert result.state == "pruned" and len(seen) == 1 and len(read_metrics(result.run_dir)) == 1
    assert read_summary(result.run_dir)["state"] == "pruned"


def test_noise_input_makes_the_frames_irrelevant(tiny_config, tmp_path):
    """With train.noise_input the run is the same whatever the frames are: the control the README reports."""
    import numpy as np

    tiny_config.train.noise_input = True
    tiny_config.train.train_cer_every = 0
    first = _curve(T.train(tiny_config, name="noise_a", verbose=False).run_dir)
    for clip in sorted((tmp_path / "data").glob("*.npy")):  # other frames, same labels and lengths
        np.save(clip, 255 - np.load(clip))
    second = _curve(T.train(tiny_config, name="noise_b", verbose=False).run_dir)
    tiny_config.train.noise_input = False
    real = _curve(T.train(tiny_config, name="frames", verbose=False).run_dir)
    assert first == second
    assert real != first  # and without the switch the frames do reach the model


def test_resume_from_the_frontend_cache_gives_the_same_metrics(tiny_config, monkeypatch):
    """A frozen frontend trains from its feature cache; a stop mid-epoch and --resume see the same views and masks."""
    tiny_config.model.freeze.frontend = True
    tiny_config.train.frontend_cache = "on"
    tiny_config.train.frontend_cache_views = 3
    tiny_config.train.max_epochs = 2
    tiny_config.train.train_cer_every = 0
    full = T.train(tiny_config, name="cached_full", verbose=False)
    assert read_summary(full.run_dir)["frontend_cache/used"] is True
    real_stop = _stop_at_fifth_check(monkeypatch)
    stopped = T.train(tiny_config, name="cached_cut", verbose=False)
    assert stopped.state == "stopped"
    partial = torch.load(stopped.run_dir / "checkpoints/last.pt", weights_only=True)["partial"]
    assert partial["epoch"] == 2 and partial["batch"] >= 1  # stopped inside epoch 2
    monkeypatch.setattr(T, "StopRequest", real_stop)
    resumed = T.train(tiny_config, resume=stopped.run_dir, verbose=False)
    assert resumed.state == "finished" and read_summary(resumed.run_dir)["frontend_cache/built"] is False
    assert _curve(resumed.run_dir) == _curve(full.run_dir)
