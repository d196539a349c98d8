"""The advice report's figures to explore in a browser (plotly): risk curves against
leverage with their 95% bands, and replayed crashes with their liquidations.

Each mirrors :mod:`.figures` (the PNGs of the Markdown report); here hovering
gives the numbers, and a click on a legend entry hides that curve and its band.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ..report.interactive import (
    FONT,
    LEGEND,
    TEMPLATE,
    TIME_FORMAT,
    _Notes,
    epoch_ms,
    liquidation_texts,
)
from .figures import COLORS, DASHES

PLOTLY_DASHES = {"-": "solid", "--": "dash", ":": "dot", "-.": "dashdot"}
SYMBOLS = {"cross": "circle-open", "isolated": "square-open"}


def _band_color(color: str) -> str:
    return f"rgba({int(color[1:3], 16)}, {int(color[3:5], 16)}, {int(color[5:], 16)}, .12)"


def risk_plot(risk, ruin: float = 0.5) -> go.Figure:
    """Probability of a liquidation (left) and of losing ``ruin`` of the account (right)
    against leverage: one curve per margin mode (and other swept option), 95% bands."""
    table = risk.table
    key = f"p_loss_{ruin * 100:g}"
    days = risk.info["days"]
    horizon = "a year" if abs(days - 365) < 1 else f"{days:g} days"
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=(f"Probability of a liquidation within {horizon}",
                                        f"Probability of losing {ruin:.0%} of the account"))
    others = [c for c in table.columns[:list(table.columns).index("paths")]
              if c not in ("margin_mode", "leverage")]
    styles = ("-", "--", ":", "-.")
    for k, (values, group) in enumerate(table.groupby(["margin_mode", *others], sort=False)):
        values = values if isinstance(values, tuple) else (values,)
        mode = values[0]
        label = mode + "".join(f", {o}={v}" for o, v in zip(others, values[1:], strict=True))
        style = DASHES.get(mode, "-") if not others else styles[(k // 2) % len(styles)]
        color = COLORS.get(mode, "#555555")
        g = group.sort_values("leverage")
        x = g["leverage"].to_numpy(dtype=float)
        for col, column in enumerate(("p_liquidation", key), start=1):
            low, high = g[f"{column}_low"].to_numpy() * 100, g[f"{column}_high"].to_numpy() * 100
            # the band: its upper edge, then its lower edge filled up to it
            fig.add_trace(go.Scatter(x=x, y=high, mode="lines", line=dict(width=0),
                                     legendgroup=label, showlegend=False, hoverinfo="skip"),
                          row=1, col=col)
            fig.add_trace(go.Scatter(x=x, y=low, mode="lines", line=dict(width=0),
                                     fill="tonexty", fillcolor=_band_color(color),
                                     legendgroup=label, showlegend=False, hoverinfo="skip"),
                          row=1, col=col)
            fig.add_trace(go.Scatter(
                x=x, y=g[column].to_numpy() * 100, name=label, legendgroup=label,
                showlegend=col == 1, mode="lines+markers",
                line=dict(color=color, dash=PLOTLY_DASHES.get(style, "solid")),
                marker=dict(symbol=SYMBOLS.get(mode, "circle-open"), size=8, color=color),
                customdata=np.stack([low, high], axis=1),
                hovertemplate=("%{x:g}x: %{y:.1f}% (95% interval %{customdata[0]:.1f}% to "
                               "%{customdata[1]:.1f}%)<extra>" + label + "</extra>")),
                row=1, col=col)
    levels = sorted(table["leverage"].unique())
    fig.update_xaxes(type="log", tickvals=levels, ticktext=[f"{v:g}x" for v in levels],
                     title_text="leverage")
    fig.update_yaxes(range=[-2, 102], ticksuffix="%")
    fig.update_yaxes(title_text="% of simulated paths", row=1, col=1)
    fig.update_layout(template=TEMPLATE, font=FONT, height=420, hovermode="closest",
                      margin=dict(l=70, r=20, t=50, b=40),
                      legend=LEGEND)
    return fig


def crash_plot(replay) -> go.Figure:
    """Equity of the book through a replayed crash window, one curve per margin mode, its
    liquidations marked on the curve (hover: symbol, price, margin lost)."""
    notes = _Notes()
    fig = go.Figure()
    for mode, result in replay.runs.items():
        equity = result.equity
        color = COLORS.get(mode, "#555555")
        times, values = epoch_ms(equity.index), equity.to_numpy(dtype=float)
        fig.add_trace(go.Scatter(**notes.xy(times, values), name=mode, legendgroup=mode,
                                 mode="lines", line=dict(color=color, width=1.4, dash=(
                                     PLOTLY_DASHES[DASHES.get(mode, "-")])),
                                 hovertemplate="%{y:,.2f}<extra>" + mode + "</extra>"))
        liq = result.liquidations
        if len(liq):
            # each event at the equity of its bar's close, as the curve draws it
            bars = liq["bar"].drop_duplicates().to_numpy(dtype=np.int64)
            texts = liquidation_texts(liq)
            fig.add_trace(go.Scatter(
                x=times[bars], y=values[bars], mode="markers", legendgroup=mode,
                name=f"{mode}: {len(liq)} liquidated position(s)",
                text=[texts[int(bar)] for bar in bars],
                marker=dict(symbol="x", size=10, color=color),
                hovertemplate="equity %{y:,.2f}<br>%{text}<extra>liquidation</extra>"))
    w = replay.window
    span = f"{w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC"
    name = w.name if "/" not in w.name else "the history's worst window"
    fig.update_layout(
        title=dict(text=f"{name} ({span}), replayed on the book at its prices", x=0.01,
                   font=dict(size=14)),
        template=TEMPLATE, font=FONT, height=360, hovermode="x unified",
        margin=dict(l=70, r=20, t=50, b=40),
        legend=LEGEND)
    fig.update_xaxes(type="date", hoverformat=TIME_FORMAT)
    fig.update_yaxes(title_text="equity", tickformat=",.0f")
    return notes.finish(fig)
