"""Load OHLC, mark-price and funding parquet files into an aligned :class:`Market`.

File layout (as in ``shared/data/binance_futures``), one set per symbol ``SYM``
such as ``BTC_USDT`` and timeframe ``tf`` such as ``1h``:

- ``SYM-tf.parquet``: ``timestamp, open, high, low, close, volume`` (last-price bars)
- ``SYM_mark-tf.parquet``: ``timestamp, open, high, low, close`` (mark-price bars)
- ``SYM_funding.parquet``: ``timestamp, funding_rate`` (settlement time, decimal rate)

Everything stays in numpy: each column is read once with pyarrow, checked with
vectorised tests (see :mod:`.validate`) and written into its column of the
``(T, N)`` arrays. Bars are placed by their slot on the common bar grid, so no
sorting or merging happens.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .layouts import is_freqtrade_file, project_symbol, scan_archive, scan_freqtrade
from .market import Market, absent
from .validate import (
    DataError,
    DataWarning,
    check_funding,
    check_prices,
    check_timestamps,
    fmt_ts,
    grid_step,
    read_columns,
    timeframe_label,
    timeframe_ns,
    to_ns,
)

_MARK_RE = re.compile(r"^(?P<sym>.+)_mark-(?P<tf>[^-]+)\.parquet$")
_FUND_RE = re.compile(r"^(?P<sym>.+)_funding\.parquet$")
_OHLC_RE = re.compile(r"^(?P<sym>.+)-(?P<tf>[^-]+)\.parquet$")
_FIELDS = ("open", "high", "low", "close")


def embedded_data_dir() -> Path:
    """The directory of the small dataset shipped with the project.

    The repository's top-level ``data/`` when running from a checkout or an
    editable install, else ``backtester/_embedded_data`` in an installed wheel.
    """
    import backtester

    pkg = Path(backtester.__file__).resolve().parent
    checkout = pkg.parent / "data"
    if (checkout / "generate.py").is_file():
        return checkout
    return pkg / "_embedded_data"


def _scan(directory: Path) -> tuple[dict, dict, dict]:
    """Map the files of a directory: (ohlc {sym: {tf: path}}, mark {same}, funding {sym: path}).

    The project's parquet files, freqtrade's files, or a Binance archive folder (see
    :mod:`.layouts`); a path is then an :class:`~.layouts.ArchiveSeries` of zip files.
    """
    if not directory.is_dir():
        raise DataError(f"{directory}: no such directory")
    archive = scan_archive(directory)
    if archive is not None:
        if not archive[0]:
            raise DataError(f"{directory}: a Binance archive folder without klines (e.g. "
                            "futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip)")
        return archive
    ohlc: dict[str, dict[str, Path]] = {}
    mark: dict[str, dict[str, Path]] = {}
    funding: dict[str, Path] = {}
    scan_freqtrade(directory, ohlc, mark, funding)
    for p in sorted(directory.glob("*.parquet")):
        if is_freqtrade_file(p):
            continue  # freqtrade's, mapped above
        if m := _MARK_RE.match(p.name):
            mark.setdefault(m["sym"], {})[m["tf"]] = p
        elif m := _FUND_RE.match(p.name):
            funding[m["sym"]] = p
        elif m := _OHLC_RE.match(p.name):
            ohlc.setdefault(m["sym"], {})[m["tf"]] = p
    if not ohlc:
        raise DataError(
            f"{directory}: no bar files named SYM-<timeframe>.parquet (e.g. BTC_USDT-1h.parquet), "
            "freqtrade's (BTC_USDT_USDT-1h-futures.feather) or a Binance archive folder "
            "(futures/um/monthly/klines/...)"
        )
    return ohlc, mark, funding


def _sources_from_dir(directory: Path, symbols: list[str] | None, timeframe: str | None,
                      want_mark: bool) -> tuple[list[str], dict[str, dict]]:
    ohlc, mark, funding = _scan(directory)
    if symbols is None:
        symbols = sorted(s for s in ohlc if timeframe is None or timeframe in ohlc[s])
        if not symbols:
            have = sorted({tf for tfs in ohlc.values() for tf in tfs})
            raise DataError(f"{directory}: no {timeframe!r} bars; timeframes present: "
                            f"{', '.join(have)}")
    named = [s if s in ohlc else project_symbol(s) for s in symbols]
    twice = sorted({n for n in named if named.count(n) > 1})
    if twice:
        raise DataError(f"symbols={symbols!r} names {', '.join(twice)} twice (pair spellings "
                        "such as BTC/USDT:USDT, BTCUSDT and BTC_USDT are one symbol)")
    symbols = named
    unknown = [s for s in symbols if s not in ohlc]
    if unknown:
        raise DataError(f"{directory}: no bars for {', '.join(unknown)}; symbols present: "
                        f"{', '.join(sorted(ohlc))}")
    if timeframe is None:
        multi = {s: sorted(ohlc[s]) for s in symbols if len(ohlc[s]) > 1}
        if multi:
            listing = "; ".join(f"{s}: {', '.join(tfs)}" for s, tfs in multi.items())
            raise DataError(f"{directory}: several timeframes ({listing}); "
                            "pass timeframe= to choose one")
    else:
        lacking = [s for s in symbols if timeframe not in ohlc[s]]
        if lacking:
            listing = "; ".join(f"{s}: {', '.join(sorted(ohlc[s]))}" for s in lacking)
            raise DataError(f"{directory}: no {timeframe!r} bars for {listing}")
    sources: dict[str, dict] = {}
    for s in symbols:
        tf = timeframe or next(iter(ohlc[s]))
        mark_path = mark.get(s, {}).get(tf)
        if want_mark and mark_path is None and s in mark:
            warnings.warn(f"{s}: no {tf} mark file (mark files exist for "
                          f"{', '.join(sorted(mark[s]))}); using last prices as mark",
                          stacklevel=3)
        sources[s] = {"ohlc": ohlc[s][tf], "mark": mark_path, "funding": funding.get(s),
                      "timeframe": tf}
    return symbols, sources


def _sources_from_files(files: Mapping, symbols: list[str] | None,
                        timeframe: str | None) -> tuple[list[str], dict[str, dict]]:
    if symbols is None:
        symbols = sorted(files)
    unknown = [s for s in symbols if s not in files]
    if unknown:
        raise DataError(f"files= has no entry for {', '.join(unknown)}; it has "
                        f"{', '.join(sorted(files))}")
    sources = {}
    for s in symbols:
        entry = files[s]
        if not isinstance(entry, Mapping) or "ohlc" not in entry:
            raise DataError(f"files[{s!r}] needs an 'ohlc' path (mark and funding are optional)")
        sources[s] = {k: (Path(entry[k]) if entry.get(k) is not None else None)
                      for k in ("ohlc", "mark", "funding")}
        sources[s]["timeframe"] = timeframe
    return symbols, sources


def _read_bars(path: Path, kind: str, tf: str | None, lo_ns: int | None,
               hi_ns: int | None) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """Read, check and window one bar file: (timestamps, columns, bar length in ns)."""
    cols = read_columns(path, kind)
    ts = cols["timestamp"]
    check_timestamps(ts, path)
    named = timeframe_ns(tf) if tf else None
    step = grid_step(ts, path, fallback=named)
    if named is not None and step != named:
        raise DataError(f"{path}: named as {tf} bars but the bars are "
                        f"{timeframe_label(step)} apart; rename the file or resample it")
    a = 0 if lo_ns is None else int(np.searchsorted(ts, lo_ns, "left"))
    b = ts.size if hi_ns is None else int(np.searchsorted(ts, hi_ns, "left"))
    cols = {k: v[a:b] for k, v in cols.items()}
    check_prices(cols, path, cols["timestamp"], offset=a)
    return cols["timestamp"], cols, step


class _Grid:
    """The common time index and where each timestamp sits on it."""

    def __init__(self, tss: list[np.ndarray], paths: list[Path], steps: list[int], how: str):
        step = steps[0]
        for p, s in zip(paths[1:], steps[1:], strict=True):
            if s != step:
                raise DataError(f"mixed bar frequencies across symbols: {paths[0]} has "
                                f"{timeframe_label(step)} bars, {p} has {timeframe_label(s)} "
                                "bars; load one timeframe at a time")
        self.step = step
        self.t0 = min(int(t[0]) for t in tss)
        for p, t in zip(paths, tss, strict=True):
            if (int(t[0]) - self.t0) % step:
                raise DataError(f"{p}: bars open at {fmt_ts(t[0])}, off the grid of "
                                f"{paths[0]} ({timeframe_label(step)} bars from "
                                f"{fmt_ts(self.t0)}); the symbols cannot share one index")
        if how not in ("union", "intersection"):
            raise ValueError(f"align must be 'union' or 'intersection', not {how!r}")
        self.rank: np.ndarray | None = None
        self.pos: list[np.ndarray | None]
        if all(t.size == tss[0].size for t in tss) and all(
                np.array_equal(t, tss[0]) for t in tss[1:]):
            self.index = tss[0]  # every symbol has the same bars: no placement needed
            gap_free = int(self.index[-1]) - self.t0 == (self.index.size - 1) * step
            self.mode = "dense" if gap_free else "search"
            self.pos = [None] * len(tss)
            return
        n_slots = (max(int(t[-1]) for t in tss) - self.t0) // step + 1
        if n_slots > 8 * sum(t.size for t in tss) + 1_000_000:  # long gaps: sort instead
            allts, counts = np.unique(np.concatenate(tss), return_counts=True)
            self.index = allts if how == "union" else allts[counts == len(tss)]
            self.mode = "search"
            self.pos = [self.locate(t)[0] for t in tss]
            return
        slots = [(t - self.t0) // step for t in tss]
        if how == "union":
            mask = np.zeros(n_slots, dtype=bool)
            for s in slots:
                mask[s] = True
        else:
            count = np.zeros(n_slots, dtype=np.int32)
            for s in slots:
                count[s] += 1
            mask = count == len(tss)
        keep = np.flatnonzero(mask)
        self.index = self.t0 + keep.astype(np.int64) * step
        self.mode = "rank"
        self.rank = np.full(n_slots, -1, dtype=np.int64)
        self.rank[keep] = np.arange(keep.size)
        self.pos = [self.rank[s] for s in slots]

    def locate(self, ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positions of ``ts`` on the index (-1 where none) and a mask of on-grid times."""
        off = ts - self.t0
        on_grid = off % self.step == 0
        if self.mode == "search":
            pos = np.searchsorted(self.index, ts)
            ok = pos < self.index.size
            ok[ok] = self.index[pos[ok]] == ts[ok]
            return np.where(ok, pos, -1), on_grid
        slot = off // self.step
        size = self.index.size if self.mode == "dense" else self.rank.size
        ok = on_grid & (slot >= 0) & (slot < size)
        if self.mode == "dense":
            return np.where(ok, slot, -1), on_grid
        pos = np.full(ts.size, -1, dtype=np.int64)
        pos[ok] = self.rank[slot[ok]]
        return pos, on_grid


