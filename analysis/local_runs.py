"""Run folders as trainer/train.py writes them: `summary.json`, `metrics.jsonl`, `config.yaml`."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import yaml

from analysis.rows import best_of, cell, fill, flatten_dict, number, select_metric_of, summary_values
from trainer.errors import DataError
from trainer.tracking import METRICS, SUMMARY, read_metrics


def is_run_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file() or (path / METRICS).is_file()


def find_run_dirs(root: Path) -> list[Path]:
    """`root` itself when it is a run folder, else every run folder below it (not looking inside run folders)."""
    root = Path(root)
    if is_run_dir(root):
        return [root]
    found = []
    for folder, subdirs, _ in os.walk(root):
        if is_run_dir(Path(folder)):
            found.append(Path(folder))
            subdirs.clear()
        else:
            subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and d != "wandb")
    return sorted(found)


def read_run_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    if not path.exists():
        return {}
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); the run was written by another tool or damaged") from None
    if not isinstance(summary, dict):
        raise DataError(f"{path}: expected a JSON object")
    return summary


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """The run's resolved config as {dotted key: value} ({} when it has no config.yaml)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        return {}
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML: {e}") from None
    return flatten_dict(tree)


def run_dir_row(run_dir: Path) -> dict[str, Any]:
    """One row from a run folder: its summary, then what its per-epoch metrics say (they win where both have a value).

    `run_id` is the run's W&B id when it had a W&B run, else the folder's name, as every source names it."""
    run_dir = Path(run_dir)
    summary = read_run_summary(run_dir)
    history = read_metrics(run_dir)
    select = select_metric_of(summary, str(run_dir / SUMMARY))
    row: dict[str, Any] = {
        "run_id": summary.get("wandb_id") or run_dir.name,
        "name": summary.get("name") or run_dir.name,
        "state": summary.get("state", "running" if history else "failed"),
        "reason": summary.get("reason", "" if summary else "no summary.json"),
        "location": str(run_dir),
        "select_metric": select,
    }
    fill(row, summary_values(summary))
    if math.isnan(number(row.get("runtime_s"))) and history:  # a run still going: the sum of its epochs so far
        row["runtime_s"] = sum(number(r.get("time/epoch_s")) for r in history if "time/epoch_s" in r)
    fill(row, best_of(history, select))
    return row


def local_rows(root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows and flat configs of every run folder under `root`."""
    dirs = find_run_dirs(root)
    if not dirs:
        raise DataError(f"{root}: no run folders (folders holding summary.json or metrics.jsonl) below it")
    rows, configs = [], []
    for d in dirs:
        config = read_run_config(d)
        row = run_dir_row(d)
        row.update({k: cell(v) for k, v in config.items()})
        rows.append(row)
        configs.append(config)
    return rows, configs
