"""The diagnose HTML page in headless Chromium: its plots show (coloured plot pixels that a page without them lacks)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from test_diagnose import crafted_run

from analysis.diagnose import diagnose

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def screenshot(page: Path, out: Path, profile: Path, size: str = "1200,4200") -> np.ndarray:
    """A headless Chromium screenshot of a local page, as an (H, W, 3) float array."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
             f"--screenshot={out}", f"--window-size={size}"]  # fmt: skip
    done = subprocess.run([CHROMIUM, *flags, page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and out.exists(), done.stderr[-2000:]
    return matplotlib.image.imread(out)[..., :3]


def coloured(image: np.ndarray) -> np.ndarray:
    """(H, W) True where the channels differ by more than half the range: matplotlib's line and heatmap colours
    (tab:blue 0.58, tab:orange 0.95, Reds 0.7), not the page's text (black, the warning red 0.47, the ok green 0.33)."""
    return (image.max(-1) - image.min(-1)) > 0.5


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_diagnose_page_shows_its_plots(tmp_path: Path):
    page = diagnose(crafted_run(tmp_path))
    html = page.read_text(encoding="utf-8")
    assert len(re.findall(r'<img src="data:image/png;base64,', html)) == 3
    without = page.with_name("without_images.html")
    without.write_text(re.sub(r'src="data:image/png;base64,[^"]+"', 'src=""', html), encoding="utf-8")

    shown = screenshot(page, tmp_path / "page.png", tmp_path / "profile")
    bare = screenshot(without, tmp_path / "bare.png", tmp_path / "profile")
    assert shown.shape == bare.shape == (4200, 1200, 3)
    # the plots: learning curves (blue/orange/green lines), gradient flow, the red confusion heatmap
    assert coloured(shown).sum() > 5_000 and coloured(bare).sum() < 100
    # the first plot, the learning curves, sits right below the title and two lines of text
    rows = coloured(shown).any(axis=1)
    assert rows[150:700].sum() > 100
