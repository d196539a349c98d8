"""The advice report's figures: risk curves against leverage, and replayed crashes."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

COLORS = {"cross": "#1f77b4", "isolated": "#d62728"}
MARKERS = {"cross": "o", "isolated": "s"}
DASHES = {"cross": "-", "isolated": "--"}  # so that equal curves still show both
STYLES = ("-", "--", ":", "-.")


def risk_figure(risk, ruin: float = 0.5) -> Figure:
    """Probability of a liquidation (left) and of losing ``ruin`` of the account (right)
    against leverage: one curve per margin mode (and other swept option), 95% bands."""
    table = risk.table
    key = f"p_loss_{ruin * 100:g}"
    fig = Figure(figsize=(10, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    others = [c for c in table.columns[:list(table.columns).index("paths")]
              if c not in ("margin_mode", "leverage")]
    groups = table.groupby(["margin_mode", *others], sort=False)
    for k, (values, group) in enumerate(groups):
        values = values if isinstance(values, tuple) else (values,)
        mode = values[0]
        label = mode + "".join(f", {o}={v}" for o, v in zip(others, values[1:], strict=True))
        style = DASHES.get(mode, "-") if not others else STYLES[(k // 2) % len(STYLES)]
        g = group.sort_values("leverage")
        x = g["leverage"].to_numpy()
        for ax, col in zip(axes, ("p_liquidation", key), strict=True):
            y = g[col].to_numpy() * 100
            ax.plot(x, y, style, marker=MARKERS.get(mode, "o"), markerfacecolor="none",
                    color=COLORS.get(mode), label=label)
            ax.fill_between(x, g[f"{col}_low"].to_numpy() * 100,
                            g[f"{col}_high"].to_numpy() * 100, color=COLORS.get(mode),
                            alpha=0.12, linewidth=0)
    days = risk.info["days"]
    horizon = "a year" if abs(days - 365) < 1 else f"{days:g} days"
    axes[0].set_title(f"Probability of a liquidation within {horizon}")
    axes[1].set_title(f"Probability of losing {ruin:.0%} of the account")
    for ax in axes:
        ax.set_xscale("log")
        levels = sorted(table["leverage"].unique())
        ax.set_xticks(levels)
        ax.set_xticklabels([f"{v:g}x" for v in levels])
        ax.minorticks_off()
        ax.set_xlabel("leverage")
        ax.grid(alpha=0.3)
        ax.set_ylim(-2, 102)
    axes[0].set_ylabel("% of simulated paths")
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    return fig


def crash_figure(replay) -> Figure:
    """Equity of the book through a replayed crash window, one curve per margin mode, with
    its liquidations marked on the curve."""
    fig = Figure(figsize=(10, 3.2))
    ax = fig.subplots()
    for mode, result in replay.runs.items():
        equity = result.equity
        ax.plot(equity.index, equity.to_numpy(), color=COLORS.get(mode), label=mode)
        liq = result.liquidations
        if len(liq):
            at = equity.reindex(liq["timestamp"], method="ffill").to_numpy()
            ax.scatter(liq["timestamp"], at, color=COLORS.get(mode), marker="x", s=50,
                       zorder=3)
    w = replay.window
    span = f"{w.start:%Y-%m-%d %H:%M} to {w.end:%Y-%m-%d %H:%M} UTC"
    name = w.name if "/" not in w.name else "the history's worst window"
    ax.set_title(f"{name} ({span}), replayed on the book at its prices", fontsize=10)
    ax.set_ylabel("equity")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:,.0f}")
    if not np.isfinite(ax.get_ylim()).all():
        ax.set_ylim(0, 1)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
