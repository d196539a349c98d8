"""``compare()``: one strategy under cross and isolated margin (and several leverages or
venues), with a side-by-side table, figures, the liquidations and a verdict in words."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from pathlib import Path

import pandas as pd

from . import metrics
from .backtest import run
from .config import RunConfig
from .data.market import Market
from .prepare import split_plan
from .report.render import Heading, Table, Text, to_html, write
from .report.tables import console_table, format_metrics, wrap
from .report.verdict import WHAT_LEVERAGE_CHANGES, build_verdict
from .strategy import Callback, Plan, StrategyDef, as_strategy_def, with_run_leverage
from .venues import load_venue

# the figure modules (matplotlib, ~0.4 s to import) load only when a figure is drawn


class Comparison:
    """Several runs of one strategy, compared.

    - ``results``: label -> ``Result``, in run order;
    - ``table``: every metric (rows, keys as ``metrics.METRICS``) of every run (columns);
    - ``verdict``: a few sentences built from the numbers: which run ended higher,
      which positions each lost to liquidation, and why;
    - ``liquidations``: every liquidated position of every run, with a ``run`` column;
    - ``positions``: per-position statistics, indexed by (run, symbol);
    - ``figures()``, ``to_html(path)``, ``to_markdown(path)``.

    Build one with :func:`compare`, or from Results you already have:
    ``Comparison({"cross": r1, "isolated": r2})``.
    """

    def __init__(self, results: Mapping, title: str | None = None):
        if not results:
            raise ValueError("a comparison needs at least one run")
        self.results = dict(results)
        symbols = next(iter(self.results.values())).market.symbols
        self.title = title or f"Cross vs isolated margin: {', '.join(symbols)}"

    @cached_property
    def table(self) -> pd.DataFrame:
        return pd.DataFrame({label: metrics.run_metrics(r) for label, r in self.results.items()}
                            ).rename_axis("metric")

    @cached_property
    def verdict(self) -> str:
        return build_verdict(self.results)

    @cached_property
    def liquidations(self) -> pd.DataFrame:
        frames = [r.liquidations.assign(run=label) for label, r in self.results.items()]
        frame = pd.concat(frames, ignore_index=True)
        return frame[["run", *[c for c in frame.columns if c != "run"]]]

    @cached_property
    def positions(self) -> pd.DataFrame:
        return pd.concat({label: metrics.position_stats(r) for label, r in self.results.items()},
                         names=["run", "symbol"])

    def formatted_table(self) -> pd.DataFrame:
        """``table`` as display text (money, %, ratios), rows named in words."""
        return format_metrics(self.table)

    def figures(self) -> dict:
        """The report's figures: ``equity``, ``drawdown``, ``margin``, ``positions``."""
        from .report import figures

        return {
            "equity": figures.equity_figure(self.results, title=self.title),
            "drawdown": figures.drawdown_figure(self.results),
            "margin": figures.margin_figure(self.results),
            "positions": figures.position_pnl_figure(self.results),
        }

    @cached_property
    def _blocks(self) -> list:
        """The report's blocks, drawn once for both the HTML and the Markdown version."""
        from .report.documents import _setup, evidence_blocks

        return [Text(_setup(self.results), "note"), Heading("Verdict"),
                Text(self.verdict, "verdict"), Heading("What leverage changes"),
                Text(WHAT_LEVERAGE_CHANGES, "note"), Heading("Metrics"),
                Table(self.formatted_table(), index=False), *evidence_blocks(self.results)]

    def to_html(self, path) -> Path:
        """Write the report as HTML, its figures interactive (plotly.js written beside it as
        ``plotly.min.js``, shared by the folder's reports; the page needs no network)."""
        return write(self.title, self._blocks, Path(path).with_suffix(".html")
                     if Path(path).suffix.lower() in (".md", ".markdown") else path)

    def to_markdown(self, path) -> Path:
        """Write the report as Markdown, its figures as PNGs in ``<name>_files/`` beside it."""
        path = Path(path)
        return write(self.title, self._blocks,
                     path if path.suffix.lower() in (".md", ".markdown") else path.with_suffix(
                         ".md"))

    def to_text(self, width: int = 100) -> str:
        """The title, the table and the verdict as text no wider than ``width`` columns (a
        table too wide for it in blocks of runs), for a terminal."""
        return (f"{wrap(self.title, width)}\n\n{console_table(self.formatted_table(), width)}"
                f"\n\n{wrap(self.verdict, width, keep=tuple(self.results))}")

    def __repr__(self) -> str:
        return self.to_text()

    def _repr_html_(self) -> str:
        body = to_html(self.title, [Text(self.verdict, "verdict"),
                                    Table(self.formatted_table(), index=False)])
        return body[body.index("<body>") + 6: body.index("</body>")]


