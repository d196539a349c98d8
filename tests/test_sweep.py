"""Sweeps: the batch rows against run(...).summary(), the backends against each other,
resuming, failures, interrupts, windows, equity curves and the command line.

The figures of a sweep row are checked against a second implementation: the
pandas-based ``Result.summary()`` of the same run through ``run()``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from backtester import Market, load_market, run
from backtester.cli import main
from backtester.engine import batch, enums
from backtester.strategy import Plan
from backtester.sweep import Grid, read_equity, read_sweep, run_id, sweep
from strategies import hedged_pair

pytestmark = pytest.mark.filterwarnings("ignore:binance_usdm has no")

METRICS = list(batch.METRICS)


@pytest.fixture(scope="module")
def market() -> Market:
    """January 2024 of the embedded data: 744 hourly bars, BTC_USDT and ETH_USDT."""
    return load_market(start="2024-01-01", end="2024-02-01")


def units_pair(market: Market, size: float = 0.1, hold: int = 100) -> np.ndarray:
    """Long ``size`` BTC and short 10x ``size`` ETH in base units; flat after ``hold`` bars."""
    targets = np.full((market.n_bars, market.n_symbols), np.nan)
    targets[0] = [size, -10 * size]
    targets[min(hold, market.n_bars - 1)] = [0.0, 0.0]
    return targets


def failing_pair(market: Market, exposure: float = 1.0) -> pd.DataFrame:
    """The hedged pair, except that an exposure of 3 is a bug in the strategy."""
    if exposure == 3:
        raise RuntimeError("exposure 3 is not supported")
    return hedged_pair(market, exposure=exposure)


def expected_row(market: Market, strategy, params: dict, **options) -> dict:
    """What ``run()`` says for one run (the second implementation)."""
    return run(market, strategy(market, **params), record_positions=False,
               **options).summary()


def assert_row_matches(row: pd.Series, expected: dict) -> None:
    for name in METRICS:
        got, want = float(row[name]), float(expected[name])
        assert got == pytest.approx(want, rel=1e-9, abs=1e-9, nan_ok=True), name


# --- the compiled batch against run() -------------------------------------------------------


@pytest.mark.parametrize(("venue", "modes"), [("bybit_linear", ["cross", "isolated"]),
                                              ("okx_swap", ["cross", "isolated"]),
                                              ("kraken_spot", ["cross"])])
def test_batch_rows_equal_run_summary_on_every_venue_model(market, venue, modes):
    # Bybit, OKX and Kraken rules (bankruptcy settlement, size tiers, borrowing fees) reach
    # the batch through the same rule rows as run()
    stand_in = {"ETH_USDT": "BTC_USDT"} if venue != "kraken_spot" else {}
    grid = {"exposure": [1.0, 4.0], "venue": venue, "margin_mode": modes, "leverage": [2, 5],
            "target_kind": "equity", "stand_in": [stand_in]}
    rows = sweep(market, hedged_pair, grid, progress=False)
    assert rows["error"].isna().all()
    for _, row in rows.iterrows():
        expected = expected_row(market, hedged_pair, {"exposure": row["exposure"]},
                                venue=venue, stand_in=stand_in, margin_mode=row["margin_mode"],
                                leverage=row["leverage"], target_kind="equity")
        assert_row_matches(row, expected)


def test_batch_rows_equal_run_summary_for_a_handful_of_runs(market):
    grid = [
        # equity targets, both modes, leverages that liquidate isolated legs and reject orders
        {"exposure": [1.0, 4.0], "margin_mode": ["cross", "isolated"], "leverage": [2, 25],
         "target_kind": "equity"},
        # the other simulation choices
        {"exposure": 2.0, "rebalance_every": 6, "margin_mode": "isolated", "leverage": 10,
         "target_kind": "equity", "fill_at": "close", "path": ["worst", "close"],
         "slippage": 0.0005, "reduce_to_fit": True, "initial_balance": 2_500},
    ]
    table = sweep(market, hedged_pair, grid)
    assert len(table) == 8 + 2 and table["error"].isna().all()
    # the grid reaches the rules that matter: liquidations, bankruptcy, rejected orders
    assert table["liquidations"].max() > 0 and table["rejected_orders"].max() > 0
    for _, row in table.iterrows():
        params = {"exposure": row["exposure"]}
        if not pd.isna(row["rebalance_every"]):
            params["rebalance_every"] = int(row["rebalance_every"])
        options = {k: row[k] for k in ("margin_mode", "leverage", "target_kind", "fill_at",
                                       "path", "slippage", "reduce_to_fit", "initial_balance")}
        assert_row_matches(row, expected_row(market, hedged_pair, params, **options))


def test_batch_rows_equal_run_summary_for_unit_targets_and_a_flat_venue(market):
    table = sweep(market, units_pair, {"size": [0.05, 0.5], "hold": [50, 400],
                                       "margin_mode": ["cross", "isolated"], "leverage": 20},
                  venue="flat", venue_overrides={"taker_fee": 0.0004}, target_kind="units")
    assert table["venue_overrides"].iloc[0] == '{"taker_fee": 0.0004}'
    for _, row in table.iterrows():
        expected = expected_row(market, units_pair, {"size": row["size"], "hold": row["hold"]},
                                venue="flat", venue_overrides={"taker_fee": 0.0004},
                                target_kind="units", margin_mode=row["margin_mode"],
                                leverage=20)
        assert_row_matches(row, expected)


def test_pairwise_sum_adds_as_numpy_does():
    # sums must round as np.sum's pairwise blocks do, or rows drift from Result.summary()
    rng = np.random.default_rng(5)
    lengths = [*range(0, 300), 1000, 8760, 100_003, *rng.integers(300, 20_000, 30)]
    for n in map(int, lengths):
        x = rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 6, n)
        assert batch.pairwise_sum(x, 0, n) == float(np.sum(x))
        if n > 3:
            assert batch.pairwise_sum(x, 3, n - 3) == float(np.sum(x[3:]))


def test_max_drawdown_is_the_deepest_fall_from_a_running_peak():
    # initial equity 100: peak 100, falls to 80 (-20%), new peak 120, falls to 90 (-25%),
    # recovers to 110 (still under 120); NaN bars are skipped
    row = np.full(batch.N_METRICS, np.nan)
    equity = np.array([100.0, 90.0, 80.0, np.nan, 120.0, 100.0, 90.0, 110.0])
    batch.equity_metrics(equity, 8, 100.0, 8760.0, np.empty(8), row)
    assert row[batch.M_MAX_DRAWDOWN] == 90.0 / 120.0 - 1.0 == -0.25
    assert row[batch.M_FINAL_EQUITY] == 110.0
    # never under the start: 0; a fall from the start itself counts (100 -> 95: -5%)
    batch.equity_metrics(np.array([100.0, 101.0, 105.0]), 3, 100.0, 8760.0, np.empty(3), row)
    assert row[batch.M_MAX_DRAWDOWN] == 0.0
    batch.equity_metrics(np.array([95.0, 99.0]), 2, 100.0, 8760.0, np.empty(2), row)
    assert row[batch.M_MAX_DRAWDOWN] == 95.0 / 100.0 - 1.0
    # equity gone (0, then a negative deficit): -100%, then below
    batch.equity_metrics(np.array([50.0, 0.0, -10.0]), 3, 100.0, 8760.0, np.empty(3), row)
    assert row[batch.M_MAX_DRAWDOWN] == -10.0 / 100.0 - 1.0 == -1.1


def test_max_drawdown_equals_the_per_bar_formula_on_random_curves():
    # the drawdown divides once per peak; per bar, value / running peak - 1, bit for bit
    rng = np.random.default_rng(11)
    row = np.full(batch.N_METRICS, np.nan)
    for n in (1, 2, 5, 100, 8760):
        for _ in range(20):
            equity = 1000.0 * np.cumprod(1.0 + rng.normal(0.0, 0.02, n))
            equity[rng.random(n) < 0.05] = np.nan
            peak, worst = 1000.0, 0.0
            for value in equity:
                if value != value:
                    continue
                peak = max(peak, value)
                worst = min(worst, value / peak - 1.0)
            batch.equity_metrics(equity, n, 1000.0, 8760.0, np.empty(n), row)
            assert row[batch.M_MAX_DRAWDOWN] == worst


def test_worst_margin_ratio_is_the_highest_ratio_skipping_nan_bars():
    ratio = np.array([0.1, np.nan, 0.5, 0.25, 0.7, np.nan, 0.3, 0.69, 0.2])
    for n in range(1, len(ratio) + 1):  # every remainder of the four-at-a-time loop
        assert batch.worst_margin_ratio(ratio, n) == np.nanmax(ratio[:n])
    assert math.isnan(batch.worst_margin_ratio(np.full(6, np.nan), 6))
    assert math.isnan(batch.worst_margin_ratio(np.empty(0), 0))
    assert batch.worst_margin_ratio(np.array([np.nan, -np.inf, np.nan]), 3) == -np.inf
    assert batch.worst_margin_ratio(np.array([-1.0, np.inf, 2.0, 3.0, 4.0]), 5) == np.inf
    # of two zeros the first is kept, as a scan in order keeps it (-0.0 == 0.0)
    for first, second in ((-0.0, 0.0), (0.0, -0.0)):
        ratio = np.array([-1.0, np.nan, -2.0, -3.0, -4.0, second])
        ratio[3] = first
        got = batch.worst_margin_ratio(ratio, 6)
        assert got == 0.0 and math.copysign(1.0, got) == math.copysign(1.0, first)


# --- backends ---------------------------------------------------------------------------------


GRID = {"exposure": [1.0, 3.0], "rebalance_every": [8, 24], "margin_mode": ["cross", "isolated"],
        "leverage": [5, 25, 200], "target_kind": "equity"}


@pytest.fixture(scope="module")
def reference(market) -> pd.DataFrame:
    """The in-process rows of GRID, the table every other way of running must reproduce."""
    return sweep(market, hedged_pair, GRID, chunk_size=5)


def test_in_process_rows_do_not_depend_on_chunks_or_threads(market, reference):
    assert len(reference) == 2 * 2 * 2 * 3
    one_thread = sweep(market, hedged_pair, GRID, workers=1, chunk_size=24)
    pd.testing.assert_frame_equal(one_thread, reference)


def test_process_pool_gives_identical_rows(market, reference):
    pooled = sweep(market, hedged_pair, GRID, backend="processes", workers=2, chunk_size=7)
    pd.testing.assert_frame_equal(pooled, reference)


def test_dask_local_cluster_gives_identical_rows(market, reference):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rows = sweep(market, hedged_pair, GRID, client=client, chunk_size=5)
    pd.testing.assert_frame_equal(rows, reference)


# --- the grid ---------------------------------------------------------------------------------


def test_grid_expands_in_order_with_options_after_strategy_parameters():
    g = Grid({"leverage": [5, 10], "exposure": [1.0, 2.0], "margin_mode": "isolated"},
             strategy="s:f")
    runs = list(g)
    assert len(g) == len(runs) == 4
    # window and venue outermost, then strategy parameters, then the other options
    assert [(r.params["exposure"], r.options["leverage"]) for r in runs] == [
        (1.0, 5.0), (1.0, 10.0), (2.0, 5.0), (2.0, 10.0)]
    assert all(r.options["margin_mode"] == "isolated" for r in runs)
    assert runs[0].options["venue"] == "binance_usdm"  # RunConfig's default
    assert Grid([{"exposure": [1.0, 2.0]}, {"exposure": 3.0}], strategy="s:f").__len__() == 3


def test_runs_of_equal_values_under_other_names_do_not_share_targets(market):
    # {size: 0.05} and {hold: 0.05 ...}: the same value text, different parameter sets
    grid = [{"size": 0.05, "target_kind": "units"}, {"size": 0.5, "target_kind": "units"},
            {"hold": 50, "target_kind": "units"}, {"size": 50.0, "target_kind": "units"}]
    table = sweep(market, units_pair, grid, leverage=20)
    for _, row in table.iterrows():
        params = {k: row[k] for k in ("size", "hold") if not pd.isna(row[k])}
        assert_row_matches(row, expected_row(market, units_pair, params, leverage=20,
                                             target_kind="units"))


def test_run_id_is_a_hash_of_the_parameters_and_options():
    r = next(iter(Grid({"rebalance_every": 24, "leverage": 10}, strategy="s:f")))
    assert r.run_id == run_id("s:f", r.params, r.options)
    same = next(iter(Grid({"rebalance_every": 24.0, "leverage": 10.0}, strategy="s:f")))
    assert same.run_id == r.run_id  # 24 and 24.0 are the same run
    other = next(iter(Grid({"rebalance_every": 24, "leverage": 11}, strategy="s:f")))
    assert other.run_id != r.run_id
    assert next(iter(Grid({"rebalance_every": 24}, strategy="t:f"))).run_id != r.run_id


def test_bad_grids_fail_before_anything_runs(market):
    with pytest.raises(ValueError, match="takes no parameter 'exposur'"):
        sweep(market, hedged_pair, {"exposur": [1.0]})
    # the same message as run() gives (one place checks every run option)
    with pytest.raises(ValueError, match="margin_mode='crossed': must be one of"):
        sweep(market, hedged_pair, {"margin_mode": ["crossed"]})
    with pytest.raises(ValueError, match="leverage='ten' is text, not a number"):
        sweep(market, hedged_pair, {"leverage": ["ten"]})
    with pytest.raises(ValueError, match=r"slippage=0\.7: must be a fraction of the price"):
        sweep(market, hedged_pair, {"slippage": [0.7]})
    with pytest.raises(ValueError, match="holds no bar of the market"):
        sweep(market, hedged_pair, {"window": [["2030-01-01", "2031-01-01"]]})
    with pytest.raises(ValueError, match="name of a summary column"):
        sweep(market, lambda m, sharpe=1: hedged_pair(m), {"sharpe": [1, 2]})
    with pytest.raises(ValueError, match="unknown venue"):
        sweep(market, hedged_pair, {"venue": ["nowhere"]})
    with pytest.raises(ValueError, match="margin_mode='spot': must be one of 'cross', 'isolated'"):
        sweep(market, hedged_pair, {"margin_mode": ["spot"]})  # spot is an instrument


def test_a_strategy_returning_a_plan_runs_under_the_plans_options(market):
    # a Plan's options apply where the grid sets none (as run()'s keyword options win over
    # a plan's), and the table shows what each run used
    def planned(m, exposure=1.0):
        return Plan(hedged_pair(m, exposure=exposure), {"target_kind": "equity"})

    table = sweep(market, planned, {"exposure": [1.0, 3.0], "leverage": [5, 10]})
    assert table["error"].isna().all()
    assert (table["target_kind"] == "equity").all()
    for _, row in table.iterrows():
        expected = run(market, planned(market, row["exposure"]), leverage=row["leverage"],
                       record_positions=False).summary()
        assert_row_matches(row, expected)


def test_windows_run_on_their_own_bars(market):
    windows = [["2024-01-01", "2024-01-11"], ["2024-01-11", None]]
    table = sweep(market, hedged_pair, {"window": windows, "leverage": [5, 20]},
                  target_kind="equity", margin_mode="isolated")
    assert len(table) == 4
    assert list(table["window_start"].dt.day) == [1, 1, 11, 11]
    assert table["window_end"].isna().tolist() == [False, False, True, True]
    for _, row in table.iterrows():
        start = row["window_start"]
        end = row["window_end"] if not pd.isna(row["window_end"]) else None
        a = int(np.searchsorted(market.index, start.value))
        b = market.n_bars if end is None else int(np.searchsorted(market.index, end.value))
        part = market.slice(a, b)
        # 10 days of hourly bars, and the rest of January (21 days)
        assert part.n_bars == (240 if end is not None else 21 * 24)
        assert_row_matches(row, expected_row(part, hedged_pair, {}, target_kind="equity",
                                             margin_mode="isolated", leverage=row["leverage"]))


# --- failures, output, resume, interrupts -----------------------------------------------------


def test_a_failed_run_is_recorded_with_its_error_and_the_sweep_goes_on(market):
    table = sweep(market, failing_pair, {"exposure": [1.0, 3.0], "leverage": [10, 200]},
                  target_kind="equity")
    keys = zip(table["exposure"], table["leverage"], strict=True)
    errors = dict(zip(keys, table["error"], strict=True))
    assert pd.isna(errors[(1.0, 10.0)])
    assert errors[(3.0, 10.0)] == "RuntimeError: exposure 3 is not supported"
    assert errors[(1.0, 200.0)].startswith("ValueError: leverage 200 for BTC_USDT exceeds")
    failed = table[table["error"].notna()]
    assert len(failed) == 3
    assert failed[["final_equity", "sharpe", "liquidation_loss"]].isna().all().all()
    assert failed["liquidations"].isna().all()


def test_a_run_does_not_depend_on_where_its_record_buffers_run_out():
    """The bar loop stops at a bar whose events might not fit the record buffers and goes on
    from that bar once they have grown; a batch worker starts each run with the buffers the
    runs before it left, so where a run stops depends on where it runs. This run (isolated
    50x, liquidated again and again) run alone stopped at a funding bar whose open the quiet
    stretch had done, and paid that bar's funding twice (found as a sweep row that differed
    between the in-process and the process-pool backends). Each symbol pays funding once a
    funding bar, and the run's equity is the same, bar by bar, alone and after another run."""
    from backtester.sweep.execute import ChunkOutput, ChunkRunner
    from backtester.sweep.grid import strategy_name

    year = load_market(start="2023-01-01", end="2024-01-01")
    runs = list(Grid([{"exposure": 2.75, "rebalance_every": 52, "margin_mode": "cross",
                       "leverage": 5.0},
                      {"exposure": 3.0, "rebalance_every": 56, "margin_mode": "isolated",
                       "leverage": 50.0}], strategy=strategy_name(hedged_pair),
                     defaults={"target_kind": "equity"}))
    runner = ChunkRunner(year, hedged_pair)
    (group,) = runner.gather(runs, ChunkOutput.empty(runs, True), True)
    call = runner._start_batch(group, True, False, None, 1)  # (in order, on this thread)
    for j, r in enumerate(runs):
        alone = run(year, hedged_pair(year, **r.params), target_kind="equity",
                    margin_mode=r.options["margin_mode"], leverage=r.options["leverage"],
                    record_positions=False)
        assert not alone.funding.duplicated(["bar", "symbol"]).any()
        np.testing.assert_array_equal(call.curves[j], alone.account["equity"].to_numpy())


