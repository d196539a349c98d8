"""A sweep's worker process: it runs chunks of runs for its parent, and dies with it.

A strategy may kill the process it runs in (``os._exit``, a segmentation fault, the
out-of-memory killer) or never return. So chunks run in a child process that the parent
watches: the parent sees the child's end of a pipe close when it dies, and kills it when
a step of a run goes past the time limit. The child kills itself when its parent dies
(``PR_SET_PDEATHSIG`` on Linux, and a thread that watches the parent's pid elsewhere), so
no worker outlives a sweep that was killed.

A child starts in one of two ways (``start_method``):

- ``"fork"``: a fork of the sweep's process, which has the market, the strategy and the
  compiled batch already: it is ready in milliseconds, shares the market's memory with
  its parent, and runs a strategy that could not be pickled (one defined in a notebook).
  It first lets go of what is the parent's (``leave_parent``). Where it is safe, on Linux,
  it is the default (``fork_is_safe``).
- ``"spawn"``: ``python -c BOOT`` started with ``subprocess`` (a Dask worker is a daemonic
  process, which may not start ``multiprocessing`` children), with the parent's
  ``sys.path`` first so that it imports the same backtester: about a second of CPU
  (Python, pandas, numba, the compiled batch). Over its pipes it receives what
  ``multiprocessing`` prepares a spawned child with (so it imports the parent's main
  module as a spawned process would), then the market and the strategy (pickled: the
  strategy must be importable, i.e. defined at the top level of a module or of a script
  guarded by ``if __name__ == "__main__"``).

Then either gets ``(runs, equity, timed)`` per chunk, and answers:

- ``("ready", None)`` once it can run chunks;
- ``("step", n)`` as each step of a chunk starts that works for n runs (when ``timed``):
  the parent's clock for the time limit;
- ``("done", ChunkOutput)``;
- ``("failed", traceback)`` for an error outside any run (a run's own error is in the
  ``ChunkOutput``), after which it exits.

A worker kept for the next sweep (``sweep(..., keep_workers=True)``) receives that sweep's
market and strategy as ``(LOAD, strategy files, pickled (market, strategy))`` before its
first chunk.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
import warnings
import weakref
from multiprocessing import spawn
from multiprocessing.connection import Connection

from ..strategy import FILE_MODULES, import_strategy_files
from .execute import ChunkOutput, ChunkRunner, warm_up_serial
from .grid import Run

BOOT = ("import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
        "from backtester.sweep.workers import child_main; "
        "sys.exit(child_main(*map(int, sys.argv[2:])))")
STRATEGY_FILES = "backtester_strategy_files"  # key of the preparation: FILE_MODULES
LOAD = "load"  # a kept worker's next sweep: its strategy files, market and strategy
START_METHODS = ("fork", "spawn")
_PR_SET_NAME = 15  # linux/prctl.h
_PR_SET_PDEATHSIG = 1
FORKED_NAME = b"sweep-worker"  # a forked worker's name in ps -o comm, top (spawned: python)
_SIGNAL_HINTS = {"SIGKILL": "killed, e.g. by the out-of-memory killer",
                 "SIGSEGV": "a segmentation fault", "SIGABRT": "aborted",
                 "SIGBUS": "a bus error", "SIGFPE": "a floating-point exception"}


class WorkerStartError(RuntimeError):
    """A worker process could not start (the sweep cannot run on this backend)."""


class StartFailures:
    """Worker processes that died while starting: one now and then (the out-of-memory
    killer at a busy moment) is replaced; a few in a row, or before any worker ever
    started, end the sweep with a ``WorkerStartError``."""

    LIMIT = 3

    def __init__(self):
        self.in_a_row = 0
        self.any_started = False

    def started(self) -> None:
        self.in_a_row, self.any_started = 0, True

    def died(self, code: int | None) -> None:
        self.in_a_row += 1
        if not self.any_started or self.in_a_row >= self.LIMIT:
            raise WorkerStartError(f"a worker process of the sweep died while starting "
                                   f"({exit_description(code)})")


def exit_description(code: int | None) -> str:
    """``"exit code -9: SIGKILL, killed, e.g. by the out-of-memory killer"``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            return f"exit code {code}"
        hint = _SIGNAL_HINTS.get(name)
        return f"exit code {code}: {name}" + (f", {hint}" if hint else "")
    return f"exit code {code}"


