"""The one path from a run's configuration to the kernel's inputs (DESIGN.md §7, "One path").

``prepare_run(market, orders, config)`` validates a run's options against the market
and the venue and builds everything the kernel needs (``engine.driver.KernelInputs``):
the run's columns (a hedge-mode symbol's two legs, collateral coins), its margin modes
and leverages, the venue's rule versions in force over the market's bars, and the
strategy's targets or compiled callback. ``run()`` calls it once; every sweep backend
calls it for each run, with a ``PrepareCache`` so that what runs share (the venue,
the rule versions, the market's columns) is built once. A sweep therefore runs
exactly what ``run()`` runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .config import RunConfig, choice, per_symbol
from .data.market import Market
from .engine import enums
from .engine.driver import (
    CallbackInputs,
    KernelInputs,
    bar_hours,
    fill_rows,
    rows_with_values,
)
from .strategy import Callback, Plan
from .venues import Venue, load_venue
from .venues.registry import models_where
from .venues.spec import normalise_symbol


@dataclass(frozen=True)
class PreparedRun:
    """A run ready for the kernel, and what its ``Result`` needs to describe it.

    - ``market``: the run's columns (hedge-mode legs ``SYM.long``/``SYM.short`` and
      collateral coins are columns of their own);
    - ``inputs``: the kernel's inputs (``engine.driver.execute(inputs)`` runs it);
    - ``margin_mode`` / ``leverage``: per column, at the start;
    - ``specs``: each perpetual's venue spec versions in force during the run;
    - ``callback``: the strategy's callback, if it is one (for its error messages).
    """

    market: Market
    config: RunConfig
    venue: Venue
    inputs: KernelInputs
    margin_mode: np.ndarray
    leverage: np.ndarray
    specs: dict
    callback: Callback | None = None


@dataclass(frozen=True)
class Layout:
    """The run's columns: the market as the kernel sees it, and what each column is."""

    market: Market
    names: tuple[str, ...]  # the venue's symbol of each column (a leg: its symbol)
    spot: frozenset[str]  # spot holdings (``instruments``)
    hedge: tuple[str, ...]  # symbols in hedge mode (each now two leg columns)
    held: Mapping[str, str]  # collateral currency -> the market column that prices it
    amounts: Mapping[str, float]  # collateral currency -> coins held


@dataclass
class PrepareCache:
    """What the runs of one sweep share, built once: venues, the market's run columns, the
    venue's rule versions and bars over them, margin-mode and leverage arrays.

    Keys hold the market by identity (the cache keeps it alive) and the options by their
    canonical JSON text.
    """

    venues: dict = field(default_factory=dict)
    layouts: dict = field(default_factory=dict)
    venue_inputs: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)
    targets: dict = field(default_factory=dict)

    def venue(self, config: RunConfig) -> Venue:
        if isinstance(config.venue, Venue) and not config.venue_overrides:
            return config.venue
        key = (_key(config.venue) if not isinstance(config.venue, Venue) else id(config.venue),
               _key(config.venue_overrides))
        if key not in self.venues:
            self.venues[key] = load_venue(config.venue, **dict(config.venue_overrides))
        return self.venues[key]


