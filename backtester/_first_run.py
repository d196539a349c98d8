"""A first run on an empty numba cache that does not wait for the compiler (issue 14).

Compiling the simulation kernels costs 16-25 s on two cores; the same kernels run as
plain Python (numba's ``NUMBA_DISABLE_JIT``) simulate the embedded two-year hourly pair,
both margin modes, in about 0.4 s (5-7 us a bar and symbol at a rebalance a day, up to
24 us when every bar trades; benchmarks/RESULTS.md, "The first run, third pass"). Both
give the same numbers to the bit: the kernels are written for both (the tests run them
so), and the 96 runs of the identity check (three venues, both modes, 3x-75x, 192,472
fills, 17,216 liquidation rows) are identical interpreted and compiled.

So when ``backtester run`` or ``backtester compare`` finds the cache empty and its job is
small (``BUDGET`` seconds at ``SECONDS_PER_BAR_SYMBOL``, the rate of a run that trades
often), it does not compile first:

- a background process (``engine.precompile``'s ``for_later``, at a lower priority)
  compiles the kernels into numba's cache, for the runs that follow;
- the command itself starts again, as it was typed, with ``NUMBA_DISABLE_JIT=1``, and says
  so on stderr. Its data are loaded before the choice (the job's size is known then) and
  again by the new start; what the command printed before the choice is held back, not
  printed twice.

A larger job compiles first, as before, with its progress shown; if kernels are already
being compiled in the background, it waits for them instead of compiling them twice.

``BACKTESTER_FIRST_RUN``: ``auto`` (the default), ``interpret`` (always, on an empty cache)
or ``compile`` (never). Only a process started as the command does this: ``main(argv)``
called from Python compiles as before.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import time
from pathlib import Path

CHOICE = "BACKTESTER_FIRST_RUN"
CHOICES = ("auto", "interpret", "compile")
STARTED_AGAIN = "BACKTESTER_INTERPRETED"  # set in the command's second start
SECONDS_PER_BAR_SYMBOL = 12e-6  # interpreted, one run; 24 us when every bar trades
BUDGET = 8.0  # seconds an interpreted job may take (a cold compile: 16-25 s, then the job)
COMMANDS = ("run", "compare")


def choice() -> str:
    value = os.environ.get(CHOICE, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{CHOICE}={os.environ[CHOICE]!r}: expected one of "
                         f"{', '.join(CHOICES)}")
    return value


def interpreted_seconds(bar_symbols: int) -> float:
    """About how long a job of ``bar_symbols`` (bars x symbols x runs) takes interpreted."""
    return bar_symbols * SECONDS_PER_BAR_SYMBOL


class FirstRun:
    """A command's choice on an empty cache, made once its data are loaded
    (``load_then_choose``). ``package``: the package's folder, unresolved (as numba names
    its cache); ``compile_now``: what the command does to compile first (show the
    progress, start the second process).

    What the command prints before the choice is held back (``hold``) until it is made
    (``release``): a command started again prints it again."""

    def __init__(self, argv: list[str], package: Path, compile_now):
        self.argv, self.package, self.compile_now = argv, package, compile_now
        self._stdout = None

    def hold(self) -> None:
        self._stdout, sys.stdout = sys.stdout, io.StringIO()

    def release(self) -> None:
        """Print what was held, and print on from now (nothing if nothing is held)."""
        if self._stdout is not None:
            held, sys.stdout, self._stdout = sys.stdout.getvalue(), self._stdout, None
            sys.stdout.write(held)

    def choose(self, bar_symbols: int) -> None:
        """Start again interpreted (this call then does not return), or compile first."""
        from . import _numba_cache

        how = choice()
        if how == "interpret" or (
                how == "auto" and interpreted_seconds(bar_symbols) <= BUDGET):
            start_for_later(self.package, self.argv)
            if self._stdout is not None:
                self._stdout.flush()
            start_again_interpreted()
        lock = _numba_cache.compile_lock(self.package)
        if lock.held_elsewhere():
            sys.stderr.write("waiting for the simulation kernels compiling in the background "
                             "(started by an earlier first run)...\n")
            sys.stderr.flush()
            started = time.monotonic()
            lock.wait()
            sys.stderr.write(f"done, {time.monotonic() - started:.0f} s later\n")
            if _numba_cache.kernels_cached(self.package):
                return
        self.compile_now()


def load_then_choose(args, runs: int, load):
    """``load()``'s Market; on an empty cache, with the command's choice made from its size
    (bars x symbols x ``runs``), and what the command printed until then released."""
    market = load()
    first: FirstRun | None = getattr(args, "first_run", None)
    if first is not None:
        n_bars, n_symbols = market.close.shape
        first.choose(n_bars * n_symbols * runs)
        first.release()
    return market


def start_again_interpreted() -> None:
    """The command, started again as it was typed, with numba's JIT off. Does not return."""
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1", STARTED_AGAIN: "1"}
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execve(sys.executable, sys.orig_argv, env)
    sys.exit(subprocess.call([sys.executable, *sys.orig_argv[1:]], env=env))


def started_again_note() -> str | None:
    """What the command says on its interpreted start (None on any other start)."""
    if not os.environ.get(STARTED_AGAIN):
        return None
    return ("first run: the simulation kernels compile in the background for later runs "
            "(about 20 s);\nthis one runs them as plain Python meanwhile: the same results, "
            "more slowly per bar")


def start_for_later(package: Path, argv: list[str]) -> None:
    """The background process that compiles what the command ``argv`` calls, for the runs
    that follow (``engine.precompile.for_later``); nothing if it cannot start."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("NUMBA_DISABLE_JIT", STARTED_AGAIN)}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(package.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    # (a second process too, where it may: both at a low priority, the command goes first)
    env.setdefault("BACKTESTER_COMPILE_WORKER", "1")
    with contextlib.suppress(OSError):  # (-P: the package as the command imported it)
        subprocess.Popen([sys.executable, "-P", "-m", "backtester.engine.precompile",
                          "--for-later", *argv], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