_BLOCK = 16384  # rows per block when interleaving columns: keeps the writes in cache


def _placement(p: np.ndarray | None, n_bars: int) -> tuple[slice | np.ndarray, slice | np.ndarray]:
    """(rows of the symbol's file to keep, where they go on the index): slices when contiguous."""
    if p is None:
        return slice(0, n_bars), slice(0, n_bars)
    ok = p >= 0
    rows: slice | np.ndarray = slice(0, p.size) if ok.all() else np.flatnonzero(ok)
    dest = p[rows]
    if isinstance(rows, np.ndarray) and rows.size and rows[-1] - rows[0] == rows.size - 1:
        rows = slice(int(rows[0]), int(rows[-1]) + 1)
    if dest.size and dest[-1] - dest[0] == dest.size - 1:
        return rows, slice(int(dest[0]), int(dest[-1]) + 1)
    return rows, dest


def _fill(n_bars: int, columns: list[np.ndarray], places: list[tuple]) -> np.ndarray:
    """Place each symbol's column at its positions in a (T, N) array; NaN elsewhere."""
    out = np.empty((n_bars, len(columns)))
    spans = []
    for i, (col, (rows, dest)) in enumerate(zip(columns, places, strict=True)):
        if isinstance(dest, slice):
            out[: dest.start, i] = np.nan
            out[dest.stop:, i] = np.nan
            spans.append((i, col[rows], dest.start, dest.stop))
        else:  # bars with gaps on the index: scatter
            out[:, i] = np.nan
            out[dest, i] = col[rows]
    for s in range(0, n_bars, _BLOCK):  # interleave block by block (2x faster than per column)
        e = min(s + _BLOCK, n_bars)
        for i, col, a, b in spans:
            x, y = max(s, a), min(e, b)
            if x < y:
                out[x:y, i] = col[x - a:y - a]
    return out