def _key(value):
    """A hashable, canonical form of an option value (mappings sorted), for cache keys."""
    if isinstance(value, str | int | float | bool | None):
        return value
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _key(v)) for k, v in value.items())) if value else ()
    return json.dumps(value, sort_keys=True, default=str)


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
    target_kind = choice("target_kind", config.target_kind, enums.TARGET_KIND_NAMES)
    fill_at = choice("fill_at", config.fill_at, enums.FILL_AT_NAMES)
    path = choice("path", config.path, enums.PATH_NAMES)
    balance = _amount("initial_balance", config.initial_balance)
    slippage = _amount("slippage", config.slippage, low=0.0, high=0.5,
                       what="a fraction of the price in [0, 0.5)")
    spot_fee = _amount("spot_fee", config.spot_fee, low=0.0, high=0.1,
                       what="a fee rate in [0, 0.1)")
    venue = cache.venue(config)
    layout = _layout(market, config, venue, cache)
    run_market = layout.market
    callback_inputs = None
    if callback is not None:  # the view is of the run's columns (hedge legs, collateral)
        series = callback.series_array(run_market.n_bars, run_market.n_symbols)
        callback_inputs = CallbackInputs(
            function=compiled, params=_c_float(params, 1, "params"),
            series=None if series is None else _c_float(series, 3, "series"),
            memory=_c_float(memory, 1, "memory"),
            high=_c_float(run_market.high, 2, "high"), low=_c_float(run_market.low, 2, "low"),
            volume=_c_float(run_market.volume, 2, "volume"))
    mode, leverage = _columns(layout, config, venue, cache)
    versions, bars, n_funding, specs = _venue_inputs(layout, venue, spot_fee, cache)
    sym = versions.sym[0].copy()
    sym[enums.Sym.LEVERAGE] = leverage
    symbols = run_market.symbols
    for symbol in layout.hedge:
        long_leg, short_leg = symbols.index(f"{symbol}.long"), symbols.index(f"{symbol}.short")
        sym[enums.Sym.LEG, long_leg], sym[enums.Sym.LEG, short_leg] = 1.0, -1.0
        sym[enums.Sym.PARTNER, long_leg], sym[enums.Sym.PARTNER, short_leg] = (
            short_leg, long_leg)
    holdings = np.array([layout.amounts.get(s, 0.0) for s in symbols], dtype=np.float64)
    if callback is not None:
        targets = np.empty((0, run_market.n_symbols))
        has_target = np.zeros(run_market.n_bars, dtype=np.bool_)
    else:
        targets, has_target = _targets(orders, layout, cache)
    trading = enums.Trading(targets, has_target, np.int64(target_kind), np.int64(fill_at),
                            float(slippage), bool(config.reduce_to_fit))
    inputs = KernelInputs(
        bars=bars, trading=trading, path=int(path), versions=versions,
        mode=mode, sym=np.ascontiguousarray(sym), initial_balance=float(balance),
        holdings=holdings, record_positions=bool(config.record_positions),
        fill_rows=fill_rows(has_target, run_market.n_symbols), funding_rows=n_funding,
        callback=callback_inputs)
    return PreparedRun(market=run_market, config=config, venue=venue, inputs=inputs,
                       margin_mode=mode.copy(), leverage=leverage, specs=specs,
                       callback=callback)


# --- options -----------------------------------------------------------------------------


def _amount(name: str, value, low: float | None = None, high: float | None = None,
            what: str = "a positive amount") -> float:
    """A number option checked against its range (a clear error naming it otherwise)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    if isinstance(value, bool) or not np.isfinite(number) or (
            number <= 0.0 if low is None else not low <= number < high):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return number


def _c_float(a, ndim: int, name: str) -> np.ndarray:
    """``a`` as a writeable C-contiguous float64 array of ``ndim`` dimensions: the one type the
    compiled code is compiled for (numba types read-only arrays apart)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not a.flags.writeable:
        a = a.copy()
    return a


def _spot_symbols(config: RunConfig, symbols: tuple[str, ...]) -> frozenset[str]:
    """The symbols ``config.instruments`` declares spot (checked against the market)."""
    kinds = dict(config.instruments)
    unknown = sorted(set(kinds) - set(symbols))
    if unknown:
        raise ValueError(f"instruments names unknown symbol(s) {', '.join(unknown)}; the market "
                         f"holds {', '.join(symbols)}")
    for symbol, kind in kinds.items():
        choice(f"instrument kind of {symbol}", kind, enums.INSTRUMENT_NAMES)
    return frozenset(s for s, kind in kinds.items() if kind == "spot")


def _hedge_symbols(config: RunConfig, symbols: tuple[str, ...], spot) -> tuple[str, ...]:
    """The symbols ``config.position_mode`` puts in hedge mode (checked against the market)."""
    value = config.position_mode
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(symbols))
        if unknown:
            raise ValueError(f"position_mode names unknown symbol(s) {', '.join(unknown)}; the "
                             f"market holds {', '.join(symbols)}")
        modes = {s: choice(f"position_mode of {s}", value.get(s, "one_way"),
                           enums.POSITION_MODE_NAMES) for s in symbols}
    else:
        code = choice("position_mode", value, enums.POSITION_MODE_NAMES)
        modes = dict.fromkeys(symbols, code)
    hedge = tuple(s for s in symbols if modes[s] == 1)
    both = sorted(set(hedge) & spot)
    if both:
        raise ValueError(f"position_mode 'hedge' is for perpetuals; {', '.join(both)} is spot")
    return hedge


