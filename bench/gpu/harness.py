"""The GPU check's frame: settings, the rows and their time guards, one process per row, gpu.md and gpu.json.

Each row is a function `row(ctx, report)` that adds lines to `report` as it measures (a number, an
"n/a on cpu" with its reason, or a failed check). The parent runs every row as
`python -m bench.gpu --row NAME` under a hard time guard (its budget plus a grace, then the whole process
group is killed); inside, `ctx.check_time` stops a row at its budget (a soft guard) and what it measured
so far is kept. A row that raises is reported with its error; the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
GRACE_S = 20  # after its budget a row's process has this long before it is killed
T4_MEMORY_GIB = 15.0
OK, NA, FAILED, ERROR, TIMEOUT = "ok", "n/a", "check failed", "error", "timed out"
OOM = "out of memory"  # a measured result under the cap (fp32 at the default batch on a T4), not a fault


@dataclass(frozen=True)
class Sizes:
    """How much each row does: FULL on a GPU, QUICK on the CPU (--quick), tests pass smaller ones."""

    config: str  # base | small (or a path)
    warmup: int = 2  # untimed training steps before the timed ones
    steps: int = 5  # timed training steps per variant
    max_clips: int = 0  # at most this many clips in a training batch (0: the config's default batch)
    amp_steps: int = 50
    amp_clips: int = 16
    fit_steps: int = 2  # training steps per batch_frames tried
    search_utterances: int = 64
    search_batches: tuple[int, ...] = (1, 32, 64)
    espnet_utterances: int = 8  # ESPnet's per-utterance search decodes this many (it is slow)
    val_train_clips: int = 1600
    val_clips: int = 200
    val_epochs: int = 2  # the second is the steady one (train.max_minutes stops the run at the row's budget)
    sync_clips: int = 400  # the small config's loop (its syncs do not depend on the model's size)
    sweep_clips: int = 160
    sweep_trials: int = 4
    bank: int = 200  # distinct synthetic clips rendered; datasets repeat them


FULL = Sizes("base")
QUICK = Sizes(
    "small", warmup=1, steps=2, max_clips=8, amp_steps=20, amp_clips=4, search_utterances=4, search_batches=(1, 4),
    espnet_utterances=2, val_train_clips=96, val_clips=12, val_epochs=1, sync_clips=64, sweep_clips=48, sweep_trials=2,
    bank=32,
)  # fmt: skip


class RowTimeout(Exception):
    """A row reached its time guard (`Context.check_time`)."""


@dataclass
class Context:
    """What a row needs: the device, the T4 emulation, its sizes, a scratch folder and its deadline."""

    device: torch.device
    emulate: str  # t4 | none
    sizes: Sizes
    scratch: Path
    deadline: float = float("inf")  # time.monotonic() at which the row's time guard ends
    auto_avsr: Path | None = None
    espnet: Path | None = None
    cap_gib: float | None = None  # the memory cap applied to this process

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def precision(self, name: str = "auto"):
        """The trainer's Precision for `name`; under T4 emulation auto is fp16 and bf16 is refused."""
        from trainer.device import Precision, select_precision
        from trainer.errors import UserError

        if self.emulate == "t4" and name in ("auto", "fp16", "bf16"):
            if name == "bf16":
                raise UserError("bf16 refused: a T4 (sm_75) has no bf16 (T4 emulation; --emulate none allows it)")
            return Precision("fp16", torch.float16, True)
        return select_precision(name, self.device)

    def overrides(self) -> list[str]:
        """Config overrides every row's trainer run gets: the device, the precision, no tracking."""
        return [f"train.device={self.device}", f"train.precision={self.precision().name}", "tracking.wandb=disabled"]

    def check_time(self, what: str) -> None:
        if time.monotonic() > self.deadline:
            raise RowTimeout(f"time guard reached during {what}")

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


@dataclass
class Line:
    row: str
    measurement: str
    result: str
    status: str = OK
    data: dict[str, Any] = field(default_factory=dict)


class Report:
    """The lines of one row; each `add` is written to `path` at once, so a killed row keeps what it measured."""

    def __init__(self, row: str, path: Path | None = None):
        self.row, self.path, self.lines = row, path, []

    def add(self, measurement: str, result: str, status: str = OK, **data: Any) -> Line:
        line = Line(self.row, measurement, result, status, data)
        self.lines.append(line)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps([asdict(x) for x in self.lines], default=str), encoding="utf-8")
            os.replace(tmp, self.path)
        return line


@dataclass(frozen=True)
class RowSpec:
    module: str
    function: str
    budget_s: float  # the soft time guard; the hard one adds GRACE_S
    what: str


TOTAL_BUDGET_S = 430  # all rows together; a row gets at most what is left after the later rows' minimums
MIN_ROW_S = 10

