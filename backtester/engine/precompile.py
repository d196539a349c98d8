"""A cold start's compiling, on two cores: parts of the kernel compiled side by side.

On an empty numba cache a first run spends most of its time compiling ``simulate``'s
call tree, one function after another on one core. The large branches of that tree
are independent: ``compile_in_parallel()`` starts a second process that compiles some
(``WORKER_SHARE``: the orders' fills, the per-bar record of positions, the close where
data end, and the account's opening, which the run calls from Python before
``simulate``) while this one compiles the others (``MAIN_SHARE``: the liquidations, the
mark to market and the quiet stretch), and waits for it. Each compiled function goes to
numba's on-disk cache, where numba looks first when it types a caller: ``simulate`` then
compiles around branches already compiled, by either process.

Each function is compiled for the signature the kernel calls it with, derived from a
run of two symbols built here. The worker compiles without touching the cache and
saves its functions only once this process is done compiling and waits: two processes
never write numba's cache at once (its index is not safe against two signatures of
one function written together). A branch not ready in time is compiled where it is
needed, as without this module: the worker's failure costs nothing else.

Used by the command line on a cold cache only (``backtester._numba_cache``), when a
CPU is free for the worker (``worth_it``); not under ``NUMBA_DISABLE_JIT``.
``python -m backtester.engine.precompile`` runs the worker's share.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

WORKER_SHARE = ("process_orders", "record_positions", "close_data_ends", "open_account")
MAIN_SHARE = ("liquidate_at_open", "pay_funding", "check_liquidations", "mark_to_market",
              "quiet_stretch")
WAIT_SECONDS = 300.0  # a worker slower than this is abandoned (its cache files are whole)


def _kernel_calls() -> dict:
    """``{function name: (dispatcher, arguments)}``: the calls ``simulate`` makes (and
    ``driver.execute`` around it), with arguments of the types it passes, from a run of two
    symbols and 48 bars."""
    from ..config import RunConfig
    from ..data import make_market
    from ..prepare import prepare_run
    from . import kernel, liquidate, orders
    from .account import open_account
    from .driver import allocate_records
    from .enums import N_MARGIN_FIELDS, N_OUT, Outputs, State

    market = make_market(48, 2, seed=1, funding_every=8)
    targets = np.full((48, 2), np.nan)
    config = RunConfig(stand_in={symbol: "BTC_USDT" for symbol in market.symbols})
    inputs = prepare_run(market, targets, config).inputs
    bars = inputs.bars
    n_bars, n = bars.open.shape
    opening = (float(inputs.initial_balance), inputs.mode.copy(), inputs.sym.copy(),
               inputs.versions, inputs.holdings, bars.mark_open)
    book, _ = getattr(open_account, "py_func", open_account)(*opening)
    records = allocate_records(n, inputs.versions.tiers.shape[3], 64, 64)
    outputs = Outputs(np.empty((N_OUT, n_bars)), np.empty((n_bars, n)), np.empty((n_bars, n)),
                      np.empty((N_MARGIN_FIELDS, n_bars, n)))
    scratch = np.empty((kernel.SCRATCH_ROWS, n))
    t, i, now, row = np.int64(1), np.int64(0), float(bars.hours[1]), bars.close[1]
    return {
        "process_orders": (orders.process_orders, (t, now, t, row, row, scratch[0],
                                                   inputs.trading, book, records)),
        "record_positions": (kernel.record_positions, (t, book, outputs)),
        "close_data_ends": (orders.close_data_ends, (t, now, row, scratch[8], scratch[0],
                                                     inputs.trading, book, records)),
        "liquidate_at_open": (liquidate.liquidate_at_open,
                              (t, book.state[State.MARK], book, records)),
        "pay_funding": (kernel.pay_funding, (t, i, bars.funding_rate[1], book, records)),
        "check_liquidations": (liquidate.check_liquidations,
                               (t, np.int64(4), scratch[4:8], scratch[1:4], book, records)),
        "mark_to_market": (kernel.mark_to_market, (t, book, outputs.out)),
        "quiet_stretch": (kernel.quiet_stretch,
                          (t, np.int64(n_bars), np.int64(-1), inputs.trading.fill_at, 0.0, bars,
                           inputs.trading.has_target, book, scratch[9:15], scratch[15:18],
                           records, outputs.out)),
        # (called from Python before ``simulate``, as ``driver.execute`` calls it)
        "open_account": (open_account, opening),
    }


def compile_share(names) -> dict:
    """Compile the functions ``names`` of ``_kernel_calls``; returns ``{name: (dispatcher,
    signature)}``."""
    from numba import typeof

    calls = _kernel_calls()
    compiled = {}
    for name in names:
        dispatcher, arguments = calls[name]
        signature = tuple(typeof(a) for a in arguments)
        dispatcher.compile(signature)
        compiled[name] = dispatcher, signature
    return compiled


def _package_dispatchers() -> list:
    from numba.core.registry import CPUDispatcher

    return [value for name, module in list(sys.modules.items())
            if name.startswith(__package__.split(".")[0] + ".") and module is not None
            for value in vars(module).values() if isinstance(value, CPUDispatcher)]


def worker() -> None:
    """The worker's share: compiled without touching the cache (numba neither loads nor
    saves), then, when the parent says so (it is not compiling then), its functions saved.
    Two processes therefore never write the cache at the same time (numba's cache index
    is not safe against that for two signatures of one function)."""
    from numba.core.caching import NullCache

    from .. import config, data, prepare  # noqa: F401 (every compiled function imported)
    from . import driver, kernel, liquidate, orders  # noqa: F401
    caches = {}
    for dispatcher in _package_dispatchers():  # (one is often imported by several modules)
        if dispatcher not in caches:
            caches[dispatcher] = dispatcher._cache
            dispatcher._cache = NullCache()
    compiled = compile_share(WORKER_SHARE)
    for dispatcher, cache in caches.items():
        dispatcher._cache = cache
    print("compiled", flush=True)
    if sys.stdin.readline().strip() == "save":
        for dispatcher, signature in compiled.values():
            dispatcher._cache.save_overload(signature, dispatcher.overloads[signature])


def worth_it(package_dir: Path) -> bool:
    """Whether a second process can help: a CPU free for it (measured on two cores at a load
    average of 1: 18-19 s against 23 s in one process; it adds 3-4 s of CPU of its own, so
    with one core busy elsewhere it lengthens the first run), compiled code, and numba's
    default cache beside the package, writable (elsewhere the worker's work might not be
    found). ``BACKTESTER_COMPILE_WORKER=0`` / ``1``: never / whenever possible."""
    from numba.core import config

    choice = os.environ.get("BACKTESTER_COMPILE_WORKER")
    if config.DISABLE_JIT or config.CACHE_DIR or choice == "0":
        return False
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]  # runnable processes, this one included
    except (AttributeError, OSError):
        busy = 1.0
    cache = package_dir / "engine" / "__pycache__"
    return (cpus >= 2 and (choice == "1" or cpus - busy >= 0.75)
            and os.access(cache if cache.exists() else cache.parent, os.W_OK))


def compile_in_parallel(package_dir: Path) -> None:
    """``MAIN_SHARE`` compiled here while a worker process compiles ``WORKER_SHARE``; returns
    when both are in the cache. Nothing is raised: what is not compiled now is compiled
    later, where it is needed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(package_dir.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    try:
        process = subprocess.Popen([sys.executable, "-m", "backtester.engine.precompile"],
                                   env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True)
    except OSError:
        return
    atexit.register(_stop, process)  # the command may end first (a bad option, an error)
    timer = threading.Timer(WAIT_SECONDS, _stop, (process,))
    timer.start()
    try:
        compile_share(MAIN_SHARE)
        for line in process.stdout:  # (its end without the word: it failed or was stopped)
            if line.strip() == "compiled":
                process.stdin.write("save\n")
                process.stdin.close()
                process.wait()
                break
    except Exception:  # noqa: BLE001 (the command compiles what is missing, and says why)
        pass
    finally:
        timer.cancel()
        _stop(process)


def _stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.kill()
        worker.wait()


def start_compiling_in_parallel(package_dir: Path, busy: threading.Event | None = None) -> None:
    """``compile_in_parallel`` in a thread that holds numba's compiler lock meanwhile: the
    command goes on (its options checked, its data loaded) and its first compile waits
    for both shares, then finds them in the cache. ``busy`` is set while it runs."""
    from numba.core.compiler_lock import global_compiler_lock

    started = threading.Event()

    def run() -> None:
        with global_compiler_lock:
            if busy is not None:
                busy.set()
            started.set()
            try:
                compile_in_parallel(package_dir)
            finally:
                if busy is not None:
                    busy.clear()

    threading.Thread(target=run, daemon=True, name="backtester-precompile").start()
    started.wait()


def for_later(argv: list[str]) -> None:
    """Compile what the command ``backtester <argv>`` calls, into numba's cache, for the runs
    that follow its first run, made interpreted (``backtester._first_run``): the command is
    run again, compiled, at a low priority, its output thrown away (written to a temporary
    folder instead of ``--out``). Nothing done when another process is at it already (the
    cache's lock)."""
    import contextlib
    import tempfile

    from .. import _numba_cache
    from ..cli import parse

    package = Path(__file__).parents[1]  # (as numba names its cache: unresolved)
    lock = _numba_cache.compile_lock(package)  # (held while it lives)
    if not lock.acquire():
        return
    if hasattr(os, "nice"):
        os.nice(10)
    args = parse(argv)
    if worth_it(package):  # (the second process is at the same low priority)
        start_compiling_in_parallel(package)
    with (tempfile.TemporaryDirectory(prefix="backtester-compile-") as folder,
          open(os.devnull, "w") as nowhere, contextlib.redirect_stdout(nowhere)):
        args.out, args.overwrite = str(Path(folder) / "out"), False
        if hasattr(args, "no_plot"):
            args.no_plot = True
        args.func(args)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--for-later"]:
        for_later(sys.argv[2:])
    else:
        worker()
