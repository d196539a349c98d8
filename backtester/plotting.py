"""Minimal figures for the command line: equity curves with liquidation markers.

The figures themselves live in :mod:`backtester.report.figures`.
"""

from __future__ import annotations

from pathlib import Path

from .report.figures import equity_figure


def plot_equity(results: dict, path, title: str = "Equity") -> Path:
    """Overlay the equity curves of several runs, marking each liquidation; save a PNG.

    ``results`` maps a label (e.g. ``"cross"``) to a ``Result``.
    """
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    equity_figure(results, title=title).savefig(out, dpi=110)
    return out
