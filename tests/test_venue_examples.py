"""Every worked example of VENUES.md for Bybit (§3), OKX (§4) and Kraken (§5), to the cent.

The expected numbers are VENUES.md's (its E-Y, E-O and E-K oracles, or the
venue's own example it quotes); the arithmetic is repeated in the comments. A
venue-displayed price is compared after rounding to the tick away from the
trader, as VENUES.md §6.10 prescribes.
"""

from __future__ import annotations

import doctest
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import backtester.venues.binance
import backtester.venues.bybit
import backtester.venues.files
import backtester.venues.kraken
import backtester.venues.models
import backtester.venues.okx
import backtester.venues.registry
import backtester.venues.venue
from backtester.engine import enums, rules
from backtester.venues import SymbolSpec, binance, bybit, kraken, load_venue, okx, tiers_from_table

INF = float("inf")


def bybit_tiers(at="2024-06-01"):
    """Tier arrays of Bybit BTCUSDT (tier 1: 0.5% up to 2,000,000, as every example uses)."""
    return load_venue("bybit_linear").spec("BTCUSDT", at=at).tier_arrays()


def columns(venue_name, symbol, at, leverage=np.nan, spec=None, **changes):
    """The kernel's layout of one ``symbol`` on a venue at ``at``: its model's own rule rows
    under the rules in force (changed as given), column 0."""
    venue = load_venue(venue_name)
    spec = spec or venue.spec(symbol, at)
    return venue.margin_model.columns([spec], {**venue.rules(at), **changes}, [leverage])


def engine_mm(c, qty, entry, price):
    """The engine's maintenance margin of column 0."""
    return rules.maintenance_margin(0, qty, entry, price, c.sym, c.tiers, c.n_tiers)


# --- Bybit: isolated liquidation price, classic (§3.3) --------------------------------------


def test_ey1_classic_long_50x_at_20000_liquidates_at_19700():
    # IM = 20,000 / 50 = 400; MM = 20,000 x 0.5% = 100 (the engine's, on the entry value);
    # LP = 20,000 - (400 - 100) / 1
    mm = engine_mm(columns("bybit_linear", "BTCUSDT", "2024-06-01", 50.0), 1.0, 20_000.0,
                   15_000.0)  # any mark: classic MM is on the entry value
    assert mm == 100.0
    assert bybit.classic_liquidation_price(1.0, 20_000.0, 400.0, mm) == 19_700.0
    assert bybit.isolated_liquidation_price(1.0, 20_000, 50, at="2025-01-01") == 19_700.0


def test_ey2_classic_short_with_3000_added_margin_liquidates_at_23300():
    # 20,000 + (400 - 100) / 1 + 3,000 / 1
    assert bybit.classic_liquidation_price(-1.0, 20_000.0, 400.0 + 3_000.0, 100.0) == 23_300.0
    assert bybit.isolated_liquidation_price(-1.0, 20_000, 50, extra_margin=3_000,
                                            at="2023-01-01") == 23_300.0


def test_classic_mm_above_tier_1_subtracts_the_deduction():
    # 100 BTC long at 30,000 (3,000,000: tier 2, 1% with deduction 10,000), 20x:
    # IM 150,000, MM 30,000 - 10,000 = 20,000 -> LP = 30,000 - 130,000 / 100 = 28,700
    c = columns("bybit_linear", "BTCUSDT", "2024-06-01", 20.0)
    assert engine_mm(c, 100.0, 30_000.0, 30_000.0) == pytest.approx(20_000.0, abs=1e-9)
    lp = bybit.isolated_liquidation_price(100.0, 30_000.0, 20.0, at="2024-06-01")
    assert lp == pytest.approx(28_700.0, abs=1e-9)
    # before 2024-03-12 (manual risk limit, no deduction): MM 30,000 -> 30,000 - 1,200
    lp = bybit.isolated_liquidation_price(100.0, 30_000.0, 20.0, at="2023-01-01")
    assert lp == pytest.approx(28_800.0, abs=1e-9)


