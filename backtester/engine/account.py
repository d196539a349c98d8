"""The account's rules, one compiled function each: valuation, fills, funding.

State lives in the arrays laid out in ``enums`` (``state`` (N_STATE, N),
``account`` (N_ACCOUNT,), ``tiers`` (N_TIER_FIELDS, N, K), ``sym``
(N_SYMBOL_FIELDS, N)); every function takes them and the symbol index ``i``.
The definitions are DESIGN.md §3's:

- unrealized PnL ``U_i = q_i * (P - E_i)``; initial margin ``|q_i| * E_i / lev_i``
- cross margin balance ``MB = WB + sum(U_i, cross)``
- available balance ``MB - sum(IM_i, cross)``
- equity ``WB + sum(M_i, isolated) + sum(U_i, all)``

A spot holding (mode ``SPOT``) is kept like an isolated position at 1x: its cost
``q * E`` sits in ``S_ISO_MARGIN`` (so equity is ``WB + q * P`` for it), it is
left out of every cross sum and of the liquidation checks, and it pays no funding.

The venue's margin model enters through the symbol's rule rows of ``sym``
(``enums.SYM_MM_RULE``, ``SYM_FEE_RULE``...): which size picks the tier
(``tier_key``), how maintenance margin is valued (``maintenance_at``), which fee
the venue counts inside the margin (``fee_in_margin``). For a fixed tier every
model's MM is affine in the mark, ``a + b * P``, so a liquidation price has a
closed form; only the bracket rule (tier at the price itself) needs Binance's
bracket search.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .enums import (
    A_WALLET,
    COLLATERAL,
    CROSS,
    FEE_IN_MARGIN_LIQUIDATION,
    FEE_IN_MARGIN_TO_CLOSE,
    FUNDING_FROM_AVAILABLE,
    ISOLATED,
    MM_AT_ENTRY,
    MM_BRACKET,
    MM_BY_SIZE,
    MM_MARGIN_LEVEL,
    S_ENTRY,
    S_ISO_MARGIN,
    S_LIQ_PX,
    S_MARK,
    S_QTY,
    SPOT,
    SYM_DISCOUNT_IN_COIN,
    SYM_FEE_RULE,
    SYM_FUNDING_RULE,
    SYM_LEVERAGE,
    SYM_LIQ_FEE,
    SYM_LIQ_LEVEL,
    SYM_MM_RULE,
    SYM_PARTNER,
    SYM_TAKER_FEE,
    TIER_CAP,
    TIER_CUM,
    TIER_FLOOR,
    TIER_MMR,
)
from .margin import liquidation_price_plus

# Compiled without NRT (``_nrt=False``): these functions allocate nothing, and
# without NRT numba does not reference-count the arrays they receive. That count
# is atomic and costs ~75 ns per call, more than most of these functions' work.


@njit(cache=True, _nrt=False, inline='always')
def tier_at(key, i, tiers, n_tiers):
    """Tier of symbol i that holds ``key`` (floor < key <= cap; the last tier above it)."""
    k = 0
    n = n_tiers[i]
    while k < n - 1 and key > tiers[TIER_CAP, i, k]:
        k += 1
    return k


@njit(cache=True, _nrt=False, inline='always')
def tier_key(i, qty, entry, price, sym):
    """The size that picks symbol i's tier: the notional at ``price`` (bracket rule, margin
    level), the entry value (MM on the entry value) or the size itself (OKX tiers)."""
    rule = sym[SYM_MM_RULE, i]
    if rule == MM_BY_SIZE:
        return abs(qty)
    if rule == MM_AT_ENTRY:
        return abs(qty) * entry
    return abs(qty) * price


@njit(cache=True, _nrt=False, inline='always')
def fee_in_margin(i, qty, entry, price, sym):
    """The fee the venue counts inside the margin of a position (0 for most venues).

    Bybit (since 2025-09-02): the taker fee to close at the bankruptcy price,
    ``Q*EP*(1 - s/L)*taker`` (VENUES.md §3.3). OKX: the liquidation fee on the
    notional at mark, ``Q*P*fee`` (trigger ``equity <= MM + liquidation fee``, §4.2).
    """
    rule = sym[SYM_FEE_RULE, i]
    if rule == FEE_IN_MARGIN_TO_CLOSE:
        side = 1.0 if qty > 0.0 else -1.0
        return abs(qty) * entry * (1.0 - side / sym[SYM_LEVERAGE, i]) * sym[SYM_TAKER_FEE, i]
    if rule == FEE_IN_MARGIN_LIQUIDATION:
        return abs(qty) * price * sym[SYM_LIQ_FEE, i]
    return 0.0


@njit(cache=True, _nrt=False, inline='always')
def used_margin(i, qty, entry, price, sym):
    """Kraken's used margin: a long's cost over its leverage (fixed), a short's borrowed
    base over its leverage, revalued at ``price`` (VENUES.md §5.1)."""
    if qty > 0.0:
        return qty * entry / sym[SYM_LEVERAGE, i]
    return -qty * price / sym[SYM_LEVERAGE, i]


@njit(cache=True, _nrt=False, inline='always')
def maintenance_at(i, qty, entry, price, k, sym, tiers):
    """Maintenance margin of symbol i's position ``(qty, entry)`` at mark ``price``, in tier k
    (the tier of ``tier_key``), the fee the venue counts in the margin included."""
    rule = sym[SYM_MM_RULE, i]
    if rule == MM_AT_ENTRY:
        mm = abs(qty) * entry * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]
    elif rule == MM_MARGIN_LEVEL:
        mm = sym[SYM_LIQ_LEVEL, i] * used_margin(i, qty, entry, price, sym)
    else:
        mm = abs(qty) * price * tiers[TIER_MMR, i, k] - tiers[TIER_CUM, i, k]
    if sym[SYM_FEE_RULE, i] != 0.0:
        mm += fee_in_margin(i, qty, entry, price, sym)
    return mm


@njit(cache=True, _nrt=False, inline='always')
def position_maintenance(i, qty, entry, price, sym, tiers, n_tiers):
    """Maintenance margin of symbol i's position ``(qty, entry)`` at mark ``price``."""
    k = tier_at(tier_key(i, qty, entry, price, sym), i, tiers, n_tiers)
    return maintenance_at(i, qty, entry, price, k, sym, tiers)


