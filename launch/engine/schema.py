"""W&B's sweep schema outside `parameters:`: the command, the metric(s), the scheduler block, early_terminate.

Each `check_*` appends one `path: what is wrong` line per problem to `out`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from trainer import config as config_mod
from trainer.config import PROJECT_ROOT
from trainer.errors import ConfigError
from trainer.metrics import METRICS, SELECTABLE, suggest

HYPERBAND_FIELDS = ("type", "min_iter", "max_iter", "s", "eta", "strict")
METRIC_FIELDS = ("name", "goal", "target", "impute", "impute_while_running")
SCHEDULER_ENGINES = ("optuna", "ax", "wandb")
SCHEDULER_FIELDS = ("engine", "source", "optimizer", "search_space")
MACROS = ("${env}", "${interpreter}", "${args}", "${args_no_hyphens}", "${program}")
SELECT_KEY = "train.select_metric"  # the config key a trial selects its best epoch by
KEYS_HINT = "see `python -m launch config keys`"  # added to unknown-key problems only
EXAMPLE_COMMAND = "[${env}, ${interpreter}, -m, launch, train, --config, configs/small.yaml, ${args}]"


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# --------------------------------------------------------------------------- the command


def _runs_train(words: list[str]) -> int | None:
    """The index after `-m launch train` in a command's words, None when it does not run it."""
    for i in range(len(words) - 2):
        if words[i : i + 3] == ["-m", "launch", "train"]:
            return i + 3
    return None


def command_tail(command: Any) -> list[str]:
    """The arguments after `-m launch train` in a sweep command."""
    if not isinstance(command, list):
        return []
    words = [str(c) for c in command]
    start = _runs_train(words)
    return [] if start is None else words[start:]


def command_config(command: Any) -> str | None:
    """The command's `--config` value, if any."""
    tail = command_tail(command)
    for i, word in enumerate(tail):
        if word == "--config" and i + 1 < len(tail):
            return tail[i + 1]
        if word.startswith("--config="):
            return word.split("=", 1)[1]
    return None


def command_overrides(command: Any) -> list[str]:
    """The command's fixed `key=value` words: neither a macro, nor --config (and its value), --data, --name or --resume."""
    tail = command_tail(command)
    out = []
    for i, word in enumerate(tail):
        after_config = i > 0 and tail[i - 1] == "--config"
        if word.startswith(("${", "--config", "--data", "--name", "--resume")) or after_config or "=" not in word:
            continue
        out.append(word)
    return out


def with_select_metric(command: Any, metric: str) -> Any:
    """The command with `train.select_metric=<metric>` before its ${args}, so W&B's trials select best.pt, early
    stopping and pruning by the sweep's metric (unchanged when it sets the key itself or does not run `launch train`)."""
    if not isinstance(command, list) or _runs_train([str(w) for w in command]) is None:
        return command
    if any(config_mod.parse_override(w)[0] == SELECT_KEY for w in command_overrides(command)):
        return command
    words = list(command)
    at = next((i for i, w in enumerate(words) if w in ("${args}", "${args_no_hyphens}")), len(words))
    return [*words[:at], f"{SELECT_KEY}={metric}", *words[at:]]


def check_select_metric(raw: dict[str, Any], metric: str, overrides: list[str], out: list[str]) -> None:
    """Trials select by the sweep's metric: `train.select_metric` is neither swept nor set to another metric."""
    if isinstance(raw.get("parameters"), dict) and SELECT_KEY in raw["parameters"]:
        out.append(
            f"parameters.{SELECT_KEY}: set by the sweep's metric ({metric}) for every trial; remove it "
            "(to select by another metric, make that the sweep's metric)"
        )
    for where, words in (("command", command_overrides(raw.get("command"))), ("overrides", overrides)):
        for word in words:
            if "=" not in word:  # not an override: the base config's check reports it
                continue
            key, value = config_mod.parse_override(word)
            if key == SELECT_KEY and value != metric:
                out.append(
                    f"{where}: {word} differs from the sweep's metric {metric}; every trial selects best.pt, early "
                    f"stopping and pruning by the sweep's metric: drop it, or make {value} the sweep's metric"
                )


