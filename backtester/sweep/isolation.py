"""Runs isolated in worker processes: a run that kills its worker or runs past its time limit
is recorded as failed, and the sweep goes on.

A chunk runs in one worker (``workers.Worker``). When that worker dies or is stopped
for running past the time limit, nothing of the chunk came back and any of its runs may
be the cause: its runs are then run one at a time, and only a run that fails alone is
recorded as failed (``WorkerCrash: ...`` or ``Timeout: ...`` in its ``error``). A run
that crashes a worker which had run other chunks before is tried once more in a new
worker, so that what those chunks left behind (memory, caches) is not blamed on it. The
chunk's outcome goes to the summary once every run of it has one, as one part file.

Two drivers share these rules: ``run_pool`` keeps a pool of workers busy (the
``processes`` backend), ``run_chunk_alone`` runs one chunk to the end in workers of its
own (inside a Dask task).
"""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import wait

from ..data.market import Market
from .execute import ChunkOutput
from .grid import Run
from .workers import (
    Payload,
    StartFailures,
    Worker,
    crash_reason,
    fork_is_safe,
    stop_all,
    timeout_reason,
)


@dataclass
class Group:
    """One chunk of the sweep until every run of it has an outcome."""

    runs: list[Run]
    output: ChunkOutput
    left: int


@dataclass
class Task:
    """Some runs of a group, to run together in one worker."""

    group: Group
    positions: list[int]  # which runs of the group
    fresh: bool = False  # only in a worker that has run nothing yet

    @property
    def runs(self) -> list[Run]:
        return [self.group.runs[k] for k in self.positions]


def new_group(runs: list[Run], equity: bool) -> tuple[Group, Task]:
    group = Group(runs, ChunkOutput.empty(runs, equity), len(runs))
    return group, Task(group, list(range(len(runs))))


def settle(task: Task, output: ChunkOutput) -> None:
    """The task came back: its runs' rows (successes and ordinary failures)."""
    for j, k in enumerate(task.positions):
        task.group.output.put(k, output, j)
    task.group.left -= len(task.positions)


def fault(task: Task, reason: str, *, crashed: bool, worker_was_used: bool) -> list[Task]:
    """The task's worker died (``crashed``) or was stopped at the time limit: the tasks that
    find out which run did it. A run alone is the culprit, and recorded failed."""
    if len(task.positions) > 1:
        return [Task(task.group, [k]) for k in task.positions]
    if crashed and worker_was_used and not task.fresh:
        return [Task(task.group, task.positions, fresh=True)]
    task.group.output.fail(task.positions[0], reason)
    task.group.left -= 1
    return []


def _until(deadline: float | None) -> float | None:
    """Seconds to wait for a message before a deadline (at most an hour: a wait of very
    many seconds overflows the system's poll)."""
    if deadline is None:
        return None
    return min(3600.0, max(0.0, deadline - time.monotonic()))


# --- a pool of workers: the processes backend ---------------------------------------------------


