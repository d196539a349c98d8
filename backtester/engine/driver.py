"""Drive the kernel from Python: allocate the run's state and buffers, grow them, resume.

Numpy only (no pandas): the thin layer that ``backtester.run``, benchmarks and
sweeps call once their inputs are validated arrays.

Strategy callbacks: ``compile_callback(fn)`` compiles a function
``fn(t, ctx, orders, params) -> bool`` for the one numba signature the kernel
calls (``callback_signature()``) and returns it as a numba first-class function
value. The kernel is therefore compiled, and cached on disk, once for every
callback, instead of once per callback and process (a dispatcher argument would
make numba specialise, and never cache, the whole loop for each function).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import config as numba_config
from numba import njit, types
from numba.core.registry import CPUDispatcher

from . import enums
from .enums import (
    A_EQUITY_PREV,
    A_WALLET,
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    C_LIQS,
    C_REJECTS,
    N_ACCOUNT,
    N_COUNTS,
    N_ORDER_FIELDS,
    N_OUT,
    N_STATE,
    S_LAST_CLOSE,
    S_LIQ_PX,
    S_MARK,
    BarContext,
)
from .kernel import put_rules_in_force, simulate
from .records import grow_buffer


class CallbackError(RuntimeError):
    """An exception raised inside a strategy callback; ``bar`` is where (the cause is chained)."""

    def __init__(self, bar: int, error: Exception):
        super().__init__(f"strategy callback raised {type(error).__name__} at bar {bar}: {error}")
        self.bar = bar
        self.error = error


@dataclass
class KernelOutput:
    """What one kernel run produced (plain numpy)."""

    account: np.ndarray  # (N_OUT, T) per-bar series, rows as enums.OUT_*
    fills: np.ndarray
    liquidations: np.ndarray
    funding: np.ndarray
    rejections: np.ndarray
    events: np.ndarray  # enums.event_dt: borrowing fees, margin calls
    positions: np.ndarray | None  # (T, N) when recorded
    liquidation_prices: np.ndarray | None  # (T, N) when recorded
    state: np.ndarray  # (N_STATE, N) final state, rows as enums.S_*
    wallet_balance: float
    mode: np.ndarray | None = None  # (N,) margin modes at the end (a callback may switch them)
    sym: np.ndarray | None = None  # (N_SYMBOL_FIELDS, N) at the end (a callback may re-lever)
    memory: np.ndarray | None = None  # the callback's scratch space at the end
    initial_equity: float | None = None  # the deposit plus collateral at its first mark


def new_state(n_symbols: int, initial_balance: float):
    """A flat account holding ``initial_balance``: (state, tier, account) arrays."""
    state = np.zeros((N_STATE, n_symbols))
    state[S_LIQ_PX] = np.nan
    state[S_MARK] = np.nan
    state[S_LAST_CLOSE] = np.nan
    tier = np.zeros(n_symbols, dtype=np.int64)
    account = np.zeros(N_ACCOUNT)
    account[A_WALLET] = initial_balance
    account[A_EQUITY_PREV] = initial_balance
    return state, tier, account


@njit(cache=True)
def rows_with_values(values):
    """Per row of a (T, N) array: does it hold any non-NaN value; and how many it holds."""
    n_bars, n = values.shape
    rows = np.zeros(n_bars, dtype=np.bool_)
    count = 0
    for t in range(n_bars):
        for i in range(n):
            if values[t, i] == values[t, i]:
                rows[t] = True
                count += 1
    return rows, count


def _used(buffer: np.ndarray, count: int) -> np.ndarray:
    """The used rows of a record buffer: a view when it is at least half used (no copy of
    what is mostly data), else a copy, so that a mostly empty buffer is not kept alive."""
    if 2 * count >= buffer.shape[0]:
        return buffer[:count]
    return buffer[:count].copy()


def bar_hours(index, bar_ns: int) -> np.ndarray:
    """(T + 1,) hours from the first bar's open to each bar's open, and to the last bar's end:
    the clock the kernel charges spot-margin rollover fees by."""
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        return np.zeros(1)
    edges = np.append(index, index[-1] + int(bar_ns))
    return (edges - index[0]) / 3.6e12


def simulate_arrays(
    *, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate, targets,
    target_kind: int, mode, sym, tiers, n_tiers, initial_balance: float, slippage: float = 0.0,
    fill_at: int = enums.FILL_NEXT_OPEN, path: int = enums.PATH_OHLC,
    reduce_to_fit: bool = False, record_positions: bool = False,
    callback=None, params=None, series=None, memory=None, high=None, low=None, volume=None,
    schedule=(), hours=None, holdings=None, loan_rate: float = 0.0,
) -> KernelOutput:
    """Run the kernel over every bar. Inputs must be validated, C-contiguous float64/int64.

    ``sym`` is (N_SYMBOL_FIELDS, N) and ``tiers`` (N_TIER_FIELDS, N, K), laid out
    as in ``enums``. ``targets`` may be None when a callback decides.

    A strategy callback: ``callback`` from ``compile_callback``, with ``params``
    (float64 values), ``series`` ((K, T, N) precomputed series, default none),
    ``memory`` (the initial scratch space, default empty) and the last-price
    ``high``, ``low``, ``volume`` bars for its view (default: the close). The
    callback may change ``mode`` and ``sym`` in place: pass copies you want kept.

    ``schedule``: the venue's rule changes inside the run, as ``(bar, tiers,
    n_tiers, sym_rules)`` in bar order, each in force from that bar on (tier
    arrays as wide as ``tiers``; ``sym_rules`` (N_SYMBOL_FIELDS, N), whose venue
    rows replace ``sym``'s). The run pauses at each such bar and goes on under the
    new rules: the tier arrays and rule rows are updated in place (a callback's
    view sees them), and open positions are re-bracketed and their isolated
    liquidation prices recomputed, as Binance applies new brackets to open
    positions.

    ``hours``: (T + 1,) the bars' times in hours (``bar_hours``); default one hour
    a bar. Only spot-margin rollover fees and loan interest read it.

    ``holdings``: (N,) coins held at the start in the columns whose mode is
    ``COLLATERAL`` (multi-currency margin), valued from their first mark; they are
    deposited on top of ``initial_balance``. ``loan_rate``: interest per hour on a
    negative wallet balance (a loan backed by that collateral).
    """
    n_bars, n = open_.shape
    if targets is None:
        targets = np.empty((0, n))
        has_target = np.zeros(n_bars, dtype=np.bool_)
    else:
        has_target, _ = rows_with_values(targets)
    has_funding, n_funding = rows_with_values(funding_rate)
    # a fill per symbol per target row is the common case; more grow by doubling
    fills = np.empty(max(64, min(int(has_target.sum()) * n + 2 * n, 1 << 22)), dtype=enums.fill_dt)
    liqs = np.empty(max(64, n * (tiers.shape[2] + 1)), dtype=enums.liquidation_dt)
    funding = np.empty(max(1, n_funding), dtype=enums.funding_dt)
    rejects = np.empty(max(64, n), dtype=enums.rejection_dt)
    events = np.empty(max(64, 4 * n + 2), dtype=enums.event_dt)
    if hours is None:
        hours = np.arange(n_bars + 1, dtype=np.float64)
    hours = np.ascontiguousarray(hours, dtype=np.float64)
    out = np.empty((N_OUT, n_bars))
    shape = (n_bars, n) if record_positions else (0, n)
    positions = np.empty(shape)
    liq_prices = np.empty(shape)
    counts = np.zeros(N_COUNTS, dtype=np.int64)
    state, tier, account = new_state(n, float(initial_balance))
    account[enums.A_LOAN_RATE] = float(loan_rate)
    initial_equity = float(initial_balance)
    if holdings is not None:
        for i in np.flatnonzero(np.asarray(holdings) > 0.0):
            marks = mark_open[:, i][~np.isnan(mark_open[:, i])]
            if not len(marks):
                raise ValueError(f"collateral column {i} has no mark price to value it")
            state[enums.S_QTY, i] = holdings[i]
            state[enums.S_ENTRY, i] = marks[0]
            state[enums.S_ISO_MARGIN, i] = holdings[i] * marks[0]
            state[enums.S_MARK, i] = marks[0]
            account[A_EQUITY_PREV] += holdings[i] * marks[0]
            initial_equity += holdings[i] * marks[0]
    extra = ()
    if callback is not None:
        ctx, orders, params = callback_arguments(
            open_=open_, high=high, low=low, close=close, volume=volume, mark_close=mark_close,
            funding_rate=funding_rate, series=series, state=state, mode=mode, sym=sym,
            tiers=tiers, n_tiers=n_tiers, account=account, out=out, memory=memory,
            params=params)
        extra = (callback, ctx, orders, params)
    start = 0
    changes = list(schedule)
    while True:
        stop = changes[0][0] if changes else n_bars
        try:
            start = simulate(
                start, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate,
                has_funding, hours, targets, has_target, target_kind, mode, sym, tiers, n_tiers,
                float(slippage), fill_at, path, bool(reduce_to_fit), bool(record_positions),
                state, tier, account, out, positions, liq_prices, fills, liqs, funding, rejects,
                events, counts, *extra, stop=stop,
            )
        except Exception as exc:
            if callback is None:
                raise
            # the kernel raises nothing itself: the strategy's code did, at this bar
            raise CallbackError(int(account[enums.A_BAR]), exc) from exc
        if start >= n_bars:
            break
        if start == stop:
            _, new_tiers, new_n_tiers, new_sym = changes.pop(0)
            put_rules_in_force(new_tiers, new_n_tiers, new_sym, tiers, n_tiers, sym, state, mode,
                               tier)
            continue
        # a bar's worst case per symbol: an order fill (with a callback: targets and its
        # orders), a liquidation, a collateral sale and a partial cut; a rejection (with a
        # callback: each of its fields refused); the events of ``simulate``'s room check
        cuts = n * tiers.shape[2]
        fills = grow_buffer(fills, counts[C_FILLS] + 4 * n + cuts + 1)
        liqs = grow_buffer(liqs, counts[C_LIQS] + n + cuts + 1)
        rejects = grow_buffer(rejects, counts[C_REJECTS] + 6 * n + 1)
        events = grow_buffer(events, counts[C_EVENTS] + 4 * n + 3)
    return KernelOutput(
        account=out,
        fills=_used(fills, counts[C_FILLS]),
        liquidations=_used(liqs, counts[C_LIQS]),
        funding=_used(funding, counts[C_FUNDING]),
        rejections=_used(rejects, counts[C_REJECTS]),
        events=_used(events, counts[C_EVENTS]),
        positions=positions if record_positions else None,
        liquidation_prices=liq_prices if record_positions else None,
        state=state,
        wallet_balance=float(account[A_WALLET]),
        mode=mode,
        sym=sym,
        memory=extra[1].memory if extra else None,
        initial_equity=initial_equity,
    )


def pack_tiers(floors, caps, mmrs, cums, max_leverage) -> np.ndarray:
    """Stack (N, K) tier tables into the kernel's (N_TIER_FIELDS, N, K) layout."""
    tiers = np.empty((enums.N_TIER_FIELDS,) + np.shape(floors))
    tiers[enums.TIER_FLOOR] = floors
    tiers[enums.TIER_CAP] = caps
    tiers[enums.TIER_MMR] = mmrs
    tiers[enums.TIER_CUM] = cums
    tiers[enums.TIER_MAX_LEVERAGE] = max_leverage
    return tiers


def default_symbol_rules(n_symbols: int) -> np.ndarray:
    """(N_SYMBOL_FIELDS, N) rule rows of Binance's model: bracket MM at the mark, no fee in
    the margin, closed at the trigger, funding from the position, no partial close, one-way."""
    rules = np.zeros((enums.N_SYMBOL_FIELDS, n_symbols))
    rules[enums.SYM_PARTNER] = -1.0
    return rules


def pack_symbol_params(leverage, taker_fee, liquidation_fee, rules=None) -> np.ndarray:
    """Stack per-symbol parameters into the kernel's (N_SYMBOL_FIELDS, N) layout.

    ``rules`` (N_SYMBOL_FIELDS, N): the venue's rule rows (``Venue.arrays(...).rules``);
    default Binance's (``default_symbol_rules``). The leverage and fees given here win.
    """
    n = len(leverage)
    sym = default_symbol_rules(n) if rules is None else np.array(rules, dtype=np.float64)
    sym[enums.SYM_LEVERAGE] = leverage
    sym[enums.SYM_TAKER_FEE] = taker_fee
    sym[enums.SYM_LIQ_FEE] = liquidation_fee
    return np.ascontiguousarray(sym)


# --- strategy callbacks -------------------------------------------------------------------


def _array(dtype, ndim):
    return types.Array(dtype, ndim, "C")


@lru_cache(maxsize=1)
def context_type() -> types.NamedTuple:
    """The numba type of ``enums.BarContext`` as the kernel passes it (C-contiguous arrays)."""
    f2, f3, f1, i1 = (_array(types.float64, 2), _array(types.float64, 3),
                      _array(types.float64, 1), _array(types.int64, 1))
    fields = {
        "open": f2, "high": f2, "low": f2, "close": f2, "volume": f2, "mark_close": f2,
        "funding_rate": f2, "series": f3, "state": f2, "mode": i1, "sym": f2, "tiers": f3,
        "n_tiers": i1, "account": f1, "out": f2, "memory": f1,
    }
    assert tuple(fields) == BarContext._fields
    return types.NamedTuple(list(fields.values()), BarContext)


@lru_cache(maxsize=1)
def callback_signature():
    """``bool(int64 t, BarContext ctx, float64[:, ::1] orders, float64[::1] params)``."""
    return types.boolean(types.int64, context_type(), _array(types.float64, 2),
                         _array(types.float64, 1))


@lru_cache(maxsize=1)
def callback_type() -> types.FunctionType:
    """The numba first-class function type of every strategy callback."""
    return types.FunctionType(callback_signature())


class CompiledCallback(CPUDispatcher):
    """A numba dispatcher that numba types as ``callback_type()``, not as itself.

    Passed to the kernel, it is therefore a first-class function value of one
    fixed type: the kernel compiles once for all callbacks, and calls this one
    through its numba entry point, so exceptions raised inside it propagate.
    """

    @property
    def _numba_type_(self):
        return callback_type()


def compile_callback(function, boundscheck: bool = True):
    """Compile ``function(t, ctx, orders, params) -> bool`` for the kernel.

    ``function`` is a plain Python function or an ``@njit`` one (its Python
    source is recompiled with this module's options). ``boundscheck`` makes an
    index outside an array raise IndexError instead of reading or writing
    stray memory. Numba's own errors (typing, unsupported code) propagate;
    ``backtester.strategy`` explains them to the strategy's author. Under
    ``NUMBA_DISABLE_JIT=1`` the Python function itself is returned.
    """
    py_func = getattr(function, "py_func", function)
    if numba_config.DISABLE_JIT:
        return py_func
    compiled = CompiledCallback(py_func, targetoptions={"nopython": True,
                                                        "boundscheck": bool(boundscheck)})
    compiled.compile(callback_signature())
    return compiled


def _c_float(a, ndim: int, name: str) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not a.flags.writeable:  # numba types read-only arrays apart: keep one signature
        a = a.copy()
    return a


def callback_arguments(*, open_, high, low, close, volume, mark_close, funding_rate, series,
                       state, mode, sym, tiers, n_tiers, account, out, memory, params):
    """``(ctx, orders, params)`` for ``simulate``: the view over the run's own arrays.

    ``high``/``low``/``volume`` default to the close (hand-made markets have
    none); ``series`` to an empty (0, T, N) array; ``memory`` to an empty one.
    """
    n_bars, n = close.shape
    market = {name: _c_float(a if a is not None else close, 2, name)
              for name, a in (("open", open_), ("high", high), ("low", low), ("close", close),
                              ("volume", volume), ("mark_close", mark_close),
                              ("funding_rate", funding_rate))}
    series = np.empty((0, n_bars, n)) if series is None else _c_float(series, 3, "series")
    if series.shape[1:] != (n_bars, n):
        raise ValueError(f"series must have shape (K, bars, symbols) = (K, {n_bars}, {n}), "
                         f"got {series.shape}")
    memory = np.zeros(0) if memory is None else _c_float(memory, 1, "memory").copy()
    params = np.zeros(0) if params is None else _c_float(params, 1, "params")
    ctx = BarContext(**market, series=series, state=state, mode=mode, sym=sym, tiers=tiers,
                     n_tiers=n_tiers, account=account, out=out, memory=memory)
    if not numba_config.DISABLE_JIT:
        from numba import typeof

        found = typeof(ctx)
        if found != context_type():
            wrong = [f"{name}: {have}" for name, have, want in
                     zip(BarContext._fields, found.types, context_type().types, strict=True)
                     if have != want]
            raise TypeError("the kernel's arrays do not have the callback's types: "
                            + "; ".join(wrong))
    orders = np.full((N_ORDER_FIELDS, n), np.nan)
    return ctx, orders, params
