"""Run one chunk of a sweep: each run's inputs from the shared market, one compiled call.

This is what every backend runs (in this process, in a pool worker, on a Dask
worker), so a run's figures do not depend on where it ran. The runs of a chunk
are grouped by data window and venue; each group is one call of
``engine.batch``, with the distinct target arrays of the group stacked once and
shared by every run that trades them. Everything is checked here, in Python,
before the compiled call, with ``run()``'s own checks: a run that fails them
(or whose strategy raises) is reported with its error, and the others go on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numba
import numpy as np
import pandas as pd

from ..backtest import (
    check_model_modes,
    choice,
    per_symbol,
    rules_in_force,
    targets_array,
    venue_funding,
)
from ..data.market import Market
from ..engine import batch, enums
from ..engine.driver import bar_hours, pack_symbol_params
from ..venues import check_simulated, load_venue
from .grid import MARGIN_MODES, Run


@dataclass
class ChunkOutput:
    """What a chunk produced: a metrics row per run (NaN where it failed) and the errors."""

    run_ids: list[str]
    metrics: np.ndarray  # (R, len(batch.METRICS))
    errors: list[str | None]  # "ExceptionType: message" for a failed run
    equity: list[np.ndarray | None] | None  # each run's equity curve, when asked for


@dataclass
class _Window:
    market: Market
    stacked: np.ndarray  # (N_MARKET_FIELDS, T, N)
    has_funding: np.ndarray
    start: pd.Timestamp


@dataclass
class _Rules:
    """A venue's rules over a window: version v in force from bar ``version_bars[v]``."""

    venue: object
    version_bars: np.ndarray  # (V,) int64, starting with 0
    tiers_v: np.ndarray  # (V, N_TIER_FIELDS, N, K)
    n_tiers_v: np.ndarray  # (V, N) int64
    rules_v: np.ndarray  # (V, N_SYMBOL_FIELDS, N): fees and margin rules (enums.SYM_*)
    stacked: np.ndarray  # the window's market, funding dropped where the venue has none
    has_funding: np.ndarray


