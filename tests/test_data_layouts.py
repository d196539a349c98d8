"""Data folders as users hold them: freqtrade's feather files and Binance's public archive.

Every fixture is written here, with values chosen by hand, and the loaded arrays are
checked against those values.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from backtester.data import DataError, load_market

H = 3_600_000_000_000  # one hour in ns
T0 = pd.Timestamp("2024-01-01", tz="UTC").value


def candles(start: str, n: int, first: float, step: float = 1.0, freq: str = "1h") -> pd.DataFrame:
    """freqtrade's candle frame: open = first + i*step, high +2, low -1, close +0.5."""
    o = first + step * np.arange(n)
    return pd.DataFrame({"date": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
                         "open": o, "high": o + 2, "low": o - 1, "close": o + 0.5,
                         "volume": np.arange(n) + 10.0})


def feather(frame: pd.DataFrame, path) -> None:
    frame.reset_index(drop=True).to_feather(path, compression="lz4")


@pytest.fixture
def freqtrade_dir(tmp_path):
    d = tmp_path / "binance"
    d.mkdir()
    feather(candles("2024-01-01", 10, 100.0), d / "BTC_USDT_USDT-1h-futures.feather")
    feather(candles("2024-01-01", 10, 101.0), d / "BTC_USDT_USDT-1h-mark.feather")
    # freqtrade keeps each settlement as a candle whose open is the rate, the rest 0;
    # the 08:00 settlement stamped 3 ms late, as the exchange sometimes does
    feather(pd.DataFrame({"date": pd.to_datetime(["2024-01-01 00:00:00",
                                                  "2024-01-01 08:00:00.003"], utc=True,
                                                 format="ISO8601"),
                          "open": [0.0001, -0.0002], "high": 0.0, "low": 0.0, "close": 0.0,
                          "volume": 0.0}), d / "BTC_USDT_USDT-8h-funding_rate.feather")
    feather(candles("2024-01-01", 10, 5.0), d / "BTC_USDT-1h.feather")  # spot: not used
    feather(candles("2024-01-01 02:00", 8, 20.0), d / "ETH_USDT_USDT-1h-futures.feather")
    feather(candles("2024-01-01", 2, 30.0, freq="8h"), d / "ETH_USDT_USDT-8h-mark.feather")
    return d


@pytest.mark.parametrize("names", [["BTC_USDT"], ["BTC/USDT:USDT"], ["BTC_USDT_USDT"]])
def test_freqtrade_folder_loads_with_any_pair_spelling(freqtrade_dir, names):
    m = load_market(freqtrade_dir, symbols=names)
    assert m.symbols == ("BTC_USDT",)
    assert m.index[0] == T0 and np.all(np.diff(m.index) == H) and m.index.size == 10
    np.testing.assert_array_equal(m.open[:, 0], 100.0 + np.arange(10))  # futures, not spot
    np.testing.assert_array_equal(m.high[:, 0], 102.0 + np.arange(10))
    np.testing.assert_array_equal(m.close[:, 0], 100.5 + np.arange(10))
    np.testing.assert_array_equal(m.volume[:, 0], 10.0 + np.arange(10))
    np.testing.assert_array_equal(m.mark_open[:, 0], 101.0 + np.arange(10))
    np.testing.assert_array_equal(m.mark_low[:, 0], 100.0 + np.arange(10))
    expected = np.full(10, np.nan)
    expected[0], expected[8] = 0.0001, -0.0002  # 08:00:00.003 is the 08:00 bar
    np.testing.assert_array_equal(m.funding_rate[:, 0], expected)
    assert m.has_mark == (True,)


