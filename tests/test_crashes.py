"""Crash replay (backtester.risk): a book held through a dated window of history.

Expected figures are worked out by hand from Binance's rules (VENUES.md §2.3, §2.5), with the
bracket tables of binance_usdm.toml (BTCUSDT from 2024-10-02: 0-50k 0.4%, 50k-600k 0.5% cum 50;
from 2019-09-01: 250k-1M 1% cum 1,300), or by a second computation written here.
"""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import backtester.risk
import backtester.risk.book
import backtester.risk.crashes
import backtester.risk.windows
from backtester import Market, load_market, run
from backtester.risk import (
    CRASHES,
    Book,
    CrashWindow,
    book_at,
    crash_window,
    portfolio,
    replay_crash,
    survival_buffer,
    surviving_leverage,
    worst_windows,
)
from backtester.risk.crashes import SETUP_BARS

START = "2024-03-01"
MMR_1 = 0.004  # BTCUSDT bracket 1 (0-50k), 2024-10-02 table
TOL = 1e-4


def history(bars, symbols=("BTC_USDT",), start=START, mark=None, funding=None):
    """A Market from rows of (open, high, low, close) per symbol (one symbol: plain rows)."""
    arr = np.array(bars, dtype=float)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    return Market.from_arrays(list(symbols), arr[..., 0], arr[..., 1], arr[..., 2],
                              arr[..., 3], mark=mark, funding_rate=funding, start=start)


def whole(market: Market) -> CrashWindow:
    """The window of every bar of ``market``."""
    end = market.timestamps[-1] + pd.Timedelta(market.bar_ns, unit="ns")
    return CrashWindow("test", market.timestamps[0], end, "all bars")


def fall(x: float) -> Market:
    """One bar from 100 down to 100 * (1 - x) (close halfway back), then a flat bar."""
    low = 100.0 * (1.0 - x)
    return history([(100.0, 100.0, low, 0.5 * (100.0 + low)),
                    (0.5 * (100.0 + low),) * 4])


def btc_long(equity=3_000.0, leverage=10, qty=0.5, price=60_000.0, time=None):
    return portfolio({"BTC_USDT": qty}, {"BTC_USDT": price}, equity, leverage, time=time)


def isolated_distance(leverage: float, mmr: float = MMR_1) -> float:
    """Binance's isolated long, WB = IM, cum 0 (VENUES.md §2.5): LP = EP (1 - 1/L) / (1 - mmr);
    the fall from the entry at which it is liquidated."""
    return 1.0 - (1.0 - 1.0 / leverage) / (1.0 - mmr)


# --- isolated and cross, by hand ----------------------------------------------------------------


@pytest.mark.parametrize("x, liquidated", [(0.0955, False), (0.0970, True)])
def test_isolated_10x_long_is_liquidated_iff_the_fall_passes_its_liquidation_distance(
        x, liquidated):
    # 10x at bracket 1: LP / EP = 0.9 / 0.996 = 0.903614..., a distance of 9.6386%
    assert isolated_distance(10) == pytest.approx(0.0963855, abs=1e-7)
    market = fall(x)
    replay = replay_crash(btc_long(), whole(market), market, margin_modes=("isolated",),
                          buffer=False)
    row = replay.summary().loc["isolated"]
    assert row["survived"] == (not liquidated)
    if liquidated:
        assert row["first_liquidation"] == pd.Timestamp(START, tz="UTC")
        assert row["first_liquidated"] == "BTC_USDT"
        liq = replay.runs["isolated"].liquidations.iloc[0]
        assert liq["trigger_price"] == pytest.approx(60_000 * 0.9 / 0.996, rel=1e-12)
        assert row["final_equity"] == pytest.approx(0.0, abs=1e-6)  # the equity was the margin


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(leverage=st.integers(2, 100), x=st.floats(0.005, 0.6))
def test_isolated_long_is_liquidated_iff_the_fall_passes_the_distance_at_any_leverage(
        leverage, x):
    distance = isolated_distance(leverage)
    if abs(x - distance) < 1e-7:
        return  # at the liquidation price itself: either outcome is the same price
    market = fall(x)
    book = btc_long(equity=30_000 / leverage, leverage=leverage)
    replay = replay_crash(book, whole(market), market, margin_modes=("isolated",),
                          buffer=False)
    assert replay.summary().loc["isolated", "survived"] == (x < distance)


