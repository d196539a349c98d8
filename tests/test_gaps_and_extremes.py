"""The engine at gaps and extremes: each case of issue 11's engine classes, by hand.

A gap through the liquidation price liquidates before any order fills (DESIGN.md §4,
step 0); the liquidation fee never exceeds what is left of the margin and only a deficit
past bankruptcy is a shortfall (§4, fees and shortfall); an order's open loss counts in
its cost (VENUES.md §2.2); funding larger than an isolated margin liquidates it; tiny
balances and dust never reach a fill. Every number is worked out in the comments.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from helpers import NAN, assert_same_figures, flat, market, run_general, units

from backtester import Market, load_venue, run


def bars(*prices):
    """One symbol's bars from (open, high, low, close) tuples, or a flat price."""
    return [[p if isinstance(p, tuple) else (p,) * 4] for p in prices]


def hold_then_close(n_bars, qty, close_at):
    """Buy ``qty`` units at the first decision; order the close at bar ``close_at``'s close."""
    targets = np.full((n_bars, 1), NAN)
    targets[0] = qty
    targets[close_at] = 0.0
    return targets


# --- 0. the gap comes before the orders -----------------------------------------------------
# 10x long 1 unit at 100: initial margin 10, MM 0.5%. Bar 2's close orders the position
# closed; bar 3 opens at 50, far through the liquidation price.
GAP = market(["X"], bars(100, 100, 100, (50, 55, 45, 52), 52))


def test_isolated_position_gapped_through_is_liquidated_before_its_close_order_fills():
    r = run(GAP, hold_then_close(5, 1.0, 2), margin_mode="isolated", leverage=10,
            initial_balance=1000, **flat(liq_fee=0.01))
    liq = r.liquidations
    assert len(liq) == 1 and bool(liq["gapped"].iloc[0])
    assert liq["bar"].iloc[0] == 3 and liq["price"].iloc[0] == 50.0
    # realized 1 x (50 - 100) = -50 against a margin of 10: 40 past bankruptcy (price 90)
    assert liq["bankruptcy_price"].iloc[0] == pytest.approx(90.0)
    assert liq["realized_pnl"].iloc[0] == pytest.approx(-50.0)
    assert liq["shortfall"].iloc[0] == pytest.approx(40.0)
    # nothing was left for the 1% fee on 50 of notional: charged 0, waived 0.50
    assert liq["fee"].iloc[0] == 0.0
    assert liq["fee_waived"].iloc[0] == pytest.approx(0.5)
    assert liq["margin_lost"].iloc[0] == pytest.approx(10.0)
    # the close order finds no position: refused, not filled at 50
    assert r.rejections["reason"].tolist() == ["position_liquidated_at_open"]
    assert r.rejections["bar"].tolist() == [3]
    assert r.rejections["qty"].tolist() == [-1.0]  # the close of the 1 unit held
    assert (r.fills["reason"] == "strategy").sum() == 1
    # the trader lost the margin and nothing more: 1,000 - 10
    assert r.equity.iloc[-1] == pytest.approx(990.0)
    assert r.summary()["bankruptcy_shortfall"] == pytest.approx(40.0)


def test_cross_account_gapped_through_is_liquidated_before_its_close_order_fills():
    # balance 20: MB at the open of 50 is 20 - 50 = -30, below MM: liquidated at the open.
    # The wallet would end at -30: the 0.50 fee is waived and the 30 past bankruptcy is the
    # shortfall; the account ends at 0, not at -38 as it would if the order filled first
    r = run(GAP, hold_then_close(5, 1.0, 2), margin_mode="cross", leverage=10,
            initial_balance=20, **flat(liq_fee=0.01))
    liq = r.liquidations
    assert len(liq) == 1 and bool(liq["gapped"].iloc[0]) and liq["price"].iloc[0] == 50.0
    assert liq["equity_before"].iloc[0] == pytest.approx(-30.0)
    assert liq["fee"].iloc[0] == 0.0
    assert liq["fee_waived"].iloc[0] == pytest.approx(0.5)
    assert liq["shortfall"].iloc[0] == pytest.approx(30.0)
    assert liq["margin_lost"].iloc[0] == pytest.approx(20.0)
    assert r.rejections["reason"].tolist() == ["position_liquidated_at_open"]
    assert r.equity.iloc[-1] == 0.0
    assert r.account["wallet_balance"].min() == 0.0


