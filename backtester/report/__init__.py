"""Reports of backtests: figures, and HTML (interactive) or Markdown documents.

- :func:`run_report`: one run (metrics, equity, drawdown, liquidation risk,
  per-position PnL, liquidations);
- :class:`backtester.compare.Comparison` (``to_html``/``to_markdown``): several runs side
  by side with a verdict in words;
- :func:`sweep_report`: heatmaps of a metric over two parameters, per margin mode.

    >>> from backtester.report import run_report, sweep_report

The names load on first use, so that ``import backtester`` does not import
matplotlib (nor plotly: :mod:`.interactive` holds the HTML's figures).
"""

from importlib import import_module

_EXPORTS = {
    "metrics_table": "documents",
    "run_report": "documents",
    "sweep_report": "documents",
    "drawdown_figure": "figures",
    "equity_figure": "figures",
    "heatmap_figure": "figures",
    "margin_figure": "figures",
    "position_pnl_figure": "figures",
    "build_verdict": "verdict",
    "WHAT_LEVERAGE_CHANGES": "verdict",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