def test_cross_survives_where_the_unlevered_equity_covers_the_loss():
    # 0.5 BTC at 60,000 (30,000 notional), 10x; the window falls 30% (low 70), closes at 75
    market = history([(100.0, 100.0, 70.0, 75.0), (75.0, 75.0, 75.0, 75.0)])
    unlevered = btc_long(equity=30_000)
    summary = replay_crash(unlevered, whole(market), market, buffer=False).summary()
    # isolated: 3,000 of margin, a 30% fall is past 9.64%: the margin is lost, the rest stays
    assert not summary.loc["isolated", "survived"]
    assert summary.loc["isolated", "final_equity"] == pytest.approx(27_000.0, abs=1e-6)
    # cross: at the low, MB = 30,000 - 9,000 = 21,000 > MM = 21,000 * 0.4% = 84
    assert summary.loc["cross", "survived"]
    assert summary.loc["cross", "final_equity"] == pytest.approx(30_000 - 0.5 * 60_000 * 0.25)
    assert summary.loc["cross", "worst_equity"] == pytest.approx(22_500.0)
    assert summary.loc["cross", "loss_pct"] == pytest.approx(25.0)
    # cross with only the isolated margin as equity: 3,000 < 9,000 + 84 at the low
    levered = replay_crash(btc_long(equity=3_000), whole(market), market,
                           margin_modes=("cross",), buffer=False).summary()
    assert not levered.loc["cross", "survived"]


# --- the replay market --------------------------------------------------------------------------


def test_rescaling_puts_the_window_first_open_at_the_book_price_and_keeps_returns():
    rng = np.random.default_rng(3)
    n = 12
    close = 100 * np.cumprod(1 + rng.normal(0, 0.02, (n, 2)), axis=0)
    open_ = np.vstack([[100.0, 100.0], close[:-1]])
    high, low = np.maximum(open_, close) * 1.01, np.minimum(open_, close) * 0.99
    mark = (open_ * 1.002, high * 1.002, low * 1.002, close * 1.002)
    rates = np.full((n, 2), np.nan)
    rates[6] = [0.0001, -0.0002]
    market = Market.from_arrays(["BTC_USDT", "ETH_USDT"], open_, high, low, close, mark=mark,
                                funding_rate=rates, start=START)
    window = crash_window(f"{market.timestamps[4]:%Y-%m-%dT%H:%M}/"
                          f"{market.timestamps[10]:%Y-%m-%dT%H:%M}")
    book = portfolio({"ETH_USDT": 2.0, "SOL_USDT": -30.0}, {"ETH_USDT": 2_500.0,
                     "SOL_USDT": 150.0}, 20_000, leverage=5)
    replay = replay_crash(book, window, market, symbol_map={"SOL_USDT": "BTC_USDT"},
                          stand_in={"SOL_USDT": "BTC_USDT"}, buffer=False)
    played = replay.runs["cross"].market
    assert played.symbols == ("ETH_USDT", "SOL_USDT")
    assert played.n_bars == SETUP_BARS + 6
    for j, (symbol, source) in enumerate([("ETH_USDT", 1), ("SOL_USDT", 0)]):
        price = book.prices[symbol]
        assert played.open[SETUP_BARS, j] == pytest.approx(price, rel=1e-15)
        assert played.mark_open[SETUP_BARS, j] == pytest.approx(price, rel=1e-15)
        # the set-up bars: flat at the book's price, last and mark
        for name in ("open", "high", "low", "close", "mark_low", "mark_close"):
            assert (getattr(played, name)[:SETUP_BARS, j] == price).all()
        # the window: the history's returns from its first open, each series its own
        for name, first in (("low", open_), ("close", open_), ("mark_high", mark[0])):
            expected = price * getattr(market, name)[4:10, source] / first[4, source]
            assert getattr(played, name)[SETUP_BARS:, j] == pytest.approx(expected, rel=1e-12)
        assert played.funding_rate[SETUP_BARS + 2, j] == rates[6, source]
    assert played.timestamps[0] == market.timestamps[2]  # the two bar times before the window
    assert played.timestamps[SETUP_BARS] == window.start


