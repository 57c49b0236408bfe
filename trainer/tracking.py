"""The run folder and the W&B run: the one metrics writer, and the one place that knows W&B.

A run folder holds `config.yaml` (resolved), `metrics.jsonl` (one line an epoch, flushed as
it ends), `summary.json`, `checkpoints/`, `samples/`, `confusions.csv`, `val_predictions.csv`
(every validation clip at the best epoch) and `plots/`. When
`tracking.wandb` (or `WANDB_MODE`) is online or offline, the same metrics, config, summary,
tables and images go to a W&B run too. No secret is ever written: the config holds none and
the API key stays in W&B's own login.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from trainer.config import Config, save_config, to_flat
from trainer.io import atomic_write_json, atomic_write_text
from trainer.metrics import METRICS as REGISTRY

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
# val_predictions.csv: one row per validation clip at the best epoch (trainer/evaluate.py fills it)
PREDICTION_COLUMNS = ["id", "frames", "ref", "hyp", "edits", "ref_tokens", "ctc_hyp", "ctc_edits"]


def wandb_mode(cfg: Config) -> str:
    """online | offline | disabled; the WANDB_MODE environment variable wins over the config."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower() or cfg.tracking.wandb
    if mode in ("dryrun",):
        mode = "offline"
    if mode not in ("online", "offline", "disabled"):
        mode = "disabled" if mode in ("off", "false", "0") else "online"
    return mode


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The epochs of a run folder; a line cut short by a kill is ignored (it was never flushed whole)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / SUMMARY
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


class RunLog:
    """Writes one run: its folder and, when enabled, its W&B run with the same content."""

    def __init__(
        self, run_dir: Path, cfg: Config, name: str = "", wandb_id: str | None = None, resume_epoch: int | None = None
    ):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = wandb_mode(cfg)
        self.wandb = None
        self.sweep_params: dict[str, Any] = {}
        if resume_epoch is not None:  # drop epochs logged after the checkpoint we resume from
            kept = [r for r in read_metrics(self.dir) if r.get("epoch", 0) <= resume_epoch]
            atomic_write_text(self.dir / METRICS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))
        if self.mode != "disabled":
            self._start_wandb(cfg, name, wandb_id)

    # ------------------------------------------------------------------ W&B
    def _start_wandb(self, cfg: Config, name: str, wandb_id: str | None) -> None:
        import wandb

        t = cfg.tracking
        self.wandb = wandb.init(
            mode=self.mode,
            project=t.project or None,
            entity=t.entity or None,
            group=t.group or None,
            tags=list(t.tags) or None,
            name=t.name or name or None,
            dir=str(self.dir),
            id=wandb_id,
            resume="allow" if wandb_id else None,
        )
        # Under a sweep agent the run's config holds the swept parameters (dotted keys).
        self.sweep_params = dict(self.wandb.config) if self.wandb.sweep_id else {}
        self.wandb.define_metric("epoch")
        self.wandb.define_metric("*", step_metric="epoch")
        for name, m in REGISTRY.items():  # the run summary keeps a validation metric's best, the rest their last
            self.wandb.define_metric(name, step_metric="epoch", summary=m.summary)

    @property
    def wandb_id(self) -> str | None:
        return self.wandb.id if self.wandb is not None else None

    @property
    def wandb_url(self) -> str | None:
        return getattr(self.wandb, "url", None) if self.wandb is not None else None

    # ------------------------------------------------------------------ writers
    def write_config(self, cfg: Config) -> None:
        save_config(cfg, self.dir / "config.yaml")
        if self.wandb is not None:
            self.wandb.config.update(to_flat(cfg), allow_val_change=True)

    def note_config(self, values: dict[str, Any]) -> None:
        """Facts of the run decided at start (the frontend cache), added to the W&B config; the summary has them too."""
        if self.wandb is not None:
            self.wandb.config.update(values, allow_val_change=True)

    def log_epoch(self, metrics: dict[str, Any]) -> None:
        """Append one epoch to metrics.jsonl (flushed to disk) and to W&B."""
        with open(self.dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(metrics, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.wandb is not None:
            self.wandb.log(metrics)

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_json(self.dir / SUMMARY, summary)
        if self.wandb is not None:
            # a metric's summary stays what define_metric says (its best or last); everything else as given
            self.wandb.summary.update({k: v for k, v in summary.items() if k not in REGISTRY})

    def write_table(
        self, relpath: str, columns: list[str], rows: list[list[Any]], wandb_key: str | None = None
    ) -> None:
        """A CSV in the run folder and, when enabled, a wandb.Table."""
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(columns)
        writer.writerows(rows)
        atomic_write_text(self.dir / relpath, buf.getvalue())
        if self.wandb is not None and wandb_key:
            import wandb

            self.wandb.log({wandb_key: wandb.Table(columns=columns, data=rows)}, commit=False)

    def log_image(self, key: str, path: Path) -> None:
        if self.wandb is not None and Path(path).exists():
            import wandb

            self.wandb.log({key: wandb.Image(str(path))}, commit=False)

    def log_checkpoint(self, path: Path, metadata: dict[str, Any]) -> None:
        if self.wandb is not None:
            import wandb

            artifact = wandb.Artifact(f"model-{self.wandb.id}", type="model", metadata=metadata)
            artifact.add_file(str(path))
            self.wandb.log_artifact(artifact, aliases=["best"])

    def tag(self, tag: str) -> None:
        if self.wandb is not None:
            self.wandb.tags = tuple(self.wandb.tags or ()) + (tag,)

    def finish(self, state: str) -> None:
        """Close the W&B run; a failed run exits non-zero so W&B marks it so."""
        if self.wandb is not None:
            self.wandb.summary["state"] = state
            self.wandb.finish(exit_code=0 if state in ("finished", "pruned", "stopped") else 1)
            self.wandb = None
