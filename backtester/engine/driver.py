"""Drive the kernel for one run from Python: open the account, allocate the records, run.

Numpy only (no pandas): ``execute(inputs)`` takes a run's validated kernel inputs
(``KernelInputs``, which ``backtester.prepare`` builds from a run's configuration)
and returns what the kernel produced (``KernelOutput``).

Strategy callbacks: ``compile_callback(fn)`` compiles a function
``fn(t, ctx, orders, params) -> bool`` for the one numba signature the kernel
calls (``callback_signature()``) and returns it as a numba first-class function
value. The kernel is therefore compiled, and cached on disk, once for every
callback, instead of once per callback and process (a dispatcher argument would
make numba specialise, and never cache, the whole loop for each function).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numba import config as numba_config
from numba import njit, types
from numba.core.errors import NumbaError
from numba.core.registry import CPUDispatcher

from .account import open_account
from .enums import (
    N_COUNTS,
    N_MARGIN_FIELDS,
    N_ORDER_FIELDS,
    N_OUT,
    N_SUMMARY_OUT,
    Account,
    BarContext,
    Bars,
    Book,
    Count,
    Outputs,
    Records,
    State,
    Trading,
    Versions,
    funding_dt,
)
from .kernel import SCRATCH_ROWS, put_rules_in_force, simulate
from .records import RECORD_DTYPES, bar_room, record_sizes


class CallbackError(RuntimeError):
    """An exception raised inside a strategy callback; ``bar`` is where (the cause is chained)."""

    def __init__(self, bar: int, error: Exception):
        super().__init__(f"strategy callback raised {type(error).__name__} at bar {bar}: {error}")
        self.bar = bar
        self.error = error


@dataclass(frozen=True)
class CallbackInputs:
    """A compiled strategy callback and what its view holds besides the kernel's arrays."""

    function: object  # from ``compile_callback``
    params: np.ndarray  # (P,) float64
    series: np.ndarray | None  # (K, T, N) precomputed series, or None
    memory: np.ndarray  # (M,) the initial scratch space
    high: np.ndarray  # (T, N) last-price bars for the view (the kernel reads only the close)
    low: np.ndarray
    volume: np.ndarray


@dataclass(frozen=True)
class KernelInputs:
    """Everything one run hands to the kernel, validated: C-contiguous arrays of fixed types.

    ``mode`` and ``sym`` are the run's initial margin modes and symbol rows (version
    0's venue rows with the run's leverage and hedge legs); ``execute`` copies them,
    since a strategy callback may change them during the run. ``holdings``: coins held
    at the start in ``COLLATERAL`` columns. These arrays, ``versions`` and ``bars`` may be
    other runs' too (one ``PrepareCache``'s runs; the rule arrays a venue keeps): they are
    read, never written.
    ``record_positions``: each close's positions and liquidation prices recorded (and what
    backs each position, with ``record_margins``). ``replay_for_prices``: the run replayed
    for its liquidation prices (``Result.liquidation_prices``), which writes nothing the
    replay throws away: the prices, but no positions (the fills rebuild them, the same
    numbers) and of the account record only the summary's rows (``enums.N_SUMMARY_OUT``:
    the equity the replay is checked against, the margin ratio).
    ``fill_rows`` / ``funding_rows``: the record rows to allocate at first (fills grow by
    doubling; every funding rate has a row). ``general``: every bar through the bar loop's
    general path, no quiet stretch (``kernel.simulate``): the same figures, more slowly;
    what the tests compare the stretch with.
    """

    bars: Bars
    trading: Trading
    path: int
    versions: Versions
    mode: np.ndarray
    sym: np.ndarray
    initial_balance: float
    holdings: np.ndarray
    record_positions: bool
    fill_rows: int
    funding_rows: int
    callback: CallbackInputs | None = None
    record_margins: bool = False
    general: bool = False
    replay_for_prices: bool = False


@dataclass(frozen=True)
class Pause:
    """Stop a run after bar ``bar``'s close (all of the bar done, its strategy decision
    included) to act on the account from Python, then go on.

    ``action(book, records, outputs, orders)`` gets the kernel's own objects (``orders``:
    a callback's pending orders, None without one) and returns the record buffers
    (``records``, or a copy it grew to make room for what it wrote).
    """

    bar: int
    action: Callable