def check_command(raw: dict[str, Any], out: list[str]) -> None:
    """The command runs `-m launch train` with ${args}, and its fixed overrides are valid config keys and values."""
    command = raw.get("command")
    if command is None:
        if "program" in raw:
            out.append(
                f"program: W&B would run `python {raw['program']} --key=value`, which is not lipsweep's entrypoint; add command: {EXAMPLE_COMMAND}"
            )
        else:
            out.append(f"command: missing; W&B's agents need it to start a trial: command: {EXAMPLE_COMMAND}")
        return
    if not isinstance(command, list) or not all(isinstance(c, (str, int, float)) for c in command):
        out.append(f"command: must be a list of words, for example {EXAMPLE_COMMAND}")
        return
    words = [str(c) for c in command]
    if _runs_train(words) is None:
        out.append(f"command: must run lipsweep's entrypoint `-m launch train`, for example {EXAMPLE_COMMAND}")
        return
    for m in (w for w in words if w.startswith("${") and w.endswith("}")):
        if m not in MACROS:
            out.append(
                f"command: {m} is not understood by `launch train` (it takes ${{args}}: --key=value, or ${{args_no_hyphens}}: key=value)"
            )
    if "${args}" not in words and "${args_no_hyphens}" not in words:
        out.append("command: has no ${args}; the swept values would reach the run only through wandb.config")
    specs = config_mod.schema()
    for word in command_overrides(command):
        key, value = config_mod.parse_override(word)
        if key not in specs:
            hint = config_mod.closest_key(key)
            out.append(
                f"command: {word}: unknown config key" + (f"; did you mean {hint}?" if hint else f"; {KEYS_HINT}")
            )
            continue
        try:
            config_mod.coerce(specs[key], value)
        except ConfigError as e:
            out.append(f"command: {e}")


# --------------------------------------------------------------------------- metric, scheduler, early_terminate


def _metric_name_problem(name: Any, where: str, first: bool) -> str | None:
    """The first objective must be one a run can select its best checkpoint by; others any metric lipsweep logs."""
    if not isinstance(name, str):
        return f"{where}.name: missing; the metric to optimise, for example val/cer"
    if name not in METRICS:
        return f"{where}.name: '{name}' is not a metric lipsweep logs{suggest(name, SELECTABLE if first else METRICS)}"
    if first and name not in SELECTABLE:
        return (
            f"{where}.name: '{name}' cannot be a sweep's (first) metric: a run selects best.pt, early stopping and "
            f"pruning by it (train.select_metric); one of {', '.join(SELECTABLE)}"
        )
    return None


def _goal_problem(metric: dict[str, Any], where: str) -> str | None:
    """A goal W&B takes, and the registry's goal (W&B minimizes when `goal:` is absent)."""
    goal = metric.get("goal", "minimize")
    if goal not in ("minimize", "maximize"):
        return f"{where}.goal: '{metric['goal']}' must be minimize or maximize"
    known = METRICS.get(str(metric.get("name")))
    if known is not None and goal != known.goal:
        said = f"goal {goal}" if "goal" in metric else "no goal (W&B then minimizes)"
        return f"{where}.goal: {known.name} is better {'lower' if known.goal == 'minimize' else 'higher'}, but the YAML has {said}; write goal: {known.goal}"
    return None


def check_metric(metric: Any, where: str, out: list[str], first: bool = True) -> None:
    """One `metric:` mapping (or one entry of `metrics:`; `first`: the one runs select by)."""
    if not isinstance(metric, dict):
        out.append(f"{where}: must be a mapping like {{name: val/cer, goal: minimize}}")
        return
    for field in metric:
        if field not in METRIC_FIELDS:
            out.append(
                f"{where}.{field}: not a metric field (allowed: {', '.join(METRIC_FIELDS)}){suggest(str(field), METRIC_FIELDS)}"
            )
    for problem in (_metric_name_problem(metric.get("name"), where, first), _goal_problem(metric, where)):
        if problem:
            out.append(problem)
    if "target" in metric and not is_number(metric["target"]):
        out.append(f"{where}.target: must be a number")
    for field, allowed in (
        ("impute", ("latest", "best", "worst")),
        ("impute_while_running", ("latest", "best", "worst", "false")),
    ):
        if field in metric and metric[field] not in allowed:
            out.append(f"{where}.{field}: must be one of {', '.join(allowed)}")


def check_objectives(raw: dict[str, Any], out: list[str]) -> None:
    """`metric:`, or `metrics:` (two or more, with method custom)."""
    if "metrics" not in raw:
        if "metric" not in raw:
            out.append("metric: missing; for example metric: {name: val/cer, goal: minimize}")
        else:
            check_metric(raw["metric"], "metric", out)
        return
    if "metric" in raw:
        out.append("metrics: cannot be used beside metric")
    if not isinstance(raw["metrics"], list) or len(raw["metrics"]) < 2:
        out.append("metrics: a list of two or more metrics (for one, use metric:)")
    else:
        for i, m in enumerate(raw["metrics"]):
            check_metric(m, f"metrics[{i}]", out, first=i == 0)
    if raw.get("method") != "custom":
        out.append("metrics: several objectives need method: custom with a scheduler")


