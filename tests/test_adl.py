"""Auto-deleveraging: the ranking scores by the venues' formulas (VENUES.md §2.7, §3.8) and
the ADL stress scenario (``backtester.risk``).

Every expected number is worked out by hand next to it, from the formulas:

- Binance: ``max(0, U) / max(1, wallet) x MM / margin balance``;
- Bybit: ``PnL% = U / (|q| E)``, leverage ``|q| P / margin balance``, score ``PnL% x
  leverage`` in profit, ``PnL% / leverage`` otherwise;

an isolated position backed by its own margin ``M`` (margin balance ``M + U``, its own MM),
a cross one by the account (wallet, margin balance, every cross position's MM).
"""

from __future__ import annotations

import doctest
import warnings

import numpy as np
import pandas as pd
import pytest
from helpers import NAN, flat, market
from hypothesis import event, given
from hypothesis import strategies as st
from numba import njit
from test_invariants import check, examples, scenarios

import backtester.risk.adl
from backtester import Market, Result, RunConfig, run
from backtester.engine import enums
from backtester.engine.driver import Pause, execute
from backtester.prepare import prepare_run
from backtester.risk import adl_ranks, adl_stress
from backtester.strategy import Callback, order_target

# both symbols move together: the long A gains what the short B loses
BAR = (100.0, 100.0, 100.0, 100.0)
RANKS_BARS = [[BAR, BAR], [(100, 104, 100, 104)] * 2, [(104, 104, 97, 98)] * 2]
HEDGE = [1.0, -1.0]  # decided at the first close, filled at bar 1's open (100)


def targets(n_bars, rows=(0,)):
    out = np.full((n_bars, 2), NAN)
    out[list(rows)] = HEDGE
    return out


def bybit(**more):
    """Bybit's model (classic margin on the entry value, 2024), without fees or filters;
    ETH priced with BTC's risk limits by choice."""
    return dict(venue="bybit_linear", stand_in={"ETH_USDT": "BTC_USDT"},
                venue_overrides={"taker_fee": 0.0}, order_filters=False, **more)


def two(symbols, bars, start="2024-01-01"):
    """A market of two symbols with the same (open, high, low, close) bars, from ``start``."""
    arr = np.array(bars, dtype=float)  # (T, 2, 4)
    return Market.from_arrays(list(symbols), *(arr[..., k] for k in range(4)), start=start)


def ranks_run(mode, venue_options, symbols=("A", "B"), start="2024-01-01", leverage=10):
    return run(two(symbols, RANKS_BARS, start), targets(3), margin_mode=mode, leverage=leverage,
               initial_balance=100.0, record_margins=True, **venue_options)


# --- the scores, by hand ---------------------------------------------------------------------
# long A and short B of 1 unit at 100, 10x (isolated margin 10 each); bar 1 closes at 104
# (U_A = +4, U_B = -4), bar 2 at 98 (U_A = -2, U_B = +2); flat venue MM = 0.5% x notional.

BINANCE_ISOLATED = [
    [NAN, NAN],
    [4 / 10 * (0.005 * 104) / (10 + 4), 0.0],  # B loses: max(0, U) = 0
    [0.0, 2 / 10 * (0.005 * 98) / (10 + 2)],
]
BINANCE_CROSS = [  # wallet 100, margin balance 100 + 4 - 4, MM of both legs
    [NAN, NAN],
    [4 / 100 * (0.005 * 208) / 100, 0.0],
    [0.0, 2 / 100 * (0.005 * 196) / 100],
]
BYBIT_ISOLATED = [
    [NAN, NAN],
    [0.04 * 104 / (10 + 4), -0.04 / (104 / (10 - 4))],
    [-0.02 / (98 / (10 - 2)), 0.02 * 98 / (10 + 2)],
]
BYBIT_CROSS = [
    [NAN, NAN],
    [0.04 * 104 / 100, -0.04 / (104 / 100)],
    [-0.02 / (98 / 100), 0.02 * 98 / 100],
]


@pytest.mark.parametrize("mode, expected", [("isolated", BINANCE_ISOLATED),
                                            ("cross", BINANCE_CROSS)])
