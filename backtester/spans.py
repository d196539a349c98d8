"""Symbols whose histories differ: the notes a run records about them.

By default each symbol trades from its first bar to its last (``load_market``'s
``align="union"``): before its first bar it has no price, so the strategy's orders for it
are refused (``no_price``) while the other symbols trade, which can turn a hedge into a
one-sided position. A run says so in its ``warnings``, with the count of orders refused.
``load_market(align="common")`` (CLI ``--common-window``) trims the market to the window in
which every symbol has data instead. A position on a symbol whose data end before the
market's last bar is closed at its last close (the kernel's ``FillReason.DATA_END``), and the
run says so too.
"""

from __future__ import annotations

import warnings

import numpy as np

from .data.market import Market
from .data.validate import DataWarning, fmt_ts
from .engine.enums import FillReason, Reject


def first_bars(close: np.ndarray) -> np.ndarray:
    """Per column, the row of its first price (the number of rows when it has none)."""
    has = close == close
    return np.where(has.any(axis=0), np.argmax(has, axis=0), close.shape[0])


def late_start_notes(market: Market, rejections: np.ndarray) -> list[str]:
    """One note per symbol whose data begins after the market's first bar: its first bar,
    and how many of its orders before then were refused for want of a price."""
    notes = []
    late = np.flatnonzero(market.close[0] != market.close[0]) if market.n_bars else []
    if not len(late):  # every symbol has the first bar: nothing to scan (run()'s common case)
        return notes
    first = first_bars(market.close[:, late])
    for k, i in enumerate(late):
        symbol, t = market.symbols[i], int(first[k])
        if t == 0 or t >= market.n_bars:
            continue
        refused = int(np.count_nonzero((rejections["symbol"] == i)
                                       & (rejections["reason"] == Reject.NO_PRICE)
                                       & (rejections["bar"] < t)))
        notes.append(
            f"{symbol}: its data begin at {fmt_ts(market.index[t])}, after the run's start "
            f"({fmt_ts(market.index[0])}); it trades from then. {refused} of its orders before "
            "then were refused (no_price)" + (
                ", so the other symbols traded without it (a hedge was one-sided)"
                if refused else "")
            + "; load_market(align='common') or --common-window starts where every symbol "
            "has data")
    return notes


def data_end_notes(market: Market, fills: np.ndarray, rejections: np.ndarray) -> list[str]:
    """One note per position closed because its symbol's data end before the market's last
    bar (fill reason ``data_end``): where, at what price and fee, and how many of its orders
    after were refused for want of a price."""
    notes = []
    if not market.n_bars or not np.isnan(market.close[-1]).any():
        return notes  # every symbol has the last bar: no fill to scan (run()'s common case)
    for k in np.flatnonzero(fills["reason"] == FillReason.DATA_END):
        f = fills[k]
        t, i = int(f["bar"]), int(f["symbol"])
        refused = int(np.count_nonzero((rejections["symbol"] == i)
                                       & (rejections["reason"] == Reject.NO_PRICE)
                                       & (rejections["bar"] > t)))
        last = market.close[t, i]
        price = (f"at its last close {last:g}" if f["price"] == last else
                 f"at {f['price']:g}, its last close {last:g} with the run's slippage")
        notes.append(
            f"{market.symbols[i]}: its data end at {fmt_ts(market.index[t])}, before the run's "
            f"last bar ({fmt_ts(market.index[-1])}); its position of {-f['qty']:g} was closed "
            f"{price} (fill reason data_end, fee {f['fee']:.6g}). "
            f"{refused} of its orders after were refused (no_price)" + (
                ", so the other symbols traded without it (a hedge was one-sided)"
                if refused else ""))
    return notes


def warn_all(notes: list[str]) -> None:
    """Issue each note as a DataWarning at the caller of ``run()``."""
    for text in notes:
        warnings.warn(text, DataWarning, stacklevel=4)
