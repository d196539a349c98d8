"""The account: its totals at given prices, and the changes fills, funding and margin moves make.

Functions take the run's ``Book`` (``enums.Book``: state, margin modes, rule rows,
tiers, account scalars and account rules) and a column index ``i``. The
definitions are DESIGN.md §3's:

- unrealized PnL ``U_i = q_i * (P - E_i)``; initial margin ``|q_i| * E_i / lev_i``
- cross margin balance ``MB = WB + sum(U_i, cross)`` (plus discounted collateral)
- available balance ``MB - sum(IM_i, cross)``
- equity ``WB + sum(M_i, isolated) + sum(U_i, all)``

A spot holding (mode ``Mode.SPOT``) is kept like an isolated position at 1x: its cost
``q * E`` sits in ``State.ISO_MARGIN`` (so equity is ``WB + q * P`` for it), it is
left out of every cross sum and of the liquidation checks, and it pays no funding.
A ``Mode.COLLATERAL`` holding is kept the same way and counts in the cross margin
balance at its discounted value. A position's own rules are in ``engine.rules``.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit

from .enums import (
    N_ACCOUNT,
    N_STATE,
    Account,
    Book,
    Mode,
    State,
    Sym,
)
from .jit import inner
from .rules import (
    bracket_maintenance,
    collateral_value,
    funding_from_available,
    initial_margin,
    isolated_funding_split,
    isolated_margin_to_open,
    maintenance_margin,
    maintenance_margin_inlined,
    plain_bracket,
    solve_liquidation_price,
    tier_from,
    used_margin,
)

# Compiled without NRT (``_nrt=False``): see ``engine.rules``.

# --- the account's totals at given prices ------------------------------------------------


# what ``cross_surplus`` subtracts from the cross margin balance, per position
Need = namedtuple("Need", ["INITIAL", "MAINTENANCE", "USED"])(0, 1, 2)
# INITIAL: its initial margin (what the available balance keeps back); MAINTENANCE: its
# maintenance margin (the liquidation trigger); USED: a level times its used margin (spot
# margin's call and opening levels)


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def surplus_term(i, book, prices, requirement, level):
    """Column i's term in ``cross_surplus`` at ``prices``: ``(whether it has one, its
    value)``: a cross position's unrealized PnL less its ``requirement``, a collateral
    holding's discounted value."""
    state, mode, sym = book.state, book.mode, book.sym
    q = state[State.QTY, i]
    if q != 0.0 and mode[i] == Mode.CROSS:
        entry = state[State.ENTRY, i]
        price = prices[i]
        if requirement == Need.INITIAL:
            need = initial_margin(i, q, entry, price, sym)
        elif requirement == Need.MAINTENANCE:
            need = maintenance_margin(i, q, entry, price, sym, book.tiers, book.n_tiers)
        else:
            need = level * used_margin(i, q, entry, price, sym)
        return True, q * (price - entry) - need
    if q > 0.0 and mode[i] == Mode.COLLATERAL:
        # multi-currency margin: the holding's discounted value backs the account
        return True, collateral_value(i, q, prices[i], sym, book.tiers, book.n_tiers)
    return False, 0.0


@inner(error_model='numpy', _nrt=False)
def cross_surplus(book, prices, requirement, level):
    """``MB - sum(requirement_i)`` of the cross account with every column at ``prices``: the
    margin balance (wallet, cross unrealized PnL, the discounted value of collateral
    holdings) less each cross position's initial margin, maintenance margin or ``level`` x
    its used margin (``requirement``: a ``Need``)."""
    total = book.account[Account.WALLET]
    for i in range(book.state.shape[1]):
        added, term = surplus_term(i, book, prices, requirement, level)
        if added:
            total += term
    return total


@inner(error_model='numpy', _nrt=False)
def available_balance(book):
    """Balance free for new orders, ``MB - sum(IM_i, cross)``, at the current marks."""
    return cross_surplus(book, book.state[State.MARK], Need.INITIAL, 0.0)


