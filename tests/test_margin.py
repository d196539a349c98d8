"""Margin math against Binance's published numbers (VENUES.md §2.3, §2.5, §2.6).

Every expected number is a VENUES.md figure or a hand calculation written next
to it; the tier tables are typed here from VENUES.md, not read from the venue files.
Each liquidation price is checked twice: Binance's formula as the ``binance`` model
implements it (``venues.binance.bracket_liquidation_price``, the public calculators)
and the kernel's solver (``engine.rules.solve_liquidation_price``).
"""

from __future__ import annotations

import doctest

import numpy as np
import pandas as pd
import pytest

import backtester.liquidation
import backtester.venues
import backtester.venues.binance
import backtester.venues.spec
from backtester.engine import enums, rules
from backtester.liquidation import bankruptcy_price, cross_liquidation_prices, liquidation_price
from backtester.venues import SymbolSpec, Venue, load_venue, tiers_from_table
from backtester.venues.binance import bracket_liquidation_price
from backtester.venues.spec import derive_cums

INF = float("inf")

# (floor, cap, max_leverage, mmr, cum as published), VENUES.md §2.3.1
BTC_2024 = [
    (0, 50_000, 125, 0.004, 0),
    (50_000, 600_000, 100, 0.005, 50),
    (600_000, 3_000_000, 75, 0.0065, 950),
    (3_000_000, 12_000_000, 50, 0.01, 11_450),
    (12_000_000, 70_000_000, 25, 0.02, 131_450),
    (70_000_000, 100_000_000, 20, 0.025, 481_450),
    (100_000_000, 230_000_000, 10, 0.05, 2_981_450),
    (230_000_000, 480_000_000, 5, 0.10, 14_481_450),
    (480_000_000, 600_000_000, 4, 0.125, 26_481_450),
    (600_000_000, 800_000_000, 3, 0.15, 41_481_450),
    (800_000_000, 1_200_000_000, 2, 0.25, 121_481_450),
    (1_200_000_000, 1_800_000_000, 1, 0.50, 421_481_450),
]
# VENUES.md §2.3.2
ETH_2024 = [
    (0, 50_000, 125, 0.004, 0),
    (50_000, 600_000, 100, 0.005, 50),
    (600_000, 3_000_000, 75, 0.0065, 950),
    (3_000_000, 12_000_000, 50, 0.01, 11_450),
    (12_000_000, 50_000_000, 25, 0.02, 131_450),
    (50_000_000, 65_000_000, 20, 0.025, 381_450),
    (65_000_000, 150_000_000, 10, 0.05, 2_006_450),
    (150_000_000, 320_000_000, 5, 0.10, 9_506_450),
    (320_000_000, 400_000_000, 4, 0.125, 17_506_450),
    (400_000_000, 530_000_000, 3, 0.15, 27_506_450),
    (530_000_000, 800_000_000, 2, 0.25, 80_506_450),
    (800_000_000, 1_200_000_000, 1, 0.50, 280_506_450),
]
# VENUES.md §2.3.3, BTCUSDT 2021-03-18 announcement
BTC_2021 = [
    (0, 50_000, 125, 0.004, 0),
    (50_000, 250_000, 100, 0.005, 50),
    (250_000, 1_000_000, 50, 0.01, 1_300),
    (1_000_000, 10_000_000, 20, 0.025, 16_300),
    (10_000_000, 20_000_000, 10, 0.05, 266_300),
    (20_000_000, 50_000_000, 5, 0.10, 1_266_300),
    (50_000_000, 100_000_000, 4, 0.125, 2_516_300),
    (100_000_000, 200_000_000, 3, 0.15, 5_016_300),
    (200_000_000, 300_000_000, 2, 0.25, 25_016_300),
    (300_000_000, 500_000_000, 1, 0.50, 100_016_300),
]
# VENUES.md §2.3.3, ETHUSDT 2021 era (gist x100_lookup_table). The source gives no
# max leverage: the column is the one binance_usdm.toml chose (each rate's 2022 leverage).
ETH_2021 = [
    (0, 10_000, 100, 0.005, 0),
    (10_000, 100_000, 75, 0.0065, 15),
    (100_000, 500_000, 50, 0.01, 365),
    (500_000, 1_000_000, 25, 0.02, 5_365),
    (1_000_000, 2_000_000, 10, 0.05, 35_365),
    (2_000_000, 5_000_000, 5, 0.10, 135_365),
    (5_000_000, 10_000_000, 4, 0.125, 260_365),
    (10_000_000, 20_000_000, 3, 0.15, 510_365),
    (20_000_000, INF, 2, 0.25, 2_510_365),
]
TABLES = {"BTC_2024": BTC_2024, "ETH_2024": ETH_2024, "BTC_2021": BTC_2021, "ETH_2021": ETH_2021}


