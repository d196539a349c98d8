"""The three reports: one run, a comparison of runs, a sweep summary.

Each is a list of blocks (see :mod:`.render`) written as HTML or Markdown by
the suffix of the path it is given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import metrics
from . import figures
from .render import Heading, Plot, Table, Text, write
from .tables import fmt, format_metrics, liquidation_table, position_table
from .verdict import run_label


def _setup(results: Mapping) -> str:
    """The first lines of ``Result.describe()`` (venue, modes, path, window) of each run."""
    lines = []
    for label, result in results.items():
        head = result.describe().splitlines()[:2]
        lines.append(f"{label}: {head[0]}." if len(results) > 1 else f"{head[0]}.")
    first = next(iter(results.values())).describe().splitlines()[1]
    return " ".join([f"Data: {first}."] + lines)


def metrics_table(results: Mapping) -> pd.DataFrame:
    """Every run's ``metrics.run_metrics`` side by side: metric keys as rows, runs as columns."""
    table = pd.DataFrame({label: metrics.run_metrics(r) for label, r in results.items()})
    table.index.name = "metric"
    return table


def _margin_caption(results: Mapping) -> str:
    distance = ("the distance from each bar's mark to the nearest open position's "
                "liquidation price")
    if any(figures.has_cross(r) for r in results.values()):
        return f"Cross margin ratio (maintenance margin over margin balance) and {distance}."
    return (f"{distance[:1].upper()}{distance[1:]} (no run holds a cross position, so there "
            "is no cross margin ratio to show).")


# each figure block's static (matplotlib, for Markdown) and interactive (plotly, for HTML)
# versions, drawn only when a document needs them
_FIGURES = {"equity": ("equity_figure", "equity_plot"),
            "drawdown": ("drawdown_figure", "drawdown_plot"),
            "margin": ("margin_figure", "margin_plot"),
            "positions": ("position_pnl_figure", "position_pnl_plot")}


def _plot(name: str, results: Mapping, caption: str) -> Plot:
    static, live = _FIGURES[name]

    def draw_static():
        return getattr(figures, static)(results)

    def draw_live():
        from . import interactive

        return getattr(interactive, live)(results)

    return Plot(name, draw_static, caption, draw_live)


def evidence_blocks(results: Mapping) -> list:
    """Figures and tables common to single-run and comparison reports."""
    blocks = [
        _plot("equity", results, "Equity at each bar's close; triangles mark liquidation "
              "events (equity just after; hover one for the positions it closed)."),
        _plot("drawdown", results, "Fall from the running peak."),
    ]
    if any(r.positions is not None and np.isfinite(r.market.mark_close).any()
           for r in results.values()):
        blocks += [
            _plot("margin", results, _margin_caption(results)),
            _plot("positions", results, "Cumulative PnL of each position, net of fees and "
                  "funding; crosses mark liquidations."),
            Heading("Per position"),
            Table(position_table(results), index=False),
        ]
    else:
        blocks.append(Text("Mark prices are not available for this run, so the liquidation "
                           "distance and per-position PnL are left out (pass the market to "
                           "Result.load, or --data to `backtester report`).", "note"))
    blocks.append(Heading("Liquidations"))
    table, total = liquidation_table(results)
    if total == 0:
        blocks.append(Text("No position was liquidated.", "p"))
    else:
        caption = f"{total} liquidated position(s)" + (
            f", the first {len(table)} shown" if len(table) < total else "")
        blocks.append(Table(table, caption, index=False))
    return blocks


def run_blocks(result, title: str) -> list:
    """The blocks of a single-run report."""
    table = metrics_table({"run": result})
    return [Text(_setup({"run": result}), "note"), Heading("Metrics"),
            Table(format_metrics(table).rename(columns={"run": "value"}), index=False),
            *evidence_blocks({run_label(result): result})]


def run_report(result, path, title: str | None = None) -> Path:
    """Write the report of one run: metrics, figures, per-position and liquidation tables.

    ``path`` ending in ``.md`` gives Markdown (figures as PNG files beside it),
    anything else interactive HTML (``plotly.min.js`` beside it).

    Example:
        >>> from backtester import load_market, run
        >>> from backtester.report import run_report
        >>> from strategies import hedged_pair
        >>> m = load_market()
        >>> r = run(m, hedged_pair(m), target_kind="equity", leverage=10)
        >>> run_report(r, "/tmp/run.html").name
        'run.html'
    """
    title = title or f"Backtest: {', '.join(result.market.symbols)}"
    return write(title, run_blocks(result, title), path)


# --- sweep summary -----------------------------------------------------------------------


def _check_columns(summary: pd.DataFrame, names: Sequence[str]) -> None:
    if not isinstance(summary, pd.DataFrame):
        raise TypeError(f"the sweep summary must be a DataFrame, got {type(summary).__name__}")
    missing = [n for n in names if n not in summary.columns]
    if missing:
        raise ValueError(f"the sweep summary has no column {', '.join(map(repr, missing))}; "
                         f"its columns are {', '.join(map(str, summary.columns))}")


