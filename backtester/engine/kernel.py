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

The targets of row t are the decision taken at close[t]. Step 2 lives in
``orders.py``, steps 3-4 in ``liquidation.py``, the event records in
``records.py``; this module holds the loop and the bar's record.

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
    collateral_value,
    cross_level_value,
    fee_in_margin,
    legs_liquidation_price,
    pay_isolated_funding,
    position_maintenance,
    refresh_liq_price,
    solve_liquidation_price,
)
from .enums import (
    A_BAR,
    A_EQUITY_PREV,
    A_IN_CALL,
    A_LOAN_RATE,
    A_WALLET,
    C_EVENTS,
    C_FILLS,
    C_LIQS,
    C_REJECTS,
    COLLATERAL,
    CROSS,
    EVENT_LOAN_INTEREST,
    EVENT_ROLLOVER_FEE,
    FILL_NEXT_OPEN,
    ISOLATED,
    MM_BRACKET,
    MM_MARGIN_LEVEL,
    OUT_EQUITY,
    OUT_GROSS,
    OUT_ISO_MARGIN,
    OUT_MAINT,
    OUT_MARGIN_RATIO,
    OUT_NET,
    OUT_UPNL,
    OUT_WALLET,
    S_ENTRY,
    S_ISO_MARGIN,
    S_LAST_CLOSE,
    S_LIQ_PX,
    S_MARK,
    S_OPENED,
    S_QTY,
    S_ROLLOVERS,
    SPOT,
    SYM_BORROW_ROLL_LONG,
    SYM_BORROW_ROLL_SHORT,
    SYM_CALL_LEVEL,
    SYM_FEE_RULE,
    SYM_MM_RULE,
    SYM_PARTNER,
    SYM_ROLLOVER_HOURS,
    TIER_CAP,
    TIER_CUM,
    TIER_FLOOR,
    TIER_MMR,
    VENUE_SYMBOL_FIELDS,
)
from .liquidation import build_checkpoints, check_liquidations, check_margin_call
from .orders import apply_callback_orders, has_orders, process_orders
from .records import record_event, record_funding

# Compiled without NRT (``_nrt=False``): these functions allocate nothing, and
# without NRT numba does not reference-count the arrays they receive. That count
# is atomic and costs ~75 ns per call, more than most of these functions' work.

@njit(cache=True, _nrt=False)
def put_rules_in_force(new_tiers, new_n_tiers, new_sym, tiers, n_tiers, sym, state, mode, tier):
    """A venue's new tier table and rules, in force from now on for the open positions too.

    Copies them into the run's own arrays (so a strategy's view sees them): the
    tiers, and every venue row of ``new_sym`` (fees, margin rules; not the
    leverage, which is the run's). Clears the cached tier indexes and recomputes
    isolated liquidation prices: Binance applies new brackets to positions
    already open, and Bybit's 2025-09-02 margin formula applied to open positions.
    """
    for f in range(tiers.shape[0]):
        for i in range(tiers.shape[1]):
            for k in range(tiers.shape[2]):
                tiers[f, i, k] = new_tiers[f, i, k]
    for i in range(tiers.shape[1]):
        n_tiers[i] = new_n_tiers[i]
        for row in VENUE_SYMBOL_FIELDS:
            sym[row, i] = new_sym[row, i]
        tier[i] = 0
        refresh_liq_price(i, state, mode, sym, tiers, n_tiers)


@njit(cache=True, _nrt=False)
def charge_rollovers(t, now, mark_open, state, mode, sym, account, events, counts):
    """Spot margin: each rollover fee due by ``now`` (one per full period since the position
    opened, from the first period's end), on what it borrows: a long's cost in quote, a
    short's size in base valued at the open's mark. Paid from the wallet."""
    for i in range(state.shape[1]):
        q = state[S_QTY, i]
        period = sym[SYM_ROLLOVER_HOURS, i]
        if q == 0.0 or period <= 0.0 or mode[i] != CROSS:
            continue
        m = mark_open[t, i]
        if m == m:
            state[S_MARK, i] = m
        due = np.floor((now - state[S_OPENED, i]) / period + 1e-9) - state[S_ROLLOVERS, i]
        if due < 1.0:
            continue
        if q > 0.0:
            rate = sym[SYM_BORROW_ROLL_LONG, i]
            price = state[S_ENTRY, i]
        else:
            rate = sym[SYM_BORROW_ROLL_SHORT, i]
            price = state[S_MARK, i]
        amount = abs(q) * price * rate * due
        account[A_WALLET] -= amount
        state[S_ROLLOVERS, i] += due
        record_event(events, counts, t, i, EVENT_ROLLOVER_FEE, q, price, rate, amount, np.nan)


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
def mark_to_market(t, state, mode, sym, tiers, n_tiers, account, out):
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
        entry = state[S_ENTRY, i]
        notional = abs(q) * price
        u = q * (price - entry)
        upnl += u
        gross += notional
        net += q * price
        if mode[i] == COLLATERAL:  # backs the cross margin balance at its discounted value
            upnl_cross += collateral_value(i, q, price, sym, tiers, n_tiers)
        if mode[i] >= SPOT:
            continue
        mm = position_maintenance(i, q, entry, price, sym, tiers, n_tiers)
        maint += mm
        if mode[i] == CROSS:
            maint_cross += mm
            upnl_cross += u
    return store_bar(t, account[A_WALLET], iso, upnl, maint, maint_cross, upnl_cross, gross, net,
                     out)


