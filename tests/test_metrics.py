"""Metrics against values worked out by hand on small series and small hand-made runs.

Every expected number is derived in the comment beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import NAN, flat, market, units

from backtester import metrics, run

# --- return and risk of an equity curve ---------------------------------------------------

# returns +10%, -10%, +10%: mean 1/30; deviations 1/15, -2/15, 1/15, squares summing to
# 6/225 = 0.0266667, sample variance 0.0133333, std 0.1154701
UP_DOWN_UP = pd.Series([100.0, 110.0, 99.0, 108.9])


def test_total_return_and_cagr_of_one_year():
    e = pd.Series([100.0, 110.0, 121.0])
    assert metrics.total_return(e) == pytest.approx(0.21)
    # two bars at two bars a year = one year: CAGR = total return
    assert metrics.cagr(e, bars_per_year=2) == pytest.approx(0.21)
    # the same growth over half a year: 1.21 ** 2 - 1 = 0.4641
    assert metrics.cagr(e, bars_per_year=4) == pytest.approx(0.4641)


def test_cagr_of_an_account_that_ended_with_nothing_is_minus_100_percent():
    assert metrics.cagr(pd.Series([100.0, 40.0, 0.0]), bars_per_year=2) == -1.0


def test_volatility_sharpe_and_sortino_of_up_down_up():
    bpy = 4  # sqrt(4) = 2
    assert metrics.volatility(UP_DOWN_UP, bpy) == pytest.approx(0.1154701 * 2, rel=1e-6)
    # Sharpe: (1/30) / 0.1154701 * 2 = 0.5773503
    assert metrics.sharpe_ratio(UP_DOWN_UP, bpy) == pytest.approx(0.5773503, rel=1e-6)
    # downside deviation: sqrt((0 + 0.01 + 0) / 3) = 0.0577350; (1/30) / 0.0577350 * 2 = 1.1547005
    assert metrics.sortino_ratio(UP_DOWN_UP, bpy) == pytest.approx(1.1547005, rel=1e-6)


def test_sortino_is_undefined_without_a_losing_bar():
    assert np.isnan(metrics.sortino_ratio(pd.Series([100.0, 101.0, 103.0]), 365))


# peak 120 at bar 1, trough 90 (-25%), back to 120 at bar 4; new peak 130, then 104 (-20%)
TWO_DRAWDOWNS = pd.Series([100.0, 120.0, 90.0, 96.0, 120.0, 130.0, 104.0])


def test_max_drawdown_and_its_duration():
    assert metrics.max_drawdown(TWO_DRAWDOWNS) == pytest.approx(-0.25)
    # bar 1 (peak) -> bar 4 (back at the peak) = 3 bars; the -20% one lasts 1 bar (to the end)
    assert metrics.max_drawdown_duration(TWO_DRAWDOWNS) == 3


def test_an_unrecovered_drawdown_lasts_until_the_last_bar():
    # first: peak bar 0, back at bar 3 (3 bars); second: peak bar 3, under water 4..7 (4 bars)
    e = pd.Series([100.0, 90, 95, 100, 80, 85, 90, 95])
    assert metrics.max_drawdown_duration(e) == 4
    assert metrics.max_drawdown_duration(pd.Series([100.0, 101, 102])) == 0


def test_calmar_is_cagr_over_the_drawdown():
    # 6 bars at 6 a year = one year: CAGR = 104/100 - 1 = 4%; 0.04 / 0.25 = 0.16
    assert metrics.calmar_ratio(TWO_DRAWDOWNS, bars_per_year=6) == pytest.approx(0.16)
    assert np.isnan(metrics.calmar_ratio(pd.Series([100.0, 101, 102]), 6))


# --- exposure and turnover -------------------------------------------------------------------


def test_exposure_time_and_mean_gross_leverage():
    gross = pd.Series([0.0, 200.0, 300.0, 0.0, 50.0])
    equity = pd.Series([100.0, 100.0, 100.0, 100.0, 0.0])
    assert metrics.exposure_time(gross) == pytest.approx(3 / 5)
    # the last bar has no equity left and is skipped: mean(0, 2, 3, 0) = 1.25
    assert metrics.mean_gross_leverage(gross, equity) == pytest.approx(1.25)


def test_turnover_is_traded_notional_over_mean_equity_per_year():
    # 1,200 traded on a mean equity of 100 over 6 bars, 12 bars a year (half a year):
    # 12 times equity in half a year = 24 a year
    equity = pd.Series([90.0, 110.0, 100.0, 100.0, 95.0, 105.0])
    assert metrics.turnover(1200.0, equity, bars_per_year=12) == pytest.approx(24.0)


# --- distance to liquidation ----------------------------------------------------------------


def test_distance_to_liquidation_is_the_nearest_open_position():
    idx = pd.RangeIndex(5)
    positions = pd.DataFrame([[1, -1], [1, 0], [0, 0], [2, 0], [0, -3]], index=idx, dtype=float)
    liq = pd.DataFrame([[90, 105], [80, NAN], [NAN, NAN], [-5, NAN], [NAN, 130]], index=idx,
                       dtype=float)
    mark = pd.DataFrame([[100, 100], [100, 100], [100, 100], [50, 100], [100, 100]],
                        index=idx, dtype=float)
    d = metrics.distance_to_liquidation(positions, liq, mark)
    # bar 0: long 10/100, short 5/100 -> 0.05; bar 1: 20/100; bar 2: nothing open;
    # bar 3: a long no positive price liquidates -> 1.0; bar 4: short 30/100
    assert d.iloc[0] == pytest.approx(0.05)
    assert d.iloc[1] == pytest.approx(0.20)
    assert np.isnan(d.iloc[2])
    assert d.iloc[3] == 1.0
    assert d.iloc[4] == pytest.approx(0.30)


# --- a whole run ------------------------------------------------------------------------------


# Balance 10,000; long 1 BTC @ 30,000 and short 10 ETH @ 2,000 at 10x (isolated margins
# 3,000 and 2,000), taker fee 0.1% (30 and 20). BTC slides to 26,000 and ETH to 1,600.
HEDGE = market(
    ["BTC", "ETH"],
    [
        [(30000, 30000, 30000, 30000), (2000, 2000, 2000, 2000)],
        [(30000, 30000, 30000, 30000), (2000, 2000, 2000, 2000)],
        [(30000, 30000, 26000, 26000), (2000, 2000, 1600, 1600)],
        [(26000, 26000, 26000, 26000), (1600, 1600, 1600, 1600)],
    ],
)
LP_BTC = 27000 / 0.995  # isolated long: 3,000 + (P - 30,000) = 0.005 P
LP_ETH = 2000 * 1.1 / 1.005  # isolated short: 2,000 - 10 (P - 2,000) = 0.005 * 10 P


@pytest.fixture(scope="module")
def isolated_hedge():
    return run(HEDGE, units(4, [1, -10]), margin_mode="isolated", leverage=10,
               **flat(taker=0.001))


def test_position_stats_of_the_isolated_hedge(isolated_hedge):
    stats = metrics.position_stats(isolated_hedge)
    btc, eth = stats.loc["BTC"], stats.loc["ETH"]
    assert btc["trades"] == 1 and eth["trades"] == 1
    assert btc["liquidations"] == 1 and eth["liquidations"] == 0
    # BTC: liquidated at LP: realized (LP - 30,000); fee 30 on the open, no liquidation fee
    assert btc["realized_pnl"] == pytest.approx(LP_BTC - 30000)
    assert btc["fees"] == pytest.approx(30.0)
    assert btc["liquidation_fees"] == 0.0
    assert btc["margin_lost"] == pytest.approx(3000 - 0.005 * LP_BTC)
    assert btc["unrealized_pnl"] == pytest.approx(0.0, abs=1e-9)
    assert btc["net_pnl"] == pytest.approx(LP_BTC - 30000 - 30)
    # BTC traded 30,000 at the open and LP at its liquidation
    assert btc["traded_notional"] == pytest.approx(30000 + LP_BTC)
    # ETH: still short 10 at 1,600: unrealized +4,000, fee 20
    assert eth["unrealized_pnl"] == pytest.approx(4000.0)
    assert eth["net_pnl"] == pytest.approx(3980.0)
    # bars closed holding: BTC bar 1 only (liquidated in bar 2); ETH bars 1-3
    assert btc["time_in_market"] == pytest.approx(1 / 4)
    assert eth["time_in_market"] == pytest.approx(3 / 4)


def test_position_pnl_sums_to_the_change_in_equity(isolated_hedge):
    pnl = metrics.position_pnl(isolated_hedge)
    # by hand, at the last close: 10,000 - 30 - 20 + (LP - 30,000) + 4,000
    final = 10000 - 50 + (LP_BTC - 30000) + 4000
    assert pnl.iloc[-1].sum() == pytest.approx(final - 10000)
    assert isolated_hedge.equity.iloc[-1] == pytest.approx(final)
    # bar 1 (just filled at the close price): only the fees are lost
    assert pnl.iloc[1].tolist() == pytest.approx([-30.0, -20.0])


def test_run_metrics_of_the_isolated_hedge(isolated_hedge):
    m = metrics.run_metrics(isolated_hedge)
    final = 10000 - 50 + (LP_BTC - 30000) + 4000
    assert m["final_equity"] == pytest.approx(final)
    assert m["total_return"] == pytest.approx(final / 10000 - 1)
    assert m["liquidated_positions"] == 1
    assert m["fees_paid"] == pytest.approx(50.0)
    # nearest liquidation at bar 1: BTC (30,000 - LP) / 30,000 = 9.55%,
    # ETH (LP_ETH - 2,000) / 2,000 = 9.45% -> ETH
    assert m["min_distance_to_liquidation"] == pytest.approx((LP_ETH - 2000) / 2000)
    # isolated only: no cross margin ratio
    assert np.isnan(m["worst_margin_ratio"])
    # gross exposure at the closes: bar 0 flat, then 50,000, 16,000, 16,000
    assert m["exposure_time"] == pytest.approx(3 / 4)
    traded = 30000 + 20000 + LP_BTC
    mean_equity = isolated_hedge.equity.mean()
    assert m["turnover"] == pytest.approx(traded / mean_equity * 8760 / 4)
    # the curve: 10,000 start, bar 0 10,000 (peak), bar 1 9,950 (fees), bar 2 above the peak:
    # peak to recovery = 2 hourly bars
    assert m["max_drawdown_days"] == pytest.approx(2 / 24)


def test_cross_hedge_reports_its_worst_margin_ratio():
    r = run(HEDGE, units(4, [1, -10]), margin_mode="cross", leverage=10, **flat())
    m = r.metrics()
    # worst at bar 1: MM 0.5% * 50,000 = 250 over margin balance 10,000
    assert m["worst_margin_ratio"] == pytest.approx(0.025)
    assert m["liquidations"] == 0
    assert set(metrics.METRICS) == set(m)
