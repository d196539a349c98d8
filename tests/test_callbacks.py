"""Event-driven strategies: callbacks against targets, their orders, spot legs, their errors.

Expected numbers are worked out by hand in the comments (DESIGN.md §3 definitions,
VENUES.md §2.5 isolated closed forms), or come from the same logic run as targets.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import NAN, flat, market, random_market, script
from numba import njit

from backtester import run
from backtester.strategy import (
    Callback,
    Mode,
    State,
    StrategyError,
    add_margin,
    isolated_margin_for,
    liquidation_price,
    order_delta,
    order_target,
    remove_margin,
    set_leverage,
    set_margin_mode,
)

REPO = Path(__file__).resolve().parents[1]


@njit
def replay(t, ctx, orders, params):
    """Send ``ctx.series[0, t]`` as targets: targets computed in advance, as a callback."""
    wrote = False
    for i in range(ctx.close.shape[1]):
        target = ctx.series[0, t, i]
        if target == target:
            order_target(orders, i, target)
            wrote = True
    return wrote


def scripted(n_bars, n, steps):
    """series for ``script``: steps = {(bar, field, symbol): value}."""
    series = np.full((5, n_bars, n), NAN)
    for (t, f, i), v in steps.items():
        series[f, t, i] = v
    return Callback(script, series=series)


# --- the same logic as targets and as a callback ------------------------------------------------





@pytest.mark.parametrize("seed,fill_at", [(0, "open"), (1, "open"), (2, "close"), (3, "open")])
def test_callback_replaying_targets_gives_identical_results(seed, fill_at):
    # mixed modes, leverage 20, fees, slippage and a liquidation fee: liquidations, funding
    # and rejections all happen; the callback's orders wait in the order array when the
    # record buffers grow (the kernel stops and resumes), and must come out the same
    m, targets = random_market(seed)
    modes = {"A": "cross", "B": "isolated", "C": ["cross", "isolated"][seed % 2]}
    options = dict(target_kind="equity", leverage=20, slippage=0.0005, fill_at=fill_at,
                   margin_mode=modes, **flat(taker=0.0005, liq_fee=0.01))
    a = run(m, targets, **options)
    b = run(m, Callback(replay, series=targets), **options)
    assert len(a.liquidations) > 0 and len(a.fills) > 50
    np.testing.assert_array_equal(a.account.to_numpy(), b.account.to_numpy())
    for name in ("fills", "liquidations", "funding", "rejections"):
        np.testing.assert_array_equal(getattr(a.output, name), getattr(b.output, name))
    np.testing.assert_array_equal(a.positions.to_numpy(), b.positions.to_numpy())


def test_hedged_pair_as_targets_and_as_callback_agree_on_the_embedded_data():
    from backtester import load_market
    from strategies.hedged_pair import hedged_pair, hedged_pair_strategy

    m = load_market()
    for hedge in ("notional", "beta"):
        vectorized = run(m, hedged_pair(m, exposure=2.0, rebalance_every=24, hedge=hedge),
                         target_kind="equity", leverage=20, margin_mode="isolated")
        callback = run(m, hedged_pair_strategy(m, exposure=2.0, rebalance_every=24,
                                               hedge=hedge), leverage=20, margin_mode="isolated")
        assert len(vectorized.liquidations) > 0
        np.testing.assert_array_equal(vectorized.account.to_numpy(), callback.account.to_numpy())
        np.testing.assert_array_equal(vectorized.output.fills, callback.output.fills)


def test_kernel_runs_callbacks_without_jit():
    # NUMBA_DISABLE_JIT=1 runs the kernel and the callback as Python: same results
    code = textwrap.dedent("""
        import numpy as np
        from backtester import Market, run
        from backtester.strategy import Callback, order_target
        def cb(t, ctx, orders, params):
            if t % 3:
                return False
            order_target(orders, 0, params[0] if t % 2 else -params[0])
            return True
        o = 100 + np.arange(30.0)
        m = Market.from_arrays(["X"], o, o + 1, o - 1, o + 0.5)
        t = np.full((30, 1), np.nan)
        t[::3, 0] = [0.5 if k % 2 else -0.5 for k in range(0, 30, 3)]
        a = run(m, t, target_kind="equity", venue="flat")
        b = run(m, Callback(cb, params=[0.5]), target_kind="equity", venue="flat")
        assert np.array_equal(a.account.to_numpy(), b.account.to_numpy())
        assert len(a.fills) == 10
        print("ok")
    """)
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]


# --- margin mode switches ----------------------------------------------------------------------


def test_mode_switch_is_refused_while_open_and_done_once_flat():
    # X at 100 throughout; cross 10x. Bar 0 decides: buy 10. Bar 1 decides: switch to
    # isolated while long -> refused. Bar 2 decides: close (target 0) and switch in the same
    # order -> reductions fill first, so the switch is allowed. Bar 3 decides: buy 10 again,
    # now isolated: margin 10 * 100 / 10 = 100 moves into the position.
    m = market(["X"], [(100,) * 4] * 6)
    steps = {(0, 0, 0): 10.0, (1, 4, 0): Mode.ISOLATED, (2, 0, 0): 0.0, (2, 4, 0): Mode.ISOLATED,
             (3, 0, 0): 10.0}
    r = run(m, scripted(6, 1, steps), leverage=10, **flat())
    rej = r.rejections
    assert rej["reason"].tolist() == ["mode_switch_with_open_position"]
    assert rej["bar"].tolist() == [2]  # decided at close 1, refused at open 2
    assert r.output.mode.tolist() == [Mode.ISOLATED]
    assert r.margin_mode.tolist() == [Mode.CROSS]  # the Result keeps the modes of the start
    assert r.fills["qty"].tolist() == [10.0, -10.0, 10.0]
    assert r.account["isolated_margin"].tolist() == [0, 0, 0, 0, 100.0, 100.0]
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(10_000 - 100)


def test_a_hedge_legs_mode_switches_with_its_partner_only_when_both_are_flat():
    # Hedge mode on X: columns X.long and X.short. Bar 0 decides: long leg 10, short leg -5.
    # Bar 1: switch X.long to isolated while both legs are open -> refused. Bar 2: close the
    # long leg and switch it -> refused (the short leg is still open). Bar 3: close the short
    # leg and switch it -> both legs become isolated (the venue sets the mode per symbol).
    m = market(["X"], [(100,) * 4] * 6)
    steps = {(0, 0, 0): 10.0, (0, 0, 1): -5.0, (1, 4, 0): Mode.ISOLATED, (2, 0, 0): 0.0,
             (2, 4, 0): Mode.ISOLATED, (3, 0, 1): 0.0, (3, 4, 1): Mode.ISOLATED}
    r = run(m, scripted(6, 2, steps), leverage=10, position_mode="hedge", **flat())
    rej = r.rejections
    assert rej["reason"].tolist() == ["mode_switch_with_open_position"] * 2
    assert rej["symbol"].tolist() == ["X.long", "X.long"]
    assert r.output.mode.tolist() == [Mode.ISOLATED, Mode.ISOLATED]
    assert r.fills["qty"].tolist() == [10.0, -5.0, -10.0, 5.0]


def test_isolated_after_a_switch_liquidates_alone_at_the_isolated_price():
    # Switch to isolated while flat, then long 1 @ 30,000 at 10x: margin 3,000.
    # LP = (30,000 - 3,000) / (1 - 0.005) = 27,135.68; the drop to 26,000 liquidates it,
    # and the loss stops at the margin (no liquidation fee): wallet 7,000 + MM at LP.
    bars = [(30000,) * 4] * 3 + [(30000, 30000, 26000, 26000)]
    steps = {(0, 4, 0): Mode.ISOLATED, (1, 0, 0): 1.0}
    r = run(market(["BTC"], bars), scripted(4, 1, steps), leverage=10, **flat())
    lp = 27000 / 0.995
    assert r.liquidations["price"].iloc[0] == pytest.approx(lp)
    assert r.liquidations["mode"].iloc[0] == "isolated"
    assert r.equity.iloc[-1] == pytest.approx(7000 + 0.005 * lp)


def test_invalid_mode_code_is_refused():
    steps = {(0, 4, 0): 2.0}  # SPOT is not a margin mode a callback may choose
    r = run(market(["X"], [(100,) * 4] * 2), scripted(2, 1, steps), **flat())
    assert r.rejections["reason"].tolist() == ["invalid_order"]


# --- isolated margin and leverage --------------------------------------------------------------


def test_adding_margin_moves_the_liquidation_price_by_the_closed_form():
    # isolated long 1 @ 30,000 at 10x: margin 3,000, LP = 27,000 / 0.995 = 27,135.68.
    # Add 1,000: margin 4,000, LP = (30,000 - 4,000) / 0.995 = 26,130.65.
    bars = [(30000,) * 4] * 4
    steps = {(0, 0, 0): 1.0, (1, 2, 0): 1000.0}
    r = run(market(["BTC"], bars), scripted(4, 1, steps), margin_mode="isolated", leverage=10,
            **flat())
    assert r.liquidation_prices["BTC"].iloc[1] == pytest.approx(27000 / 0.995)
    assert r.liquidation_prices["BTC"].iloc[2] == pytest.approx(26000 / 0.995)
    assert r.account["isolated_margin"].iloc[2] == pytest.approx(4000.0)
    assert r.account["wallet_balance"].iloc[2] == pytest.approx(6000.0)
    assert r.equity.iloc[2] == pytest.approx(10_000.0)  # a transfer, not a cost


def test_removing_margin_is_limited_to_what_exceeds_the_initial_margin():
    # isolated long 1 @ 30,000 at 10x, margin 3,000 + 1,000 added. Mark 29,000: U = -1,000.
    # removable = M + min(U, 0) - |q| * mark / lev = 4,000 - 1,000 - 2,900 = 100.
    bars = [(30000,) * 4] * 3 + [(29000,) * 4] * 3
    steps = {(0, 0, 0): 1.0, (1, 2, 0): 1000.0, (3, 2, 0): -150.0, (4, 2, 0): -100.0}
    r = run(market(["BTC"], bars), scripted(6, 1, steps), margin_mode="isolated", leverage=10,
            **flat())
    rej = r.rejections
    assert rej["reason"].tolist() == ["margin_removal_above_free_margin"]
    assert rej["required"].iloc[0] == pytest.approx(150.0)
    assert rej["available"].iloc[0] == pytest.approx(100.0)
    assert r.account["isolated_margin"].iloc[-1] == pytest.approx(3900.0)


def test_margin_change_needs_an_open_isolated_position():
    steps = {(0, 2, 0): 100.0, (1, 0, 0): 1.0, (2, 2, 0): 100.0}
    r = run(market(["X"], [(100,) * 4] * 4), scripted(4, 1, steps), margin_mode="cross",
            **flat())
    assert r.rejections["reason"].tolist() == ["margin_change_without_isolated_position"] * 2


def test_leverage_change_sizes_the_next_margin_and_respects_the_tier_cap():
    # flat venue capped at 50x: 80x is refused, 0.5x is invalid, 20x is taken; then an
    # isolated long 10 @ 100 holds 10 * 100 / 20 = 50 of margin
    steps = {(0, 3, 0): 80.0, (1, 3, 0): 0.5, (2, 3, 0): 20.0, (3, 0, 0): 10.0}
    r = run(market(["X"], [(100,) * 4] * 5), scripted(5, 1, steps), margin_mode="isolated",
            leverage=5, **flat(max_leverage=50))
    assert r.rejections["reason"].tolist() == ["leverage_above_tier_max", "invalid_order"]
    assert r.rejections["available"].iloc[0] == 50.0  # the tier's cap
    assert r.account["isolated_margin"].iloc[-1] == pytest.approx(50.0)
    assert r.output.sym[0, 0] == 20.0


def test_lowering_cross_leverage_needs_the_extra_initial_margin():
    # cross long 80 @ 100 at 10x: IM 800 of a 1,100 balance, 300 available. To 2x the IM
    # would be 4,000: the extra 3,200 exceeds 300 -> refused; to 5x: extra 800 > 300,
    # refused; to 8x: IM 1,000, extra 200 <= 300 -> taken, 100 left available.
    steps = {(0, 0, 0): 80.0, (1, 3, 0): 2.0, (2, 3, 0): 5.0, (3, 3, 0): 8.0}
    r = run(market(["X"], [(100,) * 4] * 5), scripted(5, 1, steps), leverage=10,
            initial_balance=1100, **flat())
    rej = r.rejections
    assert rej["reason"].tolist() == ["insufficient_margin"] * 2
    assert rej["required"].tolist() == pytest.approx([3200.0, 800.0])
    assert rej["available"].tolist() == pytest.approx([300.0, 300.0])
    assert r.output.sym[0, 0] == 8.0


@njit
def top_up_to(t, ctx, orders, params):
    """Open 1 at bar 0; at bar 1 add the margin that puts the liquidation at params[0]."""
    if t == 0:
        order_target(orders, 0, 1.0)
        return True
    if t == 1:
        held = ctx.state[State.ISO_MARGIN, 0]
        add_margin(orders, 0, isolated_margin_for(ctx, 0, params[0]) - held)
        return True
    ctx.memory[0] = liquidation_price(ctx, 0)
    return False


def test_isolated_margin_for_puts_the_liquidation_price_where_asked():
    r = run(market(["BTC_USDT"], [(30000,) * 4] * 4), Callback(top_up_to, params=[24000.0],
                                                                 memory=1),
            margin_mode="isolated", leverage=10, venue="binance_usdm", initial_balance=100_000)
    assert r.liquidation_prices["BTC_USDT"].iloc[-1] == pytest.approx(24000.0, rel=1e-12)
    assert r.output.memory[0] == pytest.approx(24000.0, rel=1e-12)


@njit
def note_liquidation_price(t, ctx, orders, params):
    if t == 0:
        order_target(orders, 0, 1.0)
        order_target(orders, 1, -10.0)
        return True
    ctx.memory[t] = liquidation_price(ctx, 0)
    return False


def test_cross_liquidation_price_seen_by_a_callback_is_the_recorded_one():
    # Binance's cross formula with the other position frozen, as Result.liquidation_prices
    bars = [[(30000,) * 4, (2000,) * 4], [(30000,) * 4, (2000,) * 4],
            [(29000, 29500, 28800, 29200), (2100, 2150, 2050, 2080)]]
    r = run(market(["BTC_USDT", "ETH_USDT"], bars), Callback(note_liquidation_price, memory=3),
            leverage=10, venue="binance_usdm")
    np.testing.assert_allclose(r.output.memory[1:], r.liquidation_prices["BTC_USDT"].iloc[1:],
                               rtol=1e-12)


def test_deltas_add_up_in_the_run_s_units():
    @njit
    def twice(t, ctx, orders, params):
        if t == 0:
            order_delta(orders, 0, 3.0)
            order_delta(orders, 0, 2.0)
            return True
        if t == 1:
            order_delta(orders, 0, -1.0)
            return True
        return False

    r = run(market(["X"], [(100,) * 4] * 3), Callback(twice), **flat())
    assert r.positions["X"].tolist() == [0.0, 5.0, 4.0]


# --- spot instruments ----------------------------------------------------------------------------


def test_spot_leg_is_paid_in_full_pays_no_funding_and_is_never_liquidated():
    # spot S and perp P, both 100, a funding print of 1% at every bar. Buy 50 S (cost
    # 5,000, fee 0.1% = 5) and short 50 P at 5x (margin 1,000 in cross). Then both fall
    # to 1 (a 99% crash): the spot loses 4,950 but is not liquidated.
    rate = np.full((4, 2), 0.01)
    rate[:, 0] = NAN  # spot has no funding series
    bars = [[(100,) * 4] * 2] * 3 + [[(100, 100, 1, 1)] * 2]
    m = market(["S", "P"], bars, funding_rate=rate)
    r = run(m, np.array([[50.0, -50.0], [NAN, NAN], [NAN, NAN], [NAN, NAN]]),
            instruments={"S": "spot"}, leverage=5, **flat())
    fills = r.fills
    assert fills["fee"].tolist() == pytest.approx([5.0, 0.0])
    # bar 1: the wallet paid 5,000 + 5 for the spot (flat venue: no perp fee)
    assert r.account["wallet_balance"].iloc[1] == pytest.approx(10_000 - 5005)
    assert r.account["isolated_margin"].iloc[1] == pytest.approx(5000.0)  # the spot's cost
    assert set(r.funding["symbol"]) == {"P"}  # shorts receive 50 * 100 * 1% = 50 per print
    assert r.funding["payment"].tolist() == pytest.approx([-50.0, -50.0])
    assert r.liquidations["symbol"].tolist() == []
    # at the close, 1: spot worth 50, the perp short gained 50 * 99 = 4,950
    assert r.equity.iloc[-1] == pytest.approx(10_000 - 5 + 100 - 4950 + 4950)
    assert r.positions["S"].iloc[-1] == 50.0
    assert np.isnan(r.liquidation_prices["S"]).all()


def test_spot_cannot_go_short():
    # hold 10; ask for -5: the 10 sell (a reduction), the 5 short are refused
    m = market(["S"], [(100,) * 4] * 3)
    r = run(m, np.array([[10.0], [-5.0], [NAN]]), instruments={"S": "spot"}, **flat())
    assert r.positions["S"].tolist() == [0.0, 10.0, 0.0]
    assert r.rejections["reason"].tolist() == ["spot_short"]
    assert r.rejections["qty"].iloc[0] == -5.0


def test_spot_symbols_take_no_margin_mode_or_leverage():
    m = market(["S", "P"], [[(100,) * 4] * 2] * 2)
    with pytest.raises(ValueError, match="spot instrument"):
        run(m, np.zeros((2, 2)), instruments={"S": "spot"}, leverage={"S": 3, "P": 5})
    with pytest.raises(ValueError, match=r"instruments\['S'\]='future': must be one of"):
        run(m, np.zeros((2, 2)), instruments={"S": "future"})
    with pytest.raises(ValueError, match="unknown symbol"):
        run(m, np.zeros((2, 2)), instruments={"Q": "spot"})
    r = run(m, np.zeros((2, 2)), instruments={"S": "spot"}, leverage={"P": 5},
            margin_mode={"P": "isolated"}, **flat())
    assert "S spot 1x, P isolated 5x" in r.describe()


def test_a_callback_cannot_re_lever_or_switch_a_spot_holding():
    steps = {(0, 3, 0): 2.0, (0, 4, 0): Mode.CROSS, (0, 2, 0): 10.0}
    r = run(market(["S"], [(100,) * 4] * 2), scripted(2, 1, steps), instruments={"S": "spot"},
            **flat())
    assert sorted(r.rejections["reason"]) == ["invalid_order", "invalid_order",
                                              "margin_change_without_isolated_position"]


# --- errors a strategy author meets --------------------------------------------------------------


def test_a_callback_numba_cannot_compile_is_explained_with_its_line():
    def typo(t, ctx, orders, params):
        return ctx.closes[t, 0] > 0

    with pytest.raises(StrategyError) as err:
        run(market(["X"], [(100,) * 4] * 2), Callback(typo))
    text = str(err.value)
    assert "typo" in text and "cannot be compiled by numba" in text
    assert "closes" in text and "test_callbacks.py" in text
    assert "ctx has the fields open, high, low, close" in text


def test_a_callback_that_allocates_runs_as_one_that_does_not():
    # a callback that allocates needs numba's reference counting; one that does not is
    # compiled without it (three times faster): both give the same run
    from backtester.engine.driver import compile_callback

    def plain(t, ctx, orders, params):
        if t % 2 != 0:
            return False
        orders[0, 0] = 0.5 if t % 4 == 0 else -0.5
        return True

    def allocating(t, ctx, orders, params):
        if t % 2 != 0:
            return False
        side = np.empty(1)
        side[0] = 0.5 if t % 4 == 0 else -0.5
        orders[0, 0] = side[0]
        return True

    m, _ = random_market(3, n_bars=60)
    a = run(m, Callback(plain), target_kind="equity", leverage=5, **flat())
    b = run(m, Callback(allocating), target_kind="equity", leverage=5, **flat())
    assert len(a.fills) > 10
    np.testing.assert_array_equal(a.equity.to_numpy(), b.equity.to_numpy())
    if not os.environ.get("NUMBA_DISABLE_JIT"):
        assert compile_callback(plain).targetoptions.get("_nrt") is False
        assert "_nrt" not in compile_callback(allocating).targetoptions


def test_a_callback_that_returns_nothing_is_told_to_return_a_bool():
    def silent(t, ctx, orders, params):
        orders[0, 0] = 1.0

    with pytest.raises(StrategyError, match="must return True when it wrote orders"):
        run(market(["X"], [(100,) * 4] * 2), Callback(silent))


def test_a_callback_with_the_wrong_arguments_is_explained():
    def three(t, ctx, orders):
        return False

    with pytest.raises(StrategyError, match=r"takes 3 argument\(s\) \(t, ctx, orders\); a "
                                            r"callback takes exactly four"):
        run(market(["X"], [(100,) * 4] * 2), Callback(three))


def test_an_index_error_inside_a_callback_names_the_bar():
    def reach(t, ctx, orders, params):
        if t == 2:
            orders[0, 3] = 1.0  # one symbol only: column 3 does not exist
        return False

    with pytest.raises(StrategyError, match=r"raised IndexError at bar 2 \(2024-01-01 02:00"):
        run(market(["X"], [(100,) * 4] * 4), Callback(reach), **flat())


def test_bad_params_and_series_are_refused_before_numba():
    m = market(["X"], [(100,) * 4] * 3)
    with pytest.raises(StrategyError, match="parameter symbol of replay must be a plain number"):
        run(m, Callback(replay, params={"symbol": "X"}))
    with pytest.raises(StrategyError, match=r"series of replay must have shape \(K, bars, "
                                            r"symbols\) = \(K, 3, 1\)"):
        run(m, Callback(replay, series=np.zeros((2, 4, 1))))


def test_callback_and_margin_helpers_compile_for_the_context():
    # the order writers used by the examples, in one callback, compile and act
    @njit
    def everything(t, ctx, orders, params):
        if t == 0:
            set_leverage(orders, 0, 4.0)
            set_margin_mode(orders, 0, Mode.ISOLATED)
            order_target(orders, 0, 10.0)
            return True
        if t == 1:
            add_margin(orders, 0, 50.0)
            return True
        if t == 2:
            remove_margin(orders, 0, 20.0)
            return True
        return False

    r = run(market(["X"], [(100,) * 4] * 4), Callback(everything), **flat())
    # 10 @ 100 at 4x isolated: 250, + 50, - 20 = 280
    assert r.account["isolated_margin"].tolist() == pytest.approx([0, 250, 300, 280])
    assert len(r.rejections) == 0