def _collateral_columns(config: RunConfig, venue: Venue, symbols) -> dict[str, str]:
    """Collateral currency -> the market column that prices it (``BTC`` -> ``BTC_USDT``)."""
    held = {}
    for currency, amount in dict(config.collateral).items():
        name = str(currency).upper()
        if not venue.margin_model.collateral:
            raise ValueError(f"collateral is multi-currency margin, which "
                             f"{models_where(lambda m: m.collateral)} simulates; venue "
                             f"{venue.name} uses the {venue.model!r} model")
        if not (isinstance(amount, int | float) and np.isfinite(amount) and amount > 0):
            raise ValueError(f"collateral {name} must be a positive amount of coins, got "
                             f"{amount!r}")
        columns = [s for s in symbols if normalise_symbol(s) in (f"{name}USDT", f"{name}USD")]
        if name in ("USDT", "USD"):
            raise ValueError(f"{name} is the quote balance: give it as initial_balance")
        if not columns:
            raise ValueError(f"collateral {name} needs a {name}_USDT price column in the "
                             f"market to value it; the market holds {', '.join(symbols)}")
        venue.discount_tiers(name)  # a clear error when the venue has none for it
        held[name] = columns[0]
    return held


def _layout(market: Market, config: RunConfig, venue: Venue, cache: PrepareCache) -> Layout:
    """The run's columns (hedge legs and collateral added), checked against the venue."""
    options = (id(market), id(venue), _key(config.instruments), _key(config.position_mode),
               _key(config.collateral))
    if options in cache.layouts:
        return cache.layouts[options][-1]
    spot = _spot_symbols(config, market.symbols)
    hedge = _hedge_symbols(config, market.symbols, spot)
    if hedge and "hedge" not in venue.margin_model.position_modes:
        raise ValueError(f"position_mode 'hedge' is simulated on "
                         f"{models_where(lambda m: 'hedge' in m.position_modes)} only; venue "
                         f"{venue.name} uses {venue.model!r}")
    columns = tuple(c for s in market.symbols
                    for c in ((f"{s}.long", f"{s}.short") if s in hedge else (s,)))
    held = _collateral_columns(config, venue, columns)
    amounts = {str(c).upper(): float(a) for c, a in dict(config.collateral).items()}
    key = (id(market), spot, hedge, tuple(held.items()))
    if key in cache.layouts:  # the same columns under other options' spellings
        cached = cache.layouts[key][-1]
        layout = Layout(cached.market, cached.names, spot, hedge, held, amounts)
        cache.layouts[options] = (market, venue, layout)
        return layout
    base = {s: s for s in market.symbols}  # market column -> the venue's symbol
    run_market = market
    if hedge:
        run_market = run_market.with_hedge_legs(hedge)
        for symbol in hedge:
            base[f"{symbol}.long"] = base[f"{symbol}.short"] = symbol
    if held:
        run_market = run_market.with_copies(held)
        base.update({c: c for c in held})
    names = tuple(base[s] for s in run_market.symbols)
    layout = Layout(run_market, names, spot, hedge, held, amounts)
    # the market and venue kept alive with the entries: their ids stay their own
    cache.layouts[key] = (market, layout)
    cache.layouts[options] = (market, venue, layout)
    return layout


def _fill_for(value, names, fill):
    """A per-symbol mapping completed with ``fill`` for the collateral columns."""
    if not isinstance(value, Mapping):
        return value
    return {**dict.fromkeys(names, fill), **value}


