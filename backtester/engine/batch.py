"""Many runs on one shared market in one compiled call: the fast path of sweeps.

A batch is R runs that share a market window (``enums.Bars``) and a venue's rule
versions (``enums.Versions``); each run has its own targets (an index into a stack of
distinct target arrays), margin modes, symbol rows (leverage, fees), collateral,
balance and simulation choices (``Runs``). Every run opens its own account
(``account.open_account``) and runs ``kernel.run_to_end``, exactly as ``run()`` does;
the per-bar outputs and record buffers are scratch space of the worker thread that
runs it, reused by its next run, so that no (T,) array outlives its run. Each run
leaves one row of ``METRICS`` (and, only when asked, its equity curve).

The metrics are those of ``Result.summary()``, computed the same way: sums use
numpy's pairwise summation (``pairwise_sum``), and the mean and standard
deviation of bar returns follow pandas' two-pass formulas, so the figures agree
with ``run(...).summary()`` to the last bit, whatever the backend. A sweep's runs
with a strategy callback run one by one through ``engine.driver`` and are
summarised by the same ``summarise``.
"""

from __future__ import annotations

from collections import namedtuple

import numpy as np
from numba import njit, prange, uint64

from .account import open_account
from .enums import (
    N_MARGIN_FIELDS,
    N_SUMMARY_OUT,
    ZERO,
    Count,
    EventKind,
    FillReason,
    Out,
    Outputs,
    Trading,
)
from .jit import inner
from .kernel import run_to_end
from .records import new_records

# one row per run, in this column order (floats; counts are whole numbers)
METRICS = (
    "final_equity",
    "total_return",
    "max_drawdown",
    "sharpe",
    "liquidations",
    "liquidated_positions",
    "liquidation_loss",
    "liquidation_fees",
    "liquidation_fees_waived",
    "bankruptcy_shortfall",
    "fees_paid",
    "funding_paid",
    "borrowing_fees",
    "margin_calls",
    "worst_margin_ratio",
    "fills",
    "rejected_orders",
)
COUNT_METRICS = ("liquidations", "liquidated_positions", "margin_calls", "fills",
                 "rejected_orders")
# The version of the figures a run reports: add one whenever a change of the engine's rules
# changes what some run reports (not for a change of speed that leaves every figure as it
# was). A sweep folder records it, and one written under another version is not resumed: its
# rows and the new ones would mix two engines' results. (2: issue 11's rules: liquidations at
# the open, fees charged and waived, open loss, dust. 3: issue 12's liquidation rules: Kraken's
# FIFO liquidation up to 100%, Binance's partial liquidation of brackets >= 2, order filters;
# liquidated_positions counts a position once per event, not its cut and close twice.
# 4: a position on a symbol whose data end before the market's last bar is closed at its
# last close (fill reason data_end), no longer left open at that price: runs on such data
# report other fills, fees and equity. 5: that close pays the run's slippage, like any order.)
FIGURES_VERSION = 5
M_FINAL_EQUITY = 0
M_TOTAL_RETURN = 1
M_MAX_DRAWDOWN = 2
M_SHARPE = 3
M_LIQUIDATIONS = 4
M_LIQUIDATED_POSITIONS = 5
M_LIQUIDATION_LOSS = 6
M_LIQUIDATION_FEES = 7
M_LIQUIDATION_FEES_WAIVED = 8
M_BANKRUPTCY_SHORTFALL = 9
M_FEES_PAID = 10
M_FUNDING_PAID = 11
M_BORROWING_FEES = 12
M_MARGIN_CALLS = 13
M_WORST_MARGIN_RATIO = 14
M_FILLS = 15
M_REJECTED_ORDERS = 16
N_METRICS = 17

# the choices of each run, shape (R, N_RUN_FIELDS), codes as in ``enums`` stored as floats
RUN_TARGETS = 0  # row of the targets stack the run trades
RUN_TARGET_KIND = 1  # TargetKind.* code (EQUITY_MARGIN: sizing="margin")
RUN_FILL_AT = 2  # FillAt.* code
RUN_PATH = 3  # PATH_* code
RUN_REDUCE_TO_FIT = 4  # 1.0 to cut orders to the available balance, 0.0 to reject them
RUN_INITIAL_BALANCE = 5  # the deposit, quote currency
RUN_SLIPPAGE = 6  # fraction of the price paid against the trader
N_RUN_FIELDS = 7

# the runs of a batch
Runs = namedtuple(
    "Runs",
    [
        "targets",  # (U, T, N) the distinct target arrays
        "has_target",  # (U, T) bool: row t of target array u holds a target
        "choices",  # (R, N_RUN_FIELDS) each run's choices (RUN_*)
        "mode",  # (R, N) int64 each run's margin modes
        "sym",  # (R, N_SYMBOL_FIELDS, N) each run's symbol rows (version 0's, its leverage)
        "holdings",  # (R, N) coins each run holds at the start in COLLATERAL columns
    ],
)


