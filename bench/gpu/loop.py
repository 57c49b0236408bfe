"""Rows of the GPU check that run the real training loop: host syncs, the validation share, sweep workers.

They call `trainer.train.train` (and `python -m launch sweep local`) on synthetic .npy clips with
tracking off, so what they measure is the loop a user runs, not a copy of it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import signal
import subprocess
import sys
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from bench.gpu.data import dataset
from bench.gpu.harness import ERROR, FAILED, NA, ROOT, Context, Report
from trainer.config import Config, load_config

SYNC_WARNING = "synchronizing CUDA operation"  # torch's message under set_sync_debug_mode("warn")
PROJECT_DIRS = ("trainer", "launch", "analysis", "bench")


@dataclass
class SyncCount:
    steps: int  # optimizer steps taken
    per_step: float | None  # host syncs from just after the first optimizer step to the last one, per step
    where: Counter = field(default_factory=Counter)  # those syncs by the project line that caused them


def summarize(events: list[tuple[str, str]]) -> SyncCount:
    """("step", "") and ("sync", where) events in order -> syncs per optimizer step in the steady loop.

    The window runs from just after the first step to the last one: set-up, the first batch and the
    validation after the last step are outside it; each step's window holds one batch and its step.
    """
    steps = [i for i, (kind, _) in enumerate(events) if kind == "step"]
    if len(steps) < 2:
        return SyncCount(len(steps), None)
    syncs = [where for kind, where in events[steps[0] + 1 : steps[-1] + 1] if kind == "sync"]
    return SyncCount(len(steps), len(syncs) / (len(steps) - 1), Counter(syncs))


@functools.lru_cache(maxsize=4096)
def project_file(filename: str) -> str | None:
    """`filename` relative to the repository when it is the project's own code (trainer/, launch/, ...), else None."""
    path = Path(filename).resolve()
    if path.is_relative_to(ROOT) and path.relative_to(ROOT).parts[0] in PROJECT_DIRS:
        return str(path.relative_to(ROOT))
    return None


def project_line() -> str:
    """The innermost frame of the project's own code on the stack, as 'trainer/x.py:N (function)'."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        rel = project_file(frame.filename)
        if rel is not None:
            return f"{rel}:{frame.lineno} ({frame.name})"
    return "outside the project"


@contextlib.contextmanager
def sync_warnings(events: list[tuple[str, str]]) -> Iterator[None]:
    """Record each of torch's sync warnings as ("sync", the project line that caused it); other warnings pass."""
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message=f".*{SYNC_WARNING}")  # every one, not once per line
        shown = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if SYNC_WARNING in str(message):
                events.append(("sync", project_line()))
            else:
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


def count_syncs(run: Callable[[], Any], cuda: bool) -> tuple[Any, SyncCount]:
    """Run `run()` counting optimizer steps and (on CUDA) every host sync torch's sync debug mode reports."""
    events: list[tuple[str, str]] = []
    hook = register_optimizer_step_post_hook(lambda *a: events.append(("step", "")))
    try:
        with sync_warnings(events):
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                result = run()
            finally:
                if cuda:
                    torch.cuda.set_sync_debug_mode("default")
        return result, summarize(events)
    finally:
        hook.remove()


def loop_config(ctx: Context, config: str, root: Path, extra: list[str]) -> Config:
    runs = ctx.scratch / "runs"
    base = [f"data.root={root}", "data.test_ratio=0.0", f"train.run_dir={runs}", "train.train_cer_every=0"]
    return load_config(config, [*base, *ctx.overrides(), *extra])


def counter_sees_a_sync(device: torch.device) -> bool:
    """The counter's own check on CUDA: one deliberate `.item()` between two optimizer steps counts as one sync."""
    p = torch.nn.Parameter(torch.ones(1, device=device))
    opt = torch.optim.SGD([p], lr=0.0)

    def run() -> None:
        opt.step()
        p.detach().sum().item()
        opt.step()

    return count_syncs(run, cuda=True)[1].per_step == 1.0


