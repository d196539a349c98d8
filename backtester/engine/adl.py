"""Auto-deleveraging forced on a run: the compiled close, and how a run is paused for it.

The bar loop never deleverages by itself (a single account's backtest cannot know the
venue's queue, VENUES.md §6.5); a stress scenario (``backtester.risk.adl_stress``)
forces it at one bar. The run is paused after that bar's close (``driver.Pause``),
``deleverage`` closes the position, the bar's record is written again, and the run goes
on. Numpy and numba only.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .account import reduce_position, refresh_liq_price
from .driver import Pause, _grown, compile_callback
from .enums import Account, Count, FillReason, State
from .kernel import mark_to_market, record_positions
from .records import record_fill


@njit(cache=True, error_model='numpy', _nrt=False)
def deleverage(t, i, fee_rate, book, records, outputs):
    """Close column i's whole position at its mark, as the venue's auto-deleveraging does,
    paying ``fee_rate`` of the closed notional (0 on Binance; Bybit's maker fee, VENUES.md
    §3.8), and record the fill (``FillReason.ADL``). An isolated position's margin goes
    back to the wallet with the realized PnL. Returns ``(qty closed, price, realized PnL,
    fee)``. The bar's account record is then written again (``kernel.mark_to_market``),
    and its positions and liquidation prices where the run records them.

    The venue fills ADL at the bankruptcy price of the liquidated counterparty, which a
    single account's backtest cannot know; the mark at the close is the neutral choice.
    """
    state = book.state
    q = state[State.QTY, i]
    price = state[State.MARK, i]
    realized, fee = reduce_position(i, -q, price, fee_rate, book)
    record_fill(records.fills, records.counts, t, i, -q, price, fee, realized, 0.0,
                FillReason.ADL)
    refresh_liq_price(i, book)
    book.account[Account.EQUITY_PREV] = mark_to_market(t, book, outputs.out)[0]
    if outputs.liq_prices.shape[0] > 0:
        record_positions(t, book, outputs)
    return -q, price, realized, fee


def adl_pause(bar: int, column: int, fee_rate: float, clear_orders: bool, done: list) -> Pause:
    """A ``driver.Pause`` that deleverages ``column`` after bar ``bar``'s close: the position
    is closed (``deleverage``), the bar's account record (and positions and margins, where
    recorded) is written again without it, and, with ``clear_orders``, a callback's orders
    for that column pending for the next fill are dropped. ``(qty, price, realized, fee)``
    of the close is appended to ``done``."""

    def action(book, records, outputs, orders):
        t, i = np.int64(bar), np.int64(column)
        counts = records.counts
        if counts[Count.FILLS] >= records.fills.shape[0]:
            records = records._replace(fills=_grown(records.fills, counts[Count.FILLS] + 1))
        done.append(deleverage(t, i, float(fee_rate), book, records, outputs))
        if clear_orders and orders is not None:
            orders[:, column] = np.nan
        return records

    return Pause(bar, action)


def without_orders_for(function, column: int, first_bar: int):
    """A strategy callback that runs ``function`` (a Python or ``@njit`` callback) and then
    drops every order it wrote for ``column`` from bar ``first_bar`` on: the strategy goes
    on, that column stays as it is. Compiled for the kernel (``driver.compile_callback``)."""
    strategy = njit(boundscheck=True)(getattr(function, "py_func", function))
    column, first_bar = int(column), int(first_bar)

    def callback(t, ctx, orders, params):
        wrote = strategy(t, ctx, orders, params)
        if t >= first_bar:
            for f in range(orders.shape[0]):
                orders[f, column] = np.nan
        return wrote

    return compile_callback(callback)
