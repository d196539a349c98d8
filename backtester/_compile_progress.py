"""What a command shows while numba compiles the kernels on an empty cache (issue 14).

A first run compiles about a hundred functions (each numba signature: the kernel's
rules, its steps, numba's own array helpers) before it simulates anything, and then
loads them from numba's on-disk cache. ``CompileProgress`` listens to numba's
``numba:compile`` events and says what is going on: on a terminal, one line redrawn
as functions compile (how many, the share of a typical first run's, the seconds
spent); elsewhere (a log, a pipe) a plain line when it starts and one when it is done.
"""

from __future__ import annotations

import functools
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from numba.core import event

# A cold first run of each command (benchmarks/RESULTS.md, "The quiet stretch"):
# the signatures numba compiles, and about how long that takes (measured, load about 1)
FIRST_RUN = {"run": (114, 24), "compare": (114, 24), "sweep": (187, 39), "advise": (222, 56)}
# with a second process compiling parts of the kernel (``engine.precompile``): this one
# compiles fewer functions, and the first run ends sooner
PARALLEL = {"run": (84, 19), "compare": (84, 19), "sweep": (159, 34), "advise": (207, 49)}


class CompileProgress(event.Listener):
    """Shows numba's compiling on ``stream`` until ``close()``; ``expected``: the
    signatures a cold run of the command compiles, ``seconds``: how long that takes."""

    def __init__(self, stream: TextIO, expected: int, seconds: float):
        self.stream = stream
        self.expected = expected
        self.live = bool(getattr(stream, "isatty", lambda: False)())
        self.compiled = 0
        self.depth = 0  # compiles under way (a function compiles its callees inside its own)
        self.started = time.perf_counter()
        self.shown = 0.0
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.busy = threading.Event()  # set while parts compile in a second process too
        self.write(f"compiling the simulation kernels, one time, about {seconds:.0f} s on two "
                   "cores (later runs load them)...\n")
        if self.live:  # a clock that moves while one large function compiles
            threading.Thread(target=self._tick, daemon=True).start()

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

    def on_start(self, ev) -> None:
        self.depth += 1

    def on_end(self, ev) -> None:
        self.compiled += 1
        self.depth -= 1
        if not self.live:
            return
        if self.depth == 0 and not self.busy.is_set():  # the command may print: out of its way
            with self.lock:
                self.write("\r\x1b[K")
        elif time.perf_counter() - self.shown > 0.1:
            self._show()

    def line(self) -> str:
        # a count, not a share of the time: the largest functions finish last
        return (f"compiling: {self.compiled} of about {max(self.expected, self.compiled)} "
                f"functions{' (and more in a second process)' if self.busy.is_set() else ''}, "
                f"{time.perf_counter() - self.started:.0f} s")

    def _show(self) -> None:
        with self.lock:
            if (self.depth > 0 or self.busy.is_set()) and not self.closed.is_set():
                self.shown = time.perf_counter()
                # the cursor left at the line's start: what the command prints meanwhile
                # (its other thread, while parts compile) writes over it, not after it
                self.write("\r" + self.line() + "\x1b[K\r")

    def _tick(self) -> None:
        while not self.closed.wait(0.5):
            self._show()

    def close(self) -> None:
        with self.lock:
            self.closed.set()
            took = time.perf_counter() - self.started
            if not self.compiled:
                return
            done = f"compiled {self.compiled} functions in {took:.0f} s; later runs load them"
            self.write(("\r" + done + "\x1b[K\n") if self.live else done + "\n")


class compiling_shown:
    """Context manager: a ``CompileProgress`` for ``command`` registered with numba for the
    block (on ``sys.stderr``), or None when ``show`` is false (a warm cache). ``parallel``:
    parts of the kernel compile in a second process (``engine.precompile``)."""

    def __init__(self, command: str, show: bool, parallel: bool = False,
                 stream: TextIO | None = None):
        self.command, self.show, self.parallel, self.stream = command, show, parallel, stream
        self.progress: CompileProgress | None = None

    def __enter__(self):
        if self.show and not SHOWN:  # (one display at a time: a command's, or a first call's)
            SHOWN.append(self)
            expected, seconds = FIRST_RUN.get(self.command, FIRST_RUN["run"])
            if self.parallel:
                expected, seconds = PARALLEL.get(self.command, (expected, seconds))
            self.progress = CompileProgress(self.stream or sys.stderr, expected, seconds)
            event.register("numba:compile", self.progress)
        return self.progress

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            event.unregister("numba:compile", self.progress)
            self.progress.close()
            SHOWN.remove(self)


SHOWN: list[compiling_shown] = []  # the display open now, if any
# the compiled function each command or entry point calls first (cached: nothing to show)
KERNELS = {"run": "engine.kernel.simulate", "compare": "engine.kernel.simulate",
           "sweep": "engine.batch.run_batch_serial", "advise": "risk.montecarlo.run_paths"}
WARM: set[str] = set()  # the library's entry points found compiled in this process


def shows_first_compile(command: str):
    """Decorator for the library's entry points (``run``, ``sweep``, ``advise``): a call that
    finds its kernel (``KERNELS``) not yet in numba's cache says what it compiles and shows
    its progress, as the command line does (on stderr; in a notebook, a line when it
    starts and one when it is done). Later calls, and calls under a display already open
    (the command line's), cost a set lookup."""
    def wrap(function):
        @functools.wraps(function)
        def call(*args, **kwargs):
            if command in WARM or SHOWN:
                return function(*args, **kwargs)
            from ._numba_cache import kernels_cached

            if kernels_cached(Path(__file__).parent, KERNELS[command]):
                WARM.add(command)
                return function(*args, **kwargs)
            with compiling_shown(command, True):
                value = function(*args, **kwargs)
            WARM.add(command)
            return value

        return call

    return wrap