def crash_reason(code: int | None) -> str:
    return (f"WorkerCrash: the worker process died while running this run "
            f"({exit_description(code)})")


def timeout_reason(run_timeout: float) -> str:
    return (f"Timeout: the run took longer than the time limit (run_timeout={run_timeout:g} "
            "s); its worker process was stopped")


def pickled(obj, strategy, forks: bool = False) -> bytes:
    """``obj`` (the strategy, or something holding it) pickled for worker processes; a clear
    error if the strategy cannot be (``forks``: the workers could be forked instead)."""
    try:
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        fork = (", or on Linux fork the workers (start_method='fork'), which are not sent it"
                if forks else "")
        raise ValueError(f"the strategy {strategy!r} cannot be sent to worker processes "
                         f"({exc}); define it at the top level of a module (not inside a "
                         f"function, nor as a lambda){fork}") from exc


class Payload:
    """A sweep's market and strategy as its workers get them: a fork has them already; a
    spawned worker, and a kept one at its next sweep, gets them pickled (once)."""

    def __init__(self, market, strategy, forks: bool = True):
        self.market, self.strategy, self.forks = market, strategy, forks
        self._data: bytes | None = None

    @property
    def data(self) -> bytes:
        if self._data is None:
            self._data = pickled((self.market, self.strategy), self.strategy, self.forks)
        return self._data


def fork_is_safe() -> bool:
    """Whether a new worker may be a fork of this process when no start method is asked for:
    on Linux, while no other Python thread runs (a lock it held at the fork, the logging
    module's or numba's compiler lock, would stay held in the child for ever), and unless
    numba's parallel threads were started on GNU OpenMP, whose thread pool a fork breaks
    (a parallel numba function starts them, e.g. ``risk``'s bootstrap; an in-process sweep
    does not; numba's ``tbb`` and ``workqueue`` layers survive a fork). The threads of the
    BLAS libraries do: they reset theirs at a fork."""
    if not sys.platform.startswith("linux") or not hasattr(os, "fork"):
        return False
    if threading.active_count() > 1:
        return False
    return numba_threads() in (None, "tbb", "workqueue")


def numba_threads() -> str | None:
    """The threading layer whose threads numba started in this process (``"omp"``, ``"tbb"``,
    ``"workqueue"``), or None: none started (a parallel function, or asking
    ``numba.get_num_threads()``, starts them)."""
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is None or not getattr(parallel, "_is_initialized", False):
        return None
    return getattr(parallel, "_threading_layer", None) or "unknown"


