"""A Result in a notebook: returns, stats(), plot(), _repr_html_; liquidation markers on
the curve (not at the intrabar equity they left)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtester import load_market, run
from strategies import hedged_pair


@pytest.fixture(scope="module")
def wiped():
    m = load_market()
    return run(m, hedged_pair(m, exposure=3), target_kind="equity", leverage=10,
               margin_mode="isolated")


def test_returns_compound_to_the_total_return_from_the_deposit(wiped):
    r = wiped.returns
    equity = wiped.equity.to_numpy()
    assert len(r) == len(equity) and r.index.equals(wiped.equity.index)
    # by hand: the first bar against the deposit, then bar to bar
    assert r.iloc[0] == pytest.approx(equity[0] / wiped.initial_equity - 1)
    np.testing.assert_allclose(r.to_numpy()[1:], equity[1:] / equity[:-1] - 1, rtol=1e-12)
    assert float((1 + r).prod()) == pytest.approx(equity[-1] / wiped.initial_equity)
    assert (1 + r).prod() - 1 == pytest.approx(wiped.summary()["total_return"])


def test_returns_are_zero_once_the_equity_is_gone():
    from backtester import Market

    # a 1 unit long at 100 with a deposit of 60 (2x, cross, no fee): the open of bar 2 gaps
    # to 40, a loss of 60, the whole deposit: the account is liquidated there with nothing
    # left, so bar 2 returns -100% and every later bar 0
    price = np.array([100.0, 100, 40, 40, 40])
    m = Market.from_arrays("A", price, price, price, price)
    targets = np.full((5, 1), np.nan)
    targets[0] = 1.0
    r = run(m, targets, target_kind="units", initial_balance=60.0, leverage=2,
            margin_mode="cross", venue="flat", venue_overrides={"taker_fee": 0.0})
    np.testing.assert_array_equal(r.equity.to_numpy(), [60, 60, 0, 0, 0])
    np.testing.assert_array_equal(r.returns.to_numpy(), [0, 0, -1, 0, 0])


def test_stats_is_the_metrics_as_a_series(wiped):
    stats = wiped.stats()
    assert isinstance(stats, pd.Series) and stats.name == "isolated 10x"
    assert stats.to_dict() == pytest.approx(wiped.metrics(), nan_ok=True)
    assert stats["liquidations"] == wiped.summary()["liquidations"] > 0


def test_plot_marks_each_liquidation_on_the_equity_curve(wiped, tmp_path):
    figure = wiped.plot(tmp_path / "run.png")
    assert (tmp_path / "run.png").stat().st_size > 10_000
    top, bottom = figure.axes[:2]
    markers = top.collections[0].get_offsets()
    events = wiped.liquidations.drop_duplicates("event")
    assert len(markers) == len(events)
    # the marker sits on the curve: the equity at the close of the liquidation's bar
    np.testing.assert_allclose(np.asarray(markers)[:, 1],
                               wiped.equity.to_numpy()[events["bar"].to_numpy()])
    assert "drawdown" in bottom.get_ylabel()


def test_a_notebook_shows_the_figures_and_the_plot(wiped):
    html = wiped._repr_html_()
    assert "<table" in html and "data:image/png;base64," in html
    assert f"{wiped.summary()['final_equity']:,.2f}" in html
    assert repr(wiped).startswith("<Result binance_usdm")
