"""Label files and texts -> token ids: CSV as spreadsheets export it, invisible characters, every bad row at once.

Rows are numbered as a spreadsheet shows them: the header is row 1, the first word row 2. A CSV may use
`,`, `;` or a tab between cells (spreadsheets in locales with a decimal comma write `;`): the header line
decides. Empty cells after the last filled one (a `word,` header, `قَالَ,` rows: an export of a sheet whose
second column was once touched) are ignored; a second filled cell on a row is an error naming the row.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.errors import DataError
from trainer.text import UNKNOWN_HINT, Tokenizer, codepoints, strip_invisible

if TYPE_CHECKING:
    from trainer.data.clips import Clip

DELIMITERS = (",", ";", "\t")
ROWS_NOTE = "rows as a spreadsheet numbers them, the header is row 1"


@dataclass
class LabelNotes:
    """What reading a dataset's labels changed or mapped, reported once per dataset."""

    unknown: Counter = field(default_factory=Counter)  # (cluster, where) -> count, mapped to <unk>
    invisible: Counter = field(default_factory=Counter)  # character -> count, removed
    invisible_first: str = ""  # where the first one was

    def removed(self, chars: Counter, where: str) -> None:
        if chars and not self.invisible:
            self.invisible_first = where
        self.invisible.update(chars)

    def reports(self) -> list[str]:
        """The warnings to print: invisible characters removed, unknown characters mapped to <unk>."""
        out = []
        if self.invisible:
            each = ", ".join(f"{codepoints(c)} {n}x" for c, n in self.invisible.most_common())
            out.append(
                f"warning: removed {sum(self.invisible.values())} invisible formatting characters from the labels "
                f"({each}; the first at {self.invisible_first}); they draw nothing and are not tokens"
            )
        if self.unknown:
            out.append(unknown_report(self.unknown))
        return out


def decode_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text; re-save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = ""
        try:
            raw.decode("cp1256")
            hint = " (it reads as Windows-1256, a legacy Arabic encoding)"
        except UnicodeDecodeError:
            pass
        raise DataError(f"{path}: not UTF-8 at byte {e.start}{hint}; re-save it as UTF-8") from None


def read_csv_rows(path: Path) -> list[list[str]]:
    """The rows of a CSV (one list a spreadsheet row), cells stripped, empty cells after the last filled one dropped."""
    text = decode_text(path)
    header = text.split("\n", 1)[0]
    delimiter = next((d for d in DELIMITERS if d in header), ",")
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as e:
        raise DataError(f"{path}: not a valid CSV: {e}") from None
    out = []
    for row in rows:
        cells = [c.strip() for c in row]
        while cells and not cells[-1]:
            cells.pop()
        out.append(cells)
    return out


def row_name(number: int) -> str:
    """'row 3' (as a spreadsheet numbers it, the header is row 1); 0 is a manifest row's text."""
    return f"row {number}" if number else "text"


def _word_rows(path: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(row, word) of a label CSV with header `word`, and (row, problem) of each row that is not one word."""
    rows = read_csv_rows(path)
    if not any(rows):
        raise DataError(f"{path}: empty label file; write the header `word` and one word a row")
    if [strip_invisible(c)[0].lower() for c in rows[0]] != ["word"]:
        raise DataError(f"{path}: the header must be `word`, found `{','.join(rows[0])}`")
    words, bad = [], []
    for number, row in enumerate(rows[1:], start=2):
        cells = [c for c in row if c]
        if len(cells) > 1:
            bad.append((number, f"{len(cells)} filled cells ({', '.join(cells)}); write one word a row"))
        elif cells:
            words.append((number, cells[0]))
    if not words and not bad:
        raise DataError(f"{path}: no words under the header `word`")
    return words, bad


def rows_error(source: Path | str, bad: list[tuple[int, str]], hint: str = "") -> DataError:
    """One error for every bad row: `FILE: row 3: ...; row 5: ... (rows as a spreadsheet numbers them, ...)`."""
    listed = "; ".join(f"{row_name(number)}: {why}" for number, why in sorted(bad))
    numbering = f" ({ROWS_NOTE})" if any(number for number, _ in bad) else ""
    return DataError(f"{source}: {listed}{numbering}{'. ' + hint if hint else ''}")


def read_words(path: str | Path) -> list[tuple[int, str]]:
    """(row, word) of a label CSV with header `word`; rows as a spreadsheet numbers them (the header is row 1)."""
    words, bad = _word_rows(Path(path))
    if bad:
        raise rows_error(path, bad)
    return words


def label_rows(clip: Clip, notes: LabelNotes) -> tuple[str, list[tuple[int, str]], list[tuple[int, str]]]:
    """The file a clip's text comes from, its (row, words) without invisible characters, and its bad rows."""
    if clip.label is not None:
        source = str(clip.label)
        rows, bad = _word_rows(clip.label)
    else:
        source, bad = clip.where, []
        if not (clip.text or "").strip():
            raise DataError(f"{clip.where}: empty text for clip '{clip.id}'")
        rows = [(0, clip.text or "")]
    clean = []
    for number, words in rows:
        words, removed = strip_invisible(words)
        notes.removed(removed, f"{source}, {row_name(number)}")
        if words.strip():
            clean.append((number, words))
    if not clean and not bad:
        raise DataError(f"{source}: the label holds only invisible formatting characters; write its words")
    return source, clean, bad


def encode_label(clip: Clip, tokenizer: Tokenizer, notes: LabelNotes | None = None) -> tuple[list[int], str]:
    """A clip's token ids and its text (words joined by spaces); every bad row of its label in one error."""
    notes = notes if notes is not None else LabelNotes()
    source, rows, bad = label_rows(clip, notes)
    hint = ""
    ids: list[int] = []
    for number, words in rows:
        unknown = tokenizer.unknown_clusters(words)
        if unknown and not tokenizer.unknown_to_unk:
            bad.append((number, tokenizer.describe_unknown(unknown)))
            hint = UNKNOWN_HINT
            continue
        if ids and tokenizer.separator is not None:
            ids.append(tokenizer.separator)
        ids.extend(tokenizer.encode(words))
        for pos, cluster in unknown:
            notes.unknown[(cluster, f"{source}, {row_name(number)}, character {pos}")] += 1
    if bad:
        raise rows_error(source, bad, hint)
    return ids, " ".join(w for _, w in rows)


def ctc_min_frames(ids: list[int]) -> int:
    """The fewest frames CTC can align `ids` to: one a token, plus a blank between each pair of equal neighbours."""
    return len(ids) + sum(a == b for a, b in zip(ids, ids[1:], strict=False))


def unknown_report(unknown: Counter) -> str:
    """Each cluster mapped to <unk>: code points, count and first place."""
    per: Counter = Counter()
    first: dict[str, str] = {}
    for (cluster, where), n in unknown.items():
        per[cluster] += n
        first.setdefault(cluster, where)
    lines = [f"  '{c}' ({codepoints(c)}): {n}x, first at {first[c]}" for c, n in per.most_common()]
    return f"{sum(per.values())} unknown characters mapped to <unk> (data.unknown_to_unk=true):\n" + "\n".join(lines)
