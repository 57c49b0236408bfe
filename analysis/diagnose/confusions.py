"""Checklist item 6: token confusions (a heatmap of the most confused tokens, the top pairs, base-letter vs
diacritic errors) and how long the hypotheses are."""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from analysis.confusions import confusion_counts  # noqa: E402
from analysis.diagnose.common import EMPTY, Context  # noqa: E402
from analysis.fonts import arabic_rc  # noqa: E402
from analysis.plots import save_figure  # noqa: E402
from analysis.report import Report  # noqa: E402
from analysis.rows import number  # noqa: E402
from trainer.config import Config  # noqa: E402
from trainer.errors import DataError  # noqa: E402
from trainer.text import split_token  # noqa: E402


def confusions_from_csv(path: Path) -> Counter:
    """confusions.csv (kind, ref, hyp, count) -> Counter of (ref token or None, hyp token or None)."""
    counts: Counter = Counter()
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not {"kind", "ref", "hyp", "count"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns kind, ref, hyp, count")
        for line, r in enumerate(reader, start=2):
            try:
                n = int(r["count"])
            except ValueError:
                raise DataError(f"{path}, row {line}: count {r['count']!r} is not an integer") from None
            ref = None if r["kind"] == "insertion" else r["ref"]
            hyp = None if r["kind"] == "deletion" else r["hyp"]
            counts[(ref, hyp)] += n
    return counts


def error_kind(ref: str | None, hyp: str | None) -> str:
    """deletion, insertion, diacritic (same base letter, other marks) or letter (another base letter)."""
    if hyp is None:
        return "deletion"
    if ref is None:
        return "insertion"
    return "diacritic" if split_token(ref)[0] == split_token(hyp)[0] else "letter"


def confusion_matrix(counts: Counter, top: int = 15) -> tuple[list[str], list[str], np.ndarray]:
    """The `top` tokens most involved in errors: row labels (ref + ∅ for insertions), column labels (hyp + ∅), counts."""
    involvement: Counter = Counter()
    for (r, h), n in counts.items():
        for t in (r, h):
            if t is not None:
                involvement[t] += n
    tokens = [t for t, _ in involvement.most_common(top)]
    refs, hyps = [*tokens, None], [*tokens, None]
    matrix = np.array([[counts.get((r, h), 0) for h in hyps] for r in refs], dtype=int)  # (top + 1, top + 1)
    label = lambda t: EMPTY if t is None else t  # noqa: E731
    return [label(t) for t in refs], [label(t) for t in hyps], matrix


def confusion_heatmap(counts: Counter, out: Path, top: int = 15) -> Path:
    """Heatmap of the most confused tokens: rows the reference token, columns what was decoded (∅: nothing)."""
    rows, cols, m = confusion_matrix(counts, top)
    with plt.rc_context(arabic_rc()):
        size = 1.4 + 0.42 * len(cols)
        fig, ax = plt.subplots(figsize=(size + 1.2, size))
        zero_white = plt.get_cmap("Reds").with_extremes(bad="white")  # a pair never confused: a white cell
        image = ax.imshow(np.ma.masked_equal(m, 0), cmap=zero_white, vmin=0, vmax=max(1, int(m.max())))
        ax.set_xticks(range(len(cols)), cols, fontsize=13)
        ax.set_yticks(range(len(rows)), rows, fontsize=13)
        for i, j in zip(*np.nonzero(m), strict=True):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if m[i, j] > 0.6 * m.max() else "black",
            )
        ax.set(
            xlabel=f"decoded token ({EMPTY}: deleted)",
            ylabel=f"reference token ({EMPTY}: inserted)",
            title=f"token confusions: the {len(cols) - 1} most confused tokens",
        )
        fig.colorbar(image, ax=ax, shrink=0.8, label="count")
        return save_figure(fig, out)


def length_note(rows: Sequence[dict[str, Any]], cfg: Config | None = None) -> str:
    """How long the hypotheses are against the references, and what too short or too long suggests (for this config:
    no larger decode.ctc_weight once it is 1)."""
    ref = sum(len(r["ref_ids"]) for r in rows)
    hyp = sum(len(r["hyp_ids"]) for r in rows)
    ratio = hyp / max(1, ref)
    text = f"The hypotheses hold {hyp} tokens for {ref} reference tokens ({ratio:.0%})"
    if ratio < 0.8:
        return text + ": too short, deletions dominate (the search ends early; try a length bonus, decode.penalty > 0)."
    if ratio > 1.2:
        larger = " or a larger decode.ctc_weight" if cfg is None or cfg.decode.ctc_weight < 1 else ""
        return text + f": too long, insertions dominate (repeats; try a smaller decode.penalty{larger})."
    return text + "."


def run_confusions(ctx: Context) -> tuple[Counter, str]:
    """The token confusions of the decoded split, else of the run's confusions.csv; and where they come from."""
    if ctx.decoded is not None:
        decoded = ctx.decoded
        ids = confusion_counts([r["ref_ids"] for r in decoded.rows], [r["hyp_ids"] for r in decoded.rows])
        token = lambda t: None if t is None else decoded.tokenizer.decode([t])  # noqa: E731
        return Counter({(token(r), token(h)): n for (r, h), n in ids.items()}), ""
    if (ctx.run_dir / "confusions.csv").exists():
        return confusions_from_csv(ctx.run_dir / "confusions.csv"), "From confusions.csv: the run's last validation."
    return Counter(), ""


def letters_or_marks(letter: float, marks: float) -> str:
    """Which of base letters and diacritics is the main difficulty."""
    if marks > 1.5 * letter:
        return "the diacritics (short vowels, barely visible on the lips) are the main difficulty."
    if letter > 1.5 * marks:
        return "the letters themselves are the main difficulty."
    return "letters and diacritics are about equally hard."


def confusions_section(report: Report, ctx: Context, top_tokens: int) -> None:
    report.heading("6. Token confusions")
    counts, origin = run_confusions(ctx)
    if origin:
        report.text(origin)
    if counts:
        report.image(
            confusion_heatmap(counts, ctx.out / "confusions.png", top_tokens),
            "rows: reference token; columns: decoded token; ∅ marks insertions and deletions",
        )
        kinds: Counter = Counter()
        for (r, h), n in counts.items():
            kinds[error_kind(r, h)] += n
        total = sum(kinds.values())
        report.text("Errors by kind: " + ", ".join(f"{k} {n} ({n / total:.0%})" for k, n in kinds.most_common()) + ".")
        if ctx.decoded is not None:
            report.text(length_note(ctx.decoded.rows, ctx.cfg))
        report.table(
            ["reference", "decoded", "kind", "count"],
            [[r or EMPTY, h or EMPTY, error_kind(r, h), n] for (r, h), n in counts.most_common(15)],
            rtl=("reference", "decoded"),
        )
    else:
        report.text("No confusions recorded.")
    letter, marks = number(ctx.metrics.get("val/letter_er")), number(ctx.metrics.get("val/diacritic_er"))
    if not math.isnan(letter) and not math.isnan(marks):
        report.text(
            f"Base-letter error rate {letter:.3f}, diacritic error rate {marks:.3f}: " + letters_or_marks(letter, marks)
        )