def test_freqtrade_folder_two_pairs_and_a_mark_of_another_timeframe(freqtrade_dir):
    with pytest.warns(UserWarning, match=r"ETH_USDT: no 1h mark file .*8h"):
        m = load_market(freqtrade_dir, symbols=["ETH/USDT:USDT", "BTC/USDT:USDT"])
    assert m.symbols == ("ETH_USDT", "BTC_USDT")
    eth = m.open[:, 0]
    assert np.isnan(eth[:2]).all()  # ETH starts at 02:00
    np.testing.assert_array_equal(eth[2:], 20.0 + np.arange(8))
    np.testing.assert_array_equal(m.mark_close[2:, 0], 20.5 + np.arange(8))  # last as mark
    assert m.has_mark == (False, True)
    assert np.isnan(m.funding_rate[:, 0]).all()


@pytest.mark.filterwarnings("ignore:ETH_USDT")
def test_freqtrade_folder_errors(freqtrade_dir):
    with pytest.raises(DataError, match=r"no bars for SOL_USDT; symbols present: "
                                        r"BTC_USDT, ETH_USDT"):
        load_market(freqtrade_dir, symbols=["SOL/USDT:USDT"])
    with pytest.raises(DataError, match=r"names BTC_USDT twice"):
        load_market(freqtrade_dir, symbols=["BTC_USDT", "BTC/USDT:USDT"])
    (freqtrade_dir / "ETH_USDT_USDT-1h-futures.feather").write_bytes(b"not arrow")
    with pytest.raises(DataError, match=r"ETH_USDT_USDT-1h-futures.feather: not a readable "
                                        r"feather file"):
        load_market(freqtrade_dir, symbols=["ETH_USDT"])
    frame = candles("2024-01-01", 3, 1.0).rename(columns={"close": "last"})
    feather(frame, freqtrade_dir / "ETH_USDT_USDT-1h-futures.feather")
    with pytest.raises(DataError, match=r"ETH_USDT_USDT-1h-futures.feather: missing column\(s\) "
                                        r"'close'"):
        load_market(freqtrade_dir, symbols=["ETH_USDT"])


def test_freqtrade_bad_price_names_the_file_and_row(freqtrade_dir):
    frame = candles("2024-01-01", 10, 100.0)
    frame.loc[4, "low"] = -1.0
    feather(frame, freqtrade_dir / "BTC_USDT_USDT-1h-futures.feather")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DataError, match=r"BTC_USDT_USDT-1h-futures.feather: column 'low'"
                                            r".* at row 4 \(timestamp 2024-01-01 04:00:00"):
            load_market(freqtrade_dir, symbols=["BTC_USDT"])


# --- Binance's public archive -------------------------------------------------------------

KLINE_HEADER = ("open_time,open,high,low,close,volume,close_time,quote_volume,count,"
                "taker_buy_volume,taker_buy_quote_volume,ignore")


def kline_csv(start: str, opens: list[float], unit: int = 1, header: bool = True) -> str:
    """Archive klines: open, high = open+2, low = open-1, close = open+0.5, volume 7."""
    t0 = pd.Timestamp(start, tz="UTC").value // 1_000_000 * unit  # ms (unit 1000: µs)
    lines = [KLINE_HEADER] if header else []
    for i, o in enumerate(opens):
        t = t0 + i * 3_600_000 * unit
        lines.append(f"{t},{o},{o + 2},{o - 1},{o + 0.5},7,{t + 3_600_000 * unit - 1},0,1,0,0,0")
    return "\n".join(lines) + "\n"


def put_zip(path, text: str) -> None:
    import zipfile

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(path.with_suffix(".csv").name, text)