# --- Bybit: the 2025-09-02 rules (§3.3) ----------------------------------------------------------


def test_ey3_fee_to_close_in_im_and_mm_gives_19698_49():
    # feeClose = 20,000 x 0.98 x 0.055% = 10.78; IM = 400 + 10.78 = 410.78;
    # LP = (20,000 - 410.78 + 10.78) / (1 - 0.005) = 19,698.49
    fee = bybit.fee_to_close(1.0, 20_000.0, 50.0, 0.00055)
    assert fee == pytest.approx(10.78, abs=1e-9)
    # Binance's form with the collateral less the reserved fee: (20,000 - 400) / 0.995
    lp = binance.bracket_liquidation_price(1.0, 20_000.0, 400.0 + fee - fee, *bybit_tiers()[:4])
    assert round(lp, 2) == 19_698.49
    assert round(bybit.isolated_liquidation_price(1.0, 20_000, 50, at="2025-09-02"), 2) == (
        19_698.49)


def test_bybit_isolated_price_refuses_another_models_venue():
    with pytest.raises(ValueError, match="follows the binance model, not Bybit's"):
        bybit.isolated_liquidation_price(1.0, 20_000, 50, venue="binance_usdm")


def test_2025_short_mirrors_the_long():
    # short: fee = 20,000 x 1.02 x 0.055% = 11.22; IM = 411.22;
    # IM + Q*EP + ded - fee = Q*P*(1 + MMR) -> (411.22 + 20,000 - 11.22) / 1.005 = 20,298.51
    lp = bybit.isolated_liquidation_price(-1.0, 20_000, 50, at="2025-10-01")
    assert round(lp, 2) == 20_298.51


def test_2025_mark_based_mm_takes_the_tier_at_the_liquidation_price():
    # 70 BTC long at 30,000 = 2,100,000 (tier 2 at entry), 10x: collateral M - fee = 210,000.
    # Tier 2 would give (2,100,000 - 210,000 - 10,000) / (70 x 0.99) = 27,128.43, a value of
    # 1,898,990 (tier 1), so tier 1: (2,100,000 - 210,000) / (70 x 0.995) = 27,135.68
    q, ep, lev = 70.0, 30_000.0, 10.0
    lp = bybit.isolated_liquidation_price(q, ep, lev, at="2025-10-01")
    assert lp == pytest.approx((2_100_000 - 210_000) / (70 * 0.995), rel=1e-12)
    assert q * lp < 2_000_000


# --- Bybit: inverse contracts, bankruptcy, ticks (§3.3, §3.4) ----------------------------------


def test_ey4_inverse_isolated_long_liquidates_at_45662_10():
    # PV = 60,000 / 50,000 = 1.2 BTC; IM = 0.12; MM = 0.006; LP = 60,000 / (1.2 + 0.114)
    lp = bybit.inverse_isolated_liquidation_price(60_000.0, 50_000.0, 10.0, 0.005, 0.0, 0.0)
    assert round(lp, 2) == 45_662.10


def test_ey5_linear_bankruptcy_price_is_9800():
    # 10,000 x (1 - 1/50)
    assert bybit.bankruptcy_price(1.0, 10_000, 50) == 9_800.0
    assert bybit.bankruptcy_price_linear(-1.0, 10_000.0, 200.0, 0.0) == 10_200.0


def test_ey6_inverse_bankruptcy_price_7735_37_shown_as_7735_50():
    # EP x L / (L + 1) = 7,890.08 x 50 / 51; Bybit rounds to the 0.5 tick away from the trader
    margin = 1_000.0 / 7_890.08 / 50  # IM in BTC of 1,000 contracts at 50x
    bp = bybit.bankruptcy_price_inverse(1_000.0, 7_890.08, margin)
    assert round(bp, 2) == 7_735.37
    assert bybit.round_to_tick(bp, 0.5, 1.0) == 7_735.50


