"""Liquidation and bankruptcy prices of linear perpetual positions (one-way mode).

The user-facing side of ``backtester.engine.margin``: these functions check their
inputs, look up the venue's tier table, and call the same compiled functions the
backtest kernel uses, so a price shown here is the price the simulation acts on.

The liquidation price (LP) is Binance's published formula (VENUES.md §2.5)::

    LP = (WB - TMM1 + UPNL1 + cum - s*Q*EP) / (Q*MMR - s*Q)

with (MMR, cum) taken from the tier that holds the notional AT the LP, not at
entry. WB is the isolated margin (isolated) or the cross wallet balance (cross);
TMM1 and UPNL1 are the maintenance margin and unrealized PnL of the account's
other cross positions, held at their current marks (0 in isolated mode).
The bankruptcy price (BP) is where the position's equity reaches zero.

These are the ``binance`` margin model's formulas (``binance_usdm``, ``flat``). An
isolated position on ``bybit_linear`` is priced by Bybit's own rules
(``backtester.venues.bybit``); other models' formulas are in
``backtester.venues.okx`` and ``backtester.venues.kraken``, and these functions
refuse them rather than answer with Binance's formula.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .engine import margin as _margin
from .venues import Venue, load_venue
from .venues.spec import Timestamp, normalise_symbol

__all__ = ["CrossLiquidation", "bankruptcy_price", "cross_liquidation_prices",
           "liquidation_price"]

MARGIN_MODES = ("isolated", "cross")


def _number(name: str, value, *, positive: bool = False, allow_negative: bool = True) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and x <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if not allow_negative and x < 0:
        raise ValueError(f"{name} must not be negative, got {value!r}")
    return x


def _collateral(qty: float, entry_price: float, venue: Venue, symbol: str, margin_mode: str,
                margin, leverage, wallet_balance, at, others: float) -> float:
    """What backs the position: its isolated margin, or the cross wallet plus ``others``."""
    if margin_mode not in MARGIN_MODES:
        raise ValueError(f"margin_mode must be 'isolated' or 'cross', got {margin_mode!r}")
    if margin_mode == "isolated":
        if wallet_balance is not None or others != 0.0:
            raise ValueError(
                "in isolated mode only the position's own margin counts (Binance: TMM1 = "
                "UPNL1 = 0); drop wallet_balance/other_* or use margin_mode='cross'"
            )
        if (margin is None) == (leverage is None):
            raise ValueError(
                "isolated mode needs exactly one of margin (the quote amount the position "
                "holds) or leverage (margin = |qty| * entry_price / leverage)"
            )
        if margin is not None:
            return _number("margin", margin, allow_negative=False)
        lev = _number("leverage", leverage, positive=True)
        venue.check_leverage(symbol, lev, at=at, notional=abs(qty) * entry_price)
        return float(_margin.initial_margin(qty, entry_price, lev))
    if margin is not None or leverage is not None:
        raise ValueError(
            "in cross mode the position is backed by the account, not its own margin; "
            "give wallet_balance (and other_maintenance / other_unrealized) instead of "
            "margin/leverage"
        )
    if wallet_balance is None:
        raise ValueError("cross mode needs wallet_balance: the cross wallet balance in quote")
    return _number("wallet_balance", wallet_balance) + others


def _binance_model(venue: Venue, what: str) -> None:
    """Refuse a venue whose liquidations are not Binance's formula."""
    if venue.model == "binance":
        return
    module = {"bybit_uta": "bybit", "okx": "okx", "kraken_spot": "kraken"}[venue.model]
    raise ValueError(
        f"{what} uses Binance's formula; venue {venue.name} follows the {venue.model!r} "
        f"margin model: use the functions of backtester.venues.{module}"
    )


def _position(qty, entry_price) -> tuple[float, float]:
    return _number("qty", qty), _number("entry_price", entry_price, positive=True)


