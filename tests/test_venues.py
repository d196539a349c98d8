"""Venue specs: loading, symbol names, dated versions, overrides, validation, kernel arrays."""

from __future__ import annotations

import datetime as dt
import textwrap

import numpy as np
import pandas as pd
import pytest

from backtester.venues import (
    SymbolSpec,
    Tier,
    UnknownSymbolError,
    Venue,
    VenueSpecError,
    check_leverage,
    list_venues,
    load_venue,
    tiers_from_table,
)

# VENUES.md §2.3.1, BTCUSDT 2024-10-24: (floor, cap, max leverage, mmr, published cum)
BTC_2024 = [
    (0, 50_000, 125, 0.004, 0), (50_000, 600_000, 100, 0.005, 50),
    (600_000, 3_000_000, 75, 0.0065, 950), (3_000_000, 12_000_000, 50, 0.01, 11_450),
    (12_000_000, 70_000_000, 25, 0.02, 131_450), (70_000_000, 100_000_000, 20, 0.025, 481_450),
    (100_000_000, 230_000_000, 10, 0.05, 2_981_450),
    (230_000_000, 480_000_000, 5, 0.10, 14_481_450),
    (480_000_000, 600_000_000, 4, 0.125, 26_481_450),
    (600_000_000, 800_000_000, 3, 0.15, 41_481_450),
    (800_000_000, 1_200_000_000, 2, 0.25, 121_481_450),
    (1_200_000_000, 1_800_000_000, 1, 0.50, 421_481_450),
]
# VENUES.md §2.3.3, BTCUSDT 2021-03-18 announcement: (floor, cap, max lev, mmr, cum)
BTC_2021 = [
    (0, 50_000, 125, 0.004, 0), (50_000, 250_000, 100, 0.005, 50),
    (250_000, 1_000_000, 50, 0.01, 1_300), (1_000_000, 10_000_000, 20, 0.025, 16_300),
    (10_000_000, 20_000_000, 10, 0.05, 266_300), (20_000_000, 50_000_000, 5, 0.10, 1_266_300),
    (50_000_000, 100_000_000, 4, 0.125, 2_516_300),
    (100_000_000, 200_000_000, 3, 0.15, 5_016_300),
    (200_000_000, 300_000_000, 2, 0.25, 25_016_300),
    (300_000_000, 500_000_000, 1, 0.50, 100_016_300),
]
# VENUES.md §2.3.2, ETHUSDT 2024-10-24: the cum column
ETH_2024_CUMS = [0, 50, 950, 11_450, 131_450, 381_450, 2_006_450, 9_506_450, 17_506_450,
                 27_506_450, 80_506_450, 280_506_450]


def as_rows(spec):
    return [(t.floor, t.cap, t.max_leverage, t.mmr) for t in spec.tiers]


def write(tmp_path, text, name="venue.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


GOOD = """
    name = "toy"
    [fees]
    taker_fee = 0.0004
    maker_fee = 0.0001
    liquidation_fee = 0.01
    [[symbols.AAAUSDT]]
    tiers = [
      { floor = 0, cap = 10_000, max_leverage = 50, mmr = 0.01 },
      { floor = 10_000, cap = 100_000, max_leverage = 20, mmr = 0.02 },
      { floor = 100_000, cap = 1_000_000, max_leverage = 10, mmr = 0.05 },
    ]
    [[symbols.BBBUSDT]]
    liquidation_fee = 0.02
    tiers = [{ floor = 0, cap = 1_000_000, max_leverage = 10, mmr = 0.03 }]
"""


# --- built-in venues ----------------------------------------------------------------------


def test_built_in_venues_are_listed_with_their_models():
    assert list_venues() == ["binance_usdm", "bybit_linear", "flat", "kraken_spot", "okx_swap"]
    models = {name: load_venue(name).model for name in list_venues()}
    assert models == {"binance_usdm": "binance", "flat": "binance", "bybit_linear": "bybit_uta",
                      "okx_swap": "okx", "kraken_spot": "kraken_spot"}


def test_binance_usdm_holds_the_2024_brackets_with_derived_cums():
    venue = load_venue("binance_usdm")
    assert venue.name == "binance_usdm"
    assert set(venue.symbols) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT",
                                  "LTCUSDT", "BNBUSDT", "DOGEUSDT"}
    assert venue.default is None
    assert venue.funding_interval_hours == 8
    btc = venue.spec("BTCUSDT")
    assert as_rows(btc) == [row[:4] for row in BTC_2024]
    assert [t.cum for t in btc.tiers] == pytest.approx([row[4] for row in BTC_2024], abs=1e-6)
    eth = venue.spec("ETHUSDT")
    assert [t.cum for t in eth.tiers] == pytest.approx(ETH_2024_CUMS, abs=1e-6)
    assert eth.tiers[5].floor == 50_000_000 and eth.tiers[5].mmr == 0.025
    assert btc.max_leverage == 125


def test_binance_usdm_fees_are_the_regular_tier_and_the_2024_liquidation_fee():
    venue = load_venue()
    for spec in (venue.spec("BTCUSDT", at="2021-06-01"), venue.spec("ETHUSDT")):
        assert (spec.taker_fee, spec.maker_fee, spec.liquidation_fee) == (0.0005, 0.0002, 0.0125)