def _mark_columns(sym: str, src: dict, bar_ts: np.ndarray, bar_cols: dict[str, np.ndarray],
                  bar_step: int, ts: np.ndarray, cols: dict[str, np.ndarray],
                  step: int) -> dict[str, np.ndarray]:
    """The symbol's mark bars (``ts``, ``cols``) on its own bar rows; last price where missing."""
    path = src["mark"]
    if step != bar_step:
        raise DataError(f"{path}: mark bars are {timeframe_label(step)} apart but {src['ohlc']} "
                        f"bars are {timeframe_label(bar_step)}; use mark bars of the same "
                        "timeframe")
    if ts.size == bar_ts.size and np.array_equal(ts, bar_ts):
        return cols
    if ts.size and (int(ts[0]) - int(bar_ts[0])) % step:
        raise DataError(f"{path}: column 'timestamp': mark bar at row 0 ({fmt_ts(ts[0])}) is "
                        f"off the bar grid of {src['ohlc']}. Use mark bars aligned with the "
                        "trade bars")
    n = bar_ts.size
    if int(bar_ts[-1] - bar_ts[0]) == (n - 1) * step:  # gap-free bars: row = slot
        r = (ts - bar_ts[0]) // step
        ok = (r >= 0) & (r < n)
    else:
        r = np.searchsorted(bar_ts, ts)
        ok = r < n
        ok[ok] = bar_ts[r[ok]] == ts[ok]
    r = r[ok]
    merged = {}
    for f in _FIELDS:
        merged[f] = bar_cols[f].copy()
        merged[f][r] = cols[f][ok]
    if r.size < n:
        covered = np.zeros(n, dtype=bool)
        covered[r] = True
        first = int(np.argmin(covered))
        warnings.warn(
            f"{sym}: {n - r.size} of {n} bars have no mark price in {path.name} "
            f"(first at {fmt_ts(bar_ts[first])}); those bars use the last price as mark",
            stacklevel=3,
        )
    return merged


