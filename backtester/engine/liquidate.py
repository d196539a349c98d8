"""Steps 3 and 4 of a bar: the intrabar path, and the liquidations along it.

Only called for a bar whose cheap bound says something might be liquidated. The
venue's rules enter through ``engine.rules`` (the size a position is cut to, where
an isolated position settles) and the account rule ``AccountRule.CROSS_CLOSE`` (how a
triggered cross account is closed).
"""

from __future__ import annotations

import numpy as np

from .account import (
    account_equity,
    cross_at_risk,
    cross_level_value,
    cross_trigger_value,
    has_cross_position,
    margin_level,
    reduce_position,
    refresh_liq_price,
)
from .enums import (
    FALSE,
    NO_COLUMN,
    TRUE,
    ZERO,
    Account,
    AccountRule,
    Count,
    EventKind,
    FillReason,
    Mode,
    PricePath,
    Settle,
    State,
    Sym,
)
from .jit import inner
from .records import (
    record_event,
    record_fill,
    record_liquidation,
    record_settlement,
)
from .rules import (
    collateral_value,
    cross_close_done,
    cross_close_next,
    cross_settlement,
    cut_keeps_margin,
    isolated_cut_fee_cap,
    isolated_settlement,
    lowest_cut_tier,
    maintenance_margin,
    partial_target,
    settles_to_zero,
    tier_from,
    tier_key,
)

# Compiled without NRT (``_nrt=False``): see ``engine.rules``.

# --- step 3: the path --------------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def build_checkpoints(t, path, bars, state, cp):
    """Fill ``cp[k, i]`` with the checkpoint prices of bar t; returns their count.

    ``path``: open -> low -> high -> close when close >= open, else open -> high
    -> low -> close; ``worst``: open -> each position's adverse extreme -> close;
    ``close``: open -> close. A column without a bar stays at its last mark.
    """
    n = state.shape[1]
    n_cp = 4 if path == PricePath.OHLC else (3 if path == PricePath.WORST else 2)
    for i in range(n):
        o = bars.mark_open[t, i]
        if o != o:
            for k in range(n_cp):
                cp[k, i] = state[State.MARK, i]
            continue
        c = bars.mark_close[t, i]
        cp[0, i] = o
        cp[n_cp - 1, i] = c
        if path == PricePath.OHLC:
            if c >= o:
                cp[1, i] = bars.mark_low[t, i]
                cp[2, i] = bars.mark_high[t, i]
            else:
                cp[1, i] = bars.mark_high[t, i]
                cp[2, i] = bars.mark_low[t, i]
        elif path == PricePath.WORST:
            q = state[State.QTY, i]
            cp[1, i] = bars.mark_low[t, i] if q > 0.0 else (
                bars.mark_high[t, i] if q < 0.0 else c)
    return n_cp


@inner(error_model='numpy', _nrt=False)
def interpolate(a, b, s, out):
    """Prices a fraction ``s`` of the way along the straight segment a -> b."""
    for i in range(out.shape[0]):
        out[i] = a[i] + (b[i] - a[i]) * s


@inner(error_model='numpy', _nrt=False)
def isolated_triggered(q, price, liq_px):
    """An isolated long triggers at or below its liquidation price, a short at or above."""
    if q > 0.0:
        return price <= liq_px
    return price >= liq_px


@inner(error_model='numpy', _nrt=False)
def cross_trigger_point(a, b, book, out):
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
        if cross_trigger_value(book, out) <= 0.0:
            hi = mid
        else:
            lo = mid
    interpolate(a, b, hi, out)
    return hi


# --- step 4: liquidation -----------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def next_event(account):
    """A new liquidation event id."""
    event = int(account[Account.EVENTS])
    account[Account.EVENTS] += 1.0
    return event


@inner(error_model='numpy', _nrt=False)
def may_cut(t, i, book):
    """Whether column i may take another partial cut in bar t: at most as many in one bar as
    its table has tiers (each cut takes it a tier down; a notional that climbs back up along
    the path, a short's, would otherwise be cut again and again). Past that it closes whole,
    and a bar's liquidation records stay within ``records.bar_room``'s budget."""
    state = book.state
    return state[State.CUT_BAR, i] != t or state[State.CUTS, i] < book.n_tiers[i]