def test_ey7_inverse_cross_bankruptcy_and_liquidation_prices():
    # BP = 1.00075 x 10,000 / (10,000 / 8,000 + 0.5) = 5,718.57
    bp = bybit.inverse_cross_bankruptcy_price(10_000.0, 8_000.0, 0.5, 0.00075)
    assert round(bp, 2) == 5_718.57
    # 10,000 x (1/8,000 - 1/LP) = -(0.5 - 1.25 x 0.5% - 10,000 x 0.00075 / BP) -> 5,739.08,
    # shown by Bybit as 5,739.50: a long's price rounds UP to the 0.5 tick
    lp = bybit.inverse_cross_liquidation_price(10_000.0, 8_000.0, 0.5, 0.005, 0.00075)
    assert round(lp, 2) == 5_739.08
    assert bybit.round_to_tick(lp, 0.5, 1.0) == 5_739.50
    assert bybit.round_to_tick(lp, 0.5, -1.0) == 5_739.00  # a short's rounds down


def test_ey8_order_cost_is_im_plus_both_fees():
    # 5,000 + 50,000 x 0.055% + 50,000 x 0.9 x 0.055% = 5,000 + 27.50 + 24.75
    assert bybit.order_cost(1.0, 50_000.0, 10.0, 0.00055) == pytest.approx(5_052.25, abs=1e-9)
    # old rates: 200 + 7.5 + 7.35 = 214.85
    assert bybit.order_cost(1.0, 10_000.0, 50.0, 0.00075) == pytest.approx(214.85, abs=1e-9)


# --- Bybit: partial liquidation and the UTA account MM rate (§3.5, §3.6) -----------------------
# Tiers of the 2M ladder with derived deductions: MM(4M) = 40,000 - 10,000 = 30,000 and
# MM(2M) = 10,000; a 5M position (tier 3) has MM 75,000 - 30,000 = 45,000. The engine's
# step-down (``rules.partial_target``) on Bybit's own rule rows, for a position of that
# value entered at the mark (size = value at a price of 1).


def step_down(value, equity, scales):
    """Value a position of ``value`` with ``equity`` keeps: all of it while its MM holds (it
    is not liquidated), else the engine's cut (0: closed at the bankruptcy price)."""
    c = columns("bybit_linear", "BTCUSDT", "2024-06-01", 20.0)
    if equity >= engine_mm(c, value, 1.0, 1.0):
        return value
    return rules.partial_target(0, value, 1.0, 1.0, equity, scales, c.sym, c.tiers, c.n_tiers)


@pytest.mark.parametrize(("equity", "target"), [
    (44_000.0, 4_000_000.0),  # 44,000 x 4/5 = 35,200 >= 30,000: step down to tier 2's limit
    (30_000.0, 2_000_000.0),  # 24,000 < 30,000; 30,000 x 2/5 = 12,000 >= 10,000: tier 1
    (20_000.0, 0.0),          # 8,000 < 10,000: no lower tier helps, close at bankruptcy
    (46_000.0, 5_000_000.0),  # MM holds: nothing to cut
])
def test_isolated_step_down_target_is_the_highest_lower_tier_that_satisfies_mm(equity, target):
    assert step_down(5_000_000.0, equity, scales=True) == target


@pytest.mark.parametrize(("free", "target"), [
    (31_000.0, 4_000_000.0),  # covers MM(4M) = 30,000
    (12_000.0, 2_000_000.0),  # covers MM(2M) = 10,000 only
    (9_000.0, 0.0),
])
def test_cross_step_down_target(free, target):
    assert step_down(5_000_000.0, free, scales=False) == target


def test_a_lowest_tier_position_is_never_stepped_down():
    assert step_down(1_000_000.0, 1_000.0, scales=True) == 0.0