def test_a_batch_call_that_raises_is_run_again_one_by_one(market, reference, monkeypatch):
    """The compiled batch raising (as it would for a run past a buffer's limit) fails the
    runs of its call that raise alone, and no other: each run of the call runs again by
    itself. A stand-in batch raises for every call holding a run of leverage 25."""
    serial = batch.run_batch_serial

    def raising(w, n_workers, bars, versions, runs, *rest):
        if (runs.sym[:, enums.Sym.LEVERAGE] == 25.0).any():
            raise RuntimeError("buffer limit")
        return serial(w, n_workers, bars, versions, runs, *rest)

    monkeypatch.setattr(batch, "run_batch_serial", raising)
    table = sweep(market, hedged_pair, GRID, chunk_size=5)
    failed = table["leverage"] == 25.0
    assert failed.sum() == 8
    assert (table.loc[failed, "error"] == "RuntimeError: buffer limit").all()
    assert table.loc[failed, "final_equity"].isna().all()
    pd.testing.assert_frame_equal(table[~failed], reference[~failed])


def test_rows_are_written_one_part_per_chunk_and_resumed_by_id(market, tmp_path):
    calls = []

    def counting(m, exposure=1.0):
        calls.append(exposure)
        return hedged_pair(m, exposure=exposure)

    small = {"exposure": [1.0, 2.0], "leverage": [5, 10], "target_kind": "equity"}
    first = sweep(market, counting, small, out=tmp_path, chunk_size=2)
    assert len(list(tmp_path.glob("part-*.parquet"))) == 2
    on_disk = pd.read_parquet(tmp_path)  # _sweep.json and _equity/ are not parquet rows
    assert sorted(on_disk["run_id"]) == sorted(first["run_id"])
    assert calls == [1.0, 2.0]

    calls.clear()
    bigger = {**small, "exposure": [1.0, 2.0, 4.0]}
    second = sweep(market, counting, bigger, out=tmp_path, chunk_size=2)
    assert calls == [4.0]  # the 4 runs already done were skipped
    assert len(second) == 6 and len(read_sweep(tmp_path)) == 6
    fresh = sweep(market, counting, bigger)
    pd.testing.assert_frame_equal(second, fresh)