def run_pool(market: Market, strategy, chunks: Iterable[list[Run]], *, equity: bool,
             workers: int, run_timeout: float | None, warm_up: Callable[[], object] | None = None,
             keep_workers: bool = False,
             start_method: str | None = None) -> Iterator[tuple[list[Run], ChunkOutput]]:
    """Chunks on ``workers`` worker processes; yields ``(runs, output)`` per chunk as it
    completes. At most two chunks per worker are open at a time.

    ``warm_up``: called here once the first workers are starting (they import meanwhile);
    they receive the market, and load the compiled code, only when it has returned (so
    that, with an empty numba cache, they load what it compiled instead of each
    compiling it).

    ``keep_workers``: workers kept by an earlier sweep of this process are used first (sent
    this sweep's market and strategy), and this sweep's are kept when it ends well, for the
    next (``stop_kept_workers`` ends them).

    ``start_method``: ``"fork"`` or ``"spawn"`` (``workers.Worker``); None: a fork where
    ``fork_is_safe``, else spawn. Forks are made once ``warm_up`` has returned: they have
    the compiled batch it loaded."""
    payload = Payload(market, strategy)
    fork = start_method == "fork" or (start_method is None and fork_is_safe())
    if not fork:
        payload.data  # noqa: B018 (pickled now: a strategy that cannot be is named at once)
    gate = threading.Event()
    if fork and warm_up is not None:
        warm_up()
        warm_up = None
    if warm_up is None:
        gate.set()
    starts = StartFailures()
    pool: list[Worker] = _take_kept(workers) if keep_workers else []
    for worker in pool:
        worker.reload(payload)
    queue: deque[Task] = deque()
    pending = iter(chunks)
    open_groups = 0
    exhausted = False
    clean = False
    try:
        while True:
            while not exhausted and open_groups < 2 * workers:
                runs = next(pending, None)
                if runs is None:
                    exhausted = True
                else:
                    queue.append(new_group(runs, equity)[1])
                    open_groups += 1
            if exhausted and not queue and all(w.task is None for w in pool):
                break
            _assign(pool, queue, payload, workers, equity, run_timeout, gate, fork)
            if not gate.is_set():
                try:
                    warm_up()
                finally:
                    gate.set()
            touched: dict[int, Group] = {}
            deadlines = [w.deadline for w in pool if w.deadline is not None]
            ready = set(wait([w.inbox for w in pool], _until(min(deadlines, default=None))))
            for worker in list(pool):
                task, was_ready = worker.task, worker.ready
                event = worker.receive(run_timeout) if worker.inbox in ready else None
                if worker.ready and not was_ready:
                    starts.started()
                if event is None and worker.overdue(time.monotonic()):
                    worker.kill()
                    event = ("timeout", None)
                if event is None:
                    continue
                if event[0] == "done":
                    settle(task, event[1])
                    touched[id(task.group)] = task.group
                    continue
                pool.remove(worker)  # it died, or was stopped at the time limit
                if not worker.ready:
                    starts.died(event[1])  # another one starts in its place
                if task is None:
                    continue  # an idle or starting worker died: nothing lost
                crashed = event[0] == "died"
                reason = crash_reason(event[1]) if crashed else timeout_reason(run_timeout)
                queue.extendleft(reversed(fault(task, reason, crashed=crashed,
                                                worker_was_used=worker.used)))
                touched[id(task.group)] = task.group
            if touched:  # the idle workers' next chunks, before the caller takes the rows
                _assign(pool, queue, payload, workers, equity, run_timeout, gate, fork)
            for group in touched.values():
                if group.left == 0:
                    open_groups -= 1
                    yield group.runs, group.output
        clean = True
    finally:
        gate.set()  # (no sending thread left waiting)
        if clean and keep_workers:
            _keep(pool)
        elif clean:
            stop_all(pool)
        else:
            for worker in pool:
                worker.kill()


# --- workers kept between sweeps ---------------------------------------------------------------

_KEPT: list[Worker] = []  # idle, ready workers of this process's last sweeps
_KEPT_LOCK = threading.Lock()


def _take_kept(n: int) -> list[Worker]:
    """Up to ``n`` kept workers that are still alive (the others are reaped)."""
    with _KEPT_LOCK:
        alive = [w for w in _KEPT if w.process.poll() is None]
        dead = [w for w in _KEPT if w not in alive]
        taken, _KEPT[:] = alive[:n], alive[n:]
    for worker in dead:
        worker.kill()
    return taken


def _keep(workers: list[Worker]) -> None:
    with _KEPT_LOCK:
        _KEPT.extend(workers)


def stop_kept_workers() -> int:
    """End the worker processes that sweeps with ``keep_workers=True`` left running; how
    many there were. (Also done when this process exits; they die with it in any case.)"""
    with _KEPT_LOCK:
        workers, _KEPT[:] = list(_KEPT), []
    stop_all(workers)
    return len(workers)


atexit.register(stop_kept_workers)


def _assign(pool: list[Worker], queue: deque[Task], payload: Payload, size: int, equity: bool,
            run_timeout: float | None, gate: threading.Event | None = None,
            fork: bool = False) -> None:
    """Give queued tasks to idle workers; start workers while tasks wait and there is room.

    A task that must run in a fresh worker takes one that has run nothing (an idle worker
    that has is stopped to make room for one when the pool is full)."""
    idle = [w for w in pool if w.ready and w.task is None]
    for task in list(queue):
        if not idle:
            break
        choices = [w for w in idle if not w.used] if task.fresh else idle
        if not choices:
            continue
        worker = max(choices, key=lambda w: w.used)  # keep the fresh ones for fresh tasks
        idle.remove(worker)
        queue.remove(task)
        worker.assign(task, task.runs, equity, run_timeout)
    starting = sum(1 for w in pool if not w.ready)
    waiting = len(queue) - starting
    if waiting > 0 and len(pool) >= size and any(t.fresh for t in queue) and starting == 0:
        spare = next((w for w in idle if w.used), None)
        if spare is not None:
            spare.stop()
            pool.remove(spare)
    while waiting > 0 and len(pool) < size:
        pool.append(Worker(payload, gate, fork))
        waiting -= 1


