"""The bootstrap of markets and the probability of liquidation (backtester.risk).

Oracles: the stationary bootstrap's block length against the AR(1) population value;
resampled bars re-chained by a second implementation written here; liquidation of a held
isolated long decided from the paths' mark lows and Binance's isolated liquidation price
(VENUES.md 2.5) worked out here; pathwise facts that must hold on every path.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtester import Market, load_market
from backtester.risk import Bootstrap, liquidation_risk, optimal_block_length
from backtester.risk.bootstrap import DAY_NS
from backtester.risk.montecarlo import expected_shortfall, wilson


@pytest.fixture(scope="module")
def history() -> Market:
    return load_market()


@pytest.fixture(scope="module")
def no_funding(history) -> Market:
    """The embedded history without funding (so an isolated margin never moves)."""
    m = history
    return Market.from_arrays(m.symbols, m.open, m.high, m.low, m.close,
                              mark=(m.mark_open, m.mark_high, m.mark_low, m.mark_close),
                              start=str(m.timestamps[0]), bar="1h")


def test_block_length_of_an_ar1_series_is_near_its_population_value():
    # b = (2 phi / (1 - phi^2))^(2/3) n^(1/3) for an AR(1) (Politis and White 2004, eq. for
    # the stationary bootstrap with Patton et al.'s 2009 correction)
    rng = np.random.default_rng(11)
    n, phi = 50_000, 0.5
    e = rng.standard_normal(n)
    x = np.empty(n)
    x[0] = e[0]
    for t in range(1, n):
        x[t] = phi * x[t - 1] + e[t]
    expected = (2 * phi / (1 - phi * phi)) ** (2 / 3) * n ** (1 / 3)  # 44.6
    assert optimal_block_length(x) == pytest.approx(expected, rel=0.25)
    assert optimal_block_length(rng.standard_normal(n)) < 3.0


def test_block_length_needs_data():
    with pytest.raises(ValueError, match="at least 16"):
        optimal_block_length([1.0, 2.0, np.nan])


def test_paths_chain_the_histories_bars_from_the_last_close(history):
    boot = Bootstrap(history, block=24)
    paths = boot.paths(3, 500, seed=5)
    fields = ("open", "high", "low", "close", "mark_open", "mark_high", "mark_low",
              "mark_close")
    for p in range(3):
        prev = history.close[-1].copy()
        for t in range(500):
            s = paths.source[p, t]
            for name in fields:
                want = prev * getattr(history, name)[s] / history.close[s - 1]
                np.testing.assert_allclose(getattr(paths, name)[p, t], want, rtol=1e-12)
            np.testing.assert_array_equal(np.isnan(paths.funding_rate[p, t]),
                                          np.isnan(history.funding_rate[s]))
            prev = paths.close[p, t]
    # a bar keeps the time of day of the path's bar, so funding settles at the same hours
    hour = (paths.index // 3_600_000_000_000) % 24
    src_hour = (history.index[paths.source] // 3_600_000_000_000) % 24
    assert (src_hour == hour[None, :]).all()
    assert paths.index[0] == history.index[-1] + history.bar_ns


def test_blocks_have_the_mean_length_asked(history):
    boot = Bootstrap(history, block=10)
    source = boot.paths(40, 5000, seed=1).source
    runs = (np.diff(source, axis=1) != 1).sum() + source.shape[0]
    mean_block = source.size / runs
    # restarts come with probability 1/10 per bar, and the history's end ends a block too
    assert mean_block == pytest.approx(10, rel=0.08)


def test_a_path_is_the_same_whatever_the_chunk(history):
    boot = Bootstrap(history)
    whole = boot.paths(6, 300, seed=9)
    part = boot.paths(2, 300, seed=9, first=4)
    np.testing.assert_array_equal(whole.source[4:], part.source)
    np.testing.assert_array_equal(whole.close[4:], part.close)
    other = boot.paths(6, 300, seed=10)
    assert not np.array_equal(whole.source, other.source)


def test_resampled_returns_keep_volatility_and_correlation(history):
    # stated tolerances: each symbol's hourly volatility within 5%, the correlation of the
    # two symbols' returns within 0.02, over 200 one-year paths
    boot = Bootstrap(history)
    paths = boot.paths(200, 24 * 365, seed=3)
    hist = np.diff(np.log(history.close), axis=0)
    sim = np.diff(np.log(paths.close), axis=1).reshape(-1, history.n_symbols)
    np.testing.assert_allclose(sim.std(axis=0), hist.std(axis=0), rtol=0.05)
    assert np.corrcoef(sim.T)[0, 1] == pytest.approx(np.corrcoef(hist.T)[0, 1], abs=0.02)
    # clustering: the autocorrelation of absolute returns at lag 1 stays positive and close
    def acf1(x):
        a = np.abs(x) - np.abs(x).mean()
        return (a[1:] * a[:-1]).mean() / (a * a).mean()
    one = np.diff(np.log(paths.close[0, :, 0]))
    assert acf1(one) > 0.5 * acf1(hist[:, 0])


REAL = __import__("pathlib").Path(__file__).resolve().parents[2] / "shared" / "data" / \
    "binance_futures"


@pytest.mark.skipif(not (REAL / "BTC_USDT-1h.parquet").exists(),
                    reason="shared Binance futures data not present")
@pytest.mark.filterwarnings("ignore:.*have no mark price")  # the early bars: last as mark
def test_resampled_real_history_keeps_volatility_and_correlation():
    real = load_market(REAL, symbols=["BTC_USDT", "ETH_USDT"], timeframe="1h")
    paths = Bootstrap(real).paths(200, 24 * 365, seed=3)
    usable = np.isfinite(real.close).all(axis=1)
    hist = np.diff(np.log(real.close[usable]), axis=0)
    sim = np.diff(np.log(paths.close), axis=1).reshape(-1, real.n_symbols)
    np.testing.assert_allclose(sim.std(axis=0), hist.std(axis=0), rtol=0.05)
    assert np.corrcoef(sim.T)[0, 1] == pytest.approx(np.corrcoef(hist.T)[0, 1], abs=0.02)


def test_drift_can_be_removed(history):
    # without drift, every bar's log return is the history's less the symbol's mean log
    # return (the same paths: same seed, same sources), and a bar's shape is kept
    hist = np.diff(np.log(history.close), axis=0)  # no gaps: the pool is bars 1..T-1
    removed = Bootstrap(history, drift=False).paths(20, 24 * 365, seed=2)
    kept = Bootstrap(history).paths(20, 24 * 365, seed=2)
    np.testing.assert_array_equal(removed.source, kept.source)
    r_removed = np.diff(np.log(removed.close), axis=1)
    r_kept = np.diff(np.log(kept.close), axis=1)
    np.testing.assert_allclose(r_kept - r_removed, np.broadcast_to(hist.mean(axis=0),
                                                                   r_kept.shape), atol=1e-12)
    s = removed.source
    np.testing.assert_allclose(removed.high[:, 1:] / removed.close[:, 1:],
                               history.high[s[:, 1:]] / history.close[s[:, 1:]], rtol=1e-12)


def test_bootstrap_refuses_too_little_history():
    m = Market.from_arrays(["A"], *[np.full(20, 100.0)] * 4)
    with pytest.raises(ValueError, match="at least 48"):
        Bootstrap(m)


def test_an_unlevered_long_is_never_liquidated(history):
    risk = liquidation_risk(history, {"BTC_USDT": 1.0}, leverages=[1],
                            margin_modes=["cross", "isolated"], n_paths=200, days=365,
                            seed=4, target_kind="equity")
    assert (risk.table["p_liquidation"] == 0.0).all()
    low, high = wilson(0, 200)
    assert risk.table.loc[0, "p_liquidation_high"] == pytest.approx(high)


def test_isolated_long_liquidated_exactly_where_the_mark_reaches_its_price(no_funding):
    # one isolated long of 0.1 BTC on venue "flat" (MMR 0.5%, cum 0), ordered at the first
    # close, filled at the next open EP: Binance's isolated price is
    # LP = (q EP - WB - cum) / (q (1 - MMR)), with WB the position's margin: q EP / L plus
    # its open loss q max(EP - M0, 0) against the mark M0 at the fill (VENUES.md 2.2); the
    # position is liquidated iff a mark low after the fill reaches LP
    q, mmr = 0.1, 0.005
    leverages = [2, 5, 10, 25, 50]
    boot = Bootstrap(no_funding, block=48)
    risk = liquidation_risk(no_funding, {"BTC_USDT": q}, leverages=leverages,
                            margin_modes=["isolated"], n_paths=120, days=60, seed=2,
                            bootstrap=boot, venue="flat", target_kind="units",
                            initial_balance=10_000)
    paths = boot.paths(120, 60 * 24, seed=2)
    entry = paths.open[:, 1, 0]
    open_loss = np.maximum(entry - paths.mark_open[:, 1, 0], 0.0)
    lowest = paths.mark_low[:, 1:, 0].min(axis=1)
    for lev in leverages:
        lp = (entry - entry / lev - open_loss) / (1 - mmr)
        expected = lowest <= lp
        rows = risk.paths[risk.paths["leverage"] == lev]
        got = rows["liquidations"].to_numpy() > 0
        np.testing.assert_array_equal(got, expected)
        assert risk.table.loc[risk.table["leverage"] == lev, "p_liquidation"].item() == \
            pytest.approx(expected.mean())
    # the probability rises with leverage, and on every path: liquidated at L => at L' > L
    by_lev = risk.table.sort_values("leverage")["p_liquidation"].to_numpy()
    assert (np.diff(by_lev) >= 0).all() and by_lev[-1] > by_lev[0]
    hit = np.stack([risk.paths[risk.paths["leverage"] == lev]["liquidations"].to_numpy() > 0
                    for lev in leverages])
    assert (hit[:-1] <= hit[1:]).all()


def test_first_liquidation_time_and_ruin_are_read_from_each_path(no_funding):
    boot = Bootstrap(no_funding, block=48)
    risk = liquidation_risk(no_funding, {"BTC_USDT": 0.1}, leverages=[20],
                            margin_modes=["isolated"], n_paths=60, days=60, seed=8,
                            bootstrap=boot, venue="flat", target_kind="units",
                            initial_balance=10_000, ruin=(0.02,))
    paths = boot.paths(60, 60 * 24, seed=8)
    entry = paths.open[:, 1, 0]
    open_loss = np.maximum(entry - paths.mark_open[:, 1, 0], 0.0)  # as in the test above
    lp = (entry - entry / 20 - open_loss) / (1 - 0.005)
    low = paths.mark_low[:, :, 0].copy()
    low[:, 0] = np.inf
    crossed = low <= lp[:, None]
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    np.testing.assert_array_equal(risk.paths["first_liquidation_bar"].to_numpy(), first)
    days = first[first >= 0] / 24
    row = risk.table.iloc[0]
    assert row["first_liquidation_days_median"] == pytest.approx(np.median(days))
    # the isolated margin is 0.1 x EP / 20 (~ 3.4% of the 10,000 deposit): a liquidation
    # loses it all, so every liquidated path lost more than 2% of the deposit at some close
    assert row["p_loss_2"] >= row["p_liquidation"]
    surv = risk.survival("isolated", 20)
    assert surv.iloc[0] == 1.0 and surv.iloc[-1] == pytest.approx(1 - (first >= 0).mean())


def test_results_do_not_depend_on_workers_or_chunks(history):
    kw = dict(leverages=[3, 10], margin_modes=["cross", "isolated"], n_paths=24, days=30,
              seed=6, target_kind="equity")
    book = {"BTC_USDT": 1.5, "ETH_USDT": -1.5}
    a = liquidation_risk(history, book, workers=1, chunk=24, **kw)
    b = liquidation_risk(history, book, workers=2, chunk=5, **kw)
    cols = ["final_equity", "liquidations", "first_liquidation_bar", "lowest_equity"]
    np.testing.assert_array_equal(a.paths[cols].to_numpy(), b.paths[cols].to_numpy())


def test_a_strategy_function_runs_on_each_paths_prices(history, no_funding):
    # a strategy that goes long only when the path's first close is above the history's
    # last close: its run must see the path's own prices
    def above_start(market, size=0.01):
        targets = np.full((market.n_bars, market.n_symbols), np.nan)
        targets[0, 0] = size if market.close[0, 0] > history.close[-1, 0] else -size
        return targets
    risk = liquidation_risk(no_funding, above_start, leverages=[5], margin_modes=["isolated"],
                            n_paths=30, days=10, seed=1, target_kind="units")
    paths = Bootstrap(no_funding).paths(30, 240, seed=1)
    up = paths.close[:, 0, 0] > history.close[-1, 0]
    # the long paths gained what BTC gained from the fill to the last mark, less the fee
    pnl = 0.01 * (paths.mark_close[:, -1, 0] - paths.open[:, 1, 0])
    pnl = np.where(up, pnl, -pnl)
    fee = 0.01 * paths.open[:, 1, 0] * 0.0005
    expected = 10_000 + pnl - fee
    liquidated = risk.paths["liquidations"].to_numpy() > 0
    np.testing.assert_allclose(risk.paths["final_equity"].to_numpy()[~liquidated],
                               expected[~liquidated], rtol=1e-9)


def test_expected_shortfall_and_wilson_by_hand():
    values = np.arange(100.0)  # worst 5: 0..4
    assert expected_shortfall(values, 0.05) == pytest.approx(2.0)
    low, high = wilson(10, 100, 0.95)  # textbook: 0.0552 .. 0.1744
    assert (float(low), float(high)) == pytest.approx((0.0552, 0.1744), abs=1e-4)


@pytest.mark.parametrize("bad, match", [
    (dict(n_paths=0), "n_paths"), (dict(days=-1), "days"), (dict(leverages=[0]), "leverages"),
    (dict(ruin=(1.5,)), "ruin"), (dict(level=0.3), "level"),
    (dict(options={"sizing": "margin"}), "options"),
])
def test_bad_arguments_are_named(history, bad, match):
    kw = dict(n_paths=4, days=5, target_kind="equity")
    kw.update(bad)
    with pytest.raises(ValueError, match=match):
        liquidation_risk(history, {"BTC_USDT": 1.0}, **kw)


def test_day_constant():
    assert DAY_NS == 24 * 3_600 * 10**9


def test_funding_on_paths_that_settle_at_any_hour(history):
    # without the time of day kept, paths settle different numbers of funding rates: each
    # path's funding is still every rate it settles, paid on the position at the mark open
    # of the settling bar (DESIGN.md: funding at the open, before the bar's orders), so a
    # long of q units filled at bar 1's open pays q x mark_open[t] x rate[t] for t >= 2
    boot = Bootstrap(history, phase=False, block=24)
    q = 0.05
    risk = liquidation_risk(history, {"BTC_USDT": q}, leverages=[2], margin_modes=["cross"],
                            n_paths=16, days=20, seed=3, bootstrap=boot, target_kind="units")
    paths = boot.paths(16, 20 * 24, seed=3)
    counts = np.isfinite(paths.funding_rate[:, :, 0]).sum(axis=1)
    assert counts.min() != counts.max()  # the schedules differ
    rate = np.nan_to_num(paths.funding_rate[:, 2:, 0])
    expected = (q * paths.mark_open[:, 2:, 0] * rate).sum(axis=1)
    np.testing.assert_allclose(risk.paths["funding_paid"].to_numpy(), expected, rtol=1e-9,
                               atol=1e-9)


def test_every_path_is_the_run_of_its_market(history):
    # a second way to the same figures: run() on each path's market, for a strategy with a
    # callback (the hedged pair) and for targets, under both modes; the orders the account
    # could not carry are counted from the run's rejections
    from backtester import run
    from strategies.hedged_pair import STRATEGY

    boot = Bootstrap(history)
    carry = {"insufficient_margin", "leverage_above_tier_max", "account_bankrupt",
             "margin_level_below_open_level", "above_max_position"}
    cases = [(STRATEGY, {}, [3, 20]), ({"BTC_USDT": 2.5, "ETH_USDT": -2.5},
                                       {"target_kind": "equity"}, [1, 10])]
    for strategy, options, leverages in cases:
        risk = liquidation_risk(history, strategy, leverages=leverages, n_paths=3, days=30,
                                seed=12, bootstrap=boot, **options)
        paths = boot.paths(3, 30 * 24, seed=12)
        for p in range(3):
            market = paths.market(p)
            plan = STRATEGY.plan(market) if strategy is STRATEGY else strategy
            if isinstance(plan, dict):
                targets = np.full((market.n_bars, 2), np.nan)
                targets[0] = [plan["BTC_USDT"], plan["ETH_USDT"]]
                plan = targets
            for mode in ("cross", "isolated"):
                for lev in leverages:
                    result = run(market, plan, margin_mode=mode, leverage=lev, **options)
                    want = result.summary()
                    row = risk.paths[(risk.paths["path"] == p)
                                     & (risk.paths["margin_mode"] == mode)
                                     & (risk.paths["leverage"] == lev)].iloc[0]
                    for key in ("final_equity", "liquidations", "fills", "rejected_orders",
                                "funding_paid", "fees_paid", "max_drawdown"):
                        assert row[key] == pytest.approx(want[key], rel=1e-12, abs=1e-9), key
                    assert row["refused_orders"] == result.rejections["reason"].isin(
                        carry).sum()
                    assert row["lowest_equity"] == pytest.approx(result.equity.min())


def test_hedge_mode_paths_are_the_runs_of_their_markets(history):
    # a hedge-mode BTC (a long and a short leg, the run's columns BTC_USDT.long/.short, both
    # on BTC's path) beside an ETH short, both modes: each path's figures as run() gives them
    from backtester import run

    boot = Bootstrap(history)
    book = {"BTC_USDT.long": 0.3, "BTC_USDT.short": -0.1, "ETH_USDT": -2.0}
    options = {"target_kind": "units", "position_mode": {"BTC_USDT": "hedge"}}
    risk = liquidation_risk(history, book, leverages=[5, 20], n_paths=3, days=30, seed=4,
                            bootstrap=boot, **options)
    paths = boot.paths(3, 30 * 24, seed=4)
    for p in range(3):
        market = paths.market(p)
        targets = pd.DataFrame({k: [v] for k, v in book.items()}, index=market.timestamps[:1])
        for mode in ("cross", "isolated"):
            for lev in (5, 20):
                want = run(market, targets, margin_mode=mode, leverage=lev, **options).summary()
                row = risk.paths[(risk.paths["path"] == p) & (risk.paths["margin_mode"] == mode)
                                 & (risk.paths["leverage"] == lev)].iloc[0]
                for key in ("final_equity", "liquidations", "fills", "funding_paid"):
                    assert row[key] == pytest.approx(want[key], rel=1e-12, abs=1e-9), key


def test_collateral_accounts_are_refused_by_name(history):
    with pytest.raises(ValueError, match="collateral coins \\(BTC\\)"):
        liquidation_risk(history, {"ETH_USDT": -1.0}, n_paths=2, days=5,
                         margin_modes=["cross"], leverages=[5], collateral={"BTC": 0.5},
                         target_kind="units")
