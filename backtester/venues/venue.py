"""A venue: its margin model, dated symbol specs, dated rules and collateral discount tiers.

Everything an exchange changes over time is stored with the date it took effect
(VENUES.md: "every parameter must be stored with a validity period"): each
symbol's tier table and fees (``SymbolSpec`` versions), the model's rule
parameters (``RuleSet`` versions, e.g. Bybit's 2025-09-02 margin formula) and
collateral discount tiers (``DiscountTiers`` versions, OKX multi-currency
margin). A version is in force from its ``valid_from`` until the next one's.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .models import MarginModel, default_rules
from .registry import margin_model
from .spec import (
    SymbolSpec,
    Timestamp,
    UnknownSymbolError,
    VenueArrays,
    VenueSpecError,
    normalise_symbol,
    to_timestamp,
)


@dataclass(frozen=True)
class RuleSet:
    """Changes to a model's rule parameters that took effect at ``valid_from`` (None = always)."""

    values: Mapping[str, Any]
    valid_from: pd.Timestamp | None = None
    source: str = ""


@dataclass(frozen=True)
class DiscountTiers:
    """Progressive discount rates of one collateral currency (OKX multi-currency margin).

    The slice of the holding inside ``floors[k] < x <= caps[k]`` counts at
    ``rates[k]`` (a tax-bracket sum, VENUES.md §4.5); ``unit`` says whether the
    bounds are in ``"usd"`` or in ``"coin"`` units.
    """

    currency: str
    floors: tuple[float, ...]
    caps: tuple[float, ...]
    rates: tuple[float, ...]
    unit: str = "usd"
    valid_from: pd.Timestamp | None = None
    source: str = ""

    def __post_init__(self) -> None:
        where = f"collateral {self.currency}"
        if self.unit not in ("usd", "coin"):
            raise VenueSpecError(f"{where}: unit must be 'usd' or 'coin', got {self.unit!r}")
        if not self.rates or not len(self.floors) == len(self.caps) == len(self.rates):
            raise VenueSpecError(f"{where}: needs tiers {{ floor, cap, rate }}")
        if self.floors[0] != 0:
            raise VenueSpecError(f"{where}: the first floor must be 0")
        for k, (floor, cap, rate) in enumerate(zip(self.floors, self.caps, self.rates,
                                                   strict=True)):
            if not cap > floor or (k and floor != self.caps[k - 1]):
                raise VenueSpecError(f"{where}, tier {k + 1}: tiers must be contiguous with "
                                     f"cap above floor")
            if not 0.0 <= rate <= 1.0 or (k and rate > self.rates[k - 1]):
                raise VenueSpecError(f"{where}, tier {k + 1}: a discount rate is in [0, 1] and "
                                     f"does not rise with the holding, got {rate!r}")

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """``(floors, caps, rates, n)`` for ``backtester.venues.okx.discounted_value``."""
        return (np.array(self.floors, dtype=np.float64), np.array(self.caps, dtype=np.float64),
                np.array(self.rates, dtype=np.float64), len(self.rates))


def unknown_symbol_message(venue: Venue, symbol: str, name: str) -> str:
    """What to do about a symbol ``venue`` does not list."""
    listed = ", ".join(sorted(venue.history)) or "none"
    some = next(iter(sorted(venue.history)), "BTCUSDT")
    return (
        f"venue {venue.name} has no tier table for symbol {symbol!r} (read as {name}); it "
        f"lists {listed}. Add it from the venue's API response ('backtester venues import'), "
        f"or price it with a listed symbol's table by choice: stand_in={{'{name}': "
        f"'{some}'}} (CLI --stand-in {name}={some})")


def _find_in_force(versions: Sequence, at: pd.Timestamp | None):
    """``(version, early)``: the version in force at ``at`` (versions sorted by
    ``valid_from``; None = latest); ``early`` when ``at`` is before the first, which then
    stands in."""
    if at is None:
        return versions[-1], False
    current = None
    for version in versions:
        if version.valid_from is None or version.valid_from <= at:
            current = version
    if current is None:
        return versions[0], True
    return current, False


