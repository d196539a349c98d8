"""Numbers as a reader wants them: money with thousands separators, rates in %, tables
of metrics, liquidations and per-position statistics ready to render."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping

import numpy as np
import pandas as pd

from .. import metrics


def money(value: float, signed: bool = False) -> str:
    """12088.4 -> '12,088'; small amounts keep cents (56.19); ``signed`` adds a '+'."""
    if value is None or not np.isfinite(value):
        return "n/a"
    sign = "+" if signed else ""
    if abs(value) >= 100 or value == 0:
        return f"{value:{sign},.0f}"
    return f"{value:{sign},.2f}"


def pct(value: float, signed: bool = False, digits: int = 1) -> str:
    """0.209 -> '20.9%' (or '+20.9%' when ``signed``)."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:{'+' if signed else ''}.{digits}%}"


def fmt(value, kind: str) -> str:
    """One metric value as text, by kind (``money``, ``pct``, ``ratio``, ``int``, ``days``)."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if kind == "money":
        return f"{value:,.2f}"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "int":
        return f"{int(value):,}"
    if kind == "days":
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def format_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """A metrics table (metric keys as rows, runs as columns) as display text, the metric
    names in words in a first ``metric`` column."""
    rows = {}
    for key, values in table.iterrows():
        name, kind = metrics.METRICS.get(key, (key, "ratio"))
        rows[name] = [fmt(v, kind) for v in values]
    out = pd.DataFrame.from_dict(rows, orient="index", columns=list(table.columns))
    return out.rename_axis("metric").reset_index()


def console_table(table: pd.DataFrame, width: int = 100) -> str:
    """A table of text (its first column the row names, as ``format_metrics`` gives) for a
    terminal: when it is wider than ``width``, its columns in blocks, one under the other,
    each repeating the row names, so that no line exceeds ``width``."""
    names, columns = table.columns[0], list(table.columns[1:])
    blocks, block = [], []
    for column in columns:
        if block and _width(table[[names, *block, column]]) > width:
            blocks.append(block)
            block = []
        block.append(column)
    blocks.append(block)
    return "\n\n".join(table[[names, *b]].to_string(index=False) for b in blocks)


def _width(frame: pd.DataFrame) -> int:
    return max(len(line) for line in frame.to_string(index=False).splitlines())


def wrap(text: str, width: int = 100, keep: tuple[str, ...] = ()) -> str:
    """Paragraphs (blank-line separated) wrapped to ``width`` columns, for a terminal; the
    names in ``keep`` (run labels such as "cross 10x") are not split across lines."""
    names = {n for name in keep for n in (name, name[:1].upper() + name[1:]) if " " in n}
    glue = {name: name.replace(" ", "\x00") for name in sorted(names, key=len, reverse=True)}
    out = []
    for paragraph in text.split("\n\n"):
        for name, glued in glue.items():
            paragraph = paragraph.replace(name, glued)
        out.append(textwrap.fill(paragraph, width, break_long_words=False,
                                 break_on_hyphens=False).replace("\x00", " "))
    return "\n\n".join(out)


LIQUIDATION_COLUMNS = {
    "timestamp": "time (UTC)", "symbol": "symbol", "mode": "mode", "side": "side",
    "qty": "quantity", "entry_price": "entry price", "price": "liquidation price",
    "realized_pnl": "realized PnL", "fee": "liquidation fee", "fee_waived": "fee waived",
    "margin_lost": "margin lost",
    "shortfall": "shortfall", "equity_before": "equity before", "equity_after": "equity after",
    "gapped": "gapped",
}


def liquidation_table(results: Mapping, limit: int = 200) -> tuple[pd.DataFrame, int]:
    """Every liquidated position of the runs (first ``limit``), as display text, and the total.

    With several runs a first column names the run.
    """
    frames = []
    for label, result in results.items():
        liq = result.liquidations
        if not len(liq):
            continue
        frame = liq.assign(side=np.where(liq["qty"] > 0, "long", "short"))
        frame = frame[list(LIQUIDATION_COLUMNS)].copy()
        if len(results) > 1:
            frame.insert(0, "run", label)
        frames.append(frame)
    if not frames:
        return pd.DataFrame(), 0
    table = pd.concat(frames, ignore_index=True)
    total = len(table)
    table = table.head(limit)
    table["timestamp"] = pd.DatetimeIndex(table["timestamp"]).strftime("%Y-%m-%d %H:%M")
    table["qty"] = table["qty"].map(lambda v: f"{v:,.6g}")
    for column in ("entry_price", "price"):
        table[column] = table[column].map(lambda v: f"{v:,.2f}")
    for column in ("realized_pnl", "fee", "fee_waived", "margin_lost", "shortfall",
                   "equity_before", "equity_after"):
        # (a run saved before the waived fee was recorded has none: blank)
        table[column] = table[column].map(lambda v: f"{v:,.2f}" if v == v else "")
    table["gapped"] = table["gapped"].map({True: "yes", False: ""})
    return table.rename(columns=LIQUIDATION_COLUMNS), total


POSITION_COLUMNS = {
    "trades": ("trades", "int"), "traded_notional": ("traded notional", "money"),
    "realized_pnl": ("realized PnL", "money"), "unrealized_pnl": ("unrealized PnL", "money"),
    "fees": ("fees", "money"), "liquidation_fees": ("liquidation fees", "money"),
    "funding": ("funding paid", "money"), "liquidations": ("liquidations", "int"),
    "margin_lost": ("margin lost", "money"), "net_pnl": ("net PnL", "money"),
    "time_in_market": ("time in market", "pct"),
}


def position_table(results: Mapping) -> pd.DataFrame:
    """Per-position statistics (``metrics.position_stats``) of each run, as display text
    (a ``run`` column first when there are several)."""
    frames = []
    for label, result in results.items():
        stats = metrics.position_stats(result)
        shown = pd.DataFrame({name: [fmt(v, kind) for v in stats[key]]
                              for key, (name, kind) in POSITION_COLUMNS.items()})
        shown.insert(0, "symbol", list(stats.index))
        if len(results) > 1:
            shown.insert(0, "run", label)
        frames.append(shown)
    return pd.concat(frames, ignore_index=True)
