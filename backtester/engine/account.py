"""Account state and the rules that change it: fills, funding, liquidation.

The account is a handful of length-N arrays (one slot per symbol) plus the
wallet balance, bundled in a ``state`` float array and a few per-symbol arrays
so that every function here takes plain arrays and scalars:

- ``qty[i]``: signed position in base units; ``entry[i]``: its average entry price
- ``iso_margin[i]``: margin parked in an isolated position (0 for cross)
- ``liq_px[i]``: cached liquidation price of an isolated position (NaN if none)
- ``tier[i]``: cached tier index of the position's notional
- ``wallet[0]``: the wallet balance WB (deposits + realized - fees - funding,
  excluding isolated margin), in a length-1 array so functions can update it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .enums import CROSS, ISOLATED
from .margin import initial_margin, liquidation_price, tier_index, tier_index_from


@njit(cache=True)
def unrealized_pnl(qty, entry, price):
    """Unrealized PnL ``q * (P - E)`` of a linear position."""
    return qty * (price - entry)


@njit(cache=True)
def cross_margin_balance(wallet, qty, entry, mode, mark):
    """Margin balance of the cross account: ``WB + sum(U_i, cross)``."""
    total = wallet
    for i in range(qty.shape[0]):
        if qty[i] != 0.0 and mode[i] == CROSS:
            total += qty[i] * (mark[i] - entry[i])
    return total


@njit(cache=True)
def available_balance(wallet, qty, entry, mode, leverage, mark):
    """Balance free for new orders: ``MB - sum(IM_i, cross)`` (DESIGN.md §3)."""
    total = wallet
    for i in range(qty.shape[0]):
        if qty[i] != 0.0 and mode[i] == CROSS:
            total += qty[i] * (mark[i] - entry[i]) - initial_margin(qty[i], entry[i], leverage[i])
    return total


@njit(cache=True)
def account_equity(wallet, qty, entry, iso_margin, mark):
    """Equity ``WB + sum(M_i, isolated) + sum(U_i, all)``."""
    total = wallet
    for i in range(qty.shape[0]):
        total += iso_margin[i]
        if qty[i] != 0.0:
            total += qty[i] * (mark[i] - entry[i])
    return total


@njit(cache=True)
def cross_trigger_value(wallet, qty, entry, mode, prices, floors, caps, mmrs, cums, n_tiers):
    """``MB - sum(MM_i)`` of the cross account at ``prices``; liquidation when <= 0."""
    total = wallet
    for i in range(qty.shape[0]):
        if qty[i] != 0.0 and mode[i] == CROSS:
            notional = abs(qty[i]) * prices[i]
            k = tier_index(notional, caps[i], n_tiers[i])
            total += qty[i] * (prices[i] - entry[i]) - (notional * mmrs[i, k] - cums[i, k])
    return total


@njit(cache=True)
def refresh_isolated_liq_price(i, qty, entry, iso_margin, liq_px, floors, caps, mmrs, cums,
                               n_tiers):
    """Recompute the cached liquidation price of symbol i (NaN unless isolated and open)."""
    if qty[i] == 0.0:
        liq_px[i] = np.nan
    else:
        liq_px[i] = liquidation_price(
            qty[i], entry[i], iso_margin[i], floors[i], caps[i], mmrs[i], cums[i], n_tiers[i]
        )


@njit(cache=True)
def apply_funding(i, rate, mark, qty, mode, iso_margin, wallet):
    """Settle one funding payment ``q * mark * rate`` (> 0: the account pays).

    Cross positions pay from the wallet; isolated ones from their own margin
    (Binance: "isolated positions pay from the isolated wallet").
    """
    payment = qty[i] * mark * rate
    if mode[i] == ISOLATED:
        iso_margin[i] -= payment
    else:
        wallet[0] -= payment
    return payment


@njit(cache=True)
def reduce_position(i, close_qty, price, fee_rate, qty, entry, mode, iso_margin, wallet):
    """Close ``close_qty`` (opposite sign to the position) at ``price``.

    Realized PnL and the released share of an isolated margin go to the
    wallet; the taker fee is paid from it. Returns (realized, fee).
    """
    realized = -close_qty * (price - entry[i])
    fee = abs(close_qty) * price * fee_rate
    if mode[i] == ISOLATED:
        released = iso_margin[i] * abs(close_qty) / abs(qty[i])
        iso_margin[i] -= released
        wallet[0] += released
    wallet[0] += realized - fee
    qty[i] += close_qty
    if abs(qty[i]) <= 1e-12 * abs(close_qty):
        qty[i] = 0.0
    if qty[i] == 0.0:
        entry[i] = 0.0
        if mode[i] == ISOLATED:
            # rounding dust of the released margin goes back to the wallet
            wallet[0] += iso_margin[i]
            iso_margin[i] = 0.0
    return realized, fee


@njit(cache=True)
def increase_position(i, open_qty, price, fee_rate, leverage, qty, entry, mode, iso_margin, wallet):
    """Open or add ``open_qty`` (same sign as the position, or from flat) at ``price``.

    The entry price becomes the volume-weighted average; an isolated position
    moves its initial margin ``|dq| * price / lev`` from the wallet into its own
    margin. Returns the fee paid.
    """
    fee = abs(open_qty) * price * fee_rate
    old = abs(qty[i])
    add = abs(open_qty)
    entry[i] = (old * entry[i] + add * price) / (old + add)
    qty[i] += open_qty
    if mode[i] == ISOLATED:
        im = add * price / leverage
        iso_margin[i] += im
        wallet[0] -= im
    wallet[0] -= fee
    return fee


@njit(cache=True)
def tier_after(i, notional, tier, floors, caps, n_tiers):
    """Update and return the cached tier of symbol i for ``notional``."""
    tier[i] = tier_index_from(notional, tier[i], floors[i], caps[i], n_tiers[i])
    return tier[i]