def test_a_folder_written_by_a_version_with_other_figures_is_not_resumed(market, tmp_path):
    # a sweep folder from before liquidation_fees_waived existed: its rows hold the old
    # engine's fees; resuming into it would mix two engines' rows
    import json

    import pyarrow.parquet as pq

    grid = {"exposure": [1.0, 2.0], "target_kind": "equity"}
    sweep(market, hedged_pair, grid, out=tmp_path)
    meta = tmp_path / "_sweep.json"
    saved = json.loads(meta.read_text())
    assert saved["metrics"] == METRICS
    # the same folder as the earlier version wrote it: no "metrics", one column less
    (part,) = tmp_path.glob("part-*.parquet")
    pq.write_table(pq.read_table(part).drop(["liquidation_fees_waived"]), part)
    meta.write_text(json.dumps({"market": saved["market"]}))
    with pytest.raises(ValueError, match="another version of backtester.*lacks "
                                         "liquidation_fees_waived.*another output directory"):
        sweep(market, hedged_pair, grid, out=tmp_path)
    # a metrics list that is not this version's
    meta.write_text(json.dumps({"market": saved["market"], "metrics": METRICS[:-1]}))
    with pytest.raises(ValueError, match="lacks rejected_orders"):
        sweep(market, hedged_pair, grid, out=tmp_path)
    # the same columns, from rules that give other figures
    assert saved["figures_version"] == batch.FIGURES_VERSION
    meta.write_text(json.dumps({**saved, "figures_version": batch.FIGURES_VERSION - 1}))
    with pytest.raises(ValueError, match=f"figures version {batch.FIGURES_VERSION - 1}; this "
                                         f"one's is {batch.FIGURES_VERSION}"):
        sweep(market, hedged_pair, grid, out=tmp_path)


