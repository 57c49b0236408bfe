"""The run folder and the W&B run: same metrics, config and summary; WANDB_MODE; no secrets written."""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

import pytest

from trainer.config import Config, load_config
from trainer.metrics import METRICS
from trainer.tracking import RunLog, read_metrics, wandb_mode


def read_wandb_log(path: Path) -> list:
    """The protobuf records of a `run-*.wandb` file (W&B's LevelDB-style log: 32 KiB blocks of chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    raw = path.read_bytes()
    assert raw[:4] == b":W&B", f"{path} is not a W&B log"
    block, pos, records, pending = 32768, 7, [], b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # the rest of a block too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        chunk, pos = raw[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:  # full
            records.append(chunk)
        elif kind in (2, 3):  # first, middle
            pending = (b"" if kind == 2 else pending) + chunk
        elif kind == 4:  # last
            records.append(pending + chunk)
    out = []
    for data in records:
        rec = pb.Record()
        rec.ParseFromString(data)
        out.append(rec)
    return out


def read_closed_wandb_log(path: Path, timeout: float = 60.0) -> list:
    """The records of a run's log once W&B's service has closed it (its `exit` record): it writes after finish() returns."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_wandb_log(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)


def _key(item) -> str:
    """A history/config/summary item's key; W&B stores keys with '/' as nested keys."""
    return item.key or "/".join(item.nested_key)


@pytest.mark.parametrize(
    "env, config, expected",
    [
        ("", "offline", "offline"),
        ("disabled", "online", "disabled"),
        ("dryrun", "disabled", "offline"),
        ("online", "disabled", "online"),
    ],
)
def test_wandb_mode_environment_wins(monkeypatch, env, config, expected):
    monkeypatch.setenv("WANDB_MODE", env)
    cfg = Config()
    cfg.tracking.wandb = config
    assert wandb_mode(cfg) == expected


def test_resume_drops_epochs_after_the_checkpoint(tmp_path):
    cfg = load_config(None, ["tracking.wandb=disabled"])
    log = RunLog(tmp_path, cfg)
    for epoch in (1, 2, 3):
        log.log_epoch({"epoch": epoch, "val/cer": 1.0 / epoch})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 4, "val/c')  # a line cut short by a kill
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    RunLog(tmp_path, cfg, resume_epoch=2)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]


@pytest.mark.slow
def test_offline_wandb_run_gets_the_same_metrics_config_and_summary(tiny_config, monkeypatch):
    from trainer.train import train

    secret = "0123456789abcdef0123456789abcdef01234567"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    tiny_config.tracking.wandb = "offline"
    tiny_config.train.max_epochs = 2
    run = train(tiny_config, name="wb", verbose=False).run_dir
    (log_file,) = run.glob("wandb/offline-run-*/run-*.wandb")
    history, config, summary, metric_defs = [], set(), {}, {}
    for rec in read_closed_wandb_log(log_file):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            history.append({_key(i): json.loads(i.value_json) for i in rec.history.item})
        elif kind == "config":
            config |= {_key(i) for i in rec.config.update}
        elif kind == "summary":
            summary.update({_key(i): json.loads(i.value_json) for i in rec.summary.update})
        elif kind == "metric":
            metric_defs[rec.metric.name or rec.metric.glob_name] = rec.metric
    epochs = read_metrics(run)
    logged = [h for h in history if "epoch" in h and "train/loss" in h]
    assert [h["epoch"] for h in logged] == [r["epoch"] for r in epochs] == [1, 2]
    for h, r in zip(logged, epochs, strict=True):
        assert {k: h[k] for k in r} == r  # every metric of the run folder, same value
    assert {"optim.lr", "model.encoder.dim", "decode.beam_size"} <= config  # flat dotted config
    assert metric_defs["*"].step_metric == "epoch"
    for name, m in METRICS.items():  # define_metric from the registry: a validation metric's best, else its last
        assert getattr(metric_defs[name].summary, m.summary), name
    assert metric_defs["val/cer"].summary.min and metric_defs["val/distinct"].summary.max
    improved = [r["epoch"] for i, r in enumerate(epochs) if all(r["val/cer"] < e["val/cer"] for e in epochs[:i])]
    tables = [h for h in history if "val_predictions/_type" in h]  # W&B nests a table's fields under its key
    assert [h["epoch"] for h in tables] == improved  # the predictions table once per best epoch, with that epoch's row
    assert all(h["val_predictions/_type"] == "table-file" and h["val_predictions/nrows"] == 3 for h in tables)
    assert (
        summary["state"] == "finished"
        and summary["epoch_best"] == json.loads((run / "summary.json").read_text())["epoch_best"]
    )
    for f in run.rglob("*"):  # the API key is never written anywhere in the run folder
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f
