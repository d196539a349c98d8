"""What an account holds at one moment: a ``Book`` of positions valued at given prices.

Positions are perpetuals unless the book's ``instruments`` names them spot holdings (the
long leg of a spot-perp funding carry): paid in full, no leverage, no funding, never
liquidated, never short, as ``run(instruments=...)`` holds them.

A book is taken from a run (``book_at``) or written by hand (``portfolio``), and then
stressed: ``backtester.risk.crashes.replay_crash`` holds it through a dated window of
history.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..engine import enums
from ..venues import Venue


def utc_time(value, name: str) -> pd.Timestamp:
    """``value`` as a UTC Timestamp (naive = UTC); a ValueError naming ``name`` otherwise."""
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}={value!r} is not a time ({exc})") from None
    if ts is pd.NaT:
        raise ValueError(f"{name}={value!r} is not a time")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True, repr=False)
class Book:
    """What an account holds at one moment, and the prices it is valued at.

    - ``positions``: symbol -> signed position in base units (long > 0); zero positions
      are kept but hold nothing.
    - ``prices``: symbol -> the price the book is valued at (today's price); every
      position needs one.
    - ``equity``: the account's equity in the quote currency (wallet, isolated margins and
      unrealized PnL at these prices).
    - ``leverage``: the leverage of every perpetual position (initial margin = notional /
      leverage), one number or a mapping symbol -> leverage (spot holdings have none: a
      mapping leaves them out).
    - ``venue``: the venue whose rules apply: a built-in name, a TOML path or a ``Venue``.
    - ``time``: when the book is held (UTC): the venue's rules in force then apply (its
      files are dated). None = the latest rules the venue file holds.
    - ``instruments``: symbol -> ``"spot"`` for the spot holdings (``"perpetual"``, the
      default of every symbol left out, may be written too and is dropped): a spot holding
      is paid in full from the wallet, has no leverage, pays no funding, is never
      liquidated and cannot be short (``run()``'s ``instruments``). Its value counts in
      ``equity`` and its notional in ``gross_notional``.

    Bad values raise ``ValueError`` naming the field and symbol.

    Example:
        >>> book = Book({"BTC_USDT": 0.5}, {"BTC_USDT": 60_000.0}, equity=6_000.0,
        ...             leverage=10, venue="binance_usdm")
        >>> book.gross_notional, book.leverage_of("BTC_USDT")
        (30000.0, 10.0)
        >>> book                                  # doctest: +NORMALIZE_WHITESPACE
        Book(positions={'BTC_USDT': 0.5}, prices={'BTC_USDT': 60000.0}, equity=6000.0,
             leverage=10.0, venue='binance_usdm', time=None)

    A funding carry: 1 BTC held spot, 1 BTC short on the perpetual at 2x; the equity is
    the spot holding and the perpetual's margin (and any free balance):

        >>> carry = Book({"BTC_USDT_SPOT": 1.0, "BTC_USDT": -1.0},
        ...              {"BTC_USDT_SPOT": 60_000.0, "BTC_USDT": 60_000.0}, equity=90_000.0,
        ...              leverage=2, venue="binance_usdm",
        ...              instruments={"BTC_USDT_SPOT": "spot"})
        >>> carry.gross_notional, carry.perpetuals, carry.is_spot("BTC_USDT_SPOT")
        (120000.0, ('BTC_USDT',), True)
        >>> carry                                 # doctest: +NORMALIZE_WHITESPACE
        Book(positions={'BTC_USDT_SPOT': 1.0, 'BTC_USDT': -1.0},
             prices={'BTC_USDT_SPOT': 60000.0, 'BTC_USDT': 60000.0}, equity=90000.0,
             leverage=2.0, venue='binance_usdm', time=None,
             instruments={'BTC_USDT_SPOT': 'spot'})
    """

    positions: dict
    prices: dict
    equity: float
    leverage: float | dict
    venue: str | Venue
    time: pd.Timestamp | None = None
    instruments: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.positions, Mapping) or not self.positions:
            raise ValueError(f"positions={self.positions!r}: give a mapping symbol -> signed "
                             "base units, e.g. {'BTC_USDT': 0.5}")
        positions = {}
        for symbol, qty in self.positions.items():
            if not isinstance(symbol, str) or not symbol:
                raise ValueError(f"positions= has the key {symbol!r}: keys are symbol names")
            positions[symbol] = _number(f"positions[{symbol!r}]", qty, "signed base units "
                                        "(long > 0)", positive=False)
        spot = _instruments(self.instruments, positions)
        for symbol in spot:
            if positions[symbol] < 0.0:
                raise ValueError(f"positions[{symbol!r}]={positions[symbol]!r}: {symbol} is a "
                                 "spot holding (instruments=), which cannot be short")
        if not isinstance(self.prices, Mapping):
            raise ValueError(f"prices={self.prices!r}: give a mapping symbol -> price")
        prices = {}
        for symbol in positions:
            if symbol not in self.prices:
                raise ValueError(f"prices= has no price for {symbol!r}: every position needs "
                                 "the price the book is valued at")
            prices[symbol] = _number(f"prices[{symbol!r}]", self.prices[symbol],
                                     "a positive price")
        equity = _number("equity", self.equity, "the account's equity in the quote currency, "
                         "above zero (a book with none left is already liquidated)")
        if isinstance(self.leverage, Mapping):
            given = [s for s in spot if s in self.leverage]
            if given:
                raise ValueError(f"leverage= gives a leverage for {', '.join(given)}, a spot "
                                 "holding (instruments=): it is paid in full and has none; "
                                 "leave it out")
            missing = [s for s in positions if s not in self.leverage and s not in spot]
            if missing:
                raise ValueError(f"leverage= gives no leverage for {', '.join(missing)}")
            leverage = {s: _number(f"leverage[{s!r}]", self.leverage[s], "a positive number")
                        for s in positions if s not in spot}
        else:
            leverage = _number("leverage", self.leverage, "a positive number (initial margin "
                               "= notional / leverage), e.g. 10")
        if not isinstance(self.venue, str | os.PathLike | Venue):
            raise ValueError(f"venue={self.venue!r}: give a built-in venue name (e.g. "
                             "'binance_usdm'), the path of a .toml venue file or a Venue")
        time = None if self.time is None else utc_time(self.time, "time")
        for name, value in (("positions", positions), ("prices", prices), ("equity", equity),
                            ("leverage", leverage), ("time", time), ("instruments", spot)):
            object.__setattr__(self, name, value)

    def __repr__(self) -> str:
        """The book's figures, and its venue by name (not a Venue's every table)."""
        venue = self.venue.name if isinstance(self.venue, Venue) else str(self.venue)
        instruments = f", instruments={self.instruments!r}" if self.instruments else ""
        return (f"Book(positions={self.positions!r}, prices={self.prices!r}, "
                f"equity={self.equity!r}, leverage={self.leverage!r}, venue={venue!r}, "
                f"time={self.time!r}{instruments})")

    @property
    def symbols(self) -> tuple[str, ...]:
        """The symbols the book holds a position in (non-zero), in the book's order."""
        return tuple(s for s, q in self.positions.items() if q != 0.0)

    @property
    def perpetuals(self) -> tuple[str, ...]:
        """The symbols the book holds a perpetual position in (non-zero, not spot)."""
        return tuple(s for s in self.symbols if s not in self.instruments)

    def is_spot(self, symbol: str) -> bool:
        """Whether ``symbol`` is a spot holding (``instruments``), not a perpetual."""
        return symbol in self.instruments

    def leverage_of(self, symbol: str) -> float:
        """The leverage of ``symbol``'s perpetual position (a spot holding has none: an
        error)."""
        if symbol in self.instruments:
            raise ValueError(f"{symbol} is a spot holding: it is paid in full and has no "
                             "leverage")
        if isinstance(self.leverage, dict):
            return self.leverage[symbol]
        return self.leverage

    def notional(self, symbol: str) -> float:
        """``|position| * price`` of ``symbol`` (quote currency)."""
        return abs(self.positions[symbol]) * self.prices[symbol]

    @property
    def gross_notional(self) -> float:
        """The sum of every position's notional at the book's prices (quote currency),
        spot holdings included (a carry's spot and perpetual legs both count)."""
        return float(sum(self.notional(s) for s in self.symbols))


