"""The Market: aligned ``(T, N)`` price arrays that the engine replays."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from .validate import (
    PRICE_COLUMNS,
    DataError,
    Problem,
    bar_length_ns,
    bar_problem,
    funding_problem,
    sound_at_once,
    to_ns,
)

UTC_NS = pd.api.types.pandas_dtype("datetime64[ns, UTC]")


def utc_index(index: np.ndarray) -> pd.DatetimeIndex:
    """``index`` (int64 nanoseconds UTC) as a UTC ``DatetimeIndex`` named "timestamp" that
    reads the same memory (read-only): pandas' public constructors copy an array they
    localise (8 MB a million bars); where its array type is not as expected, that copy."""
    values = np.asarray(index, dtype=np.int64).view("datetime64[ns]")
    try:
        from pandas.core.arrays import DatetimeArray

        values = values.view()
        values.flags.writeable = False
        return pd.DatetimeIndex(DatetimeArray._simple_new(values, dtype=UTC_NS),
                                name="timestamp", copy=False)
    except (ImportError, AttributeError, TypeError):  # (another pandas)
        return pd.DatetimeIndex(values, dtype=UTC_NS, name="timestamp")


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

    A series that was not given costs no memory: ``volume`` is then 0 and
    ``funding_rate`` NaN everywhere as read-only broadcast views of one number
    (``absent``; ``is_absent`` tells them apart), which read like any (T, N) array.
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
        are ``bar`` apart (``"1h"``, ``"15min"``, a ``Timedelta``).

        The arrays keep the rules ``load_market`` checks in files (the very same
        checks): prices finite and > 0, high >= max(open, close), low <= min(open,
        close), volume finite and >= 0, funding rates finite. NaN in all four prices
        of a bar means the symbol has no bar then (mark bars must be NaN at the
        same bars). A broken rule raises ``DataError`` naming the argument, bar and
        symbol, e.g. ``high[3, 'BTC']`` or ``mark[1][3, 'BTC']`` (the mark high).
        The checks run on blocks of rows: they allocate no (T, N) temporary.

        Memory: a C-contiguous float64 array is not copied. The Market holds a
        read-only view of it (the engine never writes market arrays), so it shares the
        caller's memory: change the array afterwards and the Market sees the change,
        unchecked. Pass a copy (``a.copy()``) to keep them apart. Other arrays (other
        dtypes, layouts, lists) are converted once. Without ``mark`` the mark arrays
        are the price arrays themselves; without ``volume`` or ``funding_rate`` the
        Market holds ``absent`` placeholders that cost no memory.

        Example:
            >>> m = Market.from_arrays(["BTC"], [100.0, 101], [102.0, 103], [99.0, 100],
            ...                        [101.0, 102])
            >>> m.n_bars, m.symbols
            (2, ('BTC',))
        """
        symbols = _symbol_names(symbols)
        o, h, lo, c = (_grid(v, n, symbols) for v, n in ((open, "open"), (high, "high"),
                                                          (low, "low"), (close, "close")))
        if not (o.shape == h.shape == lo.shape == c.shape):
            raise DataError(f"open, high, low and close must have one shape, got {o.shape}, "
                            f"{h.shape}, {lo.shape} and {c.shape}")
        if o.shape[0] == 0:
            raise DataError("open= holds no bars: a market needs at least one")
        volume = absent(0.0, o.shape) if volume is None else _grid(volume, "volume", symbols,
                                                                   o.shape)
        cols = {"open": o, "high": h, "low": lo, "close": c}
        if not is_absent(volume):
            cols["volume"] = volume
        if not sound_at_once(cols, missing_ok=True):  # (if not: which value, block by block)
            _refuse(_in_blocks(lambda rows: bar_problem({k: v[rows] for k, v in cols.items()},
                                                        missing_ok=True), o.shape[0]), symbols)
        if mark is None:
            mo, mh, ml, mc = o, h, lo, c
        else:
            if not (isinstance(mark, tuple | list) and len(mark) == 4):
                raise DataError("mark= must be a tuple (open, high, low, close) of mark-price "
                                f"arrays, got {type(mark).__name__}"
                                + (f" of {len(mark)}" if isinstance(mark, tuple | list) else ""))
            mo, mh, ml, mc = (_grid(v, f"mark[{k}]", symbols, o.shape)
                              for k, v in enumerate(mark))
            marks = {"open": mo, "high": mh, "low": ml, "close": mc}
            if not sound_at_once(marks, missing_ok=True):
                _refuse(_in_blocks(lambda rows: bar_problem({k: v[rows]
                                                             for k, v in marks.items()},
                                                            missing_ok=True), o.shape[0]),
                        symbols, mark=True)
            _refuse_at(_in_blocks(lambda rows: _mismatch(np.isnan(o[rows]) != np.isnan(mo[rows])),
                                  o.shape[0]),
                       "mark[0]", symbols,
                       "a mark price where the bar has none, or none where it has one",
                       "Mark bars must be NaN exactly where the bars are.",
                       note=" (the mark open)")
        rate = absent(np.nan, o.shape) if funding_rate is None else _grid(
            funding_rate, "funding_rate", symbols, o.shape)
        if not is_absent(rate):
            _refuse(_in_blocks(lambda rows: funding_problem(rate[rows], missing_ok=True),
                               o.shape[0]), symbols)
        step = bar_length_ns(bar, "bar")
        index = np.arange(o.shape[0], dtype=np.int64)
        index *= step
        index += to_ns(start, "start")
        return cls(
            symbols=symbols,
            index=index,
            open=o,
            high=h,
            low=lo,
            close=c,
            volume=volume,
            mark_open=mo,
            mark_high=mh,
            mark_low=ml,
            mark_close=mc,
            funding_rate=rate,
            bar_ns=step,
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
        return utc_index(self.index)

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
        arrays = self._columns(columns)
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
        arrays = self._columns(columns)
        if not is_absent(arrays["funding_rate"]):
            arrays["funding_rate"][:, self.n_symbols:] = np.nan  # a holding pays no funding
        has_mark = tuple(self.has_mark[j] for j in columns) if self.has_mark else ()
        return Market(symbols=tuple(names), index=self.index, bar_ns=self.bar_ns,
                      has_mark=has_mark, sources=self.sources, **arrays)

    def _columns(self, columns: list[int]) -> dict[str, np.ndarray]:
        """The (T, N) arrays with the given columns, each array copied once (the mark arrays
        stay the price arrays where they are; an ``absent`` series stays absent)."""
        copies: dict[int, np.ndarray] = {}
        arrays = {}
        for name in ARRAY_FIELDS:
            a = getattr(self, name)
            if is_absent(a):
                arrays[name] = absent(float(a.flat[0]) if a.size else np.nan,
                                      (a.shape[0], len(columns)))
                continue
            if id(a) not in copies:
                copies[id(a)] = np.ascontiguousarray(a[:, columns])
            arrays[name] = copies[id(a)]
        return arrays

    def slice(self, start: int, stop: int) -> Market:
        """The bars ``start:stop`` as a new Market (views, no copies)."""
        views: dict[int, np.ndarray] = {}  # (the mark arrays stay the price arrays)
        arrays = {}
        for name in ARRAY_FIELDS:
            a = getattr(self, name)
            arrays[name] = views.setdefault(id(a), a[start:stop])
        return Market(
            symbols=self.symbols,
            index=self.index[start:stop],
            bar_ns=self.bar_ns,
            has_mark=self.has_mark,
            sources=self.sources,
            **arrays,
        )


ARRAY_FIELDS = ("open", "high", "low", "close", "volume", "mark_open", "mark_high", "mark_low",
                "mark_close", "funding_rate")


def absent(value: float, shape) -> np.ndarray:
    """A read-only (T, N) array of ``value`` that holds no memory (a broadcast view of one
    number): a series the data do not give (volume 0, funding rate NaN).

    Example:
        >>> a = absent(float("nan"), (1_000_000, 10))
        >>> a.shape, a.strides, is_absent(a)
        ((1000000, 10), (0, 0), True)
    """
    shape = tuple(shape)
    # (what np.broadcast_to makes of one number, built directly: a run may make one)
    a = np.ndarray(shape, np.float64, np.full(1, value, dtype=np.float64), 0, (0,) * len(shape))
    a.flags.writeable = False
    return a


def is_absent(a: np.ndarray) -> bool:
    """Whether ``a`` is an ``absent`` series (every element the one number it views)."""
    return a.ndim == 2 and a.strides == (0, 0)


def no_funding(rates: np.ndarray) -> bool:
    """Whether ``rates`` is the ``absent`` funding of a market given none (NaN everywhere)."""
    return is_absent(rates) and (rates.size == 0 or bool(np.isnan(rates.flat[0])))


def _symbol_names(symbols) -> tuple[str, ...]:
    """``symbols=`` of ``from_arrays``: a name or a sequence of distinct names."""
    if isinstance(symbols, str):
        return (symbols,)
    try:
        names = tuple(symbols)
    except TypeError:
        raise DataError(f"symbols={symbols!r}: give a list of symbol names, e.g. "
                        "['BTC_USDT']") from None
    if not names:
        raise DataError("symbols= is empty: a market needs at least one symbol")
    wrong = [n for n in names if not isinstance(n, str) or not n]
    if wrong:
        raise DataError(f"symbols= holds {wrong[0]!r}, not a symbol name")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"symbols= names {', '.join(twice)} more than once")
    return names


