"""The venue types: margin tiers, a symbol's dated spec, and a venue of symbols.

A venue is data (a TOML file, see ``backtester/venues/__init__.py``); these
frozen dataclasses hold it once loaded and validated. Every rule checked here is
a property of a real tier table (VENUES.md §2.3): tiers tile the notional axis
from 0, maintenance rates rise and maximum leverage falls with size, and each
``cum`` (Binance's "maintenance amount") follows from the rates by the recursion
``cum_k = cum_{k-1} + floor_k * (mmr_k - mmr_{k-1})``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..engine.margin import derive_cums

Timestamp = pd.Timestamp | dt.datetime | dt.date | np.datetime64 | str | int
_CUM_TOLERANCE = 1e-6  # quote units; a derived cum is exact up to float rounding


class VenueSpecError(ValueError):
    """A venue file or spec breaks a rule of tier tables; the message says where."""


class UnknownSymbolError(KeyError, ValueError):
    """A symbol the venue does not list (and the venue has no default spec)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


def normalise_symbol(symbol: str) -> str:
    """The venue's spelling of a market name: ``BTC/USDT:USDT``, ``btc_usdt`` -> ``BTCUSDT``.

    Upper-cases, drops a ``:SETTLE`` suffix (ccxt's perpetual notation) and removes
    the separators ``/ _ -`` and spaces.

    Example:
        >>> [normalise_symbol(s) for s in ("BTC_USDT", "BTC/USDT:USDT", "btcusdt", "BTC-USDT")]
        ['BTCUSDT', 'BTCUSDT', 'BTCUSDT', 'BTCUSDT']
    """
    if not isinstance(symbol, str) or not symbol.strip():
        raise TypeError(f"a symbol is a non-empty string such as 'BTCUSDT', got {symbol!r}")
    return re.sub(r"[/_\-\s]", "", symbol.split(":", 1)[0]).upper()


def to_timestamp(at: Timestamp | None) -> pd.Timestamp | None:
    """``at`` as a UTC Timestamp (None stays None; an int is nanoseconds since the epoch)."""
    if at is None:
        return None
    ts = pd.Timestamp(int(at), unit="ns") if isinstance(at, int | np.integer) else pd.Timestamp(at)
    if ts is pd.NaT:
        raise ValueError(f"at must be a time, got {at!r}")
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class Tier:
    """One notional bracket: positions with ``floor < notional <= cap`` (quote units).

    ``max_leverage`` caps the leverage of a position in this bracket; ``mmr`` is
    the maintenance margin rate and ``cum`` the amount subtracted so that
    ``MM = notional * mmr - cum`` is continuous across brackets.
    """

    floor: float
    cap: float
    max_leverage: float
    mmr: float
    cum: float = 0.0


def tiers_from_table(rows: Iterable[Sequence[float]]) -> tuple[Tier, ...]:
    """Tiers from ``(floor, cap, max_leverage, mmr)`` rows, with each ``cum`` derived.

    Example:
        >>> table = [(0, 50_000, 125, 0.004), (50_000, 250_000, 100, 0.005)]
        >>> [tier.cum for tier in tiers_from_table(table)]
        [0.0, 50.0]
    """
    table = [tuple(float(x) for x in row) for row in rows]
    if any(len(row) != 4 for row in table):
        raise VenueSpecError("a tier row is (floor, cap, max_leverage, mmr); cum is derived")
    floors = np.array([row[0] for row in table], dtype=np.float64)
    mmrs = np.array([row[3] for row in table], dtype=np.float64)
    cums = derive_cums(floors, mmrs, len(table)) if table else np.zeros(0)
    # rounded to 1e-8 quote: the float recursion leaves 949.9999999999998 for Binance's 950
    return tuple(
        Tier(floor, cap, lev, mmr, round(float(cum), 8))
        for (floor, cap, lev, mmr), cum in zip(table, cums, strict=True)
    )


