"""The venue's rules over the run's bars, as the kernel takes them: every version of the
tier tables and rule rows in force during the run (``enums.Versions``), the funding the
venue pays, and the market's bars (``enums.Bars``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.market import Market, absent, no_funding
from ..engine import enums
from ..engine.driver import bar_hours, rows_with_extremes, rows_with_values
from ..venues import Venue
from .columns import Layout
from .common import in_force, market_view, read_view

if TYPE_CHECKING:
    from .run import PrepareCache


def venue_funding(venue: Venue, market: Market, names, at, flat=()) -> np.ndarray:
    """The market's funding rates, without those of symbols the venue pays no funding on
    (spot margin: ``funding_interval_hours = 0``), whose positions are borrowings, not
    perpetual swaps. ``names``: the venue's symbol of each column; ``flat``: spot and
    collateral columns (which never pay funding)."""
    rates = market.funding_rate
    if no_funding(rates):
        return rates
    names, flat = tuple(names), frozenset(flat)
    none = venue.memoised(("unfunded", names, flat, at), lambda: [
        i for i, name in enumerate(names)
        if name not in flat and venue.spec(name, at).funding_interval_hours == 0])
    if len(none) == rates.shape[1]:  # none paid (spot margin): no copy of NaN, no scan of it
        return absent(np.nan, rates.shape)
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
    starts = venue.version_starts(symbols)
    if not starts:
        return []
    index = market.index
    bars = set(np.searchsorted(index, np.array(starts, dtype=np.int64), side="left").tolist())
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


FILTER_ROWS = (enums.Sym.QTY_STEP, enums.Sym.MIN_QTY, enums.Sym.MIN_NOTIONAL,
               enums.Sym.TICK_SIZE)


def rule_versions(venue: Venue, layout: Layout, spot_fee: float, order_filters: bool = True):
    """The venue's rules over the run's bars, as the kernel takes them, and the specs used.

    Returns ``(Versions, specs)``: version v in force from bar ``versions.bars[v]``, each
    with its tier arrays (padded to one width), symbol rule rows and account rules
    (without ``order_filters``, no quantity step, minimums or price tick); ``specs`` maps
    each perpetual to the spec versions it ran under.

    Made once per venue and values read (the columns, the bars where versions start and how
    many dated versions are in force at each, the spot fee, ``order_filters``) and kept on
    the venue (``Venue.memoised``), so a run under the versions of an earlier one builds
    nothing, whatever its dates: the arrays are shared (the kernel only reads them),
    ``specs`` is the caller's.
    """
    market, perps = layout.market, layout.perps
    bars = (0, *version_bars(venue, market, perps))
    times = tuple(int(market.index[b]) for b in bars)
    # (the versions in force at the bars, not their dates: windows of a market share one;
    # a collateral coin's discount tiers have dates of their own: then the first bar's)
    key = ("rule_versions", layout.names, market.symbols, layout.spot, tuple(layout.held),
           float(spot_fee), bool(order_filters), bars, in_force(venue, perps, times),
           times[0] if layout.held else None)
    versions, specs, early = venue.memoised(key, lambda: _rule_versions(
        venue, layout, spot_fee, order_filters, bars))
    if early:  # the notes of a first bar before a symbol's first table, as when made
        at = pd.Timestamp(times[0], tz="UTC")
        for symbol in early:
            venue.spec(symbol, at)
    return versions, dict(specs)


def _rule_versions(venue: Venue, layout: Layout, spot_fee: float, order_filters: bool,
                   bars: tuple[int, ...]):
    """``rule_versions``' ``(Versions, specs)`` made, and the perpetuals whose first table is
    dated after the run's first bar."""
    market, names, flat, perps = layout.market, layout.names, layout.flat, layout.perps
    at = [pd.Timestamp(int(market.index[b]), tz="UTC") for b in bars]
    versions = [_symbol_arrays(venue, names, flat, when, spot_fee) for when in at]
    width = max(v[0].shape[2] for v in versions)
    versions = [(tiers if tiers.shape[2] == width else
                 np.pad(tiers, ((0, 0), (0, 0), (0, width - tiers.shape[2])), mode="edge"),
                 *rest) for tiers, *rest in versions]
    if layout.held:
        versions = _discount_tables(venue, at[0], market.symbols, layout.held, versions)
    account_rules = np.stack([venue.account_rules(when) for when in at])
    if not layout.held:
        account_rules[:, enums.AccountRule.LOAN_RATE] = 0.0  # a loan needs collateral to back it
    elif venue.margin_model.collateral_cross_only:
        account_rules[:, enums.AccountRule.CROSS_ONLY] = 1.0  # (Binance Multi-Assets mode)
    specs = {}
    for s in perps:
        used = []
        for when in at:
            spec = venue.spec(s, when)
            if spec not in used:  # (by value: a stand-in's spec is a new copy each time)
                used.append(spec)
        specs[s] = tuple(used)
    stacked = enums.Versions(
        np.array(bars, dtype=np.int64),
        np.ascontiguousarray(np.stack([t for t, _, _ in versions]), dtype=np.float64),
        np.ascontiguousarray(np.stack([n for _, n, _ in versions]), dtype=np.int64),
        np.ascontiguousarray(np.stack([r for _, _, r in versions]), dtype=np.float64),
        np.ascontiguousarray(account_rules, dtype=np.float64))
    if not order_filters:
        stacked.sym[:, list(FILTER_ROWS)] = 0.0
    early = tuple(s for s in perps if venue.before_first(s, at[0]))
    return stacked, specs, early


def venue_inputs(layout: Layout, venue: Venue, spot_fee: float, cache: PrepareCache,
                 order_filters: bool = True):
    """``(Versions, Bars, funding rows, specs)`` of the run's columns under ``venue``; without
    ``order_filters`` the venue's quantity step, minimums and price tick are left out."""
    market = layout.market
    key = (id(market), id(venue), float(spot_fee), layout.spot, tuple(layout.held),
           bool(order_filters))
    if key not in cache.venue_inputs:
        versions, specs = rule_versions(venue, layout, spot_fee, order_filters)
        start = pd.Timestamp(int(market.index[0]), tz="UTC") if market.n_bars else None
        funding = venue_funding(venue, market, layout.names, start, layout.flat)
        if no_funding(funding):
            # no funding at all: no rows (the kernel reads a rate only where has_funding)
            funding = np.empty((0, market.n_symbols))
            has_funding, n_funding = np.zeros(market.n_bars, dtype=np.bool_), 0
        elif funding is market.funding_rate:
            # the market's own rates: their extremes in the same pass, for the data checks
            # (``suspicious.funding_beyond_bounds``), which read them from the cache
            funding = market_view(market, "funding_rate")
            has_funding, n_funding, largest, least = rows_with_extremes(funding)
            cache.funding_extremes[id(market)] = (market, largest, least)
        else:
            funding = read_view(funding, "funding_rate")
            has_funding, n_funding = rows_with_values(funding)
        bars = enums.Bars(
            *(market_view(market, name) for name in (
                "open", "close", "mark_open", "mark_high", "mark_low", "mark_close")),
            funding, has_funding, bar_hours(market.index, market.bar_ns))
        cache.venue_inputs[key] = (market, venue, versions, bars, int(n_funding), specs)
    return cache.venue_inputs[key][2:]


