"""Run every benchmark and write one Markdown table: the README's performance numbers, regenerated.

    python -m bench                              # data, model, search, train, sweep, gpu; small settings; bench/RESULTS.md
    python -m bench --only data,model            # some of them
    python -m bench --full                       # each benchmark's own default settings (slow on a CPU)
    python -m bench --device cuda                # the GPU rows (model in fp32, fp16 and bf16)
    python -m bench --readme                     # also replace the table between the bench markers in README.md
    python -m bench --auto-avsr DIR              # time ESPnet's own beam search (an auto_avsr checkout) beside ours
    python -m bench --espnet DIR                 # and espnet 202611's batched search (its wheel unzipped in DIR)

Each benchmark is its own script in bench/ (with its own --help); this runs them one after another as
subprocesses (never two at once: they would time each other), reads their output and writes
`bench/RESULTS.md`: the machine, the exact commands, and one table of measurements. A benchmark that fails
gets a row saying so and the end of its output below the table; the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
README_BEGIN = "<!-- bench:begin (python -m bench --readme writes this table) -->"
README_END = "<!-- bench:end -->"

Row = tuple[str, str]  # (measurement, result)


@dataclass
class Benchmark:
    name: str
    script: str
    small: list[str]  # arguments of the quick run (the default)
    full: list[str]  # arguments of --full
    parse: Callable[[str, Path], list[Row]]  # (stdout, scratch folder) -> rows


# --------------------------------------------------------------------------- reading each script's output


def markdown_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row in `text`, header rows included, separator rows left out."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("|") and line.endswith("|") and not re.fullmatch(r"\|[\s:|-]+\|", line):
            rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def table_dicts(text: str) -> list[dict[str, str]]:
    """Markdown rows as dicts keyed by the header row (the first row)."""
    rows = markdown_rows(text)
    return [dict(zip(rows[0], r, strict=False)) for r in rows[1:]] if rows else []


def parse_data(out: str, scratch: Path) -> list[Row]:
    rows = [(f"{r['step']} (`bench/data.py`)", f"{r['clips/s']} clips/s") for r in table_dicts(out)]
    speedup = re.search(r"cache vs decoding: ([\d,.]+)x faster", out)
    if speedup:
        rows.append(("frame cache against decoding the videos (`bench/data.py`)", f"{speedup.group(1)}x faster"))
    return rows


def parse_model(out: str, scratch: Path) -> list[Row]:
    head = out.splitlines()[0] if out else ""
    setting = re.search(r"per batch of (\d+) clips x (\d+) frames", head)
    batch = f"{setting.group(1)} clips x {setting.group(2)} frames" if setting else "one batch"
    return [
        (
            f"model forward + backward, {r['config']} config, {batch}, {r['dtype']}, {r['attention']}: "
            "frontend / encoder / decoder+ctc / whole step (`bench/model.py`)",
            f"{r['frontend']} / {r['encoder']} / {r['decoder+ctc']} / {r['total']} ms",
        )
        for r in table_dicts(out)
    ]


SEARCH_ROW = re.compile(r"^(\S+)\s+(.+?)\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)$")
SEARCH_CHECK = re.compile(r"^\S+ .+ batch \d+: (same|DIFFERENT) best hypotheses as .+ for (\d+) of (\d+) utterances$")


def search_row(model: str, search: str, batch: str, ms: str, speedup: str, setting: str, ours_ms: dict) -> Row:
    """One timing line of bench/search.py as a table row; `ours_ms` holds lipsweep's ms by (model, batch)."""
    where = f"beam search, {model} model, {setting}"
    if search == "ESPnet 202611":
        ahead = f"; lipsweep {float(ms) / ours_ms[model, batch]:.1f}x ahead" if (model, batch) in ours_ms else ""
        what = f"{where}: ESPnet 202611's BatchBeamSearch, batches of {batch} (`bench/search.py`)"
        return what, f"{ms} ms/utterance ({speedup}x ESPnet one by one{ahead})"
    if search.startswith("ESPnet"):
        what = f"ESPnet's BatchBeamSearch, one utterance at a time{' (figure of issue 4)' if 'issue' in search else ''}"
        return f"{where}: {what} (`bench/search.py`)", f"{ms} ms/utterance"
    ours_ms[model, batch] = float(ms)
    return f"{where}, batches of {batch} (`bench/search.py`)", f"{ms} ms/utterance ({speedup}x ESPnet)"


