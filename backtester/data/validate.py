"""Reading and checking market-data files: every check is vectorised (numpy), or, over large
arrays, one compiled pass (``prices_sound``).

Each function raises :class:`DataError` with a message that names the file, the
column, the first offending row (0-based, as pandas would number it) with its
timestamp, how many rows are bad, and what to do about it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numba import config as numba_config
from numba import njit

PRICE_COLUMNS = ("open", "high", "low", "close")
OHLC_COLUMNS = ("timestamp", *PRICE_COLUMNS, "volume")
MARK_COLUMNS = ("timestamp", *PRICE_COLUMNS)
FUNDING_COLUMNS = ("timestamp", "funding_rate")
COLUMNS = {"ohlc": OHLC_COLUMNS, "mark": MARK_COLUMNS, "funding": FUNDING_COLUMNS}

_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_UNIT_NS = {"s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000,
            "d": 86_400_000_000_000, "w": 7 * 86_400_000_000_000}
_TF_RE = re.compile(r"^(\d+)([smhdw])$")


class DataError(ValueError):
    """A market-data file is missing, unreadable or violates a data rule."""


class DataWarning(UserWarning):
    """Market data that is legal but suspicious (a funding rate beyond the venue's cap, a
    mark price far from the last price): the run goes ahead and records it."""


def fmt_ts(ns: int | np.integer) -> str:
    """An int64 nanosecond timestamp as readable UTC text."""
    unit = "s" if int(ns) % 1_000_000_000 == 0 else "ns"
    text = str(np.datetime64(int(ns), "ns").astype(f"datetime64[{unit}]"))
    return text.replace("T", " ") + " UTC"


def timeframe_ns(tf: str) -> int:
    """Bar length of a timeframe label (``"1m"``, ``"5m"``, ``"1h"``, ``"4h"``, ``"1d"``...)."""
    m = _TF_RE.match(tf.strip())
    if not m or int(m.group(1)) <= 0:
        raise DataError(
            f"unknown timeframe {tf!r}: use a number and a unit s, m, h, d or w, e.g. '5m', '1h'"
        )
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


def timeframe_label(bar_ns: int) -> str:
    """The label of a bar length: 3_600e9 ns -> ``"1h"`` (the largest whole unit)."""
    for unit in ("w", "d", "h", "m", "s"):
        if bar_ns % _UNIT_NS[unit] == 0:
            return f"{bar_ns // _UNIT_NS[unit]}{unit}"
    raise DataError(f"bar length of {bar_ns} ns is not a whole number of seconds")


def to_ns(when: object, name: str) -> int:
    """A time (anything ``pandas.Timestamp`` takes; naive = UTC) as int64 ns; a clear error
    naming the keyword ``name`` otherwise."""
    import pandas as pd

    if isinstance(when, bool | int | float | np.number):  # pandas would read ns since 1970
        raise DataError(f"{name}={when!r} is a number; give a date such as 2024-01-01 (an "
                        "epoch number: pandas.Timestamp(value, unit='ms'))")
    try:
        ts = pd.Timestamp(when)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name}={when!r} is not a time ({exc}); give a date such as "
                        "2024-01-01 or 2024-01-01 08:00") from None
    if ts is pd.NaT:
        raise DataError(f"{name}={when!r} is not a time; give a date such as 2024-01-01")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return int(ts.as_unit("ns").value)


def bar_length_ns(bar: object, name: str = "bar") -> int:
    """A bar length (``"1h"``, ``"15min"``, a ``Timedelta``) in ns; it must be positive."""
    import pandas as pd

    label = _TF_RE.match(bar.strip()) if isinstance(bar, str) else None
    if label:
        ns = int(label.group(1)) * _UNIT_NS[label.group(2)]
    elif isinstance(bar, str | pd.Timedelta | np.timedelta64) or hasattr(bar, "total_seconds"):
        try:
            ns = pd.Timedelta(bar).value
        except (ValueError, TypeError) as exc:
            raise DataError(f"{name}={bar!r} is not a bar length ({exc}); give one such as "
                            "'1h', '5m' or '1d'") from None
    else:
        raise DataError(f"{name}={bar!r} is not a bar length; give one such as '1h', '5m' "
                        "or '1d'")
    if ns is pd.NaT or not ns > 0:
        raise DataError(f"{name}={bar!r}: a bar length must be positive, e.g. '1h'")
    return int(ns)


def _bad(path: Path | str, column: str, what: str, mask_or_idx: np.ndarray,
         ts: np.ndarray | None, fix: str, offset: int = 0) -> DataError:
    idx = np.flatnonzero(mask_or_idx) if mask_or_idx.dtype == bool else mask_or_idx
    first = int(idx[0])
    when = f" (timestamp {fmt_ts(ts[first])})" if ts is not None and len(ts) > first else ""
    more = ""
    if len(idx) > 1:  # a few more, so that a pattern (every :30 bar...) shows
        shown = [int(i) for i in idx[:3]]
        listing = ", ".join(f"{i + offset}" + (f" ({fmt_ts(ts[i])})" if ts is not None
                                                 and len(ts) > i else "") for i in shown)
        more = f", first rows {listing}"
    return DataError(
        f"{path}: column '{column}': {what} at row {first + offset}{when}; "
        f"{len(idx)} row(s) affected{more}. {fix}"
    )


def read_columns(path: Path | str, kind: str) -> dict[str, np.ndarray]:
    """Read the columns of a ``kind`` file (ohlc, mark, funding) as numpy arrays.

    Column names match case-insensitively. ``timestamp`` comes back as int64
    nanoseconds UTC; the others as float64 (nulls become NaN).
    """
    from .layouts import ArchiveSeries, is_funding_rate_file, read_archive, round_to_second

    if isinstance(path, ArchiveSeries):  # a Binance archive folder's zip files
        return read_archive(path, kind)
    path = Path(path)
    wanted = COLUMNS[kind]
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".feather":  # freqtrade's files
        return _read_feather(path, kind)
    try:
        pf = pq.ParquetFile(path)
        names = pf.schema_arrow.names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{path}: not a readable parquet file ({exc}). Re-export it as parquet, "
            f"or convert a CSV with backtester.data.import_csv"
        ) from exc
    try:
        lower = _column_names(names, path, kind)
    except DataError:
        pf.close()
        raise
    try:  # ParquetFile.read gives one chunk per row group, so to_numpy is zero-copy
        table = pf.read(columns=[lower[c] for c in wanted])
    except (pa.ArrowException, OSError) as exc:
        raise DataError(
            f"{path}: cannot read the parquet data ({exc}). Re-export the file."
        ) from exc
    finally:
        pf.close()
    out = _numpy_columns(table, lower, wanted, path)
    if is_funding_rate_file(path):
        out["timestamp"] = round_to_second(out["timestamp"])
    return out


def _column_names(names: list[str], path: Path, kind: str) -> dict[str, str]:
    """Our column name -> the file's, case-insensitively; freqtrade's ``date`` is the
    timestamp and its funding files keep the rate in ``open``."""
    from .layouts import is_funding_rate_file

    wanted = COLUMNS[kind]
    lower = {n.lower(): n for n in names}
    if "timestamp" not in lower and "date" in lower:
        lower["timestamp"] = lower["date"]
    if kind == "funding" and "funding_rate" not in lower and is_funding_rate_file(path) \
            and "open" in lower:
        lower["funding_rate"] = lower["open"]
    missing = [c for c in wanted if c not in lower]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; a {kind} file "
            f"needs {', '.join(wanted)} (found: {', '.join(names)}). Rename or add the columns."
        )
    return lower


def _numpy_columns(table: pa.Table, lower: dict[str, str], wanted: tuple[str, ...],
                   path: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for c in wanted:
        col = table.column(lower[c])
        out[c] = timestamps_ns(col, path) if c == "timestamp" else _floats(col, path, c)
    return out


def _read_feather(path: Path, kind: str) -> dict[str, np.ndarray]:
    """A feather (Arrow IPC) file's columns, as :func:`read_columns` gives them."""
    import pyarrow.feather as feather

    from .layouts import is_funding_rate_file, round_to_second

    try:
        table = feather.read_table(path, memory_map=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable feather file ({exc}); write it again "
                        "(e.g. freqtrade download-data)") from exc
    lower = _column_names(table.column_names, path, kind)
    out = _numpy_columns(table, lower, COLUMNS[kind], path)
    if is_funding_rate_file(path):
        out["timestamp"] = round_to_second(out["timestamp"])
    return out


