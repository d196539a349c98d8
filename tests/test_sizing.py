"""Sizing (``sizing="exposure"`` / ``"margin"``), the run's leverage given to strategies, and
what leverage changes under each margin mode, on hand-made markets worked out by hand.

Every market here is hourly from 2024-01-01, with mark = last price; the ``flat`` venue has
one maintenance margin rate (0.5%) and, unless a test says otherwise, no fees.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import flat, market, random_market, script, units
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import njit

from backtester import Result, RunConfig, compare, load_market, run, sweep
from backtester.cli import main
from backtester.engine.enums import N_ORDER_FIELDS, Order
from backtester.report import WHAT_LEVERAGE_CHANGES
from backtester.report.verdict import run_kind, run_label
from backtester.strategy import (
    Callback,
    Plan,
    leverage,
    load_strategy,
    order_target,
    set_leverage,
    takes_leverage,
    with_run_leverage,
)
from backtester.sweep import Grid
from strategies import hedged_pair
from strategies.funding_carry import STRATEGY as FUNDING_CARRY
from strategies.funding_carry import carry_market

NAN = np.nan
README = Path(__file__).resolve().parents[1] / "README.md"


def flat_bars(n_bars, prices):
    """``n_bars`` bars at constant prices, one per symbol."""
    return [[(p,) * 4 for p in prices] for _ in range(n_bars)]


# --- sizing="margin": the share of equity committed as initial margin ---------------------------


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_margin_sizing_holds_share_x_equity_x_leverage_over_price(mode):
    m = market(["A", "B"], flat_bars(3, [100, 50]))
    targets = units(3, [0.2, 0.1])  # fractions of the 10,000 equity
    lev = {"A": 5, "B": 20}
    r = run(m, targets, target_kind="equity", sizing="margin", margin_mode=mode, leverage=lev,
            **flat())
    # A: 0.2 x 10,000 x 5 / 100 = 100 units; B: 0.1 x 10,000 x 20 / 50 = 400 units
    assert r.positions.iloc[1].tolist() == [100.0, 400.0]
    # the margin they take is the share of equity asked: 100 x 100 / 5 = 2,000 (0.2 x 10,000)
    # and 400 x 50 / 20 = 1,000 (0.1 x 10,000)
    if mode == "isolated":
        assert r.account["isolated_margin"].iloc[1] == pytest.approx(3_000.0, abs=1e-9)
    exposure = run(m, targets, target_kind="equity", margin_mode=mode, leverage=lev, **flat())
    # sized as exposure: 0.2 x 10,000 / 100 = 20 and 0.1 x 10,000 / 50 = 20, at any leverage
    assert exposure.positions.iloc[1].tolist() == [20.0, 20.0]


def test_margin_sizing_of_a_spot_leg_is_its_cost_share():
    # a spot holding has leverage 1: 0.3 x 10,000 x 1 / 50 = 60 coins, paid in full
    m = market(["P", "S"], flat_bars(3, [100, 50]))
    r = run(m, units(3, [NAN, 0.3]), target_kind="equity", sizing="margin", leverage=10,
            instruments={"S": "spot"}, spot_fee=0.0, **flat())
    assert r.positions["S"].iloc[1] == 60.0


def test_sizing_is_checked_with_its_target_kind():
    m = market(["A"], flat_bars(2, [100]))
    with pytest.raises(ValueError, match=r"sizing='margin' sizes fractions of equity .*"
                                         r"target_kind='units'"):
        run(m, units(2, [1.0]), sizing="margin", **flat())
    with pytest.raises(ValueError, match=r"sizing='margins': must be one of 'exposure', "
                                         r"'margin'"):
        run(m, units(2, [0.1]), target_kind="equity", sizing="margins", **flat())
    RunConfig(target_kind="notional", sizing="exposure").check()  # exposure: any kind


def order_script(n_bars, n_symbols, rows):
    """Series for ``helpers.script``: {(field, bar, column): value}."""
    series = np.full((N_ORDER_FIELDS, n_bars, n_symbols), NAN)
    for (field, bar, column), value in rows.items():
        series[field, bar, column] = value
    return series


def test_callback_orders_are_sized_at_the_leverage_the_symbol_has_when_they_open():
    m = market(["A", "B"], flat_bars(6, [100, 50]))
    series = order_script(6, 2, {
        # bar 0: A to 4x and 0.25 of equity as margin; B to 200x, refused (flat caps at
        # 125x), and 0.1 of equity as margin at the run's 10x
        (Order.LEVERAGE, 0, 0): 4.0, (Order.TARGET, 0, 0): 0.25,
        (Order.LEVERAGE, 0, 1): 200.0, (Order.TARGET, 0, 1): 0.1,
        # bar 2: add 0.05 of equity as margin to A, at the 4x it has since bar 1
        (Order.DELTA, 2, 0): 0.05,
        # bar 3: A down to 2x and 0.25 as margin: a smaller position, filled after the change
        (Order.LEVERAGE, 3, 0): 2.0, (Order.TARGET, 3, 0): 0.25,
    })
    r = run(m, Callback(script, series=series), target_kind="equity", sizing="margin",
            leverage=10, **flat())
    q = r.positions
    assert q["A"].iloc[1] == 100.0  # 0.25 x 10,000 x 4 / 100
    assert q["B"].iloc[1] == 200.0  # 0.1 x 10,000 x 10 / 50
    assert q["A"].iloc[3] == 120.0  # + 0.05 x 10,000 x 4 / 100 = + 20
    # bar 4: 0.25 x 10,000 x 2 / 100 = 50 (the 2x costs 120 x 100 x (1/2 - 1/4) = 3,000 more
    # margin, with 10,000 - 3,000 - 1,000 = 6,000 available)
    assert q["A"].iloc[4] == 50.0
    assert r.rejections["reason"].tolist() == ["leverage_above_tier_max"]


def test_a_close_with_a_leverage_and_mode_change_goes_first_when_sizing_by_margin():
    m = market(["A"], flat_bars(5, [100]))
    series = order_script(5, 1, {
        (Order.TARGET, 0, 0): 0.1,  # 0.1 x 10,000 x 10 / 100 = 100 units, cross
        # bar 2: close, then 5x and isolated (the switch needs the symbol flat)
        (Order.TARGET, 2, 0): 0.0, (Order.LEVERAGE, 2, 0): 5.0, (Order.MODE, 2, 0): 1.0,
        (Order.TARGET, 3, 0): 0.1,  # 0.1 x 10,000 x 5 / 100 = 50 units, isolated
    })
    r = run(m, Callback(script, series=series), target_kind="equity", sizing="margin",
            leverage=10, **flat())
    assert r.positions["A"].tolist() == [0.0, 100.0, 100.0, 0.0, 50.0]
    assert len(r.rejections) == 0
    # isolated, it holds the 0.1 x 10,000 = 1,000 of margin it was sized for
    assert r.account["isolated_margin"].tolist() == [0.0, 0.0, 0.0, 0.0, 1_000.0]


@njit
def hold_leverage_units(t, ctx, orders, params):
    """At bar 0 set A's leverage to 7; at bar 1 hold as many units of A as its leverage."""
    if t == 0:
        set_leverage(orders, 0, 7.0)
        return True
    if t == 1:
        order_target(orders, 0, leverage(ctx, 0))
        return True
    return False