def test_without_an_order_the_gap_liquidation_is_the_same():
    with_order = run(GAP, hold_then_close(5, 1.0, 2), margin_mode="isolated", leverage=10,
                     initial_balance=1000, **flat(liq_fee=0.01))
    targets = np.full((5, 1), NAN)
    targets[0] = 1.0
    without = run(GAP, targets, margin_mode="isolated", leverage=10, initial_balance=1000,
                  **flat(liq_fee=0.01))
    np.testing.assert_array_equal(with_order.output.liquidations, without.output.liquidations)
    np.testing.assert_array_equal(with_order.equity.to_numpy(), without.equity.to_numpy())


def test_an_order_for_another_symbol_still_fills_after_the_gap_liquidation():
    m = market(["X", "Y"], [[(100,) * 4, (10,) * 4], [(100,) * 4, (10,) * 4],
                            [(100,) * 4, (10,) * 4], [(50,) * 4, (10,) * 4]])
    targets = np.array([[1.0, NAN], [NAN, NAN], [0.0, 5.0], [NAN, NAN]])
    r = run(m, targets, margin_mode="isolated", leverage=10, initial_balance=1000, **flat())
    assert r.liquidations["symbol"].tolist() == ["X"]
    assert r.rejections["symbol"].tolist() == ["X"]
    buys = r.fills[(r.fills["symbol"] == "Y") & (r.fills["reason"] == "strategy")]
    assert buys["qty"].tolist() == [5.0] and buys["bar"].tolist() == [3]


# --- fees and shortfall ---------------------------------------------------------------------


def test_isolated_liquidation_fee_is_capped_at_what_is_left_and_nothing_is_a_shortfall():
    # 10x long 1 @ 100, margin 10, MM 0.5%, fee 2%: LP = (100 - 10) / (1 - 0.005) = 90.452...
    # At the LP the margin left is 10 + (90.452 - 100) = 0.452 (= MM there); the 2% fee due is
    # 1.809: 0.452 charged, 1.357 waived, no shortfall (the close is before bankruptcy, 90)
    m = market(["X"], bars(100, 100, (100, 100, 88, 89), 89))
    targets = np.full((4, 1), NAN)
    targets[0] = 1.0
    r = run(m, targets, margin_mode="isolated", leverage=10, initial_balance=1000,
            **flat(liq_fee=0.02))
    lp = 90 / 0.995
    left = 10 + (lp - 100)
    liq = r.liquidations.iloc[0]
    assert liq["price"] == pytest.approx(lp)
    assert liq["fee"] == pytest.approx(left)
    assert liq["fee_waived"] == pytest.approx(0.02 * lp - left)
    assert liq["shortfall"] == 0.0
    assert liq["margin_lost"] == pytest.approx(10.0)
    s = r.summary()
    assert s["liquidation_fees"] == pytest.approx(left)
    assert s["liquidation_fees_waived"] == pytest.approx(0.02 * lp - left)
    assert s["bankruptcy_shortfall"] == 0.0
    assert r.equity.iloc[-1] == pytest.approx(990.0)