def test_the_setup_charges_no_fee_to_the_book():
    market = fall(0.05)
    book = btc_long(equity=10_000)
    result = replay_crash(book, whole(market), market, margin_modes=("cross",),
                          buffer=False).runs["cross"]
    fee = 0.0005 * 30_000  # Binance's taker fee on the opening: the venue charges it...
    assert result.fills["fee"].iloc[0] == pytest.approx(fee)
    assert result.initial_equity == pytest.approx(10_000 + fee)  # ...on top of the equity
    assert result.equity.iloc[SETUP_BARS - 1] == pytest.approx(10_000, rel=1e-9)


def test_a_cross_book_below_its_initial_margin_is_held_with_its_own_equity():
    # 2,000 of equity for a 30,000 book at 10x (IM 3,000): a venue lets you keep it, not open
    # it; cross leverage does not change Binance's trigger, so 2x and 20x see the same path
    market = history([(100.0, 100.0, 96.0, 97.0), (97.0, 98.0, 97.0, 98.0)])
    paths = []
    for leverage in (2, 10, 20):
        result = replay_crash(btc_long(equity=2_000, leverage=leverage), whole(market), market,
                              margin_modes=("cross",), buffer=False).runs["cross"]
        assert result.equity.iloc[SETUP_BARS - 1] == pytest.approx(2_000, rel=1e-9)
        paths.append(result.equity.iloc[SETUP_BARS:].to_numpy())
    # 2,000 + 0.5 * 60,000 * (0.97 - 1), then (0.98 - 1)
    assert paths[0] == pytest.approx([2_000 - 900, 2_000 - 600])
    assert paths[1] == pytest.approx(paths[0]) and paths[2] == pytest.approx(paths[0])


# --- the smallest buffer ------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["cross", "isolated"])
@pytest.mark.parametrize("qty, bars, exact", [
    # long, lowest mark 0.8 x: loss 20% + MM 0.8 * 0.4% (bracket 1)
    (0.5, [(100.0, 100.0, 80.0, 90.0), (90.0, 95.0, 88.0, 95.0)], 1 - 0.8 * (1 - MMR_1)),
    # short, highest mark 1.25 x: loss 25% + MM 1.25 * 0.4%
    (-0.5, [(100.0, 125.0, 100.0, 110.0), (110.0, 115.0, 105.0, 105.0)],
     1.25 * (1 + MMR_1) - 1),
    # long of 100,000 (bracket 2 at 80,000): (20,000 + 80,000 * 0.5% - 50) / 100,000
    (100_000 / 60_000, [(100.0, 100.0, 80.0, 90.0), (90.0,) * 4], (20_000 + 350) / 100_000),
])
def test_survival_buffer_is_the_loss_at_the_worst_mark_plus_its_maintenance_margin(
        mode, qty, bars, exact):
    market = history(bars)
    book = btc_long(equity=5_000, qty=qty)
    buffer = survival_buffer(book, whole(market), market, mode, tolerance=TOL)
    assert exact <= buffer <= exact + TOL
    if mode == "isolated":
        leverage = surviving_leverage(book, whole(market), market)["BTC_USDT"]
        assert 1 / (exact + TOL) <= leverage <= 1 / exact


def test_isolated_buffer_stops_at_the_venue_leverage_cap():
    market = history([(100.0, 100.0, 99.9, 100.0), (100.0,) * 4])  # a 0.1% dip: 125x survives
    book = btc_long()
    assert surviving_leverage(book, whole(market), market) == {"BTC_USDT": 125.0}
    assert survival_buffer(book, whole(market), market, "isolated") == pytest.approx(1 / 125)


