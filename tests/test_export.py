"""export-best: the best run's resolved config, with a header, that `train --config FILE` takes as it is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from runfolders import FIXTURE, RecordedApi, epochs, write_run

from analysis.export import export_best
from trainer.config import load_config, to_flat
from trainer.errors import ConfigError


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