def parse_search(out: str, scratch: Path) -> list[Row]:
    lines = out.splitlines()
    beam = re.search(r"beam (\d+), ctc_weight ([\d.]+)", lines[0]) if lines else None
    setting = f"beam {beam.group(1)}, CTC weight {beam.group(2)}" if beam else "beam search"
    rows: list[Row] = []
    ours_ms: dict[tuple[str, str], float] = {}
    for line in lines:
        m, check = SEARCH_ROW.match(line.strip()), SEARCH_CHECK.match(line.strip())
        if check and rows:  # the best hypotheses of the row above against its reference
            word = "same" if check.group(1) == "same" else "DIFFERENT"
            rows[-1] = (rows[-1][0], f"{rows[-1][1][:-1]}; {word} best hypotheses {check.group(2)}/{check.group(3)})")
        elif m:
            model, search, batch, _, ms, speedup = m.groups()
            rows.append(search_row(model, search, batch, ms, speedup, setting, ours_ms))
        elif line.strip().endswith("skipped"):
            rows.append((f"beam search: {line.strip()} (`bench/search.py`)", "skipped"))
    return rows


def parse_train(out: str, scratch: Path) -> list[Row]:
    phases = ("data", "augment", "forward", "backward", "optimizer")
    rows = []
    for r in table_dicts(out):
        shares = ", ".join(f"{p} {r[p]}" for p in phases if p in r)
        rows.append((f"training steps, {r['config']} config (`bench/train.py`)", f"{r['clips/s']} clips/s ({shares})"))
        decode = next((v for k, v in r.items() if k.startswith("validation decode")), None)
        if decode:
            rows.append((f"validation decoding, {r['config']} config (`bench/train.py`)", f"{decode} clips/s"))
    return rows


def parse_sweep(out: str, scratch: Path) -> list[Row]:
    path = scratch / "sweep.json"
    if not path.exists():
        return []
    result = json.loads(path.read_text())
    rows = []
    for r in result["results"]:
        best = f"{r['best_val_cer']:.4f}" if r["best_val_cer"] is not None else "-"
        rows.append(
            (
                f"demo sweep, {r['trials']} trials, pruner {r['pruner']} (`bench/sweep.py`)",
                f"{r['epochs']} epochs, {r['pruned']} pruned, {r['wall_s']:.0f} s, best val/cer {best}",
            )
        )
    if result.get("epochs_cut") is not None:
        rows.append(("epochs saved by pruning (`bench/sweep.py`)", f"{100 * result['epochs_cut']:.0f} %"))
    return rows


def parse_gpu(out: str, scratch: Path) -> list[Row]:
    """The GPU check's lines (its gpu.json), each with its status; they get their own section, not the table."""
    path = scratch / "gpu" / "gpu.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
    return [
        (f"{line['measurement']} (`bench/gpu`, row {row['name']})", f"{line['result']} [{line['status']}]")
        for row in rows
        for line in row["lines"]
    ]


OWN_SECTION = {"gpu": "The GPU check, quick (`python -m bench.gpu --quick`; the full run needs a GPU)"}


