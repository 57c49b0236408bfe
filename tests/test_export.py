"""export-best: the best run's resolved config, with a header, that `train --config FILE` takes as it is."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from runfolders import FIXTURE, RecordedApi, constant_predictions, epochs, fixture_predictions, write_run

from analysis.export import ExportRefused, export_best
from trainer.config import load_config, to_flat
from trainer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def runs(tmp_path: Path) -> Path:
    write_run(tmp_path / "runs", "good", epochs([0.9, 0.4, 0.45]), ["optim.lr=2e-3", "tracking.name=good"])
    write_run(tmp_path / "runs", "worse", epochs([0.8, 0.6]), ["optim.lr=1e-3"])
    write_run(tmp_path / "runs", "failed-better", epochs([0.1]), ["optim.lr=9e-3"], state="failed")
    return tmp_path / "runs"


def test_export_round_trip_through_the_config_loader(runs: Path, tmp_path: Path):
    out = export_best(runs, tmp_path / "configs" / "best.yaml")
    text = out.read_text(encoding="utf-8")
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert any("Run good" in line and "val/cer_best 0.4000 at epoch 2 of 3" in line for line in header)
    assert any(str(runs / "good") in line for line in header)
    exported = to_flat(load_config(out))
    original = to_flat(load_config(runs / "good" / "config.yaml"))
    assert original.pop("tracking.name") == "good" and exported.pop("tracking.name") == ""
    assert exported == original


def test_train_command_accepts_the_exported_file_as_is(runs: Path, tmp_path: Path, monkeypatch):
    import trainer.train
    from launch.train import train_command

    out = export_best(runs, tmp_path / "best.yaml")
    seen = {}

    def fake_train(cfg, **kwargs):
        seen["cfg"] = cfg
        return trainer.train.RunResult(Path("x"), "finished", {})

    monkeypatch.setattr(trainer.train, "train", fake_train)
    result = CliRunner().invoke(train_command, ["--config", str(out)])
    assert result.exit_code == 0, result.output
    assert to_flat(seen["cfg"]) == to_flat(load_config(out))
    assert seen["cfg"].optim.lr == 2e-3


def test_export_from_wandb_uses_the_runs_config(tmp_path: Path):
    api = RecordedApi(json.loads(FIXTURE.read_text(encoding="utf-8")))
    out = export_best("wandb://lipteam/lipsweep/k3x9q2ab", tmp_path / "best.yaml", api=api)
    cfg = load_config(out)
    assert cfg.optim.lr == 3e-3 and cfg.model.ctc_weight == 0.1 and cfg.model.encoder.dim == 64
    assert "calm-owl-2" in out.read_text(encoding="utf-8").splitlines()[1]


def test_export_without_a_usable_run_is_an_error(tmp_path: Path):
    write_run(tmp_path, "failed", epochs([0.3]), state="failed")
    with pytest.raises(ConfigError, match="no run that did not fail"):
        export_best(tmp_path, tmp_path / "best.yaml")
    assert not (tmp_path / "best.yaml").exists()


# --------------------------------------------------------------------------- collapse: refusal and --force


def collapsed_best(root: Path) -> Path:
    """`flat` has the best val/cer (0.833) but gives one output for every clip and does not beat its baseline (0.8);
    `honest` (0.95) tries."""
    rows = epochs([0.9, 5 / 6])
    for r in rows:
        r.update({"val/cer_baseline": 0.8, "val/distinct": 1 / 60})
    write_run(root, "flat", rows, ["optim.lr=2e-3"], predictions=constant_predictions(60))
    write_run(root, "honest", epochs([0.99, 0.95]), ["optim.lr=1e-3"], predictions=fixture_predictions("a", 4))
    return root


def test_export_refuses_a_collapsed_best_run_and_force_exports_it(tmp_path: Path):
    runs = collapsed_best(tmp_path / "runs")
    out = tmp_path / "best.yaml"
    with pytest.raises(ExportRefused) as refused:
        export_best(runs, out)
    message = str(refused.value)
    for part in ("flat", "val/cer is 0.833", "(the best constant output) 0.800", "distinct outputs 2% of the clips",
                 "--force", "100% of the clips get the same output", "does not beat the baseline"):  # fmt: skip
        assert part in message, part
    assert not out.exists()
    export_best(runs, out, force=True)
    assert load_config(out).optim.lr == 2e-3
    assert "Exported with --force although collapsed" in out.read_text(encoding="utf-8")


@pytest.mark.slow
def test_export_best_command_exits_1_when_refused_and_0_with_force(tmp_path: Path):
    runs = collapsed_best(tmp_path / "runs")
    out = tmp_path / "best.yaml"
    command = [sys.executable, "-m", "launch", "runs", "export-best", str(runs), "--out", str(out)]
    refused = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("refused: the best run flat is collapsed") and "--force" in refused.stderr
    assert "Traceback" not in refused.stderr and not out.exists()
    forced = subprocess.run([*command, "--force"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert forced.returncode == 0, forced.stderr
    assert out.exists() and f"wrote {out}" in forced.stdout


def test_export_clears_the_sweeps_group_and_tags(tmp_path: Path):
    write_run(tmp_path / "runs", "in-sweep", epochs([0.5]), ["tracking.group=lr-sweep", "tracking.tags=[lr,pruned]"])
    cfg = load_config(export_best(tmp_path / "runs", tmp_path / "best.yaml"))
    assert (cfg.tracking.group, cfg.tracking.tags, cfg.tracking.name) == ("", [], "")


# --------------------------------------------------------------------------- a `sweep confirm` folder


def confirm_folder(root: Path, collapsed_seed: bool = False) -> Path:
    """Two configs confirmed over two seeds each: lr 2e-3 has the best mean although lr 1e-3 has the best single run."""
    folder = root / "lr-confirm"
    lines = []
    for config, lr, cers in (("0", 1e-3, [0.30, 0.50]), ("1", 2e-3, [0.35, 0.37])):
        dirs = []
        for seed, cer in enumerate(cers):
            flat = collapsed_seed and config == "1" and seed == 1
            run = write_run(folder, f"c{config}-s{seed}", epochs([0.9, cer]), [f"optim.lr={lr}", f"train.seed={seed}"],
                            predictions=constant_predictions(60) if flat else fixture_predictions("a"))  # fmt: skip
            dirs.append(str(run))
        mean, std = sum(cers) / 2, abs(cers[0] - cers[1]) / 2**0.5
        lines.append([config, f"r{config}", f"optim.lr={lr}", 2, mean, std, *cers, ";".join(dirs), True])
    with open(folder / "confirm.csv", "w", encoding="utf-8", newline="") as f:
        header = ["config", "source_run", "params", "seeds", "val/cer_mean", "val/cer_std", "val/cer_seed0",
                  "val/cer_seed1", "run_dirs", "within_noise"]  # fmt: skip
        csv.writer(f).writerows([header, *sorted(lines, key=lambda r: r[4])])
    return folder


def test_export_from_a_confirm_folder_takes_the_best_mean(tmp_path: Path):
    folder = confirm_folder(tmp_path)
    out = export_best(folder, tmp_path / "best.yaml")
    assert load_config(out).optim.lr == 2e-3  # mean 0.36, not the single best run (0.30, mean 0.40)
    text = out.read_text(encoding="utf-8")
    assert "val/cer mean 0.3600, std 0.0141 over 2 training seeds (0.3500, 0.3700)" in text
    assert load_config(export_best(folder / "confirm.csv", tmp_path / "again.yaml")).optim.lr == 2e-3  # the file too


def test_export_from_a_confirm_folder_refuses_a_collapsed_seed(tmp_path: Path):
    folder = confirm_folder(tmp_path, collapsed_seed=True)
    with pytest.raises(ExportRefused, match="config 1's run c1-s1 is collapsed"):
        export_best(folder, tmp_path / "best.yaml")
    assert load_config(export_best(folder, tmp_path / "best.yaml", force=True)).optim.lr == 2e-3