def test_a_callback_reads_the_symbols_leverage_as_it_is_now():
    m = market(["A"], flat_bars(4, [100]))
    r = run(m, Callback(hold_leverage_units), target_kind="units", leverage=3, **flat())
    assert r.positions["A"].iloc[2] == 7.0


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000),
       levs=st.lists(st.floats(1.0, 25.0), min_size=3, max_size=3),
       mode=st.sampled_from(["cross", "isolated"]),
       callback=st.booleans())
def test_margin_sizing_at_leverage_l_is_exposure_sizing_of_targets_x_l(seed, levs, mode,
                                                                       callback):
    m, targets = random_market(seed, n_bars=300)
    lev = dict(zip(m.symbols, levs, strict=True))
    scaled = targets * np.array(levs)  # each column's fraction x its leverage

    def orders(t):
        if not callback:
            return t
        return Callback(script, series=order_script(300, 3, {
            (Order.TARGET, b, i): t[b, i] for b, i in zip(*np.nonzero(~np.isnan(t)),
                                                          strict=True)}))

    options = dict(target_kind="equity", margin_mode=mode, leverage=lev,
                   **flat(taker=0.0005, liq_fee=0.005))
    by_margin = run(m, orders(targets), sizing="margin", **options)
    by_exposure = run(m, orders(scaled), sizing="exposure", **options)
    np.testing.assert_array_equal(by_margin.account.to_numpy(), by_exposure.account.to_numpy())
    for name in ("fills", "liquidations", "rejections"):
        pd.testing.assert_frame_equal(getattr(by_margin, name), getattr(by_exposure, name))