def test_cross_buffer_of_two_positions_matches_a_second_computation_on_the_worst_path():
    # path="worst": every position at its adverse extreme of the bar at once; the buffer is
    # then the largest (loss + MM) over the bars, each position in bracket 1 (0.4%)
    bars = [[(100, 101, 95, 97), (50, 52, 49, 51)],
            [(97, 99, 90, 98), (51, 55, 50, 54)],
            [(98, 98, 93, 94), (54, 57, 53, 53)]]
    market = history(bars, symbols=("BTC_USDT", "ETH_USDT"))
    qty, price = np.array([0.4, -8.0]), np.array([60_000.0, 2_500.0])
    book = portfolio(dict(zip(market.symbols, qty, strict=True)),
                     dict(zip(market.symbols, price, strict=True)), 5_000, 10)
    arr = np.array(bars, dtype=float)
    adverse = np.where(qty > 0, arr[..., 2], arr[..., 1]) / arr[0, :, 0] * price  # (T, N)
    need = (-(adverse - price) * qty + np.abs(qty) * adverse * MMR_1).sum(axis=1).max()
    exact = need / np.abs(qty * price).sum()
    buffer = survival_buffer(book, whole(market), market, "cross", path="worst")
    assert exact <= buffer <= exact + TOL


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000))
def test_the_buffer_survives_and_one_tolerance_less_does_not(seed):
    rng = np.random.default_rng(seed)
    close = 100 * np.cumprod(1 + rng.normal(0, 0.03, (6, 2)), axis=0)
    open_ = np.vstack([[100.0, 100.0], close[:-1]])
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.03, (6, 2)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.03, (6, 2)))
    market = Market.from_arrays(["BTC_USDT", "ETH_USDT"], open_, high, low, close, start=START)
    qty = {"BTC_USDT": rng.choice([-1, 1]) * 0.3, "ETH_USDT": rng.choice([-1, 1]) * 5.0}
    prices = {"BTC_USDT": 60_000.0, "ETH_USDT": 2_500.0}
    gross = 0.3 * 60_000 + 5 * 2_500
    buffer = survival_buffer(portfolio(qty, prices, 1_000, 10), whole(market), market)
    for equity, survives in ((buffer, True), (buffer - 2 * TOL, False)):
        book = portfolio(qty, prices, equity * gross, 10)
        summary = replay_crash(book, whole(market), market, margin_modes=("cross",),
                               buffer=False).summary()
        assert summary.loc["cross", "survived"] == survives


def test_the_venue_rules_in_force_at_the_book_time_apply_whatever_the_window_date():
    # 5 BTC at 100,000 (500,000); lowest mark 80,000: 400,000 of notional there. 2020's table:
    # 400,000 * 1% - 1,300 = 2,700 of MM; the latest: 400,000 * 0.5% - 50 = 1,950
    market = history([(100.0, 100.0, 80.0, 90.0), (90.0,) * 4])
    for time, mm in (("2020-03-12", 2_700), (None, 1_950)):
        book = btc_long(equity=60_000, qty=5, price=100_000, time=time)
        exact = (100_000 + mm) / 500_000
        buffer = survival_buffer(book, whole(market), market, tolerance=1e-6)
        assert exact <= buffer <= exact + 1e-6


# --- spot holdings: the funding carry ---------------------------------------------------------

PERP, SPOT = "BTC_USDT", "BTC_USDT_SPOT"


def carry_history(symbols=(PERP, SPOT)) -> Market:
    """A squeeze: 100 up to 130 (closing there), then back to 120; the perpetual and its spot
    series on one path (no mark series: the mark is the last price)."""
    bars = np.array([(100.0, 130.0, 100.0, 130.0), (130.0, 130.0, 120.0, 120.0)])
    o, h, lo, c = (np.repeat(bars[:, k: k + 1], len(symbols), axis=1) for k in range(4))
    return Market.from_arrays(list(symbols), o, h, lo, c, start=START)


def carry(equity: float, leverage=10) -> Book:
    """1 BTC held spot and 1 BTC short on the perpetual, both at 100."""
    return portfolio({SPOT: 1.0, PERP: -1.0}, {SPOT: 100.0, PERP: 100.0}, equity, leverage,
                     instruments={SPOT: "spot"})


def test_a_carry_short_is_liquidated_at_binance_isolated_short_price_while_spot_gains():
    # equity 110 = the spot holding (100, paid in full) + the short's isolated margin 10 (10x)
    # Binance isolated short, WB = IM, cum 0 (VENUES.md §2.5): LP = EP (1 + 1/L) / (1 + mmr)
    lp = 100.0 * (1.0 + 1.0 / 10) / (1.0 + MMR_1)
    assert lp == pytest.approx(109.5618, abs=1e-4)
    market = carry_history()
    replay = replay_crash(carry(110.0), whole(market), market, buffer=False)
    result = replay.runs["isolated"]
    row = replay.summary().loc["isolated"]
    assert not row["survived"] and row["liquidations"] == 1 and row["first_liquidated"] == PERP
    liq = result.liquidations.iloc[0]
    assert liq["trigger_price"] == pytest.approx(lp, rel=1e-12)
    assert liq["margin_lost"] == pytest.approx(10.0)
    # the spot leg is untouched: at the close of 130 it is worth 130 (a gain of 30), the
    # short's margin of 10 is gone, and nothing is left in the wallet: 130, then 120
    assert result.equity.iloc[SETUP_BARS:].to_list() == pytest.approx([130.0, 120.0])
    assert result.positions.iloc[-1].to_dict() == {SPOT: 1.0, PERP: 0.0}
    assert set(result.fills["symbol"][result.fills["bar"] >= SETUP_BARS]) == {PERP}
    # cross, the same equity: the spot holding is out of the cross margin balance (its cost
    # paid from the wallet), MB = 110 - 100 - (P - 100) = 110 - P, MM = 0.4% P: the same price
    cross = replay.runs["cross"].liquidations
    assert len(cross) == 1 and cross["symbol"].to_list() == [PERP]
    # (rel 1e-9: the replay deposits a hair, 1e-12 of equity + gross, more than the equity)
    assert cross["trigger_price"].iloc[0] == pytest.approx(110.0 / (1.0 + MMR_1), rel=1e-9)