def test_binance_liquidation_fee_is_per_symbol_and_dated():
    # VENUES.md §2.7, the 2019-20 text: 0.3% on BTCUSDT, 0.5% on other perpetuals; then the
    # saved exchangeInfo responses' liquidationFee: 2021-09-06 BTC 2%, ETH 3%, DOGE 4%;
    # 2024-10-02 BTC/ETH 1.25%, LTC 1.5%, DOGE 1%; 2025-10-30 DOGE 1.5%
    venue = load_venue()
    assert venue.spec("BTCUSDT", at="2020-03-01").liquidation_fee == 0.003
    assert venue.spec("ETHUSDT", at="2020-03-01").liquidation_fee == 0.005
    assert venue.spec("BTCUSDT", at="2021-09-05").liquidation_fee == 0.0125  # assumption
    assert venue.spec("BTCUSDT", at="2021-09-06").liquidation_fee == 0.02
    assert venue.spec("ETHUSDT", at="2024-03-28").liquidation_fee == 0.03
    assert venue.spec("DOGEUSDT", at="2023-01-01").liquidation_fee == 0.04
    assert venue.spec("BTCUSDT", at="2024-10-02").liquidation_fee == 0.0125
    assert venue.spec("LTCUSDT", at="2025-01-01").liquidation_fee == 0.015
    assert venue.spec("DOGEUSDT", at="2025-01-01").liquidation_fee == 0.01
    assert venue.spec("DOGEUSDT", at="2025-10-30").liquidation_fee == 0.015


def test_flat_venue_has_one_tier_for_any_symbol():
    venue = load_venue("flat")
    spec = venue.spec("doge/usdt:usdt")
    assert spec.symbol == "DOGEUSDT"
    assert spec.tiers == (Tier(0.0, float("inf"), 100.0, 0.005, 0.0),)
    assert (spec.taker_fee, spec.maker_fee, spec.liquidation_fee) == (0.0005, 0.0002, 0.005)
    assert spec.max_leverage == 100


# --- symbol names ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["BTCUSDT", "BTC_USDT", "BTC/USDT:USDT", "btcusdt", "BTC-USDT",
                                  "BTC/USDT"])
def test_market_names_are_normalised_to_the_venue_symbol(name):
    assert load_venue().spec(name).symbol == "BTCUSDT"


def test_unknown_symbol_error_names_the_venue_and_lists_its_symbols():
    with pytest.raises(UnknownSymbolError) as info:
        load_venue().spec("SHIB_USDT")
    text = str(info.value)
    assert "binance_usdm" in text and "'SHIB_USDT'" in text and "BTCUSDT, DOGEUSDT" in text
    assert "venues import" in text and "stand_in={'SHIBUSDT': 'ADAUSDT'}" in text
    assert isinstance(info.value, KeyError) and isinstance(info.value, ValueError)


# --- leverage caps ----------------------------------------------------------------------------


def test_leverage_above_the_first_tier_cap_is_refused():
    with pytest.raises(ValueError) as info:
        load_venue().check_leverage("BTC_USDT", 150)
    expected = "leverage 150 for BTC_USDT exceeds binance_usdm's cap of 125x (tier 1)"
    assert str(info.value) == expected
    with pytest.raises(ValueError, match="cap of 125x"):
        check_leverage("binance_usdm", "BTC_USDT", 150)


@pytest.mark.parametrize("leverage", [0, -3, float("nan"), float("inf")])
def test_leverage_must_be_a_positive_number(leverage):
    with pytest.raises(ValueError, match="positive"):
        load_venue().check_leverage("BTCUSDT", leverage)


def test_leverage_within_caps_passes_and_big_notionals_take_their_tier_cap():
    venue = load_venue()
    venue.check_leverage("ETHUSDT", 125)
    venue.check_leverage("BTCUSDT", 50, notional=5_000_000)  # tier 4 allows 50x
    with pytest.raises(ValueError, match="cap of 50x \\(tier 4\\) at a notional of 5,000,000"):
        venue.check_leverage("BTCUSDT", 51, notional=5_000_000)
    with pytest.raises(ValueError, match="cap of 20x \\(tier 4\\)"):  # 2021: 1M-10M was 20x
        venue.check_leverage("BTCUSDT", 25, at="2022-01-01", notional=5_000_000)


# --- overrides --------------------------------------------------------------------------------


def test_flat_venue_takes_rate_leverage_and_fee_overrides():
    venue = load_venue("flat", mmr=0.01, max_leverage=20, taker_fee=0.0007, maker_fee=-0.0001,
                       liquidation_fee=0.0)
    spec = venue.spec("XRPUSDT")
    assert (spec.tiers[0].mmr, spec.max_leverage) == (0.01, 20)
    assert (spec.taker_fee, spec.maker_fee, spec.liquidation_fee) == (0.0007, -0.0001, 0.0)
    assert load_venue("flat").spec("XRPUSDT").tiers[0].mmr == 0.005  # the file is untouched


