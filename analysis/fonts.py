"""A font with Arabic glyphs for matplotlib (Noto, from the `fonts-noto-core` apt package).

matplotlib shapes Arabic letters (joins them, places the marks) but is no full text layout engine:
plots show single tokens; multi-word Arabic text goes in the HTML report, where the browser lays it out.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from trainer.errors import UserError

# Preferred first: Sans for tick labels (compact), Naskh as a second choice.
FONT_FILES = ("NotoSansArabic-Regular.ttf", "NotoNaskhArabic-Regular.ttf", "NotoKufiArabic-Regular.ttf")
FONT_DIRS = (
    Path("/usr/share/fonts/truetype/noto"),
    Path("/usr/share/fonts/noto"),
    Path("/usr/local/share/fonts"),
    Path.home() / ".local/share/fonts",
    Path.home() / ".fonts",
)
APT_PACKAGE = "fonts-noto-core"


class FontMissing(UserError):
    """No font with Arabic glyphs is installed."""


def find_arabic_font(dirs: tuple[Path, ...] = FONT_DIRS) -> Path:
    """The first Noto Arabic font file found in `dirs` (searched recursively)."""
    for name in FONT_FILES:
        for folder in dirs:
            if not folder.is_dir():
                continue
            hits = sorted(folder.rglob(name))
            if hits:
                return hits[0]
    searched = ", ".join(str(d) for d in dirs)
    raise FontMissing(
        f"no Arabic font found (looked for {', '.join(FONT_FILES)} in {searched}); plots of Arabic tokens need one. "
        f"Install it with `sudo apt-get install {APT_PACKAGE}` (scripts/setup.sh does this when run as root)."
    )


@cache
def register_arabic_font() -> str:
    """Register the Arabic font with matplotlib once; returns its family name."""
    from matplotlib import font_manager

    path = find_arabic_font()
    font_manager.fontManager.addfont(str(path))
    return font_manager.FontProperties(fname=str(path)).get_name()


def arabic_rc() -> dict[str, list[str]]:
    """rcParams for `plt.rc_context`: DejaVu Sans for Latin text, the Arabic font as its fallback."""
    return {"font.family": ["DejaVu Sans", register_arabic_font()]}
