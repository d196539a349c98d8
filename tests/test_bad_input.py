"""Bad input, as a new user would give it: each kind is refused with an error that names the
file, column and row (or the argument, bar and symbol, or the keyword, or the CLI flag), and
legal but suspicious data is run with a warning the run records.

The rows, timestamps and counts asserted are worked out here from the frames written, never
copied from the code's messages.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtester import Market, RunConfig, compare, liquidation_price, run
from backtester.data import DataError, import_csv, load_market


def bars_frame(n: int = 24, start: str = "2024-01-01", freq: str = "1h") -> pd.DataFrame:
    """Valid hourly bars: open = previous close, high/low 1% beyond both."""
    close = 100.0 + np.arange(n, dtype=float)
    open_ = np.r_[100.0, close[:-1]]
    return pd.DataFrame({
        "timestamp": pd.date_range(start, periods=n, freq=freq, tz="UTC"),
        "open": open_, "high": np.maximum(open_, close) * 1.01,
        "low": np.minimum(open_, close) * 0.99, "close": close, "volume": 1.0,
    })


def when(frame: pd.DataFrame, row: int) -> str:
    """A row's timestamp as the messages print it."""
    return frame["timestamp"].iloc[row].strftime("%Y-%m-%d %H:%M:%S UTC")


# ---------------------------------------------------------------- bars of two lengths


def hourly_with_three_half_hours() -> tuple[pd.DataFrame, list[int]]:
    """24 hourly bars plus three at :30 (after 03:00, 10:00 and 20:00), sorted; the rows the
    :30 bars land on."""
    hourly = bars_frame()
    extra = hourly.iloc[[3, 10, 20]].assign(timestamp=lambda f: f["timestamp"]
                                            + pd.Timedelta(minutes=30))
    mixed = pd.concat([hourly, extra]).sort_values("timestamp").reset_index(drop=True)
    # hour 3 is row 3, its :30 bar row 4; hour 10 then sits at row 11 and its :30 at row 12
    return mixed, [4, 12, 23]


