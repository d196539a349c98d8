"""``sweep()``: many backtests over a grid of parameters, one summary row per run."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from .._compile_progress import shows_first_compile
from ..data.market import Market
from ..engine import batch
from ..strategy import StrategyDef
from ..venues import load_venue
from .backends import BACKENDS, run_dask, run_inprocess, run_processes
from .execute import window_bounds
from .grid import Grid, Run, load_grid, strategy_name
from .progress import Progress
from .storage import CORRUPT_DIR, SweepStore, column_kinds, conform, equity_frame, summary_frame
from .workers import START_METHODS

# distinct target arrays of one chunk stay under this many bytes (they are (T, N) float64)
TARGETS_BUDGET = 500 * 2**20
# (a pool's chunk costs the sweep's process a few ms of pickling and pandas: 256 runs keep
# that small next to the chunk's work, and the last chunks short enough to share out)
DEFAULT_CHUNK = {"inprocess": 1024, "processes": 256, "dask": 128}


@shows_first_compile("sweep")
def sweep(
    market: Market,
    strategy: Callable | StrategyDef,
    grid: Mapping | Sequence[Mapping] | str | Path,
    *,
    out: str | Path | None = None,
    backend: str = "inprocess",
    workers: int | None = None,
    scheduler: str | None = None,
    client=None,
    chunk_size: int | None = None,
    equity: bool = False,
    retry_failed: bool = False,
    run_timeout: float | None = None,
    repair: bool = False,
    progress: bool | TextIO = False,
    keep_workers: bool = False,
    start_method: str | None = None,
    **options,
) -> pd.DataFrame:
    """Backtest every run of a grid and return one summary row per run.

    Every run is prepared by the function that prepares ``run()``'s
    (``prepare.prepare_run``), so a sweep runs everything ``run()`` runs, and each
    row's figures are those of ``run(...).summary()`` for that run.

    - ``strategy``: a function ``strategy(market, **params)`` returning what
      ``run()`` takes: targets, a ``Callback``, or a ``Plan`` (targets or a callback
      with the run options they assume, such as spot legs); or a ``StrategyDef``
      (``strategies.funding_carry.STRATEGY``, ``load_strategy("margin_aware")``). It
      is called once per distinct parameter set and data window. Runs with targets
      run many at a time in one compiled call; runs with a callback one by one.
    - ``grid``: a mapping (or a TOML file of one) from names to values; a list
      is swept, anything else is fixed. Names of run options (every field of
      ``RunConfig`` but ``record_positions`` and ``record_margins``: ``margin_mode``
      and ``leverage``, one value or a mapping per symbol, ``venue``, ``venue_overrides``,
      ``initial_balance``, ``target_kind``, ``sizing``, ``fill_at``, ``path``, ``slippage``,
      ``reduce_to_fit``, ``instruments``, ``spot_fee``, ``position_mode``,
      ``collateral``; and ``window``: a ``(start, end)`` pair, start included, end
      excluded) set the simulation; every other name is a strategy parameter. A list
      of mappings is the union of their runs. An option the grid leaves out takes the
      value of the strategy's ``Plan`` if it sets one, else ``run()``'s default (as
      ``run()``'s own keyword options win over a plan's). A strategy function with a
      parameter named ``leverage`` is given each run's leverage (a per-symbol mapping as
      the mapping) where the grid sets ``leverage``; otherwise it keeps its own default.
    - ``out``: a directory for the parquet dataset, written chunk by chunk as runs
      finish. Rerunning into the same directory skips the runs already there
      (``retry_failed=True`` reruns the failed ones), so an interrupted sweep resumes.
      A file there that cannot be read is refused, named; ``repair=True`` moves such
      files to ``out/_corrupt/`` and runs their runs again.
    - ``backend``: ``"inprocess"`` (each chunk's runs shared out over ``workers``
      threads of compiled code, the next chunk prepared meanwhile: fastest on one
      machine), ``"processes"`` (a local process pool of ``workers``) or
      ``"dask"`` (a ``client``, the scheduler at ``scheduler``, or a local cluster).
      The last two run chunks in worker processes, so a run whose strategy kills its
      process (``os._exit``, a segmentation fault, the out-of-memory killer) is recorded
      as failed (``WorkerCrash: ...``) and the sweep goes on; in-process, it ends the
      sweep (and this process): use ``"processes"`` for strategies that may crash.
    - ``run_timeout``: seconds a run may take, on the ``processes`` and ``dask``
      backends: for its strategy's call (with its callback's simulation), and for its
      simulation (a compiled call of n runs together gets n times as long). A run past
      it is stopped with its worker and recorded as failed (``Timeout: ...``). The
      ``inprocess`` backend cannot stop a run, and refuses a time limit.
    - ``equity``: also save each run's equity curve under ``out`` (read them with
      ``read_equity``); otherwise no curve outlives its run.
    - ``progress``: print runs done, runs/s and the time left on stderr (or on
      the stream given).
    - ``keep_workers``: on the ``processes`` backend, leave the worker processes running
      when the sweep ends, and start from those an earlier sweep left: a worker's start-up
      (about a second of CPU: Python, pandas, numba, the compiled batch) is then paid once
      for several sweeps of this process. Kept workers hold the memory of their last
      sweep's market, and keep the modules they imported: a strategy's module edited
      since is not seen by them. ``stop_kept_workers()`` ends them (so does the end of
      this process).
    - ``start_method``: how the ``processes`` backend starts a worker: ``"fork"`` (a copy of
      this process, ready in milliseconds, sharing the market's memory; the strategy needs
      no pickling, so one defined in a notebook runs too) or ``"spawn"`` (a new Python
      process, which imports backtester and the strategy's module and is sent the market:
      about a second of CPU each). Default: fork on Linux unless another thread of this
      process is running (a lock it held at the fork would stay held in the worker) or
      a parallel numba function started numba's OpenMP threads; spawn otherwise. A worker
      forked from a process that holds a strategy's state (an open file, a connection)
      holds a copy of it: choose ``"spawn"`` for such strategies.
    - ``options``: fixed run options under the grid, e.g. ``target_kind="equity"``.

    The row of a run holds ``run_id`` (a stable hash of its strategy, parameters
    and options), the parameters and the options it ran with, ``window_start``/``window_end``,
    the figures of ``Result.summary()`` and ``error`` (the message of a run that
    failed, whose figures are NaN). Rows come in grid order; the figures do not
    depend on the backend or the number of workers. A failed run stays failed on a
    rerun into the same ``out`` unless ``retry_failed=True``.

    When a chunk's worker dies (or is stopped at the time limit), its runs run again
    one at a time to find the one that did it; only that run is recorded as failed.

    Example:
        >>> from backtester import load_market, sweep
        >>> from strategies import hedged_pair
        >>> market = load_market().slice(0, 24 * 90)          # 90 days of hourly bars
        >>> table = sweep(market, hedged_pair, {"exposure": [0.5, 1.0, 2.0],
        ...               "margin_mode": ["cross", "isolated"], "leverage": [5, 20]},
        ...               target_kind="equity")
        >>> len(table), int(table["error"].notna().sum())     # runs, failed runs
        (12, 0)
        >>> list(table.columns[:5])
        ['run_id', 'exposure', 'margin_mode', 'leverage', 'venue']
        >>> by_mode = table.groupby("margin_mode")["liquidations"].sum()  # compare the modes
    """
    if not isinstance(market, Market):
        raise TypeError(f"market must be a backtester Market, got {type(market).__name__}")
    if not (callable(strategy) or isinstance(strategy, StrategyDef)):
        raise TypeError(f"strategy must be a function market, **params -> targets (or a "
                        f"Plan or Callback), or a StrategyDef, got {strategy!r}")
    if isinstance(grid, str | Path):
        grid = load_grid(grid)
    backend = _backend(backend, client, scheduler)
    run_timeout = _run_timeout(run_timeout, backend)
    if keep_workers and backend != "processes":
        raise ValueError(f"keep_workers keeps the worker processes of backend='processes'; "
                         f"the {backend!r} backend has none to keep")
    _check_start_method(start_method, backend)
    plan = Grid(grid, strategy=strategy_name(strategy), defaults=options)
    plan.check_strategy(strategy)
    kinds = column_kinds(plan)
    bounds = _check_inputs(market, plan)
    if repair and out is None:
        raise ValueError("repair=True mends the output folder of a sweep: give out")
    store = SweepStore(out, market, repair=repair) if out is not None else None
    if store is not None and store.repaired:
        warnings.warn(f"{len(store.repaired)} file(s) of {out} that could not be read were "
                      f"moved to {Path(out) / CORRUPT_DIR}/ ("
                      f"{', '.join(p.name for p in store.repaired)}); their runs run again",
                      stacklevel=2)
    if equity and store is None:
        raise ValueError("equity=True saves the curves under out=DIRECTORY; give out")
    done = store.done_ids(retry_failed) if store else set()

    ids = list(plan.run_ids())  # (hashed once: the runs are made from these)
    order: dict[str, int] = {}  # run id -> position in the grid (first occurrence)
    for run_id in ids:
        order.setdefault(run_id, len(order))
    skipped = sum(1 for i in order if i in done)
    size = _chunk_size(chunk_size, backend, market)
    chunks = _chunks(plan.runs(ids), done, size)
    if backend == "inprocess":
        finished = run_inprocess(market, strategy, chunks, equity=equity, workers=workers)
    elif backend == "processes":
        finished = run_processes(market, strategy, chunks, equity=equity, workers=workers,
                                 run_timeout=run_timeout, keep_workers=keep_workers,
                                 start_method=start_method)
    else:
        finished = run_dask(market, strategy, chunks, equity=equity, client=client,
                            scheduler=scheduler, workers=workers, run_timeout=run_timeout)

    meter = Progress(len(order), skipped, stream=progress if not isinstance(progress, bool)
                     else sys.stderr, enabled=bool(progress))
    frames = []
    with _collector_spares_what_exists():
        try:
            for runs, output in finished:
                frame = summary_frame(runs, output.metrics, output.errors, kinds,
                                      output.options)
                if store is not None:
                    curves = None
                    if equity:
                        curves = equity_frame(runs, output.equity, market,
                                              [bounds[r.options["window"]] for r in runs])
                    store.write(frame, curves)
                frames.append(frame)
                meter.update(len(runs), sum(e is not None for e in output.errors))
        finally:
            finished.close()
    meter.close()

    empty = summary_frame([], np.zeros((0, batch.N_METRICS)), [], kinds)
    if skipped:
        earlier = store.read()
        earlier = earlier[earlier["run_id"].isin(order.keys())]
        # only this grid's columns (parts written by other grids may hold more)
        frames.insert(0, conform(earlier.reindex(columns=empty.columns), kinds))
    if not frames:
        return empty
    table = pd.concat(frames, ignore_index=True)
    table = table.drop_duplicates("run_id", keep="last")
    position = table["run_id"].map(order).to_numpy()
    return table.iloc[np.argsort(position, kind="stable")].reset_index(drop=True)


@contextlib.contextmanager
def _collector_spares_what_exists():
    """Python's garbage collector leaves the objects that exist now alone until the block
    ends (``gc.freeze``): a sweep makes many short-lived objects, and each of the full
    collections they set off would otherwise walk every object of the process again (some
    160,000 where numba loaded its cache, 430,000 where it compiled: 0.1-0.4 s a time). The
    sweep's own garbage is collected as usual. Not where something else froze objects
    already (its freeze is its own)."""
    if gc.get_freeze_count() or not gc.isenabled():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _backend(backend: str, client, scheduler) -> str:
    if client is not None or scheduler:
        if backend not in ("inprocess", "dask"):
            raise ValueError(f"a Dask client or scheduler runs on the dask backend, not on "
                             f"{backend!r}")
        return "dask"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, "
                         f"got {backend!r}")
    return backend


def _check_start_method(start_method, backend: str) -> None:
    if start_method is None:
        return
    if start_method not in START_METHODS:
        raise ValueError(f"start_method is one of {', '.join(map(repr, START_METHODS))} (or "
                         f"None: fork where it is safe), got {start_method!r}")
    if backend != "processes":
        raise ValueError(f"start_method chooses how backend='processes' starts its workers; "
                         f"the {backend!r} backend starts none")
    if start_method == "fork" and not hasattr(os, "fork"):
        raise ValueError("start_method='fork': this system cannot fork a process; use "
                         "'spawn'")


def _run_timeout(run_timeout, backend: str) -> float | None:
    if run_timeout is None:
        return None
    if isinstance(run_timeout, bool) or not isinstance(run_timeout, int | float) or not (
            math.isfinite(run_timeout) and run_timeout > 0):
        raise ValueError(f"run_timeout is a number of seconds > 0 (or None: no limit), got "
                         f"{run_timeout!r}")
    if backend == "inprocess":
        raise ValueError("run_timeout needs a backend that runs in worker processes, which "
                         "can be stopped: backend='processes' or 'dask' (the inprocess "
                         "backend cannot stop a run without stopping this process)")
    return float(run_timeout)


def _check_inputs(market: Market, plan: Grid) -> dict:
    """Errors a whole sweep would hit, raised before it starts; the bars of each window."""
    bounds = {w: window_bounds(market, w) for w in dict.fromkeys(plan.values("window"))}
    for venue in dict.fromkeys(plan.values("venue")):
        for overrides in plan.values("venue_overrides") or [{}]:
            load_venue(venue, **overrides)  # an unknown venue or override, before any run
    return bounds


def _chunk_size(chunk_size: int | None, backend: str, market: Market) -> int:
    """Runs per chunk: the backend's default, so that its distinct targets fit the budget."""
    # (in-process, a chunk is prepared while the one before it runs: two share the budget)
    budget = TARGETS_BUDGET // 2 if backend == "inprocess" else TARGETS_BUDGET
    cap = max(1, budget // max(1, 8 * market.n_bars * market.n_symbols))
    if chunk_size is not None:
        if int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValueError(f"chunk_size is a whole number of runs >= 1, got {chunk_size}")
        return min(int(chunk_size), cap)
    return min(DEFAULT_CHUNK[backend], cap)


def _chunks(runs: Iterable[Run], done: set[str], size: int) -> Iterator[list[Run]]:
    """The runs still to do, in grid order, ``size`` at a time (duplicates once)."""
    seen = set(done)
    chunk: list[Run] = []
    for r in runs:
        if r.run_id in seen:
            continue
        seen.add(r.run_id)
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