@dataclass
class KernelOutput:
    """What one kernel run produced (plain numpy)."""

    account: np.ndarray  # (N_OUT, T) per-bar series, rows as enums.Out.* (a replay for the
    #                      liquidation prices: its first N_SUMMARY_OUT rows)
    fills: np.ndarray
    liquidations: np.ndarray
    # enums.funding_dt rows, or a PackedFunding (a run of many payments):
    # ``funding_array`` / ``funding_payments`` read either
    funding: np.ndarray | PackedFunding
    rejections: np.ndarray
    events: np.ndarray  # enums.event_dt: borrowing fees, margin calls
    positions: np.ndarray | None  # (T, N) when recorded
    liquidation_prices: np.ndarray | None  # (T, N) when recorded
    state: np.ndarray  # (N_STATE, N) final state, rows as enums.State.*
    wallet_balance: float
    mode: np.ndarray | None = None  # (N,) margin modes at the end (a callback may switch them)
    sym: np.ndarray | None = None  # (N_SYMBOL_FIELDS, N) at the end (a callback may re-lever)
    memory: np.ndarray | None = None  # the callback's scratch space at the end
    initial_equity: float | None = None  # the deposit plus collateral at its first mark
    margins: np.ndarray | None = None  # (N_MARGIN_FIELDS, T, N) when recorded
    # (N,) each column's position when the account opened (collateral coins; else 0): with
    # the fills, what rebuilds the positions at every close (``engine.positions``)
    initial_positions: np.ndarray | None = None


# the kernel's funding buffer, in rows, when a run's payments are packed (``PackedFunding``)
FUNDING_BUFFER_ROWS = 1 << 16
MAX_FUNDING_STOPS = 16  # (a run of more payments has a larger buffer)


class PackedFunding:
    """A run's funding payments in 31 bytes each instead of ``enums.funding_dt``'s 56.

    A run of a million bars pays funding on every open position every few bars: 1.25 M
    payments (70 MB of records) for ten symbols every 8 bars, the largest thing the run
    allocates. Such a run hands the kernel a buffer of ``FUNDING_BUFFER_ROWS`` rows (or
    more, ``funding_stops``), and ``execute`` moves its rows here whenever the kernel stops
    (it stops at least every ``FUNDING_BUFFER_ROWS // N`` funding bars): one array per
    field, ``bar`` and ``symbol`` in the least integer types that hold them, ``mode`` in a
    byte, ``qty``, ``mark_price`` and ``rate`` as they were. The payment is not kept: the
    kernel computes it as ``qty * mark_price * rate`` (``kernel.pay_funding``), which
    ``payments`` computes again, the same operations on the same numbers (the same bits).
    """

    FIELDS = ("bar", "symbol", "mode", "qty", "mark_price", "rate")

    def __init__(self, rows: int, n_bars: int, n_symbols: int):
        types = (_index_type(n_bars), _index_type(n_symbols), np.int8, np.float64,
                 np.float64, np.float64)
        # (pages that the system maps only as they are written)
        self.columns = {name: np.empty(rows, dtype=kind)
                        for name, kind in zip(self.FIELDS, types, strict=True)}
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return sum(column.nbytes for column in self.columns.values())

    def take(self, buffer: np.ndarray, counts: np.ndarray) -> None:
        """Move the funding rows the kernel wrote into ``buffer`` here, and empty it."""
        used = int(counts[Count.FUNDING])
        if used == 0:
            return
        start, stop = self.count, self.count + used
        for name, column in self.columns.items():
            if stop > column.shape[0]:  # (never: sized for every funding rate)
                self.columns[name] = _grown(column, stop)
        pack_funding(buffer, used, start, *(self.columns[name] for name in self.FIELDS))
        self.count = stop
        counts[Count.FUNDING] = 0

    def finish(self) -> PackedFunding:
        """Itself, its columns trimmed to the rows used (copies when less than half are)."""
        for name, column in self.columns.items():
            self.columns[name] = _used(column, self.count)
        return self

    def payments(self) -> np.ndarray:
        """Each payment (> 0: paid by the account), as the kernel computed it."""
        n, columns = self.count, self.columns
        paid = np.multiply(columns["qty"][:n], columns["mark_price"][:n])
        paid *= columns["rate"][:n]
        return paid

    def fields(self) -> dict[str, np.ndarray]:
        """Each field of ``enums.funding_dt``, in its order and type: the payments' columns
        as the kernel wrote them."""
        n, fields = self.count, {}
        for name in funding_dt.names:
            if name == "payment":
                fields[name] = self.payments()
            else:
                fields[name] = self.columns[name][:n].astype(funding_dt[name], copy=False)
        return fields

    def unpack(self) -> np.ndarray:
        """The payments as ``enums.funding_dt`` rows, as the kernel wrote them."""
        out = np.empty(self.count, dtype=funding_dt)
        for name, column in self.fields().items():
            out[name] = column
        return out


