"""Run one chunk of a sweep: every run through ``prepare.prepare_run``, as ``run()`` does.

This is what every backend runs (in this process, in a pool worker, on a Dask
worker), so a run's figures do not depend on where it ran. Each run of a chunk is
prepared by the one function that prepares ``run()``'s runs (with a cache, so that
what runs share is built once): the strategy's orders for the run's data window and
parameters, its options over those of the strategy's ``Plan``. Runs that share a
market and a venue's rules, and trade targets, are then one call of
``engine.batch`` (the distinct target arrays stacked once); runs with a strategy
callback run one by one through ``engine.driver``, and are summarised by the same
compiled code. A run that fails its checks (or whose strategy raises) is reported
with its error, and the others go on.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numba
import numpy as np
import pandas as pd

from ..backtest import execute_prepared
from ..config import RunConfig
from ..data.market import Market
from ..engine import batch, enums
from ..engine.driver import funding_array
from ..prepare import PrepareCache, PreparedRun, prepare_run, split_plan
from ..strategy import StrategyDef, takes_leverage, with_run_leverage
from .grid import RUN_OPTIONS, Run

# run options that a run's ``RunConfig`` reports back to the summary table
CONFIG_OPTIONS = tuple(name for name in RUN_OPTIONS if name != "window")
OPTION_TAGS = tuple(f"o:{name}" for name in CONFIG_OPTIONS)  # (a Run's keys of its options)


@dataclass
class ChunkOutput:
    """What a chunk produced: a metrics row per run (NaN where it failed), the errors, and
    the options each run ran with (a strategy's plan may set those the grid leaves)."""

    run_ids: list[str]
    metrics: np.ndarray  # (R, len(batch.METRICS))
    errors: list[str | None]  # "ExceptionType: message" for a failed run
    equity: list[np.ndarray | None] | None  # each run's equity curve, when asked for
    options: list[dict | None] | None = None  # each run's options as run (None: failed early)

    @classmethod
    def empty(cls, runs: list[Run], equity: bool) -> ChunkOutput:
        """No figures yet: NaN metrics, no error, no curve."""
        return cls(run_ids=[r.run_id for r in runs],
                   metrics=np.full((len(runs), batch.N_METRICS), np.nan),
                   errors=[None] * len(runs), equity=[None] * len(runs) if equity else None,
                   options=[None] * len(runs))

    def put(self, k: int, other: ChunkOutput, j: int) -> None:
        """Run k of this output is run j of ``other``."""
        self.metrics[k] = other.metrics[j]
        self.errors[k] = other.errors[j]
        if self.equity is not None and other.equity is not None:
            self.equity[k] = other.equity[j]
        if other.options is not None:
            self.options[k] = other.options[j]

    def fail(self, k: int, error: str) -> None:
        """Run k failed with ``error`` (its figures stay NaN)."""
        self.metrics[k] = np.nan
        self.errors[k] = error
        if self.equity is not None:
            self.equity[k] = None


def window_bounds(market: Market, window: tuple[str | None, str | None]) -> tuple[int, int]:
    """Bar indices [a, b) of ``market`` inside a (start, end) window; an error if it is empty."""
    start, end = window
    index = market.index
    a = 0 if start is None else int(np.searchsorted(index, pd.Timestamp(start).value))
    b = market.n_bars if end is None else int(np.searchsorted(index, pd.Timestamp(end).value))
    if b - a < 1:
        first = pd.Timestamp(int(market.index[0]), tz="UTC") if market.n_bars else None
        last = pd.Timestamp(int(market.index[-1]), tz="UTC") if market.n_bars else None
        raise ValueError(f"window {start or 'start'} .. {end or 'end'} holds no bar of the "
                         f"market ({first} .. {last}); choose a window inside it")
    return a, b


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def strategy_params(strategy, r: Run) -> dict:
    """The keyword arguments of run r's strategy call: the grid's parameters, and the run's
    leverage where the strategy takes a ``leverage`` parameter and the grid sets the
    run option ``leverage`` (``strategy.with_run_leverage``)."""
    return with_run_leverage(strategy, r.params,
                             r.options["leverage"] if "leverage" in r.given else None)


def strategy_orders(strategy, market: Market, params: dict) -> tuple[object, dict]:
    """What a sweep's strategy decides for one parameter set: ``(orders, plan options)``.

    ``strategy`` is a ``StrategyDef`` (its ``plan``) or a function ``f(market, **params)``
    returning targets, a ``Callback`` or a ``Plan``.
    """
    made = strategy.plan(market, **params) if isinstance(strategy, StrategyDef) else strategy(
        market, **params)
    return split_plan(made)


class ChunkRunner:
    """Runs chunks of one sweep (one market, one strategy), caching what runs share.

    Caches: the window slices, the prepared inputs that runs share (``PrepareCache``),
    and the strategy's orders of the last few parameter sets (the runs of one parameter
    set are consecutive in a window and venue, so a chunk boundary splits at most one).
    """

    ORDERS_KEPT = 8

    def __init__(self, market: Market, strategy):
        self.market = market
        self.strategy = strategy
        self.takes_leverage = takes_leverage(strategy)
        self.cache = PrepareCache()
        self._windows: dict = {}
        self._orders: OrderedDict = OrderedDict()
        self._configs: dict = {}

    def window(self, window) -> Market:
        if window not in self._windows:
            a, b = window_bounds(self.market, window)
            self._windows[window] = self.market.slice(a, b)
        return self._windows[window]

    def orders(self, r: Run) -> tuple[object, dict]:
        """The strategy's orders and plan options for run r's window and parameters (raises
        what the strategy raised)."""
        key = (r.options["window"], r.params_key())
        if self.takes_leverage and "leverage" in r.given:  # built per leverage
            key += (r.key("o:leverage"),)
        if key in self._orders:
            self._orders.move_to_end(key)
        else:
            try:
                params = (strategy_params(self.strategy, r) if self.takes_leverage
                          else dict(r.params))  # (no signature to look at per parameter set)
                self._orders[key] = strategy_orders(self.strategy,
                                                    self.window(r.options["window"]), params)
            except Exception as exc:  # a strategy's failure is that run's failure
                self._orders[key] = exc
            while len(self._orders) > self.ORDERS_KEPT:
                self._orders.popitem(last=False)
        found = self._orders[key]
        if isinstance(found, Exception):
            raise found
        return found

    def config(self, r: Run, plan_options: dict) -> tuple[RunConfig, dict]:
        """Run r's ``RunConfig`` over its strategy plan's options, and the options it reports:
        one object for every run with the same options and plan options (most runs of a
        grid differ only in strategy parameters), so that it is built and checked once."""
        # (most strategies set no options: all their runs share the empty plan's entries)
        texts = tuple(map(r.keys.get, OPTION_TAGS))
        if None in texts:  # (a run made by hand: its options' texts made now)
            texts = tuple(r.key(tag) if tag[2:] in r.options else None for tag in OPTION_TAGS)
        key = (id(plan_options) if plan_options else None, r.given, texts)
        found = self._configs.get(key)
        if found is None or (plan_options and found[0] is not plan_options):
            config = r.config(plan_options, record_positions=False, record_margins=False)
            options = {name: getattr(config, name) for name in CONFIG_OPTIONS}
            if len(self._configs) >= 4096:
                self._configs.clear()
            # (the plan options kept alive with it: their id stays their own)
            found = self._configs[key] = (plan_options, config, options)
        return found[1], found[2]

    def prepare(self, r: Run) -> tuple[PreparedRun, dict]:
        """Run r through ``prepare_run``, as ``run()`` would prepare it (raises if invalid);
        with the options it ran with."""
        market = self.window(r.options["window"])
        orders, plan_options = self.orders(r)
        config, options = self.config(r, plan_options)
        return prepare_run(market, orders, config, self.cache), options

    # --- a chunk ---------------------------------------------------------------------------

    def run_chunk(self, runs: list[Run], *, equity: bool = False, parallel: bool = True,
                  on_step: Callable[[int], object] | None = None) -> ChunkOutput:
        """Run ``runs``: one batch call per shared market and rules, callbacks one by one.

        ``on_step(n)`` is called as each step starts that works for ``n`` runs: a run's
        preparation (its strategy's call) with its callback, and a batch call of n runs
        (what a time limit per run is measured against).
        """
        return self.finish_chunk(self.start_chunk(runs, equity=equity, parallel=parallel,
                                                  on_step=on_step))

    def start_chunk(self, runs: list[Run], *, equity: bool = False, parallel: bool = True,
                    on_step: Callable[[int], object] | None = None,
                    threads: ThreadPoolExecutor | None = None, n_threads: int = 1
                    ) -> StartedChunk:
        """Prepare ``runs`` (and run those with a callback); then their batch calls: here (as
        ``run_chunk``), or, given ``threads``, started on ``n_threads`` of them, each a share
        of a batch's runs through the compiled one-thread batch (which releases the GIL:
        this thread goes on with the next chunk meanwhile). ``finish_chunk`` collects them."""
        step = on_step or (lambda n: None)
        out = ChunkOutput.empty(runs, equity)
        groups = self.gather(runs, out, equity, step)
        calls = []
        for group in groups:
            step(len(group))
            calls.append(self._start_batch(group, equity, parallel, threads, n_threads))
        return StartedChunk(out, calls, equity, step, runs)

    def gather(self, runs: list[Run], out: ChunkOutput, equity: bool,
               step: Callable[[int], object] = lambda n: None) -> list[BatchRuns]:
        """Prepare ``runs``: a failed one's error and each one's options into ``out``, a run
        with a callback run now; the others gathered into one ``BatchRuns`` per shared
        market and rules."""
        groups: dict = {}
        for k, r in enumerate(runs):
            step(1)
            try:
                prepared, options = self.prepare(r)
            except Exception as exc:
                out.errors[k] = _error(exc)
                continue
            out.options[k] = options
            if prepared.callback is not None:
                self._run_callback(k, prepared, out, equity)
                continue
            inputs = prepared.inputs
            key = (id(inputs.bars), id(inputs.versions))  # (the group keeps both alive)
            group = groups.get(key)
            if group is None:
                group = groups[key] = BatchRuns(inputs, prepared.market.bars_per_year,
                                                len(runs))
            group.add(k, inputs)
        return list(groups.values())

    def finish_chunk(self, started: StartedChunk) -> ChunkOutput:
        """The chunk's output, once its batch calls are done (see ``start_chunk``)."""
        for call in started.calls:
            self._finish_batch(call, started.output, started.equity, started.step,
                               started.runs)
        return started.output

    def _run_callback(self, k: int, prepared: PreparedRun, out: ChunkOutput, equity: bool):
        """A run with a strategy callback, through ``engine.driver`` as ``run()`` runs it."""
        try:
            output = execute_prepared(prepared)
        except Exception as exc:  # the strategy's error explained, or the run's
            out.errors[k] = _error(exc)
            return
        counts = np.zeros(enums.N_COUNTS, dtype=np.int64)
        counts[enums.Count.FILLS] = len(output.fills)
        counts[enums.Count.LIQS] = len(output.liquidations)
        counts[enums.Count.FUNDING] = len(output.funding)
        counts[enums.Count.REJECTS] = len(output.rejections)
        counts[enums.Count.EVENTS] = len(output.events)
        records = enums.Records(output.fills, output.liquidations, funding_array(output.funding),
                                output.rejections, output.events, counts)
        row = np.full(batch.N_METRICS, np.nan)
        batch.summarise(output.account, records, float(output.initial_equity),
                        float(prepared.market.bars_per_year), np.empty(prepared.market.n_bars),
                        row)
        out.metrics[k] = row
        if equity:
            out.equity[k] = output.account[enums.Out.EQUITY].copy()

    def _start_batch(self, group: BatchRuns, equity: bool, parallel: bool,
                     threads: ThreadPoolExecutor | None, n_threads: int) -> BatchCall:
        """The batch call of ``group``'s runs: made here (``threads`` None), or started on
        ``threads``."""
        runs = group.runs()
        bars, versions = group.bars, group.versions
        n_runs = len(group)
        summary = np.full((n_runs, batch.N_METRICS), np.nan)
        curves = np.empty((n_runs if equity else 0, bars.open.shape[0]))
        args = (bars, versions, runs, group.bars_per_year, summary, curves)
        call = BatchCall(group.ks, summary, curves)
        if threads is not None:
            shares = min(n_threads, n_runs)  # run w, w + shares, w + 2 shares...
            call.pending = [threads.submit(batch.run_batch_serial, w, shares, *args)
                            for w in range(shares)]
            return call
        try:
            if parallel and n_runs > 1:
                threads_used = min(numba.get_num_threads(), n_runs)
                batch.run_batch_parallel(threads_used, *args)
            else:
                batch.run_batch_serial(0, 1, *args)
        except Exception as exc:
            call.error = exc
        return call

    def _finish_batch(self, call: BatchCall, out: ChunkOutput, equity: bool,
                      step: Callable[[int], object], runs: list[Run]):
        """The rows of a batch call: its metrics (and curves), or, if it raised, its runs
        again one by one, so that one failure stays one failed row."""
        for future in call.pending:
            try:
                future.result()
            except Exception as exc:
                call.error = call.error or exc
        ks = call.ks
        if call.error is not None:
            if len(ks) == 1:
                out.errors[ks[0]] = _error(call.error)
                return
            # find the culprit: every run alone (prepared again: the cache has its parts)
            for k in ks:
                step(1)
                try:
                    prepared, _ = self.prepare(runs[k])
                except Exception as exc:  # (a strategy that raises now, though not before)
                    out.errors[k] = _error(exc)
                    continue
                alone = BatchRuns(prepared.inputs, prepared.market.bars_per_year, 1)
                alone.add(k, prepared.inputs)
                self._finish_batch(self._start_batch(alone, equity, False, None, 1), out,
                                   equity, step, runs)
            return
        for j, k in enumerate(ks):
            out.metrics[k] = call.summary[j]
            if equity:
                out.equity[k] = call.curves[j].copy()


class BatchRuns:
    """The runs of a chunk that make one batch call (they share a market window and the
    venue's rules, and trade targets): what the compiled batch takes of each, gathered as
    each run is prepared. A run's prepared inputs then live no longer than its preparation
    (the objects of 10,000 prepared runs, kept to the end of their chunk, would each be
    looked at again by Python's garbage collector)."""

    def __init__(self, inputs, bars_per_year: float, capacity: int):
        self.bars, self.versions = inputs.bars, inputs.versions
        self.bars_per_year = float(bars_per_year)
        self.ks: list[int] = []  # each run's place in its chunk
        self.stack: dict = {}  # id of a target array -> its row in the stack
        self.trading: list = []  # the distinct targets (kept alive: their ids stay theirs)
        self.choices = np.zeros((capacity, batch.N_RUN_FIELDS))
        self.mode = np.empty((capacity,) + inputs.mode.shape, dtype=inputs.mode.dtype)
        self.sym = np.empty((capacity,) + inputs.sym.shape)
        self.holdings = np.empty((capacity,) + inputs.holdings.shape)

    def __len__(self) -> int:
        return len(self.ks)

    def add(self, k: int, inputs) -> None:
        """Run k of the chunk, from its ``KernelInputs``."""
        j = len(self.ks)
        self.ks.append(k)
        trading = inputs.trading
        row = self.stack.get(id(trading.targets))
        if row is None:
            row = self.stack[id(trading.targets)] = len(self.trading)
            self.trading.append(trading)
        choices = self.choices[j]
        choices[batch.RUN_TARGETS] = row
        choices[batch.RUN_TARGET_KIND] = trading.target_kind
        choices[batch.RUN_FILL_AT] = trading.fill_at
        choices[batch.RUN_PATH] = inputs.path
        choices[batch.RUN_REDUCE_TO_FIT] = float(trading.reduce_to_fit)
        choices[batch.RUN_INITIAL_BALANCE] = inputs.initial_balance
        choices[batch.RUN_SLIPPAGE] = trading.slippage
        self.mode[j] = inputs.mode
        self.sym[j] = inputs.sym
        self.holdings[j] = inputs.holdings

    def runs(self) -> batch.Runs:
        """The batch's ``Runs``: the distinct targets stacked, each run's row."""
        n = len(self.ks)
        return batch.Runs(np.stack([t.targets for t in self.trading]),
                          np.stack([t.has_target for t in self.trading]),
                          self.choices[:n], self.mode[:n], self.sym[:n], self.holdings[:n])


@dataclass
class BatchCall:
    """A batch call of a chunk: its runs' places in the chunk, its outputs, and its thread
    pool tasks while they run (or the error it raised)."""

    ks: list[int]
    summary: np.ndarray
    curves: np.ndarray
    pending: list = field(default_factory=list)
    error: BaseException | None = None


@dataclass
class StartedChunk:
    """A chunk prepared and its batch calls started (``ChunkRunner.start_chunk``)."""

    output: ChunkOutput
    calls: list[BatchCall]
    equity: bool
    step: Callable[[int], object]
    runs: list[Run]


def warm_up_serial() -> None:
    """Compile (or load from numba's cache) the one-thread batch.

    Called before workers start, so that they load it from the on-disk cache instead of
    each compiling it, and in each worker before its first run, so that a run's time
    limit does not count the loading.
    """
    market = Market.from_arrays(["WARM_UP"], [1.0], [1.0], [1.0], [1.0])
    prepared = prepare_run(market, np.full((1, 1), np.nan), RunConfig(venue="flat", leverage=1))
    inputs = prepared.inputs
    runs = batch.Runs(inputs.trading.targets[None], inputs.trading.has_target[None],
                      np.zeros((0, batch.N_RUN_FIELDS)), np.zeros((0, 1), dtype=np.int64),
                      np.zeros((0,) + inputs.sym.shape), np.zeros((0, 1)))
    batch.run_batch_serial(0, 1, inputs.bars, inputs.versions, runs, 8760.0,
                           np.zeros((0, batch.N_METRICS)), np.zeros((0, 1)))
