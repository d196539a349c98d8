"""Step 2 of a bar: orders become fills, under DESIGN.md §3's margin rules.

A row of targets, or a strategy callback's orders (``enums.Order.*``), is turned into
units per column and filled: reductions first, so that they free margin, then the
orders that open or add; a callback's margin, leverage and mode changes are
carried out around them. Every refusal is a rejection record with a reason code.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .account import (
    Need,
    account_equity,
    available_balance,
    cross_level_value,
    has_cross_position,
    increase_position,
    reduce_position,
    refresh_liq_price,
    removable_margin,
    surplus_term,
    switch_account_mode,
)
from .enums import (
    FALSE,
    N_ORDER_FIELDS,
    TRUE,
    ZERO,
    Account,
    AccountRule,
    Count,
    EventKind,
    FillReason,
    Mode,
    Order,
    Reject,
    State,
    Sym,
    TargetKind,
    TierField,
)
from .jit import inner
from .records import record_event, record_fill, record_rejection
from .rules import (
    account_wide_mode,
    on_step,
    order_cost_rate,
    tier_from,
    tier_key,
)

# Compiled without NRT (``_nrt=False``): see ``engine.rules``.

DUST_FRACTION = 1e-9  # of the account's equity: an opening below it is dust
DUST_FLOOR = 1e-12  # quote currency: nor is anything below this an order
ESTIMATE_FROM = 16  # columns: a row of orders in a basket this wide keeps running estimates
ROUNDOFF = 2.0 ** -53  # float64's unit roundoff

# --- the cross account's sums over a row of orders ---------------------------------------
# Each fill compares what it needs with a sum over every cross position, in column order:
# the available balance to open, the margin balance to close worse than the mark. A row of
# orders in a basket of N symbols then costs N fills x N terms (a basket of 200 ran 2.5-3x
# slower than with no sums at all). Over the fills of one row (the marks fixed, nothing but
# the fills changing the account), ``process_orders`` keeps a running estimate of each sum,
# updated by what each fill changed (the wallet and its own column's term), and a bound on
# how far the estimate can be from the sum the check would compute: the sums' own rounding
# (at most (N + 1) u of the terms' magnitudes, Higham's bound) and each update's. A check the
# estimate settles needs no sum; one it does not settle, and every refusal (its record holds
# the figure), computes the sum as before. So each check answers as before: the same bits.


@inner(error_model='numpy', _nrt=False)
def cross_terms(i, book):
    """Column i's terms in the two sums at the marks: ``(of the available balance, of the
    margin balance)``, as ``account.cross_surplus`` adds them (0 where it adds nothing)."""
    marks = book.state[State.MARK]
    return (surplus_term(i, book, marks, Need.INITIAL, 0.0)[1],
            surplus_term(i, book, marks, Need.USED, 0.0)[1])


@inner(error_model='numpy', _nrt=False)
def start_estimates(book):
    """The two sums in full and the magnitude of their terms, into the account's estimate
    fields (``Account.AVAIL_EST`` ...): the running estimates of a row of orders."""
    account = book.account
    wallet = account[Account.WALLET]
    avail, balance, size = wallet, wallet, abs(wallet)
    for i in range(book.state.shape[1]):
        a, b = cross_terms(i, book)
        avail += a
        balance += b
        size += abs(a) + abs(b)
    account[Account.AVAIL_EST] = avail
    account[Account.BALANCE_EST] = balance
    account[Account.EST_SIZE] = size
    account[Account.EST_ERR] = 0.0


@inner(error_model='numpy', _nrt=False)
def stop_estimates(book):
    """No running estimates (every check computes its sum)."""
    book.account[Account.AVAIL_EST] = np.nan
    book.account[Account.BALANCE_EST] = np.nan


@inner(error_model='numpy', _nrt=False)
def update_estimates(i, avail_term, balance_term, wallet, book):
    """After an order of column i: the estimates moved by what the wallet and column i's
    terms changed (their values before: ``wallet``, ``avail_term``, ``balance_term``), the
    magnitude bound raised by the new values (never lowered: it bounds every later sum's
    terms), the rounding of this update added to the error."""
    account = book.account
    a, b = cross_terms(i, book)
    now = account[Account.WALLET]
    paid = now - wallet
    moved_a = paid + (a - avail_term)
    moved_b = paid + (b - balance_term)
    account[Account.AVAIL_EST] += moved_a
    account[Account.BALANCE_EST] += moved_b
    account[Account.EST_SIZE] += abs(now) + abs(a) + abs(b)
    account[Account.EST_ERR] += 2.0 * ROUNDOFF * (
        abs(now) + abs(wallet) + abs(a) + abs(avail_term) + abs(b) + abs(balance_term)
        + abs(moved_a) + abs(moved_b) + abs(account[Account.AVAIL_EST])
        + abs(account[Account.BALANCE_EST]))


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def estimate_slack(book):
    """How far the running estimates can be from the sums a check computes (twice the
    bound: the updates' rounding, and twice the sums' own, 1.01 (N + 2) u of the terms'
    magnitudes). NaN without estimates."""
    account = book.account
    n = book.state.shape[1]
    return 2.0 * (account[Account.EST_ERR]
                  + 2.0 * 1.01 * (n + 2) * ROUNDOFF * account[Account.EST_SIZE])

# --- step 2: fills ----------------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def charge_opening_fee(t, i, open_qty, price, book, records):
    """Spot margin: the opening fee on what the new position borrows (a long its cost in
    quote, a short its size in base, valued at the fill price), from the wallet."""
    sym = book.sym
    rate = sym[Sym.BORROW_OPEN_LONG, i] if open_qty > 0.0 else sym[Sym.BORROW_OPEN_SHORT, i]
    amount = abs(open_qty) * price * rate
    book.account[Account.WALLET] -= amount
    record_event(records.events, records.counts,
                 t, i, EventKind.OPENING_FEE, open_qty, price, rate, amount, np.nan)


@inner(error_model='numpy', _nrt=False)
def opening_refusal(i, open_qty, price, book):
    """Why an opening of ``open_qty`` at ``price`` must be refused whatever the balance
    (a Reject.* code), or -1: collateral is not traded, a spot holding cannot go short, a
    hedge-mode leg keeps its side, no position exceeds the top tier's cap (the venue's
    largest), the leverage must fit the tier the new size lands in,
    an account with no equity cannot trade, and spot margin opens nothing below the
    venue's opening level."""
    state, mode, sym = book.state, book.mode, book.sym
    new_q = state[State.QTY, i] + open_qty
    key = tier_key(i, new_q, price, price, sym)
    k = tier_from(key, ZERO, i, book.tiers, book.n_tiers)
    if mode[i] == Mode.COLLATERAL:
        return Reject.INVALID_ORDER
    if open_qty < 0.0 and mode[i] == Mode.SPOT:
        return Reject.SPOT_SHORT
    if sym[Sym.LEG, i] * open_qty < 0.0:
        return Reject.HEDGE_LEG_SIDE
    if key > book.tiers[TierField.CAP, i, book.n_tiers[i] - 1]:
        return Reject.ABOVE_MAX_POSITION
    if sym[Sym.LEVERAGE, i] > book.tiers[TierField.MAX_LEVERAGE, i, k]:
        return Reject.LEVERAGE_ABOVE_TIER
    return -1


