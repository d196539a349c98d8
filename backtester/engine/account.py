"""The account's rules, one compiled function each: valuation, fills, funding.

State lives in the arrays laid out in ``enums`` (``state`` (N_STATE, N),
``account`` (N_ACCOUNT,), ``tiers`` (N_TIER_FIELDS, N, K), ``sym``
(N_SYMBOL_FIELDS, N)); every function takes them and the symbol index ``i``.
The definitions are DESIGN.md §3's:

- unrealized PnL ``U_i = q_i * (P - E_i)``; initial margin ``|q_i| * E_i / lev_i``
- cross margin balance ``MB = WB + sum(U_i, cross)``
- available balance ``MB - sum(IM_i, cross)``
- equity ``WB + sum(M_i, isolated) + sum(U_i, all)``

A spot holding (mode ``SPOT``) is kept like an isolated position at 1x: its cost
``q * E`` sits in ``S_ISO_MARGIN`` (so equity is ``WB + q * P`` for it), it is
left out of every cross sum and of the liquidation checks, and it pays no funding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .enums import (
    A_WALLET,
    CROSS,
    ISOLATED,
    S_ENTRY,
    S_ISO_MARGIN,
    S_LIQ_PX,
    S_MARK,
    S_QTY,
    SPOT,
    SYM_LEVERAGE,
    TIER_CAP,
    TIER_CUM,
    TIER_FLOOR,
    TIER_MMR,
)
from .margin import liquidation_price

# Compiled without NRT (``_nrt=False``): these functions allocate nothing, and
# without NRT numba does not reference-count the arrays they receive. That count
# is atomic and costs ~75 ns per call, more than most of these functions' work.

@njit(cache=True, _nrt=False)
def tier_at(notional, i, tiers, n_tiers):
    """Tier of symbol i that holds ``notional`` (floor < N <= cap; the last tier above it)."""
    k = 0
    n = n_tiers[i]
    while k < n - 1 and notional > tiers[TIER_CAP, i, k]:
        k += 1
    return k


@njit(cache=True, _nrt=False)
def position_maintenance(i, notional, tiers, n_tiers):
    """Maintenance margin ``N * mmr_k - cum_k`` of symbol i's position of notional ``N``."""
    k = tier_at(notional, i, tiers, n_tiers)
    return notional * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]


@njit(cache=True, _nrt=False)
def available_balance(state, mode, sym, account):
    """Balance free for new orders, ``MB - sum(IM_i, cross)``, at the current marks."""
    total = account[A_WALLET]
    for i in range(state.shape[1]):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            entry = state[S_ENTRY, i]
            total += q * (state[S_MARK, i] - entry) - abs(q) * entry / sym[SYM_LEVERAGE, i]
    return total


@njit(cache=True, _nrt=False)
def account_equity(state, account, prices):
    """Equity ``WB + sum(M_i, isolated) + sum(U_i, all)`` with every symbol at ``prices``."""
    total = account[A_WALLET]
    for i in range(state.shape[1]):
        total += state[S_ISO_MARGIN, i]
        q = state[S_QTY, i]
        if q != 0.0:
            total += q * (prices[i] - state[S_ENTRY, i])
    return total


@njit(cache=True, _nrt=False)
def cross_trigger_value(state, mode, tiers, n_tiers, account, prices):
    """``MB - sum(MM_i)`` of the cross account at ``prices``: liquidation when <= 0."""
    total = account[A_WALLET]
    for i in range(state.shape[1]):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            notional = abs(q) * prices[i]
            total += q * (prices[i] - state[S_ENTRY, i]) - position_maintenance(
                i, notional, tiers, n_tiers
            )
    return total


@njit(cache=True, _nrt=False)
def has_cross_position(state, mode):
    for i in range(state.shape[1]):
        if state[S_QTY, i] != 0.0 and mode[i] == CROSS:
            return True
    return False


@njit(cache=True, _nrt=False)
def refresh_liq_price(i, state, mode, tiers, n_tiers):
    """Recompute the cached liquidation price of symbol i (NaN unless isolated and open)."""
    q = state[S_QTY, i]
    if q == 0.0 or mode[i] != ISOLATED:
        state[S_LIQ_PX, i] = np.nan
        return
    state[S_LIQ_PX, i] = liquidation_price(
        q, state[S_ENTRY, i], state[S_ISO_MARGIN, i], tiers[TIER_FLOOR, i], tiers[TIER_CAP, i],
        tiers[TIER_MMR, i], tiers[TIER_CUM, i], n_tiers[i],
    )