def test_sizing_is_in_describe_run_json_and_a_loaded_result(tmp_path):
    m = market(["A"], flat_bars(3, [100]))
    r = run(m, units(3, [0.1]), target_kind="equity", sizing="margin", **flat())
    assert "sizing margin (equity fractions as initial margin, x leverage)" in r.describe()
    r.save(tmp_path / "run")
    assert json.loads((tmp_path / "run" / "run.json").read_text())["config"]["sizing"] \
        == "margin"
    assert Result.load(tmp_path / "run").config.sizing == "margin"
    plain = run(m, units(3, [0.1]), target_kind="equity", **flat())
    assert "sizing exposure (equity fractions as notional)" in plain.describe()
    assert "sizing" not in run(m, units(3, [1.0]), **flat()).describe()  # units: no fraction


# --- what leverage changes ---------------------------------------------------------------------

# A at 100; bar 2 dips to 90 and closes there, bar 3 closes at 110
SWING = [[(100,) * 4], [(100,) * 4], [(100, 100, 90, 90)], [(90, 110, 90, 110)]]


def test_cross_at_fixed_exposure_ends_alike_at_2x_and_10x():
    m = market(["A"], SWING)
    runs = [run(m, units(4, [0.5]), target_kind="equity", leverage=lev, **flat())
            for lev in (2, 10)]
    for r in runs:
        # 0.5 x 10,000 / 100 = 50 units from 100: 10,000, 10,000, 10,000 - 500, 10,000 + 500
        assert r.equity.tolist() == [10_000.0, 10_000.0, 9_500.0, 10_500.0]
        assert len(r.rejections) == 0
    comparison = compare(m, units(4, [0.5]), margin_modes=["cross"], leverage=[2, 10],
                         target_kind="equity", **flat())
    assert ("Cross 2x and cross 10x ended alike: they held the same exposure, and under cross "
            "leverage sets only the initial margin an order needs (none was refused here)"
            in comparison.verdict)


def test_cross_liquidation_point_does_not_depend_on_leverage_but_accepted_orders_do():
    m = market(["A"], SWING)
    # 3 x equity = 300 units: Binance's cross formula (VENUES.md §2.5), one position:
    # (WB - Q x EP) / (Q x MMR - Q) = (10,000 - 30,000) / (1.5 - 300) = 67.0017 at 5x and 10x
    lp = (10_000 - 300 * 100) / (300 * 0.005 - 300)
    for lev in (5, 10):
        r = run(m, units(4, [3.0]), target_kind="equity", leverage=lev, **flat())
        assert r.positions["A"].iloc[1] == 300.0
        assert r.liquidation_prices["A"].iloc[1] == pytest.approx(lp, abs=1e-9)
        assert r.equity.tolist() == [10_000.0, 10_000.0, 7_000.0, 13_000.0]
    # at 2x the same order needs 30,000 / 2 = 15,000 of margin, more than the 10,000 there is
    refused = run(m, units(4, [3.0]), target_kind="equity", leverage=2, **flat())
    assert refused.rejections["reason"].tolist() == ["insufficient_margin"]
    assert refused.positions["A"].iloc[1] == 0.0


def test_cross_leverage_sets_the_balance_left_for_the_next_order():
    m = market(["A", "B"], flat_bars(3, [100, 50]))
    targets = units(3, [3.0, 2.5])  # 30,000 of A, then 25,000 of B
    # 5x: A takes 6,000, leaving 4,000; B needs 5,000: refused
    at5 = run(m, targets, target_kind="equity", leverage=5, **flat())
    assert at5.positions.iloc[1].tolist() == [300.0, 0.0]
    assert at5.rejections["reason"].tolist() == ["insufficient_margin"]
    # 10x: A takes 3,000, leaving 7,000; B needs 2,500: filled (500 units)
    at10 = run(m, targets, target_kind="equity", leverage=10, **flat())
    assert at10.positions.iloc[1].tolist() == [300.0, 500.0]


