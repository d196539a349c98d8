"""The run's columns and their options: a hedge-mode symbol's two legs and collateral coins
become columns of their own; each column gets its margin mode and leverage, checked
against the market and against what the venue's model allows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..config import RunConfig, choice, per_symbol
from ..data.market import Market
from ..engine import enums
from ..venues import Venue
from ..venues.registry import models_where
from ..venues.spec import UnknownSymbolError, normalise_symbol
from .common import in_force, option_key

if TYPE_CHECKING:
    from .run import PrepareCache


@dataclass(frozen=True)
class Layout:
    """The run's columns: the market as the kernel sees it, and what each column is."""

    market: Market
    names: tuple[str, ...]  # the venue's symbol of each column (a leg: its symbol)
    spot: frozenset[str]  # spot holdings (``instruments``)
    hedge: tuple[str, ...]  # symbols in hedge mode (each now two leg columns)
    held: Mapping[str, str]  # collateral currency -> the market column that prices it
    amounts: Mapping[str, float]  # collateral currency -> coins held

    @property
    def flat(self) -> frozenset[str]:
        """The spot and collateral columns: outside the venue's margin model."""
        return self.spot | frozenset(self.held)

    @property
    def perps(self) -> tuple[str, ...]:
        """The venue's symbol of each perpetual column, in column order."""
        flat = self.flat
        return tuple(s for s in self.names if s not in flat)


def _spot_symbols(config: RunConfig, symbols: tuple[str, ...]) -> frozenset[str]:
    """The symbols ``config.instruments`` declares spot (checked against the market)."""
    kinds = dict(config.instruments)
    unknown = sorted(set(kinds) - set(symbols))
    if unknown:
        raise ValueError(f"instruments= names unknown symbol(s) {', '.join(unknown)}; the market "
                         f"holds {', '.join(symbols)}")
    for symbol, kind in kinds.items():
        choice(f"instruments[{symbol!r}]", kind, enums.INSTRUMENT_NAMES)
    return frozenset(s for s, kind in kinds.items() if kind == "spot")


def _hedge_symbols(config: RunConfig, symbols: tuple[str, ...], spot) -> tuple[str, ...]:
    """The symbols ``config.position_mode`` puts in hedge mode (checked against the market)."""
    value = config.position_mode
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(symbols))
        if unknown:
            raise ValueError(f"position_mode= names unknown symbol(s) {', '.join(unknown)}; the "
                             f"market holds {', '.join(symbols)}")
        modes = {s: choice(f"position_mode[{s!r}]", value.get(s, "one_way"),
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
            raise ValueError(f"collateral (multi-currency margin) is what "
                             f"{models_where(lambda m: m.collateral)} simulate; venue "
                             f"{venue.name} uses the {venue.model!r} model")
        if not (isinstance(amount, int | float) and np.isfinite(amount) and amount > 0):
            raise ValueError(f"collateral[{currency!r}]={amount!r}: must be a positive amount "
                             "of coins")
        # (a hedge-mode symbol's legs carry its prices: its long leg prices the coin)
        columns = [s for s in symbols
                   if normalise_symbol(s.split(".")[0]) in (f"{name}USDT", f"{name}USD")]
        if name in ("USDT", "USD"):
            raise ValueError(f"{name} is the quote balance: give it as initial_balance")
        if not columns:
            raise ValueError(f"collateral {name} needs a {name}_USDT price column in the "
                             f"market to value it; the market holds {', '.join(symbols)}")
        venue.discount_tiers(name)  # a clear error when the venue has none for it
        held[name] = columns[0]
    return held


def column_layout(market: Market, config: RunConfig, venue: Venue,
                  cache: PrepareCache) -> Layout:
    """The run's columns (hedge legs and collateral added), checked against the venue."""
    options = (id(market), id(venue), option_key(config.instruments),
               option_key(config.position_mode), option_key(config.collateral))
    if options in cache.layouts:
        return cache.layouts[options][-1]
    spot = _spot_symbols(config, market.symbols)
    hedge = _hedge_symbols(config, market.symbols, spot)
    if hedge and "hedge" not in venue.margin_model.position_modes:
        raise ValueError(f"position_mode 'hedge' is simulated on "
                         f"{models_where(lambda m: 'hedge' in m.position_modes)} only; venue "
                         f"{venue.name} uses {venue.model!r}")
    widened = tuple(c for s in market.symbols
                    for c in ((f"{s}.long", f"{s}.short") if s in hedge else (s,)))
    held = _collateral_columns(config, venue, widened)
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
    """Refuse margin modes the venue's model does not have (Kraken spot margin: cross only),
    and a mix of modes where the model sets one for the whole account (Bybit UTA)."""
    given = {}
    for code, name in enumerate(enums.MARGIN_MODE_NAMES[:2]):  # cross, isolated
        given[name] = [s for s, m in zip(symbols, modes, strict=True) if m == code]
        if given[name]:
            venue.margin_model.check_margin_mode(name, f"venue {venue.name}", given[name])
    venue.margin_model.check_one_margin_mode(given, f"venue {venue.name}")


def column_options(layout: Layout, config: RunConfig, venue: Venue
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Each column's margin mode and leverage (checked against the venue's cap at the start).

    Made once per venue and values read (the columns, the options, the versions of the
    rules in force at the first bar) and kept on the venue (``Venue.memoised``); the arrays
    returned are the caller's."""
    market = layout.market
    try:
        versions = (in_force(venue, layout.perps, (int(market.index[0]),)) if market.n_bars
                    else None)
    except UnknownSymbolError:  # (not kept: the options' own errors come first, as ever)
        return _column_options(layout, config, venue)
    key = ("column_options", market.symbols, layout.names, layout.spot, layout.hedge,
           tuple(layout.held), option_key(config.margin_mode), option_key(config.leverage),
           versions)
    mode, leverage = venue.memoised(key, lambda: _column_options(layout, config, venue))
    return mode.copy(), leverage.copy()


def _column_options(layout: Layout, config: RunConfig, venue: Venue
                    ) -> tuple[np.ndarray, np.ndarray]:
    market = layout.market
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
        return choice(f"margin_mode[{symbol!r}]" if isinstance(config.margin_mode, Mapping)
                      else "margin_mode", value, enums.MARGIN_MODE_NAMES[:2])

    def to_leverage(value, symbol):
        if symbol in spot or symbol in held:
            return 1.0
        try:
            lev = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"leverage[{symbol!r}]={value!r}: must be a positive "
                             "number") from None
        venue.check_leverage(base[symbol], lev, at=start)
        return lev

    mode = np.array(per_symbol("margin_mode", margin_mode, symbols, to_mode), np.int64)
    leverage = np.array(per_symbol("leverage", leverage_option, symbols, to_leverage),
                        np.float64)
    check_model_modes(venue, mode, symbols)
    model = venue.margin_model
    isolated = [s for s, m in zip(symbols, mode, strict=True) if m == enums.Mode.ISOLATED]
    if held and model.collateral_cross_only and isolated:
        raise ValueError(
            f"venue {venue.name}: with collateral ({model.collateral_note or 'multi-asset'} "
            f"mode) every position is cross margin, but margin_mode gives 'isolated' for "
            f"{', '.join(isolated)}: use margin_mode='cross'")
    return mode, leverage


