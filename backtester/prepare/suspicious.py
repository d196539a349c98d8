"""Legal but suspicious data: a run goes ahead, and records a warning for each kind.

- a funding rate beyond the venue's bounds for that symbol and date
  (``SymbolSpec.funding_rate_cap`` / ``funding_rate_floor``, e.g. Binance BTCUSDT +-0.3%):
  a rate of 5.0 is almost surely a percentage or a unit slip, and it moves the wallet.
  Where the venue publishes no bound (Bybit, OKX, ``flat`` here), ``FUNDING_SANITY``
  (+-10% per interval) stands in: well above the widest caps known (+-2-3% on a few Binance
  symbols, VENUES.md §2.9);
- a mark price more than ``MARK_DISTANCE`` (50%) away from the last price of the same bar
  (their closes): exchanges keep the mark within a few percent of the index, and margin and
  liquidations follow the mark, so such a bar is almost surely a data error (a mark file of
  another symbol, a scale slip).

Each warning names the symbol, how many bars or funding times, and the first one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numba import njit

from ..data.market import Market, no_funding
from ..data.validate import fmt_ts
from ..engine.driver import rows_with_extremes, rows_with_values
from ..venues import Venue
from .common import market_view, read_view
from .versions import version_bars

MARK_DISTANCE = 0.5  # |mark close / close - 1| above this is suspicious
FUNDING_SANITY = 0.1  # |rate| per interval above this is suspicious where no cap is known


def funding_beyond_bounds(market: Market, venue: Venue, skip=(), extremes=None) -> list[str]:
    """One warning per symbol with funding rates outside the venue's bounds in force then.

    ``skip``: symbols that pay no funding in this run (spot holdings). ``extremes``: the
    largest and least of the market's rates, where known (``_all_within``)."""
    out = []
    index = market.index
    if no_funding(market.funding_rate):  # (no funding given)
        return out
    if _all_within(market.funding_rate, venue, [s for s in market.symbols if s not in skip],
                   extremes):
        return out
    rates_given = market_view(market, "funding_rate")
    funding_rows = np.flatnonzero(rows_with_values(rates_given)[0])  # funding times
    given = market.funding_rate[funding_rows]
    for i, symbol in enumerate(market.symbols):
        if symbol in skip:
            continue
        rates = given[:, i]
        paying = rates == rates
        rows, rates = funding_rows[paying], rates[paying]
        if not len(rows) or np.abs(rates).max() <= _narrowest_bound(venue, symbol):
            continue  # (inside every version's bounds: no version needs looking up)
        # the bounds of each version of the symbol's rules, and the version of each rate
        starts = [0, *version_bars(venue, market, [symbol])]
        specs = [venue.spec(symbol, pd.Timestamp(int(index[a]), tz="UTC")) for a in starts]
        paid = np.array([s.funding_interval_hours != 0 for s in specs])  # 0: no funding
        published = np.array([s.funding_rate_cap is not None for s in specs])
        cap = np.array([FUNDING_SANITY if s.funding_rate_cap is None else s.funding_rate_cap
                        for s in specs])
        floor = np.array([-FUNDING_SANITY if s.funding_rate_floor is None
                          else s.funding_rate_floor for s in specs])
        version = np.searchsorted(starts, rows, side="right") - 1
        slack = 1e-12  # a rate printed exactly at the cap is within it
        beyond = paid[version] & ((rates > cap[version] + slack)
                                  | (rates < floor[version] - slack))
        if beyond.any():
            k = int(np.argmax(beyond))
            t, v = rows[k], version[k]
            whose = (f"{venue.name}'s bounds for it" if published[v] else
                     f"the plausible bounds ({venue.name} publishes no cap for it)")
            out.append(
                f"{symbol}: {int(beyond.sum())} funding rate(s) outside {whose}, first "
                f"{rates[k]:g} at {fmt_ts(index[t])} (bounds {floor[v]:g} .. {cap[v]:g}); "
                "rates are decimal fractions per funding interval (0.0001 = 0.01%): check the "
                "funding data")
    return out


