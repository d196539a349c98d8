"""The bar loop: DESIGN.md §4, one bar at a time, in compiled code.

``run_to_end`` runs a whole backtest from an opened account (``account.open_account``):
it calls ``simulate`` for the bars up to the next dated change of the venue's
rules (``put_rules_in_force``), or up to a bar whose events might not fit in a
record buffer (``records.grow_records``), and goes on until the last bar. Both
``run()`` (through ``engine.driver``) and every sweep (``engine.batch``) run it.

Inside bar t (``simulate``):

1. funding settled at ``index[t]`` (the bar's open time); spot margin: the
   rollover fees due, and interest on a loan;
2. the orders decided at close[t-1] fill at open[t] (``fill_at="open"``);
3. a cheap bound tells whether anything can be liquidated in this bar; only
   then is the intrabar path walked, checkpoint by checkpoint;
4. triggered isolated positions / the cross account are liquidated in the
   order the triggers occur along the path;
5. mark to market at the close, the bar recorded; with ``fill_at="close"``
   the orders of row t fill at close[t] then;
6. a strategy callback (optional) decides at the close;
7. a position on a column whose data end at bar t (no price after it, while the
   market goes on) is closed at close[t] with the taker fee (fill reason
   ``DATA_END``), and the bar's record is redone.

Step 2 lives in ``orders.py``, steps 3-4 in ``liquidate.py``, the margin rules in
``rules.py`` and ``account.py``, the event records in ``records.py``.

Most bars of a strategy that holds its positions see nothing but funding and the close.
``simulate`` hands runs of such bars to ``quiet_stretch``, a small loop of their own that
does their arithmetic as the full loop does, in the same order (the same figures, to the
bit), and hands a bar back untouched where anything else might happen: an order, a
column's data end, a liquidation at the open or along the bar's path.

A strategy callback ``callback(t, ctx, orders, params) -> bool`` (the form of
``enums.BarContext``) runs after the bar's record and writes the orders for the
next fill; it is called through a numba first-class function type, so this kernel
is compiled (and cached) once for every callback, and a run without one
(``callback=None``) is compiled with every callback branch pruned away.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .account import (
    cross_level_value,
    cross_totals,
    liquidation_price_given,
    pay_isolated_funding,
    refresh_liq_price,
)
from .enums import (
    FALSE,
    N_SUMMARY_OUT,
    NO_COLUMN,
    TRUE,
    VENUE_SYMBOL_FIELDS,
    ZERO,
    Account,
    AccountRule,
    Count,
    EventKind,
    FillAt,
    MarginField,
    Mode,
    Out,
    State,
    Sym,
    TierField,
)
from .jit import inlined, inner, prefetch_row
from .liquidate import (
    build_checkpoints,
    check_liquidations,
    check_margin_call,
    isolated_triggered,
    liquidate_at_open,
    liquidate_isolated,
    void_liquidated,
)
from .orders import (
    apply_callback_orders,
    close_data_ends,
    data_ends,
    has_orders,
    next_data_end,
    process_orders,
)
from .records import bar_room, grow_records, record_event, record_funding
from .rules import (
    bracket_maintenance,
    collateral_value,
    maintenance_in_tier,
    maintenance_margin,
    plain_bracket,
    tier_from,
    tier_key,
)

# Compiled without NRT (``_nrt=False``) where they allocate nothing: see ``engine.rules``.

# the rows of ``simulate``'s work space (SCRATCH_ROWS, N): a row of orders, the liquidation
# walk's prices (3), the bar's checkpoint prices (4), each column's last bar with data, the
# quiet pass's figures of each position (``quiet_columns``, 6), and what a funding bar of the
# quiet stretch changes, kept to be put back (``isolated_funding``, 3)
SCRATCH_ROWS = 18
# how far ahead the bar loops look for the next bar of orders or of funding, whose rows they
# then ask the processor for (``ask_for_orders``, ``ask_for_funding``), in a market of at
# least FAR_VALUES prices per array (a smaller one stays in the caches)
LOOK_AHEAD = 64
FAR_VALUES = 1 << 17
# what ``quiet_columns`` keeps per column: its kind, |q|, and the rate, amount and notional
# bounds of the tier its position is in
QUIET_KIND, QUIET_ABSQ, QUIET_RATE, QUIET_CUM, QUIET_CAP, QUIET_FLOOR = 0, 1, 2, 3, 4, 5
QUIET_FLAT, QUIET_CROSS, QUIET_ISOLATED = 0.0, 1.0, 2.0

# --- the venue's rules in force ---------------------------------------------------------


@njit(cache=True, error_model='numpy', _nrt=False)
def put_rules_in_force(versions, v, book):
    """Version ``v`` of the venue's tier tables and rules, in force from now on for the open
    positions too.

    Copies them into the run's own arrays (so a strategy's view sees them): the
    tiers, every venue row of the symbol rules (fees, margin rules; not the
    leverage, which is the run's) and the account rules. Clears the cached tier
    indexes and recomputes isolated liquidation prices: Binance applies new brackets
    to positions already open, and Bybit's 2025-09-02 margin formula applied to open
    positions.
    """
    tiers, sym = book.tiers, book.sym
    new_tiers, new_sym = versions.tiers[v], versions.sym[v]
    for f in range(tiers.shape[0]):
        for i in range(tiers.shape[1]):
            for k in range(tiers.shape[2]):
                tiers[f, i, k] = new_tiers[f, i, k]
    for r in range(book.rules.shape[0]):
        book.rules[r] = versions.rules[v, r]
    for i in range(tiers.shape[1]):
        book.n_tiers[i] = versions.n_tiers[v, i]
        for row in VENUE_SYMBOL_FIELDS:
            sym[row, i] = new_sym[row, i]
        book.tier[i] = 0
        refresh_liq_price(i, book)


# --- step 1: funding, borrowing, loans --------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def charge_rollovers(t, bars, book, records):
    """Spot margin: each rollover fee due by bar t's open (one per full period since the
    position opened, from the first period's end), on what it borrows: a long's cost in
    quote, a short's size in base valued at the open's mark. Paid from the wallet."""
    state, mode, sym = book.state, book.mode, book.sym
    now = bars.hours[t]
    for i in range(state.shape[1]):
        q = state[State.QTY, i]
        period = sym[Sym.ROLLOVER_HOURS, i]
        if q == 0.0 or period <= 0.0 or mode[i] != Mode.CROSS:
            continue
        m = bars.mark_open[t, i]
        if m == m:
            state[State.MARK, i] = m
        due = np.floor((now - state[State.OPENED, i]) / period + 1e-9) - state[State.ROLLOVERS, i]
        if due < 1.0:
            continue
        if q > 0.0:
            rate = sym[Sym.BORROW_ROLL_LONG, i]
            price = state[State.ENTRY, i]
        else:
            rate = sym[Sym.BORROW_ROLL_SHORT, i]
            price = state[State.MARK, i]
        amount = abs(q) * price * rate * due
        book.account[Account.WALLET] -= amount
        state[State.ROLLOVERS, i] += due
        record_event(records.events, records.counts,
                     t, i, EventKind.ROLLOVER_FEE, q, price, rate, amount, np.nan)


@inner(error_model='numpy', _nrt=False)
def charge_loan_interest(t, bars, book, records):
    """Multi-currency margin: a negative quote balance is a loan (``t > 0``), charged the
    venue's loan rate for the bar that just ended."""
    account = book.account
    rate = book.rules[AccountRule.LOAN_RATE]
    interest = -account[Account.WALLET] * rate * (bars.hours[t] - bars.hours[t - 1])
    account[Account.WALLET] -= interest
    record_event(records.events, records.counts,
                 t, NO_COLUMN, EventKind.LOAN_INTEREST, 0.0, np.nan, rate, interest, np.nan)


# --- step 5: the record of the bar --------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def store_bar(t, wallet, iso, upnl, maint, maint_cross, upnl_cross, gross, net, out):
    """Write bar t's account state into ``out`` (only the summary's rows when it has only
    those: ``enums.N_SUMMARY_OUT``); returns the equity."""
    equity = wallet + iso + upnl
    out[Out.EQUITY, t] = equity
    mb = wallet + upnl_cross
    if maint_cross == 0.0:
        out[Out.MARGIN_RATIO, t] = 0.0
    elif mb <= 0.0:
        out[Out.MARGIN_RATIO, t] = np.inf
    else:
        out[Out.MARGIN_RATIO, t] = maint_cross / mb
    if out.shape[0] > N_SUMMARY_OUT:
        out[Out.WALLET, t] = wallet
        out[Out.ISO_MARGIN, t] = iso
        out[Out.UPNL, t] = upnl
        out[Out.MAINT, t] = maint
        out[Out.GROSS, t] = gross
        out[Out.NET, t] = net
    return equity


@inner(error_model='numpy', _nrt=False)
def mark_to_market(t, book, out):
    """Record the account with every column at its last known mark; returns the equity and
    the backing: what the columns add to the cross surplus at that mark besides their
    unrealized PnL (the discounted value of collateral less the cross positions' MM)."""
    state, mode, sym = book.state, book.mode, book.sym
    upnl = 0.0
    maint = 0.0
    maint_cross = 0.0
    upnl_cross = 0.0
    gross = 0.0
    net = 0.0
    iso = 0.0
    held = 0.0  # collateral's discounted value
    for i in range(state.shape[1]):
        iso += state[State.ISO_MARGIN, i]
        q = state[State.QTY, i]
        if q == 0.0:
            continue
        price = state[State.MARK, i]
        entry = state[State.ENTRY, i]
        notional = abs(q) * price
        u = q * (price - entry)
        upnl += u
        gross += notional
        net += q * price
        if mode[i] == Mode.COLLATERAL:  # backs the cross margin balance at its discounted value
            value = collateral_value(i, q, price, sym, book.tiers, book.n_tiers)
            held += value
            upnl_cross += value
        if mode[i] >= Mode.SPOT:
            continue
        if plain_bracket(i, sym) and notional == notional:
            # (Binance's rule: the bracket, its tier looked up from the last close's, inline;
            # tiers are contiguous, so the tier found is the one a search from 0 finds)
            k = tier_from(notional, book.tier[i], i, book.tiers, book.n_tiers)
            mm = bracket_maintenance(notional, i, k, book.tiers)
        else:
            mm = maintenance_margin(i, q, entry, price, sym, book.tiers, book.n_tiers)
        maint += mm
        if mode[i] == Mode.CROSS:
            maint_cross += mm
            upnl_cross += u
    equity = store_bar(t, book.account[Account.WALLET], iso, upnl, maint, maint_cross,
                       upnl_cross, gross, net, out)
    return equity, held - maint_cross


@inner(error_model='numpy', _nrt=False)
def record_positions(t, book, outputs):
    """Each column's liquidation price at close t (cross: the others frozen at their marks,
    ``account.liquidation_price_given``); its position, and what backs it, where the run
    records those (``outputs.positions`` not empty; ``record_margins``)."""
    state = book.state
    row = outputs.liq_prices[t]
    total_mm, total_upnl = cross_totals(book, row)  # (each cross position's MM in row[i])
    for i in range(state.shape[1]):
        row[i] = liquidation_price_given(i, row[i], total_mm, total_upnl, book)
    if outputs.positions.shape[0] > 0:
        for i in range(state.shape[1]):
            outputs.positions[t, i] = state[State.QTY, i]
    if outputs.margins.shape[1] > 0:
        record_margins(t, total_mm, total_upnl, book, outputs.margins)


@inner(error_model='numpy', _nrt=False)
def record_margins(t, total_mm, total_upnl, book, margins):
    """What backs each open position at close t (``enums.MarginField``): an isolated one its
    own margin, margin balance and maintenance margin; a cross one the account's wallet,
    margin balance (``total_upnl``: the cross positions' unrealized PnL and the discounted
    collateral) and the cross positions' maintenance margin ``total_mm``. NaN elsewhere."""
    state, mode = book.state, book.mode
    wallet = book.account[Account.WALLET]
    for i in range(state.shape[1]):
        q = state[State.QTY, i]
        entry = state[State.ENTRY, i]
        if q == 0.0 or mode[i] >= Mode.SPOT:
            for f in range(margins.shape[0]):
                margins[f, t, i] = np.nan
            continue
        margins[MarginField.ENTRY, t, i] = entry
        if mode[i] == Mode.CROSS:
            margins[MarginField.WALLET, t, i] = wallet
            margins[MarginField.BALANCE, t, i] = wallet + total_upnl
            margins[MarginField.MAINTENANCE, t, i] = total_mm
        else:
            mark = state[State.MARK, i]
            held = state[State.ISO_MARGIN, i]
            margins[MarginField.WALLET, t, i] = held
            margins[MarginField.BALANCE, t, i] = held + q * (mark - entry)
            margins[MarginField.MAINTENANCE, t, i] = maintenance_margin(
                i, q, entry, mark, book.sym, book.tiers, book.n_tiers)


@inner(error_model='numpy', _nrt=False)
def pay_funding(t, first, rates, book, records):
    """Funding at bar t's open of columns ``first``.. (``rates``: the bar's row of funding
    rates): each open position pays q * mark * rate (> 0: longs pay), cross from the wallet,
    isolated through ``pay_isolated_funding``; an isolated payment that leaves the margin
    short of its maintenance liquidates the position at the open, its orders of the bar then
    void (``State.VOID``). Returns whether it liquidated any.

    The bar loop pays cross positions itself and hands the row over at the first isolated
    one: a call per funding bar, not per position (the rule's arguments, the book's arrays
    unpacked, set up per isolated position cost a fifth of an isolated run's time)."""
    state, mode, account = book.state, book.mode, book.account
    voided = False
    for i in range(first, state.shape[1]):
        rate = rates[i]
        q = state[State.QTY, i]
        mark = state[State.MARK, i]
        if rate == rate and q != 0.0 and mark == mark and mode[i] < Mode.SPOT:
            payment = q * mark * rate
            if mode[i] == Mode.CROSS:
                account[Account.WALLET] -= payment
            else:
                pay_isolated_funding(i, payment, book)
            record_funding(records.funding, records.counts, t, i, q, mark, rate, payment,
                           mode[i])
            if mode[i] == Mode.ISOLATED and isolated_triggered(q, mark, state[State.LIQ_PX, i]):
                first = records.counts[Count.LIQS]
                liquidate_isolated(t, i, mark, TRUE, state[State.MARK], book, records)
                void_liquidated(records.liqs, first, records.counts[Count.LIQS],
                                state[State.VOID])
                voided = True
    return voided


# --- the open -----------------------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def open_bound(t, mark_open, state, mode, wallet, backing):
    """``(gapped, surplus)`` at bar t's open, before its marks are stored: whether an isolated
    position's liquidation price is at or past the open's mark, and a lower bound of the
    cross surplus there (inf: no cross position, nor a loan collateral backs), from
    ``backing``, each column's backing at the last close (``simulate``'s): a move of dp
    changes a position's MM, and collateral's discounted value, by at most |q dp| (every
    model's rates are below 1). The exact walk is needed only when it gapped or the bound
    is not positive."""
    gapped = False
    surplus = wallet + backing
    cross = False
    for i in range(state.shape[1]):
        q = state[State.QTY, i]
        if q == 0.0:
            continue
        last = state[State.MARK, i]
        mark = mark_open[t, i]
        if mark != mark:
            mark = last
        if mode[i] == Mode.ISOLATED:
            gapped = gapped or isolated_triggered(q, mark, state[State.LIQ_PX, i])
        elif mode[i] == Mode.CROSS:
            cross = True
            surplus += q * (mark - state[State.ENTRY, i]) - abs(q * (mark - last))
        elif mode[i] == Mode.COLLATERAL:
            cross = cross or wallet < 0.0  # it backs a loan
            surplus -= abs(q * (mark - last))
    if not cross:
        surplus = np.inf
    return gapped, surplus


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def open_marks(t, mark_open, state):
    """Every column's mark at bar t's open, where it has one (a loop of its own: compiled to
    vector instructions)."""
    for i in range(state.shape[1]):
        m = mark_open[t, i]
        if m == m:
            state[State.MARK, i] = m


# --- asking for memory ahead --------------------------------------------------------------
# The bars of a stretch read the close's rows, one after the other, which the processor
# fetches ahead by itself. A bar of orders also reads a row of targets, the time of its
# fills and (filled at the open) the open's and mark open's rows, and a funding bar the mark
# open's and the rates' rows, which no bar before them read: in a market larger than the
# caches, each such bar waited on memory for them (in profiles of ``bench_engine.py`` and
# ``bench_vectorbt.py``, the costliest instruction of ``process_orders``, of ``fill_wants``
# and of the quiet stretch was such a load). They are asked for at the bar of orders or
# funding before, or where a stretch begins: off the per-bar path.


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def next_flagged(flags, first, prices):
    """The first bar from ``first`` (within LOOK_AHEAD) whose ``flags`` is set, or -1: also
    in a market of fewer than FAR_VALUES ``prices`` (asking there is not worth it)."""
    n_bars = flags.shape[0]
    if n_bars * prices.shape[1] >= FAR_VALUES:
        for u in range(first, min(first + LOOK_AHEAD, n_bars)):
            if flags[u]:
                return u
    return -1


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def ask_for_orders(first, fill_at, has_target, targets, open_, mark_open, hours):
    """Ask the processor (``jit.prefetch_row``) for what the first row of targets from row
    ``first`` on (within LOOK_AHEAD rows) makes its orders read: the row itself, the time of
    their fill, and, filled at the next open, that bar's open and mark open."""
    u = next_flagged(has_target, first, open_)
    if u >= 0:
        prefetch_row(targets, u)
        prefetch_row(hours, u + 1)  # (hours has a bar more: the end of the last)
        if fill_at == FillAt.NEXT_OPEN and u + 1 < has_target.shape[0]:
            prefetch_row(open_, u + 1)
            prefetch_row(mark_open, u + 1)


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def ask_for_funding(t, has_funding, mark_open, funding_rate):
    """Ask the processor for the rows the next funding bar after bar t reads (within
    LOOK_AHEAD bars): its mark open and rates."""
    u = next_flagged(has_funding, t + 1, mark_open)
    if u >= 0:
        prefetch_row(mark_open, u)
        prefetch_row(funding_rate, u)


# --- the quiet pass ------------------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def quiet_columns(state, mode, sym, tiers, n_tiers, tier, quiet):
    """What the bar loop's quiet pass needs of each column, into ``quiet`` (``QUIET_*`` rows):
    flat, or a cross or isolated position on Binance's bracket rule, with its |q| and its
    tier's rate, amount and notional bounds (the tier it was in at the last close: the pass
    holds only while the notional stays in it, where ``rules.tier_from`` would keep it).
    False when some open position is of another kind (spot, collateral, another margin
    model): the full pass then runs every bar, until the positions change."""
    for i in range(state.shape[1]):
        q = state[State.QTY, i]
        if q == 0.0:
            quiet[QUIET_KIND, i] = QUIET_FLAT
            continue
        if mode[i] >= Mode.SPOT or not plain_bracket(i, sym):
            return False
        quiet[QUIET_KIND, i] = QUIET_CROSS if mode[i] == Mode.CROSS else QUIET_ISOLATED
        k = tier[i]
        quiet[QUIET_ABSQ, i] = abs(q)
        quiet[QUIET_RATE, i] = tiers[TierField.MMR, i, k]
        quiet[QUIET_CUM, i] = tiers[TierField.CUM, i, k]
        quiet[QUIET_CAP, i] = tiers[TierField.CAP, i, k] if k < n_tiers[i] - 1 else np.inf
        quiet[QUIET_FLOOR, i] = tiers[TierField.FLOOR, i, k] if k > 0 else -np.inf
    return True


@inner(error_model='numpy', _nrt=False)
def quiet_pass(t, quiet_ok, closes, close, mark_close, mark_high, mark_low, state, quiet,
               wallet, cross_only, iso_all):
    """Bar t's close valued by the quiet pass, as far as it can go: ``(first, may_liquidate,
    any_cross, worst, upnl, maint, maint_cross, upnl_cross, gross, net, iso)``, the sums of
    ``simulate``'s step 3 over columns ``..first-1`` (``first`` = N: all of them; 0 and
    nothing summed when not ``quiet_ok``), with each of those columns' mark stored, and its
    last close where ``closes`` (the quiet stretch stores those once, when it ends:
    ``last_closes``).

    While no position has changed since ``quiet`` was taken (``quiet_columns``), each one's
    tier is known (its notional, and a cross one's at the high, still in the tier's
    bounds) and its kind too, so a bar costs no lookup and no dispatch. It does the full
    pass's arithmetic in the full pass's order (the same figures, to the bit); at a column
    it cannot value (a bound left, a missing price) it stops, and the full pass goes on
    from that column with these sums. What it stores is what the full pass stores at the
    same bar, so a bar it began can be valued again from the start.

    ``cross_only`` (True only where the quiet stretch inlines it, for bars at which every
    column holds a cross position): no column's kind is read, the cross sums are those of
    every column (the same additions), and the isolated margins' sum is ``iso_all`` (taken
    once: nothing of such a stretch changes it). Where it stops at a column, what it then
    returns tells only where (the stretch leaves that bar to ``simulate``). A constant at
    each call, so that each copy of the pass is compiled for its own case."""
    n = close.shape[1]
    may_liquidate = False
    any_cross = False
    worst = wallet
    upnl = 0.0
    maint = 0.0
    maint_cross = 0.0
    upnl_cross = 0.0
    gross = 0.0
    net = 0.0
    iso = 0.0
    if not quiet_ok:
        return (0, may_liquidate, any_cross, worst, upnl, maint, maint_cross, upnl_cross,
                gross, net, iso)
    for i in range(n):
        if closes:
            c = close[t, i]
            if c == c:
                state[State.LAST_CLOSE, i] = c
        m = mark_close[t, i]
        kind = QUIET_CROSS if cross_only else quiet[QUIET_KIND, i]
        if kind == QUIET_FLAT:
            iso += state[State.ISO_MARGIN, i]
            if m == m:
                state[State.MARK, i] = m
            continue
        absq = quiet[QUIET_ABSQ, i]
        notional = absq * m
        hi = mark_high[t, i]
        extreme = absq * hi
        cap, floor = quiet[QUIET_CAP, i], quiet[QUIET_FLOOR, i]
        if not (notional <= cap and notional > floor) or (
                kind == QUIET_CROSS and not (extreme <= cap and extreme > floor)):
            # (a missing mark too)
            return (i, may_liquidate, any_cross, worst, upnl, maint, maint_cross, upnl_cross,
                    gross, net, iso)
        if not cross_only:
            iso += state[State.ISO_MARGIN, i]
        q = state[State.QTY, i]
        entry = state[State.ENTRY, i]
        lo = mark_low[t, i]
        state[State.MARK, i] = m
        u = q * (m - entry)
        upnl += u
        gross += notional
        net += q * m
        mm = notional * quiet[QUIET_RATE, i] - quiet[QUIET_CUM, i]
        if kind == QUIET_ISOLATED:
            liq = state[State.LIQ_PX, i]
            if (q > 0.0 and lo <= liq) or (q < 0.0 and hi >= liq):
                may_liquidate = True
        else:
            any_cross = True
            mm_high = extreme * quiet[QUIET_RATE, i] - quiet[QUIET_CUM, i]
            worst += q * ((lo if q > 0.0 else hi) - entry) - mm_high
            if not cross_only:
                maint_cross += mm
                upnl_cross += u
        maint += mm
    if cross_only:
        return (n, may_liquidate, any_cross, worst, upnl, maint, maint, upnl, gross, net,
                iso_all)
    return (n, may_liquidate, any_cross, worst, upnl, maint, maint_cross, upnl_cross, gross,
            net, iso)


# the quiet stretch's own copies (each bar of it runs them: a call would cost more than the
# work); ``simulate`` calls them
quiet_pass_inlined = inlined(quiet_pass)
open_bound_inlined = inlined(open_bound)


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def last_closes(close, first, stop, state):
    """Each column's last close of bars ``first..stop-1`` (where it has one there) into the
    state: what storing every bar's, as ``simulate`` does, leaves there."""
    for i in range(close.shape[1]):
        for b in range(stop - 1, first - 1, -1):
            c = close[b, i]
            if c == c:
                state[State.LAST_CLOSE, i] = c
                break


# --- the quiet stretch: bars of nothing but funding and the close --------------------------


@inner(error_model='numpy', _nrt=False)
def isolated_funding(t, surplus, funding_rate, mark_open, book, saved, funding, counts):
    """The quiet stretch's open of funding bar t with an isolated position open: the marks of
    the open set and the funding paid as ``simulate`` does, unless that liquidates (an
    isolated position triggered by its payment, or ``surplus``, the cross surplus's bound
    at the open, not positive after what the wallet paid): everything is then put back as
    it was (``saved``, (3, N): work space) and it returns False."""
    state, mode, account = book.state, book.mode, book.account
    n = state.shape[1]
    wallet_before = account[Account.WALLET]
    paid = counts[Count.FUNDING]
    for i in range(n):
        saved[0, i] = state[State.MARK, i]
        saved[1, i] = state[State.ISO_MARGIN, i]
        saved[2, i] = state[State.LIQ_PX, i]
    open_marks(t, mark_open, state)
    triggered = False
    for i in range(n):
        rate = funding_rate[t, i]
        q = state[State.QTY, i]
        mark = state[State.MARK, i]
        if rate == rate and q != 0.0 and mark == mark:
            payment = q * mark * rate
            if mode[i] == Mode.CROSS:
                account[Account.WALLET] -= payment
            else:
                pay_isolated_funding(i, payment, book)
            record_funding(funding, counts, t, i, q, mark, rate, payment, mode[i])
            if mode[i] == Mode.ISOLATED and isolated_triggered(q, mark,
                                                               state[State.LIQ_PX, i]):
                triggered = True
                break
    if not triggered and surplus + (account[Account.WALLET] - wallet_before) > 0.0:
        return True
    account[Account.WALLET] = wallet_before
    counts[Count.FUNDING] = paid
    for i in range(n):
        state[State.MARK, i] = saved[0, i]
        state[State.ISO_MARGIN, i] = saved[1, i]
        state[State.LIQ_PX, i] = saved[2, i]
    return False


@inner(error_model='numpy', _nrt=False)
def quiet_stretch(t, stop, next_end, fill_at, backing, bars, has_target, book, quiet, saved,
                  records, out):
    """Bars t.. to which nothing happens but funding and the close, valued by ``quiet_pass``
    and recorded: no order, no column's data end, no liquidation at the open (no isolated
    position gapped past its liquidation price, none triggered by its funding, and
    ``simulate``'s bound of the cross surplus there, after the funding paid, positive) and
    no point of the bar's path can liquidate (the quiet pass valued every column, no
    isolated position's liquidation price is within its range, the cross account's worst
    case is covered). ``backing``: simulate's, at the last close; ``saved`` (3, N): work
    space. Returns ``(t, equity, backing, opened)``: the first bar it did not finish
    (``stop`` when it did them all), the equity (NaN: none) and backing of the last bar it
    did (the one given when none), and whether it did the open of bar t (its funding
    paid: ``simulate`` then values its close).

    It does each bar's arithmetic as ``simulate`` does, in the same order (the same figures,
    to the bit), and leaves a bar's open as it found it when a liquidation there is
    possible: the funding it paid is taken back (``saved``). ``simulate`` hands it the bars
    when the quiet pass holds and nothing else of its loop can happen (no strategy callback,
    no margin call level, no records per bar, no borrowing fees or loan): its own loop, kept
    small, is what such a bar costs."""
    state, mode, account = book.state, book.mode, book.account
    funding, counts = records.funding, records.counts
    n = state.shape[1]
    has_funding, funding_rate, mark_open = bars.has_funding, bars.funding_rate, bars.mark_open
    close, mark_close, mark_high, mark_low = (bars.close, bars.mark_close, bars.mark_high,
                                              bars.mark_low)
    isolated = False  # an isolated position is open
    cross_only = True  # every column holds a cross position (``quiet_pass``)
    iso_all = 0.0  # (the isolated margins' sum: a cross-only stretch does not change it)
    for i in range(n):
        if quiet[QUIET_KIND, i] == QUIET_ISOLATED:
            isolated = True
        if quiet[QUIET_KIND, i] != QUIET_CROSS:
            cross_only = False
        iso_all += state[State.ISO_MARGIN, i]
    equity = np.nan
    opened = False
    first = t
    while t < stop:
        opened = False
        if t == next_end:
            break
        if fill_at == FillAt.NEXT_OPEN:
            if t > 0 and has_target[t - 1]:
                break
        elif has_target[t]:
            break
        if has_funding[t]:
            ask_for_funding(t, has_funding, mark_open, funding_rate)
            # simulate's open: the bound of the cross surplus and the gaps first
            gapped, surplus = open_bound_inlined(t, mark_open, state, mode,
                                                 account[Account.WALLET], backing)
            if gapped or surplus <= 0.0:
                break
            if not isolated:  # the cross account alone: the funding's bound, then pay it
                wallet = account[Account.WALLET]
                for i in range(n):
                    rate = funding_rate[t, i]
                    q = state[State.QTY, i]
                    mark = mark_open[t, i]
                    if mark != mark:
                        mark = state[State.MARK, i]
                    if rate == rate and q != 0.0 and mark == mark:
                        wallet -= q * mark * rate
                if surplus + (wallet - account[Account.WALLET]) <= 0.0:
                    break
                open_marks(t, mark_open, state)
                for i in range(n):
                    rate = funding_rate[t, i]
                    q = state[State.QTY, i]
                    mark = state[State.MARK, i]
                    if rate == rate and q != 0.0 and mark == mark:
                        payment = q * mark * rate
                        account[Account.WALLET] -= payment
                        record_funding(funding, counts, t, i, q, mark, rate, payment, mode[i])
            elif not isolated_funding(t, surplus, funding_rate, mark_open, book, saved,
                                      funding, counts):
                break
            opened = True
        wallet = account[Account.WALLET]
        if cross_only:
            (valued, may_liquidate, any_cross, worst, upnl, maint, maint_cross, upnl_cross,
             gross, net, iso) = quiet_pass_inlined(t, TRUE, FALSE, close, mark_close,
                                                   mark_high, mark_low, state, quiet, wallet,
                                                   TRUE, iso_all)
        else:
            (valued, may_liquidate, any_cross, worst, upnl, maint, maint_cross, upnl_cross,
             gross, net, iso) = quiet_pass_inlined(t, TRUE, FALSE, close, mark_close,
                                                   mark_high, mark_low, state, quiet, wallet,
                                                   FALSE, 0.0)
        if valued < n or may_liquidate or (any_cross and worst <= 0.0):
            break
        equity = store_bar(t, wallet, iso, upnl, maint, maint_cross, upnl_cross, gross, net,
                           out)
        backing = 0.0 - maint_cross  # (simulate's held - maint_cross: nothing held)
        t += 1
    last_closes(close, first, t, state)
    return t, equity, backing, opened


# --- the loop ------------------------------------------------------------------------------


@njit(cache=True, error_model='numpy', _nrt=False)
def simulate(start, stop, bars, book, trading, path, records, outputs, scratch, general,
             callback=None, ctx=None, orders=None, params=None):
    """Replay bars ``start..stop-1``; the module docstring gives the order of events.

    ``book`` holds the run's state and is updated in place; per-bar results go into
    ``outputs`` (liquidation prices, and positions, only when their (T, N) arrays have
    rows) and event records into ``records``. ``book.sym`` and ``book.rules`` carry
    the venue's rules: the kernel applies Binance's, Bybit's, OKX's or Kraken's
    margin model from them.

    Returns the bar at which it stopped: ``stop`` when done, or an earlier bar
    whose events might not fit in a record buffer (``run_to_end`` grows them and
    calls again from that bar).

    A strategy callback (optional, last four arguments): ``callback`` of numba type
    ``driver.callback_type()``, ``ctx`` an ``enums.BarContext`` over this run's own
    arrays, ``orders`` (N_ORDER_FIELDS, N) all NaN at the start, ``params`` the
    strategy's float64 parameters. Its orders wait in ``orders`` for the next fill,
    so a run that stops early resumes with them.

    ``scratch`` (SCRATCH_ROWS, N) is work space. ``general`` (a ``np.bool_``): every bar
    through this loop's general path, none handed to ``quiet_stretch``: the same figures,
    to the bit, more slowly (what the stretch is tested against).

    Speed: compiled without NRT, so that no array read off a bundle, and no array
    handed to an inlined rule, is reference-counted (an atomic count on every bar and
    column would cost more than the work); it therefore allocates nothing. The two
    passes run on every bar (the liquidation bound and the mark to market) are
    written out here rather than called: a call passes every field of its arrays.
    """
    # every array read off its bundle once: in this loop a bundle's field read per bar
    # would be reference-counted per bar
    state, mode, sym, account = book.state, book.mode, book.sym, book.account
    tiers, n_tiers, tier, account_rules = book.tiers, book.n_tiers, book.tier, book.rules
    open_, close, mark_open, mark_close, mark_high, mark_low = (
        bars.open, bars.close, bars.mark_open, bars.mark_close, bars.mark_high, bars.mark_low)
    has_funding, hours, has_target = bars.has_funding, bars.hours, trading.has_target
    targets = trading.targets
    funding_rate = bars.funding_rate
    fills, liqs, payments, rejects, events, counts = records
    out = outputs.out
    n_bars, n = open_.shape
    fill_at = trading.fill_at
    recording = outputs.liq_prices.shape[0] > 0
    want = scratch[0]  # a row of orders in units
    work = scratch[1:4]  # the liquidation walk's prices
    cp = scratch[4:8]  # the bar's checkpoint prices
    ends = scratch[8]  # each column's last bar with data (-1: the market's last, or none)
    quiet = scratch[9:15]  # the quiet pass's figures of each column (quiet_columns)
    saved = scratch[15:18]  # the quiet stretch's work space
    fresh = False  # whether ``quiet`` describes the positions as they are
    quiet_ok = False  # and whether every open position is of a kind the quiet pass values
    data_ends(close, ends)
    next_end = next_data_end(ends, start)  # the next bar at which a column's data end
    # what the columns add to the cross surplus at the last close besides their unrealized
    # PnL (collateral's discounted value less the cross positions' MM): the open's cheap
    # liquidation bound. A scalar, not a row: a store per column into a row the compiler
    # cannot tell apart from the state slowed the sweep batch by 7%.
    backing = 0.0
    void = state[State.VOID]  # the positions the bar's open liquidated (their orders are void)
    voided = False
    for i in range(n):
        void[i] = 0.0
        q = state[State.QTY, i]
        if q != 0.0 and mode[i] == Mode.CROSS:
            backing -= maintenance_margin(i, q, state[State.ENTRY, i], state[State.MARK, i], sym,
                                          tiers, n_tiers)
        elif q != 0.0 and mode[i] == Mode.COLLATERAL:
            backing += collateral_value(i, q, state[State.MARK, i], sym, tiers, n_tiers)
    pending = False  # a callback's orders wait for the next open
    if callback is not None:
        pending = fill_at == FillAt.NEXT_OPEN and has_orders(orders)
    borrowing = False
    # every column on Binance's rule (bracket MM at the mark, no fee in margin): the bound
    # pass then needs no rule dispatch
    plain = True
    for i in range(n):
        if not plain_bracket(i, sym):
            plain = False
        if sym[Sym.ROLLOVER_HOURS, i] > 0.0:
            borrowing = True
    calls = account_rules[AccountRule.CALL_LEVEL] > 0.0
    lending = account_rules[AccountRule.LOAN_RATE] > 0.0  # a negative balance is a loan
    fill_room, liq_room, reject_room, event_room = bar_room(n, tiers.shape[2],
                                                            callback is not None)
    # whether the bar loop may hand bars to the quiet stretch (``quiet_stretch``): those of
    # nothing but funding and the close, as long as the quiet pass holds
    stretches = (not general and callback is None and not calls and not recording
                 and not borrowing)
    t = start
    while t < stop:
        # a buffer might overflow in bar t: run_to_end grows them and calls again from t. (Before
        # the quiet stretch, which records nothing but funding, whose buffer has room for all:
        # the stretch may do the open of the bar it stops at, which must then not be done
        # again.)
        if (counts[Count.FILLS] + fill_room > fills.shape[0] or counts[Count.LIQS] + liq_room
                > liqs.shape[0] or counts[Count.REJECTS] + reject_room > rejects.shape[0]
                or counts[Count.EVENTS] + event_room > events.shape[0]):
            return t
        opened = False  # (the quiet stretch did bar t's open)
        if stretches and fresh and quiet_ok and not (lending and account[Account.WALLET] < 0.0):
            t_from = t
            ask_for_orders(t, fill_at, has_target, targets, open_, mark_open, hours)
            t, equity, backing, opened = quiet_stretch(
                t, stop, next_end, fill_at, backing, bars, has_target, book, quiet, saved,
                records, out)
            if t > t_from:
                account[Account.EQUITY_PREV] = equity
            if t >= stop:
                break
        orders_now = fill_at == FillAt.NEXT_OPEN and t > 0 and has_target[t - 1]
        if callback is not None:
            account[Account.BAR] = t
        loan = (account[Account.WALLET] < 0.0 and lending and t > 0)
        if not opened and (has_funding[t] or orders_now or pending or borrowing or loan):
            # Something happens at the open: the mark there prices it. 0. The gap: what the
            # open already triggers is liquidated before anything of the bar (DESIGN.md §4),
            # and an order for it is void: the exact walk when the cheap bound
            # (``open_bound``) is not safe.
            gapped, surplus = open_bound(t, mark_open, state, mode, account[Account.WALLET],
                                         backing)
            open_marks(t, mark_open, state)
            if gapped or surplus <= 0.0:
                first = counts[Count.LIQS]
                surplus = liquidate_at_open(t, state[State.MARK], book, records)
                void_liquidated(liqs, first, counts[Count.LIQS], void)
                voided = True
            wallet_before = account[Account.WALLET]
            # 1. funding at index[t]: each open position pays q * mark * rate (> 0: longs
            #    pay), cross from the wallet, isolated through pay_isolated_funding (a payment
            #    that leaves its margin short of its maintenance liquidates it, at the open);
            #    spot margin: the rollover fees due; a loan's interest
            if has_funding[t]:
                ask_for_funding(t, has_funding, mark_open, funding_rate)
                for i in range(n):
                    rate = funding_rate[t, i]
                    q = state[State.QTY, i]
                    mark = state[State.MARK, i]
                    if rate == rate and q != 0.0 and mark == mark and mode[i] < Mode.SPOT:
                        if mode[i] != Mode.CROSS:  # the rest of the row, in a call of its own
                            voided = pay_funding(t, i, funding_rate[t], book, records) or voided
                            break
                        payment = q * mark * rate
                        account[Account.WALLET] -= payment
                        record_funding(payments, counts, t, i, q, mark, rate, payment, mode[i])
            if borrowing:
                charge_rollovers(t, bars, book, records)
            if loan:
                charge_loan_interest(t, bars, book, records)
            # what the wallet paid comes off the cross surplus (prices and positions as they
            # were): below zero, the cross account goes at the open
            surplus += account[Account.WALLET] - wallet_before
            if surplus <= 0.0:
                first = counts[Count.LIQS]
                liquidate_at_open(t, state[State.MARK], book, records)
                void_liquidated(liqs, first, counts[Count.LIQS], void)
                voided = True
        if orders_now or pending or voided:
            fresh = False  # positions may change (or the open liquidated some)
        # 2. orders decided at close[t-1] fill at open[t]
        if orders_now:  # (the next orders: row t's, at bar t + 1)
            ask_for_orders(t, fill_at, has_target, targets, open_, mark_open, hours)
            process_orders(t, hours[t], t - 1, close[t - 1], open_[t], want, trading, book,
                           records)
        if callback is not None:
            if pending:
                apply_callback_orders(t, hours[t], orders, close[t - 1], open_[t], want,
                                      trading, book, records)
                pending = False
        if voided:  # the orders at the open are done: those of the close are not void
            for i in range(n):
                void[i] = 0.0
            voided = False
        # 3. one pass: a bound on the worst the bar can do (if even that is safe, no point
        #    of any path triggers), and the close's mark to market, valid when it is safe
        # The quiet pass first (``quiet_pass``): a bar of positions as ``quiet`` describes
        # them costs no tier lookup and no dispatch; the full pass values the columns it
        # could not, from ``first`` on, after its sums of the ones before.
        if not fresh:
            quiet_ok = not calls and quiet_columns(state, mode, sym, tiers, n_tiers, tier,
                                                   quiet)
            fresh = True
        (first, may_liquidate, any_cross, worst, upnl, maint, maint_cross, upnl_cross, gross,
         net, iso) = quiet_pass(t, quiet_ok, TRUE, close, mark_close, mark_high, mark_low,
                                state, quiet, account[Account.WALLET], FALSE, 0.0)
        held = 0.0
        for i in range(first, n):
            c = close[t, i]
            if c == c:
                state[State.LAST_CLOSE, i] = c
            iso += state[State.ISO_MARGIN, i]
            q = state[State.QTY, i]
            if q == 0.0:
                m = mark_close[t, i]
                if m == m:
                    state[State.MARK, i] = m
                continue
            entry = state[State.ENTRY, i]
            m = mark_close[t, i]
            if m == m:
                hi = mark_high[t, i]
                lo = mark_low[t, i]
                state[State.MARK, i] = m
            else:
                hi = state[State.MARK, i]
                lo = hi
                m = hi
            notional = abs(q) * m
            u = q * (m - entry)
            upnl += u
            gross += notional
            net += q * m
            if mode[i] >= Mode.SPOT:  # (spot holdings are never liquidated, collateral only sold)
                if mode[i] == Mode.COLLATERAL:  # its discounted value backs the cross account
                    value = collateral_value(i, q, m, sym, tiers, n_tiers)
                    held += value
                    upnl_cross += value
                    worst += collateral_value(i, q, lo, sym, tiers, n_tiers)
                    # a loan it backs is liquidated like a cross position
                    any_cross = any_cross or account[Account.WALLET] < 0.0
                continue
            # the position's tier, looked up from the one it was in at the last close
            if plain:
                k = tier_from(notional, tier[i], i, tiers, n_tiers)
                mm = bracket_maintenance(notional, i, k, tiers)
            else:
                k = tier_from(tier_key(i, q, entry, m, sym), tier[i], i, tiers, n_tiers)
                mm = maintenance_in_tier(i, q, entry, m, k, sym, tiers)
            tier[i] = k
            if mode[i] == Mode.ISOLATED:
                liq = state[State.LIQ_PX, i]
                if (q > 0.0 and lo <= liq) or (q < 0.0 and hi >= liq):
                    may_liquidate = True
            else:
                any_cross = True
                # every model's MM is largest at the bar's high (it rises with the price or
                # is fixed), and its tier is at or above the close's: MM is the max of the
                # tier lines, so the tier must be the right one, or the bound is not safe
                if plain:
                    extreme = abs(q) * hi
                    mm_high = bracket_maintenance(extreme, i, tier_from(extreme, k, i, tiers,
                                                                        n_tiers), tiers)
                else:
                    kh = tier_from(tier_key(i, q, entry, hi, sym), k, i, tiers, n_tiers)
                    mm_high = maintenance_in_tier(i, q, entry, hi, kh, sym, tiers)
                worst += q * ((lo if q > 0.0 else hi) - entry) - mm_high
            maint += mm
            if mode[i] == Mode.CROSS:
                maint_cross += mm
                upnl_cross += u
        if first < n:
            fresh = False  # (the full pass may have moved tiers)
        if calls and any_cross and account[Account.IN_CALL] == 0.0:
            n_cp = build_checkpoints(t, path, bars, state, cp)
            check_margin_call(t, n_cp, cp, book, records)
        if may_liquidate or (any_cross and worst <= 0.0):
            # 4. walk the path; the marks of the close are restored afterwards
            n_cp = build_checkpoints(t, path, bars, state, cp)
            for i in range(n):
                state[State.MARK, i] = cp[n_cp - 1, i]
            check_liquidations(t, n_cp, cp, work, book, records)
            fresh = False
            equity, backing = mark_to_market(t, book, out)
        else:
            equity = store_bar(t, account[Account.WALLET], iso, upnl, maint, maint_cross,
                               upnl_cross, gross, net, out)
            backing = held - maint_cross
        account[Account.EQUITY_PREV] = equity
        # 5. orders decided and filled at the close (fill_at="close")
        if fill_at != FillAt.NEXT_OPEN and has_target[t]:
            ask_for_orders(t + 1, fill_at, has_target, targets, open_, mark_open, hours)
            process_orders(t, hours[t + 1], t, close[t], close[t], want, trading, book,
                           records)
            fresh = False
            account[Account.EQUITY_PREV], backing = mark_to_market(t, book, out)
        # 6. the strategy callback decides at the close
        if callback is not None:
            if callback(t, ctx, orders, params):
                fresh = False
                if fill_at == FillAt.NEXT_OPEN:
                    pending = t + 1 < n_bars
                else:
                    apply_callback_orders(t, hours[t + 1], orders, close[t], close[t], want,
                                          trading, book, records)
                    account[Account.EQUITY_PREV], backing = mark_to_market(t, book, out)
        # a column whose data end here: its position is closed at this last close, after
        # whatever the close did (orders filled there, the callback's), not left open at a
        # price that no longer moves
        if t == next_end:
            close_data_ends(t, hours[t + 1], close[t], ends, want, trading, book, records)
            fresh = False
            account[Account.EQUITY_PREV], backing = mark_to_market(t, book, out)
            next_end = next_data_end(ends, t + 1)
        if calls and account[Account.IN_CALL] != 0.0 and cross_level_value(
                book, state[State.MARK], account_rules[AccountRule.CALL_LEVEL]) > 0.0:
            account[Account.IN_CALL] = 0.0  # back above the call level: the next fall is a new call
        if recording:
            record_positions(t, book, outputs)
        t += 1
    return stop


@inner(error_model='numpy')
def run_to_end(bars, book, trading, path, versions, records, outputs, callback=None, ctx=None,
               orders=None, params=None):
    """Run every bar from an opened account; returns the record buffers (grown as needed).

    ``versions`` (``enums.Versions``): the venue's rules, version v in force from bar
    ``versions.bars[v]`` (version 0 is the account's at opening). The run pauses at each
    such bar and goes on under the new rules (``put_rules_in_force``); at a bar whose
    events might overflow a record buffer, the buffers grow and the run goes on.
    Exceptions raised by a strategy callback propagate (``account[Account.BAR]`` says where).
    """
    n_bars, n = bars.open.shape
    scratch = np.empty((SCRATCH_ROWS, n))
    start = ZERO  # (typed constants: see enums.TRUE)
    v = ZERO + 1
    while True:
        stop = versions.bars[v] if v < versions.bars.shape[0] else n_bars
        if stop > n_bars:
            stop = n_bars
        start = simulate(start, stop, bars, book, trading, path, records, outputs, scratch,
                         FALSE, callback, ctx, orders, params)
        if start >= n_bars:
            return records
        if start == stop:
            put_rules_in_force(versions, v, book)
            v += 1
            continue
        records = grow_records(records, n, book.tiers.shape[2], callback is not None)