def test_a_file_mixing_bar_lengths_is_refused_naming_its_first_odd_rows(tmp_path):
    mixed, rows = hourly_with_three_half_hours()
    assert all(mixed["timestamp"].iloc[r].minute == 30 for r in rows)
    path = tmp_path / "AAA_USDT-1h.parquet"
    mixed.to_parquet(path, index=False)
    with pytest.raises(DataError) as err:
        load_market(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and "column 'timestamp'" in msg and "mixed bar frequencies" in msg
    assert f"at row {rows[0]} (timestamp {when(mixed, rows[0])})" in msg
    # each :30 bar breaks two steps: the half hour into it and the half hour out of it
    assert "6 row(s) affected" in msg
    assert f"first rows {rows[0]} ({when(mixed, rows[0])}), {rows[0] + 1}" in msg


def test_a_csv_mixing_bar_lengths_is_refused_too(tmp_path):
    mixed, rows = hourly_with_three_half_hours()
    csv = tmp_path / "mixed.csv"
    mixed.to_csv(csv, index=False)
    with pytest.raises(DataError, match=f"mixed bar frequencies.* at row {rows[0]} ") as err:
        import_csv(csv, tmp_path / "out", "AAA_USDT")
    assert str(csv) in str(err.value)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- implausible prices in files


@pytest.mark.parametrize("kind, infinite, named", [
    ("ohlc", ["high"], "high"),
    ("ohlc", ["close"], "close"),
    ("ohlc", ["high", "close"], "high"),  # a whole bar at +inf brackets itself: still refused
    ("mark", ["high", "close"], "high"),
    ("mark", ["close"], "close"),
])
def test_an_infinite_price_is_refused_naming_file_column_and_row(tmp_path, kind, infinite,
                                                                 named):
    bars = bars_frame()
    mark = bars.drop(columns="volume")
    (bars if kind == "ohlc" else mark).loc[7, infinite] = np.inf
    bars.to_parquet(tmp_path / "AAA_USDT-1h.parquet", index=False)
    mark.to_parquet(tmp_path / "AAA_USDT_mark-1h.parquet", index=False)
    path = tmp_path / ("AAA_USDT-1h.parquet" if kind == "ohlc" else "AAA_USDT_mark-1h.parquet")
    with pytest.raises(DataError) as err:
        load_market(tmp_path)
    msg = str(err.value)
    # the columns are checked in the order open, high, low, close: the first infinite one
    assert f"{path}: column '{named}': infinite price at row 7 (timestamp {when(bars, 7)})" in msg
    assert "1 row(s) affected" in msg


def test_a_nan_or_infinite_volume_is_refused(tmp_path):
    bars = bars_frame()
    bars.loc[4, "volume"] = np.inf
    bars.to_parquet(tmp_path / "AAA_USDT-1h.parquet", index=False)
    with pytest.raises(DataError, match="column 'volume': infinite volume at row 4"):
        load_market(tmp_path)


# ---------------------------------------------------------------- Market.from_arrays

OPEN = np.array([100.0, 101.0, 102.0, 103.0])
HIGH, LOW, CLOSE = OPEN + 2.0, OPEN - 2.0, OPEN + 1.0


def changed(array: np.ndarray, at: int, value: float) -> np.ndarray:
    out = array.copy()
    out[at] = value
    return out


@pytest.mark.parametrize("arrays, named, what", [
    ((OPEN, changed(HIGH, 2, np.inf), LOW, CLOSE), "high[2, 'BTC']", "infinite price"),
    ((OPEN, HIGH, LOW, changed(CLOSE, 1, np.inf)), "close[1, 'BTC']", "infinite price"),
    ((changed(OPEN, 3, -5.0), HIGH, LOW, CLOSE), "open[3, 'BTC']", "price <= 0"),
    ((OPEN, HIGH, changed(LOW, 0, 0.0), CLOSE), "low[0, 'BTC']", "price <= 0"),
    ((OPEN, HIGH, LOW, changed(CLOSE, 2, np.nan)), "close[2, 'BTC']", "NaN price"),
    ((OPEN, changed(HIGH, 1, 50.0), LOW, CLOSE), "high[1, 'BTC']", "high < low"),
])
def test_from_arrays_refuses_what_load_market_refuses_naming_argument_bar_and_symbol(
        arrays, named, what):
    with pytest.raises(DataError) as err:
        Market.from_arrays(["BTC"], *arrays)
    assert str(err.value).startswith(f"{named}: {what}")


def test_from_arrays_and_load_market_share_one_check(tmp_path):
    """The same broken bar gives the same words from both doors."""
    bars = bars_frame(4)
    bars.loc[2, "high"] = np.inf
    bars.to_parquet(tmp_path / "BTC-1h.parquet", index=False)
    with pytest.raises(DataError) as from_file:
        load_market(tmp_path)
    with pytest.raises(DataError) as from_arrays:
        Market.from_arrays(["BTC"], *(bars[c].to_numpy() for c in ("open", "high", "low",
                                                                   "close")))
    file_words = str(from_file.value).split("': ", 1)[1].split(" at row")[0]
    array_words = str(from_arrays.value).split("]: ", 1)[1].split(";")[0]
    assert file_words == array_words == "infinite price"


def test_from_arrays_a_missing_bar_is_all_four_prices_nan():
    nan = np.nan
    m = Market.from_arrays(["A", "B"], [[1.0, nan], [1.0, 2.0]], [[1.0, nan], [1.0, 2.0]],
                           [[1.0, nan], [1.0, 2.0]], [[1.0, nan], [1.0, 2.0]])
    assert np.isnan(m.close[0, 1]) and m.close[1, 1] == 2.0
    with pytest.raises(DataError, match=r"mark\[0\]\[0, 'B'\] \(the mark open\): a mark price "
                                        "where the bar has none"):
        Market.from_arrays(["A", "B"], [[1.0, nan]], [[1.0, nan]], [[1.0, nan]], [[1.0, nan]],
                           mark=([[1.0, 1.0]],) * 4)


@pytest.mark.parametrize("bar", ["0h", "-1h", "0s", 3600, "often"])
def test_from_arrays_refuses_a_bar_length_that_is_not_positive(bar):
    with pytest.raises(DataError, match=f"^bar={bar!r}"):
        Market.from_arrays(["BTC"], OPEN, HIGH, LOW, CLOSE, bar=bar)


@pytest.mark.parametrize("options, words", [
    ({"start": "the first of May"}, "start='the first of May' is not a time"),
    ({"funding_rate": [np.inf, np.nan, np.nan, np.nan]},
     "funding_rate[0, 'BTC']: infinite funding rate"),
    ({"volume": [1.0, -1.0, 0.0, 0.0]}, "volume[1, 'BTC']: negative volume"),
    ({"volume": [1.0, 1.0]}, "volume= must have shape (4, 1)"),
    ({"mark": (OPEN, HIGH, LOW)}, "mark= must be a tuple (open, high, low, close)"),
])
def test_from_arrays_names_the_keyword_of_a_bad_option(options, words):
    with pytest.raises(DataError) as err:
        Market.from_arrays(["BTC"], OPEN, HIGH, LOW, CLOSE, **options)
    assert str(err.value).startswith(words)


def test_from_arrays_refuses_no_bars_no_symbols_and_a_symbol_twice():
    with pytest.raises(DataError, match="open= holds no bars"):
        Market.from_arrays(["BTC"], [], [], [], [])
    with pytest.raises(DataError, match="symbols= is empty"):
        Market.from_arrays([], np.zeros((2, 0)), np.zeros((2, 0)), np.zeros((2, 0)),
                           np.zeros((2, 0)))
    with pytest.raises(DataError, match="symbols= names BTC more than once"):
        two = np.c_[OPEN, OPEN]
        Market.from_arrays(["BTC", "BTC"], two, two + 2, two - 2, two + 1)
    with pytest.raises(DataError, match="open= must hold numbers"):
        Market.from_arrays(["BTC"], ["a", "b", "c", "d"], HIGH, LOW, CLOSE)


# ---------------------------------------------------------------- load_market's keywords


def test_load_market_names_a_bad_window_or_symbol_list(tmp_path):
    bars = bars_frame()
    path = tmp_path / "AAA_USDT-1h.parquet"
    bars.to_parquet(path, index=False)
    with pytest.raises(DataError, match="start='soon' is not a time"):
        load_market(tmp_path, start="soon")
    with pytest.raises(DataError, match="end=1704067200000 is a number"):
        load_market(tmp_path, end=1704067200000)
    with pytest.raises(DataError, match="end='2024-01-01' is not after start='2024-01-02'"):
        load_market(tmp_path, start="2024-01-02", end="2024-01-01")
    with pytest.raises(DataError) as err:
        load_market(tmp_path, start="2030-01-01")
    assert (f"{path}: no AAA_USDT bars in the window start='2030-01-01'; the file's bars run "
            f"from {when(bars, 0)} to {when(bars, 23)}") in str(err.value)
    with pytest.raises(DataError, match="symbols= names AAA_USDT more than once"):
        load_market(tmp_path, symbols=["AAA_USDT", "AAA_USDT"])
    with pytest.raises(ValueError, match="align='outer'"):
        load_market(tmp_path, align="outer")


# ---------------------------------------------------------------- CSV import


def test_csv_import_names_file_column_and_row_of_a_bad_date(tmp_path):
    bars = bars_frame(10)
    text = bars.assign(**{"Open Time": bars["timestamp"].dt.strftime("%Y-%m-%d %H:%M")}).drop(
        columns="timestamp")
    text.loc[6, "Open Time"] = "2024-13-45 99:00"  # the 7th data row: row 6 counting from 0
    csv = tmp_path / "bars.csv"
    text.to_csv(csv, index=False)
    with pytest.raises(DataError) as err:
        import_csv(csv, tmp_path / "out", "BTC_USDT")
    assert str(err.value).startswith(
        f"{csv}: column 'Open Time': cannot read '2024-13-45 99:00' as a date at row 6; "
        "1 row(s) affected")


def test_csv_import_names_a_cell_that_is_not_a_number(tmp_path):
    bars = bars_frame(10).astype({"close": object})
    bars.loc[3, "close"] = "n/a?"
    csv = tmp_path / "bars.csv"
    bars.to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"column 'close': cannot read 'n/a\?' as a number at "
                                        "row 3"):
        import_csv(csv, tmp_path / "out", "BTC_USDT")