@inner(error_model='numpy', _nrt=False)
def dust_notional(account):
    """The notional below which an opening is dust, refused whatever the venue (its own order
    filters, where it publishes them, are far above): a billionth of the account's equity at
    the last close, and never below 1e-12 of the quote currency."""
    return max(DUST_FRACTION * account[Account.EQUITY_PREV], DUST_FLOOR)


@inner(error_model='numpy', _nrt=False)
def filtered_order(i, target, q, sym):
    """``(delta, reject)``: the order that takes column i from position ``q`` to ``target``
    under the venue's quantity filters, and a Reject.* code (-1: none).

    The order's size is rounded toward zero to the quantity step, except that closing a
    whole position is exact (the close of an order that goes to 0 or through it; what it
    opens beyond is rounded). An order that rounds to nothing, or whose size is below the
    minimum quantity and does not close the position, is refused.
    """
    step = sym[Sym.QTY_STEP, i]
    if q != 0.0 and (target == 0.0 or (target > 0.0) != (q > 0.0)):
        delta = on_step(target, step) - q
    else:
        delta = on_step(target - q, step)
    if delta == 0.0:
        return target - q, Reject.ROUNDS_TO_ZERO
    if target != 0.0 and abs(delta) < sym[Sym.MIN_QTY, i] * (1.0 - 1e-9):
        return delta, Reject.BELOW_MIN_QTY
    return delta, -1


