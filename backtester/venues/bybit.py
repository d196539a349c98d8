"""Bybit Unified Trading Account: liquidation, bankruptcy and margin formulas (VENUES.md §3).

The compiled functions take plain floats and tier arrays ``(floors, caps, mmrs,
deds, n)`` (``SymbolSpec.tier_arrays()``; ``deds`` are the mmDeductions) so the
engine kernel can call them; they allocate nothing (``_nrt=False``) and run
unchanged under ``NUMBA_DISABLE_JIT=1``. ``qty`` is signed (long > 0), in base
units for linear contracts; ``contracts`` is signed, in USD for inverse ones.

Rules by date (``load_venue("bybit_linear").rules(at)``):

- classic (to 2025-09-01): isolated MM on the ENTRY value,
  ``LP = EP -+ (IM - MM + extra) / Q`` with ``IM = Q*EP/L``, ``MM = Q*EP*mmr - ded``;
- from 2025-09-02: MM on the MARK value, and the taker fee to close at the
  bankruptcy price, ``Q*EP*(1 -+ 1/L)*taker``, inside both IM and MM.

A liquidated position is settled at its bankruptcy price (equity zero): the
trader loses the whole position margin. Above the lowest risk tier the engine
first cuts the position down to a lower tier's limit (``step_down_value_*``).

Example (VENUES.md E-Y7, inverse cross: shown by Bybit as 5,739.50):
    >>> from backtester.venues import bybit
    >>> lp = bybit.inverse_cross_liquidation_price(10_000.0, 8_000.0, 0.5, 0.005, 0.00075)
    >>> round(lp, 2), bybit.round_to_tick(lp, 0.5, 1.0)
    (5739.08, 5739.5)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from numba import njit

from ..engine.margin import liquidation_price as _binance_form
from ..engine.margin import tier_index
from .spec import Timestamp
from .venue import Venue

# --- compiled formulas ---------------------------------------------------------------------


@njit(cache=True, _nrt=False)
def fee_to_close(qty, entry_price, leverage, taker_fee):
    """Taker fee to close at the bankruptcy price: ``Q*EP*(1 - s/L)*taker`` (§3.3, §3.7)."""
    side = 1.0 if qty > 0.0 else -1.0
    return abs(qty) * entry_price * (1.0 - side / leverage) * taker_fee


@njit(cache=True, _nrt=False)
def order_cost(qty, price, leverage, taker_fee):
    """Cost of an opening order: IM + fee to open + fee to close at bankruptcy (§3.7)."""
    notional = abs(qty) * price
    return notional / leverage + notional * taker_fee + fee_to_close(qty, price, leverage,
                                                                       taker_fee)


@njit(cache=True, _nrt=False)
def classic_isolated_liquidation_price(qty, entry_price, leverage, extra_margin, floors, caps,
                                       mmrs, deds, n):
    """Classic isolated LP: ``EP - s*(IM - MM + extra)/Q``, IM and MM on the entry value.

    The tier is the one holding the entry value ``Q*EP`` (MM is fixed at entry).
    NaN for a flat position.
    """
    if qty == 0.0:
        return np.nan
    q = abs(qty)
    side = 1.0 if qty > 0.0 else -1.0
    value = q * entry_price
    k = tier_index(value, caps, n)
    im = value / leverage
    mm = value * mmrs[k] - deds[k]
    return entry_price - side * (im - mm + extra_margin) / q


@njit(cache=True, _nrt=False)
def mark_isolated_liquidation_price(qty, entry_price, position_margin, fee_close, floors, caps,
                                    mmrs, deds, n):
    """Isolated LP under the 2025-09-02 rules: MM on the mark, fee to close in IM and MM.

    ``position_margin`` is what the position holds (IM with its fee to close, plus
    margin added); the trigger ``M + s*Q*(P - EP) = Q*P*mmr_k - ded_k + fee_close``
    is Binance's form with collateral ``M - fee_close``, the tier taken at the LP.
    With ``M = Q*EP/L + fee_close`` the fee cancels out (VENUES.md E-Y3).
    """
    return _binance_form(qty, entry_price, position_margin - fee_close, floors, caps, mmrs,
                         deds, n)


@njit(cache=True, _nrt=False)
def bankruptcy_price_linear(qty, entry_price, position_margin, fee_close):
    """Price where the position's margin (less its reserved fee to close) is gone.

    ``EP - s*(M - fee_close)/Q``; with ``M = Q*EP/L (+ fee_close)`` that is
    ``EP*(1 - s/L)`` (VENUES.md §3.4). NaN for a flat position.
    """
    if qty == 0.0:
        return np.nan
    return entry_price - (position_margin - fee_close) / qty


@njit(cache=True, _nrt=False)
def bankruptcy_price_inverse(contracts, entry_price, margin_coin):
    """Inverse (coin-margined) bankruptcy price: ``Qc / (Qc/EP + s*M)`` (§3.4).

    With ``M = Qc/(EP*L)`` a long's is ``EP*L/(L+1)``, a short's ``EP*L/(L-1)``.
    """
    if contracts == 0.0:
        return np.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    return q / (q / entry_price + side * margin_coin)


@njit(cache=True, _nrt=False)
def inverse_isolated_liquidation_price(contracts, entry_price, leverage, mmr, deduction,
                                       extra_margin):
    """Classic inverse isolated LP: ``Qc / (PV + s*(IM - MM + extra))``, PV = Qc/EP (§3.3)."""
    if contracts == 0.0:
        return np.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    pv = q / entry_price
    im = pv / leverage
    mm = pv * mmr - deduction
    return q / (pv + side * (im - mm + extra_margin))


@njit(cache=True, _nrt=False)
def inverse_cross_bankruptcy_price(contracts, entry_price, balance, taker_fee):
    """Classic inverse cross BP: the balance pays the loss and the taker fee at BP (§3.4, E-Y7).

    Long: ``Qc*(1 + f) / (Qc/EP + B)``; short: ``Qc*(1 - f) / (Qc/EP - B)``.
    """
    if contracts == 0.0:
        return np.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    return q * (1.0 + side * taker_fee) / (q / entry_price + side * balance)


@njit(cache=True, _nrt=False)
def inverse_cross_liquidation_price(contracts, entry_price, balance, mmr, taker_fee):
    """Classic inverse cross LP: the loss equals ``B - MM - fee at BP`` (§3.4, E-Y7).

    Long: ``Qc*(1/EP - 1/LP) = B - Qc/EP*mmr - Qc*f/BP``; a short mirrors it.
    """
    if contracts == 0.0:
        return np.nan
    q = abs(contracts)
    side = 1.0 if contracts > 0.0 else -1.0
    bp = inverse_cross_bankruptcy_price(contracts, entry_price, balance, taker_fee)
    free = balance - q / entry_price * mmr - q * taker_fee / bp
    return 1.0 / (1.0 / entry_price + side * free / q)


@njit(cache=True, _nrt=False)
def round_to_tick(price, tick, side):
    """A liquidation or bankruptcy price as the venue shows it: rounded to the tick AWAY
    from the trader (up for a long, down for a short), VENUES.md §6.10."""
    steps = price / tick
    if side > 0.0:
        return math.ceil(steps - 1e-9) * tick
    return math.floor(steps + 1e-9) * tick


@njit(cache=True, _nrt=False)
def step_down_value_isolated(value, position_equity, floors, caps, mmrs, deds, n):
    """Position value to cut an isolated position down to, in a partial liquidation (§3.6).

    Cutting a position at the mark releases its margin in proportion, so its
    equity scales with the value kept: the target is the limit ``cap_j`` of the
    highest lower tier j with ``equity * cap_j / value >= cap_j*mmr_j - ded_j``.
    Returns ``value`` when MM already holds, 0 when no lower tier helps (or the
    position is in the lowest tier): then it is closed at the bankruptcy price.
    """
    k = tier_index(value, caps, n)
    if position_equity >= value * mmrs[k] - deds[k]:
        return value
    for j in range(k - 1, -1, -1):
        target = caps[j]
        if position_equity * target / value >= target * mmrs[j] - deds[j]:
            return target
    return 0.0


@njit(cache=True, _nrt=False)
def step_down_value_cross(value, free_equity, floors, caps, mmrs, deds, n):
    """Same for a cross position: ``free_equity`` (margin balance less the other positions'
    MM) stays when the position is cut at the mark, so the target is the limit of the
    highest lower tier whose MM it covers. ``value`` when MM holds; 0 = close it all."""
    k = tier_index(value, caps, n)
    if free_equity >= value * mmrs[k] - deds[k]:
        return value
    for j in range(k - 1, -1, -1):
        if free_equity >= caps[j] * mmrs[j] - deds[j]:
            return caps[j]
    return 0.0


@njit(cache=True, _nrt=False)
def account_mm_rate(total_mm, margin_balance, haircut_loss, order_loss):
    """UTA cross Account MM Rate ``total MM / (margin balance - haircut loss + order loss)``.

    The denominator is the glossary's, signs as written (VENUES.md §3.5): pass
    ``order_loss`` as Bybit reports it. Liquidation when the rate reaches 1; inf
    when the denominator is <= 0.
    """
    denominator = margin_balance - haircut_loss + order_loss
    if denominator <= 0.0:
        return np.inf
    return total_mm / denominator


# --- Python entry points ----------------------------------------------------------------------


def _venue(venue) -> Venue:
    from . import load_venue

    return load_venue(venue)


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
    v = _venue(venue)
    spec = v.spec(symbol, at)
    rules = v.rules(at)
    floors, caps, mmrs, deds, n = spec.tier_arrays()
    q, ep, lev = float(qty), float(entry_price), float(leverage)
    if lev <= 0 or ep <= 0:
        raise ValueError(f"leverage and entry_price must be positive, got {leverage}, "
                         f"{entry_price}")
    if rules["margin_price"] == "entry":
        return float(classic_isolated_liquidation_price(q, ep, lev, float(extra_margin), floors,
                                                        caps, mmrs, deds, n))
    fee = fee_to_close(q, ep, lev, spec.taker_fee) if rules["fee_to_close_in_margin"] else 0.0
    margin = abs(q) * ep / lev + fee + float(extra_margin)
    return float(mark_isolated_liquidation_price(q, ep, margin, fee, floors, caps, mmrs, deds, n))


def bankruptcy_price(qty: float, entry_price: float, leverage: float, *,
                     extra_margin: float = 0.0) -> float:
    """Bybit linear isolated bankruptcy price, where the trade is settled when liquidated.

    Example (VENUES.md E-Y5: 1 BTC long at 10,000, 50x -> 10,000 x 49/50):
        >>> bankruptcy_price(1.0, 10_000, 50)
        9800.0
    """
    q, ep = float(qty), float(entry_price)
    margin = abs(q) * ep / float(leverage) + float(extra_margin)
    return float(bankruptcy_price_linear(q, ep, margin, 0.0))
