"""The Market: aligned ``(T, N)`` price arrays that the engine replays."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)
class Market:
    """OHLC(V), mark-price OHLC and funding rates of N symbols on one time index.

    All price arrays are ``(T, N)`` C-contiguous float64: one row per bar, one
    column per symbol. A bar is labelled by its open time and covers
    ``[index[t], index[t+1])``. NaN means "this symbol has no bar at t": it
    cannot trade then, and its positions keep their last valuation.

    ``mark_*`` are the venue's mark-price bars, which drive margin and
    liquidation; where a symbol has no mark series they are the last-price bars
    (the very same arrays when no symbol has one). ``funding_rate[t, i]`` is the
    rate settled at ``index[t]`` (the bar's open time), NaN where there is none.
    """

    symbols: tuple[str, ...]
    index: np.ndarray  # int64 nanoseconds UTC, strictly increasing, shape (T,)
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    mark_open: np.ndarray
    mark_high: np.ndarray
    mark_low: np.ndarray
    mark_close: np.ndarray
    funding_rate: np.ndarray
    bar_ns: int  # the bar length in nanoseconds
    has_mark: tuple[bool, ...] = ()  # per symbol: a mark-price series was given
    sources: dict = field(default_factory=dict)  # symbol -> {"ohlc": path, "mark": ..., ...}

    @property
    def n_bars(self) -> int:
        return int(self.index.shape[0])

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @property
    def timestamps(self) -> pd.DatetimeIndex:
        """The time index as a UTC ``DatetimeIndex`` (bar open times)."""
        return pd.DatetimeIndex(pd.to_datetime(self.index, utc=True), name="timestamp")

    @property
    def bars_per_year(self) -> float:
        """Bars in 365 days (crypto trades every day), for annualising statistics."""
        return 365.0 * 86_400e9 / self.bar_ns

    def symbol_index(self, symbol: str) -> int:
        """Column of ``symbol``; a clear error for an unknown one."""
        try:
            return self.symbols.index(symbol)
        except ValueError:
            raise KeyError(
                f"unknown symbol {symbol!r}: this market holds {', '.join(self.symbols)}"
            ) from None

    def frame(self, field_name: str = "close") -> pd.DataFrame:
        """One field (``open``, ``close``, ``mark_close``, ``funding_rate``...) as a DataFrame."""
        return pd.DataFrame(getattr(self, field_name), index=self.timestamps, columns=self.symbols)

    def slice(self, start: int, stop: int) -> Market:
        """The bars ``start:stop`` as a new Market (views, no copies)."""
        arrays = {
            name: getattr(self, name)[start:stop]
            for name in (
                "open", "high", "low", "close", "volume",
                "mark_open", "mark_high", "mark_low", "mark_close", "funding_rate",
            )
        }
        return Market(
            symbols=self.symbols,
            index=self.index[start:stop],
            bar_ns=self.bar_ns,
            has_mark=self.has_mark,
            sources=self.sources,
            **arrays,
        )
