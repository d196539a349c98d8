"""The bar loop: DESIGN.md §4, one bar at a time, in compiled code.

``simulate`` takes only arrays and scalars (``backtester.run`` validates and
converts everything first; ``engine.driver`` allocates state and buffers).
Inside bar t:

1. funding settled at ``index[t]`` (the bar's open time);
2. the orders decided at close[t-1] fill at open[t] (``fill_at="open"``);
3. a cheap bound tells whether anything can be liquidated in this bar; only
   then is the intrabar path walked, checkpoint by checkpoint;
4. triggered isolated positions / the cross account are liquidated in the
   order the triggers occur along the path;
5. mark to market at the close, the bar recorded; with ``fill_at="close"``
   the orders of row t fill at close[t] first.

The targets of row t are the decision taken at close[t].

6. with a strategy callback (``simulate(..., callback, ctx, orders, params)``,
   the form of ``enums.BarContext``), the callback runs after the bar's record
   and writes the orders for the next fill; it is called through a numba
   first-class function type, so this kernel is compiled (and cached) once for
   every callback, and a run without one (``callback=None``, the default) is
   compiled with every callback branch pruned away: it pays nothing.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .account import (
    account_equity,
    apply_funding,
    available_balance,
    cross_trigger_value,
    has_cross_position,
    increase_position,
    reduce_position,
    refresh_liq_price,
    removable_margin,
    tier_at,
)
from .enums import (
    A_BAR,
    A_EQUITY_PREV,
    A_EVENTS,
    A_WALLET,
    C_FILLS,
    C_FUNDING,
    C_LIQS,
    C_REJECTS,
    CROSS,
    FILL_LIQUIDATION,
    FILL_NEXT_OPEN,
    FILL_REDUCE_ONLY,
    FILL_STRATEGY,
    ISOLATED,
    N_ORDER_FIELDS,
    O_DELTA,
    O_LEVERAGE,
    O_MARGIN,
    O_MODE,
    O_TARGET,
    OUT_EQUITY,
    OUT_GROSS,
    OUT_ISO_MARGIN,
    OUT_MAINT,
    OUT_MARGIN_RATIO,
    OUT_NET,
    OUT_UPNL,
    OUT_WALLET,
    PATH_OHLC,
    PATH_WORST,
    REJECT_ACCOUNT_BANKRUPT,
    REJECT_INSUFFICIENT_MARGIN,
    REJECT_INVALID_ORDER,
    REJECT_LEVERAGE_ABOVE_TIER,
    REJECT_MARGIN_REMOVAL,
    REJECT_MODE_SWITCH_OPEN,
    REJECT_NO_PRICE,
    REJECT_NOT_ISOLATED,
    REJECT_SPOT_SHORT,
    S_ENTRY,
    S_ISO_MARGIN,
    S_LAST_CLOSE,
    S_LIQ_PX,
    S_MARK,
    S_QTY,
    SPOT,
    SYM_LEVERAGE,
    SYM_LIQ_FEE,
    SYM_TAKER_FEE,
    TARGET_EQUITY,
    TARGET_NOTIONAL,
    TIER_CAP,
    TIER_CUM,
    TIER_FLOOR,
    TIER_MAX_LEVERAGE,
    TIER_MMR,
)
from .margin import liquidation_price

# --- record buffers ----------------------------------------------------------------------


@njit(cache=True)
def grow_buffer(buf, needed):
    """``buf`` itself when it holds ``needed`` rows, else a copy doubled until it does.

    ``simulate`` stops at a bar whose events might overflow a buffer; its caller
    grows the buffers with this and resumes from that bar.
    """
    if buf.shape[0] >= needed:
        return buf
    size = max(buf.shape[0], 64)
    while size < needed:
        size *= 2
    new = np.empty(size, dtype=buf.dtype)
    new[: buf.shape[0]] = buf
    return new


@njit(cache=True, _nrt=False)
def put_rules_in_force(new_tiers, new_n_tiers, taker_fee, liquidation_fee, tiers, n_tiers, sym,
                       state, mode, tier):
    """A venue's new tier table and fees, in force from now on for the open positions too.

    Copies them into the run's own arrays (so a strategy's view sees them), clears
    the cached tier indexes and recomputes isolated liquidation prices: Binance
    applies new brackets to positions already open.
    """
    for f in range(tiers.shape[0]):
        for i in range(tiers.shape[1]):
            for k in range(tiers.shape[2]):
                tiers[f, i, k] = new_tiers[f, i, k]
    for i in range(tiers.shape[1]):
        n_tiers[i] = new_n_tiers[i]
        sym[SYM_TAKER_FEE, i] = taker_fee[i]
        sym[SYM_LIQ_FEE, i] = liquidation_fee[i]
        tier[i] = 0
        refresh_liq_price(i, state, mode, tiers, n_tiers)


# --- records ---------------------------------------------------------------------------


# Compiled without NRT (``_nrt=False``): these functions allocate nothing, and
# without NRT numba does not reference-count the arrays they receive. That count
# is atomic and costs ~75 ns per call, more than most of these functions' work.

@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
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
    liqs[c]["equity_after"] = np.nan  # completed by the caller once the event is over
    liqs[c]["shortfall"] = shortfall
    liqs[c]["gapped"] = gapped
    counts[C_LIQS] = c + 1


# --- step 2: fills ----------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def execute_order(t, i, delta, price, reduce_to_fit, state, mode, sym, tiers, n_tiers, account,
                  fills, rejects, counts):
    """Trade ``delta`` units of symbol i at ``price`` under DESIGN.md §3's margin rules.

    The reducing part of an order always fills. The opening part needs its
    initial margin plus fee from the available balance, and the symbol's
    leverage may not exceed the max leverage of the tier its new notional lands
    in; otherwise it is rejected with a reason code (or, with
    ``reduce_to_fit``, cut to what the balance allows). A spot holding cannot
    go short: selling beyond it fills down to zero and the rest is rejected.
    """
    old = state[S_QTY, i]
    fee_rate = sym[SYM_TAKER_FEE, i]
    close_qty = 0.0
    if old != 0.0 and (delta > 0.0) != (old > 0.0):
        close_qty = -old if abs(delta) >= abs(old) else delta
    open_qty = delta - close_qty
    realized = 0.0
    fee = 0.0
    reason = FILL_STRATEGY
    if close_qty != 0.0:
        realized, fee = reduce_position(i, close_qty, price, fee_rate, state, mode, account)
    if open_qty != 0.0:
        lev = sym[SYM_LEVERAGE, i]
        k = tier_at((abs(state[S_QTY, i]) + abs(open_qty)) * price, i, tiers, n_tiers)
        avail = available_balance(state, mode, sym, account)
        per_unit = price * (1.0 / lev + fee_rate)
        required = abs(open_qty) * per_unit
        reject = -1
        if open_qty < 0.0 and mode[i] == SPOT:
            reject = REJECT_SPOT_SHORT
        elif lev > tiers[TIER_MAX_LEVERAGE, i, k]:
            reject = REJECT_LEVERAGE_ABOVE_TIER
        elif avail <= 0.0 and account_equity(state, account, state[S_MARK]) <= 0.0:
            reject = REJECT_ACCOUNT_BANKRUPT
        elif required > avail:
            if reduce_to_fit and avail > 0.0:
                open_qty = np.sign(open_qty) * avail / per_unit
                reason = FILL_REDUCE_ONLY
            else:
                reject = REJECT_INSUFFICIENT_MARGIN
        if reject >= 0:
            record_rejection(rejects, counts, t, i, open_qty, price, required, avail, reject)
            open_qty = 0.0
        else:
            fee += increase_position(i, open_qty, price, fee_rate, state, mode, sym, account)
    filled = close_qty + open_qty
    if filled != 0.0:
        record_fill(fills, counts, t, i, filled, price, fee, realized, state[S_QTY, i], reason)
        refresh_liq_price(i, state, mode, tiers, n_tiers)


@njit(cache=True, _nrt=False)
def to_units(i, amount, target_kind, decision_price, state, account):
    """``amount`` of the run's target unit as base units of symbol i (NaN: no price).

    Notional and equity-fraction amounts are converted at the decision-time
    close (the last known close where that bar is missing), with the equity at
    the last close.
    """
    if target_kind != TARGET_NOTIONAL and target_kind != TARGET_EQUITY:
        return amount
    ref = decision_price[i]
    if ref != ref:
        ref = state[S_LAST_CLOSE, i]
    if ref != ref:
        return np.nan
    amount = amount / ref
    if target_kind == TARGET_EQUITY:
        amount *= max(account[A_EQUITY_PREV], 0.0)
    return amount


@njit(cache=True, _nrt=False)
def set_want(i, target, want, state):
    """Keep ``target`` (units) as symbol i's order unless it is (numerically) the position."""
    q = state[S_QTY, i]
    delta = target - q
    if delta == 0.0 or abs(delta) <= 1e-9 * max(abs(target), abs(q)):
        return
    want[i] = target


