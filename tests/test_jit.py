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
