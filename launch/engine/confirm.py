"""`sweep confirm`: the K best configs of a sweep re-trained with N training seeds each, ranked by their mean.

A confirm is a grid of its own on the local sweep runner: the study `<sweep>-confirm` (default storage
`<train.run_dir>/<sweep>-confirm/study.db`) over `confirm.config` (c1..cK, best first) x `confirm.seed`
(1..N). Trial (ci, k) trains ci, the source run's resolved config with the command's overrides, with
`train.seed` = its seed + k (fresh seeds: the draw that got the config selected is not counted again) and
`data.split_seed` unchanged (the same split), in `<train.run_dir>/<sweep>-confirm/ci-sk/`, W&B group
`<sweep>-confirm`, no pruning. The K configs are chosen on the first run and kept in the study, so a rerun
continues it: finished seeds are kept, a stopped seed resumes its last.pt, a killed one is retried from its
last.pt once its heartbeat is stale (3 x --heartbeat s), as in `sweep local`.

`confirm.csv` in the confirm folder: config, source_run, params (JSON), seeds (how many gave a value),
`<metric>_mean`, `<metric>_std`, `<metric>_seed<k>`, run_dirs (`;`-joined, seed order), within_noise
(see `launch.engine.seed_noise`: the Welch t-interval of the difference from the top config's mean contains 0).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from analysis.export import run_config
from analysis.optuna_runs import load_study
from analysis.rank import rank_runs
from analysis.rows import Source, parse_source
from analysis.runs import SWEEP_COPY, load_runs
from analysis.wandb_runs import wandb_api
from launch.engine.local import open_study
from launch.engine.objective import Objective
from launch.engine.plan import LocalSweep, default_storage
from launch.engine.schema import SELECT_KEY
from launch.engine.seed_noise import mean_std, welch_within_noise
from launch.engine.spec import SweepSpec, load_sweep
from launch.engine.study import make_storage
from launch.engine.trials import retried_from
from trainer import config as config_mod
from trainer.config import Config
from trainer.errors import ConfigError, UserError
from trainer.io import atomic_write_text
from trainer.metrics import METRICS, SELECTABLE, suggest

CONFIG_KEY = "confirm.config"
SEED_KEY = "confirm.seed"
CSV = "confirm.csv"
PLAN = "confirm"  # the study's user attr holding the chosen configs
NOISE_RULE = (
    "true where the 95% Welch t-interval of (its mean - the top config's mean) over the seeds contains 0; "
    "empty with fewer than two seeds on either side"
)


class ConfirmObjective(Objective):
    """A trial of a confirm: config `confirm.config` with seed offset `confirm.seed`, in `<label>-s<k>/`."""

    def _run_folder(self, trial: optuna.Trial, params: dict[str, Any]) -> tuple[str, Path | None, int | None]:
        """The seed's own folder: resumed when it has a checkpoint, else started afresh (a partial folder of a run
        killed before its first checkpoint holds nothing to resume)."""
        folder = f"{params[CONFIG_KEY]}-s{params[SEED_KEY]}"
        run_dir = self.sweep.sweep_dir / folder
        retry_of = retried_from(next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number))
        if (run_dir / "checkpoints" / "last.pt").exists():
            return folder, run_dir, retry_of
        if run_dir.exists():
            self.say(f"removing {run_dir}: a partial run folder without a checkpoint to resume")
            shutil.rmtree(run_dir)
        return f"{self.sweep.study}/{folder}", None, retry_of

    def trial_config(self, trial: optuna.Trial, params: dict[str, Any]) -> Config:
        cfg = config_mod.config_from_dict(self.sweep.configs[params[CONFIG_KEY]])
        overrides = {
            "train.seed": cfg.train.seed + int(params[SEED_KEY]),
            SELECT_KEY: self.sweep.spec.metric,
            "train.run_dir": str(self.sweep.sweep_dir.parent),
        }
        cfg = config_mod.apply_overrides(cfg, overrides, where=f"{params[CONFIG_KEY]}: ")
        cfg.tracking.name = ""
        cfg.tracking.group = self.sweep.study
        cfg.tracking.tags = [f"confirm:{self.sweep.study.removesuffix('-confirm')}"]
        return cfg


# --------------------------------------------------------------------------- the source


def _beside(src: Source) -> Path | None:
    """The sweep YAML `sweep local` keeps beside its runs and its default SQLite storage."""
    if src.kind == "local":
        folder = Path(src.path)
    elif src.kind == "optuna" and src.path.startswith(("sqlite:///", "journal:")):
        folder = Path(src.path.removeprefix("sqlite:///").removeprefix("journal:")).parent
    else:
        return None
    return folder / SWEEP_COPY if (folder / SWEEP_COPY).is_file() else None


def source_objective(src: Source, by: str | None = None, api: Any = None) -> tuple[str, str]:
    """(metric, goal) to rank by: `--by` (its registry goal), else the source sweep's metric (its kept YAML, or
    the W&B sweep's config), else val/cer."""
    if by:
        if by not in SELECTABLE:
            raise ConfigError(
                f"--by {by}: not a metric a run can select its best checkpoint by{suggest(by, SELECTABLE)} "
                f"(one of {', '.join(SELECTABLE)})"
            )
        return by, METRICS[by].goal
    kept = _beside(src)
    if kept is not None:
        spec = load_sweep(kept)
        return spec.metric, spec.goal
    if src.kind == "wandb" and src.sweep:
        spec = SweepSpec(dict(wandb_api(api).sweep(f"{src.path}/{src.sweep}").config))
        return spec.metric, spec.goal
    return "val/cer", "minimize"


