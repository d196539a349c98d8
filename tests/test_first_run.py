"""The first run on an empty numba cache: it says what it compiles, shows progress, and
compiles parts of the kernel in a second process (issue 14)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numba import config, njit

from backtester._compile_progress import compiling_shown

REPO = Path(__file__).resolve().parents[1]


# (a script's lines) ``compiled``: the functions numba compiles in the process from then on
COMPILES_LISTED = textwrap.dedent("""
    from numba.core import event
    compiled = []
    class Listener(event.Listener):
        def on_start(self, ev):
            function = getattr(ev.data.get("dispatcher"), "py_func", None)
            compiled.append(getattr(function, "__name__", "?"))
        def on_end(self, ev):
            pass
    event.register("numba:compile", Listener())
""")


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def compile_something() -> None:
    @njit  # a new function: numba compiles it here, whatever its cache holds
    def add(a, b):
        return a + b

    add(1, 2)


@pytest.mark.skipif(config.DISABLE_JIT, reason="nothing compiles without the JIT")
def test_a_log_gets_a_plain_line_at_the_start_and_one_at_the_end():
    log = io.StringIO()
    with compiling_shown("run", True, stream=log):
        compile_something()
    lines = log.getvalue().splitlines()
    assert lines[0].startswith("compiling the simulation kernels, one time, about ")
    assert lines[1].startswith("compiled 1 functions in ")
    assert "\r" not in log.getvalue()


@pytest.mark.skipif(config.DISABLE_JIT, reason="nothing compiles without the JIT")
def test_a_terminal_sees_one_line_redrawn_as_functions_compile():
    terminal = Terminal()
    with compiling_shown("run", True, stream=terminal) as progress:
        progress.shown = -1.0  # (draw on the next event, however soon)
        compile_something()
    text = terminal.getvalue()
    assert text.startswith("compiling the simulation kernels, one time, about ")
    assert "\rcompiling: " in text or "\rcompiled 1 functions" in text
    assert text.endswith("later runs load them\x1b[K\n")


def test_a_warm_cache_shows_nothing():
    log = io.StringIO()
    with compiling_shown("run", False, stream=log) as progress:
        compile_something()
    assert progress is None and log.getvalue() == ""


@pytest.mark.skipif(config.DISABLE_JIT, reason="nothing compiles without the JIT")
def test_the_shares_compiled_in_two_processes_are_what_simulate_then_loads(tmp_path):
    # A fresh cache (a cold start, about half a minute): both shares compiled, the worker's
    # saved once the parent waits; run() then finds every one of them in the cache, with
    # the signature simulate calls it with, and compiles none of them again.
    code = textwrap.dedent("""
        from pathlib import Path
        import numpy as np
        from numba import typeof
        import backtester
        from backtester import run
        from backtester.data import make_market
        from backtester.engine import precompile

        precompile.compile_in_parallel(Path(backtester.__file__).parent)
    """) + COMPILES_LISTED + textwrap.dedent("""
        market = make_market(48, 2, seed=1)
        targets = np.full((48, 2), np.nan)
        targets[::8] = 0.1
        run(market, targets, stand_in={s: "BTC_USDT" for s in market.symbols})
        run(market, targets, stand_in={s: "BTC_USDT" for s in market.symbols})
        calls = precompile._kernel_calls()
        assert "simulate" in compiled, compiled
        assert not set(calls) & set(compiled), set(calls) & set(compiled)
        for name, (dispatcher, arguments) in calls.items():
            signature = tuple(typeof(a) for a in arguments)
            assert signature in dispatcher.overloads, (name, dispatcher.signatures)
        print("ok")
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    # run() from Python on the cold cache said what it compiled, once for the two runs
    said = done.stderr.splitlines()
    assert said[0].startswith("compiling the simulation kernels, one time, about "), said
    assert len(said) == 2 and said[1].startswith("compiled ") and "later runs load" in said[1]