@pytest.mark.parametrize("equity, survives", [(130.0, False), (131.0, True)])
def test_a_cross_carry_survives_iff_its_wallet_covers_the_squeeze_without_the_spot_gain(
        equity, survives):
    # MB = (equity - 100) - (P - 100) = equity - P; liquidated at P = equity / 1.004:
    # 129.48 (under the high of 130) for 130; 130.48 (above it) for 131
    market = carry_history()
    summary = replay_crash(carry(equity), whole(market), market, margin_modes="cross",
                           buffer=False).summary().loc["cross"]
    assert summary["survived"] == survives
    if survives:  # hedged: the spot gain offsets the short's loss at every close
        assert summary["final_equity"] == pytest.approx(equity)
        assert summary["worst_equity"] == pytest.approx(equity)
    else:  # the wallet's 30 lost to the short, the spot holding kept: 130, then 120
        assert summary["final_equity"] == pytest.approx(120.0)


def test_a_carry_below_its_opening_cost_is_held_with_its_own_equity_the_perp_paying_the_drain():
    # 105 < 100 of spot + 10 of margin: opened with more, the rest drained from the short
    # alone (a spot holding pays no funding); MB = 105 - P, liquidated at 105 / 1.004
    market = carry_history()
    result = replay_crash(carry(105.0), whole(market), market, margin_modes="cross",
                          buffer=False).runs["cross"]
    assert result.equity.iloc[SETUP_BARS - 1] == pytest.approx(105.0, rel=1e-9)
    assert set(result.funding["symbol"]) == {PERP}
    liq = result.liquidations.iloc[0]
    assert liq["trigger_price"] == pytest.approx(105.0 / (1.0 + MMR_1), rel=1e-9)


def test_carry_buffer_is_the_spot_cost_plus_the_short_loss_and_maintenance_at_the_high():
    # cross: equity - 130 >= 130 * 0.4% -> 130.52; isolated: the spot's 100 and a margin m
    # with m - 30 >= 0.52 -> 30.52. Both of a gross notional of 200 (both legs): 0.6526
    market = carry_history()
    exact = (130.0 + 130.0 * MMR_1) / 200.0
    replay = replay_crash(carry(110.0), whole(market), market)
    assert exact <= replay.buffers["cross"] <= exact + TOL
    # the isolated search is on the short's margin fraction of its own notional (100)
    assert exact <= replay.buffers["isolated"] <= exact + TOL / 2
    assert set(replay.leverages) == {PERP}       # a spot holding has no leverage
    assert 1 / (0.3052 + TOL) <= replay.leverages[PERP] <= 1 / 0.3052
    assert replay.summary().loc["isolated", "max_leverage"] == replay.leverages[PERP]
    # the spot leg may follow another column's path: the perpetual's here, the same prices
    perp_only = carry_history(symbols=(PERP,))
    mapped = survival_buffer(carry(110.0), whole(perp_only), perp_only,
                             symbol_map={SPOT: PERP})
    assert exact <= mapped <= exact + TOL
    assert surviving_leverage(carry(110.0), whole(perp_only), perp_only,
                              symbol_map={SPOT: PERP}) == pytest.approx(replay.leverages)


def test_worst_windows_of_a_carry_are_those_where_its_short_loses():
    # a squeeze (+30%) at bar 20 and a crash (-40%) at bar 60: the crash costs the spot leg
    # 40 but liquidates nothing; the squeeze costs the margined short 30
    prices = np.full((100, 2), 100.0)
    o, h, lo, c = (prices.copy() for _ in range(4))
    h[20], lo[60] = 130.0, 60.0
    market = Market.from_arrays([PERP, SPOT], o, h, lo, c, start=START)
    first = worst_windows(market, hours=10, count=1, book=carry(110.0))[0]
    assert first.start <= market.timestamps[20] < first.end
    assert "perpetuals' loss 30.00" in first.description


