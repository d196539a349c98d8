"""OKX: position tiers, the margin-ratio trigger, isolated prices, multi-currency equity.

VENUES.md §4. Compiled functions take plain floats and arrays (no allocation,
``_nrt=False``; they run under ``NUMBA_DISABLE_JIT=1``).

- Position tiers are in contracts and the whole position takes its tier's rate,
  with no deduction: ``MM = size * contract_size * mark * mmr_k``. MM therefore
  jumps where the size crosses a tier bound (it is linear in the price for a
  given size, since the tier follows the size, not the notional).
- Liquidation starts when ``margin ratio = equity / (MM + liquidation fee)`` falls
  to 100% (§4.2); the liquidation fee is the taker rate on the notional at mark.
- Multi-currency margin: each currency's equity counts in USD through
  progressive discount tiers (``discounted_value``: slices like tax brackets,
  §4.5); a negative equity is a loan, counted in full and charged interest.

Example (VENUES.md E-O2: 1 BTC at 60,000, 10x isolated, MMR 0.4%, taker 0.05%):
    >>> from backtester.venues import okx
    >>> round(okx.liquidation_price(1.0, 60_000.0, 6_000.0, 0.004, 0.0005), 2)
    54244.1
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ..engine.margin import tier_index

# --- tiers, MM and the trigger ------------------------------------------------------------


@njit(cache=True, _nrt=False)
def position_tier(contracts, caps, n):
    """Index of the tier holding a position of ``|contracts|`` (``floor < size <= cap``)."""
    return tier_index(abs(contracts), caps, n)


@njit(cache=True, _nrt=False)
def maintenance_margin(contracts, contract_size, mark_price, caps, mmrs, n):
    """MM of a position: its whole notional at its tier's rate, ``|size|*ctVal*mark*mmr_k``."""
    k = tier_index(abs(contracts), caps, n)
    return abs(contracts) * contract_size * mark_price * mmrs[k]


@njit(cache=True, _nrt=False)
def liquidation_fee(contracts, contract_size, mark_price, fee_rate):
    """Fee a liquidation would charge: the (taker) rate on the notional at mark (§4.4)."""
    return abs(contracts) * contract_size * mark_price * fee_rate


@njit(cache=True, _nrt=False)
def margin_ratio(equity, maintenance, liquidation_fee_amount):
    """``equity / (MM + liquidation fee)``: liquidation when <= 1 (inf with nothing required)."""
    required = maintenance + liquidation_fee_amount
    if required <= 0.0:
        return np.inf
    return equity / required


@njit(cache=True, _nrt=False)
def liquidation_price(qty, entry_price, collateral, mmr, fee_rate):
    """Mark price where ``collateral + s*Q*(P - EP) = Q*P*(mmr + fee)`` (equity = MM + fee).

    Isolated (§4.6, freqtrade's OKX form): ``collateral`` is the position's margin,
    so ``LP_long = (EP - M/Q) / (1 - (mmr + fee))`` and ``LP_short = (EP + M/Q) /
    (1 + mmr + fee)``. Cross, others frozen: the collateral is the equity of the
    rest of the account less its MM and fees. ``qty`` in base units; ``mmr`` is
    the tier of the position's size (it does not move with the price). NaN if flat.
    """
    if qty == 0.0:
        return np.nan
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    return (entry_price - side * collateral / q) / (1.0 - side * (mmr + fee_rate))


@njit(cache=True, _nrt=False)
def spot_isolated_liquidation_price(side, position_assets, liability, interest, mmr, fee_rate):
    """Estimated LP of a spot-margin isolated position (§4.6, OKX help 6997123251341).

    A long holds ``position_assets`` of the base and owes ``liability + interest``
    of the quote: ``LP = (liab + int)*(1 + mmr)*(1 + fee) / assets``. A short holds
    quote and owes base: ``LP = assets / ((liab + int)*(1 + mmr)*(1 + fee))``.
    """
    owed = (liability + interest) * (1.0 + mmr) * (1.0 + fee_rate)
    if side > 0.0:
        return owed / position_assets
    return position_assets / owed


@njit(cache=True, _nrt=False)
def partial_liquidation_target(contracts, caps, n, rule):
    """Size (contracts) a partial liquidation cuts a position down to (§4.4).

    ``rule`` 0 (``"two_tiers"``): from tier 3 up, drop two tiers, to the cap of
    tier k-2; ``rule`` 1 (``"to_tier_1"``, legacy 2020): from tier 3 up, down to
    tier 1's cap. Tiers 1-2, or ``rule`` 2 (``"none"``): 0, a full liquidation.
    """
    size = abs(contracts)
    k = tier_index(size, caps, n)
    if k < 2 or rule == 2:
        return 0.0
    if rule == 1:
        return caps[0]
    return caps[k - 2]


PARTIAL_RULES = ("two_tiers", "to_tier_1", "none")

# --- multi-currency margin ----------------------------------------------------------------


@njit(cache=True, _nrt=False)
def discounted_value(amount, floors, caps, rates, n):
    """Sum over tiers of (slice of ``amount`` inside the tier) x its rate: tax-bracket style.

    OKX's discount rates (§4.5, E-O1) and the portfolio-margin scaling of the
    liquidation-cost term (§4.8) both work this way. ``amount`` <= 0 gives 0.
    """
    total = 0.0
    for k in range(n):
        if amount <= floors[k]:
            break
        top = amount if amount < caps[k] else caps[k]
        total += (top - floors[k]) * rates[k]
    return total


@njit(cache=True, _nrt=False)
def currency_adjusted_equity(equity, price_usd, floors, caps, rates, n, bounds_in_usd):
    """One currency's contribution to adjusted equity (USD), §4.5.

    A positive equity (coins) counts through the discount tiers, whose bounds are
    in USD (``bounds_in_usd``) or in coins; a negative one is a loan and counts
    in full at ``price_usd``.
    """
    if equity <= 0.0:
        return equity * price_usd
    if bounds_in_usd:
        return discounted_value(equity * price_usd, floors, caps, rates, n)
    return discounted_value(equity, floors, caps, rates, n) * price_usd


@njit(cache=True, _nrt=False)
def loan_interest(liability, annual_rate, hours):
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
        total += float(currency_adjusted_equity(float(equity), price, floors, caps, rates, n,
                                                table.unit == "usd"))
    return total
