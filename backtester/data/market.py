"""The Market: aligned ``(T, N)`` price arrays that the engine replays."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

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

    @classmethod
    def from_arrays(
        cls,
        symbols,
        open,
        high,
        low,
        close,
        *,
        mark=None,
        funding_rate=None,
        volume=None,
        start="2024-01-01",
        bar="1h",
    ) -> Market:
        """A Market from ``(T, N)`` arrays (or ``(T,)`` for one symbol), e.g. for a hand-made case.

        ``mark`` is an optional ``(open, high, low, close)`` tuple of mark-price
        arrays; ``funding_rate`` an optional array with the rate at the bars whose
        open time is a funding time (NaN elsewhere). Bars start at ``start`` and
        are ``bar`` apart.

        Example:
            >>> m = Market.from_arrays(["BTC"], [100.0, 101], [102.0, 103], [99.0, 100],
            ...                        [101.0, 102])
            >>> m.n_bars, m.symbols
            (2, ('BTC',))
        """
        symbols = tuple(symbols)

        def grid(values, name):
            a = np.array(values, dtype=np.float64, order="C")
            if a.ndim == 1:
                a = a[:, None]
            if a.ndim != 2 or a.shape[1] != len(symbols):
                raise ValueError(f"{name} must have shape (bars, {len(symbols)}), got {a.shape}")
            return np.ascontiguousarray(a)

        o, h, lo, c = (grid(v, n) for v, n in ((open, "open"), (high, "high"), (low, "low"),
                                               (close, "close")))
        if not (o.shape == h.shape == lo.shape == c.shape):
            raise ValueError("open, high, low and close must have the same shape")
        bad = (h < np.maximum(o, c)) | (lo > np.minimum(o, c))
        if bad.any():
            t, i = np.argwhere(bad)[0]
            raise ValueError(f"bar {t} of {symbols[i]}: high/low do not contain open and close")
        if mark is None:
            mo, mh, ml, mc = o, h, lo, c
        else:
            mo, mh, ml, mc = (grid(v, f"mark[{k}]") for k, v in enumerate(mark))
            if not (mo.shape == mh.shape == ml.shape == mc.shape == o.shape):
                raise ValueError("mark open, high, low and close must have the bars' shape")
            bad = (mh < np.maximum(mo, mc)) | (ml > np.minimum(mo, mc))
            if bad.any():
                t, i = np.argwhere(bad)[0]
                raise ValueError(f"mark bar {t} of {symbols[i]}: high/low do not contain "
                                 "open and close")
        step = pd.Timedelta(bar)
        first = pd.Timestamp(start)
        first = first.tz_localize("UTC") if first.tz is None else first.tz_convert("UTC")
        index = first.value + int(step.value) * np.arange(o.shape[0], dtype=np.int64)
        return cls(
            symbols=symbols,
            index=index,
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=np.zeros_like(o) if volume is None else grid(volume, "volume"),
            mark_open=mo,
            mark_high=mh,
            mark_low=ml,
            mark_close=mc,
            funding_rate=np.full_like(o, np.nan) if funding_rate is None else grid(
                funding_rate, "funding_rate"),
            bar_ns=int(step.value),
            has_mark=(mark is not None,) * len(symbols),
        )

    @property
    def n_bars(self) -> int:
        return int(self.index.shape[0])

    @property
    def n_symbols(self) -> int:
        return len(self.symbols)

    @cached_property
    def timestamps(self) -> pd.DatetimeIndex:
        """The time index as a UTC ``DatetimeIndex`` (bar open times)."""
        # a datetime64 view of the int64 nanoseconds: no parsing, no copy
        values = np.asarray(self.index, dtype=np.int64).view("datetime64[ns]")
        return pd.DatetimeIndex(values, name="timestamp").tz_localize("UTC")

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

    def with_hedge_legs(self, symbols) -> Market:
        """A Market in which each of ``symbols`` is two columns, ``SYM.long`` and ``SYM.short``,
        with the same prices: the two legs of a hedge-mode position (Binance's LONG and
        SHORT positions on one symbol), each with its own entry, margin and bracket."""
        hedge = set(symbols)
        columns, names = [], []
        for j, symbol in enumerate(self.symbols):
            if symbol in hedge:
                columns += [j, j]
                names += [f"{symbol}.long", f"{symbol}.short"]
            else:
                columns.append(j)
                names.append(symbol)
        arrays = {
            name: np.ascontiguousarray(getattr(self, name)[:, columns])
            for name in (
                "open", "high", "low", "close", "volume",
                "mark_open", "mark_high", "mark_low", "mark_close", "funding_rate",
            )
        }
        has_mark = tuple(self.has_mark[j] for j in columns) if self.has_mark else ()
        sources = {name: self.sources[self.symbols[j]] for name, j in zip(names, columns,
                                                                          strict=True)
                   if self.symbols[j] in self.sources}
        return Market(symbols=tuple(names), index=self.index, bar_ns=self.bar_ns,
                      has_mark=has_mark, sources=sources, **arrays)

    def with_copies(self, copies: dict) -> Market:
        """A Market with extra columns named by ``copies``' keys, each holding the prices of the
        column its value names (a collateral currency valued at its market's prices)."""
        names = list(self.symbols) + list(copies)
        columns = list(range(self.n_symbols)) + [self.symbol_index(s) for s in copies.values()]
        arrays = {
            name: np.ascontiguousarray(getattr(self, name)[:, columns])
            for name in (
                "open", "high", "low", "close", "volume",
                "mark_open", "mark_high", "mark_low", "mark_close", "funding_rate",
            )
        }
        arrays["funding_rate"][:, self.n_symbols:] = np.nan  # a holding pays no funding
        has_mark = tuple(self.has_mark[j] for j in columns) if self.has_mark else ()
        return Market(symbols=tuple(names), index=self.index, bar_ns=self.bar_ns,
                      has_mark=has_mark, sources=self.sources, **arrays)

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