@njit(cache=True, error_model='numpy', _nrt=False)
def pack_funding(buffer, used, start, bar, symbol, mode, qty, mark_price, rate):
    """Rows ``..used-1`` of a funding buffer into ``PackedFunding``'s columns from row
    ``start``: each record read once (numpy's copy of one field after another read the
    buffer six times over, at a stride of 56 bytes: 4x slower)."""
    for k in range(used):
        record = buffer[k]
        row = start + k
        bar[row] = record["bar"]
        symbol[row] = record["symbol"]
        mode[row] = record["mode"]
        qty[row] = record["qty"]
        mark_price[row] = record["mark_price"]
        rate[row] = record["rate"]


def _index_type(size: int) -> type:
    """The least signed integer type that holds 0..size (bar and column numbers)."""
    for kind in (np.int16, np.int32):
        if size < np.iinfo(kind).max:
            return kind
    return np.int64


def funding_array(funding: np.ndarray | PackedFunding) -> np.ndarray:
    """A run's funding payments as ``enums.funding_dt`` rows (``KernelOutput.funding``)."""
    return funding.unpack() if isinstance(funding, PackedFunding) else funding


def funding_fields(funding: np.ndarray | PackedFunding) -> dict[str, np.ndarray]:
    """The fields of ``KernelOutput.funding`` by name (``enums.funding_dt``'s), without
    building its rows where it is packed."""
    if isinstance(funding, PackedFunding):
        return funding.fields()
    return {name: funding[name] for name in funding.dtype.names}


def funding_payments(funding: np.ndarray | PackedFunding) -> np.ndarray:
    """The ``payment`` of each funding row of ``KernelOutput.funding``."""
    return funding.payments() if isinstance(funding, PackedFunding) else funding["payment"]


