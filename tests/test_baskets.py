"""Wide baskets: the running estimates of the cross account's sums over a row of orders
(``engine.orders.start_estimates``), which spare each fill a sum over every position, must
never answer a margin check otherwise than the sum would."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_invariants import examples

from backtester import Market, run
from backtester.engine import orders

N = 20  # a basket wide enough for the estimates (orders.ESTIMATE_FROM)
NO_FEES = dict(venue="flat", venue_overrides=dict(taker_fee=0.0, maker_fee=0.0, mmr=0.005,
                                                   liquidation_fee=0.0))


def flat_market(n_bars: int, n: int, price: float = 100.0) -> Market:
    p = np.full((n_bars, n), price)
    return Market.from_arrays([f"S{k:02d}_USDT" for k in range(n)], p, p, p, p,
                              start="2024-01-01", bar="1h")


def test_a_basket_order_needing_exactly_the_available_balance_fills():
    # Twenty symbols at 100 throughout, cross 10x, no fees, 20,000 deposited; orders in units
    # filled at the close. Bar 0: 100 of each. Nineteen fills lock 19 x 100 x 100 / 10 =
    # 19,000 of initial margin, leaving 1,000: the twentieth needs 100 x 100 / 10 = 1,000,
    # exactly what is left, and fills (the check is "needed > available").
    # Bar 1: S19 to 100.5 needs 0.5 x 100 / 10 = 5 with nothing left: refused, the record
    # holding 5 and 0.
    # Bar 2: S00 down to 50 frees 500 (reductions first); S18 to 150 needs 500 and S19 to 105
    # needs 50: S18 (column order) takes the 500 and S19 is refused with 50 needed, 0 left.
    assert N >= orders.ESTIMATE_FROM
    market = flat_market(4, N)
    targets = np.full((4, N), np.nan)
    targets[0] = 100.0
    targets[1, 19] = 100.5
    targets[2, [0, 18, 19]] = [50.0, 150.0, 105.0]
    result = run(market, targets, target_kind="units", margin_mode="cross", leverage=10,
                 initial_balance=20_000.0, fill_at="close", **NO_FEES)
    fills, refused = result.fills, result.rejections
    assert fills["bar"].tolist() == [0] * N + [2, 2]
    assert fills["qty"].iloc[:N].tolist() == [100.0] * N
    assert refused["symbol"].tolist() == ["S19_USDT", "S19_USDT"]
    assert refused["reason"].tolist() == ["insufficient_margin"] * 2
    assert refused["required"].tolist() == [5.0, 50.0]
    assert refused["available"].tolist() == [0.0, 0.0]
    assert refused["bar"].tolist() == [1, 2]
    last = fills[fills["bar"] == 2]
    assert last["symbol"].tolist() == ["S00_USDT", "S18_USDT"]
    assert last["qty"].tolist() == [-50.0, 50.0]


def test_a_basket_order_that_closes_then_opens_checks_the_balance_its_close_left():
    # Twenty symbols at 100 throughout, cross 100x, no fees, 2% slippage, 650 deposited, orders
    # in units filled at the close. Bar 0: S19 buys 100 at 102; it needs 102 x 1% + the 2 it
    # loses at once against the mark, 302 in all, leaving 650 - 302 = 348 available.
    # Bar 1: S19 to -100, sold at 98: the close realizes 100 x (98 - 102) = -400, leaving a
    # wallet of 250 and nothing held; the open of -100 needs 98 x 1% + 2 = 2.98 a unit, 298:
    # more than the 250 the close left (though less than the 348 before it): refused.
    market = flat_market(3, N)
    targets = np.full((3, N), np.nan)
    targets[0, 19], targets[1, 19] = 100.0, -100.0
    result = run(market, targets, target_kind="units", margin_mode="cross", leverage=100,
                 initial_balance=650.0, fill_at="close", slippage=0.02, **NO_FEES)
    fills, refused = result.fills, result.rejections
    assert fills["price"].tolist() == [102.0, 98.0]
    assert fills["qty"].tolist() == [100.0, -100.0]
    assert fills["realized_pnl"].tolist() == [0.0, -400.0]
    assert refused["reason"].tolist() == ["insufficient_margin"]
    assert refused["qty"].tolist() == [-100.0]
    assert refused["required"].iloc[0] == pytest.approx(298.0, rel=1e-12)
    assert refused["available"].tolist() == [250.0]


@st.composite
def baskets(draw):
    """A few traded symbols (random walks with gaps in the price, fees, slippage), the same
    market widened to a basket by symbols never traded, and random targets up to many times
    what the margin allows, some flipping side at every row (a close worse than the mark
    can leave less available than before it, at high leverage)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 4))
    n_bars = draw(st.integers(2, 80))
    vol = draw(st.sampled_from([0.002, 0.02, 0.1]))
    steps = rng.normal(0.0, vol, (n_bars, n)) + rng.normal(0.0, vol, (n_bars, 1))
    close = 100.0 * np.exp(np.cumsum(steps, axis=0))
    open_ = np.vstack([close[:1], close[:-1]]) * np.exp(rng.normal(0.0, vol / 2, (n_bars, n)))
    high = np.maximum(open_, close) * (1.0 + rng.random((n_bars, n)) * vol)
    low = np.minimum(open_, close) * (1.0 - rng.random((n_bars, n)) * vol)
    exposure = draw(st.sampled_from([0.5, 3.0, 20.0, 200.0]))
    targets = np.where(rng.random((n_bars, n)) < draw(st.sampled_from([0.2, 0.6, 1.0])),
                       rng.normal(0.0, exposure / n, (n_bars, n)), np.nan)
    if draw(st.booleans()):  # each row the other side: every order closes, then opens
        targets *= np.where(np.arange(n_bars) % 2 == 0, 1.0, -1.0)[:, None]
    width = draw(st.integers(orders.ESTIMATE_FROM, orders.ESTIMATE_FROM + 8))
    options = dict(
        venue="flat", target_kind="equity",
        margin_mode=draw(st.sampled_from(["cross", "isolated"])),
        leverage=draw(st.sampled_from([2.0, 10.0, 50.0, 100.0])),
        fill_at=draw(st.sampled_from(["open", "close"])),
        slippage=draw(st.sampled_from([0.0, 0.001, 0.02])),
        reduce_to_fit=draw(st.booleans()),
        initial_balance=draw(st.sampled_from([10_000.0, 3e6, 1e-2])))
    return (open_, high, low, close), targets, width, options


@examples(150)
@given(baskets())
def test_a_basket_s_running_sums_change_no_figure(case):
    """A market of a few symbols, and the same market widened past ``ESTIMATE_FROM`` symbols
    by ones never traded (they hold nothing, so every sum of the account is the same): the
    narrow run sums the account at every check, the wide one keeps running estimates. Their
    account, fills, refusals (with the figures they record), liquidations and funding are
    the same bits."""
    prices, targets, width, options = case
    n = targets.shape[1]
    names = [f"S{k:02d}_USDT" for k in range(width)]
    narrow = Market.from_arrays(names[:n], *prices, start="2024-01-01", bar="1h")
    wide = Market.from_arrays(names, *(np.hstack([p] + [p[:, :1]] * (width - n))
                                       for p in prices), start="2024-01-01", bar="1h")
    padded = np.hstack([targets, np.full((targets.shape[0], width - n), np.nan)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (generated data is suspicious on purpose)
        a = run(narrow, targets, **options)
        b = run(wide, padded, **options)
    pd.testing.assert_frame_equal(a.account, b.account, check_exact=True)
    for name in ("fills", "liquidations", "funding", "rejections"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name), check_exact=True,
                                      obj=name)
