"""The README's main command end to end, at a tiny size: clips, a pruned local sweep, ranking, best config, diagnosis."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from launch.cli import cli
from trainer.config import load_config


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = tmp_path / "runs"
    args = ["demo", "--data", str(tmp_path / "clips"), "--clips", "24", "--trials", "2", "--wandb", "disabled",
            "train.max_epochs=1", "data.val_ratio=0.25", f"train.run_dir={runs}"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "clips").glob("*.mp4"))) == 24
    (best,) = runs.glob("demo-*/best.yaml")
    assert load_config(best).train.max_epochs == 1  # train --config takes the exported file as it is
    (report,) = runs.glob("demo-*/demo-*-t00*/diagnose/report.html")
    assert "best config:" in result.output and str(report) in result.output