@inner(error_model='numpy', _nrt=False)
def cut_position(t, event, i, target, price, gapped, equity_before, trigger, fee_cap, book,
                 records):
    """Partial liquidation: cut column i down to ``target`` units at ``price``, paying the
    venue's cut fee (``Sym.CUT_FEE``) but never more than ``fee_cap`` (what is left of the
    margin that pays it: the cut share of an isolated position's equity, or all of it
    (``rules.isolated_cut_fee_cap``), or the cross margin balance; the rest is waived); its
    share of an isolated margin and its realized PnL go to the wallet, or stay in the
    position's margin where the venue keeps them there (``rules.cut_keeps_margin``).
    Recorded as a liquidation with ``partial`` set, and a fill."""
    state = book.state
    if state[State.CUT_BAR, i] != t:
        state[State.CUT_BAR, i] = t
        state[State.CUTS, i] = 0.0
    state[State.CUTS, i] += 1.0
    q = state[State.QTY, i]
    entry = state[State.ENTRY, i]
    close_qty = -(q - np.sign(q) * target)
    bankrupt = np.nan
    if book.mode[i] == Mode.ISOLATED:
        bankrupt = entry - state[State.ISO_MARGIN, i] * abs(close_qty) / abs(q) / -close_qty
    rate = book.sym[Sym.CUT_FEE, i]
    due = abs(close_qty) * price * rate
    if due > fee_cap:
        rate *= max(fee_cap, 0.0) / due
    margin_before = state[State.ISO_MARGIN, i]
    realized, fee = reduce_position(i, close_qty, price, rate, book)
    if book.mode[i] == Mode.ISOLATED and cut_keeps_margin(i, book.sym):
        # the margin the cut freed, its realized PnL and its fee stay with the position
        kept = margin_before - state[State.ISO_MARGIN, i] + realized - fee
        if due > fee_cap:
            # the fee took all the margin balance: the position's equity is zero (rounding
            # dust back to the wallet, so that the close that follows loses nothing more)
            kept -= kept + state[State.ISO_MARGIN, i] + state[State.QTY, i] * (price - entry)
        state[State.ISO_MARGIN, i] += kept
        book.account[Account.WALLET] -= kept
    c = record_liquidation(records.liqs, records.counts,
                           t, event, i, book.mode[i], -close_qty, entry, trigger,
                           price, bankrupt, gapped, TRUE)
    record_settlement(records.liqs, c, fee, max(due - fee, 0.0), realized,
                      max(fee - realized, 0.0), 0.0, equity_before)
    record_fill(records.fills, records.counts,
                t, i, close_qty, price, fee, realized, state[State.QTY, i],
                FillReason.LIQUIDATION)
    return c


