"""Matplotlib figures of one or several runs, and of a sweep summary.

Every function takes ``results``, a mapping label -> ``Result`` (one entry for
a single run), and returns a ``matplotlib.figure.Figure`` built without pyplot:
no global state, no backend switch, nothing to close. ``fig.savefig(path)``
writes it; a notebook shows it with ``display(fig)``.
"""

from __future__ import annotations

import io
from collections.abc import Mapping

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .. import metrics
from ..engine.enums import Mode

# metrics for which a lower value is the better one (their heatmaps use a reversed colour map)
LOWER_IS_BETTER = frozenset({
    "volatility", "max_drawdown_days", "fees_paid", "funding_paid", "liquidations",
    "liquidated_positions", "liquidation_loss", "liquidation_fees", "liquidation_fees_waived",
    "bankruptcy_shortfall", "worst_margin_ratio", "rejected_orders", "turnover",
})


def _times(index: pd.DatetimeIndex) -> np.ndarray:
    """UTC bar times as naive datetime64 (fast for matplotlib; axes are labelled UTC)."""
    if getattr(index, "tz", None) is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    return np.asarray(index, dtype="datetime64[ns]")


# tab20's ten strong colours (blue and red first: cross and isolated), then its ten light ones
# in the same order; each ten runs switch the line style, so (colour, style) differs between
# any two of the first 40 runs
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#7f7f7f", "#bcbd22", "#17becf",
           "#aec7e8", "#ff9896", "#98df8a", "#ffbb78", "#c5b0d5", "#c49c94", "#f7b6d2",
           "#c7c7c7", "#dbdb8d", "#9edae5")
LINESTYLES = ("-", "--", ":", "-.")