def test_binance_scores_are_pnl_over_wallet_times_margin_ratio(mode, expected):
    result = ranks_run(mode, flat())
    ranks = adl_ranks(result)
    assert ranks.attrs["adl_formula"] == "binance"
    np.testing.assert_allclose(ranks.to_numpy(), expected, rtol=1e-12, atol=0)
    # the inputs as recorded: isolated, the position's own; cross, the account's
    margins = result.margins
    if mode == "isolated":
        assert margins["wallet_balance"].iloc[1].tolist() == pytest.approx([10.0, 10.0])
        assert margins["margin_balance"].iloc[2].tolist() == pytest.approx([8.0, 12.0])
        assert margins["maintenance_margin"].iloc[1].tolist() == pytest.approx([0.52, 0.52])
    else:
        assert margins["margin_balance"].iloc[1].tolist() == pytest.approx([100.0, 100.0])
        assert margins["maintenance_margin"].iloc[2].tolist() == pytest.approx([0.98, 0.98])
    assert margins["entry_price"].iloc[1].tolist() == [100.0, 100.0]
    assert margins.iloc[0].isna().all()  # flat at the first close
    pd.testing.assert_frame_equal(result.adl_ranks(), ranks)


@pytest.mark.parametrize("mode, expected", [("isolated", BYBIT_ISOLATED),
                                            ("cross", BYBIT_CROSS)])
def test_bybit_scores_are_pnl_times_or_over_effective_leverage(mode, expected):
    result = ranks_run(mode, bybit(), symbols=("BTC_USDT", "ETH_USDT"), start="2024-06-01")
    ranks = adl_ranks(result)
    assert ranks.attrs["adl_formula"] == "bybit"
    np.testing.assert_allclose(ranks.to_numpy(), expected, rtol=1e-12, atol=0)
    # a formula by choice: Binance's on Bybit's run (cross: the margin balance is 100)
    chosen = adl_ranks(result, formula="binance")
    assert chosen.attrs["adl_formula"] == "binance"
    if mode == "cross":
        # Bybit's classic MM is on the entry value: 0.5% x 100 per leg, whatever the mark
        np.testing.assert_allclose(chosen.iloc[1].to_numpy(), [4 / 100 * 1.0 / 100, 0.0],
                                   rtol=1e-12)


def test_binance_wallet_below_one_counts_as_one():
    # 125x isolated long of 1 at 100: margin 0.8 (< 1, so max(1, 0.8) = 1); at 100.5,
    # U = 0.5, MM = 0.005 x 100.5, margin balance 1.3
    m = market(["A"], [[BAR], [(100, 100.5, 100, 100.5)]])
    result = run(m, np.array([[1.0], [NAN]]), margin_mode="isolated", leverage=125,
                 record_margins=True, **flat())
    assert adl_ranks(result).iloc[1, 0] == pytest.approx(0.5 / 1 * (0.005 * 100.5) / 1.3,
                                                         rel=1e-12)


@pytest.mark.parametrize("venue, model", [("okx_swap", "okx"), ("kraken_spot", "kraken_spot")])
def test_venues_without_a_published_formula_name_binance_as_the_stand_in(venue, model):
    mode = "cross"
    result = ranks_run(mode, dict(venue=venue, stand_in={"*": "BTCUSDT"}
                                  if venue == "okx_swap" else {}, order_filters=False),
                       symbols=("BTC_USDT", "ETH_USDT"), leverage=3.0)
    ranks = adl_ranks(result)
    assert ranks.attrs["adl_formula"] == (
        f"binance (stand-in: VENUES.md gives no ADL formula for the {model} model)")
    np.testing.assert_array_equal(ranks.to_numpy(), adl_ranks(result, "binance").to_numpy())
    assert ranks.iloc[1, 0] > 0.0 and ranks.iloc[1, 1] == 0.0  # the long gains at bar 1


def test_ranks_need_the_margins_recorded():
    result = run(market(["A", "B"], RANKS_BARS), targets(3), **flat())
    with pytest.raises(ValueError, match="record_margins=True"):
        adl_ranks(result)
    with pytest.raises(ValueError, match="record_margins=True needs record_positions=True"):
        run(market(["A", "B"], RANKS_BARS), targets(3), record_margins=True,
            record_positions=False, **flat())
    with pytest.raises(ValueError, match="formula='okx'"):
        adl_ranks(ranks_run("cross", flat()), formula="okx")