@njit(cache=True, _nrt=False)
def apply_funding(i, rate, mark, state, mode, account):
    """Settle one funding payment ``q * mark * rate`` (> 0: the account pays).

    Cross positions pay from the wallet, isolated ones from their own margin
    (which moves their liquidation price).
    """
    payment = state[S_QTY, i] * mark * rate
    if mode[i] == ISOLATED:
        state[S_ISO_MARGIN, i] -= payment
    else:
        account[A_WALLET] -= payment
    return payment


@njit(cache=True, _nrt=False)
def reduce_position(i, close_qty, price, fee_rate, state, mode, account):
    """Close ``close_qty`` (opposite sign to the position) at ``price``; returns (realized, fee).

    Realized PnL and the released share of an isolated margin (or of a spot
    holding's cost) go to the wallet; the taker fee is paid from it.
    """
    q = state[S_QTY, i]
    realized = -close_qty * (price - state[S_ENTRY, i])
    fee = abs(close_qty) * price * fee_rate
    if mode[i] != CROSS:
        released = state[S_ISO_MARGIN, i] * abs(close_qty) / abs(q)
        state[S_ISO_MARGIN, i] -= released
        account[A_WALLET] += released
    account[A_WALLET] += realized - fee
    q += close_qty
    if abs(q) <= 1e-12 * abs(close_qty):
        q = 0.0
    state[S_QTY, i] = q
    if q == 0.0:
        state[S_ENTRY, i] = 0.0
        # rounding dust of the released margin goes back to the wallet
        account[A_WALLET] += state[S_ISO_MARGIN, i]
        state[S_ISO_MARGIN, i] = 0.0
    return realized, fee


@njit(cache=True, _nrt=False)
def increase_position(i, open_qty, price, fee_rate, state, mode, sym, account):
    """Open or add ``open_qty`` (same sign as the position, or from flat) at ``price``.

    The entry price becomes the volume-weighted average. An isolated position
    moves its initial margin ``|dq| * price / lev`` from the wallet into its own
    margin (a spot holding, at leverage 1, moves its whole cost). Returns the fee
    paid.
    """
    fee = abs(open_qty) * price * fee_rate
    old = abs(state[S_QTY, i])
    add = abs(open_qty)
    state[S_ENTRY, i] = (old * state[S_ENTRY, i] + add * price) / (old + add)
    state[S_QTY, i] += open_qty
    if mode[i] != CROSS:
        im = add * price / sym[SYM_LEVERAGE, i]
        state[S_ISO_MARGIN, i] += im
        account[A_WALLET] -= im
    account[A_WALLET] -= fee
    return fee


@njit(cache=True, _nrt=False)
def removable_margin(i, state, sym):
    """Isolated margin that position i can give back: what exceeds its initial margin at
    the mark, counting an unrealized loss but not a profit (Binance's rule for margin
    removal: the position keeps ``|q| * mark / lev`` plus its loss)."""
    q = state[S_QTY, i]
    mark = state[S_MARK, i]
    upnl = q * (mark - state[S_ENTRY, i])
    free = state[S_ISO_MARGIN, i] + min(upnl, 0.0) - abs(q) * mark / sym[SYM_LEVERAGE, i]
    return max(free, 0.0)


@njit(cache=True, _nrt=False)
def position_liquidation_price(i, state, mode, tiers, n_tiers, account):
    """Mark price at which symbol i's position is liquidated, everything else fixed.

    Isolated: the cached price. Cross: Binance's formula with the other cross
    positions frozen at their marks (collateral ``WB - TMM1 + UPNL1``). NaN for a
    flat symbol or a spot holding (never liquidated).
    """
    q = state[S_QTY, i]
    if q == 0.0 or mode[i] == SPOT:
        return np.nan
    if mode[i] == ISOLATED:
        return state[S_LIQ_PX, i]
    others_mm = 0.0
    others_upnl = 0.0
    for j in range(state.shape[1]):
        qj = state[S_QTY, j]
        if j != i and qj != 0.0 and mode[j] == CROSS:
            mark = state[S_MARK, j]
            others_mm += position_maintenance(j, abs(qj) * mark, tiers, n_tiers)
            others_upnl += qj * (mark - state[S_ENTRY, j])
    collateral = account[A_WALLET] - others_mm + others_upnl
    return liquidation_price(q, state[S_ENTRY, i], collateral, tiers[TIER_FLOOR, i],
                             tiers[TIER_CAP, i], tiers[TIER_MMR, i], tiers[TIER_CUM, i],
                             n_tiers[i])
