"""Memory (issue 15): a run records what happened (fills) and rebuilds the rest on demand.

- ``Result.positions`` of a default run is rebuilt from the fills: the same numbers, bit for
  bit, as the positions the kernel records with ``record_positions=True``, on runs with
  liquidations (cross and isolated), hedge legs, spot holdings, collateral coins, a
  strategy callback and a column whose data end early;
- ``Result.liquidation_prices`` of a default run is computed when asked (by a replay with
  the record on) and equals the recorded one;
- the kernel's fill buffer is sized with a bar's worth of headroom, so that it is not
  doubled (copied) at the end of a run whose fills were foreseen;
- the funding payments of a run of many are packed as the run goes (``PackedFunding``: 31
  bytes a payment instead of 56), and read back as the very rows the kernel wrote.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numba import njit

from backtester import Market, load_market, run
from backtester.backtest import _recorded_output
from backtester.config import RunConfig
from backtester.data import make_market
from backtester.engine import driver, enums
from backtester.engine.driver import Pause, execute
from backtester.prepare import prepare_run
from backtester.strategy import Callback, order_target
from strategies import hedged_pair


@pytest.fixture(scope="module")
def embedded():
    return load_market(start="2024-07-20", end="2024-08-20")  # the 2024-08-05 crash


def both(market, targets, **options):
    """The run with positions recorded, and the default run (not recorded)."""
    recorded = run(market, targets, record_positions=True, **options)
    default = run(market, targets, **options)
    assert default._positions is None and default._liquidation_prices is None
    return recorded, default


def cumulative_positions(result) -> np.ndarray:
    """Positions at each close worked out here from the fills alone: per symbol, the sum of
    the filled quantities of the fills up to each bar (plus a collateral holding)."""
    fills = result.fills
    q = np.zeros((result.market.n_bars, result.market.n_symbols))
    columns = pd.Index(result.market.symbols).get_indexer(fills["symbol"])
    np.add.at(q, (fills["bar"].to_numpy(), columns), fills["qty"].to_numpy())
    return np.cumsum(q, axis=0)


def assert_same_positions(recorded, default, initial=None):
    rebuilt = default.positions.to_numpy()
    assert np.array_equal(rebuilt, recorded.positions.to_numpy())  # bit for bit
    assert list(default.positions.columns) == list(recorded.positions.columns)
    assert default.positions.index.equals(recorded.positions.index)
    summed = cumulative_positions(default) + (0.0 if initial is None else initial)
    np.testing.assert_allclose(rebuilt, summed, rtol=1e-9, atol=1e-9)
    lp = default.liquidation_prices  # computed now, by a replay
    assert np.array_equal(lp.to_numpy(), recorded.liquidation_prices.to_numpy(), equal_nan=True)


@pytest.mark.parametrize("margin_mode", ["cross", "isolated"])
def test_positions_from_fills_equal_the_recorded_ones_through_liquidations(embedded,
                                                                           margin_mode):
    targets = np.full((embedded.n_bars, 2), np.nan)
    targets[::48] = [4.0, 4.0]  # long both at 4x equity each, re-entered every two days
    recorded, default = both(embedded, targets, target_kind="equity", margin_mode=margin_mode,
                             leverage=20)
    assert len(recorded.liquidations) > 0  # the case the rebuild must get right
    assert (recorded.fills["reason"] == "liquidation").any()
    assert_same_positions(recorded, default)
    assert default.summary() == recorded.summary()


def test_positions_from_fills_of_hedge_legs():
    close = np.full((6, 1), 20_000.0)
    lows = close.copy()
    lows[3, 0] = 18_500.0  # the long leg's isolated liquidation
    market = Market.from_arrays(["BTC_USDT"], close, close, lows, close)
    targets = pd.DataFrame(np.nan, index=market.timestamps,
                           columns=["BTC_USDT.long", "BTC_USDT.short"])
    targets.iloc[0] = [1.0, -0.5]
    recorded, default = both(market, targets, position_mode="hedge", leverage=20,
                             margin_mode="isolated", initial_balance=2_500.0)
    assert len(recorded.liquidations) == 1
    assert_same_positions(recorded, default)


def test_positions_from_fills_of_spot_and_collateral():
    close = np.linspace(20_000.0, 15_000.0, 8)[:, None]
    market = Market.from_arrays(["BTC_USDT"], close, close, close * 0.99, close)
    targets = np.full((8, 1), np.nan)
    targets[0] = 2.0
    targets[4] = 1.0
    recorded, default = both(market, targets, venue="okx_swap", leverage=10,
                             initial_balance=3_000, collateral={"BTC": 0.2})
    assert recorded.positions["BTC"].iloc[0] == 0.2  # held from the start: not a fill
    assert_same_positions(recorded, default, initial=np.array([0.0, 0.2]))
    spot = make_market(300, 2, seed=3, funding_every=8)
    targets = np.full((300, 2), np.nan)
    targets[::50] = [0.3, -0.3]
    targets[::50, 1] = 0.2
    recorded, default = both(spot, targets, target_kind="equity", leverage=3, venue="flat",
                             instruments={spot.symbols[1]: "spot"})
    assert (recorded.positions.iloc[:, 1] > 0).any()
    assert_same_positions(recorded, default)


@njit
def flip_every_ten(t, ctx, orders, params):
    if t % 10 == 0:
        side = 1.0 if (t // 10) % 2 == 0 else -1.0
        order_target(orders, 0, side * params[0])
        return True
    return False


def test_positions_from_fills_of_a_callback_and_of_data_that_end_early():
    market = make_market(200, 2, seed=5, funding_every=8)
    recorded, default = both(market, Callback(flip_every_ten, params=[0.5]),
                             target_kind="equity", leverage=5, venue="flat")
    assert_same_positions(recorded, default)
    # the second column's data end at bar 120: its position is closed there (a fill)
    arrays = [np.array(getattr(market, f)) for f in ("open", "high", "low", "close")]
    for a in arrays:
        a[121:, 1] = np.nan
    short = Market.from_arrays(market.symbols, *arrays)
    targets = np.full((200, 2), np.nan)
    targets[0] = [0.3, -0.3]
    with pytest.warns(UserWarning):
        recorded, default = both(short, targets, target_kind="equity", leverage=5,
                                 venue="flat")
    assert (recorded.fills["reason"] == "data_end").any()
    assert_same_positions(recorded, default)


def test_a_saved_default_run_keeps_its_positions_and_liquidation_prices(tmp_path, embedded):
    from backtester import Result

    recorded, default = both(embedded, hedged_pair(embedded, exposure=3.0),
                             target_kind="equity", leverage=20)
    default.save(tmp_path / "run")
    loaded = Result.load(tmp_path / "run")
    assert np.array_equal(loaded.positions.to_numpy(), recorded.positions.to_numpy())
    assert np.array_equal(loaded.liquidation_prices.to_numpy(),
                          recorded.liquidation_prices.to_numpy(), equal_nan=True)


def test_the_default_run_allocates_no_per_bar_position_record():
    market = make_market(2_000, 3, seed=1)
    targets = np.full((2_000, 3), np.nan)
    targets[::24] = 0.1
    config = RunConfig(target_kind="equity", leverage=5, venue="flat")
    output = execute(prepare_run(market, targets, config).inputs)
    assert output.positions is None and output.liquidation_prices is None
    recorded = execute(prepare_run(market, targets, config.replace(record_positions=True))
                       .inputs)
    assert recorded.positions.shape == (2_000, 3)
    assert recorded.positions.nbytes == 2_000 * 3 * 8
    # what a default run's ``Result.liquidation_prices`` replays: the prices, the same ones,
    # and of the rest only the equity it is checked by (no positions: the fills' are those)
    replayed = _recorded_output(prepare_run(market, targets, config))
    assert replayed.positions is None
    assert replayed.account.shape == (enums.N_SUMMARY_OUT, 2_000)
    assert np.array_equal(replayed.account[enums.Out.EQUITY], output.account[enums.Out.EQUITY])
    assert np.array_equal(replayed.account[enums.Out.MARGIN_RATIO],
                          output.account[enums.Out.MARGIN_RATIO])
    assert replayed.liquidation_prices.shape == (2_000, 3)
    assert np.isfinite(replayed.liquidation_prices[24:]).all()  # (held from the first target)
    assert np.array_equal(replayed.liquidation_prices, recorded.liquidation_prices,
                          equal_nan=True)


def test_the_fill_buffer_has_room_for_the_fills_foreseen_without_doubling():
    # one fill per column per target row: 84 target rows x 3 columns = 252 fills foreseen
    market = make_market(2_000, 3, seed=1, funding_every=None)
    targets = np.full((2_000, 3), np.nan)
    targets[::24] = [0.1, -0.1, 0.1]
    targets[::48] = [-0.1, 0.1, -0.1]
    output = execute(prepare_run(market, targets, RunConfig(target_kind="equity", leverage=5,
                                                            venue="flat")).inputs)
    assert len(output.fills) == 84 * 3
    # a view of the buffer allocated at first (252 + 2 x 3 foreseen + one bar's worst
    # case): never doubled to 512 rows and copied
    assert output.fills.base is not None and output.fills.base.shape[0] < 512


def test_equity_is_a_view_of_the_kernels_record(embedded):
    result = run(embedded, hedged_pair(embedded), target_kind="equity")
    assert np.shares_memory(result.equity.to_numpy(), result.output.account)
    assert np.shares_memory(result.account.to_numpy(), result.output.account)
    assert result.equity.equals(result.account["equity"])


# --- Market.from_arrays: no copies, no placeholders -----------------------------------------


def ohlc(n_bars=1_000, n=3, seed=0):
    market = make_market(n_bars, n, seed=seed, funding_every=None, with_mark=False)
    return [np.array(getattr(market, f)) for f in ("open", "high", "low", "close")]


def test_from_arrays_shares_the_callers_memory_read_only():
    o, h, lo, c = ohlc()
    market = Market.from_arrays(["A", "B", "C"], o, h, lo, c)
    for given, held in zip((o, h, lo, c), (market.open, market.high, market.low, market.close),
                           strict=True):
        assert np.shares_memory(given, held)
        assert not held.flags.writeable  # the engine never writes them; neither may others
    assert given.flags.writeable  # the caller's own array is left as it was
    # without mark arrays the mark bars are the price arrays themselves
    assert market.mark_open is market.open and market.mark_close is market.close
    # one symbol's (T,) array is a (T, 1) view, not a copy
    one = Market.from_arrays(["A"], o[:, 0].copy(), h[:, 0].copy(), lo[:, 0].copy(),
                             c[:, 0].copy())
    assert one.close.shape == (1_000, 1) and one.close.strides == (8, 8)
    # another dtype or layout is converted once
    converted = Market.from_arrays(["A", "B", "C"], o.astype(np.float32), np.asfortranarray(h),
                                   lo, c)
    assert not np.shares_memory(converted.high, h) and converted.high.flags.c_contiguous


def test_absent_volume_and_funding_hold_no_memory():
    o, h, lo, c = ohlc(n_bars=100_000, n=10)
    market = Market.from_arrays([f"S{i}" for i in range(10)], o, h, lo, c)
    for a, value in ((market.volume, 0.0), (market.funding_rate, np.nan)):
        assert a.shape == (100_000, 10) and a.strides == (0, 0)  # one number, viewed
        np.testing.assert_array_equal(a[:5], np.full((5, 10), value))
    sliced = market.slice(10, 20)
    assert sliced.funding_rate.strides == (0, 0) and sliced.mark_open is sliced.open
    legs = market.with_hedge_legs(["S0"])
    assert legs.funding_rate.shape == (100_000, 11) and legs.funding_rate.strides == (0, 0)
    assert legs.mark_close is legs.close  # copied once, not once per name


def test_the_kernel_reads_the_market_without_copies():
    o, h, lo, c = ohlc(n_bars=5_000, n=2)
    market = Market.from_arrays(["A", "B"], o, h, lo, c)
    targets = np.full((5_000, 2), np.nan)
    targets[::100] = [0.2, -0.2]
    inputs = prepare_run(market, targets, RunConfig(target_kind="equity", venue="flat",
                                                    leverage=3)).inputs
    bars = inputs.bars
    assert np.shares_memory(bars.open, o) and np.shares_memory(bars.close, c)
    assert bars.mark_open is bars.open and bars.mark_close is bars.close
    assert bars.open.flags.writeable  # (numba's one array type; the kernel only reads it)
    assert bars.funding_rate.shape == (0, 2) and not bars.has_funding.any()
    assert np.shares_memory(inputs.trading.targets, targets)
    # and the run is the one of a Market holding copies with explicit NaN funding and volume
    own = Market.from_arrays(["A", "B"], o.copy(), h.copy(), lo.copy(), c.copy(),
                             funding_rate=np.full((5_000, 2), np.nan),
                             volume=np.zeros((5_000, 2)))
    a = run(market, targets, target_kind="equity", venue="flat", leverage=3)
    b = run(own, targets, target_kind="equity", venue="flat", leverage=3)
    assert a.summary() == b.summary()
    assert np.array_equal(a.output.account, b.output.account)


def test_validation_in_blocks_names_the_first_broken_value_of_the_whole_array():
    from backtester.data import DataError

    o, h, lo, c = ohlc(n_bars=200_000, n=2)
    h = h.copy()
    h[150_000, 1] = lo[150_000, 1] * 0.5  # in the third block of rows
    h[190_000, 0] = lo[190_000, 0] * 0.5
    with pytest.raises(DataError, match=r"high\[150000, 'B'\]: high < low; 2 value\(s\)"):
        Market.from_arrays(["A", "B"], o, h, lo, c)
    rate = np.full((200_000, 2), np.nan)
    rate[199_999, 0] = np.inf
    with pytest.raises(DataError, match=r"funding_rate\[199999, 'A'\]: infinite funding rate"):
        Market.from_arrays(["A", "B"], o, o, o, o, funding_rate=rate)


def test_sweep_fingerprint_of_a_market_without_funding_hashes_it_without_a_full_copy():
    # a sweep folder records a hash of the data it ran on; a market given no funding holds
    # an `absent` (broadcast) series, whose hash must be that of the whole array's bytes (so
    # folders written before still resume) without making the whole array
    import hashlib
    import tracemalloc

    from backtester.sweep.storage import market_fingerprint

    n_bars, n = 200_000, 10
    close = np.linspace(100.0, 200.0, n_bars * n).reshape(n_bars, n)
    m = Market.from_arrays([f"S{i}" for i in range(n)], close, close, close, close)
    digest = hashlib.sha256()
    for array in (m.index, close, close, np.full((n_bars, n), np.nan)):
        digest.update(np.ascontiguousarray(array).tobytes())
    tracemalloc.start()
    found = market_fingerprint(m)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert found["sha256"] == digest.hexdigest()[:16]
    assert peak < n_bars * n * 8 / 4  # a full funding array would be 16 MB


# --- funding payments packed as the run goes (a run of many payments) ------------------------


def test_funding_of_a_long_run_is_packed_and_pays_q_times_mark_times_rate(monkeypatch):
    # 2 BTC long from bar 1 at a constant 60,000 (mark = last; 12,000 of margin at 10x out
    # of 20,000), a 0.01% rate at every bar: each payment is 2 x 60,000 x 0.0001 = 12 USDT,
    # 98 of them (bars 2..99: at bar 1 funding settles before the order fills, DESIGN.md
    # section 4); with a kernel buffer of 8 rows the run stops every 8 funding bars to move
    # them out
    monkeypatch.setattr(driver, "FUNDING_BUFFER_ROWS", 8)
    o = np.full((100, 1), 60_000.0)
    rate = np.full((100, 1), 1e-4)
    market = Market.from_arrays(["BTC_USDT"], o, o, o, o, funding_rate=rate)
    targets = np.full((100, 1), np.nan)
    targets[0] = 2.0
    result = run(market, targets, venue="flat", leverage=10, initial_balance=20_000.0)
    assert isinstance(result.output.funding, driver.PackedFunding)
    funding = result.funding
    assert len(funding) == 98 and funding["bar"].tolist() == list(range(2, 100))
    assert funding["payment"].tolist() == pytest.approx([12.0] * 98, rel=1e-15)
    assert funding["qty"].tolist() == [2.0] * 98
    assert funding["mark_price"].tolist() == [60_000.0] * 98
    assert funding["rate"].tolist() == [1e-4] * 98
    assert set(funding["symbol"]) == {"BTC_USDT"} and set(funding["mode"]) == {"cross"}
    assert result.summary()["funding_paid"] == pytest.approx(98 * 12.0, rel=1e-12)
    # the wallet paid them (the price never moves: no PnL), and the opening fill's fee
    fees = result.fills["fee"].sum()
    assert result.account["wallet_balance"].iloc[-1] == pytest.approx(
        result.initial_equity - fees - 98 * 12.0, rel=1e-12)


def runs_packed_and_not(monkeypatch, market, orders, **options):
    """The same run with its funding packed (an 8-row kernel buffer) and as one buffer."""
    monkeypatch.setattr(driver, "FUNDING_BUFFER_ROWS", 8)
    packed = run(market, orders, **options)
    monkeypatch.setattr(driver, "FUNDING_BUFFER_ROWS", 1 << 40)
    plain = run(market, orders, **options)
    assert isinstance(packed.output.funding, driver.PackedFunding)
    assert isinstance(plain.output.funding, np.ndarray)
    return packed, plain


def assert_same_run(packed, plain):
    np.testing.assert_array_equal(driver.funding_array(packed.output.funding),
                                  plain.output.funding)  # every field, bit for bit
    assert driver.funding_array(packed.output.funding).dtype == enums.funding_dt
    for name in ("account", "fills", "liquidations", "funding", "rejections", "positions"):
        pd.testing.assert_frame_equal(getattr(packed, name), getattr(plain, name),
                                      check_exact=True, obj=name)
    assert packed.summary() == plain.summary()


@pytest.mark.parametrize("margin_mode", ["cross", "isolated"])
def test_packed_funding_is_the_funding_the_kernel_wrote_through_liquidations(
        monkeypatch, embedded, margin_mode):
    targets = np.full((embedded.n_bars, 2), np.nan)
    targets[::48] = [4.0, 4.0]  # long both at 4x equity each: liquidated in the crash
    packed, plain = runs_packed_and_not(monkeypatch, embedded, targets, target_kind="equity",
                                        margin_mode=margin_mode, leverage=20)
    assert len(plain.liquidations) > 0 and len(plain.funding) > 8 * 4
    assert_same_run(packed, plain)
    # 31 bytes or fewer a payment instead of 56
    assert packed.output.funding.nbytes <= 31 * len(packed.funding)


def test_packed_funding_of_a_callback_and_of_a_paused_run(monkeypatch):
    market = make_market(400, 3, seed=2, funding_every=4)
    packed, plain = runs_packed_and_not(monkeypatch, market,
                                        Callback(flip_every_ten, params=[0.5]),
                                        target_kind="equity", leverage=5, venue="flat")
    assert_same_run(packed, plain)
    # a run paused for nothing, its funding packed, is the run
    monkeypatch.setattr(driver, "FUNDING_BUFFER_ROWS", 8)
    targets = np.full((400, 3), np.nan)
    targets[::30] = [0.2, -0.2, 0.1]
    prepared = prepare_run(market, targets, RunConfig(target_kind="equity", leverage=5,
                                                      venue="flat"))
    plain = execute(prepared.inputs)
    paused = execute(prepared.inputs, Pause(201, lambda book, records, outputs, orders:
                                            records))
    assert isinstance(paused.funding, driver.PackedFunding) and len(paused.funding) > 100
    np.testing.assert_array_equal(driver.funding_array(paused.funding),
                                  driver.funding_array(plain.funding))
    np.testing.assert_array_equal(paused.account, plain.account)


def test_a_sweep_of_a_callback_whose_funding_is_packed_summarises_it(monkeypatch):
    from backtester.sweep import sweep

    monkeypatch.setattr(driver, "FUNDING_BUFFER_ROWS", 8)
    market = make_market(400, 3, seed=2, funding_every=4)
    strategy = Callback(flip_every_ten, params=[0.5])
    options = dict(target_kind="equity", leverage=5, venue="flat")
    table = sweep(market, lambda market: strategy, grid={"leverage": [5]}, backend="inprocess",
                  **{k: v for k, v in options.items() if k != "leverage"})
    expected = run(market, strategy, **options).summary()["funding_paid"]
    assert table["funding_paid"].iloc[0] == expected != 0.0


def test_a_run_of_many_payments_stops_a_bounded_number_of_times_to_pack_them(monkeypatch):
    # 1,000 funding bars of 3 columns: with 8-row buffers (2 bars each) it would stop 499
    # times; it stops at most MAX_FUNDING_STOPS times, with a buffer of 63 bars' rows
    monkeypatch.setattr(driver, "FUNDING_BUFFER_ROWS", 8)
    has_funding = np.zeros(4_000, dtype=np.bool_)
    has_funding[::4] = True
    stops, rows = driver.funding_stops(has_funding, 3)
    per = -(-1_000 // driver.MAX_FUNDING_STOPS)  # 63 bars
    assert rows == 3 * per
    assert stops.tolist() == [4 * k * per for k in range(1, 16)]  # 15 stops: 16 chunks


def test_a_venue_that_pays_no_funding_neither_copies_nor_scans_the_markets_rates():
    """Kraken's spot margin pays no funding on any column: the rates given are left as they
    are (no copy of them with NaN put in, no scan of the copy), and the run is the one of
    the market without rates."""
    import tracemalloc

    o, h, lo, c = ohlc(n_bars=200_000, n=8)
    rates = np.full((200_000, 8), np.nan)
    rates[::8] = 0.0001
    names = [f"C{i}_USD" for i in range(8)]
    market = Market.from_arrays(names, o, h, lo, c, funding_rate=rates)
    targets = np.full((200_000, 8), np.nan)
    targets[::500] = 0.1 * np.array([1, -1, 1, -1, 1, -1, 1, -1])
    config = RunConfig(venue="kraken_spot", margin_mode="cross", leverage=3,
                       target_kind="equity", stand_in={"*": "BTCUSD"})
    prepare_run(market.slice(0, 100), targets[:100], config)
    tracemalloc.start()
    try:
        inputs = prepare_run(market, targets, config).inputs
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert inputs.funding_rows == 0 and not inputs.bars.has_funding.any()
    assert peak < rates.nbytes / 2  # (3.4 MB: bar times, row flags; the rates: 12.8 MB)
    without = Market.from_arrays(names, o, h, lo, c)
    a = run(market, targets, **vars(config))
    b = run(without, targets, **vars(config))
    np.testing.assert_array_equal(a.output.account, b.output.account)
    assert a.output.fills.tobytes() == b.output.fills.tobytes()
