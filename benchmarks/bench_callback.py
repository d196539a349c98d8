"""Strategy callback vs the same logic as precomputed targets.

Scenario (as ``bench_engine.py``): a synthetic market of 1,000,000 hourly bars x 10
symbols, long the even symbols and short the odd ones at 10% of equity each,
rebalanced every 24 bars, cross margin at 5x, Binance BTCUSDT brackets for every
symbol, funding every 8 bars.

    python benchmarks/bench_callback.py [--bars 1000000] [--symbols 10]

Prints, compile excluded (a warm-up run first), best of ``--repeat``:

- targets: ``engine.driver.execute`` of the run's inputs with the (T, N) targets array;
- callback: the same kernel with no targets and a callback writing the same orders
  every 24th bar (a call on every bar, orders on 1 bar in 24);
- callback + reads: a callback that also reads every position, the equity and the
  margin ratio on every bar (what a drift or margin rule costs);
- whether the targets and callback runs agree bar for bar, and the ratios.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from bench_engine import best_of, binance_tiers_for_all, hedged_targets, kernel_inputs
from numba import njit

from backtester.data import make_market
from backtester.engine import enums
from backtester.engine.driver import execute
from backtester.strategy import Callback, equity, margin_ratio, order_target, position


@njit
def rebalance(t, ctx, orders, params):
    """Every ``params[0]`` bars: +params[1] of equity on even symbols, -params[1] on odd."""
    if t % int(params[0]) != 0:
        return False
    for i in range(ctx.close.shape[1]):
        order_target(orders, i, params[1] if i % 2 == 0 else -params[1])
    return True


@njit
def rebalance_reading(t, ctx, orders, params):
    """``rebalance`` plus a look at every position, the equity and the margin ratio."""
    gross = 0.0
    for i in range(ctx.close.shape[1]):
        gross += abs(position(ctx, i)) * ctx.close[t, i]
    eq = equity(ctx, t)
    if eq > 0.0 and (gross / eq > 1e9 or margin_ratio(ctx, t) > 1e9):
        return False  # never true here: the reads are what is measured
    return rebalance(t, ctx, orders, params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1_000_000)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    n_bars, n = args.bars, args.symbols

    market = make_market(n_bars, n, seed=7, funding_every=8)
    venue = binance_tiers_for_all(market.symbols)
    targets = hedged_targets(n_bars, n, every=24)
    params = [24.0, 0.1]

    callbacks = {"callback": Callback(rebalance, params=params),
                 "callback + reads": Callback(rebalance_reading, params=params)}
    prepared = {"targets": kernel_inputs(market, venue, targets)}
    prepared.update({name: kernel_inputs(market, venue, cb) for name, cb in callbacks.items()})
    runs = {name: (lambda inputs=inputs: execute(inputs)) for name, inputs in prepared.items()}
    t0 = time.perf_counter()
    outputs = {name: fn() for name, fn in runs.items()}  # warm-up: compile or cache load
    print(f"{n_bars:,} bars x {n} symbols; warm-up (compile or cache load) "
          f"{time.perf_counter() - t0:.1f} s")
    seconds = {name: best_of(fn, args.repeat) for name, fn in runs.items()}
    for name, dt in seconds.items():
        out = outputs[name]
        print(f"{name:<17} {dt:7.3f} s  {n_bars * n / dt / 1e6:6.1f} M bar-symbols/s  "
              f"{dt / n_bars * 1e9:6.0f} ns/bar  ({len(out.fills):,} fills, "
              f"final equity {out.account[enums.Out.EQUITY, -1]:,.0f})")
    for name in callbacks:
        same = np.array_equal(outputs[name].account, outputs["targets"].account)
        print(f"{name} / targets: {seconds[name] / seconds['targets']:.2f}x time; per-bar "
              f"results identical: {same}")


if __name__ == "__main__":
    main()