@njit(cache=True, _nrt=False)
def targets_to_wants(t, targets_row, target_kind, decision_price, want, state, account, rejects,
                     counts):
    """One row of targets as units per symbol in ``want`` (NaN = no order)."""
    for i in range(state.shape[1]):
        want[i] = np.nan
        target = targets_row[i]
        if target != target:
            continue
        target = to_units(i, target, target_kind, decision_price, state, account)
        if target != target:
            record_rejection(rejects, counts, t, i, 0.0, np.nan, 0.0, 0.0, REJECT_NO_PRICE)
            continue
        set_want(i, target, want, state)


@njit(cache=True, _nrt=False)
def fill_wants(t, reducing_pass, want, fill_price, slippage, reduce_to_fit, state, mode, sym,
               tiers, n_tiers, account, fills, rejects, counts):
    """Fill the orders in ``want`` that reduce a position (``reducing_pass``) or the others."""
    for i in range(state.shape[1]):
        target = want[i]
        if target != target:
            continue
        q = state[S_QTY, i]
        reducing = abs(target) < abs(q) and (target == 0.0 or (target > 0.0) == (q > 0.0))
        if reducing_pass != reducing:
            continue
        delta = target - q
        price = fill_price[i]
        if price != price:
            record_rejection(rejects, counts, t, i, delta, np.nan, 0.0, 0.0, REJECT_NO_PRICE)
            continue
        price *= 1.0 + slippage * np.sign(delta)
        execute_order(t, i, delta, price, reduce_to_fit, state, mode, sym, tiers, n_tiers,
                      account, fills, rejects, counts)