def _best(summary: pd.DataFrame, x: str, y: str, metric: str, group: str) -> str:
    """Where the metric is best in each margin mode, in words."""
    lower = metric in figures.LOWER_IS_BETTER
    kind = metrics.METRICS.get(metric, ("", "ratio"))[1]
    values = pd.to_numeric(summary[metric], errors="coerce")
    parts = []
    keys = list(pd.unique(summary[group])) if group in summary else [None]
    for key in keys:
        rows = values if key is None else values[summary[group] == key]
        rows = rows.dropna()
        if not len(rows):
            continue
        at = rows.idxmin() if lower else rows.idxmax()
        where = f"{x}={summary.at[at, x]}, {y}={summary.at[at, y]}"
        name = "" if key is None else f" under {key}"
        parts.append(f"{'lowest' if lower else 'highest'} {metric}{name}: "
                     f"{fmt(float(rows[at]), kind)} at {where}")
    text = "; ".join(parts) + "." if parts else ""
    return text[:1].upper() + text[1:]


def _formatted(summary: pd.DataFrame) -> pd.DataFrame:
    out = summary.copy()
    for column in out.columns:
        if column in metrics.METRICS and pd.api.types.is_numeric_dtype(out[column]):
            kind = metrics.METRICS[column][1]
            out[column] = [fmt(v, kind) for v in out[column]]
    return out


def _heatmap(summary: pd.DataFrame, x: str, y: str, metric: str, group: str,
             live: bool = False):
    """The heatmap of ``metric``, drawn when called (plotly's when ``live``)."""
    def draw():
        if live:
            from .interactive import heatmap_plot

            return heatmap_plot(summary, x, y, metric, group)
        return figures.heatmap_figure(summary, x, y, metric, group)

    return draw


def sweep_blocks(summary: pd.DataFrame, x: str, y: str, metric: str | Sequence[str],
                 group: str = "margin_mode", limit: int = 100) -> list:
    """The blocks of a sweep-summary report: heatmaps per margin mode, the best cells, the
    table of runs."""
    wanted = [metric] if isinstance(metric, str) else list(metric)
    _check_columns(summary, [x, y, *wanted])
    if "liquidations" in summary.columns and "liquidations" not in wanted:
        wanted.append("liquidations")
    keys = [k for k in (x, y, group) if k in summary.columns]
    per_cell = int(summary.groupby(keys, dropna=False).size().max()) if len(summary) else 0
    modes = list(pd.unique(summary[group])) if group in summary else []
    text = (f"{len(summary)} runs over {x} ({', '.join(map(str, sorted(pd.unique(summary[x]))))})"
            f" and {y} ({', '.join(map(str, sorted(pd.unique(summary[y]))))})")
    text += f", margin modes {', '.join(map(str, modes))}." if modes else "."
    if per_cell > 1:
        text += (f" Up to {per_cell} runs share a cell (other parameters differ); "
                 "a cell shows their mean.")
    blocks = [Text(text, "note")]
    for name in wanted:
        blocks += [Heading(name), Text(_best(summary, x, y, name, group), "verdict"),
                   Plot(f"heatmap_{name}", _heatmap(summary, x, y, name, group),
                        interactive=_heatmap(summary, x, y, name, group, live=True))]
    ordered = summary.sort_values(wanted[0], ascending=wanted[0] in figures.LOWER_IS_BETTER,
                                  na_position="last")
    caption = f"{len(summary)} runs, best {wanted[0]} first" + (
        f" (first {limit} shown)" if len(summary) > limit else "")
    # columns that hold one value in every run (venue, balance...) are said once, not repeated
    keep = {x, y, group, *wanted}
    fixed = [c for c in ordered.columns if c not in keep and len(ordered) > 1
             and ordered[c].astype(str).nunique(dropna=False) == 1]
    if fixed:
        caption += "; the same in every run: " + ", ".join(
            f"{c}={ordered[c].iloc[0]}" for c in fixed)
    shown = _formatted(ordered.drop(columns=fixed).head(limit))
    blocks += [Heading("Runs"), Table(shown, caption, index=False)]
    return blocks


def sweep_report(summary: pd.DataFrame, x: str, y: str, metric: str | Sequence[str], path,
                 title: str | None = None, group: str = "margin_mode") -> Path:
    """Write a sweep summary's report: heatmaps of ``metric`` over parameters ``x`` and ``y``,
    one panel per margin mode, where each mode does best, and the table of runs.

    ``summary`` has one row per run: parameter columns, ``margin_mode`` and
    metric columns (``total_return``, ``sharpe``, ``max_drawdown``,
    ``liquidations``...). ``metric`` may be a list for several heatmaps; a
    ``liquidations`` column always gets one. ``path`` ending in ``.md`` gives
    Markdown, anything else interactive HTML (``plotly.min.js`` beside it).

    Example:
        >>> import pandas as pd
        >>> summary = pd.DataFrame({"leverage": [5, 10, 5, 10], "exposure": [1, 1, 2, 2],
        ...                         "margin_mode": "cross", "total_return": [.1, .2, .0, -.3]})
        >>> sweep_report(summary, "leverage", "exposure", "total_return", "/tmp/sweep.html").name
        'sweep.html'
    """
    metric_name = metric if isinstance(metric, str) else ", ".join(metric)
    title = title or f"Sweep: {metric_name} by {x} and {y}"
    return write(title, sweep_blocks(summary, x, y, metric, group), path)
