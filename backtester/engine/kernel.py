"""The bar loop: DESIGN.md §4, one bar at a time, in compiled code.

``simulate`` takes only arrays and scalars (the Python layer in
``backtester.run`` validates and converts everything first) and returns the
per-bar account series and the event records. Inside bar t:

1. funding settled at ``index[t]``;
2. the orders decided at close[t-1] fill at open[t] (``fill_at="open"``);
3. intrabar liquidation checks along the chosen price path;
4. liquidation of triggered isolated positions / the cross account;
5. mark to market at the close, and (``fill_at="close"``) orders filled at close[t];
6. the bar's state is recorded; the targets of row t are the decision for t+1.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .account import (
    account_equity,
    apply_funding,
    available_balance,
    cross_trigger_value,
    increase_position,
    reduce_position,
    refresh_isolated_liq_price,
    tier_after,
)
from .enums import (
    CROSS,
    FILL_LIQUIDATION,
    FILL_NEXT_OPEN,
    FILL_REDUCE_ONLY,
    FILL_STRATEGY,
    ISOLATED,
    PATH_OHLC,
    PATH_WORST,
    REJECT_ACCOUNT_BANKRUPT,
    REJECT_INSUFFICIENT_MARGIN,
    REJECT_LEVERAGE_ABOVE_TIER,
    REJECT_NO_PRICE,
    TARGET_EQUITY,
    TARGET_NOTIONAL,
)
from .margin import liquidation_price, tier_index

# rows of the per-bar output array
OUT_EQUITY = 0
OUT_WALLET = 1
OUT_ISO_MARGIN = 2
OUT_UPNL = 3
OUT_MAINT = 4
OUT_MARGIN_RATIO = 5
OUT_GROSS = 6
OUT_NET = 7
N_OUT = 8

# slots of the record counters
C_FILLS = 0
C_LIQS = 1
C_FUNDING = 2
C_REJECTS = 3
C_EVENTS = 4


@njit(cache=True)
def record_fill(fills, counts, t, i, qty, price, fee, realized, position_after, reason):
    c = counts[C_FILLS]
    fills[c]["bar"] = t
    fills[c]["symbol"] = i
    fills[c]["qty"] = qty
    fills[c]["price"] = price
    fills[c]["fee"] = fee
    fills[c]["realized_pnl"] = realized
    fills[c]["position_after"] = position_after
    fills[c]["reason"] = reason
    counts[C_FILLS] = c + 1


@njit(cache=True)
def record_rejection(rejects, counts, t, i, qty, price, required, available, reason):
    c = counts[C_REJECTS]
    rejects[c]["bar"] = t
    rejects[c]["symbol"] = i
    rejects[c]["qty"] = qty
    rejects[c]["price"] = price
    rejects[c]["required"] = required
    rejects[c]["available"] = available
    rejects[c]["reason"] = reason
    counts[C_REJECTS] = c + 1


@njit(cache=True)
def record_liquidation(liqs, counts, t, event, i, mode, qty, entry_price, trigger_price, price,
                       fee, realized, margin_lost, equity_before, shortfall, gapped):
    c = counts[C_LIQS]
    liqs[c]["bar"] = t
    liqs[c]["event"] = event
    liqs[c]["symbol"] = i
    liqs[c]["mode"] = mode
    liqs[c]["qty"] = qty
    liqs[c]["entry_price"] = entry_price
    liqs[c]["trigger_price"] = trigger_price
    liqs[c]["price"] = price
    liqs[c]["fee"] = fee
    liqs[c]["realized_pnl"] = realized
    liqs[c]["margin_lost"] = margin_lost
    liqs[c]["equity_before"] = equity_before
    liqs[c]["equity_after"] = np.nan  # set by the caller once the event is complete
    liqs[c]["shortfall"] = shortfall
    liqs[c]["gapped"] = gapped
    counts[C_LIQS] = c + 1


# --- step 2: fills ------------------------------------------------------------------


@njit(cache=True)
def execute_order(t, i, delta, price, fee_rate, reduce_to_fit, qty, entry, mode, leverage,
                  iso_margin, wallet, mark, tier, floors, caps, max_leverage, n_tiers,
                  fills, rejects, counts):
    """Trade ``delta`` units of symbol i at ``price``, under the margin rules of DESIGN.md §3.

    The reducing part of an order always fills. The opening part needs its
    initial margin plus fee from the available balance and must keep the
    symbol's leverage within the max leverage of the tier its new notional
    lands in; otherwise it is rejected with a reason code (or, with
    ``reduce_to_fit``, cut to what the balance allows).
    """
    old = qty[i]
    close_qty = 0.0
    if old != 0.0 and (delta > 0.0) != (old > 0.0):
        close_qty = -old if abs(delta) >= abs(old) else delta
    open_qty = delta - close_qty
    realized = 0.0
    fee = 0.0
    reason = FILL_STRATEGY
    if close_qty != 0.0:
        realized, fee = reduce_position(i, close_qty, price, fee_rate, qty, entry, mode,
                                        iso_margin, wallet)
    if open_qty != 0.0:
        lev = leverage[i]
        new_notional = (abs(qty[i]) + abs(open_qty)) * price
        k = tier_index(new_notional, caps[i], n_tiers[i])
        avail = available_balance(wallet[0], qty, entry, mode, leverage, mark)
        per_unit = price * (1.0 / lev + fee_rate)
        required = abs(open_qty) * per_unit
        reject = -1
        if lev > max_leverage[i, k]:
            reject = REJECT_LEVERAGE_ABOVE_TIER
        elif avail <= 0.0 and account_equity(wallet[0], qty, entry, iso_margin, mark) <= 0.0:
            reject = REJECT_ACCOUNT_BANKRUPT
        elif required > avail:
            if reduce_to_fit and avail > 0.0:
                open_qty = np.sign(open_qty) * avail / per_unit
                reason = FILL_REDUCE_ONLY
            else:
                reject = REJECT_INSUFFICIENT_MARGIN
        if reject >= 0:
            record_rejection(rejects, counts, t, i, open_qty, price, required, avail,
                                       reject)
            open_qty = 0.0
        else:
            fee += increase_position(i, open_qty, price, fee_rate, lev, qty, entry, mode,
                                     iso_margin, wallet)
    filled = close_qty + open_qty
    if filled != 0.0:
        record_fill(fills, counts, t, i, filled, price, fee, realized, qty[i], reason)
        tier_after(i, abs(qty[i]) * mark[i], tier, floors, caps, n_tiers)


@njit(cache=True)
def process_orders(t, targets_row, target_kind, decision_price, decision_equity, fill_price,
                   slippage, taker_fee, reduce_to_fit, want, qty, entry, mode, leverage,
                   iso_margin, liq_px, wallet, mark, last_close, tier, floors, caps, mmrs, cums,
                   max_leverage, n_tiers, fills, rejects, counts):
    """Turn one row of targets into orders and fill them: reductions first, so they free margin."""
    n = qty.shape[0]
    for i in range(n):
        want[i] = np.nan
        target = targets_row[i]
        if target != target:
            continue
        if target_kind == TARGET_NOTIONAL or target_kind == TARGET_EQUITY:
            ref = decision_price[i]
            if ref != ref:
                ref = last_close[i]
            if ref != ref:
                record_rejection(rejects, counts, t, i, 0.0, np.nan, 0.0, 0.0,
                                           REJECT_NO_PRICE)
                continue
            target = target / ref
            if target_kind == TARGET_EQUITY:
                target *= max(decision_equity, 0.0)
        delta = target - qty[i]
        if abs(delta) <= 1e-9 * max(abs(target), abs(qty[i])) or delta == 0.0:
            continue
        want[i] = target
    for sweep in range(2):
        for i in range(n):
            target = want[i]
            if target != target:
                continue
            reducing = abs(target) < abs(qty[i]) and (target == 0.0 or (target > 0) == (qty[i] > 0))
            if (sweep == 0) != reducing:
                continue
            delta = target - qty[i]
            price = fill_price[i]
            if price != price:
                record_rejection(rejects, counts, t, i, delta, np.nan, 0.0, 0.0,
                                           REJECT_NO_PRICE)
                continue
            price *= 1.0 + slippage * np.sign(delta)
            execute_order(t, i, delta, price, taker_fee[i], reduce_to_fit, qty,
                                           entry, mode, leverage, iso_margin, wallet, mark, tier,
                                           floors, caps, max_leverage, n_tiers, fills, rejects,
                                           counts)
            if mode[i] == ISOLATED:
                refresh_isolated_liq_price(i, qty, entry, iso_margin, liq_px, floors, caps, mmrs,
                                           cums, n_tiers)


@njit(cache=True)
def record_funding(funding, counts, t, i, qty, mark_price, rate, payment, mode):
    c = counts[C_FUNDING]
    funding[c]["bar"] = t
    funding[c]["symbol"] = i
    funding[c]["qty"] = qty
    funding[c]["mark_price"] = mark_price
    funding[c]["rate"] = rate
    funding[c]["payment"] = payment
    funding[c]["mode"] = mode
    counts[C_FUNDING] = c + 1


# --- steps 3 and 4: intrabar liquidation ------------------------------------------------


@njit(cache=True)
def build_checkpoints(t, path, qty, mark, mark_open, mark_high, mark_low, mark_close, cp):
    """Fill ``cp[k, i]`` with the checkpoint prices of bar t; returns their count.

    ``path``: open -> low -> high -> close when close >= open, else open -> high
    -> low -> close; ``worst``: open -> each position's adverse extreme -> close;
    ``close``: open -> close. A symbol without a bar stays at its last mark.
    """
    n = qty.shape[0]
    n_cp = 4 if path == PATH_OHLC else (3 if path == PATH_WORST else 2)
    for i in range(n):
        o = mark_open[t, i]
        if o != o:
            for k in range(n_cp):
                cp[k, i] = mark[i]
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
            if qty[i] > 0.0:
                cp[1, i] = mark_low[t, i]
            elif qty[i] < 0.0:
                cp[1, i] = mark_high[t, i]
            else:
                cp[1, i] = c
    return n_cp


@njit(cache=True)
def _interp(a, b, s, out):
    for i in range(out.shape[0]):
        out[i] = a[i] + (b[i] - a[i]) * s


@njit(cache=True)
def _isolated_triggered(qty_i, price, liq_px_i):
    if qty_i > 0.0:
        return price <= liq_px_i
    return price >= liq_px_i


@njit(cache=True)
def liquidate_isolated(t, i, price, gapped, liq_fee, qty, entry, mode, iso_margin, liq_px,
                       wallet, mark_now, fills, liqs, counts):
    """Close isolated position i at ``price``; its loss stops at its own margin."""
    q = qty[i]
    equity_before = account_equity(wallet[0], qty, entry, iso_margin, mark_now)
    realized = q * (price - entry[i])
    fee = abs(q) * price * liq_fee
    remaining = iso_margin[i] + realized - fee
    shortfall = 0.0
    if remaining < 0.0:
        shortfall = -remaining
        remaining = 0.0
    margin_lost = iso_margin[i] - remaining
    event = counts[C_EVENTS]
    counts[C_EVENTS] = event + 1
    c = counts[C_LIQS]
    record_liquidation(liqs, counts, t, event, i, ISOLATED, q, entry[i], liq_px[i], price,
                              fee, realized, margin_lost, equity_before, shortfall, gapped)
    record_fill(fills, counts, t, i, -q, price, fee, realized, 0.0, FILL_LIQUIDATION)
    wallet[0] += remaining
    qty[i] = 0.0
    entry[i] = 0.0
    iso_margin[i] = 0.0
    liq_px[i] = np.nan
    liqs[c]["equity_after"] = account_equity(wallet[0], qty, entry, iso_margin, mark_now)
    return shortfall


@njit(cache=True)
def liquidate_cross(t, prices, gapped, liq_fee, qty, entry, mode, iso_margin, wallet, fills, liqs,
                    counts):
    """Close every cross position at ``prices``: the whole cross account goes together.

    The liquidation fee is charged on each closed notional; a wallet that would
    go negative is set to zero and the shortfall (bankruptcy) recorded, shared
    among the positions in proportion to their losses.
    """
    n = qty.shape[0]
    equity_before = account_equity(wallet[0], qty, entry, iso_margin, prices)
    event = counts[C_EVENTS]
    counts[C_EVENTS] = event + 1
    first = counts[C_LIQS]
    total_loss = 0.0
    for i in range(n):
        q = qty[i]
        if q == 0.0 or mode[i] != CROSS:
            continue
        price = prices[i]
        realized = q * (price - entry[i])
        fee = abs(q) * price * liq_fee[i]
        wallet[0] += realized - fee
        loss = fee - realized
        if loss > 0.0:
            total_loss += loss
        record_liquidation(liqs, counts, t, event, i, CROSS, q, entry[i], price, price,
                                  fee, realized, loss, equity_before, 0.0, gapped)
        record_fill(fills, counts, t, i, -q, price, fee, realized, 0.0, FILL_LIQUIDATION)
        qty[i] = 0.0
        entry[i] = 0.0
    shortfall = 0.0
    if wallet[0] < 0.0:
        shortfall = -wallet[0]
        wallet[0] = 0.0
    equity_after = account_equity(wallet[0], qty, entry, iso_margin, prices)
    for c in range(first, counts[C_LIQS]):
        loss = liqs[c]["margin_lost"]
        if shortfall > 0.0 and loss > 0.0:
            share = shortfall * loss / total_loss
            liqs[c]["shortfall"] = share
            liqs[c]["margin_lost"] = loss - share
        liqs[c]["equity_after"] = equity_after
    return shortfall


@njit(cache=True)
def cross_trigger_point(a, b, wallet, qty, entry, mode, floors, caps, mmrs, cums, n_tiers, buf):
    """Fraction s in (0, 1] of the segment a -> b where the cross trigger first holds.

    ``MB - MM`` is concave along a straight segment (MM is convex in price), so
    with a positive value at a and a non-positive one at b the root is unique;
    bisection to machine precision, then the prices there are left in ``buf``.
    """
    lo = 0.0
    hi = 1.0
    for _ in range(64):
        mid = 0.5 * (lo + hi)
        _interp(a, b, mid, buf)
        if cross_trigger_value(wallet, qty, entry, mode, buf, floors, caps, mmrs, cums,
                               n_tiers) <= 0.0:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-16:
            break
    _interp(a, b, hi, buf)
    return hi


@njit(cache=True)
def check_liquidations(t, n_cp, cp, qty, entry, mode, iso_margin, liq_px, wallet, liq_fee, floors,
                       caps, mmrs, cums, n_tiers, tier, scratch, scratch2, fills, liqs, counts):
    """Walk the bar's checkpoints and liquidate, in the order the triggers occur.

    At the open (k = 0) a trigger that already holds is a gap: the position
    closes at the open. On each later segment, isolated positions close at
    their liquidation price and the cross account at the point where
    ``MB == sum(MM)``; whichever comes first along the segment goes first
    (an isolated liquidation can only return margin to the wallet).
    """
    n = qty.shape[0]
    shortfall_total = 0.0
    # the open: gaps
    for i in range(n):
        if qty[i] != 0.0 and mode[i] == ISOLATED and _isolated_triggered(qty[i], cp[0, i],
                                                                         liq_px[i]):
            for j in range(n):
                scratch[j] = cp[0, j]
            sf = liquidate_isolated(t, i, cp[0, i], True, liq_fee[i], qty, entry,
                                                 mode, iso_margin, liq_px, wallet, scratch,
                                                 fills, liqs, counts)
            shortfall_total += sf
    if cross_trigger_value(wallet[0], qty, entry, mode, cp[0], floors, caps, mmrs, cums,
                           n_tiers) <= 0.0 and _has_cross(qty, mode):
        sf = liquidate_cross(t, cp[0], True, liq_fee, qty, entry, mode, iso_margin,
                                          wallet, fills, liqs, counts)
        shortfall_total += sf
    for k in range(1, n_cp):
        a = cp[k - 1]
        b = cp[k]
        while True:
            # earliest isolated trigger on this segment
            s_iso = 2.0
            i_iso = -1
            for i in range(n):
                if qty[i] == 0.0 or mode[i] != ISOLATED:
                    continue
                if _isolated_triggered(qty[i], b[i], liq_px[i]):
                    s = (liq_px[i] - a[i]) / (b[i] - a[i]) if b[i] != a[i] else 0.0
                    if s < s_iso:
                        s_iso = s
                        i_iso = i
            s_cross = 2.0
            if _has_cross(qty, mode) and cross_trigger_value(
                wallet[0], qty, entry, mode, b, floors, caps, mmrs, cums, n_tiers
            ) <= 0.0:
                s_cross = cross_trigger_point(a, b, wallet[0], qty, entry, mode, floors, caps,
                                              mmrs, cums, n_tiers, scratch2)
            if i_iso < 0 and s_cross > 1.0:
                break
            if i_iso >= 0 and s_iso <= s_cross:
                _interp(a, b, max(s_iso, 0.0), scratch)
                sf = liquidate_isolated(t, i_iso, liq_px[i_iso], False,
                                                     liq_fee[i_iso], qty, entry, mode, iso_margin,
                                                     liq_px, wallet, scratch, fills, liqs, counts)
            else:
                sf = liquidate_cross(t, scratch2, False, liq_fee, qty, entry, mode,
                                                  iso_margin, wallet, fills, liqs, counts)
            shortfall_total += sf
    for i in range(n):
        if qty[i] == 0.0:
            tier[i] = 0
    return shortfall_total


@njit(cache=True)
def _has_cross(qty, mode):
    for i in range(qty.shape[0]):
        if qty[i] != 0.0 and mode[i] == CROSS:
            return True
    return False


@njit(cache=True)
def store_bar(t, wallet, iso, upnl, maint, maint_cross, upnl_cross, gross, net, out):
    """Write bar t's account state into ``out``; returns the equity."""
    equity = wallet + iso + upnl
    out[OUT_EQUITY, t] = equity
    out[OUT_WALLET, t] = wallet
    out[OUT_ISO_MARGIN, t] = iso
    out[OUT_UPNL, t] = upnl
    out[OUT_MAINT, t] = maint
    mb = wallet + upnl_cross
    if maint_cross == 0.0:
        out[OUT_MARGIN_RATIO, t] = 0.0
    elif mb <= 0.0:
        out[OUT_MARGIN_RATIO, t] = np.inf
    else:
        out[OUT_MARGIN_RATIO, t] = maint_cross / mb
    out[OUT_GROSS, t] = gross
    out[OUT_NET, t] = net
    return equity