def test_an_earlier_folder_with_the_same_figures_resumes(market, tmp_path):
    import json

    grid = {"exposure": [1.0, 2.0], "target_kind": "equity"}
    first = sweep(market, hedged_pair, grid, out=tmp_path)
    meta = tmp_path / "_sweep.json"
    meta.write_text(json.dumps({"market": json.loads(meta.read_text())["market"]}))
    pd.testing.assert_frame_equal(sweep(market, hedged_pair, grid, out=tmp_path), first)


def test_retry_failed_reruns_only_the_failed_runs(market, tmp_path):
    broken = {"on": True}

    def flaky(m, exposure=1.0):
        if broken["on"] and exposure == 2.0:
            raise RuntimeError("data feed down")
        return hedged_pair(m, exposure=exposure)

    grid = {"exposure": [1.0, 2.0], "target_kind": "equity"}
    assert sweep(market, flaky, grid, out=tmp_path)["error"].notna().sum() == 1
    broken["on"] = False
    assert sweep(market, flaky, grid, out=tmp_path)["error"].notna().sum() == 1  # done is done
    again = sweep(market, flaky, grid, out=tmp_path, retry_failed=True)
    assert again["error"].isna().all()
    assert read_sweep(tmp_path)["error"].isna().all() and len(read_sweep(tmp_path)) == 2


