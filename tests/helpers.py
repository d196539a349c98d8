"""Hand-made markets, targets and venue options shared by the tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from numba import njit

from backtester import Market
from backtester.backtest import run_prepared
from backtester.config import RunConfig
from backtester.prepare import prepare_run, split_plan

NAN = np.nan


def flat(mmr=0.005, taker=0.0, liq_fee=0.0, max_leverage=125):
    """Run options for the one-tier venue with chosen rates."""
    return dict(venue="flat", venue_overrides=dict(mmr=mmr, taker_fee=taker, maker_fee=0.0,
                                                    liquidation_fee=liq_fee,
                                                    max_leverage=max_leverage))


def market(symbols, bars, funding_rate=None):
    """A Market from per-symbol lists of (open, high, low, close) bars."""
    arr = np.array(bars, dtype=float)  # (T, N, 4)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    return Market.from_arrays(symbols, arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3],
                              funding_rate=funding_rate)


def units(n_bars, first_row):
    """Targets that open ``first_row`` (base units) at the first decision and then hold."""
    targets = np.full((n_bars, len(first_row)), NAN)
    targets[0] = first_row
    return targets


def random_market(seed, n_bars=600, start="2024-01-01"):
    """Three fat-tailed symbols with mark prices and funding, and sparse random targets
    (fractions of equity): a run that trades, pays funding and gets liquidated."""
    rng = np.random.default_rng(seed)
    n = 3
    close = 100 * np.exp(np.cumsum(rng.standard_t(3, (n_bars, n)) * 0.02, axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * (1 + rng.normal(0, 0.002, (n_bars, n)))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, 0.01, (n_bars, n))))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, 0.01, (n_bars, n))))
    rate = np.full((n_bars, n), NAN)
    rate[::8] = rng.normal(0.0001, 0.0005, (len(rate[::8]), n))
    mark = (open_ * 1.001, high * 1.001, low * 0.999, close * 0.9995)
    m = Market.from_arrays(["A", "B", "C"], open_, high, low, close, mark=mark,
                           funding_rate=rate, start=start)
    targets = np.where(rng.random((n_bars, n)) < 0.1, rng.normal(0, 1.5, (n_bars, n)), NAN)
    return m, targets


@njit
def script(t, ctx, orders, params):
    """A strategy callback that plays a script: ``ctx.series[f, t, i]`` is field f of
    ``engine.enums.Order`` for column i at bar t (NaN: nothing)."""
    wrote = False
    for f in range(ctx.series.shape[0]):
        for i in range(ctx.close.shape[1]):
            value = ctx.series[f, t, i]
            if value == value:
                orders[f, i] = value
                wrote = True
    return wrote


def run_general(market, targets, **options):
    """``run(market, targets, **options)`` with every bar through the bar loop's general path
    (``KernelInputs.general``): no bar handed to the quiet stretch
    (``engine.kernel.quiet_stretch``), which must give the same figures, to the bit."""
    orders, plan_options = split_plan(targets)
    prepared = prepare_run(market, orders, RunConfig().replace(**{**plan_options, **options}))
    inputs = dataclasses.replace(prepared.inputs, general=True)
    return run_prepared(dataclasses.replace(prepared, inputs=inputs))


def assert_same_figures(a, b):
    """Two results' account, fills, liquidations, funding, rejections and events, and each
    bar's positions (recorded by the kernel or rebuilt from the fills), to the bit."""
    pd.testing.assert_frame_equal(a.account, b.account, check_exact=True)
    for name in ("fills", "liquidations", "funding", "rejections", "events", "positions"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True,
                                      obj=name)
