"""The engine's functions compiled without numba's Python and C wrappers (``engine.jit``):
called from Python they run a twin; the bar loop and the sweeps never need one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from numba import config

from backtester.engine import enums, rules
from backtester.engine.jit import InnerDispatcher

REPO = Path(__file__).resolve().parents[1]
jit_only = pytest.mark.skipif(config.DISABLE_JIT, reason="no dispatchers without the JIT")


def two_tier_table():
    """One column, Binance-style brackets: 0.4% up to 50,000 of notional, then 0.5% with
    the amount 50,000 * (0.005 - 0.004) = 50 that keeps the margin continuous."""
    sym = np.zeros((enums.N_SYMBOL_FIELDS, 1))
    sym[enums.Sym.LEVERAGE, 0] = 10.0
    tiers = np.zeros((enums.N_TIER_FIELDS, 1, 2))
    tiers[enums.TierField.MMR, 0] = [0.004, 0.005]
    tiers[enums.TierField.CUM, 0] = [0.0, 50.0]
    tiers[enums.TierField.FLOOR, 0] = [0.0, 50_000.0]
    tiers[enums.TierField.CAP, 0] = [50_000.0, np.inf]
    return sym, tiers, np.array([2])


def test_an_inner_rule_called_from_python_gives_the_rule():
    sym, tiers, n_tiers = two_tier_table()
    i = np.int64(0)
    # 2 x 110 = 220 of notional, first tier: 220 * 0.004
    assert rules.maintenance_margin(i, 2.0, 100.0, 110.0, sym, tiers,
                                    n_tiers) == pytest.approx(0.88)
    # a short of 10 at 6,000 = 60,000, second tier: 60,000 * 0.005 - 50
    assert rules.maintenance_margin(i, -10.0, 5_000.0, 6_000.0, sym, tiers,
                                    n_tiers) == pytest.approx(250.0)


@jit_only
def test_the_twin_is_made_once_and_cached_under_a_name_of_its_own():
    sym, tiers, n_tiers = two_tier_table()
    dispatcher = rules.maintenance_margin
    assert isinstance(dispatcher, InnerDispatcher)
    assert dispatcher.targetoptions["no_cpython_wrapper"]
    assert dispatcher.targetoptions["no_cfunc_wrapper"]
    for _ in range(2):
        dispatcher(np.int64(0), 1.0, 100.0, 100.0, sym, tiers, n_tiers)
    assert InnerDispatcher.twins.count("backtester.engine.rules.maintenance_margin") == 1
    twin = dispatcher.__dict__["_twin"]
    assert twin.py_func.__qualname__ == "maintenance_margin_from_python"
    assert not twin.targetoptions.get("no_cpython_wrapper")
    # numba names cache files after the qualified name: the two never share an index
    assert twin._cache._cache_file._index_name != dispatcher._cache._cache_file._index_name


@jit_only
def test_runs_sweeps_and_the_recorded_path_need_no_twin():
    # A fresh process (the suite's own makes twins on purpose): the default run with the
    # liquidation prices replayed, an isolated run, an in-process sweep, an ADL stress.
    code = textwrap.dedent("""
        import numpy as np
        from backtester import run
        from backtester.data import make_market
        from backtester.engine.jit import InnerDispatcher
        from backtester.sweep import sweep

        market = make_market(300, 2, seed=4)
        targets = np.full((300, 2), np.nan)
        targets[::24] = [3.0, -3.0]
        stand_in = {s: "BTC_USDT" for s in market.symbols}
        for mode in ("cross", "isolated"):
            result = run(market, targets, margin_mode=mode, leverage=20, stand_in=stand_in,
                         target_kind="equity")
            result.liquidation_prices
            result.stats()
        def plan(market, exposure):
            t = np.full((market.n_bars, market.n_symbols), np.nan)
            t[::48] = [exposure, -exposure]
            return t
        sweep(market, plan, {"exposure": [1.0, 2.0], "leverage": [5, 50],
                             "margin_mode": ["cross", "isolated"], "target_kind": "equity"},
              stand_in=stand_in)
        from backtester.risk import adl_stress
        adl_stress(market, targets, at=30, leg=market.symbols[0], margin_mode="isolated",
                   leverage=5, target_kind="equity", stand_in=stand_in)
        print("twins:", InnerDispatcher.twins)
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=900, env={**os.environ})
    assert done.stdout.strip() == "twins: []", done.stderr[-3000:]


# --- asking for memory ahead (``jit.prefetch_row``, ``kernel.ask_for_orders``) --------------


@jit_only
def test_a_prefetch_runs_anywhere_and_changes_nothing():
    # rows of a C-contiguous and of a strided 2-D array, items of a 1-D one, and far past
    # the arrays' ends: a prefetch never faults and writes nothing
    from numba import njit

    from backtester.engine.jit import prefetch_row

    @njit
    def ask(rows, items, t):
        prefetch_row(rows, t)
        prefetch_row(items, t)
        return t

    rows, items = np.arange(60.0).reshape(6, 10), np.arange(7.0)
    kept = rows.copy(), items.copy()
    for t in (0, 5, 6, 10_000_000):
        assert ask(rows, items, t) == t
        assert ask(rows[:, ::3], items[::2], t) == t
    np.testing.assert_array_equal(rows, kept[0])
    np.testing.assert_array_equal(items, kept[1])
    if os.uname().machine == "x86_64":  # the instruction is there: it was not optimised away
        machine_code = "\n".join(ask.inspect_asm().values())
        assert machine_code.count("prefetcht0") >= 2


@jit_only
def test_a_run_that_asks_ahead_gives_the_interpreters_figures():
    # A market of FAR_VALUES prices or more: the compiled bar loops ask for the rows of the
    # next bar of orders and of funding (in the quiet stretch and in their own loop); the
    # interpreter asks for nothing. Fills at the open and at the close, cross and isolated,
    # targets every 24 bars and every bar, positions recorded or not: the same bits.
    from backtester.engine import kernel

    n_bars, n = 33_000, 4
    assert n_bars * n >= kernel.FAR_VALUES
    code = textwrap.dedent(f"""
        import hashlib, warnings
        import numpy as np
        from backtester import run
        from backtester.data import make_market
        from backtester.engine.driver import funding_array
        warnings.simplefilter("ignore")
        market = make_market({n_bars}, {n}, seed=12, funding_every=8)
        stand_in = {{s: "BTC_USDT" for s in market.symbols}}
        every = np.full(({n_bars}, {n}), np.nan)
        every[::24] = [0.6, -0.6, 0.4, -0.4]
        every[5000:5300] = [0.9, -0.9, 0.2, -0.2]
        digest = hashlib.sha256()
        for fill_at, mode, record in (("open", "cross", False), ("close", "isolated", False),
                                      ("open", "isolated", True)):
            out = run(market, every, target_kind="equity", leverage=20, margin_mode=mode,
                      fill_at=fill_at, record_positions=record, stand_in=stand_in).output
            for part in (out.account, out.fills, out.liquidations, funding_array(out.funding),
                         out.rejections):
                part = np.asarray(part)
                for name in part.dtype.names or (None,):
                    column = part if name is None else part[name]
                    digest.update(np.ascontiguousarray(column).tobytes())
        print(digest.hexdigest())
    """)
    digests = []
    for disable in ("0", "1"):
        env = {**os.environ, "NUMBA_DISABLE_JIT": disable}
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, timeout=600, env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        digests.append(done.stdout.strip())
    assert digests[0] == digests[1]
