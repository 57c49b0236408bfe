"""`python -m bench`: each benchmark's output read into rows, one table written, failures reported, README markers."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_run", ROOT / "bench" / "run.py")
bench_run = importlib.util.module_from_spec(_spec)
sys.modules["bench_run"] = bench_run  # dataclasses look their module up
_spec.loader.exec_module(bench_run)

DATA_OUT = """200 clips from synthetic data, torch threads 2

| step | clips/s |
|---|---:|
| synthetic clips (generate + write .mp4) | 9 |
| decode .mp4 every time (PyAV + label) | 82 |
| cache: read clips (memmap copy) | 4,060 |

cache vs decoding: 50x faster
"""

MODEL_OUT = """forward + backward per batch of 8 clips x 30 frames, ms (median of 2), CPU, 2 threads
| config | dtype | attention | frontend | encoder | decoder+ctc | total |
|---|---|---|---:|---:|---:|---:|
| small | fp32 | SDPA | 605 | 41 | 11 | 789 |
| small | fp32 | math | 658 | 24 | 14 | 712 |
"""


def search_out() -> str:
    """bench/search.py's output, written with its own format strings."""
    lines = [
        "beam 40, ctc_weight 0.1, 8 utterances, CPU, 2 threads, wall clock, fastest of 1",
        f"{'model':<6} {'search':<18} {'batch':>5} {'utt/s':>8} {'ms/utt':>8} {'speed-up':>9}",
        f"{'small':<6} {'ESPnet (issue 4)':<18} {1:>5} {1 / 0.26:>8.2f} {260.0:>8.1f} {1.0:>9.1f}",
        f"{'small':<6} {'lipsweep':<18} {8:>5} {40.0:>8.2f} {25.0:>8.1f} {10.4:>9.1f}",
        f"{'base':<6} {'ESPnet (measured)':<18} {1:>5} {0.45:>8.2f} {2200.0:>8.1f} {1.0:>9.1f}",
        f"{'base':<6} {'lipsweep':<18} {1:>5} {2.0:>8.2f} {500.0:>8.1f} {4.4:>9.1f}",
    ]
    return "\n".join(lines) + "\n"


TRAIN_OUT = """training steps of `small` (5 steps, 40 clips, batch 8), cpu, fp32, 2 CPU threads
| config | clips/s | data | augment | forward | backward | optimizer | validation decode (clips/s) |
|---|---:|---:|---:|---:|---:|---:|---:|
| small | 12.3 | 1 % | 5 % | 40 % | 50 % | 4 % | 30.1 (beam 40) |
"""


def test_data_and_model_tables_become_rows():
    rows = bench_run.parse_data(DATA_OUT, Path("."))
    assert rows[1] == ("decode .mp4 every time (PyAV + label) (`bench/data.py`)", "82 clips/s")
    assert rows[-1] == ("frame cache against decoding the videos (`bench/data.py`)", "50x faster")
    rows = bench_run.parse_model(MODEL_OUT, Path("."))
    assert len(rows) == 2 and rows[1][1] == "658 / 24 / 14 / 712 ms"
    assert "small config, 8 clips x 30 frames, fp32, math" in rows[1][0]


def test_search_rows_keep_espnet_and_the_speed_up():
    rows = bench_run.parse_search(search_out(), Path("."))
    assert len(rows) == 4
    assert rows[0] == (
        "beam search, small model, beam 40, CTC weight 0.1: ESPnet's BatchBeamSearch, one utterance at a time "
        "(figure of issue 4) (`bench/search.py`)",
        "260.0 ms/utterance",
    )
    assert rows[1] == (
        "beam search, small model, beam 40, CTC weight 0.1, batches of 8 (`bench/search.py`)",
        "25.0 ms/utterance (10.4x ESPnet)",
    )
    assert "(figure of issue 4)" not in rows[2][0] and rows[2][1] == "2200.0 ms/utterance"


def test_train_and_sweep_rows(tmp_path):
    rows = bench_run.parse_train(TRAIN_OUT, tmp_path)
    assert rows == [
        (
            "training steps, small config (`bench/train.py`)",
            "12.3 clips/s (data 1 %, augment 5 %, forward 40 %, backward 50 %, optimizer 4 %)",
        ),
        ("validation decoding, small config (`bench/train.py`)", "30.1 (beam 40) clips/s"),
    ]
    assert bench_run.parse_sweep("", tmp_path) == []  # no JSON: no rows (the runner reports the failure)
    results = [
        {"pruner": "none", "trials": 2, "pruned": 0, "epochs": 8, "wall_s": 61.2, "best_val_cer": 0.51234},
        {"pruner": "median", "trials": 2, "pruned": 1, "epochs": 5, "wall_s": 40.0, "best_val_cer": None},
    ]
    (tmp_path / "sweep.json").write_text(json.dumps({"results": results, "epochs_cut": 0.375}))
    rows = bench_run.parse_sweep("", tmp_path)
    assert rows[0] == (
        "demo sweep, 2 trials, pruner none (`bench/sweep.py`)",
        "8 epochs, 0 pruned, 61 s, best val/cer 0.5123",
    )
    assert rows[1][1].endswith("best val/cer -") and rows[2] == ("epochs saved by pruning (`bench/sweep.py`)", "38 %")


def fake_benchmarks(folder: Path) -> None:
    """A model.py that prints its table, and a data.py that fails."""
    folder.mkdir()
    (folder / "model.py").write_text(f"print({MODEL_OUT!r})\n")
    (folder / "data.py").write_text(
        "import sys\nprint('decoding...')\nsys.exit('the cache must be at least 20x faster')\n"
    )