def test_book_at_takes_spot_columns_as_spot_holdings():
    market = carry_history()
    targets = np.full((2, 2), np.nan)
    targets[0] = [-1.0, 1.0]
    result = run(market, targets, fill_at="close", leverage=3, instruments={SPOT: "spot"})
    book = book_at(result, 0)
    assert book.positions == {PERP: -1.0, SPOT: 1.0}
    assert book.instruments == {SPOT: "spot"} and book.perpetuals == (PERP,)
    assert book.prices == {PERP: 130.0, SPOT: 130.0}     # the close of bar 0
    assert book.leverage == 3.0 and book.gross_notional == 260.0     # both legs
    assert book.equity == result.equity.iloc[0]
    assert "instruments={'BTC_USDT_SPOT': 'spot'}" in repr(book)
    assert "instruments" not in repr(btc_long())


def test_a_book_refuses_a_short_spot_holding_and_a_spot_leverage():
    prices = {SPOT: 100.0, PERP: 100.0}
    with pytest.raises(ValueError, match=r"positions\['BTC_USDT_SPOT'\]=-1.0.*cannot be short"):
        portfolio({SPOT: -1.0, PERP: 1.0}, prices, 110, 10, instruments={SPOT: "spot"})
    with pytest.raises(ValueError, match="leverage= gives a leverage for BTC_USDT_SPOT, a spot"):
        portfolio({SPOT: 1.0, PERP: -1.0}, prices, 110, {SPOT: 1, PERP: 10},
                  instruments={SPOT: "spot"})
    with pytest.raises(ValueError, match=r"instruments\['BTC_USDT_SPOT'\]='margin'"):
        portfolio({SPOT: 1.0}, prices, 110, 10, instruments={SPOT: "margin"})
    with pytest.raises(ValueError, match="instruments= names 'ETH_USDT_SPOT'"):
        portfolio({SPOT: 1.0}, prices, 110, 10, instruments={"ETH_USDT_SPOT": "spot"})
    book = portfolio({SPOT: 1.0, PERP: -1.0}, prices, 110, {PERP: 10},
                     instruments={SPOT: "spot", PERP: "perpetual"})
    assert book.instruments == {SPOT: "spot"} and book.leverage == {PERP: 10.0}
    with pytest.raises(ValueError, match="BTC_USDT_SPOT is a spot holding.*no leverage"):
        book.leverage_of(SPOT)


# --- windows --------------------------------------------------------------------------------


def test_shipped_crashes_and_window_specs():
    assert [w.name for w in CRASHES] == ["covid-2020-03-12", "china-ban-2021-05-19",
                                         "ftx-2022-11-08", "xrp-ruling-2023-07-13"]
    assert all(w.hours == 48 for w in CRASHES)
    assert crash_window("xrp-ruling-2023-07-13").symbols == ("XRP_USDT",)
    day = crash_window("2021-05-19")
    assert (day.start, day.end) == (pd.Timestamp("2021-05-19", tz="UTC"),
                                    pd.Timestamp("2021-05-21", tz="UTC"))
    assert (day.start, day.end) == (CRASHES[1].start, CRASHES[1].end)
    span = crash_window("2022-11-08T12:00/2022-11-09T06:00")
    assert span.hours == 18 and span.start == pd.Timestamp("2022-11-08 12:00", tz="UTC")
    assert crash_window(span) is span
    with pytest.raises(ValueError, match="covid-2020-03-12.*START/END"):
        crash_window("covid")
    with pytest.raises(ValueError, match="not after start"):
        crash_window("2022-11-09/2022-11-08")


