"""Binance USDⓈ-M futures: the ``binance`` margin model (VENUES.md §2).

Venues ``binance_usdm`` and ``flat``. Maintenance margin is the tax-bracket form
``N * mmr - cum`` by notional bracket at the mark (§2.3); a position is liquidated
when its margin balance reaches its MM (isolated: its own margin; cross: the
account's), and the liquidation (clearance) fee is charged on the closed notional.
A position above bracket 1 is first cut to the lower bracket's cap by one IOC at the
trigger (§2.7), and closed only if it, or the cross account, is still not compliant
after that order and its fee. Cross and isolated margin per symbol; one-way and hedge
mode.

The liquidation price is Binance's published formula (§2.5)::

    LP = (WB - TMM1 + UPNL1 + cum - s*Q*EP) / (Q*MMR - s*Q)

with (MMR, cum) of the bracket that holds the notional AT the liquidation price.
``bracket_liquidation_price`` is the reference implementation; the kernel solves
the same trigger its own way (``engine.rules.bracket_liquidation_price``), and the
two are checked against each other (``tests/test_model_calculators.py``).

Example (E-B1's BTC short leg: 10.72 wallet, TMM1 1.3, UPNL1 0.47, MMR 0.4%):
    >>> from backtester.venues import binance
    >>> round(binance.bracket_liquidation_price(-0.005, 9_451.53, 10.72 - 1.3 + 0.47,
    ...                                         [0.0], [float("inf")], [0.004], [0.0]), 2)
    11383.99
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from ..engine import enums
from .models import MarginModel, Position, Rule
from .spec import SymbolSpec

PARTIAL_RULES = {"lower_bracket": enums.Partial.LOWER_BRACKET, "none": enums.Partial.NONE}


def bracket_liquidation_price(qty: float, entry_price: float, collateral: float,
                              floors: Sequence[float], caps: Sequence[float],
                              mmrs: Sequence[float], cums: Sequence[float],
                              extra_rate: float = 0.0) -> float:
    """Binance's one-way liquidation price with the bracket at the price itself (§2.5).

    - ``collateral``: what backs the position, everything else frozen: its isolated
      margin, or ``WB - TMM1 + UPNL1`` in cross;
    - ``floors, caps, mmrs, cums``: the brackets (``floor < notional <= cap``);
    - ``extra_rate``: a rate of the notional required on top of MM (OKX's liquidation
      fee on bracket tiers).

    The formula is evaluated with every bracket, and the price that lies in its own
    bracket is the one (Binance: "substitute the maintenance margin rate and amount of
    the level [at the LP]"): the trigger is monotone in the price, so only the true
    root does, up to rounding on a bracket bound, where the candidate nearest its
    bracket wins. A value <= 0: a long is never liquidated, a short always is. NaN
    for a flat position.
    """
    if qty == 0.0:
        return math.nan
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    last = len(mmrs) - 1
    best, miss = math.nan, math.inf
    for k in range(last + 1):
        price = (collateral + cums[k] - side * q * entry_price) / (
            q * (mmrs[k] + extra_rate) - side * q)
        notional = q * price
        below = floors[k] - notional if k > 0 else 0.0  # bracket 1 holds every N <= its cap
        above = notional - caps[k] if k < last else 0.0
        outside = max(below, above, 0.0)
        if outside < miss:
            best, miss = price, outside
    return float(best)


class Binance(MarginModel):
    name = "binance"
    description = ("futures, MM = notional x mmr - cum by notional bracket at mark; liquidation "
                   "when margin balance <= MM; liquidation (clearance) fee on the closed notional")
    position_modes = ("one_way", "hedge")
    rules = {
        "partial_liquidation": Rule(
            "lower_bracket", "'lower_bracket': a triggered position above bracket 1 is first "
            "cut by one IOC at the trigger to the lower bracket's cap, paying the liquidation "
            "fee on the cut, and kept if the position (isolated) or the account (cross) is "
            "compliant after it (VENUES.md §2.7); 'none': always a full close",
            tuple(PARTIAL_RULES)),
        "loan_rate": Rule(0.0, "Multi-Assets mode: yearly interest on a negative USDT balance "
                          "(Binance charges none: it auto-exchanges collateral instead)"),
    }
    collateral = True  # Multi-Assets mode: other coins back the cross account after haircuts
    collateral_cross_only = True
    collateral_note = "Binance Multi-Assets"
    adl_ranking = "binance"  # VENUES.md §2.7: PnL% x margin ratio

    def symbol_rows(self, spec: SymbolSpec, rules_in_force: Mapping[str, Any]
                    ) -> dict[int, float]:
        return {
            enums.Sym.MM_RULE: enums.MM.BRACKET,
            enums.Sym.FEE_RULE: enums.FeeInMargin.NONE,
            enums.Sym.SETTLEMENT: enums.Settle.AT_TRIGGER,
            enums.Sym.FUNDING_RULE: enums.FundingFrom.POSITION,
            enums.Sym.PARTIAL: PARTIAL_RULES[rules_in_force["partial_liquidation"]],
        }

    def account_rows(self, rules_in_force: Mapping[str, Any]) -> dict[int, float]:
        return {enums.AccountRule.CROSS_CLOSE: enums.CrossClose.AT_TRIGGER,
                enums.AccountRule.LOAN_RATE: rules_in_force["loan_rate"] / 8760.0}

    def liquidation_price(self, position: Position, backing: float, margin_mode: str) -> float:
        return bracket_liquidation_price(position.qty, position.entry_price, backing,
                                         *position.tier_table())


BINANCE = Binance()