def funding_stops(has_funding: np.ndarray, n_symbols: int) -> tuple[np.ndarray, int]:
    """``(stops, buffer rows)`` of a run whose funding payments are packed: the bars
    at which it stops to empty the kernel's funding buffer, every ``per``-th funding bar (a
    bar pays at most one row per column), and the buffer's rows, ``per`` bars' worth.
    ``per``: ``FUNDING_BUFFER_ROWS // n_symbols``, or more for a run that would otherwise
    stop more than ``MAX_FUNDING_STOPS`` times (each resumption of the kernel looks for
    where each column's data end: a scan of the column's NaN tail)."""
    n = max(1, n_symbols)
    bars = np.flatnonzero(has_funding)
    per = max(1, FUNDING_BUFFER_ROWS // n, -(-bars.shape[0] // MAX_FUNDING_STOPS))
    return bars[per::per], per * n


@njit(cache=True, error_model='numpy', inline='always')
def scan_rows(values, infinities, extremes):
    """Per row of a (T, N) array: does it hold any non-NaN value; how many it holds; where
    ``infinities``, how many of those are infinite (v - v is NaN for them, 0 for a finite
    v), else 0; and where ``extremes``, the largest and the least value, NaN ignored (-inf
    and inf: none), else those. ``infinities`` and ``extremes``: constants at each call."""
    n_bars, n = values.shape
    rows = np.zeros(n_bars, dtype=np.bool_)
    count = 0
    finite = 0
    largest, least = -np.inf, np.inf
    for t in range(n_bars):
        held = 0  # (counted without a branch: the row's loop becomes vector instructions)
        fin = 0
        for i in range(n):
            v = values[t, i]
            held += v == v
            if infinities:
                d = v - v
                fin += d == d
            if extremes:
                largest = v if v > largest else largest
                least = v if v < least else least
        rows[t] = held > 0
        count += held
        finite += fin
    return rows, count, count - finite if infinities else 0, largest, least


@njit(cache=True, error_model='numpy')
def rows_with_values(values):
    """Per row of a (T, N) array: does it hold any non-NaN value; and how many it holds."""
    rows, count, _, _, _ = scan_rows(values, False, False)
    return rows, count


@njit(cache=True, error_model='numpy')
def rows_with_infinities(values):
    """``rows_with_values`` and how many of the values are infinite, in one pass (a
    strategy's targets: the rows the kernel visits, and whether any is refused)."""
    rows, count, infinite, _, _ = scan_rows(values, True, False)
    return rows, count, infinite


@njit(cache=True, error_model='numpy')
def rows_with_extremes(values):
    """``rows_with_values`` and the largest and least value, NaN ignored (-inf and inf: no
    value), in one pass (a market's funding rates: its funding times, and whether any rate
    could lie beyond a venue's bounds)."""
    rows, count, _, largest, least = scan_rows(values, False, True)
    return rows, count, largest, least


def bar_hours(index, bar_ns: int) -> np.ndarray:
    """(T + 1,) hours from the first bar's open to each bar's open, and to the last bar's end:
    the clock the kernel charges spot-margin rollover fees and loan interest by."""
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        return np.zeros(1)
    hours = np.empty(index.size + 1)
    np.subtract(index, index[0], out=hours[:-1])  # (the difference in integers, then float)
    hours[-1] = index[-1] + int(bar_ns) - index[0]
    hours /= 3.6e12
    return hours


def fill_rows(has_target: np.ndarray, n: int) -> int:
    """The fill records to allocate at first: one per column per target row, the common case."""
    return min(int(has_target.sum()) * n + 2 * n, 1 << 22)


def _used(buffer: np.ndarray, count: int) -> np.ndarray:
    """The used rows of a record buffer: a view when it is at least half used (no copy of
    what is mostly data), else a copy, so that a mostly empty buffer is not kept alive."""
    if 2 * count >= buffer.shape[0]:
        return buffer[:count]
    return buffer[:count].copy()


def allocate_records(n: int, n_tiers_max: int, fill_rows: int, funding_rows: int) -> Records:
    """``records.new_records``, allocated by numpy: large buffers then get the huge pages
    numpy asks the system for, and a run does not pay a page fault per 4 KiB written.

    The fill buffer holds ``fill_rows`` plus one bar's worst case (``records.record_sizes``):
    the kernel stops to grow a buffer when a bar's worst case no longer fits, so a buffer
    of exactly the fills expected would be doubled (copied) near the end of every run."""
    sizes = record_sizes(n, n_tiers_max, fill_rows, funding_rows)
    return Records(*(np.empty(size, dtype=dtype) for size, dtype in zip(sizes, RECORD_DTYPES,
                                                                          strict=True)),
                   np.zeros(N_COUNTS, dtype=np.int64))


def execute(inputs: KernelInputs, pause: Pause | None = None) -> KernelOutput:
    """Run the kernel over every bar of ``inputs``; returns its records and final state.

    ``pause``: stop after one bar's close for an action on the account (a stress scenario's
    forced close), then go on. An exception raised inside a strategy callback is re-raised
    as ``CallbackError`` naming the bar.
    """
    bars = inputs.bars
    n_bars, n = bars.open.shape
    book, initial_equity = open_account(float(inputs.initial_balance), inputs.mode.copy(),
                                        inputs.sym.copy(), inputs.versions, inputs.holdings,
                                        bars.mark_open)
    initial_positions = book.state[State.QTY].copy()
    packed = stops = None
    funding_rows = inputs.funding_rows
    if funding_rows > FUNDING_BUFFER_ROWS:  # many payments: the kernel's buffer emptied as
        packed = PackedFunding(funding_rows, n_bars, n)  # it goes, into fewer bytes
        stops, funding_rows = funding_stops(bars.has_funding, n)
    records = allocate_records(n, inputs.versions.tiers.shape[3], inputs.fill_rows,
                               funding_rows)
    recorded = (n_bars, n) if inputs.record_positions or inputs.replay_for_prices else (0, n)
    positions = (0, n) if inputs.replay_for_prices else recorded
    margins = (N_MARGIN_FIELDS, n_bars if inputs.record_positions and inputs.record_margins
               else 0, n)
    rows = N_SUMMARY_OUT if inputs.replay_for_prices else N_OUT
    outputs = Outputs(np.empty((rows, n_bars)), np.empty(positions), np.empty(recorded),
                      np.empty(margins))
    extra = ()
    if inputs.callback is not None:
        extra = (inputs.callback.function,
                 *callback_arguments(bars, book, outputs.out, inputs.callback))
    try:
        records = run_bars(bars, book, inputs.trading, inputs.path, inputs.versions, records,
                           outputs, extra, pause, packed, stops, inputs.general)
    except Exception as exc:
        if inputs.callback is None:
            raise
        # the kernel raises nothing itself: the strategy's code did, at this bar
        raise CallbackError(int(book.account[Account.BAR]), exc) from exc
    counts = records.counts
    return KernelOutput(
        account=outputs.out,
        fills=_used(records.fills, counts[Count.FILLS]),
        liquidations=_used(records.liqs, counts[Count.LIQS]),
        funding=(packed.finish() if packed is not None
                 else _used(records.funding, counts[Count.FUNDING])),
        rejections=_used(records.rejects, counts[Count.REJECTS]),
        events=_used(records.events, counts[Count.EVENTS]),
        positions=outputs.positions if outputs.positions.shape[0] else None,
        liquidation_prices=outputs.liq_prices if outputs.liq_prices.shape[0] else None,
        state=book.state,
        wallet_balance=float(book.account[Account.WALLET]),
        mode=book.mode,
        sym=book.sym,
        memory=extra[1].memory if extra else None,
        initial_equity=float(initial_equity),
        margins=outputs.margins if outputs.margins.shape[1] else None,
        initial_positions=initial_positions,
    )


def _interpreted(function):
    """The Python function of a compiled one: for a call or two per run, from Python, where
    compiling it would cost a cold start more than the interpreter ever will."""
    return getattr(function, "py_func", function)


def _grown(buffer: np.ndarray, needed: int) -> np.ndarray:
    """``records.grow_buffer`` in numpy: the buffer itself when it holds ``needed`` rows,
    else a copy doubled until it does."""
    if buffer.shape[0] >= needed:
        return buffer
    size = max(buffer.shape[0], 64)
    while size < needed:
        size *= 2
    new = np.empty(size, dtype=buffer.dtype)
    new[: buffer.shape[0]] = buffer
    return new


def grow_records(records: Records, n: int, n_tiers_max: int, with_callback: bool) -> Records:
    """``records.grow_records``, run by the interpreter (see ``run_bars``)."""
    counts = records.counts
    fills, liqs, rejects, events = _interpreted(bar_room)(n, n_tiers_max, with_callback)
    return Records(_grown(records.fills, counts[Count.FILLS] + fills + 1),
                   _grown(records.liqs, counts[Count.LIQS] + liqs + 1),
                   records.funding,  # sized for every funding rate: it never fills up
                   _grown(records.rejects, counts[Count.REJECTS] + rejects + 1),
                   _grown(records.events, counts[Count.EVENTS] + events + 1),
                   counts)


# ``simulate``'s callback arguments of a run without one, passed rather than left out: numba
# types them as None, as the sweeps' compiled loop (``kernel.run_to_end``) passes them, so a
# run and a sweep share one compiled ``simulate`` (left out, they are typed "omitted" and
# ``simulate`` compiles twice: 4-5 s more of a first sweep or advice)
NO_CALLBACK = (None, None, None, None)


def run_bars(bars, book, trading, path, versions, records, outputs, extra,
             pause: Pause | None = None, packed: PackedFunding | None = None,
             stops: np.ndarray | None = None, general: bool = False):
    """``kernel.run_to_end``'s loop, driven from Python; returns the record buffers.

    The kernel is resumable: it stops at each dated rule change and where a record
    buffer might overflow, and this loop puts the new rules in force or grows the
    buffers, a few times per run. Driven from here, ``run()`` compiles ``simulate``
    but not ``run_to_end`` nor the buffers' growth (a signature per record dtype): 48 of
    a cold start's 153 signatures (sweeps, whose loop runs in compiled code, compile
    ``run_to_end``).

    ``pause``: one more stop, after bar ``pause.bar``'s close, where ``pause.action`` acts
    on the account; the run then goes on from the next bar as if it had not stopped.

    ``packed``: where the funding payments go (``PackedFunding``), moved there from the
    kernel's buffer each time it stops, and at the latest at each of ``stops`` (the
    buffer holds the payments of the bars between two of them).

    ``general``: no quiet stretch (``kernel.simulate``).
    """
    n_bars, n = bars.open.shape
    scratch = np.empty((SCRATCH_ROWS, n))
    after = int(pause.bar) + 1 if pause is not None else -1
    start, v, paused, s = 0, 1, pause is None, 0
    while True:
        stop = min(int(versions.bars[v]) if v < versions.bars.shape[0] else n_bars, n_bars)
        if not paused:
            stop = min(stop, after)
        if packed is not None:
            while s < stops.shape[0] and stops[s] <= start:
                s += 1
            if s < stops.shape[0]:
                stop = min(stop, int(stops[s]))
        start = int(simulate(np.int64(start), np.int64(stop), bars, book, trading, path,
                             records, outputs, scratch, np.bool_(general),
                             *(extra or NO_CALLBACK)))
        if packed is not None:
            packed.take(records.funding, records.counts)
        if start == stop == after and not paused:
            records = pause.action(book, records, outputs, extra[2] if extra else None)
            paused = True
        if start >= n_bars:
            return records
        if start == stop:
            if v < versions.bars.shape[0] and stop == versions.bars[v]:
                put_rules_in_force(versions, np.int64(v), book)
                v += 1
            continue
        records = grow_records(records, n, int(book.tiers.shape[2]), bool(extra))


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
        "n_tiers": i1, "account": f1, "rules": f1, "tier": i1, "out": f2, "memory": f1,
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

    A callback that allocates no array is compiled without numba's reference counting
    (``_nrt=False``), which it does not need; one that allocates is compiled with it.
    """
    py_func = getattr(function, "py_func", function)
    if numba_config.DISABLE_JIT:
        return py_func
    options = {"nopython": True, "boundscheck": bool(boundscheck)}
    try:
        # without numba's reference counting: a callback that allocates nothing needs none
        # (it only reads the view and writes its orders), and counting every array of the
        # view it touches, at every bar, made a typical callback three times slower
        compiled = CompiledCallback(py_func, targetoptions={**options, "_nrt": False})
        compiled.compile(callback_signature())
    except NumbaError:  # it allocates (np.empty...): compile it with reference counting
        compiled = CompiledCallback(py_func, targetoptions=options)
        compiled.compile(callback_signature())
    return compiled


def callback_arguments(bars: Bars, book: Book, out: np.ndarray, callback: CallbackInputs):
    """``(ctx, orders, params)`` for the kernel: the view over the run's own arrays."""
    n_bars, n = bars.close.shape
    series = (np.empty((0, n_bars, n)) if callback.series is None else callback.series)
    funding = bars.funding_rate
    if funding.shape[0] != n_bars:  # a run without funding: the view still shows NaN rates
        funding = np.full((n_bars, n), np.nan)
    ctx = BarContext(open=bars.open, high=callback.high, low=callback.low, close=bars.close,
                     volume=callback.volume, mark_close=bars.mark_close,
                     funding_rate=funding, series=series, state=book.state,
                     mode=book.mode, sym=book.sym, tiers=book.tiers, n_tiers=book.n_tiers,
                     account=book.account, rules=book.rules, tier=book.tier, out=out,
                     memory=callback.memory.copy())
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
    return ctx, orders, callback.params
