"""A ranked table as aligned text, Markdown or CSV.

Text and Markdown fit WIDTH (120) columns unless `wide`: the columns that say most come first (a table's own
`attrs["lead"]`, then rank, name,
state, the ranked metric, its interval, tied, collapsed, the Pareto marks, the swept parameters, then the
epochs), as many as fit; empty columns are left out, names cut to NAME_WIDTH (in the middle), parameter headers shortened
to their shortest unambiguous dotted suffix (`optim.lr` -> `lr`); `run_id` only where it is not the name. A last line says how many columns (with a
value) were left out, names the parameters among them, and that `--wide` (or `--format csv`) shows them. CSV always holds every column.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from analysis.report import fmt

WIDTH = 120
NAME_WIDTH = 28
GAP = "  "
TAIL = ("epoch_best", "epochs", "runtime_s")


def priority(table: pd.DataFrame) -> list[str]:
    """The columns worth showing, most telling first."""
    attrs = table.attrs
    metric = attrs.get("interval_of", "val/cer")
    ranked_by = attrs.get("ranked_by")
    objectives = [name for name, _ in attrs.get("objectives", [])]
    differs = "run_id" in table.columns and (table["run_id"].astype(str) != table["name"].astype(str)).any()
    first = [
        "rank",
        "name",
        "run_id" if differs else None,
        "state",
        ranked_by,
        f"{metric}_low",
        f"{metric}_high",
        "tied",
        "collapsed",
        "pareto",
    ]
    wanted = [*attrs.get("lead", []), *first, *objectives, *attrs.get("params", []), *TAIL]
    return [c for c in dict.fromkeys(wanted) if c is not None and c in table.columns and table[c].notna().any()]


def short_headers(params: Sequence[str]) -> dict[str, str]:
    """Each dotted key as its shortest suffix that no other key shares: model.ctc_weight, decode.ctc_weight, lr."""
    out = {}
    for key in params:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(other != key and (other == suffix or other.endswith("." + suffix)) for other in params):
                out[key] = suffix
                break
        else:
            out[key] = key
    return out


def cell(v: Any) -> str:
    if v is pd.NA or v is None:
        return "-"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e6:
        return str(int(v))
    return fmt(v) or "-"


def _cut(text: str, width: int) -> str:
    """`text` within `width` characters, its middle left out (the ends of run names tell them apart)."""
    if len(text) <= width:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _units(columns: list[str], metric: str) -> list[list[str]]:
    """The columns in order, an interval's two ends as one unit: both shown, or neither."""
    low, high = f"{metric}_low", f"{metric}_high"
    return [[c, high] if c == low and high in columns else [c] for c in columns if c != high or low not in columns]


def fitting_columns(table: pd.DataFrame, width: int = WIDTH) -> tuple[list[str], dict[str, str], dict[str, list[str]]]:
    """The columns that fit `width` (in the order of attrs["lead"], then the table's), their headers and cells."""
    headers = {c: c for c in table.columns} | short_headers(table.attrs.get("params", []))
    cells = {c: [cell(v) for v in table[c]] for c in table.columns}
    cells["name"] = [_cut(v, NAME_WIDTH) for v in cells.get("name", [])]
    chosen: list[str] = []
    used = -len(GAP)
    wanted = priority(table)
    for unit in _units(wanted, table.attrs.get("interval_of", "val/cer")):
        w = sum(max([len(headers[c]), *map(len, cells[c])]) + len(GAP) for c in unit)
        if used + w <= width:
            chosen += unit
            used += w
    order = list(dict.fromkeys([*table.attrs.get("lead", []), *table.columns]))
    return sorted(chosen, key=order.index), headers, cells


def format_table(
    table: pd.DataFrame, fmt_name: Literal["table", "csv", "markdown"] = "table", *, wide: bool = False
) -> str:
    """The table as aligned text, Markdown (both within WIDTH columns unless `wide`) or CSV (every column)."""
    if fmt_name == "csv":
        buf = io.StringIO()
        table.to_csv(buf, index=False)
        return buf.getvalue()
    if fmt_name not in ("table", "markdown"):
        raise ValueError(f"format must be table, csv or markdown, got {fmt_name!r}")
    if wide:
        columns, headers, cells = list(table.columns), {c: c for c in table.columns}, None
    else:
        columns, headers, cells = fitting_columns(table)
    rows = [[cells[c][i] if cells else cell(table[c].iloc[i]) for c in columns] for i in range(len(table))]
    header = [headers[c] for c in columns]
    if fmt_name == "markdown":
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    else:
        widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
        lines = [GAP.join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
        lines += [GAP.join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    hidden = [c for c in table.columns if c not in columns and table[c].notna().any()]
    if hidden:
        params = [p for p in table.attrs.get("params", []) if p in hidden]
        among = f", among them the parameters {', '.join(params)}" if params else ""
        lines += [""] if fmt_name == "markdown" else []
        note = f"({len(hidden)} more columns{among}: --wide shows them all, --format csv too)"
        lines += textwrap.wrap(note, WIDTH, break_on_hyphens=False) if not wide else [note]
    return "\n".join(lines) + "\n"