@njit(cache=True, _nrt=False, inline='always')
def initial_margin_of(i, qty, entry, price, sym):
    """Initial margin a position locks: ``|q| * EP / L`` (a Kraken short: at ``price``),
    plus Bybit's fee to close where the venue counts it in the margin."""
    if sym[SYM_MM_RULE, i] == MM_MARGIN_LEVEL:
        im = used_margin(i, qty, entry, price, sym)
    else:
        im = abs(qty) * entry / sym[SYM_LEVERAGE, i]
    if sym[SYM_FEE_RULE, i] == FEE_IN_MARGIN_TO_CLOSE:
        im += fee_in_margin(i, qty, entry, price, sym)
    return im


@njit(cache=True, _nrt=False)
def collateral_value(i, qty, price, sym, tiers, n_tiers):
    """Discounted value of a collateral holding of ``qty`` coins at ``price`` (OKX §4.5): the
    slice of the holding in each discount tier counts at that tier's rate (a tax-bracket
    sum, concave in the holding), the bounds in USD or in coins."""
    in_coin = sym[SYM_DISCOUNT_IN_COIN, i] != 0.0
    amount = qty if in_coin else qty * price
    total = 0.0
    for k in range(n_tiers[i]):
        floor = tiers[TIER_FLOOR, i, k]
        if amount <= floor:
            break
        top = min(amount, tiers[TIER_CAP, i, k])
        total += (top - floor) * tiers[TIER_MMR, i, k]
    return total * price if in_coin else total


@njit(cache=True, _nrt=False)
def available_balance(state, mode, sym, tiers, n_tiers, account):
    """Balance free for new orders, ``MB - sum(IM_i, cross)``, at the current marks (MB with
    the discounted value of collateral holdings, under multi-currency margin)."""
    total = account[A_WALLET]
    for i in range(state.shape[1]):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            entry = state[S_ENTRY, i]
            mark = state[S_MARK, i]
            total += q * (mark - entry) - initial_margin_of(i, q, entry, mark, sym)
        elif q > 0.0 and mode[i] == COLLATERAL:
            # multi-currency margin: the holding's discounted value backs new orders
            total += collateral_value(i, q, state[S_MARK, i], sym, tiers, n_tiers)
    return total


@njit(cache=True, _nrt=False)
def account_equity(state, account, prices):
    """Equity ``WB + sum(M_i, isolated) + sum(U_i, all)`` with every symbol at ``prices``."""
    total = account[A_WALLET]
    for i in range(state.shape[1]):
        total += state[S_ISO_MARGIN, i]
        q = state[S_QTY, i]
        if q != 0.0:
            total += q * (prices[i] - state[S_ENTRY, i])
    return total