def syncs_row(ctx: Context, report: Report) -> None:
    from trainer.train import train

    if ctx.cuda and not counter_sees_a_sync(ctx.device):
        report.add("host syncs per optimizer step", "error: the counter missed a deliberate .item() sync", ERROR)
        return
    root = dataset(ctx.scratch, ctx.sizes.sync_clips, ctx.sizes.bank, load_config("small").data.image_size)
    paths = {"live frontend": [], "frozen frontend from the feature cache": cache_overrides(1)}
    for path, extra in paths.items():
        ctx.check_time(f"host syncs, {path}")
        cfg = loop_config(ctx, "small", root, ["data.val_ratio=0.05", "train.max_epochs=1", *extra])
        name = "syncs-" + path.split()[0]
        result, count = count_syncs(lambda c=cfg, n=name: train(c, name=n, verbose=False), ctx.cuda)
        what = f"host syncs per optimizer step in train(), small config, {cfg.train.precision}, {path}"
        if not ctx.cuda:
            report.add(
                what, f"n/a on cpu: torch's sync debug mode is CUDA-only ({count.steps} optimizer steps ran)", NA
            )
            continue
        if count.per_step is None:
            report.add(what, f"error: {count.steps} optimizer steps; at least 2 are needed", ERROR)
            continue
        top = "; ".join(f"{n / (count.steps - 1):.1f} at {w}" for w, n in count.where.most_common(4))
        status = "ok" if count.per_step <= 1 and result.state == "finished" else FAILED
        text = f"{count.per_step:.1f} over {count.steps - 1} steps (expected at most 1){': ' + top if top else ''}"
        report.add(what, text, status, per_step=count.per_step, where=dict(count.where), state=result.state)


def cache_overrides(views: int) -> list[str]:
    return ["model.freeze.frontend=true", "train.frontend_cache=on", f"train.frontend_cache_views={views}"]


# --------------------------------------------------------------------------- the validation share of an epoch


def validation_row(ctx: Context, report: Report) -> None:
    from trainer.tracking import read_metrics
    from trainer.train import train

    s = ctx.sizes
    total = s.val_train_clips + s.val_clips
    root = dataset(ctx.scratch, total, s.bank, load_config(s.config).data.image_size)
    minutes = max(0.05, 0.6 * (ctx.left() - 10) / 60)  # the epochs' share of the row's budget (set-up comes first)
    extra = [
        f"data.val_ratio={s.val_clips / total}",
        f"train.max_epochs={s.val_epochs}",
        f"train.max_minutes={minutes}",
    ]
    extra += ["decode.beam_size=40", "decode.ctc_weight=0.1", *cache_overrides(2)]
    cfg = loop_config(ctx, s.config, root, extra)
    started = time.monotonic()
    result = train(cfg, name="validation", verbose=False)
    took = time.monotonic() - started
    epochs = read_metrics(result.run_dir)
    if not epochs:
        why = f"no epoch ended ({result.state}: {result.summary.get('reason')})"
        report.add("validation share of an epoch", why, FAILED)
        return
    setting = (
        f"{s.config} config, {s.val_train_clips} training + {s.val_clips} validation clips of 29-38 frames, frozen "
        f"frontend from the cache, {cfg.train.precision}, validation beam 40 CTC 0.1 (random start weights)"
    )
    for m in epochs:
        train_s = s.val_train_clips / m["train/clips_per_s"]
        val_s = m["time/epoch_s"] - train_s
        report.add(
            f"validation share of epoch {m['epoch']}: {setting}",
            f"training {train_s:.1f} s, validating {val_s:.1f} s: validation is {val_s / m['time/epoch_s']:.0%} of the epoch",
            train_s=train_s, val_s=val_s, epoch=m["epoch"], val_cer=m.get("val/cer"),
        )  # fmt: skip
    built = "built" if result.summary.get("frontend_cache/built") else "read"
    ended = f"{len(epochs)} of {s.val_epochs} epochs, {result.state} {result.summary.get('reason') or ''}".strip()
    report.add("the whole run (set-up, data cache, feature cache, epochs)", f"{took:.1f} s; cache {built}; {ended}")


