"""Side by side with vectorbt (issue 15): the same portfolio simulated by both, timed interleaved.

The workload: N symbols x T hourly bars (synthetic OHLC, ``make_market``), long the even
symbols and short the odd ones at 10% of equity each, rebalanced every 24 bars, one shared
cash account, fills at the close, no fees, no funding, nothing liquidated. Both compute the
same equity curve:

- ours: ``Market.from_arrays`` + ``run(market, targets, target_kind="equity",
  fill_at="close", venue="flat", ...)`` with zero fees, cross margin at 100x (nothing is
  refused or liquidated: the book's gross exposure is 1x equity) and no order filters
  (vectorbt trades any fraction), then ``Result.equity``;
- vectorbt: ``vbt.Portfolio.from_orders(close_df, size=targets_df,
  size_type="targetpercent", direction="both", cash_sharing=True, group_by=True)``
  (price: the close), then ``.value()``.

Both size an order as target x equity / close - position, with the equity valued at the
close before the bar's orders; with no fees a fill at the close leaves the equity as it is,
so the order in which the symbols are filled does not matter. The curves differ only by
floating-point rounding: vectorbt rebuilds its value from the order records (cumulated cash
flows and positions), we carry it bar by bar.

Timed, interleaved round by round (each round runs every contender once, in turn):

- ``ours e2e``: from the raw numpy arrays: ``Market.from_arrays`` (its data checks
  included) + ``run()`` + ``Result.equity`` (a pandas Series);
- ``ours market``: ``run()`` + ``Result.equity`` from a Market already built;
- ``ours kernel``: ``engine.driver.execute`` of inputs prepared beforehand (the compiled
  loop alone, as ``run()`` runs it by default: no per-bar record of positions, for
  reference);
- ``e2e rec`` and ``market rec``: the same with ``record_positions=True``: with the (T, N)
  positions and liquidation prices recorded at every bar (vectorbt records no such thing;
  a default run rebuilds positions from its fills; the equity is the same, bit for bit,
  and checked);
- ``vbt e2e``: from the same raw arrays: the close and size DataFrames built (as a user
  would, on a DatetimeIndex) + ``Portfolio.from_orders`` + ``.value()``.

Each is timed by wall clock and by the calling thread's CPU time (both libraries run their
loops single-threaded in the calling thread; on a shared machine the CPU time moves far
less than the wall clock); the best of the rounds is reported. Both are warmed up first on
a small slice: numba compilation (or cache loading) is excluded. The thread's CPU time
includes system time: the first touch of the fresh memory each run allocates (the Market's
arrays, the record buffers), which moves with the machine's load more than the rest.

    pip install -e ".[bench]"                # vectorbt, pinned
    python benchmarks/bench_vectorbt.py      # 1,000,000 bars x 10 symbols, 5 rounds
    python benchmarks/bench_vectorbt.py --small        # 20,000 bars, 3 rounds
    python benchmarks/bench_vectorbt.py --profile      # + where ours spends its time
"""

from __future__ import annotations

import argparse
import gc
import sys
import time

import numpy as np
import pandas as pd

from backtester import Market, RunConfig, run
from backtester.data import make_market
from backtester.engine.driver import execute
from backtester.prepare import prepare_run

try:
    import vectorbt as vbt
except ImportError:  # pragma: no cover - depends on the environment
    sys.exit("vectorbt is not installed: pip install -e '.[bench]' (it pins the version "
             "compared here)")

INITIAL_BALANCE = 1_000_000.0
# a one-tier venue without fees: vectorbt's from_orders with fees=0 computes the same
OPTIONS = dict(target_kind="equity", fill_at="close", margin_mode="cross", leverage=100.0,
               initial_balance=INITIAL_BALANCE, order_filters=False, venue="flat",
               venue_overrides=dict(mmr=0.005, taker_fee=0.0, maker_fee=0.0,
                                    liquidation_fee=0.0, max_leverage=125.0))
TOLERANCE = 1e-12  # the largest relative difference of the two equity curves accepted


def hedged_targets(n_bars: int, n_symbols: int, every: int = 24) -> np.ndarray:
    """Long the even symbols, short the odd ones, 10% of equity each, every ``every`` bars
    (NaN between: hold), as ``bench_engine.hedged_targets``."""
    targets = np.full((n_bars, n_symbols), np.nan)
    targets[::every] = np.where(np.arange(n_symbols) % 2 == 0, 0.1, -0.1)
    return targets


