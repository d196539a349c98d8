"""Sweep throughput: runs per second of each backend, next to a plain loop over ``run()``.

Scenario (issue 5): the embedded data, one year of hourly bars (2023, 8,760 bars) x 2
symbols (BTC_USDT, ETH_USDT); the hedged pair (long BTC, short ETH) over a grid of
20 exposures x 50 rebalance intervals x both margin modes x 5 leverages = 10,000 runs
(1,000 distinct target arrays), Binance USD-M rules, default intrabar path.

    python benchmarks/bench_sweep.py [--backends inprocess,processes,dask] [--workers 2]
                                     [--loop-runs 300] [--big 0] [--no-cold-compile]
                                     [--repeat 5] [--breakdown]

Prints, compile excluded (a warm-up sweep first; its time is printed, and the time of a
cold compile in a fresh process with an empty numba cache, as on a new machine or CI):
- in-process: summary rows only (the best of ``--repeat`` rounds, and their median), and
  with the parquet dataset written;
- the CPU seconds of each (this process's threads and its finished worker processes; not a
  Dask cluster's, whose workers are still running);
- a local process pool, its workers forked and spawned (``start_method``), and a local Dask
  cluster (cluster start-up printed apart); the pool again with workers kept by a sweep
  before (``keep_workers=True``: no start-up);
- a plain Python loop of ``run(...).summary()`` over the first runs of the grid;
- whether every backend's summary table is identical to the in-process one;
- the peak memory (RSS high-water mark); with ``--big N`` a second in-process sweep of
  N runs (e.g. 100,000) into parquet and the peak memory after it;
- with ``--breakdown``, where the CPU goes: the grid's runs prepared chunk by chunk (the
  strategy calls and ``prepare_run``, Python) and run by the compiled one-thread batch, each
  part's CPU time on one thread, and what that allows on this machine's cores; and a
  worker process's start-up (a one-run sweep on a pool of one).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pandas as pd

from backtester import load_market, run
from backtester.sweep import sweep
from strategies import hedged_pair

EXPOSURES = [round(0.25 * k, 2) for k in range(1, 21)]  # 0.25 .. 5.0
REBALANCE = list(range(4, 204, 4))  # every 4 .. 200 bars
MODES = ["cross", "isolated"]
LEVERAGES = [2, 5, 10, 20, 50]


def grid(exposures=EXPOSURES, rebalance=REBALANCE) -> dict:
    return {"exposure": exposures, "rebalance_every": rebalance, "margin_mode": MODES,
            "leverage": LEVERAGES, "target_kind": "equity"}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_seconds() -> float:
    """CPU time of this process (every thread) and of its finished children (pool workers)."""
    own, children = (resource.getrusage(who) for who in (resource.RUSAGE_SELF,
                                                         resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def kept_workers_cpu() -> float:
    """CPU seconds of the workers sweeps keep (``keep_workers=True``), alive: read from
    /proc, as they are not this process's finished children (NaN where there is no /proc)."""
    from backtester.sweep import isolation

    total = 0.0
    for worker in isolation._KEPT:
        try:
            with open(f"/proc/{worker.process.pid}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            return float("nan")
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def timed(label: str, n_runs: int, fn, note: str = "", repeat: int = 1):
    """Wall time and runs/s, and the CPU seconds it took (a steadier figure than the wall time
    on a machine other jobs share); with ``repeat`` > 1 the best of that many rounds, and the
    median's runs/s after the note."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), cpu_seconds()
        value = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(cpu_seconds() - c0)
    best = min(range(repeat), key=walls.__getitem__)
    dt, cpu = walls[best], cpus[best]
    if repeat > 1:
        note += f" (best of {repeat}; median {n_runs / statistics.median(walls):,.0f} runs/s)"
    print(f"{label:<28} {n_runs:>7,} runs  {dt:7.2f} s  {n_runs / dt:8,.0f} runs/s  "
          f"cpu {cpu:6.2f} s  {note}")
    return value


WARM_UP = """
import warnings
warnings.simplefilter("ignore")
from backtester import load_market, sweep
from strategies import hedged_pair
sweep(load_market().slice(0, 200), hedged_pair, {"leverage": [5, 10]}, target_kind="equity")
"""


def cold_compile_seconds() -> float:
    """A first sweep in a new process with an empty numba cache (the bar loop included)."""
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", WARM_UP], check=True,
                       env={**os.environ, "NUMBA_CACHE_DIR": cache})
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="inprocess,processes,dask")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loop-runs", type=int, default=300)
    parser.add_argument("--no-cold-compile", action="store_true",
                        help="skip timing a compile from an empty numba cache")
    parser.add_argument("--big", type=int, default=0,
                        help="also sweep this many runs into parquet and report peak memory")
    parser.add_argument("--repeat", type=int, default=5,
                        help="rounds of the in-process sweep (its best and median printed)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the Python and the compiled parts apart, and a worker "
                             "process's start-up")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    warnings.simplefilter("ignore")  # venue notes about tier tables before 2024-05-30

    market = load_market(start="2023-01-01", end="2024-01-01")
    g = grid()
    n_runs = len(EXPOSURES) * len(REBALANCE) * len(MODES) * len(LEVERAGES)
    print(f"machine: {os.cpu_count()} cores (nproc), {cpu_model()}; shared with other "
          f"engineers' jobs, so figures are noisy; load average {os.getloadavg()[0]:.1f}")
    print(f"market: {', '.join(market.symbols)}, {market.n_bars:,} hourly bars "
          f"({market.timestamps[0].date()} .. {market.timestamps[-1].date()}); grid: "
          f"{len(EXPOSURES)} exposures x {len(REBALANCE)} rebalance intervals x "
          f"{len(MODES)} modes x {len(LEVERAGES)} leverages = {n_runs:,} runs")

    t0 = time.perf_counter()
    sweep(market.slice(0, 200), hedged_pair, grid([1.0], [24]), backend="inprocess")
    print(f"warm-up (compile, or load numba's on-disk cache): {time.perf_counter() - t0:.1f} s")
    if not args.no_cold_compile:
        print(f"cold compile (new process, empty numba cache, bar loop included): "
              f"{cold_compile_seconds():.1f} s")

    tables = {}
    if "inprocess" in backends:
        tables["inprocess"] = timed(
            "in-process, rows only", n_runs,
            lambda: sweep(market, hedged_pair, g, workers=args.workers),
            f"({args.workers} threads)", repeat=max(1, args.repeat))
        with tempfile.TemporaryDirectory() as out:
            timed("in-process, into parquet", n_runs,
                  lambda: sweep(market, hedged_pair, g, out=out, workers=args.workers),
                  "(a part file per chunk of 1,024 runs)")
    if "processes" in backends and "start_method" not in inspect.signature(sweep).parameters:
        tables["processes"] = timed(  # (an older tree, measured against this one)
            "process pool", n_runs,
            lambda: sweep(market, hedged_pair, g, backend="processes", workers=args.workers),
            f"({args.workers} processes, start-up included)")
    elif "processes" in backends:
        # forked workers: what a script or the command line gets by default on Linux
        # (``workers.fork_is_safe``); spawned ones: the default elsewhere
        for method in ("fork", "spawn"):
            tables[f"processes, {method}"] = timed(
                f"process pool, {method}", n_runs,
                lambda method=method: sweep(market, hedged_pair, g, backend="processes",
                                            workers=args.workers, start_method=method),
                f"({args.workers} processes, start-up included)")
    sweeps = importlib.import_module("backtester.sweep")  # (the module; not the function)
    if "processes" in backends and hasattr(sweeps, "stop_kept_workers"):
        # (an older tree, measured against this one, has no keep_workers)
        # workers kept by an earlier sweep of this process (keep_workers=True): started by a
        # small sweep first, untimed
        kept = dict(backend="processes", workers=args.workers, keep_workers=True)
        for _ in range(5):  # (a worker still starting when the sweep ends is not kept)
            sweep(market.slice(0, 200), hedged_pair, grid([1.0], [24]), chunk_size=1, **kept)
            if len(importlib.import_module("backtester.sweep.isolation")._KEPT) >= args.workers:
                break
        try:
            c0 = kept_workers_cpu()
            tables["processes, workers kept"] = timed(
                "process pool, kept workers", n_runs,
                lambda: sweep(market, hedged_pair, g, **kept),
                "(workers kept from a sweep before: no start-up; cpu: this process)")
            print(f"{'':<28} the kept workers' cpu in it: {kept_workers_cpu() - c0:.2f} s")
        finally:
            sweeps.stop_kept_workers()
    if "dask" in backends:
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                          dashboard_address=None) as cluster, Client(cluster) as client:
            print(f"dask local cluster of {args.workers} worker processes started in "
                  f"{time.perf_counter() - t0:.1f} s")
            tables["dask"] = timed(
                "dask (local cluster)", n_runs,
                lambda: sweep(market, hedged_pair, g, client=client),
                "(first task on each worker loads the compiled code)")

    # a plain loop: what a user writes without sweep(); targets built once per parameter set
    loop_rows = []
    some = list(_first_runs(args.loop_runs))

    def loop():
        cache = {}
        for exposure, every, mode, lev in some:
            key = (exposure, every)
            if key not in cache:
                cache[key] = hedged_pair(market, exposure=exposure, rebalance_every=every)
            loop_rows.append(run(market, cache[key], target_kind="equity", margin_mode=mode,
                                 leverage=lev, record_positions=False).summary())

    timed("plain loop of run()", len(some), loop, "(one thread, record_positions=False)")

    if "inprocess" in tables:
        first = tables["inprocess"]
        for name, table in tables.items():
            if name != "inprocess":
                same = first.equals(table)
                print(f"{name} summary identical to in-process: {'yes' if same else 'NO'}")
        if loop_rows:  # (--loop-runs 0: no loop to compare with)
            head = first.head(len(loop_rows))
            worst = max(_relative_gap(head, loop_rows))
            print(f"largest relative gap, in-process rows vs run().summary() over the first "
                  f"{len(loop_rows)} runs: {worst:.1e}")
    print(f"peak memory (RSS high-water mark) so far: {peak_rss_mb():,.0f} MB; load average "
          f"now {os.getloadavg()[0]:.1f}")

    if args.breakdown:
        breakdown(market, g, n_runs)

    if args.big:
        reps = max(1, args.big // n_runs)
        balances = [10_000.0 + k for k in range(reps)]
        with tempfile.TemporaryDirectory() as out:
            timed("in-process, big, parquet", reps * n_runs,
                  lambda: sweep(market, hedged_pair, {**g, "initial_balance": balances},
                                out=out, workers=args.workers))
        print(f"peak memory after it: {peak_rss_mb():,.0f} MB")


def breakdown(market, g: dict, n_runs: int, chunk: int = 1024) -> None:
    """The CPU time of the sweep's two parts on one thread (compile excluded): preparing the
    runs (Python) and the compiled batch; and a pool worker's start-up."""
    from backtester.sweep.execute import ChunkOutput, ChunkRunner
    from backtester.sweep.grid import Grid, strategy_name

    runs = list(Grid(g, strategy=strategy_name(hedged_pair), defaults={}))
    runner = ChunkRunner(market, hedged_pair)
    python = compiled = 0.0
    for lo in range(0, len(runs), chunk):
        part = runs[lo:lo + chunk]
        c0 = time.thread_time()
        groups = runner.gather(part, ChunkOutput.empty(part, False), False)
        c1 = time.thread_time()
        for group in groups:
            runner._start_batch(group, False, False, None, 1)
        c2 = time.thread_time()
        python, compiled = python + c1 - c0, compiled + c2 - c1
    cores = os.cpu_count() or 1
    print(f"breakdown, one thread: preparing {python:.2f} s ({python / n_runs * 1e6:.0f} us a "
          f"run), compiled batch {compiled:.2f} s ({compiled / n_runs * 1e6:.0f} us a run); "
          f"on {cores} idle cores at most {cores * n_runs / (python + compiled):,.0f} runs/s, "
          f"{cores * n_runs / compiled:,.0f} for the compiled part alone")
    t0, c0 = time.perf_counter(), cpu_seconds()
    sweep(market.slice(0, 200), hedged_pair, {"exposure": 1.0, "target_kind": "equity"},
          backend="processes", workers=1)
    print(f"a pool of one worker, one run (its start-up): {time.perf_counter() - t0:.2f} s, "
          f"cpu {cpu_seconds() - c0:.2f} s")


def _first_runs(n: int):
    k = 0
    for exposure in EXPOSURES:
        for every in REBALANCE:
            for mode in MODES:
                for lev in LEVERAGES:
                    if k == n:
                        return
                    k += 1
                    yield exposure, every, mode, lev


def _relative_gap(table: pd.DataFrame, rows: list[dict]):
    for (_, row), expected in zip(table.iterrows(), rows, strict=True):
        for key, value in expected.items():
            if key == "initial_balance":
                continue
            got = float(row[key])
            if np.isnan(value) and np.isnan(got):
                yield 0.0
            else:
                yield abs(got - value) / max(abs(value), 1e-12)


if __name__ == "__main__":
    main()