def arrays(table):
    """(floors, caps, mmrs, cums, n) with the PUBLISHED cums, for the engine functions."""
    a = np.array(table, dtype=np.float64)
    return a[:, 0].copy(), a[:, 1].copy(), a[:, 3].copy(), a[:, 4].copy(), len(table)


def flat(mmr):
    """A one-tier table at ``mmr`` (max leverage 1 / (2 mmr), unused)."""
    return [(0, INF, 1 / (2 * mmr), mmr, 0.0)]


def layout(table):
    """``(sym, tiers, n_tiers)``: the table as column 0 of the kernel's layout, under the
    bracket rule with no fee in the margin, with the PUBLISHED cums."""
    floors, caps, mmrs, cums, n = arrays(table)
    tiers = np.zeros((enums.N_TIER_FIELDS, 1, n))
    tiers[enums.TierField.FLOOR, 0], tiers[enums.TierField.CAP, 0] = floors, caps
    tiers[enums.TierField.MMR, 0], tiers[enums.TierField.CUM, 0] = mmrs, cums
    sym = np.zeros((enums.N_SYMBOL_FIELDS, 1))
    sym[enums.Sym.MM_RULE] = enums.MM.BRACKET
    return sym, tiers, np.array([n], dtype=np.int64)


def tier_of(notional, table):
    """The engine's tier lookup (0-based)."""
    _sym, tiers, n_tiers = layout(table)
    return rules.tier_from(notional, 0, 0, tiers, n_tiers)


def maintenance(notional, table):
    """The engine's maintenance margin of a notional (a position of that size at price 1)."""
    return rules.maintenance_margin(0, notional, 1.0, 1.0, *layout(table))


def lp(qty, entry, collateral, table):
    """The liquidation price by Binance's formula (the binance model's reference calculator)
    and by the kernel's solver: they must agree; returns the reference."""
    reference = bracket_liquidation_price(qty, entry, collateral, *arrays(table)[:4])
    kernel = rules.solve_liquidation_price(0, qty, entry, collateral, *layout(table))
    assert kernel == pytest.approx(reference, rel=1e-12, abs=1e-9 * entry)
    return reference


def mm_by_slices(notional, table):
    """Maintenance margin as the sum over brackets of (slice of N inside) x (its MMR).

    The "tax bracket" reading of VENUES.md §2.3, independent of cum and of the engine.
    """
    total = 0.0
    for floor, cap, _lev, mmr, _cum in table:
        total += max(0.0, min(notional, cap) - floor) * mmr
    return total


# --- maintenance amount (cum) and maintenance margin -------------------------------------


@pytest.mark.parametrize("name", TABLES)
def test_cum_recursion_reproduces_published_maintenance_amounts(name):
    floors, _caps, mmrs, published, _n = arrays(TABLES[name])
    assert derive_cums(floors, mmrs) == pytest.approx(published, abs=1e-6)


def test_264k_btc_position_sits_in_the_1pct_bracket_of_the_2021_table():
    _floors, _caps, mmrs, _cums, _n = arrays(BTC_2021)  # Binance FAQ example
    assert mmrs[tier_of(264_000.0, BTC_2021)] == 0.01


def test_500k_btc_position_has_maintenance_amount_1300_in_the_2021_table():
    _floors, _caps, _mmrs, cums, _n = arrays(BTC_2021)
    assert cums[tier_of(500_000.0, BTC_2021)] == 1_300  # 250,000 x (1% - 0.5%) + 50
    # slices: 50k x 0.4% + 200k x 0.5% + 250k x 1% = 200 + 1,000 + 2,500
    assert maintenance(500_000.0, BTC_2021) == pytest.approx(3_700)