def test_binance_takes_fee_overrides_only():
    venue = load_venue("binance_usdm", taker_fee=0.0004, liquidation_fee=0.015)
    old = venue.spec("BTCUSDT", at="2022-01-01")
    assert (old.taker_fee, old.maker_fee, old.liquidation_fee) == (0.0004, 0.0002, 0.015)
    with pytest.raises(ValueError, match="accepted: taker_fee, maker_fee, liquidation_fee"):
        load_venue("binance_usdm", mmr=0.01)


def test_unknown_override_lists_the_accepted_ones():
    # (partial_liquidation: the binance model's rule, issue 12)
    with pytest.raises(ValueError, match="unknown venue override.*fee.*accepted: taker_fee, "
                                         "maker_fee, liquidation_fee, partial_liquidation, "
                                         "loan_rate, mmr, max_leverage"):
        load_venue("flat", fee=0.001)


def test_overrides_are_validated():
    with pytest.raises(ValueError, match="mmr must be a rate in"):
        load_venue("flat", mmr=1.5)
    with pytest.raises(ValueError, match="below the initial margin rate"):
        load_venue("flat", mmr=0.02)  # 1 / 100x = 0.01: a max-leverage position opens liquidated


def test_a_venue_object_passes_through_load_venue():
    venue = load_venue("flat")
    assert load_venue(venue) is venue
    assert load_venue(venue, taker_fee=0.001).spec("X").taker_fee == 0.001


def test_unknown_venue_name_lists_the_built_ins():
    built_ins = "binance_usdm, bybit_linear, flat, kraken_spot, okx_swap"
    with pytest.raises(ValueError, match=f"unknown venue 'binance'.*{built_ins}"):
        load_venue("binance")
    with pytest.raises(FileNotFoundError):
        load_venue("no/such/venue.toml")


# --- dated versions ----------------------------------------------------------------------


@pytest.mark.parametrize("at", ["2021-03-18", pd.Timestamp("2021-06-21 23:59"),
                                dt.date(2022, 6, 1), pd.Timestamp("2022-08-01").value])
def test_btcusdt_2021_03_18_table_is_in_force_in_its_periods(at):
    spec = load_venue().spec("BTCUSDT", at=at)
    expected = [row[:4] for row in BTC_2021]
    if spec.valid_from >= pd.Timestamp("2022-05-21", tz="UTC"):
        # freqtrade's snapshot of Binance's response: the last bracket has no cap (Binance
        # sends its int64 maximum), where the 2021 announcement said 500M
        expected[-1] = (*expected[-1][:1], float("inf"), *expected[-1][2:])
    assert as_rows(spec) == expected
    assert [t.cum for t in spec.tiers] == pytest.approx([row[4] for row in BTC_2021], abs=1e-6)


@pytest.mark.parametrize("at", ["2024-05-30", "2025-01-01T00:00:00Z", None,
                                dt.datetime(2024, 6, 1, tzinfo=dt.UTC)])
def test_btcusdt_from_2024_05_30_is_the_new_table(at):
    assert as_rows(load_venue().spec("BTCUSDT", at=at)) == [row[:4] for row in BTC_2024]


def test_a_time_before_every_version_uses_the_earliest_with_a_warning():
    message = "binance_usdm has no BTCUSDT tier table before 2019-09-01"
    with pytest.warns(UserWarning, match=message):
        spec = load_venue().spec("BTCUSDT", at="2019-01-01")
    assert spec.valid_from == pd.Timestamp("2019-09-01", tz="UTC")


# --- kernel arrays ------------------------------------------------------------------------


def test_arrays_pad_short_tables_by_repeating_the_last_tier(tmp_path):
    venue = load_venue(write(tmp_path, GOOD))
    a = venue.arrays(["BBB_USDT", "aaausdt"])
    assert a.symbols == ("BBBUSDT", "AAAUSDT")
    for table in (a.floors, a.caps, a.mmrs, a.cums, a.max_leverage):
        assert table.shape == (2, 3) and table.dtype == np.float64
        assert table.flags.c_contiguous
    assert a.n_tiers.tolist() == [1, 3] and a.n_tiers.dtype == np.int64
    assert a.caps[0].tolist() == [1_000_000] * 3
    assert a.mmrs[0].tolist() == [0.03] * 3
    assert a.caps[1].tolist() == [10_000, 100_000, 1_000_000]
    # cum: 0; 10,000 x (2% - 1%) = 100; 100 + 100,000 x (5% - 2%) = 3,100
    assert a.cums[1].tolist() == pytest.approx([0, 100, 3_100])
    assert a.max_leverage[1].tolist() == [50, 20, 10]
    assert a.liquidation_fee.tolist() == [0.02, 0.01]
    assert a.taker_fee.tolist() == [0.0004] * 2 and a.maker_fee.tolist() == [0.0001] * 2
    for fee in (a.taker_fee, a.maker_fee, a.liquidation_fee):
        assert fee.shape == (2,) and fee.dtype == np.float64


def test_binance_arrays_follow_the_version_in_force():
    a = load_venue().arrays(["BTCUSDT"], at="2022-01-01")
    assert a.mmrs.shape == (1, 10) and a.cums[0, 3] == pytest.approx(16_300)
    assert load_venue().arrays(["BTCUSDT", "ETH_USDT"]).mmrs.shape == (2, 12)