# --- metrics ---------------------------------------------------------------------------------


@njit(cache=True, error_model='numpy', _nrt=False, inline='always')
def block_sum(a, lo, n):
    """Sum of at most 128 values ``a[lo:lo+n]`` as numpy adds them (8 accumulators).

    Indexed with unsigned integers: an index numba cannot prove non-negative gets code
    that wraps a negative one around (a compare and a conditional move per element), which
    made this loop twice as slow as numpy's."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    b = uint64(lo)
    r0 = a[b]
    r1 = a[b + uint64(1)]
    r2 = a[b + uint64(2)]
    r3 = a[b + uint64(3)]
    r4 = a[b + uint64(4)]
    r5 = a[b + uint64(5)]
    r6 = a[b + uint64(6)]
    r7 = a[b + uint64(7)]
    whole = n - n % 8
    j = b + uint64(8)
    end = b + uint64(whole)
    while j < end:
        r0 += a[j]
        r1 += a[j + uint64(1)]
        r2 += a[j + uint64(2)]
        r3 += a[j + uint64(3)]
        r4 += a[j + uint64(4)]
        r5 += a[j + uint64(5)]
        r6 += a[j + uint64(6)]
        r7 += a[j + uint64(7)]
        j += uint64(8)
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(lo + whole, lo + n):
        res += a[i]
    return res


@inner(error_model='numpy')
def pairwise_sum(a, lo, n):
    """Sum of ``a[lo:lo+n]`` in numpy's order: halves (cut at a multiple of 8) summed
    apart down to blocks of 128, then added back up the tree.

    ``np.sum`` (and so pandas' sum, mean and std) adds this way; a plain loop
    would round differently and a sweep row would not match ``Result.summary()``.
    The tree is walked with an explicit stack: numba cannot cache a recursive function.
    """
    if n <= 128:
        return block_sum(a, lo, n)
    # one frame per tree level (a depth of 64 covers any int64 length)
    f_lo = np.empty(64, dtype=np.int64)
    f_n = np.empty(64, dtype=np.int64)
    f_stage = np.empty(64, dtype=np.int64)  # 0: go left, 1: go right, 2: add the halves
    f_left = np.empty(64)
    f_right = np.empty(64)
    f_lo[0] = lo
    f_n[0] = n
    f_stage[0] = 0
    top = 1
    total = 0.0
    while top > 0:
        k = top - 1
        size = f_n[k]
        if size <= 128 or f_stage[k] == 2:
            if size <= 128:
                value = block_sum(a, f_lo[k], size)
            else:
                value = f_left[k] + f_right[k]
            top -= 1
            if top == 0:
                total = value
            elif f_stage[top - 1] == 1:
                f_left[top - 1] = value
            else:
                f_right[top - 1] = value
            continue
        half = size // 2
        half -= half % 8
        if f_stage[k] == 0:
            f_stage[k] = 1
            f_lo[top] = f_lo[k]
            f_n[top] = half
        else:
            f_stage[k] = 2
            f_lo[top] = f_lo[k] + half
            f_n[top] = size - half
        f_stage[top] = 0
        top += 1
    return total


@inner(error_model='numpy')
def equity_metrics(equity, n_bars, initial_equity, bars_per_year, returns, row):
    """Total return, max drawdown and annualised Sharpe of one equity curve, into ``row``.

    As ``backtester.metrics``: the drawdown and total return are measured from
    the initial equity; the Sharpe ratio uses bar returns (0 after equity hit
    zero), their mean over their sample standard deviation (ddof 1).
    """
    row[M_FINAL_EQUITY] = equity[n_bars - 1]
    row[M_TOTAL_RETURN] = equity[n_bars - 1] / initial_equity - 1.0
    # The drawdown at t is value / peak - 1 (peak > 0). While the peak stays, that is
    # monotone in the value (a correctly rounded division by a positive number, then a
    # subtraction, never reverse an order), so its least is the lowest value's: one
    # division per peak rather than per bar, the same bits. (NaN bars compare false.)
    peak = initial_equity
    low = peak  # the lowest value since the peak was set
    worst = 0.0
    for t in range(n_bars):
        value = equity[t]
        if value > peak:
            if peak > 0.0:
                d = low / peak - 1.0
                if d < worst:
                    worst = d
            peak = value
            low = value
        elif value < low:
            low = value
    if peak > 0.0:
        d = low / peak - 1.0
        if d < worst:
            worst = d
    row[M_MAX_DRAWDOWN] = worst
    n_ret = n_bars - 1
    row[M_SHARPE] = np.nan
    if n_ret < 2:
        return
    for t in range(1, n_bars):
        prev = equity[t - 1]
        returns[t - 1] = equity[t] / prev - 1.0 if prev > 0.0 else 0.0
    mean = pairwise_sum(returns, ZERO, n_ret) / n_ret
    # pandas' nanvar: mean first, then the sum of squared deviations over n - 1
    for t in range(n_ret):
        dev = mean - returns[t]
        returns[t] = dev * dev
    std = np.sqrt(pairwise_sum(returns, ZERO, n_ret) / (n_ret - 1.0))
    if np.isfinite(std) and std != 0.0:
        row[M_SHARPE] = mean / std * np.sqrt(bars_per_year)


@inner(error_model='numpy')
def record_metrics(records, values, row):
    """Liquidation, fee, funding and order counts of one run's records, into ``row``.

    ``values`` is scratch space at least as long as the largest record count.
    """
    fills, liqs, funding, account_events, counts = (records.fills, records.liqs,
                                                    records.funding, records.events,
                                                    records.counts)
    n_liq = counts[Count.LIQS]
    # event ids count up and the records of one event are recorded together; a position
    # counts once per event, though a partial cut and the close after it are two records
    events = 0
    positions = 0
    first = 0
    for c in range(n_liq):
        if c == 0 or liqs[c]["event"] != liqs[c - 1]["event"]:
            events += 1
            first = c
        seen = False
        for d in range(first, c):
            if liqs[d]["symbol"] == liqs[c]["symbol"]:
                seen = True
                break
        if not seen:
            positions += 1
    row[M_LIQUIDATIONS] = events
    row[M_LIQUIDATED_POSITIONS] = positions
    for c in range(n_liq):
        values[c] = liqs[c]["margin_lost"]
    row[M_LIQUIDATION_LOSS] = pairwise_sum(values, ZERO, n_liq)
    for c in range(n_liq):
        values[c] = liqs[c]["fee"]
    row[M_LIQUIDATION_FEES] = pairwise_sum(values, ZERO, n_liq)
    for c in range(n_liq):
        values[c] = liqs[c]["fee_waived"]
    row[M_LIQUIDATION_FEES_WAIVED] = pairwise_sum(values, ZERO, n_liq)
    for c in range(n_liq):
        values[c] = liqs[c]["shortfall"]
    row[M_BANKRUPTCY_SHORTFALL] = pairwise_sum(values, ZERO, n_liq)
    n_fee = 0
    for c in range(counts[Count.FILLS]):
        if fills[c]["reason"] != FillReason.LIQUIDATION:
            values[n_fee] = fills[c]["fee"]
            n_fee += 1
    row[M_FEES_PAID] = pairwise_sum(values, ZERO, n_fee)
    row[M_FILLS] = n_fee
    for c in range(counts[Count.FUNDING]):
        values[c] = funding[c]["payment"]
    row[M_FUNDING_PAID] = pairwise_sum(values, ZERO, counts[Count.FUNDING])
    n_fee = 0
    for c in range(counts[Count.EVENTS]):
        if account_events[c]["kind"] != EventKind.MARGIN_CALL:
            values[n_fee] = account_events[c]["amount"]
            n_fee += 1
    row[M_BORROWING_FEES] = pairwise_sum(values, ZERO, n_fee)
    row[M_MARGIN_CALLS] = counts[Count.EVENTS] - n_fee
    row[M_REJECTED_ORDERS] = counts[Count.REJECTS]


@inner(error_model='numpy', _nrt=False)
def worst_margin_ratio(ratio, n_bars):
    """The highest cross margin ratio of the run (NaN bars skipped, as pandas' max does).

    Four running maxima side by side (the compiler makes them one vector): a max has no
    rounding, so any order finds the same value; but +0.0 and -0.0 compare equal, and
    pandas keeps the first of them, so a zero (and -inf, or no value at all) is looked up
    again in order.
    """
    w0 = -np.inf
    w1 = -np.inf
    w2 = -np.inf
    w3 = -np.inf
    whole = n_bars - n_bars % 4
    for t in range(0, whole, 4):
        v0 = ratio[t]
        v1 = ratio[t + 1]
        v2 = ratio[t + 2]
        v3 = ratio[t + 3]
        if v0 > w0:
            w0 = v0
        if v1 > w1:
            w1 = v1
        if v2 > w2:
            w2 = v2
        if v3 > w3:
            w3 = v3
    for t in range(whole, n_bars):
        if ratio[t] > w0:
            w0 = ratio[t]
    if w1 > w0:
        w0 = w1
    if w2 > w0:
        w0 = w2
    if w3 > w0:
        w0 = w3
    if w0 == 0.0 or w0 == -np.inf:
        for t in range(n_bars):
            if ratio[t] == w0:
                return ratio[t]
        return np.nan
    return w0


# --- one run ---------------------------------------------------------------------------------


@njit(cache=True, error_model='numpy')
def summarise(out, records, initial_equity, bars_per_year, values, row):
    """The ``METRICS`` row of one finished run, from its per-bar outputs and records.

    ``values`` is scratch space at least as long as the run (and its largest record count
    when that is longer, else a new array is used).
    """
    n_bars = out.shape[1]
    equity_metrics(out[Out.EQUITY], n_bars, initial_equity, bars_per_year, values, row)
    row[M_WORST_MARGIN_RATIO] = worst_margin_ratio(out[Out.MARGIN_RATIO], n_bars)
    counts = records.counts
    largest = max(counts[Count.FILLS], counts[Count.LIQS], counts[Count.FUNDING],
                  counts[Count.EVENTS])
    if largest > values.shape[0]:
        values = np.empty(largest)
    record_metrics(records, values, row)


@inner(error_model='numpy')
def run_one(r, bars, versions, runs, bars_per_year, summary, equity, out, values, records):
    """Run r of the batch from a flat account; write its metrics row (and its equity curve).

    ``out``, ``values`` and the record buffers are the worker's scratch space: the
    buffers are returned, grown where this run needed more, for its next run.
    """
    n = bars.open.shape[1]
    choices = runs.choices[r]
    book, initial_equity = open_account(choices[RUN_INITIAL_BALANCE], runs.mode[r].copy(),
                                        runs.sym[r].copy(), versions, runs.holdings[r],
                                        bars.mark_open)
    records.counts[:] = 0
    u = int(choices[RUN_TARGETS])
    trading = Trading(runs.targets[u], runs.has_target[u], int(choices[RUN_TARGET_KIND]),
                      int(choices[RUN_FILL_AT]), choices[RUN_SLIPPAGE],
                      choices[RUN_REDUCE_TO_FIT] != 0.0)
    no_positions = np.empty((0, n))
    outputs = Outputs(out, no_positions, no_positions, np.empty((N_MARGIN_FIELDS, 0, n)))
    records = run_to_end(bars, book, trading, int(choices[RUN_PATH]), versions, records,
                         outputs)
    summarise(out, records, initial_equity, bars_per_year, values, summary[r])
    if equity.shape[0] > 0:
        equity[r, :] = out[Out.EQUITY]
    return records


@njit(cache=True, error_model='numpy', nogil=True)
def run_batch_serial(w, n_workers, bars, versions, runs, bars_per_year, summary, equity):
    """Runs w, w + n_workers, w + 2 n_workers... of the batch on the calling thread.

    ``(0, 1, ...)`` runs them all: process-pool and Dask workers call it so (the
    GIL is released, so Dask's worker threads run side by side); each thread of
    ``run_batch_parallel`` calls it for its share. Buffers are allocated once here.
    Arguments as ``run_batch_parallel``.
    """
    n_bars, n = bars.open.shape
    n_funding = 0
    for t in range(n_bars):
        if bars.has_funding[t]:  # (a run without funding has no rate rows)
            for i in range(n):
                if bars.funding_rate[t, i] == bars.funding_rate[t, i]:
                    n_funding += 1
    # a fill per symbol per target row is the common case (as engine.driver sizes it)
    n_rows = 0
    if w < runs.choices.shape[0]:
        u = int(runs.choices[w, RUN_TARGETS])
        for t in range(n_bars):
            n_rows += runs.has_target[u, t]
    out = np.empty((N_SUMMARY_OUT, n_bars))  # (the rows the summary reads, no more)
    values = np.empty(max(n_bars, 1))
    records = new_records(n, versions.tiers.shape[3], min(n_rows * n + 2 * n, 1 << 22),
                          n_funding)
    for r in range(w, runs.choices.shape[0], n_workers):
        records = run_one(r, bars, versions, runs, bars_per_year, summary, equity, out, values,
                          records)


@njit(cache=True, error_model='numpy', parallel=True)
def run_batch_parallel(n_workers, bars, versions, runs, bars_per_year, summary, equity):
    """Every run of the batch, interleaved over ``n_workers`` threads (the in-process path).

    - ``bars`` (``enums.Bars``): the market window, shared and read-only;
    - ``versions`` (``enums.Versions``): the venue's rules, version v in force from
      bar ``versions.bars[v]``, shared (each run copies what it changes);
    - ``runs`` (``Runs``): the target stack and each run's choices, modes, symbol rows
      and collateral;
    - out: ``summary`` (R, N_METRICS); ``equity`` (R, T), or (0, T) to keep none.
    """
    for w in prange(n_workers):
        # prange numbers its threads with unsigned ints: one signature for both callers
        run_batch_serial(np.int64(w), n_workers, bars, versions, runs, bars_per_year, summary,
                         equity)