def test_2019_faq_level5_maintenance_amount_is_141300():
    # 1M-5M at 2.5% then 5M at 5%: 5,000,000 x (5% - 2.5%) + 16,300 = 141,300
    floors = np.array([0, 50e3, 250e3, 1e6, 5e6])
    mmrs = np.array([0.004, 0.005, 0.01, 0.025, 0.05])
    assert derive_cums(floors, mmrs)[4] == pytest.approx(141_300)


def test_tier_bounds_are_floor_exclusive_cap_inclusive():
    n = len(BTC_2024)
    assert tier_of(0.0, BTC_2024) == 0
    assert tier_of(50_000.0, BTC_2024) == 0
    assert tier_of(50_000.01, BTC_2024) == 1
    assert tier_of(5e9, BTC_2024) == n - 1  # above the last cap: the last tier


@pytest.mark.parametrize("name", TABLES)
def test_maintenance_margin_is_continuous_at_every_tier_boundary(name):
    table = TABLES[name]
    _floors, caps, mmrs, cums, n = arrays(table)
    for k in range(n - 1):
        cap = caps[k]
        below = cap * mmrs[k] - cums[k]
        above = cap * mmrs[k + 1] - cums[k + 1]
        assert above == pytest.approx(below, abs=1e-6), f"tier {k + 1} -> {k + 2}"
        assert maintenance(cap * (1 + 1e-12), table) == pytest.approx(below, rel=1e-9)


@pytest.mark.parametrize("name", TABLES)
def test_maintenance_margin_equals_the_tax_bracket_sum(name):
    table = TABLES[name]
    last_cap = table[-1][1]
    for notional in [0.0, 1.0, 9_999.0, 50_000.0, 264_000.0, 4_918_775.081, 7.5e7, 3.3e8, 1.1e9]:
        if notional > last_cap:
            continue  # beyond the table the engine extends the last tier; slices stop
        got = maintenance(notional, table)
        assert got == pytest.approx(mm_by_slices(notional, table), rel=1e-12, abs=1e-9)


# --- E-B1: Binance's original cross example (VENUES.md §2.6) -----------------------------


def test_eb1_btc_short_leg_liquidates_at_11383_99():
    # (10.72 - 1.3 + 0.47 + 0 + 0.005 x 9,451.53) / (0.005 x 0.004 + 0.005) = 11,383.994
    price = lp(-0.005, 9_451.53, 10.72 - 1.3 + 0.47, flat(0.004))
    assert round(price, 2) == 11_383.99
    public = liquidation_price(-0.005, 9_451.53, margin_mode="cross", wallet_balance=10.72,
                               other_maintenance=1.3, other_unrealized=0.47)
    assert public == pytest.approx(price, rel=1e-15)


def test_eb1_eth_long_leg_matches_binance_190_29_within_its_rounding():
    # (10.72 - 0.19 - 0.06 - 199.53) / (0.0065 - 1) = 190.2969...; Binance prints 190.29
    # ("difference due to rounding"), VENUES.md's script 190.297
    price = lp(1.0, 199.53, 10.72 - 0.19 - 0.06, flat(0.0065))
    assert round(price, 2) == 190.30
    assert abs(price - 190.29) < 0.01
    venue = load_venue("flat", mmr=0.0065)  # the 2019 ETHUSDT first-bracket rate
    public = liquidation_price(1.0, 199.53, venue=venue, symbol="ETHUSDT", margin_mode="cross",
                               wallet_balance=10.72, other_maintenance=0.19,
                               other_unrealized=-0.06)
    assert public == pytest.approx(price, rel=1e-15)


# --- E-B2: Binance's 2021 cross example, BTC + ETH (VENUES.md §2.6) -------------------------

EB2_WALLET = 1_535_443.01
EB2_BOOK = [("BTCUSDT", 109.488, 32_481.98, 31_967.27), ("ETHUSDT", 3_683.979, 1_456.84, 1_335.18)]