# --- validation of venue files -------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("{ floor = 10_000, cap = 100_000", "{ floor = 20_000, cap = 100_000",
         r"symbol AAAUSDT, tier 2: floor 20,000 must equal the previous tier's cap 10,000"),
        ("max_leverage = 50, mmr = 0.01 }", "max_leverage = 50, mmr = 0.01, cum = 0 }",
         r"symbol AAAUSDT, version 1, tier 1: remove 'cum'"),
        ("mmr = 0.01 }", "mmr = 0.01, mm = 1 }", r"tier 1: unknown key\(s\) mm"),
        ('name = "toy"', 'name = "toy"\nfunding = 8', r"top level: unknown key\(s\) funding"),
        ("liquidation_fee = 0.02", "liquidation_fee = 0.02\nvalid = 1",
         r"BBBUSDT, version 1: unknown key\(s\) valid"),
        ("{ floor = 0, cap = 10_000", "{ floor = 1, cap = 10_000",
         r"AAAUSDT, tier 1: the first floor must be 0"),
        ("max_leverage = 10, mmr = 0.05", "max_leverage = 10, mmr = 0.015",
         r"AAAUSDT, tier 3: mmr 0.015 is below the previous tier's 0.02"),
        ("max_leverage = 20, mmr = 0.02", "max_leverage = 60, mmr = 0.01",
         r"AAAUSDT, tier 2: max_leverage 60 is above the previous tier's 50"),
        ("taker_fee = 0.0004", "taker_fee = 1.5", r"taker_fee must be a rate in \[0, 1\)"),
        ("max_leverage = 10, mmr = 0.03", "max_leverage = 10, mmr = 0.2",
         r"BBBUSDT, tier 1: mmr 0.2 must be below the initial margin rate"),
        ("cap = 100_000, max", "cap = 10_000, max", r"AAAUSDT, tier 2: cap 10,000 must be above"),
        ("taker_fee = 0.0004\n", "", r"AAAUSDT, version 1: no taker_fee here or in \[fees\]"),
    ],
)
def test_bad_venue_files_are_rejected_naming_file_symbol_and_tier(tmp_path, old, new, message):
    assert old in textwrap.dedent(GOOD)
    path = write(tmp_path, textwrap.dedent(GOOD).replace(old, new, 1), name="bad_venue.toml")
    with pytest.raises(VenueSpecError, match=message) as info:
        load_venue(path)
    assert str(info.value).startswith(str(path))


def test_versions_need_dates_in_order(tmp_path):
    two = GOOD + """
    [[symbols.BBBUSDT]]
    valid_from = 2024-01-01
    tiers = [{ floor = 0, cap = 1_000_000, max_leverage = 10, mmr = 0.04 }]
    """
    with pytest.raises(VenueSpecError, match="BBBUSDT, version 1: valid_from is required"):
        load_venue(write(tmp_path, two))
    dated = two.replace("liquidation_fee = 0.02", "liquidation_fee = 0.02\nvalid_from = 2024-06-01")
    with pytest.raises(VenueSpecError, match="BBBUSDT, version 2: valid_from must be later"):
        load_venue(write(tmp_path, dated))
    ok = load_venue(write(tmp_path, dated.replace("2024-06-01", "2023-06-01")))
    assert ok.spec("BBBUSDT", at="2023-12-31").tiers[0].mmr == 0.03
    assert ok.spec("BBBUSDT").tiers[0].mmr == 0.04
    assert ok.spec("BBBUSDT").liquidation_fee == 0.01  # the later version takes [fees]


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "name = ")
    with pytest.raises(VenueSpecError, match="not valid TOML"):
        load_venue(path)


def test_a_venue_built_in_python_checks_its_cums():
    tiers = tiers_from_table([(0, 50_000, 125, 0.004), (50_000, 250_000, 100, 0.005)])
    assert [t.cum for t in tiers] == [0, 50]
    wrong = (tiers[0], Tier(50_000, 250_000, 100, 0.005, cum=60))
    with pytest.raises(VenueSpecError, match="tier 2: cum 60.00 breaks the recursion"):
        SymbolSpec("XUSDT", wrong, 0.0005, 0.0002, 0.01)
    venue = Venue("mine", "", {"XUSDT": SymbolSpec("XUSDT", tiers, 0.0005, 0.0002, 0.01)})
    assert venue.spec("x_usdt").tiers[1].cum == 50