def sweep_name(src: Source) -> str:
    """The source sweep's name: its folder, its Optuna study, or its W&B sweep id (else the project)."""
    if src.kind == "local":
        return Path(src.path).resolve().name
    if src.kind == "optuna":
        return src.study or load_study(src).study_name
    return src.sweep or src.path.rsplit("/", 1)[-1]


def _plain(value: Any) -> Any:
    """A table cell as JSON takes it (numpy scalars unwrapped, NaN as null)."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def pick_configs(
    table: pd.DataFrame, src: Source, top: int, metric: str, goal: str, overrides: list[str], api: Any = None
) -> list[dict[str, Any]]:
    """The `top` best runs of the table: label, source run, swept parameters (JSON) and resolved flat config."""
    ranked = rank_runs(table, metric, lower_is_better=goal == "minimize")
    ranked = ranked[ranked["rank"].notna()].head(top)
    if ranked.empty:
        raise UserError(f"{src}: no run that did not fail has {metric}; nothing to confirm")
    picks = []
    for i, (_, row) in enumerate(ranked.iterrows(), 1):
        cfg = run_config(src, row, api=api)
        if overrides:
            cfg = config_mod.apply_overrides(cfg, overrides, where="overrides: ")
        params = {p: _plain(row[p]) for p in table.attrs["params"]}
        picks.append({"label": f"c{i}", "source_run": str(row["location"]), "params": json.dumps(params),
                      "config": config_mod.to_flat(cfg)})  # fmt: skip
    return picks


# --------------------------------------------------------------------------- the confirm study


def confirm_spec(study: str, metric: str, goal: str, labels: list[str], seeds: int) -> SweepSpec:
    """The grid of (config, seed offset) a confirm runs."""
    return SweepSpec({
        "name": study, "method": "grid", "metric": {"name": metric, "goal": goal},
        "parameters": {CONFIG_KEY: {"values": labels}, SEED_KEY: {"values": list(range(1, seeds + 1))}},
    })  # fmt: skip


def _stored_plan(storage: str, study: str) -> dict[str, Any] | None:
    """The plan a previous `sweep confirm` kept in the study, if there is one."""
    store = make_storage(storage, heartbeat=0)
    if study not in optuna.study.get_all_study_names(store):
        return None
    return optuna.load_study(study_name=study, storage=store).user_attrs.get(PLAN)


def _check_same(plan: dict[str, Any], top: int, seeds: int, study: str, storage: str) -> None:
    if (plan["top"], plan["seeds"]) != (top, seeds):
        raise UserError(
            f"{study} on {storage} was started with --top {plan['top']} --seeds {plan['seeds']}: rerun it with those "
            "to continue it, or give another --storage for a new confirm"
        )


def prepare_confirm(
    source: str,
    *,
    top: int,
    seeds: int,
    by: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    storage: str | None = None,
    heartbeat: int = 60,
    max_retry: int = 2,
    verbose: bool = True,
    api: Any = None,
) -> LocalSweep:
    """The confirm of `source` as a local sweep: its K configs chosen now, or the ones kept by an earlier run."""
    src = parse_source(source)
    metric, goal = source_objective(src, by, api)
    picks = pick_configs(load_runs(src, api=api), src, top, metric, goal, list(overrides), api)
    study = f"{sweep_name(src)}-confirm"
    sweep_dir = Path(picks[0]["config"]["train.run_dir"]) / study
    storage = storage or default_storage(sweep_dir)
    plan = _stored_plan(storage, study)
    notes = []
    if plan is not None:
        _check_same(plan, top, seeds, study, storage)
        if [p["source_run"] for p in plan["picks"]] != [p["source_run"] for p in picks]:
            notes.append(f"continuing {study}: its configs are the ones chosen when it started, not today's top {top}")
        picks, metric, goal = plan["picks"], plan["metric"], plan["goal"]
    sweep = LocalSweep(
        spec=confirm_spec(study, metric, goal, [p["label"] for p in picks], seeds), study=study, storage=storage,
        sweep_dir=sweep_dir, budget=len(picks) * seeds, pruner={"type": "none"}, overrides=list(overrides),
        heartbeat=heartbeat, max_retry=max_retry, verbose=verbose, device=picks[0]["config"]["train.device"],
        notes=notes, objective=ConfirmObjective, configs={p["label"]: p["config"] for p in picks},
    )  # fmt: skip
    if plan is None:  # a new confirm: its configs are kept in the study for every rerun
        plan = {"source": str(src), "metric": metric, "goal": goal, "top": top, "seeds": seeds, "picks": picks}
        open_study(sweep).set_user_attr(PLAN, plan)
    return sweep


# --------------------------------------------------------------------------- the table


def seed_results(study: optuna.Study) -> dict[tuple[str, int], tuple[float | None, str]]:
    """(config, seed offset) -> (the finished trial's value or None, its run folder)."""
    out: dict[tuple[str, int], tuple[float | None, str]] = {}
    for t in study.get_trials(deepcopy=False):
        if "skipped" in t.user_attrs or CONFIG_KEY not in t.params:
            continue
        key = (str(t.params[CONFIG_KEY]), int(t.params[SEED_KEY]))
        run_dir = t.user_attrs.get("run_dir", "")
        if t.state == optuna.trial.TrialState.COMPLETE:
            out[key] = (float(t.value), run_dir)
        elif out.get(key, (None, ""))[0] is None:
            out[key] = (None, run_dir)
    return out


def _row(pick: dict[str, Any], results: dict, metric: str, seeds: int) -> dict[str, Any]:
    found = [results.get((pick["label"], k), (None, "")) for k in range(1, seeds + 1)]
    values = [v for v, _ in found if v is not None]
    mean, std = mean_std(values)
    return {
        "config": pick["label"], "source_run": pick["source_run"], "params": pick["params"], "seeds": len(values),
        f"{metric}_mean": mean, f"{metric}_std": std,
        **{f"{metric}_seed{k}": v if v is not None else math.nan for k, (v, _) in enumerate(found, 1)},
        "run_dirs": ";".join(d for _, d in found if d), "_values": values,
    }  # fmt: skip


def confirm_table(sweep: LocalSweep, study: optuna.Study) -> pd.DataFrame:
    """One row a config, best mean first, with `within_noise` against the top one (see the module docstring)."""
    plan = study.user_attrs[PLAN]
    metric, goal = plan["metric"], plan["goal"]
    results = seed_results(study)
    rows = [_row(p, results, metric, plan["seeds"]) for p in plan["picks"]]
    sign = 1 if goal == "minimize" else -1
    rows.sort(key=lambda r: (math.isnan(r[f"{metric}_mean"]), sign * r[f"{metric}_mean"] if r["seeds"] else 0))
    best = rows[0]["_values"]
    for r in rows:
        both = len(best) >= 2 and len(r["_values"]) >= 2
        r["within_noise"] = welch_within_noise(r["_values"], best) if both else None
    table = pd.DataFrame(rows).drop(columns="_values")
    seeds = [f"{metric}_seed{k}" for k in range(1, plan["seeds"] + 1)]
    table.attrs["lead"] = ["config", "seeds", f"{metric}_mean", f"{metric}_std", "within_noise", *seeds, "params"]
    return table


def write_table(sweep: LocalSweep, table: pd.DataFrame) -> Path:
    """`confirm.csv` in the confirm folder (written atomically)."""
    path = sweep.sweep_dir / CSV
    atomic_write_text(path, table.to_csv(index=False))
    return path