def _floats(col: pa.ChunkedArray, path: Path, name: str) -> np.ndarray:
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)
            or pa.types.is_decimal(col.type)):
        raise DataError(f"{path}: column '{name}' has type {col.type}; it must be numeric")
    if col.type != pa.float64():
        col = col.cast(pa.float64())
    if col.num_chunks != 1:
        col = col.combine_chunks()
    else:
        col = col.chunk(0)
    return col.to_numpy(zero_copy_only=False)


def epoch_to_ns(values: np.ndarray, path: Path | str, column: str = "timestamp") -> np.ndarray:
    """Integer/float epoch times to int64 ns, the unit guessed from the magnitude.

    Seconds below 1e11, milliseconds below 1e14, microseconds below 1e17, else
    nanoseconds (for any date between 1973 and 2286).
    """
    if values.size == 0:
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise _bad(path, column, "missing timestamp", np.isnan(values), None,
                   "Every row needs a timestamp.")
    mag = float(np.abs(values).max())
    unit = "s" if mag < 1e11 else "ms" if mag < 1e14 else "us" if mag < 1e17 else "ns"
    if values.dtype.kind == "f":
        return np.round(values * _NS[unit]).astype(np.int64)
    return values.astype(np.int64, copy=False) * _NS[unit]


def timestamps_ns(col: pa.ChunkedArray, path: Path | str) -> np.ndarray:
    """A timestamp column (datetime with or without tz, date, epoch int, ISO text) -> int64 ns.

    A naive datetime is taken as UTC. Epoch integers are in s, ms, us or ns,
    detected by magnitude.
    """
    if col.null_count:
        nulls = col.is_null().to_numpy(zero_copy_only=False)
        raise _bad(path, "timestamp", "missing timestamp", nulls, None,
                   "Every row needs a timestamp.")
    t = col.type
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        if not pa.types.is_timestamp(t) or t.unit != "ns":
            col = pc.cast(col, pa.timestamp("ns", tz=getattr(t, "tz", None)))
        arr = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        return arr.view(pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return epoch_to_ns(col.to_numpy(), path)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        import pandas as pd

        try:
            idx = pd.to_datetime(col.to_pandas(), utc=True, format="ISO8601")
        except (ValueError, TypeError) as exc:
            raise DataError(
                f"{path}: column 'timestamp': cannot parse text as dates ({exc})"
            ) from exc
        return idx.to_numpy(dtype="datetime64[ns]").view(np.int64)
    raise DataError(
        f"{path}: column 'timestamp' has type {t}; use a datetime (UTC) or epoch integers"
    )


def check_timestamps(ts: np.ndarray, path: Path | str) -> None:
    """Timestamps must be strictly increasing: no duplicates, no step backwards."""
    if ts.size < 2:
        return
    d = np.diff(ts)
    if (d <= 0).any():
        dup = d == 0
        if dup.any():
            raise _bad(path, "timestamp", "duplicated timestamp", np.flatnonzero(dup) + 1, ts,
                       "Drop the duplicate rows (keep one bar per timestamp).")
        raise _bad(path, "timestamp", "timestamps not sorted (earlier than the row before)",
                   np.flatnonzero(d < 0) + 1, ts, "Sort the file by timestamp.")


def grid_step(ts: np.ndarray, path: Path | str, fallback: int | None = None) -> int:
    """The bar length of a sorted timestamp column; every step must be a multiple of it.

    The bar length is the most common step. A step that is not a whole multiple
    of it (an off-grid bar, or bars of two frequencies mixed in one file) is an
    error. Gaps of whole bars are fine. ``fallback`` is used for a file of one row.
    """
    if ts.size < 2:
        if fallback is None:
            raise DataError(f"{path}: a single bar, so the bar length is unknown; "
                            "name the file SYM-<timeframe>.parquet or give timeframe=")
        return int(fallback)
    d = np.diff(ts)
    m = d.min()
    if np.count_nonzero(d == m) * 2 >= d.size:
        step = int(m)
    else:
        vals, counts = np.unique(d, return_counts=True)
        step = int(vals[np.argmax(counts)])
    if m == step and d.max() == step:  # regular bars, no gaps
        return step
    off = d % step != 0
    if off.any():
        idx = np.flatnonzero(off) + 1
        raise _bad(path, "timestamp",
                   f"mixed bar frequencies: step of {int(d[idx[0] - 1]) / 1e9:g} s is not a "
                   f"multiple of the bar length {timeframe_label(step)}", idx, ts,
                   "Keep one bar frequency per file (resample to a common timeframe).")
    return step


class Problem(NamedTuple):
    """A broken data rule: the column, what is wrong, where (a mask shaped like the data) and
    what to do. ``bar_problem`` and ``funding_problem`` find them; each interface words them
    in its own terms (a file's row for ``load_market``, ``open[3, 'BTC']`` for
    ``Market.from_arrays``)."""

    column: str
    what: str
    mask: np.ndarray
    fix: str


def _all_positive_finite(v: np.ndarray) -> bool:
    # two reductions: min > 0 is False for NaN and for <= 0, max < inf for +inf
    return not v.size or bool(v.min() > 0 and v.max() < np.inf)


def _plainly_sound(o, h, lo, c, volume=None) -> bool:
    """True when every bar keeps every rule of ``bar_problem`` with no NaN at all; else False
    (a broken rule, or a bar that is missing: ``bar_problem`` then looks closer).

    Two reductions and four comparisons instead of ten passes: 0 < low <= open, close <= high
    < inf bounds all four prices (a NaN fails a comparison)."""
    if not (o.size and lo.min() > 0 and h.max() < np.inf and (lo <= o).all()
            and (lo <= c).all() and (o <= h).all() and (c <= h).all()):
        return False
    return _volume_sound(volume)


def _volume_sound(volume) -> bool:
    """No volume, or every value finite and >= 0 (no NaN)."""
    return volume is None or not volume.size or bool(volume.min() >= 0
                                                    and volume.max() < np.inf)


# arrays of at least this many prices are checked in one compiled pass (``prices_sound``):
# numpy's reductions read a market's arrays six times over. Below it (the embedded data
# among them) numpy's passes cost little, and nothing is compiled: a first run, on an empty
# numba cache, never waits for it (once compiled, numba's cache keeps it).
COMPILED_FROM = 1 << 17


@njit(cache=True, error_model='numpy', nogil=True)
def _sound_pass(o, h, lo, c, missing_ok):
    """Whether every bar of the flat price arrays keeps ``bar_problem``'s price rules: 0 < low
    <= open, close <= high < inf (a NaN fails a comparison), or, where ``missing_ok``, all
    four prices NaN (no bar). One pass, without a branch per bar."""
    sound = True
    for k in range(o.shape[0]):
        a, b, low, z = o[k], h[k], lo[k], c[k]
        keeps = (low > 0.0) & (b < np.inf) & (low <= a) & (low <= z) & (a <= b) & (z <= b)
        missing = missing_ok & (a != a) & (b != b) & (low != low) & (z != z)
        sound &= keeps | missing
    return sound


def prices_sound(o, h, lo, c, missing_ok: bool = False) -> bool | None:
    """``bar_problem``'s price rules over whole arrays in one compiled pass: True when every bar
    keeps them, False when some bar does not (``bar_problem`` then says which); None where
    the pass is not used: fewer than ``COMPILED_FROM`` prices, arrays that are not float64,
    C-contiguous and of one shape, or numba's compiler off (a first run, interpreted)."""
    arrays = (o, h, lo, c)
    if (numba_config.DISABLE_JIT or o.size < COMPILED_FROM
            or not all(isinstance(a, np.ndarray) and a.dtype == np.float64
                       and a.flags.c_contiguous and a.shape == o.shape for a in arrays)):
        return None
    return bool(_sound_pass(*(a.reshape(-1) for a in arrays), bool(missing_ok)))


def sound_at_once(cols: Mapping[str, np.ndarray], missing_ok: bool = False) -> bool:
    """True when ``cols`` (``bar_problem``'s) plainly keep its rules, found in one compiled
    pass over the prices (``prices_sound``) and two reductions of the volume (NaN volume
    fails them); False says nothing: ``bar_problem`` decides."""
    prices = [cols[c] for c in PRICE_COLUMNS]
    return bool(prices_sound(*prices, missing_ok=missing_ok)) and _volume_sound(
        cols.get("volume"))


def bar_problem(cols: Mapping[str, np.ndarray], missing_ok: bool = False) -> Problem | None:
    """The first broken OHLC rule in ``cols``, or None: prices finite and > 0 (no NaN),
    high >= max(open, close), low <= min(open, close); volume (if given) finite and >= 0.

    The arrays share one shape: a file's columns ``(rows,)`` or a market's ``(T, N)``.
    ``missing_ok``: a bar whose four prices are all NaN is "no bar" (a market's symbol
    that does not trade then), not an error. Fast path: a few reductions; the masks are
    built only on failure.
    """
    prices = [cols[c] for c in PRICE_COLUMNS]
    sound = prices_sound(*prices, missing_ok=missing_ok)  # (None: numpy's reductions decide)
    if (_plainly_sound(*prices) if sound is None else sound) and _volume_sound(
            cols.get("volume")):
        return None
    if not all(_all_positive_finite(v) for v in prices):
        missing = (np.isnan(prices[0]) & np.isnan(prices[1]) & np.isnan(prices[2])
                   & np.isnan(prices[3])) if missing_ok else None
        for c, v in zip(PRICE_COLUMNS, prices, strict=True):
            nan = np.isnan(v) if missing is None else np.isnan(v) & ~missing
            if nan.any():
                if missing_ok:
                    return Problem(c, "NaN price in a bar that has other prices", nan,
                                   "Give all four prices, or NaN for all four where the "
                                   "symbol has no bar.")
                return Problem(c, "NaN price", nan, "Drop or fill the missing bars.")
            if np.isinf(v).any():
                return Problem(c, "infinite price", np.isinf(v),
                               "Prices must be finite: drop or fix these rows.")
            if (v <= 0).any():
                return Problem(c, "price <= 0", v <= 0,
                               "Prices must be positive: drop or fix these rows.")
    o, h, lo, c = prices
    fix = "The bar's high/low must bracket its open and close: fix these rows."
    if (h < lo).any():
        return Problem("high", "high < low", h < lo, fix)
    if (h < o).any() or (h < c).any():
        return Problem("high", "high < max(open, close)", h < np.maximum(o, c), fix)
    if (lo > o).any() or (lo > c).any():
        return Problem("low", "low > min(open, close)", lo > np.minimum(o, c), fix)
    v = cols.get("volume")
    if v is not None and v.size and not (v.min() >= 0 and v.max() < np.inf):
        nan = np.isnan(v) & ~np.isnan(o) if missing_ok else np.isnan(v)
        if nan.any():
            return Problem("volume", "NaN volume", nan, "Fill missing volume (0 if unknown).")
        if np.isinf(v).any():
            return Problem("volume", "infinite volume", np.isinf(v),
                           "Volume must be finite: fix these rows.")
        if (v < 0).any():
            return Problem("volume", "negative volume", v < 0,
                           "Volume must be >= 0: fix these rows.")
    return None


def funding_problem(rate: np.ndarray, missing_ok: bool = False) -> Problem | None:
    """Funding rates must be finite numbers (a decimal fraction per interval); NaN means
    "no funding at this bar" where ``missing_ok`` (a market's array), an error in a file."""
    bad = np.isinf(rate) if missing_ok else ~np.isfinite(rate)
    if bad.any():
        what = "infinite funding rate" if missing_ok else "missing or infinite funding rate"
        return Problem("funding_rate", what, bad,
                       "Funding rates are finite decimal fractions (0.0001 = 0.01%): drop "
                       "or fix those rows.")
    return None


def check_prices(cols: dict[str, np.ndarray], path: Path | str, ts: np.ndarray,
                 offset: int = 0) -> None:
    """A file's bars must keep the OHLC rules of ``bar_problem`` (no missing bar allowed: a
    file holds only the bars that exist)."""
    problem = bar_problem(cols)
    if problem is not None:
        raise _bad(path, problem.column, problem.what, problem.mask, ts, problem.fix, offset)


def check_funding(cols: dict[str, np.ndarray], path: Path | str, offset: int = 0) -> None:
    """A funding file's rates must be finite numbers (a decimal fraction per interval)."""
    problem = funding_problem(cols["funding_rate"])
    if problem is not None:
        raise _bad(path, problem.column, problem.what, problem.mask, cols["timestamp"],
                   problem.fix, offset)