def _to_legs(name: str, value, hedge, same: bool):
    """A per-symbol option for a market whose hedge symbols became two legs: a value given for
    ``SYM`` applies to both; ``same``: the two legs must agree (Binance sets the margin mode
    per symbol)."""
    if not isinstance(value, Mapping):
        return value
    out = dict(value)
    for symbol in hedge:
        if symbol in out:
            given = out.pop(symbol)
            out.setdefault(f"{symbol}.long", given)
            out.setdefault(f"{symbol}.short", given)
        if same and f"{symbol}.long" in out and out[f"{symbol}.long"] != out.get(
                f"{symbol}.short"):
            raise ValueError(f"{name} of {symbol}.long and {symbol}.short must be the same: "
                             f"the venue sets it per symbol, for both legs")
    return out


def _perp_only(name: str, value, spot, fill):
    """A per-symbol mapping for the perpetuals, completed with ``fill`` for spot symbols
    (which take no margin mode or leverage: setting one for them is an error)."""
    if not isinstance(value, Mapping):
        return value
    given = sorted(set(value) & spot)
    if given:
        raise ValueError(f"{name} is set for spot instrument(s) {', '.join(given)}; a spot "
                         "holding is fully paid, with no margin mode or leverage: leave it out")
    return {**{s: fill for s in spot}, **value}


def check_model_modes(venue: Venue, modes, symbols) -> None:
    """Refuse margin modes the venue's model does not have (Kraken spot margin: cross only)."""
    for code, name in enumerate(enums.MARGIN_MODE_NAMES[:2]):  # cross, isolated
        given = [s for s, m in zip(symbols, modes, strict=True) if m == code]
        if given:
            venue.margin_model.check_margin_mode(name, f"venue {venue.name}", given)


def _columns(layout: Layout, config: RunConfig, venue: Venue,
             cache: PrepareCache) -> tuple[np.ndarray, np.ndarray]:
    """Each column's margin mode and leverage (checked against the venue's cap at the start)."""
    market = layout.market
    key = (id(market), id(venue), layout.spot, layout.hedge, tuple(layout.held),
           _key(config.margin_mode), _key(config.leverage))
    if key in cache.columns:
        mode, leverage = cache.columns[key][1:]
        return mode.copy(), leverage.copy()
    symbols, held, spot = market.symbols, layout.held, layout.spot
    base = dict(zip(symbols, layout.names, strict=True))
    start = pd.Timestamp(int(market.index[0]), tz="UTC") if market.n_bars else None
    margin_mode = _perp_only("margin_mode", config.margin_mode, spot, "cross")
    leverage_option = _perp_only("leverage", config.leverage, spot, 1.0)
    margin_mode = _to_legs("margin_mode", margin_mode, layout.hedge, same=True)
    leverage_option = _to_legs("leverage", leverage_option, layout.hedge, same=False)
    margin_mode = _fill_for(margin_mode, held, "cross")
    leverage_option = _fill_for(leverage_option, held, 1.0)

    def to_mode(value, symbol):
        if symbol in held:
            return enums.Mode.COLLATERAL
        if symbol in spot:
            return enums.Mode.SPOT
        return choice(f"margin_mode of {symbol}", value, enums.MARGIN_MODE_NAMES[:2])

    def to_leverage(value, symbol):
        if symbol in spot or symbol in held:
            return 1.0
        try:
            lev = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"leverage for {symbol} must be a positive number, got "
                             f"{value!r}") from None
        venue.check_leverage(base[symbol], lev, at=start)
        return lev

    mode = np.array(per_symbol("margin_mode", margin_mode, symbols, to_mode), np.int64)
    leverage = np.array(per_symbol("leverage", leverage_option, symbols, to_leverage),
                        np.float64)
    check_model_modes(venue, mode, symbols)
    cache.columns[key] = (venue, mode, leverage)
    return mode.copy(), leverage.copy()


# --- the venue's rules over the run's bars ----------------------------------------------------


def venue_funding(venue: Venue, market: Market, names, at, flat=()) -> np.ndarray:
    """The market's funding rates, without those of symbols the venue pays no funding on
    (spot margin: ``funding_interval_hours = 0``), whose positions are borrowings, not
    perpetual swaps. ``names``: the venue's symbol of each column; ``flat``: spot and
    collateral columns (which never pay funding)."""
    rates = market.funding_rate
    none = [i for i, name in enumerate(names)
            if name not in flat and venue.spec(name, at).funding_interval_hours == 0]
    if not none or np.isnan(rates[:, none]).all():
        return rates
    rates = rates.copy()
    rates[:, none] = np.nan
    return rates