def test_csv_import_refuses_a_header_without_rows_and_a_missing_file(tmp_path):
    csv = tmp_path / "empty.csv"
    csv.write_text("timestamp,open,high,low,close,volume\n")
    with pytest.raises(DataError, match="no data rows"):
        import_csv(csv, tmp_path / "out", "BTC_USDT")
    with pytest.raises(DataError, match="nope.csv: no such file"):
        import_csv(tmp_path / "nope.csv", tmp_path / "out", "BTC_USDT")


# ---------------------------------------------------------------- run options


def tiny_market() -> Market:
    return Market.from_arrays(["BTC_USDT"], OPEN, HIGH, LOW, CLOSE)


def hold_one() -> np.ndarray:
    return np.r_[1.0, np.nan, np.nan, np.nan][:, None]


@pytest.mark.parametrize("option, value, words", [
    ("leverage", "ten", "leverage='ten' is text, not a number"),
    ("leverage", True, "leverage=True is a bool, not a number"),
    ("leverage", float("nan"), "leverage=nan: must be a positive number"),
    ("leverage", float("inf"), "leverage=inf: must be a positive number"),
    ("leverage", 0, "leverage=0: must be a positive number"),
    ("leverage", {"BTC_USDT": "5"}, "leverage['BTC_USDT']='5' is text, not a number"),
    ("initial_balance", "10000", "initial_balance='10000' is text, not a number"),
    ("initial_balance", False, "initial_balance=False is a bool, not a number"),
    ("initial_balance", float("nan"), "initial_balance=nan: must be a positive amount"),
    ("initial_balance", -1.0, "initial_balance=-1.0: must be a positive amount"),
    ("slippage", "x", "slippage='x' is text, not a number"),
    ("slippage", 0.5, "slippage=0.5: must be a fraction of the price in [0, 0.5)"),
    ("spot_fee", float("inf"), "spot_fee=inf: must be a fee rate in [0, 0.1)"),
    ("reduce_to_fit", "no", "reduce_to_fit='no': must be True or False"),
    ("record_positions", 1, "record_positions=1: must be True or False"),
    ("venue", 3, "venue=3: give a built-in venue name"),
    ("margin_mode", "crossed", "margin_mode='crossed': must be one of 'cross', 'isolated'"),
    ("margin_mode", {"BTC_USDT": 1}, "margin_mode['BTC_USDT']=1: must be one of"),
    ("path", None, "path=None: must be one of 'path', 'worst', 'close'"),
    ("venue_overrides", {"taker_fee": "0.1"}, "venue_overrides['taker_fee']='0.1' is text"),
    ("venue_overrides", [("taker_fee", 0.1)], "venue_overrides=[('taker_fee', 0.1)]: must be "
                                              "a mapping"),
    ("collateral", {"BTC": float("nan")}, "collateral['BTC']=nan: must be a positive amount"),
])
def test_a_bad_run_option_is_refused_naming_its_keyword(option, value, words):
    with pytest.raises(ValueError) as err:
        run(tiny_market(), hold_one(), **{option: value})
    assert str(err.value).startswith(words)


