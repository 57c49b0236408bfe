"""The GPU check (bench/gpu/): every row reports a number or a stated reason on the CPU, the time guards, the counting."""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path

import pytest
import torch

from bench.gpu import amp, harness, loop, steps
from bench.gpu.harness import NA, OK, Context, Report, RowSpec, Sizes
from trainer.device import Precision
from trainer.errors import UserError

TINY = Sizes(
    "small", warmup=1, steps=1, max_clips=2, amp_steps=3, amp_clips=2, fit_steps=1, search_utterances=2,
    search_batches=(1, 2), espnet_utterances=1, val_train_clips=12, val_clips=4, val_epochs=1, sync_clips=16,
    sweep_clips=20, sweep_trials=2, bank=4,
)  # fmt: skip
FAST_ROWS = ["device", "train_step", "batch_frames", "amp", "search"]
SLOW_ROWS = ["syncs", "validation", "sweep"]  # a real train() or a sweep in a subprocess each


@pytest.fixture(autouse=True)
def one_thread():
    """The rows' tiny sizes gain nothing from a second thread, and lose much on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cpu_context(tmp_path: Path, **kw) -> Context:
    scratch = tmp_path / "row"
    scratch.mkdir(exist_ok=True)
    return Context(torch.device("cpu"), "none", TINY, scratch, deadline=time.monotonic() + 300, **kw)


def check_lines(report: Report) -> None:
    """Every line is a number (ok) or a stated reason (n/a); none is an error, a failed check or empty."""
    assert report.lines, "the row reported nothing"
    for line in report.lines:
        assert line.status in (OK, NA), f"{line.measurement}: {line.result} [{line.status}]"
        assert line.measurement and line.result
        if line.status == OK:
            assert any(c.isdigit() for c in line.result), line.result
        else:
            assert line.result.startswith(("n/a", "not run")), line.result


def run(name: str, tmp_path: Path) -> Report:
    return harness.run_row(name, cpu_context(tmp_path), Report(name))


@pytest.mark.parametrize("name", FAST_ROWS)
def test_each_row_reports_a_number_or_a_stated_reason_on_the_cpu(name, tmp_path):
    report = run(name, tmp_path)
    check_lines(report)
    assert all(line.row == name for line in report.lines)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_ROWS)
def test_each_training_loop_row_reports_on_the_cpu(name, tmp_path):
    check_lines(run(name, tmp_path))


def test_the_cpu_says_why_a_gpu_row_is_not_measured(tmp_path):
    lines = {line.measurement: line for line in run("device", tmp_path).lines}
    assert lines["kernel check (trainer.device.check_gpu_supported)"].result.startswith("n/a on cpu")
    frames = run("batch_frames", tmp_path).lines
    assert frames[0].status == NA and "ms/step" in frames[0].result  # the one step it could run, it ran


def test_training_step_rows_cover_precisions_attention_and_the_feature_cache(tmp_path):
    results = [line.measurement for line in run("train_step", tmp_path).lines]
    assert any("fp32, SDPA, frontend trained" in m for m in results)
    assert any("plain attention math" in m for m in results)
    assert any(m.endswith("fp16") for m in results)  # n/a on the CPU, said so
    assert any("frozen frontend live" in m for m in results)
    assert any("frozen frontend from the feature cache" in m for m in results)


# --------------------------------------------------------------------------- the harness: errors, time guards


def boom_row(ctx: Context, report: Report) -> None:
    report.add("first", "1 ms")
    raise RuntimeError("the row broke")


def slow_row(ctx: Context, report: Report) -> None:
    report.add("before the guard", "2 ms")
    ctx.check_time("the slow part")


def silent_row(ctx: Context, report: Report) -> None:
    pass


@pytest.mark.parametrize(
    "function, last_status, words",
    [("boom_row", harness.ERROR, "RuntimeError: the row broke"), ("slow_row", harness.TIMEOUT, "the slow part"),
     ("silent_row", harness.ERROR, "reported nothing")],
)  # fmt: skip
def test_a_failing_row_is_reported_with_what_it_measured_before(function, last_status, words, tmp_path, monkeypatch):
    monkeypatch.setitem(harness.ROWS, "fake", RowSpec(__name__, function, 5, "a fake row"))
    ctx = dataclasses.replace(cpu_context(tmp_path), deadline=time.monotonic() - 1)
    report = harness.run_row("fake", ctx, Report("fake", tmp_path / "fake.json"))
    assert report.lines[-1].status == last_status and words in report.lines[-1].result
    assert (function == "silent_row") == (len(report.lines) == 1)  # the lines before the failure are kept
    assert (tmp_path / "fake.json").exists()  # written as it goes: a killed row keeps them too


def test_row_budgets_keep_the_total_and_leave_time_for_the_later_rows():
    names = list(harness.ROWS)
    assert sum(harness.row_budgets(names, harness.TOTAL_BUDGET_S).values()) <= harness.TOTAL_BUDGET_S
    cut = harness.row_budgets(names, 100)
    assert all(b >= harness.MIN_ROW_S for b in cut.values()) and sum(cut.values()) <= 100 + harness.MIN_ROW_S


def test_t4_emulation_gives_fp16_with_a_scaler_and_refuses_bf16(tmp_path):
    ctx = dataclasses.replace(cpu_context(tmp_path), emulate="t4")
    assert ctx.precision() == Precision("fp16", torch.float16, True)
    assert ctx.precision("fp32").name == "fp32"
    with pytest.raises(UserError, match="bf16 refused"):
        ctx.precision("bf16")
    assert "train.precision=fp16" in ctx.overrides()
    assert harness.resolve_emulation("auto", torch.device("cpu")) == "none"
    assert harness.apply_memory_cap(torch.device("cpu"), "t4") is None


def test_render_writes_every_line_of_every_row():
    rows = [
        {"name": "amp", "seconds": 3.0, "cpu_s": 2.0, "lines": [{"measurement": "m|1", "result": "r", "status": "ok"}]}
    ]
    summary = {"settings": {"device": "cpu", "emulate": "none", "quick": True}, "command": "c", "date": "d",
               "seconds": 3.0, "cpu_s": 2.0, "machine": {"torch": "x"}, "rows": rows}  # fmt: skip
    text = harness.render(summary)
    assert "| amp | m|1 | r | ok | 3 (2) |" in text and "quick" in text


# --------------------------------------------------------------------------- the counting behind the rows


def test_largest_fitting_doubles_then_bisects_to_one_unit():
    lo, hi, tries = steps.largest_fitting(lambda n: n <= 1000, start=600, unit=38, limit=10**6)
    assert (lo, hi) == (988, 1026)
    assert [n for n, _ in tries[:2]] == [570, 1140]  # start rounded down to a unit, then doubled
    lo, hi, _ = steps.largest_fitting(lambda n: n <= 100, start=600, unit=38, limit=10**6)
    assert (lo, hi) == (76, 114)  # the start itself fails: bisection below it
    assert steps.largest_fitting(lambda n: False, 600, 38, 10**6)[:2] == (0, 38)
    assert steps.largest_fitting(lambda n: True, 600, 38, 5000)[:2] == (4560, None)  # fits up to the limit
    assert steps.largest_fitting(lambda n: n <= 1000, 600, 38, 10**6, stop=lambda: True) == (0, None, [])


def test_sync_count_is_per_step_between_the_first_and_the_last_optimizer_step():
    events = [("sync", "setup"), ("step", ""), ("sync", "a"), ("sync", "b"), ("step", ""), ("sync", "a"), ("step", "")]
    events += [("sync", "validation")] * 5
    count = loop.summarize(events)
    assert count.steps == 3 and count.per_step == 1.5
    assert count.where == {"a": 2, "b": 1}
    assert loop.summarize([("sync", "x"), ("step", "")]).per_step is None


def test_count_syncs_sees_every_optimizer_step_of_the_run():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([p], lr=0.1)

    def run() -> str:
        for _ in range(4):
            p.sum().backward()
            opt.step()
        return "done"

    result, count = loop.count_syncs(run, cuda=False)
    assert result == "done" and count.steps == 4 and count.per_step == 0.0


def test_every_sync_warning_is_counted_at_the_project_line_that_caused_it():
    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=0.1)

    def run() -> None:
        for _ in range(3):
            for _ in range(2):  # the same line twice a step: counted twice, not once per line
                warnings.warn(f"called a {loop.SYNC_WARNING}", UserWarning, stacklevel=1)
            opt.step()

    with warnings.catch_warnings(record=True) as other:
        warnings.simplefilter("always")
        _, count = loop.count_syncs(run, cuda=False)
        warnings.warn("an unrelated warning", UserWarning, stacklevel=1)
    assert count.steps == 3 and count.per_step == 2.0
    (where,) = count.where
    assert where.startswith("bench/gpu/loop.py:") and "count_syncs" in where  # the nearest project frame
    assert [str(w.message) for w in other] == ["an unrelated warning"]


def amp_lines(low: Precision, l32: list[float], llow: list[float], scales: list[float]) -> list:
    report = Report("amp")
    amp.amp_report(report, "test", low, l32, llow, scales)
    return report.lines


def test_amp_report_states_its_tolerance_and_fails_outside_it():
    fp16 = Precision("fp16", torch.float16, True)
    steady = [65536.0, 32768.0] + [32768.0] * 9
    good = amp_lines(fp16, [10.0] * 10, [10.01] * 10, steady)
    assert [line.status for line in good] == [OK, OK, OK] and "tolerance" in good[0].result
    far = amp_lines(fp16, [10.0] * 10, [10.0] + [11.0] * 9, steady)
    assert far[0].status == harness.FAILED
    nan = amp_lines(fp16, [10.0] * 10, [10.0] * 9 + [math.nan], steady)
    assert nan[0].status == harness.FAILED and nan[1].status == harness.FAILED
    late = amp_lines(fp16, [10.0] * 10, [10.0] * 10, [65536.0] * 9 + [32768.0, 16384.0])
    assert late[2].status == harness.FAILED and "[9, 10]" in late[2].result  # skips in the second half


def test_a_step_out_of_gpu_memory_is_a_stated_result_not_a_fault(tmp_path):
    ctx = cpu_context(tmp_path)
    t = steps.trainee(ctx, steps.row_config(ctx), ctx.precision("fp32"))

    def step() -> torch.Tensor:
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    assert steps.timed_in_memory(ctx, t, step, "a step") is None
    assert steps.out_of_memory(dataclasses.replace(ctx, cap_gib=15.0)) == "out of memory within the 15.0 GiB cap"
    assert harness.OOM not in (harness.FAILED, harness.ERROR, harness.TIMEOUT)  # the run does not fail for it


@pytest.mark.skipif(torch.cuda.is_available(), reason="what the check does where torch sees no GPU")
def test_without_a_gpu_the_full_check_is_refused_and_quick_runs_on_the_cpu(capsys):
    with pytest.raises(SystemExit) as refused:
        harness.parse_args(["--out", "x"])
    assert refused.value.code == 2 and "run `--device cpu --quick` for the CPU version" in capsys.readouterr().err
    assert harness.parse_args(["--out", "x", "--quick"]).device == "cpu"
    assert harness.parse_args(["--out", "x", "--device", "cpu"]).device == "cpu"  # insisted on