@inner(error_model='numpy', _nrt=False)
def liquidate_isolated(t, i, price, gapped, prices, book, records):
    """Liquidate isolated position i, triggered at ``price``: it alone goes, its loss bounded
    by its margin.

    A venue with partial liquidation first cuts it down (``rules.partial_target``);
    if what is left no longer triggers at ``price``, that is all. Otherwise it is
    closed where the venue settles it (``rules.isolated_settlement``), in the same
    liquidation event as the cut.
    """
    state, account = book.state, book.account
    q = state[State.QTY, i]
    entry = state[State.ENTRY, i]
    margin = state[State.ISO_MARGIN, i]
    equity = margin + q * (price - entry)
    target = partial_target(i, q, entry, price, equity, TRUE, book.sym, book.tiers,
                            book.n_tiers)
    event = next_event(account)
    if target > 0.0 and target < abs(q) * (1.0 - 1e-12) and may_cut(t, i, book):
        c = cut_position(t, event, i, target, price, gapped,
                         account_equity(book, prices), state[State.LIQ_PX, i],
                         isolated_cut_fee_cap(i, equity, target, abs(q), book.sym), book,
                         records)
        refresh_liq_price(i, book)
        records.liqs[c]["equity_after"] = account_equity(book, prices)
        q = state[State.QTY, i]
        lp = state[State.LIQ_PX, i]
        if q != 0.0 and not isolated_triggered(q, price, lp):
            return
        entry = state[State.ENTRY, i]
        margin = state[State.ISO_MARGIN, i]
    equity_before = account_equity(book, prices)
    trigger = state[State.LIQ_PX, i]
    exec_price, fee, waived, realized, remaining, shortfall, bankrupt = isolated_settlement(
        i, q, entry, margin, price, book.sym)
    c = record_liquidation(records.liqs, records.counts,
                           t, event, i, Mode.ISOLATED, q, entry, trigger,
                           exec_price, bankrupt, gapped, FALSE)
    # (a margin already below zero, emptied by funding, lost nothing more here)
    record_settlement(records.liqs, c, fee, waived, realized, max(margin, 0.0) - remaining,
                      shortfall, equity_before)
    records.liqs[c]["settled_at_bankruptcy"] = book.sym[Sym.SETTLEMENT, i] == Settle.AT_BANKRUPTCY
    record_fill(records.fills, records.counts,
                t, i, -q, exec_price, fee, realized, 0.0, FillReason.LIQUIDATION)
    account[Account.WALLET] += remaining
    state[State.QTY, i] = 0.0
    state[State.ENTRY, i] = 0.0
    state[State.ISO_MARGIN, i] = 0.0
    state[State.LIQ_PX, i] = np.nan
    records.liqs[c]["equity_after"] = account_equity(book, prices)


@inner(error_model='numpy', _nrt=False)
def close_cross_position(t, event, i, price, fee, gapped, bankrupt, equity_before, book,
                         records):
    """Close cross position i at ``price`` paying ``fee``; returns its liquidation record."""
    state = book.state
    q = state[State.QTY, i]
    entry = state[State.ENTRY, i]
    realized = q * (price - entry)
    book.account[Account.WALLET] += realized - fee
    loss = fee - realized
    c = record_liquidation(records.liqs, records.counts,
                           t, event, i, Mode.CROSS, q, entry, price, price, bankrupt,
                           gapped, FALSE)
    record_settlement(records.liqs, c, fee, 0.0, realized, loss, 0.0, equity_before)
    record_fill(records.fills, records.counts,
                t, i, -q, price, fee, realized, 0.0, FillReason.LIQUIDATION)
    state[State.QTY, i] = 0.0
    state[State.ENTRY, i] = 0.0
    return c


@inner(error_model='numpy', _nrt=False)
def cut_cross(t, event, prices, gapped, equity_before, book, records):
    """Partial liquidation of a cross account at the trigger ``prices``: the largest position
    that can drop a tier is cut (``rules.partial_target`` with the free margin, the
    margin balance less the other positions' MM, which a cut at the mark leaves as it
    is), then the next, until the account is compliant again (returns True) or no cut
    helps (False: the caller closes what is left). A venue without partial liquidation
    has nothing to cut."""
    state, mode, sym = book.state, book.mode, book.sym
    n = state.shape[1]
    for _ in range(n * book.tiers.shape[2] + 1):  # each cut takes a position a tier down
        margin_balance = cross_trigger_value(book, prices)
        if margin_balance > 0.0:
            return True
        # the largest position (by the size that picks its tier) that is above the lowest
        # tier it could be cut to
        best = NO_COLUMN
        best_key = 0.0
        for i in range(n):
            q = state[State.QTY, i]
            if q == 0.0 or mode[i] != Mode.CROSS:
                continue
            lowest = lowest_cut_tier(i, sym)
            key = tier_key(i, q, state[State.ENTRY, i], prices[i], sym)
            k = tier_from(key, ZERO, i, book.tiers, book.n_tiers)
            if lowest >= 0 and k >= lowest and key > best_key and may_cut(t, i, book):
                best = i
                best_key = key
        if best < 0:
            return False
        i = best
        q = state[State.QTY, i]
        entry = state[State.ENTRY, i]
        own_mm = maintenance_margin(i, q, entry, prices[i], sym, book.tiers, book.n_tiers)
        free = margin_balance + own_mm  # MB - sum(MM) + own MM = MB - the others' MM
        target = partial_target(i, q, entry, prices[i], free, FALSE, sym, book.tiers,
                                book.n_tiers)
        if not (target > 0.0 and target < abs(q) * (1.0 - 1e-12)):
            return False
        cut_position(t, event, i, target, prices[i], gapped, equity_before, prices[i],
                     cross_level_value(book, prices, 0.0), book, records)
    return False