def liquidation_price(
    qty: float,
    entry_price: float,
    *,
    venue: str | Path | Venue = "binance_usdm",
    symbol: str = "BTCUSDT",
    margin_mode: str = "isolated",
    margin: float | None = None,
    leverage: float | None = None,
    wallet_balance: float | None = None,
    other_maintenance: float = 0.0,
    other_unrealized: float = 0.0,
    at: Timestamp | None = None,
) -> float:
    """Mark price at which a position is liquidated, everything else held fixed.

    - ``qty``: signed position in base units (0.5 = long half a BTC, -2 = short 2).
    - ``entry_price``: its average entry price.
    - ``venue`` / ``symbol`` / ``at``: whose tier table applies, and its version in
      force at time ``at`` (None = the latest).
    - ``margin_mode="isolated"``: give ``margin``, the quote amount held by the
      position (initial margin plus any added), or ``leverage`` alone (margin =
      ``|qty| * entry_price / leverage``, checked against the venue's cap).
    - ``margin_mode="cross"``: give ``wallet_balance`` (the cross wallet, realized
      PnL, fees and funding included), ``other_maintenance`` (the maintenance
      margin of the other cross positions, TMM1) and ``other_unrealized`` (their
      unrealized PnL, UPNL1). The others are frozen at their current marks, so the
      result moves when they do; ``cross_liquidation_prices`` computes both terms.

    Returns NaN for ``qty == 0``. A value <= 0 means a long is never liquidated
    (Binance shows "--"), or a short is liquidatable at any price. On a Bybit venue an
    isolated position follows Bybit's rules in force at ``at`` (VENUES.md §3.3).

    Example (a 50x long at 20,000 under a flat 0.5% rate; closed form
    ``EP*(1 - 1/L)/(1 - MMR)``):
        >>> round(liquidation_price(0.01, 20_000, venue="flat", leverage=50), 2)
        19698.49
        >>> round(liquidation_price(-0.005, 9_451.53, margin_mode="cross", wallet_balance=10.72,
        ...                         other_maintenance=1.3, other_unrealized=0.47), 2)
        11383.99
    """
    qty, entry_price = _position(qty, entry_price)
    venue = load_venue(venue)
    if venue.model == "bybit_uta" and margin_mode == "isolated":
        return _bybit_isolated(qty, entry_price, venue, symbol, margin, leverage,
                               wallet_balance, at)
    _binance_model(venue, "liquidation_price")
    spec = venue.spec(symbol, at)
    others = _number("other_unrealized", other_unrealized) - _number(
        "other_maintenance", other_maintenance, allow_negative=False
    )
    collateral = _collateral(qty, entry_price, venue, symbol, margin_mode, margin, leverage,
                             wallet_balance, at, others)
    floors, caps, mmrs, cums, n = spec.tier_arrays()
    return float(_margin.liquidation_price(qty, entry_price, collateral, floors, caps, mmrs,
                                           cums, n))


def _bybit_isolated(qty, entry_price, venue, symbol, margin, leverage, wallet_balance, at):
    """Bybit isolated: the classic or the 2025-09-02 rules, whichever were in force at ``at``."""
    from .venues import bybit

    collateral = _collateral(qty, entry_price, venue, symbol, "isolated", margin, leverage,
                             wallet_balance, at, 0.0)
    if qty == 0.0:
        return float("nan")
    # a margin given outright is the leverage it implies (IM = |q| * EP / L)
    lev = leverage if leverage is not None else abs(qty) * entry_price / collateral
    return bybit.isolated_liquidation_price(qty, entry_price, lev, venue=venue, symbol=symbol,
                                            at=at)


def bankruptcy_price(
    qty: float,
    entry_price: float,
    *,
    venue: str | Path | Venue = "binance_usdm",
    symbol: str = "BTCUSDT",
    margin_mode: str = "isolated",
    margin: float | None = None,
    leverage: float | None = None,
    wallet_balance: float | None = None,
    other_unrealized: float = 0.0,
    at: Timestamp | None = None,
) -> float:
    """Mark price at which the position's equity is zero: ``EP - s * collateral / Q``.

    Same parameters as ``liquidation_price`` (the venue only checks ``leverage``).
    The other positions' maintenance margin plays no part: bankruptcy is equity =
    0, not equity = MM (VENUES.md §2.5). Below the bankruptcy price (long) the
    loss exceeds the collateral and the insurance fund pays the difference.

    Example (a 10x isolated long at 20,000 loses its margin 10% lower):
        >>> bankruptcy_price(0.5, 20_000, venue="flat", leverage=10)
        18000.0
    """
    qty, entry_price = _position(qty, entry_price)
    venue = load_venue(venue)
    if venue.model != "bybit_uta" or margin_mode != "isolated":
        _binance_model(venue, "bankruptcy_price")
    venue.spec(symbol, at)
    collateral = _collateral(qty, entry_price, venue, symbol, margin_mode, margin, leverage,
                             wallet_balance, at, _number("other_unrealized", other_unrealized))
    return float(_margin.bankruptcy_price(qty, entry_price, collateral))


@dataclass(frozen=True)
class CrossLiquidation:
    """A cross account's state at the marks, and each position's LP with the others frozen.

    ``positions`` is indexed by symbol with columns ``qty, entry_price, mark_price,
    notional, maintenance_margin, unrealized_pnl, liquidation_price,
    bankruptcy_price``. ``margin_ratio`` is Binance's ``total MM / margin balance``:
    the account is liquidated when it reaches 1 (inf when the balance is <= 0).
    """

    positions: pd.DataFrame
    wallet_balance: float
    margin_balance: float
    maintenance_margin: float
    margin_ratio: float