def test_readme_default_isolated_run_has_no_shortfall_and_its_waived_fees_balance_the_books():
    # the default run never closes a position past its bankruptcy price (no gap on the
    # embedded hourly data is that deep): every liquidation's fee is at most what was left
    from backtester import load_market
    from strategies import hedged_pair

    m = load_market()
    r = run(m, hedged_pair(m, exposure=2.0), target_kind="equity", leverage=20,
            margin_mode="isolated")
    liq = r.liquidations
    assert len(liq) > 0
    assert (liq["shortfall"] == 0.0).all()
    # what a close left of its margin: its realized PnL plus the margin behind it,
    # qty x (entry - bankruptcy price). (A partial cut, issue 12, is paid from the whole
    # position's margin balance, VENUES.md §2.7: the close after it, in the same event, then
    # has that much less, so the event as a whole charges at most what the position had.)
    left = liq["realized_pnl"] + liq["qty"] * (liq["entry_price"] - liq["bankruptcy_price"])
    closes = ~liq["partial"]
    assert (liq["fee"][closes] <= left[closes] + 1e-9).all()
    for _, event in liq.groupby("event"):
        first = event.iloc[0]  # the position at the trigger: every record's qty together
        had = event["qty"].sum() * (first["price"] - first["bankruptcy_price"])
        if not event["partial"].all():
            assert event["fee"].sum() <= had + 1e-9
    # the fee due is the symbol's clearance rate in force at the bar (binance_usdm.toml's
    # exchangeInfo rates: 2% BTCUSDT, 3% ETHUSDT in 2021-24) on the closed notional
    venue = load_venue("binance_usdm")
    rates = [venue.spec(sym, m.index[bar]).liquidation_fee
             for sym, bar in zip(liq["symbol"], liq["bar"], strict=True)]
    assert set(rates) <= {0.02, 0.03, 0.0125}
    assert liq["fee"].to_numpy() + liq["fee_waived"].to_numpy() == pytest.approx(
        np.array(rates) * (liq["qty"].abs() * liq["price"]).to_numpy(), rel=1e-12)


def test_okx_position_gapped_past_bankruptcy_is_closed_whole_not_cut():
    # OKX CHZ-USDT-SWAP (10 CHZ a contract): 40,000 contracts is tier 5, which would be cut to
    # tier 3's cap (15,000) if solvent. Long 400,000 CHZ @ 0.1 at 10x isolated: margin 4,000.
    # The next open at 0.05 loses 20,000: past bankruptcy (0.09), so the whole position is
    # closed there, the 4,000 margin lost and the 16,000 beyond it the shortfall
    m = market(["CHZ_USDT"], bars(0.1, 0.1, (0.05, 0.05, 0.05, 0.05), 0.05))
    targets = np.full((4, 1), NAN)
    targets[0] = 400_000.0
    r = run(m, targets, venue="okx_swap", margin_mode="isolated", leverage=10,
            initial_balance=100_000)
    liq = r.liquidations
    assert len(liq) == 1 and not bool(liq["partial"].iloc[0])
    assert liq["qty"].iloc[0] == 400_000.0
    assert liq["margin_lost"].iloc[0] == pytest.approx(4_000.0)
    assert liq["shortfall"].iloc[0] == pytest.approx(16_000.0)
    assert liq["fee"].iloc[0] == 0.0
    fee_open = r.fills["fee"].iloc[0]
    assert r.equity.iloc[-1] == pytest.approx(100_000 - 4_000 - fee_open)


def test_okx_solvent_gap_still_cuts_a_tier():
    # the same position gapping to 0.0905 (past the LP, before bankruptcy at 0.09): cut first
    m = market(["CHZ_USDT"], bars(0.1, 0.1, (0.0905,) * 4, 0.0905))
    targets = np.full((4, 1), NAN)
    targets[0] = 400_000.0
    r = run(m, targets, venue="okx_swap", margin_mode="isolated", leverage=10,
            initial_balance=100_000)
    liq = r.liquidations
    assert bool(liq["partial"].iloc[0])
    assert (liq["shortfall"] == 0.0).all()
    assert (liq["margin_lost"] <= 4_000.0 + 1e-9).all()


# --- the open loss ------------------------------------------------------------------------------
# Binance BTCUSDT, fees 0, fills at the close; last 30,000, mark 1.5% below at 29,550. A buy
# at 30,000 is 450 a unit worse than the mark: its cost is IM (300 a unit at 100x) + 450.

def open_loss_run(qty, balance):
    last = np.full(3, 30_000.0)
    mark = last * 0.985
    m = Market.from_arrays(["BTC_USDT"], last, last, last, last,
                           mark=(mark, mark, mark, mark))
    targets = np.full((3, 1), NAN)
    targets[0] = qty
    return run(m, targets, venue="binance_usdm", margin_mode="cross", leverage=100,
               fill_at="close", initial_balance=balance,
               venue_overrides=dict(taker_fee=0.0, maker_fee=0.0))


