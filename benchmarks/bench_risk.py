"""Speed of the probability of liquidation by simulation (issue 13's goal: at least 10,000
one-year hourly two-symbol paths in under 10 s on two cores).

Scenario: the embedded data (BTC_USDT, ETH_USDT, 2023-2024 hourly, or ``--data DIR``
with ``--symbols``) resampled by the stationary block bootstrap (Politis-White block length);
``--paths`` paths of 365 days (8,760 hourly bars), Binance USD-M rules, isolated 10x:

- ``book``: a fixed hedged book (long BTC, short ETH, 1x equity each), ordered at the first
  bar and held;
- ``hedged_pair``: the hedged pair strategy (a compiled callback, rebalanced every 24 bars),
  built on each path's market;
- ``advise grid``: the fixed book under both modes x 6 leverages (12 configurations) on
  ``--grid-paths`` paths, as ``backtester advise`` runs it.

    python benchmarks/bench_risk.py [--paths 10000] [--grid-paths 1000] [--rounds 3]
                                    [--data DIR --symbols A,B]

Prints, compile excluded (one small warm-up first), the median seconds of ``--rounds``
rounds, paths per second and bar-symbols per second, with the load average.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from backtester import load_market
from backtester.risk import Bootstrap, liquidation_risk
from strategies.hedged_pair import STRATEGY


def timed(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--paths", type=int, default=10_000)
    ap.add_argument("--grid-paths", type=int, default=1_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data")
    ap.add_argument("--symbols", default="BTC_USDT,ETH_USDT")
    args = ap.parse_args()
    symbols = args.symbols.split(",")
    market = load_market(args.data, symbols=symbols) if args.data else load_market()
    t = time.perf_counter()
    boot = Bootstrap(market)
    setup = time.perf_counter() - t
    book = {symbols[0]: 1.0, symbols[1]: -1.0}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"history: {market.n_bars:,} bars x {market.n_symbols} symbols; bootstrap set-up "
          f"{setup:.2f} s, mean block {boot.block:.1f} bars")
    for warm in (book, STRATEGY):  # compile / load the kernels
        liquidation_risk(market, warm, leverages=[10], margin_modes=["isolated"], n_paths=4,
                         days=10, bootstrap=boot, target_kind="equity")
    bars = 8_760
    cases = [
        ("book", book, args.paths, ["isolated"], [10]),
        ("hedged_pair", STRATEGY, args.paths, ["isolated"], [10]),
        ("advise grid", book, args.grid_paths, ["cross", "isolated"], [1, 2, 3, 5, 10, 20]),
    ]
    for label, strategy, n, modes, leverages in cases:
        def go(strategy=strategy, n=n, modes=modes, leverages=leverages):
            return liquidation_risk(market, strategy, leverages=leverages, margin_modes=modes,
                                    n_paths=n, days=365, bootstrap=boot,
                                    target_kind="equity")
        seconds = timed(go, args.rounds)
        runs = n * len(modes) * len(leverages)
        print(f"{label:<12} {n:>6,} paths x {len(modes) * len(leverages):>2} configurations: "
              f"{seconds:6.2f} s  ({runs / seconds:,.0f} path-runs/s, "
              f"{runs * bars * market.n_symbols / seconds / 1e6:,.0f} M bar-symbols/s)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