@inner(error_model='numpy', _nrt=False)
def slipped_price(price, delta, slippage, tick):
    """The fill price of an order of ``delta`` units at ``price`` after slippage, moved to the
    venue's price tick against the trader (a buy up, a sell down) when slippage moved it
    (prices without slippage are the market's own, already on the tick)."""
    if slippage == 0.0:
        return price
    price *= 1.0 + slippage * np.sign(delta)
    if tick > 0.0:
        ticks = price / tick
        price = (np.ceil(ticks - 1e-9) if delta > 0.0 else np.floor(ticks + 1e-9)) * tick
    return price


@inner(error_model='numpy', _nrt=False)
def closing_loss(i, close_qty, price, fee_rate, book, floor=np.nan):
    """What closing ``close_qty`` of column i at ``price`` loses, and what backs that loss:
    ``(loss, backing)``; a fill with ``loss > backing`` would be past the bankruptcy price,
    and no venue fills an order there (its liquidation engine owns that range).

    - isolated: the realized loss and the fee against the share of the margin released;
    - cross: the loss against the mark (a fill worse than it: slippage, last away from the
      mark) and the fee, against the margin balance at the marks;
    - spot and collateral holdings: nothing to lose past (the coins are owned).

    ``floor``: a figure the margin balance is known to reach (``start_estimates``; NaN:
    none), which spares the sum where it covers the loss.
    """
    state = book.state
    mode = book.mode[i]
    q = state[State.QTY, i]
    fee = abs(close_qty) * price * fee_rate
    if mode == Mode.ISOLATED:
        realized = -close_qty * (price - state[State.ENTRY, i])
        return fee - realized, state[State.ISO_MARGIN, i] * abs(close_qty) / abs(q)
    if mode != Mode.CROSS:
        return 0.0, 0.0
    mark = state[State.MARK, i]
    worse = -close_qty * (mark - price)  # > 0: the fill is worse than the mark
    loss = fee + max(worse, 0.0)
    if loss <= 0.0:
        return 0.0, 0.0
    if loss <= floor:  # settled by the running estimate: the sum is at least that
        return loss, floor
    return loss, cross_level_value(book, state[State.MARK], 0.0)


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def execute_order(t, now, i, delta, price, reduce_to_fit, book, records, estimating):
    """Trade ``delta`` units of column i at ``price`` (at time ``now``, hours) under DESIGN.md
    §3's margin rules.

    The reducing part of an order fills unless its price is past the bankruptcy price
    (``closing_loss``: the order is then refused whole). The opening part needs its
    initial margin plus fees (``rules.order_cost_rate``) plus its open loss (what a fill
    worse than the mark loses at once, VENUES.md §2.2) from the available balance, must
    pass ``opening_refusal``, must not be dust (``dust_notional``) and must reach the
    venue's minimum notional; otherwise it is rejected with a reason code (or, with
    ``reduce_to_fit``, cut to what the balance allows, on the quantity step, if that passes
    the filters). An opening on spot margin pays the borrowing fee.

    ``estimating`` (a constant where it is called): the account holds running estimates of
    its sums (``start_estimates``), which settle the checks they can.
    """
    state, mode, sym = book.state, book.mode, book.sym
    old = state[State.QTY, i]
    fee_rate = sym[Sym.TAKER_FEE, i]
    close_qty = 0.0
    if old != 0.0 and (delta > 0.0) != (old > 0.0):
        close_qty = -old if abs(delta) >= abs(old) else delta
    open_qty = delta - close_qty
    realized = 0.0
    fee = 0.0
    reason = FillReason.STRATEGY
    if close_qty != 0.0:
        floor = np.nan
        if estimating:
            floor = book.account[Account.BALANCE_EST] - estimate_slack(book)
        loss, backing = closing_loss(i, close_qty, price, fee_rate, book, floor)
        if loss > backing:
            record_rejection(records.rejects, records.counts,
                             t, i, delta, price, loss, backing, Reject.PAST_BANKRUPTCY)
            return
        realized, fee = reduce_position(i, close_qty, price, fee_rate, book)
    if open_qty != 0.0:
        side = 1.0 if open_qty > 0.0 else -1.0
        per_unit = price * (1.0 / sym[Sym.LEVERAGE, i] + order_cost_rate(i, side, sym))
        mark = state[State.MARK, i]
        if mark == mark and side * (price - mark) > 0.0:
            per_unit += side * (price - mark)  # the open loss: a fill worse than the mark
        required = abs(open_qty) * per_unit
        # the available balance: the running estimate where it settles both checks of it
        # (positive, and at least what is required), else the sum (``start_estimates``)
        summed = True
        # (after a close in this order, the estimate is of the account before it)
        if estimating and close_qty == 0.0:
            settled = book.account[Account.AVAIL_EST] - estimate_slack(book)
            summed = not (required <= settled and settled > 0.0)
        avail = available_balance(book) if summed else book.account[Account.AVAIL_EST]
        dust = dust_notional(book.account)
        reject = opening_refusal(i, open_qty, price, book)
        if reject >= 0:
            pass
        elif avail <= 0.0 and account_equity(book, state[State.MARK]) <= 0.0:
            reject = Reject.ACCOUNT_BANKRUPT
        elif abs(open_qty) * price < dust:
            reject = Reject.DUST
        elif abs(open_qty) * price < sym[Sym.MIN_NOTIONAL, i]:
            reject = Reject.BELOW_MIN_NOTIONAL
        elif (book.rules[AccountRule.OPEN_LEVEL] > 0.0 and mode[i] == Mode.CROSS
              and has_cross_position(book) and cross_level_value(
                  book, state[State.MARK], book.rules[AccountRule.OPEN_LEVEL]) < 0.0):
            reject = Reject.MARGIN_LEVEL
        elif required > avail:
            fit = on_step(avail / per_unit, sym[Sym.QTY_STEP, i])
            if (reduce_to_fit and avail > 0.0 and fit * price >= dust
                    and fit * price >= sym[Sym.MIN_NOTIONAL, i]
                    and fit >= sym[Sym.MIN_QTY, i] * (1.0 - 1e-9)):
                open_qty = side * fit
                reason = FillReason.REDUCE_ONLY
            else:
                reject = Reject.INSUFFICIENT_MARGIN
        if reject >= 0:
            if not summed:  # (the record holds the sum)
                avail = available_balance(book)
            record_rejection(records.rejects, records.counts,
                             t, i, open_qty, price, required, avail, reject)
            open_qty = 0.0
        else:
            if state[State.QTY, i] == 0.0:
                state[State.OPENED, i] = now
                state[State.ROLLOVERS, i] = 0.0
            fee += increase_position(i, open_qty, price, fee_rate, book)
            if sym[Sym.ROLLOVER_HOURS, i] > 0.0 and mode[i] == Mode.CROSS:
                charge_opening_fee(t, i, open_qty, price, book, records)
    filled = close_qty + open_qty
    if filled != 0.0:
        record_fill(records.fills, records.counts,
                    t, i, filled, price, fee, realized, state[State.QTY, i], reason)
        if mode[i] == Mode.ISOLATED:
            refresh_liq_price(i, book)
        else:  # (what refresh_liq_price keeps for any other position, without the call)
            state[State.LIQ_PX, i] = np.nan