def load_market(
    path: str | Path | None = None,
    symbols: Iterable[str] | str | None = None,
    start: object = None,
    end: object = None,
    timeframe: str | None = None,
    mark: bool = True,
    funding: bool = True,
    align: str = "union",
    files: Mapping[str, Mapping[str, str | Path]] | None = None,
) -> Market:
    """Load bars, mark prices and funding rates of several symbols onto one time index.

    Args:
        path: directory of ``SYM-tf.parquet`` / ``SYM_mark-tf.parquet`` /
            ``SYM_funding.parquet`` files; None = the embedded dataset.
        symbols: which instruments, in this column order (default: every symbol
            with bars of the chosen timeframe, sorted by name). A symbol named here
            with no bar in the window is an error; one loaded by default is left out
            with a ``DataWarning``.
        start, end: the backtest window, anything ``pandas.Timestamp`` accepts
            (naive = UTC); bars opening at ``start`` are in, at ``end`` out.
        timeframe: bar length label (``"1h"``, ``"5m"``...), required when the
            directory holds several for a symbol.
        mark: use the mark-price files (the price exchanges liquidate on). False,
            or a symbol without one, means margin is computed on last prices.
        funding: load funding rates (the periodic payment between longs and
            shorts); False gives an all-NaN array, i.e. no funding paid.
        align: ``"union"`` keeps every bar time at which any symbol trades (a
            symbol with no bar then is NaN and cannot trade, e.g. before its
            listing: a ``DataWarning`` names each symbol that begins late or ends
            early, and a position on the latter is closed at its last close);
            ``"common"`` first cuts every symbol to the window in which all have
            data (the latest first bar to the earliest last bar);
            ``"intersection"`` keeps only times at which all trade.
        files: explicit paths instead of a directory,
            ``{"BTC_USDT": {"ohlc": p, "mark": p, "funding": p}}`` (mark and
            funding optional).

    Returns a :class:`Market` with ``(T, N)`` float64 arrays. Mark prices are
    NaN exactly where last prices are; a bar with a last price but no mark price
    uses the last price (with a warning). ``funding_rate[t, i]`` is the rate
    settled at bar open ``index[t]``; funding rows before the symbol's first or
    after its last loaded bar (and outside the index) are dropped, and one in
    between that matches no bar open of the index is an error.

    Raises DataError on any malformed input, naming the file, column and row.
    """
    if isinstance(symbols, str):
        symbols = [symbols]
    asked = symbols is not None  # named symbols must have bars in the window; the others
    #                              (every symbol of the folder) are left out when they have none
    symbols = _symbol_list(symbols) if symbols is not None else None
    lo_ns = to_ns(start, "start") if start is not None else None
    hi_ns = to_ns(end, "end") if end is not None else None
    if lo_ns is not None and hi_ns is not None and hi_ns <= lo_ns:
        raise DataError(f"end={end!r} is not after start={start!r}: the window [start, end) "
                        "holds no bar")
    if align not in ("union", "intersection", "common"):
        raise ValueError(f"align={align!r}: use 'union', 'common' or 'intersection'")
    if timeframe is not None and not isinstance(timeframe, str):
        raise DataError(f"timeframe={timeframe!r}: give a bar length label such as '1h' or "
                        "'5m'")
    if files is not None:
        if path is not None:
            raise ValueError("give either path= or files=, not both")
        symbols, sources = _sources_from_files(files, symbols, timeframe)
    else:
        directory = Path(path) if path is not None else embedded_data_dir()
        symbols, sources = _sources_from_dir(directory, symbols, timeframe, mark)
    if not symbols:
        raise DataError("no symbols to load")

    has_mark = tuple(bool(mark and sources[s]["mark"] is not None) for s in symbols)
    with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
        # pyarrow and numpy release the GIL: files are read and checked concurrently
        bar_jobs = [pool.submit(_read_bars, sources[s]["ohlc"], "ohlc", sources[s]["timeframe"],
                                lo_ns, hi_ns) for s in symbols]
        mark_jobs = [pool.submit(_read_bars, sources[s]["mark"], "mark", sources[s]["timeframe"],
                                 lo_ns, hi_ns) if has_mark[i] else None
                     for i, s in enumerate(symbols)]
        fund_jobs = [pool.submit(_read_funding, sources[s]["funding"])
                     if funding and sources[s]["funding"] is not None else None
                     for s in symbols]
        bars = [j.result() for j in bar_jobs]
        marks = [j.result() if j is not None else None for j in mark_jobs]
        funds = [j.result() if j is not None else None for j in fund_jobs]
    empty = [i for i, (ts, _, _) in enumerate(bars) if ts.size == 0]
    if empty and (asked or len(empty) == len(symbols)):
        s = symbols[empty[0]]
        raise DataError(_no_bars(sources[s]["ohlc"], s, start, end))
    for i in empty:  # not asked for by name: left out, with a note
        s = symbols[i]
        warnings.warn(_no_bars(sources[s]["ohlc"], s, start, end, dropped=True), DataWarning,
                      stacklevel=2)
    if empty:
        keep = [i for i in range(len(symbols)) if i not in empty]
        symbols = [symbols[i] for i in keep]
        bars, marks, funds = ([x[i] for i in keep] for x in (bars, marks, funds))
        has_mark = tuple(has_mark[i] for i in keep)
    if align == "common":
        bars, marks = _common_window(symbols, bars, marks)
    grid = _Grid([b[0] for b in bars], [sources[s]["ohlc"] for s in symbols],
                 [b[2] for b in bars], "intersection" if align == "intersection" else "union")
    if align == "union" and len(symbols) > 1:
        _note_late_starts(symbols, bars, grid.index)
    index = np.array(grid.index, dtype=np.int64)  # own, writable: one numba signature
    n_bars = index.size
    if n_bars == 0:
        raise DataError(f"no bar time common to all of {', '.join(symbols)} "
                        f"(align='intersection'); try align='union'")
    places = [_placement(p, n_bars) for p in grid.pos]
    mark_cols = []
    for i, s in enumerate(symbols):  # a plain loop: the warning's stacklevel needs it
        mark_cols.append(_mark_columns(s, sources[s], *bars[i], *marks[i]) if has_mark[i]
                         else bars[i][1])
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        jobs = {f: pool.submit(_fill, n_bars, [b[1][f] for b in bars], places)
                for f in (*_FIELDS, "volume")}
        if any(has_mark):
            jobs.update({f"mark_{f}": pool.submit(_fill, n_bars, [c[f] for c in mark_cols],
                                                  places) for f in _FIELDS})
        arrays = {k: j.result() for k, j in jobs.items()}
    if not any(has_mark):
        arrays.update({f"mark_{f}": arrays[f] for f in _FIELDS})

    given = funding and any(f is not None for f in funds)
    # no funding file: an absent series (NaN everywhere, no memory)
    rate = np.full((n_bars, len(symbols)), np.nan) if given else absent(np.nan, (
        n_bars, len(symbols)))
    if given:
        for i, s in enumerate(symbols):
            if funds[i] is not None:
                span = (max(int(index[0]), int(bars[i][0][0])),
                        min(int(index[-1]), int(bars[i][0][-1])))
                _place_funding(rate, i, sources[s]["funding"], funds[i], grid, span, align)

    return Market(
        symbols=tuple(symbols), index=index, **arrays,
        funding_rate=rate, bar_ns=int(grid.step), has_mark=has_mark,
        sources={s: {k: v for k, v in sources[s].items() if k != "timeframe"}
                 for s in symbols},
    )