def _check_rate(where: str, name: str, value: float, low: float = 0.0) -> None:
    if not (isinstance(value, int | float) and low <= value < 1.0):
        raise VenueSpecError(f"{where}: {name} must be a rate in [{low:g}, 1), got {value!r}")


@dataclass(frozen=True)
class SymbolSpec:
    """The margin tiers and fees of one symbol, in force from ``valid_from`` on.

    - ``tiers``: the notional brackets, lowest first (tier 1 in the venue's words
      is ``tiers[0]``).
    - ``taker_fee`` / ``maker_fee``: fee rates on filled notional (0.0005 = 5 bps);
      a negative maker fee is a rebate.
    - ``liquidation_fee``: rate charged on the notional closed by a liquidation
      (Binance's "insurance clearance fee").
    - ``valid_from``: when this version took effect (None = always).
    """

    symbol: str
    tiers: tuple[Tier, ...]
    taker_fee: float
    maker_fee: float
    liquidation_fee: float
    valid_from: pd.Timestamp | None = None
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        self.validate()

    @property
    def max_leverage(self) -> float:
        """The highest leverage the symbol allows: tier 1's (smaller positions)."""
        return self.tiers[0].max_leverage

    @property
    def label(self) -> str:
        """``symbol BTCUSDT (valid from 2021-03-18)``: how errors name this version."""
        if self.valid_from is None:
            return f"symbol {self.symbol}"
        return f"symbol {self.symbol} (valid from {self.valid_from.date()})"

    def validate(self) -> None:
        """Raise ``VenueSpecError`` naming the symbol and tier if a rule is broken."""
        where = self.label
        if not self.tiers:
            raise VenueSpecError(f"{where}: needs at least one tier")
        _check_rate(where, "taker_fee", self.taker_fee)
        _check_rate(where, "maker_fee", self.maker_fee, low=-1.0)
        _check_rate(where, "liquidation_fee", self.liquidation_fee)
        previous = None
        for k, tier in enumerate(self.tiers):
            at = f"{where}, tier {k + 1}"
            if not all(isinstance(v, int | float) and not math.isnan(v) for v in
                       dataclasses.astuple(tier)):
                raise VenueSpecError(f"{at}: every field must be a number, got {tier}")
            if k == 0 and tier.floor != 0:
                raise VenueSpecError(f"{at}: the first floor must be 0, got {tier.floor:,g}")
            if not tier.cap > tier.floor:
                raise VenueSpecError(
                    f"{at}: cap {tier.cap:,g} must be above floor {tier.floor:,g}"
                )
            _check_rate(at, "mmr", tier.mmr)
            if not 1.0 <= tier.max_leverage < math.inf:
                raise VenueSpecError(
                    f"{at}: max_leverage must be a finite number >= 1, got {tier.max_leverage!r}"
                )
            if tier.mmr >= 1.0 / tier.max_leverage:
                raise VenueSpecError(
                    f"{at}: mmr {tier.mmr:g} must be below the initial margin rate "
                    f"1/max_leverage = {1.0 / tier.max_leverage:g}, or a position opened at "
                    f"max leverage is liquidatable at once"
                )
            if previous is not None:
                if tier.floor != previous.cap:
                    raise VenueSpecError(
                        f"{at}: floor {tier.floor:,g} must equal the previous tier's cap "
                        f"{previous.cap:,g} (tiers must be contiguous)"
                    )
                if tier.mmr < previous.mmr:
                    raise VenueSpecError(
                        f"{at}: mmr {tier.mmr:g} is below the previous tier's {previous.mmr:g} "
                        f"(rates must not fall as the notional grows)"
                    )
                if tier.max_leverage > previous.max_leverage:
                    raise VenueSpecError(
                        f"{at}: max_leverage {tier.max_leverage:g} is above the previous tier's "
                        f"{previous.max_leverage:g} (leverage must not rise with the notional)"
                    )
                expected = previous.cum + tier.floor * (tier.mmr - previous.mmr)
            else:
                expected = 0.0
            if abs(tier.cum - expected) > _CUM_TOLERANCE * max(1.0, abs(expected)):
                raise VenueSpecError(
                    f"{at}: cum {tier.cum:,.2f} breaks the recursion "
                    f"cum_k = cum_(k-1) + floor_k * (mmr_k - mmr_(k-1)) = {expected:,.2f}; "
                    f"build tiers with tiers_from_table() so cum is derived"
                )
            previous = tier

    def tier_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """``(floors, caps, mmrs, cums, n)``: the arguments of ``engine.margin`` functions."""
        columns = np.array([(t.floor, t.cap, t.mmr, t.cum) for t in self.tiers], dtype=np.float64)
        floors, caps, mmrs, cums = (np.ascontiguousarray(columns[:, j]) for j in range(4))
        return floors, caps, mmrs, cums, len(self.tiers)

    def tier_for_notional(self, notional: float) -> int:
        """Index (0-based) of the tier holding a notional: ``floor < N <= cap``."""
        k = 0
        while k < len(self.tiers) - 1 and notional > self.tiers[k].cap:
            k += 1
        return k


