"""The first run on an empty numba cache: it says what it compiles, shows progress, and
compiles parts of the kernel in a second process (issue 14)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from numba import config, njit

from backtester._compile_progress import compiling_shown

REPO = Path(__file__).resolve().parents[1]


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
        from numba.core import event
        import backtester
        from backtester import run
        from backtester.data import make_market
        from backtester.engine import precompile

        precompile.compile_in_parallel(Path(backtester.__file__).parent)
        compiled = []
        class Listener(event.Listener):
            def on_start(self, ev):
                function = getattr(ev.data.get("dispatcher"), "py_func", None)
                compiled.append(getattr(function, "__name__", "?"))
            def on_end(self, ev):
                pass
        event.register("numba:compile", Listener())
        market = make_market(48, 2, seed=1)
        targets = np.full((48, 2), np.nan)
        targets[::8] = 0.1
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


def test_no_second_process_when_told_not_to(monkeypatch):
    from backtester.engine import precompile

    monkeypatch.setenv("BACKTESTER_COMPILE_WORKER", "0")
    assert not precompile.worth_it(REPO / "backtester")