# --- one chunk in workers of its own: inside a Dask task ----------------------------------------


class WorkerCache:
    """Idle workers of one sweep kept by a process that runs its chunks (a Dask worker),
    so that a worker (and the market it holds) serves chunk after chunk."""

    def __init__(self, market: Market, strategy):
        # (spawned workers only: a Dask worker runs tasks on threads of its own)
        self.payload = Payload(market, strategy, forks=False)
        self.payload.data  # noqa: B018 (pickled now: a strategy that cannot be is named)
        self.idle: list[Worker] = []
        self.lock = threading.Lock()
        self.closed = False
        self.starts = StartFailures()

    def take(self, fresh: bool = False) -> Worker:
        with self.lock:
            for worker in list(self.idle):
                if worker.process.poll() is not None:  # died while idle
                    self.idle.remove(worker)
                    worker.kill()
                elif not (fresh and worker.used):
                    self.idle.remove(worker)
                    return worker
        return Worker(self.payload)

    def give_back(self, worker: Worker) -> None:
        with self.lock:
            if not self.closed:
                self.idle.append(worker)
                return
        worker.stop()  # the sweep ended while this chunk ran

    def close(self) -> None:
        with self.lock:
            workers, self.idle, self.closed = self.idle, [], True
        stop_all(workers)


def run_chunk_alone(cache: WorkerCache, runs: list[Run], *, equity: bool,
                    run_timeout: float | None) -> ChunkOutput:
    """One chunk to the end, in workers from ``cache``: every run gets an outcome."""
    group, first = new_group(runs, equity)
    queue = deque([first])
    while queue:
        task = queue.popleft()
        worker = cache.take(fresh=task.fresh)
        try:
            event = _run_task(worker, task, equity, run_timeout, cache.starts)
        except BaseException:
            worker.kill()
            raise
        if event is None:  # it died while starting: another worker, same task
            queue.appendleft(task)
            continue
        if event[0] == "done":
            settle(task, event[1])
            cache.give_back(worker)
            continue
        crashed = event[0] == "died"
        reason = crash_reason(event[1]) if crashed else timeout_reason(run_timeout)
        queue.extendleft(reversed(fault(task, reason, crashed=crashed,
                                        worker_was_used=worker.used)))
    return group.output


def _run_task(worker: Worker, task: Task, equity: bool, run_timeout: float | None,
              starts: StartFailures):
    """Wait for the worker to start, run the task; ``("done", output)``, ``("died", code)``
    or ``("timeout", None)``; None if the worker died while starting."""
    if not worker.ready:
        while not worker.ready:
            wait([worker.inbox])
            event = worker.receive(run_timeout)
            if event is not None:
                starts.died(event[1])
                return None
        starts.started()
    worker.assign(task, task.runs, equity, run_timeout)
    while True:
        if wait([worker.inbox], _until(worker.deadline)):
            event = worker.receive(run_timeout)
            if event is not None:
                return event
        elif worker.overdue(time.monotonic()):
            worker.kill()
            return "timeout", None


@dataclass
class _Caches:
    """Per process: the worker caches of the last sweeps that ran chunks here."""

    kept: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self, token: str, market: Market, strategy) -> WorkerCache:
        with self.lock:
            cache = self.kept.get(token)
            if cache is None:
                while len(self.kept) >= 2:  # earlier sweeps' workers
                    self.kept.pop(next(iter(self.kept))).close()
                cache = self.kept[token] = WorkerCache(market, strategy)
            return cache

    def release(self, token: str) -> None:
        with self.lock:
            cache = self.kept.pop(token, None)
        if cache is not None:
            cache.close()


CACHES = _Caches()
