"""OKX: the ``okx`` margin model (VENUES.md §4).

Venue ``okx_swap``.

- Position tiers are in contracts and the whole position takes its tier's rate,
  with no deduction: ``MM = size * contract_size * mark * mmr_k``. MM therefore
  jumps where the size crosses a tier bound (it is linear in the price for a
  given size, since the tier follows the size, not the notional).
- Liquidation starts when ``margin ratio = equity / (MM + liquidation fee)`` falls
  to 100% (§4.2); the liquidation fee is the taker rate on the notional at mark.
  The liquidation price is therefore ``(EP -+ M/Q) / (1 -+ (mmr + fee))`` (§4.6,
  E-O2), ``M`` the isolated margin or, in cross, the rest of the account's equity
  less its MM and fees (its collateral frozen at its value).
- From tier 3 up a triggered position is first cut two tiers down (§4.4).
- Multi-currency margin: other currencies back the cross account at their
  progressive discounted value (``discounted_value``: slices like tax brackets,
  §4.5); a negative quote balance is a loan, counted in full and charged interest.

Example (VENUES.md E-O2: 1 BTC at 60,000, 10x isolated, MMR 0.4%, taker 0.05%):
    >>> from backtester.venues import okx
    >>> round(okx.liquidation_price(1.0, 60_000.0, 6_000.0, 0.004, 0.0005), 2)
    54244.1
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ..engine import enums
from ..engine import rules as engine_rules
from .binance import bracket_liquidation_price
from .models import Columns, MarginModel, Position, Rule
from .spec import SymbolSpec

PARTIAL_RULES = {"two_tiers": enums.Partial.TWO_TIERS, "to_tier_1": enums.Partial.TO_TIER_1,
                 "none": enums.Partial.NONE}


class Okx(MarginModel):
    name = "okx"
    description = ("OKX: position tiers in contracts, the whole position at its tier's rate (no "
                   "deduction); liquidation when equity <= MM + liquidation fee; multi-currency "
                   "adjusted equity with discount tiers")
    rules = {
        "liquidation_fee_in_trigger": Rule(True, "the trigger is equity <= MM + "
                                           "liquidation fee (margin ratio <= 100%)"),
        "partial_liquidation": Rule("two_tiers", "position reduction before a full close: "
                                    "'two_tiers' (tier >= 3 drops two tiers), 'to_tier_1' "
                                    "(legacy 2020 rule) or 'none'", tuple(PARTIAL_RULES)),
        "loan_rate": Rule(0.0, "multi-currency margin: yearly interest rate on a negative "
                          "quote balance (the loan that auto-borrowing makes of it)"),
    }
    params = {"contract_size": "base units per contract (OKX ctVal)"}
    collateral = True

    def symbol_rows(self, spec: SymbolSpec, rules_in_force: Mapping[str, Any]
                    ) -> dict[int, float]:
        return {
            # tiers in contracts are kept in base units: the size picks the tier
            enums.Sym.MM_RULE: (enums.MM.BY_SIZE if spec.tier_unit == "contracts"
                                else enums.MM.BRACKET),
            enums.Sym.FEE_RULE: (enums.FeeInMargin.LIQUIDATION
                                 if rules_in_force["liquidation_fee_in_trigger"]
                                 else enums.FeeInMargin.NONE),
            enums.Sym.SETTLEMENT: enums.Settle.AT_TRIGGER,
            enums.Sym.FUNDING_RULE: enums.FundingFrom.POSITION,
            enums.Sym.PARTIAL: PARTIAL_RULES[rules_in_force["partial_liquidation"]],
        }

    def account_rows(self, rules_in_force: Mapping[str, Any]) -> dict[int, float]:
        return {enums.AccountRule.CROSS_CLOSE: enums.CrossClose.AT_TRIGGER,
                enums.AccountRule.LOAN_RATE: rules_in_force["loan_rate"] / 8760.0}  # charged hourly

    def liquidation_price(self, position: Position, backing: float, margin_mode: str) -> float:
        fee = position.spec.liquidation_fee if position.rules["liquidation_fee_in_trigger"] \
            else 0.0
        if position.spec.tier_unit == "contracts":
            mmr = position.tier_table()[2][position.tier()]  # the size's tier: fixed in P
            return liquidation_price(position.qty, position.entry_price, backing, mmr, fee)
        return bracket_liquidation_price(position.qty, position.entry_price, backing,
                                         *position.tier_table(), extra_rate=fee)


OKX = Okx()


# --- the trigger and the liquidation price ----------------------------------------------------


def margin_ratio(equity: float, maintenance: float, liquidation_fee_amount: float) -> float:
    """``equity / (MM + liquidation fee)``: liquidation when <= 1 (inf with nothing required)."""
    required = maintenance + liquidation_fee_amount
    if required <= 0.0:
        return math.inf
    return equity / required


def liquidation_price(qty: float, entry_price: float, collateral: float, mmr: float,
                      fee_rate: float) -> float:
    """Mark price where ``collateral + s*Q*(P - EP) = Q*P*(mmr + fee)`` (equity = MM + fee).

    Isolated (§4.6, freqtrade's OKX form): ``collateral`` is the position's margin,
    so ``LP_long = (EP - M/Q) / (1 - (mmr + fee))`` and ``LP_short = (EP + M/Q) /
    (1 + mmr + fee)``. Cross, others frozen: the collateral is the equity of the
    rest of the account less its MM and fees. ``qty`` in base units; ``mmr`` is
    the tier of the position's size (it does not move with the price). NaN if flat.
    """
    if qty == 0.0:
        return math.nan
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    return (entry_price - side * collateral / q) / (1.0 - side * (mmr + fee_rate))


def spot_isolated_liquidation_price(side: float, position_assets: float, liability: float,
                                    interest: float, mmr: float, fee_rate: float) -> float:
    """Estimated LP of a spot-margin isolated position (§4.6, OKX help 6997123251341).

    A long holds ``position_assets`` of the base and owes ``liability + interest``
    of the quote: ``LP = (liab + int)*(1 + mmr)*(1 + fee) / assets``. A short holds
    quote and owes base: ``LP = assets / ((liab + int)*(1 + mmr)*(1 + fee))``.
    (Reference only: the engine does not simulate OKX spot margin.)
    """
    owed = (liability + interest) * (1.0 + mmr) * (1.0 + fee_rate)
    if side > 0.0:
        return owed / position_assets
    return position_assets / owed


# --- multi-currency margin ----------------------------------------------------------------


def discount_columns(floors, caps, rates, bounds_in_coin: bool = False) -> Columns:
    """One column holding discount tiers as the kernel keeps a collateral's: bounds in the
    tier bounds, the rates where the maintenance rates go (``engine.rules.collateral_value``)."""
    return Columns.bare({enums.Sym.DISCOUNT_IN_COIN: 1.0 if bounds_in_coin else 0.0},
                        floors=tuple(floors), caps=tuple(caps), mmrs=tuple(rates))


def discounted_value(amount: float, floors, caps, rates, n: int | None = None) -> float:
    """Sum over tiers of (slice of ``amount`` inside the tier) x its rate: tax-bracket style
    (the engine's ``discounted_value``).

    OKX's discount rates (§4.5, E-O1) and the portfolio-margin scaling of the
    liquidation-cost term (§4.8) both work this way. ``amount`` <= 0 gives 0;
    ``n``: the tiers in use (default: all).

    Example (E-O1: 5M USD of BETH, 2M x 0.95 + 2M x 0.85 + 1M x 0.5):
        >>> discounted_value(5e6, [0, 2e6, 4e6, 8e6], [2e6, 4e6, 8e6, float("inf")],
        ...                  [0.95, 0.85, 0.5, 0.0])
        4100000.0
    """
    n = len(rates) if n is None else n
    c = discount_columns(floors[:n], caps[:n], rates[:n])
    return float(engine_rules.discounted_value(float(amount), 0, c.tiers, c.n_tiers))


def currency_adjusted_equity(equity: float, price_usd: float, floors, caps, rates, n: int,
                             bounds_in_usd: bool) -> float:
    """One currency's contribution to adjusted equity (USD), §4.5.

    A positive equity (coins) counts at its discounted value, the discount tiers'
    bounds in USD (``bounds_in_usd``) or in coins (the engine's
    ``collateral_value``); a negative one is a loan and counts in full at
    ``price_usd``.
    """
    if equity <= 0.0:
        return equity * price_usd
    c = discount_columns(floors[:n], caps[:n], rates[:n], bounds_in_coin=not bounds_in_usd)
    return float(engine_rules.collateral_value(0, float(equity), float(price_usd), c.sym,
                                               c.tiers, c.n_tiers))


def loan_interest(liability: float, annual_rate: float, hours: float) -> float:
    """Interest accrued on a loan (a negative currency balance) over ``hours``.

    OKX charges borrow interest hourly at ``annual_rate / 8760`` on the amount
    owed (the rate itself is the venue's, per currency and date: [U] in
    VENUES.md). ``liability`` is the positive amount owed, in the currency.
    """
    if liability <= 0.0:
        return 0.0
    return liability * annual_rate / 8760.0 * hours


def adjusted_equity(equities: dict[str, float], prices_usd: dict[str, float], tiers: dict,
                    ) -> float:
    """Adjusted equity (USD) of a multi-currency account: the sum of ``currency_adjusted_equity``.

    - ``equities``: currency -> equity in that currency (cash + UPL + isolated
      margin - accrued interest; negative = a loan);
    - ``prices_usd``: currency -> USD price (USDT at 1.0 unless depegged);
    - ``tiers``: currency -> ``DiscountTiers`` (``venue.discount_tiers(ccy, at)``);
      a currency without tiers counts at face value (rate 1).

    Example (VENUES.md E-O1, BETH worth 5M USD: 2M x 0.95 + 2M x 0.85 + 1M x 0.5):
        >>> from backtester.venues import load_venue
        >>> beth = load_venue("okx_swap").discount_tiers("BETH")
        >>> adjusted_equity({"BETH": 2_500, "USDT": -100_000}, {"BETH": 2_000, "USDT": 1.0},
        ...                 {"BETH": beth})
        4000000.0
    """
    total = 0.0
    for currency, equity in equities.items():
        if currency not in prices_usd:
            raise ValueError(f"no USD price for {currency}; give prices_usd[{currency!r}]")
        price = float(prices_usd[currency])
        table = tiers.get(currency)
        if table is None:
            total += float(equity) * price
            continue
        floors, caps, rates, n = table.arrays()
        total += currency_adjusted_equity(float(equity), price, floors, caps, rates, n,
                                          table.unit == "usd")
    return total