def benchmarks(
    scratch: Path, device: str, threads: int, auto_avsr: Path | None = None, espnet_dir: Path | None = None
) -> list[Benchmark]:
    common = ["--threads", str(threads)]
    espnet = ["--auto-avsr", str(auto_avsr)] if auto_avsr else []  # ESPnet's own search timed beside ours
    espnet += ["--espnet", str(espnet_dir)] if espnet_dir else []  # and espnet 202611's batched search
    synthetic = scratch / "synthetic"
    dtypes = ["fp32", "fp16", "bf16"] if device.startswith("cuda") else ["fp32"]
    return [
        Benchmark(
            "data",
            "data.py",
            ["--clips", "60", "--repeats", "2", "--device", device, *common],
            ["--device", device, *common],
            parse_data,
        ),  # fmt: skip
        Benchmark(
            "model",
            "model.py",
            ["--configs", "small", "--repeats", "2", "--device", device, "--dtypes", *dtypes, *common],
            ["--device", device, "--dtypes", *dtypes, *common],
            parse_model,
        ),  # fmt: skip
        Benchmark(
            "search",
            "search.py",
            ["--models", "small,base", "--utterances", "8", "--batch-sizes", "1,8", "--device", device, *espnet, *common],
            ["--device", device, *espnet, *common],
            parse_search,
        ),  # fmt: skip
        Benchmark(
            "train",
            "train.py",
            ["--clips", "60", "--steps", "5", "--device", device, *common],
            ["--device", device, *common],
            parse_train,
        ),  # fmt: skip
        Benchmark(
            "sweep",
            "sweep.py",
            ["--data", str(synthetic), "--clips", "60", "--trials", "2", "--runs", str(scratch / "runs"),
             "--json", str(scratch / "sweep.json"), "train.max_epochs=2"],
            ["--data", str(synthetic), "--runs", str(scratch / "runs"), "--json", str(scratch / "sweep.json")],
            parse_sweep,
        ),  # fmt: skip
        Benchmark(
            "gpu",
            "gpu",  # bench/gpu/, a package with a __main__
            ["--device", device, "--quick", "--threads", "1", "--out", str(scratch / "gpu"), *espnet],  # as CI runs it
            ["--device", device, "--out", str(scratch / "gpu"), *espnet],
            parse_gpu,
        ),  # fmt: skip
    ]


# --------------------------------------------------------------------------- running and writing


def machine(device: str, threads: int) -> tuple[str, str]:
    """(the table's machine column, the full description: CPU model and cores, GPU, torch build, load)."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    short = f"{os.cpu_count()}-core CPU"
    full = f"{cpu}, {os.cpu_count()} cores ({threads} torch threads), torch {torch.__version__}"
    if device.startswith("cuda") and torch.cuda.is_available():
        short = torch.cuda.get_device_name(torch.device(device))
        full += f", {short}"
    if hasattr(os, "getloadavg"):
        full += f", load average {os.getloadavg()[0]:.1f} at the start"
    return short, full


def run_one(bench: Benchmark, args: list[str], scratch: Path, timeout: float) -> tuple[list[Row], str, float, int]:
    """Run one benchmark script; (rows, its output, seconds, exit status)."""
    command = [sys.executable, str(BENCH / bench.script), *args]
    print(f"[bench] {bench.name}: {' '.join(command[1:])}", flush=True)
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        out, status = done.stdout + done.stderr, done.returncode
        stdout = done.stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stdout, status = out, -1
        out += f"\n(timed out after {timeout:.0f} s)"
    seconds = time.monotonic() - started
    rows = bench.parse(stdout, scratch)
    print(f"[bench] {bench.name}: {len(rows)} rows, exit {status}, {seconds:.0f} s", flush=True)
    return rows, out, seconds, status


def render(
    results: list[tuple[Benchmark, list[str], list[Row], str, float, int]], where: tuple[str, str], mode: str
) -> str:
    """RESULTS.md: the table first (what the README takes), then the commands and any failure's output."""
    lines = [
        "| measurement (benchmark) | result | machine |",
        "|---|---:|---|",
    ]
    short, full = where
    sections = []
    for bench, _, rows, _, _, status in results:
        why = "timed out" if status == -1 else f"exit status {status}"
        if bench.name in OWN_SECTION and rows:  # below the table: the README takes the table alone
            sections += ["", f"## {OWN_SECTION[bench.name]}", "", "| measurement | result |", "|---|---|"]
            sections += [f"| {m} | {r} |" for m, r in rows]
            sections += [f"\n`bench/{bench.script}` ended with {why}: see its output below"] if status else []
            continue
        for measurement, result in rows:
            lines.append(f"| {measurement} | {result} | {short} |")
        if not rows:
            lines.append(f"| `bench/{bench.script}` | no result ({why}; its output is below) | {short} |")
        elif status and bench.name != "sweep":  # bench/sweep.py exits 1 when its pruning targets are not met
            lines.append(f"| `bench/{bench.script}` ended with {why} | see its output below | {short} |")
    table = "\n".join(lines)
    out = [
        "# Benchmark results",
        "",
        f"Written by `python -m bench` ({mode} settings) on {time.strftime('%Y-%m-%d %H:%M')}. Machine: {full}.",
        "Do not edit: run it again.",
        "",
        README_BEGIN,
        table,
        README_END,
        *sections,
        "",
        "## Commands",
        "",
    ]
    for bench, args, _, _, seconds, status in results:
        out.append(f"- `python bench/{bench.script} {' '.join(args)}` ({seconds:.0f} s, exit {status})")
    failed = [(b, o, s) for b, _, rows, o, _, s in results if not rows or (s != 0 and b.name != "sweep")]
    for bench, output, _ in failed:
        out += ["", f"## Output of bench/{bench.script}", "", "```", output[-4000:].rstrip(), "```"]
    return "\n".join(out) + "\n"


