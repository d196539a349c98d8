"""Engine throughput, end-to-end throughput, peak memory and parquet load time.

Scenario (issue 2): a synthetic market of 1,000,000 hourly bars x 10 symbols,
hedged targets (long the even symbols, short the odd ones, 10% of equity each)
rebalanced every 24 bars, cross margin at 5x, Binance BTCUSDT brackets (2024)
for every symbol, funding every 8 bars, the default intrabar path.

    python benchmarks/bench_engine.py [--bars 1000000] [--symbols 10]

Prints:
- kernel throughput: bar-symbols per second of the compiled loop alone
  (``engine.driver.simulate_arrays``), compile excluded (a warm-up run first);
- end to end: ``run(market, targets)`` from a Market in memory to the Result's
  equity Series, with positions and liquidation prices recorded (the default);
- peak memory (RSS high-water mark) of the process;
- the time to load 10 symbols x N rows from parquet with ``load_market`` next to
  pyarrow's raw read of the same files.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from backtester import run
from backtester.data import load_market, make_market, write_market
from backtester.engine import enums
from backtester.engine.driver import pack_symbol_params, pack_tiers, simulate_arrays
from backtester.venues import Venue, load_venue


def binance_tiers_for_all(symbols) -> Venue:
    """Binance's BTCUSDT spec (latest brackets, fees) as the default for any symbol."""
    # undated: the synthetic market starts before the table's date
    spec = dataclasses.replace(load_venue("binance_usdm").spec("BTCUSDT"), valid_from=None)
    return Venue(name="binance_usdm (BTCUSDT tiers for all)", description="benchmark",
                 symbols={}, default=spec)


def hedged_targets(n_bars: int, n_symbols: int, every: int = 24) -> np.ndarray:
    targets = np.full((n_bars, n_symbols), np.nan)
    targets[::every] = np.where(np.arange(n_symbols) % 2 == 0, 0.1, -0.1)
    return targets


def kernel_inputs(market, venue: Venue, leverage: float = 5.0) -> dict:
    """The kernel's inputs for the scenario (new mode/parameter arrays on every call, since
    a strategy callback may change them), targets left out."""
    n = market.n_symbols
    arrays = venue.arrays(market.symbols)
    return dict(
        open_=market.open, close=market.close, mark_open=market.mark_open,
        mark_high=market.mark_high, mark_low=market.mark_low, mark_close=market.mark_close,
        funding_rate=market.funding_rate, target_kind=enums.TARGET_EQUITY,
        mode=np.zeros(n, dtype=np.int64),
        sym=pack_symbol_params(np.full(n, leverage), arrays.taker_fee, arrays.liquidation_fee),
        tiers=pack_tiers(arrays.floors, arrays.caps, arrays.mmrs, arrays.cums,
                         arrays.max_leverage),
        n_tiers=arrays.n_tiers, initial_balance=1_000_000.0,
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_bars, n = args.bars, args.symbols

    t0 = time.perf_counter()
    market = make_market(n_bars, n, seed=7, funding_every=8)
    print(f"synthetic market {n_bars:,} bars x {n} symbols built in "
          f"{time.perf_counter() - t0:.1f} s")
    targets = hedged_targets(n_bars, n)
    venue = binance_tiers_for_all(market.symbols)
    kernel_inputs_ = dict(kernel_inputs(market, venue), targets=targets)

    t0 = time.perf_counter()
    small = {k: (v[:1000] if isinstance(v, np.ndarray) and v.ndim == 2 and v.shape[0] == n_bars
                 else v) for k, v in kernel_inputs_.items()}
    simulate_arrays(**small)
    print(f"warm-up (compile or cache load): {time.perf_counter() - t0:.2f} s")

    out = None

    def kernel():
        nonlocal out
        out = simulate_arrays(**kernel_inputs_)

    dt = best_of(kernel, args.repeat)
    print(f"kernel:     {dt:.3f} s  {n_bars * n / dt / 1e6:7.1f} M bar-symbols/s  "
          f"({len(out.fills):,} fills, {len(out.funding):,} funding payments, "
          f"{len(out.liquidations)} liquidations, final equity {out.account[0, -1]:,.0f})")

    def end_to_end():
        result = run(market, targets, target_kind="equity", venue=venue, margin_mode="cross",
                     leverage=5.0, initial_balance=1_000_000.0)
        return result.equity

    dt = best_of(end_to_end, args.repeat)
    print(f"end to end: {dt:.3f} s  {n_bars * n / dt / 1e6:7.1f} M bar-symbols/s  "
          f"(run() -> Result.equity, positions and liquidation prices recorded)")
    print(f"peak memory (RSS high-water mark): {peak_rss_mb():,.0f} MB "
          f"(market arrays alone: {11 * n_bars * n * 8 / 2**20:,.0f} MB)")

    with tempfile.TemporaryDirectory() as tmp:
        write_market(market, tmp)
        files = sorted(Path(tmp).glob("*.parquet"))
        size = sum(f.stat().st_size for f in files) / 2**20

        def raw():
            for f in files:
                pq.read_table(f).combine_chunks()

        def load():
            load_market(tmp, timeframe="1h")

        raw()  # warm the page cache for both
        dt_raw = best_of(raw, args.repeat)
        dt_load = best_of(load, args.repeat)
        print(f"load:       {dt_load:.3f} s  load_market of {len(files)} files ({size:,.0f} MB)")
        print(f"raw read:   {dt_raw:.3f} s  pyarrow.parquet.read_table of the same files")
        print(f"ratio:      {dt_load / dt_raw:.2f}x raw pyarrow")


if __name__ == "__main__":
    main()