@pytest.fixture
def archive_dir(tmp_path):
    um = tmp_path / "archive" / "futures" / "um"
    k = um / "monthly" / "klines" / "BTCUSDT" / "1h"
    put_zip(k / "BTCUSDT-1h-2024-01.zip", kline_csv("2024-01-31 21:00", [100, 101, 102],
                                                    unit=1, header=True))
    d = um / "daily" / "klines" / "BTCUSDT" / "1h"
    put_zip(d / "BTCUSDT-1h-2024-02-01.zip", kline_csv("2024-02-01", [103, 104], unit=1,
                                                       header=False))
    # a daily file of a month that has its monthly file: skipped (else duplicated bars)
    put_zip(d / "BTCUSDT-1h-2024-01-31.zip", kline_csv("2024-01-31 21:00", [1, 1, 1], unit=1))
    mk = um / "monthly" / "markPriceKlines" / "BTCUSDT" / "1h"
    put_zip(mk / "BTCUSDT-1h-2024-01.zip", kline_csv("2024-01-31 21:00", [200, 201, 202],
                                                     unit=1, header=False))
    fr = um / "monthly" / "fundingRate" / "BTCUSDT"
    put_zip(fr / "BTCUSDT-fundingRate-2024-01.zip",
            "calc_time,funding_interval_hours,last_funding_rate\n"
            "1706688000000,8,0.00010000\n")  # 2024-01-31 08:00: before the first bar
    put_zip(fr / "BTCUSDT-fundingRate-2024-02.zip",
            "calc_time,funding_interval_hours,last_funding_rate\n"
            "1706745600004,8,-0.00025000\n")  # 2024-02-01 00:00:00.004
    # newer spot files stamp klines in microseconds
    sk = tmp_path / "archive" / "spot" / "monthly" / "klines" / "ETHUSDT" / "1h"
    put_zip(sk / "ETHUSDT-1h-2024-02.zip", kline_csv("2024-01-31 23:00", [50, 51, 52],
                                                     unit=1000, header=False))
    return tmp_path / "archive"


def test_binance_archive_folder_loads(archive_dir):
    with pytest.warns(UserWarning, match=r"BTC_USDT: 2 of 5 bars have no mark price in .*"
                                         r"futures/um/\{monthly,daily\}/markPriceKlines/"
                                         r"BTCUSDT/1h \(first at 2024-02-01 00:00:00 UTC\)"):
        m = load_market(archive_dir)
    assert m.symbols == ("BTC_USDT", "ETH_USDT")
    t = pd.Timestamp("2024-01-31 21:00", tz="UTC").value
    np.testing.assert_array_equal(m.index, t + H * np.arange(5))
    np.testing.assert_array_equal(m.open[:, 0], [100, 101, 102, 103, 104])
    np.testing.assert_array_equal(m.high[:, 0], [102, 103, 104, 105, 106])
    np.testing.assert_array_equal(m.low[:, 0], [99, 100, 101, 102, 103])
    np.testing.assert_array_equal(m.close[:, 0], [100.5, 101.5, 102.5, 103.5, 104.5])
    np.testing.assert_array_equal(m.volume[:, 0], [7, 7, 7, 7, 7])
    # mark bars for January only: February's bars use the last price (with a warning)
    np.testing.assert_array_equal(m.mark_open[:, 0], [200, 201, 202, 103, 104])
    np.testing.assert_array_equal(m.funding_rate[:, 0], [np.nan, np.nan, np.nan, -0.00025,
                                                         np.nan])
    np.testing.assert_array_equal(m.open[:, 1], [np.nan, np.nan, 50, 51, 52])
    assert m.has_mark == (True, False)


def test_binance_archive_symbols_and_window(archive_dir):
    with pytest.warns(UserWarning, match="2 of 2 bars have no mark price"):
        m = load_market(archive_dir, symbols=["BTCUSDT"], start="2024-02-01")
    assert m.symbols == ("BTC_USDT",)
    np.testing.assert_array_equal(m.open[:, 0], [103, 104])
    np.testing.assert_array_equal(m.funding_rate[:, 0], [-0.00025, np.nan])


def test_binance_archive_corrupt_zip_is_named(archive_dir):
    bad = (archive_dir / "futures" / "um" / "daily" / "klines" / "BTCUSDT" / "1h"
           / "BTCUSDT-1h-2024-02-01.zip")
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"BTCUSDT-1h-2024-02-01.zip: not a readable zip file"):
        load_market(archive_dir, symbols=["BTC_USDT"])
