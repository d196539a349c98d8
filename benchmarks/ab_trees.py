"""Before and after: one scenario run by two checkouts of the project in turn, paired.

An engine change moves a run by a few percent, and on a shared machine two runs of the same
code a minute apart differ by more. So each tree gets a process of its own that builds the
scenario once and keeps it; the two then run it in turn (ABBA order), one run each, for
``--rounds`` rounds, and what is printed is each tree's median and least time, and the median
of the paired ratios (after / before - 1): drift in the machine's load hits both sides of a
pair alike. Each tree compiles into a numba cache of its own (a temporary folder, or
``--cache-dir``/before and /after to keep them between calls); the first call compiles.

A process keeps what it was given for its whole life (where its arrays lie in memory, which
of them got huge pages), and that alone can move one process's runs against another's: the
same tree on both sides (`engine`, one process each) measured +0.5% and +2.4%, and one change
+16.7%, then -9.8% with the two trees' places swapped. So each tree runs ``--processes``
processes (default 2, started in turn: before, after, after, before, ...), the rounds go
through the pairs in turn, and each pair's median is printed beside the whole: pairs that
disagree say that the difference is the processes', not the trees' (that change, two and
three processes a tree: +21.9 / +24.9% and +14.7 / +18.4 / +23.8%; the same tree on both
sides, two a tree: +2.1 / -0.1%).

Scenarios (the calling thread's CPU time of one run; compile excluded, and each process's
first run, which touches fresh memory):

- ``engine``: ``bench_engine.py``'s kernel (1,000,000 bars x 10, funding every 8, hedged
  targets every 24 bars, cross 5x, fills at the next open);
- ``engine-e2e``: the same end to end, as that benchmark's ``end to end``: ``run()`` from
  the Market (its data checks, targets, funding records and mark prices) to
  ``Result.equity``;
- ``held``: the same market with the targets of bar 0 only (the quiet stretch alone);
- ``vectorbt``: ``bench_vectorbt.py``'s workload (fills at the close, no funding, no fees);
- ``vectorbt-recorded``: the same kernel recording each bar's positions and liquidation
  prices (``record_positions``: what ``Result.liquidation_prices`` runs again for);
- ``vectorbt-replay``: what a default run's ``Result.liquidation_prices`` costs when first
  asked (what ``metrics()`` and the report ask): the run replayed with the record on (the
  run itself not timed);
- ``vectorbt-e2e``: the same end to end, as that benchmark's ``ours e2e``: from the raw
  arrays (``Market.from_arrays`` and its data checks) to ``Result.equity``;
- ``sweep-batch``: the compiled batch of ``bench_sweep.py``'s 10,000-run grid (its runs
  prepared beforehand), on one thread;
- ``fixed-cost``: ``bench_fixed_cost.py``'s runs, 200 ``run()`` calls of each of its venue
  and margin-mode lines on 10 bars x 2 symbols (what a run costs in Python).

    python benchmarks/ab_trees.py BEFORE_TREE AFTER_TREE [--scenario engine] [--rounds 24]
                                  [--processes 2]

A tree is a folder holding ``backtester/`` and ``benchmarks/`` (``git worktree add --detach
../before HEAD~1`` makes one of an earlier commit).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# each child builds ``execute`` (a no-argument callable: one run; it may return the seconds
# of the part of it that it times itself) and prints "ready"
SETUP = {
    "engine": """
from bench_engine import binance_tiers_for_all, hedged_targets, kernel_inputs, make_market
from backtester.engine.driver import execute as _execute
market = make_market(1_000_000, 10, seed=7, funding_every=8)
targets = hedged_targets(1_000_000, 10, every=EVERY)
venue = binance_tiers_for_all(market.symbols)
inputs = kernel_inputs(market, venue, targets)
_execute(kernel_inputs(market.slice(0, 1000), venue, targets[:1000]))
def execute():
    _execute(inputs)
""",
    "vectorbt": """