# --- the stress scenario -----------------------------------------------------------------------
# A and B rise together from 100; a long A / short B hedge is opened at bar 1's open (100).
RISE = [(100, 100, 100, 100), (100, 103, 100, 103), (103, 106, 103, 106),
        (106, 115, 106, 115), (115, 125, 115, 125), (125, 135, 125, 132),
        (132, 133, 131, 132)]
STRESS_BARS = [[bar, bar] for bar in RISE]
N = len(RISE)


def stress(mode, *, at=2, leg="most_profitable", balance, leverage=10, rows=(0,), **options):
    return adl_stress(market(["A", "B"], STRESS_BARS), targets(N, rows), at=at, leg=leg,
                      margin_mode=mode, leverage=leverage, initial_balance=balance,
                      **flat(), **options)


def test_isolated_hedge_loses_its_profitable_leg_then_the_naked_short_is_liquidated():
    s = stress("isolated", balance=10_000.0)
    # ADL of the long A at bar 2's close: 1 unit at the mark 106, entry 100
    assert (s.leg, s.bar, s.time) == ("A", 2, pd.Timestamp("2024-01-01 02:00", tz="UTC"))
    assert (s.qty, s.price, s.entry_price, s.fee) == (1.0, 106.0, 100.0, 0.0)
    assert s.realized_pnl == 1.0 * (106 - 100)
    # its score there (base run): 6 / 10 x (0.005 x 106) / (10 + 6)
    assert s.score == pytest.approx(6 / 10 * 0.53 / 16, rel=1e-12)
    adl = s.stressed.fills[s.stressed.fills["reason"] == "adl"]
    assert adl[["bar", "symbol", "qty", "price", "fee", "position_after"]].values.tolist() \
        == [[2, "A", -1.0, 106.0, 0.0, 0.0]]
    assert (s.stressed.positions["A"].iloc[2:] == 0).all()
    # the naked short B (margin 10) is liquidated where 10 - (P - 100) = 0.005 P:
    # P = 110 / 1.005 = 109.45..., inside bar 3 (106 -> 115)
    liq = s.stressed.liquidations
    assert liq[["bar", "symbol"]].values.tolist() == [[3, "B"]]
    assert liq["price"].iloc[0] == pytest.approx(110 / 1.005, rel=1e-12)
    loss_b = 110 / 1.005 - 100
    assert s.stressed.equity.iloc[-1] == pytest.approx(10_000 + 6 - loss_b, rel=1e-12)
    # isolated legs stand alone: the base run loses B at the same bar, but keeps A's gain
    assert s.base.liquidations[["bar", "symbol"]].values.tolist() == [[3, "B"]]
    assert s.base.equity.iloc[-1] == pytest.approx(10_000 + 32 - loss_b, rel=1e-12)
    table = s.summary()
    assert table.loc["liquidations_after"].tolist() == [1, 1]
    assert table.loc["liquidated_after", "stressed"] == "B (bar 3)"
    assert table.loc["realized_pnl", "stressed"] == 6.0 and table.loc["leg", "base"] is None
    # worst margin ratio after bar 2: B's 0.005 x 106 / (10 - 6) at bar 2 is not after;
    # stressed, nothing is open after bar 3; base, A's (0.005 P) / (10 + P - 100), highest at
    # 115: 0.575 / 25
    assert table.loc["worst_margin_ratio_after", "stressed"] == 0.0
    assert table.loc["worst_margin_ratio_after", "base"] == pytest.approx(0.575 / 25, rel=1e-12)