@pytest.mark.skipif(config.DISABLE_JIT, reason="nothing compiles without the JIT")
def test_the_librarys_first_call_says_what_it_compiles_once(monkeypatch, capsys):
    # run(), sweep() and advise() from Python (a notebook): the first call on a cold cache
    # shows the compile as the command line does; later calls, and a call inside the
    # command line's own display, show nothing
    from backtester import _compile_progress, _numba_cache

    monkeypatch.setattr(_compile_progress, "WARM", set())
    monkeypatch.setattr(_numba_cache, "kernels_cached", lambda package, kernel: False)
    entry = _compile_progress.shows_first_compile("run")(compile_something)
    entry()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("compiling the simulation kernels, one ")
    assert lines[1].startswith("compiled 1 functions in ")
    entry()
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(_compile_progress, "WARM", set())
    with compiling_shown("run", True, stream=io.StringIO()):
        entry()  # (the command line's display is open: it counts this compile)
    assert capsys.readouterr().err == ""
    assert _compile_progress.SHOWN == []


def test_the_library_finds_each_kernel_in_the_cache(tmp_path, monkeypatch):
    # run() looks for the kernel, sweep() for the batch, advise() for the Monte Carlo paths
    # (in the package's own folders, numba's default, whatever NUMBA_CACHE_DIR says)
    from backtester import _numba_cache

    monkeypatch.setattr(config, "CACHE_DIR", "")

    pkg = tmp_path / "pkg"
    for folder in ("engine", "risk"):
        (pkg / folder / "__pycache__").mkdir(parents=True)
    cached = pkg / "engine" / "__pycache__"
    (cached / "batch.run_batch_serial-418.py311.nbi").write_bytes(b"index")
    (cached / "kernel.quiet_stretch-536.py311.nbi").write_bytes(b"index")  # (a callee only)
    assert _numba_cache.kernels_cached(pkg, "engine.batch.run_batch_serial")
    assert not _numba_cache.kernels_cached(pkg)  # (simulate itself)
    assert not _numba_cache.kernels_cached(pkg, "risk.montecarlo.run_paths")
    (pkg / "risk" / "__pycache__" / "montecarlo.run_paths-144.py311.nbi").write_bytes(b"idx")
    assert _numba_cache.kernels_cached(pkg, "risk.montecarlo.run_paths")
    (cached / "kernel.simulate-625.py311.nbi").write_bytes(b"index")
    assert _numba_cache.kernels_cached(pkg)


def test_no_second_process_when_told_not_to(monkeypatch):
    from backtester.engine import precompile

    monkeypatch.setenv("BACKTESTER_COMPILE_WORKER", "0")
    assert not precompile.worth_it(REPO / "backtester")


# --- a small first run made interpreted while the kernels compile in the background --------

def frames(folder: Path) -> dict:
    import pandas as pd

    return {path.relative_to(folder): pd.read_parquet(path)
            for path in sorted(folder.rglob("*.parquet"))}


def background_done(cache: Path) -> bool:
    """The background compile finished: it saved the kernel (while holding the lock) and
    no longer holds the lock."""
    from backtester._numba_cache import CompileLock

    locks = list(cache.glob("*/backtester-compiling.lock"))
    return (bool(locks) and any(cache.glob("*/kernel.*.nbi"))
            and not CompileLock(locks[0]).held_elsewhere())