def _warn_early(what: str, first) -> None:
    """The note that a time before the first version uses that one."""
    # a fixed text and location (stacklevel=1), so the default filter shows it once
    warnings.warn(
        f"{what} before {first.valid_from.date()}; earlier times use that one "
        f"(add the older table to the venue file)",
        UserWarning,
        stacklevel=1,
    )


def _in_force(versions: Sequence, at: pd.Timestamp | None, what: str):
    """The version in force at ``at`` (versions sorted by ``valid_from``; None = latest)."""
    current, early = _find_in_force(versions, at)
    if early:
        _warn_early(what, current)
    return current


def _time_key(at) -> tuple:
    """A memo key for a time as given (its type too: ``1`` and ``1.0`` convert apart)."""
    return (type(at), at)


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


@dataclass(frozen=True)
class Venue:
    """An exchange's margin rules: a model, dated tier tables and fees per symbol.

    - ``model``: the name of its margin model (``backtester.venues.registry``):
      ``binance``, ``bybit_uta``, ``okx`` or ``kraken_spot``; ``margin_model`` is the
      model itself.
    - ``symbols``: the latest spec of each listed symbol, keyed by the venue's
      spelling (``BTCUSDT``).
    - ``default``: the spec of any symbol not listed (None: unlisted symbols are an
      error).
    - ``funding_interval_hours``: hours between funding payments unless a symbol's
      version says otherwise (8 on Binance; 0 = no funding).
    - ``history`` / ``default_history``: every dated version, oldest first (filled
      from ``symbols`` / ``default`` when not given).
    - ``rule_history``: dated changes of the model's rules, oldest first.
    - ``collateral``: dated discount tiers per collateral currency.
    - ``stand_ins``: symbols the venue does not list, each priced with a listed symbol's
      tables by the user's explicit choice (``"*"``: any unlisted symbol); every spec so
      made says so (``SymbolSpec.stand_in``). Without one, an unlisted symbol is an error
      (``UnknownSymbolError``) unless the venue has a ``default`` spec: a rule it
      publishes for every other symbol (``flat``; Kraken's rates for other pairs).

    Example:
        >>> from backtester.venues import load_venue
        >>> venue = load_venue("binance_usdm")
        >>> venue.spec("BTC/USDT:USDT", at="2022-01-01").tiers[2].mmr
        0.01
        >>> load_venue("bybit_linear").rules(at="2025-09-02")["margin_price"]
        'mark'
    """

    name: str
    description: str
    symbols: Mapping[str, SymbolSpec]
    default: SymbolSpec | None = None
    funding_interval_hours: float = 8.0
    source: str = ""
    history: Mapping[str, tuple[SymbolSpec, ...]] = field(default_factory=dict)
    default_history: tuple[SymbolSpec, ...] = ()
    model: str = "binance"
    rule_history: tuple[RuleSet, ...] = ()
    collateral: Mapping[str, tuple[DiscountTiers, ...]] = field(default_factory=dict)
    stand_ins: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            margin_model(self.model)
        except VenueSpecError as exc:
            raise VenueSpecError(f"venue {self.name}: {exc}") from None
        history = {name: tuple(v) for name, v in self.history.items()}
        for name, spec in self.symbols.items():
            history.setdefault(name, (spec,))
        object.__setattr__(self, "history", history)
        object.__setattr__(self, "symbols", {n: v[-1] for n, v in history.items()})
        if not self.default_history and self.default is not None:
            object.__setattr__(self, "default_history", (self.default,))
        if self.default_history:
            object.__setattr__(self, "default", self.default_history[-1])
        object.__setattr__(self, "rule_history", tuple(self.rule_history))
        object.__setattr__(self, "collateral", {c: tuple(v) for c, v in self.collateral.items()})
        stand_ins = {}
        for symbol, other in dict(self.stand_ins).items():
            name = "*" if symbol == "*" else normalise_symbol(symbol)
            table = normalise_symbol(other)
            if table not in history:
                listed = ", ".join(sorted(history)) or "none"
                raise UnknownSymbolError(
                    f"stand_in {symbol}={other}: venue {self.name} has no {table} table to "
                    f"stand in; it lists: {listed}")
            if name not in history:  # a symbol the venue lists keeps its own table
                stand_ins[name] = table
        object.__setattr__(self, "stand_ins", stand_ins)
        object.__setattr__(self, "_memo", {})

    # What a venue resolves (a symbol's spec at a time, the rules and kernel arrays in force)
    # is memoised on the venue object itself: a venue is frozen, and any other venue (a file
    # edited and read again, another path, overrides, stand-ins, one built by hand) is
    # another object with a memo of its own, so one venue never gets another's spec. The
    # memo is not pickled (a worker process resolves again).

    _MEMO_SIZE = 4096  # entries; a caller asking at every bar of a long market starts over

    def _recall(self, *key):
        """``(key, value)`` from the memo: ``value`` None when it is not there, ``key`` None
        when it cannot be one (an unhashable time: resolved without the memo)."""
        try:
            return key, self._memo.get(key)
        except TypeError:
            return None, None

    def _remember(self, key, value):
        """Keep ``value`` under ``key`` (nothing when ``key`` is None); returns ``value``."""
        if key is None:
            return value
        if len(self._memo) >= self._MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = value
        return value

    def memoised(self, key: tuple, make: Callable[[], Any]) -> Any:
        """``make()``, made once per ``key`` on this venue and kept (``_MEMO_SIZE``): for what
        a caller builds from this venue's rules and plain values alone, such as the kernel
        arrays of a run's rule versions (``prepare.rule_versions``). ``key`` names every
        value ``make`` reads besides the venue; an unhashable key makes it anew. What is
        kept is shared between calls: a caller copies what it would change."""
        key, found = self._recall("made", *key)
        if found is None:
            found = self._remember(key, make())
        return found

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_memo"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.__dict__["_memo"] = {}

    def with_stand_ins(self, stand_ins: Mapping[str, str]) -> Venue:
        """This venue with unlisted symbols priced by listed ones' tables, by choice:
        ``{"ADAUSDT": "BTCUSDT"}``, or ``{"*": "BTCUSDT"}`` for any unlisted symbol. The
        choice is recorded on every spec it makes (``SymbolSpec.stand_in``), hence in
        ``Result.specs``, ``describe()`` and ``run.json``. A symbol the venue lists keeps its
        own table (so one choice can serve runs on several venues). Of the listed symbol's
        order filters only the minimum notional carries over (a price tick and a quantity
        step are in the other coin's units).

        Example:
            >>> from backtester.venues import load_venue
            >>> spec = load_venue("okx_swap").with_stand_ins({"*": "BTCUSDT"}).spec("ADA_USDT")
            >>> spec.symbol, spec.stand_in
            ('ADAUSDT', 'BTCUSDT')
        """
        if not stand_ins:
            return self
        return dataclasses.replace(self, symbols={}, default=None,
                                   stand_ins={**self.stand_ins, **stand_ins})

    @property
    def margin_model(self) -> MarginModel:
        """The venue's margin model (``backtester.venues.registry``): what it allows, its
        rule rows and its reference calculators."""
        return margin_model(self.model)

    def spec(self, symbol: str, at: Timestamp | None = None) -> SymbolSpec:
        """The spec of ``symbol`` in force at time ``at`` (None = the latest version).

        ``symbol`` may be any common spelling (``BTC_USDT``, ``BTC/USDT:USDT``,
        ``btcusdt``). An unlisted symbol takes the table chosen to stand in for it
        (``with_stand_ins``), else the venue's default spec, or raises
        ``UnknownSymbolError`` when there is neither. A time before the earliest
        version uses the earliest, with a warning.
        """
        key, found = self._recall("spec", symbol, _time_key(at))
        if found is None:
            found = self._remember(key, self._resolve_spec(symbol, at))
        spec, early = found
        if early is not None:
            _warn_early(*early)
        return spec

    def _resolve_spec(self, symbol: str, at) -> tuple[SymbolSpec, tuple | None]:
        """``(spec, early)``: ``spec(symbol, at)``, and what to warn of when ``at`` is before
        the symbol's first version (None otherwise)."""
        name = normalise_symbol(symbol)
        table, versions = self.table_of(symbol)
        spec, early = _find_in_force(versions, to_timestamp(at))
        warning = (f"{self.name} has no {table} tier table", spec) if early else None
        if table == name:
            return spec, warning
        if table != "default":
            # the table and fees stand in; of the order filters only the minimum notional
            # (quote) carries over: a price tick or quantity step is the other coin's
            return dataclasses.replace(spec, symbol=name, stand_in=table, tick_size=0.0,
                                       qty_step=0.0, min_qty=0.0), warning
        return dataclasses.replace(spec, symbol=name), warning

    def before_first(self, symbol: str, at: Timestamp) -> bool:
        """Whether ``at`` is before every version of ``symbol``'s table (its spec there is the
        earliest, with a note that says so)."""
        return _find_in_force(self.table_of(symbol)[1], to_timestamp(at))[1]

    def table_of(self, symbol: str) -> tuple[str, tuple[SymbolSpec, ...]]:
        """``(table, versions)``: whose dated tables price ``symbol`` (any spelling): its own,
        the listed symbol chosen to stand in for it, or ``"default"``; else
        ``UnknownSymbolError``, saying how to add it."""
        name = normalise_symbol(symbol)
        if name in self.history:
            return name, self.history[name]
        other = self.stand_ins.get(name, self.stand_ins.get("*"))
        if other is not None:
            return other, self.history[other]
        if self.default_history:
            return "default", self.default_history
        raise UnknownSymbolError(unknown_symbol_message(self, symbol, name))

    def rules(self, at: Timestamp | None = None) -> dict[str, Any]:
        """The model's rule parameters in force at ``at`` (None = the latest).

        Each dated ``RuleSet`` changes some parameters from its date on; the ones it
        does not name keep their earlier value (the model's default at first).

        Example:
            >>> from backtester.venues import load_venue
            >>> load_venue("kraken_spot").rules()["liquidation_level"]
            0.4
        """
        key, values = self._recall("rules", _time_key(at))
        if values is None:
            when = to_timestamp(at)
            values = default_rules(self.margin_model)
            for rule_set in self.rule_history:
                if when is None or rule_set.valid_from is None or rule_set.valid_from <= when:
                    values.update(rule_set.values)
            self._remember(key, values)
        return dict(values)  # (the caller's to change)

    def version_starts(self, symbols: Iterable[str]) -> tuple[int, ...]:
        """The times (ns since the epoch, sorted) at which a version of ``symbols``' tables or
        of the model's rules comes into force (``valid_from`` of each; undated ones left
        out)."""
        symbols = tuple(symbols)
        key, starts = self._recall("starts", symbols)
        if starts is None:
            found = {r.valid_from.value for r in self.rule_history if r.valid_from is not None}
            for symbol in symbols:
                found.update(spec.valid_from.value for spec in self.table_of(symbol)[1]
                             if spec.valid_from is not None)
            starts = self._remember(key, tuple(sorted(found)))
        return starts

    def discount_tiers(self, currency: str, at: Timestamp | None = None) -> DiscountTiers:
        """The discount tiers of a collateral ``currency`` in force at ``at``."""
        name = currency.upper()
        if name not in self.collateral:
            listed = ", ".join(sorted(self.collateral)) or "none"
            raise UnknownSymbolError(f"venue {self.name} has no discount tiers for {currency!r}; "
                                     f"it lists: {listed}")
        return _in_force(self.collateral[name], to_timestamp(at),
                         f"{self.name} has no {name} discount tiers")

    def versions(self) -> Iterator[tuple[str, SymbolSpec, pd.Timestamp | None]]:
        """``(symbol, spec, valid_to)`` for every version; ``valid_to`` None = still in force."""
        histories = dict(self.history)
        if self.default_history:
            histories["(any symbol)"] = self.default_history
        for symbol, versions in histories.items():
            for k, spec in enumerate(versions):
                until = versions[k + 1].valid_from if k + 1 < len(versions) else None
                yield symbol, spec, until

    def arrays(self, symbols: Iterable[str], at: Timestamp | None = None) -> VenueArrays:
        """The tiers and fees of ``symbols`` (in that order) at ``at``, as kernel arrays.

        Resolved once per venue, symbols and time: the arrays are shared, hence read-only
        (copy one to change it).

        Example:
            >>> from backtester.venues import load_venue
            >>> a = load_venue("binance_usdm").arrays(["BTC_USDT", "ETH_USDT"])
            >>> a.mmrs.shape, a.n_tiers.tolist()
            ((2, 12), [12, 12])
        """
        symbols = tuple(symbols)
        key, arrays = self._recall("arrays", symbols, _time_key(at))
        if arrays is not None:
            for symbol in symbols:  # (the notes of times before a first table, as before)
                self.spec(symbol, at)
            return arrays
        specs = [self.spec(s, at) for s in symbols]
        arrays = VenueArrays.from_specs(specs, rules=self.kernel_rules(specs, at))
        if key is not None:
            arrays = dataclasses.replace(arrays, **{
                f.name: _read_only(getattr(arrays, f.name)) for f in dataclasses.fields(arrays)
                if isinstance(getattr(arrays, f.name), np.ndarray)})
            self._remember(key, arrays)
        return arrays

    def kernel_rules(self, specs: Sequence[SymbolSpec], at: Timestamp | None = None
                     ) -> np.ndarray:
        """The kernel's rule rows (``enums.Sym.*``, (N_SYMBOL_FIELDS, N)) of ``specs`` at ``at``:
        how this venue's model values margin, settles a liquidation and charges funding
        and borrowing (``MarginModel.kernel_rules``). The leverage row is left 0 (it is
        the run's)."""
        return self.margin_model.kernel_rules(specs, self.rules(at), self.name)

    def account_rules(self, at: Timestamp | None = None) -> np.ndarray:
        """The kernel's account rules (``enums.AccountRule.*``, (N_ACCOUNT_RULES,)) at ``at``: how a
        triggered cross account is closed, spot margin's call and opening levels, and the
        hourly interest on a loan under multi-currency margin."""
        key, rules = self._recall("account_rules", _time_key(at))
        if rules is None:
            rules = self._remember(key, self.margin_model.account_rules(self.rules(at)))
        return rules.copy()  # (the kernel's to write)

    def check_leverage(
        self, symbol: str, leverage: float, at: Timestamp | None = None,
        notional: float | None = None, tier: int | None = None,
    ) -> None:
        """Raise ``ValueError`` unless ``0 < leverage <=`` the symbol's cap.

        The cap is tier 1's max leverage, or, when ``notional`` is given, that of
        the tier holding it (bigger positions allow less). ``notional`` is in the
        unit of the symbol's tier bounds: quote, or contracts on OKX. ``tier``
        (0-based) names the tier outright, for a caller that has looked it up.

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
        k = tier if tier is not None else (
            0 if notional is None else spec.tier_for_notional(abs(notional)))
        cap = spec.tiers[k].max_leverage
        if leverage > cap:
            unit = "a notional" if spec.tier_unit == "quote" else "a size (contracts)"
            size = "" if notional is None else f" at {unit} of {abs(notional):,.0f}"
            raise ValueError(
                f"leverage {leverage:g} for {symbol} exceeds {self.name}'s cap of {cap:g}x "
                f"(tier {k + 1}){size}"
            )