def test_open_loss_counts_in_the_cost_of_an_order():
    # 1.5 units: 1.5 x (300 + 450) = 1,125 > 600 available: rejected. Counting the initial
    # margin only (450) it would fill and the account would close the bar at 600 - 675 < 0
    r = open_loss_run(1.5, 600.0)
    rej = r.rejections
    assert rej["reason"].tolist() == ["insufficient_margin"]
    assert rej["required"].iloc[0] == pytest.approx(1_125.0)
    assert rej["available"].iloc[0] == pytest.approx(600.0)
    assert len(r.fills) == 0 and r.equity.min() == 600.0


def test_an_order_whose_open_loss_fits_fills_and_equity_shows_it():
    # 0.5 units: 0.5 x 750 = 375 <= 600: fills; equity at the mark 600 - 0.5 x 450 = 375
    r = open_loss_run(0.5, 600.0)
    assert r.fills["qty"].tolist() == [0.5]
    assert r.equity.iloc[0] == pytest.approx(375.0)
    assert np.isfinite(r.account["margin_ratio"]).all()


# --- funding beyond margin ------------------------------------------------------------------


def test_isolated_funding_larger_than_the_margin_liquidates_before_an_order_in_that_bar():
    # 10x long 1 @ 100 isolated: margin 10. At 08:00 a funding rate of 20% charges 20: the
    # margin goes to -10, the position is liquidated at the open (mark 100): 10 of the
    # payment was beyond its margin, the shortfall (the liquidation itself loses no more
    # margin: the funding took it); the order to add 1 unit that bar is void
    m = market(["X"], bars(*[100] * 10))
    rate = np.full((10, 1), NAN)
    rate[8] = 0.2
    m = Market.from_arrays(["X"], m.open, m.high, m.low, m.close, funding_rate=rate)
    targets = np.full((10, 1), NAN)
    targets[0] = 1.0
    targets[7] = 2.0
    with pytest.warns(UserWarning, match="funding rate"):  # 20% is implausible: recorded
        r = run(m, targets, margin_mode="isolated", leverage=10, initial_balance=1000,
                **flat())
    assert any("funding rate" in w for w in r.warnings)
    assert r.funding["payment"].tolist() == [pytest.approx(20.0)]
    liq = r.liquidations
    assert liq["bar"].tolist() == [8] and liq["price"].tolist() == [100.0]
    assert liq["shortfall"].iloc[0] == pytest.approx(10.0)
    assert liq["margin_lost"].iloc[0] == 0.0
    assert r.rejections["reason"].tolist() == ["position_liquidated_at_open"]
    assert r.rejections["qty"].tolist() == [1.0]  # 2 wanted, 1 held before the open
    # the trader lost the margin (10), no more: 990, wallet untouched by the isolated leg
    assert r.equity.iloc[-1] == pytest.approx(990.0)