@njit(cache=True, _nrt=False)
def process_orders(t, targets_row, target_kind, decision_price, fill_price, slippage,
                   reduce_to_fit, want, state, mode, sym, tiers, n_tiers, account, fills, rejects,
                   counts):
    """Turn one row of targets into orders and fill them, reductions first to free margin.

    Notional and equity-fraction targets are converted to units at the
    decision-time close (the last known close where that bar is missing), with
    the equity at the last close.
    """
    targets_to_wants(t, targets_row, target_kind, decision_price, want, state, account, rejects,
                     counts)
    fill_wants(t, True, want, fill_price, slippage, reduce_to_fit, state, mode, sym, tiers,
               n_tiers, account, fills, rejects, counts)
    fill_wants(t, False, want, fill_price, slippage, reduce_to_fit, state, mode, sym, tiers,
               n_tiers, account, fills, rejects, counts)


# --- step 2 with a strategy callback: its orders (enums.O_*) -------------------------------


@njit(cache=True, _nrt=False)
def has_orders(orders):
    """Whether any field of ``orders`` asks for something (is not NaN)."""
    for f in range(orders.shape[0]):
        for i in range(orders.shape[1]):
            if orders[f, i] == orders[f, i]:
                return True
    return False


@njit(cache=True, _nrt=False)
def change_isolated_margin(t, i, amount, state, mode, sym, tiers, n_tiers, account, rejects,
                           counts):
    """Move ``amount`` of quote into (> 0) or out of (< 0) isolated position i's margin.

    Adding takes it from the available balance; removing is limited to the
    margin above the position's initial margin at the mark (``removable_margin``).
    Either moves the liquidation price.
    """
    q = state[S_QTY, i]
    mark = state[S_MARK, i]
    if mode[i] != ISOLATED or q == 0.0:
        record_rejection(rejects, counts, t, i, 0.0, mark, amount, 0.0, REJECT_NOT_ISOLATED)
        return
    if amount > 0.0:
        avail = available_balance(state, mode, sym, account)
        if amount > avail:
            record_rejection(rejects, counts, t, i, 0.0, mark, amount, avail,
                             REJECT_INSUFFICIENT_MARGIN)
            return
    else:
        free = removable_margin(i, state, sym)
        if -amount > free:
            record_rejection(rejects, counts, t, i, 0.0, mark, -amount, free,
                             REJECT_MARGIN_REMOVAL)
            return
    state[S_ISO_MARGIN, i] += amount
    account[A_WALLET] -= amount
    refresh_liq_price(i, state, mode, tiers, n_tiers)


