"""Symbols whose histories differ: which symbols load, where each may trade, and what
happens to a position whose data ends (README, "Symbols with different histories")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtester import DataError, DataWarning, load_market


def bars(n: int, start: str, price: float = 100.0) -> pd.DataFrame:
    """``n`` hourly bars from ``start``: close = price + row, open = previous close."""
    close = price + np.arange(n, dtype=float)
    open_ = np.r_[price, close[:-1]]
    return pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq="1h", tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) + 1.0,
        "low": np.minimum(open_, close) - 1.0, "close": close, "volume": 1.0,
    })


@pytest.fixture
def folder(tmp_path):
    """BTC and ETH from 2024-01-01 00:00 (48 bars); SOL listed a day later (24 bars)."""
    bars(48, "2024-01-01").to_parquet(tmp_path / "BTC_USDT-1h.parquet", index=False)
    bars(48, "2024-01-01", 50.0).to_parquet(tmp_path / "ETH_USDT-1h.parquet", index=False)
    bars(24, "2024-01-02", 10.0).to_parquet(tmp_path / "SOL_USDT-1h.parquet", index=False)
    return tmp_path


def test_a_symbol_not_asked_for_without_bars_in_the_window_is_left_out_with_a_note(folder):
    with pytest.warns(DataWarning, match=r"SOL_USDT: left out, no bars in the window "
                      r"start='2024-01-01', end='2024-01-02'; the file's bars run from "
                      r"2024-01-02 00:00:00 UTC to 2024-01-02 23:00:00 UTC"):
        market = load_market(folder, start="2024-01-01", end="2024-01-02")
    assert market.symbols == ("BTC_USDT", "ETH_USDT") and market.n_bars == 24


def test_a_symbol_asked_for_without_bars_in_the_window_is_an_error_naming_its_range(folder):
    with pytest.raises(DataError, match=r"no SOL_USDT bars in the window start='2024-01-01', "
                       r"end='2024-01-02'; the file's bars run from 2024-01-02 00:00:00 UTC"):
        load_market(folder, symbols=["BTC_USDT", "SOL_USDT"], start="2024-01-01",
                    end="2024-01-02")


def cli(argv, capsys) -> tuple[int, str, str]:
    from backtester.cli import main

    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_default_pair_loads_the_folders_first_two_symbols_only(folder, tmp_path, capsys):
    # SOL has no bar in the window: loading it would fail; the pair never asks for it
    code, out, err = cli(["run", "--data", str(folder), "--end", "2024-01-02", "--no-plot",
                          "--margin-mode", "cross", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert ("note: the default hedged pair trades the folder's BTC and ETH, long BTC_USDT, "
            "short ETH_USDT (of 3)") in out
    assert "SOL_USDT" not in out.replace("(of 3)", "")
    assert "(24 bars, BTC_USDT, ETH_USDT)" in out


def test_cli_pair_named_with_a_symbol_without_bars_is_an_error_naming_it(folder, tmp_path,
                                                                         capsys):
    code, _, err = cli(["run", "--data", str(folder), "--symbols", "BTC_USDT,SOL_USDT",
                        "--end", "2024-01-02", "--out", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "no SOL_USDT bars in the window --end '2024-01-02'" in err
    assert "bars run from 2024-01-02 00:00:00 UTC to 2024-01-02 23:00:00 UTC" in err


# ---------------------------------------------------------------- histories that differ

def test_a_late_symbol_trades_from_its_first_bar_with_a_note(folder):
    with pytest.warns(DataWarning, match=r"SOL_USDT: its bars begin at 2024-01-02 00:00:00 UTC, "
                      r"after the market's first bar \(2024-01-01 00:00:00 UTC\)"):
        market = load_market(folder, symbols=["BTC_USDT", "SOL_USDT"])
    assert market.n_bars == 48
    assert np.isnan(market.close[:24, 1]).all() and market.close[24, 1] == 10.0


def test_common_window_starts_where_every_symbol_has_data(folder, recwarn):
    market = load_market(folder, symbols=["BTC_USDT", "SOL_USDT"], align="common")
    assert not [w for w in recwarn if issubclass(w.category, DataWarning)]
    assert market.n_bars == 24
    assert market.timestamps[0] == pd.Timestamp("2024-01-02", tz="UTC")
    assert market.close[0].tolist() == [124.0, 10.0]  # BTC's 25th bar, SOL's first


def test_common_window_without_overlap_is_an_error_naming_both(tmp_path):
    bars(5, "2024-01-01").to_parquet(tmp_path / "BTC_USDT-1h.parquet", index=False)
    bars(5, "2024-01-02").to_parquet(tmp_path / "ETH_USDT-1h.parquet", index=False)
    with pytest.raises(DataError, match=r"BTC_USDT's bars end at 2024-01-01 04:00:00 UTC, "
                       r"before ETH_USDT's begin at 2024-01-02 00:00:00 UTC"):
        load_market(tmp_path, align="common")


def test_orders_before_a_symbols_first_bar_are_refused_and_the_run_says_how_many(folder):
    from backtester import run

    with pytest.warns(DataWarning):
        market = load_market(folder, symbols=["BTC_USDT", "SOL_USDT"])
    targets = np.full((48, 2), np.nan)
    targets[[0, 5, 10, 30]] = [0.5, -0.5]  # decided at 3 closes before SOL's first bar (24)
    with pytest.warns(DataWarning, match=r"SOL_USDT: its data begin at 2024-01-02 00:00:00 "
                      r"UTC.*3 of its orders before then were refused \(no_price\), so the "
                      r"other symbols traded without it"):
        result = run(market, targets, target_kind="equity", margin_mode="cross", leverage=5)
    rej = result.rejections
    assert (rej["symbol"] == "SOL_USDT").sum() == 3 and set(rej["reason"]) == {"no_price"}
    assert any("3 of its orders" in w for w in result.warnings)
    fills = result.fills
    # BTC fills at once (bar 1, after the close of bar 0), SOL first at bar 31
    assert fills["timestamp"].iloc[0] == pd.Timestamp("2024-01-01 01:00", tz="UTC")
    assert fills["symbol"].iloc[0] == "BTC_USDT"
    sol = fills[fills["symbol"] == "SOL_USDT"]
    assert sol["timestamp"].tolist() == [pd.Timestamp("2024-01-02 07:00", tz="UTC")]


def test_cli_common_window(folder, tmp_path, capsys):
    code, out, err = cli(["run", "--data", str(folder), "--symbols", "BTC_USDT,SOL_USDT",
                          "--common-window", "--no-plot", "--margin-mode", "cross",
                          "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "2024-01-02 00:00:00+00:00 -> 2024-01-02 23:00:00+00:00 (24 bars" in out
    assert "note:" not in out


# ---------------------------------------------------------------- data that end early

def ending_market():
    """A trades 6 bars; B's data end at bar 3 (NaN after). B: open 100, 101, 102, 103 and
    close 101, 102, 103, 104 (last close 104)."""
    from backtester import Market

    a = np.array([50.0, 50.0, 50.0, 50.0, 50.0, 50.0])
    b_open = np.array([100.0, 101.0, 102.0, 103.0, np.nan, np.nan])
    b_close = b_open + 1.0
    opens = np.column_stack([a, b_open])
    closes = np.column_stack([a, b_close])
    highs = np.fmax(opens, closes) + 0.5
    lows = np.fmin(opens, closes) - 0.5
    return Market.from_arrays(("A_USDT", "B_USDT"), opens, highs, lows, closes)


@pytest.mark.parametrize("margin_mode", ["cross", "isolated"])
def test_a_position_whose_data_end_is_closed_at_its_last_close_with_the_taker_fee(margin_mode):
    from backtester import run

    targets = np.full((6, 2), np.nan)
    targets[0, 1] = 10.0  # 10 B long, decided at bar 0's close, filled at bar 1's open (101)
    targets[4, 1] = 5.0  # decided after B's data end: refused, no price
    with pytest.warns(DataWarning, match=r"B_USDT: its data end at 2024-01-01 03:00:00 UTC.*"
                      r"1 of its orders after were refused \(no_price\)"):
        result = run(ending_market(), targets, target_kind="units", venue="flat", leverage=5,
                     margin_mode=margin_mode, initial_balance=10_000.0)
    assert result.rejections["reason"].tolist() == ["no_price"]
    fills = result.fills
    assert fills["reason"].tolist() == ["strategy", "data_end"]
    last = fills.iloc[1]
    assert last["symbol"] == "B_USDT" and last["timestamp"] == result.market.timestamps[3]
    assert last["qty"] == -10.0 and last["price"] == 104.0
    assert last["position_after"] == 0.0
    # by hand: flat's taker fee 0.05%: open 10 x 101 x 0.0005 = 0.505, close 10 x 104 x
    # 0.0005 = 0.52; realized 10 x (104 - 101) = 30
    assert last["fee"] == pytest.approx(0.52)
    assert last["realized_pnl"] == pytest.approx(30.0)
    equity = result.equity
    assert equity.iloc[3] == pytest.approx(10_000.0 + 30.0 - 0.505 - 0.52)
    assert equity.iloc[-1] == pytest.approx(equity.iloc[3])  # flat from then on
    assert any("B_USDT: its data end at" in w and "closed at its last close 104" in w
               for w in result.warnings)


def test_cli_default_pair_is_btc_and_eth_where_the_folder_holds_them(tmp_path, capsys):
    # a folder of four symbols listed ADA, BTC, DOGE, ETH: the pair is long BTC, short ETH,
    # not the first two by name (ADA, BTC)
    from backtester.data import make_market, write_market

    m = make_market(48, 4, seed=1)
    m = type(m).from_arrays(["ADA_USDT", "BTC_USDT", "DOGE_USDT", "ETH_USDT"], m.open, m.high,
                            m.low, m.close)
    write_market(m, tmp_path / "data")
    code, out, err = cli(["run", "--data", str(tmp_path / "data"), "--no-plot",
                          "--margin-mode", "cross", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert ("note: the default hedged pair trades the folder's BTC and ETH, long BTC_USDT, "
            "short ETH_USDT (of 4)") in out
    assert "ADA_USDT" not in out.replace("(of 4)", "")


def test_default_pair_without_btc_and_eth_is_the_first_two_by_name():
    from backtester.cli_common import default_pair

    assert default_pair(["ADA_USDT", "SOL_USDT", "XRP_USDT"]) == (
        ["ADA_USDT", "SOL_USDT"], "first two symbols")
    assert default_pair(["BTC/USDT:USDT", "ETH/USDT:USDT", "ADA/USDT:USDT"])[0] == [
        "BTC/USDT:USDT", "ETH/USDT:USDT"]


def test_the_close_where_data_end_pays_the_runs_slippage_like_any_order():
    from backtester import run

    targets = np.full((6, 2), np.nan)
    targets[0, 1] = 10.0  # 10 B long, filled at bar 1's open 101 (+0.1%: 101.101)
    with pytest.warns(DataWarning, match="B_USDT: its data end at"):
        result = run(ending_market(), targets, target_kind="units", venue="flat", leverage=5,
                     margin_mode="cross", initial_balance=10_000.0, slippage=0.001)
    buy, close = result.fills.iloc[0], result.fills.iloc[1]
    assert buy["price"] == pytest.approx(101 * 1.001, rel=1e-12)
    # a sell of 10 at the last close 104 with 0.1% slippage: 104 x 0.999 = 103.896
    assert close["reason"] == "data_end" and close["price"] == pytest.approx(103.896, rel=1e-12)
    assert close["realized_pnl"] == pytest.approx(10 * (103.896 - 101.101), rel=1e-9)
    assert any("closed at 103.896, its last close 104 with the run's slippage" in w
               for w in result.warnings)


def test_cli_run_of_many_symbols_with_notes_fits_100_columns(tmp_path, capsys):
    # eight symbols, six listed late: the notes, the summary's venue and window lines and
    # its warnings wrap at 100 columns, between clauses, and say all they said
    symbols = ["ADA_USDT", "BNB_USDT", "BTC_USDT", "DOGE_USDT", "ETH_USDT", "LTC_USDT",
               "SOL_USDT", "XRP_USDT"]
    for k, symbol in enumerate(symbols):
        late = 0 if symbol in ("BTC_USDT", "ETH_USDT") else 6 + k
        bars(96 - late, str(pd.Timestamp("2024-01-01") + pd.Timedelta(hours=late)),
             10.0 + 10 * k).to_parquet(tmp_path / f"{symbol}-1h.parquet", index=False)
    code, out, err = cli(["run", "--strategy", "trend", "--data", str(tmp_path), "--no-plot",
                          "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    lines = out.splitlines()
    # (the output folders' lines aside: a path is printed whole, however long the folder)
    assert max(len(line) for line in lines if str(tmp_path) not in line) <= 100
    flat = " ".join(line.strip() for line in lines)
    assert ("venue binance_usdm, margin ADA_USDT cross 5x, BNB_USDT cross 5x, BTC_USDT cross 5x, "
            "DOGE_USDT cross 5x, ETH_USDT cross 5x, LTC_USDT cross 5x, SOL_USDT cross 5x, "
            "XRP_USDT cross 5x, path path, fills at open") in flat
    assert ("2024-01-01 00:00:00+00:00 -> 2024-01-04 23:00:00+00:00 (96 bars, ADA_USDT, "
            "BNB_USDT, BTC_USDT, DOGE_USDT, ETH_USDT, LTC_USDT, SOL_USDT, XRP_USDT)") in flat
    # a run's own note once, in its summary's warnings (not also as a note above it)
    assert flat.count("- XRP_USDT: its data begin at 2024-01-01 13:00:00 UTC, after the "
                      "run's start (2024-01-01 00:00:00 UTC)") == 2  # (each mode's run)
    assert "note: XRP_USDT: its data begin" not in flat