def test_an_interrupted_sweep_keeps_finished_chunks_and_resumes(market, tmp_path):
    seen = []
    stop = {"at": 3}

    def interrupted(m, exposure=1.0):
        seen.append(exposure)
        if len(seen) == stop["at"]:
            raise KeyboardInterrupt  # as Ctrl-C while the third chunk is being prepared
        return hedged_pair(m, exposure=exposure)

    grid = {"exposure": [0.5, 1.0, 1.5, 2.0], "margin_mode": ["cross", "isolated"],
            "target_kind": "equity"}
    with pytest.raises(KeyboardInterrupt):
        sweep(market, interrupted, grid, out=tmp_path, chunk_size=2)
    # a chunk of 2 runs is one exposure in both modes: two chunks saved, the third lost
    assert sorted(read_sweep(tmp_path)["exposure"]) == [0.5, 0.5, 1.0, 1.0]
    assert not list(tmp_path.glob(".tmp-*"))  # no half-written part left behind

    stop["at"] = None
    seen.clear()
    resumed = sweep(market, interrupted, grid, out=tmp_path, chunk_size=2)
    assert seen == [1.5, 2.0]  # only what was not saved
    assert len(read_sweep(tmp_path)) == 8
    pd.testing.assert_frame_equal(resumed, sweep(market, interrupted, grid))


