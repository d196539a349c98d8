"""Fixed cost of a run: what ``run()`` costs in Python when the market is tiny (issue 15).

Scenario: the embedded data's first 10 hourly bars x 2 symbols (BTC_USDT, ETH_USDT), long
BTC and short ETH at 50% of equity each, set at the first bar; one venue and margin mode
per line (Binance USD-M cross and isolated, Bybit, OKX, Kraken spot margin), leverage 5,
the default options (positions and liquidation prices recorded). Warm: a first run of each
configuration compiles (or loads numba's cache) and is not timed; then ``--repeat`` runs of
each stage in ``--blocks`` blocks, the stages taken in turn block by block, and of each
stage the least of its blocks' medians, in microseconds. (On a shared virtual machine the
same code runs up to 1.8x slower for seconds at a time, whatever the load average says: a
median over one stretch of runs measures that stretch; the best block, the code.)

    python benchmarks/bench_fixed_cost.py [--repeat 2000] [--blocks 10] [--profile]

Prints, per configuration, the time of:
- ``run()`` end to end: options merged, the run prepared, the kernel, the Result built
  (the fixed cost of a run); ``+summary``: the same and ``Result.summary()`` (pandas);
- the stages apart: ``prepare_run`` (venue specs resolved, the kernel's inputs built),
  the kernel (``execute_prepared``: the compiled loop and its record buffers), building the
  ``Result`` (``run_prepared`` less the kernel) and its ``summary()``;
- with ``--profile``: cProfile's top functions (by own time) over the runs of the first
  configuration.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import time
import warnings

import numpy as np

from backtester import RunConfig, load_market, run
from backtester.backtest import execute_prepared, run_prepared
from backtester.prepare import prepare_run

CONFIGS = [
    ("binance_usdm", "cross"),
    ("binance_usdm", "isolated"),
    ("bybit_linear", "cross"),
    ("okx_swap", "isolated"),
    ("kraken_spot", "cross"),
]


def options(venue: str, mode: str) -> dict:
    """The run options of one line (Bybit and OKX list no ETH table: BTC's stands in)."""
    return dict(venue=venue, margin_mode=mode, leverage=5, target_kind="equity",
                stand_in={"*": "BTCUSDT"} if venue in ("bybit_linear", "okx_swap") else {})


def median_us(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def measure(market, targets, options: dict, repeat: int, blocks: int) -> dict:
    """Microseconds of run() and of its stages, for one configuration: the least of
    ``blocks`` medians of ``repeat / blocks`` runs each, the stages in turn."""
    config = RunConfig().replace(**options)
    run(market, targets, **options).summary()  # compile, or load numba's cache
    prepared = prepare_run(market, targets, config)
    stages = {
        "run()": lambda: run(market, targets, **options),
        "+summary": lambda: run(market, targets, **options).summary(),
        "prepare": lambda: prepare_run(market, targets, config),
        "kernel": lambda: execute_prepared(prepared),
        "built": lambda: run_prepared(prepared),
        "summarised": lambda: run_prepared(prepared).summary(),
    }
    best = dict.fromkeys(stages, float("inf"))
    for _ in range(blocks):
        for name, fn in stages.items():
            best[name] = min(best[name], median_us(fn, max(1, repeat // blocks)))
    return {
        "run()": best["run()"],
        "+summary": best["+summary"],
        "prepare": best["prepare"],
        "kernel": best["kernel"],
        "Result": best["built"] - best["kernel"],
        "summary": best["summarised"] - best["built"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--bars", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # notes on tier tables older than the data's dates

    market = load_market().slice(0, args.bars)
    targets = np.full((market.n_bars, market.n_symbols), np.nan)
    targets[0] = [0.5, -0.5]
    print(f"market: {', '.join(market.symbols)}, {market.n_bars} hourly bars; "
          f"{args.repeat} warm runs of each stage in {args.blocks} blocks, least "
          "block median, microseconds")
    columns = ("run()", "+summary", "prepare", "kernel", "Result", "summary")
    print(f"{'venue':<14} {'mode':<9} " + " ".join(f"{c:>8}" for c in columns))
    for venue, mode in CONFIGS:
        times = measure(market, targets, options(venue, mode), args.repeat, args.blocks)
        print(f"{venue:<14} {mode:<9} " + " ".join(f"{times[c]:8.0f}" for c in columns))

    if args.profile:
        venue, mode = CONFIGS[0]
        profiled = options(venue, mode)
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(args.repeat):
            run(market, targets, **profiled).summary()
        profile.disable()
        print(f"\ncProfile of {args.repeat} runs ({venue}, {mode}), by own time:")
        pstats.Stats(profile).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