def version_bars(venue: Venue, market: Market, symbols) -> list[int]:
    """Bars (after the first) at which a version of ``symbols``' venue rules comes into force:
    a symbol's tier table and fees, or the model's rules (Bybit's 2025-09-02 margin formula).

    A version dated ``valid_from`` applies from the first bar opening at or after it.
    """
    starts = {r.valid_from.value for r in venue.rule_history if r.valid_from is not None}
    for symbol in symbols:
        for spec in venue.history.get(normalise_symbol(symbol), venue.default_history):
            if spec.valid_from is not None:
                starts.add(spec.valid_from.value)
    index = market.index
    bars = {int(np.searchsorted(index, ns, side="left")) for ns in starts}
    return sorted(b for b in bars if 0 < b < len(index))


def pack_tiers(floors, caps, mmrs, cums, max_leverage) -> np.ndarray:
    """Stack (N, K) tier tables into the kernel's (N_TIER_FIELDS, N, K) layout."""
    tiers = np.empty((enums.N_TIER_FIELDS,) + np.shape(floors))
    tiers[enums.TierField.FLOOR] = floors
    tiers[enums.TierField.CAP] = caps
    tiers[enums.TierField.MMR] = mmrs
    tiers[enums.TierField.CUM] = cums
    tiers[enums.TierField.MAX_LEVERAGE] = max_leverage
    return tiers


def default_symbol_rules(n_symbols: int) -> np.ndarray:
    """(N_SYMBOL_FIELDS, N) rule rows of a column outside the venue's model (a spot or
    collateral holding): bracket MM at the mark, no fee in the margin, closed at the
    trigger, funding from the position, no partial close, one-way."""
    rules = np.zeros((enums.N_SYMBOL_FIELDS, n_symbols))
    rules[enums.Sym.PARTNER] = -1.0
    return rules


def _symbol_arrays(venue: Venue, names, flat, at, spot_fee: float):
    """(tiers, n_tiers, rule rows) of every column (``names``: the venue's symbols): the
    venue's for the perpetuals; one tier without maintenance margin and 1x max leverage
    for spot and collateral columns (``flat``). The rule rows carry the fees and the
    venue's margin model; their leverage row is 0 (the run's leverage goes there)."""
    perps = [s for s in names if s not in flat]
    perp_columns = [i for i, s in enumerate(names) if s not in flat]
    if not flat:
        a = venue.arrays(names, at=at)
        return pack_tiers(a.floors, a.caps, a.mmrs, a.cums, a.max_leverage), a.n_tiers, a.rules
    n = len(names)
    width = 1
    if perps:
        a = venue.arrays(perps, at=at)
        width = a.floors.shape[1]
        perp_tiers = pack_tiers(a.floors, a.caps, a.mmrs, a.cums, a.max_leverage)
    tiers = np.zeros((enums.N_TIER_FIELDS, n, width))
    tiers[enums.TierField.CAP] = np.inf
    tiers[enums.TierField.MAX_LEVERAGE] = 1.0
    n_tiers = np.ones(n, dtype=np.int64)
    rules = default_symbol_rules(n)
    rules[enums.Sym.TAKER_FEE] = float(spot_fee)
    for j, i in enumerate(perp_columns):
        tiers[:, i] = perp_tiers[:, j]
        n_tiers[i] = a.n_tiers[j]
        rules[:, i] = a.rules[:, j]
    return tiers, n_tiers, rules