def test_equity_curves_are_saved_only_when_asked_for(market, tmp_path):
    grid = {"exposure": [1.0, 2.0], "margin_mode": "isolated", "leverage": 20,
            "target_kind": "equity"}
    plain = tmp_path / "plain"
    sweep(market, hedged_pair, grid, out=plain)
    assert not (plain / "_equity").exists()
    with pytest.raises(FileNotFoundError, match="equity=True"):
        read_equity(plain)

    table = sweep(market, hedged_pair, grid, out=tmp_path / "curves", equity=True)
    curves = read_equity(tmp_path / "curves")
    assert sorted(curves.columns) == sorted(table["run_id"])
    for _, row in table.iterrows():
        result = run(market, hedged_pair(market, exposure=row["exposure"]), leverage=20,
                     margin_mode="isolated", target_kind="equity")
        assert curves[row["run_id"]].to_numpy() == pytest.approx(result.equity.to_numpy(),
                                                                 rel=1e-12)
        assert curves[row["run_id"]].iloc[-1] == row["final_equity"]
    with pytest.raises(ValueError, match="give out"):
        sweep(market, hedged_pair, grid, equity=True)


def test_a_sweep_keeps_no_equity_curve_unless_asked(market):
    # structural memory check: without equity, the compiled batch writes rows only
    from backtester.sweep.execute import ChunkRunner

    runner = ChunkRunner(market, hedged_pair)
    runs = list(Grid({"exposure": [1.0, 2.0], "target_kind": "equity"}, strategy="s:f"))
    output = runner.run_chunk(runs)
    assert output.equity is None and output.metrics.shape == (2, len(METRICS))
    assert runner.run_chunk(runs, equity=True).equity[0].shape == (market.n_bars,)


