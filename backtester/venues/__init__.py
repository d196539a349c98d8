"""Venue specs: exchange margin rules kept as TOML data files, loaded into frozen types.

A venue file (``binance_usdm.toml``, ``flat.toml`` next to this module, or any
path) has this shape::

    name = "binance_usdm"                 # how runs and reports name the venue
    description = "..."
    funding_interval_hours = 8
    source = "VENUES.md §2.3"             # where the numbers come from

    [fees]                                # every symbol's fees unless a version sets its own
    taker_fee = 0.0005
    maker_fee = 0.0002
    liquidation_fee = 0.0125

    [[symbols.BTCUSDT]]                   # one entry per dated version, oldest first
    valid_from = 2021-03-18               # a TOML date or date-time (UTC); in force until
    source = "..."                        # the next version's valid_from
    tiers = [                             # floor < notional <= cap, in quote currency
      { floor = 0, cap = 50_000, max_leverage = 125, mmr = 0.004 },
      { floor = 50_000, cap = 250_000, max_leverage = 100, mmr = 0.005 },
    ]
    # a version may also set taker_fee, maker_fee, liquidation_fee

    [[default]]                           # optional: the spec of any unlisted symbol
    tiers = [{ floor = 0, cap = inf, max_leverage = 100, mmr = 0.005 }]

``cum`` (the maintenance amount) is never written: it is derived from the floors
and rates (VENUES.md §2.3), so a table cannot be internally inconsistent.
``valid_from`` may be left out only where a symbol has a single version.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .spec import (
    SymbolSpec,
    Tier,
    UnknownSymbolError,
    Venue,
    VenueArrays,
    VenueSpecError,
    normalise_symbol,
    tiers_from_table,
    to_timestamp,
)

__all__ = [
    "SymbolSpec",
    "Tier",
    "UnknownSymbolError",
    "Venue",
    "VenueArrays",
    "VenueSpecError",
    "check_leverage",
    "list_venues",
    "load_venue",
    "normalise_symbol",
    "tiers_from_table",
]

_HERE = Path(__file__).parent
_FEES = ("taker_fee", "maker_fee", "liquidation_fee")
_TIER_OVERRIDES = ("mmr", "max_leverage")
_TOP_KEYS = {"name", "description", "funding_interval_hours", "source", "fees", "symbols",
             "default"}
_VERSION_KEYS = {"valid_from", "source", "tiers", *_FEES}
_TIER_KEYS = ("floor", "cap", "max_leverage", "mmr")


def list_venues() -> list[str]:
    """Names of the built-in venues, for ``load_venue(name)``.

    Example:
        >>> list_venues()
        ['binance_usdm', 'flat']
    """
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def load_venue(name_or_path: str | Path | Venue = "binance_usdm", **overrides: float) -> Venue:
    """Load a venue by built-in name, from a TOML file, or pass a ``Venue`` through.

    ``overrides`` replace spec values for every symbol and version:
    ``taker_fee``, ``maker_fee`` and ``liquidation_fee`` (rates of the traded or
    liquidated notional) on any venue; ``mmr`` (maintenance margin rate) and
    ``max_leverage`` only on venues whose tables have a single tier, such as
    ``flat`` (a tiered table cannot take one rate).

    Example:
        >>> load_venue("flat", mmr=0.01, max_leverage=50).spec("SOLUSDT").tiers[0].mmr
        0.01
        >>> load_venue("binance_usdm", taker_fee=0.0004).spec("BTCUSDT").taker_fee
        0.0004
    """
    if isinstance(name_or_path, Venue):
        venue = name_or_path
    else:
        venue = _read(_resolve(name_or_path))
    return _apply_overrides(venue, overrides) if overrides else venue


def check_leverage(venue: Venue | str, symbol: str, leverage: float, at=None,
                   notional: float | None = None) -> None:
    """Raise ``ValueError`` when ``leverage`` is <= 0 or above the symbol's cap on ``venue``.

    Example:
        >>> check_leverage("binance_usdm", "BTC_USDT", 20)   # fine: returns None
    """
    load_venue(venue).check_leverage(symbol, leverage, at=at, notional=notional)


def _resolve(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, str) and name_or_path in list_venues():
        return _HERE / f"{name_or_path}.toml"
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"venue file {path} does not exist")
        return path
    raise ValueError(
        f"unknown venue {str(name_or_path)!r}: built-in venues are "
        f"{', '.join(list_venues())}, or give the path of a .toml venue file"
    )


def _read(path: Path) -> Venue:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise VenueSpecError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return _venue_from_dict(data, default_name=path.stem)
    except VenueSpecError as exc:
        raise VenueSpecError(f"{path}: {exc}") from None


def _unknown_keys(where: str, table: Mapping[str, Any], allowed) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise VenueSpecError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _venue_from_dict(data: Mapping[str, Any], default_name: str) -> Venue:
    _unknown_keys("top level", data, _TOP_KEYS)
    fees = data.get("fees", {})
    _unknown_keys("[fees]", fees, _FEES)
    symbols = data.get("symbols", {})
    if not isinstance(symbols, Mapping):
        raise VenueSpecError("symbols must be tables: [[symbols.BTCUSDT]]")
    history = {}
    for key, versions in symbols.items():
        name = normalise_symbol(key)
        if name in history:
            raise VenueSpecError(f"symbol {key} is listed twice (as {name})")
        history[name] = _versions(name, versions, fees)
    default = _versions("default", data["default"], fees) if "default" in data else ()
    if not history and not default:
        raise VenueSpecError("lists no [[symbols.NAME]] and no [[default]] spec")
    hours = data.get("funding_interval_hours", 8)
    if not (isinstance(hours, int | float) and hours > 0):
        raise VenueSpecError(f"funding_interval_hours must be positive, got {hours!r}")
    return Venue(
        name=str(data.get("name", default_name)),
        description=str(data.get("description", "")),
        symbols={},
        funding_interval_hours=float(hours),
        source=str(data.get("source", "")),
        history=history,
        default_history=default,
    )


def _versions(name: str, versions: Any, fees: Mapping[str, float]) -> tuple[SymbolSpec, ...]:
    if isinstance(versions, Mapping):
        versions = [versions]
    if not versions:
        raise VenueSpecError(f"symbol {name}: no tier table")
    specs = []
    for v, version in enumerate(versions):
        where = f"symbol {name}, version {v + 1}"
        _unknown_keys(where, version, _VERSION_KEYS)
        valid_from = version.get("valid_from")
        if valid_from is None and len(versions) > 1:
            raise VenueSpecError(f"{where}: valid_from is required when a symbol has versions")
        if valid_from is not None and not isinstance(valid_from, dt.date):
            raise VenueSpecError(f"{where}: valid_from must be a TOML date such as 2024-05-30")
        rows = version.get("tiers")
        if not isinstance(rows, list) or not rows:
            raise VenueSpecError(f"{where}: tiers must be a non-empty list of tables")
        table = []
        for k, row in enumerate(rows):
            at = f"{where}, tier {k + 1}"
            if not isinstance(row, Mapping):
                raise VenueSpecError(f"{at}: a tier is a table {{ floor, cap, max_leverage, mmr }}")
            if "cum" in row:
                raise VenueSpecError(
                    f"{at}: remove 'cum': the maintenance amount is derived from the floors and "
                    f"rates (cum_k = cum_(k-1) + floor_k * (mmr_k - mmr_(k-1))), never typed in"
                )
            _unknown_keys(at, row, _TIER_KEYS)
            missing = [key for key in _TIER_KEYS if key not in row]
            if missing:
                raise VenueSpecError(f"{at}: missing {', '.join(missing)}")
            if not all(isinstance(row[key], int | float) for key in _TIER_KEYS):
                raise VenueSpecError(f"{at}: floor, cap, max_leverage and mmr must be numbers")
            table.append(tuple(row[key] for key in _TIER_KEYS))
        rates = {key: version.get(key, fees.get(key)) for key in _FEES}
        missing = [key for key, value in rates.items() if value is None]
        if missing:
            raise VenueSpecError(f"{where}: no {', '.join(missing)} here or in [fees]")
        spec = SymbolSpec(
            symbol=name,
            tiers=tiers_from_table(table),
            valid_from=None if valid_from is None else to_timestamp(valid_from),
            source=str(version.get("source", "")),
            **rates,
        )
        if specs and not spec.valid_from > specs[-1].valid_from:
            raise VenueSpecError(f"{where}: valid_from must be later than version {v}'s")
        specs.append(spec)
    return tuple(specs)


def _apply_overrides(venue: Venue, overrides: Mapping[str, float]) -> Venue:
    single_tier = all(
        len(spec.tiers) == 1
        for versions in (*venue.history.values(), venue.default_history) for spec in versions
    )
    accepted = _FEES + (_TIER_OVERRIDES if single_tier else ())
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        why = "" if single_tier else f" ({venue.name} has tiered tables: no mmr/max_leverage)"
        raise ValueError(
            f"unknown venue override(s) {', '.join(unknown)} for {venue.name}; "
            f"accepted: {', '.join(accepted)}{why}"
        )

    def change(spec: SymbolSpec) -> SymbolSpec:
        fields = {k: float(v) for k, v in overrides.items() if k in _FEES}
        tier_fields = {k: float(v) for k, v in overrides.items() if k in _TIER_OVERRIDES}
        if tier_fields:
            fields["tiers"] = (dataclasses.replace(spec.tiers[0], **tier_fields),)
        try:
            return dataclasses.replace(spec, **fields)
        except VenueSpecError as exc:
            raise ValueError(
                f"venue {venue.name} with overrides {dict(overrides)}: {exc}"
            ) from None

    return dataclasses.replace(
        venue,
        symbols={},
        history={name: tuple(map(change, v)) for name, v in venue.history.items()},
        default=None,
        default_history=tuple(map(change, venue.default_history)),
    )