@inner(error_model='numpy', _nrt=False)
def data_ends(close, ends):
    """Per column, the last bar with a price, into ``ends`` (-1 when the column's data run to
    the market's last bar, or it has none: nothing to close early)."""
    n_bars, n = close.shape
    for i in range(n):
        t = n_bars - 1
        while t >= 0 and close[t, i] != close[t, i]:
            t -= 1
        ends[i] = t if t < n_bars - 1 else -1.0


@inner(error_model='numpy', _nrt=False)
def next_data_end(ends, first):
    """The first bar from ``first`` at which some column's data end (-1: none)."""
    best = -1
    for i in range(ends.shape[0]):
        e = ends[i]
        if e >= first and (best < 0 or e < best):
            best = int(e)
    return best


@inner(error_model='numpy', _nrt=False)
def to_units(i, amount, target_kind, decision_price, book):
    """``amount`` of the run's target unit as base units of column i (NaN: no price).

    Notional and equity-fraction amounts are converted at the decision-time
    close (the last known close where that bar is missing), with the equity at
    the last close. An equity fraction sized as initial margin
    (``TargetKind.EQUITY_MARGIN``) is first multiplied by the column's current
    leverage: fraction x leverage is the exposure it commits that margin to (so it
    sizes exactly as ``TargetKind.EQUITY`` with the fraction x leverage).
    """
    if target_kind == TargetKind.UNITS:
        return amount
    if target_kind == TargetKind.EQUITY_MARGIN:
        amount *= book.sym[Sym.LEVERAGE, i]
    ref = decision_price[i]
    if ref != ref:
        ref = book.state[State.LAST_CLOSE, i]
    if ref != ref:
        return np.nan
    amount = amount / ref
    if target_kind != TargetKind.NOTIONAL:
        amount *= max(book.account[Account.EQUITY_PREV], 0.0)
    return amount