def test_isolated_leverage_sets_the_liquidation_price_by_binances_formula():
    # a long of 1 A at 20,000; bar 3 dips to 19,000
    m = market(["A"], [[(20_000,) * 4]] * 3 + [[(20_000, 20_000, 19_000, 19_500)]])
    for lev, expected in ((2, 10_050.25), (10, 18_090.45), (50, 19_698.49)):
        r = run(m, units(4, [1.0]), margin_mode="isolated", leverage=lev, **flat())
        # VENUES.md §2.5, isolated long: EP (1 - 1/L) / (1 - MMR); 50x is its worked example
        lp = 20_000 * (1 - 1 / lev) / (1 - 0.005)
        assert round(lp, 2) == expected
        assert r.liquidation_prices["A"].iloc[1] == pytest.approx(lp, abs=1e-6)
        liq = r.liquidations
        if lev == 50:  # only the 50x long's price is above the dip
            assert liq["bar"].tolist() == [3]
            assert liq["price"].iloc[0] == pytest.approx(lp, abs=1e-6)
        else:
            assert len(liq) == 0


def test_margin_sizing_scales_the_exposure_with_the_leverage_in_both_modes():
    m = market(["A"], SWING)
    for mode in ("cross", "isolated"):
        held = [run(m, units(4, [0.1]), target_kind="equity", sizing="margin",
                    margin_mode=mode, leverage=lev, **flat()).positions["A"].iloc[1]
                for lev in (2, 10)]
        assert held == [20.0, 100.0]  # 0.1 x 10,000 x L / 100


def test_the_report_and_the_readme_say_the_same_about_leverage(tmp_path):
    readme = README.read_text()
    section = readme.split("## What leverage changes", 1)[1].split("\n## ", 1)[0]
    prose = re.sub(r"\s+", " ", section.replace("`", ""))
    for paragraph in WHAT_LEVERAGE_CHANGES.split("\n\n"):
        assert paragraph in prose
    m = market(["A"], SWING)
    comparison = compare(m, units(4, [0.5]), target_kind="equity", **flat())
    text = comparison.to_markdown(tmp_path / "report.md").read_text()
    assert "## What leverage changes" in text
    for paragraph in WHAT_LEVERAGE_CHANGES.split("\n\n"):
        assert paragraph in text


# --- the verdict with a spot leg ---------------------------------------------------------------


def test_verdict_with_a_spot_leg_compares_the_perpetuals_modes_and_credits_no_spot_profit():
    # spot long 1 S and perpetual short 1 P at 100, 10x; bar 2 both rise to 115
    m = market(["P", "S"], [[(100,) * 4, (100,) * 4]] * 2
               + [[(100, 115, 100, 115), (100, 115, 100, 115)], [(115,) * 4, (115,) * 4]])
    comparison = compare(m, units(4, [-1.0, 1.0]), leverage=10, instruments={"S": "spot"},
                         spot_fee=0.0, **flat())
    cross, isolated = comparison.results["cross"], comparison.results["isolated"]
    assert (run_kind(cross), run_kind(isolated)) == ("cross", "isolated")
    assert run_label(cross) == "cross 10x"
    v = comparison.verdict
    # isolated: the short's margin 10 runs out at 100 x 1.1 / 1.005 = 109.45, losing 9.45;
    # equity 10,000 + 15 (spot) - 9.45 = 10,005.55. Cross: the spot gain pays the perp loss
    iso_final = 10_000 + 15 - (100 * 1.1 / 1.005 - 100)
    assert f"Cross ended at 10,000 (+0.0%), isolated at {iso_final:,.0f}" in v
    assert f"isolated ended {iso_final - 10_000:.2f} higher" in v
    assert "Isolated lost 1 position to liquidation (P 1)" in v
    assert "profit" not in v  # the spot leg's gain is not in the cross margin balance
    assert v.endswith("Cross and isolated here are the margin modes of the futures leg P: the "
                      "spot leg S is paid in full, never liquidated and not margined under "
                      "either mode.")


def test_funding_carry_verdict_pairs_cross_with_isolated():
    market_ = carry_market(start="2024-01-01", end="2024-04-01")
    comparison = compare(market_, FUNDING_CARRY, leverage=3)
    assert list(comparison.results) == ["cross", "isolated"]
    for mode, r in comparison.results.items():
        assert run_label(r) == f"{mode} 3x"
        assert r.config.leverage == 3
    first, *rest = comparison.verdict.split("\n\n")
    assert first.startswith("Cross ended at ")
    assert ", isolated at " in first and "Max drawdown: cross" in first
    assert rest == ["Cross and isolated here are the margin modes of the futures leg BTC_USDT: "
                    "the spot leg BTC_USDT_SPOT is paid in full, never liquidated and not "
                    "margined under either mode."]


