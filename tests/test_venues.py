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


def test_built_in_venues_are_listed():
    assert {"binance_usdm", "flat"} <= set(list_venues())


def test_binance_usdm_holds_the_2024_brackets_with_derived_cums():
    venue = load_venue("binance_usdm")
    assert venue.name == "binance_usdm"
    assert set(venue.symbols) == {"BTCUSDT", "ETHUSDT"}
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
        load_venue().spec("SOL_USDT")
    text = str(info.value)
    assert "binance_usdm" in text and "'SOL_USDT'" in text and "BTCUSDT, ETHUSDT" in text
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
    with pytest.raises(ValueError, match="unknown venue override.*fee.*accepted: taker_fee, "
                                         "maker_fee, liquidation_fee, mmr, max_leverage"):
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
    with pytest.raises(ValueError, match="unknown venue 'binance'.*binance_usdm, flat"):
        load_venue("binance")
    with pytest.raises(FileNotFoundError):
        load_venue("no/such/venue.toml")


# --- dated versions ----------------------------------------------------------------------


@pytest.mark.parametrize("at", ["2021-03-18", "2022-11-30", pd.Timestamp("2024-05-29 23:59"),
                                dt.date(2023, 1, 1), pd.Timestamp("2023-06-01").value])
def test_btcusdt_before_2024_05_30_is_the_2021_table(at):
    spec = load_venue().spec("BTCUSDT", at=at)
    assert as_rows(spec) == [row[:4] for row in BTC_2021]
    assert [t.cum for t in spec.tiers] == pytest.approx([row[4] for row in BTC_2021], abs=1e-6)
    assert spec.valid_from == pd.Timestamp("2021-03-18", tz="UTC")


@pytest.mark.parametrize("at", ["2024-05-30", "2025-01-01T00:00:00Z", None,
                                dt.datetime(2024, 6, 1, tzinfo=dt.UTC)])
def test_btcusdt_from_2024_05_30_is_the_new_table(at):
    assert as_rows(load_venue().spec("BTCUSDT", at=at)) == [row[:4] for row in BTC_2024]


def test_a_time_before_every_version_uses_the_earliest_with_a_warning():
    message = "binance_usdm has no BTCUSDT tier table before 2021-03-18"
    with pytest.warns(UserWarning, match=message):
        spec = load_venue().spec("BTCUSDT", at="2020-01-01")
    assert len(spec.tiers) == 10


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
