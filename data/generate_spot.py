"""Write the embedded spot series ``data/spot/BTC_USDT-1h.parquet``: run this file.

The funding-carry example needs a spot leg next to the perpetual. The spot bars are
derived from the embedded perpetual's bars (``BTC_USDT-1h.parquet`` in this folder),
so run this again whenever ``generate.py`` rewrites them:

- close: perpetual close / (1 + premium), the premium an AR(1) process (0.95 per
  hour) around +2 bp with a 3 bp standard deviation: the perpetual trades a hair
  above spot, as it does when funding is positive;
- open: the previous spot close with the perpetual's own open gap;
- high / low: the spot body widened by the perpetual's relative wicks;
- volume: 40% of the perpetual's, with log-normal noise.

Prices are rounded to the perpetual's tick; all randomness comes from
``numpy.random.default_rng((11, 1))``, so the output is deterministic. The files sit
in a subfolder so that ``load_market()`` (which reads this folder, not its
subfolders) still loads the two perpetuals only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
SPOT = {"BTC_USDT": 0.1}  # symbol: price tick


def spot_bars(perp: dict[str, np.ndarray], tick: float, rng: np.random.Generator) -> dict:
    """Spot OHLCV bars from a perpetual's columns (see the module docstring)."""
    close = perp["close"]
    n = close.size
    noise = rng.standard_normal(n) * 3e-4 * np.sqrt(1 - 0.95**2)
    premium = np.empty(n)
    premium[0] = 0.0
    for t in range(1, n):
        premium[t] = 0.95 * premium[t - 1] + noise[t]
    premium += 2e-4
    c = close / (1 + premium)
    prev = np.r_[perp["open"][0] / (1 + premium[0]), c[:-1]]
    gap = perp["open"] / np.r_[perp["open"][0], close[:-1]]
    o = prev * gap
    top, bottom = np.maximum(perp["open"], close), np.minimum(perp["open"], close)
    h = np.maximum(o, c) * perp["high"] / top
    lo = np.minimum(o, c) * perp["low"] / bottom
    o, h, lo, c = (np.round(np.round(x / tick) * tick, 10) for x in (o, h, lo, c))
    h = np.maximum(h, np.maximum(o, c))
    lo = np.minimum(lo, np.minimum(o, c))
    volume = np.round(0.4 * perp["volume"] * np.exp(0.3 * rng.standard_normal(n)), 3)
    return {"open": o, "high": h, "low": lo, "close": c, "volume": volume}


def generate_spot(out_dir: Path = HERE, seed: tuple[int, int] = (11, 1)) -> list[Path]:
    """Write ``out_dir/spot/SYM-1h.parquet`` for each symbol of ``SPOT``; returns the paths."""
    rng = np.random.default_rng(seed)
    (out_dir / "spot").mkdir(exist_ok=True)
    paths = []
    for symbol, tick in SPOT.items():
        table = pq.read_table(out_dir / f"{symbol}-1h.parquet")
        perp = {name: table[name].to_numpy() for name in ("open", "high", "low", "close",
                                                          "volume")}
        bars = spot_bars(perp, tick, rng)
        path = out_dir / "spot" / f"{symbol}-1h.parquet"
        floats = list(bars)
        pq.write_table(pa.table({"timestamp": table["timestamp"], **bars}), path,
                       compression="zstd", compression_level=19, use_dictionary=False,
                       use_byte_stream_split=floats)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in generate_spot():
        print(f"wrote {p}")