@inner(error_model='numpy', _nrt=False)
def set_want(i, target, want, state):
    """Keep ``target`` (units) as column i's order unless it is (numerically) the position."""
    q = state[State.QTY, i]
    delta = target - q
    if delta == 0.0 or abs(delta) <= 1e-9 * max(abs(target), abs(q)):
        return
    want[i] = target


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def fill_orders(t, now, reducing_pass, want, fill_price, trading, book, records, estimating):
    """Fill the orders in ``want`` that reduce a position (``reducing_pass``) or the others;
    ``estimating`` (a constant in each of the two functions that inline this one): keep the
    running estimates of the cross account's sums up to date (``start_estimates``)."""
    state = book.state
    for i in range(state.shape[1]):
        target = want[i]
        if target != target:
            continue
        q = state[State.QTY, i]
        reducing = abs(target) < abs(q) and (target == 0.0 or (target > 0.0) == (q > 0.0))
        if reducing_pass != reducing:
            continue
        delta = target - q
        price = fill_price[i]
        if book.mode[i] == Mode.COLLATERAL:  # collateral is not traded by orders
            record_rejection(records.rejects, records.counts,
                             t, i, delta, price, 0.0, 0.0, Reject.INVALID_ORDER)
            continue
        if price != price:
            record_rejection(records.rejects, records.counts,
                             t, i, delta, np.nan, 0.0, 0.0, Reject.NO_PRICE)
            continue
        want[i] = np.nan  # done: the other pass must not fill the rounding left over
        delta, reject = filtered_order(i, target, q, book.sym)
        if reject >= 0:
            record_rejection(records.rejects, records.counts,
                             t, i, delta, price, 0.0, 0.0, reject)
            continue
        price = slipped_price(price, delta, trading.slippage, book.sym[Sym.TICK_SIZE, i])
        avail_term = balance_term = wallet = 0.0
        if estimating:  # (what the order changes: the wallet and column i's terms)
            avail_term, balance_term = cross_terms(i, book)
            wallet = book.account[Account.WALLET]
        execute_order(t, now, i, delta, price, trading.reduce_to_fit, book, records,
                      estimating)
        if estimating:
            update_estimates(i, avail_term, balance_term, wallet, book)


@inner(error_model='numpy', _nrt=False)
def fill_wants(t, now, reducing_pass, want, fill_price, trading, book, records):
    """Fill the orders in ``want`` that reduce a position (``reducing_pass``) or the others."""
    fill_orders(t, now, reducing_pass, want, fill_price, trading, book, records, FALSE)


