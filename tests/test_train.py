"""The training loop end to end on a tiny model and dataset: files, resume, failures."""

from __future__ import annotations

import csv
import json
import time
import types
from pathlib import Path

import pytest
import torch
from test_bad_inputs import run_cli

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


# --------------------------------------------------------------------------- train.select_metric


def scripted_validation(monkeypatch, values: dict[str, list[float]]) -> None:
    """Validation reports these values at its 1st, 2nd, ... call (the other metrics as decoded): selection without luck."""
    real = T.evaluate
    calls = {"n": 0}

    def evaluate(model, clips, cfg, *args, prefix="val", **kwargs):
        out = real(model, clips, cfg, *args, prefix=prefix, **kwargs)
        if prefix == "val":
            out.metrics.update({name: series[calls["n"]] for name, series in values.items()})
            calls["n"] += 1
        return out

    monkeypatch.setattr(T, "evaluate", evaluate)


def test_select_metric_picks_best_pt_by_that_metric(tiny_config, monkeypatch):
    tiny_config.train.max_epochs = 3
    tiny_config.train.train_cer_every = 0
    tiny_config.train.select_metric = "val/cer_ctc_greedy"
    scripted_validation(monkeypatch, {"val/cer": [0.3, 0.8, 0.9], "val/cer_ctc_greedy": [0.9, 0.5, 0.7]})
    run = T.train(tiny_config, name="ctc", verbose=False).run_dir
    assert torch.load(run / "checkpoints/best.pt", weights_only=True)["epoch"] == 2  # val/cer alone would keep 1
    summary = read_summary(run)
    assert summary["select_metric"] == "val/cer_ctc_greedy" and summary["epoch_best"] == 2
    assert summary["val/cer_ctc_greedy_best"] == 0.5 and summary["val/cer@best"] == 0.8
    assert "val/cer_best" not in summary  # the best of val/cer is not what this run kept
    rows = read_metrics(run)
    assert summary["val/distinct@best"] == rows[1]["val/distinct"]


def test_a_maximised_metric_selects_and_stops_early_by_its_goal(tiny_config, monkeypatch):
    tiny_config.train.max_epochs = 5
    tiny_config.train.train_cer_every = 0
    tiny_config.train.select_metric = "val/distinct"
    tiny_config.train.patience = 2
    scripted_validation(monkeypatch, {"val/distinct": [0.5, 0.9, 0.4, 0.3, 1.0]})
    result = T.train(tiny_config, name="distinct", verbose=False)
    summary = read_summary(result.run_dir)
    assert result.state == "finished" and summary["reason"] == "early stop: no better val/distinct for 2 validations"
    assert summary["epochs"] == 4 and summary["epoch_best"] == 2 and summary["val/distinct_best"] == 0.9
    assert torch.load(result.run_dir / "checkpoints/best.pt", weights_only=True)["epoch"] == 2


