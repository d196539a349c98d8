"""Steps 3 and 4 of a bar: the intrabar path and the liquidations along it.

Only called for a bar whose cheap bound says something might be liquidated.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .account import (
    account_equity,
    cross_trigger_value,
    has_cross_position,
)
from .enums import (
    A_EVENTS,
    A_WALLET,
    C_LIQS,
    CROSS,
    FILL_LIQUIDATION,
    ISOLATED,
    PATH_OHLC,
    PATH_WORST,
    S_ENTRY,
    S_ISO_MARGIN,
    S_LIQ_PX,
    S_MARK,
    S_QTY,
    SYM_LIQ_FEE,
)
from .records import record_fill, record_liquidation

# Compiled without NRT (``_nrt=False``): these functions allocate nothing, and
# without NRT numba does not reference-count the arrays they receive. That count
# is atomic and costs ~75 ns per call, more than most of these functions' work.

# --- steps 3 and 4: intrabar liquidation ------------------------------------------------


@njit(cache=True, _nrt=False)
def build_checkpoints(t, path, state, mark_open, mark_high, mark_low, mark_close, cp):
    """Fill ``cp[k, i]`` with the checkpoint prices of bar t; returns their count.

    ``path``: open -> low -> high -> close when close >= open, else open -> high
    -> low -> close; ``worst``: open -> each position's adverse extreme -> close;
    ``close``: open -> close. A symbol without a bar stays at its last mark.
    """
    n = state.shape[1]
    n_cp = 4 if path == PATH_OHLC else (3 if path == PATH_WORST else 2)
    for i in range(n):
        o = mark_open[t, i]
        if o != o:
            for k in range(n_cp):
                cp[k, i] = state[S_MARK, i]
            continue
        c = mark_close[t, i]
        cp[0, i] = o
        cp[n_cp - 1, i] = c
        if path == PATH_OHLC:
            if c >= o:
                cp[1, i] = mark_low[t, i]
                cp[2, i] = mark_high[t, i]
            else:
                cp[1, i] = mark_high[t, i]
                cp[2, i] = mark_low[t, i]
        elif path == PATH_WORST:
            q = state[S_QTY, i]
            cp[1, i] = mark_low[t, i] if q > 0.0 else (mark_high[t, i] if q < 0.0 else c)
    return n_cp


@njit(cache=True, _nrt=False)
def interpolate(a, b, s, out):
    """Prices a fraction ``s`` of the way along the straight segment a -> b."""
    for i in range(out.shape[0]):
        out[i] = a[i] + (b[i] - a[i]) * s


@njit(cache=True, _nrt=False)
def isolated_triggered(q, price, liq_px):
    """An isolated long triggers at or below its liquidation price, a short at or above."""
    if q > 0.0:
        return price <= liq_px
    return price >= liq_px


@njit(cache=True, _nrt=False)
def liquidate_isolated(t, i, price, gapped, prices, state, mode, sym, account, fills, liqs,
                       counts):
    """Close isolated position i at ``price``: it alone goes, its loss bounded by its margin.

    The liquidation fee is charged on the closed notional; what is left of the
    position's margin returns to the wallet; a loss beyond the margin is the
    bankruptcy shortfall (absorbed by the venue's insurance fund).
    """
    q = state[S_QTY, i]
    entry = state[S_ENTRY, i]
    margin = state[S_ISO_MARGIN, i]
    equity_before = account_equity(state, account, prices)
    realized = q * (price - entry)
    fee = abs(q) * price * sym[SYM_LIQ_FEE, i]
    remaining = margin + realized - fee
    shortfall = 0.0
    if remaining < 0.0:
        shortfall = -remaining
        remaining = 0.0
    event = int(account[A_EVENTS])
    account[A_EVENTS] += 1.0
    c = counts[C_LIQS]
    record_liquidation(liqs, counts, t, event, i, ISOLATED, q, entry, state[S_LIQ_PX, i], price,
                       fee, realized, margin - remaining, equity_before, shortfall, gapped)
    record_fill(fills, counts, t, i, -q, price, fee, realized, 0.0, FILL_LIQUIDATION)
    account[A_WALLET] += remaining
    state[S_QTY, i] = 0.0
    state[S_ENTRY, i] = 0.0
    state[S_ISO_MARGIN, i] = 0.0
    state[S_LIQ_PX, i] = np.nan
    liqs[c]["equity_after"] = account_equity(state, account, prices)


@njit(cache=True, _nrt=False)
def liquidate_cross(t, prices, gapped, state, mode, sym, account, fills, liqs, counts):
    """Close every cross position at ``prices``: the whole cross account goes together.

    The liquidation fee is charged on each closed notional; a wallet that would
    go negative is set to zero and the shortfall (bankruptcy) recorded, shared
    among the positions in proportion to their losses.
    """
    n = state.shape[1]
    equity_before = account_equity(state, account, prices)
    event = int(account[A_EVENTS])
    account[A_EVENTS] += 1.0
    first = counts[C_LIQS]
    total_loss = 0.0
    for i in range(n):
        q = state[S_QTY, i]
        if q == 0.0 or mode[i] != CROSS:
            continue
        price = prices[i]
        entry = state[S_ENTRY, i]
        realized = q * (price - entry)
        fee = abs(q) * price * sym[SYM_LIQ_FEE, i]
        account[A_WALLET] += realized - fee
        loss = fee - realized
        if loss > 0.0:
            total_loss += loss
        record_liquidation(liqs, counts, t, event, i, CROSS, q, entry, price, price, fee, realized,
                           loss, equity_before, 0.0, gapped)
        record_fill(fills, counts, t, i, -q, price, fee, realized, 0.0, FILL_LIQUIDATION)
        state[S_QTY, i] = 0.0
        state[S_ENTRY, i] = 0.0
    shortfall = 0.0
    if account[A_WALLET] < 0.0:
        shortfall = -account[A_WALLET]
        account[A_WALLET] = 0.0
    equity_after = account_equity(state, account, prices)
    for c in range(first, counts[C_LIQS]):
        loss = liqs[c]["margin_lost"]
        if shortfall > 0.0 and loss > 0.0:
            share = shortfall * loss / total_loss
            liqs[c]["shortfall"] = share
            liqs[c]["margin_lost"] = loss - share
        liqs[c]["equity_after"] = equity_after


@njit(cache=True, _nrt=False)
def cross_trigger_point(a, b, state, mode, tiers, n_tiers, account, out):
    """Fraction s in (0, 1] of the segment a -> b where the cross trigger first holds.

    ``MB - sum(MM)`` is concave along a straight segment (MM is convex in
    price), so with a positive value at a and a non-positive one at b the root
    is unique: bisection to machine precision; the prices there are left in ``out``.
    """
    lo = 0.0
    hi = 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        interpolate(a, b, mid, out)
        if cross_trigger_value(state, mode, tiers, n_tiers, account, out) <= 0.0:
            hi = mid
        else:
            lo = mid
    interpolate(a, b, hi, out)
    return hi


@njit(cache=True, _nrt=False)
def check_liquidations(t, n_cp, cp, state, mode, sym, tiers, n_tiers, account, scratch, scratch2,
                       fills, liqs, counts):
    """Walk the bar's checkpoints and liquidate, in the order the triggers occur.

    At the open (k = 0) a trigger that already holds is a gap: the position
    closes at the open. On each later segment, isolated positions close at
    their liquidation price and the cross account at the point where
    ``MB == sum(MM)``; whichever comes first along the segment goes first
    (an isolated liquidation can only return margin to the wallet).
    """
    n = state.shape[1]
    for i in range(n):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == ISOLATED and isolated_triggered(q, cp[0, i],
                                                                   state[S_LIQ_PX, i]):
            liquidate_isolated(t, i, cp[0, i], True, cp[0], state, mode, sym, account, fills, liqs,
                               counts)
    if has_cross_position(state, mode) and cross_trigger_value(
        state, mode, tiers, n_tiers, account, cp[0]
    ) <= 0.0:
        liquidate_cross(t, cp[0], True, state, mode, sym, account, fills, liqs, counts)
    for k in range(1, n_cp):
        a = cp[k - 1]
        b = cp[k]
        while True:
            s_iso = 2.0
            i_iso = -1
            for i in range(n):
                q = state[S_QTY, i]
                if q == 0.0 or mode[i] != ISOLATED:
                    continue
                lp = state[S_LIQ_PX, i]
                if isolated_triggered(q, b[i], lp):
                    s = (lp - a[i]) / (b[i] - a[i]) if b[i] != a[i] else 0.0
                    if s < s_iso:
                        s_iso = s
                        i_iso = i
            s_cross = 2.0
            if has_cross_position(state, mode) and cross_trigger_value(
                state, mode, tiers, n_tiers, account, b
            ) <= 0.0:
                s_cross = cross_trigger_point(a, b, state, mode, tiers, n_tiers, account, scratch2)
            if i_iso < 0 and s_cross > 1.0:
                break
            if i_iso >= 0 and s_iso <= s_cross:
                interpolate(a, b, max(s_iso, 0.0), scratch)
                liquidate_isolated(t, i_iso, state[S_LIQ_PX, i_iso], False, scratch, state, mode,
                                   sym, account, fills, liqs, counts)
            else:
                liquidate_cross(t, scratch2, False, state, mode, sym, account, fills, liqs,
                                counts)
