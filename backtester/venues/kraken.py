"""Kraken spot margin (and Kraken Futures' inverse liquidation): VENUES.md §5.

Spot margin is "cross" in the spot sense: every margin position is a borrowing
backed by one trade balance.

- A long borrows the quote to buy: its used margin is its cost / leverage,
  fixed at opening. A short borrows the base to sell: its used margin is
  ``Q / leverage`` of the BASE, revalued at the current price.
- ``equity = trade balance + unrealized P/L``; ``margin level = equity / used
  margin``: below 100% no new positions, at 80% a margin call (Kraken may
  liquidate, FIFO), at 40% automatic liquidation.
- Borrowing costs an opening fee once and a rollover fee every 4 hours (from
  the 4th hour on), both rates of the amount lent.

Compiled functions take plain floats and arrays (no allocation, ``_nrt=False``)
and run under ``NUMBA_DISABLE_JIT=1``.

Example (VENUES.md E-K2: 1 BTC long at 20,000, 5:1, on a 10,000 trade balance):
    >>> from backtester.venues import kraken
    >>> kraken.margin_level_price(1.0, 20_000.0, 5.0, 10_000.0, 0.4, 0.0, 0.0)  # 40% level
    11600.0
    >>> round(kraken.rollover_fees(16_000.0, 0.00025, 24.0, 4.0), 2)  # E-K5: six rollovers
    24.0
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, _nrt=False)
def used_margin(qty, entry_price, price, leverage):
    """Margin a position uses, in quote: long ``Q*EP/L`` (its cost, fixed), short ``Q*P/L``
    (``Q/L`` of the borrowed base, revalued at ``price``)."""
    if qty > 0.0:
        return qty * entry_price / leverage
    return -qty * price / leverage


@njit(cache=True, _nrt=False)
def margin_level(equity, used):
    """``equity / used margin`` (1.0 = 100%); inf without used margin."""
    if used <= 0.0:
        return np.inf
    return equity / used


@njit(cache=True, _nrt=False)
def account_margin_level(trade_balance, qtys, entries, prices, leverages):
    """Margin level of the account over every open margin position (arrays of N)."""
    equity = trade_balance
    used = 0.0
    for i in range(qtys.shape[0]):
        q = qtys[i]
        if q == 0.0:
            continue
        equity += q * (prices[i] - entries[i])
        used += used_margin(q, entries[i], prices[i], leverages[i])
    return margin_level(equity, used)


@njit(cache=True, _nrt=False)
def margin_level_price(qty, entry_price, leverage, trade_balance, level, other_equity,
                       other_used):
    """Price at which the account's margin level reaches ``level``, the others frozen.

    ``trade_balance + other_equity + s*Q*(P - EP) = level*(other_used + used(P))``;
    ``other_equity`` is the other positions' unrealized P/L and ``other_used``
    their used margin. Long: ``P = EP + (level*(U' + Q*EP/L) - TB')/Q``; short:
    ``P = (TB' + Q*EP - level*U') / (Q*(1 + level/L))``. NaN if flat.
    """
    if qty == 0.0:
        return np.nan
    balance = trade_balance + other_equity
    if qty > 0.0:
        return entry_price + (level * (other_used + qty * entry_price / leverage) - balance) / qty
    q = -qty
    return (balance + q * entry_price - level * other_used) / (q * (1.0 + level / leverage))


@njit(cache=True, _nrt=False)
def borrowed_amount(qty, price):
    """What Kraken lends for a position opened at ``price``: a long borrows its cost in
    quote, a short its size in base (the collateral is not deducted, §5.1)."""
    if qty > 0.0:
        return qty * price
    return -qty


@njit(cache=True, _nrt=False)
def opening_fee(borrowed, rate):
    """The margin opening fee, charged once: ``rate`` of the amount borrowed."""
    return borrowed * rate


@njit(cache=True, _nrt=False)
def rollover_count(hours_held, period_hours):
    """Rollover fees charged after ``hours_held``: one per full period, from the first one's
    end (Kraken: every 4 hours, starting after the first 4 hours)."""
    if hours_held <= 0.0:
        return 0
    return int(math.floor(hours_held / period_hours + 1e-9))


@njit(cache=True, _nrt=False)
def rollover_fees(borrowed, rate, hours_held, period_hours):
    """Total rollover fees on ``borrowed`` held for ``hours_held``: amount x rate x periods."""
    return borrowed * rate * rollover_count(hours_held, period_hours)


# --- Kraken Futures (inverse, multi-collateral wallet), §5.2 --------------------------------


@njit(cache=True, _nrt=False)
def futures_inverse_liquidation_price(contracts, entry_price, collateral, mm_rate):
    """Inverse contract (1 contract = 1 USD) liquidation price, MM on the value at MARK.

    Portfolio value ``C + s*Qc*(1/EP - 1/P)`` meets ``mm_rate * Qc/P``: long
    ``P = Qc*(1 + mm) / (C + Qc/EP)``, short ``P = Qc*(1 - mm) / (Qc/EP - C)``.
    """
    if contracts == 0.0:
        return np.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    return q * (1.0 + side * mm_rate) / (q / entry_price + side * collateral)


@njit(cache=True, _nrt=False)
def futures_inverse_bankruptcy_price(contracts, entry_price, collateral):
    """Where the inverse position's portfolio value reaches 0 (the EPP's IOC limit)."""
    return futures_inverse_liquidation_price(contracts, entry_price, collateral, 0.0)
