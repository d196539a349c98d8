"""The probability of liquidation, by simulation: a strategy on many resampled markets.

``liquidation_risk(market, strategy, ...)`` resamples the market (``risk.bootstrap``),
runs the strategy on every path under each margin mode, leverage and sizing asked for,
and reports per configuration, with confidence intervals:

- the probability of at least one liquidation over the horizon;
- the probability of losing the account, at chosen thresholds (equity falling at some bar
  to ``1 - q`` of the deposit or below, e.g. q = 50%, 90%, 99%);
- the distribution of the time to the first liquidation (quartiles, among the paths that
  had one, and the share liquidated by each month);
- the expected shortfall of the terminal equity: the mean return of the worst 5% of paths.

Every path of a configuration runs through the kernel of ``run()`` (``engine.batch.run_one``,
or the same loop with the strategy's callback), with the venue's rules in force at the
history's end (a path's bars follow the history's last bar). Probabilities' intervals are
Wilson score intervals; the expected shortfall's is a percentile bootstrap over paths.
The configurations share the paths (common random numbers), so their differences are
measured more precisely than each probability alone.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numba import njit

from ..config import RunConfig
from ..data.market import Market
from ..engine.account import open_account
from ..engine.batch import (
    METRICS,
    N_METRICS,
    N_RUN_FIELDS,
    RUN_FILL_AT,
    RUN_INITIAL_BALANCE,
    RUN_PATH,
    RUN_REDUCE_TO_FIT,
    RUN_SLIPPAGE,
    RUN_TARGET_KIND,
    RUN_TARGETS,
    Runs,
    run_one,
    summarise,
)
from ..engine.enums import (
    N_MARGIN_FIELDS,
    N_ORDER_FIELDS,
    N_OUT,
    N_SUMMARY_OUT,
    BarContext,
    Bars,
    Count,
    Out,
    Outputs,
    Reject,
    Trading,
)
from ..engine.jit import inner
from ..engine.kernel import run_to_end
from ..engine.records import new_records
from ..prepare import prepare_run, split_plan
from ..prepare.columns import column_layout
from ..prepare.run import PrepareCache
from ..prepare.targets import targets_and_rows
from ..strategy import Callback, Plan, StrategyDef, takes_leverage
from .bootstrap import Bootstrap, Paths, path_seed

# the extra figures of each (path, configuration), besides engine.batch.METRICS
E_FIRST_LIQUIDATION = 0  # bar of the first liquidation, -1 if none
E_LOWEST_EQUITY = 1  # the lowest equity at any bar's close
E_REFUSED = 2  # orders refused because the account could not carry them (CARRY_REFUSALS)
N_EXTRA = 3
DEFAULT_LEVERAGES = (1, 2, 3, 5, 10, 20)
DEFAULT_RUIN = (0.5, 0.9, 0.99)


def wilson(successes: np.ndarray | int, n: int, level: float = 0.95) -> tuple:
    """Wilson score interval ``(low, high)`` of a binomial proportion ``successes / n``."""
    z = _z(level)
    k = np.asarray(successes, dtype=float)
    p = k / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.clip(centre - half, 0.0, 1.0), np.clip(centre + half, 0.0, 1.0)


def _z(level: float) -> float:
    if not 0.5 < level < 1.0:
        raise ValueError(f"level={level!r}: a confidence level between 0.5 and 1, e.g. 0.95")
    # the normal quantile by bisection on erf (no scipy needed)
    lo, hi = 0.0, 10.0
    target = level
    for _ in range(200):
        mid = (lo + hi) / 2
        if math.erf(mid / math.sqrt(2)) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def expected_shortfall(values: np.ndarray, alpha: float = 0.05) -> float:
    """The mean of the worst ``alpha`` share of ``values`` (at least one value)."""
    values = np.sort(np.asarray(values, dtype=float))
    k = max(1, int(math.floor(alpha * values.size)))
    return float(values[:k].mean())


# --- the kernel loops ------------------------------------------------------------------------


@inner(error_model='numpy')
def _extras(out, records, n_bars, row):
    """The first liquidation's bar, the lowest equity and the orders the account could not
    carry of a finished run, into ``row``."""
    row[E_FIRST_LIQUIDATION] = records.liqs[0]["bar"] if records.counts[Count.LIQS] > 0 else -1
    refused = 0
    for c in range(records.counts[Count.REJECTS]):
        reason = records.rejects[c]["reason"]
        if (reason == Reject.INSUFFICIENT_MARGIN or reason == Reject.LEVERAGE_ABOVE_TIER
                or reason == Reject.ACCOUNT_BANKRUPT or reason == Reject.MARGIN_LEVEL
                or reason == Reject.ABOVE_MAX_POSITION):
            refused += 1
    row[E_REFUSED] = refused
    lowest = np.inf
    for t in range(n_bars):
        value = out[Out.EQUITY, t]
        if value < lowest:
            lowest = value
    row[E_LOWEST_EQUITY] = lowest


@njit(cache=True, error_model='numpy', nogil=True)
def run_paths(w, n_workers, fields, n_funding, has_funding, hours, targets, has_target,
              choices, mode, sym, holdings, versions, bars_per_year, summary, extra):
    """Paths w, w + n_workers, ... of ``fields`` (N_RATIOS + 1, P, T, N) under every
    configuration (the rows of ``choices``, ``mode``, ``sym``, ``holdings``), with targets
    ``targets[p, u]`` (u = each configuration's ``RUN_TARGETS``): ``summary[p, c]`` gets the
    METRICS row of path p under configuration c, ``extra[p, c]`` the E_* figures.
    ``n_funding``: the most funding rates any path settles (the funding records never
    grow: they are sized for every rate of the market)."""
    n_paths, n_bars, n = fields.shape[1], fields.shape[2], fields.shape[3]
    out = np.empty((N_SUMMARY_OUT, n_bars))  # (the rows the summary reads, no more)
    values = np.empty(max(n_bars, 1))
    n_rows = 0
    for t in range(n_bars):
        n_rows += has_target[0, 0, t]
    records = new_records(n, versions.tiers.shape[3], min(n_rows * n + 2 * n, 1 << 22),
                          n_funding)
    no_equity = np.empty((0, n_bars))
    for p in range(w, n_paths, n_workers):
        bars = Bars(fields[0, p], fields[3, p], fields[4, p], fields[5, p], fields[6, p],
                    fields[7, p], fields[8, p], has_funding[p], hours)
        tp = p if targets.shape[0] > 1 else 0  # one stack for all paths: a fixed strategy
        runs = Runs(targets[tp], has_target[tp], choices, mode, sym, holdings)
        for c in range(choices.shape[0]):
            records = run_one(c, bars, versions, runs, bars_per_year, summary[p], no_equity,
                              out, values, records)
            _extras(out, records, n_bars, extra[p, c])


@njit(cache=True, error_model='numpy', nogil=True)
def run_paths_callback(w, n_workers, fields, n_funding, has_funding, hours, function, params,
                       memory, series, volume, choices, mode, sym, holdings, versions,
                       bars_per_year, summary, extra):
    """As ``run_paths``, with a strategy callback (``series[p]``: its series on path p).

    Each worker copies a path's arrays into its own before running it: the callback's view
    holds them, and a view of an array another thread uses too would make the two threads
    update one reference count at every call (a cache line bounced between the cores)."""
    n_paths, n_bars, n = fields.shape[1], fields.shape[2], fields.shape[3]
    out = np.empty((N_OUT, n_bars))
    values = np.empty(max(n_bars, 1))
    records = new_records(n, versions.tiers.shape[3], 64 * n, n_funding)
    no_positions = np.empty((0, n))
    no_margins = np.empty((N_MARGIN_FIELDS, 0, n))
    no_targets = np.empty((0, n))
    no_rows = np.zeros(n_bars, dtype=np.bool_)
    local = np.empty((fields.shape[0], n_bars, n))
    local_funding = np.empty(n_bars, dtype=np.bool_)
    local_series = np.empty((series.shape[1], n_bars, n))
    local_hours = hours.copy()
    local_volume = volume.copy()
    local_params = params.copy()
    for p in range(w, n_paths, n_workers):
        local[:] = fields[:, p]
        local_funding[:] = has_funding[p]
        local_series[:] = series[p]
        bars = Bars(local[0], local[3], local[4], local[5], local[6], local[7], local[8],
                    local_funding, local_hours)
        for c in range(choices.shape[0]):
            choice = choices[c]
            book, initial_equity = open_account(choice[RUN_INITIAL_BALANCE], mode[c].copy(),
                                                sym[c].copy(), versions, holdings[c],
                                                bars.mark_open)
            records.counts[:] = 0
            trading = Trading(no_targets, no_rows, int(choice[RUN_TARGET_KIND]),
                              int(choice[RUN_FILL_AT]), choice[RUN_SLIPPAGE],
                              choice[RUN_REDUCE_TO_FIT] != 0.0)
            ctx = BarContext(bars.open, local[1], local[2], bars.close, local_volume,
                             bars.mark_close, bars.funding_rate, local_series, book.state,
                             book.mode, book.sym, book.tiers, book.n_tiers, book.account,
                             book.rules, book.tier, out, memory.copy())
            orders = np.full((N_ORDER_FIELDS, n), np.nan)
            outputs = Outputs(out, no_positions, no_positions, no_margins)
            records = run_to_end(bars, book, trading, int(choice[RUN_PATH]), versions,
                                 records, outputs, function, ctx, orders, local_params)
            summarise(out, records, initial_equity, bars_per_year, values, summary[p, c])
            _extras(out, records, n_bars, extra[p, c])


# --- the Python layer ------------------------------------------------------------------------


@dataclass(frozen=True)
class Configuration:
    """One simulated configuration: a margin mode, a leverage and the other run options."""

    margin_mode: str
    leverage: float
    options: Mapping = field(default_factory=dict)  # the other swept options (e.g. sizing)

    @property
    def label(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"{self.margin_mode} {self.leverage:g}x{extra}"


@dataclass
class LiquidationRisk:
    """What ``liquidation_risk`` found: per configuration, the probabilities and their
    intervals (``table``), and per path and configuration the figures behind them
    (``paths``).

    - ``table``: one row per configuration: ``margin_mode``, ``leverage`` (and other swept
      options), ``paths``, ``p_liquidation`` with ``p_liquidation_low``/``_high``, for each
      ruin threshold q ``p_loss_{q}`` (equity at some bar at or below ``1 - q`` of the
      deposit) with its interval, ``first_liquidation_days_q25/_median/_q75`` (among paths
      liquidated), ``es5_return`` (mean return of the worst 5% of paths) with
      ``es5_low``/``es5_high``, ``median_return``, ``mean_return``, ``median_max_drawdown``,
      ``mean_fills``, ``mean_rejected`` and ``refused_share``: the orders the account could
      not carry (insufficient margin, a tier's leverage cap, the largest position, a
      bankrupt account, Kraken's opening margin level) over those and the fills; a
      configuration whose account cannot carry the strategy's sizing refuses most, and
      trades little. An order that only rounds to nothing under the venue's step is not
      one.
    - ``paths``: one row per path and configuration: ``path``, ``seed``, the configuration,
      the ``engine.batch.METRICS`` figures, ``first_liquidation_bar`` (-1: none),
      ``lowest_equity``, ``refused_orders`` (as ``refused_share`` counts them).
    - ``info``: the bootstrap (block length and rule, history window), seeds, horizon,
      level, and seconds taken.
    """

    table: pd.DataFrame
    paths: pd.DataFrame
    info: dict
    configurations: tuple[Configuration, ...]
    bars_per_day: float

    def survival(self, margin_mode: str, leverage: float, **options) -> pd.Series:
        """The share of paths not yet liquidated, by day of the horizon."""
        rows = self._rows(margin_mode, leverage, options)
        first = rows["first_liquidation_bar"].to_numpy()
        n_days = int(math.ceil(self.info["bars"] / self.bars_per_day))
        days = np.arange(n_days + 1)
        hit = np.where(first >= 0, first / self.bars_per_day, np.inf)
        alive = [(hit > d).mean() for d in days]
        return pd.Series(alive, index=pd.Index(days, name="day"), name="not liquidated")

    def _rows(self, margin_mode, leverage, options) -> pd.DataFrame:
        p = self.paths
        mask = (p["margin_mode"] == margin_mode) & np.isclose(p["leverage"], leverage)
        for key, value in options.items():
            mask &= p[key] == value
        if not mask.any():
            raise KeyError(f"no configuration {margin_mode} {leverage}x {options or ''}; "
                           f"simulated: {', '.join(c.label for c in self.configurations)}")
        return p[mask]

    def __repr__(self) -> str:
        cols = ["margin_mode", "leverage", "p_liquidation", "p_liquidation_low",
                "p_liquidation_high", "es5_return"]
        return (f"LiquidationRisk({self.info['paths']} paths of {self.info['bars']} bars, "
                f"seed {self.info['seed']})\n" + self.table[cols].to_string(index=False))


def liquidation_risk(
    market: Market,
    strategy,
    *,
    margin_modes: Sequence[str] = ("cross", "isolated"),
    leverages: Sequence[float] = DEFAULT_LEVERAGES,
    options: Mapping[str, Sequence] | None = None,
    n_paths: int = 1000,
    days: float = 365.0,
    seed: int = 0,
    block: float | None = None,
    drift: bool = True,
    params: Mapping | None = None,
    ruin: Sequence[float] = DEFAULT_RUIN,
    level: float = 0.95,
    workers: int | None = None,
    chunk: int = 256,
    bootstrap: Bootstrap | None = None,
    progress: Callable[[int, int], None] | None = None,
    **run_options,
) -> LiquidationRisk:
    """Run ``strategy`` on ``n_paths`` resampled markets of ``days`` days under every
    margin mode x leverage (x each swept option), and report how likely liquidation is.

    - ``strategy``: what ``run()`` takes, built per path: a function ``f(market, **params)``
      or a ``StrategyDef`` (called on each path's market: the strategy sees the path's
      prices); a ``Callback`` (the same on every path; its ``series`` must be None, since
      they would be the history's); a mapping ``{symbol: target}`` (a fixed book: ordered at
      the first bar, then held), or a (bars, symbols) array of targets (the same on every
      path). A strategy whose function takes a ``leverage`` parameter is given each
      configuration's leverage unless ``params`` sets it.
    - ``options``: other run options to sweep, e.g. ``{"sizing": ["exposure", "margin"]}``.
    - ``run_options``: fixed options of every run (``venue=``, ``initial_balance=``,
      ``target_kind=``...), as ``run()`` takes them.
    - ``ruin``: the loss thresholds q of "losing the account" (equity down to ``1 - q``).
    - ``block``, ``drift``: the bootstrap's mean block length (default: Politis and White's
      rule) and whether paths keep the history's drift (``Bootstrap``); or give
      ``bootstrap`` itself.
    - ``seed``: path p is the same for a given seed whatever ``n_paths``, ``chunk`` or
      ``workers`` (``bootstrap.path_seed``).
    - ``progress``: called as ``progress(paths_done, n_paths)`` after each chunk.

    Example:
        >>> from backtester import load_market
        >>> from backtester.risk import liquidation_risk
        >>> market = load_market()
        >>> risk = liquidation_risk(market, {"BTC_USDT": 1.0}, leverages=[1, 20],
        ...                         margin_modes=["isolated"], n_paths=64, days=90,
        ...                         target_kind="equity")
        >>> float(risk.table.loc[0, "p_liquidation"])     # an unlevered long: never
        0.0
    """
    started = time.perf_counter()
    if not isinstance(market, Market):
        raise TypeError(f"market must be a backtester Market, got {type(market).__name__}")
    for name, value in (("n_paths", n_paths), ("chunk", chunk)):
        if not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name}={value!r}: must be a whole number >= 1")
    if not (isinstance(days, int | float) and days > 0):
        raise ValueError(f"days={days!r}: the horizon of each path, a number of days > 0")
    ruin = tuple(float(q) for q in ruin)
    for q in ruin:
        if not 0.0 < q <= 1.0:
            raise ValueError(f"ruin={ruin!r}: loss thresholds are fractions in (0, 1]")
    _z(level)
    margin_modes = _names("margin_modes", margin_modes)
    leverages = _numbers("leverages", leverages)
    options = dict(options or {})
    for key, values in options.items():
        if key in ("margin_mode", "leverage"):
            raise ValueError(f"options={{{key!r}: ...}}: give {key} through {key}s=")
        if isinstance(values, str) or not isinstance(values, Sequence) or not values:
            raise ValueError(f"options[{key!r}] must be a list of values to sweep")
    params = dict(params or {})
    boot = bootstrap if bootstrap is not None else Bootstrap(market, block=block, drift=drift)
    bars_per_day = 86_400e9 / market.bar_ns
    n_bars = int(round(days * bars_per_day))
    if n_bars < 2:
        raise ValueError(f"days={days!r} is under two bars of {market.bar_ns / 3.6e12:g} h")
    workers = int(workers or _cores())
    option_names = list(options)
    configs = tuple(Configuration(m, lev, dict(zip(option_names, rest, strict=True)))
                    for m, lev, *rest in itertools.product(margin_modes, leverages,
                                                           *options.values()))
    source = _Source(strategy, params)
    u_of = ([leverages.index(c.leverage) for c in configs] if source.reads_leverage
            else [0] * len(configs))
    summary = np.full((n_paths, len(configs), N_METRICS), np.nan)
    extra = np.full((n_paths, len(configs), N_EXTRA), np.nan)
    prepared = None
    done = 0
    buffer = None
    while done < n_paths:
        size = min(chunk, n_paths - done)
        paths = boot.paths(size, n_bars, seed=seed, first=done, out=buffer)
        buffer = paths.fields
        built = source.build(paths, leverages)
        if prepared is None:
            prepared = _prepare(paths, built, configs, u_of, source, run_options)
        _simulate(paths, built, prepared, workers, summary[done:done + size],
                  extra[done:done + size], source.fixed is not None)
        done += size
        if progress is not None:
            progress(done, n_paths)
    seeds = np.array([path_seed(seed, p) for p in range(n_paths)], dtype=np.int64)
    balance = prepared.choices[:, RUN_INITIAL_BALANCE]
    frame = _path_frame(summary, extra, configs, seeds, prepared.initial_equity)
    table = _table(frame, configs, prepared.initial_equity, ruin, level, bars_per_day, seed)
    info = {**boot.info, "paths": int(n_paths), "bars": n_bars, "days": float(days),
            "seed": int(seed), "seeds": "path p: bootstrap.path_seed(seed, p)",
            "level": level, "ruin": list(ruin), "workers": workers,
            "initial_balance": float(balance[0]),
            "seconds": round(time.perf_counter() - started, 3),
            "strategy": source.label, "venue": prepared.venue_name}
    return LiquidationRisk(table, frame, info, configs, bars_per_day)


def _cores() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
               else os.cpu_count() or 1)


def _names(name, values) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one")
    return values


def _numbers(name, values) -> list[float]:
    values = [values] if isinstance(values, int | float) else list(values)
    if not values:
        raise ValueError(f"{name} is empty: give at least one")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float | np.number) or not v > 0:
            raise ValueError(f"{name}={values!r}: each must be a number > 0")
    return [float(v) for v in values]


class _Source:
    """The strategy, as something that gives each path its orders."""

    def __init__(self, strategy, params):
        self.params = params
        self.fixed = None
        self.build_fn = None
        self.reads_leverage = False
        self._built = None
        if isinstance(strategy, StrategyDef):
            self.build_fn = strategy.plan
            self.label = strategy.name
        elif isinstance(strategy, Callback):
            if strategy.series is not None:
                raise ValueError("a Callback with series was built for one market; pass the "
                                 "function that builds it (f(market, **params)) so that each "
                                 "path gets its own series")
            self.fixed = strategy
            self.label = strategy.label
        elif isinstance(strategy, Plan | np.ndarray | pd.DataFrame | Mapping):
            self.fixed = strategy
            self.label = type(strategy).__name__
        elif callable(strategy):
            self.build_fn = strategy
            self.label = getattr(strategy, "__name__", "strategy")
        else:
            raise TypeError(f"strategy must be a function market -> targets, a StrategyDef, a "
                            f"Callback, a Plan, a (bars, symbols) array or a mapping symbol -> "
                            f"target; got {type(strategy).__name__}")
        if self.fixed is not None and params:
            raise ValueError("params= are for a strategy function; this strategy is fixed")
        # as run --strategy, compare and sweep: a strategy taking ``leverage`` is given the run's
        self.reads_leverage = (self.build_fn is not None and takes_leverage(strategy)
                               and "leverage" not in params)

    def build(self, paths: Paths, leverages) -> list[list]:
        """Per path, per leverage read (one entry when the strategy reads none): a Plan."""
        if self.fixed is not None:  # the same on every path: built once
            if self._built is None:
                self._built = [[_as_plan(self.fixed, paths.market(0))]]
            return self._built
        out = []
        for p in range(paths.n_paths):
            market = paths.market(p)
            per = []
            for lev in (leverages if self.reads_leverage else [None]):
                extra = {} if lev is None else {"leverage": lev}
                per.append(_as_plan(self.build_fn(market, **self.params, **extra), market))
            out.append(per)
        return out


def _as_plan(made, market: Market) -> Plan:
    """What the strategy built on a path, as a Plan (a fixed book: a one-row frame at the
    first bar; targets are converted to the run's columns by ``prepare``'s own rules)."""
    if isinstance(made, Plan):
        return made
    if isinstance(made, Mapping):
        return Plan(pd.DataFrame({symbol: [float(value)] for symbol, value in made.items()},
                                 index=market.timestamps[:1]))
    return Plan(made)


@dataclass
class _Prepared:
    choices: np.ndarray
    mode: np.ndarray
    sym: np.ndarray
    holdings: np.ndarray
    versions: object
    hours: np.ndarray
    bars_per_year: float
    initial_equity: np.ndarray
    callback: Callback | None
    venue_name: str
    columns: np.ndarray  # the market column of each run column (a hedge leg: its symbol's)
    layout: object  # the run's columns (prepare.columns.Layout), to convert targets


def _prepare(paths: Paths, built, configs, u_of, source, run_options) -> _Prepared:
    """Each configuration's kernel inputs, prepared by ``run()``'s own preparation on path 0."""
    market = paths.market(0)
    rows = []
    callback = None
    venue_name = ""
    initial = []
    for c, config in enumerate(configs):
        plan = built[0][u_of[c]]
        orders, plan_options = split_plan(plan)
        options = {**plan_options, **run_options, **config.options,
                   "margin_mode": config.margin_mode, "leverage": config.leverage}
        run_config = RunConfig().replace(**options)
        cache = PrepareCache()
        prepared = prepare_run(market, orders, run_config, cache)
        layout = column_layout(market, run_config, prepared.venue, cache)
        if layout.held:
            raise ValueError(
                f"liquidation_risk does not simulate collateral coins ({', '.join(layout.held)}"
                "): their value would need each path's first marks; simulate the account "
                "without them, or compare the modes with compare()")
        columns = np.array([market.symbol_index(name) for name in layout.names])
        if isinstance(orders, Callback):
            callback = orders
        inputs = prepared.inputs
        row = np.zeros(N_RUN_FIELDS)
        row[RUN_TARGETS] = u_of[c]
        row[RUN_TARGET_KIND] = inputs.trading.target_kind
        row[RUN_FILL_AT] = inputs.trading.fill_at
        row[RUN_PATH] = inputs.path
        row[RUN_REDUCE_TO_FIT] = float(inputs.trading.reduce_to_fit)
        row[RUN_INITIAL_BALANCE] = inputs.initial_balance
        row[RUN_SLIPPAGE] = inputs.trading.slippage
        rows.append((row, inputs.mode, inputs.sym, inputs.holdings, inputs.versions))
        venue_name = prepared.venue.name
        initial.append(inputs.initial_balance)
    versions = rows[0][4]
    for *_, other in rows[1:]:
        if any(a.shape != b.shape or not np.array_equal(a, b, equal_nan=True)
               for a, b in zip(versions, other, strict=True)):
            raise ValueError("the configurations run under different venue rules; simulate "
                             "one venue at a time")
    return _Prepared(
        choices=np.ascontiguousarray(np.stack([r[0] for r in rows])),
        mode=np.ascontiguousarray(np.stack([r[1] for r in rows])),
        sym=np.ascontiguousarray(np.stack([r[2] for r in rows])),
        holdings=np.ascontiguousarray(np.stack([r[3] for r in rows])),
        versions=versions, hours=prepared.inputs.bars.hours,
        bars_per_year=float(market.bars_per_year), initial_equity=np.array(initial),
        callback=callback, venue_name=venue_name, columns=columns, layout=layout)


def _simulate(paths: Paths, built, prepared: _Prepared, workers: int, summary, extra,
              fixed: bool) -> None:
    fields = paths.fields
    if not np.array_equal(prepared.columns, np.arange(fields.shape[3])):
        fields = np.ascontiguousarray(fields[..., prepared.columns])  # hedge legs
    # funding records are sized once for a run and never grow: for the path settling most
    n_funding = np.int64(np.isfinite(fields[8]).sum(axis=(1, 2)).max())
    has_funding = np.ascontiguousarray(np.isfinite(fields[8]).any(axis=2))
    n_paths, n_bars, n = fields.shape[1:]
    workers = max(1, min(workers, n_paths))
    if prepared.callback is not None:
        first = prepared.callback
        series = []
        for p, per in enumerate(built):
            callback = per[0].orders
            if not isinstance(callback, Callback) or callback.function is not first.function \
                    or not np.array_equal(callback.param_values, first.param_values):
                raise ValueError(f"the strategy built another callback (or other parameters) "
                                 f"on path {p}; liquidation_risk needs one callback for all "
                                 "paths, its series may differ")
            s = callback.series_array(n_bars, n)
            series.append(np.empty((0, n_bars, n)) if s is None else s)
        series = np.ascontiguousarray(np.stack(series))
        function = first.compiled()
        memory = first.memory_array()
        volume = np.zeros((n_bars, n))
        args = (fields, n_funding, has_funding, prepared.hours, function, first.param_values,
                memory, series, volume, prepared.choices, prepared.mode, prepared.sym,
                prepared.holdings, prepared.versions, prepared.bars_per_year, summary, extra)
        target = run_paths_callback
    else:
        n_u = len(built[0])
        if fixed:  # the same targets on every path: one copy
            built = built[:1]
        targets = np.empty((len(built), n_u, n_bars, n))
        has_target = np.empty((len(built), n_u, n_bars), dtype=np.bool_)
        layout = prepared.layout
        for p, per in enumerate(built):
            for u, plan in enumerate(per):
                orders = plan.orders
                if isinstance(orders, Callback):
                    raise ValueError(f"the strategy built a callback on path {p} but targets "
                                     "on path 0")
                # the run's columns and bars (every path has path 0's)
                targets[p, u], has_target[p, u] = targets_and_rows(
                    orders, layout.market, layout.hedge, layout.held)
        args = (fields, n_funding, has_funding, prepared.hours, targets, has_target,
                prepared.choices, prepared.mode, prepared.sym, prepared.holdings,
                prepared.versions, prepared.bars_per_year, summary, extra)
        target = run_paths
    if workers == 1:
        target(np.int64(0), np.int64(1), *args)
        return
    with ThreadPoolExecutor(workers) as pool:
        jobs = [pool.submit(target, np.int64(w), np.int64(workers), *args)
                for w in range(workers)]
        for job in jobs:
            job.result()


def _path_frame(summary, extra, configs, seeds, initial) -> pd.DataFrame:
    n_paths, n_configs = summary.shape[:2]
    parts = []
    for c, config in enumerate(configs):
        frame = pd.DataFrame(summary[:, c, :], columns=list(METRICS))
        frame.insert(0, "path", np.arange(n_paths))
        frame.insert(1, "seed", seeds)
        frame.insert(2, "margin_mode", config.margin_mode)
        frame.insert(3, "leverage", config.leverage)
        for k, (key, value) in enumerate(config.options.items()):
            frame.insert(4 + k, key, value)
        frame["first_liquidation_bar"] = extra[:, c, E_FIRST_LIQUIDATION].astype(np.int64)
        frame["lowest_equity"] = extra[:, c, E_LOWEST_EQUITY]
        frame["refused_orders"] = extra[:, c, E_REFUSED]
        frame["initial_equity"] = initial[c]
        parts.append(frame)
    return pd.concat(parts, ignore_index=True)


def _table(frame, configs, initial, ruin, level, bars_per_day, seed) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng([int(seed), 2])
    for c, config in enumerate(configs):
        n = len(frame) // len(configs)
        part = frame.iloc[c * n:(c + 1) * n]
        liquidated = part["liquidations"].to_numpy() > 0
        row = {"margin_mode": config.margin_mode, "leverage": config.leverage,
               **config.options, "paths": n}
        k = int(liquidated.sum())
        low, high = wilson(k, n, level)
        row.update(p_liquidation=k / n, p_liquidation_low=float(low),
                   p_liquidation_high=float(high))
        lowest = part["lowest_equity"].to_numpy() / initial[c]
        for q in ruin:
            hit = int((lowest <= 1.0 - q + 1e-12).sum())
            low, high = wilson(hit, n, level)
            key = f"p_loss_{q * 100:g}"
            row.update({key: hit / n, f"{key}_low": float(low), f"{key}_high": float(high)})
        first = part["first_liquidation_bar"].to_numpy()
        days = first[first >= 0] / bars_per_day
        if days.size:
            q25, q50, q75 = np.percentile(days, [25, 50, 75])
        else:
            q25 = q50 = q75 = np.nan
        row.update(first_liquidation_days_q25=q25, first_liquidation_days_median=q50,
                   first_liquidation_days_q75=q75)
        returns = part["total_return"].to_numpy()
        es = expected_shortfall(returns)
        resampled = [expected_shortfall(returns[rng.integers(0, n, n)]) for _ in range(400)]
        alpha = (1 - level) / 2
        row.update(es5_return=es, es5_low=float(np.quantile(resampled, alpha)),
                   es5_high=float(np.quantile(resampled, 1 - alpha)),
                   median_return=float(np.median(returns)), mean_return=float(returns.mean()),
                   median_max_drawdown=float(np.median(part["max_drawdown"])))
        fills, refused = float(part["fills"].sum()), float(part["refused_orders"].sum())
        row.update(mean_fills=fills / n, mean_rejected=float(part["rejected_orders"].mean()),
                   refused_share=refused / (fills + refused) if fills + refused else 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


__all__ = ["Configuration", "LiquidationRisk", "expected_shortfall", "liquidation_risk",
           "wilson"]