def raw_arrays(n_bars: int, n_symbols: int) -> dict:
    """The inputs both start from: symbol names and (T, N) float64 C-contiguous arrays."""
    market = make_market(n_bars, n_symbols, seed=7, with_mark=False, funding_every=None)
    arrays = {name: np.ascontiguousarray(getattr(market, name), dtype=np.float64).copy()
              for name in ("open", "high", "low", "close")}
    return dict(symbols=list(market.symbols), targets=hedged_targets(n_bars, n_symbols),
                **arrays)


def ours_market(raw: dict) -> Market:
    return Market.from_arrays(raw["symbols"], raw["open"], raw["high"], raw["low"],
                              raw["close"], start="2024-01-01", bar="1h")


def ours_run(market: Market, targets: np.ndarray, record_positions: bool | None = None
             ) -> pd.Series:
    result = run(market, targets, **OPTIONS, record_positions=record_positions)
    return result.equity


def ours_end_to_end(raw: dict, record_positions: bool | None = None) -> pd.Series:
    return ours_run(ours_market(raw), raw["targets"], record_positions)


def vbt_portfolio(raw: dict, engine: str = "numba"):
    index = pd.date_range("2024-01-01", periods=raw["close"].shape[0], freq="h")
    close = pd.DataFrame(raw["close"], index=index, columns=raw["symbols"])
    size = pd.DataFrame(raw["targets"], index=index, columns=raw["symbols"])
    return vbt.Portfolio.from_orders(close, size=size, size_type="targetpercent",
                                     direction="both", fees=0.0, init_cash=INITIAL_BALANCE,
                                     cash_sharing=True, group_by=True, freq="1h", engine=engine)


def vbt_end_to_end(raw: dict, engine: str = "numba") -> pd.Series:
    return vbt_portfolio(raw, engine).value()


def check_runs(market: Market, raw: dict, engine: str) -> None:
    """Refuse a configuration under which the two would not compute the same thing: ours
    liquidating, refusing an order or paying funding, or the two filling different orders."""
    output = run(market, raw["targets"], **OPTIONS).output
    problems = {"liquidations": len(output.liquidations),
                "rejected orders": len(output.rejections),
                "funding payments": len(output.funding)}
    bad = {k: v for k, v in problems.items() if v}
    if bad:
        raise SystemExit(f"ours did not run the workload as vectorbt does: {bad}")
    theirs = vbt_portfolio(raw, engine).orders.count()
    if len(output.fills) != theirs:
        raise SystemExit(f"ours filled {len(output.fills):,} orders, vectorbt {theirs:,}")
    print(f"both filled {theirs:,} orders; ours liquidated nothing, refused nothing")


def relative_difference(ours: pd.Series, theirs: pd.Series) -> tuple[float, int]:
    a = ours.to_numpy(dtype=np.float64)
    b = theirs.to_numpy(dtype=np.float64)
    if a.shape != b.shape:
        raise SystemExit(f"the equity curves differ in length: {a.shape} vs {b.shape}")
    rel = np.abs(a - b) / np.maximum(np.abs(b), np.finfo(float).tiny)
    worst = int(np.argmax(rel))
    return float(rel[worst]), worst