def test_uta_account_mm_rate_liquidates_at_100_percent():
    # 4,500 / (5,000 - 500 + 0) = 100%; with no haircut 90%
    assert bybit.account_mm_rate(4_500.0, 5_000.0, 500.0, 0.0) == pytest.approx(1.0)
    assert bybit.account_mm_rate(4_500.0, 5_000.0, 0.0, 0.0) == pytest.approx(0.9)
    assert bybit.account_mm_rate(10.0, 100.0, 150.0, 0.0) == INF


# --- OKX (§4) ---------------------------------------------------------------------------------


def test_eo1_beth_discount_tiers():
    # 1M x 0.95; 2M x 0.95 + 2M x 0.85 + 1M x 0.5 = 4.1M; ... + 4M x 0.5 + 2M x 0 = 5.6M
    floors, caps, rates, n = load_venue("okx_swap").discount_tiers("BETH").arrays()
    for usd, expected in [(1e6, 950_000.0), (5e6, 4_100_000.0), (1e7, 5_600_000.0)]:
        assert okx.discounted_value(usd, floors, caps, rates, n) == pytest.approx(expected)


def test_adjusted_equity_counts_loans_in_full_and_coin_bounds_in_coins():
    floors, caps, rates, n = np.array([0.0, 10.0]), np.array([10.0, INF]), np.array([0.9, 0.5]), 2
    # 20 coins at 100 with bounds in coins: (10 x 0.9 + 10 x 0.5) x 100 = 1,400
    assert okx.currency_adjusted_equity(20.0, 100.0, floors, caps, rates, n, False) == (
        pytest.approx(1_400.0))
    # a loan of 3 coins counts -300, undiscounted
    assert okx.currency_adjusted_equity(-3.0, 100.0, floors, caps, rates, n, False) == -300.0


def test_eo2_isolated_swap_liquidation_prices():
    # (60,000 - 6,000) / (1 - 0.0045) = 54,244.10; (60,000 + 6,000) / 1.0045 = 65,704.33
    assert round(okx.liquidation_price(1.0, 60_000.0, 6_000.0, 0.004, 0.0005), 2) == 54_244.10
    assert round(okx.liquidation_price(-1.0, 60_000.0, 6_000.0, 0.004, 0.0005), 2) == 65_704.33


def test_okx_liquidation_price_is_where_the_margin_ratio_reaches_100_percent():
    lp = okx.liquidation_price(1.0, 60_000.0, 6_000.0, 0.004, 0.0005)
    equity = 6_000.0 + (lp - 60_000.0)
    # the engine's requirement on OKX's rows (stand-in tier: 0.4%, fee 0.05%) is MM + fee
    c = columns("okx_swap", "BTCUSDT", "2024-01-01")
    fee = rules.fee_in_margin(0, 1.0, 60_000.0, lp, c.sym)
    assert fee == pytest.approx(lp * 0.0005, rel=1e-12)
    mm = engine_mm(c, 1.0, 60_000.0, lp) - fee
    assert okx.margin_ratio(equity, mm, fee) == pytest.approx(1.0, rel=1e-12)


def test_legacy_isolated_ratio_example_liquidates_below_1_55_percent():
    # §4.2 [S]: MMR 1.50% + fee 0.05%: (margin + UPL) / value below 1.55% is liquidated,
    # i.e. equity / (MM + fee) below 100%. A 1,000 position with 15.4 of equity: 15.4/15.5
    assert okx.margin_ratio(15.4, 15.0, 0.5) < 1.0 < okx.margin_ratio(15.6, 15.0, 0.5)