def test_cross_hedge_survives_until_its_profitable_leg_is_taken_away():
    s = stress("cross", balance=25.0)
    assert (s.leg, s.bar, s.qty, s.price) == ("A", 2, 1.0, 106.0)
    assert s.realized_pnl == 6.0
    # score at bar 2 (base): 6 / 25 x (0.005 x (106 + 106)) / 25
    assert s.score == pytest.approx(6 / 25 * 1.06 / 25, rel=1e-12)
    # base: the legs offset, margin balance 25 at every close, never liquidated
    assert len(s.base.liquidations) == 0
    assert s.base.equity.iloc[-1] == pytest.approx(25.0, rel=1e-12)
    # stressed: wallet 25 + 6 = 31, the short alone: 31 - (P - 100) = 0.005 P at
    # P = 131 / 1.005 = 130.35, inside bar 5 (125 -> 135)
    liq = s.stressed.liquidations
    assert liq[["bar", "symbol", "mode"]].values.tolist() == [[5, "B", "cross"]]
    assert liq["price"].iloc[0] == pytest.approx(131 / 1.005, rel=1e-9)
    assert s.stressed.equity.iloc[-1] == pytest.approx(0.005 * 131 / 1.005, rel=1e-7)
    table = s.summary()
    assert table.loc["liquidations_after"].tolist() == [0, 1]
    # worst margin ratio after bar 2: base 0.005 x (2 x 132) / 25; stressed, at bar 4's
    # close, 0.005 x 125 / (31 - 25)
    assert table.loc["worst_margin_ratio_after"].tolist() == pytest.approx(
        [1.32 / 25, 0.625 / 6], rel=1e-12)
    assert table.loc["max_drawdown"].tolist() == pytest.approx(
        [0.0, 0.005 * 131 / 1.005 / 25 - 1], rel=1e-7, abs=1e-12)
    assert "ADL of A at bar 2" in s.describe()


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_worst_bar_is_where_the_legs_score_peaked(mode):
    # A's score at bars 1..6 (P = 103, 106, 115, 125, 132, 132): isolated U / 10 x 0.005 P /
    # (10 + U), cross U / 10000 x 0.005 (P_A + P_B) / 10000 (B gone in isolated from bar 3);
    # both rise to bar 5 and stay: the first highest is bar 5
    s = stress(mode, at="worst", balance=10_000.0)
    assert (s.bar, s.leg, s.price) == (5, "A", 132.0)
    expected = (32 / 10 * 0.66 / 42) if mode == "isolated" else (32 / 1e4 * 1.32 / 1e4)
    assert s.score == pytest.approx(expected, rel=1e-12)
    by_name = stress(mode, at="worst", leg="A", balance=10_000.0)
    assert by_name.bar == 5
    at_time = stress(mode, at=pd.Timestamp("2024-01-01 04:00", tz="UTC"), leg="B",
                     balance=10_000.0, leverage=2)
    assert (at_time.bar, at_time.leg, at_time.qty) == (4, "B", -1.0)
    assert at_time.realized_pnl == -1.0 * (125 - 100)  # a losing leg, forced by name


@pytest.mark.parametrize("mode", ["cross", "isolated"])
@pytest.mark.parametrize("fill_at, back_at, price", [("open", 4, 115.0), ("close", 3, 115.0)])
def test_reopen_brings_the_leg_back_at_the_next_target(mode, fill_at, back_at, price):
    # targets at rows 0 and 3: filled at bars 1 and 4 (fill_at="open") or at the closes of
    # bars 0 and 3 (fill_at="close"); 2x, so that nothing is liquidated
    rows = (0, 3)
    kept = stress(mode, balance=10_000.0, leverage=2, rows=rows, fill_at=fill_at, reopen=True)
    fills = kept.stressed.fills
    back = fills[(fills["symbol"] == "A") & (fills["bar"] > 2)]
    assert back[["bar", "qty", "price", "reason"]].values.tolist() == [
        [back_at, 1.0, price, "strategy"]]
    assert (kept.stressed.positions["A"].iloc[back_at:] == 1.0).all()
    assert (kept.stressed.positions["A"].iloc[2:back_at] == 0.0).all()
    dropped = stress(mode, balance=10_000.0, leverage=2, rows=rows, fill_at=fill_at)
    assert (dropped.stressed.positions["A"].iloc[2:] == 0.0).all()
    assert (dropped.stressed.positions["B"] == kept.stressed.positions["B"]).all()
    assert len(dropped.stressed.rejections) == 0


@njit
def hold_hedge(t, ctx, orders, params):
    order_target(orders, 0, params[0])
    order_target(orders, 1, params[1])
    return True


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_a_callback_loses_the_leg_for_good_or_gets_it_back_at_the_next_open(mode):
    m = market(["A", "B"], STRESS_BARS)
    strategy = Callback(hold_hedge, params=HEDGE)
    options = dict(margin_mode=mode, leverage=2, initial_balance=10_000.0, **flat())
    dropped = adl_stress(m, strategy, at=2, **options)
    assert dropped.leg == "A" and dropped.realized_pnl == 6.0
    assert (dropped.stressed.positions["A"].iloc[2:] == 0.0).all()
    assert (dropped.stressed.positions["B"] == -1.0).iloc[1:].all()
    assert len(dropped.stressed.rejections) == 0
    # reopened: the order it wrote at bar 2's close (before the ADL) fills at bar 3's open
    kept = adl_stress(m, strategy, at=2, reopen=True, **options)
    fills = kept.stressed.fills
    assert fills[fills["bar"] >= 2][["bar", "symbol", "qty", "price", "reason"]].values.tolist() \
        == [[2, "A", -1.0, 106.0, "adl"], [3, "A", 1.0, 106.0, "strategy"]]