# --- the run's leverage, given to strategies -------------------------------------------------


def units_of_leverage(market, leverage=3.0):
    """Hold as many units of the first symbol as the leverage (of the first symbol, when a
    mapping), and of the second as its leverage when there is one: what it was given."""
    targets = np.full((market.n_bars, market.n_symbols), NAN)
    if isinstance(leverage, dict):
        targets[0] = [leverage[s] for s in market.symbols]
    else:
        targets[0, 0] = leverage
    return Plan(targets, {"target_kind": "units", "leverage": leverage})


def test_takes_leverage_reads_the_signature():
    assert takes_leverage(units_of_leverage) and takes_leverage(load_strategy("funding_carry"))
    assert not takes_leverage(hedged_pair) and not takes_leverage(lambda market, **kw: None)
    assert with_run_leverage(units_of_leverage, {}, {"A": 2.0}) == {"leverage": {"A": 2.0}}
    assert with_run_leverage(units_of_leverage, {"leverage": 5.0}, 2.0) == {"leverage": 5.0}
    assert with_run_leverage(hedged_pair, {}, 2.0) == {}


def test_sweep_and_compare_give_each_run_its_leverage():
    # A from 100 to 110: holding L units ends at 10,000 + 10 L
    m = market(["A", "B"], [[(100,) * 4, (50,) * 4], [(100,) * 4, (50,) * 4],
                            [(110,) * 4, (50,) * 4]])
    table = sweep(m, units_of_leverage, {"leverage": [2, 5, {"A": 4, "B": 8}]}, **flat())
    assert table["final_equity"].tolist() == [10_020.0, 10_050.0, 10_040.0]
    assert table["error"].isna().all()
    # a grid without leverage: the strategy's own default (3), which its plan makes the run's
    assert sweep(m, units_of_leverage, {"venue_overrides": flat()["venue_overrides"]},
                 venue="flat")["final_equity"].tolist() == [10_030.0]
    comparison = compare(m, units_of_leverage, leverage=[2, 5], **flat())
    held = {label: r.positions["A"].iloc[1] for label, r in comparison.results.items()}
    assert held == {"cross 2x": 2.0, "isolated 2x": 2.0, "cross 5x": 5.0, "isolated 5x": 5.0}
    # a parameter the caller sets is the caller's
    set_by_hand = compare(m, units_of_leverage, params={"leverage": 1.0}, leverage=[2], **flat())
    assert set_by_hand.results["cross"].positions["A"].iloc[1] == 1.0
    with pytest.raises(ValueError, match="params= are a strategy's parameters"):
        compare(m, units(3, [1.0, NAN]), params={"x": 1}, **flat())


STRATEGY_FILE = '''
import numpy as np
from backtester.strategy import Plan

def probe(market, leverage=3.0):
    """Hold leverage / 100 BTC from the first close: what the strategy was given."""
    targets = np.full((market.n_bars, market.n_symbols), np.nan)
    targets[0, 0] = leverage / 100
    return Plan(targets, {"target_kind": "units", "leverage": leverage})
'''


def test_cli_run_and_compare_give_a_strategy_the_run_leverage(tmp_path, capsys):
    path = tmp_path / "probe.py"
    path.write_text(STRATEGY_FILE)
    base = ["run", "--strategy", f"{path}:probe", "--start", "2024-01-01", "--end",
            "2024-01-03", "--margin-mode", "cross", "--no-plot"]

    def held(out):
        return pd.read_parquet(out / "positions.parquet")["BTC_USDT"].iloc[1]

    assert main(base + ["--leverage", "4", "--out", str(tmp_path / "a")]) == 0
    assert held(tmp_path / "a") == pytest.approx(0.04)
    assert main(base + ["--out", str(tmp_path / "b")]) == 0  # its own default, 3
    assert held(tmp_path / "b") == pytest.approx(0.03)
    assert main(base + ["--leverage", "4", "--param", "leverage=6",
                        "--out", str(tmp_path / "c")]) == 0  # set by hand: kept
    assert held(tmp_path / "c") == pytest.approx(0.06)
    capsys.readouterr()
    assert main(["compare", "--strategy", f"{path}:probe", "--start", "2024-01-01", "--end",
                 "2024-01-03", "--leverage", "2,5", "--save-runs",
                 "--out", str(tmp_path / "cmp")]) == 0
    assert held(tmp_path / "cmp" / "cross_5x") == pytest.approx(0.05)
    assert held(tmp_path / "cmp" / "isolated_2x") == pytest.approx(0.02)
    assert "probe: cross vs isolated" in capsys.readouterr().out


