"""Data folders as users hold them: freqtrade's data folders and Binance's public archive.

**freqtrade** (``user_data/data/<exchange>``): one file per pair, timeframe and
candle type, the pair ``BTC/USDT:USDT`` spelled ``BTC_USDT_USDT``:

- ``BTC_USDT_USDT-1h-futures.feather``: ``date, open, high, low, close, volume``
- ``BTC_USDT_USDT-1h-mark.feather``: mark-price candles, same columns
- ``BTC_USDT_USDT-8h-funding_rate.feather`` (or ``-1h-``): freqtrade stores each
  funding settlement as a candle whose ``open`` is the rate (the other prices 0): its
  ``Exchange._fetch_funding_rate_history`` turns ccxt's history into
  ``[timestamp, fundingRate, 0, 0, 0, 0]`` rows
- ``BTC_USDT-1h.feather``: spot candles

Files in freqtrade's ``parquet`` format (same names, ``.parquet``) are read too.

**Binance's public archive** (data.binance.vision), kept in its own folder tree:
``futures/um/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2024-01.zip`` (and ``daily/``
with ``-2024-03-01.zip``), ``.../markPriceKlines/BTCUSDT/1h/...`` and
``.../fundingRate/BTCUSDT/BTCUSDT-fundingRate-2024-01.zip``; ``spot/...``
klines too. Each zip holds one CSV, with or without a header row; kline times
are epoch milliseconds or microseconds (newer spot files), read by magnitude.
A daily file of a month that has a monthly file is skipped.

Both name a symbol the project's way: ``BTC/USDT:USDT``, ``BTC_USDT_USDT`` and
``BTCUSDT`` are all ``BTC_USDT``. Funding times are rounded to the whole second
(the exchange stamps some settlements a few milliseconds late).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .validate import DataError, epoch_to_ns

QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "TUSD", "BTC", "ETH", "BNB", "USD")

_FT_RE = re.compile(r"^(?P<pair>[^-]+)-(?P<tf>\d+[smhdw])-(?P<kind>futures|mark|funding_rate)"
                    r"\.(?:feather|parquet)$")
_FT_SPOT_RE = re.compile(r"^(?P<pair>[^-]+)-(?P<tf>\d+[smhdw])\.feather$")
_ZIP_RE = re.compile(r"^(?P<sym>[A-Z0-9]+)-(?P<what>\d+[smhdw]|fundingRate)-"
                     r"(?P<y>\d{4})-(?P<m>\d{2})(?:-(?P<d>\d{2}))?\.zip$")


def project_symbol(name: str) -> str:
    """The project's name of a pair: ``BTC/USDT:USDT``, ``BTC_USDT_USDT``, ``BTCUSDT`` ->
    ``BTC_USDT`` (a settle currency equal to the quote is dropped)."""
    s = name.strip().replace("/", "_").replace(":", "_")
    parts = s.split("_")
    if len(parts) == 3 and parts[1] == parts[2]:
        parts = parts[:2]
    if len(parts) == 1:
        for q in QUOTES:
            if s.upper().endswith(q) and len(s) > len(q):
                return f"{s[:-len(q)]}_{s[-len(q):]}"
    return "_".join(parts)


def is_freqtrade_file(path: Path) -> bool:
    """A file named as freqtrade names futures, mark and funding files."""
    return bool(_FT_RE.match(path.name))


def is_funding_rate_file(path: Path) -> bool:
    """A freqtrade funding file, whose ``open`` column holds the rate."""
    m = _FT_RE.match(path.name)
    return bool(m and m["kind"] == "funding_rate")


def scan_freqtrade(directory: Path, ohlc: dict, mark: dict, funding: dict) -> None:
    """Add a folder's freqtrade files to the maps of ``loader._scan`` (futures candles take
    the place of spot candles of the same pair)."""
    spot: dict[str, dict[str, Path]] = {}
    for p in sorted([*directory.glob("*.feather"), *directory.glob("*.parquet")]):
        if m := _FT_RE.match(p.name):
            sym = project_symbol(m["pair"])
            if m["kind"] == "futures":
                ohlc.setdefault(sym, {})[m["tf"]] = p
            elif m["kind"] == "mark":
                mark.setdefault(sym, {})[m["tf"]] = p
            else:
                funding.setdefault(sym, p)  # 1h and 8h files hold the same settlements
        elif p.suffix == ".feather" and (m := _FT_SPOT_RE.match(p.name)):
            spot.setdefault(project_symbol(m["pair"]), {})[m["tf"]] = p
    for sym, tfs in spot.items():
        for tf, p in tfs.items():
            ohlc.setdefault(sym, {}).setdefault(tf, p)


@dataclass(frozen=True)
class ArchiveSeries:
    """One symbol's series in a Binance archive folder: its zip files, oldest first."""

    label: str
    files: tuple[Path, ...]

    @property
    def name(self) -> str:
        return self.label

    def __str__(self) -> str:
        return self.label