class ForkedProcess:
    """A forked worker, with what the pool uses of ``subprocess.Popen``: ``pid``, ``poll``,
    ``wait`` and ``kill`` (a signal's death as its negative number, as ``Popen`` gives)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.returncode: int | None = None

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere (SIGCHLD ignored): as Popen does
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            while self._reap(0) is None:
                pass
            return self.returncode
        deadline, pause = time.monotonic() + timeout, 0.0005
        while self.poll() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(f"sweep worker {self.pid}", timeout)
            time.sleep(min(pause, left))
            pause = min(2 * pause, 0.05)
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, signal.SIGKILL)


_LIVE: weakref.WeakSet = weakref.WeakSet()  # this process's workers: a fork closes their pipes


class Worker:
    """One child process and the chunk it is running (parent side)."""

    def __init__(self, payload: Payload, gate: threading.Event | None = None,
                 fork: bool = False):
        """A new child: a fork of this process (``fork``; a new process if the system
        cannot fork now), or a new process that gets ``payload`` pickled once ``gate`` is
        set."""
        self.ready = False
        self.used = False  # has it finished a chunk (its caches hold other runs)
        self.task = None  # what the pool gave it to run
        self.deadline: float | None = None  # time.monotonic() by which the step must end
        self._reload = None  # another sweep's data, to send once ready (``reload``)
        self.forked = False
        if fork:
            with contextlib.suppress(OSError):  # (out of processes or memory now)
                self._fork(payload)
        if not self.forked:
            self._spawn(payload, gate)
        _LIVE.add(self)

    def _spawn(self, payload: Payload, gate: threading.Event | None) -> None:
        data = payload.data  # (raises here if the strategy cannot be pickled)
        to_child, from_parent = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        argv = [sys.executable, "-c", BOOT, json.dumps(sys.path), str(to_child), str(to_parent),
                str(os.getpid())]
        try:
            self.process = subprocess.Popen(argv, pass_fds=(to_child, to_parent),
                                            stdin=subprocess.DEVNULL)
        except BaseException:
            for fd in (from_parent, from_child):
                os.close(fd)
            raise
        finally:
            os.close(to_child)
            os.close(to_parent)
        self.outbox = Connection(from_parent, readable=False)
        self.inbox = Connection(from_child, writable=False)
        # what multiprocessing's spawn gives a child (sys.path, the working directory, the
        # main module as __mp_main__ so that a script's strategy unpickles), then the market
        # and strategy: from a thread, as the market can be large and the child is starting
        preparation = spawn.get_preparation_data("sweep-worker")
        preparation.pop("authkey", None)  # for multiprocessing's own connections: none here
        preparation[STRATEGY_FILES] = dict(FILE_MODULES)  # (--strategy path.py:NAME)
        preparation = pickle.dumps(preparation)
        # (``gate``: sent once it is set, while the child imports)
        threading.Thread(target=self._send, args=(gate, preparation, data),
                         daemon=True).start()

    def _fork(self, payload: Payload) -> None:
        to_child, from_parent = os.pipe()
        from_child, to_parent = os.pipe()
        parent = os.getpid()
        for stream in (sys.stdout, sys.stderr):  # (or the child would write them out again)
            with contextlib.suppress(Exception):
                stream.flush()
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns of a fork in a process with threads, counting the BLAS
                # libraries' (which fork safely); fork_is_safe looked at Python's own
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        except BaseException:
            for fd in (to_child, from_parent, from_child, to_parent):
                os.close(fd)
            raise
        if pid == 0:  # the child: never returns from here
            code, left = 1, False
            try:
                os.close(from_parent)
                os.close(from_child)
                leave_parent()
                left = True
                code = forked_main(to_child, to_parent, parent, payload)
            except SystemExit as exc:  # (a strategy's: the parent records a worker crash)
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                with contextlib.suppress(Exception):
                    traceback.print_exc()
            finally:
                if left:  # (its own exit functions; before that, the parent's are there)
                    quick_exit(code)
                os._exit(code)
        os.close(to_child)
        os.close(to_parent)
        self.forked = True
        self.process = ForkedProcess(pid)
        self.outbox = Connection(from_parent, readable=False)
        self.inbox = Connection(from_child, writable=False)

    def _send(self, gate: threading.Event | None, *messages: bytes) -> None:
        if gate is not None:
            gate.wait()
        with contextlib.suppress(OSError, ValueError):  # the child died or was stopped
            for message in messages:
                self.outbox.send_bytes(message)

    def reload(self, payload: Payload) -> None:
        """Another sweep's market and strategy (``payload``), for a worker kept from a sweep
        before: its next chunks are that sweep's. A worker still starting gets them once
        ready (its first market has then gone through the pipe: nothing interleaves)."""
        self._reload = (LOAD, dict(FILE_MODULES), payload.data)
        if self.ready:
            self._send_reload()

    def _send_reload(self) -> None:
        message, self._reload = self._reload, None
        if message is not None:
            with contextlib.suppress(OSError):  # it died since: receive() reports it
                self.outbox.send(message)

    def assign(self, task, runs: list[Run], equity: bool, run_timeout: float | None) -> None:
        """Start a chunk (only once ready: the market has gone through the pipe by then)."""
        self.task = task
        self.deadline = None if run_timeout is None else time.monotonic() + run_timeout
        with contextlib.suppress(OSError):  # it died since: receive() reports it, with the task
            self.outbox.send((runs, equity, run_timeout is not None))

    def receive(self, run_timeout: float | None):
        """Read what the child sent: None (nothing that ends the chunk), ``("done",
        ChunkOutput)`` or ``("died", exit code)`` (``ready`` tells whether it had started).
        Raises if the child could not start or failed outside any run."""
        while True:
            try:
                if not self.inbox.poll():
                    return None
                kind, value = self.inbox.recv()
            except (EOFError, OSError):
                code = self.process.wait()
                self._close()
                return "died", code
            if kind == "ready":
                self.ready = True
                self._send_reload()  # (before any chunk: chunks go to ready workers only)
            elif kind == "step":
                if run_timeout is not None:
                    self.deadline = time.monotonic() + value * run_timeout
            elif kind == "done":
                self.task, self.deadline, self.used = None, None, True
                return "done", value
            else:
                self.kill()
                if not self.ready and self.forked:
                    raise WorkerStartError(f"a worker process of the sweep (a fork of this "
                                           f"one) could not start:\n{value}")
                if not self.ready:
                    raise WorkerStartError(
                        "a worker process of the sweep could not start; the strategy must be "
                        "importable by a new Python process: define it in a module, or at the "
                        "top level of a script file (not in a notebook, an interactive session "
                        "or python -c), or on Linux fork the workers (start_method='fork'):"
                        f"\n{value}")
                raise RuntimeError(f"a worker process of the sweep failed outside any run:\n"
                                   f"{value}")

    def overdue(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def kill(self) -> int | None:
        """Stop the child at once (SIGKILL) and reap it; its exit code."""
        with contextlib.suppress(OSError):
            self.process.kill()
        code = self.process.wait()
        self._close()
        return code

    def stop(self, grace: float = 2.0) -> None:
        """Ask the child to exit (end of its input); kill it if it has not within ``grace``."""
        stop_all([self], grace)

    def _close(self) -> None:
        for connection in (self.outbox, self.inbox):
            with contextlib.suppress(OSError):
                connection.close()


def stop_all(workers: list[Worker], grace: float = 2.0) -> None:
    """Ask every child to exit at once (the end of its input), then wait for them; kill those
    that have not exited ``grace`` seconds later. (Asked one at a time, each would wait for
    the exit of the one before it.)"""
    for worker in workers:
        worker._close()
    deadline = time.monotonic() + grace
    for worker in workers:
        try:
            worker.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.kill()


# --- the child ---------------------------------------------------------------------------------


def die_with_parent(parent_pid: int) -> None:
    """Exit when the parent process dies, even while a run holds the interpreter."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(AttributeError, OSError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:  # it died before the line above took effect
        os._exit(1)

    def watch() -> None:  # where there is no PDEATHSIG (and as a second guard)
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def quick_exit(code: int = 0) -> None:
    """End the worker at once, its work done: what a normal exit does that matters (the
    ``atexit`` functions, e.g. ``logging``'s, which flush and close a strategy's log files;
    the standard streams flushed), without tearing the interpreter down, module by module
    and object by object, which takes this process ~0.3-0.6 s of CPU (numba's and pandas'
    objects) while the sweep waits for it."""
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def name_process(name: bytes) -> None:
    """The name ``ps -o comm`` and ``top`` show for this process (Linux; at most 15 bytes)."""
    with contextlib.suppress(AttributeError, OSError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name), 0, 0, 0)


