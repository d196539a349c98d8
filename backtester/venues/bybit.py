"""Bybit Unified Trading Account, linear contracts: the ``bybit_uta`` margin model (VENUES.md §3).

Venue ``bybit_linear``. Rules by date (``load_venue("bybit_linear").rules(at)``):

- classic (to 2025-09-01): MM on the ENTRY value, so an isolated position's
  liquidation price is ``LP = EP -+ (IM - MM + extra) / Q`` (§3.3, E-Y1); in the
  manual risk-limit era (to 2024-03-12) the whole position takes its tier's rate;
- from 2025-09-02: MM on the MARK value (the tier too), and the taker fee to close
  at the bankruptcy price, ``Q*EP*(1 -+ 1/L)*taker``, inside both IM and MM (E-Y3).

A liquidated position is settled at its bankruptcy price (equity zero): the
trader loses the whole position margin. Above the lowest risk tier the engine
first steps the position down to a lower tier's limit (§3.6,
``engine.rules.partial_target``). Isolated funding comes from the available
balance first; the order cost counts the fee to close (§3.7, E-Y8). Cross margin
is the account MM rate (§3.5): liquidation when the margin balance reaches the
total MM, which with the other positions frozen gives the same price formulas,
backed by ``WB - TMM1 + UPNL1``.

The inverse-contract formulas below (E-Y4, E-Y6, E-Y7) are reference calculators
only: the engine simulates linear contracts. ``qty`` is signed (long > 0), in base
units for linear contracts; ``contracts`` is signed, in USD for inverse ones.

Example (VENUES.md E-Y7, inverse cross: shown by Bybit as 5,739.50):
    >>> from backtester.venues import bybit
    >>> lp = bybit.inverse_cross_liquidation_price(10_000.0, 8_000.0, 0.5, 0.005, 0.00075)
    >>> round(lp, 2), bybit.round_to_tick(lp, 0.5, 1.0)
    (5739.08, 5739.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import enums
from ..engine import rules as engine_rules
from .binance import bracket_liquidation_price
from .models import Columns, MarginModel, Position, Rule
from .spec import SymbolSpec, Timestamp

if TYPE_CHECKING:
    from .venue import Venue


class BybitUTA(MarginModel):
    name = "bybit_uta"
    description = ("Bybit Unified Trading Account, linear contracts: risk-limit tiers with "
                   "mmDeduction, settlement at the bankruptcy price, tier step-down, account MM "
                   "rate for cross")
    rules = {
        "margin_price": Rule("entry", "price that values the position for isolated MM: "
                             "'entry' (classic) or 'mark' (from 2025-09-02)",
                             ("entry", "mark")),
        "fee_to_close_in_margin": Rule(False, "IM and MM include the taker fee to close "
                                       "at the bankruptcy price (from 2025-09-02)"),
        "risk_limit": Rule("manual", "'manual': the trader picks a tier; 'auto': the tier "
                           "follows the position value (from 2024-03-12)",
                           ("manual", "auto")),
        "partial_liquidation": Rule("step_down", "'step_down': a triggered position above "
                                    "the lowest tier is first cut to a lower tier's limit "
                                    "(VENUES.md §3.6); 'none': always a full close",
                                    ("step_down", "none")),
        "loan_rate": Rule(0.0, "unified account's collateral: yearly interest on a negative "
                          "USDT balance (the auto-borrowing of the cross margin)"),
    }
    collateral = True  # the unified account: coins back the cross margin balance
    collateral_cross_only = True  # (spot margin and its collateral are cross features)
    collateral_note = "Bybit unified account"
    account_margin_mode = True
    account_mode_note = ("VENUES.md §3.1: the Unified Trading Account sets isolated or cross "
                         "margin for the account, not per symbol")
    adl_ranking = "bybit"  # VENUES.md §3.8: PnL% x effective leverage
    adl_fee = "maker_fee"  # VENUES.md §3.8: the deleveraged trader pays the maker fee

    def symbol_rows(self, spec: SymbolSpec, rules_in_force: Mapping[str, Any]
                    ) -> dict[int, float]:
        mark = rules_in_force["margin_price"] == "mark"
        return {
            enums.Sym.ORDER_COST: enums.OrderCost.FEE_TO_CLOSE,
            enums.Sym.CUT_FEE: spec.taker_fee,  # the step-down is a Fill-or-Kill taker order
            enums.Sym.MM_RULE: enums.MM.BRACKET if mark else enums.MM.AT_ENTRY,
            enums.Sym.FEE_RULE: (enums.FeeInMargin.TO_CLOSE
                                 if rules_in_force["fee_to_close_in_margin"]
                                 else enums.FeeInMargin.NONE),
            enums.Sym.SETTLEMENT: enums.Settle.AT_BANKRUPTCY,
            enums.Sym.FUNDING_RULE: enums.FundingFrom.AVAILABLE,
            enums.Sym.PARTIAL: (enums.Partial.STEP_DOWN
                                if rules_in_force["partial_liquidation"] == "step_down"
                                else enums.Partial.NONE),
        }

    def account_rows(self, rules_in_force: Mapping[str, Any]) -> dict[int, float]:
        return {enums.AccountRule.CROSS_CLOSE: enums.CrossClose.SETTLE_AT_BANKRUPTCY,
                enums.AccountRule.LOAN_RATE: rules_in_force["loan_rate"] / 8760.0}

    def leverage_matters(self, rules_in_force: Mapping[str, Any]) -> bool:
        return bool(rules_in_force["fee_to_close_in_margin"])  # the fee to close is in MM

    def position_margin(self, position: Position, margin: float) -> float:
        # the margin reserves the fee to close on top (0 before 2025-09-02)
        return margin + position.fee_in_margin(position.entry_price)

    def liquidation_price(self, position: Position, backing: float, margin_mode: str) -> float:
        q, entry = position.qty, position.entry_price
        if position.rules["margin_price"] == "entry":
            # MM fixed at entry: the classic formula, isolated and cross alike
            return classic_liquidation_price(q, entry, backing, position.maintenance_margin(entry))
        # MM at the mark: Binance's form, the reserved fee to close taken from the collateral
        return bracket_liquidation_price(q, entry, backing - position.fee_in_margin(entry),
                                         *position.tier_table())

    def bankruptcy_price(self, position: Position, backing: float, margin_mode: str) -> float:
        if margin_mode == "isolated":  # the reserved fee to close is not the trader's (§3.4)
            backing -= position.fee_in_margin(position.entry_price)
        return bankruptcy_price_linear(position.qty, position.entry_price, backing, 0.0)


BYBIT_UTA = BybitUTA()


# --- linear contracts -----------------------------------------------------------------------


def classic_liquidation_price(qty: float, entry_price: float, collateral: float,
                             maintenance: float) -> float:
    """Classic liquidation price ``EP - s*(M - MM)/Q`` (§3.3): ``collateral`` M is what backs
    the position (isolated: IM + extra margin; cross: ``WB - TMM1 + UPNL1``) and
    ``maintenance`` its MM, fixed at the entry value. NaN for a flat position.

    Example (E-Y1: 1 BTC long at 20,000, 50x: IM 400, MM 100):
        >>> classic_liquidation_price(1.0, 20_000.0, 400.0, 100.0)
        19700.0
    """
    if qty == 0.0:
        return math.nan
    side = 1.0 if qty > 0.0 else -1.0
    return entry_price - side * (collateral - maintenance) / abs(qty)


def _fee_columns(leverage: float, taker_fee: float) -> Columns:
    """One column holding only Bybit's fee rules (for the fee and order-cost functions)."""
    return Columns.bare({enums.Sym.LEVERAGE: leverage, enums.Sym.TAKER_FEE: taker_fee,
                         enums.Sym.FEE_RULE: enums.FeeInMargin.TO_CLOSE,
                         enums.Sym.ORDER_COST: enums.OrderCost.FEE_TO_CLOSE})