@njit(cache=True, _nrt=False)
def record_liquidation_prices(state, mode, sym, tiers, n_tiers, account, out_row):
    """Each open position's liquidation price at the current marks.

    Isolated: the cached price. Cross: the venue's formula with the other cross
    positions frozen at their marks (collateral ``WB - TMM1 + UPNL1``); the two
    legs of a hedge-mode symbol share one price (``legs_liquidation_price``).
    """
    maint = 0.0
    upnl = 0.0  # of the cross positions, and the discounted value of collateral
    n = state.shape[1]
    # first pass: each cross position's MM, kept in its own cell of ``out_row`` until the
    # second pass replaces it with its liquidation price
    for i in range(n):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            entry = state[S_ENTRY, i]
            mm = position_maintenance(i, q, entry, state[S_MARK, i], sym, tiers, n_tiers)
            out_row[i] = mm
            maint += mm
            upnl += q * (state[S_MARK, i] - entry)
        elif q > 0.0 and mode[i] == COLLATERAL:
            upnl += collateral_value(i, q, state[S_MARK, i], sym, tiers, n_tiers)
    for i in range(n):
        q = state[S_QTY, i]
        if q == 0.0 or mode[i] >= SPOT:
            out_row[i] = np.nan
        elif mode[i] == ISOLATED:
            out_row[i] = state[S_LIQ_PX, i]
        else:
            entry = state[S_ENTRY, i]
            own_mm = out_row[i]
            own_u = q * (state[S_MARK, i] - entry)
            partner = int(sym[SYM_PARTNER, i])
            if partner >= 0 and mode[partner] == CROSS and state[S_QTY, partner] != 0.0:
                qp = state[S_QTY, partner]
                ep = state[S_ENTRY, partner]
                own_mm += position_maintenance(partner, qp, ep, state[S_MARK, partner], sym,
                                               tiers, n_tiers)
                own_u += qp * (state[S_MARK, partner] - ep)
                collateral = account[A_WALLET] - (maint - own_mm) + (upnl - own_u)
                out_row[i] = legs_liquidation_price(i, partner, collateral, state, sym, tiers,
                                                    n_tiers)
            else:
                collateral = account[A_WALLET] - (maint - own_mm) + (upnl - own_u)
                out_row[i] = solve_liquidation_price(i, q, entry, collateral, sym, tiers,
                                                     n_tiers)


# --- the loop ------------------------------------------------------------------------------