@inner(error_model='numpy', _nrt=False)
def fill_basket_wants(t, now, reducing_pass, want, fill_price, trading, book, records):
    """``fill_wants`` keeping the running estimates of the cross account's sums up to date
    (``start_estimates``)."""
    fill_orders(t, now, reducing_pass, want, fill_price, trading, book, records, TRUE)


@inner(error_model='numpy', _nrt=False)
def close_data_ends(t, now, price, ends, want, trading, book, records):
    """Close, at ``price`` (the bar's close), every position of a column whose data end at
    bar t: an order to 0 filled as any other is (``fill_wants``: the run's slippage on the
    venue's tick, the taker fee), its fill's reason ``FillReason.DATA_END``. Collateral
    coins are kept: they are not traded by orders."""
    state = book.state
    for i in range(state.shape[1]):
        want[i] = np.nan
        if ends[i] == t and state[State.QTY, i] != 0.0 and book.mode[i] != Mode.COLLATERAL:
            want[i] = 0.0
    first = records.counts[Count.FILLS]
    fill_wants(t, now, TRUE, want, price, trading, book, records)
    for f in range(first, records.counts[Count.FILLS]):
        records.fills[f]["reason"] = FillReason.DATA_END


@inner(error_model='numpy', _nrt=False)
def refuse_void(t, i, qty, price, records):
    """Refuse an order of ``qty`` units for column i, which the bar's open liquidated."""
    record_rejection(records.rejects, records.counts, t, i, qty, price, 0.0, 0.0,
                     Reject.LIQUIDATED_AT_OPEN)


@inner(error_model='numpy', _nrt=False)
def process_orders(t, now, row, decision_price, fill_price, want, trading, book, records):
    """Turn row ``row`` of the targets into orders and fill them, reductions first to free
    margin. Notional and equity-fraction targets are converted to units at the
    decision-time close (the last known close where that bar is missing), with the
    equity at the last close. An order for a column the bar's open liquidated is refused
    (``State.VOID``: the position it held before, 0 for the others)."""
    targets = trading.targets
    void = book.state[State.VOID]
    for i in range(book.state.shape[1]):
        want[i] = np.nan
        target = targets[row, i]
        if target != target:
            continue
        target = to_units(i, target, trading.target_kind, decision_price, book)
        if target != target:
            record_rejection(records.rejects, records.counts,
                             t, i, 0.0, np.nan, 0.0, 0.0, Reject.NO_PRICE)
            continue
        if void[i] != 0.0:  # void[i]: the position the open liquidated (what the order saw)
            refuse_void(t, i, target - book.state[State.QTY, i] - void[i], fill_price[i],
                        records)
            continue
        set_want(i, target, want, book.state)
    if book.state.shape[1] >= ESTIMATE_FROM:  # (the marks stay as they are over the row)
        start_estimates(book)
        fill_basket_wants(t, now, TRUE, want, fill_price, trading, book, records)
        fill_basket_wants(t, now, FALSE, want, fill_price, trading, book, records)
        stop_estimates(book)
    else:
        fill_wants(t, now, TRUE, want, fill_price, trading, book, records)
        fill_wants(t, now, FALSE, want, fill_price, trading, book, records)


# --- step 2 with a strategy callback: its orders (enums.Order.*) -------------------------------


@inner(error_model='numpy', _nrt=False)
def has_orders(orders):
    """Whether any field of ``orders`` asks for something (is not NaN)."""
    for f in range(orders.shape[0]):
        for i in range(orders.shape[1]):
            if orders[f, i] == orders[f, i]:
                return True
    return False