# --- Binance history: VENUES.md §2.3.3 and Appendix A, typed here from the document -----------
# Each snapshot: {valid date: [(floor, cap, mmr, published cum, max leverage or None)]};
# None where Appendix A gives no leverage (the venue file documents its choice).
M = 1_000_000
LOW = [(0, 50_000, 0.004, 0, 125), (50_000, 250_000, 0.005, 50, 100)]
APPENDIX_A = {
    "2021-06-22": LOW + [(250_000, M, 0.01, 1_300, 50), (M, 5 * M, 0.025, 16_300, 20),
                         (5 * M, 20 * M, 0.05, 141_300, 10)],
    "2022-02-12": LOW + [
        (250_000, M, 0.01, 1_300, 50), (M, 7.5 * M, 0.025, 16_300, 20),
        (7.5 * M, 40 * M, 0.05, 203_800, 10), (40 * M, 100 * M, 0.10, 2_203_800, 5),
        (100 * M, 200 * M, 0.125, 4_703_800, 4), (200 * M, 400 * M, 0.15, 9_703_800, 3),
        (400 * M, 600 * M, 0.25, 49_703_800, 2), (600 * M, 1000 * M, 0.50, 199_703_800, 1)],
    "2022-11-25": LOW + [(250_000, M, 0.01, 1_300, 25), (M, 10 * M, 0.025, 16_300, 15)],
    "2023-02-17": LOW + [(250_000, M, 0.01, 1_300, 50), (M, 10 * M, 0.025, 16_300, 20)],
    "2023-03-13": LOW + [
        (250_000, 3 * M, 0.01, 1_300, 50), (3 * M, 15 * M, 0.025, 46_300, 20),
        (15 * M, 30 * M, 0.05, 421_300, 10), (30 * M, 80 * M, 0.10, 1_921_300, 5),
        (80 * M, 100 * M, 0.125, 3_921_300, 4), (100 * M, 200 * M, 0.15, 6_421_300, 3),
        (200 * M, 300 * M, 0.25, 26_421_300, 2), (300 * M, 500 * M, 0.50, 101_421_300, 1)],
    "2023-08-01": LOW + [
        (250_000, 3 * M, 0.01, 1_300, None), (3 * M, 20 * M, 0.025, 46_300, None),
        (20 * M, 40 * M, 0.05, 546_300, None), (40 * M, 100 * M, 0.10, 2_546_300, None),
        (100 * M, 120 * M, 0.125, 5_046_300, None), (120 * M, 200 * M, 0.15, 8_046_300, None),
        (200 * M, 300 * M, 0.25, 28_046_300, None), (300 * M, 500 * M, 0.50, 103_046_300, None)],
    "2023-12-12": [
        (0, 50_000, 0.004, 0, None), (50_000, 500_000, 0.005, 50, None),
        (500_000, 8 * M, 0.01, 2_550, None), (8 * M, 50 * M, 0.025, 122_550, None),
        (50 * M, 80 * M, 0.05, 1_372_550, None), (80 * M, 100 * M, 0.10, 5_372_550, None),
        (100 * M, 120 * M, 0.125, 7_872_550, None), (120 * M, 200 * M, 0.15, 10_872_550, None),
        (200 * M, 300 * M, 0.25, 30_872_550, None), (300 * M, 500 * M, 0.50, 105_872_550, None)],
    "2024-02-03": [
        (0, 50_000, 0.004, 0, 125), (50_000, 500_000, 0.005, 50, 100),
        (500_000, 10 * M, 0.01, 2_550, 50), (10 * M, 80 * M, 0.025, 152_550, 20),
        (80 * M, 150 * M, 0.05, 2_152_550, 10), (150 * M, 300 * M, 0.10, 9_652_550, 5),
        (300 * M, 450 * M, 0.125, 17_152_550, 4), (450 * M, 600 * M, 0.15, 28_402_550, 3),
        (600 * M, 800 * M, 0.25, 88_402_550, 2), (800 * M, 1000 * M, 0.50, 288_402_550, 1)],
    # "the same as the 2021-03 table" / "the 12-bracket table of §2.3.1"
    "2022-05-21": [(f, c if c < 500 * M else float("inf"), m, cum, lev)
                   for f, c, lev, m, cum in BTC_2021],  # no cap on the last: Binance's int64
    "2024-05-30": [(f, c, m, cum, lev) for f, c, lev, m, cum in BTC_2024],
}


@pytest.mark.parametrize("date", sorted(APPENDIX_A))
def test_btcusdt_snapshot_of_each_date_is_the_version_in_force_then(date):
    spec = load_venue().spec("BTCUSDT", at=date)
    assert spec.valid_from == pd.Timestamp(date, tz="UTC")
    expected = APPENDIX_A[date]
    for tier, (floor, cap, mmr, cum, lev) in zip(spec.tiers, expected, strict=False):
        assert (tier.floor, tier.cap, tier.mmr) == (floor, cap, mmr)
        assert tier.cum == pytest.approx(cum, abs=1e-6)  # the published maintenance amount
        if lev is not None:
            assert tier.max_leverage == lev
    if len(expected) > 5:  # the full table, not just the brackets that changed
        assert len(spec.tiers) == len(expected)


def test_every_binance_version_starts_where_the_previous_ends():
    venue = load_venue()
    dates = [str(spec.valid_from.date()) for spec in venue.history["BTCUSDT"]]
    # and where the exchangeInfo snapshots' filters and fees change (2021-09-06, 2024-10-02)
    assert dates == sorted({"2019-09-01", "2021-03-18", *APPENDIX_A, "2021-09-06",
                            "2024-10-02"})
    spans = [(s.valid_from, until) for sym, s, until in venue.versions() if sym == "BTCUSDT"]
    for (_, until), (nxt, _) in zip(spans, spans[1:], strict=False):
        assert until == nxt
    assert spans[-1][1] is None