def _common_window(symbols: list[str], bars: list, marks: list) -> tuple[list, list]:
    """Each symbol's bars (and mark bars) cut to the window in which every symbol has data:
    from the latest first bar to the earliest last bar."""
    lo = max(int(b[0][0]) for b in bars)
    hi = min(int(b[0][-1]) for b in bars)
    if lo > hi:
        late = symbols[int(np.argmax([int(b[0][0]) for b in bars]))]
        early = symbols[int(np.argmin([int(b[0][-1]) for b in bars]))]
        raise DataError(f"align='common': no window in which every symbol has data: "
                        f"{early}'s bars end at {fmt_ts(hi)}, before {late}'s begin at "
                        f"{fmt_ts(lo)}; drop one of them")

    def cut(item):
        if item is None:
            return None
        ts, cols, step = item
        a, b = int(np.searchsorted(ts, lo, "left")), int(np.searchsorted(ts, hi, "right"))
        return ts[a:b], {k: v[a:b] for k, v in cols.items()}, step

    return [cut(b) for b in bars], [cut(m) for m in marks]


def _note_late_starts(symbols: list[str], bars: list, index: np.ndarray) -> None:
    """A DataWarning for each symbol whose bars begin after the market's first bar, or end
    before its last."""
    for s, (ts, _, _) in zip(symbols, bars, strict=True):
        if int(ts[-1]) < int(index[-1]):
            warnings.warn(
                f"{s}: its bars end at {fmt_ts(ts[-1])}, before the market's last bar "
                f"({fmt_ts(index[-1])}); a position still open then is closed at its last "
                "close (fill reason data_end)", DataWarning, stacklevel=3)
        if int(ts[0]) > int(index[0]):
            warnings.warn(
                f"{s}: its bars begin at {fmt_ts(ts[0])}, after the market's first bar "
                f"({fmt_ts(index[0])}); it trades from then, and orders for it before are "
                "refused (no_price). align='common' (CLI --common-window) starts where every "
                "symbol has data", DataWarning, stacklevel=3)