def _grid(values, name: str, symbols: tuple[str, ...], shape=None) -> np.ndarray:
    """One argument of ``from_arrays`` as a read-only C-contiguous (T, N) float64 array: a
    view of ``values`` itself when it is one already (or a (T,) array of one symbol), else
    a converted copy."""
    try:
        a = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{name}= must hold numbers ({exc})") from None
    if a.ndim == 1 and len(symbols) == 1:
        a = a.reshape(-1, 1)
    want = f"(bars, {len(symbols)})" if shape is None else str(shape)
    if a.ndim != 2 or a.shape[1] != len(symbols) or (shape is not None and a.shape != shape):
        raise DataError(f"{name}= must have shape {want} (one column per symbol: "
                        f"{', '.join(symbols)}), got {a.shape}")
    if not a.flags.c_contiguous or 0 in a.strides:
        a = np.ascontiguousarray(a)
        if 0 in a.strides:  # (a (T, 1) view with no column stride: one that numba can take)
            a = a.copy()
    view = a.view()
    view.flags.writeable = False
    return view


def _in_blocks(check, n_rows: int, rows: int = 1 << 14):
    """``check(rows)``'s problem over all rows, run on blocks of ``rows`` rows (its temporaries
    are a block's): None when no block has one, else the check over all rows (so the
    problem named is the one the whole arrays show first, counted over all of them).

    16,384 rows of ten symbols: 1.3 MB an array, so that a block's four price arrays stay in
    the processor's cache from one pass of the check to the next (65,536 rows: 18% slower)."""
    for start in range(0, n_rows, rows):
        if check(slice(start, start + rows)) is not None:
            return check(slice(None))
    return None


def _mismatch(mask: np.ndarray) -> np.ndarray | None:
    return mask if mask.any() else None


def _refuse_at(mask: np.ndarray | None, name: str, symbols, what: str, fix: str,
               note: str = "") -> None:
    if mask is not None and mask.any():
        t, i = (int(k) for k in np.argwhere(mask)[0])
        raise DataError(f"{name}[{t}, {symbols[i]!r}]{note}: {what}; {int(mask.sum())} value(s) "
                        f"affected. {fix}")


def _refuse(problem: Problem | None, symbols, mark: bool = False) -> None:
    """A data problem of ``from_arrays``' arrays, named as its arguments: ``high[3, 'BTC']``,
    ``mark[1][3, 'BTC'] (the mark high)``."""
    if problem is None:
        return
    if mark:
        _refuse_at(problem.mask, f"mark[{PRICE_COLUMNS.index(problem.column)}]", symbols,
                   problem.what, problem.fix, note=f" (the mark {problem.column})")
    else:
        _refuse_at(problem.mask, problem.column, symbols, problem.what, problem.fix)
