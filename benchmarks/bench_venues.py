"""The bar loop's speed under each venue's margin model, cross and isolated.

Scenario: a synthetic market of 200,000 hourly bars x 6 symbols, funding every 8 bars,
hedged targets (long the even symbols, short the odd ones, 15-25% of equity each)
rebalanced every 12 bars, 5x, each symbol on the venue's BTCUSDT rules (its tiers, fees,
margin model and rules in force at the data's dates). Per venue and margin mode, and for
cross with each bar's positions and liquidation prices recorded: the compiled run alone
(``engine.driver.execute`` of inputs ``prepare.prepare_run`` built beforehand), the least
thread CPU time of ``--repeat`` runs after a warm-up, with its fills, liquidations and
final equity (which a change of speed must leave as they were).

    python benchmarks/bench_venues.py [--bars 200000] [--symbols 6] [--repeat 5]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from bench_engine import best_of

from backtester.config import RunConfig
from backtester.data import make_market
from backtester.engine.driver import execute
from backtester.prepare import prepare_run

VENUES = ("binance_usdm", "bybit_linear", "okx_swap")
CASES = (("cross", False), ("isolated", False), ("cross", True))


def hedged_targets(n_bars: int, n_symbols: int, every: int = 12) -> np.ndarray:
    targets = np.full((n_bars, n_symbols), np.nan)
    sign = np.where(np.arange(n_symbols) % 2 == 0, 1.0, -1.0)
    for t in range(0, n_bars, every):
        targets[t] = sign * (0.15 + 0.05 * ((t // every) % 3))
    return targets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=200_000)
    parser.add_argument("--symbols", type=int, default=6)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # (venue notes about the synthetic market's dates)
    market = make_market(args.bars, args.symbols, seed=3, funding_every=8)
    targets = hedged_targets(args.bars, args.symbols)
    stand_in = {symbol: "BTC_USDT" for symbol in market.symbols}
    print(f"{args.bars:,} bars x {args.symbols} symbols; thread CPU, best of {args.repeat}")
    for venue in VENUES:
        for mode, recorded in CASES:
            config = RunConfig(venue=venue, margin_mode=mode, leverage=5, target_kind="equity",
                               record_positions=recorded, stand_in=stand_in)
            inputs = prepare_run(market, targets, config).inputs
            out = execute(inputs)  # (compiles, or loads numba's cache)
            best = best_of(lambda inputs=inputs: execute(inputs), args.repeat,
                           clock=time.thread_time)
            label = f"{venue} {mode}" + (", recorded" if recorded else "")
            print(f"{label:<32} {best * 1e3:7.1f} ms  fills {len(out.fills):>7,}  liquidations "
                  f"{len(out.liquidations):>5,}  final equity {out.account[0][-1]:,.6g}")


if __name__ == "__main__":
    main()