# --- sweeps and the command line ----------------------------------------------------------------


def test_sweep_over_sizing_matches_run_and_keeps_earlier_run_ids():
    m = load_market().slice(0, 24 * 20)
    table = sweep(m, hedged_pair, {"exposure": 0.3, "sizing": ["exposure", "margin"],
                                   "leverage": [3, 5]}, target_kind="equity")
    assert table["sizing"].tolist() == ["exposure", "exposure", "margin", "margin"]
    for row in table.itertuples():
        expected = run(m, hedged_pair(m, exposure=0.3), target_kind="equity",
                       sizing=row.sizing, leverage=row.leverage).summary()
        assert row.final_equity == expected["final_equity"]
        assert row.fills == expected["fills"]
    exposure = table[table["sizing"] == "exposure"]["final_equity"].tolist()
    assert exposure[0] == exposure[1]  # cross at a fixed exposure: 3x and 5x end alike
    margin = table[table["sizing"] == "margin"]["final_equity"].tolist()
    assert margin[0] != margin[1]
    # sizing="exposure" (the default) is left out of a run's id, so the sweeps saved before
    # it existed keep theirs: this id was computed by the version before sizing
    grid = {"exposure": [0.5, 1.0], "margin_mode": ["cross", "isolated"],
            "leverage": [2, {"A": 3, "B": 4}]}
    ids = [r.run_id for r in Grid(grid, strategy="strategies.hedged_pair:hedged_pair",
                                  defaults={"target_kind": "equity"})]
    assert ids[0] == "47fb490e0d90ece0734d"
    given_default = [r.run_id for r in Grid({**grid, "sizing": "exposure"},
                                            strategy="strategies.hedged_pair:hedged_pair",
                                            defaults={"target_kind": "equity"})]
    by_margin = [r.run_id for r in Grid({**grid, "sizing": "margin"},
                                        strategy="strategies.hedged_pair:hedged_pair",
                                        defaults={"target_kind": "equity"})]
    assert given_default == ids and not set(by_margin) & set(ids)
    # a run whose targets are not equity fractions fails with the reason, the sweep goes on
    failed = sweep(m, hedged_pair, {"sizing": ["exposure", "margin"]}, target_kind="units")
    assert failed["error"].isna().tolist() == [True, False]
    assert "sizing='margin' sizes fractions of equity" in failed["error"].iloc[1]


def test_cli_sizing_flag_on_run_compare_and_sweep(tmp_path, capsys):
    window = ["--start", "2024-01-01", "--end", "2024-01-15"]
    assert main(["run", *window, "--sizing", "margin", "--leverage", "3", "--exposure", "0.2",
                 "--margin-mode", "cross", "--no-plot", "--out", str(tmp_path / "run")]) == 0
    assert "sizing margin" in capsys.readouterr().out
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["config"]["sizing"] == "margin"
    first = pd.read_parquet(tmp_path / "run" / "fills.parquet").iloc[0]
    equity_then = 10_000.0  # nothing happened before the first fill
    close = load_market(start="2024-01-01", end="2024-01-15").close[0, 0]
    # 0.2 x 10,000 x 3 / the first close, rounded down to BTC's 0.001 step
    assert first["qty"] == pytest.approx(np.floor(0.2 * equity_then * 3 / close * 1000) / 1000)
    assert main(["run", "--strategy", "funding_carry", *window, "--sizing", "margin",
                 "--no-plot", "--out", str(tmp_path / "carry")]) == 2
    err = capsys.readouterr().err
    assert "--sizing 'margin' sizes fractions of equity" in err and "target_kind='units'" in err
    assert main(["compare", *window, "--sizing", "margin", "--leverage", "2,4",
                 "--out", str(tmp_path / "cmp")]) == 0
    assert "1x equity as margin per leg" in capsys.readouterr().out
    assert main(["sweep", *window, "--sizing", "margin", "-p", "leverage=2,4",
                 "--no-progress", "--out", str(tmp_path / "sweep")]) == 0
    saved = pd.read_parquet(tmp_path / "sweep")
    assert saved["sizing"].tolist() == ["margin", "margin"]
