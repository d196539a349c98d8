"""Where the chunks of a sweep run: this process, a local process pool, or a Dask cluster.

Each backend takes an iterator of chunks (lists of runs) and yields
``(runs, ChunkOutput)`` as chunks finish, in any order. Every backend runs a
chunk with the same ``ChunkRunner`` and the same compiled per-run code, so a
run's figures are the same bits wherever it ran. At most a few chunks per
worker are in flight: a 100,000-run sweep never holds more than that.
"""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

import numba
import numpy as np

from ..config import RunConfig
from ..data.market import Market
from ..engine import batch
from .execute import ChunkOutput, ChunkRunner
from .grid import Run

BACKENDS = ("inprocess", "processes", "dask")
Chunks = Iterable[list[Run]]


def run_inprocess(market: Market, strategy, chunks: Chunks, *, equity: bool,
                  workers: int | None = None) -> Iterator[tuple[list[Run], ChunkOutput]]:
    """Chunks one after another here, each one numba-parallel call over ``workers`` threads."""
    runner = ChunkRunner(market, strategy)
    threads = numba.get_num_threads()
    if workers:
        numba.set_num_threads(min(int(workers), numba.config.NUMBA_NUM_THREADS))
    try:
        for runs in chunks:
            yield runs, runner.run_chunk(runs, equity=equity, parallel=True)
    finally:
        numba.set_num_threads(threads)


# --- a local process pool -------------------------------------------------------------------

_WORKER: ChunkRunner | None = None


def _init_worker(market: Market, strategy) -> None:
    global _WORKER
    _WORKER = ChunkRunner(market, strategy)


def _pool_task(runs: list[Run], equity: bool) -> ChunkOutput:
    return _WORKER.run_chunk(runs, equity=equity, parallel=False)


def warm_up_serial() -> None:
    """Compile (or load from numba's cache) the one-thread batch before workers start.

    Workers then load it from the on-disk cache instead of each compiling it.
    """
    from ..data.market import Market
    from ..prepare import prepare_run

    market = Market.from_arrays(["WARM_UP"], [1.0], [1.0], [1.0], [1.0])
    prepared = prepare_run(market, np.full((1, 1), np.nan), RunConfig(venue="flat", leverage=1))
    inputs = prepared.inputs
    runs = batch.Runs(inputs.trading.targets[None], inputs.trading.has_target[None],
                      np.zeros((0, batch.N_RUN_FIELDS)), np.zeros((0, 1), dtype=np.int64),
                      np.zeros((0,) + inputs.sym.shape), np.zeros((0, 1)))
    batch.run_batch_serial(0, 1, inputs.bars, inputs.versions, runs, 8760.0,
                           np.zeros((0, batch.N_METRICS)), np.zeros((0, 1)))


def _bounded(submit, chunks: Chunks, slots: int):
    """Submit chunks keeping ``slots`` in flight; returns (pending dict, refill function)."""
    it = iter(chunks)
    pending: dict = {}

    def refill() -> None:
        while len(pending) < slots:
            runs = next(it, None)
            if runs is None:
                return
            pending[submit(runs)] = runs

    refill()
    return pending, refill


def run_processes(market: Market, strategy, chunks: Chunks, *, equity: bool,
                  workers: int | None = None) -> Iterator[tuple[list[Run], ChunkOutput]]:
    """Chunks on ``workers`` processes (default: one per core), one thread each.

    Processes are spawned (not forked: a fork after numba's threads started is
    unsafe); each receives the market once. The strategy function must be
    importable (defined in a module, not in ``__main__`` or a notebook).
    """
    workers = int(workers or multiprocessing.cpu_count())
    warm_up_serial()
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker, initargs=(market, strategy))
    try:
        pending, refill = _bounded(lambda runs: pool.submit(_pool_task, runs, equity), chunks,
                                   2 * workers)
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                runs = pending.pop(future)
                yield runs, future.result()
            refill()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


# --- Dask distributed ------------------------------------------------------------------------

_DASK_RUNNERS: dict[str, ChunkRunner] = {}


def _dask_task(market: Market, strategy, runs: list[Run], equity: bool,
               token: str) -> ChunkOutput:
    """A chunk on a Dask worker; the worker keeps one runner (and its caches) per sweep."""
    runner = _DASK_RUNNERS.get(token)
    if runner is None:
        while len(_DASK_RUNNERS) >= 2:  # earlier sweeps' caches
            _DASK_RUNNERS.pop(next(iter(_DASK_RUNNERS)))
        runner = _DASK_RUNNERS[token] = ChunkRunner(market, strategy)
    return runner.run_chunk(runs, equity=equity, parallel=False)


def _dask_client(client, scheduler: str | None, workers: int | None):
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ImportError("the Dask backend needs dask.distributed: "
                          "pip install 'backtester[dask]'") from None
    if client is not None:
        return client, False
    if scheduler:
        return Client(scheduler), True
    cluster = LocalCluster(n_workers=int(workers or multiprocessing.cpu_count()),
                           threads_per_worker=1, dashboard_address=None)
    return Client(cluster), True


def run_dask(market: Market, strategy, chunks: Chunks, *, equity: bool, client=None,
             scheduler: str | None = None,
             workers: int | None = None) -> Iterator[tuple[list[Run], ChunkOutput]]:
    """Chunks as tasks on a Dask cluster: ``client``, or the scheduler at ``scheduler``
    (``tcp://host:8786``), or else a local cluster of ``workers`` processes.

    The market is scattered to every worker once; each task returns only its
    summary rows (and curves when asked). Workers need backtester and the
    strategy's module importable.
    """
    from distributed import as_completed

    client, own = _dask_client(client, scheduler, workers)
    try:
        market_future = client.scatter(market, broadcast=True, hash=False)
        token = uuid.uuid4().hex
        slots = 2 * max(1, sum(client.nthreads().values()))
        finished = as_completed()
        futures: dict = {}

        def submit(runs):
            future = client.submit(_dask_task, market_future, strategy, runs, equity, token,
                                   pure=False)
            finished.add(future)
            futures[future.key] = future
            return future.key

        pending, refill = _bounded(submit, chunks, slots)
        try:
            for future in finished:
                runs = pending.pop(future.key)
                output = future.result()
                futures.pop(future.key).release()
                yield runs, output
                refill()
        except BaseException:
            client.cancel(list(futures.values()))
            raise
    finally:
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
