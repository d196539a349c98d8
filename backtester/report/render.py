"""A report as a list of blocks, written as self-contained HTML or as Markdown.

Blocks are headings, paragraphs, tables (DataFrames) and figures (matplotlib).
HTML embeds every figure as a base64 PNG and carries its CSS inline, so the
file opens offline and can be mailed as is. Markdown writes the PNGs to a
``<name>_files/`` folder beside the ``.md`` file and links them relatively.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Text:
    """A paragraph; ``kind="verdict"`` is set off as the report's conclusion."""

    text: str
    kind: str = "p"


@dataclass
class Table:
    frame: pd.DataFrame
    caption: str = ""
    index: bool = True


@dataclass
class Plot:
    """A matplotlib figure; ``name`` becomes the PNG's file name in the Markdown version."""

    name: str
    figure: object
    caption: str = ""
    _png: bytes | None = field(default=None, repr=False)

    @property
    def png(self) -> bytes:
        if self._png is None:
            from .figures import png_bytes

            self._png = png_bytes(self.figure)
        return self._png


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1080px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #eee; }
p.verdict { background: #f3f7fc; border-left: 4px solid #1f77b4; padding: .8em 1em; }
p.note { color: #666; font-size: .9em; }
table.data { border-collapse: collapse; font-size: .88em; margin: .6em 0 1.2em; }
table.data th, table.data td { padding: .28em .7em; border-bottom: 1px solid #e4e4e4;
                               text-align: right; white-space: nowrap; }
table.data th { background: #fafafa; }
table.data tbody th, table.data td:first-child { text-align: left; }
.caption { font-size: .9em; color: #555; margin-bottom: .2em; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-size: .9em; color: #555; }
"""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "figure"


def to_html(title: str, blocks: list) -> str:
    """The report as one HTML document (figures as data URIs, CSS inline)."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 6)
            parts.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Text):
            for paragraph in block.text.split("\n\n"):
                parts.append(f'<p class="{block.kind}">{html.escape(paragraph)}</p>')
        elif isinstance(block, Table):
            if block.caption:
                parts.append(f'<div class="caption">{html.escape(block.caption)}</div>')
            parts.append(block.frame.to_html(index=block.index, border=0, classes="data",
                                             na_rep="n/a", escape=True))
        elif isinstance(block, Plot):
            data = base64.b64encode(block.png).decode("ascii")
            alt = html.escape(block.caption or block.name)
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">')
            if block.caption:
                parts.append(f"<figcaption>{html.escape(block.caption)}</figcaption>")
            parts.append("</figure>")
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _md_cell(value) -> str:
    text = "n/a" if value is None or (isinstance(value, float) and value != value) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


_NUMBER = re.compile(r"^(n/a|[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?)?$")


def _numeric(values) -> bool:
    """A column of numbers (or numbers shown as text) is right-aligned, as in the HTML."""
    return all(isinstance(v, (int, float)) or _NUMBER.match(str(v)) for v in values)


def markdown_table(frame: pd.DataFrame, index: bool = True) -> str:
    """A DataFrame as a GitHub-flavoured pipe table (pandas' own needs ``tabulate``)."""
    header = ([_md_cell(frame.index.name or "")] if index else []) + [
        _md_cell(c) for c in frame.columns]
    align = ([" :--- "] if index else []) + [
        " ---: " if _numeric(frame[c]) else " :--- " for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for label, row in zip(frame.index, frame.itertuples(index=False), strict=True):
        cells = ([_md_cell(label)] if index else []) + [_md_cell(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_markdown(title: str, blocks: list, figure_dir: str | None = None) -> tuple[str, dict]:
    """The report as Markdown text, plus {relative PNG path: bytes} for its figures."""
    lines = [f"# {title}", ""]
    files: dict[str, bytes] = {}
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * min(max(block.level, 2), 6) + " " + block.text, ""]
        elif isinstance(block, Text):
            for paragraph in block.text.split("\n\n"):
                lines += [("> " if block.kind == "verdict" else "") + paragraph, ""]
        elif isinstance(block, Table):
            if block.caption:
                lines += [f"*{block.caption}*", ""]
            lines += [markdown_table(block.frame, block.index), ""]
        elif isinstance(block, Plot):
            name = f"{figure_dir}/{_slug(block.name)}.png" if figure_dir else (
                f"{_slug(block.name)}.png")
            files[name] = block.png
            lines += [f"![{block.caption or block.name}]({name})", ""]
            if block.caption:
                lines += [f"*{block.caption}*", ""]
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    return "\n".join(lines), files


def write(title: str, blocks: list, path) -> Path:
    """Write the report to ``path``: Markdown for a ``.md`` name, else HTML. Returns the path."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() in (".md", ".markdown"):
        folder = f"{out.stem}_files"
        text, files = to_markdown(title, blocks, folder)
        for name, data in files.items():
            target = out.parent / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        out.write_text(text, encoding="utf-8")
    else:
        out.write_text(to_html(title, blocks), encoding="utf-8")
    return out