@njit(cache=True, _nrt=False)
def change_leverage(t, i, leverage, state, mode, sym, tiers, n_tiers, account, rejects, counts):
    """Set symbol i's leverage, within the max leverage of the tier its position is in.

    An open isolated position keeps the margin it holds (the new leverage sizes
    what is added later); an open cross position's initial margin is re-priced,
    so lowering its leverage needs the extra margin from the available balance.
    """
    mark = state[S_MARK, i]
    if mode[i] == SPOT or not leverage >= 1.0:
        record_rejection(rejects, counts, t, i, 0.0, mark, leverage, np.nan, REJECT_INVALID_ORDER)
        return
    q = state[S_QTY, i]
    k = tier_at(abs(q) * mark if q != 0.0 else 0.0, i, tiers, n_tiers)
    cap = tiers[TIER_MAX_LEVERAGE, i, k]
    if leverage > cap:
        record_rejection(rejects, counts, t, i, 0.0, mark, leverage, cap,
                         REJECT_LEVERAGE_ABOVE_TIER)
        return
    old = sym[SYM_LEVERAGE, i]
    if mode[i] == CROSS and q != 0.0 and leverage < old:
        extra = abs(q) * state[S_ENTRY, i] * (1.0 / leverage - 1.0 / old)
        avail = available_balance(state, mode, sym, account)
        if extra > avail:
            record_rejection(rejects, counts, t, i, 0.0, mark, extra, avail,
                             REJECT_INSUFFICIENT_MARGIN)
            return
    sym[SYM_LEVERAGE, i] = leverage


@njit(cache=True, _nrt=False)
def switch_margin_mode(t, i, new_mode, state, mode, rejects, counts):
    """Set symbol i's margin mode to CROSS or ISOLATED; refused while it holds a position."""
    mark = state[S_MARK, i]
    if mode[i] == SPOT or (new_mode != CROSS and new_mode != ISOLATED):
        record_rejection(rejects, counts, t, i, 0.0, mark, new_mode, np.nan, REJECT_INVALID_ORDER)
        return
    if new_mode == mode[i]:
        return
    if state[S_QTY, i] != 0.0:
        record_rejection(rejects, counts, t, i, 0.0, mark, new_mode, np.nan,
                         REJECT_MODE_SWITCH_OPEN)
        return
    mode[i] = int(new_mode)
    state[S_LIQ_PX, i] = np.nan


