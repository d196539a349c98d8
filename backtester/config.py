"""``RunConfig``: how one backtest is run, and the checks of its options.

Its own module so that everything that reads a run's configuration (``prepare``,
``result``, ``sweep``, ``compare``) imports it without importing ``run()``.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .engine import enums
from .venues import Venue


@dataclass(frozen=True)
class RunConfig:
    """How one backtest is run: the account, the venue rules and the simulation choices.

    - ``initial_balance``: the deposit, in the quote currency (USDT).
    - ``venue``: a built-in venue name (``"binance_usdm"``, ``"flat"``), a TOML
      path or a ``Venue``; it supplies tiers, fees and the liquidation fee.
    - ``margin_mode``: ``"cross"`` or ``"isolated"``, or a mapping symbol -> mode.
    - ``leverage``: the leverage of each position (initial margin = notional /
      leverage), one number or a mapping symbol -> leverage. It may not exceed
      the venue's cap; an order whose notional lands in a tier with a lower max
      leverage is rejected.
    - ``target_kind``: what the target numbers mean: ``"units"`` (signed base
      units), ``"notional"`` (signed quote notional) or ``"equity"`` (signed
      fraction of account equity), converted at the decision-time close.
    - ``sizing``: what an equity fraction (``target_kind="equity"``, targets and a
      callback's ``order_target``/``order_delta``) sizes. ``"exposure"`` (the default):
      the notional, fraction x equity, whatever the leverage (the leverage sets only
      the margin it takes). ``"margin"``: the initial margin committed, so the notional
      is fraction x equity x the symbol's current leverage (a callback's
      ``set_leverage`` counts) and the exposure grows with the leverage. ``"margin"``
      with another ``target_kind`` is an error.
    - ``fill_at``: ``"open"`` (decided at close[t], filled at open[t+1]) or
      ``"close"`` (decided and filled at close[t]: optimistic, it assumes you
      can trade at the price you just saw).
    - ``path``: the intrabar price path for liquidation checks: ``"path"``
      (open -> low -> high -> close, or open -> high -> low -> close on a down
      bar), ``"worst"`` (every position at its adverse extreme at once: a stress
      view) or ``"close"`` (straight from open to close, extremes ignored).
    - ``slippage``: a fraction of the price paid against the trader on every
      strategy fill (0.0005 = 5 bps).
    - ``reduce_to_fit``: cut an order that needs more margin than is available
      down to what is available, instead of rejecting it.
    - ``record_positions``: record each position and its liquidation price at every close
      in (T, N) arrays (two arrays of 8 bytes per bar and symbol). Off by default (None:
      on only with ``record_margins``): ``Result.positions`` is then rebuilt from the
      fills (the same numbers) and ``Result.liquidation_prices`` computed when first
      asked, by running again with the liquidation prices recorded (one array).
    - ``record_margins``: also keep, per position and close, its entry price and what
      backs it (``Result.margins``: isolated, its own margin; cross, the account's),
      which ``Result.adl_ranks()`` reads. Off by default; records the positions too.
    - ``instruments``: a mapping symbol -> ``"perpetual"`` (the default for any
      symbol left out) or ``"spot"``. A spot holding is fully paid from the
      wallet (no leverage), pays no funding, is never liquidated and cannot be
      short (such an order is rejected); it counts in equity and exposure.
      ``margin_mode`` and ``leverage`` apply to the perpetuals only.
    - ``spot_fee``: the taker fee rate of spot fills (0.001 = Binance spot's 0.1%).
    - ``position_mode``: ``"one_way"`` (one net position per symbol) or ``"hedge"``
      (Binance's hedge mode: a long and a short leg side by side), or a mapping
      symbol -> mode. A hedge symbol's legs are the market columns ``SYM.long`` and
      ``SYM.short``: targets name the legs (long leg >= 0, short leg <= 0), and the
      Result reports each leg as a symbol. Each leg has its own entry, margin and
      bracket; isolated legs are liquidated one by one, cross legs together with
      the account (their shared liquidation price solves Binance's hedge formula).
      ``margin_mode`` and ``leverage`` given for ``SYM`` apply to both legs.
    - ``collateral``: OKX multi-currency margin, Binance Multi-Assets mode or Bybit's unified
      account (the last two cross margin only): coins held besides the quote balance,
      e.g. ``{"BTC": 1.0}``, each valued at the mark of the market's ``BTC_USDT``
      column. They back the cross account at their discounted value (the venue's
      progressive discount tiers), pay no funding and are not traded; the Result
      reports each as a column named by the currency. A quote balance that losses
      take below zero is a loan charged the venue's ``loan_rate``; after a cross
      liquidation collateral is sold at the trigger prices to repay it.
    - ``stand_in``: symbols the venue does not list, each priced with a listed symbol's
      tier table and fees by explicit choice: ``{"ADA_USDT": "BTC_USDT"}``, or
      ``{"*": "BTC_USDT"}`` for every unlisted symbol. Without it an unlisted symbol is an
      error that says how to add it; with it, ``Result.specs``, ``describe()`` and
      ``run.json`` name the table that stood in.
    - ``order_filters``: apply the venue's order filters (default): order sizes rounded
      toward zero to the quantity step, orders under the minimum quantity or (for what
      they open) the minimum notional refused, slipped fill prices on the price tick.
      ``False`` trades any fraction (an idealisation for research, as vectorbt does; a
      wiped account may then hold dust). The largest position (the top tier's cap) holds
      either way.
    """

    initial_balance: float = 10_000.0
    venue: str | Venue = "binance_usdm"
    margin_mode: str | Mapping[str, str] = "cross"
    leverage: float | Mapping[str, float] = 10.0
    target_kind: str = "units"
    sizing: str = "exposure"
    fill_at: str = "open"
    path: str = "path"
    slippage: float = 0.0
    reduce_to_fit: bool = False
    record_positions: bool | None = None
    record_margins: bool = False
    venue_overrides: Mapping[str, float] = field(default_factory=dict)
    instruments: Mapping[str, str] = field(default_factory=dict)
    spot_fee: float = 0.001
    position_mode: str | Mapping[str, str] = "one_way"
    collateral: Mapping[str, float] = field(default_factory=dict)
    stand_in: Mapping[str, str] = field(default_factory=dict)
    order_filters: bool = True

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed (unknown names raise a clear error)."""
        unknown = sorted(set(changes) - _FIELDS)
        if unknown:
            raise TypeError(
                f"unknown run option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(sorted(_FIELDS))}"
            )
        if not changes:
            return self  # (frozen: the same configuration)
        # (what dataclasses.replace does, without its per-call look at the fields: a run
        # pays this once; RunConfig has no __post_init__ to call)
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def check(self) -> RunConfig:
        """Check every option's type and range, all in this one place: what can be checked
        without the market and the venue (the symbols a mapping names, the venue's leverage
        cap and margin modes are checked when the run is prepared). Returns ``self``.

        A wrong value raises ``ValueError`` naming the keyword as it was given
        (``leverage='ten': ...``, ``leverage['BTC_USDT']=0: ...``). Nothing is coerced:
        ``initial_balance="10000"`` is refused, not read as a number; a bool is not a
        number.
        """
        _amount("initial_balance", self.initial_balance, "a positive amount of the quote "
                "currency, e.g. 10000")
        if not isinstance(self.venue, str | os.PathLike | Venue):
            raise ValueError(f"venue={self.venue!r}: give a built-in venue name (e.g. "
                             "'binance_usdm'), the path of a .toml venue file or a Venue")
        _per_symbol("margin_mode", self.margin_mode, _choice_check(MARGIN_MODES))
        _per_symbol("leverage", self.leverage, lambda name, v: _amount(
            name, v, "a positive number (initial margin = notional / leverage), e.g. 10"))
        choice("target_kind", self.target_kind, enums.TARGET_KIND_NAMES)
        choice("sizing", self.sizing, enums.SIZING_NAMES)
        if self.sizing == "margin" and self.target_kind != "equity":
            raise ValueError(
                f"sizing='margin' sizes fractions of equity as initial margin, but "
                f"target_kind={self.target_kind!r}: give target_kind='equity' (targets as "
                "fractions of equity), or sizing='exposure' for targets in units or notional")
        choice("fill_at", self.fill_at, enums.FILL_AT_NAMES)
        choice("path", self.path, enums.PATH_NAMES)
        _amount("slippage", self.slippage, "a fraction of the price in [0, 0.5), e.g. 0.0005",
                low=0.0, high=0.5)
        _amount("spot_fee", self.spot_fee, "a fee rate in [0, 0.1), e.g. 0.001", low=0.0,
                high=0.1)
        for name in ("reduce_to_fit", "record_positions", "record_margins", "order_filters"):
            value = getattr(self, name)
            if value is None and name == "record_positions":
                continue  # (the default: recorded with record_margins only)
            if not isinstance(value, bool | np.bool_):
                raise ValueError(f"{name}={value!r}: must be True or False")
        if self.record_margins and self.record_positions is False:
            raise ValueError("record_margins=True needs record_positions=True: the margins are "
                             "recorded with the positions they back")
        _mapping("venue_overrides", self.venue_overrides, lambda name, v: _amount(
            name, v, "a finite number (a rate, e.g. 0.0004)", low=-np.inf, high=np.inf),
                 "{'taker_fee': 0.0004}")
        _mapping("instruments", self.instruments, _choice_check(enums.INSTRUMENT_NAMES),
                 "{'BTC_USDT_SPOT': 'spot'}")
        _per_symbol("position_mode", self.position_mode,
                    _choice_check(enums.POSITION_MODE_NAMES))
        _mapping("collateral", self.collateral, lambda name, v: _amount(
            name, v, "a positive amount of coins, e.g. 0.5"), "{'BTC': 0.5}")
        _mapping("stand_in", self.stand_in, _symbol_check, "{'ADA_USDT': 'BTC_USDT'}")
        return self


_FIELDS = frozenset(f.name for f in dataclasses.fields(RunConfig))
MARGIN_MODES = enums.MARGIN_MODE_NAMES[:2]  # cross, isolated (spot and collateral are kinds)


def _amount(name: str, value, what: str, low: float | None = None,
            high: float | None = None) -> float:
    """A number option: a real number (not text, not a bool), finite, in range."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        kind = "text" if isinstance(value, str) else f"a {type(value).__name__}"
        raise ValueError(f"{name}={value!r} is {kind}, not a number: it must be {what}")
    number = float(value)
    inside = number > 0.0 if low is None else low <= number < high
    if not (math.isfinite(number) and inside):
        raise ValueError(f"{name}={value!r}: must be {what}")
    return number


def _choice_check(names: tuple[str, ...]):
    return lambda name, value: choice(name, value, names)


def _symbol_check(name: str, value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name}={value!r}: must be the name of a symbol the venue lists, "
                         f"e.g. 'BTC_USDT'")


def _mapping(name: str, value, check, example: str) -> None:
    """A mapping option (symbol or key -> value): each entry checked as ``name[key]``."""
    if not isinstance(value, Mapping):
        raise ValueError(f"{name}={value!r}: must be a mapping, e.g. {name}={example}")
    for key, item in value.items():
        if not isinstance(key, str):
            raise ValueError(f"{name}= has the key {key!r}: keys are names (strings)")
        check(f"{name}[{key!r}]", item)


def _per_symbol(name: str, value, check) -> None:
    """An option given once for all symbols or as a mapping symbol -> value."""
    if isinstance(value, Mapping):
        _mapping(name, value, check, "")
    else:
        check(name, value)


def choice(name: str, value: str, names: tuple[str, ...]) -> int:
    """The code of ``value`` among ``names`` (a clear error naming the option otherwise)."""
    if not isinstance(value, str) or value not in names:
        raise ValueError(f"{name}={value!r}: must be one of {', '.join(map(repr, names))}")
    return names.index(value)


def per_symbol(name: str, value, symbols: tuple[str, ...], convert) -> list:
    """One value per symbol from a scalar or a {symbol: value} mapping (all symbols required)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(symbols))
        if unknown:
            raise ValueError(
                f"{name}= names unknown symbol(s) {', '.join(unknown)}; the market holds "
                f"{', '.join(symbols)}"
            )
        missing = [s for s in symbols if s not in value]
        if missing:
            raise ValueError(f"{name}= gives no value for {', '.join(missing)}")
        return [convert(value[s], s) for s in symbols]
    return [convert(value, s) for s in symbols]
