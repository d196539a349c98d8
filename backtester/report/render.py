"""A report as a list of blocks, written as interactive HTML or as Markdown.

Blocks are headings, paragraphs, tables (DataFrames) and figures. A figure
block (:class:`Plot`) carries a static matplotlib figure and, usually, an
interactive plotly one. HTML draws the interactive one (zoom, hover, legend
clicks) with plotly's script, written once per folder as ``plotly.min.js``
beside the HTML and loaded from there: the report opens offline, and the
reports of one folder share the one file. (A figure without an interactive
version is embedded as a base64 PNG.) Markdown writes the PNGs to a
``<name>_files/`` folder beside the ``.md`` file and links them relatively.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
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
    """A figure: ``figure`` a matplotlib Figure (the PNG of the Markdown version, named
    ``name``), ``interactive`` a plotly Figure (the HTML version; None: the PNG). Either
    may be given as a function of no argument that draws it, called only when needed."""

    name: str
    figure: object
    caption: str = ""
    interactive: object = None
    _png: bytes | None = field(default=None, repr=False)

    @property
    def png(self) -> bytes:
        if self._png is None:
            from .figures import png_bytes

            self._png = png_bytes(_drawn(self.figure))
        return self._png

    @property
    def plotly(self):
        """The interactive figure (drawn on first use), or None."""
        if callable(self.interactive):
            self.interactive = self.interactive()
        return self.interactive


def _drawn(figure):
    return figure() if callable(figure) else figure


SCRIPT = "plotly.min.js"


def plotly_script() -> bytes:
    """plotly.js as its Python package bundles it (the HTML reports' one script)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


def write_script(folder, name: str = SCRIPT) -> Path:
    """Write plotly.js as ``name`` into ``folder`` unless the same file is already there
    (the reports of a folder share it). Returns its path."""
    target = Path(folder) / name
    data = plotly_script()
    if not (target.is_file() and target.stat().st_size == len(data)
            and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()):
        target.write_bytes(data)
    return target


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
div.plot { width: 100%; } div.wide { overflow-x: auto; }
div.noscript { background: #fdf3f3; border-left: 4px solid #d62728; padding: .8em 1em; }
"""

# zooming the time axis of a figure zooms the page's other figures of its zoom group alike
# (``layout.meta["zoom"]``: the figures of the same runs); without plotly.js (the file moved
# without its script) a warning says where the figures went
PAGE_SCRIPT = r"""
(function () {
  if (!window.Plotly) {
    document.getElementById("no-plotly").hidden = false;
    return;
  }
  var busy = false;
  Array.from(document.querySelectorAll("div.plot[data-zoom]")).forEach(function (plot) {
    var plots = Array.from(document.querySelectorAll("div.plot[data-zoom]")).filter(
      function (p) { return p.dataset.zoom === plot.dataset.zoom; });
    plot.on("plotly_relayout", function (change) {
      if (busy) return;
      var keys = Object.keys(change).filter(function (k) { return /^xaxis\d*\./.test(k); });
      if (!keys.length) return;
      var axis = plot.layout[keys[0].split(".")[0]];
      busy = true;
      Promise.all(plots.filter(function (p) { return p !== plot; }).map(function (p) {
        // every x axis of the other figure (its panels'), matched or not
        var update = {};
        Object.keys(p.layout).filter(function (k) { return /^xaxis\d*$/.test(k); })
          .forEach(function (k) {
            if (axis.autorange) update[k + ".autorange"] = true;
            else update[k + ".range"] = axis.range.slice();
          });
        return Plotly.relayout(p, update);
      })).then(function () { busy = false; }, function () { busy = false; });
    });
  });
})();
"""


def _plotly_block(block: Plot, number: int) -> list[str]:
    """A figure as a div that plotly.js draws (its data as JSON, arrays in binary)."""
    figure = block.plotly
    target = f"plot-{number}-{_slug(block.name)}"
    meta = figure.layout.meta if isinstance(figure.layout.meta, dict) else {}
    zoom = f' data-zoom="{html.escape(str(meta["zoom"]))}"' if "zoom" in meta else ""
    # plotly's own JSON: numeric arrays travel as base64 binary, not as decimal text
    payload = figure.to_json().replace("</", "<\\/")
    config = json.dumps({"displaylogo": False, "responsive": True,
                         "modeBarButtonsToRemove": ["select2d", "lasso2d"]})
    return [f'<div class="plot" id="{target}"{zoom}></div>',
            f"<script>(function () {{ var f = {payload};\n"
            f'if (window.Plotly) Plotly.newPlot("{target}", f.data, f.layout, {config}); }})();'
            "</script>"]


def _caption(block: Plot) -> str:
    note = ""
    if block.interactive is not None:
        meta = block.plotly.layout.meta
        note = meta.get("note", "") if isinstance(meta, dict) else ""
    return " ".join(t for t in (block.caption, note) if t)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "figure"


def to_html(title: str, blocks: list, script: str = SCRIPT) -> str:
    """The report as one HTML document, CSS inline; its interactive figures need plotly.js
    as ``script`` beside it (:func:`write` puts it there), the others are data URIs."""
    interactive = any(isinstance(b, Plot) and b.interactive is not None for b in blocks)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{CSS}</style>",
        *([f'<script src="{html.escape(script)}"></script>'] if interactive else []),
        "</head>",
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if interactive:
        parts.append(f'<div class="noscript" id="no-plotly" hidden>The figures need '
                     f"{html.escape(script)}, which this report's folder no longer holds: "
                     "copy it back beside this file, or write the report again.</div>")
    for number, block in enumerate(blocks):
        if isinstance(block, Heading):
            level = min(max(block.level, 2), 6)
            parts.append(f"<h{level}>{html.escape(block.text)}</h{level}>")
        elif isinstance(block, Text):
            for paragraph in block.text.split("\n\n"):
                parts.append(f'<p class="{block.kind}">{html.escape(paragraph)}</p>')
        elif isinstance(block, Table):
            if block.caption:
                parts.append(f'<div class="caption">{html.escape(block.caption)}</div>')
            parts.append('<div class="wide">' + block.frame.to_html(
                index=block.index, border=0, classes="data", na_rep="n/a", escape=True)
                + "</div>")
        elif isinstance(block, Plot) and block.interactive is not None:
            parts += ["<figure>", *_plotly_block(block, number)]
            caption = _caption(block)
            if caption:
                parts.append(f"<figcaption>{html.escape(caption)}</figcaption>")
            parts.append("</figure>")
        elif isinstance(block, Plot):
            data = base64.b64encode(block.png).decode("ascii")
            alt = html.escape(block.caption or block.name)
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{alt}">')
            if block.caption:
                parts.append(f"<figcaption>{html.escape(block.caption)}</figcaption>")
            parts.append("</figure>")
        else:
            raise TypeError(f"unknown report block {type(block).__name__}")
    if interactive:
        parts.append(f"<script>{PAGE_SCRIPT}</script>")
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


def write(title: str, blocks: list, path, script: str = SCRIPT) -> Path:
    """Write the report to ``path``: Markdown for a ``.md`` name, else HTML, with plotly.js
    beside it as ``script`` when it has interactive figures. Returns the path."""
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
        text = to_html(title, blocks, script)
        if any(isinstance(b, Plot) and b.interactive is not None for b in blocks):
            write_script(out.parent, script)
        out.write_text(text, encoding="utf-8")
    return out
