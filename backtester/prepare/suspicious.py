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

from ..data.market import Market
from ..data.validate import fmt_ts
from ..venues import Venue
from .versions import version_bars

MARK_DISTANCE = 0.5  # |mark close / close - 1| above this is suspicious
FUNDING_SANITY = 0.1  # |rate| per interval above this is suspicious where no cap is known


def funding_beyond_bounds(market: Market, venue: Venue, skip=()) -> list[str]:
    """One warning per symbol with funding rates outside the venue's bounds in force then.

    ``skip``: symbols that pay no funding in this run (spot holdings)."""
    out = []
    index = market.index
    n_bars = market.n_bars
    for i, symbol in enumerate(market.symbols):
        rates = market.funding_rate[:, i]
        given = np.isfinite(rates)
        if symbol in skip or not given.any():
            continue
        cap, floor = np.full(n_bars, FUNDING_SANITY), np.full(n_bars, -FUNDING_SANITY)
        published = np.zeros(n_bars, dtype=bool)
        starts = [0, *version_bars(venue, market, [symbol])]
        for a, b in zip(starts, [*starts[1:], n_bars], strict=True):
            spec = venue.spec(symbol, pd.Timestamp(int(index[a]), tz="UTC"))
            if spec.funding_interval_hours == 0:  # no funding on this venue: never paid
                given[a:b] = False
            if spec.funding_rate_cap is not None:
                cap[a:b] = spec.funding_rate_cap
                published[a:b] = True
            if spec.funding_rate_floor is not None:
                floor[a:b] = spec.funding_rate_floor
        slack = 1e-12  # a rate printed exactly at the cap is within it
        beyond = given & ((rates > cap + slack) | (rates < floor - slack))
        if beyond.any():
            t = int(np.argmax(beyond))
            whose = (f"{venue.name}'s bounds for it" if published[t] else
                     f"the plausible bounds ({venue.name} publishes no cap for it)")
            out.append(
                f"{symbol}: {int(beyond.sum())} funding rate(s) outside {whose}, first "
                f"{rates[t]:g} at {fmt_ts(index[t])} (bounds {floor[t]:g} .. {cap[t]:g}); "
                "rates are decimal fractions per funding interval (0.0001 = 0.01%): check the "
                "funding data")
    return out


def mark_far_from_last(market: Market) -> list[str]:
    """One warning per symbol whose mark close is more than ``MARK_DISTANCE`` away from its
    close at some bar."""
    out = []
    if market.mark_close is market.close:
        return out
    with np.errstate(invalid="ignore", divide="ignore"):
        distance = np.abs(market.mark_close / market.close - 1.0)
    far = distance > MARK_DISTANCE  # NaN (no bar) compares False
    for i in np.flatnonzero(far.any(axis=0)):
        t = int(np.argmax(far[:, i]))
        out.append(
            f"{market.symbols[i]}: the mark price is more than {MARK_DISTANCE:.0%} away from "
            f"the last price at {int(far[:, i].sum())} bar(s), first at "
            f"{fmt_ts(market.index[t])} (mark close {market.mark_close[t, i]:g}, close "
            f"{market.close[t, i]:g}); margin and liquidations follow the mark: check the "
            "mark-price data")
    return out


def suspicious_data(market: Market, venue: Venue, spot=()) -> tuple[str, ...]:
    """The warnings of a run on ``market`` under ``venue`` (``spot``: spot symbols)."""
    return tuple(funding_beyond_bounds(market, venue, skip=spot) + mark_far_from_last(market))