def check_scheduler(raw: dict[str, Any], out: list[str]) -> None:
    """The `scheduler:` block: engine, its method, its source file."""
    sched = raw["scheduler"]
    if not isinstance(sched, dict):
        out.append("scheduler: must be a mapping with engine: optuna|ax|wandb")
        return
    for field in sched:
        if field not in SCHEDULER_FIELDS:
            out.append(f"scheduler.{field}: not a scheduler field (allowed: {', '.join(SCHEDULER_FIELDS)})")
    engine = sched.get("engine")
    if engine not in SCHEDULER_ENGINES:
        out.append(f"scheduler.engine: must be one of {', '.join(SCHEDULER_ENGINES)}")
    for field in ("source", "optimizer", "search_space"):
        if field in sched and not isinstance(sched[field], str):
            out.append(f"scheduler.{field}: must be a string")
    for field in ("optimizer", "search_space"):
        if field in sched and "source" not in sched:
            out.append(f"scheduler.{field}: needs scheduler.source, the file that defines it")
    method = raw.get("method")
    if engine in ("optuna", "ax") and method != "custom":
        out.append(f"scheduler.engine: {engine} needs method: custom")
    if engine == "wandb" and method not in ("grid", "random", "bayes"):
        out.append("scheduler.engine: wandb needs method grid, random or bayes")
    if "early_terminate" in raw:
        out.append("early_terminate: cannot be used beside scheduler (the scheduler's pruner stops runs)")
    if isinstance(sched.get("source"), str):
        out.extend(check_scheduler_source(sched))


def scheduler_source(source: str) -> str:
    """A relative `scheduler.source` missing from the working folder, taken from the project root."""
    if not Path(source).is_file() and (PROJECT_ROOT / source).is_file():
        return str(PROJECT_ROOT / source)
    return source


def check_scheduler_source(sched: dict[str, Any]) -> list[str]:
    """`scheduler.source` exists (relative to where the scheduler runs: here) and defines `optimizer` and
    `search_space` as wandb's scheduler calls them: optimizer(SweepInfo), search_space(optuna.Trial) -> dict."""
    source = scheduler_source(sched["source"])
    if not Path(source).is_file():
        return [
            f"scheduler.source: {source} not found (from {Path.cwd()}); wandb's scheduler imports it from the folder it runs in"
        ]
    from wandb.sdk.sweeps.scheduler.client import load_source_object

    out: list[str] = []
    for field in ("optimizer", "search_space"):
        name = sched.get(field)
        if not isinstance(name, str):
            continue
        try:
            obj = load_source_object(source, name)
        except ValueError as e:
            out.append(f"scheduler.{field}: {e}")
            continue
        except Exception as e:  # the file itself fails to import: the scheduler would fail the same way
            out.append(f"scheduler.source: importing {source} fails: {type(e).__name__}: {e}")
            return out
        problem = _callable_problem(obj, field, name, source)
        if problem:
            out.append(problem)
    return out


def _callable_problem(obj: Any, field: str, name: str, source: str) -> str | None:
    """Why wandb's scheduler could not call `obj` as it calls `scheduler.<field>`, or None."""
    from wandb.sdk.sweeps.sweep_info import SweepInfo

    if not callable(obj):
        return f"scheduler.{field}: {name!r} in {source} is {type(obj).__name__}, not a function"
    probe: Any = SweepInfo("id", "name", "entity", "project", {}, "") if field == "optimizer" else object()
    try:
        inspect.signature(obj).bind(probe)
    except TypeError:
        what = "one SweepInfo argument" if field == "optimizer" else "one optuna.Trial argument"
        return f"scheduler.{field}: {name!r} in {source} cannot be called with {what}, as wandb's scheduler calls it"
    return None


def check_early_terminate(et: Any, out: list[str]) -> None:
    """W&B's `early_terminate: {type: hyperband, ...}`."""
    if not isinstance(et, dict):
        out.append("early_terminate: must be a mapping like {type: hyperband, min_iter: 3, eta: 3}")
        return
    for field in et:
        if field not in HYPERBAND_FIELDS:
            out.append(
                f"early_terminate.{field}: not a hyperband field (allowed: {', '.join(HYPERBAND_FIELDS)}){suggest(str(field), HYPERBAND_FIELDS)}"
            )
    if et.get("type") != "hyperband":
        out.append("early_terminate.type: must be hyperband (W&B's only early-termination type)")
    if not ("min_iter" in et or ("max_iter" in et and "s" in et)):
        out.append("early_terminate: needs min_iter, or max_iter together with s")
    for field in ("min_iter", "max_iter"):
        if field in et and not (is_int(et[field]) and et[field] >= 1):
            out.append(f"early_terminate.{field}: must be an integer >= 1 (epochs)")
    if "s" in et and not is_number(et["s"]):
        out.append("early_terminate.s: must be a number")
    if "eta" in et and not (is_number(et["eta"]) and et["eta"] > 1):
        out.append("early_terminate.eta: must be a number above 1")
    if "strict" in et and not isinstance(et["strict"], bool):
        out.append("early_terminate.strict: must be true or false")
