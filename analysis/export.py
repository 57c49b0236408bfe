"""Export the best run's resolved config as a YAML that `python -m launch train --config FILE` takes as it is.

The best run is the first of `rank_table`; a collapsed one (analysis/collapse.py: one output for most clips,
or no better than the best constant output) is refused with ExportRefused unless `force`. A confirm folder
(`sweep confirm`'s `confirm.csv`) exports the config with the best mean over its seeds instead.
`tracking.name`, `tracking.group` and `tracking.tags` are cleared so that training the file starts a new run
of its own, outside the sweep's group.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.collapse import Collapse, collapse_of
from analysis.predictions import run_predictions
from analysis.rank import best_run, rank_table
from analysis.rows import Source, parse_source
from analysis.runs import load_runs
from analysis.wandb_runs import run_config as wandb_config
from analysis.wandb_runs import wandb_api
from trainer.config import Config, config_from_dict, load_config, save_config, to_flat
from trainer.errors import DataError, UserError
from trainer.metrics import METRICS
from trainer.train import load_checkpoint

CONFIRM = "confirm.csv"


class ExportRefused(UserError):
    """The best run is collapsed or does not beat its baseline; `--force` exports it anyway."""


def run_config(source: Source, row: pd.Series, api: Any = None) -> Config:
    """The resolved config of one run: its run folder's config.yaml (or best.pt's copy), or its W&B config."""
    if source.kind == "wandb":
        return config_from_dict(wandb_config(wandb_api(api).run(f"{source.path}/{row['run_id']}")))
    run_dir = Path(str(row["location"]))
    if (run_dir / "config.yaml").exists():
        return load_config(run_dir / "config.yaml")
    checkpoint = run_dir / "checkpoints" / "best.pt"
    if checkpoint.exists():
        return config_from_dict(load_checkpoint(checkpoint)["config"])
    raise DataError(f"run {row['name']}: {run_dir} has neither config.yaml nor checkpoints/best.pt to export from")


def refusal(name: str, judged: Collapse) -> str:
    """Why the best run is not exported, with its CER, the baseline's, its distinct share, and how to force it."""
    cer = f"{judged.cer:.3f}" if judged.cer == judged.cer else "not recorded"
    baseline = f"{judged.baseline:.3f}" if judged.baseline == judged.baseline else "not recorded"
    distinct = f"{judged.distinct:.0%}" if judged.distinct == judged.distinct else "not recorded"
    return (
        f"the best run {name} is collapsed: {'; '.join(judged.reasons)}. Its val/cer is {cer}, the baseline's "
        f"(the best constant output) {baseline}, its distinct outputs {distinct} of the clips. Its config would "
        "retrain a model that reads nothing from the frames; see `python -m launch diagnose` on it. "
        "Export it anyway with --force."
    )


def write_export(cfg: Config, out: Path, header: list[str]) -> Path:
    """Save `cfg` with the bookkeeping keys cleared and `header` on top; check it loads back the same."""
    cfg.tracking.name, cfg.tracking.group, cfg.tracking.tags = "", "", []
    header = [*header, "tracking.name, tracking.group and tracking.tags are cleared: a new run of its own."]
    save_config(cfg, out, header="\n".join([*header, f"Train it: python -m launch train --config {out}"]))
    if to_flat(load_config(out)) != to_flat(cfg):  # the file must load back to the same config
        raise DataError(f"{out}: the written config does not load back to the run's config")
    return out


def export_best(
    source: str | Path | Source | pd.DataFrame,
    out: str | Path = "configs/best.yaml",
    *,
    by: str = "val/cer",
    api: Any = None,
    force: bool = False,
) -> Path:
    """Write the best run's resolved config to `out` with a header naming the run and its score; returns `out`.

    A confirm folder (or its confirm.csv) exports the config with the best mean over its seeds."""
    confirm = None if isinstance(source, pd.DataFrame) else confirm_file(source)
    if confirm is not None:
        return export_confirmed(confirm, Path(out), force=force)
    table = source if isinstance(source, pd.DataFrame) else load_runs(source, api=api)
    src = parse_source(table.attrs["source"])
    ranked = rank_table(table, by, api=api)
    best = best_run(ranked, by)
    judged = collapse_of(best, run_predictions(src, best, table.attrs.get("wandb_tables"), api))
    if judged.collapsed and not force:
        raise ExportRefused(refusal(str(best["name"]), judged))
    column = ranked.attrs["ranked_by"]
    when = (f" at epoch {int(best['epoch_best'])}" if pd.notna(best["epoch_best"]) else "") + (
        f" of {int(best['epochs'])}" if pd.notna(best["epochs"]) else ""
    )
    header = [
        f"Best run of {src}, exported {time.strftime('%Y-%m-%d %H:%M')} by `python -m launch runs export-best`.",
        f"Run {best['name']} (id {best['run_id']}, {best['state']}): {column} {best[column]:.4f}{when}.",
        f"From: {best['location']}",
    ]
    if judged.collapsed:
        header.append(f"Exported with --force although collapsed: {'; '.join(judged.reasons)}.")
    elif judged.collapsed is None:
        header.append("Not checked for collapse: the run recorded no predictions, distinct share or baseline.")
    return write_export(run_config(src, best, api=api), Path(out), header)