@njit(cache=True, _nrt=False)
def apply_callback_orders(t, orders, target_kind, decision_price, fill_price, slippage,
                          reduce_to_fit, want, state, mode, sym, tiers, n_tiers, account, fills,
                          rejects, counts):
    """Carry out a callback's orders (enums.O_*), then clear them.

    Order of work: margin changes; trades that reduce a position; leverage and
    mode changes; trades that open or add. Targets and deltas are sized like a
    targets row (at the decision close, the equity at the last close).
    """
    n = state.shape[1]
    for i in range(n):
        amount = orders[O_MARGIN, i]
        if amount == amount and amount != 0.0:
            change_isolated_margin(t, i, amount, state, mode, sym, tiers, n_tiers, account,
                                   rejects, counts)
    for i in range(n):
        want[i] = np.nan
        target = orders[O_TARGET, i]
        if target != target:
            delta = orders[O_DELTA, i]
            if delta != delta or delta == 0.0:
                continue
            target = to_units(i, delta, target_kind, decision_price, state, account)
            target += state[S_QTY, i]
        else:
            target = to_units(i, target, target_kind, decision_price, state, account)
        if target != target:
            record_rejection(rejects, counts, t, i, 0.0, np.nan, 0.0, 0.0, REJECT_NO_PRICE)
            continue
        set_want(i, target, want, state)
    fill_wants(t, True, want, fill_price, slippage, reduce_to_fit, state, mode, sym, tiers,
               n_tiers, account, fills, rejects, counts)
    for i in range(n):
        leverage = orders[O_LEVERAGE, i]
        if leverage == leverage:
            change_leverage(t, i, leverage, state, mode, sym, tiers, n_tiers, account, rejects,
                            counts)
        new_mode = orders[O_MODE, i]
        if new_mode == new_mode:
            switch_margin_mode(t, i, new_mode, state, mode, rejects, counts)
    fill_wants(t, False, want, fill_price, slippage, reduce_to_fit, state, mode, sym, tiers,
               n_tiers, account, fills, rejects, counts)
    for f in range(N_ORDER_FIELDS):
        for i in range(n):
            orders[f, i] = np.nan


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


# --- step 5: the record of the bar --------------------------------------------------------


@njit(cache=True, _nrt=False)
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


@njit(cache=True, _nrt=False)
def mark_to_market(t, state, mode, tiers, n_tiers, tier, account, out):
    """Record the account with every symbol at its last known mark; returns the equity."""
    upnl = 0.0
    maint = 0.0
    maint_cross = 0.0
    upnl_cross = 0.0
    gross = 0.0
    net = 0.0
    iso = 0.0
    for i in range(state.shape[1]):
        iso += state[S_ISO_MARGIN, i]
        q = state[S_QTY, i]
        if q == 0.0:
            continue
        price = state[S_MARK, i]
        notional = abs(q) * price
        k = tier_at(notional, i, tiers, n_tiers)
        tier[i] = k
        mm = notional * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]
        u = q * (price - state[S_ENTRY, i])
        upnl += u
        maint += mm
        if mode[i] == CROSS:
            maint_cross += mm
            upnl_cross += u
        gross += notional
        net += q * price
    return store_bar(t, account[A_WALLET], iso, upnl, maint, maint_cross, upnl_cross, gross, net,
                     out)


@njit(cache=True, _nrt=False)
def record_liquidation_prices(state, mode, tiers, n_tiers, account, out_row):
    """Each open position's liquidation price at the current marks.

    Isolated: the cached price. Cross: Binance's formula with the other cross
    positions frozen at their marks (collateral ``WB - TMM1 + UPNL1``).
    """
    maint = 0.0
    upnl = 0.0
    n = state.shape[1]
    for i in range(n):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            notional = abs(q) * state[S_MARK, i]
            k = tier_at(notional, i, tiers, n_tiers)
            maint += notional * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]
            upnl += q * (state[S_MARK, i] - state[S_ENTRY, i])
    for i in range(n):
        q = state[S_QTY, i]
        if q == 0.0 or mode[i] == SPOT:
            out_row[i] = np.nan
        elif mode[i] == ISOLATED:
            out_row[i] = state[S_LIQ_PX, i]
        else:
            notional = abs(q) * state[S_MARK, i]
            k = tier_at(notional, i, tiers, n_tiers)
            own_mm = notional * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]
            own_u = q * (state[S_MARK, i] - state[S_ENTRY, i])
            collateral = account[A_WALLET] - (maint - own_mm) + (upnl - own_u)
            out_row[i] = liquidation_price(q, state[S_ENTRY, i], collateral, tiers[TIER_FLOOR, i],
                                           tiers[TIER_CAP, i], tiers[TIER_MMR, i],
                                           tiers[TIER_CUM, i], n_tiers[i])


# --- the loop ------------------------------------------------------------------------------


