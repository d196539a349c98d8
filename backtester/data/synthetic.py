"""Deterministic synthetic market data: the embedded dataset and benchmark markets.

Everything is driven by ``numpy.random.default_rng(seed)``: the same seed gives
the same numbers on every machine (numpy >= 1.17 bit generators are stable).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .market import Market
from .validate import timeframe_label, timeframe_ns

EMBEDDED_SEED = 11
EMBEDDED_START = "2023-01-01"
EMBEDDED_END = "2025-01-01"  # exclusive: the last bar opens 2024-12-31 23:00 UTC

# symbol: start price, price tick, volatility relative to BTC, typical hourly volume (base units)
_EMBEDDED = {
    "BTC_USDT": (30_000.0, 0.1, 1.0, 9_000.0),
    "ETH_USDT": (2_000.0, 0.01, 1.25, 120_000.0),
}
# crash days: (date, hour the crash starts, drop of the closes, extra wick below the low)
_CRASHES = (
    ("2023-03-10", 13, 0.12, 0.05),
    ("2023-08-17", 20, 0.10, 0.06),
    ("2024-03-19", 2, 0.14, 0.07),
    ("2024-08-05", 0, 0.20, 0.12),
)
_YEAR_NS = 365 * 86_400 * 10**9


def _student_t_pair(rng: np.random.Generator, n: int, rho: float, df: float) -> np.ndarray:
    """(n, 2) unit-variance multivariate Student-t draws with correlation ``rho``."""
    z = rng.standard_normal((n, 2))
    z[:, 1] = rho * z[:, 0] + np.sqrt(1 - rho * rho) * z[:, 1]
    w = np.sqrt(df / rng.chisquare(df, n) * (df - 2) / df)
    return z * w[:, None]


def _garch_returns(rng: np.random.Generator, n: int, shocks: np.ndarray,
                   hourly_vol: float) -> tuple[np.ndarray, np.ndarray]:
    """Log returns of BTC and ETH with a shared GARCH(1,1) variance; crash shocks feed it."""
    alpha, beta = 0.07, 0.90
    var = hourly_vol**2
    omega = var * (1 - alpha - beta)
    z = _student_t_pair(rng, n, rho=0.8, df=3.5)
    scale = np.array([_EMBEDDED[s][2] for s in _EMBEDDED])
    sig = np.empty(n)
    r = np.empty((n, 2))
    h = var
    for t in range(n):  # 17,544 steps: plain Python is fast enough here
        s = np.sqrt(h)
        sig[t] = s
        e = s * z[t, 0] + shocks[t]
        r[t] = (s * z[t] + shocks[t]) * scale
        h = omega + alpha * min(e * e, 25 * var * 4) + beta * h
    return r, sig


def _round_ohlc(o: np.ndarray, h: np.ndarray, lo: np.ndarray, c: np.ndarray,
                tick: float) -> tuple[np.ndarray, ...]:
    o, h, lo, c = (np.round(x / tick) * tick for x in (o, h, lo, c))
    h = np.round(np.maximum(h, np.maximum(o, c)), 10)
    lo = np.round(np.minimum(lo, np.minimum(o, c)), 10)
    return np.round(o, 10), h, lo, np.round(c, 10)


def _table(columns: dict[str, np.ndarray]) -> pa.Table:
    ts = pa.array(columns["timestamp"].astype("datetime64[ns]"), pa.timestamp("ns", tz="UTC"))
    return pa.table({"timestamp": ts, **{k: v for k, v in columns.items() if k != "timestamp"}})


def _write(table: pa.Table, path: Path, compact: bool = False) -> None:
    floats = [f.name for f in table.schema if pa.types.is_floating(f.type)]
    pq.write_table(table, path, compression="zstd",
                   compression_level=19 if compact else None,
                   use_dictionary=False if compact else True,
                   use_byte_stream_split=floats if compact else False)


def generate_embedded(out_dir: str | Path, seed: int = EMBEDDED_SEED) -> list[Path]:
    """Write the embedded dataset (BTC_USDT, ETH_USDT, hourly, 2023-2024) to ``out_dir``.

    Two correlated crypto-like perpetuals (hourly return correlation ~0.8) with
    Student-t innovations (df 3.5), a GARCH(1,1) volatility, four crash days
    (-15% to -35% intraday, long low wicks, partial recovery), mark prices with
    a mean-reverting basis of a few bps and shallower wicks than the last price,
    and 8-hourly funding at 00/08/16 UTC computed with Binance's formula
    (premium + clamp(0.01% - premium, +-0.05%), clipped to +-0.3%).
    Returns the paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    index = pd.date_range(EMBEDDED_START, EMBEDDED_END, freq="h", inclusive="left", tz="UTC")
    ts = index.as_unit("ns").asi8
    n = ts.size
    hourly_vol = 0.55 / np.sqrt(8760)

    shocks = np.zeros(n)
    wick = np.zeros(n)
    for day, hour, drop, extra in _CRASHES:
        t0 = int(index.get_loc(pd.Timestamp(f"{day} {hour:02d}:00", tz="UTC")))
        shocks[t0:t0 + 3] -= drop * np.array([0.25, 0.45, 0.30])
        shocks[t0 + 3:t0 + 11] += drop * 0.55 / 8  # partial recovery over 8 hours
        wick[t0 + 2] = extra
    r, sig = _garch_returns(rng, n, shocks, hourly_vol)
    r += 0.35 / 8760 - 0.5 * hourly_vol**2  # a mild upward drift over the two years

    gaps = rng.standard_normal((n, 2)) * 5e-5
    wick_hi = np.abs(rng.standard_normal((n, 2))) * 0.6 * sig[:, None]
    wick_lo = np.abs(rng.standard_normal((n, 2))) * 0.6 * sig[:, None]
    vol_noise = rng.standard_normal((n, 2))
    basis_noise = rng.standard_normal((n, 2))
    fund_noise = rng.standard_normal((n // 8 + 1, 2))
    hour = (ts // 3_600_000_000_000) % 24
    season = 1 + 0.3 * np.sin(2 * np.pi * (hour - 8) / 24)
    paths = []
    for j, (sym, (p0, tick, vmult, vol0)) in enumerate(_EMBEDDED.items()):
        close = p0 * np.exp(np.cumsum(r[:, j]))
        open_ = np.r_[p0, close[:-1]] * np.exp(gaps[:, j])
        depth = wick * (1.0, 1.1)[j]
        top = np.maximum(open_, close)
        bottom = np.minimum(open_, close)
        high = top * np.exp(wick_hi[:, j] * vmult)
        low = bottom * np.exp(-wick_lo[:, j] * vmult) * (1 - depth)
        o, h, lo, c = _round_ohlc(open_, high, low, close, tick)
        surprise = np.abs(r[:, j]) / (hourly_vol * vmult)
        volume = np.round(vol0 * season * np.exp(0.4 * vol_noise[:, j]) * (0.6 + 0.4 * surprise),
                          3)
        p = out / f"{sym}-1h.parquet"
        _write(_table({"timestamp": ts, "open": o, "high": h, "low": lo, "close": c,
                       "volume": volume}), p, compact=True)
        paths.append(p)

        # mark = last x (1 + basis): an AR(1) basis of ~3 bps; mark wicks 60% (crash: 30%) deep
        b = np.empty(n)
        b[0] = 0.0
        eps = basis_noise[:, j] * 1.5e-4
        for t in range(1, n):
            b[t] = 0.9 * b[t - 1] + eps[t]
        mc = close * (1 + b)
        mo = np.r_[open_[0] * (1 + b[0]), mc[:-1]]
        share = np.where(depth > 0, 0.3, 0.6)
        mh = np.maximum(mo, mc) * (1 + share * (high / top - 1))
        ml = np.minimum(mo, mc) * (1 - share * (1 - low / bottom))
        mo, mh, ml, mc = _round_ohlc(mo, mh, ml, mc, tick)
        p = out / f"{sym}_mark-1h.parquet"
        _write(_table({"timestamp": ts, "open": mo, "high": mh, "low": ml, "close": mc}), p,
               compact=True)
        paths.append(p)

        # funding every 8h: premium follows the last 24h return plus AR(1) noise
        at = np.flatnonzero(hour % 8 == 0)
        logc = np.log(close)
        prev = np.maximum(at - 1, 0)
        ret24 = logc[prev] - logc[np.maximum(at - 25, 0)]
        noise = np.empty(at.size)
        noise[0] = 0.0
        for k in range(1, at.size):
            noise[k] = 0.7 * noise[k - 1] + 2e-4 * fund_noise[k, j]
        premium = 5e-5 + 0.012 * ret24 + noise
        rate = premium + np.clip(1e-4 - premium, -5e-4, 5e-4)
        rate = np.round(np.clip(rate, -3e-3, 3e-3), 8)
        p = out / f"{sym}_funding.parquet"
        _write(_table({"timestamp": ts[at], "funding_rate": rate}), p, compact=True)
        paths.append(p)
    return paths


def _smooth(noise: np.ndarray, window: int) -> np.ndarray:
    """Moving average over ``window`` rows (axis 0), rescaled to unit variance."""
    c = np.cumsum(noise, axis=0)
    out = c.copy()
    out[window:] -= c[:-window]
    out /= np.sqrt(np.minimum(np.arange(1, noise.shape[0] + 1), window)).reshape(
        (-1,) + (1,) * (noise.ndim - 1))
    return out


def _smooth_in_place(noise: np.ndarray, window: int) -> np.ndarray:
    """``_smooth(noise, window)`` written into ``noise``'s memory (the same numbers)."""
    c = np.cumsum(noise, axis=0)
    noise[:window] = c[:window]
    np.subtract(c[window:], c[:-window], out=noise[window:])
    del c
    noise /= np.sqrt(np.minimum(np.arange(1, noise.shape[0] + 1), window)).reshape(
        (-1,) + (1,) * (noise.ndim - 1))
    return noise


def _moving_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over ``window`` rows (fewer at the start), along axis 0."""
    c = np.cumsum(x, axis=0)
    # c[window:] -= c[:-window], without a copy of c: from the last rows back, in blocks of
    # at most ``window`` rows, each block's source rows lie before it and are not yet changed
    stop = c.shape[0]
    while stop > window:
        begin = max(window, stop - window)
        c[begin:stop] -= c[begin - window:stop - window]
        stop = begin
    n = np.minimum(np.arange(1, x.shape[0] + 1), window).astype(np.float64)
    c /= n.reshape((-1,) + (1,) * (x.ndim - 1))
    return c


def make_market(n_bars: int, n_symbols: int, seed: int = 0, bar: str = "1h",
                start: str = "2020-01-01", with_mark: bool = True,
                funding_every: int | None = 8) -> Market:
    """An in-memory random Market of ``n_symbols`` correlated perpetuals (for tests/benchmarks).

    Vectorised (1,000,000 bars x 10 symbols in a few seconds). Returns follow a
    one-factor model (pairwise correlation ~0.6) with Student-t(4) shocks and
    slowly varying volatility (60% a year on average); log prices revert to
    their start over about a year, so long series keep plausible prices. ``with_mark`` adds a
    mark price a few bps off the last price; without it the mark arrays are the
    last-price arrays. ``funding_every``: a funding rate every that many bars
    (None or 0: no funding).

    Memory: the arithmetic runs in place (``out=``), so that building the market needs
    about one (T, N) array beyond the ones it returns (the same numbers as computed out
    of place: each element goes through the same operations).
    """
    rng = np.random.default_rng(seed)
    bar_ns = timeframe_ns(bar)
    t, n = int(n_bars), int(n_symbols)
    sd = 0.6 * np.sqrt(bar_ns / _YEAR_NS)
    df = 4.0
    regime = np.exp(0.35 * _smooth(rng.standard_normal(t), 500))
    regime /= np.sqrt(np.mean(regime**2))
    tails = np.sqrt((df - 2) / rng.chisquare(df, t))
    scale = (sd * regime * tails)[:, None]
    r = rng.standard_normal((t, n))
    r *= np.sqrt(0.4)
    r += np.sqrt(0.6) * rng.standard_normal(t)[:, None]
    r *= scale
    p0 = np.r_[30_000.0, 2_000.0, np.exp(rng.uniform(np.log(0.05), np.log(500.0), n))][:n]
    close = np.cumsum(r, axis=0)
    del r
    # pull the log price back towards its start over about a year, so that a million bars
    # stay in a sane price range (the per-bar returns change by ~1% of their size)
    close -= _moving_mean(close, max(1_000, _YEAR_NS // bar_ns))
    np.exp(close, out=close)
    close *= p0
    open_ = np.empty_like(close)
    open_[0] = p0
    open_[1:] = close[:-1]
    top = np.maximum(open_, close)
    bottom = np.minimum(open_, close)
    k = 0.5 * scale
    # high = top * exp(|z| * k); low = bottom * exp(-|z| * k)
    high = np.abs(rng.standard_normal((t, n)))
    high *= k
    np.exp(high, out=high)
    np.multiply(top, high, out=high)
    low = np.abs(rng.standard_normal((t, n)))
    np.negative(low, out=low)
    low *= k
    np.exp(low, out=low)
    np.multiply(bottom, low, out=low)
    # volume = exp(0.5 z) * (1e6 / p0)
    volume = rng.standard_normal((t, n))
    volume *= 0.5
    np.exp(volume, out=volume)
    volume *= 1e6 / p0
    if with_mark:
        # basis = 3e-4 * _smooth(z, 24); mc = close * (1 + basis)
        mc = _smooth_in_place(rng.standard_normal((t, n)), 24)
        mc *= 3e-4
        mc += 1.0
        mo = np.empty_like(mc)
        mo[0] = open_[0] * mc[0]
        np.multiply(close, mc, out=mc)
        mo[1:] = mc[:-1]
        # mh = max(mo, mc) * (1 + 0.7 * (high / top - 1)), in top's memory
        np.divide(high, top, out=top)
        top -= 1.0
        top *= 0.7
        top += 1.0
        mh = np.maximum(mo, mc)
        mh *= top
        del top
        # ml = min(mo, mc) * (1 - 0.7 * (1 - low / bottom)), in bottom's memory
        np.divide(low, bottom, out=bottom)
        np.subtract(1.0, bottom, out=bottom)
        bottom *= 0.7
        np.subtract(1.0, bottom, out=bottom)
        ml = np.minimum(mo, mc)
        ml *= bottom
        del bottom
    else:
        del top, bottom
        mo, mh, ml, mc = open_, high, low, close
    rate = np.full((t, n), np.nan)
    if funding_every:
        rows = slice(0, t, int(funding_every))
        m = rate[rows].shape[0]
        premium = 5e-5 + 3e-4 * _smooth(rng.standard_normal((m, n)), 6)
        rate[rows] = np.clip(premium + np.clip(1e-4 - premium, -5e-4, 5e-4), -3e-3, 3e-3)
    width = max(2, len(str(n - 1)))
    start_ns = int(pd.Timestamp(start, tz="UTC").as_unit("ns").value)
    return Market(
        symbols=tuple(f"S{i:0{width}d}_USDT" for i in range(n)),
        index=start_ns + np.arange(t, dtype=np.int64) * bar_ns,
        open=open_, high=high, low=low, close=close, volume=volume,
        mark_open=mo, mark_high=mh, mark_low=ml, mark_close=mc,
        funding_rate=rate, bar_ns=bar_ns, has_mark=(bool(with_mark),) * n, sources={},
    )


def write_market(market: Market, out_dir: str | Path) -> list[Path]:
    """Write a Market in the parquet layout ``load_market`` reads (zstd); returns the paths.

    Per symbol: ``SYM-tf.parquet`` with the bars it has (rows where close is not
    NaN), ``SYM_mark-tf.parquet`` if it has a mark series, ``SYM_funding.parquet``
    with its non-NaN funding rates, if any.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tf = timeframe_label(market.bar_ns)
    paths = []
    for i, sym in enumerate(market.symbols):
        have = ~np.isnan(market.close[:, i])
        dense = bool(have.all())

        def col(a: np.ndarray, rows: np.ndarray | None, i: int = i) -> np.ndarray:
            return np.ascontiguousarray(a[:, i]) if rows is None else a[rows, i]

        rows = None if dense else have
        ts = market.index if dense else market.index[have]
        data = {"timestamp": ts, **{f: col(getattr(market, f), rows)
                                    for f in ("open", "high", "low", "close", "volume")}}
        paths.append(out / f"{sym}-{tf}.parquet")
        _write(_table(data), paths[-1])
        if market.has_mark and market.has_mark[i]:
            data = {"timestamp": ts, **{f: col(getattr(market, f"mark_{f}"), rows)
                                        for f in ("open", "high", "low", "close")}}
            paths.append(out / f"{sym}_mark-{tf}.parquet")
            _write(_table(data), paths[-1])
        fr = market.funding_rate[:, i]
        at = np.flatnonzero(~np.isnan(fr))
        if at.size:
            paths.append(out / f"{sym}_funding.parquet")
            _write(_table({"timestamp": market.index[at], "funding_rate": fr[at]}), paths[-1])
    return paths