def eb2_venue() -> Venue:
    """The 2021-era tables the example uses: BTC 2021-03-18, ETH 2021 (§2.3.3)."""
    def spec(symbol, table):
        return SymbolSpec(symbol, tiers_from_table(row[:4] for row in table), 0.0005, 0.0002,
                          0.0125)
    return Venue("binance_2021", "E-B2 tables", {"BTCUSDT": spec("BTCUSDT", BTC_2021),
                                                 "ETHUSDT": spec("ETHUSDT", ETH_2021)})


def test_eb2_engine_formula_gives_binance_liquidation_prices():
    # BTC MM = 3,500,032.458 x 2.5% - 16,300 = 71,200.81; ETH MM = 4,918,775.081 x 10% - 135,365
    btc_mm, eth_mm = 71_200.811444, 356_512.508122
    btc_upnl = 109.488 * (31_967.27 - 32_481.98)   # -56,354.57
    eth_upnl = 3_683.979 * (1_335.18 - 1_456.84)   # -448,192.89
    btc = lp(109.488, 32_481.98, EB2_WALLET - eth_mm + eth_upnl, BTC_2021)
    eth = lp(3_683.979, 1_456.84, EB2_WALLET - btc_mm + btc_upnl, ETH_2021)
    assert round(btc, 2) == 26_316.89
    assert round(eth, 2) == 1_153.26


def test_eb2_cross_liquidation_prices_and_margin_ratio():
    account = cross_liquidation_prices(EB2_BOOK, EB2_WALLET, venue=eb2_venue())
    table = account.positions
    assert table.loc["BTCUSDT", "maintenance_margin"] == pytest.approx(71_200.81144, abs=1e-4)
    assert table.loc["ETHUSDT", "maintenance_margin"] == pytest.approx(356_512.508, abs=1e-3)
    assert round(table.loc["BTCUSDT", "unrealized_pnl"], 2) == -56_354.57
    assert round(table.loc["ETHUSDT", "unrealized_pnl"], 2) == -448_192.89
    assert round(table.loc["BTCUSDT", "liquidation_price"], 2) == 26_316.89
    assert round(table.loc["ETHUSDT", "liquidation_price"], 2) == 1_153.26
    # (71,200.81 + 356,512.51) / (1,535,443.01 - 504,547.45) = 41.49%
    assert round(account.margin_ratio * 100, 2) == 41.49


def test_eb2_btc_uses_the_2021_03_18_table_of_the_built_in_venue():
    # the ETH leg's TMM1 and UPNL1 taken from the example; BTC tiers from binance_usdm in 2021
    lp = liquidation_price(109.488, 32_481.98, margin_mode="cross", at="2021-06-01",
                           wallet_balance=EB2_WALLET, other_maintenance=356_512.508122,
                           other_unrealized=3_683.979 * (1_335.18 - 1_456.84))
    assert round(lp, 2) == 26_316.89


def test_eb1_with_the_built_in_binance_tables_of_2020():
    # BTCUSDT short 0.005 @ 9,451.53 (mark 9,462.81) and ETHUSDT long 1 @ 199.53 (mark 200.00,
    # UPNL 0.47) on a 10.72 cross wallet. The venue's 2019-20 tables give BTC 0.4% and ETH
    # 0.65% (MM 1.30): BTC LP 11,383.99 as Binance; ETH (10.72 - 0.19 - 0.06 - 199.53) /
    # (0.0065 - 1) with the unrounded 0.189256 and 0.0564 is 190.2926: Binance's 190.29
    account = cross_liquidation_prices(
        [("BTCUSDT", -0.005, 9_451.53, 9_462.81), ("ETHUSDT", 1.0, 199.53, 200.0)], 10.72,
        at="2020-01-01")
    table = account.positions
    assert round(table.loc["ETHUSDT", "maintenance_margin"], 2) == 1.30
    assert round(table.loc["BTCUSDT", "maintenance_margin"], 2) == 0.19
    assert round(table.loc["BTCUSDT", "liquidation_price"], 2) == 11_383.99
    assert round(table.loc["ETHUSDT", "liquidation_price"], 2) == 190.29


