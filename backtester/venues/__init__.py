"""Venues: exchange margin rules kept as dated TOML data files, and the margin models they follow.

A venue is data (a TOML file: tiers, fees, filters, funding terms, each dated)
plus the margin model it names. Built-in venues (``list_venues()``):
``binance_usdm`` and ``flat`` (model ``binance``), ``bybit_linear``
(``bybit_uta``), ``okx_swap`` (``okx``) and ``kraken_spot`` (``kraken_spot``).

Each model lives in one module, ``binance``, ``bybit``, ``okx`` or ``kraken``: what
the venue allows (margin modes, position modes, collateral), its rule parameters,
how a symbol's spec becomes the kernel's rule rows, its rows of
``Result.describe()`` and its reference calculators (VENUES.md's worked
examples; ``backtester.liquidation`` dispatches to them). ``registry.MODELS``
lists the models; ``Venue.margin_model`` is a venue's. ``models`` holds their
base, ``MarginModel``. What the engine simulates of each model, and what it leaves
out, is in ``MODELS.md`` next to this file.

A venue file (or any path) has this shape::

    name = "binance_usdm"                 # how runs and reports name the venue
    model = "binance"                     # binance | bybit_uta | okx | kraken_spot
    description = "..."
    source = "VENUES.md §2.3"             # where the numbers come from
    funding_interval_hours = 8            # default of every version (0 = no funding)
    funding_cap_mmr_multiple = 0.75       # optional: |funding rate| <= 0.75 x tier-1 mmr
    tier_rule = "bracket"                 # "bracket": MM = N*mmr - cum (cum derived);
                                          # "whole": the whole position at its tier's rate
    tier_unit = "quote"                   # tier bounds in "quote" notional or "contracts"

    [fees]                                # every symbol's fees unless a version sets its own
    taker_fee = 0.0005
    maker_fee = 0.0002
    liquidation_fee = 0.0125

    [params]                              # the model's per-symbol numbers (okx, kraken_spot)

    [[symbols.BTCUSDT]]                   # one entry per dated version, oldest first
    valid_from = 2021-03-18               # a TOML date or date-time (UTC); in force until
    source = "..."                        # the next version's valid_from
    liquidation_fee = 0.0125              # a version may set any fee, shared key or param
    tiers = [                             # floor < size <= cap
      { floor = 0, cap = 50_000, max_leverage = 125, mmr = 0.004 },
      { floor = 50_000, cap = 250_000, max_leverage = 100, mmr = 0.005 },
    ]                                     # a tier may add imr (initial margin rate)

    [[filters.BTCUSDT]]                   # optional: dated order filters of a listed symbol
    valid_from = 2024-10-02               # (merged into its versions; the first stands in
    source = "..."                        # before its date)
    tick_size = 0.1                       # price tick (quote)
    qty_step = 0.001                      # quantity step and minimum order (base units)
    min_qty = 0.001
    min_notional = 100                    # least notional an order may open (quote)
    liquidation_fee = 0.0125              # Binance publishes it beside the filters

    [[default]]                           # optional: a rule the venue publishes for every
    tiers = [{ floor = 0, cap = inf, max_leverage = 100, mmr = 0.005 }]   # other symbol

    [[rules]]                             # optional: dated changes of the model's rules
    valid_from = 2025-09-02               # (backtester.venues.registry.MODELS[model].rules)
    margin_price = "mark"

    [[collateral.BETH]]                   # optional: dated discount tiers of a collateral
    valid_from = 2024-07-18
    unit = "usd"
    tiers = [{ floor = 0, cap = 2_000_000, rate = 0.95 }]

``cum`` (the maintenance amount) is never written: it is derived from the floors and
rates (VENUES.md §2.3), so a table cannot be internally inconsistent.
``valid_from`` may be left out only where a symbol has a single version.

A symbol a venue does not list (and that no ``[[default]]`` covers) is an error; a run may
price it with a listed symbol's table by explicit choice (``load_venue(name,
stand_in={"ETHUSDT": "BTCUSDT"})``, ``run(stand_in=...)``), which every spec it makes
records. ``importer`` turns the venues' own API responses into these tables
(``backtester venues import``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from stat import S_ISREG

from .files import apply_overrides, read_venue
from .models import MarginModel
from .registry import MODELS, margin_model
from .spec import (
    SymbolSpec,
    Tier,
    UnknownSymbolError,
    VenueArrays,
    VenueSpecError,
    normalise_symbol,
    tiers_from_table,
)
from .venue import DiscountTiers, RuleSet, Venue

__all__ = [
    "MODELS",
    "DiscountTiers",
    "MarginModel",
    "RuleSet",
    "SymbolSpec",
    "Tier",
    "UnknownSymbolError",
    "Venue",
    "VenueArrays",
    "VenueSpecError",
    "check_leverage",
    "list_venues",
    "load_venue",
    "margin_model",
    "normalise_symbol",
    "tiers_from_table",
]

_HERE = Path(__file__).parent
_HERE_TEXT = str(_HERE)


def list_venues() -> list[str]:
    """Names of the built-in venues, for ``load_venue(name)``.

    Example:
        >>> list_venues()
        ['binance_usdm', 'bybit_linear', 'flat', 'kraken_spot', 'okx_swap']
    """
    return sorted(p.stem for p in _HERE.glob("*.toml"))


def load_venue(name_or_path: str | Path | Venue = "binance_usdm",
               stand_in: Mapping[str, str] | None = None, **overrides) -> Venue:
    """Load a venue by built-in name, from a TOML file, or pass a ``Venue`` through.

    ``overrides`` replace spec values for every symbol and version:
    ``taker_fee``, ``maker_fee`` and ``liquidation_fee`` (rates of the traded or
    liquidated notional) on any venue; the model's per-symbol params (e.g.
    Kraken's ``long_rollover_fee``) and rules (e.g. Bybit's ``margin_price``, held
    at every date); ``mmr`` (maintenance margin rate) and ``max_leverage`` only on
    venues whose tables have a single tier, such as ``flat``.

    ``stand_in`` prices symbols the venue does not list with a listed symbol's tables, by
    explicit choice (``{"ADAUSDT": "BTCUSDT"}``, ``{"*": "BTCUSDT"}`` for any), recorded on
    every spec it makes (``Venue.with_stand_ins``); without it such a symbol is an error
    that says how to add it.

    Example:
        >>> load_venue("flat", mmr=0.01, max_leverage=50).spec("SOLUSDT").tiers[0].mmr
        0.01
        >>> load_venue("binance_usdm", taker_fee=0.0004).spec("BTCUSDT").taker_fee
        0.0004
        >>> load_venue("kraken_spot", liquidation_level=0.5).rules()["liquidation_level"]
        0.5
    """
    if isinstance(name_or_path, Venue):
        venue = name_or_path
    elif isinstance(name_or_path, str | os.PathLike):
        venue = _venue_file(name_or_path)
    else:
        raise ValueError(f"venue={name_or_path!r}: give a built-in venue name (e.g. "
                         "'binance_usdm'), the path of a .toml venue file or a Venue")
    if not overrides and not stand_in:
        return venue
    try:  # the same choices on the same venue make the same (frozen) venue: made once
        key = (id(venue), tuple(sorted(overrides.items())),
               tuple(sorted(dict(stand_in or {}).items())))
        hash(key)
    except TypeError:  # an unhashable value: its error comes from apply_overrides
        key = None
    made = _MADE.get(key) if key is not None else None
    if made is not None and made[0] is venue:
        return made[1]
    changed = apply_overrides(venue, overrides) if overrides else venue
    changed = changed.with_stand_ins(stand_in) if stand_in else changed
    if key is not None:
        if len(_MADE) >= 256:
            _MADE.clear()
        _MADE[key] = (venue, changed)  # (the base kept alive: its id stays its own)
    return changed


_READ: dict[tuple[str, int, int], Venue] = {}  # (path, mtime, size) -> the file's Venue
_MADE: dict[tuple, tuple[Venue, Venue]] = {}  # (base id, overrides, stand-ins) -> the result


def _venue_file(name_or_path: str | os.PathLike) -> Venue:
    """The venue of a built-in name or a TOML path (``_read_cached``)."""
    if isinstance(name_or_path, str) and "/" not in name_or_path:  # a built-in venue?
        built_in = os.path.join(_HERE_TEXT, f"{name_or_path}.toml")
        try:
            stat = os.stat(built_in)
        except (OSError, ValueError):
            stat = None
        if stat is not None and S_ISREG(stat.st_mode):
            return _read_cached(built_in, stat)
    path = _resolve(name_or_path)
    return _read_cached(str(path), path.stat())


def _read_cached(path: str, stat: os.stat_result) -> Venue:
    """The venue of a TOML file, parsed once while the file is unchanged (a venue is frozen:
    runs share it; a file edited since, by time or size, is read again)."""
    key = (path, stat.st_mtime_ns, stat.st_size)
    venue = _READ.get(key)
    if venue is None:
        venue = read_venue(Path(path))
        if len(_READ) >= 64:  # venue files a session reads: a handful
            _READ.clear()
        _READ[key] = venue
    return venue


def check_leverage(venue: Venue | str, symbol: str, leverage: float, at=None,
                   notional: float | None = None) -> None:
    """Raise ``ValueError`` when ``leverage`` is <= 0 or above the symbol's cap on ``venue``.

    Example:
        >>> check_leverage("binance_usdm", "BTC_USDT", 20)   # fine: returns None
    """
    load_venue(venue).check_leverage(symbol, leverage, at=at, notional=notional)


def _resolve(name_or_path: str | Path) -> Path:
    if isinstance(name_or_path, str) and "/" not in name_or_path \
            and (_HERE / f"{name_or_path}.toml").is_file():  # a built-in venue
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
