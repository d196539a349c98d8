"""One path: a sweep runs every strategy form and option that run() runs, and each of its
rows is run(...).summary() of that run, bit for bit.

The second implementation is run() itself: the figures of ``Result.summary()`` come from
pandas over the run's records, those of a sweep row from the compiled batch (or, for a
strategy callback, from the compiled summary of the driver's output).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtester import load_market, run
from backtester.cli import main
from backtester.engine import batch
from backtester.sweep import Grid, sweep
from backtester.sweep.grid import strategy_name
from strategies import hedged_pair
from strategies.funding_carry import STRATEGY as FUNDING_CARRY
from strategies.funding_carry import carry_market
from strategies.margin_aware import STRATEGY as MARGIN_AWARE

pytestmark = pytest.mark.filterwarnings("ignore:binance_usdm has no")

START, END = "2024-01-01", "2024-02-01"


@pytest.fixture(scope="module")
def market():
    return load_market(start=START, end=END)


@pytest.fixture(scope="module")
def carry():
    return carry_market(start=START, end=END)


def hedge_legs(market, size=0.5):
    """Binance hedge mode: a long and a short leg on BTC (units) and a one-way ETH short."""
    targets = pd.DataFrame(np.nan, index=market.timestamps,
                           columns=["BTC_USDT.long", "BTC_USDT.short", "ETH_USDT"])
    targets.iloc[0] = [1.0, -size, -10.0]
    targets.iloc[300] = [0.5, -2 * size, -5.0]
    targets.iloc[600] = [0.0, 0.0, 0.0]
    return targets


def units_pair(market, size=0.05):
    """Long ``size`` BTC and short ten times as many ETH, in units, flat after 400 bars."""
    targets = np.full((market.n_bars, market.n_symbols), np.nan)
    targets[0] = [size, -10 * size]
    targets[400] = [0.0, 0.0]
    return targets


def expected_rows(market, strategy, grid) -> list[dict]:
    """``run(...).summary()`` of every run of the grid, in grid order: the strategy called as
    a sweep calls it, and the run options the grid gives passed to run() (which applies
    them over the options of the strategy's plan, as a sweep does)."""
    rows = []
    for r in Grid(grid, strategy=strategy_name(strategy)):
        made = (strategy.plan(market, **r.params) if hasattr(strategy, "plan")
                else strategy(market, **r.params))
        options = {k: r.options[k] for k in r.given if k != "window"}
        rows.append(run(market, made, record_positions=False, **options).summary())
    return rows


def assert_rows_are_run_summaries(table: pd.DataFrame, expected: list[dict]) -> None:
    assert table["error"].isna().all(), table["error"].dropna().tolist()
    assert len(table) == len(expected)
    for (_, row), want in zip(table.iterrows(), expected, strict=True):
        for name in batch.METRICS:
            got, value = float(row[name]), float(want[name])
            assert got == value or (math.isnan(got) and math.isnan(value)), (name, got, value)


HEDGE_BTC = {"BTC_USDT": "hedge", "ETH_USDT": "one_way"}
CASES = {
    # a strategy callback, both margin modes, with and without its guards
    "callback": (MARGIN_AWARE, "market", {"protect": [True, False], "leverage": [10, 25],
                                          "margin_mode": ["cross", "isolated"]}),
    # a spot leg beside a margined perpetual, a callback, the plan's own options
    "spot legs": (FUNDING_CARRY, "carry", {"leverage": [2, 10],
                                          "margin_mode": ["cross", "isolated"]}),
    # Binance hedge mode: a symbol's long and short legs as columns of their own
    "hedge mode": (hedge_legs, "market", {"size": [0.5, 1.5], "position_mode": HEDGE_BTC,
                                          "margin_mode": ["cross", "isolated"], "leverage": 50,
                                          "target_kind": "units"}),
    # OKX multi-currency margin: coins backing the cross account
    "collateral": (units_pair, "market", {"size": [0.05, 0.5], "venue": "okx_swap",
                                          "collateral": [{"BTC": 0.01}, {"BTC": 0.2}],
                                          "leverage": 20, "target_kind": "units",
                                          "initial_balance": 5.0,
                                          "stand_in": [{"ETH_USDT": "BTC_USDT"}]}),
    # a margin mode and a leverage per symbol
    "per symbol": (hedged_pair, "market", {
        "exposure": [1.0, 3.0], "target_kind": "equity",
        "margin_mode": [{"BTC_USDT": "cross", "ETH_USDT": "isolated"}, "isolated"],
        "leverage": [{"BTC_USDT": 5, "ETH_USDT": 40}, 20]}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_sweep_rows_are_run_summaries_bit_for_bit(case, request):
    strategy, market_name, grid = CASES[case]
    m = request.getfixturevalue(market_name)
    table = sweep(m, strategy, grid)
    assert_rows_are_run_summaries(table, expected_rows(m, strategy, grid))


def test_the_cases_reach_the_rules_they_are_about(market, carry):
    # (else the equalities above would hold on runs that never exercise them)
    rows = sweep(market, MARGIN_AWARE, CASES["callback"][2])
    assert rows["liquidations"].max() > 0 and rows["fills"].min() > 0
    legs = run(market, hedge_legs(market), position_mode=HEDGE_BTC, leverage=50,
               target_kind="units")
    assert {"BTC_USDT.long", "BTC_USDT.short"} <= set(legs.fills["symbol"])
    held = run(market, units_pair(market, 0.5), venue="okx_swap", collateral={"BTC": 0.2},
               stand_in={"ETH_USDT": "BTC_USDT"},
               leverage=20, target_kind="units", initial_balance=5.0)
    assert (held.events["kind"] == "loan_interest").any()  # the collateral backs a loan
    spot = sweep(carry, FUNDING_CARRY, CASES["spot legs"][2])
    assert (spot["funding_paid"] < 0).all()  # the short perpetual is paid funding


def test_the_table_shows_the_options_each_run_ran_with(carry):
    # funding_carry's plan sets target_kind="units" and its leverage; the grid sets neither
    table = sweep(carry, FUNDING_CARRY, {"allocation": [0.5, 0.9]})
    assert table["target_kind"].eq("units").all()
    assert table["leverage"].eq(2.0).all()  # the plan's default, not run()'s 10


def test_a_process_pool_runs_callbacks_and_spot_legs_alike(carry):
    grid = CASES["spot legs"][2]
    pooled = sweep(carry, FUNDING_CARRY, grid, backend="processes", workers=2, chunk_size=2)
    pd.testing.assert_frame_equal(pooled, sweep(carry, FUNDING_CARRY, grid))


def test_cli_sweeps_the_funding_carry_and_the_margin_aware_book(tmp_path, carry, market):
    out = tmp_path / "carry"
    assert main(["sweep", "--strategy", "funding_carry", "-p", "leverage=2,5,10", "-p",
                 "margin_mode=cross,isolated", "--start", START, "--end", END, "--out",
                 str(out), "--no-progress"]) == 0
    rows = pd.read_parquet(out).sort_values(["leverage", "margin_mode"]).reset_index(drop=True)
    grid = {"leverage": [2, 5, 10], "margin_mode": ["cross", "isolated"]}
    expected = pd.DataFrame(expected_rows(carry, FUNDING_CARRY, grid))
    expected[["leverage", "margin_mode"]] = [(r.options["leverage"], r.options["margin_mode"])
                                             for r in Grid(grid, strategy="x:y")]
    expected = expected.sort_values(["leverage", "margin_mode"]).reset_index(drop=True)
    for name in batch.METRICS:
        assert rows[name].astype(float).tolist() == expected[name].astype(float).tolist(), name

    out = tmp_path / "margin_aware"
    assert main(["sweep", "--strategy", "margin_aware", "-p", "protect=true,false", "-p",
                 "margin_mode=isolated", "--start", START, "--end", END, "--out", str(out),
                 "--no-progress"]) == 0
    rows = pd.read_parquet(out)
    plain = run(market, MARGIN_AWARE.plan(market, protect=False), margin_mode="isolated",
                record_positions=False).summary()
    assert rows.loc[~rows["protect"], "final_equity"].item() == plain["final_equity"]