def test_eb2_with_the_built_in_binance_tables_of_2021():
    # the venue file's 2021 tables (BTC 2021-03-18, ETH 2021 era) reproduce E-B2 whole
    account = cross_liquidation_prices(EB2_BOOK, EB2_WALLET, at="2021-06-01")
    table = account.positions
    assert table.loc["ETHUSDT", "maintenance_margin"] == pytest.approx(356_512.508, abs=1e-3)
    assert round(table.loc["BTCUSDT", "liquidation_price"], 2) == 26_316.89
    assert round(table.loc["ETHUSDT", "liquidation_price"], 2) == 1_153.26
    assert round(account.margin_ratio * 100, 2) == 41.49


def test_freqtrade_isolated_formula_checks_of_eb2():
    # freqtrade uses the 1.5M wallet as isolated margin: formula checks, not Binance numbers
    venue = eb2_venue()
    eth = liquidation_price(3_683.979, 1_456.84, venue=venue, symbol="ETHUSDT",
                            margin=EB2_WALLET)
    btc = liquidation_price(109.488, 32_481.98, venue=venue, symbol="BTCUSDT", margin=EB2_WALLET)
    assert round(eth, 2) == 1_114.78
    assert round(btc, 2) == 18_778.73


def test_cross_positions_accept_a_dataframe_indexed_by_symbol():
    frame = pd.DataFrame(EB2_BOOK, columns=["symbol", "qty", "entry", "mark"]).set_index("symbol")
    account = cross_liquidation_prices(frame, EB2_WALLET, venue=eb2_venue())
    assert round(account.positions.loc["ETHUSDT", "liquidation_price"], 2) == 1_153.26


def test_cross_positions_refuse_two_positions_in_one_symbol():
    with pytest.raises(ValueError, match="one-way mode"):
        cross_liquidation_prices([("BTCUSDT", 1, 100, 100), ("BTC_USDT", -1, 100, 100)], 1_000)


# --- isolated closed forms (VENUES.md §2.5) -------------------------------------------------


def test_50x_isolated_at_20000_with_mmr_half_percent():
    # long: 20,000 x (1 - 1/50) / (1 - 0.005) = 19,698.49; short: 20,000 x 1.02 / 1.005
    assert round(liquidation_price(0.3, 20_000, venue="flat", leverage=50), 2) == 19_698.49
    assert round(liquidation_price(-0.3, 20_000, venue="flat", leverage=50), 2) == 20_298.51


# (leverage, mmr) pairs with mmr < 1/leverage: a position must not open liquidatable
GRID = [(lev, mmr) for lev in (1.5, 2, 10, 25, 50, 75) for mmr in (0.004, 0.005, 0.01, 0.025)
        if mmr < 1 / lev]


@pytest.mark.parametrize("entry", [0.5, 100.0, 20_000.0, 65_432.1])
@pytest.mark.parametrize(("leverage", "mmr"), GRID)
def test_isolated_closed_forms_on_a_single_tier(entry, leverage, mmr):
    venue = load_venue("flat", mmr=mmr, max_leverage=leverage)
    long = liquidation_price(2.0, entry, venue=venue, leverage=leverage)
    short = liquidation_price(-2.0, entry, venue=venue, leverage=leverage)
    assert long == pytest.approx(entry * (1 - 1 / leverage) / (1 - mmr), rel=1e-12)
    assert short == pytest.approx(entry * (1 + 1 / leverage) / (1 + mmr), rel=1e-12)


# --- re-bracketing: the tier at the liquidation price (VENUES.md §2.5 bracket rule) ---------


