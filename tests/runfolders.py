"""Hand-made runs: folders in the trainer's format, and W&B's public API answering from a recorded fixture."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import wandb.apis.public as wandb_public

from trainer.config import load_config, save_config

FIXTURE = Path(__file__).parent / "fixtures" / "wandb_sweep.json"
PREDICTION_COLUMNS = ["id", "frames", "ref", "hyp", "edits", "ref_tokens", "ctc_hyp", "ctc_edits"]

TINY = [
    "model.frontend.widths=[4,4,8,8]",
    "model.encoder.dim=16",
    "model.decoder.dim=16",
    "model.encoder.heads=2",
    "model.decoder.heads=2",
    "model.encoder.ffn_dim=16",
    "model.decoder.ffn_dim=16",
    "model.encoder.layers=1",
    "model.decoder.layers=1",
]


def epochs(
    val_cer: Sequence[float],
    train_cer: Sequence[float] | None = None,
    train_loss: Sequence[float] | None = None,
    grad: dict[str, Sequence[float]] | None = None,
    ctc_greedy: Sequence[float] | None = None,
) -> list[dict[str, Any]]:
    """Per-epoch metric rows as the trainer logs them (every epoch validated)."""
    rows = []
    for i, v in enumerate(val_cer):
        row: dict[str, Any] = {
            "epoch": i + 1,
            "train/loss": train_loss[i] if train_loss else 50.0 / (i + 1),
            "train/lr": 1e-3,
            "val/cer": v,
            "val/cer_ctc_greedy": ctc_greedy[i] if ctc_greedy else v + 0.05,
            "val/letter_er": v * 0.6,
            "val/diacritic_er": v * 1.1,
            "time/epoch_s": 10.0,
        }
        if train_cer is not None:
            row["train/cer"] = train_cer[i]
        for group, values in (grad or {}).items():
            row[f"grad_norm/{group}"] = values[i]
        rows.append(row)
    return rows


def fixture_predictions(name: str, extra_edits: int = 0) -> list[list[Any]]:
    """The rows of tests/fixtures/val_predictions_<name>.csv (60 clips), with `extra_edits` more errors on each clip."""
    with open(Path(__file__).parent / "fixtures" / f"val_predictions_{name}.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    return [[*r[:4], int(r[4]) + extra_edits, *r[5:]] for r in rows]


def constant_predictions(n: int, hyp: str = "ٱلْٱلْ", ref_tokens: int = 6) -> list[list[Any]]:
    """n clips that all get the same output (a collapsed model), each with 5 token errors."""
    return [[f"c{i:03d}", 30, f"كَلِمَة {i}", hyp, 5, ref_tokens, "", ref_tokens] for i in range(n)]


def write_run(
    root: Path,
    name: str,
    rows: list[dict[str, Any]],
    overrides: Sequence[str] = (),
    *,
    state: str = "finished",
    reason: str = "",
    samples: list[list[Any]] | None = None,
    confusions: list[list[Any]] | None = None,
    predictions: list[list[Any]] | None = None,
    summary: dict[str, Any] | None = None,
) -> Path:
    """A run folder like trainer/train.py writes it; the summary is derived from `rows` as the trainer does (and
    `summary` added to it); `predictions` are the rows of val_predictions.csv (PREDICTION_COLUMNS)."""
    run = Path(root) / name
    run.mkdir(parents=True, exist_ok=True)
    save_config(load_config("small", [*TINY, *overrides]), run / "config.yaml")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    val = [(r["epoch"], r["val/cer"]) for r in rows if "val/cer" in r]
    best_epoch, best = min(val, key=lambda p: p[1]) if val else (0, float("inf"))
    summary = {
        "name": name,
        "state": state,
        "reason": reason,
        "val/cer_best": best,
        "epoch_best": best_epoch,
        "epochs": rows[-1]["epoch"] if rows else 0,
        "step": 4 * (rows[-1]["epoch"] if rows else 0),
        "runtime_s": sum(r.get("time/epoch_s", 0) for r in rows),
        "wandb_id": None,
        "wandb_url": None,
        **(summary or {}),
    }
    (run / "summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if samples is not None:
        (run / "samples").mkdir(exist_ok=True)
        with open(run / "samples" / f"epoch_{best_epoch:03d}.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([["id", "frames", "ref", "hyp", "cer", "score"], *samples])
    if predictions is not None:
        with open(run / "val_predictions.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([PREDICTION_COLUMNS, *predictions])
    if confusions is not None:
        with open(run / "confusions.csv", "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([["kind", "ref", "hyp", "count"], *confusions])
    return run


class RecordedService:
    """Stands in for wandb's ServiceApi: answers the run-history GraphQL query from the recorded fixture, and
    fails on any other query, so the test proves which requests the code makes."""

    def __init__(self, fixture: dict):
        self.app_url = fixture["app_url"]
        self.history = {r["attrs"]["name"]: r["history"] for r in fixture["runs"]}
        self.queries: list[tuple[str, int]] = []  # (run name, samples asked for)

    def execute_graphql(self, query: str, variables: dict | None = None) -> dict:
        if "RunFullHistory" not in query:
            raise AssertionError(f"unexpected W&B query: {query[:120]}")
        self.queries.append((variables["name"], variables["samples"]))
        rows = self.history[variables["name"]][: variables["samples"]]
        return {"project": {"run": {"history": [json.dumps(r) for r in rows]}}}


class RecordedFile:
    """A run's file as `Run.file(path)` gives it: `download` writes it under `root` and returns it opened."""

    def __init__(self, name: str, text: str):
        self.name, self.text = name, text

    def download(self, root: str = ".", replace: bool = False, exist_ok: bool = False, api: Any = None):
        path = Path(root) / self.name
        if path.exists() and not replace:
            raise ValueError("File already exists, pass replace=True to overwrite")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.text, encoding="utf-8")
        return open(path, encoding="utf-8")