@njit(cache=True)
def mark_to_market(t, qty, entry, mode, iso_margin, wallet, mark, floors, caps, mmrs, cums,
                   n_tiers, tier, out):
    """Record the account at prices ``mark`` (after fills at the close)."""
    upnl = 0.0
    maint = 0.0
    maint_cross = 0.0
    upnl_cross = 0.0
    gross = 0.0
    net = 0.0
    iso = 0.0
    for i in range(qty.shape[0]):
        iso += iso_margin[i]
        q = qty[i]
        if q == 0.0:
            continue
        notional = abs(q) * mark[i]
        k = tier_index(notional, caps[i], n_tiers[i])
        tier[i] = k
        mm = notional * mmrs[i, k] - cums[i, k]
        u = q * (mark[i] - entry[i])
        upnl += u
        maint += mm
        if mode[i] == CROSS:
            maint_cross += mm
            upnl_cross += u
        gross += notional
        net += q * mark[i]
    return store_bar(t, wallet, iso, upnl, maint, maint_cross, upnl_cross, gross, net, out)


@njit(cache=True)
def cross_liquidation_prices(qty, entry, mode, wallet, mark, floors, caps, mmrs, cums, n_tiers,
                             tier, out_row):
    """Each cross position's liquidation price with the others frozen at their marks.

    Binance's ``WB - TMM1 + UPNL1`` collateral: the wallet, less the maintenance
    margin of the other cross positions, plus their unrealized PnL.
    """
    maint = 0.0
    upnl = 0.0
    for i in range(qty.shape[0]):
        if qty[i] != 0.0 and mode[i] == CROSS:
            notional = abs(qty[i]) * mark[i]
            k = tier[i]
            maint += notional * mmrs[i, k] - cums[i, k]
            upnl += qty[i] * (mark[i] - entry[i])
    for i in range(qty.shape[0]):
        if qty[i] == 0.0 or mode[i] != CROSS:
            continue
        notional = abs(qty[i]) * mark[i]
        k = tier[i]
        own_mm = notional * mmrs[i, k] - cums[i, k]
        own_u = qty[i] * (mark[i] - entry[i])
        collateral = wallet - (maint - own_mm) + (upnl - own_u)
        out_row[i] = liquidation_price(qty[i], entry[i], collateral, floors[i], caps[i], mmrs[i],
                                       cums[i], n_tiers[i])