def test_run_config_check_is_the_one_place_and_coerces_nothing():
    with pytest.raises(ValueError, match="initial_balance='10000' is text"):
        RunConfig(initial_balance="10000").check()
    config = RunConfig(initial_balance=5_000, leverage={"BTC_USDT": np.int64(3)})
    assert config.check() is config  # ints and numpy numbers are numbers


def test_a_run_on_a_market_without_bars_is_refused_before_anything_runs():
    empty = tiny_market().slice(2, 2)
    with pytest.raises(ValueError, match=r"^the market has no bars \(BTC_USDT, 0 bars\)"):
        run(empty, np.zeros((0, 1)))


def test_targets_with_a_timestamp_twice_are_refused_naming_it():
    m = tiny_market()
    stamps = m.timestamps[[0, 1, 1, 3]]  # bar 1 twice: which of its rows is meant?
    targets = pd.DataFrame({"BTC_USDT": [1.0, 2.0, 3.0, 0.0]}, index=stamps)
    with pytest.raises(ValueError) as err:
        run(m, targets)
    assert f"first {m.timestamps[1]}" in str(err.value) and "1 row(s)" in str(err.value)


def test_targets_must_be_numbers_in_distinct_columns():
    m = tiny_market()
    text = pd.DataFrame({"BTC_USDT": ["1", "", "", ""]}, index=m.timestamps)
    with pytest.raises(ValueError, match="targets column 'BTC_USDT' holds .* values, not numbers"):
        run(m, text)
    twice = pd.DataFrame([[1.0, 1.0]] * 4, index=m.timestamps, columns=["BTC_USDT"] * 2)
    with pytest.raises(ValueError, match="the column 'BTC_USDT' more than once"):
        run(m, twice)
    with pytest.raises(ValueError, match="targets must be numbers"):
        run(m, "long")