def quiet_and_general(m, targets, **options):
    """``run(m, targets, **options)``, which hands the bars where nothing happens but funding
    and the close to the bar loop's quiet stretch (``engine.kernel.quiet_stretch``), and the
    same run with every bar through the general path, recording each bar's positions and
    not: they must agree to the bit. Returns the first."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a 20% funding rate warns: implausible)
        quiet = run(m, targets, **options)
        for recorded in (False, True):
            assert_same_figures(quiet, run_general(m, targets, record_positions=recorded,
                                                   **options))
    return quiet


def held_through_funding(mode, balance, bar8, rate8):
    """A long of 1 unit at 100 and 10x (``mode`` margin), opened at bar 1 and held: bar 8 is
    ``bar8`` (a price or OHLC) with funding ``rate8`` at its open, every other bar 100 with
    no funding (``quiet_and_general``)."""
    m = market(["X"], bars(*([100] * 8 + [bar8] + [100] * 3)))
    rate = np.full((12, 1), NAN)
    rate[8] = rate8
    m = Market.from_arrays(["X"], m.open, m.high, m.low, m.close, funding_rate=rate)
    targets = np.full((12, 1), NAN)
    targets[0] = 1.0
    return quiet_and_general(m, targets, margin_mode=mode, leverage=10, initial_balance=balance,
                             **flat())


@pytest.mark.parametrize("mode", ["cross", "isolated"])
def test_a_held_symbol_without_a_bar_at_a_funding_time_pays_at_its_last_mark(mode):
    # a long of 1 X at 100 (bar 1), X rising to 106 at bar 6's close; X has no bar 7, whose
    # open is a funding time (1%): X pays at its last mark, bar 6's close: 1 x 106 x 1% = 1.06.
    # Bars 2-6 are the quiet stretch's, which stores its bars' marks at once where a funding
    # open reads them (and where it ends), not bar by bar
    x = [100, 100, 101, 102, 103, 104, 106, (NAN,) * 4, 107, 107]
    rows = [[p if isinstance(p, tuple) else (p,) * 4, (50.0,) * 4] for p in x]
    rate = np.full((10, 2), NAN)
    rate[7, 0] = 0.01
    m = market(["X", "Y"], rows, funding_rate=rate)
    r = quiet_and_general(m, units(10, [1.0, 0.0]), margin_mode=mode, leverage=10,
                          initial_balance=1000, **flat())
    assert r.funding["bar"].tolist() == [7]
    assert r.funding["payment"].tolist() == [pytest.approx(1.06)]


def test_isolated_funding_beyond_the_margin_in_a_quiet_stretch_liquidates_at_the_open():
    # margin 10; the 20% rate charges 20 at bar 8's open: the margin goes to -10 and the
    # position is liquidated there at 100, 10 of the payment beyond its margin (the shortfall)
    r = held_through_funding("isolated", 1000, 100, 0.2)
    assert r.funding["bar"].tolist() == [8]
    assert r.funding["payment"].tolist() == [pytest.approx(20.0)]
    liq = r.liquidations
    assert liq["bar"].tolist() == [8] and liq["price"].tolist() == [100.0]
    assert liq["shortfall"].iloc[0] == pytest.approx(10.0)
    assert r.equity.iloc[-1] == pytest.approx(990.0)


def test_an_isolated_gap_past_the_liquidation_price_at_a_funding_time_pays_no_funding():
    # margin 10, liquidation price (100 - 10) / (1 - 0.005) = 90.45: bar 8 opens at 80, so the
    # position is liquidated at that open, before the funding there (it pays none), at 80:
    # 20 lost, 10 past its margin (the shortfall); the trader loses the margin
    r = held_through_funding("isolated", 1000, 80, 0.0001)
    assert len(r.funding) == 0
    liq = r.liquidations
    assert liq["bar"].tolist() == [8] and liq["price"].tolist() == [80.0]
    assert liq["gapped"].tolist() == [True]
    assert liq["shortfall"].iloc[0] == pytest.approx(10.0)
    assert r.equity.iloc[-1] == pytest.approx(990.0)


def test_cross_funding_that_leaves_no_margin_balance_liquidates_at_the_open():
    # balance 12, maintenance 0.5: the 20% rate charges 20 at bar 8's open, the wallet goes to
    # -8, below the maintenance margin: the account is liquidated at that open, at 100
    r = held_through_funding("cross", 12, 100, 0.2)
    assert r.funding["bar"].tolist() == [8]
    assert r.funding["payment"].tolist() == [pytest.approx(20.0)]
    liq = r.liquidations
    assert liq["bar"].tolist() == [8] and liq["price"].tolist() == [100.0]
    assert r.equity.iloc[-1] == pytest.approx(0.0)


def test_a_cross_gap_past_the_liquidation_price_at_a_funding_time_pays_no_funding():
    # balance 12: liquidation price (100 - 12) / (1 - 0.005) = 88.44; bar 8 opens at 80: the
    # account is liquidated at that open, before the funding, 8 past what it held
    r = held_through_funding("cross", 12, 80, 0.0001)
    assert len(r.funding) == 0
    liq = r.liquidations
    assert liq["bar"].tolist() == [8] and liq["price"].tolist() == [80.0]
    assert liq["shortfall"].iloc[0] == pytest.approx(8.0)
    assert r.equity.iloc[-1] == pytest.approx(0.0)


def test_a_cross_payment_before_an_isolated_one_that_liquidates_is_paid_once():
    # X cross and Y isolated, each long 1 at 100 and 10x. At bar 8's open (X at 101) X pays
    # 1 x 101 x 0.1% = 0.101 from the wallet, then Y's 20% charges 20 against its margin of
    # 10: Y is liquidated at that open, 10 past its margin. X's payment is made once.
    m = market(["X", "Y"], [[(100,) * 4] * 2] * 8 + [[(101,) * 4, (100,) * 4]]
               + [[(101,) * 4, (100,) * 4]] * 3)
    rate = np.full((12, 2), NAN)
    rate[8] = [0.001, 0.2]
    m = Market.from_arrays(["X", "Y"], m.open, m.high, m.low, m.close, funding_rate=rate)
    targets = np.full((12, 2), NAN)
    targets[0] = [1.0, 1.0]
    r = quiet_and_general(m, targets, margin_mode={"X": "cross", "Y": "isolated"},
                          leverage=10, initial_balance=1000, **flat())
    assert r.funding["payment"].tolist() == [pytest.approx(0.101), pytest.approx(20.0)]
    assert r.liquidations["symbol"].tolist() == ["Y"]
    assert r.liquidations["bar"].tolist() == [8]
    # the wallet: 1000 - 10 (Y's margin) - 0.101 (X's funding); X's unrealized PnL +1
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(1000 - 10 - 0.101)
    assert r.equity.iloc[-1] == pytest.approx(1000 - 10 - 0.101 + 1)


# --- extremes: tiny balances and dust ---------------------------------------------------------


@pytest.mark.parametrize("balance", [5e-324, 1e-300, 1e-15])
def test_a_vanishing_balance_runs_without_error_or_dust(balance):
    m = market(["BTC_USDT"], bars(30_000, 30_000, 29_000, 31_000))
    targets = np.full((4, 1), 1.0)
    r = run(m, targets, target_kind="equity", venue="binance_usdm", leverage=20,
            reduce_to_fit=True, initial_balance=balance)
    assert np.isfinite(r.account.to_numpy()).all()
    assert len(r.fills) == 0 and len(r.liquidations) == 0
    # Binance's quantity step (0.001 BTC) rounds what the balance allows to nothing
    assert set(r.rejections["reason"]) <= {"dust", "insufficient_margin", "rounds_to_zero"}


def test_an_order_of_dust_is_refused():
    # 1e-13 BTC is 3e-9 USDT of notional, below a billionth of the 10,000 equity (1e-5): on a
    # venue without order filters the dust rule refuses it; on Binance it rounds to no step
    m = market(["BTC_USDT"], bars(30_000, 30_000, 30_000))
    targets = np.full((3, 1), NAN)
    targets[0] = 1e-13
    r = run(m, targets, venue="flat", leverage=10, initial_balance=10_000)
    assert r.rejections["reason"].tolist() == ["dust"]
    assert len(r.fills) == 0
    r = run(m, targets, venue="binance_usdm", leverage=10, initial_balance=10_000)
    assert r.rejections["reason"].tolist() == ["rounds_to_zero"]
    assert len(r.fills) == 0


def test_reduce_to_fit_never_fills_the_crumbs_of_a_spent_balance():
    # the first oversized order is cut to what the balance allows; the next finds (up to
    # rounding) nothing available: refused, where it used to fill about 1e-18 units
    m = market(["X"], bars(*[100] * 6))
    targets = np.full((6, 1), NAN)
    targets[0] = 200.0
    targets[1] = 250.0
    targets[2] = 300.0
    r = run(m, targets, margin_mode="cross", leverage=10, initial_balance=1000,
            reduce_to_fit=True, **flat(taker=0.001))
    assert len(r.fills) == 1
    # 1,000 / (100 x (1/10 + 0.001 taker)) = 99.0099 units
    assert r.fills["qty"].iloc[0] == pytest.approx(1000 / 10.1)
    assert r.fills["reason"].iloc[0] == "reduce_only"
    assert r.rejections["reason"].tolist() == ["insufficient_margin"] * 2


def test_a_reduction_is_filled_once_whatever_its_rounding():
    # equity-fraction targets that only shrink the position: one fill each, never a second
    # fill of the rounding left over
    rng = np.random.default_rng(3)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    m = Market.from_arrays(["X"], close, close * 1.001, close * 0.999, close)
    targets = np.full((200, 1), NAN)
    targets[0] = 3.0
    targets[1::2, 0] = np.linspace(2.9, 0.1, 100)
    r = run(m, targets, target_kind="equity", leverage=10, initial_balance=1000, **flat())
    fills = r.fills[r.fills["reason"] == "strategy"]
    assert fills["bar"].is_unique
    notional = (fills["qty"] * fills["price"]).abs()
    assert notional.min() > 1e-3


# --- fills past the bankruptcy price ------------------------------------------------------------


def test_a_close_filled_past_the_isolated_bankruptcy_price_is_refused():
    # 10x long 1 isolated, filled with 1% slippage at 101 against a mark of 100: its margin is
    # the initial margin 10.1 plus the open loss 1 (VENUES.md §2.2), 11.1; bankruptcy price
    # 89.9, LP (101 - 11.1) / 0.995 = 90.352. The mark drifts to 90.6 (not liquidated) and the
    # close order fills 1% lower, at 89.694: it would lose 11.306, more than the margin, which
    # no venue allows: refused, the position stays. At 92 (fill 91.08, loss 9.92) it fills
    def close_at(price):
        m = market(["X"], bars(100, 100, price, price, price))
        return run(m, hold_then_close(5, 1.0, 2), margin_mode="isolated", leverage=10,
                   initial_balance=1000, slippage=0.01, **flat())

    refused = close_at(90.6)
    rej = refused.rejections
    assert rej["reason"].tolist() == ["past_bankruptcy_price"]
    assert rej["required"].iloc[0] == pytest.approx(101 - 90.6 * 0.99)
    assert rej["available"].iloc[0] == pytest.approx(11.1)
    assert len(refused.liquidations) == 0
    assert refused.positions["X"].iloc[-1] == 1.0
    filled = close_at(92.0)
    assert len(filled.rejections) == 0 and filled.positions["X"].iloc[-1] == 0.0
    assert filled.equity.iloc[-1] == pytest.approx(1000 - (101 - 92 * 0.99))


def test_a_close_filled_past_the_cross_bankruptcy_price_is_refused():
    # cross, balance 20, 10x long 1 @ 100 at the close. At a mark of 81 the margin balance is
    # 1 (above MM 0.405); a close filled 1% below the mark (80.19) loses 0.81 more: it fills,
    # leaving 0.19; filled 2% below (79.38) it would lose 1.62: refused
    def close_with(slip):
        mark = np.array([100.0, 81.0, 81.0, 81.0])
        last = mark * np.array([1.0, 1 - slip, 1 - slip, 1 - slip])
        m = Market.from_arrays(["X"], last, mark, last, last, mark=(mark, mark, mark, mark))
        targets = np.array([[1.0], [0.0], [NAN], [NAN]])
        return run(m, targets, margin_mode="cross", leverage=10, initial_balance=20,
                   fill_at="close", **flat())

    ok = close_with(0.01)
    assert ok.positions["X"].iloc[-1] == 0.0
    assert ok.equity.iloc[-1] == pytest.approx(20 - (100 - 80.19))
    refused = close_with(0.02)
    rej = refused.rejections
    assert rej["reason"].tolist() == ["past_bankruptcy_price"]
    assert rej["required"].iloc[0] == pytest.approx(81 - 79.38)
    assert rej["available"].iloc[0] == pytest.approx(1.0)
