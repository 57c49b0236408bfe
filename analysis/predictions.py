"""A run's validation predictions at its best epoch: `val_predictions.csv` in the run folder, or the
`val/predictions` table of its W&B run; one row per validation clip.

Columns: `id`, `frames`, `ref` (the reference, words separated by spaces), `hyp` (the beam-search output),
`edits` (its token edit distance to the reference), `ref_tokens` (the reference's length in tokens),
`ctc_hyp` and `ctc_edits` (CTC greedy). Per-clip CER is edits / ref_tokens; the run's val CER is
sum(edits) / sum(ref_tokens).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.rows import Source, parse_source
from analysis.wandb_runs import wandb_api, wandb_table
from trainer.errors import DataError
from trainer.tracking import PREDICTION_COLUMNS

FILE = "val_predictions.csv"
COLUMNS = tuple(PREDICTION_COLUMNS)  # what a run folder's val_predictions.csv holds
COUNTS = ("frames", "edits", "ref_tokens", "ctc_edits")
TEXT = ("id", "ref", "hyp", "ctc_hyp")


def predictions_frame(columns: list[str], rows: list[list[Any]], where: str) -> pd.DataFrame:
    """The predictions as a table sorted by clip id, checked: every column present, counts whole and >= 0."""
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}")
    frame = pd.DataFrame(rows, columns=columns)[list(COLUMNS)]
    for col in TEXT:
        frame[col] = frame[col].fillna("").astype(str)
    for col in COUNTS:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() | (values < 0) | (values % 1 != 0)
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DataError(f"{where}, row {i + 2}: {col} {frame[col].iloc[i]!r} is not a whole number >= 0")
        frame[col] = values.astype("int64")
    if frame["id"].duplicated().any():
        raise DataError(f"{where}: clip {frame['id'][frame['id'].duplicated()].iloc[0]!r} appears twice")
    if frame.empty:
        raise DataError(f"{where}: no clips")
    return frame.sort_values("id", kind="stable").reset_index(drop=True)


def read_predictions(path: Path) -> pd.DataFrame:
    """`val_predictions.csv` as a checked table sorted by clip id."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if header is None:
        raise DataError(f"{path}: empty file; expected the columns {', '.join(COLUMNS)}")
    return predictions_frame(header, rows, str(path))


def run_predictions(
    source: str | Path | Source, row: Mapping[str, Any], tables: Mapping[str, str] | None = None, api: Any = None
) -> pd.DataFrame | None:
    """The predictions of one row of the runs table (None when the run has none: older runs)."""
    src = parse_source(source)
    if src.kind == "wandb":
        path = (tables or {}).get(str(row["run_id"]))
        if path is None:
            return None
        run = wandb_api(api).run(f"{src.path}/{row['run_id']}")
        columns, data = wandb_table(run, path)
        return predictions_frame(columns, data, f"W&B run {row['run_id']} {path}")
    file = Path(str(row["location"])) / FILE
    return read_predictions(file) if file.is_file() else None


def val_cer(pred: pd.DataFrame, edits: str = "edits") -> float:
    return float(pred[edits].sum() / max(1, pred["ref_tokens"].sum()))


def distinct_share(pred: pd.DataFrame) -> float:
    """Distinct beam-search outputs / clips (1/N: one output for every clip)."""
    return pred["hyp"].nunique() / len(pred)


def top_output(pred: pd.DataFrame) -> tuple[str, float]:
    """The most common output and the share of clips that get it."""
    counts = pred["hyp"].value_counts(sort=True)
    return str(counts.index[0]), float(counts.iloc[0] / len(pred))


def empty_share(pred: pd.DataFrame, column: str = "ctc_hyp") -> float:
    return float((pred[column].str.strip() == "").mean())