def _discount_tables(venue: Venue, at, symbols, held, versions):
    """Each collateral column's discount tiers (in force at ``at``) in the tier arrays of every
    version: bounds in TIER_FLOOR / TIER_CAP, the discount rate in TIER_MMR
    (``engine.rules.collateral_value`` reads them so)."""
    tables = {c: venue.discount_tiers(c, at) for c in held}
    width = max([versions[0][0].shape[2]] + [len(d.rates) for d in tables.values()])
    out = []
    for tiers, n_tiers, rules in versions:
        tiers = np.pad(tiers, ((0, 0), (0, 0), (0, width - tiers.shape[2])), mode="edge")
        n_tiers = n_tiers.copy()
        rules = rules.copy()
        for currency, table in tables.items():
            i = symbols.index(currency)
            floors, caps, rates, n = table.arrays()
            pad = width - n
            tiers[enums.TierField.FLOOR, i] = np.pad(floors, (0, pad), constant_values=np.inf)
            tiers[enums.TierField.CAP, i] = np.pad(caps, (0, pad), constant_values=np.inf)
            tiers[enums.TierField.MMR, i] = np.pad(rates, (0, pad))
            tiers[enums.TierField.CUM, i] = 0.0
            tiers[enums.TierField.MAX_LEVERAGE, i] = 1.0
            n_tiers[i] = n
            rules[enums.Sym.DISCOUNT_IN_COIN, i] = 1.0 if table.unit == "coin" else 0.0
        out.append((np.ascontiguousarray(tiers), n_tiers, rules))
    return out


def rule_versions(venue: Venue, layout: Layout, spot_fee: float):
    """The venue's rules over the run's bars, as the kernel takes them, and the specs used.

    Returns ``(Versions, specs)``: version v in force from bar ``versions.bars[v]``, each
    with its tier arrays (padded to one width), symbol rule rows and account rules;
    ``specs`` maps each perpetual to the spec versions it ran under.
    """
    market, names = layout.market, layout.names
    flat = set(layout.spot) | set(layout.held)
    perps = [s for s in names if s not in flat]
    bars = [0] + version_bars(venue, market, perps)
    at = [pd.Timestamp(int(market.index[b]), tz="UTC") if market.n_bars else None for b in bars]
    versions = [_symbol_arrays(venue, names, flat, when, spot_fee) for when in at]
    width = max(v[0].shape[2] for v in versions)
    versions = [(np.pad(tiers, ((0, 0), (0, 0), (0, width - tiers.shape[2])), mode="edge"),
                 *rest) for tiers, *rest in versions]
    if layout.held:
        versions = _discount_tables(venue, at[0], market.symbols, layout.held, versions)
    account_rules = np.stack([venue.account_rules(when) for when in at])
    if not layout.held:
        account_rules[:, enums.AccountRule.LOAN_RATE] = 0.0  # a loan needs collateral to back it
    specs = {}
    for s in perps:
        used = []
        for when in at:
            spec = venue.spec(s, when)
            if not any(spec is seen for seen in used):
                used.append(spec)
        specs[s] = tuple(used)
    stacked = enums.Versions(
        np.array(bars, dtype=np.int64),
        np.ascontiguousarray(np.stack([t for t, _, _ in versions]), dtype=np.float64),
        np.ascontiguousarray(np.stack([n for _, n, _ in versions]), dtype=np.int64),
        np.ascontiguousarray(np.stack([r for _, _, r in versions]), dtype=np.float64),
        np.ascontiguousarray(account_rules, dtype=np.float64))
    return stacked, specs


def _venue_inputs(layout: Layout, venue: Venue, spot_fee: float, cache: PrepareCache):
    """``(Versions, Bars, funding rows, specs)`` of the run's columns under ``venue``."""
    market = layout.market
    key = (id(market), id(venue), float(spot_fee), layout.spot, tuple(layout.held))
    if key not in cache.venue_inputs:
        versions, specs = rule_versions(venue, layout, spot_fee)
        start = pd.Timestamp(int(market.index[0]), tz="UTC") if market.n_bars else None
        funding = venue_funding(venue, market, layout.names, start,
                                set(layout.spot) | set(layout.held))
        has_funding, n_funding = rows_with_values(_c_float(funding, 2, "funding_rate"))
        bars = enums.Bars(
            *(_c_float(a, 2, name) for name, a in (
                ("open", market.open), ("close", market.close),
                ("mark_open", market.mark_open), ("mark_high", market.mark_high),
                ("mark_low", market.mark_low), ("mark_close", market.mark_close),
                ("funding_rate", funding))),
            has_funding, bar_hours(market.index, market.bar_ns))
        cache.venue_inputs[key] = (market, venue, versions, bars, int(n_funding), specs)
    return cache.venue_inputs[key][2:]


