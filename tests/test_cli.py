"""The command line: `backtester run` on the embedded data, errors, `venues`, `data import`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from backtester.cli import main


def test_run_writes_both_modes_and_a_plot(tmp_path, capsys):
    code = main(["run", "--start", "2024-01-01", "--end", "2024-04-01", "--leverage", "20",
                 "--exposure", "2", "--out", str(tmp_path)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "== cross margin" in printed and "== isolated margin" in printed
    for mode in ("cross", "isolated"):
        folder = tmp_path / mode
        account = pd.read_parquet(folder / "account.parquet")
        # 2024-01-01 .. 2024-04-01 exclusive, hourly: 91 days
        assert len(account) == 91 * 24
        meta = json.loads((folder / "run.json").read_text())
        assert meta["config"]["margin_mode"] == {"BTC_USDT": mode, "ETH_USDT": mode}
        assert meta["config"]["leverage"]["BTC_USDT"] == 20.0
        for name in ("fills", "liquidations", "funding", "rejections", "positions"):
            assert (folder / f"{name}.parquet").exists()
        fills = pd.read_parquet(folder / "fills.parquet")
        assert meta["summary"]["fills"] == int((fills["reason"] != "liquidation").sum())
    assert (tmp_path / "equity.png").stat().st_size > 10_000


def test_run_refuses_leverage_above_the_venue_cap_with_a_clear_message(tmp_path, capsys):
    code = main(["run", "--leverage", "200", "--out", str(tmp_path), "--no-plot"])
    assert code == 2
    err = capsys.readouterr().err
    assert "leverage 200 for BTC_USDT exceeds binance_usdm's cap of 125x" in err


def test_run_refuses_an_unknown_symbol(tmp_path, capsys):
    code = main(["run", "--symbols", "BTC_USDT,DOGE_USDT", "--out", str(tmp_path)])
    assert code == 2
    assert "DOGE_USDT" in capsys.readouterr().err


def test_venues_lists_binance_brackets(capsys):
    assert main(["venues", "binance_usdm"]) == 0
    out = capsys.readouterr().out
    assert "BTCUSDT" in out and "125x" in out
    # Binance BTCUSDT since 2024-10-02: 12 brackets, 125x, taker 0.05%, liquidation fee
    # 1.25%, funding every 8 h capped at 0.3% (VENUES.md, Binance)
    row = next(line for line in out.splitlines() if line.startswith("  BTCUSDT")
               and ".. now" in line)
    assert row.split()[4:] == ["12", "125x", "0.05%", "1.25%", "8h", "(±0.3%)"]


def test_venues_fit_100_columns_and_a_closed_pipe_ends_them_quietly(capsys):
    import subprocess
    import sys

    from backtester import list_venues

    for words in (["venues"], *(["venues", name] for name in list_venues())):
        assert main(words) == 0
        assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 100
    done = subprocess.run(f"{sys.executable} -m backtester venues binance_usdm | head -n 1",
                          shell=True, capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith("binance_usdm (model binance") and done.stderr == ""


def test_data_import_converts_a_csv(tmp_path, capsys):
    csv = tmp_path / "bars.csv"
    csv.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2024-01-01T00:00:00Z,100,101,99,100.5,10\n"
        "2024-01-01T01:00:00Z,100.5,102,100,101,12\n"
        "2024-01-01T02:00:00Z,101,101.5,98,99,9\n"
    )
    assert main(["data", "import", str(csv), "--symbol", "TEST_USDT", "--out",
                 str(tmp_path / "out")]) == 0
    written = pd.read_parquet(tmp_path / "out" / "TEST_USDT-1h.parquet")
    assert written["close"].tolist() == [100.5, 101.0, 99.0]


@pytest.mark.parametrize("argv", [["--version"], ["run", "--help"]])
def test_help_and_version_exit_cleanly(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


def test_an_all_isolated_run_has_no_margin_ratio_to_show(tmp_path, capsys):
    # the margin ratio is the cross account's: a run without cross positions has none
    assert main(["run", "--start", "2024-01-01", "--end", "2024-02-01", "--margin-mode",
                 "isolated", "--out", str(tmp_path), "--no-plot"]) == 0
    assert "worst margin ratio    n/a (no cross position)" in capsys.readouterr().out


@pytest.mark.parametrize("venue", ["bybit_linear", "okx_swap"])
def test_run_on_every_futures_venue_saves_both_modes(venue, tmp_path, capsys):
    # ETHUSDT has no table on either venue: priced with BTCUSDT's by choice, and recorded
    code = main(["run", "--venue", venue, "--start", "2024-01-01", "--end", "2024-02-01",
                 "--leverage", "5", "--out", str(tmp_path), "--no-plot",
                 "--stand-in", "ETH_USDT=BTC_USDT"])
    assert code == 0
    for mode in ("cross", "isolated"):
        meta = json.loads((tmp_path / mode / "run.json").read_text())
        assert meta["config"]["venue"] == venue
        assert meta["config"]["stand_in"] == {"ETH_USDT": "BTC_USDT"}
        assert meta["venue_specs"]["BTC_USDT"]  # the versions of the venue's table it used
        assert all("BTCUSDT's table standing in" in label
                   for label in meta["venue_specs"]["ETH_USDT"])


def test_run_on_spot_margin_runs_cross_only_and_records_borrowing_fees(tmp_path, capsys):
    code = main(["run", "--venue", "kraken_spot", "--start", "2024-01-01", "--end",
                 "2024-02-01", "--leverage", "3", "--out", str(tmp_path), "--no-plot"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "has cross margin only (spot margin): running cross" in printed
    assert "borrowing fees" in printed and "lowest margin level" in printed
    events = pd.read_parquet(tmp_path / "events.parquet")
    assert {"opening_fee", "rollover_fee"} <= set(events["kind"])
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["summary"]["borrowing_fees"] == pytest.approx(events["amount"].sum())
    assert meta["summary"]["funding_paid"] == 0.0  # borrowings pay no funding


def test_run_with_collateral_on_okx(tmp_path, capsys):
    code = main(["run", "--venue", "okx_swap", "--collateral", "BTC=0.5", "--margin-mode",
                 "cross", "--stand-in", "*=BTC_USDT", "--start", "2024-01-01", "--end",
                 "2024-02-01", "--out",
                 str(tmp_path), "--no-plot"])
    assert code == 0
    positions = pd.read_parquet(tmp_path / "positions.parquet")
    assert positions["BTC"].iloc[0] == 0.5
    assert main(["run", "--collateral", "BTC", "--out", str(tmp_path / "other")]) == 2
    assert "--collateral takes COIN=AMOUNT" in capsys.readouterr().err


def test_python_dash_m_backtester_is_the_command_line():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "backtester", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0
    assert done.stdout.startswith("backtester ")


def test_a_result_shows_its_headline_in_a_notebook():
    import numpy as np

    from backtester import Market, run

    # flat venue: 1 unit at 100 pays the 0.05% taker fee, 0.05

    a = np.full((3, 1), 100.0)
    m = Market.from_arrays(["BTC_USDT"], a, a, a, a, start="2024-01-01")
    targets = np.full((3, 1), np.nan)
    targets[0] = 1.0
    text = repr(run(m, targets, venue="flat", leverage=10))
    assert text == ("<Result flat, BTC_USDT cross 10x, 2024-01-01 -> 2024-01-01 (3 bars): "
                    "final equity 9,999.95 (-0.00%), 0 liquidation(s)>")


@pytest.mark.parametrize("when", ["01/05/2021", "someday"])
def test_an_ambiguous_start_date_is_refused_not_read_as_january(when, capsys):
    # pandas reads 01/05/2021 as 5 January; a European user meant 1 May. Refused by the
    # argument parser, as any malformed flag (exit status 2)
    with pytest.raises(SystemExit) as info:
        main(["run", "--start", when, "--no-plot"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --start: '{when}': give the date as YYYY-MM-DD" in err


def test_a_run_on_the_embedded_data_says_they_are_synthetic(tmp_path, capsys):
    code = main(["run", "--start", "2024-01-01", "--end", "2024-01-03", "--no-plot", "--out",
                 str(tmp_path / "r")])
    assert code == 0
    out = capsys.readouterr().out
    assert "embedded synthetic dataset" in out and "--data DIR" in out


def test_a_mistyped_flag_or_strategy_gets_a_did_you_mean(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--levrage", "5"])
    assert "--levrage: did you mean --leverage?" in capsys.readouterr().err
    # a flag of other commands: named as theirs, not "did you mean" itself
    with pytest.raises(SystemExit):
        main(["venues", "--balance", "5"])
    err = capsys.readouterr().err
    assert "--balance is an option of backtester advise, compare, run, not of " \
           "backtester venues" in err and "did you mean --balance" not in err
    assert main(["run", "--strategy", "trnd", "--no-plot"]) == 2
    assert "unknown strategy 'trnd' (did you mean 'trend'?)" in capsys.readouterr().err


def test_a_note_is_printed_once_and_not_beside_the_summary_that_lists_it(capsys):
    # backtester run: a note once for both modes; a run's own (its Result's warnings, which
    # describe() lists under its summary) not printed again above it
    import warnings
    from types import SimpleNamespace

    from backtester import DataWarning
    from backtester.cli_common import quietly

    def run(notes, kept):
        for text in notes:
            warnings.warn(text, DataWarning, stacklevel=2)
        return SimpleNamespace(warnings=kept)

    said: set[str] = set()
    quietly(run, ["no ADAUSDT table before 2022", "ETH_USDT: its data begin later"],
            ["ETH_USDT: its data begin later"], said=said, listed=lambda r: r.warnings)
    assert capsys.readouterr().out == "note: no ADAUSDT table before 2022\n"
    quietly(run, ["no ADAUSDT table before 2022", "no SOLUSDT table before 2022"], [],
            said=said, listed=lambda r: r.warnings)
    assert capsys.readouterr().out == "note: no SOLUSDT table before 2022\n"
    quietly(run, ["no ADAUSDT table before 2022"], [])  # (elsewhere: every note, as before)
    assert capsys.readouterr().out == "note: no ADAUSDT table before 2022\n"