class RecordedRun(wandb_public.Run):
    """wandb's public-API run, whose files are the recorded ones (`files`: {path: text})."""

    files_recorded: dict[str, str]

    def file(self, name: str) -> RecordedFile:
        if name not in self.files_recorded:
            raise AssertionError(f"unexpected file request: {name}")
        return RecordedFile(name, self.files_recorded[name])


class RecordedApi:
    """`wandb.Api()`'s `runs`, `run` and `sweep`, returning wandb's own public-API objects built from the fixture;
    `files` holds each run's files ({run id: {path: text}}), e.g. its logged tables."""

    def __init__(self, fixture: dict, files: dict[str, dict[str, str]] | None = None):
        self.fixture = fixture
        self.files = files or {}
        self.service = RecordedService(fixture)
        self.entity, self.project = fixture["entity"], fixture["project"]

    def _run(self, attrs: dict, lazy: bool) -> wandb_public.Run:
        run = RecordedRun(self.service, self.entity, self.project, attrs["name"], attrs=dict(attrs), lazy=lazy)
        run.files_recorded = self.files.get(attrs["name"], {})
        return run

    def runs(self, path: str, filters: dict | None = None, per_page: int = 50, lazy: bool = True, **_) -> list:
        assert path == f"{self.entity}/{self.project}"
        attrs = [r["attrs"] for r in self.fixture["runs"]]
        if filters and "sweep" in filters:
            attrs = [a for a in attrs if a["sweepName"] == filters["sweep"]]
        return [self._run(a, lazy) for a in attrs]

    def run(self, path: str) -> wandb_public.Run:
        run_id = path.rsplit("/", 1)[1]
        return self._run(next(r["attrs"] for r in self.fixture["runs"] if r["attrs"]["name"] == run_id), False)

    def sweep(self, path: str) -> wandb_public.Sweep:
        entity, project, sweep_id = path.split("/")
        return wandb_public.Sweep(self.service, entity, project, sweep_id, attrs=self.fixture["sweep"])


def curve_run(cfg: Any, name: str, prune: Any, val_cer: Any) -> Any:
    """A fake trainer's run: `val_cer(epoch)` each epoch into a run folder, stopped when `prune` says so."""
    from trainer.train import RunResult

    run_dir = Path(cfg.train.run_dir) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    state, rows = "finished", []
    for epoch in range(1, cfg.train.max_epochs + 1):
        rows.append({"epoch": epoch, "val/cer": val_cer(epoch)})
        if prune is not None and prune(epoch, rows[-1]):
            state = "pruned"
            break
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"state": state, "epochs": len(rows), "val/cer_best": min(r["val/cer"] for r in rows)}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    return RunResult(run_dir, state, summary)
