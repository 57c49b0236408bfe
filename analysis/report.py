"""A report as Markdown (next to its PNGs) and as one HTML page that holds the PNGs inline.

Arabic text goes in table columns marked right-to-left: the browser lays out whole words and
sentences, which matplotlib cannot.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.io import atomic_write_text

CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; max-width: 1200px; margin: 1.5em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ccc; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .55em; text-align: left; vertical-align: middle; }
th { background: #f2f2f2; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ar { font-family: "Noto Naskh Arabic", "Noto Sans Arabic", serif; font-size: 1.3em; text-align: right; }
figure { margin: .8em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: .88em; color: #555; }
td img { display: block; max-height: 64px; }
.warning { color: #a33; }
.note { color: #555; }
.ok { color: #272; }
.verdict { font-size: 1.15em; font-weight: bold; }
"""


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    rtl: set[str] = field(default_factory=set)  # columns holding Arabic text
    images: set[str] = field(default_factory=set)  # columns holding PNG paths


@dataclass
class Image:
    path: Path
    caption: str


@dataclass
class Text:
    text: str
    css: str = ""  # a class for the HTML paragraph: warning, note, ok, verdict


@dataclass
class Heading:
    text: str
    level: int


@dataclass
class Bullets:
    items: list[tuple[str, str]]  # (css class, text)


@dataclass
class Report:
    """Blocks in order; `write` renders them as `<stem>.md` and `<stem>.html` in a folder."""

    title: str
    blocks: list[Any] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(Heading(text, level))

    def text(self, text: str, css: str = "") -> None:
        self.blocks.append(Text(text, css))

    def bullets(self, items: Iterable[str | tuple[str, str]]) -> None:
        self.blocks.append(Bullets([(i if isinstance(i, tuple) else ("", i)) for i in items]))

    def image(self, path: Path, caption: str = "") -> None:
        self.blocks.append(Image(Path(path), caption))

    def table(
        self, columns: Sequence[str], rows: Iterable[Sequence[Any]], rtl: Iterable[str] = (), images: Iterable[str] = ()
    ) -> None:
        self.blocks.append(Table(list(columns), [list(r) for r in rows], set(rtl), set(images)))

    def write(self, folder: Path, stem: str = "report") -> tuple[Path, Path]:
        """Write `<stem>.md` and `<stem>.html` into `folder` (which holds the PNGs); returns both paths."""
        folder = Path(folder)
        md, page = folder / f"{stem}.md", folder / f"{stem}.html"
        atomic_write_text(md, self.markdown(folder))
        atomic_write_text(page, self.html())
        return md, page

    # ------------------------------------------------------------------ Markdown
    def markdown(self, folder: Path) -> str:
        out = [f"# {self.title}", ""]
        for block in self.blocks:
            if isinstance(block, Heading):
                out += ["#" * block.level + " " + block.text, ""]
            elif isinstance(block, Text):
                out += [f"**{block.text}**" if block.css == "verdict" else block.text, ""]
            elif isinstance(block, Bullets):
                out += [f"- {'**warning:** ' if css == 'warning' else ''}{t}" for css, t in block.items] + [""]
            elif isinstance(block, Image):
                out += [f"![{block.caption}]({_relative(block.path, folder)})", ""]
                if block.caption:
                    out += [f"*{block.caption}*", ""]
            elif isinstance(block, Table):
                out += _markdown_table(block, folder) + [""]
        return "\n".join(out)

    # ------------------------------------------------------------------ HTML
    def html(self) -> str:
        body = [f"<h1>{html.escape(self.title)}</h1>"]
        for block in self.blocks:
            if isinstance(block, Heading):
                body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
            elif isinstance(block, Text):
                body.append(f"<p{_class(block.css)}>{html.escape(block.text)}</p>")
            elif isinstance(block, Bullets):
                items = "".join(f"<li{_class(css)}>{html.escape(t)}</li>" for css, t in block.items)
                body.append(f"<ul>{items}</ul>")
            elif isinstance(block, Image):
                caption = f"<figcaption>{html.escape(block.caption)}</figcaption>" if block.caption else ""
                body.append(
                    f'<figure><img src="{data_uri(block.path)}" alt="{html.escape(block.caption)}">{caption}</figure>'
                )
            elif isinstance(block, Table):
                body.append(_html_table(block))
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body)
            + "\n</body></html>\n"
        )


def data_uri(path: Path) -> str:
    """A PNG as a data: URI, so the page holds its images."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def fmt(value: Any) -> str:
    """A table cell as text: floats with 4 significant digits, missing values empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else f"{value:.4g}"  # NaN is not equal to itself
    return str(value)


def _class(css: str) -> str:
    return f' class="{css}"' if css else ""


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(path).resolve().relative_to(Path(folder).resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def _markdown_table(t: Table, folder: Path) -> list[str]:
    def cell(col: str, v: Any) -> str:
        if col in t.images and v:
            return f"![]({_relative(Path(v), folder)})"
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(t.columns) + " |", "|" + "|".join("---" for _ in t.columns) + "|"]
    lines += ["| " + " | ".join(cell(c, v) for c, v in zip(t.columns, row, strict=True)) + " |" for row in t.rows]
    return lines


def _html_table(t: Table) -> str:
    def cell(col: str, v: Any) -> str:
        if col in t.images:
            return f'<td><img src="{data_uri(Path(v))}" alt="frames"></td>' if v else "<td></td>"
        if col in t.rtl:
            return f'<td class="ar" dir="rtl" lang="ar">{html.escape(fmt(v))}</td>'
        num = isinstance(v, (int, float)) and not isinstance(v, bool)
        return f"<td{_class('num' if num else '')}>{html.escape(fmt(v))}</td>"

    head = "".join(f"<th>{html.escape(c)}</th>" for c in t.columns)
    rows = "".join(
        "<tr>" + "".join(cell(c, v) for c, v in zip(t.columns, row, strict=True)) + "</tr>" for row in t.rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