def test_a_sweep_spares_the_objects_made_before_it_from_the_collector(market):
    # gc.freeze for the sweep: the strategy, called during it, sees the objects frozen;
    # after it nothing is; a freeze made by someone else is left as it was
    import gc

    seen = []

    def watched(market, exposure=1.0):
        seen.append(gc.get_freeze_count())
        return hedged_pair(market, exposure=exposure)

    grid = {"exposure": [1.0, 2.0], "target_kind": "equity"}
    before = gc.get_freeze_count()
    sweep(market, watched, grid)
    assert seen and min(seen) > before and gc.get_freeze_count() == before
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        seen.clear()
        sweep(market, watched, grid)
        assert seen == [frozen, frozen] and gc.get_freeze_count() == frozen
    finally:
        gc.unfreeze()


def test_a_sweep_into_a_folder_of_other_data_is_refused(market, tmp_path):
    sweep(market, hedged_pair, {"leverage": [5]}, out=tmp_path, target_kind="equity")
    with pytest.raises(ValueError, match="other market data"):
        sweep(market.slice(0, 100), hedged_pair, {"leverage": [5]}, out=tmp_path)


# --- the command line --------------------------------------------------------------------------


def test_cli_sweep_writes_rows_shows_progress_and_resumes(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--start", "2024-01-01", "--end", "2024-01-15", "-p", "exposure=1,2",
            "-p", "leverage=5,20", "-p", "margin_mode=cross,isolated", "--out", str(out)]
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "8 runs, 0 failed" in captured.out and "best 8 by Sharpe" in captured.out
    assert "runs/s" in captured.err and "ETA" in captured.err
    rows = pd.read_parquet(out)
    assert len(rows) == 8 and set(rows["margin_mode"]) == {"cross", "isolated"}
    assert rows["target_kind"].eq("equity").all()  # the hedged pair's targets are fractions

    assert main(args + ["--no-progress"]) == 0
    assert capsys.readouterr().err == ""
    assert len(pd.read_parquet(out)) == 8  # nothing run twice