@inner(error_model='numpy', _nrt=False)
def cross_trigger_value(book, prices):
    """``MB - sum(MM_i)`` of the cross account at ``prices``: liquidation when <= 0."""
    return cross_surplus(book, prices, Need.MAINTENANCE, 0.0)


@inner(error_model='numpy', _nrt=False)
def cross_level_value(book, prices, level):
    """``MB - level * sum(used_i)`` of the cross account at ``prices`` (spot margin): <= 0 when
    the margin level (equity / used margin) is at or below ``level``."""
    return cross_surplus(book, prices, Need.USED, level)


@inner(error_model='numpy', _nrt=False)
def account_equity(book, prices):
    """Equity ``WB + sum(M_i, isolated) + sum(U_i, all)`` with every column at ``prices``."""
    state = book.state
    total = book.account[Account.WALLET]
    for i in range(state.shape[1]):
        total += state[State.ISO_MARGIN, i]
        q = state[State.QTY, i]
        if q != 0.0:
            total += q * (prices[i] - state[State.ENTRY, i])
    return total


@inner(error_model='numpy', _nrt=False)
def margin_level(book, prices):
    """Kraken's margin level ``equity / used margin`` of the cross account (inf: none used)."""
    state, mode, sym = book.state, book.mode, book.sym
    equity = book.account[Account.WALLET]
    used = 0.0
    for i in range(state.shape[1]):
        q = state[State.QTY, i]
        if q != 0.0 and mode[i] == Mode.CROSS:
            entry = state[State.ENTRY, i]
            equity += q * (prices[i] - entry)
            used += used_margin(i, q, entry, prices[i], sym)
    if used <= 0.0:
        return np.inf
    return equity / used


@inner(error_model='numpy', _nrt=False)
def has_cross_position(book):
    state, mode = book.state, book.mode
    for i in range(state.shape[1]):
        if state[State.QTY, i] != 0.0 and mode[i] == Mode.CROSS:
            return True
    return False


@inner(error_model='numpy', _nrt=False)
def cross_at_risk(book):
    """Whether the cross account can be liquidated: it holds a cross position, or it owes a
    loan (a negative quote balance, multi-currency margin) that collateral backs."""
    if book.account[Account.WALLET] >= 0.0:
        return has_cross_position(book)
    state, mode = book.state, book.mode
    for i in range(state.shape[1]):
        if state[State.QTY, i] != 0.0 and (mode[i] == Mode.CROSS or mode[i] == Mode.COLLATERAL):
            return True
    return False