def leave_parent() -> None:
    """In a forked worker, first: let go of what is its parent's.

    - the pipes of the parent's other workers: a copy held here would keep a worker from
      seeing its input end, and the parent from seeing a worker die;
    - the parent's exit functions (its files, its kept workers), which are the parent's to
      run; the ones the strategy registers here run when this worker ends;
    - the parent's objects, never collected here (a finalizer that flushes a file would
      write the parent's data again);
    - the signal handlers Python code installed in the parent (the default again; Ctrl-C
      is ignored: the parent handles it), and its standard input (``/dev/null``, as a
      spawned worker's)."""
    for worker in list(_LIVE):
        worker._close()
    atexit._clear()
    gc.freeze()
    for number in signal.valid_signals():
        with contextlib.suppress(OSError, ValueError, TypeError):
            if callable(signal.getsignal(number)):
                signal.signal(number, signal.SIG_DFL)
    with contextlib.suppress(ValueError):  # (forked from a thread other than the main one)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
    name_process(FORKED_NAME)


def forked_main(inbox_fd: int, outbox_fd: int, parent_pid: int, payload: Payload) -> int:
    """A worker forked from its sweep's process (``Worker._fork``), once it has left its
    parent's things (``leave_parent``): the market, the strategy and the compiled batch are
    here already."""
    die_with_parent(parent_pid)
    inbox = Connection(inbox_fd, writable=False)
    outbox = Connection(outbox_fd, readable=False)
    try:  # (the compiled batch is the one the parent's warm-up loaded before it forked)
        runner = ChunkRunner(payload.market, payload.strategy)
    except Exception:
        outbox.send(("failed", traceback.format_exc()))
        return 1
    outbox.send(("ready", None))
    return serve(inbox, outbox, runner)