@njit(cache=True, _nrt=False)
def cross_trigger_value(state, mode, sym, tiers, n_tiers, account, prices):
    """``MB - sum(MM_i)`` of the cross account at ``prices``: liquidation when <= 0."""
    total = account[A_WALLET]
    for i in range(state.shape[1]):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            entry = state[S_ENTRY, i]
            total += q * (prices[i] - entry) - position_maintenance(
                i, q, entry, prices[i], sym, tiers, n_tiers)
        elif q > 0.0 and mode[i] == COLLATERAL:
            total += collateral_value(i, q, prices[i], sym, tiers, n_tiers)
    return total


@njit(cache=True, _nrt=False)
def cross_level_value(state, mode, sym, account, prices, level_row):
    """``MB - sum(level_i * used_i)`` of the cross account at ``prices``, the levels from
    ``sym[level_row]`` (Kraken's call or opening level): <= 0 when below that level."""
    total = account[A_WALLET]
    for i in range(state.shape[1]):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            entry = state[S_ENTRY, i]
            total += q * (prices[i] - entry) - sym[level_row, i] * used_margin(
                i, q, entry, prices[i], sym)
    return total


@njit(cache=True, _nrt=False)
def margin_level(state, mode, sym, account, prices):
    """Kraken's margin level ``equity / used margin`` of the cross account (inf: none used)."""
    equity = account[A_WALLET]
    used = 0.0
    for i in range(state.shape[1]):
        q = state[S_QTY, i]
        if q != 0.0 and mode[i] == CROSS:
            entry = state[S_ENTRY, i]
            equity += q * (prices[i] - entry)
            used += used_margin(i, q, entry, prices[i], sym)
    if used <= 0.0:
        return np.inf
    return equity / used


@njit(cache=True, _nrt=False)
def has_cross_position(state, mode):
    for i in range(state.shape[1]):
        if state[S_QTY, i] != 0.0 and mode[i] == CROSS:
            return True
    return False


@njit(cache=True, _nrt=False, inline='always')
def solve_liquidation_price(i, qty, entry, collateral, sym, tiers, n_tiers):
    """Mark at which ``collateral + qty * (P - entry) == MM_i(P)``, the venue's model applied.

    Bracket rule: Binance's formula with the tier at the liquidation price
    (``margin.liquidation_price``), a fee counted in the margin taken from the
    collateral (Bybit's fee to close, fixed) or added to the rate (OKX's fee at mark).
    Other rules fix the tier between fills, so MM is ``a + b * P`` and
    ``P = (a - C + s*Q*EP) / (s*Q - b)``: Bybit's classic ``EP -+ (M - MM)/Q``,
    OKX's ``(EP - M/Q) / (1 - mmr - fee)``, Kraken's margin-level price.
    """
    if qty == 0.0:
        return np.nan
    rule = sym[SYM_MM_RULE, i]
    fee_rule = sym[SYM_FEE_RULE, i]
    if rule == MM_BRACKET:
        extra = 0.0
        if fee_rule == FEE_IN_MARGIN_TO_CLOSE:
            collateral -= fee_in_margin(i, qty, entry, 0.0, sym)
        elif fee_rule == FEE_IN_MARGIN_LIQUIDATION:
            extra = sym[SYM_LIQ_FEE, i]
        return liquidation_price_plus(qty, entry, collateral, tiers[TIER_FLOOR, i],
                                      tiers[TIER_CAP, i], tiers[TIER_MMR, i], tiers[TIER_CUM, i],
                                      n_tiers[i], extra)
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    # MM(P) = a + b * P with the tier fixed: MM(0) and the slope from two evaluations
    k = tier_at(tier_key(i, qty, entry, 1.0, sym), i, tiers, n_tiers)
    a = maintenance_at(i, qty, entry, 0.0, k, sym, tiers)
    b = maintenance_at(i, qty, entry, 1.0, k, sym, tiers) - a
    return (a - collateral + side * q * entry) / (side * q - b)


@njit(cache=True, _nrt=False)
def refresh_liq_price(i, state, mode, sym, tiers, n_tiers):
    """Recompute the cached liquidation price of symbol i (NaN unless isolated and open)."""
    q = state[S_QTY, i]
    if q == 0.0 or mode[i] != ISOLATED:
        state[S_LIQ_PX, i] = np.nan
        return
    state[S_LIQ_PX, i] = solve_liquidation_price(i, q, state[S_ENTRY, i], state[S_ISO_MARGIN, i],
                                                 sym, tiers, n_tiers)


