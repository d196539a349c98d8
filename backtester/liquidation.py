"""Liquidation and bankruptcy prices of a position, or of every position of a cross account.

Each venue's margin model holds its reference calculators, the venue's published
price formulas (``backtester.venues.binance``, ``.bybit``, ``.okx``, ``.kraken``).
These functions check their inputs, lay the position out as the kernel sees it
(its rule rows and tier table, ``MarginModel.columns``), value what backs it with
the engine's own rules, and ask the venue's model for the price:

- isolated: the position's own margin, given or its initial margin at ``leverage``
  (with the fee the venue reserves in it, on Bybit since 2025-09-02);
- cross: ``WB - TMM1 + UPNL1``, the cross wallet balance less the maintenance
  margin of the account's other cross positions plus their unrealized PnL, the
  others held at their current marks.

On Binance, for example, the liquidation price (LP) is the published formula
(VENUES.md §2.5)::

    LP = (WB - TMM1 + UPNL1 + cum - s*Q*EP) / (Q*MMR - s*Q)

with (MMR, cum) from the tier that holds the notional AT the LP, not at entry. The
bankruptcy price (BP) is where the position's equity reaches zero. A model refuses
what its venue does not have (Kraken spot margin has no isolated mode) and says
what to use instead.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .engine import rules as engine_rules
from .venues import Venue, load_venue
from .venues.models import MarginModel, Position
from .venues.registry import models_where
from .venues.spec import Timestamp, normalise_symbol

__all__ = ["CrossLiquidation", "bankruptcy_price", "cross_liquidation_prices",
           "liquidation_price"]

MARGIN_MODES = ("isolated", "cross")


def _number(name: str, value, *, positive: bool = False, allow_negative: bool = True) -> float:
    if isinstance(value, bool | np.bool_ | str | bytes):  # float() would read them: refuse
        kind = "text" if isinstance(value, str | bytes) else "a bool"
        raise TypeError(f"{name}={value!r} is {kind}: {name} must be a number")
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


def _position(qty, entry_price) -> tuple[float, float]:
    return _number("qty", qty), _number("entry_price", entry_price, positive=True)


def _no_leverage(venue: Venue, rules_in_force) -> float:
    """The leverage of a cross position given none: unused (NaN), unless the venue's maintenance
    margin depends on it."""
    if venue.margin_model.leverage_matters(rules_in_force):
        raise ValueError(
            f"venue {venue.name} ({venue.margin_model.name} model) counts a position's "
            f"leverage in its maintenance margin; give leverage (the position's, as set on "
            f"the venue)")
    return math.nan


def _set_up(qty: float, entry_price: float, venue: Venue, symbol: str, margin_mode: str,
            margin, leverage, extra_margin, wallet_balance, others: float, at,
            need_leverage: bool = True) -> tuple[MarginModel, Position, float]:
    """``(model, position, backing)``: the checked inputs laid out for the venue's model;
    ``backing`` is what backs the position (its isolated margin, or the cross wallet plus
    ``others``)."""
    if margin_mode not in MARGIN_MODES:
        raise ValueError(f"margin_mode must be 'isolated' or 'cross', got {margin_mode!r}")
    model = venue.margin_model
    model.check_margin_mode(margin_mode, f"venue {venue.name}")
    rules_in_force = venue.rules(at)
    extra = _number("extra_margin", extra_margin, allow_negative=False)
    given = None
    if margin_mode == "isolated":
        if wallet_balance is not None or others != 0.0:
            raise ValueError(
                "in isolated mode only the position's own margin counts (Binance: TMM1 = "
                "UPNL1 = 0); drop wallet_balance/other_* or use margin_mode='cross'"
            )
        if (margin is None) == (leverage is None):
            raise ValueError(
                "isolated mode needs exactly one of margin (the quote amount the position "
                "holds) or leverage (margin = |qty| * entry_price / leverage, plus extra_margin)"
            )
        if margin is not None:
            if extra:
                raise ValueError("extra_margin goes with leverage; with margin give the whole "
                                 "amount the position holds")
            given = _number("margin", margin, allow_negative=False)
            # the leverage the margin implies (IM = |q| * EP / L): the venue may count it
            lev = abs(qty) * entry_price / given if given * qty != 0.0 else math.inf
    else:
        if margin is not None or extra:
            raise ValueError(
                "in cross mode the position is backed by the account, not its own margin; "
                "give wallet_balance (and other_maintenance / other_unrealized) instead of "
                "margin/extra_margin"
            )
        if wallet_balance is None:
            raise ValueError("cross mode needs wallet_balance: the cross wallet balance in quote")
        if leverage is None:
            lev = _no_leverage(venue, rules_in_force) if need_leverage else math.nan
    if leverage is not None:
        lev = _number("leverage", leverage, positive=True)
    spec = venue.spec(symbol, at)
    columns = model.columns([spec], rules_in_force, [lev], venue.name)
    position = Position(qty, entry_price, 0, columns, spec, rules_in_force)
    if leverage is not None:  # against the cap of the tier that holds the position
        venue.check_leverage(symbol, lev, at=at, tier=position.tier())
    if margin_mode == "cross":
        return model, position, _number("wallet_balance", wallet_balance) + others
    if given is not None:
        return model, position, model.position_margin(position, given)
    # opened at the entry: the initial margin the engine moves into it, plus what was added
    opened = engine_rules.isolated_margin_to_open(0, qty, entry_price, columns.sym)
    return model, position, float(opened) + extra


def liquidation_price(
    qty: float,
    entry_price: float,
    *,
    venue: str | Path | Venue = "binance_usdm",
    symbol: str = "BTCUSDT",
    margin_mode: str = "isolated",
    margin: float | None = None,
    leverage: float | None = None,
    extra_margin: float = 0.0,
    wallet_balance: float | None = None,
    other_maintenance: float = 0.0,
    other_unrealized: float = 0.0,
    at: Timestamp | None = None,
) -> float:
    """Mark price at which a position is liquidated, everything else held fixed.

    - ``qty``: signed position in base units (0.5 = long half a BTC, -2 = short 2).
    - ``entry_price``: its average entry price.
    - ``venue`` / ``symbol`` / ``at``: whose rules apply (the venue's margin model,
      the symbol's tier table and fees), in force at time ``at`` (None = the latest).
    - ``margin_mode="isolated"``: give ``margin``, the quote amount held by the
      position (initial margin plus any added), or ``leverage`` (margin =
      ``|qty| * entry_price / leverage``, checked against the venue's cap) and
      optionally ``extra_margin`` added since. On Bybit since 2025-09-02 the
      position also holds the fee to close it reserves; a ``margin`` given alone
      implies the leverage ``|qty| * entry_price / margin``.
    - ``margin_mode="cross"``: give ``wallet_balance`` (the cross wallet, realized
      PnL, fees and funding included), ``other_maintenance`` (the maintenance
      margin of the other cross positions, TMM1) and ``other_unrealized`` (their
      unrealized PnL, UPNL1). The others are frozen at their current marks, so the
      result moves when they do; ``cross_liquidation_prices`` computes both terms.
      Give ``leverage`` where the venue counts it in the maintenance margin
      (Kraken's used margin, Bybit's fee to close).

    Returns NaN for ``qty == 0``. A value <= 0 means a long is never liquidated
    (Binance shows "--"), or a short is liquidatable at any price. Each venue's
    model prices it by its own rules: Binance's formula, Bybit's classic and
    2025-09-02 forms, OKX's margin ratio, Kraken's margin level (cross only).

    Example (a 50x long at 20,000 under a flat 0.5% rate; closed form
    ``EP*(1 - 1/L)/(1 - MMR)``):
        >>> round(liquidation_price(0.01, 20_000, venue="flat", leverage=50), 2)
        19698.49
        >>> round(liquidation_price(-0.005, 9_451.53, margin_mode="cross", wallet_balance=10.72,
        ...                         other_maintenance=1.3, other_unrealized=0.47), 2)
        11383.99
        >>> liquidation_price(1, 20_000, venue="kraken_spot", symbol="BTCUSD", leverage=5,
        ...                   margin_mode="cross", wallet_balance=10_000)   # E-K2's 40% level
        11600.0
    """
    qty, entry_price = _position(qty, entry_price)
    others = _number("other_unrealized", other_unrealized) - _number(
        "other_maintenance", other_maintenance, allow_negative=False)
    model, position, backing = _set_up(qty, entry_price, load_venue(venue), symbol, margin_mode,
                                       margin, leverage, extra_margin, wallet_balance, others, at)
    if qty == 0.0:
        return math.nan
    return float(model.liquidation_price(position, backing, margin_mode))


def bankruptcy_price(
    qty: float,
    entry_price: float,
    *,
    venue: str | Path | Venue = "binance_usdm",
    symbol: str = "BTCUSDT",
    margin_mode: str = "isolated",
    margin: float | None = None,
    leverage: float | None = None,
    extra_margin: float = 0.0,
    wallet_balance: float | None = None,
    other_unrealized: float = 0.0,
    at: Timestamp | None = None,
) -> float:
    """Mark price at which the position's equity is zero: ``EP - s * collateral / Q``.

    Same parameters as ``liquidation_price`` (the venue only checks ``leverage``).
    The other positions' maintenance margin plays no part: bankruptcy is equity =
    0, not equity = MM (VENUES.md §2.5). Below the bankruptcy price (long) the
    loss exceeds the collateral and the insurance fund pays the difference. On
    Bybit the fee to close reserved in an isolated margin is not the trader's
    (§3.4): ``EP * (1 - s/L)`` at any date.

    Example (a 10x isolated long at 20,000 loses its margin 10% lower):
        >>> bankruptcy_price(0.5, 20_000, venue="flat", leverage=10)
        18000.0
    """
    qty, entry_price = _position(qty, entry_price)
    others = _number("other_unrealized", other_unrealized)
    model, position, backing = _set_up(qty, entry_price, load_venue(venue), symbol, margin_mode,
                                       margin, leverage, extra_margin, wallet_balance, others, at,
                                       need_leverage=False)
    if qty == 0.0:
        return math.nan
    return float(model.bankruptcy_price(position, backing, margin_mode))


@dataclass(frozen=True)
class CrossLiquidation:
    """A cross account's state at the marks, and each position's LP with the others frozen.

    ``positions`` is indexed by symbol with columns ``qty, entry_price, mark_price,
    notional, maintenance_margin, unrealized_pnl, liquidation_price,
    bankruptcy_price``. ``margin_ratio`` is ``total MM / margin balance`` (the margin
    balance with any collateral's discounted value): the account is liquidated when
    it reaches 1 on every model (inf when the balance is <= 0). OKX's MM includes the
    liquidation fee; Kraken's is the liquidation level x the used margin, so its
    ratio is the level over the margin level.
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
            missing = [k for k in ("symbol", "qty", "entry_price", "mark_price")
                       if k not in item]
            if missing:
                raise ValueError(f"positions= row {item!r} has no {', '.join(missing)}")
            item = (item["symbol"], item["qty"], item["entry_price"], item["mark_price"])
        if isinstance(item, str) or len(item) != 4:
            raise ValueError(f"positions= row {item!r}: give (symbol, qty, entry_price, "
                             "mark_price) for each position")
        symbol, qty, entry, mark = item
        rows.append((str(symbol), _number(f"qty of {symbol}", qty),
                     _number(f"entry_price of {symbol}", entry, positive=True),
                     _number(f"mark_price of {symbol}", mark, positive=True)))
    return rows


def _leverages(leverage, rows, venue: Venue, rules_in_force) -> list[float]:
    """Each row's leverage from ``leverage`` (a number, or a mapping symbol -> number)."""
    if leverage is None:
        return [_no_leverage(venue, rules_in_force)] * len(rows)
    if isinstance(leverage, Mapping):
        given = {normalise_symbol(s): v for s, v in leverage.items()}
        missing = [symbol for symbol, *_ in rows if normalise_symbol(symbol) not in given]
        if missing:
            raise ValueError(f"leverage has no value for {', '.join(missing)}")
        return [_number(f"leverage of {symbol}", given[normalise_symbol(symbol)], positive=True)
                for symbol, *_ in rows]
    return [_number("leverage", leverage, positive=True)] * len(rows)


def _collateral_value(collateral, venue: Venue, at) -> float:
    """Discounted value of the collateral coins ``{currency: (coins, price)}`` (multi-currency
    margin), frozen at those prices."""
    if not collateral:
        return 0.0
    model = venue.margin_model
    if not model.collateral:
        raise ValueError(f"collateral (multi-currency margin) is what "
                         f"{models_where(lambda m: m.collateral)} simulate; venue {venue.name} "
                         f"uses the {venue.model!r} model")
    total = 0.0
    for currency, held in collateral.items():
        try:
            coins, price = held
        except (TypeError, ValueError):
            raise ValueError(f"collateral {currency} must be (coins, price), "
                             f"got {held!r}") from None
        coins = _number(f"coins of collateral {currency}", coins, allow_negative=False)
        price = _number(f"price of collateral {currency}", price, positive=True)
        total += model.collateral_value(venue.discount_tiers(currency, at), coins, price)
    return total


def cross_liquidation_prices(
    positions,
    wallet_balance: float,
    *,
    venue: str | Path | Venue = "binance_usdm",
    at: Timestamp | None = None,
    leverage: float | Mapping[str, float] | None = None,
    collateral: Mapping[str, tuple[float, float]] | None = None,
) -> CrossLiquidation:
    """Liquidation prices of every position of a cross account, and its margin ratio.

    - ``positions``: the account's cross positions, one per symbol (one-way mode):
      a DataFrame with columns ``symbol, qty, entry_price, mark_price`` (or the
      symbol as index; ``entry``/``mark`` are accepted), or an iterable of
      ``(symbol, qty, entry_price, mark_price)`` tuples or mappings.
    - ``wallet_balance``: the cross wallet balance in quote (isolated margin excluded).
    - ``leverage``: each position's leverage (one number, or symbol -> number), where
      the venue counts it in the maintenance margin (Kraken, Bybit since 2025-09-02).
    - ``collateral``: multi-currency margin (OKX): ``{currency: (coins, price)}``,
      counted at its discounted value and frozen at that price.

    Each position's LP holds every other position at its mark: TMM1 and UPNL1 are
    the others' maintenance margin (the engine's, at the mark) and unrealized PnL.

    Example (1 BTC long and 10 ETH short on 10,000 USDT):
        >>> book = [("BTCUSDT", 1.0, 60_000, 58_000), ("ETHUSDT", -10.0, 3_000, 3_100)]
        >>> account = cross_liquidation_prices(book, 10_000)
        >>> account.positions["liquidation_price"].round(2).tolist()
        [51330.65, 3760.96]
        >>> round(account.margin_ratio, 4)   # (240 + 124) / (10,000 - 2,000 - 1,000)
        0.052
    """
    venue = load_venue(venue)
    model = venue.margin_model
    model.check_margin_mode("cross", f"venue {venue.name}")
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
    rules_in_force = venue.rules(at)
    specs = [venue.spec(symbol, at) for symbol, *_ in rows]
    leverages = _leverages(leverage, rows, venue, rules_in_force)
    held = _collateral_value(collateral, venue, at)
    columns = model.columns(specs, rules_in_force, leverages, venue.name)
    book = [Position(q, entry, i, columns, spec, rules_in_force)
            for i, ((_, q, entry, _mark), spec) in enumerate(zip(rows, specs, strict=True))]
    for position, (symbol, *_), lev in zip(book, rows, leverages, strict=True):
        if leverage is not None:
            venue.check_leverage(symbol, lev, at=at, tier=position.tier())
    qty = np.array([r[1] for r in rows])
    entry = np.array([r[2] for r in rows])
    mark = np.array([r[3] for r in rows])
    maint = np.array([p.maintenance_margin(m) if p.qty != 0.0 else 0.0
                      for p, m in zip(book, mark, strict=True)])
    upnl = qty * (mark - entry)
    total_mm, total_upnl = float(maint.sum()), float(upnl.sum()) + held
    liq, bankrupt = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    for i, position in enumerate(book):
        if position.qty == 0.0:
            continue
        backing = wallet - (total_mm - maint[i]) + (total_upnl - upnl[i])
        liq[i] = model.liquidation_price(position, backing, "cross")
        bankrupt[i] = model.bankruptcy_price(position, wallet + total_upnl - upnl[i], "cross")
    frame = pd.DataFrame(
        {"qty": qty, "entry_price": entry, "mark_price": mark, "notional": np.abs(qty) * mark,
         "maintenance_margin": maint, "unrealized_pnl": upnl, "liquidation_price": liq,
         "bankruptcy_price": bankrupt},
        index=pd.Index([r[0] for r in rows], name="symbol"),
    )
    balance = wallet + total_upnl
    ratio = total_mm / balance if balance > 0 else math.inf
    return CrossLiquidation(frame, wallet, balance, total_mm, ratio)