def test_stress_refuses_what_adl_cannot_take():
    m = market(["A", "B"], STRESS_BARS)
    with pytest.raises(ValueError, match="leg 'A' holds no position at the close of bar 0"):
        adl_stress(m, targets(N), at=0, leg="A", **flat())
    with pytest.raises(ValueError, match="no position is in profit at the close of bar 0"):
        adl_stress(m, targets(N), at=0, **flat())
    with pytest.raises(ValueError, match=r"leg='C' is not a column of the run; the run's "
                                         "symbols are A, B"):
        adl_stress(m, targets(N), at=2, leg="C", **flat())
    with pytest.raises(ValueError, match="at=7: the market has bars 0 to 6"):
        adl_stress(m, targets(N), at=7, **flat())
    with pytest.raises(ValueError, match="is not a bar of the market"):
        adl_stress(m, targets(N), at="2024-01-01 02:30", **flat())
    with pytest.raises(ValueError, match="reopen=1: must be True or False"):
        adl_stress(m, targets(N), at=2, reopen=1, **flat())


def test_bybit_deleveraged_trader_pays_the_maker_fee():
    m = two(["BTC_USDT", "ETH_USDT"], STRESS_BARS, start="2024-06-01")
    s = adl_stress(m, targets(N), at=2, margin_mode="cross", leverage=10,
                   initial_balance=10_000.0, **bybit())
    assert s.formula == "bybit" and s.realized_pnl == 6.0
    assert s.fee == pytest.approx(0.0002 * 1 * 106, rel=1e-12)  # Bybit's maker fee, 0.02%
    assert s.stressed.equity.iloc[2] == pytest.approx(s.base.equity.iloc[2] - s.fee, rel=1e-12)


# --- on every input ----------------------------------------------------------------------------


@examples(80)
@given(scenarios(), st.integers(0, 2**32 - 1), st.booleans())
def test_a_forced_adl_keeps_the_books_and_changes_nothing_before_it(case, seed, reopen):
    forced_adl_holds(case, seed, reopen)


@examples(8)
@given(scenarios(callback=True), st.integers(0, 2**32 - 1), st.booleans())
def test_a_forced_adl_under_a_callback_keeps_the_books(case, seed, reopen):
    forced_adl_holds(case, seed, reopen)


def forced_adl_holds(case, seed, reopen):
    m, options, orders = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (generated data is suspicious on purpose)
        base = run(m, orders, record_margins=True, **options)
        q = base.positions.to_numpy()
        perp = base.margin_mode < enums.Mode.SPOT
        open_ = np.argwhere((q != 0.0) & perp[None, :])
        if not len(open_):
            event("nothing open at any close")
            return
        bar, column = open_[np.random.default_rng(seed).integers(len(open_))]
        leg = base.market.symbols[column]
        s = adl_stress(m, orders, at=int(bar), leg=leg, reopen=reopen, **options)
    event(f"deleveraged, {base.venue.name}")
    check(s.stressed)  # the books balance, equity from the fills alone, no loss past margin
    # the same run up to the ADL: every record before its bar, and its bar's fills before it
    before = s.stressed.account.iloc[:bar]
    pd.testing.assert_frame_equal(before, base.account.iloc[:bar])
    fills = s.stressed.fills
    pd.testing.assert_frame_equal(fills[fills["bar"] <= bar].iloc[:-1].reset_index(drop=True),
                                  base.fills[base.fills["bar"] <= bar].reset_index(drop=True))
    # the close: the whole position, at the mark of that close, realizing q (mark - entry)
    mark = base.market.frame("mark_close").ffill().iloc[bar, column]
    entry = base.margins["entry_price"].iloc[bar, column]
    assert (s.qty, s.price, s.entry_price) == (q[bar, column], mark, entry)
    adl = fills[fills["reason"] == "adl"]
    assert adl[["bar", "symbol", "qty"]].values.tolist() == [[bar, leg, -s.qty]]
    assert s.realized_pnl == pytest.approx(s.qty * (mark - entry), rel=1e-12,
                                           abs=1e-12 * abs(s.qty) * mark)
    # at the mark, the close moves nothing but the fee out of equity
    assert s.stressed.equity.iloc[bar] == pytest.approx(
        base.equity.iloc[bar] - s.fee, rel=1e-9, abs=1e-9 * base.initial_equity)
    if not reopen:
        assert (s.stressed.positions.iloc[bar:, column] == 0.0).all()


