"""Issue 12: the venues' symbols, their order filters, the unknown-symbol policy and
``backtester venues import``.

Every figure below is worked out from the venue's published values (the exchangeInfo
snapshots of binance_usdm.toml, quoted in each test) or from the response a test writes,
never from the code's own output.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers import NAN

from backtester import Market, load_venue, run
from backtester.cli import main
from backtester.venues import UnknownSymbolError

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "LTCUSDT", "BNBUSDT",
           "DOGEUSDT"]


def bars_market(symbol, rows, start="2025-01-01"):
    """A one-symbol Market of (open, high, low, close) rows, hourly from ``start``."""
    a = np.array(rows, dtype=float)
    return Market.from_arrays([symbol], a[:, :1], a[:, 1:2], a[:, 2:3], a[:, 3:4],
                              start=start)


def one_order_per_bar(n_bars, targets):
    out = np.full((n_bars, 1), NAN)
    for t, target in enumerate(targets):
        out[t, 0] = target
    return out


# --- every symbol of the real data, with sourced tables -------------------------------------


@pytest.mark.parametrize("symbol", SYMBOLS)
def test_binance_lists_every_symbol_of_the_real_data_with_sourced_dated_tables(symbol):
    venue = load_venue("binance_usdm")
    versions = venue.history[symbol]
    assert all(spec.source for spec in versions)
    # freqtrade's snapshots of /fapi/v1/leverageBracket from 2022-02-12, by commit
    snapshots = [s for s in versions if "freqtrade" in s.source]
    assert snapshots[0].valid_from.date().isoformat() == "2022-02-12"
    assert all("@" in s.source for s in snapshots)  # the commit is named
    # the exchangeInfo filters of 2024-10-02 (eddysan/TradingBotFest) are in force in 2025
    spec = venue.spec(symbol, "2025-01-01")
    assert "exchangeInfo" in spec.filter_source
    assert spec.qty_step > 0 and spec.min_qty > 0 and spec.tick_size > 0
    assert spec.min_notional >= 5


def test_binance_filters_as_the_exchange_info_snapshots_publish_them():
    venue = load_venue("binance_usdm")
    # 2021-09-06 (izzortsi/rezbot): BTCUSDT tick 0.01, MARKET_LOT_SIZE step 0.001, notional 5
    assert venue.spec("BTCUSDT", "2022-01-01").filters == {
        "tick_size": 0.01, "qty_step": 0.001, "min_qty": 0.001, "min_notional": 5.0}
    # 2024-10-02 (eddysan): BTCUSDT tick 0.1, minimum notional 100; ETHUSDT 20
    assert venue.spec("BTCUSDT", "2025-01-01").filters == {
        "tick_size": 0.1, "qty_step": 0.001, "min_qty": 0.001, "min_notional": 100.0}
    assert venue.spec("ETHUSDT", "2025-01-01").min_notional == 20.0
    # SOLUSDT: tick 0.001 until the 2024-10-19 snapshot shows 0.01; step 1 until the
    # 2025-10-30 snapshot shows 0.01
    assert venue.spec("SOLUSDT", "2024-10-10").tick_size == 0.001
    assert venue.spec("SOLUSDT", "2024-10-21").tick_size == 0.01
    assert venue.spec("SOLUSDT", "2025-01-01").qty_step == 1.0
    assert venue.spec("SOLUSDT", "2025-11-01").qty_step == 0.01
    # the largest position: BTCUSDT's 12th bracket caps at 1.8 B (VENUES.md §2.3.1)
    assert venue.spec("BTCUSDT", "2025-01-01").max_position == 1_800_000_000


# --- order filters in a run -------------------------------------------------------------------


def test_orders_round_toward_zero_to_the_step_and_openings_need_the_minimum_notional():
    # BTCUSDT from 2024-10-02: step 0.001 BTC, minimum notional 100 USDT; price 60,000.
    m = bars_market("BTC_USDT", [(60_000,) * 4] * 6)
    targets = one_order_per_bar(6, [
        0.0123456,  # buys 0.012 (rounded toward zero)
        0.0015,     # sells 0.0105 -> 0.010: position 0.002 (a reduction: no minimum)
        0.0039,     # buys 0.0019 -> 0.001 = 60 USDT of opening: below 100, refused
        0.0005,     # sells 0.0015 -> 0.001: position 0.001 (60 USDT left is allowed)
        0.0,        # closes the whole position, exactly
    ])
    r = run(m, targets, venue="binance_usdm", leverage=10)
    assert r.fills["qty"].tolist() == pytest.approx([0.012, -0.010, -0.001, -0.001],
                                                    abs=1e-12)
    assert r.fills["position_after"].iloc[-1] == 0.0
    rejected = r.rejections
    assert rejected["reason"].tolist() == ["below_min_notional"]
    assert rejected["qty"].iloc[0] == pytest.approx(0.001)


def test_an_order_below_the_step_rounds_to_nothing_and_is_refused():
    # ADAUSDT: step 1 ADA, minimum 1 ADA
    m = bars_market("ADA_USDT", [(0.5,) * 4] * 3)
    r = run(m, one_order_per_bar(3, [0.9]), venue="binance_usdm", leverage=5)
    assert len(r.fills) == 0
    assert r.rejections["reason"].tolist() == ["rounds_to_zero"]


def test_a_slipped_fill_price_goes_to_the_tick_against_the_trader():
    # BTCUSDT tick 0.1 (2024-10-02). Open 61,234.5, slippage 3 bps: a buy at
    # 61,234.5 x 1.0003 = 61,252.87035 -> 61,252.9 (up); the sell back at
    # 61,234.5 x 0.9997 = 61,216.12965 -> 61,216.1 (down).
    m = bars_market("BTC_USDT", [(61_234.5,) * 4] * 4)
    r = run(m, one_order_per_bar(4, [1.0, 0.0]), venue="binance_usdm", leverage=10,
            slippage=0.0003)
    assert r.fills["price"].tolist() == pytest.approx([61_252.9, 61_216.1], abs=1e-6)
    # without slippage the market's own prices fill as they are
    r = run(m, one_order_per_bar(4, [1.0, 0.0]), venue="binance_usdm", leverage=10)
    assert r.fills["price"].tolist() == [61_234.5, 61_234.5]


def test_a_position_above_the_top_bracket_is_refused():
    # 40,000 BTC at 60,000 is 2.4 B of notional; BTCUSDT's last bracket caps at 1.8 B
    m = bars_market("BTC_USDT", [(60_000,) * 4] * 3)
    r = run(m, one_order_per_bar(3, [40_000.0]), venue="binance_usdm", leverage=1,
            initial_balance=1e10)
    assert len(r.fills) == 0
    assert r.rejections["reason"].tolist() == ["above_max_position"]
    # 29,000 BTC (1.74 B, the last bracket, 1x) fills
    r = run(m, one_order_per_bar(3, [29_000.0]), venue="binance_usdm", leverage=1,
            initial_balance=1e10)
    assert r.fills["qty"].tolist() == [29_000.0]


def test_without_order_filters_any_fraction_trades():
    m = bars_market("BTC_USDT", [(60_000,) * 4] * 3)
    r = run(m, one_order_per_bar(3, [0.0123456]), venue="binance_usdm", leverage=10,
            order_filters=False)
    assert r.fills["qty"].tolist() == [0.0123456]
    assert "order filters" in r.describe() and "off" in r.describe()


def test_a_wiped_account_trades_no_dust():
    # BTCUSDT, 2025 (minimum notional 100 USDT, step 0.001 BTC). 100 USDT of balance: long
    # 18x the equity (0.03 BTC at 60,000) isolated at 20x, margin 90; the price falls to
    # 50,000 and the position is liquidated. About 10 USDT are left, and the strategy asks
    # for its whole equity in BTC at every bar (about 0.0002 BTC): less than one step of
    # 0.001 BTC, refused every time, so nothing is held after the liquidation.
    rows = [(60_000,) * 4] * 3 + [(60_000, 60_000, 50_000, 50_000)] + [(50_000,) * 4] * 20
    m = bars_market("BTC_USDT", rows)
    targets = np.full((len(rows), 1), NAN)
    targets[0] = 18.0
    targets[4:] = 1.0
    options = dict(venue="binance_usdm", leverage=20, initial_balance=100.0,
                   margin_mode="isolated", target_kind="equity")
    r = run(m, targets, **options)
    last = r.liquidations["bar"].max()
    assert r.liquidations["qty"].tolist() == [0.03]
    assert 5.0 < r.equity.iloc[last] < 10.0
    assert len(r.fills[r.fills["bar"] > last]) == 0
    assert set(r.rejections["reason"]) == {"rounds_to_zero"}
    assert (r.positions.to_numpy()[last + 1:] == 0.0).all()
    # without the venue's filters the same strategy keeps trading crumbs of BTC
    crumbs = run(m, targets, **options, order_filters=False)
    assert (crumbs.fills["qty"].abs()[crumbs.fills["bar"] > last] < 0.001).all()
    assert len(crumbs.fills[crumbs.fills["bar"] > last]) > 0


# --- unknown symbols: an error, or a stand-in by choice, recorded -----------------------------


@pytest.mark.parametrize("venue", ["bybit_linear", "okx_swap", "binance_usdm"])
def test_an_unlisted_symbol_is_an_error_that_says_how_to_add_it(venue):
    with pytest.raises(UnknownSymbolError) as info:
        load_venue(venue).spec("PEPE_USDT")
    text = str(info.value)
    assert venue in text and "venues import" in text and "stand_in=" in text


def test_a_stand_in_is_recorded_in_the_specs_describe_and_run_json(tmp_path):
    m = Market.from_arrays(["BTC_USDT", "ETH_USDT"], np.full((4, 2), 100.0),
                           np.full((4, 2), 100.0), np.full((4, 2), 100.0),
                           np.full((4, 2), 100.0), start="2024-06-01")
    targets = np.full((4, 2), NAN)
    targets[0] = [1.0, -1.0]
    with pytest.raises(UnknownSymbolError, match="ETH_USDT"):
        run(m, targets, venue="okx_swap")
    r = run(m, targets, venue="okx_swap", stand_in={"ETH_USDT": "BTC_USDT"})
    eth = r.specs["ETH_USDT"]
    assert all(spec.stand_in == "BTCUSDT" for spec in eth)
    assert eth[0].tiers == load_venue("okx_swap").spec("BTCUSDT", "2024-06-01").tiers
    assert "BTCUSDT's table for ETH_USDT (stand_in)" in r.describe()
    r.save(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["stand_in"] == {"ETH_USDT": "BTC_USDT"}
    assert "BTCUSDT's table standing in" in meta["venue_specs"]["ETH_USDT"][0]
    assert "standing in" not in meta["venue_specs"]["BTC_USDT"][0]


def test_a_stand_in_must_name_a_listed_symbol():
    with pytest.raises(UnknownSymbolError, match="no SHIBUSDT table to stand in"):
        load_venue("bybit_linear", stand_in={"ETHUSDT": "SHIBUSDT"})


# --- backtester venues import -------------------------------------------------------------


def binance_brackets(symbol):
    # cum as Binance publishes it: 0, 20,000 x (1% - 0.5%) = 100, 100 + 200,000 x (2.5% - 1%)
    return [{"symbol": symbol, "brackets": [
        {"bracket": 1, "initialLeverage": 50, "notionalCap": 20000, "notionalFloor": 0,
         "maintMarginRatio": 0.005, "cum": 0.0},
        {"bracket": 2, "initialLeverage": 25, "notionalCap": 200000, "notionalFloor": 20000,
         "maintMarginRatio": 0.01, "cum": 100.0},
        {"bracket": 3, "initialLeverage": 10, "notionalCap": 9223372036854775807,
         "notionalFloor": 200000, "maintMarginRatio": 0.025, "cum": 3100.0}]}]


def binance_exchange_info(symbol):
    return {"serverTime": 1735689600000,  # 2025-01-01 00:00 UTC
            "symbols": [{"symbol": symbol, "contractType": "PERPETUAL",
                         "liquidationFee": "0.015000", "filters": [
                             {"filterType": "PRICE_FILTER", "tickSize": "0.0000001"},
                             {"filterType": "LOT_SIZE", "stepSize": "1", "minQty": "1"},
                             {"filterType": "MARKET_LOT_SIZE", "stepSize": "100",
                              "minQty": "100"},
                             {"filterType": "MIN_NOTIONAL", "notional": "5"}]}]}


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_venues_import_adds_a_binance_symbol_from_its_responses(tmp_path, capsys):
    brackets = write(tmp_path, "brackets.json", binance_brackets("PEPEUSDT"))
    info = write(tmp_path, "exchange_info.json", binance_exchange_info("PEPEUSDT"))
    out = tmp_path / "my_binance.toml"
    code = main(["venues", "import", brackets, info, "--venue", "binance_usdm",
                 "--date", "2025-01-01", "--out", str(out)])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    venue = load_venue(out)
    spec = venue.spec("PEPE/USDT:USDT", "2025-02-01")
    assert [(t.floor, t.cap, t.max_leverage, t.mmr) for t in spec.tiers] == [
        (0, 20_000, 50, 0.005), (20_000, 200_000, 25, 0.01), (200_000, math.inf, 10, 0.025)]
    assert [t.cum for t in spec.tiers] == [0.0, 100.0, 3_100.0]
    # MARKET_LOT_SIZE (fills are market orders), the tick and the clearance fee
    assert spec.filters == {"tick_size": 1e-7, "qty_step": 100.0, "min_qty": 100.0,
                            "min_notional": 5.0}
    assert spec.liquidation_fee == 0.015
    assert "brackets.json" in spec.source and "exchange_info.json" in spec.filter_source
    # the built-in symbols are still there, and a run on the new one works
    assert venue.spec("BTCUSDT", "2025-01-01").tiers == load_venue().spec(
        "BTCUSDT", "2025-01-01").tiers
    m = bars_market("PEPE_USDT", [(0.00002,) * 4] * 3, start="2025-02-01")
    r = run(m, one_order_per_bar(3, [1_234_567.0]), venue=out, leverage=5)
    assert r.fills["qty"].tolist() == [1_234_500.0]  # 100-coin steps, toward zero


def test_venues_import_reads_bybit_and_okx_responses(tmp_path):
    risk = {"retCode": 0, "time": 1748736000000,  # 2025-06-01
            "result": {"category": "linear", "list": [
                {"id": 1, "symbol": "ETHUSDT", "riskLimitValue": "1000000",
                 "maintenanceMargin": "0.005", "initialMargin": "0.01", "maxLeverage": "100",
                 "mmDeduction": ""},
                {"id": 2, "symbol": "ETHUSDT", "riskLimitValue": "2000000",
                 "maintenanceMargin": "0.01", "initialMargin": "0.02", "maxLeverage": "50",
                 "mmDeduction": "5000"}]}}
    instruments = {"retCode": 0, "time": 1748736000000, "result": {"list": [
        {"symbol": "ETHUSDT", "contractType": "LinearPerpetual",
         "priceFilter": {"tickSize": "0.01"},
         "lotSizeFilter": {"qtyStep": "0.01", "minOrderQty": "0.01",
                           "minNotionalValue": "5"}}]}}
    out = tmp_path / "bybit.toml"
    assert main(["venues", "import", write(tmp_path, "risk.json", risk),
                 write(tmp_path, "instruments.json", instruments), "--venue", "bybit_linear",
                 "--out", str(out)]) == 0
    spec = load_venue(out).spec("ETH_USDT", "2025-06-02")
    assert [(t.cap, t.mmr, t.imr, t.max_leverage) for t in spec.tiers] == [
        (1_000_000, 0.005, 0.01, 100), (2_000_000, 0.01, 0.02, 50)]
    assert spec.tiers[1].cum == 5_000.0  # 1,000,000 x (1% - 0.5%), as Bybit's mmDeduction
    assert spec.filters == {"tick_size": 0.01, "qty_step": 0.01, "min_qty": 0.01,
                            "min_notional": 5.0}

    tiers = {"code": "0", "data": [
        {"instFamily": "ETH-USDT", "tier": "1", "minSz": "0", "maxSz": "5000", "mmr": "0.004",
         "imr": "0.01", "maxLever": "100"},
        {"instFamily": "ETH-USDT", "tier": "2", "minSz": "5000", "maxSz": "10000",
         "mmr": "0.006", "imr": "0.0133", "maxLever": "75"}]}
    okx_instruments = {"code": "0", "data": [
        {"instId": "ETH-USDT-SWAP", "instType": "SWAP", "settleCcy": "USDT", "ctVal": "0.1",
         "lotSz": "0.01", "minSz": "0.01", "tickSz": "0.01"}]}
    out = tmp_path / "okx.toml"
    assert main(["venues", "import", write(tmp_path, "tiers.json", tiers),
                 write(tmp_path, "okx_instruments.json", okx_instruments), "--venue",
                 "okx_swap", "--date", "2025-06-01", "--out", str(out)]) == 0
    spec = load_venue(out).spec("ETHUSDT", "2025-06-02")
    assert spec.tier_unit == "contracts" and spec.params["contract_size"] == 0.1
    assert [(t.cap, t.mmr, t.max_leverage) for t in spec.tiers] == [
        (5_000, 0.004, 100), (10_000, 0.006, 75)]
    # 0.01 contracts of 0.1 ETH: a step of 0.001 ETH
    assert spec.qty_step == pytest.approx(0.001) and spec.min_qty == pytest.approx(0.001)


def test_venues_import_explains_what_it_cannot_use(tmp_path, capsys):
    brackets = write(tmp_path, "brackets.json", binance_brackets("PEPEUSDT"))
    out = str(tmp_path / "v.toml")
    # a leverageBracket response carries no time
    assert main(["venues", "import", brackets, "--venue", "binance_usdm", "--out", out]) == 2
    assert "brackets.json" in capsys.readouterr().err
    # a maintenance amount that breaks the recursion is refused, naming the tier
    bad = binance_brackets("PEPEUSDT")
    bad[0]["brackets"][1]["cum"] = 90.0
    assert main(["venues", "import", write(tmp_path, "bad.json", bad), "--venue",
                 "binance_usdm", "--date", "2025-01-01", "--out", out]) == 2
    assert "tier 2" in capsys.readouterr().err
    # a table dated before the venue's last version of that symbol cannot be added
    old = binance_brackets("BTCUSDT")
    assert main(["venues", "import", write(tmp_path, "old.json", old), "--venue",
                 "binance_usdm", "--date", "2020-01-01", "--out", out]) == 2
    assert "valid_from must be later" in capsys.readouterr().err
    # a Bybit response into a Binance venue
    risk = {"time": 1748736000000, "result": {"list": [
        {"symbol": "ETHUSDT", "riskLimitValue": "1000000", "maintenanceMargin": "0.005",
         "initialMargin": "0.01", "maxLeverage": "100"}]}}
    assert main(["venues", "import", write(tmp_path, "risk.json", risk), "--venue",
                 "binance_usdm", "--out", out]) == 2
    assert "cannot go into binance_usdm.toml" in capsys.readouterr().err
    assert not (tmp_path / "v.toml").exists()  # nothing written by a failed import


# --- Binance Multi-Assets mode: collateral after haircuts, cross only ----------------------


def multi_asset_market():
    # ETH 2,000 falling to a low of 1,600 in bar 2; BTC flat at 30,000 (prices the collateral)
    eth = [(2000,) * 4] * 2 + [(2000, 2000, 1600, 1600)] + [(1600,) * 4]
    btc = [(30000,) * 4] * 4
    a = np.array([eth, btc], dtype=float).transpose(1, 0, 2)
    return Market.from_arrays(["ETH_USDT", "BTC_USDT"], a[..., 0], a[..., 1], a[..., 2],
                              a[..., 3], start="2024-06-01")


def test_binance_multi_assets_collateral_backs_the_cross_account_after_its_haircut():
    # 100 USDT and 0.01 BTC at 30,000 (Binance's FAQ: BTC's collateral value ratio 95%, so it
    # adds 285 to the margin balance). Long 1 ETH at 2,000, 20x, cross, no taker fee; ETHUSDT
    # bracket 1 in 2024-06: 0.4%, clearance fee 3% (exchangeInfo of 2021-09-06).
    # Trigger: 100 + 285 + (P - 2,000) = 0.004 P  ->  P = 1,615 / 0.996 = 1,621.49.
    # Without the collateral: 100 + (P - 2,000) = 0.004 P  ->  P = 1,900 / 0.996 = 1,907.63.
    m = multi_asset_market()
    targets = np.full((4, 2), NAN)
    targets[0, 0] = 1.0
    venue = load_venue("binance_usdm", taker_fee=0.0)
    plain = run(m, targets, venue=venue, leverage=20, initial_balance=100)
    assert plain.liquidations["price"].iloc[0] == pytest.approx(1_900 / 0.996, rel=1e-12)
    r = run(m, targets, venue=venue, leverage=20, initial_balance=100, collateral={"BTC": 0.01})
    liq = r.liquidations
    lp = 1_615 / 0.996
    assert liq["price"].iloc[0] == pytest.approx(lp, rel=1e-12)
    # what was left at the trigger, 100 + 300 - 378.51 = 21.49 of real value, pays the fee
    # (3% x 1,621.49 = 48.64 due, the rest waived); the wallet is then 100 - 378.51 - 21.49 =
    # -300 USDT, repaid by selling the 0.01 BTC at 30,000 (a collateral record): nothing left
    left = 100 + 300 + (lp - 2000)
    assert liq["fee"].iloc[0] == pytest.approx(left, rel=1e-9)
    assert liq["fee_waived"].iloc[0] == pytest.approx(0.03 * lp - left, rel=1e-9)
    assert liq["mode"].tolist() == ["cross", "collateral"]
    assert liq["qty"].iloc[1] == pytest.approx(0.01)
    assert r.equity.iloc[-1] == pytest.approx(0.0, abs=1e-9)
    assert r.positions["BTC"].iloc[-1] == pytest.approx(0.0, abs=1e-12)


def test_binance_multi_assets_mode_is_cross_only():
    from helpers import script

    from backtester.engine.enums import Mode, Order
    from backtester.strategy import Callback

    m = multi_asset_market()
    targets = np.full((4, 2), NAN)
    targets[0, 0] = 1.0
    with pytest.raises(ValueError, match="Binance Multi-Assets mode.*isolated.*ETH_USDT"):
        run(m, targets, venue="binance_usdm", leverage=20, initial_balance=100,
            collateral={"BTC": 0.01}, margin_mode="isolated")
    # a callback's switch of ETH to isolated is refused while collateral backs the account
    series = np.full((5, 4, 3), NAN)  # (the collateral is a column too: BTC)
    series[Order.MODE, 0, 0] = Mode.ISOLATED
    r = run(m, Callback(script, series=series), venue="binance_usdm", leverage=20,
            initial_balance=100, collateral={"BTC": 0.01}, target_kind="units")
    assert r.rejections["reason"].tolist() == ["invalid_order"]
    assert r.output.mode[0] == Mode.CROSS
    # without collateral the same switch is done (one symbol's mode, per symbol)
    r = run(m, Callback(script, series=series[:, :, :2]), venue="binance_usdm", leverage=20,
            initial_balance=100, target_kind="units")
    assert len(r.rejections) == 0 and r.output.mode[0] == Mode.ISOLATED


def test_bybit_unified_account_collateral_is_settled_at_the_bankruptcy_price():
    # Bybit UTA, 2024-06 (classic rules: MM on the entry value, 0.5% in tier 1; no taker fee):
    # 100 USDT and 0.01 BTC at 30,000, whose collateral value ratio is 95% (the API docs'
    # example of 2023-08-09): 285 in the margin balance. Long 1 ETH at 2,000 (BTCUSDT's table
    # standing in), 20x cross. Trigger: 100 + 285 + (P - 2,000) = MM 10  ->  P = 1,625.
    # Bybit settles at the bankruptcy price, where the margin balance (with the collateral's
    # discounted value) is zero: 1,625 - 10 / 1 = 1,615. The USDT wallet is then
    # 100 - 385 = -285, repaid by selling 285 / 30,000 = 0.0095 BTC; the 0.0005 BTC left
    # (15 USDT, the 5% haircut) is the trader's.
    m = multi_asset_market()
    targets = np.full((4, 2), NAN)
    targets[0, 0] = 1.0
    venue = load_venue("bybit_linear", taker_fee=0.0, stand_in={"ETH_USDT": "BTC_USDT"})
    r = run(m, targets, venue=venue, leverage=20, initial_balance=100, collateral={"BTC": 0.01})
    liq = r.liquidations
    assert liq["mode"].tolist() == ["cross", "collateral"]
    assert liq["trigger_price"].iloc[0] == pytest.approx(1_625.0, rel=1e-12)
    assert liq["price"].iloc[0] == pytest.approx(1_615.0, rel=1e-12)
    assert liq["bankruptcy_price"].iloc[0] == pytest.approx(1_615.0, rel=1e-12)
    assert liq["qty"].iloc[1] == pytest.approx(0.0095, rel=1e-12)
    assert r.positions["BTC"].iloc[-1] == pytest.approx(0.0005, rel=1e-9)
    assert r.equity.iloc[-1] == pytest.approx(15.0, rel=1e-9)
    assert liq["shortfall"].sum() == 0.0
    with pytest.raises(ValueError, match="Bybit unified account mode.*isolated"):
        run(m, targets, venue=venue, leverage=20, initial_balance=100,
            collateral={"BTC": 0.01}, margin_mode="isolated")


def test_binance_multi_assets_collateral_is_priced_by_a_hedged_symbols_legs():
    # hedge mode splits BTC_USDT into BTC_USDT.long / .short; 0.1 BTC of collateral takes the
    # legs' prices (the symbol's): the account starts at 1,000 + 0.1 x 30,000 = 4,000
    m = bars_market("BTC_USDT", [(30_000,) * 4] * 3, start="2024-06-01")
    legs = np.full((3, 2), NAN)
    legs[0] = [0.05, -0.03]
    r = run(m, legs, venue="binance_usdm", position_mode="hedge", leverage=20,
            initial_balance=1_000, collateral={"BTC": 0.1})
    assert r.initial_equity == pytest.approx(4_000.0)
    assert r.fills["qty"].tolist() == [0.05, -0.03]
    assert r.positions["BTC"].iloc[-1] == 0.1
