"""The data layer: loading, alignment, validation, CSV import, synthetic data.

Expected numbers are worked out here from the files with pandas, never copied
from the loader's output.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backtester.data import (
    DataError,
    DataWarning,
    Market,
    embedded_data_dir,
    generate_embedded,
    import_csv,
    load_market,
    make_market,
    write_market,
)

REPO = Path(__file__).resolve().parents[1]
HOUR = pd.Timedelta(hours=1)


# ---------------------------------------------------------------- helpers

def bars_frame(n: int = 48, start: str = "2024-01-01", freq: str = "1h", seed: int = 0,
               price: float = 100.0) -> pd.DataFrame:
    """A valid OHLCV frame: open = previous close, high/low beyond both."""
    rng = np.random.default_rng(seed)
    close = price * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[price, close[:-1]]
    return pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
        "open": open_,
        "high": np.maximum(open_, close) * 1.01,
        "low": np.minimum(open_, close) * 0.99,
        "close": close,
        "volume": rng.uniform(1, 10, n),
    })


def funding_frame(bars: pd.DataFrame) -> pd.DataFrame:
    ts = bars["timestamp"][bars["timestamp"].dt.hour % 8 == 0]
    return pd.DataFrame({"timestamp": ts.to_numpy(), "funding_rate": 1e-4})


def write(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


# ---------------------------------------------------------------- embedded data

def test_embedded_dir_is_the_repo_data_folder():
    assert embedded_data_dir() == REPO / "data"


def test_embedded_market_shapes_alignment_funding_and_mark():
    market = load_market()
    btc = pd.read_parquet(REPO / "data" / "BTC_USDT-1h.parquet")
    eth = pd.read_parquet(REPO / "data" / "ETH_USDT-1h.parquet")
    hours = pd.date_range("2023-01-01", "2025-01-01", freq="h", inclusive="left", tz="UTC")
    assert market.symbols == ("BTC_USDT", "ETH_USDT")
    assert market.n_bars == len(hours) == len(btc) == len(eth)
    for name in ("open", "high", "low", "close", "volume", "mark_open", "mark_high",
                 "mark_low", "mark_close", "funding_rate"):
        arr = getattr(market, name)
        assert arr.shape == (len(hours), 2) and arr.dtype == np.float64
        assert arr.flags.c_contiguous
    assert (market.timestamps == hours).all()
    assert market.bar_ns == 3_600 * 10**9
    np.testing.assert_array_equal(market.close[:, 0], btc["close"].to_numpy())
    np.testing.assert_array_equal(market.volume[:, 1], eth["volume"].to_numpy())

    # funding only at 00/08/16 UTC, one print per funding row
    for i, sym in enumerate(market.symbols):
        rates = pd.read_parquet(REPO / "data" / f"{sym}_funding.parquet")
        has = ~np.isnan(market.funding_rate[:, i])
        assert set(market.timestamps[has].hour) == {0, 8, 16}
        assert has.sum() == len(rates)
        np.testing.assert_array_equal(market.funding_rate[has, i], rates["funding_rate"])

    # mark prices are their own arrays, close to but not equal to the last price
    assert market.has_mark == (True, True)
    assert market.mark_close is not market.close
    assert not np.array_equal(market.mark_close, market.close)
    mark = pd.read_parquet(REPO / "data" / "BTC_USDT_mark-1h.parquet")
    np.testing.assert_array_equal(market.mark_low[:, 0], mark["low"].to_numpy())
    assert np.abs(market.mark_close / market.close - 1).max() < 0.01


def test_embedded_files_are_what_the_generator_writes(tmp_path):
    paths = generate_embedded(tmp_path)
    assert sorted(p.name for p in paths) == sorted(p.name for p in (REPO / "data").glob(
        "*.parquet"))
    for p in paths:
        pd.testing.assert_frame_equal(pd.read_parquet(p), pd.read_parquet(REPO / "data" / p.name))
    assert sum(p.stat().st_size for p in paths) < 2_000_000


def test_embedded_data_looks_like_crypto():
    btc = pd.read_parquet(REPO / "data" / "BTC_USDT-1h.parquet").set_index("timestamp")
    eth = pd.read_parquet(REPO / "data" / "ETH_USDT-1h.parquet").set_index("timestamp")
    rb, re_ = np.log(btc["close"]).diff(), np.log(eth["close"]).diff()
    assert 0.7 < rb.corr(re_) < 0.9
    assert rb.kurt() > 5  # fat tails
    day = btc.resample("D").agg({"open": "first", "low": "min"})
    crashes = (day["low"] / day["open"] - 1).nsmallest(4)
    assert (crashes < -0.15).all() and (crashes > -0.35).all()
    rates = pd.read_parquet(REPO / "data" / "BTC_USDT_funding.parquet")["funding_rate"]
    assert (rates == 1e-4).mean() > 0.5 and rates.abs().max() <= 0.003


# ---------------------------------------------------------------- real data

def test_shared_binance_btc_eth(shared_data_dir):
    folder = shared_data_dir / "binance_futures"
    if not (folder / "BTC_USDT-1h.parquet").exists():
        pytest.skip("binance_futures data absent")
    with pytest.warns(UserWarning, match="BTC_USDT") as record:
        market = load_market(folder, symbols=["BTC_USDT", "ETH_USDT"], timeframe="1h")
    assert (np.diff(market.index) > 0).all()
    assert market.has_mark == (True, True)

    btc = pd.read_parquet(folder / "BTC_USDT-1h.parquet")
    btc_mark = pd.read_parquet(folder / "BTC_USDT_mark-1h.parquet")
    assert btc_mark["timestamp"].iloc[0] > btc["timestamp"].iloc[0]
    missing = (~btc["timestamp"].isin(btc_mark["timestamp"])).sum()
    btc_msgs = [str(w.message) for w in record if "BTC_USDT:" in str(w.message)]
    assert btc_msgs and f"{missing} of {len(btc)} bars" in btc_msgs[0]
    # before the mark series starts, the mark is the last price; after, the mark file
    i = market.symbol_index("BTC_USDT")
    t_first_mark = btc_mark["timestamp"].iloc[0].value
    early = market.index < t_first_mark
    np.testing.assert_array_equal(market.mark_close[early, i], market.close[early, i])
    row = np.flatnonzero(market.index == t_first_mark)[0]
    assert market.mark_close[row, i] == btc_mark["close"].iloc[0]

    union = pd.DatetimeIndex(btc["timestamp"]).union(
        pd.read_parquet(folder / "ETH_USDT-1h.parquet")["timestamp"])
    assert market.n_bars == len(union)
    for j, sym in enumerate(market.symbols):
        bars = pd.read_parquet(folder / f"{sym}-1h.parquet")["timestamp"]
        rates = pd.read_parquet(folder / f"{sym}_funding.parquet")["timestamp"]
        inside = rates[(rates >= bars.iloc[0]) & (rates <= bars.iloc[-1])]
        assert np.isfinite(market.funding_rate[:, j]).sum() == len(inside)


def test_shared_binance_window(shared_data_dir):
    folder = shared_data_dir / "binance_futures"
    if not (folder / "BTC_USDT-1h.parquet").exists():
        pytest.skip("binance_futures data absent")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # marks cover this window: no fallback warning
        market = load_market(folder, symbols=["ETH_USDT", "BTC_USDT"], timeframe="1h",
                             start="2021-01-01", end=pd.Timestamp("2021-02-01", tz="UTC"))
    assert market.symbols == ("ETH_USDT", "BTC_USDT")
    assert market.n_bars == 31 * 24
    assert market.timestamps[0] == pd.Timestamp("2021-01-01", tz="UTC")
    assert market.timestamps[-1] == pd.Timestamp("2021-01-31 23:00", tz="UTC")
    assert (np.isfinite(market.funding_rate).sum(axis=0) == 31 * 3).all()


def test_shared_binance_several_timeframes_is_an_error(shared_data_dir):
    folder = shared_data_dir / "binance_futures"
    if not (folder / "BTC_USDT-5m.parquet").exists():
        pytest.skip("binance_futures data absent")
    with pytest.raises(DataError, match="1h, 5m"):
        load_market(folder, symbols=["BTC_USDT"])
    with pytest.raises(DataError, match="symbols present: .*BTC_USDT"):
        load_market(folder, symbols=["NOPE_USDT"], timeframe="1h")


# ---------------------------------------------------------------- alignment

@pytest.fixture
def late_pair(tmp_path):
    """AAA_USDT: 48 hourly bars; BBB_USDT starts 10 h later and ends with AAA."""
    a = bars_frame(48, seed=1)
    b = bars_frame(38, start="2024-01-01 10:00", seed=2, price=5.0)
    write(a, tmp_path / "AAA_USDT-1h.parquet")
    write(b, tmp_path / "BBB_USDT-1h.parquet")
    write(funding_frame(a), tmp_path / "AAA_USDT_funding.parquet")
    write(funding_frame(b), tmp_path / "BBB_USDT_funding.parquet")
    return tmp_path, a, b


def test_union_alignment_keeps_every_bar(late_pair):
    folder, a, b = late_pair
    m = load_market(folder)
    assert m.symbols == ("AAA_USDT", "BBB_USDT")
    assert m.n_bars == len(a)
    assert np.isnan(m.close[:10, 1]).all() and np.isnan(m.mark_low[:10, 1]).all()
    np.testing.assert_array_equal(m.close[10:, 1], b["close"].to_numpy())
    np.testing.assert_array_equal(m.close[:, 0], a["close"].to_numpy())
    assert m.mark_close is m.close and m.has_mark == (False, False)
    assert np.isfinite(m.funding_rate[:, 1]).sum() == len(funding_frame(b))


def test_intersection_alignment_keeps_common_bars(late_pair):
    folder, a, b = late_pair
    m = load_market(folder, align="intersection")
    assert m.n_bars == len(b)
    assert m.timestamps[0] == b["timestamp"].iloc[0]
    np.testing.assert_array_equal(m.close[:, 0], a["close"].to_numpy()[10:])
    assert not np.isnan(m.close).any()
    # AAA's funding at 08:00 on day one is before the common window: dropped
    assert np.isfinite(m.funding_rate[:, 0]).sum() == (a["timestamp"].iloc[10:].dt.hour % 8
                                                       == 0).sum()


def test_gaps_mark_fallback_and_files_argument(tmp_path):
    a = bars_frame(30, seed=3).drop(index=[5, 6, 20]).reset_index(drop=True)
    mark = a.drop(columns="volume").iloc[4:].copy()
    mark[["open", "high", "low", "close"]] *= 1.001
    files = {"AAA_USDT": {"ohlc": write(a, tmp_path / "a.parquet"),
                          "mark": write(mark, tmp_path / "am.parquet")},
             "BBB_USDT": {"ohlc": write(bars_frame(30, seed=4), tmp_path / "b.parquet")}}
    with pytest.warns(UserWarning, match=r"AAA_USDT: 4 of 27 bars have no mark price"):
        m = load_market(files=files)
    assert m.n_bars == 30 and m.has_mark == (True, False)
    assert np.isnan(m.close[[5, 6, 20], 0]).all() and np.isnan(m.mark_close[[5, 6, 20], 0]).all()
    np.testing.assert_array_equal(m.mark_close[:4, 0], m.close[:4, 0])
    np.testing.assert_allclose(m.mark_close[7:20, 0], m.close[7:20, 0] * 1.001)
    np.testing.assert_array_equal(m.mark_close[:, 1], m.close[:, 1])
    assert np.isnan(m.funding_rate).all()


def test_timestamp_encodings_are_equivalent(tmp_path):
    base = bars_frame(24)
    ref = load_market(files={"X": {"ohlc": write(base, tmp_path / "ref.parquet")}})
    epoch_ms = base.assign(timestamp=base["timestamp"].astype("int64") // 10**6)
    naive_us = base.assign(timestamp=base["timestamp"].dt.tz_localize(None).astype(
        "datetime64[us]"))
    for name, frame in (("ms", epoch_ms), ("us", naive_us)):
        m = load_market(files={"X": {"ohlc": write(frame, tmp_path / f"{name}.parquet")}})
        np.testing.assert_array_equal(m.index, ref.index)


def test_funding_false_and_mark_false(late_pair):
    folder, _, _ = late_pair
    m = load_market(folder, funding=False, mark=False)
    assert np.isnan(m.funding_rate).all() and m.mark_open is m.open


# ---------------------------------------------------------------- bad inputs

def _corrupt(kind: str) -> tuple[pd.DataFrame, str, str]:
    """A bars frame broken at row 5: (frame, column named in the error, words in it)."""
    f = bars_frame(12)
    if kind == "nan":
        f.loc[5, "close"] = np.nan
        return f, "close", "NaN price"
    if kind == "nonpositive":
        f.loc[5, ["low", "open"]] = [-1.0, 0.0]
        return f, "open", "<= 0"
    if kind == "high_below_oc":
        f.loc[5, "high"] = f.loc[5, ["open", "close"]].max() * 0.999
        f.loc[5, "low"] = min(f.loc[5, "low"], f.loc[5, "high"])
        return f, "high", "high < max(open, close)"
    if kind == "low_above_oc":
        f.loc[5, "low"] = f.loc[5, ["open", "close"]].min() * 1.001
        return f, "low", "low > min(open, close)"
    if kind == "high_below_low":
        f.loc[5, ["high", "low"]] = [f.loc[5, "low"], f.loc[5, "high"]]
        return f, "high", "high < low"
    if kind == "unsorted":
        f.loc[[5, 6], "timestamp"] = f.loc[[6, 5], "timestamp"].to_numpy()
        return f, "timestamp", "not sorted"
    if kind == "duplicate":
        f.loc[5, "timestamp"] = f.loc[4, "timestamp"]
        return f, "timestamp", "duplicated"
    if kind == "off_grid":
        f.loc[5:, "timestamp"] += pd.Timedelta(minutes=30)
        return f, "timestamp", "mixed bar frequencies"
    if kind == "negative_volume":
        f.loc[5, "volume"] = -2.0
        return f, "volume", "negative volume"
    raise AssertionError(kind)


BAD = ["nan", "nonpositive", "high_below_oc", "low_above_oc", "high_below_low", "unsorted",
       "duplicate", "off_grid", "negative_volume"]


@pytest.mark.parametrize("kind", BAD)
def test_bad_bars_are_reported_with_file_column_and_row(tmp_path, kind):
    frame, column, words = _corrupt(kind)
    path = write(frame, tmp_path / "BAD_USDT-1h.parquet")
    with pytest.raises(DataError) as err:
        load_market(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and f"'{column}'" in msg and words in msg
    assert "row 5" in msg or (kind == "unsorted" and "row 6" in msg)
    assert "1 row(s)" in msg or kind == "off_grid"
    if kind not in ("unsorted", "off_grid"):
        assert str(frame.loc[5, "timestamp"].tz_localize(None)) in msg


def test_bad_row_outside_the_window_is_ignored_but_row_numbers_are_the_files(tmp_path):
    frame, _, _ = _corrupt("nan")
    write(frame, tmp_path / "BAD_USDT-1h.parquet")
    m = load_market(tmp_path, start=frame["timestamp"].iloc[6])
    assert m.n_bars == 6
    frame.loc[8, "high"] = np.nan
    write(frame, tmp_path / "BAD_USDT-1h.parquet")
    with pytest.raises(DataError, match="column 'high': NaN price at row 8"):
        load_market(tmp_path, start=frame["timestamp"].iloc[6])


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "BAD_USDT-1h.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DataError, match="not a readable parquet file") as err:
        load_market(tmp_path)
    assert str(path) in str(err.value)


def test_missing_column(tmp_path):
    path = write(bars_frame().drop(columns="volume"), tmp_path / "BAD_USDT-1h.parquet")
    with pytest.raises(DataError, match="missing column.*'volume'") as err:
        load_market(tmp_path)
    assert str(path) in str(err.value)


def test_different_bar_lengths_across_symbols(tmp_path):
    a = write(bars_frame(), tmp_path / "AAA_USDT-1h.parquet")
    b = write(bars_frame(freq="4h"), tmp_path / "BBB_USDT-4h.parquet")
    with pytest.raises(DataError, match="mixed bar frequencies across symbols") as err:
        load_market(tmp_path)
    assert str(a) in str(err.value) and str(b) in str(err.value)


def test_file_named_with_the_wrong_timeframe(tmp_path):
    write(bars_frame(freq="4h"), tmp_path / "AAA_USDT-1h.parquet")
    with pytest.raises(DataError, match="named as 1h bars but the bars are 4h apart"):
        load_market(tmp_path)


def test_funding_matching_no_bar(tmp_path):
    bars = bars_frame(48)
    write(bars, tmp_path / "AAA_USDT-1h.parquet")
    fund = funding_frame(bars).reset_index(drop=True)
    fund.loc[2, "timestamp"] += pd.Timedelta(minutes=30)
    path = write(fund, tmp_path / "AAA_USDT_funding.parquet")
    with pytest.raises(DataError, match="funding at row 2 .*matches no bar") as err:
        load_market(tmp_path)
    assert str(path) in str(err.value) and "'timestamp'" in str(err.value)


def test_funding_outside_the_bars_is_dropped(tmp_path):
    bars = bars_frame(48, start="2024-01-02")
    write(bars, tmp_path / "AAA_USDT-1h.parquet")
    fund = pd.DataFrame({"timestamp": pd.date_range("2024-01-01", "2024-01-05", freq="8h",
                                                    tz="UTC"), "funding_rate": 2e-4})
    write(fund, tmp_path / "AAA_USDT_funding.parquet")
    m = load_market(tmp_path)
    inside = fund[(fund["timestamp"] >= bars["timestamp"].iloc[0])
                  & (fund["timestamp"] <= bars["timestamp"].iloc[-1])]
    assert np.isfinite(m.funding_rate).sum() == len(inside) == 6


def test_unknown_symbol_and_empty_window(late_pair):
    folder, _, _ = late_pair
    with pytest.raises(DataError, match="symbols present: AAA_USDT, BBB_USDT"):
        load_market(folder, symbols=["CCC_USDT"])
    with pytest.raises(DataError, match="no BBB_USDT bars in the window"):
        load_market(folder, symbols=["AAA_USDT", "BBB_USDT"], end="2024-01-01 05:00")
    with pytest.warns(DataWarning, match="BBB_USDT: left out, no bars in the window"):
        assert load_market(folder, end="2024-01-01 05:00").symbols == ("AAA_USDT",)


# ---------------------------------------------------------------- CSV import

def test_csv_import_round_trip(tmp_path):
    bars = bars_frame(40)
    csv = tmp_path / "btc.csv"
    bars.rename(columns={"timestamp": "Open Time", "open": "Open", "high": "HIGH"}).assign(
        **{"Open Time": bars["timestamp"].astype("int64") // 10**6}).to_csv(csv, index=False)
    out = import_csv(csv, tmp_path / "data", "BTC/USDT")
    assert out == tmp_path / "data" / "BTC_USDT-1h.parquet"

    mark_csv = tmp_path / "mark.csv"
    mark = bars.drop(columns="volume").assign(
        time=bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S")).drop(columns="timestamp")
    mark.to_csv(mark_csv, index=False)
    assert import_csv(mark_csv, tmp_path / "data", "BTC_USDT", kind="mark").name == \
        "BTC_USDT_mark-1h.parquet"

    fund_csv = tmp_path / "fund.csv"
    funding_frame(bars).rename(columns={"timestamp": "fundingTime",
                                        "funding_rate": "fundingRate"}).to_csv(fund_csv,
                                                                               index=False)
    import_csv(fund_csv, tmp_path / "data", "BTC_USDT", kind="funding")

    back = pd.read_parquet(out)
    pd.testing.assert_frame_equal(back, bars, check_dtype=False)
    assert str(back["timestamp"].dtype) == "datetime64[ns, UTC]"
    m = load_market(tmp_path / "data")
    np.testing.assert_allclose(m.close[:, 0], bars["close"])
    np.testing.assert_allclose(m.mark_high[:, 0], bars["high"])
    assert np.isfinite(m.funding_rate).sum() == len(funding_frame(bars))


def test_csv_import_validates(tmp_path):
    bars = bars_frame(10)
    bars.loc[3, "high"] = bars.loc[3, "low"] * 0.5
    csv = tmp_path / "bad.csv"
    bars.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"bad\.csv: column 'high': high < low at row 3"):
        import_csv(csv, tmp_path / "data", "BTC_USDT")
    with pytest.raises(DataError, match="missing column 'funding_rate'"):
        import_csv(csv, tmp_path / "data", "BTC_USDT", kind="funding")
    good = tmp_path / "good.csv"
    bars_frame(10, freq="4h").to_csv(good, index=False)
    with pytest.raises(DataError, match="bars are 4h apart"):
        import_csv(good, tmp_path / "data", "BTC_USDT", timeframe="1h")


# ---------------------------------------------------------------- synthetic markets

def test_make_market_and_write_market_round_trip(tmp_path):
    market = make_market(300, 3, seed=5, bar="5m")
    assert market.close.shape == (300, 3) and market.bar_ns == 300 * 10**9
    assert (market.high >= np.maximum(market.open, market.close)).all()
    assert (market.mark_low <= np.minimum(market.mark_open, market.mark_close)).all()
    assert np.isfinite(market.funding_rate).sum() == 3 * len(range(0, 300, 8))
    write_market(market, tmp_path)
    back = load_market(tmp_path)
    assert back.symbols == market.symbols
    np.testing.assert_array_equal(back.index, market.index)
    for name in ("open", "high", "low", "close", "volume", "mark_close", "funding_rate"):
        np.testing.assert_array_equal(getattr(back, name), getattr(market, name))
    again = make_market(300, 3, seed=5, bar="5m")
    np.testing.assert_array_equal(again.close, market.close)
    plain = make_market(50, 2, with_mark=False, funding_every=None)
    assert plain.mark_high is plain.high and np.isnan(plain.funding_rate).all()


# --- the checks' fast path: every rule at once, where no bar is missing ---------------------


@pytest.mark.parametrize("broken, column, what", [
    (("open", 0, np.nan), "open", "NaN price in a bar that has other prices"),
    (("close", 1, np.nan), "close", "NaN price in a bar that has other prices"),
    (("high", 2, np.inf), "high", "infinite price"),
    (("low", 0, 0.0), "low", "price <= 0"),
    (("low", 1, -1.0), "low", "price <= 0"),
    (("high", 2, 99.5), "high", "high < max(open, close)"),   # the close is 100
    (("low", 0, 100.5), "low", "low > min(open, close)"),     # the open is 100
    (("volume", 1, -2.0), "volume", "negative volume"),
    (("volume", 2, np.nan), "volume", "NaN volume"),
])
def test_one_broken_value_is_named_whatever_the_path_that_finds_it(broken, column, what):
    from backtester.data.validate import _plainly_sound, bar_problem

    # three bars: open 100, high 101, low 99, close 100, volume 5 (sound: the fast path holds)
    cols = {name: np.full(3, value) for name, value in
            (("open", 100.0), ("high", 101.0), ("low", 99.0), ("close", 100.0),
             ("volume", 5.0))}
    assert _plainly_sound(*(cols[c] for c in ("open", "high", "low", "close")), cols["volume"])
    assert bar_problem(cols) is None
    name, row, value = broken
    cols[name][row] = value
    assert not _plainly_sound(*(cols[c] for c in ("open", "high", "low", "close")),
                              cols["volume"])
    problem = bar_problem(cols, missing_ok=True)
    assert (problem.column, problem.what) == (column, what)
    assert np.flatnonzero(problem.mask).tolist() == [row]


def test_a_missing_bar_leaves_the_fast_path_and_is_no_error():
    from backtester.data.validate import _plainly_sound, bar_problem

    o = np.array([100.0, np.nan, 100.0])
    h, lo = o + 1.0, o - 1.0
    assert not _plainly_sound(o, h, lo, o)  # a NaN: the closer look decides
    assert bar_problem({"open": o, "high": h, "low": lo, "close": o}, missing_ok=True) is None


# a bar: open, high, low, close, each a sound price or a value that breaks a rule
_PRICE = st.one_of(st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0, 99.0, 100.0, 101.0]),
                   st.floats(min_value=98.0, max_value=102.0))
_SOUND_BAR = (100.0, 101.0, 99.0, 100.0)
_ONE_CHANGED = st.tuples(st.integers(0, 3), _PRICE).map(
    lambda change: tuple(change[1] if k == change[0] else v for k, v in enumerate(_SOUND_BAR)))


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(bars=st.lists(st.one_of(st.tuples(_PRICE, _PRICE, _PRICE, _PRICE), _ONE_CHANGED,
                               st.just((np.nan,) * 4),  # no bar
                               st.just(_SOUND_BAR)),
                     min_size=1, max_size=12),
       missing_ok=st.booleans())
def test_the_compiled_pass_finds_a_bar_problem_where_the_numpy_checks_do(bars, missing_ok):
    # the one-pass check of large arrays (prices_sound) is a second writing of the rules of
    # bar_problem: sound exactly where bar_problem finds no problem, on any bars
    from backtester.data.validate import _sound_pass, bar_problem

    o, h, lo, c = (np.array(column) for column in zip(*bars, strict=True))
    expected = bar_problem({"open": o, "high": h, "low": lo, "close": c},
                           missing_ok=missing_ok) is None
    assert bool(_sound_pass(o, h, lo, c, missing_ok)) is expected


def test_the_compiled_pass_agrees_on_every_single_change_and_every_partial_gap():
    # each price of a sound bar changed to each kind of value, and each set of its prices
    # missing (a gap only when all four are), among sound bars, with and without missing_ok
    from backtester.data.validate import _sound_pass, bar_problem

    changed = []
    for field in range(4):
        for value in (np.nan, np.inf, -np.inf, 0.0, -1.0, 98.5, 100.5, 101.5):
            changed.append(tuple(value if k == field else v for k, v in enumerate(_SOUND_BAR)))
    for gaps in range(1, 16):
        changed.append(tuple(np.nan if gaps >> k & 1 else v for k, v in enumerate(_SOUND_BAR)))
    for bar in changed:
        o, h, lo, c = (np.array(column) for column in zip(_SOUND_BAR, bar, _SOUND_BAR,
                                                           strict=True))
        for missing_ok in (False, True):
            expected = bar_problem({"open": o, "high": h, "low": lo, "close": c},
                                   missing_ok=missing_ok) is None
            assert bool(_sound_pass(o, h, lo, c, missing_ok)) is expected, (bar, missing_ok)


def test_large_arrays_are_checked_in_one_compiled_pass_and_still_name_the_broken_value():
    from numba import config

    from backtester.data.validate import COMPILED_FROM, prices_sound

    def compiled(answer):  # (interpreted, a first run's way, the pass is not used)
        return None if config.DISABLE_JIT else answer

    n_bars = COMPILED_FROM // 2 + 5  # two symbols: past the threshold
    o = np.full((n_bars, 2), 100.0)
    h, lo, c = o + 1.0, o - 1.0, o.copy()
    for a in (o, h, lo, c):
        a[:1000, 1] = np.nan  # B starts trading later: no bars before
    assert prices_sound(o, h, lo, c, missing_ok=True) is compiled(True)
    assert prices_sound(o, h, lo, c) is compiled(False)  # (a file holds no missing bar)
    assert prices_sound(o[:10], h[:10], lo[:10], c[:10]) is None  # small: numpy's checks
    Market.from_arrays(["A", "B"], o, h, lo, c)
    lo[n_bars - 1, 0] = 100.5  # above the open and close of the last bar
    assert prices_sound(o, h, lo, c, missing_ok=True) is compiled(False)
    with pytest.raises(DataError, match=rf"low\[{n_bars - 1}, 'A'\]: low > min\(open, close\)"):
        Market.from_arrays(["A", "B"], o, h, lo, c)


def test_a_broken_value_past_the_first_block_of_rows_is_named_with_its_row():
    o = np.full((40_000, 2), 100.0)
    h, lo, c = o + 1.0, o - 1.0, o.copy()
    c[33_000, 1] = 102.0  # above its high, in the third block of 16,384 rows
    with pytest.raises(DataError, match=r"high\[33000, 'B'\]: high < max\(open, close\)"):
        Market.from_arrays(["A", "B"], o, h, lo, c)
