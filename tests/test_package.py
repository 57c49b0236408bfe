"""The set-up installs lipsweep as a package with its command (scripts/setup.sh, pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def test_the_lipsweep_command_is_installed_and_runs_the_cli(tmp_path):
    command = BIN / "lipsweep"
    if not command.exists():
        pytest.skip(f"{command} is not installed: run bash scripts/setup.sh (CI does)")
    # from another folder: the command does not depend on the working directory
    result = subprocess.run([str(command), "config", "show", "train.max_epochs=3"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "max_epochs: 3" in result.stdout


def test_pyproject_declares_the_command_and_reads_requirements_txt():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["lipsweep"] == "launch.cli:main"
    assert project["tool"]["setuptools"]["dynamic"]["dependencies"]["file"] == ["requirements.txt"]
    from launch.cli import main

    assert callable(main)