@dataclass(frozen=True)
class VenueArrays:
    """One venue's rules for N symbols as the arrays the kernel reads.

    ``floors, caps, mmrs, cums, max_leverage`` are ``(N, K)`` with K the largest
    tier count; a symbol with fewer tiers repeats its last tier, and
    ``n_tiers[i]`` says how many are real. Fees are ``(N,)`` rates.
    """

    symbols: tuple[str, ...]
    floors: np.ndarray
    caps: np.ndarray
    mmrs: np.ndarray
    cums: np.ndarray
    max_leverage: np.ndarray
    n_tiers: np.ndarray
    taker_fee: np.ndarray
    maker_fee: np.ndarray
    liquidation_fee: np.ndarray

    @classmethod
    def from_specs(cls, specs: Sequence[SymbolSpec]) -> VenueArrays:
        n = len(specs)
        width = max((len(s.tiers) for s in specs), default=1)
        table = np.zeros((5, n, width), dtype=np.float64)
        for i, spec in enumerate(specs):
            rows = [(t.floor, t.cap, t.mmr, t.cum, t.max_leverage) for t in spec.tiers]
            rows += [rows[-1]] * (width - len(rows))
            table[:, i, :] = np.array(rows, dtype=np.float64).T
        floors, caps, mmrs, cums, max_leverage = (np.ascontiguousarray(a) for a in table)

        def rates(name: str) -> np.ndarray:
            return np.array([getattr(s, name) for s in specs], dtype=np.float64)

        return cls(
            symbols=tuple(s.symbol for s in specs),
            floors=floors, caps=caps, mmrs=mmrs, cums=cums, max_leverage=max_leverage,
            n_tiers=np.array([len(s.tiers) for s in specs], dtype=np.int64),
            taker_fee=rates("taker_fee"), maker_fee=rates("maker_fee"),
            liquidation_fee=rates("liquidation_fee"),
        )


def _in_force(versions: Sequence[SymbolSpec], at: pd.Timestamp | None,
              venue: str) -> SymbolSpec:
    """The version in force at ``at`` (versions sorted by ``valid_from``; None = latest)."""
    if at is None:
        return versions[-1]
    current = None
    for spec in versions:
        if spec.valid_from is None or spec.valid_from <= at:
            current = spec
    if current is None:
        current = versions[0]
        # a fixed text and location (stacklevel=1), so the default filter shows it once
        warnings.warn(
            f"{venue} has no {current.symbol} tier table before {current.valid_from.date()}; "
            f"earlier times use that one (add the older table to the venue file)",
            UserWarning,
            stacklevel=1,
        )
    return current


