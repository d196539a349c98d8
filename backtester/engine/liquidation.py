"""Steps 3 and 4 of a bar: the intrabar path and the liquidations along it.

Only called for a bar whose cheap bound says something might be liquidated.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .account import (
    account_equity,
    cross_level_value,
    cross_trigger_value,
    fee_in_margin,
    has_cross_position,
    margin_level,
    position_maintenance,
    reduce_position,
    refresh_liq_price,
    tier_at,
    tier_key,
)
from .enums import (
    A_EVENTS,
    A_IN_CALL,
    A_WALLET,
    C_LIQS,
    COLLATERAL,
    CROSS,
    EVENT_MARGIN_CALL,
    FEE_IN_MARGIN_TO_CLOSE,
    FILL_LIQUIDATION,
    ISOLATED,
    MM_BY_SIZE,
    MM_MARGIN_LEVEL,
    PARTIAL_NONE,
    PARTIAL_STEP_DOWN,
    PARTIAL_TO_TIER_1,
    PATH_OHLC,
    PATH_WORST,
    S_ENTRY,
    S_ISO_MARGIN,
    S_LIQ_PX,
    S_MARK,
    S_OPENED,
    S_QTY,
    SETTLE_AT_BANKRUPTCY,
    SYM_CALL_LEVEL,
    SYM_FEE_RULE,
    SYM_LIQ_FEE,
    SYM_MM_RULE,
    SYM_PARTIAL,
    SYM_SETTLEMENT,
    SYM_TAKER_FEE,
    TIER_CAP,
    TIER_CUM,
    TIER_MMR,
)
from .records import record_event, record_fill, record_liquidation

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
def partial_target(i, q, entry, price, position_equity, sym, tiers, n_tiers):
    """Size (base units, >= 0) a triggered position is cut down to before a full close; 0 means
    close it all. VENUES.md §6.3:

    - Bybit (step-down, §3.6): above the lowest tier, the limit of the highest lower
      tier whose MM the position's equity still covers once cut (cutting at the mark
      releases margin in proportion, so equity scales with the size kept);
    - OKX (§4.4): from tier 3 up, the cap two tiers down (legacy rule: tier 1's cap).
    """
    rule = sym[SYM_PARTIAL, i]
    if rule == PARTIAL_NONE:
        return 0.0
    key = tier_key(i, q, entry, price, sym)
    k = tier_at(key, i, tiers, n_tiers)
    size = abs(q)
    if rule == PARTIAL_STEP_DOWN:
        if k == 0 or key <= 0.0:
            return 0.0
        # the fee counted in the margin scales with the size like the equity does
        fee = fee_in_margin(i, q, entry, price, sym)
        for j in range(k - 1, -1, -1):
            cap = tiers[TIER_CAP, i, j]
            if (position_equity - fee) * cap / key >= cap * tiers[TIER_MMR, i, j] - tiers[
                    TIER_CUM, i, j]:
                return size * cap / key
        return 0.0
    if k < 2:
        return 0.0
    cap = tiers[TIER_CAP, i, 0] if rule == PARTIAL_TO_TIER_1 else tiers[TIER_CAP, i, k - 2]
    if sym[SYM_MM_RULE, i] == MM_BY_SIZE:
        return cap
    return size * cap / key


@njit(cache=True, _nrt=False)
def cut_isolated(t, i, target, price, gapped, prices, state, mode, sym, tiers, n_tiers, account,
                 fills, liqs, counts):
    """Partial liquidation: cut isolated position i down to ``target`` units at ``price``.

    The cut pays the liquidation fee (Bybit's Fill-or-Kill order: the taker fee);
    its share of the margin and its realized PnL go to the wallet. Returns True if
    what is left no longer triggers at ``price`` (else the caller closes it all).
    """
    q = state[S_QTY, i]
    entry = state[S_ENTRY, i]
    margin = state[S_ISO_MARGIN, i]
    equity_before = account_equity(state, account, prices)
    close_qty = -(q - np.sign(q) * target)
    rate = sym[SYM_TAKER_FEE, i] if sym[SYM_PARTIAL, i] == PARTIAL_STEP_DOWN else sym[
        SYM_LIQ_FEE, i]
    share = margin * abs(close_qty) / abs(q)
    event = int(account[A_EVENTS])
    account[A_EVENTS] += 1.0
    c = counts[C_LIQS]
    trigger = state[S_LIQ_PX, i]
    realized, fee = reduce_position(i, close_qty, price, rate, state, mode, account)
    record_liquidation(liqs, counts, t, event, i, ISOLATED, -close_qty, entry, trigger, price,
                       fee, realized, max(fee - realized, 0.0), equity_before, 0.0, gapped,
                       entry - share / -close_qty, True)
    record_fill(fills, counts, t, i, close_qty, price, fee, realized, state[S_QTY, i],
                FILL_LIQUIDATION)
    refresh_liq_price(i, state, mode, sym, tiers, n_tiers)
    liqs[c]["equity_after"] = account_equity(state, account, prices)
    q = state[S_QTY, i]
    lp = state[S_LIQ_PX, i]
    return q != 0.0 and not ((q > 0.0 and price <= lp) or (q < 0.0 and price >= lp))


@njit(cache=True, _nrt=False)
def liquidate_isolated(t, i, price, gapped, prices, state, mode, sym, tiers, n_tiers, account,
                       fills, liqs, counts):
    """Liquidate isolated position i, triggered at ``price``: it alone goes, its loss bounded
    by its margin.

    A venue with partial liquidation first cuts it down (``partial_target``); if
    what is left is safe, that is all. Otherwise it is closed: at ``price`` with
    the liquidation fee charged on the closed notional (Binance, OKX), what is
    left of the margin returning to the wallet; or, on Bybit, at its bankruptcy
    price, the whole margin lost and the fee to close reserved in it charged. A
    loss beyond the margin (a gap through the bankruptcy price) is the shortfall
    the venue's insurance fund absorbs.
    """
    q = state[S_QTY, i]
    entry = state[S_ENTRY, i]
    margin = state[S_ISO_MARGIN, i]
    target = partial_target(i, q, entry, price, margin + q * (price - entry), sym, tiers, n_tiers)
    if target > 0.0 and target < abs(q) * (1.0 - 1e-12):
        if cut_isolated(t, i, target, price, gapped, prices, state, mode, sym, tiers, n_tiers,
                        account, fills, liqs, counts):
            return
        q = state[S_QTY, i]
        entry = state[S_ENTRY, i]
        margin = state[S_ISO_MARGIN, i]
    equity_before = account_equity(state, account, prices)
    trigger = state[S_LIQ_PX, i]
    shortfall = 0.0
    if sym[SYM_SETTLEMENT, i] == SETTLE_AT_BANKRUPTCY:
        fee = 0.0
        if sym[SYM_FEE_RULE, i] == FEE_IN_MARGIN_TO_CLOSE:
            fee = fee_in_margin(i, q, entry, price, sym)
        bankrupt = entry - (margin - fee) / q
        # past the bankruptcy price (a gap) the insurance fund takes the rest
        gap_loss = q * (bankrupt - price)
        if gap_loss > 0.0:
            shortfall = gap_loss
        exec_price = bankrupt
        realized = q * (bankrupt - entry)
        remaining = 0.0
    else:
        exec_price = price
        bankrupt = entry - margin / q
        realized = q * (price - entry)
        fee = abs(q) * price * sym[SYM_LIQ_FEE, i]
        remaining = margin + realized - fee
        if remaining < 0.0:
            shortfall = -remaining
            remaining = 0.0
    event = int(account[A_EVENTS])
    account[A_EVENTS] += 1.0
    c = counts[C_LIQS]
    record_liquidation(liqs, counts, t, event, i, ISOLATED, q, entry, trigger, exec_price, fee,
                       realized, margin - remaining, equity_before, shortfall, gapped, bankrupt,
                       False)
    record_fill(fills, counts, t, i, -q, exec_price, fee, realized, 0.0, FILL_LIQUIDATION)
    account[A_WALLET] += remaining
    state[S_QTY, i] = 0.0
    state[S_ENTRY, i] = 0.0
    state[S_ISO_MARGIN, i] = 0.0
    state[S_LIQ_PX, i] = np.nan
    liqs[c]["equity_after"] = account_equity(state, account, prices)


@njit(cache=True, _nrt=False)
def close_cross_position(t, event, i, price, fee, gapped, bankrupt, equity_before, state, account,
                         fills, liqs, counts):
    """Close cross position i at ``price`` paying ``fee``; returns the loss it caused."""
    q = state[S_QTY, i]
    entry = state[S_ENTRY, i]
    realized = q * (price - entry)
    account[A_WALLET] += realized - fee
    loss = fee - realized
    record_liquidation(liqs, counts, t, event, i, CROSS, q, entry, price, price, fee,
                       realized, loss, equity_before, 0.0, gapped, bankrupt, False)
    record_fill(fills, counts, t, i, -q, price, fee, realized, 0.0, FILL_LIQUIDATION)
    state[S_QTY, i] = 0.0
    state[S_ENTRY, i] = 0.0
    return loss


@njit(cache=True, _nrt=False)
def cut_cross(t, event, prices, gapped, equity_before, state, mode, sym, tiers, n_tiers, account,
              fills, liqs, counts):
    """Partial liquidation of a cross account at the trigger ``prices``: the largest position
    that can drop a tier is cut, then the next, until the account is compliant again
    (returns True) or no cut helps (False: the caller closes what is left).

    Bybit (§3.6, cross): cut to the limit of the highest lower tier whose MM the free
    margin (margin balance less the other positions' MM, unchanged by a cut at the mark)
    covers. OKX (§4.4): from tier 3 up, two tiers down (or the legacy rule). Each cut
    pays the venue's rate (Bybit's taker fee on its Fill-or-Kill order, OKX's
    liquidation fee) and is a liquidation record with ``partial`` set.
    """
    n = state.shape[1]
    for _ in range(n * tiers.shape[2] + 1):  # each cut takes a position a tier down
        margin_balance = cross_trigger_value(state, mode, sym, tiers, n_tiers, account, prices)
        if margin_balance > 0.0:
            return True
        # the largest position (by the size that picks its tier) that is above the lowest
        # tier it could be cut to
        best = -1
        best_key = 0.0
        for i in range(n):
            q = state[S_QTY, i]
            if q == 0.0 or mode[i] != CROSS:
                continue
            key = tier_key(i, q, state[S_ENTRY, i], prices[i], sym)
            k = tier_at(key, i, tiers, n_tiers)
            lowest = 1 if sym[SYM_PARTIAL, i] == PARTIAL_STEP_DOWN else 2
            if k >= lowest and key > best_key:
                best = i
                best_key = key
        if best < 0:
            return False
        i = best
        q = state[S_QTY, i]
        entry = state[S_ENTRY, i]
        price = prices[i]
        own_mm = position_maintenance(i, q, entry, price, sym, tiers, n_tiers)
        target = 0.0
        if sym[SYM_PARTIAL, i] == PARTIAL_STEP_DOWN:
            free = margin_balance + own_mm  # MB - sum(MM) + own MM = MB - others' MM
            fee = fee_in_margin(i, q, entry, price, sym)
            k = tier_at(best_key, i, tiers, n_tiers)
            for j in range(k - 1, -1, -1):
                cap = tiers[TIER_CAP, i, j]
                if free >= cap * tiers[TIER_MMR, i, j] - tiers[TIER_CUM, i, j] + (
                        fee * cap / best_key):
                    target = abs(q) * cap / best_key
                    break
        else:
            target = partial_target(i, q, entry, price, 0.0, sym, tiers, n_tiers)
        if not (target > 0.0 and target < abs(q) * (1.0 - 1e-12)):
            return False
        close_qty = -(q - np.sign(q) * target)
        rate = sym[SYM_TAKER_FEE, i] if sym[SYM_PARTIAL, i] == PARTIAL_STEP_DOWN else sym[
            SYM_LIQ_FEE, i]
        realized, fee_paid = reduce_position(i, close_qty, price, rate, state, mode, account)
        record_liquidation(liqs, counts, t, event, i, CROSS, -close_qty, entry, price, price,
                           fee_paid, realized, max(fee_paid - realized, 0.0), equity_before,
                           0.0, gapped, np.nan, True)
        record_fill(fills, counts, t, i, close_qty, price, fee_paid, realized, state[S_QTY, i],
                    FILL_LIQUIDATION)
    return False


@njit(cache=True, _nrt=False)
def liquidate_cross(t, prices, gapped, state, mode, sym, tiers, n_tiers, account, fills, liqs,
                    counts):
    """Liquidate the cross account, triggered at ``prices``.

    - Binance, OKX: every cross position closes at the trigger prices, the
      liquidation fee charged on each closed notional.
    - Bybit: every position is settled at its bankruptcy price: the margin
      balance left at the trigger is shared out in proportion to each position's
      MM, and the wallet goes to zero.
    - Kraken spot margin: positions close oldest first (FIFO), each paying the
      taker fee, until the margin level is back above the liquidation level.

    A wallet that would go negative is set to zero and the shortfall (bankruptcy)
    recorded, shared among the positions in proportion to their losses. Each
    record's ``trigger_price`` is the position's mark at the trigger and its
    ``bankruptcy_price`` the mark at which the account's equity would be zero
    with the others frozen, ``P - MB / q``.
    """
    n = state.shape[1]
    equity_before = account_equity(state, account, prices)
    event = int(account[A_EVENTS])
    account[A_EVENTS] += 1.0
    first = counts[C_LIQS]
    # the account's model: that of its cross positions (one venue per run)
    model = -1
    settlement = 0.0
    partial = PARTIAL_NONE
    for i in range(n):
        if state[S_QTY, i] != 0.0 and mode[i] == CROSS:
            model = int(sym[SYM_MM_RULE, i])
            settlement = sym[SYM_SETTLEMENT, i]
            partial = sym[SYM_PARTIAL, i]
    safe = False
    if partial != PARTIAL_NONE:
        safe = cut_cross(t, event, prices, gapped, equity_before, state, mode, sym, tiers,
                         n_tiers, account, fills, liqs, counts)
    balance = account[A_WALLET]
    total_mm = 0.0
    for i in range(n):
        q = state[S_QTY, i]
        if q == 0.0 or mode[i] != CROSS:
            continue
        entry = state[S_ENTRY, i]
        balance += q * (prices[i] - entry)
        total_mm += position_maintenance(i, q, entry, prices[i], sym, tiers, n_tiers)
    total_loss = 0.0
    if safe:
        pass  # the cuts made the account compliant: nothing more is closed
    elif model == MM_MARGIN_LEVEL:
        # FIFO: the oldest position first, until the account is safe again
        while True:
            oldest = -1
            for i in range(n):
                if state[S_QTY, i] != 0.0 and mode[i] == CROSS and (
                        oldest < 0 or state[S_OPENED, i] < state[S_OPENED, oldest]):
                    oldest = i
            if oldest < 0:
                break
            q = state[S_QTY, oldest]
            fee = abs(q) * prices[oldest] * sym[SYM_LIQ_FEE, oldest]
            loss = close_cross_position(t, event, oldest, prices[oldest], fee, gapped,
                                        prices[oldest] - balance / q, equity_before, state,
                                        account, fills, liqs, counts)
            if loss > 0.0:
                total_loss += loss
            if not has_cross_position(state, mode) or cross_trigger_value(
                    state, mode, sym, tiers, n_tiers, account, prices) > 0.0:
                break
    else:
        bybit = settlement == SETTLE_AT_BANKRUPTCY and total_mm > 0.0
        for i in range(n):
            q = state[S_QTY, i]
            if q == 0.0 or mode[i] != CROSS:
                continue
            price = prices[i]
            bankrupt = price - balance / q
            if bybit:
                # each position at its bankruptcy price: the margin balance left at the
                # trigger (negative after a gap through zero) shared in proportion to MM
                entry = state[S_ENTRY, i]
                share = balance * position_maintenance(i, q, entry, price, sym, tiers,
                                                       n_tiers) / total_mm
                fee = 0.0
                if sym[SYM_FEE_RULE, i] == FEE_IN_MARGIN_TO_CLOSE and share > 0.0:
                    fee = min(fee_in_margin(i, q, entry, price, sym), share)
                price = price - (share - fee) / q
                bankrupt = price
            elif settlement == SETTLE_AT_BANKRUPTCY:
                fee = 0.0
            else:
                fee = abs(q) * price * sym[SYM_LIQ_FEE, i]
            loss = close_cross_position(t, event, i, price, fee, gapped, bankrupt, equity_before,
                                        state, account, fills, liqs, counts)
            if loss > 0.0:
                total_loss += loss
        if bybit:
            account[A_WALLET] = 0.0  # settled to zero (up to rounding dust)
            if balance < 0.0:
                # a gap beyond the bankruptcy prices: the insurance fund takes what the
                # positions lose past them, q * (bankruptcy price - trigger price) each
                for c in range(first, counts[C_LIQS]):
                    i = liqs[c]["symbol"]
                    liqs[c]["shortfall"] = liqs[c]["qty"] * (liqs[c]["price"] - prices[i])
    # multi-currency margin: a negative quote balance left is repaid by selling collateral
    for i in range(n):
        if account[A_WALLET] >= 0.0:
            break
        q = state[S_QTY, i]
        if q > 0.0 and mode[i] == COLLATERAL and prices[i] > 0.0:
            sell = min(q, -account[A_WALLET] / prices[i])
            realized, fee = reduce_position(i, -sell, prices[i], 0.0, state, mode, account)
            record_fill(fills, counts, t, i, -sell, prices[i], 0.0, realized, state[S_QTY, i],
                        FILL_LIQUIDATION)
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
        liqs[c]["trigger_price"] = prices[liqs[c]["symbol"]]
        liqs[c]["equity_after"] = equity_after


@njit(cache=True, _nrt=False)
def cross_trigger_point(a, b, state, mode, sym, tiers, n_tiers, account, out):
    """Fraction s in (0, 1] of the segment a -> b where the cross trigger first holds.

    ``MB - sum(MM)`` is concave along a straight segment (MM is convex in
    price under the bracket rule and affine under the others, whose tier is
    fixed between fills), so with a positive value at a and a non-positive one at
    b the root is unique: bisection to machine precision; the prices there are
    left in ``out``.
    """
    lo = 0.0
    hi = 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        interpolate(a, b, mid, out)
        if cross_trigger_value(state, mode, sym, tiers, n_tiers, account, out) <= 0.0:
            hi = mid
        else:
            lo = mid
    interpolate(a, b, hi, out)
    return hi


@njit(cache=True, _nrt=False)
def check_margin_call(t, n_cp, cp, state, mode, sym, account, events, counts):
    """Record a margin call (spot margin) the first time along the path that the margin level
    reaches the call level; one event per call, re-armed once the level is back above it."""
    if account[A_IN_CALL] != 0.0 or not has_cross_position(state, mode):
        return
    for k in range(n_cp):
        if cross_level_value(state, mode, sym, account, cp[k], SYM_CALL_LEVEL) <= 0.0:
            level = margin_level(state, mode, sym, account, cp[k])
            call = 0.0
            for i in range(state.shape[1]):
                if state[S_QTY, i] != 0.0 and mode[i] == CROSS:
                    call = sym[SYM_CALL_LEVEL, i]
                    break
            record_event(events, counts, t, -1, EVENT_MARGIN_CALL, 0.0, np.nan, call, 0.0,
                         level)
            account[A_IN_CALL] = 1.0
            return


@njit(cache=True, _nrt=False)
def check_liquidations(t, n_cp, cp, state, mode, sym, tiers, n_tiers, account, scratch, scratch2,
                       start, fills, liqs, counts):
    """Walk the bar's checkpoints and liquidate, in the order the triggers occur.

    At the open (k = 0) a trigger that already holds is a gap: the position
    closes at the open. On each later segment, isolated positions close at
    their liquidation price and the cross account at the point where
    ``MB == sum(MM)``; whichever comes first along the segment goes first. After
    each event the walk goes on from the point where it happened (``start``):
    what is left of the account (a cut position, the cross positions a FIFO
    liquidation kept) is checked on the rest of the segment only.
    """
    n = state.shape[1]
    for i in range(n):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == ISOLATED and isolated_triggered(q, cp[0, i],
                                                                   state[S_LIQ_PX, i]):
            liquidate_isolated(t, i, cp[0, i], True, cp[0], state, mode, sym, tiers, n_tiers,
                               account, fills, liqs, counts)
    for _ in range(n + 1):
        if has_cross_position(state, mode) and cross_trigger_value(
                state, mode, sym, tiers, n_tiers, account, cp[0]) <= 0.0:
            liquidate_cross(t, cp[0], True, state, mode, sym, tiers, n_tiers, account, fills,
                            liqs, counts)
        else:
            break
    for k in range(1, n_cp):
        b = cp[k]
        for i in range(n):
            start[i] = cp[k - 1, i]
        while True:
            s_iso = 2.0
            i_iso = -1
            for i in range(n):
                q = state[S_QTY, i]
                if q == 0.0 or mode[i] != ISOLATED:
                    continue
                lp = state[S_LIQ_PX, i]
                if isolated_triggered(q, b[i], lp):
                    s = (lp - start[i]) / (b[i] - start[i]) if b[i] != start[i] else 0.0
                    if s < s_iso:
                        s_iso = s
                        i_iso = i
            s_cross = 2.0
            if has_cross_position(state, mode) and cross_trigger_value(
                state, mode, sym, tiers, n_tiers, account, b
            ) <= 0.0:
                if cross_trigger_value(state, mode, sym, tiers, n_tiers, account, start) <= 0.0:
                    s_cross = 0.0  # what is left after an event already triggers there
                    for i in range(n):
                        scratch2[i] = start[i]
                else:
                    s_cross = cross_trigger_point(start, b, state, mode, sym, tiers, n_tiers,
                                                  account, scratch2)
            if i_iso < 0 and s_cross > 1.0:
                break
            if i_iso >= 0 and s_iso <= s_cross:
                s = max(s_iso, 0.0)
                interpolate(start, b, s, scratch)
                q = state[S_QTY, i_iso]
                # a gap when the position already triggered at the segment's start
                price = state[S_LIQ_PX, i_iso]
                if isolated_triggered(q, start[i_iso], price):
                    price = start[i_iso]
                scratch[i_iso] = price
                liquidate_isolated(t, i_iso, price, False, scratch, state, mode, sym, tiers,
                                   n_tiers, account, fills, liqs, counts)
            else:
                for i in range(n):
                    scratch[i] = scratch2[i]
                liquidate_cross(t, scratch, False, state, mode, sym, tiers, n_tiers, account,
                                fills, liqs, counts)
            for i in range(n):
                start[i] = scratch[i]