def _styles(results: Mapping) -> dict[str, dict]:
    """Each run's line colour and style (``ax.plot(..., **style)``), in run order."""
    return {label: {"color": PALETTE[k % len(PALETTE)],
                    "linestyle": LINESTYLES[(k // 10) % len(LINESTYLES)]}
            for k, label in enumerate(results)}


def same_curves(curves: Mapping[str, np.ndarray], atol: float = 0.0,
                rtol: float = 1e-12) -> list[list[str]]:
    """The labels of ``curves`` (label -> values) grouped by identical curve, in order:
    curves that would draw on top of each other are drawn once, labelled "a = b"."""
    groups: list[list[str]] = []
    for label, values in curves.items():
        values = np.asarray(values, dtype=float)
        for group in groups:
            first = np.asarray(curves[group[0]], dtype=float)
            if first.shape == values.shape and np.allclose(first, values, rtol=rtol, atol=atol,
                                                           equal_nan=True):
                group.append(label)
                break
        else:
            groups.append([label])
    return groups


def _joined(labels: list[str]) -> str:
    return " = ".join(labels)


def _finish(fig: Figure, axes) -> Figure:
    """Grid and compact date labels (no rotation needed) on time axes."""
    for ax in axes:
        ax.grid(alpha=0.3)
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    return fig


def equity_figure(results: Mapping, title: str = "Equity") -> Figure:
    """Equity curves overlaid, each liquidation event marked on its curve (at the equity of
    the bar's close, where the curve is drawn).

    Example:
        >>> from backtester import load_market, run
        >>> from strategies import hedged_pair
        >>> m = load_market()
        >>> r = run(m, hedged_pair(m), target_kind="equity", leverage=10)
        >>> equity_figure({"cross": r}).savefig("/tmp/equity.png")
    """
    fig = Figure(figsize=(10, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    plot_equity(ax, results)
    ax.set_title(title)
    return _finish(fig, [ax])


def plot_equity(ax, results: Mapping) -> None:
    """Draw ``equity_figure``'s curves and liquidation markers on ``ax``. Runs whose equity
    is the same at every bar (within half a cent) share one line, labelled "a = b"."""
    styles = _styles(results)
    for group in _equity_groups(results):
        first = results[group[0]]
        equity = first.equity
        ax.plot(_times(equity.index), equity.to_numpy(), lw=1.1, **styles[group[0]],
                label=_joined(group))
        markers: dict[tuple, list[str]] = {}  # runs liquidated at the same bars share markers
        for label in group:
            liq = results[label].liquidations
            if len(liq):
                bars = tuple(liq.drop_duplicates("event")["bar"].to_numpy(dtype=np.int64))
                markers.setdefault((bars, len(liq)), []).append(label)
        for (bars, count), labels in markers.items():
            at = np.asarray(bars, dtype=np.int64)
            ax.scatter(_times(equity.index[at]), equity.to_numpy()[at], marker="v", s=34,
                       color=styles[labels[0]]["color"], edgecolor="black", linewidth=0.5,
                       zorder=3, label=f"{_joined(labels)}: {count} liquidated position(s)")
    ax.set_ylabel("equity (quote)")
    ax.set_xlabel("UTC")
    ax.legend(loc="best", fontsize=8)


def _equity_groups(results: Mapping) -> list[list[str]]:
    """Runs grouped by equal equity curves (same bars, within half a cent at each)."""
    curves = {label: r.equity for label, r in results.items()}
    groups = same_curves({label: c.to_numpy() for label, c in curves.items()}, atol=0.005,
                         rtol=0.0)
    # the same values over different bars are different curves
    out = []
    for group in groups:
        parts: list[list[str]] = []
        for label in group:
            for part in parts:
                if curves[part[0]].index.equals(curves[label].index):
                    part.append(label)
                    break
            else:
                parts.append([label])
        out += parts
    return out


def _curve(result) -> pd.Series:
    """Equity with the initial balance in front, as the metrics measure drawdowns."""
    equity = result.equity
    return pd.concat([pd.Series([float(result.config.initial_balance)]),
                      pd.Series(equity.to_numpy())], ignore_index=True)


def drawdown_figure(results: Mapping, title: str = "Drawdown") -> Figure:
    """Each run's fall from its running peak (the initial balance counts as a peak), in %."""
    fig = Figure(figsize=(10, 3.2), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    plot_drawdown(ax, results)
    ax.set_title(title)
    return _finish(fig, [ax])


def plot_drawdown(ax, results: Mapping) -> None:
    """Draw ``drawdown_figure``'s curves on ``ax`` (runs of equal equity share a line)."""
    styles = _styles(results)
    for group in _equity_groups(results):
        result = results[group[0]]
        style = styles[group[0]]
        dd = metrics.drawdown(_curve(result)).to_numpy()[1:] * 100
        ax.plot(_times(result.equity.index), dd, lw=1.0, **style,
                label=f"{_joined(group)} (max {dd.min() if len(dd) else 0:.1f}%)")
        ax.fill_between(_times(result.equity.index), dd, 0, color=style["color"], alpha=0.08)
    ax.set_ylabel("drawdown (%)")
    ax.set_xlabel("UTC")
    ax.legend(loc="lower left", fontsize=8)


def run_figure(result, title: str | None = None) -> Figure:
    """One run: its equity with its liquidations marked, and its drawdown below
    (``Result.plot``)."""
    fig = Figure(figsize=(10, 5.6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    runs = {result.label: result}
    plot_equity(top, runs)
    plot_drawdown(bottom, runs)
    top.set_xlabel("")
    if title is None:
        s, ts = result.summary(), result.market.timestamps
        title = (f"{result.venue.name}, {result.label}, {ts[0]:%Y-%m-%d} to {ts[-1]:%Y-%m-%d}: "
                 f"final equity {s['final_equity']:,.2f} ({s['total_return']:+.2%}), "
                 f"{s['liquidations']} liquidation(s)")
    top.set_title(title, fontsize=9)
    return _finish(fig, [top, bottom])


def distance_series(result) -> pd.Series | None:
    """Per-bar distance to liquidation of a run (None when positions were not recorded)."""
    if result.positions is None or result.liquidation_prices is None:
        return None
    marks = result.market.frame("mark_close").ffill()
    return metrics.distance_to_liquidation(result.positions, result.liquidation_prices, marks)


def has_cross(result) -> bool:
    """Whether a run has a cross-margined column (and so a cross margin ratio)."""
    return bool((np.asarray(result.margin_mode) == Mode.CROSS).any())


def margin_figure(results: Mapping, title: str = "Liquidation risk") -> Figure:
    """Top: the cross margin ratio (liquidation at 100%). Bottom: distance to liquidation.

    The margin ratio exists only for cross positions; the distance (how far the
    nearest position's mark is from its liquidation price) covers both modes. When no
    run has a cross position the figure is the distance alone.
    """
    styles = _styles(results)
    cross = {label: r for label, r in results.items() if has_cross(r)}
    if cross:
        fig = Figure(figsize=(10, 5.6), dpi=100, layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True)
        _plot_margin_ratio(top, cross, styles)
        top.set_title(f"{title}: cross margin ratio (maintenance / margin balance; "
                      "liquidation at 100%)")
        axes = [top, bottom]
        heading = "price move against the nearest open position that would liquidate it"
    else:
        fig = Figure(figsize=(10, 3.4), dpi=100, layout="constrained")
        bottom = fig.add_subplot()
        axes = [bottom]
        heading = (f"{title}: price move against the nearest open position that would "
                   "liquidate it")
    _plot_distance(bottom, results, styles)
    bottom.set_xlabel("UTC")
    bottom.set_title(heading)
    return _finish(fig, axes)


def _plot_margin_ratio(ax, results: Mapping, styles: Mapping) -> None:
    curves = {}
    for label, result in results.items():
        # 0 means "no cross position": leave a gap rather than a plunge to zero
        curves[label] = result.account["margin_ratio"].replace(
            [np.inf, 0.0], np.nan).to_numpy() * 100
    for group in same_curves(curves):
        result = results[group[0]]
        ax.plot(_times(result.equity.index), curves[group[0]], lw=0.9, **styles[group[0]],
                label=_joined(group))
    if ax.get_ylim()[1] >= 50:
        ax.axhline(100, color="black", lw=0.8, ls="--", label="liquidation (100%)")
    ax.set_ylabel("cross margin ratio (%)")
    ax.legend(loc="upper left", fontsize=8)


def _plot_distance(ax, results: Mapping, styles: Mapping) -> None:
    curves = {}
    for label, result in results.items():
        dist = distance_series(result)
        if dist is not None and dist.notna().any():
            curves[label] = dist
    groups = same_curves({label: d.to_numpy() for label, d in curves.items()})
    for group in groups:
        dist = curves[group[0]]
        ax.plot(_times(dist.index), dist.to_numpy() * 100, lw=0.9, **styles[group[0]],
                label=f"{_joined(group)} (closest {dist.min():.1%})")
    ax.set_ylabel("distance to liquidation (%)")
    if groups:
        ax.legend(loc="upper left", fontsize=8)


def position_pnl_figure(results: Mapping, title: str = "PnL per position") -> Figure:
    """One panel per run: each symbol's cumulative PnL (net of fees and funding), liquidations
    marked where they happened."""
    n = len(results)
    fig = Figure(figsize=(10, 2.8 * n + 0.6), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True, sharey=True, squeeze=False)[:, 0])
    for ax, (label, result) in zip(axes, results.items(), strict=True):
        if result.positions is None:
            ax.set_title(f"{label}: positions were not recorded")
            continue
        pnl = metrics.position_pnl(result)
        times = _times(pnl.index)
        for k, symbol in enumerate(pnl.columns):
            (line,) = ax.plot(times, pnl[symbol].to_numpy(), lw=1.0, color=f"C{k}",
                              label=symbol)
            liq = result.liquidations
            liq = liq[liq["symbol"] == symbol]
            if len(liq):
                ax.scatter(times[liq["bar"].to_numpy()], pnl[symbol].to_numpy()[liq["bar"]],
                           marker="x", s=30, color=line.get_color(), zorder=3,
                           label=f"{symbol} liquidated ({len(liq)})")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_title(f"{label}", fontsize=10)
        ax.set_ylabel("PnL (quote)")
        ax.legend(loc="upper left", fontsize=8)
    axes[-1].set_xlabel("UTC")
    fig.suptitle(title)
    return _finish(fig, list(axes))


def heatmap_figure(summary: pd.DataFrame, x: str, y: str, metric: str,
                   group: str = "margin_mode") -> Figure:
    """A heatmap of ``metric`` over parameters ``x`` (columns) and ``y`` (rows), one panel
    per value of ``group``, on one colour scale. Cells with several runs show their mean."""
    groups = list(pd.unique(summary[group])) if group in summary else [None]
    fig = Figure(figsize=(min(4.8 * len(groups), 15), 3.9), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(groups), squeeze=False)[0])
    values = pd.to_numeric(summary[metric], errors="coerce")
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    cmap = "RdYlGn_r" if metric in LOWER_IS_BETTER else "RdYlGn"
    # a metric with both signs (a return) gets its neutral colour at zero
    norm = TwoSlopeNorm(0.0, lo, hi) if lo < 0 < hi else Normalize(lo, hi)
    kind = metrics.METRICS.get(metric, ("", "number"))[1]
    image = None
    for ax, value in zip(axes, groups, strict=True):
        part = summary if value is None else summary[summary[group] == value]
        grid = part.assign(**{metric: pd.to_numeric(part[metric], errors="coerce")}).pivot_table(
            index=y, columns=x, values=metric, aggfunc="mean", dropna=False)
        image = ax.imshow(grid.to_numpy(dtype=float), cmap=cmap, norm=norm, aspect="auto",
                          origin="lower")
        ax.set_xticks(range(grid.shape[1]), [f"{v:g}" if isinstance(v, float) else str(v)
                                            for v in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{v:g}" if isinstance(v, float) else str(v)
                                            for v in grid.index])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{value}" if value is not None else metric, fontsize=10)
        scale = max(abs(lo), abs(hi))
        for (r, c), v in np.ndenumerate(grid.to_numpy(dtype=float)):
            text = "n/a" if not np.isfinite(v) else _cell(v, scale, kind)
            ax.text(c, r, text, ha="center", va="center", fontsize=8, color="black")
    if image is not None:
        # the bar in the cells' unit: a percentage metric in % (its values are fractions)
        bar = fig.colorbar(image, ax=list(axes), shrink=0.9,
                           label=f"{metric} (%)" if kind == "pct" else metric)
        # ticks over the whole range (a two-slope norm's own leave its short side bare)
        ticks = [t for t in MaxNLocator(6, integer=kind == "int").tick_values(lo, hi)
                 if lo <= t <= hi]
        if len(ticks) > 1:
            bar.set_ticks(ticks)
        if kind == "pct":
            step = (ticks[1] - ticks[0]) * 100 if len(ticks) > 1 else 1.0
            bar.formatter = PercentFormatter(xmax=1.0, decimals=max(
                0, -int(np.floor(np.log10(step)))))
            bar.update_ticks()
    fig.suptitle(f"{metric} by {y} and {x}" + (f", per {group}" if groups != [None] else ""))
    return fig


def _cell(v: float, scale: float, kind: str) -> str:
    if kind == "pct":
        return f"{v:.1%}"
    if kind == "int" and v == round(v):
        return f"{v:,.0f}"
    if scale >= 1000:
        return f"{v:,.0f}"
    if scale >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes (what reports embed)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()