def _many(value) -> list:
    """A value or a sequence of values as a list (a mapping or a string is one value)."""
    if isinstance(value, (str, Mapping)) or not isinstance(value, Sequence):
        return [value]
    return list(value)


def _strategy_of(targets) -> StrategyDef | None:
    """The strategy ``compare`` builds at each leverage, when ``targets`` is one (a
    ``StrategyDef`` or a plain function ``f(market, **params)``); None for orders."""
    if isinstance(targets, StrategyDef):
        return targets
    if isinstance(targets, Callback | Plan) or not callable(targets):
        return None
    return as_strategy_def(targets, getattr(targets, "__name__", "strategy"),
                           "compare's strategy")


def compare(
    market: Market,
    targets,
    *,
    margin_modes: Sequence[str] = ("cross", "isolated"),
    leverage=None,
    venue=None,
    config: RunConfig | None = None,
    title: str | None = None,
    params: Mapping | None = None,
    **options,
) -> Comparison:
    """Run the same strategy under each margin mode (and leverage, and venue) and compare.

    - ``targets``: what :func:`backtester.run` takes (targets, a ``Callback``, a
      ``Plan``), or a strategy to build at each leverage: a ``StrategyDef`` or a function
      ``f(market, **params)`` returning one of those. Built with ``params``; a strategy
      with a parameter named ``leverage`` that ``params`` leaves out is given each run's
      leverage (so a strategy that sizes by its leverage is sized for the run's).
    - ``margin_modes``: the modes to run, ``"cross"`` and/or ``"isolated"``.
    - ``leverage``: one leverage or several (``[5, 10, 20]``): every mode runs at
      each. Default: the config's.
    - ``venue``: one venue or several (names, TOML paths or ``Venue``). Default:
      the config's. A venue without isolated margin (spot margin: ``kraken_spot``)
      runs its cross mode only.
    - ``config`` and ``options``: everything else, as for :func:`backtester.run`
      (``target_kind``, ``sizing``, ``initial_balance``, ``path``...). With equity
      fractions at fixed exposure (``sizing="exposure"``) cross runs at different
      leverages often end alike: leverage there sets only the margin an order needs;
      ``sizing="margin"`` scales the exposure with the leverage (the report's "What
      leverage changes" says more).

    Labels are the mode, plus the leverage and venue when several are compared
    (``"isolated 20x"``).

    Example:
        >>> from backtester import compare, load_market
        >>> from strategies import hedged_pair
        >>> market = load_market()
        >>> comparison = compare(market, hedged_pair(market, exposure=1.0),
        ...                      target_kind="equity", leverage=10)
        >>> list(comparison.results)
        ['cross', 'isolated']
        >>> comparison.to_html("/tmp/compare.html").name
        'compare.html'
    """
    base = (config or RunConfig()).replace(**options)
    strategy = _strategy_of(targets)
    if params is not None and strategy is None:
        raise ValueError("params= are a strategy's parameters: give the strategy (a "
                         "StrategyDef or a function market, **params -> targets) as targets")
    modes = _many(margin_modes)
    for mode in modes:
        if mode not in ("cross", "isolated"):
            raise ValueError(f"margin_modes holds {mode!r}; each must be 'cross' or 'isolated'")
    leverages = _many(base.leverage if leverage is None else leverage)
    venues = _many(base.venue if venue is None else venue)
    for name, values in (("margin_modes", modes), ("leverage", leverages), ("venue", venues)):
        if not values:
            raise ValueError(f"{name}= is empty: give at least one")
    built = []  # (orders, plan options) at each leverage
    for lev in leverages:
        made = targets if strategy is None else strategy.plan(
            market, **with_run_leverage(strategy, params or {}, lev))
        built.append(split_plan(made))
    for lev, (_, plan_options) in zip(leverages, built, strict=True):
        # every run's options (as run() merges them), before the first one runs
        base.replace(**{**plan_options, "leverage": lev}).check()
    for v in venues:
        base.replace(venue=v).check()
    results = {}
    for v in venues:
        venue_name = v if isinstance(v, str) else getattr(v, "name", str(v))
        modes_there = load_venue(v, **dict(base.venue_overrides)).margin_model.margin_modes
        cross_only = "isolated" not in modes_there
        for lev, (orders, plan_options) in zip(leverages, built, strict=True):
            for mode in modes:
                if cross_only and mode == "isolated" and len(venues) > 1:
                    continue  # spot margin has no isolated mode; the other venues show it
                label = mode
                if len(leverages) > 1:
                    label += f" {lev:g}x" if not isinstance(lev, Mapping) else f" {lev}"
                if len(venues) > 1:
                    label += f" {Path(venue_name).stem}"
                results[label] = run(market, Plan(orders, plan_options), base,
                                     margin_mode=mode, leverage=lev, venue=v)
    return Comparison(results, title=title)