def archive_roots(directory: Path) -> list[Path]:
    """The folders of a Binance archive layout under ``directory`` (futures/um first)."""
    roots = [directory / "futures" / "um", directory / "spot"]
    if (directory / "monthly").is_dir() or (directory / "daily").is_dir():
        roots.insert(0, directory)
    return [r for r in roots if (r / "monthly").is_dir() or (r / "daily").is_dir()]


def _series(zips: list[Path], label: str) -> ArchiveSeries:
    """Monthly files, plus the daily files of months no monthly file covers, by time."""
    keyed = []
    months = set()
    for p in zips:
        m = _ZIP_RE.match(p.name)
        if m and m["d"] is None:
            months.add((m["y"], m["m"]))
    for p in zips:
        m = _ZIP_RE.match(p.name)
        if m and (m["d"] is None or (m["y"], m["m"]) not in months):
            keyed.append(((m["y"], m["m"], m["d"] or ""), p))
    return ArchiveSeries(label, tuple(p for _, p in sorted(keyed)))


def scan_archive(directory: Path) -> tuple[dict, dict, dict] | None:
    """Map a Binance archive folder like ``loader._scan`` (None if it is not one)."""
    roots = archive_roots(directory)
    if not roots:
        return None
    found: dict[tuple[str, str, str], list[Path]] = {}  # (kind, sym, tf) -> zips
    for root in reversed(roots):  # the first root (futures) wins
        local: dict[tuple[str, str, str], list[Path]] = {}
        for period in ("monthly", "daily"):
            for kind, sub in (("ohlc", "klines"), ("mark", "markPriceKlines"),
                              ("funding", "fundingRate")):
                base = root / period / sub
                if not base.is_dir():
                    continue
                for p in base.rglob("*.zip"):
                    m = _ZIP_RE.match(p.name)
                    if not m:
                        continue
                    tf = "" if kind == "funding" else m["what"]
                    local.setdefault((kind, m["sym"], tf), []).append(p)
        found.update(local)
    ohlc: dict[str, dict] = {}
    mark: dict[str, dict] = {}
    funding: dict[str, ArchiveSeries] = {}
    for (kind, sym, tf), zips in sorted(found.items()):
        where = zips[0].parents[2 if kind != "funding" else 1]  # .../klines, .../fundingRate
        label = f"{where.relative_to(directory)}/{sym}" + (f"/{tf}" if tf else "")
        label = re.sub(r"/(monthly|daily)/", "/{monthly,daily}/", label)
        series = _series(zips, f"{directory}/{label}")
        s = project_symbol(sym)
        if kind == "funding":
            funding[s] = series
        else:
            (ohlc if kind == "ohlc" else mark).setdefault(s, {})[tf] = series
    return ohlc, mark, funding


def _csv_rows(path: Path, n_cols: int) -> np.ndarray:
    """The numbers of a zipped archive CSV as a float/int table (header row skipped)."""
    import pandas as pd

    try:
        with zipfile.ZipFile(path) as zf:
            members = [n for n in zf.namelist() if n.endswith(".csv")]
            if len(members) != 1:
                raise DataError(f"{path}: expected one CSV file inside, found "
                                f"{len(members)} ({', '.join(zf.namelist()) or 'none'})")
            raw = zf.read(members[0])
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{path}: not a readable zip file ({exc}); download it again") from exc
    first = raw.split(b"\n", 1)[0].split(b",", 1)[0].strip()
    header = 0 if first and not first.replace(b".", b"").isdigit() else None
    try:
        frame = pd.read_csv(io.BytesIO(raw), header=header, usecols=range(n_cols))
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot read the CSV inside ({exc})") from exc
    try:
        return frame.to_numpy(dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path}: a column that should hold numbers holds text ({exc})") from exc


def read_archive(series: ArchiveSeries, kind: str) -> dict[str, np.ndarray]:
    """The columns (as ``validate.read_columns`` gives them) of an archive series."""
    if not series.files:
        raise DataError(f"{series}: no zip files")
    parts = []
    for p in series.files:
        rows = _csv_rows(p, 3 if kind == "funding" else 6)
        if rows.size:
            ts = epoch_to_ns(rows[:, 0].astype(np.int64), p)  # ms or µs, per file
            parts.append((ts, rows))
    if not parts:
        return {"timestamp": np.empty(0, np.int64),
                **{c: np.empty(0) for c in (("funding_rate",) if kind == "funding"
                                            else ("open", "high", "low", "close", "volume"))}}
    ts = np.concatenate([t for t, _ in parts])
    rows = np.concatenate([r for _, r in parts])
    if kind == "funding":  # calc_time, funding_interval_hours, last_funding_rate
        return {"timestamp": round_to_second(ts), "funding_rate": rows[:, 2]}
    out = {"timestamp": ts, "open": rows[:, 1], "high": rows[:, 2], "low": rows[:, 3],
           "close": rows[:, 4]}
    if kind == "ohlc":
        out["volume"] = rows[:, 5]
    return out


def round_to_second(ts: np.ndarray) -> np.ndarray:
    """Epoch ns rounded to the nearest whole second."""
    return (ts + 500_000_000) // 1_000_000_000 * 1_000_000_000