@inner(error_model='numpy', _nrt=False)
def change_isolated_margin(t, i, amount, book, records):
    """Move ``amount`` of quote into (> 0) or out of (< 0) isolated position i's margin.

    Adding takes it from the available balance; removing is limited to the
    margin above the position's initial margin at the mark (``removable_margin``).
    Either moves the liquidation price.
    """
    state = book.state
    q = state[State.QTY, i]
    mark = state[State.MARK, i]
    if book.mode[i] != Mode.ISOLATED or q == 0.0:
        record_rejection(records.rejects, records.counts,
                         t, i, 0.0, mark, amount, 0.0, Reject.NOT_ISOLATED)
        return
    if amount > 0.0:
        avail = available_balance(book)
        if amount > avail:
            record_rejection(records.rejects, records.counts, t, i, 0.0, mark, amount, avail,
                             Reject.INSUFFICIENT_MARGIN)
            return
    else:
        free = removable_margin(i, book)
        if -amount > free:
            record_rejection(records.rejects, records.counts,
                             t, i, 0.0, mark, -amount, free, Reject.MARGIN_REMOVAL)
            return
    state[State.ISO_MARGIN, i] += amount
    book.account[Account.WALLET] -= amount
    refresh_liq_price(i, book)


@inner(error_model='numpy', _nrt=False)
def change_leverage(t, i, leverage, book, records):
    """Set column i's leverage, within the max leverage of the tier its position is in.

    An open isolated position keeps the margin it holds (the new leverage sizes
    what is added later); an open cross position's initial margin is re-priced,
    so lowering its leverage needs the extra margin from the available balance.
    """
    state, mode, sym = book.state, book.mode, book.sym
    mark = state[State.MARK, i]
    if mode[i] >= Mode.SPOT or not leverage >= 1.0:
        record_rejection(records.rejects, records.counts,
                         t, i, 0.0, mark, leverage, np.nan, Reject.INVALID_ORDER)
        return
    q = state[State.QTY, i]
    key = tier_key(i, q, state[State.ENTRY, i], mark, sym) if q != 0.0 else 0.0
    k = tier_from(key, ZERO, i, book.tiers, book.n_tiers)
    cap = book.tiers[TierField.MAX_LEVERAGE, i, k]
    if leverage > cap:
        record_rejection(records.rejects, records.counts,
                         t, i, 0.0, mark, leverage, cap, Reject.LEVERAGE_ABOVE_TIER)
        return
    old = sym[Sym.LEVERAGE, i]
    if mode[i] == Mode.CROSS and q != 0.0 and leverage < old:
        extra = abs(q) * state[State.ENTRY, i] * (1.0 / leverage - 1.0 / old)
        avail = available_balance(book)
        if extra > avail:
            record_rejection(records.rejects, records.counts,
                             t, i, 0.0, mark, extra, avail, Reject.INSUFFICIENT_MARGIN)
            return
    sym[Sym.LEVERAGE, i] = leverage


@inner(error_model='numpy', _nrt=False)
def switch_margin_mode(t, i, new_mode, book, records):
    """Set column i's margin mode to Mode.CROSS or Mode.ISOLATED; refused while it holds a position.

    A hedge-mode leg switches with its partner (the venue sets the mode per symbol),
    so both legs must be flat. A venue whose margin mode is the account's (Bybit UTA)
    switches every margined column, and only while none holds a position.
    """
    state, mode = book.state, book.mode
    mark = state[State.MARK, i]
    if mode[i] >= Mode.SPOT or (new_mode != Mode.CROSS and new_mode != Mode.ISOLATED):
        record_rejection(records.rejects, records.counts,
                         t, i, 0.0, mark, new_mode, np.nan, Reject.INVALID_ORDER)
        return
    if new_mode == mode[i]:
        return
    if new_mode == Mode.ISOLATED and book.rules[AccountRule.CROSS_ONLY] != 0.0:
        # collateral backs the account (Binance Multi-Assets mode): cross margin only
        record_rejection(records.rejects, records.counts,
                         t, i, 0.0, mark, new_mode, np.nan, Reject.INVALID_ORDER)
        return
    if account_wide_mode(book.rules):  # the account's mode: every column, none open
        if not switch_account_mode(new_mode, book):
            record_rejection(records.rejects, records.counts,
                             t, i, 0.0, mark, new_mode, np.nan, Reject.ACCOUNT_MODE_SWITCH_OPEN)
        return
    partner = int(book.sym[Sym.PARTNER, i])
    if state[State.QTY, i] != 0.0 or (partner >= 0 and state[State.QTY, partner] != 0.0):
        record_rejection(records.rejects, records.counts,
                         t, i, 0.0, mark, new_mode, np.nan, Reject.MODE_SWITCH_OPEN)
        return
    mode[i] = int(new_mode)
    state[State.LIQ_PX, i] = np.nan
    if partner >= 0:
        mode[partner] = int(new_mode)
        state[State.LIQ_PX, partner] = np.nan