import types
sys.modules.setdefault("vectorbt", types.ModuleType("vectorbt"))  # (not used here)
import bench_vectorbt as bv
from backtester import RunConfig
from backtester.engine.driver import execute as _execute
from backtester.prepare import prepare_run
raw = bv.raw_arrays(1_000_000, 10)
market = bv.ours_market(raw)
config = RunConfig().replace(**bv.OPTIONS)
inputs = prepare_run(market, raw["targets"], config).inputs
_execute(prepare_run(market.slice(0, 1000), raw["targets"][:1000], config).inputs)
def execute():
    _execute(inputs)
""",
    "vectorbt-e2e": """
import types
import numpy as np
sys.modules.setdefault("vectorbt", types.ModuleType("vectorbt"))  # (not used here)
import bench_vectorbt as bv
raw = bv.raw_arrays(1_000_000, 10)
bv.ours_end_to_end({k: v[:1000] if isinstance(v, np.ndarray) else v for k, v in raw.items()})
def execute():
    bv.ours_end_to_end(raw)
""",
    "sweep-batch": """
import warnings
warnings.simplefilter("ignore")
import bench_sweep as bs
from backtester import load_market
from backtester.sweep import sweep
from backtester.sweep.execute import ChunkOutput, ChunkRunner
from backtester.sweep.grid import Grid, strategy_name
market = load_market(start="2023-01-01", end="2024-01-01")
sweep(market.slice(0, 200), bs.hedged_pair, bs.grid([1.0], [24]), backend="inprocess")
runs = list(Grid(bs.grid(), strategy=strategy_name(bs.hedged_pair), defaults={}))
runner = ChunkRunner(market, bs.hedged_pair)
chunks = [runner.gather(runs[lo:lo + 1024], ChunkOutput.empty(runs[lo:lo + 1024], False),
                        False) for lo in range(0, len(runs), 1024)]
def execute():
    for groups in chunks:
        for group in groups:
            runner._start_batch(group, False, False, None, 1)
""",
}
SETUP["held"] = SETUP["engine"]
SETUP["vectorbt-recorded"] = SETUP["vectorbt"].replace(
    "RunConfig().replace(**bv.OPTIONS)", "RunConfig().replace(**bv.OPTIONS, record_positions=True)")
SETUP["vectorbt-replay"] = """
import time
import types
sys.modules.setdefault("vectorbt", types.ModuleType("vectorbt"))  # (not used here)
import bench_vectorbt as bv
from backtester import run
raw = bv.raw_arrays(1_000_000, 10)
market = bv.ours_market(raw)
run(market.slice(0, 1000), raw["targets"][:1000], **bv.OPTIONS).liquidation_prices
def execute():
    result = run(market, raw["targets"], **bv.OPTIONS)
    t0 = time.thread_time()
    result.liquidation_prices
    return time.thread_time() - t0
"""
SETUP["engine-e2e"] = """
import warnings
warnings.simplefilter("ignore")
from bench_engine import binance_tiers_for_all, hedged_targets, make_market
from backtester import run
market = make_market(1_000_000, 10, seed=7, funding_every=8)
targets = hedged_targets(1_000_000, 10, every=EVERY)
venue = binance_tiers_for_all(market.symbols)
options = dict(target_kind="equity", venue=venue, margin_mode="cross", leverage=5.0,
               initial_balance=1_000_000.0)
run(market.slice(0, 1000), targets[:1000], **options)
def execute():
    run(market, targets, **options).equity
"""
SETUP["fixed-cost"] = """
import warnings
warnings.simplefilter("ignore")
import numpy as np
import bench_fixed_cost as bf
from backtester import load_market, run
market = load_market().slice(0, 10)
targets = np.full((market.n_bars, market.n_symbols), np.nan)
targets[0] = [0.5, -0.5]
lines = [bf.options(venue, mode) for venue, mode in bf.CONFIGS]
def execute():
    for options in lines:
        for _ in range(200):
            run(market, targets, **options)