def test_compare_checks_every_leverage_before_the_first_run():
    with pytest.raises(ValueError, match="leverage='x' is text"):
        compare(tiny_market(), hold_one(), leverage=[5, "x"])
    with pytest.raises(ValueError, match="margin_modes= is empty"):
        compare(tiny_market(), hold_one(), margin_modes=[])


@pytest.mark.parametrize("options, words", [
    ({"qty": True}, "qty=True is a bool"),
    ({"entry_price": "20000"}, "entry_price='20000' is text"),
    ({"leverage": "10"}, "leverage='10' is text"),
    ({"at": "the day before"}, "at='the day before' is not a time"),
])
def test_liquidation_price_names_the_keyword_of_a_bad_argument(options, words):
    given = {"qty": 0.01, "entry_price": 20_000.0, "leverage": 10, **options}
    with pytest.raises((TypeError, ValueError)) as err:
        liquidation_price(given.pop("qty"), given.pop("entry_price"), **given)
    assert str(err.value).startswith(words)


# ---------------------------------------------------------------- suspicious data: warnings


def suspicious_market() -> Market:
    """24 hourly BTC bars from 2024-01-01 00:00 UTC. Funding at 00:00 is 5.0 (a percentage
    typed as a fraction: 500%), at 08:00 0.0001, at 16:00 -0.004: Binance caps BTCUSDT's
    rate at +-0.3% (0.75 x the 0.4% first-tier MMR), so two of the three are beyond it. The
    mark of bar 2 is twice the last price (100% away), of bar 3 1.4 times (40%: within 50%)."""
    n = 24
    close = np.full(n, 100.0)
    bars = (close, close * 1.01, close * 0.99, close)
    scale = np.ones(n)
    scale[2], scale[3] = 2.0, 1.4
    mark = tuple(b * scale for b in bars)
    rate = np.full(n, np.nan)
    rate[[0, 8, 16]] = [5.0, 0.0001, -0.004]
    return Market.from_arrays(["BTC_USDT"], *bars, mark=mark, funding_rate=rate,
                              start="2024-01-01")


def test_suspicious_data_runs_with_warnings_the_result_keeps(tmp_path):
    from backtester import DataWarning, Result

    with pytest.warns(DataWarning) as caught:
        result = run(suspicious_market(), np.full((24, 1), np.nan), venue="binance_usdm")
    funding = ("BTC_USDT: 2 funding rate(s) outside binance_usdm's bounds for it, first 5 at "
               "2024-01-01 00:00:00 UTC (bounds -0.003 .. 0.003)")
    mark = ("BTC_USDT: the mark price is more than 50% away from the last price at 1 bar(s), "
            "first at 2024-01-01 02:00:00 UTC (mark close 200, close 100)")
    assert len(result.warnings) == 2
    assert result.warnings[0].startswith(funding) and result.warnings[1].startswith(mark)
    # each emitted once, as it was recorded
    assert sorted(str(w.message) for w in caught) == sorted(result.warnings)
    text = " ".join(result.describe().split())  # (its lines wrapped at 100 columns)
    assert "warnings (2):" in text and funding in text and mark in text
    folder = result.save(tmp_path / "run")
    import json

    assert json.loads((folder / "run.json").read_text())["warnings"] == result.warnings
    assert Result.load(folder).warnings == result.warnings