ROWS = {  # in the order they run; the budgets add up to TOTAL_BUDGET_S
    "device": RowSpec("bench.gpu.steps", "device_row", 15, "device, torch, CUDA, kernel check, T4 emulation"),
    "train_step": RowSpec("bench.gpu.steps", "train_step_row", 60, "training step: fp32/fp16, SDPA/math, cache"),
    "batch_frames": RowSpec("bench.gpu.steps", "batch_frames_row", 50, "largest train.batch_frames in the cap"),
    "amp": RowSpec("bench.gpu.amp", "amp_row", 45, "AMP sanity: fp16 against fp32"),
    "syncs": RowSpec("bench.gpu.loop", "syncs_row", 45, "host syncs per optimizer step in train()"),
    "search": RowSpec("bench.gpu.decoding", "search_row", 55, "beam search beside ESPnet"),
    "validation": RowSpec("bench.gpu.loop", "validation_row", 80, "validation share of an epoch"),
    "sweep": RowSpec("bench.gpu.loop", "sweep_row", 80, "two sweep workers on one device"),
}


# --------------------------------------------------------------------------- one row, in its own process


def resolve_emulation(emulate: str, device: torch.device) -> str:
    """auto: t4 on a CUDA GPU that is not a T4, none on a T4 and on the CPU."""
    if emulate != "auto":
        return emulate
    if device.type != "cuda":
        return "none"
    return "none" if "T4" in torch.cuda.get_device_name(device) else "t4"


def apply_memory_cap(device: torch.device, emulate: str) -> float | None:
    """Cap this process's CUDA caching allocator at a T4's 15 GiB; the cap in GiB, None when none applies."""
    if device.type != "cuda" or emulate != "t4":
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, T4_MEMORY_GIB * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction * total / 2**30


def run_row(name: str, ctx: Context, report: Report, budget: float | None = None) -> Report:
    """Run one row's function; its error or timeout becomes a line of the report, never silence."""
    spec = ROWS[name]
    try:
        fn = getattr(importlib.import_module(spec.module), spec.function)
        fn(ctx, report)
    except RowTimeout as e:
        report.add(spec.what, f"stopped: {e} ({budget or spec.budget_s:.0f} s budget)", TIMEOUT)
    except Exception as e:  # the row's failure is its result; the other rows still run
        tail = "".join(traceback.format_exception(type(e), e, e.__traceback__)[-3:])
        report.add(spec.what, f"error: {type(e).__name__}: {e}".strip(), ERROR, traceback=tail[-2000:])
    if not report.lines:
        report.add(spec.what, "error: the row reported nothing", ERROR)
    return report


