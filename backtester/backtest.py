"""``run()``: validate a backtest's inputs, convert them to arrays, call the kernel."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .data.market import Market
from .engine import enums
from .engine.driver import pack_symbol_params, pack_tiers, simulate_arrays
from .result import Result
from .venues import Venue, check_simulated, load_venue


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
    - ``record_positions``: keep the (T, N) positions and liquidation prices.
    """

    initial_balance: float = 10_000.0
    venue: str | Venue = "binance_usdm"
    margin_mode: str | Mapping[str, str] = "cross"
    leverage: float | Mapping[str, float] = 10.0
    target_kind: str = "units"
    fill_at: str = "open"
    path: str = "path"
    slippage: float = 0.0
    reduce_to_fit: bool = False
    record_positions: bool = True
    venue_overrides: Mapping[str, float] = field(default_factory=dict)

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed (unknown names raise a clear error)."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"unknown run option(s) {', '.join(unknown)}; "
                f"valid options: {', '.join(sorted(names))}"
            )
        return dataclasses.replace(self, **changes)


def _choice(name: str, value: str, names: tuple[str, ...]) -> int:
    if value not in names:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, names))}, got {value!r}")
    return names.index(value)


def _per_symbol(name: str, value, symbols: tuple[str, ...], convert) -> list:
    """One value per symbol from a scalar or a {symbol: value} mapping (all symbols required)."""
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(symbols))
        if unknown:
            raise ValueError(
                f"{name} names unknown symbol(s) {', '.join(unknown)}; the market holds "
                f"{', '.join(symbols)}"
            )
        missing = [s for s in symbols if s not in value]
        if missing:
            raise ValueError(f"{name} gives no value for {', '.join(missing)}")
        return [convert(value[s], s) for s in symbols]
    return [convert(value, s) for s in symbols]


def targets_array(targets, market: Market) -> np.ndarray:
    """Targets as a (T, N) float64 array aligned to the market (NaN = leave the position as is).

    A DataFrame is aligned on the market's timestamps (rows the market does not
    have are an error; bars the frame lacks are NaN) and its columns must be
    market symbols (a missing symbol is never traded).
    """
    shape = (market.n_bars, market.n_symbols)
    if isinstance(targets, pd.Series):
        targets = targets.to_frame()
    if isinstance(targets, pd.DataFrame):
        unknown = [c for c in targets.columns if c not in market.symbols]
        if unknown:
            raise ValueError(
                f"targets have column(s) {unknown} that are not market symbols "
                f"({', '.join(market.symbols)})"
            )
        index = targets.index
        if isinstance(index, pd.DatetimeIndex):
            index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
            positions = market.timestamps.get_indexer(index)
            if (positions < 0).any():
                bad = index[positions < 0][0]
                raise ValueError(
                    f"targets have {(positions < 0).sum()} row(s) at times that are not bars "
                    "of the "
                    f"market, first {bad}; align the targets to market.timestamps"
                )
        elif len(index) == market.n_bars:
            positions = np.arange(market.n_bars)
        else:
            raise ValueError(
                f"targets need a DatetimeIndex or exactly {market.n_bars} rows, got {len(index)}"
            )
        out = np.full(shape, np.nan)
        for column in targets.columns:
            out[positions, market.symbol_index(column)] = targets[column].to_numpy(dtype=float)
        array = out
    else:
        array = np.asarray(targets, dtype=np.float64)
        if array.ndim == 1 and market.n_symbols == 1:
            array = array[:, None]
        if array.shape != shape:
            raise ValueError(
                f"targets must have shape (bars, symbols) = {shape}, got {array.shape}"
            )
    if np.isinf(array).any():
        t, i = np.argwhere(np.isinf(array))[0]
        raise ValueError(
            f"targets hold an infinite value at bar {t} ({market.timestamps[t]}), "
            f"symbol {market.symbols[i]}"
        )
    return np.ascontiguousarray(array, dtype=np.float64)


def run(market: Market, targets, config: RunConfig | None = None, **options) -> Result:
    """Backtest target positions on ``market`` under the margin rules of a venue.

    ``targets`` are the positions the strategy wants, per bar and symbol, decided
    at each bar's close (NaN = leave the position as it is); their unit is
    ``config.target_kind``. Keyword options override fields of ``config``.

    Example:
        >>> from backtester import load_market, run
        >>> market = load_market()                       # the embedded data
        >>> import numpy as np
        >>> targets = np.full((market.n_bars, market.n_symbols), np.nan)
        >>> targets[0] = [0.5, -0.5]                     # 50% of equity long BTC, short ETH
        >>> result = run(market, targets, target_kind="equity", margin_mode="cross", leverage=5)
        >>> result.summary()["liquidations"]
        0
    """
    config = (config or RunConfig()).replace(**options)
    symbols = market.symbols
    venue = load_venue(config.venue, **dict(config.venue_overrides))
    check_simulated(venue)  # Bybit, OKX, Kraken: formulas only, no kernel yet
    start = pd.Timestamp(int(market.index[0]), tz="UTC") if market.n_bars else None
    arrays = venue.arrays(symbols, at=start)

    def to_mode(value, symbol):
        return _choice(f"margin_mode of {symbol}", value, enums.MARGIN_MODE_NAMES)

    def to_leverage(value, symbol):
        lev = float(value)
        venue.check_leverage(symbol, lev, at=start)
        return lev

    mode = np.array(_per_symbol("margin_mode", config.margin_mode, symbols, to_mode), np.int64)
    leverage = np.array(_per_symbol("leverage", config.leverage, symbols, to_leverage), np.float64)
    target_kind = _choice("target_kind", config.target_kind, enums.TARGET_KIND_NAMES)
    fill_at = _choice("fill_at", config.fill_at, enums.FILL_AT_NAMES)
    path = _choice("path", config.path, enums.PATH_NAMES)
    if not np.isfinite(config.initial_balance) or config.initial_balance <= 0:
        raise ValueError(f"initial_balance must be a positive amount, got {config.initial_balance}")
    if not 0.0 <= config.slippage < 0.5:
        raise ValueError(f"slippage is a fraction of the price in [0, 0.5), got {config.slippage}")

    target = targets_array(targets, market)
    output = simulate_arrays(
        open_=market.open, close=market.close, mark_open=market.mark_open,
        mark_high=market.mark_high, mark_low=market.mark_low, mark_close=market.mark_close,
        funding_rate=market.funding_rate, targets=target, target_kind=target_kind, mode=mode,
        sym=pack_symbol_params(leverage, arrays.taker_fee, arrays.liquidation_fee),
        tiers=pack_tiers(arrays.floors, arrays.caps, arrays.mmrs, arrays.cums,
                         arrays.max_leverage),
        n_tiers=arrays.n_tiers, initial_balance=float(config.initial_balance),
        slippage=float(config.slippage), fill_at=fill_at, path=path,
        reduce_to_fit=bool(config.reduce_to_fit), record_positions=bool(config.record_positions),
    )
    specs = {s: venue.spec(s, start) for s in symbols}
    return Result(market=market, config=config, venue=venue, output=output, margin_mode=mode,
                  leverage=leverage, specs=specs)
