"""Convert exchange/vendor CSV files into the parquet layout :func:`load_market` reads."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .validate import (
    COLUMNS,
    DataError,
    check_funding,
    check_prices,
    check_timestamps,
    epoch_to_ns,
    grid_step,
    timeframe_label,
    timeframe_ns,
)

# accepted spellings, compared after lower-casing and dropping everything but letters/digits
_ALIASES = {
    "timestamp": ("timestamp", "time", "date", "datetime", "opentime", "ts", "fundingtime",
                  "calctime", "timeutc", "datetimeutc"),
    "open": ("open", "o", "openprice"),
    "high": ("high", "h", "highprice"),
    "low": ("low", "l", "lowprice"),
    "close": ("close", "c", "closeprice", "last"),
    "volume": ("volume", "vol", "v", "basevolume", "volumebase"),
    "funding_rate": ("fundingrate", "rate", "funding", "lastfundingrate", "realizedrate"),
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _pick(frame: pd.DataFrame, field: str, src: Path, explicit: str | None = None) -> str:
    if explicit is not None:
        if explicit in frame.columns:
            return explicit
        lower = {c.lower(): c for c in frame.columns}
        if explicit.lower() in lower:
            return lower[explicit.lower()]
        raise DataError(f"{src}: no column {explicit!r} (columns: {', '.join(frame.columns)})")
    keys = {_key(c): c for c in frame.columns}
    for alias in _ALIASES[field]:
        if alias in keys:
            return keys[alias]
    raise DataError(
        f"{src}: missing column {field!r} (accepted names: {', '.join(_ALIASES[field])}; "
        f"found: {', '.join(map(str, frame.columns))}). Rename the column or pass "
        f"timestamp_column= for the time column"
    )


def _first_bad(bad: np.ndarray, values: pd.Series, src: Path, column: str, what: str,
               fix: str) -> DataError:
    """The first of the ``bad`` rows of a CSV column, by its row number (0-based, after the
    header, as pandas numbers it) and its text."""
    rows = np.flatnonzero(bad)
    return DataError(f"{src}: column {column!r}: cannot read {values.iloc[rows[0]]!r} as "
                     f"{what} at row {rows[0]}; {rows.size} row(s) affected. {fix}")


def _parse_times(values: pd.Series, src: Path, column: str) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(values.dtype):
        return epoch_to_ns(values.to_numpy(), src, column)
    text = values.astype(str).str.strip()
    if text.str.fullmatch(r"-?\d+(\.\d+)?").all():
        return epoch_to_ns(pd.to_numeric(text).to_numpy(), src, column)
    fix = "Use ISO 8601 text (2024-01-01T08:00:00Z) or epoch numbers"
    try:
        idx = pd.to_datetime(text, utc=True, format="ISO8601")
    except (ValueError, TypeError):
        try:
            idx = pd.to_datetime(text, utc=True, format="mixed")
        except (ValueError, TypeError):  # find the first row that does not parse
            idx = pd.to_datetime(text, utc=True, format="mixed", errors="coerce")
            raise _first_bad((idx.isna() & values.notna()).to_numpy(), values, src, column,
                             "a date", fix) from None
    if idx.isna().any():
        bad = np.flatnonzero(idx.isna().to_numpy())
        raise DataError(f"{src}: column {column!r}: missing date at row {bad[0]}; "
                        f"{bad.size} row(s) affected. Every row needs a timestamp")
    return idx.to_numpy(dtype="datetime64[ns]").view(np.int64)


def _numbers(values: pd.Series, src: Path, column: str) -> np.ndarray:
    """A CSV column of numbers; text that is not one is an error (an empty cell is NaN)."""
    numbers = pd.to_numeric(values, errors="coerce")
    text = numbers.isna() & values.notna()
    if text.any():
        raise _first_bad(text.to_numpy(), values, src, column, "a number",
                         "Fix the cell or drop the row")
    return numbers.to_numpy(dtype=np.float64)


def import_csv(
    src: str | Path,
    dest_dir: str | Path,
    symbol: str,
    kind: str = "ohlc",
    timestamp_column: str | None = None,
    timeframe: str | None = None,
) -> Path:
    """Convert a CSV of bars or funding rates to ``dest_dir`` in the layout of ``load_market``.

    Args:
        src: the CSV file. Column names are case-insensitive; common aliases
            are accepted (``time``, ``date``, ``open_time`` for the timestamp,
            ``fundingRate``/``rate`` for the funding rate, ``o/h/l/c``...).
        dest_dir: the data directory to write into (created if needed).
        symbol: the instrument, e.g. ``BTC_USDT`` (``BTC/USDT`` becomes ``BTC_USDT``).
        kind: ``"ohlc"`` (last-price bars with volume), ``"mark"`` (mark-price
            bars: the price the venue computes margin and liquidations on) or
            ``"funding"`` (rates as decimal fractions per funding interval,
            0.0001 = 0.01%, at settlement times).
        timestamp_column: the time column's name if it is not a usual one.
            Times are ISO 8601 text (naive = UTC) or epoch s/ms/us/ns; a bar's
            time is its **open** time.
        timeframe: the bar length (``"1h"``...); inferred from the bars if not
            given, and checked against them if given.

    Returns the parquet path written (zstd). Raises DataError, naming the file,
    column and row, if the data break a rule (see :mod:`.validate`).
    """
    src = Path(src)
    if kind not in COLUMNS:
        raise ValueError(f"kind={kind!r}: use 'ohlc', 'mark' or 'funding'")
    symbol = symbol.strip().replace("/", "_")
    if not symbol or re.search(r"[-\\:\s]", symbol):
        raise DataError(f"symbol={symbol!r}: use letters, digits and '_' only (e.g. BTC_USDT)")
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    try:
        frame = pd.read_csv(src)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{src}: cannot read as CSV ({exc})") from exc
    names = {f: _pick(frame, f, src, timestamp_column if f == "timestamp" else None)
             for f in COLUMNS[kind]}
    if frame.empty:
        raise DataError(f"{src}: no data rows (only the header); nothing to import")
    ts = _parse_times(frame[names["timestamp"]], src, names["timestamp"])
    cols: dict[str, np.ndarray] = {"timestamp": ts}
    for f in COLUMNS[kind][1:]:
        cols[f] = _numbers(frame[names[f]], src, names[f])
    check_timestamps(ts, src)
    if kind == "funding":
        check_funding(cols, src)
        out = Path(dest_dir) / f"{symbol}_funding.parquet"
    else:
        check_prices(cols, src, ts)
        named = timeframe_ns(timeframe) if timeframe else None
        step = grid_step(ts, src, fallback=named)
        if named is not None and step != named:
            raise DataError(f"{src}: timeframe={timeframe!r} but the bars are "
                            f"{timeframe_label(step)} apart")
        tf = timeframe or timeframe_label(step)
        suffix = "_mark" if kind == "mark" else ""
        out = Path(dest_dir) / f"{symbol}{suffix}-{tf}.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "timestamp": pa.array(ts.astype("datetime64[ns]"), pa.timestamp("ns", tz="UTC")),
        **{f: cols[f] for f in COLUMNS[kind][1:]},
    })
    pq.write_table(table, out, compression="zstd")
    return out
