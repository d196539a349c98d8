"""``prepare_run``: a run's configuration, checked and turned into the kernel's inputs."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from ..config import RunConfig, choice
from ..data.market import Market, is_absent
from ..data.validate import DataWarning
from ..engine import enums
from ..engine.driver import CallbackInputs, KernelInputs, fill_rows
from ..strategy import Callback, Plan
from ..venues import Venue, load_venue
from .columns import Layout, column_layout, column_options
from .common import c_float, market_view, option_key
from .suspicious import suspicious_data
from .targets import target_arrays
from .versions import venue_inputs


@dataclass(frozen=True)
class PreparedRun:
    """A run ready for the kernel, and what its ``Result`` needs to describe it.

    - ``market``: the run's columns (hedge-mode legs ``SYM.long``/``SYM.short`` and
      collateral coins are columns of their own);
    - ``inputs``: the kernel's inputs (``engine.driver.execute(inputs)`` runs it);
    - ``margin_mode`` / ``leverage``: per column, at the start;
    - ``specs``: each perpetual's venue spec versions in force during the run;
    - ``callback``: the strategy's callback, if it is one (for its error messages);
    - ``warnings``: legal but suspicious data the run went ahead with (``suspicious``), one
      line each with the symbol, the first time and the count; the Result keeps them.
    """

    market: Market
    config: RunConfig
    venue: Venue
    inputs: KernelInputs
    margin_mode: np.ndarray
    leverage: np.ndarray
    specs: dict
    callback: Callback | None = None
    warnings: tuple[str, ...] = ()


@dataclass
class PrepareCache:
    """What the runs of one sweep share, built once: venues, the market's run columns, the
    venue's rules and the market's bars as the kernel takes them, each configuration's
    setup. (What depends on the venue and plain values alone, such as the arrays of the
    rule versions and the columns' margin modes and leverage, is kept on the venue
    itself, for every run: ``Venue.memoised``.)

    Keys hold the market by identity (the cache keeps it alive) and the options by their
    canonical JSON text.
    """

    venues: dict = field(default_factory=dict)
    layouts: dict = field(default_factory=dict)
    venue_inputs: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)
    warnings: dict = field(default_factory=dict)
    checked: dict = field(default_factory=dict)  # id -> a RunConfig checked already
    fill_counts: dict = field(default_factory=dict)
    setups: dict = field(default_factory=dict)  # (config, market) ids -> _Setup
    # market id -> (market, largest, least) of its funding rates (``venue_inputs``' pass)
    funding_extremes: dict = field(default_factory=dict)

    def fill_rows(self, has_target: np.ndarray, n: int) -> int:
        """``driver.fill_rows``, counted once per target array (runs share them)."""
        key = (id(has_target), n)
        found = self.fill_counts.get(key)
        if found is None or found[0] is not has_target:
            if len(self.fill_counts) >= 256:
                self.fill_counts.clear()
            found = self.fill_counts[key] = (has_target, fill_rows(has_target, n))
        return found[1]

    def venue(self, config: RunConfig) -> Venue:
        if isinstance(config.venue, Venue) and not config.venue_overrides \
                and not config.stand_in:
            return config.venue
        venue = config.venue
        key = (id(venue) if isinstance(venue, Venue) else option_key(venue),
               option_key(config.venue_overrides), option_key(config.stand_in))
        if key not in self.venues:
            self.venues[key] = load_venue(config.venue, stand_in=dict(config.stand_in),
                                          **dict(config.venue_overrides))
        return self.venues[key]


def split_plan(strategy) -> tuple[object, dict]:
    """``(orders, run options)`` of what a strategy returned: a ``Plan``'s orders and the
    options it assumes, or the targets / ``Callback`` themselves and no options."""
    if isinstance(strategy, Plan):
        return strategy.orders, dict(strategy.options)
    return strategy, {}


def prepare_run(market: Market, orders, config: RunConfig,
                cache: PrepareCache | None = None) -> PreparedRun:
    """Validate a run and build its kernel inputs (see the module docstring).

    ``orders``: target positions (a (T, N) array or a DataFrame, in ``config.target_kind``
    units, NaN = no order) or a ``strategy.Callback``. Every bad option is a clear
    ``ValueError`` naming it, raised before anything is compiled or run.
    """
    if not isinstance(market, Market):
        raise TypeError(f"market must be a backtester Market, got {type(market).__name__}")
    if isinstance(orders, Plan):
        raise TypeError("prepare_run takes a Plan's orders; merge its options into the "
                        "config first (prepare.split_plan)")
    cache = cache if cache is not None else PrepareCache()
    callback = orders if isinstance(orders, Callback) else None
    compiled = None
    if callback is not None:  # the author's mistakes first, before any data work
        compiled = callback.compiled()
        params, memory = callback.param_values, callback.memory_array()
    if cache.checked.get(id(config)) is not config:
        config.check()
        if len(cache.checked) >= 4096:
            cache.checked.clear()
        cache.checked[id(config)] = config  # (kept alive: its id stays its own)
    if market.n_bars == 0 or market.n_symbols == 0:
        empty = "no bars" if market.n_bars == 0 else "no symbols"
        raise ValueError(f"the market has {empty} ({', '.join(market.symbols) or 'no symbols'}"
                         f", {market.n_bars} bars): nothing to backtest. Give a market whose "
                         "window holds bars, e.g. load_market(start=..., end=...) inside the data")
    callback_inputs = None
    if callback is not None:  # the view is of the run's columns (hedge legs, collateral)
        # (its errors before those of the columns' options, as the columns are known)
        run_market = column_layout(market, config, cache.venue(config), cache).market
        series = callback.series_array(run_market.n_bars, run_market.n_symbols)
        callback_inputs = CallbackInputs(
            function=compiled, params=c_float(params, 1, "params"),
            series=None if series is None else c_float(series, 3, "series"),
            memory=c_float(memory, 1, "memory"),
            high=market_view(run_market, "high"), low=market_view(run_market, "low"),
            volume=_view_volume(run_market))
    setup = _setup(market, config, cache)
    run_market = setup.layout.market
    if callback is not None:
        targets = np.empty((0, run_market.n_symbols))
        has_target = np.zeros(run_market.n_bars, dtype=np.bool_)
    else:
        targets, has_target = target_arrays(orders, setup.layout, cache)
    trading = enums.Trading(targets, has_target, np.int64(setup.target_kind),
                            np.int64(setup.fill_at), setup.slippage, bool(config.reduce_to_fit))
    inputs = KernelInputs(  # (mode, sym and holdings shared: execute copies what it writes)
        bars=setup.bars, trading=trading, path=setup.path, versions=setup.versions,
        mode=setup.mode, sym=setup.sym, initial_balance=setup.balance,
        holdings=setup.holdings,
        record_positions=bool(config.record_positions or config.record_margins),
        fill_rows=cache.fill_rows(has_target, run_market.n_symbols),
        funding_rows=setup.n_funding, callback=callback_inputs,
        record_margins=bool(config.record_margins))
    return PreparedRun(market=run_market, config=config, venue=setup.venue, inputs=inputs,
                       margin_mode=setup.mode.copy(), leverage=setup.leverage.copy(),
                       specs=setup.specs, callback=callback, warnings=setup.warnings)


class _Setup(NamedTuple):
    """What a run's inputs take from its configuration and market alone (not its orders)."""

    venue: Venue
    layout: Layout
    mode: np.ndarray
    leverage: np.ndarray
    target_kind: int
    fill_at: int
    path: int
    balance: float
    slippage: float
    versions: enums.Versions
    bars: enums.Bars
    n_funding: int
    specs: dict
    warnings: tuple[str, ...]
    sym: np.ndarray
    holdings: np.ndarray