def test_clean_data_runs_without_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        result = run(tiny_market(), hold_one(), venue="flat")
    assert result.warnings == [] and "warnings" not in result.describe()


# ---------------------------------------------------------------- the command line


def cli_error(argv, capsys) -> str:
    from backtester.cli import main

    assert main(argv) == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "compare"])
def test_cli_default_pair_with_one_symbol_asks_for_two_in_flag_terms(command, tmp_path,
                                                                      capsys):
    err = cli_error([command, "--symbols", "BTC_USDT", "--out", str(tmp_path)], capsys)
    assert "the default hedged pair needs two symbols, --symbols LONG,SHORT" in err
    assert "unpack" not in err


def test_cli_default_pair_on_data_of_one_symbol_says_what_to_give(tmp_path, capsys):
    bars_frame().to_parquet(tmp_path / "AAA_USDT-1h.parquet", index=False)
    err = cli_error(["run", "--data", str(tmp_path), "--out", str(tmp_path / "out")], capsys)
    assert "holds 1 symbol(s) (AAA_USDT)" in err and "--symbols LONG,SHORT" in err


@pytest.mark.parametrize("argv, words", [
    (["run", "--balance", "-5"], "error: --balance -5.0: must be a positive amount"),
    (["run", "--leverage", "nan"], "error: --leverage nan: must be a positive number"),
    (["run", "--slippage", "0.9"], "error: --slippage 0.9: must be a fraction"),
    (["run", "--exposure", "-1"], "error: --exposure -1.0: must be a positive fraction"),
    (["run", "--start", "2024-06-01", "--end", "2024-01-01"],
     "error: --end '2024-01-01' is not after --start '2024-06-01'"),
    (["run", "--symbols", ","], "error: --symbols ',' names nothing"),
    (["run", "--symbols", "BTC_USDT,BTC_USDT"], "error: --symbols names BTC_USDT twice"),
    (["compare", "--balance", "0"], "error: --balance 0.0: must be a positive amount"),
])
def test_cli_errors_name_the_flag_not_the_python_keyword(argv, words, tmp_path, capsys):
    err = cli_error([*argv, "--out", str(tmp_path)], capsys)
    assert words in err
    assert "initial_balance" not in err and "start=" not in err


def test_cli_data_import_names_its_flags(tmp_path, capsys):
    csv = tmp_path / "bars.csv"
    bars_frame(3).to_csv(csv, index=False)
    err = cli_error(["data", "import", str(csv), "--symbol", "BTC-USDT", "--out",
                     str(tmp_path)], capsys)
    assert "error: --symbol 'BTC-USDT': use letters, digits and '_' only" in err


def test_in_cli_terms_rewrites_only_keywords_written_with_their_equals_sign():
    from backtester.cli_common import RUN_FLAGS, in_cli_terms

    assert in_cli_terms("collateral['BTC']=-1.0: must be positive", RUN_FLAGS) == \
        "--collateral BTC=-1.0: must be positive"
    assert in_cli_terms("pass timeframe= to choose one", RUN_FLAGS) == \
        "pass --timeframe to choose one"
    untouched = "leverage 200 for BTC_USDT exceeds the cap; /data/leverage=5/x.parquet"
    assert in_cli_terms(untouched, RUN_FLAGS) == untouched


def one_symbol(close: np.ndarray, mark_close=None, rate=None) -> Market:
    bars = (close, close * 1.01, close * 0.99, close)
    mark = None if mark_close is None else (mark_close, np.maximum(close * 1.01, mark_close),
                                            np.minimum(close * 0.99, mark_close), mark_close)
    return Market.from_arrays(["BTC_USDT"], *bars, mark=mark, funding_rate=rate,
                              start="2024-01-01")