@inner(error_model='numpy', _nrt=False)
def liquidate_cross(t, prices, gapped, book, records):
    """Liquidate the cross account, triggered at ``prices``; after any partial cuts
    (``cut_cross``), the account rule ``AccountRule.CROSS_CLOSE`` says in which order its positions
    close, where, and when it is done (``rules.cross_close_next``, ``cross_settlement``,
    ``cross_close_done``):

    - at the trigger (Binance, OKX): every cross position closes at the trigger
      prices, the liquidation fee charged on each closed notional;
    - at the bankruptcy price (Bybit): every position is settled at its bankruptcy
      price: the margin balance left at the trigger is shared out in proportion to
      each position's MM, and the wallet goes to zero;
    - FIFO (Kraken spot margin): positions close oldest first, each paying the
      liquidation fee, until the account no longer triggers and its margin level is back
      above ``AccountRule.LIQ_TARGET_LEVEL`` (or none is left).

    A wallet left negative with nothing to back it: fees waived first, then the deficit
    past bankruptcy recorded as the shortfall (``settle_deficit``). Each
    record's ``trigger_price`` is the position's mark at the trigger and its
    ``bankruptcy_price`` the mark at which the account's equity would be zero
    with the others frozen, ``P - MB / q``.
    """
    state, mode, sym, account = book.state, book.mode, book.sym, book.account
    liqs = records.liqs
    n = state.shape[1]
    equity_before = account_equity(book, prices)
    event = next_event(account)
    first = records.counts[Count.LIQS]
    first_fill = records.counts[Count.FILLS]
    close = book.rules[AccountRule.CROSS_CLOSE]
    safe = cut_cross(t, event, prices, gapped, equity_before, book, records)
    balance = account[Account.WALLET]
    total_mm = 0.0
    backing = 0.0  # the discounted value of collateral holdings (in the margin balance)
    for i in range(n):
        q = state[State.QTY, i]
        if q > 0.0 and mode[i] == Mode.COLLATERAL:
            backing += collateral_value(i, q, prices[i], sym, book.tiers, book.n_tiers)
            continue
        if q == 0.0 or mode[i] != Mode.CROSS:
            continue
        entry = state[State.ENTRY, i]
        balance += q * (prices[i] - entry)
        total_mm += maintenance_margin(i, q, entry, prices[i], sym, book.tiers, book.n_tiers)
    balance += backing
    done = safe  # the cuts made the account compliant: nothing more is closed
    while not done:
        i = cross_close_next(state, mode, close)
        if i < 0:
            break
        q = state[State.QTY, i]
        entry = state[State.ENTRY, i]
        price, fee, bankrupt = cross_settlement(
            i, q, entry, prices[i], balance,
            maintenance_margin(i, q, entry, prices[i], sym, book.tiers, book.n_tiers),
            total_mm, close, sym)
        c = close_cross_position(t, event, i, price, fee, gapped, bankrupt, equity_before,
                                 book, records)
        liqs[c]["settled_at_bankruptcy"] = settles_to_zero(close, total_mm)
        done = cross_close_done(close, cross_trigger_value(book, prices), cross_level_value(
            book, prices, book.rules[AccountRule.LIQ_TARGET_LEVEL]))
    if not safe and settles_to_zero(close, total_mm):
        # settled to zero (up to rounding dust): the margin balance, the collateral's
        # discounted value in it, is gone; a quote balance that owes that value is repaid
        # below by selling the collateral, whose haircut part stays the trader's
        account[Account.WALLET] = -backing
        if balance < 0.0:
            # a gap beyond the bankruptcy prices: the insurance fund takes what the
            # positions lose past them, q * (bankruptcy price - trigger price) each
            for c in range(first, records.counts[Count.LIQS]):
                i = liqs[c]["symbol"]
                liqs[c]["shortfall"] = liqs[c]["qty"] * (liqs[c]["price"] - prices[i])
    # multi-currency margin: a negative quote balance left is repaid by selling collateral
    for i in range(n):
        if account[Account.WALLET] >= 0.0:
            break
        q = state[State.QTY, i]
        if q > 0.0 and mode[i] == Mode.COLLATERAL and prices[i] > 0.0:
            sell = min(q, -account[Account.WALLET] / prices[i])
            entry = state[State.ENTRY, i]
            realized, fee = reduce_position(i, -sell, prices[i], 0.0, book)
            # recorded as the liquidation of a holding: sold at the mark, no fee, nothing lost
            # by the sale itself (the coins become the quote they were worth)
            c = record_liquidation(records.liqs, records.counts, t, event, i, Mode.COLLATERAL,
                                   sell, entry, prices[i], prices[i], np.nan, gapped,
                                   state[State.QTY, i] > 0.0)
            record_settlement(records.liqs, c, 0.0, 0.0, realized, 0.0, 0.0, equity_before)
            record_fill(records.fills, records.counts,
                        t, i, -sell, prices[i], 0.0, realized, state[State.QTY, i],
                        FillReason.LIQUIDATION)
    settle_deficit(first, first_fill, book, records)
    equity_after = account_equity(book, prices)
    for c in range(first, records.counts[Count.LIQS]):
        liqs[c]["trigger_price"] = prices[liqs[c]["symbol"]]
        liqs[c]["equity_after"] = equity_after