def fee_to_close(qty: float, entry_price: float, leverage: float, taker_fee: float) -> float:
    """Taker fee to close at the bankruptcy price, ``Q*EP*(1 - s/L)*taker`` (§3.3, §3.7): the
    engine's fee in the margin (``engine.rules.fee_in_margin``).

    Example (E-Y3: 20,000 x 0.98 x 0.055%):
        >>> round(fee_to_close(1.0, 20_000.0, 50.0, 0.00055), 2)
        10.78
    """
    return float(engine_rules.fee_in_margin(0, qty, entry_price, entry_price,
                                            _fee_columns(leverage, taker_fee).sym))


def order_cost(qty: float, price: float, leverage: float, taker_fee: float) -> float:
    """Cost of an opening order: IM + fee to open + fee to close at bankruptcy (§3.7), the
    engine's order cost (``engine.rules.order_cost_rate``).

    Example (E-Y8: 5,000 + 27.50 + 24.75):
        >>> round(order_cost(1.0, 50_000.0, 10.0, 0.00055), 2)
        5052.25
    """
    notional = abs(qty) * price
    side = 1.0 if qty > 0.0 else -1.0
    rate = engine_rules.order_cost_rate(0, side, _fee_columns(leverage, taker_fee).sym)
    return notional / leverage + notional * float(rate)


def bankruptcy_price_linear(qty: float, entry_price: float, position_margin: float,
                            fee_close: float) -> float:
    """Price where the position's margin (less its reserved fee to close) is gone.

    ``EP - s*(M - fee_close)/Q``; with ``M = Q*EP/L (+ fee_close)`` that is
    ``EP*(1 - s/L)`` (VENUES.md §3.4). NaN for a flat position.
    """
    if qty == 0.0:
        return math.nan
    return entry_price - (position_margin - fee_close) / qty