def root_by_bisection(qty, entry, collateral, table):
    """Mark where collateral + qty (P - entry) = MM(|qty| P), MM by bracket slices."""
    def trigger(price):
        return collateral + qty * (price - entry) - mm_by_slices(abs(qty) * price, table)
    lo, hi = 1e-9, 10 * entry
    assert np.sign(trigger(lo)) != np.sign(trigger(hi))
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if np.sign(trigger(mid)) == np.sign(trigger(lo)):
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def test_short_whose_liquidation_notional_crosses_into_the_next_tier():
    # 10 BTC short at 59,000 (590k: tier 2), 20x: margin 29,500. With tier 2 the LP would be
    # 619,550 / 10.05 = 61,646.77 -> notional 616,468 > 600k, so tier 3 (0.65%, cum 950):
    # (29,500 + 950 + 590,000) / (10 x 1.0065) = 61,644.31
    lp = liquidation_price(-10, 59_000, leverage=20)
    assert round(lp, 2) == 61_644.31
    assert lp == pytest.approx(root_by_bisection(-10, 59_000, 29_500, BTC_2024), rel=1e-10)


def test_long_whose_liquidation_notional_falls_into_the_lower_tier():
    # 10 BTC long at 70,000 (700k: tier 3), 5x: margin 140,000. Tier 3 would give 56,270.76
    # (notional 562,708 < 600k), so tier 2 (0.5%, cum 50): -559,950 / -9.95 = 56,276.38
    lp = liquidation_price(10, 70_000, leverage=5)
    assert round(lp, 2) == 56_276.38
    assert lp == pytest.approx(root_by_bisection(10, 70_000, 140_000, BTC_2024), rel=1e-10)


@pytest.mark.parametrize("qty", [-250.0, -3.0, 0.7, 40.0, 900.0])
@pytest.mark.parametrize("leverage", [2, 5, 10])
def test_liquidation_price_is_the_root_of_the_trigger_in_any_tier(qty, leverage):
    entry = 61_000.0
    collateral = abs(qty) * entry / leverage
    price = lp(qty, entry, collateral, BTC_2024)
    assert price == pytest.approx(root_by_bisection(qty, entry, collateral, BTC_2024), rel=1e-10)


def test_liquidation_exactly_on_a_tier_boundary():
    # long 1 @ 60,000; collateral 10,200: at P = 50,000 equity 200 = MM(50,000) = 50,000 x 0.4%
    assert lp(1.0, 60_000.0, 10_200.0, BTC_2024) == pytest.approx(50_000.0, abs=1e-6)
    # short 1 @ 45,000; collateral 5,200: at P = 50,000 equity 5,200 - 5,000 = 200 = MM
    assert lp(-1.0, 45_000.0, 5_200.0, BTC_2024) == pytest.approx(50_000.0, abs=1e-6)
    # 600k boundary: 10 long @ 65,000, equity at 60,000 = collateral - 50,000 = MM(600k) = 2,950
    assert lp(10.0, 65_000.0, 52_950.0, BTC_2024) == pytest.approx(60_000.0, abs=1e-6)


# --- edges and bankruptcy ---------------------------------------------------------------------


def test_a_1x_long_is_never_liquidated():
    assert liquidation_price(1.0, 60_000, leverage=1) <= 0
    assert liquidation_price(0.1, 20_000, venue="flat", leverage=1) <= 0


def test_a_1x_short_still_has_a_liquidation_price():
    # 20,000 x (1 + 1) / (1 + 0.005) = 39,800.995
    assert liquidation_price(-0.1, 20_000, venue="flat", leverage=1) == pytest.approx(39_800.995,
                                                                                     abs=1e-3)


def test_a_short_with_collateral_below_minus_its_entry_value_is_liquidatable_at_any_price():
    # collateral + Q x EP = -200 + 100 < 0: the trigger holds even at P = 0; never "safe" (inf)
    assert lp(-1.0, 100.0, -200.0, BTC_2024) <= 0


def test_a_flat_position_has_no_liquidation_price():
    assert np.isnan(liquidation_price(0.0, 20_000, leverage=10))
    # on every model, the margin given outright too (Bybit counts its implied leverage)
    assert np.isnan(liquidation_price(0.0, 20_000, venue="bybit_linear", margin=400))
    assert np.isnan(bankruptcy_price(0.0, 20_000, venue="okx_swap", margin=400))


def test_isolated_bankruptcy_price_is_where_the_margin_is_gone():
    # 0.5 BTC at 20,000, 10x: margin 1,000 = 0.5 x 2,000
    assert bankruptcy_price(0.5, 20_000, venue="flat", leverage=10) == pytest.approx(18_000)
    assert bankruptcy_price(-0.5, 20_000, venue="flat", leverage=10) == pytest.approx(22_000)


