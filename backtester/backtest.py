"""``run()``: validate a backtest's inputs, convert them to arrays, call the kernel."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data.market import Market
from .engine import enums
from .engine.driver import (
    CallbackError,
    bar_hours,
    default_symbol_rules,
    pack_symbol_params,
    pack_tiers,
    simulate_arrays,
)
from .result import Result
from .strategy import Callback, Plan, StrategyError, explain_runtime_error
from .venues import Venue, check_simulated, load_venue
from .venues.spec import normalise_symbol


@dataclass(frozen=True)
class RunConfig:
    """How one backtest is run: the account, the venue rules and the simulation choices.

    - ``initial_balance``: the deposit, in the quote currency (USDT).
    - ``venue``: a built-in venue name (``"binance_usdm"``, ``"flat"``), a TOML
      path or a ``Venue``; it supplies tiers, fees and the liquidation fee.
    - ``margin_mode``: ``"cross"`` or ``"isolated"``, or a mapping symbol -> mode.
    - ``leverage``: the leverage of each position (initial margin = notional /
      leverage), one number or a mapping symbol -> leverage. It may not exceed
      the venue's cap; an order whose notional lands in a tier with a lower max
      leverage is rejected.
    - ``target_kind``: what the target numbers mean: ``"units"`` (signed base
      units), ``"notional"`` (signed quote notional) or ``"equity"`` (signed
      fraction of account equity), converted at the decision-time close.
    - ``fill_at``: ``"open"`` (decided at close[t], filled at open[t+1]) or
      ``"close"`` (decided and filled at close[t]: optimistic, it assumes you
      can trade at the price you just saw).
    - ``path``: the intrabar price path for liquidation checks: ``"path"``
      (open -> low -> high -> close, or open -> high -> low -> close on a down
      bar), ``"worst"`` (every position at its adverse extreme at once: a stress
      view) or ``"close"`` (straight from open to close, extremes ignored).
    - ``slippage``: a fraction of the price paid against the trader on every
      strategy fill (0.0005 = 5 bps).
    - ``reduce_to_fit``: cut an order that needs more margin than is available
      down to what is available, instead of rejecting it.
    - ``record_positions``: keep the (T, N) positions and liquidation prices.
    - ``instruments``: a mapping symbol -> ``"perpetual"`` (the default for any
      symbol left out) or ``"spot"``. A spot holding is fully paid from the
      wallet (no leverage), pays no funding, is never liquidated and cannot be
      short (such an order is rejected); it counts in equity and exposure.
      ``margin_mode`` and ``leverage`` apply to the perpetuals only.
    - ``spot_fee``: the taker fee rate of spot fills (0.001 = Binance spot's 0.1%).
    - ``position_mode``: ``"one_way"`` (one net position per symbol) or ``"hedge"``
      (Binance's hedge mode: a long and a short leg side by side), or a mapping
      symbol -> mode. A hedge symbol's legs are the market columns ``SYM.long`` and
      ``SYM.short``: targets name the legs (long leg >= 0, short leg <= 0), and the
      Result reports each leg as a symbol. Each leg has its own entry, margin and
      bracket; isolated legs are liquidated one by one, cross legs together with
      the account (their shared liquidation price solves Binance's hedge formula).
      ``margin_mode`` and ``leverage`` given for ``SYM`` apply to both legs.
    - ``collateral``: OKX multi-currency margin: coins held besides the quote balance,
      e.g. ``{"BTC": 1.0}``, each valued at the mark of the market's ``BTC_USDT``
      column. They back the cross account at their discounted value (the venue's
      progressive discount tiers), pay no funding and are not traded; the Result
      reports each as a column named by the currency. A quote balance that losses
      take below zero is a loan charged the venue's ``loan_rate``; after a cross
      liquidation collateral is sold at the trigger prices to repay it.
    """

    initial_balance: float = 10_000.0
    venue: str | Venue = "binance_usdm"
    margin_mode: str | Mapping[str, str] = "cross"
    leverage: float | Mapping[str, float] = 10.0
    target_kind: str = "units"
    fill_at: str = "open"
    path: str = "path"
    slippage: float = 0.0
    reduce_to_fit: bool = False
    record_positions: bool = True
    venue_overrides: Mapping[str, float] = field(default_factory=dict)
    instruments: Mapping[str, str] = field(default_factory=dict)
    spot_fee: float = 0.001
    position_mode: str | Mapping[str, str] = "one_way"
    collateral: Mapping[str, float] = field(default_factory=dict)

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed (unknown names raise a clear error)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"unknown run option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)


def choice(name: str, value: str, names: tuple[str, ...]) -> int:
    """The code of ``value`` among ``names`` (a clear error naming the option otherwise)."""
    if value not in names:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, names))}, got {value!r}")
    return names.index(value)


def per_symbol(name: str, value, symbols: tuple[str, ...], convert) -> list:
    """One value per symbol from a scalar or a {symbol: value} mapping (all symbols required)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(symbols))
        if unknown:
            raise ValueError(
                f"{name} names unknown symbol(s) {', '.join(unknown)}; the market holds "
                f"{', '.join(symbols)}"
            )
        missing = [s for s in symbols if s not in value]
        if missing:
            raise ValueError(f"{name} gives no value for {', '.join(missing)}")
        return [convert(value[s], s) for s in symbols]
    return [convert(value, s) for s in symbols]


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
    return np.ascontiguousarray(array, dtype=np.float64)


def _collateral_columns(config: RunConfig, venue: Venue, symbols) -> dict[str, str]:
    """Collateral currency -> the market column that prices it (``BTC`` -> ``BTC_USDT``)."""
    held = {}
    for currency, amount in dict(config.collateral).items():
        name = str(currency).upper()
        if venue.model != "okx":
            raise ValueError(f"collateral is OKX's multi-currency margin; venue {venue.name} "
                             f"uses the {venue.model!r} model")
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


def _fill_for(value, names, fill):
    """A per-symbol mapping completed with ``fill`` for the collateral columns."""
    if not isinstance(value, Mapping):
        return value
    return {**dict.fromkeys(names, fill), **value}


def _discount_tiers(venue: Venue, at, symbols, held, tiers, n_tiers, rules, schedule):
    """Put each collateral column's discount tiers (in force at ``at``) in the tier arrays of
    the run and of every scheduled version: bounds in TIER_FLOOR / TIER_CAP, the discount
    rate in TIER_MMR (``engine.account.collateral_value`` reads them so)."""
    tables = {c: venue.discount_tiers(c, at) for c in held}
    width = max([tiers.shape[2]] + [len(d.rates) for d in tables.values()])

    def fill(t):
        t = np.pad(t, ((0, 0), (0, 0), (0, width - t.shape[2])), mode="edge")
        for currency, table in tables.items():
            i = symbols.index(currency)
            floors, caps, rates, n = table.arrays()
            pad = width - n
            t[enums.TIER_FLOOR, i] = np.pad(floors, (0, pad), constant_values=np.inf)
            t[enums.TIER_CAP, i] = np.pad(caps, (0, pad), constant_values=np.inf)
            t[enums.TIER_MMR, i] = np.pad(rates, (0, pad))
            t[enums.TIER_CUM, i] = 0.0
            t[enums.TIER_MAX_LEVERAGE, i] = 1.0
        return np.ascontiguousarray(t)

    for currency, table in tables.items():
        i = symbols.index(currency)
        rules[enums.SYM_DISCOUNT_IN_COIN, i] = 1.0 if table.unit == "coin" else 0.0
    n_tiers_of = {symbols.index(c): len(t.rates) for c, t in tables.items()}

    def counts(n_tiers):
        n_tiers = n_tiers.copy()
        for i, n in n_tiers_of.items():
            n_tiers[i] = n
        return n_tiers

    new_schedule = []
    for bar, t, version_n_tiers, version_rules in schedule:
        version_rules = version_rules.copy()
        version_rules[enums.SYM_DISCOUNT_IN_COIN] = rules[enums.SYM_DISCOUNT_IN_COIN]
        new_schedule.append((bar, fill(t), counts(version_n_tiers), version_rules))
    return fill(tiers), counts(n_tiers), new_schedule


def _hedge_symbols(config: RunConfig, symbols: tuple[str, ...], spot: set[str]) -> list[str]:
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
    hedge = [s for s in symbols if modes[s] == 1]
    both = sorted(set(hedge) & spot)
    if both:
        raise ValueError(f"position_mode 'hedge' is for perpetuals; {', '.join(both)} is spot")
    return hedge


def _to_legs(name: str, value, hedge: list[str], same: bool):
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


def _spot_symbols(config: RunConfig, symbols: tuple[str, ...]) -> set[str]:
    """The symbols ``config.instruments`` declares spot (checked against the market)."""
    kinds = dict(config.instruments)
    unknown = sorted(set(kinds) - set(symbols))
    if unknown:
        raise ValueError(f"instruments names unknown symbol(s) {', '.join(unknown)}; the market "
                         f"holds {', '.join(symbols)}")
    for symbol, kind in kinds.items():
        choice(f"instrument kind of {symbol}", kind, enums.INSTRUMENT_NAMES)
    return {s for s, kind in kinds.items() if kind == "spot"}


def _perp_only(name: str, value, spot: set[str], fill):
    """A per-symbol mapping for the perpetuals, completed with ``fill`` for spot symbols
    (which take no margin mode or leverage: setting one for them is an error)."""
    if not isinstance(value, Mapping):
        return value
    given = sorted(set(value) & spot)
    if given:
        raise ValueError(f"{name} is set for spot instrument(s) {', '.join(given)}; a spot "
                         "holding is fully paid, with no margin mode or leverage: leave it out")
    return {**{s: fill for s in spot}, **value}


def _symbol_arrays(venue: Venue, symbols, spot: set[str], at, spot_fee: float):
    """(tiers, n_tiers, rule rows) of every column (``symbols``: the venue's names): the
    venue's for the perpetuals, one tier without maintenance margin and 1x max leverage
    for spot. The rule rows (``enums.SYM_*``, (N_SYMBOL_FIELDS, N)) carry the fees and the
    venue's margin model; their leverage row is 0 (the run's leverage goes there)."""
    perps = [s for s in symbols if s not in spot]
    perp_columns = [i for i, s in enumerate(symbols) if s not in spot]
    if not spot:
        a = venue.arrays(symbols, at=at)
        return (pack_tiers(a.floors, a.caps, a.mmrs, a.cums, a.max_leverage), a.n_tiers, a.rules)
    n = len(symbols)
    width = 1
    if perps:
        a = venue.arrays(perps, at=at)
        width = a.floors.shape[1]
        perp_tiers = pack_tiers(a.floors, a.caps, a.mmrs, a.cums, a.max_leverage)
    tiers = np.zeros((enums.N_TIER_FIELDS, n, width))
    tiers[enums.TIER_CAP] = np.inf
    tiers[enums.TIER_MAX_LEVERAGE] = 1.0
    n_tiers = np.ones(n, dtype=np.int64)
    rules = default_symbol_rules(n)
    rules[enums.SYM_TAKER_FEE] = float(spot_fee)
    for j, i in enumerate(perp_columns):
        tiers[:, i] = perp_tiers[:, j]
        n_tiers[i] = a.n_tiers[j]
        rules[:, i] = a.rules[:, j]
    return tiers, n_tiers, rules


def venue_funding(venue: Venue, market: Market, names, at, spot=()) -> np.ndarray:
    """The market's funding rates, without those of symbols the venue pays no funding on
    (spot margin: ``funding_interval_hours = 0``), whose positions are borrowings, not
    perpetual swaps. ``names``: the venue's symbol of each column."""
    rates = market.funding_rate
    none = [i for i, name in enumerate(names)
            if name not in spot and venue.spec(name, at).funding_interval_hours == 0]
    if not none or np.isnan(rates[:, none]).all():
        return rates
    rates = rates.copy()
    rates[:, none] = np.nan
    return rates


def check_model_modes(venue: Venue, modes, symbols) -> None:
    """Refuse margin modes the venue's model does not have (Kraken spot margin: cross only)."""
    if venue.model == "kraken_spot":
        isolated = [s for s, m in zip(symbols, modes, strict=True) if m == enums.ISOLATED]
        if isolated:
            raise ValueError(
                f"venue {venue.name} is spot margin trading, where every margin position shares "
                f"one trade balance (cross); it has no isolated mode, but margin_mode is "
                f"'isolated' for {', '.join(isolated)}")


def run(market: Market, targets, config: RunConfig | None = None, **options) -> Result:
    """Backtest a strategy on ``market`` under the margin rules of a venue.

    ``targets`` is what the strategy decides, in one of three forms:

    - target positions per bar and symbol, decided at each bar's close (a (T, N)
      array or a DataFrame; NaN = leave the position as it is), in the unit
      ``config.target_kind``;
    - a ``backtester.strategy.Callback``: a compiled function called at each
      close with the account's state, writing the orders for the next bar;
    - a ``backtester.strategy.Plan`` (what the strategies of ``strategies/``
      build): targets or a Callback, with the run options it assumes (keyword
      options given here win over them).

    Keyword options override fields of ``config``.

    Example:
        >>> from backtester import load_market, run
        >>> market = load_market()                       # the embedded data
        >>> import numpy as np
        >>> targets = np.full((market.n_bars, market.n_symbols), np.nan)
        >>> targets[0] = [0.5, -0.5]                     # 50% of equity long BTC, short ETH
        >>> result = run(market, targets, target_kind="equity", margin_mode="cross", leverage=5)
        >>> result.summary()["liquidations"]
        0
    """
    if isinstance(targets, Plan):
        options = {**dict(targets.options), **options}
        targets = targets.orders
    callback_inputs = None
    if isinstance(targets, Callback):  # the author's mistakes first, before any data work
        callback_inputs = dict(
            callback=targets.compiled(), params=targets.param_values,
            memory=targets.memory_array())
    config = (config or RunConfig()).replace(**options)
    venue = load_venue(config.venue, **dict(config.venue_overrides))
    check_simulated(venue)
    start = pd.Timestamp(int(market.index[0]), tz="UTC") if market.n_bars else None
    spot = _spot_symbols(config, market.symbols)
    hedge = _hedge_symbols(config, market.symbols, spot)
    margin_mode = _perp_only("margin_mode", config.margin_mode, spot, "cross")
    leverage_option = _perp_only("leverage", config.leverage, spot, 1.0)
    base = {s: s for s in market.symbols}  # market column -> the venue's symbol
    if hedge:
        market = market.with_hedge_legs(hedge)
        for symbol in hedge:
            base[f"{symbol}.long"] = base[f"{symbol}.short"] = symbol
        margin_mode = _to_legs("margin_mode", margin_mode, hedge, same=True)
        leverage_option = _to_legs("leverage", leverage_option, hedge, same=False)
    held = _collateral_columns(config, venue, market.symbols)
    amounts = {str(c).upper(): float(a) for c, a in dict(config.collateral).items()}
    if held:
        market = market.with_copies(held)
        base.update({c: c for c in held})
        margin_mode = _fill_for(margin_mode, held, "cross")
        leverage_option = _fill_for(leverage_option, held, 1.0)
    if callback_inputs is not None:
        # the callback's view is of the run's columns (hedge legs, then collateral coins)
        callback_inputs.update(
            series=targets.series_array(market.n_bars, market.n_symbols),
            high=market.high, low=market.low, volume=market.volume)
    symbols = market.symbols
    names = tuple(base[s] for s in symbols)

    def to_mode(value, symbol):
        if symbol in held:
            return enums.COLLATERAL
        if symbol in spot:
            return enums.SPOT
        return choice(f"margin_mode of {symbol}", value, enums.MARGIN_MODE_NAMES[:2])

    def to_leverage(value, symbol):
        if symbol in spot or symbol in held:
            return 1.0
        lev = float(value)
        venue.check_leverage(base[symbol], lev, at=start)
        return lev

    mode = np.array(per_symbol("margin_mode", margin_mode, symbols, to_mode), np.int64)
    leverage = np.array(per_symbol("leverage", leverage_option, symbols, to_leverage),
                        np.float64)
    target_kind = choice("target_kind", config.target_kind, enums.TARGET_KIND_NAMES)
    fill_at = choice("fill_at", config.fill_at, enums.FILL_AT_NAMES)
    path = choice("path", config.path, enums.PATH_NAMES)
    if not np.isfinite(config.initial_balance) or config.initial_balance <= 0:
        raise ValueError(f"initial_balance must be a positive amount, got {config.initial_balance}")
    if not 0.0 <= config.slippage < 0.5:
        raise ValueError(f"slippage is a fraction of the price in [0, 0.5), got {config.slippage}")
    if not 0.0 <= config.spot_fee < 0.1:
        raise ValueError(f"spot_fee is a fee rate in [0, 0.1), got {config.spot_fee}")
    check_model_modes(venue, mode, symbols)
    if hedge and venue.model != "binance":
        raise ValueError(f"position_mode 'hedge' is simulated on Binance's model only; venue "
                         f"{venue.name} uses {venue.model!r}")
    (tiers, n_tiers, rules), schedule, specs = rules_in_force(venue, market, spot | set(held),
                                                              config.spot_fee, names=names)
    if held:
        tiers, n_tiers, schedule = _discount_tiers(venue, start, symbols, held, tiers, n_tiers,
                                                   rules, schedule)
    for symbol in hedge:
        long_leg, short_leg = symbols.index(f"{symbol}.long"), symbols.index(f"{symbol}.short")
        rules[enums.SYM_LEG, long_leg], rules[enums.SYM_LEG, short_leg] = 1.0, -1.0
        rules[enums.SYM_PARTNER, long_leg], rules[enums.SYM_PARTNER, short_leg] = (
            short_leg, long_leg)
    inputs = dict(
        open_=market.open, close=market.close, mark_open=market.mark_open,
        mark_high=market.mark_high, mark_low=market.mark_low, mark_close=market.mark_close,
        funding_rate=venue_funding(venue, market, names, start, spot | set(held)),
        target_kind=target_kind,
        mode=mode.copy(),  # a callback may switch modes: the Result keeps those of the start
        sym=pack_symbol_params(leverage, rules[enums.SYM_TAKER_FEE], rules[enums.SYM_LIQ_FEE],
                               rules=rules), tiers=tiers,
        n_tiers=n_tiers, initial_balance=float(config.initial_balance),
        slippage=float(config.slippage), fill_at=fill_at, path=path,
        reduce_to_fit=bool(config.reduce_to_fit), record_positions=bool(config.record_positions),
        schedule=schedule, hours=bar_hours(market.index, market.bar_ns),
        holdings=np.array([amounts.get(s, 0.0) for s in symbols]) if held else None,
        loan_rate=venue.rules(start).get("loan_rate", 0.0) / 8760.0 if held else 0.0,
    )
    if callback_inputs is not None:
        output = _run_callback(market, targets, {**inputs, **callback_inputs})
    else:
        array = targets_array(targets, market, hedge, held)
        output = simulate_arrays(targets=array, **inputs)
    return Result(market=market, config=config, venue=venue, output=output, margin_mode=mode,
                  leverage=leverage, specs=specs, initial_equity=output.initial_equity)


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


def rules_in_force(venue: Venue, market: Market, spot: set[str], spot_fee: float,
                   names: tuple[str, ...] | None = None):
    """The rule arrays at the first bar, the changes inside the run, and the versions used.

    Returns ``((tiers, n_tiers, rules), schedule, specs)``, ``rules`` the
    (N_SYMBOL_FIELDS, N) rule rows (``enums.SYM_*``, fees included):
    ``schedule`` as ``engine.driver.simulate_arrays`` takes it, every tier array
    padded to one width; ``specs`` maps each perpetual to the versions it ran under.
    ``names``: the venue's symbol of each market column (default the columns' own names;
    the two legs of a hedge-mode symbol name the symbol).
    """
    symbols = tuple(names) if names is not None else market.symbols
    perps = [s for s in symbols if s not in spot]
    bars = [0] + version_bars(venue, market, perps)
    at = [pd.Timestamp(int(market.index[b]), tz="UTC") if market.n_bars else None for b in bars]
    versions = [_symbol_arrays(venue, symbols, spot, when, spot_fee) for when in at]
    width = max(v[0].shape[2] for v in versions)
    versions = [(np.pad(tiers, ((0, 0), (0, 0), (0, width - tiers.shape[2])), mode="edge"),
                 *rest) for tiers, *rest in versions]
    specs = {}
    for s in perps:
        used = []
        for when in at:
            spec = venue.spec(s, when)
            if not any(spec is seen for seen in used):
                used.append(spec)
        specs[s] = tuple(used)
    schedule = [(bar, *version) for bar, version in zip(bars[1:], versions[1:], strict=True)]
    return versions[0], schedule, specs


def _run_callback(market: Market, callback: Callback, inputs: dict):
    """Run the kernel with a compiled callback; explain an error raised inside it."""
    try:
        return simulate_arrays(targets=None, **inputs)
    except CallbackError as exc:
        cause = exc.__cause__ or exc
        when = market.timestamps[exc.bar] if 0 <= exc.bar < market.n_bars else "?"
        raise StrategyError(explain_runtime_error(callback, exc.bar, str(when), cause)) from cause