def _symbol_list(symbols) -> list[str]:
    """``symbols=`` as a list of names: each a string, none twice."""
    try:
        names = list(symbols)
    except TypeError:
        raise DataError(f"symbols={symbols!r}: give a symbol name or a list of them, e.g. "
                        "['BTC_USDT', 'ETH_USDT']") from None
    wrong = [n for n in names if not isinstance(n, str)]
    if wrong:
        raise DataError(f"symbols= holds {wrong[0]!r}, not a symbol name (a string such as "
                        "'BTC_USDT')")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"symbols= names {', '.join(twice)} more than once; each symbol is one "
                        "column of the market")
    return names


def _no_bars(path: Path, symbol: str, start, end, dropped: bool = False) -> str:
    """Why a symbol has no bars: an empty file, or the window misses the file's bars
    (``dropped``: the note for a symbol left out of the market, not asked for by name)."""
    if start is None and end is None:
        if dropped:
            return f"{symbol}: left out, {path.name} holds no bars (empty file)"
        return f"{path}: no {symbol} bars (empty file); drop the symbol or fill the file"
    try:  # the file's own span, to say where the window should be
        ts = read_columns(path, "ohlc")["timestamp"]
    except DataError:
        ts = np.empty(0, dtype=np.int64)
    span = (f"; the file's bars run from {fmt_ts(ts.min())} to {fmt_ts(ts.max())}" if ts.size
            else " (the file is empty)")
    window = ", ".join(f"{k}={v!r}" for k, v in (("start", start), ("end", end))
                       if v is not None)
    if dropped:
        return f"{symbol}: left out, no bars in the window {window}{span}"
    return (f"{path}: no {symbol} bars in the window {window}{span}. Choose a window inside "
            "the data, or drop the symbol")