def test_okx_mm_jumps_at_a_tier_bound_because_the_whole_position_takes_the_rate():
    # the engine's MM on OKX's rows, the liquidation fee left out of the trigger
    c = columns("okx_swap", "CHZUSDT", "2024-01-01", liquidation_fee_in_trigger=False)
    # CHZUSDT: 5,000 contracts of 10 CHZ at 0.10 = 5,000 USDT at 1% = 50.00; one contract
    # more is tier 2: 5,001 x 10 x 0.10 x 1.5% = 75.015 (sizes in base units: x 10)
    assert engine_mm(c, 50_000.0, 0.12, 0.10) == pytest.approx(50.0)
    assert engine_mm(c, -50_010.0, 0.08, 0.10) == pytest.approx(75.015)


def partial(c, contracts, contract_size):
    """The engine's partial-liquidation target of a solvent position of ``contracts`` (equity
    1: OKX's targets do not depend on how much), in contracts."""
    size = contracts * contract_size
    return rules.partial_target(0, size, 1.0, 1.0, 1.0, True, c.sym, c.tiers,
                                c.n_tiers) / contract_size


def test_okx_partial_liquidation_targets():
    c = columns("okx_swap", "CHZUSDT", "2024-01-01")
    # 40,000 contracts is tier 5 (30,000-45,000): drop two tiers to tier 3's cap, 15,000
    assert partial(c, 40_000.0, 10.0) == 15_000.0
    assert partial(c, 6_000.0, 10.0) == 0.0  # tier 2: full close
    # legacy 2020 rule (§4.4): 15,000 swaps in tier >= 3 go down to tier 1's limit of
    # 2,000, closing 13,000
    legacy = SymbolSpec("XUSDT", tiers_from_table(
        [(0, 2_000, 100, 0.005), (2_000, 5_000, 50, 0.01), (5_000, 10_000, 20, 0.02),
         (10_000, 20_000, 10, 0.05)], rule="whole"), 0.0005, 0.0002, 0.0005,
        tier_rule="whole", tier_unit="contracts", params={"contract_size": 1.0})
    c = columns("okx_swap", "XUSDT", None, spec=legacy, partial_liquidation="to_tier_1")
    assert partial(c, 15_000.0, 1.0) == 2_000.0
    # okx_swap's own rule: two tiers down
    assert columns("okx_swap", "CHZUSDT", None).sym[enums.Sym.PARTIAL, 0] == (
        enums.Partial.TWO_TIERS)


def test_portfolio_margin_scaling_of_the_liquidation_cost_term():
    # §4.8: MR7 = 30,000 with tiers [0-10,000] x 1, (10,000-70,000] x 2:
    # 10,000 + 20,000 x 2 = 50,000; the unit's MMR = max(40,000, 50,000) = 50,000
    mr7 = okx.discounted_value(30_000.0, np.array([0.0, 10_000.0]),
                               np.array([10_000.0, 70_000.0]), np.array([1.0, 2.0]), 2)
    assert mr7 == 50_000.0
    assert max(40_000.0, mr7) == 50_000.0


def test_okx_spot_margin_isolated_estimates():
    # long: holds 1 BTC, owes 20,000 USDT, BTC/USDT tier 1 MMR 3%, fee 0.1%:
    # 20,000 x 1.03 x 1.001 / 1 = 20,620.60
    assert okx.spot_isolated_liquidation_price(1.0, 1.0, 20_000.0, 0.0, 0.03, 0.001) == (
        pytest.approx(20_620.60, abs=1e-9))
    # short: holds 30,000 USDT, owes 0.5 BTC + 0.001 interest: 30,000 / (0.501 x 1.03 x 1.001)
    assert okx.spot_isolated_liquidation_price(-1.0, 30_000.0, 0.5, 0.001, 0.03, 0.001) == (
        pytest.approx(30_000.0 / (0.501 * 1.03 * 1.001), rel=1e-12))


def test_okx_loan_interest_accrues_hourly():
    # 10,000 USDT owed at 10% a year for a day: 10,000 x 0.10 / 8,760 x 24 = 2.7397
    assert okx.loan_interest(10_000.0, 0.10, 24.0) == pytest.approx(2.739726, abs=1e-6)
    assert okx.loan_interest(-5.0, 0.10, 24.0) == 0.0