@pytest.mark.skipif(config.DISABLE_JIT, reason="nothing compiles without the JIT")
def test_a_small_first_run_is_interpreted_and_the_next_finds_the_kernels_compiled(
        tmp_path, capsys):
    # A cold cache (its own folder): the command, started as the command, runs the kernels
    # as plain Python, says so, and prints and saves what the compiled kernels give to the
    # bit; meanwhile a background process compiles them, and the next run compiles nothing.
    import time

    from backtester.cli import main

    cache = tmp_path / "cache"
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "BACKTESTER_FIRST_RUN": "auto"}
    env.pop("NUMBA_DISABLE_JIT", None)
    from backtester.data import make_market, write_market

    m = make_market(4000, 3, seed=2)  # a folder of three: the pair says which two it trades
    write_market(type(m).from_arrays(["ADA_USDT", "BTC_USDT", "ETH_USDT"], m.open, m.high,
                                     m.low, m.close), tmp_path / "data")
    words = ["run", "--data", str(tmp_path / "data"), "--no-plot"]
    first = subprocess.run([sys.executable, "-m", "backtester", *words, "--out",
                            str(tmp_path / "first")], env=env, cwd=tmp_path,
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "this one runs them as plain Python meanwhile" in first.stderr
    assert max(len(line) for line in first.stderr.splitlines()) <= 100
    assert "compiling" not in first.stderr.replace("compile in the background", "")
    assert first.stdout.count("note: the default hedged pair trades the folder's BTC and ETH") == 1

    assert main([*words, "--out", str(tmp_path / "compiled")]) == 0  # (this process: compiled)
    printed = capsys.readouterr().out
    assert [line for line in first.stdout.splitlines() if "files:" not in line] == [
        line for line in printed.splitlines() if "files:" not in line]
    interpreted, compiled = frames(tmp_path / "first"), frames(tmp_path / "compiled")
    assert interpreted.keys() == compiled.keys() and len(interpreted) >= 16
    for name, frame in interpreted.items():
        assert frame.equals(compiled[name]), name
    assert len(interpreted[Path("isolated/fills.parquet")]) > 100

    deadline = time.monotonic() + 600
    while not background_done(cache):
        assert time.monotonic() < deadline, "the background compile did not finish"
        time.sleep(1)
    code = COMPILES_LISTED + textwrap.dedent(f"""
        from backtester.cli import main
        assert main({[*words, "--out", str(tmp_path / "second")]!r}) == 0
        print("compiled:", compiled)
    """)
    second = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    assert second.stdout.strip().endswith("compiled: []"), second.stderr[-2000:]


class Interpreted(Exception):
    """Stands for the command started again interpreted (which does not return)."""


@pytest.fixture()
def choices(monkeypatch):
    from backtester import _first_run, _numba_cache

    made = []
    monkeypatch.setattr(_first_run, "start_for_later",
                        lambda package, argv: made.append(("for later", argv)))

    def again():
        made.append("again")
        raise Interpreted

    monkeypatch.setattr(_first_run, "start_again_interpreted", again)
    monkeypatch.setattr(_numba_cache, "compile_lock",
                        lambda package: _numba_cache.CompileLock(None))
    first = _first_run.FirstRun(["run", "--out", "x"], REPO / "backtester",
                                lambda: made.append("compiled first"))
    return first, made


def test_a_small_job_runs_interpreted_and_a_large_one_compiles_first(choices, monkeypatch):
    from backtester import _first_run

    first, made = choices
    small = int(_first_run.BUDGET / _first_run.SECONDS_PER_BAR_SYMBOL)  # at the budget
    with pytest.raises(Interpreted):
        first.choose(small)
    assert made == [("for later", ["run", "--out", "x"]), "again"]
    made.clear()
    first.choose(small + 1)
    assert made == ["compiled first"]
    made.clear()
    monkeypatch.setenv("BACKTESTER_FIRST_RUN", "interpret")
    with pytest.raises(Interpreted):
        first.choose(10 ** 9)
    monkeypatch.setenv("BACKTESTER_FIRST_RUN", "eventually")
    with pytest.raises(ValueError, match="BACKTESTER_FIRST_RUN='eventually': expected one of "
                                         "auto, interpret, compile"):
        first.choose(1)


def test_the_embedded_pair_both_modes_is_a_small_job():
    from backtester import _first_run, load_market

    n_bars, n_symbols = load_market().close.shape
    assert _first_run.interpreted_seconds(n_bars * n_symbols * 2) < _first_run.BUDGET / 4


def test_what_the_command_prints_waits_for_the_choice(choices, capsys):
    # the command started again prints it all again: the first start prints nothing of its
    # own before it chooses; when it goes on compiled, what it held comes out first, once
    from types import SimpleNamespace

    from backtester._first_run import load_then_choose

    first, made = choices
    market = SimpleNamespace(close=np.empty((100, 3)))
    real = sys.stdout
    first.hold()
    print("note: the default hedged pair trades the folder's BTC and ETH")

    def load():
        print("note: ETH_USDT starts later")
        return market

    with pytest.raises(Interpreted):
        load_then_choose(SimpleNamespace(first_run=first), 2, load)  # 600: a small job
    sys.stdout = real  # (the process would be the new start now)
    assert capsys.readouterr().out == "" and made[-1] == "again"

    first.hold()
    print("note: the default hedged pair trades the folder's BTC and ETH")
    big = SimpleNamespace(close=np.empty((10 ** 6, 3)))
    assert load_then_choose(SimpleNamespace(first_run=first), 2, lambda: big) is big
    print("== cross margin ==")
    assert made[-1] == "compiled first" and sys.stdout is real
    assert capsys.readouterr().out == ("note: the default hedged pair trades the folder's BTC "
                                       "and ETH\n== cross margin ==\n")

    with contextlib.ExitStack() as stack:  # an error before the choice (as main() holds it)
        first.hold()
        stack.callback(first.release)
        print("note: ETH_USDT starts later")
    assert sys.stdout is real and capsys.readouterr().out == "note: ETH_USDT starts later\n"
    assert load_then_choose(SimpleNamespace(), 2, load) is market  # a warm cache
    assert capsys.readouterr().out == "note: ETH_USDT starts later\n"


def test_a_large_job_waits_for_the_kernels_compiling_in_the_background(tmp_path, monkeypatch,
                                                                       capsys):
    from backtester import _first_run, _numba_cache

    path = tmp_path / "backtester-compiling.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from backtester._numba_cache import CompileLock
            lock = CompileLock(__import__("pathlib").Path({str(path)!r}))
            assert lock.acquire()
            print("held", flush=True)
            time.sleep(1.5)
        """)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lock = _numba_cache.CompileLock(path)
    assert lock.held_elsewhere() and not _numba_cache.CompileLock(path).acquire()
    monkeypatch.setattr(_numba_cache, "compile_lock", lambda package: lock)
    monkeypatch.setattr(_numba_cache, "kernels_cached", lambda package, kernel="": True)
    made = []
    first = _first_run.FirstRun(["run"], REPO / "backtester", lambda: made.append("compiled"))
    first.choose(10 ** 9)
    assert holder.wait(timeout=60) == 0 and made == []  # (the kernels are there now)
    assert "waiting for the simulation kernels compiling in the background" in (
        capsys.readouterr().err)
    assert not lock.held_elsewhere()


def test_only_the_command_itself_starts_again(monkeypatch, capsys):
    # On a cold cache main(argv) called from Python (a test, a notebook) compiles first, as
    # before; the process started as the command chooses once its data are loaded.
    from backtester import _numba_cache, cli
    from backtester.engine import precompile

    monkeypatch.setattr(_numba_cache, "kernels_cached", lambda package, kernel="": False)
    monkeypatch.setattr(precompile, "worth_it", lambda package: False)
    args = cli.parse(["run"])
    with contextlib.ExitStack() as stack:
        cli._first_run_of(args, False, stack)
        assert not hasattr(args, "first_run")
    assert capsys.readouterr().err.startswith("compiling the simulation kernels, one time")
    for command, chooses in (("run", True), ("compare", True), ("sweep", False)):
        args = cli.parse([command])
        with contextlib.ExitStack() as stack:
            cli._first_run_of(args, True, stack)
            assert hasattr(args, "first_run") is chooses
        assert capsys.readouterr().err.startswith("compiling") is not chooses
    monkeypatch.setenv("BACKTESTER_FIRST_RUN", "compile")
    args = cli.parse(["run"])
    with contextlib.ExitStack() as stack:
        cli._first_run_of(args, True, stack)
        assert not hasattr(args, "first_run")