def test_btcusdt_is_covered_from_binance_launch_in_september_2019():
    import warnings

    venue = load_venue()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "before the earliest version" warning
        launch = venue.spec("BTCUSDT", at="2019-09-08 17:00")
        eth_launch = venue.spec("ETHUSDT", at="2019-11-27 07:00")
    # the 2019 FAQ's levels: level 3 cum 1,300 (250,000 x 0.5% + 50) and level 5
    # 5,000,000 x (5% - 2.5%) + 16,300 = 141,300 (VENUES.md §2.3)
    assert launch.tiers[2].cum == pytest.approx(1_300)
    assert (launch.tiers[4].floor, launch.tiers[4].mmr) == (5 * M, 0.05)
    assert launch.tiers[4].cum == pytest.approx(141_300)
    # ETHUSDT's first bracket of the 2019-20 era: 0.65% (VENUES.md E-B1), a "75x contract"
    assert (eth_launch.tiers[0].mmr, eth_launch.tiers[0].max_leverage) == (0.0065, 75)


# VENUES.md §2.3.3, ETHUSDT 2021 era: (cap, mmr, cum); Appendix A, ETHUSDT 2022-02-12
ETH_2021 = [(10_000, 0.005, 0), (100_000, 0.0065, 15), (500_000, 0.01, 365),
            (M, 0.02, 5_365), (2 * M, 0.05, 35_365), (5 * M, 0.10, 135_365),
            (10 * M, 0.125, 260_365), (20 * M, 0.15, 510_365), (float("inf"), 0.25, 2_510_365)]
ETH_2022 = [(10_000, 0.005, 0, 100), (100_000, 0.0065, 15, 75), (500_000, 0.01, 365, 50),
            (1.5 * M, 0.02, 5_365, 25), (4 * M, 0.05, 50_365, 10), (10 * M, 0.10, 250_365, 5),
            (20 * M, 0.125, 500_365, 4), (40 * M, 0.15, 1_000_365, 3),
            (150 * M, 0.25, 5_000_365, 2), (500 * M, 0.50, 42_500_365, 1)]


@pytest.mark.parametrize("at", ["2021-01-04", "2021-06-01", "2022-02-11"])
def test_ethusdt_2021_era_table_holds_from_2021_until_2022_02_12(at):
    spec = load_venue().spec("ETHUSDT", at=at)
    assert [(t.cap, t.mmr) for t in spec.tiers] == [(c, m) for c, m, _ in ETH_2021]
    assert [t.cum for t in spec.tiers] == pytest.approx([cum for *_, cum in ETH_2021], abs=1e-6)
    # leverages are not in the source: each rate takes its 2022-02-12 leverage
    lev_of_rate = {mmr: lev for _, mmr, _, lev in ETH_2022}
    assert [t.max_leverage for t in spec.tiers] == [lev_of_rate[m] for _, m, _ in ETH_2021]


def test_ethusdt_2022_02_12_snapshot():
    spec = load_venue().spec("ETHUSDT", at="2022-06-01")  # the next snapshot: 2022-08-20
    assert spec.valid_from == pd.Timestamp("2022-02-12", tz="UTC")
    assert [(t.cap, t.mmr, t.max_leverage) for t in spec.tiers] == [
        (c, m, lev) for c, m, _, lev in ETH_2022]
    assert [t.cum for t in spec.tiers] == pytest.approx([cum for _, _, cum, _ in ETH_2022])


def test_binance_funding_is_8_hourly_with_the_cap_at_three_quarters_of_tier_1():
    # VENUES.md §2.9: capped rate = clamp(F, -0.75 x MMR, +0.75 x MMR), MMR of the lowest tier
    venue = load_venue()
    for symbol, at, cap in [("BTCUSDT", "2020-01-01", 0.003), ("BTCUSDT", None, 0.003),
                            ("ETHUSDT", "2021-01-04", 0.00375), ("ETHUSDT", None, 0.003)]:
        spec = venue.spec(symbol, at=at)
        assert spec.funding_interval_hours == 8
        assert spec.funding_rate_cap == pytest.approx(cap)
        assert spec.funding_rate_floor == pytest.approx(-cap)


# --- margin models, dated rules, params, collateral ---------------------------------------------


def test_bybit_rules_change_on_their_dates():
    venue = load_venue("bybit_linear")
    classic = {"margin_price": "entry", "fee_to_close_in_margin": False, "risk_limit": "manual",
               "partial_liquidation": "step_down", "loan_rate": 0.10}
    assert venue.rules(at="2023-06-01") == classic
    assert venue.rules(at="2024-03-12") == {**classic, "risk_limit": "auto"}
    assert venue.rules(at="2025-09-01 23:59") == {**classic, "risk_limit": "auto"}
    new = {"margin_price": "mark", "fee_to_close_in_margin": True, "risk_limit": "auto",
           "partial_liquidation": "step_down", "loan_rate": 0.10}
    assert venue.rules(at="2025-09-02") == venue.rules() == new


