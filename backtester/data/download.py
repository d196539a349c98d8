"""Download history from Binance's public data archive into the project's parquet layout.

The archive (https://data.binance.vision) publishes, per symbol, monthly zip files
of klines, mark-price klines and funding rates (daily zips of klines for the
current month), each with a ``.CHECKSUM`` file holding its sha256. Files are
kept in a cache folder laid out as the archive (``futures/um/monthly/...``),
which ``load_market`` reads as it is; a file already there whose checksum
matches is not fetched again, so an interrupted download resumes.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .layouts import project_symbol
from .validate import DataError, timeframe_ns, to_ns

BASE_URL = "https://data.binance.vision"
_DAY = 86_400_000_000_000


def archive_symbol(name: str) -> str:
    """``BTC_USDT``, ``BTC/USDT:USDT`` or ``BTCUSDT`` -> the archive's ``BTCUSDT``."""
    return project_symbol(name).replace("_", "").upper()


def _months(lo: int, hi: int) -> list[np.datetime64]:
    """The months touched by the window [lo, hi) (ns)."""
    first = np.datetime64(lo, "ns").astype("datetime64[M]")
    last = np.datetime64(hi - 1, "ns").astype("datetime64[M]")
    return list(np.arange(first, last + 1))


class _Fetcher:
    def __init__(self, base_url: str, cache: Path, progress: Callable[[str], None]):
        self.base = base_url.rstrip("/")
        self.cache = cache
        self.progress = progress
        self.fetched = 0
        self.reused = 0

    def _get(self, url: str) -> bytes | None:
        """The body at ``url``; None if the archive has no such file (404)."""
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                return resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise DataError(f"{url}: the archive answered HTTP {exc.code} ({exc.reason}); "
                            "try again later, or check --base-url") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(f"{url}: cannot reach the archive ({exc}); check the connection "
                            "or --base-url") from exc

    def file(self, rel: str) -> Path | None:
        """The verified local copy of archive file ``rel`` (None if not published)."""
        local = self.cache / rel
        check_local = local.with_name(local.name + ".CHECKSUM")
        if local.is_file() and check_local.is_file():
            want = _checksum_of(check_local.read_bytes(), check_local)
            if _sha256(local.read_bytes()) == want:
                self.reused += 1
                self.progress(f"  {local.name}: already downloaded and verified")
                return local
        url = f"{self.base}/data/{rel}"
        check = self._get(url + ".CHECKSUM")
        if check is None:
            return None
        want = _checksum_of(check, url + ".CHECKSUM")
        body = self._get(url)
        if body is None:
            raise DataError(f"{url}: the archive lists a checksum but not the file; try again "
                            "later")
        got = _sha256(body)
        if got != want:
            raise DataError(f"{url}: checksum mismatch (sha256 {got}, the archive's .CHECKSUM "
                            f"says {want}): the file is corrupt or incomplete; it was not "
                            "kept. Run the command again to fetch it anew")
        local.parent.mkdir(parents=True, exist_ok=True)
        part = local.with_name(local.name + ".part")
        part.write_bytes(body)
        os.replace(part, local)
        check_local.write_bytes(check)
        self.fetched += 1
        self.progress(f"  {local.name}: {len(body) / 1e6:.2f} MB, sha256 verified")
        return local


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _checksum_of(text: bytes, where: object) -> str:
    """The hex digest of a ``.CHECKSUM`` file (``<sha256>  <file name>``)."""
    word = text.decode("ascii", "replace").split(maxsplit=1)[:1]
    digest = word[0].lower() if word else ""
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise DataError(f"{where}: not a sha256 checksum file (starts {text[:40]!r})")
    return digest


def download_binance(
    symbols: Iterable[str],
    start: object,
    end: object,
    cache: str | Path,
    timeframe: str = "1h",
    base_url: str = BASE_URL,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[str]]:
    """Fetch USDT-M futures klines, mark-price klines and funding rates of ``symbols`` for
    [start, end) into ``cache`` (laid out as the archive), each file checked against its
    sha256. A month whose monthly file is not published yet is fetched day by day (klines
    and mark klines; the archive has no daily funding files).

    Returns, per project symbol (``BTC_USDT``), notes on what the archive lacked. Raises
    DataError if a symbol has no klines at all in the window or a file fails its check.
    """
    say = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    lo, hi = to_ns(start, "start"), to_ns(end, "end")
    if hi <= lo:
        raise DataError(f"end={end!r} is not after start={start!r}")
    timeframe_ns(timeframe)
    fetch = _Fetcher(base_url, Path(cache), say)
    months = _months(lo, hi)
    notes: dict[str, list[str]] = {}
    for n, name in enumerate(symbols, 1):
        sym = archive_symbol(name)
        say(f"[{n}] {sym}: {len(months)} month(s) from {months[0]} to {months[-1]}")
        mine = notes.setdefault(project_symbol(sym), [])
        got_klines = False
        for month in months:
            ym = str(month)
            for sub in ("klines", "markPriceKlines"):
                rel = f"futures/um/monthly/{sub}/{sym}/{timeframe}/{sym}-{timeframe}-{ym}.zip"
                if fetch.file(rel) is not None:
                    got_klines |= sub == "klines"
                    continue
                m0 = month.astype("datetime64[ns]").astype(np.int64)
                m1 = (month + 1).astype("datetime64[ns]").astype(np.int64)
                days = np.arange(max(lo, int(m0)) // _DAY * _DAY, min(hi, int(m1)), _DAY)
                found = 0
                for d in days:
                    day = str(np.datetime64(int(d), "ns").astype("datetime64[D]"))
                    rel = f"futures/um/daily/{sub}/{sym}/{timeframe}/{sym}-{timeframe}-{day}.zip"
                    found += fetch.file(rel) is not None
                got_klines |= sub == "klines" and found > 0
                if found < len(days):
                    mine.append(f"{sub} {ym}: {len(days) - found} of {len(days)} day(s) not "
                                "in the archive")
            rel = f"futures/um/monthly/fundingRate/{sym}/{sym}-fundingRate-{ym}.zip"
            if fetch.file(rel) is None:
                mine.append(f"fundingRate {ym}: not in the archive (no funding paid then)")
        if not got_klines:
            raise DataError(f"--symbols {sym}: the archive at {base_url} has no {timeframe} "
                            f"klines of {sym} from {months[0]} to {months[-1]} (is it a USDT-M "
                            "futures symbol, e.g. BTCUSDT?)")
    say(f"{fetch.fetched} file(s) downloaded, {fetch.reused} already there")
    return notes