# --- liquidation prices ------------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def refresh_liq_price(i, book):
    """Recompute the cached liquidation price of column i (NaN unless isolated and open)."""
    state = book.state
    q = state[State.QTY, i]
    if q == 0.0 or book.mode[i] != Mode.ISOLATED:
        state[State.LIQ_PX, i] = np.nan
        return
    state[State.LIQ_PX, i] = solve_liquidation_price(i, q, state[State.ENTRY, i],
                                                     state[State.ISO_MARGIN, i],
                                                     book.sym, book.tiers, book.n_tiers)


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def cross_totals(book, mm_row):
    """``(sum(MM_i), sum(U_i))`` of the cross positions at their marks, the discounted value
    of collateral holdings counted with the unrealized PnL (it backs the account alike);
    each cross position's MM is left in ``mm_row[i]`` (unless ``mm_row`` is empty)."""
    state, mode, sym = book.state, book.mode, book.sym
    maint = 0.0
    upnl = 0.0
    for i in range(state.shape[1]):
        q = state[State.QTY, i]
        if q != 0.0 and mode[i] == Mode.CROSS:
            entry = state[State.ENTRY, i]
            notional = abs(q) * state[State.MARK, i]
            if plain_bracket(i, sym) and notional == notional:
                # (Binance's rule: the bracket inline, its tier looked up from the last
                # close's: tiers are contiguous, so it is the one a search from 0 finds)
                k = tier_from(notional, book.tier[i], i, book.tiers, book.n_tiers)
                mm = bracket_maintenance(notional, i, k, book.tiers)
            else:
                mm = maintenance_margin_inlined(i, q, entry, state[State.MARK, i], sym,
                                                book.tiers, book.n_tiers)
            if mm_row.shape[0]:
                mm_row[i] = mm
            maint += mm
            upnl += q * (state[State.MARK, i] - entry)
        elif q > 0.0 and mode[i] == Mode.COLLATERAL:
            upnl += collateral_value(i, q, state[State.MARK, i], sym, book.tiers, book.n_tiers)
    return maint, upnl


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def liquidation_price_given(i, own_mm, total_mm, total_upnl, book):
    """Column i's liquidation price with every other position frozen at its mark, given its
    own maintenance margin and the cross totals of the whole account (``cross_totals``).

    Isolated: the cached price. Cross: the venue's formula with collateral ``WB - TMM1 +
    UPNL1``, the others' MM and unrealized PnL (Binance's §2.5); the two legs of a
    hedge-mode symbol move together and share one price. NaN for a flat column or a
    spot or collateral holding (never liquidated).
    """
    state, mode, sym = book.state, book.mode, book.sym
    q = state[State.QTY, i]
    if q == 0.0 or mode[i] >= Mode.SPOT:
        return np.nan
    if mode[i] == Mode.ISOLATED:
        return state[State.LIQ_PX, i]
    entry = state[State.ENTRY, i]
    own_u = q * (state[State.MARK, i] - entry)
    partner = int(sym[Sym.PARTNER, i])
    if partner >= 0 and mode[partner] == Mode.CROSS and state[State.QTY, partner] != 0.0:
        qp = state[State.QTY, partner]
        ep = state[State.ENTRY, partner]
        own_mm += maintenance_margin(partner, qp, ep, state[State.MARK, partner], sym, book.tiers,
                                     book.n_tiers)
        own_u += qp * (state[State.MARK, partner] - ep)
        collateral = book.account[Account.WALLET] - (total_mm - own_mm) + (total_upnl - own_u)
        return legs_liquidation_price(i, partner, collateral, book)
    collateral = book.account[Account.WALLET] - (total_mm - own_mm) + (total_upnl - own_u)
    return solve_liquidation_price(i, q, entry, collateral, sym, book.tiers, book.n_tiers)


@inner(error_model='numpy', _nrt=False)
def position_liquidation_price(i, book):
    """Mark price at which column i's position is liquidated, everything else fixed."""
    total_mm, total_upnl = cross_totals(book, book.account[:0])  # the totals alone
    state = book.state
    q = state[State.QTY, i]
    own_mm = 0.0
    if q != 0.0 and book.mode[i] == Mode.CROSS:
        own_mm = maintenance_margin(i, q, state[State.ENTRY, i], state[State.MARK, i], book.sym,
                                    book.tiers, book.n_tiers)
    return liquidation_price_given(i, own_mm, total_mm, total_upnl, book)


@inner(error_model='numpy', _nrt=False)
def legs_trigger_value(i, j, collateral, price, book):
    """``C + sum(U - MM)`` of the two legs i, j of one hedge-mode symbol at one mark ``price``."""
    state = book.state
    total = collateral
    for leg in (i, j):
        q = state[State.QTY, leg]
        if q != 0.0:
            entry = state[State.ENTRY, leg]
            total += q * (price - entry) - maintenance_margin(leg, q, entry, price, book.sym,
                                                             book.tiers, book.n_tiers)
    return total


@inner(error_model='numpy', _nrt=False)
def legs_liquidation_price(i, j, collateral, book):
    """The shared liquidation price of the two cross legs i, j of one hedge-mode symbol.

    Binance's §2.5 formula with both legs: the root of ``C + QL*(P - EL) - QS*(P -
    ES) - MM_L(P) - MM_S(P)``. That function is concave in P but not monotone when the
    legs nearly offset, so it may have a root below the mark and one above: the one
    nearer the mark is where the account goes first. NaN when neither exists.
    """
    mark = book.state[State.MARK, i]
    if not mark > 0.0:
        return np.nan
    if legs_trigger_value(i, j, collateral, mark, book) <= 0.0:
        return mark
    best = np.nan
    # below the mark: a root exists when the trigger holds near a price of zero
    low = mark * 1e-9
    if legs_trigger_value(i, j, collateral, low, book) <= 0.0:
        best = legs_root(i, j, collateral, mark, low, book)
    # above the mark: double until the trigger holds (or give up far away)
    high = mark * 2.0
    while high < mark * 1e6 and legs_trigger_value(i, j, collateral, high, book) > 0.0:
        high *= 2.0
    if high < mark * 1e6:
        safe = high * 0.5 if high > mark * 2.0 else mark
        above = legs_root(i, j, collateral, safe, high, book)
        if best != best or above - mark < mark - best:
            best = above
    return best