def test_worst_windows_find_the_largest_moves_without_overlap():
    n = 100
    prices = np.full((n, 2), 100.0)
    o, h, lo, c = (prices.copy() for _ in range(4))
    lo[20, 0] = 70.0  # A: -30% at bar 20
    h[60, 1] = 150.0  # B: +50% at bar 60
    lo[80, 0] = 90.0  # A: -10% at bar 80
    lo[84, 1] = 88.0  # B: -12% at bar 84, within 10 bars of A's: one window holds both
    market = Market.from_arrays(["A", "B"], o, h, lo, c, start=START)
    found = worst_windows(market, hours=10, count=3)
    for window, (bar, symbol) in zip(found, [(60, "B"), (20, "A"), (84, "B")], strict=True):
        assert window.start <= market.timestamps[bar] < window.end
        assert window.symbols == (symbol,) and window.hours == 10
        assert crash_window(window.name).start == window.start  # the name reads back
    assert "B mark +50.0%" in found[0].description
    starts = sorted(w.start for w in found)
    assert all(b - a >= pd.Timedelta(hours=10) for a, b in zip(starts, starts[1:], strict=False))
    # with a book: its loss. Short B: the spike (1 short B * 100 * 50% = 50); long A: the fall
    short_b = portfolio({"B": -1.0, "A": 0.1}, {"B": 100.0, "A": 100.0}, 100, 5)
    first = worst_windows(market, hours=10, count=1, book=short_b)[0]
    assert first.start <= market.timestamps[60] < first.end
    assert "book loss 50.00" in first.description
    long_a = portfolio({"A": 1.0}, {"A": 1_000.0}, 1_000, 5)
    first = worst_windows(market, hours=10, count=1, book=long_a)[0]
    assert first.start <= market.timestamps[20] < first.end
    assert "book loss 300.00" in first.description


# --- books ------------------------------------------------------------------------------------


def test_book_at_takes_the_run_positions_prices_equity_and_leverage():
    market = load_market().slice(0, 30)
    targets = np.full((30, 2), np.nan)
    targets[0] = [0.1, -1.0]
    targets[10] = [0.2, -1.0]  # decided at close 10, filled at open 11
    for record in (True, False):
        result = run(market, targets, leverage={"BTC_USDT": 5, "ETH_USDT": 3},
                     record_positions=record)
        for t, held in ((5, [0.1, -1.0]), (10, [0.1, -1.0]), (11, [0.2, -1.0])):
            book = book_at(result, t)
            assert book.positions == dict(zip(market.symbols, held, strict=True))
            assert book.prices == dict(zip(market.symbols, market.close[t], strict=True))
            assert book.equity == result.equity.iloc[t]
            assert book.leverage == {"BTC_USDT": 5.0, "ETH_USDT": 3.0}
            assert book.time == market.timestamps[t]
    between = market.timestamps[11] + pd.Timedelta(minutes=30)
    assert book_at(result, between).time == market.timestamps[11]
    assert book_at(result, -1).time == market.timestamps[-1]
    with pytest.raises(ValueError, match="before the run's first bar"):
        book_at(result, "2000-01-01")


def test_book_from_a_run_replays_with_its_venue_and_time():
    market = load_market().slice(0, 30)
    targets = np.full((30, 2), np.nan)
    targets[0] = [0.1, -1.0]
    book = book_at(run(market, targets, leverage=5), 20)
    replay = replay_crash(book, whole(market.slice(20, 30)), market, buffer=False)
    assert replay.runs["cross"].equity.iloc[SETUP_BARS - 1] == pytest.approx(book.equity)
    assert set(replay.summary().index) == {"cross", "isolated"}


def test_portfolio_reads_units_and_notional_and_refuses_bad_values():
    book = portfolio({"BTC_USDT": {"notional": -50_000}, "ETH_USDT": {"units": 2}},
                     {"BTC_USDT": 100_000, "ETH_USDT": 2_000}, 10_000, {"BTC_USDT": 10,
                                                                       "ETH_USDT": 5})
    assert book.positions == {"BTC_USDT": -0.5, "ETH_USDT": 2.0}
    assert book.gross_notional == 54_000 and book.leverage_of("ETH_USDT") == 5
    with pytest.raises(ValueError, match="prices= has no price for 'ETH_USDT'"):
        Book({"ETH_USDT": 1.0}, {}, 1_000, 10, "binance_usdm")
    with pytest.raises(ValueError, match="equity"):
        btc_long(equity=0)
    with pytest.raises(ValueError, match=r"positions\['BTC_USDT'\]"):
        portfolio({"BTC_USDT": {"coins": 1}}, {"BTC_USDT": 1.0}, 1, 1)


# --- errors -------------------------------------------------------------------------------------


