"""Kraken spot margin: the ``kraken_spot`` margin model (VENUES.md §5.1), and Kraken Futures'
inverse liquidation (§5.2, a reference calculator only).

Venue ``kraken_spot``. Spot margin is "cross" in the spot sense: every margin
position is a borrowing backed by one trade balance, so there is no isolated mode.

- A long borrows the quote to buy: its used margin is its cost / leverage,
  fixed at opening. A short borrows the base to sell: its used margin is
  ``Q / leverage`` of the BASE, revalued at the current price.
- ``equity = trade balance + unrealized P/L``; ``margin level = equity / used
  margin``: below 100% no new positions, at 80% a margin call (Kraken may
  liquidate, FIFO), at 40% automatic liquidation, oldest position first, until the
  level is back above 100% (the rule ``liquidation_target_level``) or nothing is left.
- Borrowing costs an opening fee once and a rollover fee every 4 hours (from
  the 4th hour on), both rates of the amount lent. No funding.

Example (VENUES.md E-K2: 1 BTC long at 20,000, 5:1, on a 10,000 trade balance):
    >>> from backtester.venues import kraken
    >>> kraken.margin_level_price(1.0, 20_000.0, 5.0, 10_000.0, 0.4, 0.0, 0.0)  # 40% level
    11600.0
    >>> round(kraken.rollover_fees(16_000.0, 0.00025, 24.0, 4.0), 2)  # E-K5: six rollovers
    24.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..engine import account as engine_account
from ..engine import enums
from ..engine import rules as engine_rules
from .models import Columns, MarginModel, Position, Rule
from .spec import SymbolSpec


class KrakenSpot(MarginModel):
    name = "kraken_spot"
    description = ("Kraken spot margin: real borrowings (longs borrow quote, shorts base), margin "
                   "level = equity / used margin, call at 80%, liquidation at 40%, opening and "
                   "4-hourly rollover fees, cross over every margin position")
    rules = {
        "open_level": Rule(1.0, "no new margin position below this margin level"),
        "margin_call_level": Rule(0.8, "margin level of the margin call (an event)"),
        "liquidation_level": Rule(0.4, "margin level of the automatic liquidation"),
        "liquidation_target_level": Rule(1.0, "once the liquidation level is reached, positions "
                                         "close oldest first until the margin level is back "
                                         "above this level (1.0: the opening level, Kraken's "
                                         "'just enough to get back above 100%', VENUES.md "
                                         "§5.1) or none is left; at or below "
                                         "liquidation_level: only until the account no longer "
                                         "triggers"),
        "rollover_hours": Rule(4.0, "hours between rollover fees on borrowed amounts"),
    }
    params = {
        "long_opening_fee": "rate on the quote a long borrows, charged once at opening",
        "long_rollover_fee": "rate on the quote a long borrows, per rollover period",
        "short_opening_fee": "rate on the base a short borrows, charged once at opening",
        "short_rollover_fee": "rate on the base a short borrows, per rollover period",
    }
    margin_modes = ("cross",)
    modes_note = "spot margin trading, where every margin position shares one trade balance"

    def symbol_rows(self, spec: SymbolSpec, rules_in_force: Mapping[str, Any]
                    ) -> dict[int, float]:
        p = spec.params
        return {
            enums.Sym.MM_RULE: enums.MM.MARGIN_LEVEL,
            enums.Sym.FEE_RULE: enums.FeeInMargin.NONE,
            enums.Sym.LIQ_LEVEL: rules_in_force["liquidation_level"],
            enums.Sym.ROLLOVER_HOURS: rules_in_force["rollover_hours"],
            enums.Sym.BORROW_OPEN_LONG: p.get("long_opening_fee", 0.0),
            enums.Sym.BORROW_ROLL_LONG: p.get("long_rollover_fee", 0.0),
            enums.Sym.BORROW_OPEN_SHORT: p.get("short_opening_fee", 0.0),
            enums.Sym.BORROW_ROLL_SHORT: p.get("short_rollover_fee", 0.0),
        }

    def account_rows(self, rules_in_force: Mapping[str, Any]) -> dict[int, float]:
        return {enums.AccountRule.CROSS_CLOSE: enums.CrossClose.FIFO,
                enums.AccountRule.CALL_LEVEL: rules_in_force["margin_call_level"],
                enums.AccountRule.OPEN_LEVEL: rules_in_force["open_level"],
                enums.AccountRule.LIQ_TARGET_LEVEL: rules_in_force["liquidation_target_level"]}

    def leverage_matters(self, rules_in_force: Mapping[str, Any]) -> bool:
        return True  # the used margin is the position over its leverage

    def summary_rows(self, result, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        # the cost of carry is borrowing fees, and risk is the margin level (equity / used
        # margin; the run's margin ratio is the liquidation level / the margin level)
        level = result.venue.rules()["liquidation_level"]
        worst = summary["worst_margin_ratio"]
        return [
            ("borrowing fees", f"{summary['borrowing_fees']:,.2f}"),
            ("lowest margin level", f"{level / worst:.2%}" if worst > 0 else "n/a"),
            ("margin calls", f"{summary['margin_calls']}"),
        ]

    def liquidation_price(self, position: Position, backing: float, margin_mode: str) -> float:
        # the others frozen: their used margin x the level is in ``backing`` already
        return margin_level_price(position.qty, position.entry_price, position.leverage,
                                  backing, position.rules["liquidation_level"], 0.0, 0.0)


KRAKEN_SPOT = KrakenSpot()


# --- spot margin ----------------------------------------------------------------------------


def used_margin(qty: float, entry_price: float, price: float, leverage: float) -> float:
    """Margin a position uses, in quote: long ``Q*EP/L`` (its cost, fixed), short ``Q*P/L``
    (``Q/L`` of the borrowed base, revalued at ``price``): the engine's ``used_margin``."""
    sym = Columns.bare({enums.Sym.LEVERAGE: leverage}).sym
    return float(engine_rules.used_margin(0, qty, entry_price, price, sym))


