"""The diagnosis of one run, section by section, as report.md, report.html (holding its plots) and the PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from analysis.diagnose.collapse import collapse_verdict, context_predictions
from analysis.diagnose.common import Context, series
from analysis.diagnose.confusions import confusions_section
from analysis.diagnose.ctc_joint import ctc_section
from analysis.diagnose.decode import Decoded, decode_validation
from analysis.diagnose.fitting import fitting_verdict
from analysis.diagnose.gradients import gradient_flow, gradient_plot
from analysis.diagnose.hyperparameters import hyperparameter_section
from analysis.diagnose.samples import worst_clips_section
from analysis.local_runs import read_run_summary
from analysis.plots import learning_curves
from analysis.report import Report
from analysis.rows import select_metric_of
from trainer.config import Config, load_config
from trainer.errors import DataError
from trainer.metrics import best_row
from trainer.tracking import SUMMARY, read_metrics


def frontend_line(summary: dict[str, Any], cfg: Config | None) -> str:
    """Whether the frontend ran from the frozen-frontend feature cache (trainer/frontend_cache.py), and with how many views."""
    if "frontend_cache/used" not in summary:
        return "Frontend: the run did not record whether it ran from the feature cache (a run from before the cache)."
    if not summary["frontend_cache/used"]:
        reason = summary.get("frontend_cache/reason") or "not recorded"
        return f"Frontend: ran live at every step, not from the feature cache ({reason})."
    views = summary.get("frontend_cache/views", "?")
    origin = "built by this run" if summary.get("frontend_cache/built") else "read from a cache an earlier run built"
    text = (
        f"Frontend: ran from the feature cache with {views} training view{'' if views == 1 else 's'} and the validation view "
        f"({origin}; on {summary.get('frontend_cache/residency') or 'an unrecorded device'})."
    )
    if cfg is not None and cfg.augment.time_mask_window > 0:
        text += " Time masking set masked frames to the clip's mean feature (the live path masks pixels)."
    return text


def _decode(
    run_dir: Path, cfg: Config | None, checkpoint: str, decode: bool, device: str
) -> tuple[Decoded | None, str]:
    """The validation split decoded with the checkpoint when possible, else why not."""
    path = run_dir / "checkpoints" / f"{checkpoint}.pt"
    if not decode:
        return None, "decoding switched off (--no-decode)"
    if not path.exists():
        return None, f"no checkpoint {path}"
    if cfg is not None and not Path(cfg.data.root).exists():
        return None, f"the dataset {cfg.data.root} is not here"
    return decode_validation(path, device), ""


def load_context(run_dir: Path, out: Path, checkpoint: str, decode: bool, device: str) -> Context:
    rows = read_metrics(run_dir)
    if not rows:
        raise DataError(f"{run_dir}: no metrics.jsonl (or it is empty); is this a lipsweep run folder?")
    summary = read_run_summary(run_dir)
    cfg = load_config(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else None
    decoded, why_not = _decode(run_dir, cfg, checkpoint, decode, device)
    best = best_row(rows, select_metric_of(summary, str(run_dir / SUMMARY)))
    if decoded is not None:
        epoch = decoded.epoch
    elif checkpoint == "best" and best is not None:
        epoch = int(best["epoch"])
    else:
        val = series(rows, "val/cer")
        epoch = val[-1][0] if val else int(rows[-1]["epoch"])
    at = next((r for r in rows if r.get("epoch") == epoch), rows[-1])
    metrics = dict(at) | (decoded.metrics if decoded else {})
    cfg = decoded.cfg if decoded is not None else cfg
    ctx = Context(run_dir, out, rows, summary, cfg, checkpoint, epoch, metrics, decoded, why_not)
    ctx.predictions, ctx.predictions_from = context_predictions(ctx)
    return ctx


def header(report: Report, ctx: Context) -> None:
    summary = ctx.summary
    state = f"State {summary.get('state', 'unknown')}" + (f" ({summary['reason']})" if summary.get("reason") else "")
    val = series(ctx.rows, "val/cer")
    if val:
        best_epoch, best = min(val, key=lambda p: p[1])
        state += f"; {len(ctx.rows)} epochs logged; best val/cer {best:.4f} at epoch {best_epoch}."
    report.text(state)
    report.text(frontend_line(summary, ctx.cfg))
    source = (
        f"decoding the {len(ctx.decoded.rows)} validation clips again."
        if ctx.decoded
        else f"from the files the run wrote ({ctx.why_not})."
    )
    report.text(f"Sections 4 to 6 use the {ctx.checkpoint} checkpoint (epoch {ctx.epoch}), " + source)


def verdict_section(report: Report, ctx: Context) -> None:
    """Collapsed (checked first), else over-fitting, under-fitting, stuck or healthy."""
    verdict = collapse_verdict(ctx) or fitting_verdict(ctx.rows)
    report.heading("2. Collapse, over- or under-fitting")
    report.text(f"Verdict: {verdict.kind}", css="verdict")
    report.bullets(verdict.evidence)
    if verdict.advice:
        report.text(verdict.advice)


def diagnose(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    checkpoint: Literal["best", "last"] = "best",
    decode: bool = True,
    worst_k: int = 10,
    top_tokens: int = 15,
    device: str = "auto",
) -> Path:
    """Write the diagnosis of a run folder to `out` (default RUN_DIR/diagnose); returns the HTML page."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "diagnose"
    ctx = load_context(run_dir, out, checkpoint, decode, device)
    name = ctx.summary.get("name", run_dir.name)
    report = Report(f"Diagnosis of run {name}")
    header(report, ctx)
    report.heading("1. Learning curves")
    report.image(learning_curves(ctx.rows, out / "learning_curves.png", title=name), "train/val loss and CER per epoch")
    verdict_section(report, ctx)
    report.heading("3. Gradient flow")
    report.image(
        gradient_plot(ctx.rows, out / "gradient_flow.png"), "gradient norm per module group, and the learning rate"
    )
    report.bullets([(f.level, str(f)) for f in gradient_flow(ctx.rows, ctx.cfg)])
    ctc_section(report, ctx)
    worst_clips_section(report, ctx, worst_k)
    confusions_section(report, ctx, top_tokens)
    hyperparameter_section(report, ctx)
    report.heading("8. Sanity model")
    report.text(
        f"Overfit 10 clips with this config: python -m launch sanity --config {run_dir / 'config.yaml'} "
        "(and --frontend noise: it must not learn)."
    )
    return report.write(out, "report")[1]