@dataclass(frozen=True)
class Venue:
    """An exchange's margin rules: dated tier tables and fees per symbol.

    - ``symbols``: the latest spec of each listed symbol, keyed by the venue's
      spelling (``BTCUSDT``).
    - ``default``: the spec of any symbol not listed (None: unlisted symbols are an
      error).
    - ``funding_interval_hours``: hours between funding payments (8 on Binance).
    - ``history`` / ``default_history``: every dated version, oldest first (filled
      from ``symbols`` / ``default`` when not given).

    Example:
        >>> from backtester.venues import load_venue
        >>> venue = load_venue("binance_usdm")
        >>> venue.spec("BTC/USDT:USDT", at="2022-01-01").tiers[2].mmr
        0.01
    """

    name: str
    description: str
    symbols: Mapping[str, SymbolSpec]
    default: SymbolSpec | None = None
    funding_interval_hours: float = 8.0
    source: str = ""
    history: Mapping[str, tuple[SymbolSpec, ...]] = field(default_factory=dict)
    default_history: tuple[SymbolSpec, ...] = ()

    def __post_init__(self) -> None:
        history = {name: tuple(v) for name, v in self.history.items()}
        for name, spec in self.symbols.items():
            history.setdefault(name, (spec,))
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "symbols", {n: v[-1] for n, v in history.items()})
        if not self.default_history and self.default is not None:
            object.__setattr__(self, "default_history", (self.default,))
        if self.default_history:
            object.__setattr__(self, "default", self.default_history[-1])

    def spec(self, symbol: str, at: Timestamp | None = None) -> SymbolSpec:
        """The spec of ``symbol`` in force at time ``at`` (None = the latest version).

        ``symbol`` may be any common spelling (``BTC_USDT``, ``BTC/USDT:USDT``,
        ``btcusdt``). An unlisted symbol takes the venue's default spec, or raises
        ``UnknownSymbolError`` when there is none. A time before the earliest
        version uses the earliest, with a warning.
        """
        name = normalise_symbol(symbol)
        when = to_timestamp(at)
        if name in self.history:
            return _in_force(self.history[name], when, self.name)
        if self.default_history:
            return dataclasses.replace(_in_force(self.default_history, when, self.name),
                                       symbol=name)
        listed = ", ".join(sorted(self.history)) or "none"
        raise UnknownSymbolError(
            f"venue {self.name} has no spec for symbol {symbol!r} (looked up as {name!r}); "
            f"it lists: {listed}. Add it to the venue's TOML file or use venue 'flat'"
        )

    def arrays(self, symbols: Iterable[str], at: Timestamp | None = None) -> VenueArrays:
        """The tiers and fees of ``symbols`` (in that order) at ``at``, as kernel arrays.

        Example:
            >>> from backtester.venues import load_venue
            >>> a = load_venue("binance_usdm").arrays(["BTC_USDT", "ETH_USDT"])
            >>> a.mmrs.shape, a.n_tiers.tolist()
            ((2, 12), [12, 12])
        """
        return VenueArrays.from_specs([self.spec(s, at) for s in symbols])

    def check_leverage(
        self, symbol: str, leverage: float, at: Timestamp | None = None,
        notional: float | None = None,
    ) -> None:
        """Raise ``ValueError`` unless ``0 < leverage <=`` the symbol's cap.

        The cap is tier 1's max leverage, or, when ``notional`` (quote) is given,
        that of the tier holding that notional (bigger positions allow less).

        Example:
            >>> from backtester.venues import load_venue
            >>> load_venue("binance_usdm").check_leverage("BTC_USDT", 150)
            Traceback (most recent call last):
            ...
            ValueError: leverage 150 for BTC_USDT exceeds binance_usdm's cap of 125x (tier 1)
        """
        spec = self.spec(symbol, at)
        if not (isinstance(leverage, int | float | np.number) and 0 < leverage < math.inf):
            raise ValueError(f"leverage for {symbol} must be a positive number, got {leverage!r}")
        k = 0 if notional is None else spec.tier_for_notional(abs(notional))
        cap = spec.tiers[k].max_leverage
        if leverage > cap:
            size = "" if notional is None else f" at a notional of {abs(notional):,.0f}"
            raise ValueError(
                f"leverage {leverage:g} for {symbol} exceeds {self.name}'s cap of {cap:g}x "
                f"(tier {k + 1}){size}"
            )
