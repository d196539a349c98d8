"""Binance hedge mode: a long and a short leg on one symbol (VENUES.md §2.1, §2.5).

Each leg is a market column ``SYM.long`` / ``SYM.short`` with its own entry, margin
and bracket. Isolated legs are two ordinary isolated positions; cross legs share the
account and one liquidation price, the root of Binance's hedge formula
``(WB - TMM1 + UPNL1 + cumL + cumS - QL*EPL + QS*EPS) / (QL*MMRL + QS*MMRS - QL + QS)``.
Every expected number is worked out by hand below (BTCUSDT's 2024-01 brackets: tier 1
is notional <= 50,000 at MMR 0.4%, cum 0; liquidation fee 1.25%; taker 0.05%).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtester import Market, run

T = 6


def hedge_market(low_at=None, low=None, high_at=None, high=None, funding_rate=None):
    close = np.full((T, 1), 20_000.0)
    lows, highs = close.copy(), close.copy()
    if low_at is not None:
        lows[low_at, 0] = low
    if high_at is not None:
        highs[high_at, 0] = high
    return Market.from_arrays(["BTC_USDT"], close, highs, lows, close, funding_rate=funding_rate)


def legs(market, long_qty, short_qty):
    """Open both legs at the first fill (open of bar 1), then leave them."""
    frame = pd.DataFrame(np.nan, index=market.timestamps,
                         columns=["BTC_USDT.long", "BTC_USDT.short"])
    frame.iloc[0] = [long_qty, short_qty]
    return frame


def hedge_run(market, targets, **options):
    options = {"position_mode": "hedge", "venue": "binance_usdm", "leverage": 20,
               "initial_balance": 2_500.0, **options}
    return run(market, targets, **options)


def test_isolated_legs_are_two_isolated_positions_with_their_own_prices():
    # long 1 @ 20,000 at 20x: M = 1,000; LP = (M - Q*EP) / (Q*MMR - Q)
    #   = (1,000 - 20,000) / (0.004 - 1) = 19,076.305...
    # short 0.9 @ 20,000: M = 900; LP = (M + Q*EP) / (Q*MMR + Q)
    #   = (900 + 18,000) / (0.0036 + 0.9) = 20,916.334...
    market = hedge_market()
    result = hedge_run(market, legs(market, 1.0, -0.9), margin_mode="isolated")
    lp = result.liquidation_prices.iloc[1]
    assert lp["BTC_USDT.long"] == pytest.approx(19_000 / 0.996, abs=1e-6)
    assert lp["BTC_USDT.short"] == pytest.approx(18_900 / 0.9036, abs=1e-6)
    assert result.positions.iloc[-1].tolist() == [1.0, -0.9]


def test_an_isolated_leg_is_liquidated_alone():
    # bar 3's low of 15,000 crosses the long leg's 19,076.31: it alone goes and loses its
    # 1,000 margin (fee 1.25% x 19,076.31 = 238.45 takes what the price left, 76.31)
    market = hedge_market(low_at=3, low=15_000.0)
    result = hedge_run(market, legs(market, 1.0, -0.9), margin_mode="isolated")
    liq = result.liquidations
    assert liq["symbol"].tolist() == ["BTC_USDT.long"]
    assert liq["price"].iloc[0] == pytest.approx(19_000 / 0.996)
    assert liq["margin_lost"].iloc[0] == pytest.approx(1_000.0)
    assert result.positions.iloc[-1].tolist() == [0.0, -0.9]


def test_cross_legs_share_one_liquidation_price_from_binances_hedge_formula():
    # WB = 2,500 - taker fees (20,000 + 4,000) x 0.05% = 2,488. Long 1 and short 0.2 at
    # 20,000, both in tier 1 at the liquidation price (notionals < 50,000):
    # LP = (2,488 + 0 + 0 - 1 x 20,000 + 0.2 x 20,000) / (0.004 + 0.2 x 0.004 - 1 + 0.2)
    #    = -13,512 / -0.7952 = 16,991.951...
    market = hedge_market()
    result = hedge_run(market, legs(market, 1.0, -0.2), margin_mode="cross")
    expected = -13_512 / -0.7952
    lp = result.liquidation_prices.iloc[2]
    assert lp["BTC_USDT.long"] == pytest.approx(expected, abs=1e-6)
    assert lp["BTC_USDT.short"] == pytest.approx(expected, abs=1e-6)


def test_cross_legs_are_liquidated_together_at_the_shared_price():
    market = hedge_market(low_at=3, low=15_000.0)
    result = hedge_run(market, legs(market, 1.0, -0.2), margin_mode="cross")
    liq = result.liquidations
    assert sorted(liq["symbol"]) == ["BTC_USDT.long", "BTC_USDT.short"]
    assert liq["event"].nunique() == 1
    assert liq["price"].to_numpy() == pytest.approx([-13_512 / -0.7952] * 2, rel=1e-12)
    assert result.positions.iloc[-1].tolist() == [0.0, 0.0]


def test_a_nearly_offset_hedge_has_its_root_on_the_short_side():
    # long 1 and short 0.95: the net is long 0.05, but the legs' MM grows with the price
    # faster than the net gain, so f(P) = WB + 0.05*(P - 20,000) - MM(P) - MM(0.95 P) falls
    # below zero only far ABOVE the mark; below the mark f(0+) = WB - 1,000 > 0 (no root).
    # The root is checked against f by an independent evaluation of the bracket table.
    market = hedge_market()
    result = hedge_run(market, legs(market, 1.0, -0.95), margin_mode="cross")
    lp = result.liquidation_prices.iloc[2, 0]
    from backtester.venues import load_venue

    tiers = load_venue("binance_usdm").spec("BTCUSDT", "2024-01-01").tiers

    def mm(notional):
        tier = next((t for t in tiers if notional <= t.cap), tiers[-1])
        return notional * tier.mmr - tier.cum

    wb = 2_500 - (20_000 + 19_000) * 0.0005

    def f(p):
        return wb + (p - 20_000) - 0.95 * (p - 20_000) - mm(p) - mm(0.95 * p)

    assert lp > 20_000
    assert f(lp * (1 - 1e-9)) > 0 >= f(lp * (1 + 1e-9))


def test_each_leg_pays_its_own_funding():
    # rate 0.01% at bar 2's open, mark 20,000: the long pays 1 x 20,000 x 0.0001 = 2, the
    # short receives 0.9 x 20,000 x 0.0001 = 1.8
    rate = np.full((T, 1), np.nan)
    rate[2, 0] = 0.0001
    market = hedge_market(funding_rate=rate)
    result = hedge_run(market, legs(market, 1.0, -0.9), margin_mode="cross")
    paid = result.funding.set_index("symbol")["payment"]
    assert paid["BTC_USDT.long"] == pytest.approx(2.0)
    assert paid["BTC_USDT.short"] == pytest.approx(-1.8)


def test_targets_on_the_symbol_itself_are_refused():
    market = hedge_market()
    targets = pd.DataFrame({"BTC_USDT": [1.0] + [np.nan] * (T - 1)}, index=market.timestamps)
    with pytest.raises(ValueError, match="BTC_USDT in hedge mode: give targets to the legs "
                                         r"BTC_USDT.long \(>= 0\) and BTC_USDT.short"):
        hedge_run(market, targets)


def test_a_leg_target_on_the_wrong_side_is_refused():
    market = hedge_market()
    with pytest.raises(ValueError, match=r"targets of BTC_USDT.long must be >= 0 .* got -1 at "
                                         "bar 0"):
        hedge_run(market, legs(market, -1.0, -0.5))


def test_legs_cannot_have_different_margin_modes():
    market = hedge_market()
    with pytest.raises(ValueError, match="margin_mode of BTC_USDT.long and BTC_USDT.short "
                                         "must be the same"):
        hedge_run(market, legs(market, 1.0, -0.5),
                  margin_mode={"BTC_USDT.long": "cross", "BTC_USDT.short": "isolated"})


def test_hedge_mode_is_refused_on_a_venue_without_it():
    market = Market.from_arrays(["CHZ_USDT"], *(np.full((T, 1), 0.1),) * 4)
    targets = pd.DataFrame(np.nan, index=market.timestamps,
                           columns=["CHZ_USDT.long", "CHZ_USDT.short"])
    with pytest.raises(ValueError, match="position_mode 'hedge' is simulated on the binance "
                                         "model only; venue okx_swap"):
        run(market, targets, position_mode="hedge", venue="okx_swap", leverage=5)
