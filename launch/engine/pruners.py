"""The project's pruners: their names, their options, the check of a `pruner:` block and Optuna's pruner for it.

The step a pruner sees is the epoch. W&B's `early_terminate: {type: hyperband, ...}` maps to the
hyperband pruner here, so `sweep local`, the pruning study under W&B agents and W&B's Optuna engine
prune alike.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from launch.engine.schema import is_int, is_number
from trainer.metrics import suggest

# option -> (type, minimum, required)
_STARTUP = {"n_startup_trials": (int, 0, False), "n_warmup_steps": (int, 0, False), "interval_steps": (int, 1, False),
            "n_min_trials": (int, 1, False)}  # fmt: skip
PRUNERS: dict[str, dict[str, tuple[type, float | None, bool]]] = {
    "none": {},
    "median": dict(_STARTUP),
    "percentile": {"percentile": (float, 0.0, True), **_STARTUP},
    "halving": {
        "min_resource": (int, 1, False),
        "reduction_factor": (int, 2, False),
        "min_early_stopping_rate": (int, 0, False),
        "bootstrap_count": (int, 0, False),
    },  # fmt: skip
    "hyperband": {
        "min_resource": (int, 1, False),
        "max_resource": (int, 1, False),
        "reduction_factor": (int, 2, False),
        "bootstrap_count": (int, 0, False),
    },  # fmt: skip
    "patient": {"patience": (int, 0, True), "min_delta": (float, 0.0, False), **_STARTUP},
}
# The names as the command line offers them (`--pruner`), "none" last.
PRUNER_NAMES = (*(name for name in PRUNERS if name != "none"), "none")
_AUTO = {("halving", "min_resource"), ("hyperband", "max_resource")}  # options that also take "auto"


def _option_problem(kind: str, opt: str, value: Any, where: str) -> str | None:
    options = PRUNERS[kind]
    if opt not in options:
        allowed = ", ".join(options) or "none"
        return f"{where}.{opt}: not an option of the {kind} pruner (options: {allowed}){suggest(str(opt), options)}"
    if (kind, opt) in _AUTO and value == "auto":
        return None
    tp, lo, _ = options[opt]
    ok = is_int(value) if tp is int else is_number(value)
    if not ok or (lo is not None and value < lo):
        return f"{where}.{opt}: {value!r} must be {'an integer' if tp is int else 'a number'} >= {lo:g}"
    return None


def check_pruner(pruner: Any, where: str = "pruner") -> list[str]:
    """Problems of a `pruner:` block ({type: NAME, option: value, ...})."""
    if not isinstance(pruner, dict):
        return [f"{where}: must be a mapping like {{type: median, n_warmup_steps: 2}}"]
    kind = pruner.get("type")
    if kind not in PRUNERS:
        return [f"{where}.type: must be one of {', '.join(PRUNERS)}{suggest(str(kind), PRUNERS)}"]
    out = [p for opt, v in pruner.items() if opt != "type" and (p := _option_problem(kind, opt, v, where))]
    for opt, (_, _, required) in PRUNERS[kind].items():
        if required and opt not in pruner:
            out.append(f"{where}.{opt}: required by the {kind} pruner")
    if kind == "percentile" and is_number(pruner.get("percentile")) and not 0 <= pruner["percentile"] <= 100:
        out.append(f"{where}.percentile: must be in [0, 100]")
    return out


def hyperband_from_early_terminate(et: dict[str, Any], max_epochs: int) -> dict[str, Any]:
    """W&B's `early_terminate: {type: hyperband, ...}` as Optuna's HyperbandPruner options (epochs are the resource)."""
    eta = float(et.get("eta", 3))
    if "min_iter" in et:
        min_resource = int(et["min_iter"])
    else:
        min_resource = max(1, round(et["max_iter"] / eta ** float(et["s"])))
    max_resource = int(et.get("max_iter", max_epochs))
    return {"type": "hyperband", "min_resource": min_resource, "max_resource": max(max_resource, min_resource),
            "reduction_factor": max(2, round(eta))}  # fmt: skip


def make_pruner(block: dict[str, Any]) -> optuna.pruners.BasePruner:
    """Optuna's pruner for a checked pruner block; the step is the epoch."""
    opts = {k: v for k, v in block.items() if k != "type"}
    kind = block["type"]
    if kind == "none":
        return optuna.pruners.NopPruner()
    if kind == "median":
        return optuna.pruners.MedianPruner(**opts)
    if kind == "percentile":
        return optuna.pruners.PercentilePruner(**opts)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(**opts)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(**opts)
    if kind == "patient":  # experimental in Optuna, stable in use
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        patience, min_delta = opts.pop("patience"), opts.pop("min_delta", 0.0)
        return optuna.pruners.PatientPruner(optuna.pruners.MedianPruner(**opts), patience=patience, min_delta=min_delta)
    raise ValueError(f"unknown pruner {kind!r}")


def describe_pruner(block: dict[str, Any]) -> str:
    """`median (n_startup_trials 2, n_warmup_steps 1)`, or `none`."""
    opts = ", ".join(f"{k} {v}" for k, v in block.items() if k != "type")
    return f"{block['type']}" + (f" ({opts})" if opts else "")
