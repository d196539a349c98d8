"""Margin math for linear contracts, one compiled function per rule.

A symbol's tier table is given as parallel 1-D arrays ``floors, caps, mmrs, cums``
(tier k holds notionals ``floors[k] < N <= caps[k]``, N = 0 in tier 0) and the
number ``n`` of tiers in use (tables of several symbols are padded to one width).

Maintenance margin is Binance's "tax bracket" form ``MM = N * mmr_k - cum_k``
(VENUES.md §2.3): continuous and convex in N, so for a fixed position the
margin balance minus MM is monotonic in the mark price, and a liquidation price
is unique. Everything here is plain floats and arrays so it runs unchanged under
``NUMBA_DISABLE_JIT=1``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def tier_index(notional, caps, n):
    """Index of the tier holding ``notional`` (``floor < N <= cap``); the last tier above it."""
    k = 0
    while k < n - 1 and notional > caps[k]:
        k += 1
    return k


@njit(cache=True)
def tier_index_from(notional, k, floors, caps, n):
    """Same as ``tier_index`` but starting from a cached guess ``k`` (O(1) when unchanged)."""
    while k < n - 1 and notional > caps[k]:
        k += 1
    while k > 0 and notional <= floors[k]:
        k -= 1
    return k


@njit(cache=True)
def maintenance_margin(notional, floors, caps, mmrs, cums, n):
    """Maintenance margin ``N * mmr_k - cum_k`` of a position of notional ``N`` (quote)."""
    k = tier_index(notional, caps, n)
    return notional * mmrs[k] - cums[k]


@njit(cache=True)
def derive_cums(floors, mmrs, n):
    """``cum_k = cum_{k-1} + floor_k * (mmr_k - mmr_{k-1})``, cum_0 = 0 (VENUES.md §2.3)."""
    cums = np.zeros(floors.shape[0])
    for k in range(1, n):
        cums[k] = cums[k - 1] + floors[k] * (mmrs[k] - mmrs[k - 1])
    return cums


@njit(cache=True)
def liquidation_price(qty, entry_price, collateral, floors, caps, mmrs, cums, n):
    """Mark price at which ``collateral + qty * (P - entry) == MM(|qty| * P)``.

    ``collateral`` is what backs the position with everything else frozen:
    for an isolated position its margin; for a cross position
    ``wallet_balance - MM of the other cross positions + their unrealized PnL``
    (Binance's ``WB - TMM1 + UPNL1``). This is Binance's published one-way
    formula ``(WB - TMM1 + UPNL1 + cum - s*Q*EP) / (Q*MMR - s*Q)`` with the tier
    taken AT the liquidation price (VENUES.md §2.5 bracket rule): every tier's
    candidate is tried and the one whose own notional lands in it is kept; the
    root is unique because MM is continuous and convex in P.

    Returns NaN for a flat position. A long that cannot be liquidated at any
    positive price returns a value <= 0 (Binance shows "--"); a short that cannot
    be liquidated (collateral covers any rise) returns +inf.
    """
    if qty == 0.0:
        return np.nan
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    first = np.nan
    for k in range(n):
        denom = q * mmrs[k] - side * q
        if denom == 0.0:
            # mmr == 1 on a short: MM grows exactly as fast as the loss; never triggers
            continue
        price = (collateral + cums[k] - side * q * entry_price) / denom
        if k == 0:
            first = price
        notional = q * price
        if price <= 0.0:
            # a long whose trigger is at or below zero: never liquidated
            if side > 0.0 and k == 0:
                return price
            continue
        if (k == 0 or notional > floors[k]) and (k == n - 1 or notional <= caps[k]):
            return price
    if side < 0.0:
        return np.inf
    return first


@njit(cache=True)
def bankruptcy_price(qty, entry_price, collateral):
    """Mark price at which ``collateral + qty * (P - entry) == 0`` (equity zero)."""
    if qty == 0.0:
        return np.nan
    return entry_price - collateral / qty


@njit(cache=True)
def initial_margin(qty, entry_price, leverage):
    """Initial margin ``|q| * entry / leverage`` locked by a position."""
    return abs(qty) * entry_price / leverage