def _number(name: str, value, what: str, positive: bool = True) -> float:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise ValueError(f"{name}={value!r} is not a number: it must be {what}")
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0.0):
        raise ValueError(f"{name}={value!r}: must be {what}")
    return number


def _instruments(instruments, positions: dict) -> dict:
    """The spot holdings of ``instruments`` (symbol -> "spot"; "perpetual" is dropped)."""
    if instruments is None:
        return {}
    if not isinstance(instruments, Mapping):
        raise ValueError(f"instruments={instruments!r}: give a mapping symbol -> 'spot', e.g. "
                         "{'BTC_USDT_SPOT': 'spot'}")
    spot = {}
    for symbol, kind in instruments.items():
        if kind not in enums.INSTRUMENT_NAMES:
            raise ValueError(f"instruments[{symbol!r}]={kind!r}: must be one of "
                             f"{', '.join(map(repr, enums.INSTRUMENT_NAMES))}")
        if symbol not in positions:
            raise ValueError(f"instruments= names {symbol!r}, which the book holds no "
                             f"position in (it holds {', '.join(positions)})")
        if kind == "spot":
            spot[symbol] = "spot"
    return spot


def portfolio(positions, prices, equity, leverage, venue="binance_usdm",
              time=None, instruments=None) -> Book:
    """A book of your own: positions in units or in quote notional, valued at ``prices``.

    ``positions`` maps each symbol to signed base units (``{"BTC_USDT": 0.5}``), or to
    ``{"units": 0.5}``, or to ``{"notional": -50_000}``: a signed quote amount at the
    book's price (negative = short), converted to units as ``notional / price``.
    ``equity``, ``leverage``, ``venue``, ``time`` and ``instruments`` (symbol -> "spot")
    are as in ``Book``.

    Example:
        >>> book = portfolio({"BTC_USDT": {"notional": 50_000}, "ETH_USDT": -10},
        ...                  {"BTC_USDT": 100_000, "ETH_USDT": 2_500}, equity=10_000,
        ...                  leverage=10)
        >>> book.positions
        {'BTC_USDT': 0.5, 'ETH_USDT': -10.0}
        >>> carry = portfolio({"BTC_USDT_SPOT": 1, "BTC_USDT": -1},
        ...                   {"BTC_USDT_SPOT": 100_000, "BTC_USDT": 100_000}, equity=150_000,
        ...                   leverage=2, instruments={"BTC_USDT_SPOT": "spot"})
        >>> carry.perpetuals, carry.gross_notional
        (('BTC_USDT',), 200000.0)
    """
    if not isinstance(positions, Mapping):
        raise ValueError(f"positions={positions!r}: give a mapping symbol -> units, or "
                         "symbol -> {'notional': quote amount}")
    if not isinstance(prices, Mapping):
        raise ValueError(f"prices={prices!r}: give a mapping symbol -> price")
    units = {}
    for symbol, size in positions.items():
        if isinstance(size, Mapping):
            if len(size) != 1 or next(iter(size)) not in ("units", "notional"):
                raise ValueError(f"positions[{symbol!r}]={size!r}: give {{'units': x}} or "
                                 "{'notional': x} (signed quote amount at the book's price)")
            kind, amount = next(iter(size.items()))
            amount = _number(f"positions[{symbol!r}][{kind!r}]", amount, "a signed amount",
                             positive=False)
            if kind == "notional":
                if symbol not in prices:
                    raise ValueError(f"prices= has no price for {symbol!r}: a notional "
                                     "position is converted to units at the book's price")
                amount /= _number(f"prices[{symbol!r}]", prices[symbol], "a positive price")
            units[symbol] = amount
        else:
            units[symbol] = size
    return Book(units, dict(prices), equity, leverage, venue, time,
                {} if instruments is None else instruments)