@njit(cache=True)
def simulate(start, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate,
             has_funding, targets, has_target, target_kind, mode, sym, tiers, n_tiers, slippage,
             fill_at, path, reduce_to_fit, record_positions, state, tier, account, out,
             positions_out, liq_px_out, fills, liqs, funding, rejects, counts, callback=None,
             ctx=None, orders=None, params=None, stop=-1):
    """Replay bars ``start..T-1``; the module docstring gives the order of events.

    ``state`` (N_STATE, N), ``tier`` (N,) and ``account`` (N_ACCOUNT,) hold the
    run's state and are updated in place. Per-bar results go into ``out``
    (N_OUT, T); ``positions_out`` and ``liq_px_out`` (T, N) are filled when
    ``record_positions``. Event records are written into the buffers and
    ``counts`` says how many rows of each are used.

    Returns the bar at which it stopped: ``stop`` (T by default) when done, or an
    earlier bar whose events might not fit in a record buffer; the caller then
    doubles that buffer and calls again from that bar.

    A strategy callback (optional, last four arguments): ``callback(t, ctx,
    orders, params) -> bool`` of numba type ``driver.callback_type()``, called
    at each close after the bar's record; ``ctx`` is an ``enums.BarContext``
    over this run's own arrays, ``orders`` (N_ORDER_FIELDS, N) all NaN at the
    start, ``params`` the strategy's float64 parameters. Its orders wait in
    ``orders`` for the next fill, so a run that stops early resumes with them.
    Without a callback every ``callback is not None`` branch is pruned at
    compile time.

    Speed: the two passes run on every bar (the liquidation bound and the mark
    to market) are written out here rather than called, and nothing in the loop
    reassigns an array: a call taking arrays, or an array variable reassigned in
    a loop, makes numba reference-count on every bar, which costs more than
    the work itself.
    """
    n_bars, n = open_.shape
    # ``stop``: the bar before which to pause (-1: run to the end). The driver pauses at
    # a venue's tier-table change and resumes with the new table.
    end = n_bars if stop < 0 or stop > n_bars else stop
    want = np.empty(n)
    scratch = np.empty(n)
    scratch2 = np.empty(n)
    cp = np.empty((4, n))
    fill_room = 2 * n  # a bar's worst case: an order fill and a liquidation per symbol
    reject_room = n
    pending = False  # a callback's orders wait for the next open
    if callback is not None:
        # targets and a callback's orders may both fill in one bar, and each of the
        # callback's five fields may be refused
        fill_room = 3 * n
        reject_room = 6 * n
        pending = fill_at == FILL_NEXT_OPEN and has_orders(orders)
    for t in range(start, end):
        if (counts[C_FILLS] + fill_room > fills.shape[0] or counts[C_LIQS] + n > liqs.shape[0]
                or counts[C_REJECTS] + reject_room > rejects.shape[0]):
            return t
        orders_now = fill_at == FILL_NEXT_OPEN and t > 0 and has_target[t - 1]
        if callback is not None:
            account[A_BAR] = t
        if has_funding[t] or orders_now or pending:
            # the mark at the open prices funding and the margin checks of fills
            for i in range(n):
                m = mark_open[t, i]
                if m == m:
                    state[S_MARK, i] = m
        # 1. funding at index[t]
        if has_funding[t]:
            for i in range(n):
                rate = funding_rate[t, i]
                q = state[S_QTY, i]
                mark = state[S_MARK, i]
                if rate == rate and q != 0.0 and mark == mark and mode[i] != SPOT:
                    payment = apply_funding(i, rate, mark, state, mode, account)
                    record_funding(funding, counts, t, i, q, mark, rate, payment, mode[i])
                    if mode[i] == ISOLATED:
                        refresh_liq_price(i, state, mode, tiers, n_tiers)
        # 2. orders decided at close[t-1] fill at open[t]
        if orders_now:
            process_orders(t, targets[t - 1], target_kind, close[t - 1], open_[t], slippage,
                           reduce_to_fit, want, state, mode, sym, tiers, n_tiers, account, fills,
                           rejects, counts)
        if callback is not None:
            if pending:
                apply_callback_orders(t, orders, target_kind, close[t - 1], open_[t], slippage,
                                      reduce_to_fit, want, state, mode, sym, tiers, n_tiers,
                                      account, fills, rejects, counts)
                pending = False
        # 3. one pass: a bound on the worst the bar can do (if even that is safe, no point
        #    of any path triggers), and the close's mark to market, valid when it is safe
        may_liquidate = False
        any_cross = False
        worst = account[A_WALLET]
        upnl = 0.0
        maint = 0.0
        maint_cross = 0.0
        upnl_cross = 0.0
        gross = 0.0
        net = 0.0
        iso = 0.0
        for i in range(n):
            c = close[t, i]
            if c == c:
                state[S_LAST_CLOSE, i] = c
            iso += state[S_ISO_MARGIN, i]
            q = state[S_QTY, i]
            if q == 0.0:
                m = mark_close[t, i]
                if m == m:
                    state[S_MARK, i] = m
                continue
            entry = state[S_ENTRY, i]
            m = mark_close[t, i]
            if m == m:
                hi = mark_high[t, i]
                lo = mark_low[t, i]
                state[S_MARK, i] = m
            else:
                hi = state[S_MARK, i]
                lo = hi
                m = hi
            nt = n_tiers[i]
            notional = abs(q) * m
            k = tier[i]
            while k < nt - 1 and notional > tiers[TIER_CAP, i, k]:
                k += 1
            while k > 0 and notional <= tiers[TIER_FLOOR, i, k]:
                k -= 1
            tier[i] = k
            mm = notional * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]
            if mode[i] == ISOLATED:
                liq = state[S_LIQ_PX, i]
                if (q > 0.0 and lo <= liq) or (q < 0.0 and hi >= liq):
                    may_liquidate = True
            elif mode[i] == CROSS:  # (spot holdings are never liquidated)
                any_cross = True
                # the largest notional of the bar is at its high, at or above the close's:
                # its tier is at or above the close's. MM is the max of the tier lines, so
                # the tier must be the right one, or the bound is not safe
                extreme = abs(q) * hi
                ke = k
                while ke < nt - 1 and extreme > tiers[TIER_CAP, i, ke]:
                    ke += 1
                worst += q * ((lo if q > 0.0 else hi) - entry) - (
                    extreme * tiers[TIER_MMR, i, ke] - tiers[TIER_CUM, i, ke])
            u = q * (m - entry)
            upnl += u
            maint += mm
            if mode[i] == CROSS:
                maint_cross += mm
                upnl_cross += u
            gross += notional
            net += q * m
        if may_liquidate or (any_cross and worst <= 0.0):
            # 4. walk the path; the marks of the close are restored afterwards
            n_cp = build_checkpoints(t, path, state, mark_open, mark_high, mark_low, mark_close,
                                     cp)
            for i in range(n):
                state[S_MARK, i] = cp[n_cp - 1, i]
            check_liquidations(t, n_cp, cp, state, mode, sym, tiers, n_tiers, account, scratch,
                               scratch2, fills, liqs, counts)
            equity = mark_to_market(t, state, mode, tiers, n_tiers, tier, account, out)
        else:
            equity = store_bar(t, account[A_WALLET], iso, upnl, maint, maint_cross, upnl_cross,
                               gross, net, out)
        account[A_EQUITY_PREV] = equity
        # 5. orders decided and filled at the close (fill_at="close")
        if fill_at != FILL_NEXT_OPEN and has_target[t]:
            process_orders(t, targets[t], target_kind, close[t], close[t], slippage,
                           reduce_to_fit, want, state, mode, sym, tiers, n_tiers, account, fills,
                           rejects, counts)
            account[A_EQUITY_PREV] = mark_to_market(t, state, mode, tiers, n_tiers, tier,
                                                    account, out)
        # 6. the strategy callback decides at the close
        if callback is not None:
            if callback(t, ctx, orders, params):
                if fill_at == FILL_NEXT_OPEN:
                    pending = t + 1 < n_bars
                else:
                    apply_callback_orders(t, orders, target_kind, close[t], close[t], slippage,
                                          reduce_to_fit, want, state, mode, sym, tiers, n_tiers,
                                          account, fills, rejects, counts)
                    account[A_EQUITY_PREV] = mark_to_market(t, state, mode, tiers, n_tiers,
                                                            tier, account, out)
        if record_positions:
            for i in range(n):
                positions_out[t, i] = state[S_QTY, i]
            record_liquidation_prices(state, mode, tiers, n_tiers, account, liq_px_out[t])
    return end