# --------------------------------------------------------------------------- sweep workers sharing the device


SWEEP_YAML = """name: {name}
method: grid
metric: {{name: val/cer, goal: minimize}}
parameters:
  optim.lr: {{values: {values}}}
command:
  - ${{env}}
  - ${{interpreter}}
  - -m
  - launch
  - train
  - --config
  - configs/small.yaml
  - ${{args}}
"""


def run_sweep(ctx: Context, root: Path, workers: int, trials: int, limit: float) -> tuple[float, int, str]:
    """`python -m launch sweep local` with `workers` workers: (wall seconds, trials finished, its output's end)."""
    name = f"gpu-check-w{workers}"
    spec = ctx.scratch / f"{name}.yaml"
    spec.write_text(SWEEP_YAML.format(name=name, values=[round(1e-3 * (i + 1), 6) for i in range(trials)]))
    runs = ctx.scratch / f"runs-{workers}"
    cmd = [sys.executable, "-m", "launch", "sweep", "local", str(spec), "--workers", str(workers), "--data", str(root)]
    cmd += ["--trials", str(trials), "--pruner", "none", "--heartbeat", "0", f"train.run_dir={runs}"]
    cmd += ["train.max_epochs=1", "train.train_cer_every=0", "decode.beam_size=5", *ctx.overrides()]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": str(torch.get_num_threads())}
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=max(1.0, limit))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its workers
        output = proc.communicate()[0] + f"\n(killed at the time guard, {limit:.0f} s)"
    wall = time.monotonic() - started
    finished = sum('"state": "finished"' in p.read_text() for p in runs.glob(f"{name}/*/summary.json"))
    return wall, finished, f"exit {proc.returncode}: " + output[-1500:]


def sweep_row(ctx: Context, report: Report) -> None:
    what = f"sweep local: {ctx.sizes.sweep_trials} tiny trials (small config, 1 epoch, {ctx.sizes.sweep_clips} clips)"
    missing = [m for m in ("optuna", "wandb") if importlib.util.find_spec(m) is None]
    if missing:
        why = "Optuna runs the study, wandb maps the sweep's parameters"
        report.add(what, f"error: needs {' and '.join(missing)} ({why}); install scripts/gpu_wheels.sh's wheels", ERROR)
        return
    from trainer.data import load_dataset
    from trainer.text import Tokenizer

    root = dataset(ctx.scratch, ctx.sizes.sweep_clips, ctx.sizes.bank, 56)
    cfg = load_config("small", [f"data.root={root}"])
    load_dataset(cfg.data, Tokenizer.from_config(cfg.data), log=lambda *a: None)  # the data cache, built once
    walls = {}
    for workers in (1, 2):
        if workers == 2:
            ctx.check_time("the sweep with one worker")
        share = 0.6 if workers == 1 else 1.0  # one worker runs the trials one after another: it takes longer
        wall, finished, tail = run_sweep(ctx, root, workers, ctx.sizes.sweep_trials, share * ctx.left())
        text = f"{wall:.1f} s wall, {finished} of {ctx.sizes.sweep_trials} trials finished"
        if finished == ctx.sizes.sweep_trials:
            walls[workers] = wall
            report.add(f"{what}, {workers} worker(s)", text, wall_s=wall)
        else:
            report.add(f"{what}, {workers} worker(s)", f"{text}; {tail}", FAILED, wall_s=wall)
    if len(walls) < 2:
        report.add(f"{what}: 2 workers against 1", "not compared: a sweep above did not finish its trials", FAILED)
        return
    cap = "" if ctx.cap_gib is None else "; the workers are separate processes: the memory cap does not reach them"
    ratio = walls[1] / walls[2]
    report.add(
        f"{what}: 2 workers against 1",
        f"{ratio:.2f}x the speed of one worker on one {ctx.device.type}{cap}",
        speedup=ratio,
    )