def test_runner_writes_one_table_and_reports_a_failed_benchmark(tmp_path, monkeypatch):
    fake_benchmarks(tmp_path / "bench")
    monkeypatch.setattr(bench_run, "BENCH", tmp_path / "bench")
    out = tmp_path / "RESULTS.md"
    status = bench_run.main(["--only", "data,model", "--output", str(out)])
    assert status == 1  # one benchmark gave nothing
    text = out.read_text()
    table = text.split(bench_run.README_BEGIN)[1].split(bench_run.README_END)[0].strip().splitlines()
    assert table[0] == "| measurement (benchmark) | result | machine |"
    assert table[2].startswith("| `bench/data.py` | no result (exit status 1; its output is below) | ")
    assert sum("(`bench/model.py`)" in line for line in table) == 2
    assert "## Output of bench/data.py" in text and "the cache must be at least 20x faster" in text
    assert f"`python bench/model.py {' '.join(bench_run.benchmarks(tmp_path, 'cpu', 2)[1].small)}`" in text


def test_readme_table_is_replaced_between_the_markers(tmp_path):
    results = f"# Benchmark results\n\n{bench_run.README_BEGIN}\n| a | b | c |\n|---|---:|---|\n| x | 1 | m |\n{bench_run.README_END}\n"
    readme = tmp_path / "README.md"
    readme.write_text(f"# p\n\n## Performance\n\n{bench_run.README_BEGIN}\n| old |\n{bench_run.README_END}\n\nafter\n")
    bench_run.replace_readme_table(readme, results)
    text = readme.read_text()
    assert "| old |" not in text and "| x | 1 | m |" in text and text.endswith("\n\nafter\n")
    readme.write_text("# no markers\n")
    with pytest.raises(SystemExit, match="add the lines"):
        bench_run.replace_readme_table(readme, results)


def test_unknown_benchmark_name_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_run.main(["--only", "dta"])
    assert "unknown benchmark(s) dta" in capsys.readouterr().err


def test_python_dash_m_bench_help():
    import subprocess

    done = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "python -m bench --only data,model" in done.stdout


def test_auto_avsr_checkout_reaches_the_search_benchmarks_only(tmp_path):
    kw = {"auto_avsr": Path("/ckpt/auto_avsr"), "espnet_dir": Path("/whl/espnet")}
    with_espnet = {b.name: b for b in bench_run.benchmarks(tmp_path, "cpu", 2, **kw)}
    without = {b.name: b for b in bench_run.benchmarks(tmp_path, "cpu", 2)}
    for name in ("search", "gpu"):  # bench/search.py and the GPU check's search row
        for args in (with_espnet[name].small, with_espnet[name].full):
            assert args[args.index("--auto-avsr") + 1] == "/ckpt/auto_avsr"
            assert args[args.index("--espnet") + 1] == "/whl/espnet"
        assert "--auto-avsr" not in without[name].small and "--espnet" not in without[name].small
    assert all("--auto-avsr" not in b.small for name, b in with_espnet.items() if name not in ("search", "gpu"))


def test_espnet_202611_rows_carry_the_speed_up_and_the_hypothesis_check():
    lines = [
        "beam 40, ctc_weight 0.1, 8 utterances, CPU, 1 threads, wall clock, fastest of 1",
        f"{'small':<6} {'ESPnet (measured)':<18} {1:>5} {4.0:>8.2f} {250.0:>8.1f} {1.0:>9.1f}",
        f"{'small':<6} {'lipsweep':<18} {8:>5} {25.0:>8.2f} {40.0:>8.1f} {6.2:>9.1f}",
        "  small lipsweep batch 8: same best hypotheses as ESPnet (auto_avsr) for 6 of 6 utterances",
        f"{'small':<6} {'ESPnet 202611':<18} {8:>5} {5.0:>8.2f} {200.0:>8.1f} {1.2:>9.1f}",
        "  small ESPnet 202611 batch 8: DIFFERENT best hypotheses as lipsweep for 7 of 8 utterances",
    ]
    rows = bench_run.parse_search("\n".join(lines) + "\n", Path("."))
    assert rows[1][1] == "40.0 ms/utterance (6.2x ESPnet; same best hypotheses 6/6)"
    assert "ESPnet 202611's BatchBeamSearch, batches of 8" in rows[2][0]
    assert (
        rows[2][1] == "200.0 ms/utterance (1.2x ESPnet one by one; lipsweep 5.0x ahead; DIFFERENT best hypotheses 7/8)"
    )


def test_the_gpu_check_gets_its_own_section_below_the_readme_table(tmp_path):
    gpu = tmp_path / "gpu"
    gpu.mkdir()
    lines = [{"measurement": "kernel check", "result": "n/a on cpu: no GPU", "status": "n/a"}]
    (gpu / "gpu.json").write_text(json.dumps({"rows": [{"name": "device", "lines": lines}]}))
    rows = bench_run.parse_gpu("", tmp_path)
    assert rows == [("kernel check (`bench/gpu`, row device)", "n/a on cpu: no GPU [n/a]")]
    chosen = {b.name: b for b in bench_run.benchmarks(tmp_path, "cpu", 1)}
    text = bench_run.render([(chosen["gpu"], [], rows, "", 1.0, 0)], ("2-core CPU", "cpu"), "small")
    table = text[text.index(bench_run.README_BEGIN) : text.index(bench_run.README_END)]
    assert "kernel check" not in table and "| kernel check (`bench/gpu`, row device) | n/a on cpu" in text