@njit(cache=True)
def simulate(start, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate,
             has_funding, hours, targets, has_target, target_kind, mode, sym, tiers, n_tiers,
             slippage, fill_at, path, reduce_to_fit, record_positions, state, tier, account, out,
             positions_out, liq_px_out, fills, liqs, funding, rejects, events, counts,
             callback=None, ctx=None, orders=None, params=None, stop=-1):
    """Replay bars ``start..T-1``; the module docstring gives the order of events.

    ``state`` (N_STATE, N), ``tier`` (N,) and ``account`` (N_ACCOUNT,) hold the
    run's state and are updated in place. Per-bar results go into ``out``
    (N_OUT, T); ``positions_out`` and ``liq_px_out`` (T, N) are filled when
    ``record_positions``. Event records are written into the buffers and
    ``counts`` says how many rows of each are used.

    ``hours`` (T + 1,) holds each bar's open time in hours from the first bar's,
    and the end of the last bar: the clock of spot-margin rollover fees.
    ``sym`` carries the venue's rules per symbol (``enums.SYM_*``): the kernel
    applies Binance's, Bybit's, OKX's or Kraken's margin model from them.

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
    seg_start = np.empty(n)
    cp = np.empty((4, n))
    # a bar's worst case per symbol: an order fill, a liquidation, a collateral sale, and a
    # partial cut per tier (each cut takes a position at least one tier down)
    cut_room = n * tiers.shape[2]
    fill_room = 3 * n
    reject_room = n
    pending = False  # a callback's orders wait for the next open
    if callback is not None:
        # targets and a callback's orders may both fill in one bar, and each of the
        # callback's five fields may be refused
        fill_room = 4 * n
        reject_room = 6 * n
        pending = fill_at == FILL_NEXT_OPEN and has_orders(orders)
    # spot margin (Kraken): borrowing fees and margin calls; a partial liquidation may
    # cut a position and close it in one bar. A bar's events: a rollover fee per symbol,
    # an opening fee per fill (targets and a callback's orders), a call, a loan's interest
    borrowing = False
    calls = False
    plain = True  # every symbol on Binance's rule: bracket MM at the mark, no fee in margin
    for i in range(n):
        if sym[SYM_MM_RULE, i] != MM_BRACKET or sym[SYM_FEE_RULE, i] != 0.0:
            plain = False
        if sym[SYM_ROLLOVER_HOURS, i] > 0.0:
            borrowing = True
        if sym[SYM_MM_RULE, i] == MM_MARGIN_LEVEL and sym[SYM_CALL_LEVEL, i] > 0.0:
            calls = True
    for t in range(start, end):
        if (counts[C_FILLS] + fill_room + cut_room > fills.shape[0] or counts[C_LIQS] + n
                + cut_room > liqs.shape[0] or counts[C_REJECTS] + reject_room > rejects.shape[0]
                or counts[C_EVENTS] + 4 * n + 2 > events.shape[0]):
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
        # 1. funding at index[t]; spot margin: the rollover fees due
        if has_funding[t]:
            for i in range(n):
                rate = funding_rate[t, i]
                q = state[S_QTY, i]
                mark = state[S_MARK, i]
                if rate == rate and q != 0.0 and mark == mark and mode[i] < SPOT:
                    # q * mark * rate, > 0: paid; a cross position pays from the wallet
                    payment = q * mark * rate
                    if mode[i] == CROSS:
                        account[A_WALLET] -= payment
                    else:
                        pay_isolated_funding(i, payment, state, mode, sym, tiers, n_tiers,
                                             account)
                        refresh_liq_price(i, state, mode, sym, tiers, n_tiers)
                    record_funding(funding, counts, t, i, q, mark, rate, payment, mode[i])
        if borrowing:
            charge_rollovers(t, hours[t], mark_open, state, mode, sym, account, events, counts)
        if account[A_WALLET] < 0.0 and account[A_LOAN_RATE] > 0.0 and t > 0:
            # multi-currency margin: a negative quote balance is a loan, charged interest for
            # the bar that just ended
            interest = -account[A_WALLET] * account[A_LOAN_RATE] * (hours[t] - hours[t - 1])
            account[A_WALLET] -= interest
            record_event(events, counts, t, -1, EVENT_LOAN_INTEREST, 0.0, np.nan,
                         account[A_LOAN_RATE], interest, np.nan)
        # 2. orders decided at close[t-1] fill at open[t]
        if orders_now:
            process_orders(t, hours[t], targets[t - 1], target_kind, close[t - 1], open_[t],
                           slippage, reduce_to_fit, want, state, mode, sym, tiers, n_tiers,
                           account, fills, rejects, events, counts)
        if callback is not None:
            if pending:
                apply_callback_orders(t, hours[t], orders, target_kind, close[t - 1], open_[t],
                                      slippage, reduce_to_fit, want, state, mode, sym, tiers,
                                      n_tiers, account, fills, rejects, events, counts)
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
            notional = abs(q) * m
            u = q * (m - entry)
            upnl += u
            gross += notional
            net += q * m
            if mode[i] >= SPOT:  # (spot and collateral holdings are never liquidated)
                if mode[i] == COLLATERAL:  # its discounted value backs the cross account
                    upnl_cross += collateral_value(i, q, m, sym, tiers, n_tiers)
                    worst += collateral_value(i, q, lo, sym, tiers, n_tiers)
                continue
            bracket = plain or sym[SYM_MM_RULE, i] == MM_BRACKET
            if bracket:
                nt = n_tiers[i]
                k = tier[i]
                while k < nt - 1 and notional > tiers[TIER_CAP, i, k]:
                    k += 1
                while k > 0 and notional <= tiers[TIER_FLOOR, i, k]:
                    k -= 1
                tier[i] = k
                mm = notional * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]
                if not plain and sym[SYM_FEE_RULE, i] != 0.0:
                    mm += fee_in_margin(i, q, entry, m, sym)
            else:
                mm = position_maintenance(i, q, entry, m, sym, tiers, n_tiers)
            if mode[i] == ISOLATED:
                liq = state[S_LIQ_PX, i]
                if (q > 0.0 and lo <= liq) or (q < 0.0 and hi >= liq):
                    may_liquidate = True
            else:
                any_cross = True
                # every model's MM is largest at the bar's high (it rises with the price or
                # is fixed). Bracket rule: the largest notional of the bar is at its high, at
                # or above the close's, so its tier is at or above the close's. MM is the max
                # of the tier lines, so the tier must be the right one, or the bound is not safe
                if bracket:
                    extreme = abs(q) * hi
                    ke = k
                    while ke < nt - 1 and extreme > tiers[TIER_CAP, i, ke]:
                        ke += 1
                    mm_high = extreme * tiers[TIER_MMR, i, ke] - tiers[TIER_CUM, i, ke]
                    if not plain and sym[SYM_FEE_RULE, i] != 0.0:
                        mm_high += fee_in_margin(i, q, entry, hi, sym)
                else:
                    mm_high = position_maintenance(i, q, entry, hi, sym, tiers, n_tiers)
                worst += q * ((lo if q > 0.0 else hi) - entry) - mm_high
            maint += mm
            if mode[i] == CROSS:
                maint_cross += mm
                upnl_cross += u
        if calls and any_cross and account[A_IN_CALL] == 0.0:
            n_cp = build_checkpoints(t, path, state, mark_open, mark_high, mark_low, mark_close,
                                     cp)
            check_margin_call(t, n_cp, cp, state, mode, sym, account, events, counts)
        if may_liquidate or (any_cross and worst <= 0.0):
            # 4. walk the path; the marks of the close are restored afterwards
            n_cp = build_checkpoints(t, path, state, mark_open, mark_high, mark_low, mark_close,
                                     cp)
            for i in range(n):
                state[S_MARK, i] = cp[n_cp - 1, i]
            check_liquidations(t, n_cp, cp, state, mode, sym, tiers, n_tiers, account, scratch,
                               scratch2, seg_start, fills, liqs, counts)
            equity = mark_to_market(t, state, mode, sym, tiers, n_tiers, account, out)
        else:
            equity = store_bar(t, account[A_WALLET], iso, upnl, maint, maint_cross, upnl_cross,
                               gross, net, out)
        account[A_EQUITY_PREV] = equity
        # 5. orders decided and filled at the close (fill_at="close")
        if fill_at != FILL_NEXT_OPEN and has_target[t]:
            process_orders(t, hours[t + 1], targets[t], target_kind, close[t], close[t],
                           slippage, reduce_to_fit, want, state, mode, sym, tiers, n_tiers,
                           account, fills, rejects, events, counts)
            account[A_EQUITY_PREV] = mark_to_market(t, state, mode, sym, tiers, n_tiers, account,
                                                    out)
        # 6. the strategy callback decides at the close
        if callback is not None:
            if callback(t, ctx, orders, params):
                if fill_at == FILL_NEXT_OPEN:
                    pending = t + 1 < n_bars
                else:
                    apply_callback_orders(t, hours[t + 1], orders, target_kind, close[t],
                                          close[t], slippage, reduce_to_fit, want, state, mode,
                                          sym, tiers, n_tiers, account, fills, rejects, events,
                                          counts)
                    account[A_EQUITY_PREV] = mark_to_market(t, state, mode, sym, tiers, n_tiers,
                                                            account, out)
        if calls and account[A_IN_CALL] != 0.0 and cross_level_value(
                state, mode, sym, account, state[S_MARK], SYM_CALL_LEVEL) > 0.0:
            account[A_IN_CALL] = 0.0  # back above the call level: the next fall is a new call
        if record_positions:
            for i in range(n):
                positions_out[t, i] = state[S_QTY, i]
            record_liquidation_prices(state, mode, sym, tiers, n_tiers, account, liq_px_out[t])
    return end