def test_cross_bankruptcy_price_ignores_the_others_maintenance_margin():
    # E-B1 BTC short: 9,451.53 + (10.72 + 0.47) / 0.005 = 11,689.53
    bp = bankruptcy_price(-0.005, 9_451.53, margin_mode="cross", wallet_balance=10.72,
                          other_unrealized=0.47)
    assert bp == pytest.approx(11_689.53, abs=1e-9)


def test_gap_between_liquidation_and_bankruptcy_is_the_maintenance_margin_per_unit():
    # VENUES.md §6.2: LP - BP = MM(Q x LP) / Q for an isolated long
    qty, entry = 3.0, 64_000.0
    lp = liquidation_price(qty, entry, leverage=20)
    bp = bankruptcy_price(qty, entry, leverage=20)
    assert (lp - bp) * qty == pytest.approx(mm_by_slices(qty * lp, BTC_2024), rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"margin_mode": "crossed", "leverage": 5}, "margin_mode must be 'isolated' or 'cross'"),
        ({"margin": 100, "leverage": 5}, "exactly one of margin"),
        ({}, "exactly one of margin"),
        ({"leverage": 5, "wallet_balance": 100}, "isolated mode only"),
        ({"margin_mode": "cross"}, "needs wallet_balance"),
        ({"margin_mode": "cross", "wallet_balance": 100, "margin": 5}, "cross mode"),
        ({"leverage": 5, "margin": None, "extra_margin": -1}, "must not be negative"),
        ({"margin": 100, "extra_margin": 10}, "extra_margin goes with leverage"),
        ({"leverage": 150}, "exceeds binance_usdm's cap of 125x"),
        ({"leverage": 0}, "positive"),
        ({"margin": -5}, "must not be negative"),
    ],
)
def test_liquidation_price_explains_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        liquidation_price(0.1, 20_000, **kwargs)


def test_leverage_is_checked_against_the_tier_of_the_entry_notional():
    # 100 BTC at 60,000 = 6M notional: tier 4 of the 2024 table allows 50x
    with pytest.raises(ValueError, match="cap of 50x \\(tier 4\\)"):
        liquidation_price(100, 60_000, leverage=75)


def test_entry_price_must_be_positive():
    with pytest.raises(ValueError, match="entry_price must be positive"):
        liquidation_price(1, -5, leverage=2)


@pytest.mark.parametrize(
    "module", [backtester.liquidation, backtester.venues.spec, backtester.venues.binance]
)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --- other venues' models ---------------------------------------------------------------------


def test_public_liquidation_price_follows_bybit_rules_on_a_bybit_venue():
    # E-Y1 (classic, 2024): 20,000 - (400 - 100); E-Y3 (from 2025-09-02): 19,698.49
    assert liquidation_price(1.0, 20_000, venue="bybit_linear", leverage=50,
                             at="2024-01-01") == 19_700.0
    assert round(liquidation_price(1.0, 20_000, venue="bybit_linear", margin=400,
                                   at="2025-10-01"), 2) == 19_698.49
    # the bankruptcy price is the same definition on both: 20,000 x (1 - 1/50)
    assert bankruptcy_price(1.0, 20_000, venue="bybit_linear", leverage=50) == 19_600.0
    # E-Y2: a short with 3,000 added, classic: 20,000 + (400 - 100) + 3,000
    assert liquidation_price(-1.0, 20_000, venue="bybit_linear", leverage=50,
                             extra_margin=3_000, at="2023-01-01") == 23_300.0


def test_public_liquidation_price_follows_okx_rules_on_an_okx_venue():
    # E-O2 on the stand-in tier (MMR 0.4%, taker 0.05%): (60,000 - 6,000) / (1 - 0.0045)
    long = liquidation_price(1.0, 60_000, venue="okx_swap", symbol="BTCUSDT", leverage=10)
    short = liquidation_price(-1.0, 60_000, venue="okx_swap", symbol="BTCUSDT", margin=6_000)
    assert round(long, 2) == 54_244.10
    assert round(short, 2) == 65_704.33  # (60,000 + 6,000) / 1.0045