@njit(cache=True, _nrt=False)
def pay_isolated_funding(i, payment, state, mode, sym, tiers, n_tiers, account):
    """An isolated position's funding ``payment`` (> 0: it pays; cross positions pay from the
    wallet, in the bar loop). From its own margin, which moves its liquidation price
    (DESIGN.md §4), except on venues that take it from the available balance first (Bybit,
    ``pay_from_available``)."""
    if sym[SYM_FUNDING_RULE, i] == FUNDING_FROM_AVAILABLE:
        pay_from_available(i, payment, state, mode, sym, tiers, n_tiers, account)
    else:
        state[S_ISO_MARGIN, i] -= payment


@njit(cache=True, _nrt=False)
def pay_from_available(i, payment, state, mode, sym, tiers, n_tiers, account):
    """Bybit: an isolated position's funding comes from the available balance; the position
    margin pays only what the balance cannot, and funding received goes to the balance."""
    free = max(available_balance(state, mode, sym, tiers, n_tiers, account), 0.0)
    from_wallet = payment if payment <= free else free
    account[A_WALLET] -= from_wallet
    state[S_ISO_MARGIN, i] -= payment - from_wallet


@njit(cache=True, _nrt=False)
def reduce_position(i, close_qty, price, fee_rate, state, mode, account):
    """Close ``close_qty`` (opposite sign to the position) at ``price``; returns (realized, fee).

    Realized PnL and the released share of an isolated margin (or of a spot
    holding's cost) go to the wallet; the fee (``fee_rate`` of the closed
    notional) is paid from it.
    """
    q = state[S_QTY, i]
    realized = -close_qty * (price - state[S_ENTRY, i])
    fee = abs(close_qty) * price * fee_rate
    if mode[i] != CROSS:
        released = state[S_ISO_MARGIN, i] * abs(close_qty) / abs(q)
        state[S_ISO_MARGIN, i] -= released
        account[A_WALLET] += released
    account[A_WALLET] += realized - fee
    q += close_qty
    if abs(q) <= 1e-12 * abs(close_qty):
        q = 0.0
    state[S_QTY, i] = q
    if q == 0.0:
        state[S_ENTRY, i] = 0.0
        # rounding dust of the released margin goes back to the wallet
        account[A_WALLET] += state[S_ISO_MARGIN, i]
        state[S_ISO_MARGIN, i] = 0.0
    return realized, fee


@njit(cache=True, _nrt=False)
def increase_position(i, open_qty, price, fee_rate, state, mode, sym, account):
    """Open or add ``open_qty`` (same sign as the position, or from flat) at ``price``.

    The entry price becomes the volume-weighted average. An isolated position
    moves its initial margin from the wallet into its own margin: ``|dq| * price
    / lev``, plus the fee to close where the venue counts it in the margin (Bybit
    since 2025-09-02); a spot holding, at leverage 1, moves its whole cost.
    Returns the fee paid.
    """
    fee = abs(open_qty) * price * fee_rate
    old = abs(state[S_QTY, i])
    add = abs(open_qty)
    state[S_ENTRY, i] = (old * state[S_ENTRY, i] + add * price) / (old + add)
    state[S_QTY, i] += open_qty
    if mode[i] != CROSS:
        im = add * price / sym[SYM_LEVERAGE, i]
        if mode[i] == ISOLATED and sym[SYM_FEE_RULE, i] == FEE_IN_MARGIN_TO_CLOSE:
            im += fee_in_margin(i, open_qty, price, price, sym)
        state[S_ISO_MARGIN, i] += im
        account[A_WALLET] -= im
    account[A_WALLET] -= fee
    return fee


@njit(cache=True, _nrt=False)
def removable_margin(i, state, sym):
    """Isolated margin that position i can give back: what exceeds its initial margin at
    the mark, counting an unrealized loss but not a profit (Binance's rule for margin
    removal: the position keeps ``|q| * mark / lev`` plus its loss)."""
    q = state[S_QTY, i]
    mark = state[S_MARK, i]
    upnl = q * (mark - state[S_ENTRY, i])
    free = state[S_ISO_MARGIN, i] + min(upnl, 0.0) - abs(q) * mark / sym[SYM_LEVERAGE, i]
    return max(free, 0.0)


