"""A sweep's worker process: it runs chunks of runs for its parent, and dies with it.

A strategy may kill the process it runs in (``os._exit``, a segmentation fault, the
out-of-memory killer) or never return. So chunks run in a child process that the parent
watches: the parent sees the child's end of a pipe close when it dies, and kills it when
a step of a run goes past the time limit. The child kills itself when its parent dies
(``PR_SET_PDEATHSIG`` on Linux, and a thread that watches the parent's pid elsewhere), so
no worker outlives a sweep that was killed.

The child is ``python -c BOOT`` started with ``subprocess`` (a Dask worker is a daemonic
process, which may not start ``multiprocessing`` children), with the parent's
``sys.path`` first so that it imports the same backtester. Over its pipes it receives
what ``multiprocessing`` prepares a spawned child with (so it imports the parent's main
module as a spawned process would), the market and the strategy once (pickled: the
strategy must be importable, i.e. defined at the top level of a module or of a script
guarded by ``if __name__ == "__main__"``), then ``(runs, equity, timed)`` per chunk, and
answers:

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
import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
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
_PR_SET_PDEATHSIG = 1  # linux/prctl.h
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


class Worker:
    """One child process and the chunk it is running (parent side)."""

    def __init__(self, payload: bytes, gate: threading.Event | None = None):
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
        self.ready = False
        self.used = False  # has it finished a chunk (its caches hold other runs)
        self.task = None  # what the pool gave it to run
        self.deadline: float | None = None  # time.monotonic() by which the step must end
        self._reload = None  # another sweep's data, to send once ready (``reload``)
        # what multiprocessing's spawn gives a child (sys.path, the working directory, the
        # main module as __mp_main__ so that a script's strategy unpickles), then the market
        # and strategy: from a thread, as the market can be large and the child is starting
        preparation = spawn.get_preparation_data("sweep-worker")
        preparation.pop("authkey", None)  # for multiprocessing's own connections: none here
        preparation[STRATEGY_FILES] = dict(FILE_MODULES)  # (--strategy path.py:NAME)
        preparation = pickle.dumps(preparation)
        # (``gate``: sent once it is set, while the child imports)
        threading.Thread(target=self._send, args=(gate, preparation, payload),
                         daemon=True).start()

    def _send(self, gate: threading.Event | None, *messages: bytes) -> None:
        if gate is not None:
            gate.wait()
        with contextlib.suppress(OSError, ValueError):  # the child died or was stopped
            for message in messages:
                self.outbox.send_bytes(message)

    def reload(self, payload: bytes) -> None:
        """Another sweep's market and strategy (``payload``), for a worker kept from a sweep
        before: its next chunks are that sweep's. A worker still starting gets them once
        ready (its first market has then gone through the pipe: nothing interleaves)."""
        self._reload = (LOAD, dict(FILE_MODULES), payload)
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
                if not self.ready:
                    raise WorkerStartError(
                        "a worker process of the sweep could not start; the strategy must be "
                        "importable by a new Python process: define it in a module, or at the "
                        "top level of a script file (not in a notebook, an interactive session "
                        f"or python -c):\n{value}")
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


def quick_exit() -> None:
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
    os._exit(0)


def child_main(inbox_fd: int, outbox_fd: int, parent_pid: int) -> int:
    """The worker process: chunks in, outputs out, until its input ends."""
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