def replace_readme_table(readme: Path, results_md: str) -> None:
    """Put the table between the bench markers of the README (they must be there already)."""
    text = readme.read_text(encoding="utf-8")
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise SystemExit(f"{readme}: add the lines\n{README_BEGIN}\n{README_END}\nwhere the table goes, then run again")
    new_begin, new_end = results_md.find(README_BEGIN), results_md.find(README_END)
    block = results_md[new_begin : new_end + len(README_END)]
    readme.write_text(text[:begin] + block + text[end + len(README_END) :], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default=None, help="comma-separated: data, model, search, train, sweep, gpu")
    parser.add_argument("--full", action="store_true", help="each benchmark's own default settings (slow on a CPU)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds one benchmark may take")
    parser.add_argument("--output", type=Path, default=BENCH / "RESULTS.md")
    parser.add_argument("--readme", action="store_true", help="also put the table into README.md between its markers")
    parser.add_argument("--auto-avsr", type=Path, default=None, help="an auto_avsr checkout: time ESPnet's search too")
    parser.add_argument("--espnet", type=Path, default=None, help="espnet 202611 unzipped: time its batched search too")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="lipsweep-bench-") as tmp:
        scratch = Path(tmp)
        chosen = benchmarks(scratch, args.device, args.threads, args.auto_avsr, args.espnet)
        if args.only:
            names = [n.strip() for n in args.only.split(",") if n.strip()]
            unknown = sorted(set(names) - {b.name for b in chosen})
            if unknown:
                parser.error(
                    f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(b.name for b in chosen)}"
                )
            chosen = [b for b in chosen if b.name in names]
        where = machine(args.device, args.threads)
        results = []
        for bench in chosen:
            bench_args = bench.full if args.full else bench.small
            rows, output, seconds, status = run_one(bench, bench_args, scratch, args.timeout)
            results.append((bench, bench_args, rows, output, seconds, status))
    text = render(results, where, "full" if args.full else "small")
    args.output.write_text(text, encoding="utf-8")
    print(f"[bench] wrote {args.output}")
    if args.readme:
        replace_readme_table(ROOT / "README.md", text)
        print(f"[bench] updated the table in {ROOT / 'README.md'}")
    return 0 if all(rows for _, _, rows, _, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