@inner(error_model='numpy', _nrt=False)
def want_callback_trade(t, i, orders, decision_price, fill_price, want, trading, book,
                        records):
    """Column i's trade (``Order.TARGET``, else ``Order.DELTA``) as a target in units in
    ``want[i]``, sized like a targets row; refused here if it has no price or the bar's
    open liquidated the position (``State.VOID``: the position it held before)."""
    state = book.state
    void = state[State.VOID]
    target = orders[Order.TARGET, i]
    if target != target:
        delta = orders[Order.DELTA, i]
        if delta != delta or delta == 0.0:
            return
        asked = to_units(i, delta, trading.target_kind, decision_price, book)
        target = asked + state[State.QTY, i]
    else:
        target = to_units(i, target, trading.target_kind, decision_price, book)
        asked = target - state[State.QTY, i] - void[i]
    if target != target:
        record_rejection(records.rejects, records.counts,
                         t, i, 0.0, np.nan, 0.0, 0.0, Reject.NO_PRICE)
        return
    if void[i] != 0.0:
        refuse_void(t, i, asked, fill_price[i], records)
        return
    set_want(i, target, want, state)


@inner(error_model='numpy', _nrt=False)
def sized_after_leverage(i, orders):
    """Sizing by margin: whether column i's trade waits for its leverage change (it asks one,
    and its size depends on it: a target of 0 does not, and closes first, freeing the
    symbol for a mode switch)."""
    return orders[Order.LEVERAGE, i] == orders[Order.LEVERAGE, i] and orders[
        Order.TARGET, i] != 0.0


@inner(error_model='numpy', _nrt=False)
def apply_callback_orders(t, now, orders, decision_price, fill_price, want, trading, book,
                          records):
    """Carry out a callback's orders (enums.Order.*), then clear them.

    Order of work: margin changes; trades that reduce a position; leverage and
    mode changes; trades that open or add. Targets and deltas are sized like a
    targets row (at the decision close, the equity at the last close); a trade for a
    column the bar's open liquidated (``State.VOID``: the position it held before) is
    refused. Sized as initial margin (``TargetKind.EQUITY_MARGIN``), a trade of a column
    whose leverage the callback changes is sized once that change is done (or refused),
    at the leverage the column then has, and filled after the other reductions (a target
    of 0 is a close at any leverage: it goes first, as ever).
    """
    n = book.state.shape[1]
    by_margin = trading.target_kind == TargetKind.EQUITY_MARGIN
    for i in range(n):
        amount = orders[Order.MARGIN, i]
        if amount == amount and amount != 0.0:
            change_isolated_margin(t, i, amount, book, records)
    for i in range(n):
        want[i] = np.nan
        if by_margin and sized_after_leverage(i, orders):
            continue  # sized at its new leverage, below
        want_callback_trade(t, i, orders, decision_price, fill_price, want, trading, book,
                            records)
    fill_wants(t, now, TRUE, want, fill_price, trading, book, records)
    for i in range(n):
        leverage = orders[Order.LEVERAGE, i]
        if leverage == leverage:
            change_leverage(t, i, leverage, book, records)
        new_mode = orders[Order.MODE, i]
        if new_mode == new_mode:
            switch_margin_mode(t, i, new_mode, book, records)
    if by_margin:
        deferred = False
        for i in range(n):
            if sized_after_leverage(i, orders):
                want_callback_trade(t, i, orders, decision_price, fill_price, want, trading,
                                    book, records)
                deferred = True
        if deferred:
            fill_wants(t, now, TRUE, want, fill_price, trading, book, records)
    fill_wants(t, now, FALSE, want, fill_price, trading, book, records)
    for f in range(N_ORDER_FIELDS):
        for i in range(n):
            orders[f, i] = np.nan