def book_at(result, when) -> Book:
    """A run's book at the close of one bar: its positions, close prices, equity, leverage.

    ``when`` is a bar index (negative counts from the end) or a time: the last bar opening
    at or before it. The positions are the run's (``Result.positions``: recorded, or rebuilt
    from its fills); a hedge-mode symbol's two legs are netted into one position. ``prices``
    are the bar's last-price closes (the last known close where the symbol has no bar
    then), ``equity`` the account's equity at that close, ``leverage`` the run's leverage of
    each symbol, and ``time`` the bar's time, so a replay applies the venue's rules of that
    date. An isolated position's margin is not kept: a replay gives each position the
    margin of its leverage at the book's price.

    A spot column of the run (``instruments={"BTC_USDT_SPOT": "spot"}``) is a spot holding
    of the book (its ``instruments``), with no leverage; a run holding collateral coins is
    refused (a replay holds perpetuals and spot).

    Example:
        >>> from backtester import load_market, run
        >>> market = load_market().slice(0, 48)
        >>> targets = [[0.1, -1.0]] + [[float("nan")] * 2] * 47
        >>> book = book_at(run(market, targets, leverage=5), -1)
        >>> book.positions, book.leverage
        ({'BTC_USDT': 0.1, 'ETH_USDT': -1.0}, 5.0)
    """
    market = result.market
    t = _bar_of(market, when)
    modes = np.asarray(result.margin_mode)
    held = np.asarray(result.positions.to_numpy()[t], dtype=float)
    positions: dict[str, float] = {}
    prices: dict[str, float] = {}
    leverage: dict[str, float] = {}
    spot: dict[str, str] = {}
    for i, column in enumerate(market.symbols):
        if modes[i] > enums.Mode.SPOT:
            if held[i] != 0.0:
                raise ValueError(f"book_at: {column} is a {enums.MARGIN_MODE_NAMES[modes[i]]} "
                                 "holding; a book holds perpetual positions and spot "
                                 "holdings only")
            continue
        symbol = column.rsplit(".", 1)[0] if column.endswith((".long", ".short")) else column
        positions[symbol] = positions.get(symbol, 0.0) + float(held[i])
        if modes[i] == enums.Mode.SPOT:
            spot[symbol] = "spot"
        else:
            leverage[symbol] = float(result.leverage[i])
        closes = market.close[: t + 1, i]
        known = closes[~np.isnan(closes)]
        if len(known):
            prices[symbol] = float(known[-1])
        elif positions[symbol] != 0.0:
            raise ValueError(f"book_at: {column} has no close up to bar {t}")
    positions = {s: q for s, q in positions.items() if q != 0.0} or positions
    spot = {s: kind for s, kind in spot.items() if s in positions}
    lev = leverage[next(iter(leverage))] if len(set(leverage.values())) == 1 else leverage
    venue = result.venue if isinstance(result.venue, Venue) else result.venue.name
    return Book(positions, prices, float(result.equity.iloc[t]), lev, venue,
                market.timestamps[t], spot)


def _bar_of(market, when) -> int:
    """The bar index of ``when``: an index (negative from the end) or the last bar opening
    at or before a time."""
    n = market.n_bars
    if isinstance(when, int | np.integer) and not isinstance(when, bool):
        t = int(when) + (n if when < 0 else 0)
        if not 0 <= t < n:
            raise ValueError(f"when={when!r}: the run has bars 0..{n - 1}")
        return t
    try:
        ts = pd.Timestamp(when)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"when={when!r}: give a bar index or a time ({exc})") from None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    t = int(np.searchsorted(market.index, ts.value, side="right")) - 1
    if t < 0:
        raise ValueError(f"when={when!r} is before the run's first bar "
                         f"({market.timestamps[0]})")
    return t