def account_margin_level(trade_balance: float, qtys, entries, prices, leverages) -> float:
    """Margin level (``equity / used margin``, 1.0 = 100%) of the account over every open
    margin position (arrays of N), the engine's ``margin_level``; inf without used margin."""
    qtys = np.asarray(qtys, dtype=np.float64)
    n = len(qtys)
    state = np.zeros((enums.N_STATE, n))
    state[enums.State.QTY] = qtys
    state[enums.State.ENTRY] = entries
    account = np.zeros(enums.N_ACCOUNT)
    account[enums.Account.WALLET] = trade_balance
    c = Columns.bare({enums.Sym.LEVERAGE: np.asarray(leverages, dtype=np.float64),
                      enums.Sym.MM_RULE: enums.MM.MARGIN_LEVEL}, n=n)
    book = enums.Book(state, np.zeros(n, dtype=np.int64), account,
                      np.full(n, enums.Mode.CROSS, dtype=np.int64), c.sym, c.tiers, c.n_tiers,
                      np.zeros(enums.N_ACCOUNT_RULES))
    return float(engine_account.margin_level(book, np.asarray(prices, dtype=np.float64)))


def margin_level_price(qty: float, entry_price: float, leverage: float, trade_balance: float,
                       level: float, other_equity: float, other_used: float) -> float:
    """Price at which the account's margin level reaches ``level``, the others frozen.

    ``trade_balance + other_equity + s*Q*(P - EP) = level*(other_used + used(P))``;
    ``other_equity`` is the other positions' unrealized P/L and ``other_used``
    their used margin. Long: ``P = EP + (level*(U' + Q*EP/L) - TB')/Q``; short:
    ``P = (TB' + Q*EP - level*U') / (Q*(1 + level/L))``. NaN if flat.
    """
    if qty == 0.0:
        return math.nan
    balance = trade_balance + other_equity
    if qty > 0.0:
        return entry_price + (level * (other_used + qty * entry_price / leverage) - balance) / qty
    q = -qty
    return (balance + q * entry_price - level * other_used) / (q * (1.0 + level / leverage))


def borrowed_amount(qty: float, price: float) -> float:
    """What Kraken lends for a position opened at ``price``: a long borrows its cost in
    quote, a short its size in base (the collateral is not deducted, §5.1)."""
    if qty > 0.0:
        return qty * price
    return -qty


def opening_fee(borrowed: float, rate: float) -> float:
    """The margin opening fee, charged once: ``rate`` of the amount borrowed."""
    return borrowed * rate


def rollover_count(hours_held: float, period_hours: float) -> int:
    """Rollover fees charged after ``hours_held``: one per full period, from the first one's
    end (Kraken: every 4 hours, starting after the first 4 hours)."""
    if hours_held <= 0.0:
        return 0
    return int(math.floor(hours_held / period_hours + 1e-9))


def rollover_fees(borrowed: float, rate: float, hours_held: float, period_hours: float) -> float:
    """Total rollover fees on ``borrowed`` held for ``hours_held``: amount x rate x periods."""
    return borrowed * rate * rollover_count(hours_held, period_hours)


# --- Kraken Futures (inverse, multi-collateral wallet), §5.2: reference only ------------------


def futures_inverse_liquidation_price(contracts: float, entry_price: float, collateral: float,
                                      mm_rate: float) -> float:
    """Inverse contract (1 contract = 1 USD) liquidation price, MM on the value at MARK.

    Portfolio value ``C + s*Qc*(1/EP - 1/P)`` meets ``mm_rate * Qc/P``: long
    ``P = Qc*(1 + mm) / (C + Qc/EP)``, short ``P = Qc*(1 - mm) / (Qc/EP - C)``.
    """
    if contracts == 0.0:
        return math.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    return q * (1.0 + side * mm_rate) / (q / entry_price + side * collateral)


def futures_inverse_bankruptcy_price(contracts: float, entry_price: float,
                                     collateral: float) -> float:
    """Where the inverse position's portfolio value reaches 0 (the EPP's IOC limit)."""
    return futures_inverse_liquidation_price(contracts, entry_price, collateral, 0.0)