def _setup(market: Market, config: RunConfig, cache: PrepareCache) -> _Setup:
    """The run's ``_Setup``: once per configuration object and market (a sweep's runs that
    differ only in strategy parameters share one); the caller copies what the kernel
    writes."""
    key = (id(config), id(market))
    found = cache.setups.get(key)
    if found is not None and found[0] is config and found[1] is market:
        return found[2]
    target_kind = choice("target_kind", config.target_kind, enums.TARGET_KIND_NAMES)
    if config.sizing == "margin":  # (check() allows it with equity fractions only)
        target_kind = enums.TargetKind.EQUITY_MARGIN
    fill_at = choice("fill_at", config.fill_at, enums.FILL_AT_NAMES)
    path = choice("path", config.path, enums.PATH_NAMES)
    spot_fee = float(config.spot_fee)
    venue = cache.venue(config)
    layout = column_layout(market, config, venue, cache)
    mode, leverage = column_options(layout, config, venue)
    versions, bars, n_funding, specs = venue_inputs(layout, venue, spot_fee, cache,
                                                    config.order_filters)
    found = _warnings(market, venue, layout.spot, cache)
    sym = versions.sym[0].copy()
    sym[enums.Sym.LEVERAGE] = leverage
    symbols = layout.market.symbols
    for symbol in layout.hedge:
        long_leg, short_leg = symbols.index(f"{symbol}.long"), symbols.index(f"{symbol}.short")
        sym[enums.Sym.LEG, long_leg], sym[enums.Sym.LEG, short_leg] = 1.0, -1.0
        sym[enums.Sym.PARTNER, long_leg], sym[enums.Sym.PARTNER, short_leg] = (
            short_leg, long_leg)
    holdings = np.array([layout.amounts.get(s, 0.0) for s in symbols], dtype=np.float64)
    setup = _Setup(venue, layout, mode, leverage, int(target_kind), int(fill_at), int(path),
                   float(config.initial_balance), float(config.slippage), versions, bars,
                   n_funding, specs, found, np.ascontiguousarray(sym), holdings)
    if len(cache.setups) >= 4096:
        cache.setups.clear()
    # (the configuration and market kept alive with it: their ids stay their own)
    cache.setups[key] = (config, market, setup)
    return setup


def _warnings(market: Market, venue: Venue, spot, cache: PrepareCache) -> tuple[str, ...]:
    """The run's data warnings, found once per market and venue (a sweep's runs share them)
    and issued with ``warnings.warn`` then, so that a notebook shows each once."""
    key = (id(market), id(venue), spot)
    if key not in cache.warnings:
        known = cache.funding_extremes.get(id(market))
        found = suspicious_data(market, venue, spot, known[1:] if known is not None
                                and known[0] is market else None)
        for text in found:
            warnings.warn(text, DataWarning, stacklevel=4)  # at the caller of run()
        cache.warnings[key] = (market, venue, found)
    return cache.warnings[key][-1]


def _view_volume(market: Market) -> np.ndarray:
    """The volume a callback's view shows: the market's, or zeros where it has none (np.zeros:
    pages the system maps only when written, so they cost no memory)."""
    if is_absent(market.volume):
        value = float(market.volume.flat[0]) if market.volume.size else 0.0
        return (np.zeros(market.volume.shape) if value == 0.0
                else np.full(market.volume.shape, value))
    return market_view(market, "volume")