def child_main(inbox_fd: int, outbox_fd: int, parent_pid: int) -> int:
    """A spawned worker (``BOOT``): its preparation, the market and the strategy in, then
    chunks in, outputs out, until its input ends."""
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    inbox = Connection(inbox_fd, writable=False)
    outbox = Connection(outbox_fd, readable=False)
    try:
        preparation = pickle.loads(inbox.recv_bytes())
        files = preparation.pop(STRATEGY_FILES, {})
        spawn.prepare(preparation)
        import_strategy_files(files)  # before the strategy, which refers to them by name
        market, strategy = pickle.loads(inbox.recv_bytes())
        runner = ChunkRunner(market, strategy)
        warm_up_serial()  # load the compiled batch now: not in the first run's time limit
    except EOFError:  # the parent stopped before sending the market
        return 0
    except Exception:
        outbox.send(("failed", traceback.format_exc()))
        return 1
    outbox.send(("ready", None))
    return serve(inbox, outbox, runner)


def serve(inbox: Connection, outbox: Connection, runner: ChunkRunner) -> int:
    """A ready worker's loop: chunks in, outputs out, until its input ends."""

    def step(n: int) -> None:
        outbox.send(("step", n))

    while True:
        try:
            message = inbox.recv()
        except EOFError:
            quick_exit()
            return 0
        if message[0] == LOAD:  # kept from a sweep before: the next sweep's data
            try:
                import_strategy_files(message[1])
                runner = ChunkRunner(*pickle.loads(message[2]))
            except Exception:
                outbox.send(("failed", traceback.format_exc()))
                return 1
            continue
        runs, equity, timed = message
        try:
            output: ChunkOutput = runner.run_chunk(runs, equity=equity, parallel=False,
                                                   on_step=step if timed else None)
        except Exception:  # a run's own error is in its row: this is not one
            outbox.send(("failed", traceback.format_exc()))
            return 1
        # (a strategy's SystemExit ends the process: the parent records a worker crash)
        outbox.send(("done", output))