@njit(cache=True, _nrt=False)
def legs_trigger_value(i, j, collateral, price, state, sym, tiers, n_tiers):
    """``C + sum(U - MM)`` of the two legs i, j of one hedge-mode symbol at one mark ``price``."""
    total = collateral
    for leg in (i, j):
        q = state[S_QTY, leg]
        if q != 0.0:
            entry = state[S_ENTRY, leg]
            total += q * (price - entry) - position_maintenance(leg, q, entry, price, sym, tiers,
                                                                n_tiers)
    return total


@njit(cache=True, _nrt=False)
def legs_liquidation_price(i, j, collateral, state, sym, tiers, n_tiers):
    """The shared liquidation price of the two cross legs i, j of one hedge-mode symbol.

    Binance's §2.5 formula with both legs: the root of ``C + QL*(P - EL) - QS*(P -
    ES) - MM_L(P) - MM_S(P)``. That function is concave in P but not monotone when the
    legs nearly offset, so it may have a root below the mark and one above: the one
    nearer the mark is where the account goes first. NaN when neither exists.
    """
    mark = state[S_MARK, i]
    if not mark > 0.0:
        return np.nan
    if legs_trigger_value(i, j, collateral, mark, state, sym, tiers, n_tiers) <= 0.0:
        return mark
    best = np.nan
    # below the mark: a root exists when the trigger holds near a price of zero
    low = mark * 1e-9
    if legs_trigger_value(i, j, collateral, low, state, sym, tiers, n_tiers) <= 0.0:
        best = legs_root(i, j, collateral, mark, low, state, sym, tiers, n_tiers)
    # above the mark: double until the trigger holds (or give up far away)
    high = mark * 2.0
    while high < mark * 1e6 and legs_trigger_value(i, j, collateral, high, state, sym, tiers,
                                                   n_tiers) > 0.0:
        high *= 2.0
    if high < mark * 1e6:
        safe = high * 0.5 if high > mark * 2.0 else mark
        above = legs_root(i, j, collateral, safe, high, state, sym, tiers, n_tiers)
        if best != best or above - mark < mark - best:
            best = above
    return best


@njit(cache=True, _nrt=False)
def legs_root(i, j, collateral, safe, unsafe, state, sym, tiers, n_tiers):
    """Bisect between a mark where the legs i, j are safe and one where they are liquidated;
    returns the first liquidated mark, to machine precision."""
    for _ in range(200):
        mid = 0.5 * (safe + unsafe)
        if mid == safe or mid == unsafe:
            break
        if legs_trigger_value(i, j, collateral, mid, state, sym, tiers, n_tiers) <= 0.0:
            unsafe = mid
        else:
            safe = mid
    return unsafe


@njit(cache=True, _nrt=False)
def position_liquidation_price(i, state, mode, sym, tiers, n_tiers, account):
    """Mark price at which symbol i's position is liquidated, everything else fixed.

    Isolated: the cached price. Cross: the venue's formula with the other cross
    positions frozen at their marks (collateral ``WB - TMM1 + UPNL1``); the two legs
    of a hedge-mode symbol move together and share one price. NaN for a flat
    symbol or a spot holding (never liquidated).
    """
    q = state[S_QTY, i]
    if q == 0.0 or mode[i] >= SPOT:
        return np.nan
    if mode[i] == ISOLATED:
        return state[S_LIQ_PX, i]
    partner = int(sym[SYM_PARTNER, i])
    if partner >= 0 and (mode[partner] != CROSS or state[S_QTY, partner] == 0.0):
        partner = -1
    others_mm = 0.0
    others_upnl = 0.0
    for j in range(state.shape[1]):
        qj = state[S_QTY, j]
        if j != i and j != partner and qj != 0.0 and mode[j] == CROSS:
            mark = state[S_MARK, j]
            entry = state[S_ENTRY, j]
            others_mm += position_maintenance(j, qj, entry, mark, sym, tiers, n_tiers)
            others_upnl += qj * (mark - entry)
        elif qj > 0.0 and mode[j] == COLLATERAL:  # multi-currency margin, at its discount
            others_upnl += collateral_value(j, qj, state[S_MARK, j], sym, tiers, n_tiers)
    collateral = account[A_WALLET] - others_mm + others_upnl
    if partner >= 0:
        return legs_liquidation_price(i, partner, collateral, state, sym, tiers, n_tiers)
    return solve_liquidation_price(i, q, state[S_ENTRY, i], collateral, sym, tiers, n_tiers)
