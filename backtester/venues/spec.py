"""The symbol types: margin tiers and a symbol's dated spec (``Venue`` is in ``venue.py``).

A venue is data (a TOML file, see ``backtester/venues/__init__.py``); these
frozen dataclasses hold it once loaded and validated. Every rule checked here is
a property of a real tier table (VENUES.md §2.3, §3.2, §4.3): tiers tile the size
axis from 0, maintenance rates rise and maximum leverage falls with size, and
each ``cum`` (Binance's "maintenance amount", Bybit's mmDeduction) follows from
the rates by the recursion ``cum_k = cum_{k-1} + floor_k * (mmr_k - mmr_{k-1})``,
or is 0 where the whole position takes its tier's rate (OKX).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..engine import enums
from ..engine.rules import tier_from

Timestamp = pd.Timestamp | dt.datetime | dt.date | np.datetime64 | str | int
_CUM_TOLERANCE = 1e-6  # quote units; a derived cum is exact up to float rounding


def derive_cums(floors, mmrs) -> np.ndarray:
    """Each tier's maintenance amount ``cum_k = cum_{k-1} + floor_k * (mmr_k - mmr_{k-1})``,
    ``cum_0 = 0`` (VENUES.md §2.3): what makes ``N * mmr - cum`` continuous at the bounds.

    Example (Binance's 2021 BTCUSDT level 3: 250,000 x (1% - 0.5%) + 50):
        >>> derive_cums([0, 50_000, 250_000], [0.004, 0.005, 0.01]).tolist()
        [0.0, 50.0, 1300.0]
    """
    floors = np.asarray(floors, dtype=np.float64)
    steps = floors[1:] * np.diff(np.asarray(mmrs, dtype=np.float64))
    return np.concatenate(([0.0], np.cumsum(steps)))


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
    try:
        ts = (pd.Timestamp(int(at), unit="ns") if isinstance(at, int | np.integer)
              else pd.Timestamp(at))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"at={at!r} is not a time ({exc}); give a date such as "
                         "2024-01-01") from None
    if ts is pd.NaT:
        raise ValueError(f"at must be a time, got {at!r}")
    return ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class Tier:
    """One bracket: positions with ``floor < size <= cap``.

    The size is the notional in quote currency (``tier_unit = "quote"``: Binance,
    Bybit) or the position in contracts (``"contracts"``: OKX). ``max_leverage``
    caps the leverage of a position in this tier; ``mmr`` is the maintenance
    margin rate and ``cum`` the amount subtracted (Binance's maintenance amount,
    Bybit's mmDeduction) so that ``MM = notional * mmr - cum`` is continuous
    across tiers; it is 0 where the whole position takes its tier's rate (OKX).
    ``imr`` is the venue's initial margin rate where it publishes one apart from
    ``1 / max_leverage`` (None otherwise).
    """

    floor: float
    cap: float
    max_leverage: float
    mmr: float
    cum: float = 0.0
    imr: float | None = None

    @property
    def initial_margin_rate(self) -> float:
        """The published ``imr``, else ``1 / max_leverage``."""
        return self.imr if self.imr is not None else 1.0 / self.max_leverage


TIER_RULES = ("bracket", "whole")
FILTERS = ("tick_size", "qty_step", "min_qty", "min_notional")
TIER_UNITS = ("quote", "contracts")


def tiers_from_table(rows: Iterable[Sequence[float]], rule: str = "bracket") -> tuple[Tier, ...]:
    """Tiers from ``(floor, cap, max_leverage, mmr[, imr])`` rows, with each ``cum`` derived.

    ``rule="bracket"`` (Binance, Bybit): ``cum_k = cum_(k-1) + floor_k * (mmr_k -
    mmr_(k-1))``, so MM is continuous; ``rule="whole"`` (OKX): every ``cum`` is 0 and
    the whole position takes its tier's rate, so MM jumps at the tier bounds.

    Example:
        >>> table = [(0, 50_000, 125, 0.004), (50_000, 250_000, 100, 0.005)]
        >>> [tier.cum for tier in tiers_from_table(table)]
        [0.0, 50.0]
        >>> [tier.cum for tier in tiers_from_table(table, rule="whole")]
        [0.0, 0.0]
    """
    if rule not in TIER_RULES:
        raise VenueSpecError(f"tier_rule must be 'bracket' or 'whole', got {rule!r}")
    table = [tuple(float(x) for x in row) for row in rows]
    if any(len(row) not in (4, 5) for row in table):
        raise VenueSpecError("a tier row is (floor, cap, max_leverage, mmr[, imr]); cum is derived")
    floors = np.array([row[0] for row in table], dtype=np.float64)
    mmrs = np.array([row[3] for row in table], dtype=np.float64)
    if rule == "bracket" and table:
        cums = derive_cums(floors, mmrs)
    else:
        cums = np.zeros(len(table))
    # rounded to 1e-8 quote: the float recursion leaves 949.9999999999998 for Binance's 950
    return tuple(
        Tier(row[0], row[1], row[2], row[3], round(float(cum), 8),
             row[4] if len(row) == 5 else None)
        for row, cum in zip(table, cums, strict=True)
    )


def _check_rate(where: str, name: str, value: float, low: float = 0.0) -> None:
    if not (isinstance(value, int | float) and low <= value < 1.0):
        raise VenueSpecError(f"{where}: {name} must be a rate in [{low:g}, 1), got {value!r}")


@dataclass(frozen=True)
class SymbolSpec:
    """The margin tiers, fees and funding terms of one symbol, in force from ``valid_from`` on.

    - ``tiers``: the brackets, lowest first (tier 1 in the venue's words is ``tiers[0]``).
    - ``taker_fee`` / ``maker_fee``: fee rates on filled notional (0.0005 = 5 bps);
      a negative maker fee is a rebate.
    - ``liquidation_fee``: rate charged on the notional closed by a liquidation
      (Binance's "insurance clearance fee"; OKX's taker-rate liquidation fee).
    - ``valid_from``: when this version took effect (None = always).
    - ``funding_interval_hours``: hours between funding times (0 = no funding, as in
      spot margin); ``funding_rate_cap`` / ``funding_rate_floor``: the bounds of one
      funding rate (None = not known).
    - ``tier_rule``: ``"bracket"`` (MM = N * mmr - cum, continuous) or ``"whole"``
      (the whole position at its tier's rate, cum = 0); ``tier_unit``: tier bounds
      in ``"quote"`` notional or in ``"contracts"``.
    - ``params``: the model's per-symbol numbers (its ``MarginModel.params``), e.g.
      OKX ``contract_size``, Kraken borrowing fees.
    - ``tick_size``, ``qty_step``, ``min_qty``, ``min_notional``: the venue's order filters
      (0 = none): the price tick (quote), the quantity step and minimum order size (base
      units, also where tiers are in contracts), the minimum notional of what an order opens
      (quote); ``filter_source`` says where they come from. The largest position is the top
      tier's cap (``max_position``).
    - ``stand_in``: the listed symbol whose table prices this one, when a run chose that
      (``load_venue(..., stand_in={"ADAUSDT": "BTCUSDT"})``); "" for the symbol's own.
    """

    symbol: str
    tiers: tuple[Tier, ...]
    taker_fee: float
    maker_fee: float
    liquidation_fee: float
    valid_from: pd.Timestamp | None = None
    source: str = ""
    funding_interval_hours: float = 8.0
    funding_rate_cap: float | None = None
    funding_rate_floor: float | None = None
    tier_rule: str = "bracket"
    tier_unit: str = "quote"
    params: Mapping[str, float] = field(default_factory=dict)
    tick_size: float = 0.0
    qty_step: float = 0.0
    min_qty: float = 0.0
    min_notional: float = 0.0
    filter_source: str = ""
    stand_in: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "params", dict(self.params))
        self.validate()

    @property
    def max_leverage(self) -> float:
        """The highest leverage the symbol allows: tier 1's (smaller positions)."""
        return self.tiers[0].max_leverage

    @property
    def max_position(self) -> float:
        """The largest position the venue allows, in the unit of the tier bounds (quote
        notional, or contracts): the top tier's cap."""
        return self.tiers[-1].cap

    @property
    def filters(self) -> dict[str, float]:
        """The order filters: ``tick_size``, ``qty_step``, ``min_qty``, ``min_notional``."""
        return {key: getattr(self, key) for key in FILTERS}

    @property
    def label(self) -> str:
        """``symbol BTCUSDT (valid from 2021-03-18)``: how errors and run records name it."""
        borrowed = f", {self.stand_in}'s table standing in" if self.stand_in else ""
        if self.valid_from is None:
            return f"symbol {self.symbol}" + (f" ({borrowed[2:]})" if borrowed else "")
        return f"symbol {self.symbol} (valid from {self.valid_from.date()}{borrowed})"

    def validate(self) -> None:
        """Raise ``VenueSpecError`` naming the symbol and tier if a rule is broken."""
        where = self.label
        if not self.tiers:
            raise VenueSpecError(f"{where}: needs at least one tier")
        _check_rate(where, "taker_fee", self.taker_fee)
        _check_rate(where, "maker_fee", self.maker_fee, low=-1.0)
        _check_rate(where, "liquidation_fee", self.liquidation_fee)
        if self.tier_rule not in TIER_RULES:
            raise VenueSpecError(f"{where}: tier_rule must be 'bracket' or 'whole', "
                                 f"got {self.tier_rule!r}")
        if self.tier_unit not in TIER_UNITS:
            raise VenueSpecError(f"{where}: tier_unit must be 'quote' or 'contracts', "
                                 f"got {self.tier_unit!r}")
        self._validate_funding(where)
        for key in FILTERS:
            value = getattr(self, key)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0):
                raise VenueSpecError(f"{where}: {key} must be a number >= 0 (0 = no filter), "
                                     f"got {value!r}")
        for key, value in self.params.items():
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and math.isfinite(value) and value >= 0):
                raise VenueSpecError(f"{where}: {key} must be a number >= 0, got {value!r}")
        previous = None
        for k, tier in enumerate(self.tiers):
            self._validate_tier(f"{where}, tier {k + 1}", k, tier, previous)
            previous = tier

    def _validate_funding(self, where: str) -> None:
        hours = self.funding_interval_hours
        if not (isinstance(hours, int | float) and math.isfinite(hours) and hours >= 0):
            raise VenueSpecError(f"{where}: funding_interval_hours must be >= 0 (0 = no "
                                 f"funding), got {hours!r}")
        cap, floor = self.funding_rate_cap, self.funding_rate_floor
        if cap is not None and not (isinstance(cap, int | float) and 0 <= cap < 1):
            raise VenueSpecError(f"{where}: funding_rate_cap must be in [0, 1), got {cap!r}")
        if floor is not None and not (isinstance(floor, int | float) and -1 < floor <= 0):
            raise VenueSpecError(f"{where}: funding_rate_floor must be in (-1, 0], got {floor!r}")

    def _validate_tier(self, at: str, k: int, tier: Tier, previous: Tier | None) -> None:
        numbers = (tier.floor, tier.cap, tier.max_leverage, tier.mmr, tier.cum)
        if not all(isinstance(v, int | float) and not math.isnan(v) for v in numbers):
            raise VenueSpecError(f"{at}: every field must be a number, got {tier}")
        if k == 0 and tier.floor != 0:
            raise VenueSpecError(f"{at}: the first floor must be 0, got {tier.floor:,g}")
        if not tier.cap > tier.floor:
            raise VenueSpecError(f"{at}: cap {tier.cap:,g} must be above floor {tier.floor:,g}")
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
        if tier.imr is not None and not (isinstance(tier.imr, int | float)
                                         and tier.mmr < tier.imr <= 1.0):
            raise VenueSpecError(f"{at}: imr {tier.imr!r} must be above mmr {tier.mmr:g} "
                                 f"and at most 1")
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
        if self.tier_rule == "whole":
            if tier.cum != 0.0:
                raise VenueSpecError(f"{at}: cum must be 0 under tier_rule 'whole' (the whole "
                                     f"position takes its tier's rate), got {tier.cum:,g}")
            return
        expected = 0.0 if previous is None else (
            previous.cum + tier.floor * (tier.mmr - previous.mmr))
        if abs(tier.cum - expected) > _CUM_TOLERANCE * max(1.0, abs(expected)):
            raise VenueSpecError(
                f"{at}: cum {tier.cum:,.2f} breaks the recursion "
                f"cum_k = cum_(k-1) + floor_k * (mmr_k - mmr_(k-1)) = {expected:,.2f}; "
                f"build tiers with tiers_from_table() so cum is derived"
            )

    def tier_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
        """``(floors, caps, mmrs, cums, n)`` of the tiers as published (bounds in the unit of
        ``tier_unit``)."""
        columns = np.array([(t.floor, t.cap, t.mmr, t.cum) for t in self.tiers], dtype=np.float64)
        floors, caps, mmrs, cums = (np.ascontiguousarray(columns[:, j]) for j in range(4))
        return floors, caps, mmrs, cums, len(self.tiers)

    def tier_for_notional(self, notional: float) -> int:
        """Index (0-based) of the tier holding a size in the unit of the tier bounds
        (``floor < N <= cap``), by the engine's lookup (``engine.rules.tier_from``)."""
        table = np.zeros((enums.N_TIER_FIELDS, 1, len(self.tiers)))
        table[enums.TierField.FLOOR, 0] = [t.floor for t in self.tiers]
        table[enums.TierField.CAP, 0] = [t.cap for t in self.tiers]
        return int(tier_from(float(notional), 0, 0, table,
                             np.array([len(self.tiers)], dtype=np.int64)))


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
    rules: np.ndarray | None = None  # (N_SYMBOL_FIELDS, N) the kernel's rule rows (enums.Sym.*)

    @classmethod
    def from_specs(cls, specs: Sequence[SymbolSpec], rules: np.ndarray | None = None
                   ) -> VenueArrays:
        n = len(specs)
        width = max((len(s.tiers) for s in specs), default=1)
        table = np.zeros((5, n, width), dtype=np.float64)
        for i, spec in enumerate(specs):
            # tiers in contracts (OKX) are kept in base units: the kernel looks them up with
            # the position's size |q| (enums.MM.BY_SIZE)
            unit = float(spec.params.get("contract_size", 1.0)) if spec.tier_unit == "contracts" \
                else 1.0
            rows = [(t.floor * unit, t.cap * unit, t.mmr, t.cum * unit, t.max_leverage)
                    for t in spec.tiers]
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
            liquidation_fee=rates("liquidation_fee"), rules=rules,
        )