_ALIASES = {"entry": "entry_price", "mark": "mark_price"}


def _rows(positions) -> list[tuple[str, float, float, float]]:
    """(symbol, qty, entry_price, mark_price) rows from a DataFrame, mappings or tuples."""
    if isinstance(positions, pd.DataFrame):
        frame = positions.rename(columns=_ALIASES)
        if "symbol" not in frame.columns:
            frame = frame.rename_axis("symbol").reset_index()
        missing = {"symbol", "qty", "entry_price", "mark_price"} - set(frame.columns)
        if missing:
            raise ValueError(
                f"positions need columns symbol, qty, entry_price, mark_price; missing "
                f"{', '.join(sorted(missing))}"
            )
        items: Iterable = frame[["symbol", "qty", "entry_price", "mark_price"]].itertuples(
            index=False, name=None)
    else:
        items = positions
    rows = []
    for item in items:
        if isinstance(item, Mapping):
            item = {_ALIASES.get(k, k): v for k, v in item.items()}
            item = (item["symbol"], item["qty"], item["entry_price"], item["mark_price"])
        symbol, qty, entry, mark = item
        rows.append((str(symbol), _number(f"qty of {symbol}", qty),
                     _number(f"entry_price of {symbol}", entry, positive=True),
                     _number(f"mark_price of {symbol}", mark, positive=True)))
    return rows


def cross_liquidation_prices(
    positions,
    wallet_balance: float,
    *,
    venue: str | Path | Venue = "binance_usdm",
    at: Timestamp | None = None,
) -> CrossLiquidation:
    """Liquidation prices of every position of a cross account, and its margin ratio.

    - ``positions``: the account's cross positions, one per symbol (one-way mode):
      a DataFrame with columns ``symbol, qty, entry_price, mark_price`` (or the
      symbol as index; ``entry``/``mark`` are accepted), or an iterable of
      ``(symbol, qty, entry_price, mark_price)`` tuples or mappings.
    - ``wallet_balance``: the cross wallet balance in quote (isolated margin excluded).

    Each position's LP holds every other position at its mark: TMM1 and UPNL1 are
    the others' maintenance margin (from their tiers at the mark) and unrealized PnL.

    Example (1 BTC long and 10 ETH short on 10,000 USDT):
        >>> book = [("BTCUSDT", 1.0, 60_000, 58_000), ("ETHUSDT", -10.0, 3_000, 3_100)]
        >>> account = cross_liquidation_prices(book, 10_000)
        >>> account.positions["liquidation_price"].round(2).tolist()
        [51330.65, 3760.96]
        >>> round(account.margin_ratio, 4)   # (240 + 124) / (10,000 - 2,000 - 1,000)
        0.052
    """
    venue = load_venue(venue)
    _binance_model(venue, "cross_liquidation_prices")
    wallet = _number("wallet_balance", wallet_balance)
    rows = _rows(positions)
    seen: dict[str, str] = {}
    for symbol, *_ in rows:
        name = normalise_symbol(symbol)
        if name in seen:
            raise ValueError(
                f"{seen[name]} and {symbol} are the same symbol: one-way mode holds one net "
                f"position per symbol; net them first"
            )
        seen[name] = symbol
    tables = [venue.spec(symbol, at).tier_arrays() for symbol, *_ in rows]
    qty = np.array([r[1] for r in rows])
    entry = np.array([r[2] for r in rows])
    mark = np.array([r[3] for r in rows])
    notional = np.abs(qty) * mark
    maint = np.array([_margin.maintenance_margin(n, *t) if q != 0.0 else 0.0
                      for n, q, t in zip(notional, qty, tables, strict=True)])
    upnl = qty * (mark - entry)
    total_mm, total_upnl = float(maint.sum()), float(upnl.sum())
    liq, bankrupt = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for i, table in enumerate(tables):
        collateral = wallet - (total_mm - maint[i]) + (total_upnl - upnl[i])
        liq[i] = _margin.liquidation_price(qty[i], entry[i], collateral, *table)
        bankrupt[i] = _margin.bankruptcy_price(qty[i], entry[i], wallet + total_upnl - upnl[i])
    frame = pd.DataFrame(
        {"qty": qty, "entry_price": entry, "mark_price": mark, "notional": notional,
         "maintenance_margin": maint, "unrealized_pnl": upnl, "liquidation_price": liq,
         "bankruptcy_price": bankrupt},
        index=pd.Index([r[0] for r in rows], name="symbol"),
    )
    balance = wallet + total_upnl
    ratio = total_mm / balance if balance > 0 else math.inf
    return CrossLiquidation(frame, wallet, balance, total_mm, ratio)