def test_cli_sweep_reads_a_toml_grid(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('margin_mode = ["cross", "isolated"]\nleverage = 10\n'
                    'window = [["2024-01-01", "2024-01-08"], ["2024-01-08", "2024-01-15"]]\n'
                    'rebalance_every = [12, 24]\n')
    out = tmp_path / "out"
    assert main(["sweep", "--grid", str(grid), "--end", "2024-02-01", "--out", str(out),
                 "--no-progress", "--top", "3"]) == 0
    rows = pd.read_parquet(out)
    assert len(rows) == 2 * 2 * 2
    assert sorted(set(rows["window_start"].dt.day)) == [1, 8]
    assert "best 3 by Sharpe" in capsys.readouterr().out


def test_cli_sweep_explains_bad_arguments(tmp_path, capsys):
    assert main(["sweep", "-p", "exposur=1,2", "--out", str(tmp_path)]) == 2
    assert "takes no parameter 'exposur'" in capsys.readouterr().err
    assert main(["sweep", "-p", "window=2024-01-01", "--out", str(tmp_path)]) == 2
    assert "START..END" in capsys.readouterr().err


def test_progress_line_counts_rate_and_time_left():
    import io

    from backtester.sweep.progress import Progress

    stream = io.StringIO()
    meter = Progress(total=100, skipped=20, stream=stream)
    meter.start -= 2.0  # as if 2 s went by
    meter.update(40, failed=1)
    line = stream.getvalue()
    # 40 runs in 2 s: 20 runs/s; 40 left -> 2 s
    assert "60/100 runs" in line and "20 runs/s" in line and "ETA 00:02" in line
    assert "20 already done" in line and "1 failed" in line
    assert math.isfinite(meter.start)


def test_cli_sweep_ranks_no_run_that_lost_its_account_or_barely_traded(tmp_path, capsys):
    # 2023 Q1 of the embedded data, the hedged pair, cross: at 20x equity per leg the 5x run
    # cannot pay for its orders (all refused) and the 100x run is wiped out, yet its returns
    # before the wipe give it the best Sharpe of the four. Neither is ranked.
    out = tmp_path / "out"
    assert main(["sweep", "--start", "2023-01-01", "--end", "2023-04-01", "-p",
                 "exposure=1,20", "-p", "leverage=5,100", "-p", "margin_mode=cross",
                 "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = pd.read_parquet(out)
    wiped = rows[rows["total_return"] <= -0.99]
    refused = rows[(rows["total_return"] > -0.99) & (rows["rejected_orders"] > rows["fills"])]
    assert len(wiped) == 1 and len(refused) == 1
    assert wiped["sharpe"].iloc[0] > rows["sharpe"].drop(wiped.index).max()  # the trap
    assert "1 run(s) lost the account (99% or more): not ranked" in printed
    assert "1 run(s) had more orders rejected than filled: not ranked" in printed
    assert "best 2 by Sharpe:" in printed
    table = printed.split("best 2 by Sharpe:\n")[1].split("report:")[0].splitlines()
    header, first = table[0], table[1]
    assert header.split() == ["#", "exposure", "leverage", "sharpe", "return", "max", "dd",
                              "liqs", "liq", "loss", "worst", "MR", "fills", "rejected"]
    assert len(table) == 3 and max(len(line) for line in table) <= 100  # (paths aside)
    ranked = rows.drop(wiped.index).drop(refused.index).sort_values("sharpe", ascending=False)
    top = ranked.iloc[0]
    assert first.split()[1:6] == [f"{top['exposure']:g}", f"{top['leverage']:g}",
                                  f"{top['sharpe']:.2f}", f"{top['total_return']:+.1%}",
                                  f"{top['max_drawdown']:.1%}"]
    assert first.split()[-1] == f"{top['rejected_orders']:,}"