@inner(error_model='numpy', _nrt=False)
def legs_root(i, j, collateral, safe, unsafe, book):
    """Bisect between a mark where the legs i, j are safe and one where they are liquidated;
    returns the first liquidated mark, to machine precision."""
    for _ in range(200):
        mid = 0.5 * (safe + unsafe)
        if mid == safe or mid == unsafe:
            break
        if legs_trigger_value(i, j, collateral, mid, book) <= 0.0:
            unsafe = mid
        else:
            safe = mid
    return unsafe


# --- changes -----------------------------------------------------------------------------


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def reduce_position(i, close_qty, price, fee_rate, book):
    """Close ``close_qty`` (opposite sign to the position) at ``price``; returns (realized, fee).

    Realized PnL and the released share of an isolated margin (or of a spot
    holding's cost) go to the wallet; the fee (``fee_rate`` of the closed
    notional) is paid from it.
    """
    state, account = book.state, book.account
    q = state[State.QTY, i]
    realized = -close_qty * (price - state[State.ENTRY, i])
    fee = abs(close_qty) * price * fee_rate
    if book.mode[i] != Mode.CROSS:
        released = state[State.ISO_MARGIN, i] * abs(close_qty) / abs(q)
        state[State.ISO_MARGIN, i] -= released
        account[Account.WALLET] += released
    account[Account.WALLET] += realized - fee
    q += close_qty
    if abs(q) <= 1e-12 * abs(close_qty):
        q = 0.0
    state[State.QTY, i] = q
    if q == 0.0:
        state[State.ENTRY, i] = 0.0
        # rounding dust of the released margin goes back to the wallet
        account[Account.WALLET] += state[State.ISO_MARGIN, i]
        state[State.ISO_MARGIN, i] = 0.0
    return realized, fee


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def increase_position(i, open_qty, price, fee_rate, book):
    """Open or add ``open_qty`` (same sign as the position, or from flat) at ``price``.

    The entry price becomes the volume-weighted average. An isolated position
    moves its cost from the wallet into its own margin: its initial margin
    (``rules.isolated_margin_to_open``) and its open loss (a fill worse than the mark:
    the order's cost counted it, VENUES.md §2.2, so the position starts at its leverage
    against the mark, not already past its bankruptcy price); a spot holding, at
    leverage 1, moves its whole cost. Returns the fee paid.
    """
    state, account = book.state, book.account
    fee = abs(open_qty) * price * fee_rate
    old = abs(state[State.QTY, i])
    add = abs(open_qty)
    state[State.ENTRY, i] = (old * state[State.ENTRY, i] + add * price) / (old + add)
    state[State.QTY, i] += open_qty
    if book.mode[i] != Mode.CROSS:
        im = isolated_margin_to_open(i, open_qty, price, book.sym)
        mark = state[State.MARK, i]
        if book.mode[i] == Mode.ISOLATED and mark == mark:
            im += max(open_qty * (price - mark), 0.0)  # the open loss
        state[State.ISO_MARGIN, i] += im
        account[Account.WALLET] -= im
    account[Account.WALLET] -= fee
    return fee


