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