def test_bybit_deduction_is_derived_in_the_auto_era_and_absent_before():
    venue = load_venue("bybit_linear")
    auto = venue.spec("BTCUSDT", at="2024-06-01")
    # ded_2 = 2,000,000 x (1% - 0.5%) = 10,000; ded_3 = 10,000 + 4,000,000 x 0.5% = 30,000
    assert auto.tier_rule == "bracket"
    assert [t.cum for t in auto.tiers[:3]] == pytest.approx([0, 10_000, 30_000])
    manual = venue.spec("BTCUSDT", at="2023-01-01")
    assert manual.tier_rule == "whole" and all(t.cum == 0 for t in manual.tiers)
    # the printed testnet tiers (VENUES.md §3.2)
    assert [(t.cap, t.mmr, t.imr, t.max_leverage) for t in auto.tiers[:3]] == [
        (2_000_000, 0.005, 0.01, 100), (4_000_000, 0.01, 0.0175, 57.14),
        (6_000_000, 0.015, 0.025, 40)]


def test_okx_tiers_are_in_contracts_at_whole_tier_rates():
    spec = load_venue("okx_swap").spec("CHZ-USDT")
    assert (spec.tier_unit, spec.tier_rule, spec.params) == ("contracts", "whole",
                                                             {"contract_size": 10})
    # VENUES.md §4.3: 0-5,000 1%/1.3%/75x; 5,001-7,500 1.5%/2%/50x; 7,501-15,000 2%/5%/20x
    assert [(t.cap, t.mmr, t.imr, t.max_leverage) for t in spec.tiers[:3]] == [
        (5_000, 0.01, 0.013, 75), (7_500, 0.015, 0.02, 50), (15_000, 0.02, 0.05, 20)]
    assert all(t.cum == 0 for t in spec.tiers)
    with pytest.raises(ValueError, match="at a size \\(contracts\\) of 10,000"):
        load_venue("okx_swap").check_leverage("CHZUSDT", 50, notional=10_000)


def test_kraken_pairs_carry_borrowing_fees_and_the_venue_its_levels():
    venue = load_venue("kraken_spot")
    # liquidation_target_level: the FIFO liquidation goes on until the level is back above
    # 100% (VENUES.md §5.1: "just enough to get back above 100%")
    assert venue.rules() == {"open_level": 1.0, "margin_call_level": 0.8,
                             "liquidation_level": 0.4, "liquidation_target_level": 1.0,
                             "rollover_hours": 4}
    old = venue.spec("BTC/USD", at="2024-01-01")  # BTC 0.01% + 0.01%, fiat 0.02% + 0.02%
    assert old.params == {"long_opening_fee": 0.0002, "long_rollover_fee": 0.0002,
                          "short_opening_fee": 0.0001, "short_rollover_fee": 0.0001}
    assert venue.spec("BTCUSD").params["long_rollover_fee"] == 0.00025  # E-K5's rate
    assert old.funding_interval_hours == 0 and old.max_leverage == 5


def test_rule_and_param_overrides_hold_at_every_date():
    venue = load_venue("bybit_linear", margin_price="mark")
    assert venue.rules(at="2021-01-01")["margin_price"] == "mark"
    kraken = load_venue("kraken_spot", long_rollover_fee=0.0003, liquidation_level=0.5)
    assert kraken.spec("BTCUSD", at="2020-01-01").params["long_rollover_fee"] == 0.0003
    assert kraken.rules(at="2020-01-01")["liquidation_level"] == 0.5
    with pytest.raises(ValueError, match="rule margin_price must be one of entry, mark"):
        load_venue("bybit_linear", margin_price="last")
    with pytest.raises(ValueError, match="accepted: .*long_rollover_fee.*liquidation_level"):
        load_venue("kraken_spot", rollover=0.001)


def test_okx_collateral_discount_tiers_are_dated():
    tiers = load_venue("okx_swap").discount_tiers("beth", at="2024-08-01")
    assert (tiers.caps, tiers.rates, tiers.unit) == (
        (2 * M, 4 * M, 8 * M, float("inf")), (0.95, 0.85, 0.5, 0.0), "usd")
    with pytest.raises(KeyError, match="no discount tiers for 'DOGE'; it lists: BETH"):
        load_venue("okx_swap").discount_tiers("DOGE")