def test_eval_of_best_pt_prints_exactly_the_runs_best_val_cer(tiny_config, tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli

    tiny_config.train.max_epochs = 3
    run = T.train(tiny_config, name="e", verbose=False).run_dir
    summary = read_summary(run)
    out = tmp_path / "val.jsonl"
    result = CliRunner().invoke(cli, ["eval", "--checkpoint", str(run / "checkpoints/best.pt"), "--quiet",
                                      "--output", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"{'cer':<15}{summary['val/cer_best']:.4f}" in result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sum(r["edits"] for r in rows) / sum(r["ref_tokens"] for r in rows) == summary["val/cer_best"]
    with open(run / "val_predictions.csv", encoding="utf-8") as f:  # the run's table of that epoch, clip for clip
        saved = list(csv.DictReader(f))
    assert [(r["id"], r["hyp"], int(r["edits"]), r["ctc_hyp"]) for r in saved] == [
        (r["id"], r["hyp"], r["edits"], r["ctc_hyp"]) for r in rows
    ]
    assert list(saved[0]) == ["id", "frames", "ref", "hyp", "edits", "ref_tokens", "ctc_hyp", "ctc_edits"]


def test_best_pt_is_replaced_atomically(tiny_config, monkeypatch):
    """A full disk while the next best.pt is written leaves the previous one whole (it was never unlinked)."""
    import errno

    tiny_config.train.train_cer_every = 0
    scripted_validation(monkeypatch, {"val/cer": [0.9, 0.5]})  # epoch 2 improves: best.pt is written again
    real_save = torch.save
    writes = {"best": 0}

    def save(obj, f, *args, **kwargs):
        if Path(f).name.startswith(".best.pt."):
            writes["best"] += 1
            if writes["best"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(TrainingFailed, match="No space left on device"):
        T.train(tiny_config, name="full", verbose=False)
    best = Path(tiny_config.train.run_dir) / "full" / "checkpoints" / "best.pt"
    assert torch.load(best, weights_only=True)["epoch"] == 1


# --------------------------------------------------------------------------- stops: one rule, one resume


class Switch:
    """Off until `on()`: drives a fake clock (the time budget) or a fake signal (SIGTERM)."""

    def __init__(self, on: bool = False):
        self.is_on = on

    def on(self) -> None:
        self.is_on = True


def stop_by(monkeypatch, cause: str, switch: Switch) -> None:
    """When the switch turns on, the loop sees its time budget spent (`budget`: a clock an hour ahead) or a SIGTERM."""
    if cause == "budget":
        clock = types.SimpleNamespace(monotonic=lambda: time.monotonic() + (3600 if switch.is_on else 0))
        monkeypatch.setattr(T, "time", clock)
        return

    class Signalled(T.StopRequest):
        @property
        def signal(self):
            return "SIGTERM" if switch.is_on else None

        @signal.setter
        def signal(self, value):
            pass

    monkeypatch.setattr(T, "StopRequest", Signalled)


def switch_on_at_training(monkeypatch, switch: Switch) -> None:
    real = T.train_epoch

    def train_epoch(*args, **kwargs):
        switch.on()  # the budget runs out, or the signal arrives, in the first step
        return real(*args, **kwargs)

    monkeypatch.setattr(T, "train_epoch", train_epoch)


def switch_on_at_validation(monkeypatch, switch: Switch) -> None:
    real = T.evaluate

    def evaluate(*args, **kwargs):
        out = real(*args, **kwargs)
        switch.on()  # the budget runs out, or the signal arrives, while the validation decodes
        return out

    monkeypatch.setattr(T, "evaluate", evaluate)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["in a step", "after a validation"])
def test_the_time_budget_and_sigterm_end_a_run_in_the_same_state(tiny_config, monkeypatch, where):
    tiny_config.train.max_minutes = 5.0
    tiny_config.train.train_cer_every = 0
    ends = {}
    for cause in ("budget", "signal"):
        with monkeypatch.context() as m:
            switch = Switch()
            if where == "in a step":  # the first check, after the first optimizer step, stops the run
                switch_on_at_training(m, switch)
            else:
                switch_on_at_validation(m, switch)
            stop_by(m, cause, switch)
            result = T.train(tiny_config, name=cause, verbose=False)
        ckpt = torch.load(result.run_dir / "checkpoints/last.pt", weights_only=True)
        partial = ckpt["partial"] and {k: ckpt["partial"][k] for k in ("epoch", "batch", "steps")}
        ends[cause] = (result.state, read_summary(result.run_dir)["state"], ckpt["epoch"], partial,
                       len(read_metrics(result.run_dir)))  # fmt: skip
    assert ends["budget"] == ends["signal"]
    assert ends["signal"][:3] == ("stopped", "stopped", 0 if where == "in a step" else 1)
    assert (ends["signal"][3] is None) == (where == "after a validation")
    assert read_summary(Path(tiny_config.train.run_dir) / "budget")["reason"] == "time budget of 5 min reached"
    curves = [_curve(T.train(tiny_config, resume=Path(tiny_config.train.run_dir) / c, verbose=False).run_dir)
              for c in ("budget", "signal")]  # fmt: skip
    assert curves[0] == curves[1] and [e for e, *_ in curves[0]] == [1, 2]


def test_a_stopped_run_prints_how_to_resume_it(tiny_config, monkeypatch, tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli
    from trainer.config import save_config

    save_config(tiny_config, tmp_path / "tiny.yaml")
    stop_by(monkeypatch, "signal", Switch(on=True))
    result = CliRunner().invoke(cli, ["train", "--config", str(tmp_path / "tiny.yaml"), "--name", "cut"])
    run = Path(tiny_config.train.run_dir) / "cut"
    assert result.exit_code == 0, result.output
    assert f"to continue this run: python -m launch train --resume {run}" in result.output
    assert f"stopped: no validation yet; run folder {run}" in result.output  # stopped in epoch 1: no 'best inf'


# --------------------------------------------------------------------------- resume with changes


@pytest.mark.slow
def test_resume_extends_a_finished_run_and_refuses_what_the_checkpoint_fixes(tiny_config, tmp_path, monkeypatch, capsys):
    from trainer.config import save_config

    tiny_config.train.train_cer_every = 0
    save_config(tiny_config, tmp_path / "tiny.yaml")
    code, output = run_cli(monkeypatch, capsys, "train", "--config", tmp_path / "tiny.yaml", "--name", "r")
    run = Path(tiny_config.train.run_dir) / "r"
    assert code == 0 and read_summary(run)["state"] == "finished", output
    before = (run / "metrics.jsonl").read_text(encoding="utf-8")

    code, output = run_cli(monkeypatch, capsys, "train", "--resume", run)  # nothing left to do: says so
    assert code == 0 and "has trained all 2 epochs (train.max_epochs=2): nothing to train" in output, output
    assert (run / "metrics.jsonl").read_text(encoding="utf-8") == before

    other = tmp_path / "other"
    other.mkdir()
    refused = [
        (["optim.lr=0.5"], "optim.lr=0.5 (the run has 0.001): it changes how the run trains"),
        (["model.encoder.layers=2"], "model.encoder.layers=2 (the run has 1): the checkpoint holds the weights"),
        (["train.select_metric=val/loss"], "best.pt and the best value so far were chosen by val/cer"),
        (["--data", other], f"data.root='{other}'"),
        (["--config", "configs/small.yaml"], "model.encoder.dim=64 (the run has 16)"),
    ]
    for args, fragment in refused:
        code, output = run_cli(monkeypatch, capsys, "train", "--resume", run, *args)
        assert code == 2 and "Traceback" not in output and f"error: cannot resume {run}" in output, output
        assert fragment in output, output
    assert (run / "metrics.jsonl").read_text(encoding="utf-8") == before  # nothing trained, nothing written

    data = tiny_config.data.root  # the run's own --config and --data match: accepted, with the changes asked for
    code, output = run_cli(monkeypatch, capsys, "train", "--resume", run, "--config", run / "config.yaml",
                           "--data", data, "train.max_epochs=3", "decode.beam_size=3")  # fmt: skip
    assert code == 0, output
    assert f"resuming {run} with train.max_epochs 2 -> 3, decode.beam_size 2 -> 3" in output
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2, 3] and before in (run / "metrics.jsonl").read_text()
    saved = load_config(run / "config.yaml")
    assert saved.train.max_epochs == 3 and saved.decode.beam_size == 3
    assert torch.load(run / "checkpoints/last.pt", weights_only=True)["config"]["train"]["max_epochs"] == 3


def test_a_run_killed_after_its_last_checkpoint_is_finished_on_resume(tiny_config, capsys):
    """A kill inside finish() (plots, W&B upload) leaves last.pt at the last epoch and the summary 'running'."""
    done = T.train(tiny_config, name="k", verbose=False)
    summary = read_summary(done.run_dir)
    before = (done.run_dir / "metrics.jsonl").read_text(encoding="utf-8")
    (done.run_dir / "summary.json").write_text(json.dumps({**summary, "state": "running"}), encoding="utf-8")

    resumed = T.train(tiny_config, resume=done.run_dir)
    assert resumed.state == "finished" and read_summary(done.run_dir)["state"] == "finished"
    assert read_summary(done.run_dir)["epochs"] == summary["epochs"]  # nothing trained again
    assert (done.run_dir / "metrics.jsonl").read_text(encoding="utf-8") == before
    assert f"resuming {done.run_dir} to finish it" in capsys.readouterr().out

    again = T.train(tiny_config, resume=done.run_dir)  # now finished: nothing to do, said
    assert again.state == "finished" and "nothing to train" in capsys.readouterr().out


def test_resuming_a_run_stopped_before_its_first_checkpoint_says_how_to_start_it_again(tiny_config, monkeypatch, capsys):
    import shutil

    tiny_config.train.max_epochs = 1
    run = T.train(tiny_config, name="early", verbose=False).run_dir
    shutil.rmtree(run / "checkpoints")  # as a stop before the first optimizer step leaves it: config, summary
    code, output = run_cli(monkeypatch, capsys, "train", "--resume", run)
    assert code == 2 and "Traceback" not in output, output
    assert f"{run} has no checkpoint to resume: it stopped before its first optimizer step ended" in output
    command = output.split("again (its folder is reused): python -m launch ")[1].split()
    code, output = run_cli(monkeypatch, capsys, *command)  # the command it prints, as it is
    assert code == 0 and read_summary(run)["state"] == "finished" and (run / "checkpoints" / "last.pt").exists(), output