@inner(error_model='numpy', _nrt=False)
def pay_isolated_funding(i, payment, book):
    """An isolated position's funding ``payment`` (> 0: it pays; cross positions pay from the
    wallet, in the bar loop), split between the wallet and its own margin by the venue's
    rule (``rules.isolated_funding_split``); the liquidation price is recomputed."""
    # (the available balance, a pass over every column, only where the venue's rule reads it)
    available = available_balance(book) if funding_from_available(i, book.sym) else 0.0
    from_wallet = isolated_funding_split(i, payment, available, book.sym)
    book.account[Account.WALLET] -= from_wallet
    state = book.state
    state[State.ISO_MARGIN, i] -= payment - from_wallet
    # the margin moved: so did the liquidation price (``refresh_liq_price`` of an open
    # isolated position, without a call that passes the whole book)
    state[State.LIQ_PX, i] = solve_liquidation_price(i, state[State.QTY, i],
                                                     state[State.ENTRY, i],
                                                     state[State.ISO_MARGIN, i], book.sym,
                                                     book.tiers, book.n_tiers)


@inner(error_model='numpy', _nrt=False)
def removable_margin(i, book):
    """Isolated margin that position i can give back: what exceeds its initial margin at
    the mark, counting an unrealized loss but not a profit (Binance's rule for margin
    removal: the position keeps ``|q| * mark / lev`` plus its loss)."""
    state = book.state
    q = state[State.QTY, i]
    mark = state[State.MARK, i]
    upnl = q * (mark - state[State.ENTRY, i])
    free = state[State.ISO_MARGIN, i] + min(upnl, 0.0) - abs(q) * mark / book.sym[Sym.LEVERAGE, i]
    return max(free, 0.0)


@inner(error_model='numpy', _nrt=False)
def switch_account_mode(new_mode, book):
    """Set every margined (cross or isolated) column's mode to ``new_mode``, on a venue whose
    margin mode is the account's (``rules.account_wide_mode``); refused (returns False)
    while any of them holds a position. Spot and collateral holdings keep their kind."""
    state, mode = book.state, book.mode
    n = state.shape[1]
    for i in range(n):
        if state[State.QTY, i] != 0.0 and mode[i] < Mode.SPOT:
            return False
    for i in range(n):
        if mode[i] < Mode.SPOT:
            mode[i] = int(new_mode)
            state[State.LIQ_PX, i] = np.nan
    return True


# --- a new account -----------------------------------------------------------------------


@njit(cache=True, error_model='numpy')
def open_account(initial_balance, mode, sym, versions, holdings, mark_open):
    """A flat account holding ``initial_balance`` under the first version of the venue's rules;
    returns ``(book, initial equity)``.

    ``mode`` (N,) and ``sym`` (N_SYMBOL_FIELDS, N) are the run's own (a callback may
    change them). ``holdings`` (N,): coins held at the start in the ``Mode.COLLATERAL``
    columns (multi-currency margin), each valued from its first mark and deposited on
    top of the balance (the initial equity counts them); a column without a mark
    cannot be valued (the caller checks).
    """
    n = mode.shape[0]
    state = np.zeros((N_STATE, n))
    for i in range(n):
        state[State.LIQ_PX, i] = np.nan
        state[State.MARK, i] = np.nan
        state[State.LAST_CLOSE, i] = np.nan
    account = np.zeros(N_ACCOUNT)
    account[Account.WALLET] = initial_balance
    account[Account.EQUITY_PREV] = initial_balance
    account[Account.AVAIL_EST] = np.nan  # (no running estimates: orders.start_estimates)
    account[Account.BALANCE_EST] = np.nan
    book = Book(state, np.zeros(n, dtype=np.int64), account, mode, sym,
                versions.tiers[0].copy(), versions.n_tiers[0].copy(), versions.rules[0].copy())
    equity = initial_balance
    for i in range(n):
        amount = holdings[i]
        if amount > 0.0 and mode[i] == Mode.COLLATERAL:
            first = np.nan
            for t in range(mark_open.shape[0]):
                if mark_open[t, i] == mark_open[t, i]:
                    first = mark_open[t, i]
                    break
            state[State.QTY, i] = amount
            state[State.ENTRY, i] = first
            state[State.ISO_MARGIN, i] = amount * first
            state[State.MARK, i] = first
            account[Account.EQUITY_PREV] += amount * first
            equity += amount * first
    return book, equity