MODEL_FILE = """
    name = "toy_okx"
    model = "okx"
    tier_rule = "whole"
    tier_unit = "contracts"
    [fees]
    taker_fee = 0.0005
    maker_fee = 0.0002
    liquidation_fee = 0.0005
    [[rules]]
    partial_liquidation = "none"
    [[symbols.XUSDT]]
    contract_size = 0.01
    tiers = [
      { floor = 0, cap = 100, max_leverage = 50, mmr = 0.01, imr = 0.02 },
      { floor = 100, cap = 200, max_leverage = 20, mmr = 0.02, imr = 0.05 },
    ]
    [[collateral.XXX]]
    tiers = [{ floor = 0, cap = inf, rate = 0.9 }]
"""


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('model = "okx"', 'model = "okex"', "model must be one of binance, bybit_uta, okx"),
        ('partial_liquidation = "none"', "partial_liquidation = 1",
         r"\[\[rules\]\] 1: rule partial_liquidation must be one of two_tiers"),
        ('partial_liquidation = "none"', "margin_price = \"mark\"",
         "unknown rule 'margin_price' for model okx"),
        ("contract_size = 0.01", "contract_size = -1", "contract_size must be a number >= 0"),
        ("contract_size = 0.01", "rollover = 1", r"unknown key\(s\) rollover"),
        ('tier_rule = "whole"', 'tier_rule = "bracket"\ncum_rule = 1',
         r"top level: unknown key\(s\) cum_rule"),
        ("imr = 0.05", "imr = 0.015", "imr 0.015 must be above mmr 0.02"),
        ("rate = 0.9", "rate = 1.5", "a discount rate is in"),
        ('tier_unit = "contracts"', 'tier_unit = "coins"', "tier_unit must be 'quote' or"),
    ],
)
def test_model_specific_keys_are_checked(tmp_path, old, new, message):
    text = textwrap.dedent(MODEL_FILE)
    assert old in text
    path = write(tmp_path, text.replace(old, new, 1), name="model.toml")
    with pytest.raises(VenueSpecError, match=message):
        load_venue(path)


def test_a_good_model_file_loads():
    import tomllib

    from backtester.venues.files import venue_from_dict

    venue = venue_from_dict(tomllib.loads(textwrap.dedent(MODEL_FILE)), "toy")
    assert venue.rules() == {"liquidation_fee_in_trigger": True, "partial_liquidation": "none",
                             "loan_rate": 0.0}
    assert venue.spec("XUSDT").tiers[1].cum == 0.0
    assert venue.discount_tiers("XXX").rates == (0.9,)


# --- every built-in venue follows a registered model ------------------------------------------


def test_every_model_has_a_built_in_venue_and_an_unknown_model_is_named():
    from backtester.venues import MODELS, margin_model

    assert {load_venue(name).margin_model.name for name in list_venues()} == set(MODELS)
    for name in list_venues():
        venue = load_venue(name)
        assert venue.margin_model is MODELS[venue.model]
    with pytest.raises(VenueSpecError, match="model must be one of binance, bybit_uta, okx, "
                                             "kraken_spot, got 'okex'"):
        margin_model("okex")


def test_kraken_spot_margin_has_no_isolated_mode():
    from backtester import Market, run

    close = np.full((3, 1), 100.0)
    market = Market.from_arrays(["BTC_USD"], close, close, close, close)
    with pytest.raises(ValueError, match="no isolated mode, but margin_mode is 'isolated' for "
                                         "BTC_USD"):
        run(market, np.full((3, 1), np.nan), venue="kraken_spot", margin_mode="isolated",
            leverage=5)


def test_cli_venues_lists_every_venue_with_validity_dates(capsys):
    from backtester.cli import main

    assert main(["venues"]) == 0
    out = capsys.readouterr().out
    for name in list_venues():
        assert out.count(f"{name} (model ") == 1
    assert "BTCUSDT       2021-06-22 .. 2021-09-06    10    125x" in out
    assert "BTCUSDT       2024-10-02 .. now           12    125x" in out
    # what each venue's model allows: margin modes; position modes; collateral
    assert "binance_usdm (model binance: cross, isolated; one_way, hedge; collateral):" in out
    assert "okx_swap (model okx: cross, isolated; one_way; collateral):" in out
    assert "kraken_spot (model kraken_spot: cross; one_way):" in out
    assert "  rules 2025-09-02 .. now: margin_price=mark, fee_to_close_in_margin=True" in out


def test_cli_venue_name_prints_its_tables_and_rules(capsys):
    from backtester.cli import main

    assert main(["venues", "bybit_linear"]) == 0
    out = capsys.readouterr().out
    assert "2,000,000 - 4,000,000" in out and "10,000.00" in out  # tier 2 and its deduction
    assert "from 2025-09-02: margin_price = mark, fee_to_close_in_margin = True" in out


def test_a_venue_file_is_parsed_once_and_read_again_when_it_changes(tmp_path):
    # a run loads its venue by name each time: the parsed file is kept while it is unchanged
    # (binance_usdm.toml is 1,300 lines: parsing it cost a small run 12 ms), and the same
    # overrides on it give the same venue
    assert load_venue("binance_usdm") is load_venue("binance_usdm")
    assert load_venue("binance_usdm", taker_fee=0.0004) is load_venue("binance_usdm",
                                                                      taker_fee=0.0004)
    assert load_venue("binance_usdm", taker_fee=0.0004).spec("BTCUSDT").taker_fee == 0.0004
    assert load_venue("binance_usdm").spec("BTCUSDT").taker_fee == 0.0005
    path = tmp_path / "v.toml"
    path.write_text('[fees]\ntaker_fee = 0.001\nmaker_fee = 0.0\nliquidation_fee = 0.01\n'
                    '[[default]]\ntiers = [{ floor = 0, cap = inf, max_leverage = 10, '
                    'mmr = 0.01 }]\n')
    assert load_venue(path).spec("X").taker_fee == 0.001
    path.write_text(path.read_text().replace("0.001", "0.0025"))  # edited: read again
    assert load_venue(path).spec("X").taker_fee == 0.0025
