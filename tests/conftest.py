"""Shared fixtures: the reference data of ../shared and small configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
REFERENCE = SHARED / "reference"

torch.set_num_threads(2)


@pytest.fixture
def reference_dir() -> Path:
    """../shared/reference, or skip: parity tests compare with auto_avsr's own outputs kept there."""
    if not (REFERENCE / "auto_avsr_small" / "expected.json").exists():
        pytest.skip(f"reference data absent ({REFERENCE}): parity with auto_avsr cannot be checked")
    return REFERENCE