def test_docstring_examples():
    result = doctest.testmod(backtester.risk.adl, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(Result.adl_ranks, "Result.adl_ranks", globs={}):
        runner.run(test)
    assert runner.tries >= 4 and runner.failures == 0


# --- the pause the stress runs through ---------------------------------------------------------


@njit
def flip_flop(t, ctx, orders, params):
    order_target(orders, 0, 1.0 if t % 2 == 0 else -1.0)
    order_target(orders, 1, -1.0 if t % 2 == 0 else 1.0)
    return True


@pytest.mark.parametrize("pause_bar", [0, 10, 23, 24, 47])
@pytest.mark.parametrize("form", ["targets", "callback"])
def test_a_run_paused_for_nothing_is_the_run(form, pause_bar):
    # Bybit's margin formula changes on 2025-09-02 (bar 24 of a run from 2025-09-01): the
    # run stops there to put it in force; a callback trading every bar outgrows the first
    # fill buffer (64 rows): the run stops to grow it. A pause on top changes nothing.
    rng = np.random.default_rng(7)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, (48, 2)), axis=0))
    m = Market.from_arrays(["BTC_USDT", "ETH_USDT"], close, close * 1.01, close * 0.99, close,
                           start="2025-09-01")
    orders = (Callback(flip_flop) if form == "callback"
              else np.where(rng.random((48, 2)) < 0.5, rng.normal(0, 2, (48, 2)), NAN))
    prepared = prepare_run(m, orders, RunConfig(record_margins=True, leverage=5,
                                                **bybit(margin_mode="isolated")))
    assert list(prepared.inputs.versions.bars) == [0, 24]
    plain = execute(prepared.inputs)
    paused = execute(prepared.inputs, Pause(pause_bar, lambda book, records, outputs, orders:
                                            records))
    assert len(plain.fills) > 64 or form == "targets"
    for name in ("account", "fills", "liquidations", "funding", "rejections", "positions",
                 "liquidation_prices", "margins", "state"):
        np.testing.assert_array_equal(getattr(paused, name), getattr(plain, name), err_msg=name)


# --- real history ------------------------------------------------------------------------------


def test_adl_of_a_btc_eth_hedge_on_binance_history_closes_at_the_files_mark(shared_data_dir):
    folder = shared_data_dir / "binance_futures"
    if not (folder / "BTC_USDT-1h.parquet").exists():
        pytest.skip("shared Binance futures data not present")
    from backtester import load_market

    m = load_market(folder, symbols=["BTC_USDT", "ETH_USDT"], timeframe="1h",
                    start="2021-01-01", end="2021-07-01")
    hedge = np.full((m.n_bars, 2), NAN)
    hedge[0] = [0.5, -10.0]  # decided at the first close, filled at the next open
    s = adl_stress(m, hedge, at="worst", margin_mode="cross", leverage=5,
                   initial_balance=50_000.0, venue="binance_usdm")
    # read straight from the files: the fill at 01:00's open, the mark at the ADL's close
    bars = {sym: pd.read_parquet(folder / f"{sym}-1h.parquet").set_index("timestamp")
            for sym in ("BTC_USDT", "ETH_USDT")}
    marks = pd.read_parquet(folder / f"{s.leg}_mark-1h.parquet").set_index("timestamp")
    entry = bars[s.leg]["open"].loc[pd.Timestamp("2021-01-01 01:00", tz="UTC")]
    qty = 0.5 if s.leg == "BTC_USDT" else -10.0
    mark = marks["close"].loc[s.time]
    assert (s.qty, s.entry_price, s.price) == (qty, entry, mark)
    assert s.realized_pnl == pytest.approx(qty * (mark - entry), rel=1e-12)
    assert qty * (mark - entry) > 0  # ADL took a leg in profit
    assert s.score == adl_ranks(s.base)[s.leg].max()
    assert (s.stressed.positions[s.leg].iloc[s.bar:] == 0.0).all()