# --- Kraken spot margin (§5.1) and Kraken Futures (§5.2) ---------------------------------------


def test_ek1_long_margin_call_at_79_999_percent():
    # 1.5 BTC at 30,000 (45,000) at 5:1 uses 9,000; at 28,133.30 the P/L is -2,800.05
    used = kraken.used_margin(1.5, 30_000.0, 28_133.30, 5.0)
    assert used == 9_000.0
    level = kraken.account_margin_level(10_000.0, np.array([1.5]), np.array([30_000.0]),
                                        np.array([28_133.30]), np.array([5.0]))
    assert round(level * 100, 3) == 79.999
    assert level < load_venue("kraken_spot").rules()["margin_call_level"]


def test_ek2_margin_call_and_liquidation_prices_of_a_long():
    # equity at call 0.8 x 4,000 = 3,200 -> P/L -6,800 -> 13,200; at 40%: 1,600 -> 11,600
    assert kraken.margin_level_price(1.0, 20_000.0, 5.0, 10_000.0, 0.8, 0.0, 0.0) == 13_200.0
    assert kraken.margin_level_price(1.0, 20_000.0, 5.0, 10_000.0, 0.4, 0.0, 0.0) == 11_600.0
    opening = kraken.account_margin_level(10_000.0, np.array([1.0]), np.array([20_000.0]),
                                          np.array([20_000.0]), np.array([5.0]))
    assert opening == 2.5  # 250%


def test_ek3_short_margin_is_revalued_in_the_borrowed_base():
    # short 0.2 BTC at 50,000, 5x: used 0.04 BTC = 2,000 (250% on 5,000); at 65,200:
    # equity 5,000 - 3,040 = 1,960, used 0.04 x 65,200 = 2,608 -> 75%
    assert kraken.used_margin(-0.2, 50_000.0, 65_200.0, 5.0) == pytest.approx(2_608.0)
    level = kraken.account_margin_level(5_000.0, np.array([-0.2]), np.array([50_000.0]),
                                        np.array([65_200.0]), np.array([5.0]))
    assert round(level * 100) == 75
    # and the call price of that short: (5,000 + 10,000) / (0.2 x (1 + 0.8/5)) = 64,655.17
    call = kraken.margin_level_price(-0.2, 50_000.0, 5.0, 5_000.0, 0.8, 0.0, 0.0)
    assert round(call, 2) == 64_655.17


def test_ek4_short_at_2x_opens_at_100_percent_and_is_at_75_2_at_54500():
    kw = dict(qtys=np.array([-0.2]), entries=np.array([50_000.0]), leverages=np.array([2.0]))
    at_open = kraken.account_margin_level(5_000.0, kw["qtys"], kw["entries"],
                                          np.array([50_000.0]), kw["leverages"])
    assert at_open == 1.0
    later = kraken.account_margin_level(5_000.0, kw["qtys"], kw["entries"],
                                        np.array([54_500.0]), kw["leverages"])
    assert round(later * 100, 1) == 75.2  # 4,100 / 5,450


def test_cross_margin_level_spans_every_position():
    # long 1 BTC at 20,000 (5x, used 4,000) + short 10 ETH at 1,000 (5x, used 2,000 at 1,000)
    # on 10,000: at BTC 18,000 and ETH 1,100 equity 10,000 - 2,000 - 1,000 = 7,000,
    # used 4,000 + 2,200 = 6,200 -> 112.9%
    level = kraken.account_margin_level(10_000.0, np.array([1.0, -10.0]),
                                        np.array([20_000.0, 1_000.0]),
                                        np.array([18_000.0, 1_100.0]), np.array([5.0, 5.0]))
    assert level == pytest.approx(7_000 / 6_200)
    # the BTC leg's 40% price with ETH frozen: 20,000 + (0.4 x (2,200 + 4,000) - 9,000) / 1
    lp = kraken.margin_level_price(1.0, 20_000.0, 5.0, 10_000.0, 0.4, -1_000.0, 2_200.0)
    assert lp == pytest.approx(13_480.0)