@inner(error_model='numpy', _nrt=False)
def settle_deficit(first, first_fill, book, records):
    """A cross liquidation that left the wallet below zero with no cross position to back it:
    the fees its closes charged are waived first (a fee is never more than what remained
    of the margin balance), in proportion to each; what is still missing is the deficit
    past bankruptcy, the shortfall the insurance fund absorbs, shared among the closed
    positions in proportion to their losses. The wallet ends at zero. ``first`` and
    ``first_fill``: the event's first liquidation and fill records."""
    account = book.account
    liqs, fills, counts = records.liqs, records.fills, records.counts
    last = counts[Count.LIQS]
    if account[Account.WALLET] >= 0.0 or has_cross_position(book) or last == first:
        return  # solvent, or the positions left back it (FIFO stops once compliant)
    deficit = -account[Account.WALLET]
    fees = 0.0
    for c in range(first, last):
        fees += liqs[c]["fee"]
    waived = min(deficit, fees)
    shortfall = deficit - waived
    account[Account.WALLET] = 0.0
    share = waived / fees if fees > 0.0 else 0.0
    for f in range(first_fill, counts[Count.FILLS]):
        if fills[f]["reason"] == FillReason.LIQUIDATION:
            fills[f]["fee"] -= fills[f]["fee"] * share
    total_loss = 0.0
    for c in range(first, last):
        give_back = liqs[c]["fee"] * share
        liqs[c]["fee"] -= give_back
        liqs[c]["fee_waived"] += give_back
        liqs[c]["margin_lost"] -= give_back
        total_loss += max(liqs[c]["margin_lost"], 0.0)
    if shortfall <= 0.0:
        return
    for c in range(first, last):
        # shared in proportion to the losses (evenly if none lost: a deficit from before)
        part = (shortfall * max(liqs[c]["margin_lost"], 0.0) / total_loss if total_loss > 0.0
                else shortfall / (last - first))
        liqs[c]["shortfall"] += part
        liqs[c]["margin_lost"] -= part


@inner(error_model='numpy', _nrt=False)
def check_margin_call(t, n_cp, cp, book, records):
    """Record a margin call (spot margin) the first time along the path that the margin level
    reaches the call level; one event per call, re-armed once the level is back above it."""
    account = book.account
    level = book.rules[AccountRule.CALL_LEVEL]
    if account[Account.IN_CALL] != 0.0 or not has_cross_position(book):
        return
    for k in range(n_cp):
        if cross_level_value(book, cp[k], level) <= 0.0:
            record_event(records.events, records.counts,
                         t, NO_COLUMN, EventKind.MARGIN_CALL, 0.0, np.nan, level, 0.0,
                         margin_level(book, cp[k]))
            account[Account.IN_CALL] = 1.0
            return


