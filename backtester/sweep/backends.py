"""Where the chunks of a sweep run: this process, a local process pool, or a Dask cluster.

Each backend takes an iterator of chunks (lists of runs) and yields
``(runs, ChunkOutput)`` as chunks finish, in any order. Every backend runs a
chunk with the same ``ChunkRunner`` and the same compiled per-run code, so a
run's figures are the same bits wherever it ran. At most a few chunks per
worker are in flight: a 100,000-run sweep never holds more than that.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import pickle
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numba

from ..data.market import Market
from ..strategy import FILE_MODULES, import_strategy_files
from .execute import ChunkOutput, ChunkRunner, warm_up_serial
from .grid import Run
from .isolation import CACHES, run_chunk_alone, run_pool
from .workers import numba_threads, pickled

BACKENDS = ("inprocess", "processes", "dask")
Chunks = Iterable[list[Run]]


def default_threads() -> int:
    """numba's thread count, without starting its threads: ``numba.get_num_threads()`` starts
    its threading layer's pool (GNU OpenMP's, where present), which an in-process sweep does
    not use (it runs the one-thread batch on Python threads), and after which a process pool
    does not fork its workers (``workers.fork_is_safe``)."""
    if numba_threads() is not None:
        return numba.get_num_threads()  # (numba.set_num_threads may have lowered it)
    return int(numba.config.NUMBA_NUM_THREADS)


def run_inprocess(market: Market, strategy, chunks: Chunks, *, equity: bool,
                  workers: int | None = None) -> Iterator[tuple[list[Run], ChunkOutput]]:
    """Chunks in this process, on ``workers`` threads (default: numba's thread count, one per
    core): each batch call's runs shared out over the threads, each share one call of the
    compiled one-thread batch, which releases the GIL. So while they run, this thread
    prepares the next chunk (its strategy calls, its runs' inputs) and the sweep writes the
    last one's rows: Python's part of a sweep runs beside the compiled part, not between.
    At most two chunks are in flight."""
    runner = ChunkRunner(market, strategy)
    n_threads = max(1, int(workers) if workers else default_threads())
    with ThreadPoolExecutor(n_threads, thread_name_prefix="sweep") as threads:
        previous = None
        for runs in chunks:
            try:
                started = runner.start_chunk(runs, equity=equity, threads=threads,
                                             n_threads=n_threads)
            except BaseException:  # (Ctrl-C while preparing: the chunk before it is done)
                if previous is not None:
                    yield previous[0], runner.finish_chunk(previous[1])
                raise
            if previous is not None:
                yield previous[0], runner.finish_chunk(previous[1])
            previous = (runs, started)
        if previous is not None:
            yield previous[0], runner.finish_chunk(previous[1])


# --- a local process pool -------------------------------------------------------------------


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
                  workers: int | None = None, run_timeout: float | None = None,
                  keep_workers: bool = False,
                  start_method: str | None = None) -> Iterator[tuple[list[Run], ChunkOutput]]:
    """Chunks on ``workers`` processes (default: one per core), one thread each.

    Each worker is a fork of this process where that is safe (``start_method`` None or
    ``"fork"``: ready at once, with the market and the strategy as they are here), or a new
    Python process (``"spawn"``) that imports backtester and receives the market and the
    strategy pickled (which must then be importable: defined in a module, not in
    ``__main__`` or a notebook); see ``workers``. A run that kills its worker, or a step of
    a run that goes past ``run_timeout`` seconds, is recorded as failed and the sweep goes
    on (``isolation``). ``keep_workers``: start from the workers an earlier sweep kept, and
    keep these for the next (``isolation.run_pool``).
    """
    workers = int(workers or multiprocessing.cpu_count())
    yield from run_pool(market, strategy, chunks, equity=equity, workers=max(1, workers),
                        run_timeout=run_timeout, warm_up=warm_up_serial,
                        keep_workers=keep_workers, start_method=start_method)


# --- Dask distributed ------------------------------------------------------------------------

def _dask_task(market: Market, strategy: bytes, files: dict, runs: list[Run], equity: bool,
               token: str, run_timeout: float | None) -> ChunkOutput:
    """A chunk on a Dask worker, run in worker processes of its own (kept for the sweep's
    next chunks), so that a run that crashes or hangs does not take the Dask worker along.

    ``strategy`` comes pickled, and is unpickled once the strategy files it may refer to
    (``files``: ``strategy.FILE_MODULES`` of the sweep's process) are imported here."""
    import_strategy_files(files)
    cache = CACHES.get(token, market, pickle.loads(strategy))
    return run_chunk_alone(cache, runs, equity=equity, run_timeout=run_timeout)


def _dask_release(token: str) -> None:
    """Stop the worker processes a sweep left on this Dask worker."""
    CACHES.release(token)


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
             scheduler: str | None = None, workers: int | None = None,
             run_timeout: float | None = None) -> Iterator[tuple[list[Run], ChunkOutput]]:
    """Chunks as tasks on a Dask cluster: ``client``, or the scheduler at ``scheduler``
    (``tcp://host:8786``), or else a local cluster of ``workers`` processes.

    The market is scattered to every worker once; each task returns only its
    summary rows (and curves when asked). Workers need backtester and the
    strategy's module importable. Each Dask worker runs its chunks in a process of its
    own, as the ``processes`` backend does (a crash or a run past ``run_timeout`` is a
    failed run): it holds a second copy of the market.
    """
    from distributed import as_completed

    warm_up_serial()  # a local cluster's workers then load the compiled batch from the cache
    client, own = _dask_client(client, scheduler, workers)
    try:
        market_future = client.scatter(market, broadcast=True, hash=False)
        payload = pickled(strategy, strategy)
        files = dict(FILE_MODULES)  # (--strategy path.py:NAME: imported on the workers)
        token = uuid.uuid4().hex
        slots = 2 * max(1, sum(client.nthreads().values()))
        finished = as_completed()
        futures: dict = {}

        def submit(runs):
            future = client.submit(_dask_task, market_future, payload, files, runs, equity,
                                   token, run_timeout, pure=False)
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
        with contextlib.suppress(Exception):  # workers that are gone have nothing to stop
            client.run(_dask_release, token)
        if own:
            cluster = getattr(client, "cluster", None)
            client.close()
            if cluster is not None:
                cluster.close()