"""

CHILD = """
import sys, time
sys.path[:0] = [{benchmarks!r}, {tree!r}]
EVERY = {every}
{setup}
execute()  # (a first run touches fresh memory: not timed)
print("ready", flush=True)
for line in sys.stdin:
    t0 = time.thread_time()
    took = execute()  # (a scenario may time a part of what it runs itself)
    print(time.thread_time() - t0 if took is None else took, flush=True)
"""


def start(tree: Path, scenario: str, cache: Path) -> subprocess.Popen:
    code = CHILD.format(benchmarks=str(tree / "benchmarks"), tree=str(tree),
                        every=100_000_000 if scenario == "held" else 24,
                        setup=SETUP[scenario])
    env = {**os.environ, "PYTHONPATH": str(tree), "NUMBA_CACHE_DIR": str(cache)}
    child = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tree, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if child.stdout.readline().strip() != "ready":
        raise SystemExit(f"{tree}: the scenario did not start (its error is above)")
    return child


def one_run(child: subprocess.Popen) -> float:
    child.stdin.write("go\n")
    child.stdin.flush()
    return float(child.stdout.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--scenario", choices=sorted(SETUP), default="engine")
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep each tree's numba cache in DIR/before and DIR/after")
    parser.add_argument("--processes", type=int, default=2,
                        help="processes per tree, each pair run in turn (default 2)")
    args = parser.parse_args()
    if args.processes < 1:
        parser.error("--processes: at least 1")
    if args.rounds < 2 * args.processes:
        parser.error(f"--rounds: at least 2 per pair of processes ({2 * args.processes})")
    for name in ("before", "after"):
        if not (getattr(args, name) / "backtester" / "__init__.py").is_file():
            parser.error(f"{name}={getattr(args, name)}: no backtester/ package in it")
    with tempfile.TemporaryDirectory() as tmp:
        caches = args.cache_dir or Path(tmp)
        children: dict[str, list[subprocess.Popen]] = {"before": [], "after": []}
        times: dict[str, list[float]] = {"before": [], "after": []}
        pair_of_round = []
        try:
            for j in range(args.processes):  # (started in turn: before, after, after, before)
                for name in ("before", "after") if j % 2 == 0 else ("after", "before"):
                    children[name].append(start(getattr(args, name).resolve(), args.scenario,
                                                caches / name))
            for k in range(args.rounds):
                j, lap = k % args.processes, k // args.processes
                pair_of_round.append(j)
                for name in ("before", "after") if lap % 2 == 0 else ("after", "before"):
                    times[name].append(one_run(children[name][j]))
        finally:
            for child in (*children["before"], *children["after"]):
                child.stdin.close()
                child.wait()
    before, after = times["before"], times["after"]
    paired = [b / a - 1.0 for a, b in zip(before, after, strict=True)]
    load = os.getloadavg()[0]
    print(f"{args.scenario}, {args.rounds} rounds, {args.processes} process(es) a tree "
          f"(thread CPU of one run; load average {load:.1f}):")
    for name, values in times.items():
        print(f"  {name:6s} median {statistics.median(values) * 1e3:8.1f} ms   least "
              f"{min(values) * 1e3:8.1f} ms")
    if args.processes > 1:
        for j in range(args.processes):
            mine = [p for p, of in zip(paired, pair_of_round, strict=True) if of == j]
            print(f"  pair {j + 1}: after / before - 1, median "
                  f"{statistics.median(mine) * 100:+.1f}% ({len(mine)} rounds)")
    print(f"  after / before - 1, median of the pairs: {statistics.median(paired) * 100:+.1f}% "
          f"(quartiles {statistics.quantiles(paired, n=4)[0] * 100:+.1f}% .. "
          f"{statistics.quantiles(paired, n=4)[2] * 100:+.1f}%)")


if __name__ == "__main__":
    main()
