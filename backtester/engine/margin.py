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

# Compiled without NRT (``_nrt=False``): these functions allocate nothing, and
# without NRT numba does not reference-count the arrays they receive. That count
# is atomic and costs ~75 ns per call, more than most of these functions' work.

@njit(cache=True, _nrt=False)
def tier_index(notional, caps, n):
    """Index of the tier holding ``notional`` (``floor < N <= cap``); the last tier above it."""
    k = 0
    while k < n - 1 and notional > caps[k]:
        k += 1
    return k


@njit(cache=True, _nrt=False)
def tier_index_from(notional, k, floors, caps, n):
    """Same as ``tier_index`` but starting from a cached guess ``k`` (O(1) when unchanged)."""
    while k < n - 1 and notional > caps[k]:
        k += 1
    while k > 0 and notional <= floors[k]:
        k -= 1
    return k


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def liquidation_price(qty, entry_price, collateral, floors, caps, mmrs, cums, n):
    """Mark price at which ``collateral + qty * (P - entry) == MM(|qty| * P)``.

    ``collateral`` is what backs the position with everything else frozen:
    for an isolated position its margin; for a cross position
    ``wallet_balance - MM of the other cross positions + their unrealized PnL``
    (Binance's ``WB - TMM1 + UPNL1``). This is Binance's published one-way
    formula ``(WB - TMM1 + UPNL1 + cum - s*Q*EP) / (Q*MMR - s*Q)`` with the tier
    taken AT the liquidation price (VENUES.md §2.5 bracket rule).

    The trigger value ``f(P) = collateral + s*Q*(P - EP) - MM(Q*P)`` is strictly
    monotone in P while every MMR < 1 (rising for a long, falling for a short), so
    the root is unique and its tier is the first one whose upper boundary already
    lies on the liquidated side; the formula is then evaluated once with that
    tier. Deciding the tier from the sign of f at the boundaries (not from where
    each tier's candidate lands) cannot miss when the root sits on a boundary.

    Returns NaN for a flat position. A value <= 0 means the trigger holds at no
    positive price for a long (never liquidated; Binance shows "--") and at every
    positive price for a short (``collateral + Q*EP <= 0``: already liquidatable).
    With MMR < 1 a short always has a finite liquidation price.
    """
    return liquidation_price_plus(qty, entry_price, collateral, floors, caps, mmrs, cums, n, 0.0)


@njit(cache=True, _nrt=False)
def liquidation_price_plus(qty, entry_price, collateral, floors, caps, mmrs, cums, n,
                           extra_rate):
    """``liquidation_price`` with ``extra_rate`` added to every tier's rate: the requirement
    is ``MM(|qty| * P) + extra_rate * |qty| * P`` (OKX adds its liquidation fee rate)."""
    if qty == 0.0:
        return np.nan
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    k = 0
    while k < n - 1:
        cap = caps[k]
        # f at P = cap / q, using tier k's own line (MM is continuous at the cap)
        trigger_at_cap = collateral + side * (cap - q * entry_price) - (
            cap * (mmrs[k] + extra_rate) - cums[k])
        if side * trigger_at_cap >= 0.0:
            break
        k += 1
    return (collateral + cums[k] - side * q * entry_price) / (
        q * (mmrs[k] + extra_rate) - side * q)


@njit(cache=True, _nrt=False)
def bankruptcy_price(qty, entry_price, collateral):
    """Mark price at which ``collateral + qty * (P - entry) == 0`` (equity zero)."""
    if qty == 0.0:
        return np.nan
    return entry_price - collateral / qty


@njit(cache=True, _nrt=False)
def initial_margin(qty, entry_price, leverage):
    """Initial margin ``|q| * entry / leverage`` locked by a position."""
    return abs(qty) * entry_price / leverage
