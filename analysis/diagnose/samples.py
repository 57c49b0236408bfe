"""Checklist item 5: the worst validation clips (frames, target, prediction, score, CER)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.diagnose.common import Context  # noqa: E402
from analysis.diagnose.decode import Decoded  # noqa: E402
from analysis.report import Report  # noqa: E402
from trainer.errors import DataError  # noqa: E402


def filmstrip(frames: np.ndarray, out: Path, count: int = 8, crop: int | None = None) -> Path:
    """`count` evenly spaced frames of a (T, H, W) uint8 clip side by side (centre-cropped to `crop`) as a PNG."""
    t, h, w = frames.shape
    picks = np.linspace(0, t - 1, min(count, t)).round().astype(int)
    if crop is not None and crop < min(h, w):
        top, left = (h - crop) // 2, (w - crop) // 2
        frames = frames[:, top : top + crop, left : left + crop]
    strip = np.concatenate([frames[i] for i in picks], axis=1)  # (H, count * W)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(out, strip, cmap="gray", vmin=0, vmax=255)
    return out


def samples_csv(run_dir: Path, epoch: int | None) -> tuple[Path | None, list[dict[str, Any]]]:
    """The worst-k CSV of `epoch` (else the latest one) and its rows."""
    folder = run_dir / "samples"
    files = sorted(folder.glob("epoch_*.csv")) if folder.is_dir() else []
    wanted = folder / f"epoch_{epoch:03d}.csv" if epoch is not None else None
    path = wanted if wanted is not None and wanted.exists() else (files[-1] if files else None)
    if path is None:
        return None, []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for line, r in enumerate(rows, start=2):
        for key in ("cer", "score"):
            try:
                r[key] = float(r[key])
            except (KeyError, ValueError):
                raise DataError(f"{path}, row {line}: column {key!r} is missing or not a number") from None
    return path, rows


def _decoded_table(decoded: Decoded, out: Path, worst_k: int) -> list[list[Any]]:
    worst = sorted(decoded.rows, key=lambda r: (-r["cer"], r["id"]))[:worst_k]
    crop = decoded.cfg.augment.crop_size
    table = []
    for r in worst:
        i = decoded.index[r["id"]]
        strip = filmstrip(decoded.data.video(i), out / "clips" / f"{r['id']}.png", crop=crop)
        text = decoded.data.texts[i]  # the words as the label file writes them, with spaces
        table.append([r["id"], r["frames"], strip, text, r["hyp"], round(r["score"], 2), round(r["cer"], 3)])
    return table


def _predictions_table(pred: pd.DataFrame, worst_k: int) -> list[list[Any]]:
    """The worst clips of a predictions table by per-clip CER (edits / reference tokens)."""
    worst = pred.assign(cer=pred["edits"] / pred["ref_tokens"].clip(lower=1))
    worst = worst.sort_values(["cer", "id"], ascending=[False, True], kind="stable").head(worst_k)
    return [[r.id, r.frames, r.ref, r.hyp, round(r.cer, 3)] for r in worst.itertuples()]


def worst_clips_section(report: Report, ctx: Context, worst_k: int) -> None:
    report.heading(f"5. Worst validation clips (up to {worst_k})")
    columns = ["id", "frames", "target", "prediction", "score", "CER"]
    if ctx.decoded is not None:
        columns.insert(2, "clip")
        table = _decoded_table(ctx.decoded, ctx.out, worst_k)
    elif ctx.predictions is not None:
        columns.remove("score")
        report.text(f"From {ctx.predictions_from}: {len(ctx.predictions)} clips (frames are shown when decoded again).")
        table = _predictions_table(ctx.predictions, worst_k)
    else:
        path, samples = samples_csv(ctx.run_dir, ctx.epoch)
        if path is not None:
            report.text(f"From {path.relative_to(ctx.run_dir)} (frames are shown when the checkpoint is decoded).")
        table = [
            [r["id"], r["frames"], r["ref"], r["hyp"], round(r["score"], 2), round(r["cer"], 3)]
            for r in sorted(samples, key=lambda r: -r["cer"])[:worst_k]
        ]
    if table:
        report.table(columns, table, rtl=("target", "prediction"), images=("clip",))
    else:
        report.text("No samples: the run wrote none (train.worst_k=0) and no checkpoint was decoded.")