def isolated_liquidation_price(
    qty: float, entry_price: float, leverage: float, *, extra_margin: float = 0.0,
    venue: str | Path | Venue = "bybit_linear", symbol: str = "BTCUSDT",
    at: Timestamp | None = None,
) -> float:
    """Liquidation (mark) price of a Bybit isolated linear position under the rules at ``at``.

    - ``qty``: signed size in base units; ``entry_price``: average entry;
      ``leverage``: the position's leverage (IM = notional / leverage);
    - ``extra_margin``: margin added to the position after opening (quote);
    - ``at``: picks the tier table and the rules (None = the latest: the
      2025-09-02 mark-price rules).

    Example (VENUES.md E-Y1, classic: IM 400, MM 100 -> 20,000 - 300):
        >>> isolated_liquidation_price(1.0, 20_000, 50, at="2024-01-01")
        19700.0
        >>> round(isolated_liquidation_price(1.0, 20_000, 50, at="2025-09-02"), 2)  # E-Y3
        19698.49
    """
    from .. import liquidation
    from . import load_venue

    bybit = load_venue(venue)
    if bybit.margin_model is not BYBIT_UTA:
        raise ValueError(f"venue {bybit.name} follows the {bybit.model} model, not Bybit's: use "
                         f"backtester.liquidation_price, which prices any venue by its model")
    return liquidation.liquidation_price(qty, entry_price, venue=bybit, symbol=symbol, at=at,
                                         leverage=leverage, extra_margin=extra_margin)


def bankruptcy_price(qty: float, entry_price: float, leverage: float, *,
                     extra_margin: float = 0.0) -> float:
    """Bybit linear isolated bankruptcy price, where the trade is settled when liquidated.

    Example (VENUES.md E-Y5: 1 BTC long at 10,000, 50x -> 10,000 x 49/50):
        >>> bankruptcy_price(1.0, 10_000, 50)
        9800.0
    """
    q, ep = float(qty), float(entry_price)
    margin = abs(q) * ep / float(leverage) + float(extra_margin)
    return bankruptcy_price_linear(q, ep, margin, 0.0)


def account_mm_rate(total_mm: float, margin_balance: float, haircut_loss: float,
                    order_loss: float) -> float:
    """UTA cross Account MM Rate ``total MM / (margin balance - haircut loss + order loss)``.

    The denominator is the glossary's, signs as written (VENUES.md §3.5): pass
    ``order_loss`` as Bybit reports it. Liquidation when the rate reaches 1; inf
    when the denominator is <= 0.
    """
    denominator = margin_balance - haircut_loss + order_loss
    if denominator <= 0.0:
        return math.inf
    return total_mm / denominator


# --- inverse contracts (reference only: the engine simulates linear ones) ---------------------


def bankruptcy_price_inverse(contracts: float, entry_price: float, margin_coin: float) -> float:
    """Inverse (coin-margined) bankruptcy price: ``Qc / (Qc/EP + s*M)`` (§3.4).

    With ``M = Qc/(EP*L)`` a long's is ``EP*L/(L+1)``, a short's ``EP*L/(L-1)``.
    """
    if contracts == 0.0:
        return math.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    return q / (q / entry_price + side * margin_coin)


def inverse_isolated_liquidation_price(contracts: float, entry_price: float, leverage: float,
                                       mmr: float, deduction: float,
                                       extra_margin: float) -> float:
    """Classic inverse isolated LP: ``Qc / (PV + s*(IM - MM + extra))``, PV = Qc/EP (§3.3)."""
    if contracts == 0.0:
        return math.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    pv = q / entry_price
    im = pv / leverage
    mm = pv * mmr - deduction
    return q / (pv + side * (im - mm + extra_margin))


def inverse_cross_bankruptcy_price(contracts: float, entry_price: float, balance: float,
                                   taker_fee: float) -> float:
    """Classic inverse cross BP: the balance pays the loss and the taker fee at BP (§3.4, E-Y7).

    Long: ``Qc*(1 + f) / (Qc/EP + B)``; short: ``Qc*(1 - f) / (Qc/EP - B)``.
    """
    if contracts == 0.0:
        return math.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    return q * (1.0 + side * taker_fee) / (q / entry_price + side * balance)


def inverse_cross_liquidation_price(contracts: float, entry_price: float, balance: float,
                                    mmr: float, taker_fee: float) -> float:
    """Classic inverse cross LP: the loss equals ``B - MM - fee at BP`` (§3.4, E-Y7).

    Long: ``Qc*(1/EP - 1/LP) = B - Qc/EP*mmr - Qc*f/BP``; a short mirrors it.
    """
    if contracts == 0.0:
        return math.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    bp = inverse_cross_bankruptcy_price(contracts, entry_price, balance, taker_fee)
    free = balance - q / entry_price * mmr - q * taker_fee / bp
    return 1.0 / (1.0 / entry_price + side * free / q)


def round_to_tick(price: float, tick: float, side: float) -> float:
    """A liquidation or bankruptcy price as the venue shows it: rounded to the tick AWAY
    from the trader (up for a long, down for a short), VENUES.md §6.10."""
    steps = price / tick
    if side > 0.0:
        return math.ceil(steps - 1e-9) * tick
    return math.floor(steps + 1e-9) * tick
