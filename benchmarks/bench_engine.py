"""Engine throughput, end-to-end throughput, peak memory and parquet load time.

Scenario (issue 2): a synthetic market of 1,000,000 hourly bars x 10 symbols,
hedged targets (long the even symbols, short the odd ones, 10% of equity each)
rebalanced every 24 bars, cross margin at 5x, Binance BTCUSDT brackets (2024)
for every symbol, funding every 8 bars, the default intrabar path.

    python benchmarks/bench_engine.py [--bars 1000000] [--symbols 10]

Prints:
- the ceiling: ``ceiling_loop``, the least work a cross-margin bar must do, on the same
  arrays (read the OHLC and the targets, fill at the open, mark to market at the close,
  check the worst case of the bar against a maintenance margin), recording nothing but
  the equity: what the machine allows, against which the kernel is judged;
- kernel throughput: bar-symbols per second of the compiled loop alone
  (``engine.driver.execute`` of inputs ``prepare.prepare_run`` built beforehand: the
  account opened, the record buffers allocated, every bar run), compile excluded (a
  warm-up run first); and its share of the ceiling's (both by thread CPU): machines differ
  by 2x in each figure, less in their ratio;
- end to end: ``run(market, targets)`` from a Market in memory to the Result's
  equity Series (the default run: positions and liquidation prices not recorded;
  ``Result.positions`` rebuilds them from the fills when asked);
- peak memory (RSS high-water mark) of the process, also as a multiple of the bytes of the
  input arrays (the market's (T, N) arrays, and those plus the targets), and above the
  process's resident memory before the market was built (the interpreter, numpy, pandas,
  numba and pyarrow themselves);
- ``Market.from_arrays`` of the market's open/high/low/close: its time and the memory it
  allocates;
- the time to load 10 symbols x N rows from parquet with ``load_market`` next to
  pyarrow's raw read of the same files.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from numba import njit

from backtester import RunConfig, run
from backtester.data import Market, load_market, make_market, write_market
from backtester.engine.driver import KernelInputs, execute
from backtester.prepare import prepare_run
from backtester.venues import Venue, load_venue


def binance_tiers_for_all(symbols) -> Venue:
    """Binance's BTCUSDT spec (latest brackets, fees) as the default for any symbol, without
    BTCUSDT's order filters (its 0.001 BTC step and 100 USDT minimum are not the synthetic
    symbols', and the scenario has stayed the same since issue 2)."""
    # undated: the synthetic market starts before the table's date
    spec = dataclasses.replace(load_venue("binance_usdm").spec("BTCUSDT"), valid_from=None,
                               tick_size=0.0, qty_step=0.0, min_qty=0.0, min_notional=0.0)
    return Venue(name="binance_usdm (BTCUSDT tiers for all)", description="benchmark",
                 symbols={}, default=spec)


def hedged_targets(n_bars: int, n_symbols: int, every: int = 24) -> np.ndarray:
    targets = np.full((n_bars, n_symbols), np.nan)
    targets[::every] = np.where(np.arange(n_symbols) % 2 == 0, 0.1, -0.1)
    return targets


def kernel_inputs(market, venue: Venue, orders, leverage: float = 5.0,
                  record_positions: bool = False) -> KernelInputs:
    """The kernel's inputs for the scenario (``orders``: targets or a Callback), through the
    one path that ``run()`` takes: equity-fraction targets, cross margin, 1,000,000 USDT."""
    config = RunConfig(venue=venue, margin_mode="cross", leverage=leverage,
                       target_kind="equity", initial_balance=1_000_000.0,
                       record_positions=record_positions)
    return prepare_run(market, orders, config).inputs