# --------------------------------------------------------------------------- confirm folders


def confirm_file(source: str | Path | Source) -> Path | None:
    """The confirm.csv that `source` is or holds, else None."""
    if isinstance(source, Source) or str(source).startswith(("optuna://", "wandb://")):
        return None
    path = Path(source)
    if path.is_file() and path.name == CONFIRM:
        return path
    return path / CONFIRM if (path / CONFIRM).is_file() else None


@dataclass
class Confirmed:
    """One config of confirm.csv: its mean and spread over the training seeds, and its seeds' run folders."""

    config: str
    metric: str
    mean: float
    std: float
    per_seed: list[float]
    run_dirs: list[Path]


def read_confirm(path: Path) -> list[Confirmed]:
    """The configs of confirm.csv, best mean first (by the metric's goal)."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    means = [c for c in (rows[0] if rows else {}) if c.endswith("_mean")]
    if len(means) != 1 or means[0].removesuffix("_mean") not in METRICS or "run_dirs" not in rows[0]:
        raise DataError(f"{path}: not a `sweep confirm` table (one <metric>_mean column and run_dirs expected)")
    metric = means[0].removesuffix("_mean")
    out = []
    for line, r in enumerate(rows, start=2):
        try:
            seeds = [float(v) for k, v in r.items() if k.startswith(f"{metric}_seed") and v not in ("", None)]
            mean, std = float(r[f"{metric}_mean"]), float(r.get(f"{metric}_std") or "nan")
        except ValueError:
            raise DataError(
                f"{path}, row {line}: {metric}_mean, _std and the per-seed values must be numbers"
            ) from None
        dirs = [Path(d) for d in r["run_dirs"].split(";") if d.strip()]
        out.append(Confirmed(r.get("config", str(line - 1)), metric, mean, std, seeds, dirs))
    sign = 1 if METRICS[metric].goal == "minimize" else -1
    return sorted(out, key=lambda c: sign * c.mean)


def export_confirmed(path: Path, out: Path, *, force: bool = False) -> Path:
    """Export the config of confirm.csv with the best mean over its seeds; refused when a seed's run collapsed."""
    configs = read_confirm(path)
    if not configs:
        raise DataError(f"{path}: no configs")
    best = configs[0]
    runs = [d for d in best.run_dirs if (d / "config.yaml").is_file()]
    if not runs:
        raise DataError(f"{path}: config {best.config}: none of its run folders ({best.run_dirs}) holds a config.yaml")
    collapsed = []
    for run_dir in runs:
        row = load_runs(run_dir).iloc[0]
        judged = collapse_of(row, run_predictions(str(run_dir), row))
        if judged.collapsed:
            collapsed.append((str(row["name"]), judged))
    if collapsed and not force:
        raise ExportRefused(refusal(*collapsed[0]).replace("the best run", f"config {best.config}'s run", 1))
    seeds = ", ".join(f"{v:.4f}" for v in best.per_seed)
    header = [
        f"Best config of {path}, exported {time.strftime('%Y-%m-%d %H:%M')} by `python -m launch runs export-best`.",
        f"Config {best.config}: {best.metric} mean {best.mean:.4f}, std {best.std:.4f} over {len(best.per_seed)} "
        f"training seeds ({seeds}).",
        f"From: {runs[0]} (its seed; the others: {', '.join(str(d) for d in runs[1:]) or 'none'})",
    ]
    if collapsed:
        header.append(f"Exported with --force although {', '.join(n for n, _ in collapsed)} collapsed.")
    return write_export(load_config(runs[0] / "config.yaml"), out, header)
