"""The example strategies on the embedded data: do they do what they say?

Behavioural checks, not snapshots: the pair rebalances exactly when it drifts out of
its band, the carry's legs stay matched, the trend book follows its signal at its
exposure, the margin-aware book survives where the plain one is liquidated, the grid
holds the level a second implementation here expects. Then every example from the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from backtester import Market, load_market, run
from backtester.cli import main
from strategies.funding_carry import carry_market, funding_carry
from strategies.grid import grid
from strategies.hedged_pair import hedged_pair_strategy
from strategies.margin_aware import margin_aware
from strategies.trend import trend_following


@pytest.fixture(scope="module")
def market() -> Market:
    return load_market()


def fill_bars(result) -> set[int]:
    return set(result.fills.loc[result.fills["reason"] != "liquidation", "bar"])


# --- hedged pair ------------------------------------------------------------------------------


def test_pair_rebalances_exactly_when_a_leg_leaves_its_band(market):
    exposure, band = 2.0, 0.05
    r = run(market, hedged_pair_strategy(market, exposure=exposure, rebalance_every=0,
                                         drift_band=band), leverage=10)
    q = r.positions.to_numpy()
    close = market.close
    eq = r.equity.to_numpy()
    off_long = np.abs(q[:, 0] * close[:, 0] / eq - exposure)
    off_short = np.abs(q[:, 1] * close[:, 1] / eq + exposure)
    drifted = np.maximum(off_long, off_short) > band * exposure
    assert 20 < drifted.sum() < 2000  # it does drift, and not all the time
    # the decision at close t fills at the open of t + 1, and only then
    assert fill_bars(r) == set(np.flatnonzero(drifted[:-1]) + 1)
    # so the pair is back in its band at every close not followed by a rebalance, and its
    # net exposure (long minus short notional) is then within twice the band
    net = np.abs(q[:, 0] * close[:, 0] + q[:, 1] * close[:, 1]) / eq
    assert (net[~drifted] <= 2 * band * exposure + 1e-12).all()


def test_beta_hedged_pair_shorts_beta_times_the_long_notional(market):
    from strategies.hedged_pair import hedge_ratios

    beta = hedge_ratios(market, "BTC_USDT", "ETH_USDT", 720)
    r = run(market, hedged_pair_strategy(market, exposure=1.0, hedge="beta"), leverage=10,
            order_filters=False)  # continuous sizes: the ratio is exactly beta
    q = r.positions.to_numpy()
    decided = np.arange(0, market.n_bars - 1, 24)
    assert beta[decided].std() > 0.02  # the ratio moves: not a notional hedge in disguise
    # right after each rebalance: short notional / long notional at the decision close = beta
    ratio = -q[decided + 1, 1] * market.close[decided, 1] / (
        q[decided + 1, 0] * market.close[decided, 0])
    np.testing.assert_allclose(ratio, beta[decided], rtol=1e-9)


def test_scheduled_pair_trades_only_after_its_schedule(market):
    r = run(market, hedged_pair_strategy(market, rebalance_every=48), leverage=10)
    assert fill_bars(r) <= set(range(1, market.n_bars, 48))


# --- funding carry -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def carry() -> Market:
    return carry_market()


def test_embedded_spot_series_tracks_its_perpetual(carry):
    # a guard on the data: data/generate_spot.py derives spot from the perpetual's bars;
    # rerun it when the perpetual is regenerated
    basis = carry.close[:, 1] / carry.close[:, 0] - 1
    assert np.abs(basis).max() < 0.005
    assert carry.has_mark == (True, False) and np.isnan(carry.funding_rate[:, 1]).all()


@pytest.mark.parametrize("mode,leverage", [("cross", 2), ("isolated", 2), ("isolated", 5)])
def test_carry_stays_delta_neutral_and_collects_funding(carry, mode, leverage):
    band = 0.01
    r = run(carry, funding_carry(carry, leverage=leverage, band=band), margin_mode=mode,
            order_filters=False)  # continuous sizes: the band logic alone moves the legs
    q = r.positions.to_numpy()
    perp, spot = q[:, 0], q[:, 1]
    held = spot > 0
    assert held.mean() > 0.5 and (spot >= 0).all()
    # the legs hold the same number of coins; where they drift apart by more than the
    # band, the next bar re-matches them
    apart = np.flatnonzero(np.abs(spot + perp) > band * spot + 1e-12)
    assert set(apart + 1) <= fill_bars(r)
    assert len(apart) <= 0.001 * held.sum()
    # in quote, the net exposure is a sliver of the gross (the spot/perp basis) when matched
    account = r.account
    matched = np.abs(spot + perp) <= band * spot + 1e-12
    gross = account["gross_exposure"].to_numpy()[held & matched]
    net = account["net_exposure"].to_numpy()[held & matched]
    assert (np.abs(net) <= 0.012 * gross).all()
    # funding: received by the short perpetual, never paid by (or to) the spot leg
    assert r.summary()["funding_paid"] < 0
    assert set(r.funding["symbol"]) == {"BTC_USDT"}
    assert r.summary()["liquidations"] == 0


def test_carry_stays_out_while_funding_is_below_its_entry(carry):
    # with an entry threshold above every trailing funding mean it never trades
    r = run(carry, funding_carry(carry, enter=0.01))
    assert len(r.fills) == 0 and r.equity.iloc[-1] == 10_000


# --- trend following -----------------------------------------------------------------------------


def test_trend_book_follows_its_signal_at_its_exposure(market):
    fast, slow, exposure = 48, 240, 2.0
    r = run(market, trend_following(market, fast=fast, slow=slow, exposure=exposure),
            margin_mode="cross", order_filters=False)  # continuous sizes, checked exactly
    close = market.frame("close")
    direction = np.sign(close.ewm(span=fast, min_periods=fast).mean()
                        - close.ewm(span=slow, min_periods=slow).mean()).to_numpy()
    q = r.positions.to_numpy()
    eq = r.equity.to_numpy()
    decided = np.arange(slow, market.n_bars - 1, 24)
    rejected = set(r.rejections["bar"])
    decided = np.array([t for t in decided if t + 1 not in rejected])
    assert len(decided) > 600
    after = q[decided + 1]
    # each position is on the side of its trend...
    assert (np.sign(after) == direction[decided]).all()
    # ...and the book's gross notional at the decision prices is exposure x equity
    gross = np.abs(after * market.close[decided]).sum(axis=1)
    np.testing.assert_allclose(gross, exposure * eq[decided], rtol=1e-9)


# --- margin-aware --------------------------------------------------------------------------------


def test_margin_aware_isolated_book_tops_up_and_is_never_liquidated(market):
    plain = run(market, margin_aware(market, protect=False), margin_mode="isolated",
                order_filters=False)
    guarded = run(market, margin_aware(market), margin_mode="isolated", order_filters=False)
    assert plain.summary()["liquidations"] > 10
    assert guarded.summary()["liquidations"] == 0
    # the guard worked by topping up: isolated margin rose at bars without any fill
    iso = guarded.account["isolated_margin"].to_numpy()
    rose = np.flatnonzero(np.diff(iso) > 1e-9) + 1
    top_ups = [t for t in rose if t not in fill_bars(guarded)]
    assert len(top_ups) > 10
    assert (guarded.liquidation_prices.notna().sum(axis=1) > 0).any()


def test_margin_aware_cross_book_delevers_and_is_never_liquidated(market):
    options = dict(book="BTC_USDT:4", rebalance_every=168, deleverage_at=0.03)
    plain = run(market, margin_aware(market, protect=False, **options), margin_mode="cross")
    guarded = run(market, margin_aware(market, **options), margin_mode="cross")
    assert plain.summary()["liquidations"] >= 1
    assert guarded.summary()["liquidations"] == 0
    # its cuts: sales outside the weekly schedule, decided when the margin ratio was high
    fills = guarded.fills
    cuts = fills[(fills["qty"] < 0) & ((fills["bar"] - 1) % 168 != 0)]
    assert len(cuts) >= 1
    ratio = guarded.account["margin_ratio"].to_numpy()
    assert (ratio[cuts["bar"].to_numpy() - 1] > 0.03).all()


# --- grid ----------------------------------------------------------------------------------------


def grid_levels(close: np.ndarray, spacing: float, levels: int, recenter: bool) -> np.ndarray:
    """A second implementation of the grid: the level held after each close."""
    out = np.zeros(close.size)
    anchor = close[0]
    for t in range(1, close.size):
        k = float(int((close[t] - anchor) / (anchor * spacing)))
        if recenter and abs(k) >= levels + 2:
            anchor, k = close[t], 0.0
        out[t] = max(-levels, min(levels, k))
    return out


def test_grid_buys_below_and_sells_above_its_anchor_by_hand():
    closes = [100, 100, 98.9, 97.9, 99.5, 101.5, 103.2, 100, 104.5, 103.4, 103.4]
    o = np.array([100] + closes[:-1], dtype=float)
    c = np.array(closes, dtype=float)
    m = Market.from_arrays(["X"], o, np.maximum(o, c), np.minimum(o, c), c)
    # anchor 100, 1% lines: 98.9 is one line down (long 0.1 of equity), 97.9 two (0.2),
    # 99.5 none (flat), 101.5 one up (short 0.1), 103.2 three up, capped at two (0.2
    # short), 100 none; 104.5 is 4 = levels + 2 lines up: the grid re-anchors there, so
    # 103.4 is one line below the new anchor (long 0.1); without re-anchoring: 3 up, short
    expected = {True: [0, 0, 0.1, 0.2, 0, -0.1, -0.2, 0, 0, 0.1, 0.1],
                False: [0, 0, 0.1, 0.2, 0, -0.1, -0.2, 0, -0.2, -0.2, -0.2]}
    for recenter, fractions in expected.items():
        r = run(m, grid(m, spacing=0.01, levels=2, size=0.1, recenter=recenter),
                venue="flat")
        q = r.positions["X"].to_numpy()
        # a new level is decided at close t and filled at the open of t + 1; in between
        # the position is left alone
        decided = [t for t in range(1, len(c) - 1) if fractions[t] != fractions[t - 1]]
        held = q[np.add(decided, 1)] * c[decided] / r.equity.to_numpy()[decided]
        np.testing.assert_allclose(held, np.take(fractions, decided), atol=1e-12)
        assert fill_bars(r) == {t + 1 for t in decided}


def test_grid_on_the_embedded_data_holds_the_level_a_second_implementation_expects(market):
    spacing, levels, size = 0.02, 5, 0.3
    r = run(market, grid(market, spacing=spacing, levels=levels, size=size),
            order_filters=False)  # the second implementation sizes continuously
    level = grid_levels(market.close[:, 0], spacing, levels, recenter=True)
    changed = np.flatnonzero(np.diff(level) != 0) + 1  # decisions: the level moved
    assert len(changed) > 100 and np.abs(level).max() == levels
    assert fill_bars(r) == set(changed + 1) - {market.n_bars}
    q = r.positions["BTC_USDT"].to_numpy()
    eq = r.equity.to_numpy()
    held = q[changed[:-1] + 1] * market.close[changed[:-1], 0] / eq[changed[:-1]]
    np.testing.assert_allclose(held, -level[changed[:-1]] * size, atol=1e-9)


# --- from the command line -----------------------------------------------------------------------


@pytest.mark.parametrize("name,params", [
    ("hedged_pair", ["drift_band=0.1", "rebalance_every=0"]),
    ("funding_carry", ["leverage=3.0"]),
    ("trend", ["exposure=1.5"]),
    ("margin_aware", ["protect=false"]),
    ("grid", ["spacing=0.03", "levels=3"]),
])
def test_every_example_runs_from_the_cli(tmp_path, capsys, name, params):
    argv = ["run", "--strategy", name, "--start", "2024-07-01", "--end", "2024-09-01",
            "--margin-mode", "cross", "--no-plot", "--out", str(tmp_path)]
    for p in params:
        argv += ["--param", p]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    header = f"== cross margin: strategy {name} ({', '.join(params)})"
    assert header.lower() in printed.lower()
    meta = json.loads((tmp_path / "run.json").read_text())
    assert meta["start"].startswith("2024-07-01")
    assert len(pd.read_parquet(tmp_path / "account.parquet")) == 62 * 24


def test_strategy_parameters_set_run_options_and_flags_override_them(tmp_path, capsys):
    # trend's own leverage parameter sets the run's leverage; --leverage wins over it
    base = ["run", "--strategy", "trend", "--start", "2024-07-01", "--end", "2024-08-01",
            "--margin-mode", "isolated", "--no-plot"]
    assert main(base + ["--param", "leverage=4", "--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--param", "leverage=4", "--leverage", "7",
                        "--out", str(tmp_path / "b")]) == 0
    a = json.loads((tmp_path / "a" / "run.json").read_text())["config"]["leverage"]
    b = json.loads((tmp_path / "b" / "run.json").read_text())["config"]["leverage"]
    assert a == {"BTC_USDT": 4.0, "ETH_USDT": 4.0} and b == {"BTC_USDT": 7.0, "ETH_USDT": 7.0}


def test_funding_carry_from_the_cli_saves_the_spot_leg(tmp_path, capsys):
    assert main(["run", "--strategy", "funding_carry", "--start", "2024-01-01", "--end",
                 "2024-03-01", "--no-plot", "--out", str(tmp_path)]) == 0
    for mode in ("cross", "isolated"):
        meta = json.loads((tmp_path / mode / "run.json").read_text())
        assert meta["config"]["margin_mode"] == {"BTC_USDT": mode, "BTC_USDT_SPOT": "spot"}
        assert meta["config"]["instruments"] == {"BTC_USDT_SPOT": "spot"}
        positions = pd.read_parquet(tmp_path / mode / "positions.parquet")
        assert (positions["BTC_USDT_SPOT"] >= 0).all()


USER_STRATEGY = '''
from numba import njit
from backtester.strategy import Callback, Plan, order_target

@njit
def flip(t, ctx, orders, params):
    if t % int(params[0]) != 0:
        return False
    order_target(orders, 0, params[1] if (t // int(params[0])) % 2 == 0 else -params[1])
    return True

def flipper(market, every: int = 48, size: float = 0.5):
    """Long, then short, then long... the first symbol, switching every few bars."""
    return Plan(Callback(flip, params=[every, size]), {"target_kind": "equity"})

@njit
def typo(t, ctx, orders, params):
    return ctx.closes[t, 0] > 0.0

def broken(market):
    return Callback(typo)
'''


def test_a_users_strategy_file_runs_and_its_mistakes_are_explained(tmp_path, capsys):
    path = tmp_path / "mine.py"
    path.write_text(USER_STRATEGY)
    base = ["run", "--start", "2024-07-01", "--end", "2024-08-01", "--margin-mode", "cross",
            "--no-plot", "--out", str(tmp_path / "out"), "--overwrite"]
    assert main(base + ["--strategy", f"{path}:flipper", "--param", "every=24"]) == 0
    fills = pd.read_parquet(tmp_path / "out" / "fills.parquet")
    assert set(fills["bar"] % 24) == {1} and (fills["symbol"] == "BTC_USDT").all()
    capsys.readouterr()
    assert main(base + ["--strategy", f"{path}:flipper", "--param", "evry=24"]) == 2
    err = capsys.readouterr().err
    assert "unknown parameter 'evry' for strategy flipper" in err and "every (default 48)" in err
    assert main(base + ["--strategy", f"{path}:flipper", "--param", "every=often"]) == 2
    assert "every of strategy flipper takes a whole number, got 'often'" in capsys.readouterr().err
    assert main(base + ["--strategy", f"{path}:broken"]) == 2
    err = capsys.readouterr().err
    assert "strategy callback typo" in err and "mine.py" in err and "closes" in err
    assert main(base + ["--strategy", f"{path}:nothing"]) == 2
    assert "has no 'nothing'; it defines: broken, flipper" in capsys.readouterr().err
    assert main(base + ["--strategy", "nosuch"]) == 2
    assert "built-in strategies are hedged_pair, funding_carry" in capsys.readouterr().err
    assert main(base + ["--strategy", "trend", "--exposure", "2"]) == 2
    assert "with --strategy use --param" in capsys.readouterr().err