def _all_within(rates: np.ndarray, venue: Venue, symbols, extremes=None) -> bool:
    """Whether every rate of the market (NaN: none) lies within the narrowest bound of any
    version of any of ``symbols``' rules: then none is beyond its bounds (the rates'
    ``extremes``, NaN ignored, instead of each column's rates at its funding times; found
    here unless given: a run has them from the pass that finds its funding times)."""
    try:
        bound = min((_narrowest_bound(venue, s) for s in symbols), default=np.inf)
    except Exception:  # (a symbol the venue does not know: the closer look says what to do)
        return False
    if extremes is None:
        extremes = rows_with_extremes(read_view(rates, "funding_rate"))[2:]
    largest, least = extremes  # (-inf and inf: no rate at all)
    return bool(largest <= bound and -least <= bound)


def _narrowest_bound(venue: Venue, symbol: str) -> float:
    """The smallest bound on |funding rate| of any version of ``symbol``'s rules: a rate
    within it is within the bounds in force whenever it was paid (found once per venue and
    symbol)."""
    def narrowest() -> float:
        bounds = [FUNDING_SANITY]
        for spec in venue.table_of(symbol)[1]:
            bounds.append(FUNDING_SANITY if spec.funding_rate_cap is None
                          else spec.funding_rate_cap)
            bounds.append(FUNDING_SANITY if spec.funding_rate_floor is None
                          else -spec.funding_rate_floor)
        return min(bounds)
    return venue.memoised(("narrowest_funding_bound", symbol), narrowest)


@njit(cache=True, inline='always')
def is_far(mark, last, distance):
    """``|mark / last - 1| > distance`` without a division (False where either is NaN)."""
    return abs(mark - last) > distance * last


@njit(cache=True)
def far_marks(mark, last, distance):
    """Per column: how many bars have ``|mark / last - 1| > distance``, and the first (-1:
    none); bars without a price (NaN) are not counted. (A pass over the flat arrays first,
    without a branch: in a market of sound marks, the only one.)"""
    n_bars, n = last.shape
    count = np.zeros(n, dtype=np.int64)
    first = np.full(n, -1, dtype=np.int64)
    flat_mark, flat_last = mark.reshape(-1), last.reshape(-1)
    far = 0
    for k in range(flat_mark.shape[0]):
        far += is_far(flat_mark[k], flat_last[k], distance)
    if far == 0:
        return count, first
    for t in range(n_bars):
        for i in range(n):
            if is_far(mark[t, i], last[t, i], distance):
                count[i] += 1
                if first[i] < 0:
                    first[i] = t
    return count, first


def mark_far_from_last(market: Market) -> list[str]:
    """One warning per symbol whose mark close is more than ``MARK_DISTANCE`` away from its
    close at some bar."""
    out = []
    if market.mark_close is market.close:
        return out
    count, first = far_marks(market_view(market, "mark_close"), market_view(market, "close"),
                             MARK_DISTANCE)
    for i in np.flatnonzero(count):
        t = first[i]
        out.append(
            f"{market.symbols[i]}: the mark price is more than {MARK_DISTANCE:.0%} away from "
            f"the last price at {count[i]} bar(s), first at "
            f"{fmt_ts(market.index[t])} (mark close {market.mark_close[t, i]:g}, close "
            f"{market.close[t, i]:g}); margin and liquidations follow the mark: check the "
            "mark-price data")
    return out


def suspicious_data(market: Market, venue: Venue, spot=(), extremes=None) -> tuple[str, ...]:
    """The warnings of a run on ``market`` under ``venue`` (``spot``: spot symbols;
    ``extremes``: the largest and least funding rate, where known)."""
    return tuple(funding_beyond_bounds(market, venue, skip=spot, extremes=extremes)
                 + mark_far_from_last(market))
