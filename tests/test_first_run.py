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
def test_the_shares_compiled_in_parallel_are_the_signatures_simulate_calls(tmp_path):
    # A fresh cache (a cold start, about half a minute): run() compiles simulate's whole
    # call tree; each function engine.precompile compiles ahead must be there with the
    # signature it derives, or the first run compiles it twice.
    code = textwrap.dedent("""
        import numpy as np
        from numba import typeof
        from backtester import run
        from backtester.data import make_market
        from backtester.engine import precompile

        market = make_market(48, 2, seed=1)
        targets = np.full((48, 2), np.nan)
        targets[::8] = 0.1
        run(market, targets, stand_in={s: "BTC_USDT" for s in market.symbols})
        for name, (dispatcher, arguments) in precompile._kernel_calls().items():
            signature = tuple(typeof(a) for a in arguments)
            assert signature in dispatcher.overloads, (name, dispatcher.signatures)
        print("ok")
    """)
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=900)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