# --- targets ------------------------------------------------------------------------------


def _targets(orders, layout: Layout, cache: PrepareCache) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, rows holding one)`` of the run's columns, converted once per target object
    (the runs of a sweep's parameter set share one)."""
    key = (id(orders), id(layout.market))
    if key not in cache.targets:
        array = targets_array(orders, layout.market, layout.hedge, layout.held)
        has_target, _ = rows_with_values(array)
        cache.targets[key] = (orders, layout.market, array, has_target)
        while len(cache.targets) > 64:  # a sweep moves on from a parameter set for good
            del cache.targets[next(iter(cache.targets))]
    return cache.targets[key][2:]


def targets_array(targets, market: Market, hedge=(), held=()) -> np.ndarray:
    """Targets as a (T, N) float64 array aligned to the market (NaN = leave the position as is).

    A DataFrame is aligned on the market's timestamps (rows the market does not
    have are an error; bars the frame lacks are NaN) and its columns must be
    market symbols (a missing symbol is never traded).
    """
    shape = (market.n_bars, market.n_symbols)
    if isinstance(targets, pd.Series):
        targets = targets.to_frame()
    if isinstance(targets, pd.DataFrame):
        unknown = [c for c in targets.columns if c not in market.symbols]
        legs = [c for c in unknown if c in hedge]
        if legs:
            raise ValueError(
                f"{', '.join(legs)} in hedge mode: give targets to the legs "
                + ", ".join(f"{c}.long (>= 0) and {c}.short (<= 0)" for c in legs)
                + ", not to the symbol")
        if unknown:
            raise ValueError(
                f"targets have column(s) {unknown} that are not market symbols "
                f"({', '.join(market.symbols)})"
            )
        index = targets.index
        if isinstance(index, pd.DatetimeIndex):
            index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
            positions = market.timestamps.get_indexer(index)
            if (positions < 0).any():
                bad = index[positions < 0][0]
                raise ValueError(
                    f"targets have {(positions < 0).sum()} row(s) at times that are not bars "
                    "of the "
                    f"market, first {bad}; align the targets to market.timestamps"
                )
        elif len(index) == market.n_bars:
            positions = np.arange(market.n_bars)
        else:
            raise ValueError(
                f"targets need a DatetimeIndex or exactly {market.n_bars} rows, got {len(index)}"
            )
        out = np.full(shape, np.nan)
        for column in targets.columns:
            out[positions, market.symbol_index(column)] = targets[column].to_numpy(dtype=float)
        array = out
    else:
        array = np.asarray(targets, dtype=np.float64)
        traded = market.n_symbols - len(held)  # collateral columns come last, never traded
        if array.ndim == 1 and traded == 1:
            array = array[:, None]
        if held and array.ndim == 2 and array.shape == (market.n_bars, traded):
            array = np.hstack([array, np.full((market.n_bars, len(held)), np.nan)])
        if array.shape != shape:
            raise ValueError(
                f"targets must have shape (bars, symbols) = {shape}, got {array.shape}"
            )
    if np.isinf(array).any():
        t, i = np.argwhere(np.isinf(array))[0]
        raise ValueError(
            f"targets hold an infinite value at bar {t} ({market.timestamps[t]}), "
            f"symbol {market.symbols[i]}"
        )
    for symbol in hedge:
        for suffix, sign in ((".long", 1.0), (".short", -1.0)):
            i = market.symbol_index(symbol + suffix)
            wrong = np.flatnonzero(array[:, i] * sign < 0.0)
            if len(wrong):
                t = wrong[0]
                side = "long" if sign > 0 else "short"
                raise ValueError(
                    f"targets of {symbol}{suffix} must be {'>= 0' if sign > 0 else '<= 0'} (a "
                    f"hedge-mode {side} leg keeps its side), got {array[t, i]:g} at bar {t} "
                    f"({market.timestamps[t]})")
    return _c_float(array, 2, "targets")
