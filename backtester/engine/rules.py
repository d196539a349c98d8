"""The margin rules of one position, each written once (DESIGN.md §3, §7a).

Every function here values one position of column ``i`` from the rule rows of
``sym`` (``enums.Sym.*``) and the tier table in ``tiers[:, i]``; each rule row has
one dispatch point, in this module:

- ``Sym.MM_RULE``: which size picks the tier (``tier_key``) and how maintenance
  margin is valued in it (``maintenance_in_tier``): bracket ``N*mmr - cum`` at the
  mark (Binance, Bybit since 2025-09-02), the same on the entry value (Bybit
  classic), the whole position at its size tier's rate (OKX), or the liquidation
  level times the used margin (Kraken spot margin);
- ``Sym.FEE_RULE``: a fee the venue counts inside the margin (``fee_in_margin``);
- ``Sym.ORDER_COST``: what opening needs from the available balance
  (``order_cost_rate``);
- ``Sym.PARTIAL``: the size a triggered position is cut to (``partial_target``);
- ``Sym.SETTLEMENT``: where a liquidated isolated position closes
  (``isolated_settlement``);
- ``Sym.FUNDING_RULE``: who pays an isolated position's funding (``isolated_funding_split``);
- the account rule ``R_CROSS_CLOSE``: in which order a triggered cross account closes
  its positions, where each closes, and when the account is done
  (``cross_close_next``, ``cross_settlement``, ``cross_close_done``);
- the account rule ``ACCOUNT_MARGIN_MODE``: whether a margin-mode switch is the
  account's (``account_wide_mode``);
- collateral (``collateral_value``) and the liquidation price (``solve_liquidation_price``).

For a fixed tier every model's MM is affine in the mark, ``a + b * P``, so a
liquidation price has a closed form; only the bracket rule (tier at the price
itself) needs Binance's bracket search (``bracket_liquidation_price``).

All compiled without NRT (``_nrt=False``): they allocate nothing, and numba then
does not reference-count the arrays they receive (an atomic count costs ~75 ns a
call, more than most of these functions' work). The ones called per position on
every bar (the tier lookup, the maintenance margin in a tier, the liquidation price
the kernel records and its solvers) are inlined by numba (``inline='always'``): called,
a kernel compiled over callees from numba's on-disk cache recorded liquidation prices
two thirds slower (75 against 45 ms for 200,000 bars of six symbols), and isolated runs
were 15% slower, a call passing every field of every array argument. The others,
``maintenance_margin`` itself included (fourteen call sites, most on rare paths), are
called: each inlined function is re-typed and lowered again at every call site, and
inlining them cost a first run 6 of its 24 CPU-seconds of compiling. Those called only
by compiled code are compiled without numba's Python wrappers (``engine.jit.inner``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .enums import (
    MM,
    NO_COLUMN,
    ZERO,
    AccountRule,
    CrossClose,
    FeeInMargin,
    FundingFrom,
    Mode,
    OrderCost,
    Partial,
    Settle,
    State,
    Sym,
    TierField,
)
from .jit import inlined, inner

# --- tiers ----------------------------------------------------------------------------------


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def tier_from(key, k, i, tiers, n_tiers):
    """Tier of column i that holds ``key`` (``floor < key <= cap``; the last tier above it),
    looked up from a guess ``k`` (the tier the position was in: O(1) when unchanged)."""
    n = n_tiers[i]
    while k < n - 1 and key > tiers[TierField.CAP, i, k]:
        k += 1
    while k > 0 and key <= tiers[TierField.FLOOR, i, k]:
        k -= 1
    return k


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def tier_key(i, qty, entry, price, sym):
    """The size that picks column i's tier: the notional at ``price`` (bracket rule, margin
    level), the entry value (MM on the entry value) or the size itself (OKX tiers)."""
    rule = sym[Sym.MM_RULE, i]
    if rule == MM.BY_SIZE:
        return abs(qty)
    if rule == MM.AT_ENTRY:
        return abs(qty) * entry
    return abs(qty) * price


@inner(error_model='numpy', _nrt=False)
def plain_bracket(i, sym):
    """Whether column i's maintenance margin is the bracket at the mark and nothing else
    (Binance's rule): the kernel's bound pass then needs no dispatch for it."""
    return sym[Sym.MM_RULE, i] == MM.BRACKET and sym[Sym.FEE_RULE, i] == FeeInMargin.NONE


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def bracket_maintenance(notional, i, k, tiers):
    """Binance's tax-bracket maintenance margin ``N * mmr_k - cum_k`` of a notional in tier k
    (VENUES.md §2.3): continuous and convex in N."""
    return notional * tiers[TierField.MMR, i, k] - tiers[TierField.CUM, i, k]


# --- margins --------------------------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def fee_to_close(i, qty, entry, sym):
    """Bybit's taker fee to close a position at its bankruptcy price, ``Q*EP*(1 - s/L)*taker``
    (VENUES.md §3.3, §3.7): reserved in the margin since 2025-09-02, and in every era part
    of what an opening order costs."""
    side = 1.0 if qty > 0.0 else -1.0
    return abs(qty) * entry * (1.0 - side / sym[Sym.LEVERAGE, i]) * sym[Sym.TAKER_FEE, i]


@inner(error_model='numpy', _nrt=False)
def fee_in_margin(i, qty, entry, price, sym):
    """The fee the venue counts inside the margin of a position (0 for most venues).

    Bybit (since 2025-09-02): the taker fee to close at the bankruptcy price
    (``fee_to_close``). OKX: the liquidation fee on the notional at mark, ``Q*P*fee``
    (trigger ``equity <= MM + liquidation fee``, §4.2).
    """
    rule = sym[Sym.FEE_RULE, i]
    if rule == FeeInMargin.TO_CLOSE:
        return fee_to_close(i, qty, entry, sym)
    if rule == FeeInMargin.LIQUIDATION:
        return abs(qty) * price * sym[Sym.LIQ_FEE, i]
    return 0.0


@inner(error_model='numpy', _nrt=False)
def used_margin(i, qty, entry, price, sym):
    """Kraken's used margin: a long's cost over its leverage (fixed), a short's borrowed
    base over its leverage, revalued at ``price`` (VENUES.md §5.1)."""
    if qty > 0.0:
        return qty * entry / sym[Sym.LEVERAGE, i]
    return -qty * price / sym[Sym.LEVERAGE, i]


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def maintenance_in_tier(i, qty, entry, price, k, sym, tiers):
    """Maintenance margin of column i's position ``(qty, entry)`` at mark ``price``, in tier k
    (the tier of ``tier_key``), the fee the venue counts in the margin included."""
    rule = sym[Sym.MM_RULE, i]
    if rule == MM.AT_ENTRY:
        mm = bracket_maintenance(abs(qty) * entry, i, k, tiers)
    elif rule == MM.MARGIN_LEVEL:
        mm = sym[Sym.LIQ_LEVEL, i] * used_margin(i, qty, entry, price, sym)
    else:
        mm = bracket_maintenance(abs(qty) * price, i, k, tiers)
    if sym[Sym.FEE_RULE, i] != 0.0:
        mm += fee_in_margin(i, qty, entry, price, sym)
    return mm


@inner(error_model='numpy', _nrt=False)
def maintenance_margin(i, qty, entry, price, sym, tiers, n_tiers):
    """Maintenance margin of column i's position ``(qty, entry)`` at mark ``price``."""
    k = tier_from(tier_key(i, qty, entry, price, sym), ZERO, i, tiers, n_tiers)
    return maintenance_in_tier(i, qty, entry, price, k, sym, tiers)


# (the per-bar record of liquidation prices sums every cross position's MM at every bar:
# a call there cost the recorded run 12-15%)
maintenance_margin_inlined = inlined(maintenance_margin)


@inner(error_model='numpy', _nrt=False)
def initial_margin(i, qty, entry, price, sym):
    """Initial margin a position locks: ``|q| * EP / L`` (a Kraken short: at ``price``),
    plus Bybit's fee to close where the venue counts it in the margin."""
    if sym[Sym.MM_RULE, i] == MM.MARGIN_LEVEL:
        im = used_margin(i, qty, entry, price, sym)
    else:
        im = abs(qty) * entry / sym[Sym.LEVERAGE, i]
    if sym[Sym.FEE_RULE, i] == FeeInMargin.TO_CLOSE:
        im += fee_in_margin(i, qty, entry, price, sym)
    return im


@inner(error_model='numpy', _nrt=False)
def isolated_margin_to_open(i, open_qty, price, sym):
    """What opening ``open_qty`` at ``price`` moves into an isolated position's margin: its
    initial margin ``|dq| * price / L``, with the fee to close where the venue counts it."""
    im = abs(open_qty) * price / sym[Sym.LEVERAGE, i]
    if sym[Sym.FEE_RULE, i] == FeeInMargin.TO_CLOSE:
        im += fee_in_margin(i, open_qty, price, price, sym)
    return im


@inner(error_model='numpy', _nrt=False)
def order_cost_rate(i, side, sym):
    """What opening one unit of notional on ``side`` costs besides its initial margin, as a
    rate: the taker fee; Bybit's fee to close at the bankruptcy price (its order cost,
    VENUES.md §3.7); Kraken's opening fee on what the position borrows."""
    rate = sym[Sym.TAKER_FEE, i]
    if sym[Sym.ORDER_COST, i] == OrderCost.FEE_TO_CLOSE:
        rate += fee_to_close(i, side, 1.0, sym)  # per unit of notional
    if sym[Sym.ROLLOVER_HOURS, i] > 0.0:
        rate += sym[Sym.BORROW_OPEN_LONG, i] if side > 0.0 else sym[Sym.BORROW_OPEN_SHORT, i]
    return rate


@inner(error_model='numpy', _nrt=False)
def discounted_value(amount, i, tiers, n_tiers):
    """The slice of ``amount`` in each of column i's discount tiers at that tier's rate, summed
    (a tax-bracket sum, concave in the amount; VENUES.md §4.5). ``amount`` <= 0 gives 0."""
    total = 0.0
    for k in range(n_tiers[i]):
        floor = tiers[TierField.FLOOR, i, k]
        if amount <= floor:
            break
        top = min(amount, tiers[TierField.CAP, i, k])
        total += (top - floor) * tiers[TierField.MMR, i, k]
    return total


@inner(error_model='numpy', _nrt=False)
def collateral_value(i, qty, price, sym, tiers, n_tiers):
    """Discounted value of a collateral holding of ``qty`` coins at ``price`` (OKX §4.5): the
    discount tiers (bounds in USD or in coins) in the column's tier table, rates in mmr."""
    if sym[Sym.DISCOUNT_IN_COIN, i] != 0.0:
        return discounted_value(qty, i, tiers, n_tiers) * price
    return discounted_value(qty * price, i, tiers, n_tiers)


# --- liquidation price ---------------------------------------------------------------------


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def bracket_liquidation_price(i, qty, entry, collateral, extra_rate, tiers, n_tiers):
    """Mark at which ``collateral + qty * (P - entry) == MM(|qty| * P) + extra_rate*|qty|*P``
    under the bracket rule, the tier taken at the price itself (VENUES.md §2.5).

    This is Binance's one-way formula ``(C + cum - s*Q*EP) / (Q*(MMR + extra) - s*Q)``,
    ``C`` what backs the position (isolated margin, or ``WB - TMM1 + UPNL1`` in cross).
    The trigger ``f(P) = C + s*Q*(P - EP) - MM(Q*P)`` is strictly monotone in P while
    every rate is below 1, so the root is unique and its tier is the first one whose upper
    boundary already lies on the liquidated side: deciding the tier from the sign of f
    at the boundaries cannot miss a root on a boundary. A value <= 0: a long is never
    liquidated, a short always is. NaN for a flat position.
    """
    if qty == 0.0:
        return np.nan
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    n = n_tiers[i]
    k = 0
    while k < n - 1:
        cap = tiers[TierField.CAP, i, k]
        # f at P = cap / q, on tier k's own line (MM is continuous at the cap)
        trigger_at_cap = collateral + side * (cap - q * entry) - (
            cap * (tiers[TierField.MMR, i, k] + extra_rate) - tiers[TierField.CUM, i, k])
        if side * trigger_at_cap >= 0.0:
            break
        k += 1
    return (collateral + tiers[TierField.CUM, i, k] - side * q * entry) / (
        q * (tiers[TierField.MMR, i, k] + extra_rate) - side * q)


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def solve_liquidation_price(i, qty, entry, collateral, sym, tiers, n_tiers):
    """Mark at which ``collateral + qty * (P - entry) == MM_i(P)``, the venue's model applied.

    Bracket rule: Binance's formula with the tier at the liquidation price, a fee
    counted in the margin taken from the collateral (Bybit's fee to close, fixed) or
    added to the rate (OKX's fee at mark). Other rules fix the tier between fills, so
    MM is ``a + b * P`` and ``P = (a - C + s*Q*EP) / (s*Q - b)``: Bybit's classic
    ``EP -+ (M - MM)/Q``, OKX's ``(EP - M/Q) / (1 - mmr - fee)``, Kraken's level price.
    """
    if qty == 0.0:
        return np.nan
    rule = sym[Sym.MM_RULE, i]
    fee_rule = sym[Sym.FEE_RULE, i]
    if rule == MM.BRACKET:
        extra = 0.0
        if fee_rule == FeeInMargin.TO_CLOSE:
            collateral -= fee_in_margin(i, qty, entry, 0.0, sym)
        elif fee_rule == FeeInMargin.LIQUIDATION:
            extra = sym[Sym.LIQ_FEE, i]
        return bracket_liquidation_price(i, qty, entry, collateral, extra, tiers, n_tiers)
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    # MM(P) = a + b * P with the tier fixed: MM(0) and the slope from two evaluations
    k = tier_from(tier_key(i, qty, entry, 1.0, sym), ZERO, i, tiers, n_tiers)
    a = maintenance_in_tier(i, qty, entry, 0.0, k, sym, tiers)
    b = maintenance_in_tier(i, qty, entry, 1.0, k, sym, tiers) - a
    return (a - collateral + side * q * entry) / (side * q - b)


# --- partial and full liquidation ---------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def on_step(qty, step):
    """``qty`` rounded toward zero to a multiple of ``step`` (0: no step, ``qty`` as it is).
    A size within a billionth of a step of the next multiple counts as that multiple, so
    binary fractions such as 0.3 / 0.1 = 2.9999999999999996 keep their step."""
    if step <= 0.0:
        return qty
    return np.sign(qty) * np.floor(abs(qty) / step + 1e-9) * step


@inner(error_model='numpy', _nrt=False)
def partial_target(i, qty, entry, price, equity, scales, sym, tiers, n_tiers):
    """Size (base units, >= 0) a triggered position is cut down to before a full close; 0 means
    close it all (VENUES.md §6.3). The size kept is on the venue's quantity step (rounded
    down: the cut is an order like any other), so a cut leaves no fraction of a step.
    """
    return on_step(partial_size(i, qty, entry, price, equity, scales, sym, tiers, n_tiers),
                   sym[Sym.QTY_STEP, i])


@inner(error_model='numpy', _nrt=False)
def partial_size(i, qty, entry, price, equity, scales, sym, tiers, n_tiers):
    """The size ``partial_target`` keeps, before the quantity step:

    - Bybit (step-down, §3.6): above the lowest tier, the limit of the highest lower
      tier whose MM ``equity`` still covers once cut. ``scales``: an isolated position's
      equity shrinks with the size kept (cutting at the mark releases margin in
      proportion); a cross position's free margin (the margin balance less the other
      positions' MM) does not.
    - OKX (§4.4): from tier 3 up, the cap two tiers down (legacy rule: tier 1's cap).
    - Binance (§2.7, one IOC): above bracket 1, the lower bracket's cap (the floor of
      the bracket the notional at ``price`` lies in).

    Only a solvent position is cut (``equity`` > 0): past its bankruptcy price (a gap)
    a cut would realize a loss beyond the margin on the part cut and leave the rest to
    lose more; it is closed whole and the deficit is the shortfall.
    """
    rule = sym[Sym.PARTIAL, i]
    if rule == Partial.NONE or not equity > 0.0:
        return 0.0  # a position (or account) past bankruptcy is closed whole, not cut
    key = tier_key(i, qty, entry, price, sym)
    k = tier_from(key, ZERO, i, tiers, n_tiers)
    size = abs(qty)
    if rule == Partial.STEP_DOWN:
        if k == 0 or key <= 0.0:
            return 0.0
        # the fee counted in the margin scales with the size, like the margin does
        fee = fee_in_margin(i, qty, entry, price, sym)
        for j in range(k - 1, -1, -1):
            cap = tiers[TierField.CAP, i, j]
            if scales:
                covered = (equity - fee) * cap / key >= bracket_maintenance(cap, i, j, tiers)
            else:
                covered = equity >= bracket_maintenance(cap, i, j, tiers) + fee * cap / key
            if covered:
                return size * cap / key
        return 0.0
    if rule == Partial.LOWER_BRACKET:
        if k == 0 or key <= 0.0:
            return 0.0
        return size * tiers[TierField.CAP, i, k - 1] / key
    if k < 2:
        return 0.0
    cap = tiers[TierField.CAP, i, 0 if rule == Partial.TO_TIER_1 else k - 2]
    if sym[Sym.MM_RULE, i] == MM.BY_SIZE:
        return cap
    return size * cap / key


@inner(error_model='numpy', _nrt=False)
def lowest_cut_tier(i, sym):
    """The lowest tier a position must be above for a partial cut to apply (-1: never)."""
    rule = sym[Sym.PARTIAL, i]
    if rule == Partial.NONE:
        return -1
    return 1 if rule == Partial.STEP_DOWN or rule == Partial.LOWER_BRACKET else 2


@inner(error_model='numpy', _nrt=False)
def cut_keeps_margin(i, sym):
    """Whether an isolated position's partial cut leaves its proceeds (the margin it frees,
    its realized PnL, less the fee) in the position's margin, rather than paying them out
    with the cut's share of the margin.

    Binance (§2.7): the IOC only reduces the margin the position needs; the liquidation
    is over if, after it and its fee, the position's margin balance is above its MM
    (judged as cross's account is), so the whole margin balance pays the fee. Bybit and
    OKX: the part cut leaves with its share of the margin, which pays its fee.
    """
    return sym[Sym.PARTIAL, i] == Partial.LOWER_BRACKET


@inner(error_model='numpy', _nrt=False)
def isolated_cut_fee_cap(i, equity, kept, size, sym):
    """The most an isolated position's partial cut (to ``kept`` of ``size`` units) may charge
    in fees: what remains of the margin that pays it (``cut_keeps_margin``): the whole
    position's equity, or the share of it the cut takes."""
    if cut_keeps_margin(i, sym):
        return equity
    return equity * (1.0 - kept / size)


@inner(error_model='numpy', _nrt=False)
def isolated_settlement(i, qty, entry, margin, price, sym):
    """Where a liquidated isolated position closes, and what it costs.

    Returns ``(price, fee, fee waived, realized, remaining, shortfall, bankruptcy price)``:

    - at the trigger (Binance, OKX, Kraken): at ``price``; the liquidation fee is the rate
      on the closed notional, but never more than what is left of the margin once the
      loss is realized (the rest is waived); what is left after it returns to the wallet;
    - at the bankruptcy price (Bybit): the whole margin lost, the fee to close reserved
      in it charged.

    Past the bankruptcy price (a gap) the margin cannot cover the loss: that deficit,
    and nothing else, is the shortfall the venue's insurance fund absorbs.
    """
    if sym[Sym.SETTLEMENT, i] == Settle.AT_BANKRUPTCY:
        fee = 0.0
        if sym[Sym.FEE_RULE, i] == FeeInMargin.TO_CLOSE:
            fee = fee_in_margin(i, qty, entry, price, sym)
        bankrupt = entry - (margin - fee) / qty
        # past the bankruptcy price (a gap) the insurance fund takes the rest
        shortfall = max(qty * (bankrupt - price), 0.0)
        return bankrupt, fee, 0.0, qty * (bankrupt - entry), 0.0, shortfall, bankrupt
    bankrupt = entry - margin / qty
    realized = qty * (price - entry)
    left = margin + realized
    due = abs(qty) * price * sym[Sym.LIQ_FEE, i]
    fee = min(due, max(left, 0.0))
    return (price, fee, due - fee, realized, max(left - fee, 0.0), max(-left, 0.0), bankrupt)


@inner(error_model='numpy', _nrt=False)
def funding_from_available(i, sym):
    """Whether column i's isolated funding is paid from the available balance first
    (``isolated_funding_split``): only then is that balance needed."""
    return sym[Sym.FUNDING_RULE, i] == FundingFrom.AVAILABLE


@inner(error_model='numpy', _nrt=False)
def isolated_funding_split(i, payment, available, sym):
    """The part of an isolated position's funding ``payment`` the wallet pays; its own margin
    pays the rest. DESIGN.md §4: the margin pays it all (it moves the liquidation price).
    Bybit (VENUES.md §3.3): the available balance first, the margin only for what that
    cannot pay; funding received goes to the balance (``available`` is read only then)."""
    if funding_from_available(i, sym):
        free = max(available, 0.0)
        return payment if payment <= free else free
    return 0.0


# --- the account's margin mode (the account rule ACCOUNT_MARGIN_MODE) ---------------------


@inner(error_model='numpy', _nrt=False)
def account_wide_mode(rules):
    """Whether the venue sets the margin mode for the whole account rather than per symbol
    (Bybit UTA, VENUES.md §3.1): a mode switch then applies to every margined column, and
    only while no position is open."""
    return rules[AccountRule.ACCOUNT_MARGIN_MODE] != 0.0


# --- a triggered cross account (the account rule R_CROSS_CLOSE) -----------------------------


@inner(error_model='numpy', _nrt=False)
def cross_close_next(state, mode, close):
    """The cross position to close next (-1: none left): the oldest first under FIFO (Kraken),
    else in column order (the whole account goes)."""
    pick = NO_COLUMN
    for i in range(state.shape[1]):
        if state[State.QTY, i] != 0.0 and mode[i] == Mode.CROSS:
            if close != CrossClose.FIFO:
                return i
            if pick < 0 or state[State.OPENED, i] < state[State.OPENED, pick]:
                pick = i
    return pick


@inner(error_model='numpy', _nrt=False)
def cross_close_done(close, trigger_value, target_value):
    """Whether a cross liquidation may stop with positions left: under FIFO, once the account
    no longer triggers (``trigger_value`` > 0) and its margin level is above the
    liquidation's target level (``target_value``, ``MB - target x used margin``, > 0:
    Kraken liquidates "just enough to get back above 100%", VENUES.md §5.1); otherwise
    never (every position goes)."""
    return close == CrossClose.FIFO and trigger_value > 0.0 and target_value > 0.0


@inner(error_model='numpy', _nrt=False)
def settles_to_zero(close, total_mm):
    """Whether the cross account is settled at the positions' bankruptcy prices (Bybit): its
    wallet ends at zero, and a gap past those prices is the insurance fund's."""
    return close == CrossClose.SETTLE_AT_BANKRUPTCY and total_mm > 0.0


@inner(error_model='numpy', _nrt=False)
def cross_settlement(i, qty, entry, price, balance, mm, total_mm, close, sym):
    """Where cross position i closes in a liquidation triggered at mark ``price``, and its fee:
    ``(price, fee, bankruptcy price)``. ``balance`` is the account's margin balance at the
    trigger, ``mm`` the position's maintenance margin there and ``total_mm`` the account's.

    - at the trigger (Binance, OKX; Kraken's FIFO): at ``price``, the liquidation fee on
      the closed notional;
    - at the bankruptcy price (Bybit): the margin balance left at the trigger (negative
      after a gap through zero) shared in proportion to MM; the fee to close reserved in
      the margin charged from the position's share.

    The bankruptcy price is the mark at which the account's equity would be zero with
    the others frozen, ``P - MB / q``.
    """
    bankrupt = price - balance / qty
    if settles_to_zero(close, total_mm):
        share = balance * mm / total_mm
        fee = 0.0
        if sym[Sym.FEE_RULE, i] == FeeInMargin.TO_CLOSE and share > 0.0:
            fee = min(fee_in_margin(i, qty, entry, price, sym), share)
        settled = price - (share - fee) / qty
        return settled, fee, settled
    if close == CrossClose.SETTLE_AT_BANKRUPTCY:
        return price, 0.0, bankrupt
    return price, abs(qty) * price * sym[Sym.LIQ_FEE, i], bankrupt