@inner(error_model='numpy', _nrt=False)
def void_liquidated(liqs, first, last, void):
    """Add the quantities of liquidation records ``first..last-1`` to ``void`` (by column: what
    the liquidations took, the position the bar's orders were decided for; their orders of
    this bar are void)."""
    for c in range(first, last):
        void[liqs[c]["symbol"]] += liqs[c]["qty"]


@inner(error_model='numpy', _nrt=False)
def liquidate_at_open(t, prices, book, records):
    """Liquidate what already triggers at the open ``prices``: the isolated positions whose
    trigger holds there, then the cross account while it does (DESIGN.md §4, step 0: the
    mark moved through their liquidation prices during the gap, before anything of the bar
    could happen). Each closes at the open, recorded as gapped. Returns the cross
    account's surplus (``MB - sum(MM)``) at ``prices`` afterwards (inf: no cross position).
    """
    state, mode = book.state, book.mode
    n = state.shape[1]
    for i in range(n):
        q = state[State.QTY, i]
        if q != 0.0 and mode[i] == Mode.ISOLATED and isolated_triggered(
                q, prices[i], state[State.LIQ_PX, i]):
            liquidate_isolated(t, i, prices[i], TRUE, prices, book, records)
    for _ in range(n + 1):
        if not cross_at_risk(book):
            return np.inf
        surplus = cross_trigger_value(book, prices)
        if surplus > 0.0:
            return surplus
        liquidate_cross(t, prices, TRUE, book, records)
    return cross_trigger_value(book, prices)


@inner(error_model='numpy', _nrt=False)
def check_liquidations(t, n_cp, cp, work, book, records):
    """Walk the bar's checkpoints and liquidate, in the order the triggers occur.

    At the open (k = 0) a trigger that already holds is a gap: the position
    closes at the open. On each later segment, isolated positions close at
    their liquidation price and the cross account at the point where
    ``MB == sum(MM)``; whichever comes first along the segment goes first. After
    each event the walk goes on from the point where it happened: what is left of
    the account (a cut position, the cross positions a FIFO liquidation kept) is
    checked on the rest of the segment only. ``work`` (3, N) is scratch space.
    """
    state, mode = book.state, book.mode
    n = state.shape[1]
    event_prices = work[0]
    cross_point = work[1]
    start = work[2]
    liquidate_at_open(t, cp[0], book, records)
    for k in range(1, n_cp):
        b = cp[k]
        for i in range(n):
            start[i] = cp[k - 1, i]
        while True:
            s_iso = 2.0
            i_iso = NO_COLUMN
            for i in range(n):
                q = state[State.QTY, i]
                if q == 0.0 or mode[i] != Mode.ISOLATED:
                    continue
                lp = state[State.LIQ_PX, i]
                if isolated_triggered(q, b[i], lp):
                    s = (lp - start[i]) / (b[i] - start[i]) if b[i] != start[i] else 0.0
                    if s < s_iso:
                        s_iso = s
                        i_iso = i
            s_cross = 2.0
            if cross_at_risk(book) and cross_trigger_value(book, b) <= 0.0:
                if cross_trigger_value(book, start) <= 0.0:
                    s_cross = 0.0  # what is left after an event already triggers there
                    for i in range(n):
                        cross_point[i] = start[i]
                else:
                    s_cross = cross_trigger_point(start, b, book, cross_point)
            if i_iso < 0 and s_cross > 1.0:
                break
            if i_iso >= 0 and s_iso <= s_cross:
                s = max(s_iso, 0.0)
                interpolate(start, b, s, event_prices)
                q = state[State.QTY, i_iso]
                # a gap when the position already triggered at the segment's start
                price = state[State.LIQ_PX, i_iso]
                if isolated_triggered(q, start[i_iso], price):
                    price = start[i_iso]
                event_prices[i_iso] = price
                liquidate_isolated(t, i_iso, price, FALSE, event_prices, book, records)
            else:
                for i in range(n):
                    event_prices[i] = cross_point[i]
                liquidate_cross(t, event_prices, FALSE, book, records)
            for i in range(n):
                start[i] = event_prices[i]