def test_ek5_rollover_on_16000_usd_for_24_hours_is_24():
    # 0.025% every 4 h from the 4th hour: 6 x 4.00
    rate = load_venue("kraken_spot").spec("BTCUSD", at="2026-03-01").params["long_rollover_fee"]
    assert rate == 0.00025
    assert kraken.rollover_fees(16_000.0, rate, 24.0, 4.0) == pytest.approx(24.0)
    assert kraken.rollover_count(3.99, 4.0) == 0 and kraken.rollover_count(4.0, 4.0) == 1
    assert kraken.opening_fee(16_000.0, rate) == pytest.approx(4.0)


def test_kraken_lends_a_longs_cost_and_a_shorts_size():
    assert kraken.borrowed_amount(0.8, 20_000.0) == 16_000.0  # quote, for a long
    assert kraken.borrowed_amount(-0.2, 50_000.0) == 0.2  # base, for a short


def test_ek6_kraken_futures_inverse_liquidation_at_7481_then_ioc_at_7407():
    # 1,000 contracts at 8,000, margin 0.01 BTC, MM 1% of the value at mark:
    # 0.01 + 1,000/8,000 - 1,000/P = 0.01 x 1,000/P -> P = 1,010 / 0.135 = 7,481.48
    lp = kraken.futures_inverse_liquidation_price(1_000.0, 8_000.0, 0.01, 0.01)
    assert round(lp, 2) == 7_481.48 and int(lp) == 7_481
    # portfolio value 0 at 1,000 / 0.135 = 7,407.41: the IOC limit 7,407
    assert int(kraken.futures_inverse_bankruptcy_price(1_000.0, 8_000.0, 0.01)) == 7_407
    # VENUES.md's check: PV(7,481) = 0.001328 BTC
    assert 0.01 + 1_000 / 8_000 - 1_000 / 7_481 == pytest.approx(0.001328, abs=5e-7)


# --- the compiled functions run without the JIT, and the docstrings run -----------------------


def test_formulas_run_under_numba_disable_jit():
    # the calculators call the engine's compiled rules: they must run as plain Python too
    script = textwrap.dedent("""
        from backtester.venues import bybit, kraken, okx
        print(round(bybit.isolated_liquidation_price(1.0, 20000.0, 50.0, at="2025-09-02"), 2))
        print(okx.discounted_value(5e6, [0, 2e6, 4e6, 8e6], [2e6, 4e6, 8e6, float("inf")],
                                   [0.95, 0.85, 0.5, 0.0]))
        print(round(okx.liquidation_price(1.0, 60000.0, 6000.0, 0.004, 0.0005), 2))
        print(round(kraken.futures_inverse_liquidation_price(1000.0, 8000.0, 0.01, 0.01), 2))
        print(bybit.round_to_tick(5739.08, 0.5, 1.0), kraken.rollover_count(24.0, 4.0))
        print(kraken.account_margin_level(5000.0, [-0.2], [50000.0], [54500.0], [2.0]))
    """)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, timeout=120).stdout.split()
    assert out[:6] == ["19698.49", "4100000.0", "54244.1", "7481.48", "5739.5", "6"]
    assert float(out[6]) == pytest.approx(4_100 / 5_450)  # E-K4


@pytest.mark.parametrize("module", [backtester.venues.bybit, backtester.venues.okx,
                                    backtester.venues.kraken, backtester.venues.binance,
                                    backtester.venues.venue, backtester.venues.models,
                                    backtester.venues.registry, backtester.venues,
                                    backtester.venues.files])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
    if module not in (backtester.venues.models, backtester.venues.files):
        assert result.attempted > 0