def child_main(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    emulate = resolve_emulation(args.emulate, device)
    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    ctx = Context(
        device, emulate, QUICK if args.quick else FULL, Path(args.scratch),
        deadline=time.monotonic() + args.budget, auto_avsr=args.auto_avsr, espnet=args.espnet,
        cap_gib=apply_memory_cap(device, emulate),
    )  # fmt: skip
    run_row(args.row, ctx, Report(args.row, Path(args.result)), args.budget)
    return 0


# --------------------------------------------------------------------------- the parent: every row, the files


def row_budgets(names: list[str], total: float) -> dict[str, float]:
    """Each row's budget: its own, cut so that the rows after it still have MIN_ROW_S each within `total`."""
    budgets, used = {}, 0.0
    for i, name in enumerate(names):
        budgets[name] = max(MIN_ROW_S, min(ROWS[name].budget_s, total - used - MIN_ROW_S * (len(names) - i - 1)))
        used += budgets[name]
    return budgets


def child_command(name: str, args: argparse.Namespace, result: Path, scratch: Path, budget: float) -> list[str]:
    cmd = [sys.executable, "-m", "bench.gpu", "--row", name, "--result", str(result), "--scratch", str(scratch)]
    cmd += ["--budget", f"{budget:.0f}"]
    cmd += ["--device", args.device, "--emulate", args.emulate, "--threads", str(args.threads)]
    cmd += ["--quick"] if args.quick else []
    cmd += ["--auto-avsr", str(args.auto_avsr)] if args.auto_avsr else []
    return cmd + (["--espnet", str(args.espnet)] if args.espnet else [])


def cpu_seconds() -> float:
    """CPU time (user + system) of this process's finished children, theirs included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_child(
    name: str, args: argparse.Namespace, scratch: Path, budget: float
) -> tuple[list[dict], dict[str, float], str]:
    """One row in its own process group under the hard time guard: (its lines, wall and CPU seconds, its output's end)."""
    result = scratch / f"{name}.json"
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    if args.threads:  # also for the processes a row starts (sweep workers)
        env["OMP_NUM_THREADS"] = str(args.threads)
    started, cpu = time.monotonic(), cpu_seconds()
    proc = subprocess.Popen(
        child_command(name, args, result, scratch / name, budget), cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    limit = budget + GRACE_S
    try:
        output, _ = proc.communicate(timeout=limit)
        killed = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the row and anything it started (sweep workers)
        output, _ = proc.communicate()
        killed = True
    seconds = {"wall": time.monotonic() - started, "cpu": cpu_seconds() - cpu}
    lines = json.loads(result.read_text(encoding="utf-8")) if result.exists() else []
    spec = ROWS[name]
    if killed:
        lines.append(asdict(Line(name, spec.what, f"killed at the hard time guard ({limit:.0f} s)", TIMEOUT)))
    elif proc.returncode or not lines:
        why = f"its process exited with status {proc.returncode}"
        lines.append(asdict(Line(name, spec.what, f"error: {why}; the end of its output is in gpu.json", ERROR)))
    return lines, seconds, (output or "")[-3000:]


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda}
    info.update({"cpus": os.cpu_count(), "platform": platform.platform()})
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def render(summary: dict[str, Any]) -> str:
    """gpu.md: the settings, then one table of every row's lines."""
    s = summary["settings"]
    out = [
        f"# GPU check ({s['device']}, emulate {s['emulate']}, {'quick' if s['quick'] else 'full'})",
        "",
        f"Written by `{summary['command']}` on {summary['date']} in {summary['seconds']:.0f} s "
        f"({summary['cpu_s']:.0f} s of CPU time). Machine: "
        + ", ".join(f"{k} {v}" for k, v in summary["machine"].items()),
        "",
        "| row | measurement | result | status | s (CPU s) |",
        "|---|---|---|---|---:|",
    ]
    for row in summary["rows"]:
        for i, line in enumerate(row["lines"]):
            seconds = f"{row['seconds']:.0f} ({row['cpu_s']:.0f})" if i == 0 else ""
            result = line["result"].replace("|", "/").replace("\n", " ")
            out.append(f"| {row['name']} | {line['measurement']} | {result} | {line['status']} | {seconds} |")
    return "\n".join(out) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    import bench.gpu

    p = argparse.ArgumentParser(
        prog="python -m bench.gpu", description=bench.gpu.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", type=Path, help="folder for gpu.md and gpu.json")
    p.add_argument("--device", default=None, help="cuda[:N] or cpu (default: cuda where torch sees a GPU)")
    p.add_argument("--emulate", choices=["auto", "t4", "none"], default="auto", help="auto: t4 on a GPU not a T4")
    p.add_argument("--quick", action="store_true", help="the small config and few steps (the CPU run of CI)")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    p.add_argument("--auto-avsr", type=Path, default=None, help="an auto_avsr checkout: its per-utterance search")
    p.add_argument("--espnet", type=Path, default=None, help="espnet 202611's espnet2 folder: its batched search")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds for all rows (one row: its own)")
    p.add_argument("--row", choices=list(ROWS), help=argparse.SUPPRESS)  # the child process of one row
    p.add_argument("--result", help=argparse.SUPPRESS)
    p.add_argument("--scratch", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.row is None and args.out is None:
        p.error("--out DIR is required")
    if args.device is None:
        if not torch.cuda.is_available() and not args.quick and args.row is None:
            p.error("torch sees no GPU here, and the full check (the base config) would outrun its time guards on a "
                    "CPU: run `--device cpu --quick` for the CPU version, or `--device cpu` to insist")  # fmt: skip
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"--rows: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    args.rows = rows
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.row:
        return child_main(args)
    started = time.monotonic()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lipsweep-gpu-") as tmp:
        budgets = row_budgets(args.rows, args.budget)
        for name in args.rows:
            print(f"[gpu] {name}: {ROWS[name].what} (budget {budgets[name]:.0f} s)", flush=True)
            lines, seconds, output = run_child(name, args, Path(tmp), budgets[name])
            for line in lines:
                print(f"[gpu]   {line['measurement']}: {line['result']} [{line['status']}]", flush=True)
            print(f"[gpu]   ({seconds['wall']:.0f} s wall, {seconds['cpu']:.0f} s CPU)", flush=True)
            rows.append(
                {"name": name, "seconds": seconds["wall"], "cpu_s": seconds["cpu"], "lines": lines, "output": output}
            )
    summary = {
        "command": "python -m bench.gpu " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "seconds": time.monotonic() - started,
        "cpu_s": sum(r["cpu_s"] for r in rows),
        "machine": machine(),
        "settings": {
            "device": args.device,
            "emulate": resolve_emulation(args.emulate, torch.device(args.device)),
            "quick": args.quick,
            "rows": args.rows,
        },  # fmt: skip
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    (args.out / "gpu.md").write_text(render(summary), encoding="utf-8")
    print(f"[gpu] wrote {args.out / 'gpu.md'} and gpu.json in {summary['seconds']:.0f} s", flush=True)
    failed = [row for row in rows if any(line["status"] in (FAILED, ERROR, TIMEOUT) for line in row["lines"])]
    print(f"gpu: {len(rows) - len(failed)} passed, {len(failed)} failed", flush=True)  # a row passes with no bad line
    return 1 if failed else 0
