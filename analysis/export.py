"""Export the best run's resolved config as a YAML that `python -m launch train --config FILE` takes as it is."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.rank import best_run, metric_column
from analysis.rows import Source, parse_source
from analysis.runs import load_runs
from analysis.wandb_runs import run_config as wandb_config
from analysis.wandb_runs import wandb_api
from trainer.config import Config, config_from_dict, load_config, save_config, to_flat
from trainer.errors import CheckpointError, DataError


def run_config(source: Source, row: pd.Series, api: Any = None) -> Config:
    """The resolved config of one run: its run folder's config.yaml (or best.pt's copy), or its W&B config."""
    if source.kind == "wandb":
        return config_from_dict(wandb_config(wandb_api(api).run(f"{source.path}/{row['run_id']}")))
    run_dir = Path(str(row["location"]))
    if (run_dir / "config.yaml").exists():
        return load_config(run_dir / "config.yaml")
    checkpoint = run_dir / "checkpoints" / "best.pt"
    if checkpoint.exists():
        import torch

        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{checkpoint}: cannot be read ({type(e).__name__}: {e})") from None
        return config_from_dict(state["config"])
    raise DataError(f"run {row['name']}: {run_dir} has neither config.yaml nor checkpoints/best.pt to export from")


def export_best(
    source: str | Path | Source | pd.DataFrame,
    out: str | Path = "configs/best.yaml",
    *,
    by: str = "val/cer",
    api: Any = None,
) -> Path:
    """Write the best run's resolved config to `out` with a header naming the run and its score; returns `out`.

    `tracking.name` is cleared so that training the exported config starts a new run folder.
    """
    table = source if isinstance(source, pd.DataFrame) else load_runs(source, api=api)
    src = parse_source(table.attrs["source"])
    best = best_run(table, by)
    cfg = run_config(src, best, api=api)
    cfg.tracking.name = ""
    column = metric_column(table, by)
    score = best[column]
    header = "\n".join(
        [
            f"Best run of {src}, exported {time.strftime('%Y-%m-%d %H:%M')} by `python -m launch runs export-best`.",
            f"Run {best['name']} (id {best['run_id']}, {best['state']}): {column} {score:.4f}"
            + (f" at epoch {int(best['epoch_best'])}" if pd.notna(best["epoch_best"]) else "")
            + (f" of {int(best['epochs'])}" if pd.notna(best["epochs"]) else "")
            + ".",
            f"From: {best['location']}",
            "tracking.name is cleared so that a new run gets its own folder.",
            f"Train it: python -m launch train --config {out}",
        ]
    )
    out = Path(out)
    save_config(cfg, out, header=header)
    if to_flat(load_config(out)) != to_flat(cfg):  # the file must load back to the same config
        raise DataError(f"{out}: the written config does not load back to the run's config")
    return out