def test_where_the_venue_publishes_no_funding_cap_ten_percent_stands_in():
    from backtester.prepare.suspicious import funding_beyond_bounds
    from backtester.venues import load_venue

    rate = np.full(4, np.nan)
    rate[[0, 1, 2]] = [0.05, -0.2, 0.3]  # 5% is within 10%; -20% and 30% are not
    found = funding_beyond_bounds(one_symbol(np.full(4, 100.0), rate=rate),
                                  load_venue("flat"))
    assert found == [
        "BTC_USDT: 2 funding rate(s) outside the plausible bounds (flat publishes no cap for "
        "it), first -0.2 at 2024-01-01 01:00:00 UTC (bounds -0.1 .. 0.1); rates are decimal "
        "fractions per funding interval (0.0001 = 0.01%): check the funding data"]


def test_a_mark_warns_only_beyond_half_the_last_price_away():
    from backtester.prepare.suspicious import mark_far_from_last

    close = np.full(4, 100.0)
    at_the_line = one_symbol(close, mark_close=np.array([100.0, 150.0, 50.0, 100.0]))
    assert mark_far_from_last(at_the_line) == []  # exactly 50% either way is not beyond it
    beyond = one_symbol(close, mark_close=np.array([100.0, 151.0, 49.0, 100.0]))
    (text,) = mark_far_from_last(beyond)
    assert text.startswith("BTC_USDT: the mark price is more than 50% away from the last price "
                           "at 2 bar(s), first at 2024-01-01 01:00:00 UTC (mark close 151")


def test_venue_and_position_rows_of_the_wrong_kind_are_named():
    from backtester import cross_liquidation_prices, load_venue

    with pytest.raises(ValueError, match="venue=3: give a built-in venue name"):
        load_venue(3)
    with pytest.raises(ValueError, match=r"positions= row \('BTCUSDT', 1\): give \(symbol, "
                                         r"qty, entry_price, mark_price\)"):
        cross_liquidation_prices([("BTCUSDT", 1)], wallet_balance=1_000)
    with pytest.raises(DataError, match=r"files\['BTC'\] needs an 'ohlc' path"):
        load_market(files={"BTC": "BTC-1h.parquet"})


def test_cli_report_of_a_damaged_save_names_the_folder(tmp_path, capsys):
    (tmp_path / "run.json").write_text("{not json")
    err = cli_error(["report", str(tmp_path)], capsys)
    assert f"error: {tmp_path}: not a readable saved run" in err


def test_funding_rates_within_every_bound_warn_nothing_and_a_skipped_column_is_not_read():
    from backtester.prepare.suspicious import _all_within, funding_beyond_bounds
    from backtester.venues import load_venue

    flat = load_venue("flat")  # no published cap: +-10% stands in
    close = np.full((4, 2), 100.0)
    rate = np.full((4, 2), np.nan)
    rate[0] = [0.1, -0.1]  # exactly at the bounds: within them
    market = Market.from_arrays(["BTC_USDT", "ETH_USDT"], close, close * 1.01, close * 0.99,
                                close, funding_rate=rate)
    assert _all_within(market.funding_rate, flat, market.symbols)  # the quick answer
    assert funding_beyond_bounds(market, flat) == []
    rate[2, 1] = 0.5  # ETH: 50%, beyond 10%, but ETH is a spot holding here (no funding)
    market = Market.from_arrays(["BTC_USDT", "ETH_USDT"], close, close * 1.01, close * 0.99,
                                close, funding_rate=rate)
    assert not _all_within(market.funding_rate, flat, ["BTC_USDT"])  # the closer look:
    assert funding_beyond_bounds(market, flat, skip=("ETH_USDT",)) == []  # ETH skipped
    assert funding_beyond_bounds(market, flat)[0].startswith(
        "ETH_USDT: 1 funding rate(s) outside the plausible bounds")
    nothing = np.full((4, 2), np.nan)
    assert _all_within(nothing, flat, market.symbols)
