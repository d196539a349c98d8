"""Interactive (plotly) versions of the report figures, for the HTML reports.

Each function mirrors one of :mod:`.figures` (same runs, same merged legend
entries, same markers) and returns a ``plotly.graph_objects.Figure``: zoom by
dragging, values on hover, a click on a legend entry hides that run. A
liquidation marker's hover names each liquidated position: symbol, side,
quantity, liquidation price and margin lost.

Curves longer than ``MAX_POINTS`` are drawn from the lowest and highest value
of each of ``MAX_POINTS / 2`` buckets of bars (:func:`decimate`): every spike
stays visible, the HTML stays small; the figure's ``layout.meta["note"]`` says
so and the report prints it under the figure.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from .. import metrics
from .figures import (
    LOWER_IS_BETTER,
    PALETTE,
    _cell,
    _curve,
    _equity_groups,
    _joined,
    distance_series,
    has_cross,
    same_curves,
)

# the most points a curve keeps: a year of hourly bars (8,760) and two of them (17,544) are
# drawn whole; a million 1-minute bars, 10,000 spans' extremes (about 0.4 MB of HTML a curve)
MAX_POINTS = 20_000
DASHES = ("solid", "dash", "dot", "dashdot")  # matplotlib's "-", "--", ":", "-."
TIME_FORMAT = "%Y-%m-%d %H:%M"
FONT = dict(family='-apple-system, "Segoe UI", Helvetica, Arial, sans-serif', size=12)
# a light look spelled out here: plotly's named templates add ~6 KB of JSON to every figure
_AXIS = dict(gridcolor="#e8e8e8", linecolor="#999", zerolinecolor="#bbb", showline=True,
             ticks="outside", tickcolor="#999", automargin=True)
TEMPLATE = go.layout.Template(layout=dict(
    paper_bgcolor="white", plot_bgcolor="white", xaxis=_AXIS, yaxis=_AXIS,
    hoverlabel=dict(align="left"), colorway=list(PALETTE[:10])))

# at the foot of the figure, clear of the title, the subplot titles and the tool bar; a
# click hides a run's every trace (its curve and its markers)
LEGEND = dict(orientation="h", yref="container", yanchor="bottom", y=0.0, x=0.0,
              groupclick="togglegroup")


def _styles(results: Mapping) -> dict[str, dict]:
    """Each run's line colour and dash, as in the static figures (tab20, then dashes)."""
    return {label: {"color": PALETTE[k % len(PALETTE)], "dash": DASHES[(k // 10) % len(DASHES)]}
            for k, label in enumerate(results)}


def epoch_ms(index) -> np.ndarray:
    """Bar times as milliseconds since 1970 UTC (a date axis reads them; as numbers they
    travel in the HTML as compact binary arrays instead of date strings)."""
    index = pd.DatetimeIndex(index)
    if index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return index.as_unit("ns").asi8 / 1e6


def decimate(y: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """The indices of ``y`` to draw: all of them up to ``max_points``; beyond, in each of
    ``max_points // 2`` equal buckets of bars the lowest and the highest value (and the
    first missing one, so that gaps stay gaps), in bar order, first and last bar kept.

        >>> decimate(np.arange(10.0), 4).tolist()
        [0, 4, 5, 9]
    """
    y = np.asarray(y, dtype=float)
    n = len(y)
    if n <= max_points:
        return np.arange(n)
    buckets = max(max_points // 2, 1)
    size = -(-n // buckets)
    padded = np.full(buckets * size, np.nan)
    padded[:n] = y
    rows = padded.reshape(buckets, size)
    missing = np.isnan(rows)
    offsets = np.arange(buckets) * size
    low = np.where(missing, np.inf, rows).argmin(axis=1) + offsets
    high = np.where(missing, -np.inf, rows).argmax(axis=1) + offsets
    gaps = (missing.argmax(axis=1) + offsets)[missing.any(axis=1)]
    keep = np.unique(np.concatenate([low, high, gaps, [0, n - 1]]))
    return keep[keep < n]


class _Notes:
    """Collects what a figure left out, for its caption."""

    def __init__(self):
        self.longest = 0
        self.kept = 0

    def xy(self, times: np.ndarray, values: np.ndarray, exact: bool = True) -> dict:
        """A curve's ``x`` and ``y`` for a trace: bars evenly spaced in time as a start and
        a step (``x0``, ``dx``: no array of times at all), the values as float64, or as
        float32 when not ``exact`` (percentages shown to two decimals)."""
        values = np.asarray(values, dtype=float)
        at = decimate(values)
        if len(at) < len(values):
            self.longest = max(self.longest, len(values))
            self.kept = max(self.kept, len(at))
            times, values = times[at], values[at]
        values = values if exact else values.astype(np.float32)
        steps = np.diff(times)
        if len(times) > 2 and (steps == steps[0]).all():
            return {"x0": float(times[0]), "dx": float(steps[0]), "y": values}
        return {"x": times, "y": values}

    def finish(self, fig: go.Figure) -> go.Figure:
        if self.longest:
            meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
            fig.layout.meta = {**meta, "note": (
                f"Curves of more than {MAX_POINTS:,} bars (here up to {self.longest:,}) are "
                f"drawn from the lowest and highest value of each of {MAX_POINTS // 2:,} "
                f"equal spans of bars (at most {self.kept:,} points a curve): every spike "
                "shows, but zooming in shows no finer detail than that; the tables and "
                "markers use every bar.")}
        return fig


def _layout(fig: go.Figure, title: str, height: int, results: Mapping) -> go.Figure:
    """The look of the time figures, over the runs' bars from first to last (as the other
    figures of the report: markers would widen it by a margin of their own). A report zooms
    its figures with ``meta["zoom"]`` "runs" together."""
    fig.update_layout(meta={"zoom": "runs"},
        title=dict(text=title, x=0.01, font=dict(size=15)), height=height, font=FONT,
        template=TEMPLATE, hovermode="x unified", margin=dict(l=70, r=20, t=60, b=40),
        legend=LEGEND)
    fig.update_xaxes(type="date", hoverformat=TIME_FORMAT, showspikes=True,
                     spikemode="across", spikethickness=1)
    spans = [epoch_ms(r.equity.index[[0, -1]]) for r in results.values() if len(r.equity)]
    if spans:
        fig.update_xaxes(range=[min(s[0] for s in spans), max(s[1] for s in spans)])
    return fig


def _line(xy: dict, name: str, style: dict, group: str, hover: str, **extra) -> go.Scatter:
    return go.Scatter(**xy, name=name, mode="lines", legendgroup=group,
                      line=dict(color=style["color"], dash=style["dash"], width=1.3),
                      hovertemplate=hover + "<extra>" + name + "</extra>", **extra)


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _position_lines(liq: pd.DataFrame) -> list[str]:
    """A line per liquidated position: its symbol, side, quantity, liquidation price and
    the margin it lost."""
    return [f"{symbol} {'long' if qty > 0 else 'short'} {abs(qty):,.6g} liquidated at "
            f"{_money(price)}, margin lost {_money(lost)}"
            for symbol, qty, price, lost in zip(
                liq["symbol"].to_numpy(), liq["qty"].to_numpy(dtype=float),
                liq["price"].to_numpy(dtype=float), liq["margin_lost"].to_numpy(dtype=float),
                strict=True)]


def liquidation_text(liq: pd.DataFrame) -> str:
    """The hover text of one liquidation event: a line per position it liquidated."""
    return "<br>".join(_position_lines(liq))


def liquidation_texts(liq: pd.DataFrame) -> dict[int, str]:
    """Each liquidation bar's hover text (its positions' lines), by bar."""
    texts: dict[int, list[str]] = {}
    for bar, line in zip(liq["bar"].to_numpy(dtype=np.int64), _position_lines(liq),
                         strict=True):
        texts.setdefault(int(bar), []).append(line)
    return {bar: "<br>".join(lines) for bar, lines in texts.items()}


def equity_plot(results: Mapping, title: str = "Equity") -> go.Figure:
    """Equity curves overlaid (runs of equal equity share one entry, "a = b"), each
    liquidation event marked at the equity of its bar's close."""
    styles, notes = _styles(results), _Notes()
    fig = go.Figure()
    for group in _equity_groups(results):
        name = _joined(group)
        first = results[group[0]]
        equity = first.equity
        times, values = epoch_ms(equity.index), equity.to_numpy(dtype=float)
        fig.add_trace(_line(notes.xy(times, values), name, styles[group[0]], name,
                            "%{y:,.2f}"))
        markers: dict[tuple, list[str]] = {}  # runs liquidated at the same bars share markers
        for label in group:
            liq = results[label].liquidations
            if len(liq):
                bars = tuple(liq["bar"].drop_duplicates().to_numpy(dtype=np.int64))
                markers.setdefault((bars, len(liq)), []).append(label)
        for (bars, count), labels in markers.items():
            texts = liquidation_texts(results[labels[0]].liquidations)
            at = np.asarray(bars, dtype=np.int64)
            text = [texts[int(bar)] for bar in at]
            fig.add_trace(go.Scatter(
                x=times[at], y=values[at], mode="markers", legendgroup=name,
                name=f"{_joined(labels)}: {count} liquidated position(s)", text=text,
                marker=dict(symbol="triangle-down", size=10, color=styles[labels[0]]["color"],
                            line=dict(color="black", width=0.8)),
                hovertemplate="equity %{y:,.2f}<br>%{text}<extra>liquidation</extra>"))
    _layout(fig, title, 430, results)
    fig.update_yaxes(title_text="equity (quote)", tickformat=",.0f")
    return notes.finish(fig)


def drawdown_plot(results: Mapping, title: str = "Drawdown") -> go.Figure:
    """Each run's fall from its running peak (the initial balance counts as a peak), in %."""
    styles, notes = _styles(results), _Notes()
    fig = go.Figure()
    groups = _equity_groups(results)
    for group in groups:
        result = results[group[0]]
        dd = metrics.drawdown(_curve(result)).to_numpy()[1:] * 100
        worst = dd.min() if len(dd) else 0.0
        name = f"{_joined(group)} (max {worst:.1f}%)"
        xy = notes.xy(epoch_ms(result.equity.index), dd, exact=False)
        color = styles[group[0]]["color"]
        fill = f"rgba({int(color[1:3], 16)}, {int(color[3:5], 16)}, {int(color[5:], 16)}, .08)"
        # one run's area is shaded; several runs' shades would pile up into mud
        shade = {"fill": "tozeroy", "fillcolor": fill} if len(groups) == 1 else {}
        fig.add_trace(_line(xy, name, styles[group[0]], _joined(group), "%{y:.2f}%", **shade))
    _layout(fig, title, 320, results)
    fig.update_yaxes(title_text="drawdown (%)", ticksuffix="%")
    return notes.finish(fig)


def margin_plot(results: Mapping, title: str = "Liquidation risk") -> go.Figure:
    """Top: the cross margin ratio (liquidation at 100%), for the runs with a cross
    position. Bottom: the distance to liquidation. No run with a cross position: the
    distance alone."""
    styles, notes = _styles(results), _Notes()
    cross = {label: r for label, r in results.items() if has_cross(r)}
    distance = "price move against the nearest open position that would liquidate it"
    if cross:
        fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.1,
                            subplot_titles=("cross margin ratio (maintenance / margin balance;"
                                            " liquidation at 100%)", distance))
        curves = {label: r.account["margin_ratio"].replace([np.inf, 0.0], np.nan).to_numpy()
                  * 100 for label, r in cross.items()}
        top = 0.0
        for group in same_curves(curves):
            name = _joined(group)
            xy = notes.xy(epoch_ms(cross[group[0]].equity.index), curves[group[0]],
                          exact=False)
            fig.add_trace(_line(xy, name, styles[group[0]], name, "%{y:.2f}%"), row=1, col=1)
            ratio = curves[group[0]]
            top = max(top, float(np.nanmax(ratio)) if np.isfinite(ratio).any() else 0.0)
        if top >= 50:
            fig.add_hline(y=100, line=dict(color="black", width=1, dash="dash"), row=1, col=1,
                          annotation_text="liquidation (100%)", annotation_position="top left")
        fig.update_yaxes(title_text="margin ratio (%)", ticksuffix="%", row=1, col=1)
        row, height, heading = 2, 560, title
    else:
        fig = go.Figure()
        row, height, heading = None, 340, f"{title}: {distance}"
    curves = {}
    for label, result in results.items():
        dist = distance_series(result)
        if dist is not None and dist.notna().any():
            curves[label] = dist
    for group in same_curves({label: d.to_numpy() for label, d in curves.items()}):
        dist = curves[group[0]]
        name = f"{_joined(group)} (closest {dist.min():.1%})"
        xy = notes.xy(epoch_ms(dist.index), dist.to_numpy(dtype=float) * 100, exact=False)
        trace = _line(xy, name, styles[group[0]], _joined(group), "%{y:.2f}%")
        fig.add_trace(trace, **({"row": row, "col": 1} if row else {}))
    _layout(fig, heading, height, results)
    fig.update_yaxes(title_text="distance to liquidation (%)", ticksuffix="%",
                     **({"row": row, "col": 1} if row else {}))
    return notes.finish(fig)


def position_pnl_plot(results: Mapping, title: str = "PnL per position") -> go.Figure:
    """One panel per run: each symbol's cumulative PnL (net of fees and funding), a cross
    where a position was liquidated (hover: its price and the margin lost)."""
    notes = _Notes()
    n = len(results)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.3 / max(n, 1),
                        subplot_titles=[str(label) for label in results])
    palette = PALETTE[:10]
    for row, (label, result) in enumerate(results.items(), start=1):
        if result.positions is None:
            fig.layout.annotations[row - 1].text = f"{label}: positions were not recorded"
            continue
        pnl = metrics.position_pnl(result)
        times = epoch_ms(pnl.index)
        for k, symbol in enumerate(pnl.columns):
            color = palette[k % len(palette)]
            group = f"{label}: {symbol}"
            values = pnl[symbol].to_numpy(dtype=float)
            fig.add_trace(_line(notes.xy(times, values), group if n > 1 else symbol,
                                {"color": color, "dash": "solid"}, group, "%{y:,.2f}"),
                          row=row, col=1)
            liq = result.liquidations
            liq = liq[liq["symbol"] == symbol]
            if len(liq):
                at = liq["bar"].to_numpy(dtype=np.int64)
                fig.add_trace(go.Scatter(
                    x=times[at], y=values[at], mode="markers", legendgroup=group,
                    name=f"{group if n > 1 else symbol} liquidated ({len(liq)})",
                    text=_position_lines(liq),
                    marker=dict(symbol="x", size=9, color=color,
                                line=dict(color="black", width=0.5)),
                    hovertemplate="PnL %{y:,.2f}<br>%{text}<extra>liquidation</extra>"),
                    row=row, col=1)
        fig.add_hline(y=0, line=dict(color="black", width=0.8), row=row, col=1)
        fig.update_yaxes(title_text="PnL (quote)", tickformat=",.0f", row=row, col=1)
    _layout(fig, title, 90 + 260 * n, results)
    return notes.finish(fig)


def _two_slope(scale: str, lo: float, hi: float, reverse: bool) -> list:
    """A diverging colour scale whose middle colour sits at zero between ``lo`` < 0 < ``hi``
    (matplotlib's TwoSlopeNorm: each side spans its half of the colours)."""
    zero = -lo / (hi - lo)
    stops = np.linspace(0, 1, 11)
    colors = sample_colorscale(scale, list(stops[::-1] if reverse else stops))
    points = np.concatenate([stops[:6] / 0.5 * zero, zero + (stops[6:] - 0.5) / 0.5 * (1 - zero)])
    return [[float(p), c] for p, c in zip(points, colors, strict=True)]


def _tick(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def heatmap_plot(summary: pd.DataFrame, x: str, y: str, metric: str,
                 group: str = "margin_mode") -> go.Figure:
    """``heatmap_figure`` to hover: ``metric`` over ``x`` (columns) and ``y`` (rows), a
    panel per value of ``group`` on one colour scale (its bar in % for a percentage)."""
    groups = list(pd.unique(summary[group])) if group in summary else [None]
    values = pd.to_numeric(summary[metric], errors="coerce")
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    if lo == hi:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    reverse = metric in LOWER_IS_BETTER
    if lo < 0 < hi:
        scale, zmin, zmax = _two_slope("RdYlGn", lo, hi, reverse), lo, hi
    else:
        scale, zmin, zmax = ("RdYlGn_r" if reverse else "RdYlGn"), lo, hi
    kind = metrics.METRICS.get(metric, ("", "number"))[1]
    fig = make_subplots(rows=1, cols=len(groups), horizontal_spacing=0.08,
                        subplot_titles=[str(g) if g is not None else metric for g in groups])
    magnitude = max(abs(lo), abs(hi))
    for col, value in enumerate(groups, start=1):
        part = summary if value is None else summary[summary[group] == value]
        part = part.assign(**{metric: pd.to_numeric(part[metric], errors="coerce")})
        grid = part.pivot_table(index=y, columns=x, values=metric, aggfunc="mean",
                                dropna=False)
        count = part.pivot_table(index=y, columns=x, values=metric, aggfunc="size",
                                 dropna=False).reindex_like(grid)
        cells = grid.to_numpy(dtype=float)
        text = [["n/a" if not np.isfinite(v) else _cell(v, magnitude, kind) for v in row]
                for row in cells]
        runs = np.nan_to_num(count.to_numpy(dtype=float)).astype(int)
        fig.add_trace(go.Heatmap(
            z=cells, x=[_tick(v) for v in grid.columns], y=[_tick(v) for v in grid.index],
            text=text, texttemplate="%{text}", customdata=runs, colorscale=scale,
            zmin=zmin, zmax=zmax, showscale=col == 1, xgap=1, ygap=1,
            colorbar=dict(title=dict(text=f"{metric} (%)" if kind == "pct" else metric,
                                     side="right"),
                          tickformat=".0%" if kind == "pct" else None),
            hovertemplate=(f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric}: %{{text}}"
                           "<br>%{customdata} run(s) in the cell (their mean)<extra>"
                           f"{value if value is not None else ''}</extra>")),
            row=1, col=col)
        fig.update_xaxes(title_text=x, type="category", row=1, col=col)
        fig.update_yaxes(title_text=y, type="category", row=1, col=col)
    per = f", per {group}" if groups != [None] else ""
    fig.update_layout(title=dict(text=f"{metric} by {y} and {x}{per}", x=0.01), font=FONT,
                      template=TEMPLATE, height=400,
                      width=None, margin=dict(l=70, r=20, t=70, b=50))
    return fig