def test_public_liquidation_price_follows_kraken_rules_and_refuses_isolated():
    # E-K2: 1 BTC long at 20,000, 5:1, 10,000 trade balance: 40% level at 11,600
    assert liquidation_price(1.0, 20_000, venue="kraken_spot", symbol="BTCUSD",
                             margin_mode="cross", wallet_balance=10_000, leverage=5) == 11_600.0
    with pytest.raises(ValueError, match="kraken_spot model .*no isolated mode.*use "
                                         "margin_mode='cross'"):
        liquidation_price(1.0, 100.0, venue="kraken_spot", symbol="BTCUSD", leverage=2)
    with pytest.raises(ValueError, match="counts a position's leverage .*give leverage"):
        liquidation_price(1.0, 100.0, venue="kraken_spot", symbol="BTCUSD",
                          margin_mode="cross", wallet_balance=1_000)


def test_cross_liquidation_prices_on_every_model():
    # Kraken, E-K2 again: MM = 40% x used 4,000 = 1,600; margin ratio 1,600 / 10,000
    kraken = cross_liquidation_prices([("BTCUSD", 1.0, 20_000.0, 20_000.0)], 10_000.0,
                                      venue="kraken_spot", leverage=5)
    assert kraken.positions["liquidation_price"].tolist() == [11_600.0]
    assert kraken.margin_ratio == pytest.approx(0.16)
    # OKX: 1 BTC long at 60,000 on a 6,000 wallet alone is E-O2's isolated long
    okx = cross_liquidation_prices([("BTCUSDT", 1.0, 60_000.0, 60_000.0)], 6_000.0,
                                   venue="okx_swap")
    assert round(okx.positions["liquidation_price"].iloc[0], 2) == 54_244.10
    # its MM at the mark counts the liquidation fee: 60,000 x (0.4% + 0.05%) = 270
    assert okx.maintenance_margin == pytest.approx(270.0)
    with pytest.raises(ValueError, match="counts a position's leverage"):
        cross_liquidation_prices([("BTCUSD", 1.0, 100.0, 100.0)], 1_000.0, venue="kraken_spot")


def test_okx_cross_counts_frozen_collateral_at_its_discounted_value():
    # 1 BTC of collateral at 60,000 counts 60,000 x 0.95 = 57,000 (BTC's stand-in tiers):
    # the long at 60,000 on a 6,000 wallet is backed by 63,000: (60,000 - 63,000) / 0.9955 < 0
    account = cross_liquidation_prices([("BTCUSDT", 1.0, 60_000.0, 60_000.0)], 6_000.0,
                                       venue="okx_swap", collateral={"BTC": (1.0, 60_000.0)})
    assert account.margin_balance == pytest.approx(63_000.0)
    assert account.positions["liquidation_price"].iloc[0] == pytest.approx(
        (60_000.0 - 63_000.0) / (1 - 0.0045))
    # Binance's Multi-Assets mode: BTC at its 95% collateral value ratio (one tier), the
    # long's bracket 1 (0.4%): LP = (60,000 - 63,000) / (1 - 0.004)
    account = cross_liquidation_prices([("BTCUSDT", 1.0, 60_000.0, 60_000.0)], 6_000.0,
                                       venue="binance_usdm", collateral={"BTC": (1.0, 60_000.0)},
                                       at="2025-01-01")
    assert account.margin_balance == pytest.approx(63_000.0)
    assert account.positions["liquidation_price"].iloc[0] == pytest.approx(
        (60_000.0 - 63_000.0) / (1 - 0.004))
    with pytest.raises(ValueError, match=r"collateral \(multi-currency margin\) is what the "
                                         "binance, bybit_uta and okx models simulate; venue "
                                         "kraken_spot"):
        cross_liquidation_prices([("BTCUSDT", 1.0, 100.0, 100.0)], 1_000.0, leverage=3.0,
                                 venue="kraken_spot", collateral={"BTC": (1.0, 100.0)})