def timed(fn):
    """Run ``fn`` once: (wall seconds, thread CPU seconds, its result)."""
    gc.collect()
    c0, w0 = time.thread_time(), time.perf_counter()
    out = fn()
    w1, c1 = time.perf_counter(), time.thread_time()
    return w1 - w0, c1 - c0, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--vbt-engine", default="numba", choices=("numba", "rust"),
                        help="vectorbt's engine (rust: needs the vectorbt-rust package, "
                        "not part of the bench extra)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile ours end to end once (cProfile) and print the "
                        "top costs")
    parser.add_argument("--small", action="store_true",
                        help="a quick run: 20,000 bars x 10 symbols, 3 rounds")
    args = parser.parse_args()
    if args.small:
        args.bars, args.symbols, args.rounds = 20_000, 10, 3
    n_bars, n = args.bars, args.symbols
    cells = n_bars * n
    print(f"vectorbt {vbt.__version__} (engine {args.vbt_engine}), numba {_version('numba')}, "
          f"numpy {np.__version__}, pandas {pd.__version__}, python "
          f"{sys.version.split()[0]}")

    t0 = time.perf_counter()
    raw = raw_arrays(n_bars, n)
    print(f"inputs: {n_bars:,} bars x {n} symbols (OHLC and targets, float64) built in "
          f"{time.perf_counter() - t0:.1f} s; {int(np.isfinite(raw['targets'][:, 0]).sum()):,}"
          " rebalances")

    # warm-up: compile (or load from the cache) both libraries' numba code on a small slice
    t0 = time.perf_counter()
    small = {k: (v[:500] if isinstance(v, np.ndarray) else v) for k, v in raw.items()}
    ours_end_to_end(small)
    warm_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    vbt_end_to_end(small, args.vbt_engine)
    warm_vbt = time.perf_counter() - t0
    print(f"warm-up on 500 bars (compile or cache load, excluded): ours {warm_ours:.1f} s, "
          f"vectorbt {warm_vbt:.1f} s")

    market = ours_market(raw)
    check_runs(market, raw, args.vbt_engine)
    inputs = prepare_run(market, raw["targets"], RunConfig().replace(**OPTIONS)).inputs
    execute(inputs)

    contenders = {
        "ours e2e": lambda: ours_end_to_end(raw),
        "ours market": lambda: ours_run(market, raw["targets"]),
        "ours kernel": lambda: execute(inputs),
        "e2e rec": lambda: ours_end_to_end(raw, record_positions=True),
        "market rec": lambda: ours_run(market, raw["targets"], record_positions=True),
        "vbt e2e": lambda: vbt_end_to_end(raw, args.vbt_engine),
    }
    wall = {name: [] for name in contenders}
    cpu = {name: [] for name in contenders}
    curves = {}
    for r in range(args.rounds):
        line = []
        for name, fn in contenders.items():
            w, c, out = timed(fn)
            wall[name].append(w)
            cpu[name].append(c)
            if name in ("ours e2e", "e2e rec", "vbt e2e"):
                curves[name] = out
            line.append(f"{name} {w:.3f}/{c:.3f}")
            del out
        print(f"round {r + 1}: " + ", ".join(line) + "  (wall/CPU s)")

    print(f"\nbest of {args.rounds} rounds, {n_bars:,} bars x {n} symbols = {cells:,} "
          "bar-symbols:")
    print(f"{'':12} {'wall s':>8} {'CPU s':>8} {'M bar-sym/s':>12} {'(CPU)':>8} "
          f"{'vbt/this wall':>14} {'(CPU)':>7}")
    vw, vc = min(wall["vbt e2e"]), min(cpu["vbt e2e"])
    for name in contenders:
        w, c = min(wall[name]), min(cpu[name])
        print(f"{name:12} {w:8.3f} {c:8.3f} {cells / w / 1e6:12.1f} {cells / c / 1e6:8.1f} "
              f"{vw / w:13.1f}x {vc / c:6.1f}x")

    same = curves["ours e2e"].to_numpy() == curves["e2e rec"].to_numpy()
    if not same.all():
        raise SystemExit("record_positions=True changed our equity curve")
    rel, at = relative_difference(curves["ours e2e"], curves["vbt e2e"])
    ours_final = curves["ours e2e"].iloc[-1]
    vbt_final = curves["vbt e2e"].iloc[-1]
    print(f"\nequity: max relative difference {rel:.2e} (bar {at:,}); final equity ours "
          f"{ours_final:,.6f}, vectorbt {vbt_final:,.6f}")
    if args.profile:
        profile(raw)
    if not rel <= TOLERANCE:
        raise SystemExit(f"the equity curves differ by {rel:.2e} relative (> {TOLERANCE:g}) "
                         f"at bar {at}: the two are not computing the same thing")


def profile(raw: dict) -> None:
    """Where ours spends its end-to-end time: cProfile of one run (after an unprofiled one, as
    in the timed rounds) on the thread's CPU clock, so that the machine's load does not count.
    The compiled kernel shows as one call (``kernel.run_to_end``); the rest is Python, numpy
    and pandas, and the first touch of the pages of every large array allocated."""
    import cProfile
    import pstats

    ours_end_to_end(raw)
    profiler = cProfile.Profile(timer=time.thread_time)
    profiler.enable()
    ours_end_to_end(raw)
    profiler.disable()
    print("\nprofile of ours end to end (one run, thread CPU seconds; cProfile's overhead "
          "included):")
    stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
    stats.sort_stats("tottime").print_stats(15)
    stats.sort_stats("cumulative").print_stats(25)


def _version(module: str) -> str:
    from importlib.metadata import version
    return version(module)


if __name__ == "__main__":
    main()