def window_bounds(market: Market, window: tuple[str | None, str | None]) -> tuple[int, int]:
    """Bar indices [a, b) of ``market`` inside a (start, end) window; an error if it is empty."""
    start, end = window
    index = market.index
    a = 0 if start is None else int(np.searchsorted(index, pd.Timestamp(start).value))
    b = market.n_bars if end is None else int(np.searchsorted(index, pd.Timestamp(end).value))
    if b - a < 1:
        first = pd.Timestamp(int(market.index[0]), tz="UTC") if market.n_bars else None
        last = pd.Timestamp(int(market.index[-1]), tz="UTC") if market.n_bars else None
        raise ValueError(f"window {start or 'start'} .. {end or 'end'} holds no bar of the "
                         f"market ({first} .. {last}); choose a window inside it")
    return a, b


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class ChunkRunner:
    """Runs chunks of one sweep (one market, one strategy), caching what runs share.

    Caches: the window slices, the venue rules per window, margin-mode and
    leverage arrays, and the last target array computed (the runs of one
    parameter set are consecutive, so a chunk boundary splits at most one).
    """

    def __init__(self, market: Market, strategy):
        self.market = market
        self.strategy = strategy
        self._windows: dict = {}
        self._rules: dict = {}
        self._modes: dict = {}
        self._leverages: dict = {}
        self._last_targets: tuple | None = None

    # --- shared inputs -------------------------------------------------------------------

    def window(self, window) -> _Window:
        if window not in self._windows:
            a, b = window_bounds(self.market, window)
            m = self.market.slice(a, b)
            stacked = batch.stack_market(m.open, m.close, m.mark_open, m.mark_high, m.mark_low,
                                         m.mark_close, m.funding_rate)
            self._windows[window] = _Window(
                market=m, stacked=stacked, has_funding=~np.isnan(m.funding_rate).all(axis=1),
                start=pd.Timestamp(int(m.index[0]), tz="UTC"))
        return self._windows[window]

    def rules(self, window, venue: str, overrides: dict) -> _Rules:
        key = (window, venue, json.dumps(overrides, sort_keys=True))
        if key not in self._rules:
            w = self.window(window)
            v = load_venue(venue, **overrides)
            check_simulated(v)
            # the same versions, at the same bars, as run() (tables changing in the window)
            first, schedule, _ = rules_in_force(v, w.market, set(), 0.0)
            versions = [first] + [change[1:] for change in schedule]
            funding = venue_funding(v, w.market, w.market.symbols, w.start)
            stacked, has_funding = w.stacked, w.has_funding
            if funding is not w.market.funding_rate:  # spot margin: borrowings pay no funding
                stacked = w.stacked.copy()
                stacked[batch.MK_FUNDING_RATE] = funding
                has_funding = ~np.isnan(funding).all(axis=1)
            self._rules[key] = _Rules(
                venue=v, version_bars=np.array([0] + [c[0] for c in schedule], dtype=np.int64),
                tiers_v=np.ascontiguousarray(np.stack([t for t, _, _ in versions])),
                n_tiers_v=np.ascontiguousarray(np.stack([n for _, n, _ in versions]),
                                               dtype=np.int64),
                rules_v=np.ascontiguousarray(np.stack([r for _, _, r in versions])),
                stacked=stacked, has_funding=has_funding)
        return self._rules[key]

    def mode(self, margin_mode, key: str) -> np.ndarray:
        if key not in self._modes:
            symbols = self.market.symbols

            def to_mode(value, symbol):
                return choice(f"margin_mode of {symbol}", value, MARGIN_MODES)

            self._modes[key] = np.array(per_symbol("margin_mode", margin_mode, symbols, to_mode),
                                        dtype=np.int64)
        return self._modes[key]

    def leverage(self, window, venue: str, overrides: dict, leverage, key: str) -> np.ndarray:
        key = (window, venue, json.dumps(overrides, sort_keys=True), key)
        if key not in self._leverages:
            rules = self.rules(window, venue, overrides)
            start = self.window(window).start

            def to_leverage(value, symbol):
                lev = float(value)
                rules.venue.check_leverage(symbol, lev, at=start)
                return lev

            self._leverages[key] = np.array(
                per_symbol("leverage", leverage, self.market.symbols, to_leverage), np.float64)
        return self._leverages[key]

    def targets_into(self, window, params: dict, key: str, row: np.ndarray,
                     has_target: np.ndarray) -> Exception | None:
        """Write a parameter set's targets (T, N) into ``row``; the strategy's error if any."""
        if self._last_targets is not None and self._last_targets[0] == (window, key):
            row[:], has_target[:] = self._last_targets[1]
            return None
        m = self.window(window).market
        try:
            targets = self.strategy(m, **params)
            if hasattr(targets, "orders") and hasattr(targets, "options"):
                raise TypeError(
                    "the strategy returned a Plan; a sweep runs target positions: pass the "
                    "function that returns them (e.g. strategies.hedged_pair) and set the "
                    "plan's run options in the grid")
            row[:] = targets_array(targets, m)
        except Exception as exc:  # a strategy's failure is that run's failure
            return exc
        has_target[:] = batch.target_rows(row)
        return None

    # --- a chunk ---------------------------------------------------------------------------

    def run_chunk(self, runs: list[Run], *, equity: bool = False,
                  parallel: bool = True) -> ChunkOutput:
        """Run ``runs`` (any mix of windows and venues); one batch call per window and venue."""
        out = ChunkOutput(run_ids=[r.run_id for r in runs],
                          metrics=np.full((len(runs), batch.N_METRICS), np.nan),
                          errors=[None] * len(runs),
                          equity=[None] * len(runs) if equity else None)
        groups: dict = {}
        for k, r in enumerate(runs):
            o = r.options
            key = (o["window"], o["venue"], json.dumps(o["venue_overrides"], sort_keys=True))
            groups.setdefault(key, []).append(k)
        for positions in groups.values():
            self._run_group(runs, positions, out, equity, parallel)
        return out

    def _run_group(self, runs, positions, out: ChunkOutput, equity: bool, parallel: bool):
        o = runs[positions[0]].options
        window, venue, overrides = o["window"], o["venue"], o["venue_overrides"]
        try:
            w = self.window(window)
            rules = self.rules(window, venue, overrides)
        except Exception as exc:
            for k in positions:
                out.errors[k] = _error(exc)
            return
        # the distinct parameter sets of the group, each one row of the targets stack
        keys: dict = {}
        for k in positions:
            keys.setdefault(runs[k].params_key(), len(keys))
        n_bars, n = w.market.n_bars, w.market.n_symbols
        targets = np.empty((len(keys), n_bars, n))
        has_target = np.empty((len(keys), n_bars), dtype=np.bool_)
        done: dict = {}  # key -> None (targets written) or the strategy's exception
        ok, rows, modes, syms = [], [], [], []
        for k in positions:
            r = runs[k]
            try:
                row, mode, sym = self._prepare(r, w, rules, targets, has_target, keys, done)
            except Exception as exc:
                out.errors[k] = _error(exc)
                continue
            ok.append(k)
            rows.append(row)
            modes.append(mode)
            syms.append(sym)
        if not ok:
            return
        last = runs[ok[-1]].params_key()
        u = keys[last]
        self._last_targets = ((window, last), (targets[u].copy(), has_target[u].copy()))
        inputs = (w, rules, targets, has_target, np.array(rows), np.array(modes), np.array(syms))
        self._call(inputs, ok, out, equity, parallel)

    def _prepare(self, r: Run, w: _Window, rules: _Rules, targets, has_target, keys: dict,
                 done: dict):
        """One run's row of choices, margin modes and symbol parameters (raises if invalid)."""
        o = r.options
        lev = self.leverage(o["window"], o["venue"], o["venue_overrides"], o["leverage"],
                            r.key("o:leverage"))
        mode = self.mode(o["margin_mode"], r.key("o:margin_mode"))
        key = r.params_key()
        u = keys[key]
        if key not in done:
            done[key] = self.targets_into(o["window"], r.params, key, targets[u], has_target[u])
        if done[key] is not None:
            raise done[key]
        row = np.zeros(batch.N_RUN_FIELDS)
        row[batch.RUN_TARGETS] = u
        row[batch.RUN_TARGET_KIND] = enums.TARGET_KIND_NAMES.index(o["target_kind"])
        row[batch.RUN_FILL_AT] = enums.FILL_AT_NAMES.index(o["fill_at"])
        row[batch.RUN_PATH] = enums.PATH_NAMES.index(o["path"])
        row[batch.RUN_REDUCE_TO_FIT] = float(o["reduce_to_fit"])
        row[batch.RUN_INITIAL_BALANCE] = o["initial_balance"]
        row[batch.RUN_SLIPPAGE] = o["slippage"]
        first = rules.rules_v[0]
        check_model_modes(rules.venue, mode, self.market.symbols)
        sym = pack_symbol_params(lev, first[enums.SYM_TAKER_FEE], first[enums.SYM_LIQ_FEE],
                                 rules=first)
        return row, mode, sym

    def _call(self, inputs, ok: list[int], out: ChunkOutput, equity: bool, parallel: bool):
        w, rules, targets, has_target, rows, modes, syms = inputs
        summary = np.full((len(ok), batch.N_METRICS), np.nan)
        curves = np.empty((len(ok) if equity else 0, w.market.n_bars))
        args = (rules.stacked, rules.has_funding, bar_hours(w.market.index, w.market.bar_ns),
                targets, has_target, rows, modes, syms, rules.version_bars, rules.tiers_v,
                rules.n_tiers_v, rules.rules_v,
                float(w.market.bars_per_year), summary, curves)
        try:
            if parallel and len(ok) > 1:
                threads = min(numba.get_num_threads(), len(ok))
                batch.run_batch_parallel(threads, *args)
            else:
                batch.run_batch_serial(0, 1, *args)
        except Exception:
            if len(ok) == 1:
                raise
            # find the culprit: every run alone, so that one failure stays one failed row
            for j, k in enumerate(ok):
                one = (w, rules, targets, has_target, rows[j:j + 1], modes[j:j + 1],
                       syms[j:j + 1])
                try:
                    self._call(one, [k], out, equity, False)
                except Exception as exc:
                    out.errors[k] = _error(exc)
            return
        for j, k in enumerate(ok):
            out.metrics[k] = summary[j]
            if equity:
                out.equity[k] = curves[j].copy()