def folder_symbols(path: str | Path | None = None, timeframe: str | None = None) -> list[str]:
    """The symbols of a data folder (None: the embedded dataset) with bars of ``timeframe``
    (None: of any), in the order the folder lists them (sorted by name), as ``load_market``
    loads them when no ``symbols`` are given.

    Example:
        >>> folder_symbols()
        ['BTC_USDT', 'ETH_USDT']
    """
    directory = Path(path) if path is not None else embedded_data_dir()
    ohlc, _, _ = _scan(directory)
    return sorted(s for s in ohlc if timeframe is None or timeframe in ohlc[s])


def _read_funding(path: Path) -> dict[str, np.ndarray]:
    cols = read_columns(path, "funding")
    check_timestamps(cols["timestamp"], path)
    return cols


def _place_funding(rate: np.ndarray, i: int, path: Path, cols: dict[str, np.ndarray],
                   grid: _Grid, span: tuple[int, int], align: str) -> None:
    """Funding rows within ``span`` (the symbol's first..last loaded bar) go to their bar."""
    ts = cols["timestamp"]
    a = int(np.searchsorted(ts, span[0], "left"))
    b = int(np.searchsorted(ts, span[1], "right"))
    cols = {k: v[a:b] for k, v in cols.items()}
    check_funding(cols, path, offset=a)
    pos, _ = grid.locate(cols["timestamp"])
    bad = np.flatnonzero(pos < 0)
    if bad.size:
        hint = (" (align='intersection' dropped that bar: try align='union')"
                if align == "intersection" else "")
        raise DataError(
            f"{path}: column 'timestamp': funding at row {a + bad[0]} "
            f"({fmt_ts(cols['timestamp'][bad[0]])}) matches no bar open time of the index"
            f"{hint}; {bad.size} row(s) affected. Funding times must fall on bar opens "
            "(e.g. 00:00/08:00/16:00 UTC): use bars no longer than the funding interval"
        )
    rate[pos, i] = cols["funding_rate"]
