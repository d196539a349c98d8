"""Every enum, reason code and record dtype of the engine, in one place.

The kernel writes these records; ``backtester.result`` turns them into
DataFrames. Integer codes (not strings) cross the numba boundary; the
``*_NAMES`` tuples map them back to words at the pandas edge.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np

# Typed constants for the arguments of compiled calls. numba compiles a compiled function
# anew for every literal argument it is called with (``True``, ``False``, ``0``, ``-1`` each
# make one more specialization of the callee and of everything it calls), so compiled code
# passes these instead; the codes below, fields of named tuples, are typed int64 already.
TRUE = np.bool_(True)
FALSE = np.bool_(False)
ZERO = np.int64(0)  # the first tier, the first row
NO_COLUMN = np.int64(-1)  # no column (an account event; none found yet)


def _codes(name: str, fields: list[str]):
    """A named tuple of the codes 0, 1, 2... of ``fields``: ``Mode.CROSS``, ``Sym.MM_RULE``.

    numba reads a global named tuple as constants, so compiled code indexes and compares
    with the names at no cost, and one import brings a whole family of codes.
    """
    return namedtuple(name, fields)(*range(len(fields)))


# --- margin mode of a column ----------------------------------------------------------------
Mode = _codes("Mode", [
    "CROSS",  # the whole balance backs it
    "ISOLATED",  # backed by its own margin only
    # A spot holding is not margined at all: it is fully paid from the wallet (its cost sits
    # in the state row State.ISO_MARGIN, outside the cross pool, like an isolated margin at
    # 1x), pays no funding, is never liquidated and cannot be short. The kernel keeps it in
    # the per-column ``mode`` array so that every ``mode == Mode.CROSS`` / ``Mode.ISOLATED``
    # test leaves it out without a second array; ``run(instruments=...)`` sets it.
    "SPOT",
    # A holding of another currency that backs the cross account (OKX multi-currency
    # margin): kept like a spot holding (its cost in State.ISO_MARGIN, valued at its market
    # column's mark), it counts in the cross margin balance at its discounted value (the
    # column's tier table holds the discount tiers: TierField.FLOOR / CAP bounds, MMR the
    # rate), is never traded by orders and is sold only to repay a loan after a cross
    # liquidation.
    "COLLATERAL",
])
MARGIN_MODE_NAMES = ("cross", "isolated", "spot", "collateral")
INSTRUMENT_NAMES = ("perpetual", "spot")  # what ``run(instruments={symbol: kind})`` accepts
# position mode of a symbol (Binance): one net position, or a long and a short leg side by
# side (``run(position_mode=...)``; each leg is a column ``SYM.long`` / ``SYM.short``)
POSITION_MODE_NAMES = ("one_way", "hedge")

# --- how a target is expressed ---------------------------------------------------------------
TargetKind = _codes("TargetKind", [
    "UNITS",  # base units (coins / contracts x contract size), signed
    "NOTIONAL",  # quote notional, signed; converted at the decision price
    "EQUITY",  # fraction of account equity, signed; converted at the decision price
    # fraction of account equity committed as initial margin (``sizing="margin"``): the
    # notional is fraction x equity x the column's current leverage (Sym.LEVERAGE, so a
    # callback's set_leverage counts), so the exposure grows with the leverage
    "EQUITY_MARGIN",
])
TARGET_KIND_NAMES = ("units", "notional", "equity")  # what ``run(target_kind=...)`` accepts
# what an equity fraction sizes (``run(sizing=...)``): the exposure (TargetKind.EQUITY) or the
# initial margin committed (TargetKind.EQUITY_MARGIN)
SIZING_NAMES = ("exposure", "margin")

# --- when orders fill ------------------------------------------------------------------------
FillAt = _codes("FillAt", [
    "NEXT_OPEN",  # decided at close[t], filled at open[t+1] (default, realistic)
    "CLOSE",  # decided and filled at close[t] (optimistic: no overnight risk)
])
FILL_AT_NAMES = ("open", "close")

# --- the intrabar price path used for liquidation checks ---------------------------------
PricePath = _codes("PricePath", [
    "OHLC",  # open -> low -> high -> close (close >= open) else open -> high -> low -> close
    "WORST",  # every position at its adverse extreme at the same moment (stress view)
    "CLOSE",  # extremes ignored: prices move straight from open to close
])
PATH_NAMES = ("path", "worst", "close")

# --- why a fill happened ---------------------------------------------------------------------
FillReason = _codes("FillReason", [
    "STRATEGY",  # the strategy's order
    "LIQUIDATION",  # forced close by the liquidation engine
    "REDUCE_ONLY",  # an order cut to fit the available balance (reduce_to_fit)
    "MODE_SWITCH",  # a close forced by a margin-mode switch
    "ADL",  # a close by auto-deleveraging: the venue took the position to cover another
    #         trader's bankrupt liquidation (never by the bar loop itself: a stress scenario
    #         forces it, ``backtester.risk.adl_stress``); no fee
    "DATA_END",  # a close at the symbol's last close, because its data end before the
    #              market's last bar (else the position would stay open at a stale price);
    #              the taker fee, no slippage
])
FILL_REASON_NAMES = ("strategy", "liquidation", "reduce_only", "margin_mode_switch", "adl",
                     "data_end")

# --- why an order was rejected (every rejection carries one) ---------------------------------
Reject = _codes("Reject", [
    "INSUFFICIENT_MARGIN",  # initial margin + fee exceed the available balance
    "LEVERAGE_ABOVE_TIER",  # the position's notional lands in a tier whose max leverage is
    #                         below the symbol's leverage
    "NO_PRICE",  # the symbol has no bar at the fill time
    "ACCOUNT_BANKRUPT",  # the account has no equity left
    # the codes below come from a strategy callback's orders (see Order below)
    "MODE_SWITCH_OPEN",  # a margin-mode switch while the symbol holds a position: as on the
    #                      exchanges, the mode may change only while it is flat
    "SPOT_SHORT",  # an order that would take a spot holding below zero
    "NOT_ISOLATED",  # margin added or removed where there is no open isolated position
    "MARGIN_REMOVAL",  # removing more isolated margin than the position can spare
    "INVALID_ORDER",  # a value an order field cannot take (leverage < 1, a mode code other
    #                   than CROSS/ISOLATED, a leverage or mode change on spot)
    "MARGIN_LEVEL",  # Kraken spot margin: no new margin position while the margin level
    #                  (equity / used margin) is below the venue's opening level (100%)
    "HEDGE_LEG_SIDE",  # hedge mode: an order that would take a long leg short or a short
    #                    leg long (each leg keeps its side; it fills down to 0)
    "LIQUIDATED_AT_OPEN",  # an order for a position the bar's open liquidated (the mark went
    #                        through its liquidation price in the gap, before any fill)
    "DUST",  # an opening too small to be an order: its notional is below a billionth of the
    #          account's equity (or 1e-12 of the quote currency); see orders.dust_notional
    "PAST_BANKRUPTCY",  # a reduction whose fill price is past the bankruptcy price: it would
    #                     lose more than the margin backing it (isolated) or than the margin
    #                     balance (cross); see orders.closing_loss
    # the venue's order filters (Sym.QTY_STEP, MIN_QTY, MIN_NOTIONAL; the top tier's cap)
    "ROUNDS_TO_ZERO",  # the order's size rounds (toward zero) to no step of the quantity
    "BELOW_MIN_QTY",  # the order's size, rounded, is below the minimum quantity
    "BELOW_MIN_NOTIONAL",  # what the order opens is worth less than the minimum notional
    #                        (an order that only reduces is exempt, as on Binance)
    "ABOVE_MAX_POSITION",  # the position would exceed the top tier's cap (the largest
    #                        position the venue allows: Binance's last bracket, Bybit's
    #                        highest risk limit, OKX's last tier)
    "ACCOUNT_MODE_SWITCH_OPEN",  # a margin-mode switch on a venue whose margin mode is the
    #                              account's (AccountRule.ACCOUNT_MARGIN_MODE, Bybit UTA) while
    #                              any position of the account is open
])
REJECT_REASON_NAMES = (
    "insufficient_margin",
    "leverage_above_tier_max",
    "no_price",
    "account_bankrupt",
    "mode_switch_with_open_position",
    "spot_short",
    "margin_change_without_isolated_position",
    "margin_removal_above_free_margin",
    "invalid_order",
    "margin_level_below_open_level",
    "hedge_leg_side",
    "position_liquidated_at_open",
    "dust",
    "past_bankruptcy_price",
    "rounds_to_zero",
    "below_min_qty",
    "below_min_notional",
    "above_max_position",
    "account_mode_switch_with_open_position",
)

# --- record dtypes --------------------------------------------------------------------
# Fields are documented where they are declared; `align=True` keeps numba's record
# access on natural boundaries.

fill_dt = np.dtype(
    [
        ("bar", np.int64),  # bar index t of the fill
        ("symbol", np.int64),  # symbol index into Market.symbols
        ("qty", np.float64),  # signed filled quantity in base units (> 0 buy, < 0 sell)
        ("price", np.float64),  # execution price (slippage included; liquidation: mark)
        ("fee", np.float64),  # fee paid in quote (taker fee, or liquidation fee)
        ("realized_pnl", np.float64),  # PnL realized by the reducing part of this fill
        ("position_after", np.float64),  # signed position after the fill
        ("reason", np.int64),  # FillReason.* code
    ],
    align=True,
)

liquidation_dt = np.dtype(
    [
        ("bar", np.int64),  # bar index t in which the liquidation happened
        ("event", np.int64),  # event id: the positions of one cross liquidation share it
        ("symbol", np.int64),  # symbol index
        ("mode", np.int64),  # CROSS or ISOLATED
        ("qty", np.float64),  # signed position that was closed
        ("entry_price", np.float64),  # its average entry price
        ("trigger_price", np.float64),  # mark at which the trigger first holds on the path
        ("price", np.float64),  # execution price (trigger price, or the checkpoint if gapped)
        ("fee", np.float64),  # liquidation fee charged: the rate on the closed notional, but
        #                       never more than what remained of the margin (DESIGN.md §4)
        ("realized_pnl", np.float64),  # q * (price - entry)
        ("margin_lost", np.float64),  # what the wallet / isolated margin lost (bounded by it)
        ("equity_before", np.float64),  # account equity just before the event
        ("equity_after", np.float64),  # account equity just after the event
        ("shortfall", np.float64),  # bankruptcy shortfall absorbed by the insurance fund
        ("gapped", np.bool_),  # the trigger already held at the segment start (bar open)
        ("bankruptcy_price", np.float64),  # mark at which the position's equity is zero:
        #   isolated EP - M/q; cross P - MB/q with the account at the trigger prices
        ("partial", np.bool_),  # a partial liquidation: the position was cut, not closed
        ("fee_waived", np.float64),  # the part of the fee that nothing was left to pay
        ("settled_at_bankruptcy", np.bool_),  # closed at its bankruptcy price (Bybit), not at
        #   the market: its fill and realized PnL are at that price, so the shortfall is
        #   already in them; otherwise the realized PnL includes the deficit and the
        #   shortfall is what the fund paid of it
    ],
    align=True,
)

funding_dt = np.dtype(
    [
        ("bar", np.int64),  # bar whose open time is the funding time
        ("symbol", np.int64),
        ("qty", np.float64),  # signed position held at the funding time
        ("mark_price", np.float64),  # mark used for the notional
        ("rate", np.float64),  # funding rate of the interval (decimal)
        ("payment", np.float64),  # paid by the account (> 0) or received (< 0)
        ("mode", np.int64),  # CROSS (paid from the wallet) or ISOLATED (from its margin)
    ],
    align=True,
)

# --- account events other than fills, liquidations and funding -----------------------------
EventKind = _codes("EventKind", [
    "OPENING_FEE",  # spot margin: fee on the amount borrowed, charged at the opening fill
    "ROLLOVER_FEE",  # spot margin: fee on the amount borrowed, every rollover period
    "MARGIN_CALL",  # spot margin: the margin level fell to the margin-call level
    "LOAN_INTEREST",  # multi-currency margin: interest on a negative quote balance (a loan)
])
EVENT_NAMES = ("opening_fee", "rollover_fee", "margin_call", "loan_interest")

event_dt = np.dtype(
    [
        ("bar", np.int64),  # bar in which it happened
        ("symbol", np.int64),  # symbol index (-1: the account as a whole)
        ("kind", np.int64),  # EventKind.* code
        ("qty", np.float64),  # signed position concerned (0 for the account)
        ("price", np.float64),  # price that valued it (fill price, mark; a call: NaN)
        ("rate", np.float64),  # fee rate; a margin call: the call level
        ("amount", np.float64),  # fee paid by the account (quote); a call: 0
        ("margin_level", np.float64),  # equity / used margin at that moment
    ],
    align=True,
)

rejection_dt = np.dtype(
    [
        ("bar", np.int64),  # bar at which the order would have filled
        ("symbol", np.int64),
        ("qty", np.float64),  # signed quantity that was asked for (0 for a setting change)
        ("price", np.float64),  # the price it would have filled at (NaN if none)
        ("required", np.float64),  # initial margin + fee it needed; for a callback's
        #                            setting change: the margin amount, leverage or mode asked
        ("available", np.float64),  # available balance at that moment; for a margin removal
        #                             the removable margin, for a leverage the tier's maximum
        ("reason", np.int64),  # Reject.* code
    ],
    align=True,
)

# --- array layouts shared by the kernel and the Python layer ------------------------------
# Bundling per-symbol arrays into a few 2-D/3-D arrays is deliberate: every array a
# compiled function receives is passed field by field on a call, so fewer, larger arrays
# keep the event paths (fills, funding, liquidation) cheap.

# tier tables, shape (N_TIER_FIELDS, N, K): tier k of column i holds notionals
# floor < N <= cap (N = 0 in tier 0); tables of fewer than K tiers repeat the last tier
TierField = _codes("TierField", [
    "FLOOR",  # notional floor (quote)
    "CAP",  # notional cap (quote)
    "MMR",  # maintenance margin rate
    "CUM",  # maintenance amount, derived: cum_k = cum_{k-1} + floor_k * (mmr_k - mmr_{k-1})
    "MAX_LEVERAGE",  # the largest leverage allowed for a position in this tier
])
N_TIER_FIELDS = len(TierField)

# per-column parameters, shape (N_SYMBOL_FIELDS, N): the run's leverage and the venue's
# rules in force (``put_rules_in_force`` replaces every row but the leverage at a venue's
# dated change). Codes are stored as floats. Each row is one rule axis: the engine has one
# dispatch point per row (``engine.rules``), and no row decides another's rule.
Sym = _codes("Sym", [
    "LEVERAGE",  # the position's leverage (initial margin = notional / leverage)
    "TAKER_FEE",  # taker fee rate on strategy fills
    "LIQ_FEE",  # liquidation (clearance) fee rate on liquidated notional
    "MM_RULE",  # how maintenance margin is valued: MM below
    "FEE_RULE",  # a fee counted inside initial and maintenance margin: FeeInMargin below
    "SETTLEMENT",  # where a liquidated isolated position is closed: Settle below
    "FUNDING_RULE",  # who pays an isolated position's funding: FundingFrom below
    "PARTIAL",  # partial liquidation before a full close: Partial below
    "LEG",  # hedge mode: +1 this column is a symbol's long leg, -1 its short leg, 0 one-way
    "PARTNER",  # hedge mode: the column of the other leg of the same symbol (-1: none)
    "BORROW_OPEN_LONG",  # spot margin: opening fee rate on the quote a long borrows
    "BORROW_ROLL_LONG",  # spot margin: rollover fee rate on it, per rollover period
    "BORROW_OPEN_SHORT",  # spot margin: opening fee rate on the base a short borrows
    "BORROW_ROLL_SHORT",  # spot margin: rollover fee rate on it, per rollover period
    "ROLLOVER_HOURS",  # spot margin: hours between rollover fees (0: no borrowing fees)
    "LIQ_LEVEL",  # MM.MARGIN_LEVEL: liquidation at equity <= this x used margin (0.4)
    "DISCOUNT_IN_COIN",  # COLLATERAL: 1 when the discount tier bounds are coin amounts, 0
    #                      when they are USD values
    "CUT_FEE",  # fee rate of a partial-liquidation cut (Bybit: the taker fee of its
    #             Fill-or-Kill order; OKX: the liquidation fee)
    "ORDER_COST",  # what an opening order must have available: OrderCost below
    # the venue's order filters (0: none): an order's size is rounded toward zero to a
    # multiple of QTY_STEP (base units), must be at least MIN_QTY (base units) and, for what
    # it opens, MIN_NOTIONAL (quote); a fill price moved by slippage is rounded to TICK_SIZE
    # (quote) against the trader. The largest position is the top tier's cap.
    "QTY_STEP",
    "MIN_QTY",
    "MIN_NOTIONAL",
    "TICK_SIZE",
])
N_SYMBOL_FIELDS = len(Sym)
# the rows a venue's version sets (the leverage and the hedge legs are the run's)
VENUE_SYMBOL_FIELDS = tuple(r for r in range(N_SYMBOL_FIELDS)
                            if r not in (Sym.LEVERAGE, Sym.LEG, Sym.PARTNER))

# Sym.MM_RULE: maintenance margin of a position of size Q, entry EP, at mark P
MM = _codes("MM", [
    "BRACKET",  # Q*P*mmr_k - cum_k, tier k of the notional Q*P (Binance; Bybit since
    #             2025-09-02): continuous and convex in P
    "AT_ENTRY",  # Q*EP*mmr_k - cum_k, tier of the entry value Q*EP (Bybit classic): fixed
    #              between fills
    "BY_SIZE",  # Q*P*mmr_k, tier k of the SIZE Q, the whole position at its rate, tier
    #             bounds in base units (OKX position tiers): linear in P between fills
    "MARGIN_LEVEL",  # liquidation level x used margin, used margin Q*EP/L for a long and
    #                  Q*P/L for a short (Kraken spot margin: margin level = equity / used)
])
MM_RULE_NAMES = ("bracket", "entry_value", "size_tiers", "margin_level")

# Sym.FEE_RULE: a fee the venue counts in the margin (added to IM and MM)
FeeInMargin = _codes("FeeInMargin", [
    "NONE",
    "TO_CLOSE",  # Bybit since 2025-09-02: taker fee to close at the bankruptcy price,
    #              Q*EP*(1 - s/L)*taker, in IM and MM
    "LIQUIDATION",  # OKX: the liquidation fee Q*P*liq_fee in the trigger (equity <= MM +
    #                 liquidation fee)
])

# Sym.SETTLEMENT
Settle = _codes("Settle", [
    "AT_TRIGGER",  # closed at the trigger price, the liquidation fee charged on top
    "AT_BANKRUPTCY",  # closed at the bankruptcy price (Bybit): the trader loses the
    #                   position's whole margin (isolated) or the cross margin balance
])

# Sym.FUNDING_RULE
FundingFrom = _codes("FundingFrom", [
    "POSITION",  # an isolated position pays funding from its own margin (DESIGN §4)
    "AVAILABLE",  # from the available balance, the position margin only for what that
    #               cannot pay (Bybit, VENUES.md §3.3)
])

# Sym.ORDER_COST
OrderCost = _codes("OrderCost", [
    "MARGIN_AND_FEE",  # initial margin plus the taker fee to open
    "FEE_TO_CLOSE",  # plus the taker fee to close at the bankruptcy price, Q*P*(1 -
    #                  s/L)*taker (Bybit's order cost, VENUES.md §3.7, in every era)
])

# Sym.PARTIAL
Partial = _codes("Partial", [
    "NONE",
    "STEP_DOWN",  # Bybit: a position above the lowest tier is cut to the highest lower
    #               tier's limit whose MM its equity covers (VENUES.md §3.6)
    "TWO_TIERS",  # OKX: from tier 3 up, cut to the cap two tiers down (VENUES.md §4.4)
    "TO_TIER_1",  # OKX legacy (2020): from tier 3 up, cut to tier 1's cap
    "LOWER_BRACKET",  # Binance (VENUES.md §2.7): a position above bracket 1 is cut by one IOC
    #                   at the trigger to the lower bracket's cap, paying the liquidation fee
    #                   on the cut notional; an isolated position keeps the cut's proceeds in
    #                   its margin, which pays that fee (the check after the IOC is the
    #                   position's own margin balance against its MM, as cross's is the
    #                   account's)
])

# run state, shape (N_STATE, N), updated in place so that a run can stop and resume
State = _codes("State", [
    "QTY",  # signed position, base units
    "ENTRY",  # average entry price
    "ISO_MARGIN",  # margin held by an isolated position (0 for cross)
    "LIQ_PX",  # cached liquidation price of an isolated position (NaN otherwise)
    "MARK",  # last known mark price
    "LAST_CLOSE",  # last known traded close
    "OPENED",  # hours (from the first bar) at which the position was opened from flat: the
    #            rollover clock and the FIFO order of spot-margin liquidations
    "ROLLOVERS",  # rollover fees charged on the position so far
    "VOID",  # the position the bar's open liquidated (an order for it is refused), 0 for the
    #          others; 0 again once the orders at the open are done
    "CUT_BAR",  # the bar of the position's last partial liquidation cut
    "CUTS",  # the cuts it took in that bar: at most its tier count (then it closes whole),
    #          so that a position whose notional climbs back up along the bar's path (a
    #          short cut to a bracket's cap) cannot be cut without end
])
N_STATE = len(State)

# account scalars, shape (N_ACCOUNT,)
Account = _codes("Account", [
    "WALLET",  # wallet balance WB: deposits + realized - fees - funding, less isolated
    #            margin
    "EQUITY_PREV",  # equity at the last close (sizes equity-fraction targets)
    "EVENTS",  # liquidation events so far (event ids), as a float
    "BAR",  # the bar being simulated, as a float (kept only with a strategy callback, so
    #         that an error raised inside the callback can name the bar)
    "IN_CALL",  # 1.0 while a margin call is standing (AccountRule.CALL_LEVEL): one event
    #             per call
    # over the fills of one row of orders in a basket (``orders.start_estimates``; NaN
    # otherwise): running estimates of the cross account's available balance and margin
    # balance, a bound on the magnitudes of the terms summed, and the updates' rounding
    "AVAIL_EST",
    "BALANCE_EST",
    "EST_SIZE",
    "EST_ERR",
])
N_ACCOUNT = len(Account)

# the account's rules, shape (N_ACCOUNT_RULES,): what the venue does with the account as a
# whole (dated like the symbol rows; ``put_rules_in_force`` replaces them)
AccountRule = _codes("AccountRule", [
    "CROSS_CLOSE",  # how a triggered cross account is closed: CrossClose below
    "CALL_LEVEL",  # spot margin: a margin call (an event) at equity <= this x used margin
    #                (0: no margin calls)
    "OPEN_LEVEL",  # spot margin: no new position while equity < this x used margin (0:
    #                none)
    "LOAN_RATE",  # multi-currency margin: interest per hour on a negative wallet balance
    "LIQ_TARGET_LEVEL",  # spot margin (CrossClose.FIFO): once triggered, positions close
    #                      until equity > this x used margin as well (Kraken: 1.0, back above
    #                      the opening level; 0: only until the account no longer triggers)
    "CROSS_ONLY",  # 1: every margined position is cross (Binance Multi-Assets mode, with
    #                collateral held): a callback's switch to isolated is refused
    "ACCOUNT_MARGIN_MODE",  # 1: the venue sets the margin mode for the whole account (Bybit
    #                         UTA, VENUES.md §3.1): a callback's switch sets every margined
    #                         column's mode and is refused while any position is open; 0: the
    #                         mode is each symbol's
])
N_ACCOUNT_RULES = len(AccountRule)

# AccountRule.CROSS_CLOSE (after any partial cuts the columns' Sym.PARTIAL rows allow)
CrossClose = _codes("CrossClose", [
    "AT_TRIGGER",  # every cross position at the trigger prices, each paying the
    #                liquidation fee (Binance, OKX)
    "SETTLE_AT_BANKRUPTCY",  # every cross position at its bankruptcy price, the margin
    #                          balance left shared in proportion to MM (Bybit)
    "FIFO",  # oldest position first, at the trigger prices with the liquidation fee, until
    #          the account no longer triggers and its margin level is above
    #          AccountRule.LIQ_TARGET_LEVEL (Kraken spot margin)
])

# per-bar outputs, shape (N_OUT, T); the rows a run's summary reads come first: sweeps pass
# a record of those rows only, shape (N_SUMMARY_OUT, T), and the kernel writes the others
# only where the record has them (six rows a bar fewer to write: the bar's cost in a sweep)
Out = _codes("Out", ["EQUITY", "MARGIN_RATIO", "WALLET", "ISO_MARGIN", "UPNL", "MAINT",
                     "GROSS", "NET"])
N_OUT = len(Out)
N_SUMMARY_OUT = 2

# record counters, shape (N_COUNTS,)
Count = _codes("Count", ["FILLS", "LIQS", "FUNDING", "REJECTS", "EVENTS"])
N_COUNTS = len(Count)

# --- the bundles the compiled functions pass around ------------------------------------------
# Arrays that travel together travel as one named tuple: numba passes a tuple's fields as it
# passes arrays one by one (no extra cost), and a signature of six reads better than one of
# thirty. Every field is a C-contiguous array or a scalar of one fixed type, so that each
# compiled function has one signature.

Bars = namedtuple(
    "Bars",
    [
        "open",  # (T, N) last-price open: what orders fill at
        "close",  # (T, N) last-price close: what targets are sized at
        "mark_open",  # (T, N) mark-price bars: what margin and liquidation are computed on
        "mark_high",
        "mark_low",
        "mark_close",
        "funding_rate",  # (T, N) rate settled at each bar's open, NaN where none; (0, N)
        #                  when no funding settles in the run (read where has_funding only)
        "has_funding",  # (T,) bool: any funding settles at that bar
        "hours",  # (T + 1,) each bar's open in hours from the first bar's, and the last
        #           bar's end: the clock of spot-margin rollover fees and loan interest
    ],
)

Book = namedtuple(
    "Book",
    [
        "state",  # (N_STATE, N) positions, entries, isolated margins, marks (State.*)
        "tier",  # (N,) int64: each position's tier at the last close (a lookup hint)
        "account",  # (N_ACCOUNT,) the account's scalars (Account.*)
        "mode",  # (N,) int64 margin mode of each column (CROSS, ISOLATED, SPOT, COLLATERAL)
        "sym",  # (N_SYMBOL_FIELDS, N) leverage, fees and the venue's rule rows (Sym.*)
        "tiers",  # (N_TIER_FIELDS, N, K) tier tables (TierField.*)
        "n_tiers",  # (N,) int64 tiers in use per column
        "rules",  # (N_ACCOUNT_RULES,) the venue's account-wide rules (AccountRule.*)
    ],
)

Trading = namedtuple(
    "Trading",
    [
        "targets",  # (T, N) target positions decided at each close, NaN = no order; (0, N)
        #             when a strategy callback decides
        "has_target",  # (T,) bool: the row holds a target
        "target_kind",  # int64 TargetKind.*: what the numbers mean (EQUITY_MARGIN: equity
        #                 fractions as initial margin, ``sizing="margin"``)
        "fill_at",  # int64 FillAt.*: when orders fill
        "slippage",  # float64: fraction of the price paid against the trader on each fill
        "reduce_to_fit",  # bool: cut an order to the available balance instead of refusing
    ],
)

Records = namedtuple(
    "Records",
    [
        "fills",  # fill_dt buffer
        "liqs",  # liquidation_dt buffer
        "funding",  # funding_dt buffer
        "rejects",  # rejection_dt buffer
        "events",  # event_dt buffer
        "counts",  # (N_COUNTS,) int64: rows used in each buffer (Count.*)
    ],
)

Outputs = namedtuple(
    "Outputs",
    [
        "out",  # (N_OUT, T) the per-bar account record (Out.*), or its first N_SUMMARY_OUT
        #         rows (a sweep's runs; a run replayed for its liquidation prices)
        "positions",  # (T, N) position at each close, or (0, N) when not recorded (only
        #               with the liquidation prices: ``kernel.record_positions``)
        "liq_prices",  # (T, N) each position's liquidation price at each close, or (0, N)
        "margins",  # (N_MARGIN_FIELDS, T, N) what backs each position at each close
        #             (MarginField.*), or (N_MARGIN_FIELDS, 0, N) when not recorded
    ],
)

# what backs each open position at a close, recorded only when a run asks
# (``record_margins``): the inputs of the venues' ADL ranking formulas. NaN where the column
# is flat, spot or collateral. Isolated: the position's own; cross: the account's.
MarginField = _codes("MarginField", [
    "ENTRY",  # the position's average entry price
    "WALLET",  # isolated: the margin it holds; cross: the wallet balance
    "BALANCE",  # margin balance: isolated, its margin plus its unrealized PnL; cross, the
    #             account's margin balance (wallet, cross unrealized PnL, discounted
    #             collateral)
    "MAINTENANCE",  # isolated: its maintenance margin; cross: every cross position's
])
N_MARGIN_FIELDS = len(MarginField)
MARGIN_FIELD_NAMES = ("entry_price", "wallet_balance", "margin_balance", "maintenance_margin")

Versions = namedtuple(
    "Versions",
    [
        "bars",  # (V,) int64: bar from which version v is in force (bars[0] == 0)
        "tiers",  # (V, N_TIER_FIELDS, N, K)
        "n_tiers",  # (V, N) int64
        "sym",  # (V, N_SYMBOL_FIELDS, N): the venue rows (VENUE_SYMBOL_FIELDS) of each
        #         version; the leverage and hedge-leg rows are the run's
        "rules",  # (V, N_ACCOUNT_RULES)
    ],
)

# --- event-driven strategies: the callback's orders and its view -----------------------------
# A strategy callback ``callback(t, ctx, orders, params) -> bool`` runs at the close of every
# bar t (DESIGN.md §4 step 6). It reads ``ctx`` (a ``BarContext``), writes its orders for the
# next fill into ``orders`` (N_ORDER_FIELDS, N) and returns True when it wrote any. NaN in a
# field means "nothing asked"; the kernel applies the orders at the next fill (open[t+1], or
# close[t] with fill_at="close") and then resets every field to NaN. At the fill, in order:
# margin changes, reductions, leverage and mode changes, then increases (so an order that
# closes a position frees the symbol for a mode switch, and a new leverage applies to what
# the same order opens). With ``sizing="margin"`` a trade of a symbol whose leverage the same
# call changes is sized after that change, at the leverage the symbol then has (the new one,
# or the old one if the change was refused), and filled after the other reductions (a target
# of 0, a close at any leverage, goes first as ever).
Order = _codes("Order", [
    "TARGET",  # target position in the run's target_kind units (units, quote notional or
    #            fraction of equity, as exposure or as initial margin by the run's sizing),
    #            sized at the decision close like a targets row
    "DELTA",  # change of the position in the same units (used only where TARGET is NaN)
    "MARGIN",  # isolated margin to add (> 0, from the available balance) or remove (< 0,
    #            back to the wallet), in quote; needs an open isolated position
    "LEVERAGE",  # the symbol's new leverage; an open isolated position keeps its margin (the
    #              new leverage applies to what is added), a cross one re-prices its
    #              initial margin (refused if the available balance would go negative)
    "MODE",  # the symbol's new margin mode, Mode.CROSS or Mode.ISOLATED; only while flat (a
    #          venue whose margin mode is the account's: the account's, every margined
    #          column at once, only while no position is open)
])
N_ORDER_FIELDS = len(Order)

# The callback's read-only view of the market and the account, built once per run; every
# field is the kernel's own array (no copy), so at bar t it holds the state after bar t's
# close. Rows after t of the (T, ...) arrays are the future: a strategy must not read them.
BarContext = namedtuple(
    "BarContext",
    [
        "open",  # (T, N) last-price bars
        "high",
        "low",
        "close",
        "volume",
        "mark_close",  # (T, N) mark price at each close (what margin is computed on)
        "funding_rate",  # (T, N) rate settled at each bar's open, NaN where none
        "series",  # (K, T, N) series the strategy computed before the run (indicators)
        "state",  # (N_STATE, N): State.QTY position, State.ENTRY entry price,
        #           State.ISO_MARGIN isolated margin (spot: cost), State.LIQ_PX isolated
        #           liquidation price, State.MARK mark
        "mode",  # (N,) int64 Mode.CROSS / ISOLATED / SPOT / COLLATERAL, current
        "sym",  # (N_SYMBOL_FIELDS, N): Sym.LEVERAGE current leverage, fees
        "tiers",  # (N_TIER_FIELDS, N, K) the venue's tier tables
        "n_tiers",  # (N,) int64 tiers in use per symbol
        "account",  # (N_ACCOUNT,): Account.WALLET wallet balance, Account.EQUITY_PREV equity
        #             at close t
        "rules",  # (N_ACCOUNT_RULES,) the venue's account rules in force (AccountRule.*)
        "tier",  # (N,) int64: each position's tier at the last close (0-based)
        "out",  # (N_OUT, T) per-bar record: equity, margin ratio... (columns <= t written)
        "memory",  # (M,) the strategy's own scratch space, zeros at the start, kept from
        #            bar to bar: the one field the callback may write
    ],
)