@njit(cache=True, error_model='numpy')
def ceiling_loop(open_, high, low, close, targets, balance, fee, mmr):
    """The least a cross-margin bar loop must do: targets (fractions of equity) fill at the
    open with a taker fee, every position is marked at the close, and the bar's worst case
    (longs at the low, shorts at the high) is checked against a one-rate maintenance
    margin. Returns the equity per bar and the bars whose worst case was not covered."""
    n_bars, n = close.shape
    qty = np.zeros(n)
    equity = np.empty(n_bars)
    cash = balance
    value = balance
    breaches = 0
    for t in range(n_bars):
        if t > 0 and targets[t - 1, 0] == targets[t - 1, 0]:
            for i in range(n):
                price = open_[t, i]
                delta = targets[t - 1, i] * value / price - qty[i]
                cash -= delta * price + abs(delta) * price * fee
                qty[i] += delta
        worst = cash
        value = cash
        for i in range(n):
            q = qty[i]
            value += q * close[t, i]
            extreme = low[t, i] if q > 0.0 else high[t, i]
            worst += q * extreme - abs(q) * high[t, i] * mmr
        equity[t] = value
        if worst <= 0.0:
            breaches += 1
    return equity, breaches


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """The process's resident memory now (Linux; the peak where /proc is not there)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return peak_rss_mb()


def input_bytes(market) -> int:
    """Bytes of the market's distinct (T, N) arrays (the mark arrays when they are the price
    arrays, or a placeholder that holds no memory, count nothing)."""
    seen, total = set(), 0
    for name in ("open", "high", "low", "close", "volume", "mark_open", "mark_high",
                 "mark_low", "mark_close", "funding_rate"):
        a = getattr(market, name)
        base = a if a.base is None else a.base
        if id(base) not in seen and 0 not in a.strides:
            seen.add(id(base))
            total += a.nbytes
    return total


def from_arrays_figures(market, repeat: int) -> None:
    """``Market.from_arrays`` of the market's open/high/low/close, without mark, volume or
    funding: its time, and the memory it allocates (numpy's allocations, traced) at its peak
    and kept in the Market."""
    arrays = (market.open, market.high, market.low, market.close)
    symbols = market.symbols

    def build():
        return Market.from_arrays(symbols, *arrays)

    dt = best_of(build, repeat)
    tracemalloc.start()
    built = build()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del built
    print(f"from_arrays: {dt * 1e3:.1f} ms for 4 arrays of {arrays[0].nbytes / 2**20:,.0f} MB "
          f"(no mark, volume or funding given); {peak / 2**20:,.1f} MB allocated at its "
          f"peak, {kept / 2**20:,.1f} MB kept")


def best_of(fn, repeat: int, clock=time.perf_counter) -> float:
    """The least time of ``repeat`` calls of ``fn`` by ``clock`` (the wall clock, or
    ``time.thread_time``: the calling thread's CPU time, which on a machine shared with
    other work moves far less than the wall clock; a run is one thread)."""
    times = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_bars, n = args.bars, args.symbols

    before = rss_mb()
    t0 = time.perf_counter()
    market = make_market(n_bars, n, seed=7, funding_every=8)
    print(f"synthetic market {n_bars:,} bars x {n} symbols built in "
          f"{time.perf_counter() - t0:.1f} s")
    targets = hedged_targets(n_bars, n)
    venue = binance_tiers_for_all(market.symbols)
    inputs = kernel_inputs(market, venue, targets)

    t0 = time.perf_counter()
    execute(kernel_inputs(market.slice(0, 1000), venue, targets[:1000]))
    print(f"warm-up (compile or cache load): {time.perf_counter() - t0:.2f} s")

    out = None

    def kernel():
        nonlocal out
        out = None  # (the last repeat's output is not kept alive beside this one's)
        out = execute(inputs)

    prices = (market.open, market.high, market.low, market.close)
    ceiling_loop(*(a[:1000] for a in prices), targets[:1000], 1e6, 5e-4, 0.004)  # compile

    def ceiling():
        return ceiling_loop(*prices, targets, 1_000_000.0, 5e-4, 0.004)

    dt = best_of(ceiling, args.repeat)
    cpu = ceiling_cpu = best_of(ceiling, args.repeat, time.thread_time)
    print(f"ceiling:    {dt:.3f} s  {n_bars * n / dt / 1e6:7.1f} M bar-symbols/s  "
          f"(thread CPU {cpu:.3f} s: {n_bars * n / cpu / 1e6:.1f} M; the least work a bar "
          "must do, nothing recorded)")
    dt = best_of(kernel, args.repeat)
    cpu = best_of(kernel, args.repeat, time.thread_time)
    print(f"kernel:     {dt:.3f} s  {n_bars * n / dt / 1e6:7.1f} M bar-symbols/s  "
          f"(thread CPU {cpu:.3f} s: {n_bars * n / cpu / 1e6:.1f} M; "
          f"{len(out.fills):,} fills, {len(out.funding):,} funding payments, "
          f"{len(out.liquidations)} liquidations, final equity {out.account[0, -1]:,.0f})")
    # (machines differ by 2x in both figures; their ratio moves less: a figure to compare
    # across machines, where issue 15's goal 1 asks for about a third)
    print(f"kernel / ceiling: {ceiling_cpu / cpu:.1%} of the ceiling's bar-symbols/s "
          "(thread CPU)")
    out = inputs = None  # (not kept alive during the end-to-end runs)

    def end_to_end():
        result = run(market, targets, target_kind="equity", venue=venue, margin_mode="cross",
                     leverage=5.0, initial_balance=1_000_000.0)
        return result.equity

    dt = best_of(end_to_end, args.repeat)
    cpu = best_of(end_to_end, args.repeat, time.thread_time)
    print(f"end to end: {dt:.3f} s  {n_bars * n / dt / 1e6:7.1f} M bar-symbols/s  "
          f"(thread CPU {cpu:.3f} s; run() -> Result.equity)")
    peak, given = peak_rss_mb(), input_bytes(market) / 2**20
    with_targets = given + targets.nbytes / 2**20
    print(f"peak memory (RSS high-water mark): {peak:,.0f} MB "
          f"(market arrays alone: {given:,.0f} MB; with the targets {with_targets:,.0f} MB)")
    print(f"peak / input arrays: {peak / given:.2f}x the market's arrays, "
          f"{peak / with_targets:.2f}x with the targets; above the {before:,.0f} MB resident "
          f"before the market was built: {(peak - before) / given:.2f}x, "
          f"{(peak - before) / with_targets:.2f}x")
    from_arrays_figures(market, args.repeat)  # (after the peak: its copies would raise it)

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