# --- the loop ------------------------------------------------------------------------


# slots of the per-symbol state array (N_STATE, N)
S_QTY = 0
S_ENTRY = 1
S_ISO_MARGIN = 2
S_LIQ_PX = 3
S_MARK = 4  # last known mark of each symbol
S_LAST_CLOSE = 5  # last known traded close
N_STATE = 6
# slots of the account scalars
A_WALLET = 0
A_EQUITY_PREV = 1  # equity at the last close (for equity-fraction targets)


def new_state(n_symbols, initial_balance):
    """The run state the kernel reads and updates, so that it can stop and resume at a bar."""
    state = np.zeros((N_STATE, n_symbols))
    state[S_LIQ_PX] = np.nan
    state[S_MARK] = np.nan
    state[S_LAST_CLOSE] = np.nan
    tier = np.zeros(n_symbols, dtype=np.int64)
    account = np.array([initial_balance, initial_balance])
    return state, tier, account


@njit(cache=True)
def simulate(start, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate,
             has_funding, targets, has_target, target_kind, mode, leverage, floors, caps, mmrs,
             cums, max_leverage, n_tiers, taker_fee, liq_fee, slippage, fill_at, path,
             reduce_to_fit, record_positions, state, tier, account, out, positions_out,
             liq_px_out, fills, liqs, funding, rejects, counts):
    """Replay bars ``start..T-1``; see the module docstring for the order of events.

    ``state`` (N_STATE, N), ``tier`` (N,) and ``account`` (2,) hold the run's
    state (see ``new_state``) and are updated in place. Per-bar results go into
    ``out`` (N_OUT, T); ``positions_out`` and ``liq_px_out`` (T, N) are filled
    when ``record_positions``. Event records are written into the buffers and
    ``counts`` holds how many rows of each are used.

    Returns the bar at which it stopped: T when done, or an earlier bar when a
    record buffer might not hold that bar's events; the caller then grows the
    buffer (doubling) and calls again from that bar. Nothing in the loop
    reassigns an array, which keeps numba from reference-counting every bar.
    """
    n_bars, n = open_.shape
    qty = state[S_QTY]
    entry = state[S_ENTRY]
    iso_margin = state[S_ISO_MARGIN]
    liq_px = state[S_LIQ_PX]
    mark = state[S_MARK]
    last_close = state[S_LAST_CLOSE]
    wallet = account[A_WALLET:A_WALLET + 1]
    want = np.empty(n)
    scratch = np.empty(n)
    scratch2 = np.empty(n)
    cp = np.empty((4, n))
    equity_prev = account[A_EQUITY_PREV]
    for t in range(start, n_bars):
        if (counts[C_FILLS] + 2 * n > fills.shape[0] or counts[C_LIQS] + n > liqs.shape[0]
                or counts[C_REJECTS] + n > rejects.shape[0]):
            account[A_EQUITY_PREV] = equity_prev
            return t
        orders_now = fill_at == FILL_NEXT_OPEN and t > 0 and has_target[t - 1]
        if has_funding[t] or orders_now:
            # the mark at the open prices funding and margin checks of fills
            for i in range(n):
                if mark_open[t, i] == mark_open[t, i]:
                    mark[i] = mark_open[t, i]
        # 1. funding at index[t]
        if has_funding[t]:
            for i in range(n):
                rate = funding_rate[t, i]
                if rate == rate and qty[i] != 0.0 and mark[i] == mark[i]:
                    payment = apply_funding(i, rate, mark[i], qty, mode, iso_margin, wallet)
                    record_funding(funding, counts, t, i, qty[i], mark[i], rate, payment, mode[i])
                    if mode[i] == ISOLATED:
                        refresh_isolated_liq_price(i, qty, entry, iso_margin, liq_px, floors, caps,
                                                   mmrs, cums, n_tiers)
        # 2. orders decided at close[t-1] fill at open[t]
        if orders_now:
            process_orders(
                t, targets[t - 1], target_kind, close[t - 1], equity_prev, open_[t], slippage,
                taker_fee, reduce_to_fit, want, qty, entry, mode, leverage, iso_margin, liq_px,
                wallet, mark, last_close, tier, floors, caps, mmrs, cums, max_leverage, n_tiers,
                fills, rejects, counts)
        # 3-4. intrabar liquidation. First a cheap sufficient test that nothing can be
        # liquidated whatever the path (bar_may_liquidate, written out here: a call that
        # takes arrays costs numba reference counting on every bar, more than the test).
        may_liquidate = False
        worst = wallet[0]
        for i in range(n):
            q = qty[i]
            if q == 0.0:
                continue
            o = mark_open[t, i]
            if o != o:
                hi = mark[i]
                lo = mark[i]
            else:
                hi = mark_high[t, i]
                lo = mark_low[t, i]
            if mode[i] == ISOLATED:
                if (q > 0.0 and lo <= liq_px[i]) or (q < 0.0 and hi >= liq_px[i]):
                    may_liquidate = True
                continue
            notional = abs(q) * hi
            k = tier[i]
            nt = n_tiers[i]
            while k < nt - 1 and notional > caps[i, k]:
                k += 1
            worst += q * ((lo if q > 0.0 else hi) - entry[i]) - (notional * mmrs[i, k] - cums[i, k])
        if may_liquidate or worst <= 0.0:
            n_cp = build_checkpoints(t, path, qty, mark, mark_open, mark_high, mark_low,
                                     mark_close, cp)
            check_liquidations(t, n_cp, cp, qty, entry, mode, iso_margin, liq_px, wallet, liq_fee,
                               floors, caps, mmrs, cums, n_tiers, tier, scratch, scratch2, fills,
                               liqs, counts)
        # 5. mark to market at the close (mark_to_market, written out for the same reason)
        for i in range(n):
            m = mark_close[t, i]
            if m == m:
                mark[i] = m
            c = close[t, i]
            if c == c:
                last_close[i] = c
        upnl = 0.0
        maint = 0.0
        maint_cross = 0.0
        upnl_cross = 0.0
        gross = 0.0
        net = 0.0
        iso = 0.0
        for i in range(n):
            iso += iso_margin[i]
            q = qty[i]
            if q == 0.0:
                continue
            price = mark[i]
            notional = abs(q) * price
            k = tier[i]
            nt = n_tiers[i]
            while k < nt - 1 and notional > caps[i, k]:
                k += 1
            while k > 0 and notional <= floors[i, k]:
                k -= 1
            tier[i] = k
            mm = notional * mmrs[i, k] - cums[i, k]
            u = q * (price - entry[i])
            upnl += u
            maint += mm
            if mode[i] == CROSS:
                maint_cross += mm
                upnl_cross += u
            gross += notional
            net += q * price
        equity_prev = store_bar(t, wallet[0], iso, upnl, maint, maint_cross, upnl_cross, gross,
                                net, out)
        # orders decided and filled at the close (fill_at="close")
        if fill_at != FILL_NEXT_OPEN and has_target[t]:
            process_orders(
                t, targets[t], target_kind, close[t], equity_prev, close[t], slippage, taker_fee,
                reduce_to_fit, want, qty, entry, mode, leverage, iso_margin, liq_px, wallet, mark,
                last_close, tier, floors, caps, mmrs, cums, max_leverage, n_tiers, fills,
                rejects, counts)
            equity_prev = mark_to_market(t, qty, entry, mode, iso_margin, wallet[0], mark,
                                         floors, caps, mmrs, cums, n_tiers, tier, out)
        if record_positions:
            for i in range(n):
                positions_out[t, i] = qty[i]
                liq_px_out[t, i] = liq_px[i] if mode[i] == ISOLATED else np.nan
            cross_liquidation_prices(qty, entry, mode, wallet[0], mark, floors, caps, mmrs, cums,
                                     n_tiers, tier, liq_px_out[t])
    account[A_EQUITY_PREV] = equity_prev
    return n_bars
