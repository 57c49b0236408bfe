"""Checklist item 3: gradient flow per module group, flagging frozen (no gradient), zero and vanishing groups."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.diagnose.common import Finding, series  # noqa: E402
from analysis.plots import epoch_axis, outside_legend, save_figure  # noqa: E402
from trainer.config import Config  # noqa: E402
from trainer.train import GRAD_GROUPS  # noqa: E402

GROUPS = tuple(GRAD_GROUPS)  # the groups the trainer logs as grad_norm/<group>
VANISH = 1e-3  # a group's norm below this fraction of the largest group's: vanishing
DECAY = 1e-2  # a group's norm below this fraction of its first epoch's: fell sharply


def frozen_groups(cfg: Config) -> dict[str, str]:
    """Groups the config freezes -> the key that does it (as trainer.model.apply_freezing does)."""
    frozen = {}
    if cfg.model.freeze.frontend:
        frozen.update({"frontend_stem": "model.freeze.frontend", "frontend_last": "model.freeze.frontend"})
    n = cfg.model.freeze.encoder_layers
    if n != 0:
        frozen["proj_encoder"] = "model.freeze.encoder_layers"
        if n < 0 or n >= cfg.model.encoder.layers:
            frozen["encoder"] = "model.freeze.encoder_layers"
    return frozen


def _silent_group(group: str, frozen: dict[str, str], cfg: Config | None) -> Finding:
    """A group that logged no gradient."""
    if group in frozen:
        return Finding("ok", group, f"no gradient: frozen by {frozen[group]}, as configured")
    if cfg is None:
        return Finding("note", group, "no gradient logged (the config is unknown: frozen or absent?)")
    return Finding(
        "warning",
        group,
        "no gradient logged although the config trains it",
        "the loss does not reach it: a detached path, or a part the forward pass skips",
    )


def _group_finding(
    group: str, values: list[tuple[int, float]], frozen: dict[str, str], present: dict[str, float], last_epoch: int
) -> Finding:
    """A group that logged gradients: frozen but trained, zero, vanishing against the largest group, fallen, ok."""
    last = values[-1][1]
    peak = max(present, key=present.__getitem__) if present else None
    if group in frozen:
        return Finding(
            "warning",
            group,
            f"frozen by {frozen[group]} but its gradient norm is {last:.2e}",
            "freezing did not take effect, so the optimizer's learning rate reaches it",
        )
    if last == 0:
        return Finding(
            "warning",
            group,
            f"zero gradient at epoch {values[-1][0]}",
            "nothing flows back into this group: check for a detach or a zero-initialised gate",
        )
    if peak and group in present and present[group] < VANISH * present[peak]:
        return Finding(
            "warning",
            group,
            f"vanishing: {present[group]:.2e} at epoch {last_epoch}, "
            f"{present[group] / present[peak]:.1e} of {peak}'s {present[peak]:.2e}",
            "it barely learns; the learning rate or the schedule may keep it from adapting",
        )
    if values[0][1] > 0 and last < DECAY * values[0][1]:
        return Finding(
            "note",
            group,
            f"fell from {values[0][1]:.2e} (epoch {values[0][0]}) to {last:.2e} (epoch {values[-1][0]})",
            "a sharp fall: converged, or starved by the schedule",
        )
    return Finding("ok", group, f"{last:.2e} at epoch {values[-1][0]}")


def gradient_flow(rows: Sequence[dict[str, Any]], cfg: Config | None) -> list[Finding]:
    """A finding per module group: frozen as configured, no gradient, frozen but with gradient, zero, vanishing, ok."""
    frozen = frozen_groups(cfg) if cfg is not None else {}
    groups = [g for g in GROUPS if g != "adapter" or (cfg is not None and cfg.model.adapter != "none")]
    groups += [g for g in GROUPS if g not in groups and series(rows, f"grad_norm/{g}")]
    last_epoch = max((int(r["epoch"]) for r in rows if any(k.startswith("grad_norm/") for k in r)), default=None)
    at_last = {g: dict(series(rows, f"grad_norm/{g}")).get(last_epoch) for g in groups} if last_epoch else {}
    present = {g: v for g, v in at_last.items() if v is not None}
    out = []
    for g in groups:
        values = series(rows, f"grad_norm/{g}")
        if values and last_epoch is not None:
            out.append(_group_finding(g, values, frozen, present, last_epoch))
        else:
            out.append(_silent_group(g, frozen, cfg))
    return out


def gradient_plot(rows: Sequence[dict[str, Any]], out: Path) -> Path:
    """Gradient norm per group per epoch (log scale), beside the learning rate."""
    fig, (ax_g, ax_lr) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [2, 1]})
    for g in GROUPS:
        pts = series(rows, f"grad_norm/{g}")
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax_g.plot(xs, [max(y, 1e-12) for y in ys], marker="o", ms=3, label=g)
    ax_g.set(
        xlabel="epoch", ylabel="mean gradient L2 norm per step", title="gradient flow by module group", yscale="log"
    )
    ax_g.grid(alpha=0.3, which="both")
    outside_legend(ax_g)
    lr = series(rows, "train/lr")
    if lr:
        ax_lr.plot(*zip(*lr, strict=True), marker="o", ms=3, color="tab:purple")
    ax_lr.set(xlabel="epoch", ylabel="learning rate (end of epoch)", title="learning rate")
    ax_lr.grid(alpha=0.3)
    for ax in (ax_g, ax_lr):
        epoch_axis(ax)
    return save_figure(fig, out)