def test_replay_errors_name_what_is_wrong():
    market = fall(0.05)
    window = whole(market)
    eth = portfolio({"ETH_USDT": 1.0}, {"ETH_USDT": 2_500}, 1_000, 10)
    with pytest.raises(ValueError, match=r"ETH_USDT is not in the history.*symbol_map="
                                         r"\{'ETH_USDT': 'BTC_USDT'\}"):
        replay_crash(eth, window, market)
    mapped = replay_crash(eth, window, market, symbol_map={"ETH_USDT": "BTC_USDT"},
                          buffer=False)
    assert mapped.runs["cross"].market.open[SETUP_BARS, 0] == 2_500
    with pytest.raises(ValueError, match=r"window covid-2020-03-12 .*not covered.*BTC_USDT has "
                                         r"bars from 2024-03-01 00:00:00 UTC to 2024-03-01 "
                                         r"01:00:00 UTC"):
        replay_crash(btc_long(), "covid-2020-03-12", market)
    with pytest.raises(ValueError, match="leverage= is set by the replay"):
        replay_crash(btc_long(), window, market, leverage=5)
    with pytest.raises(ValueError, match="unknown replay option levrage="):
        replay_crash(btc_long(), window, market, levrage=5)
    with pytest.raises(ValueError, match="refuses to open the book in isolated mode.*"
                                         "insufficient_margin"):
        replay_crash(btc_long(equity=2_000), window, market, margin_modes=("isolated",))
    with pytest.raises(ValueError, match="margin_modes="):
        replay_crash(btc_long(), window, market, margin_modes=("crossed",))


@pytest.mark.parametrize("module", [backtester.risk, backtester.risk.book,
                                    backtester.risk.windows, backtester.risk.crashes])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --- real data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def binance(shared_data_dir):
    folder = shared_data_dir / "binance_futures"
    if not (folder / "BTC_USDT-1h.parquet").exists():
        pytest.skip("shared Binance futures data not present")
    return folder


def test_10x_btc_long_replayed_on_march_2020_is_liquidated_in_isolated_mode(binance):
    market = load_market(binance, symbols=["BTC_USDT"], timeframe="1h", start="2020-03-01",
                         end="2020-04-01")
    book = btc_long(equity=5_000, price=100_000)  # 50,000 of BTC at 10x, today's rules
    summary = replay_crash(book, "covid-2020-03-12", market, buffer=False).summary()
    assert not summary.loc["isolated", "survived"]
    # liquidated in the first bar whose mark low is 9.64% under the window's first mark
    # open (funding moves the margin by under 0.2%: the bars before fall at most 7.8%)
    marks = pd.read_parquet(binance / "BTC_USDT_mark-1h.parquet").set_index("timestamp")
    marks = marks.loc["2020-03-12":"2020-03-13"]
    ratio = marks["low"] / marks["open"].iloc[0]
    expected = ratio.index[np.argmax(ratio.to_numpy() <= 1 - isolated_distance(10))]
    assert (ratio.loc[:expected].iloc[:-1] > 1 - isolated_distance(10) + 0.01).all()
    assert summary.loc["isolated", "first_liquidation"] == expected
    assert not summary.loc["cross", "survived"]  # 10% of equity: the same fall takes it


def test_shipped_windows_hold_the_moves_they_describe(binance):
    extremes = {"covid-2020-03-12": ("BTC_USDT", "low", 3_621.81, "2020-03-13 02:00"),
                "china-ban-2021-05-19": ("BTC_USDT", "low", 28_688.0, "2021-05-19 13:00"),
                "ftx-2022-11-08": ("BTC_USDT", "low", 15_462.6, "2022-11-09 22:00"),
                "xrp-ruling-2023-07-13": ("XRP_USDT", "high", 0.965, "2023-07-13 18:00")}
    for window in CRASHES:
        symbol, column, price, when = extremes[window.name]
        bars = pd.read_parquet(binance / f"{symbol}-1h.parquet").set_index("timestamp")
        inside = bars.loc[(bars.index >= window.start) & (bars.index < window.end), column]
        assert len(inside) == 48
        best = inside.min() if column == "low" else inside.max()
        at = inside.idxmin() if column == "low" else inside.idxmax()
        assert (best, at) == (price, pd.Timestamp(when, tz="UTC"))
    market = load_market(binance, symbols=["BTC_USDT"], timeframe="1h", start="2020-01-01",
                         end="2021-01-01")
    worst = worst_windows(market, hours=48, count=1)[0]
    assert worst.start <= pd.Timestamp("2020-03-13 02:00", tz="UTC") < worst.end
