"""A strategy's targets as the kernel takes them: a (T, N) float64 array aligned to the run's
columns, and the rows that hold one."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..data.market import Market
from ..engine.driver import rows_with_infinities
from .columns import Layout
from .common import c_float

if TYPE_CHECKING:
    from .run import PrepareCache


def target_arrays(orders, layout: Layout, cache: PrepareCache) -> tuple[np.ndarray, np.ndarray]:
    """``(targets, rows holding one)`` of the run's columns, converted once per target object
    (the runs of a sweep's parameter set share one)."""
    key = (id(orders), id(layout.market))
    if key not in cache.targets:
        array, has_target = targets_and_rows(orders, layout.market, layout.hedge, layout.held)
        cache.targets[key] = (orders, layout.market, array, has_target)
        while len(cache.targets) > 64:  # a sweep moves on from a parameter set for good
            del cache.targets[next(iter(cache.targets))]
    return cache.targets[key][2:]


def targets_array(targets, market: Market, hedge=(), held=()) -> np.ndarray:
    """Targets as a (T, N) float64 array aligned to the market (NaN = leave the position as is).

    A DataFrame is aligned on the market's timestamps (rows the market does not
    have are an error; bars the frame lacks are NaN) and its columns must be
    market symbols (a missing symbol is never traded).
    """
    return targets_and_rows(targets, market, hedge, held)[0]


def targets_and_rows(targets, market: Market, hedge=(), held=()
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``targets_array`` and, per bar, whether its row holds a target: both from one pass
    over the array, which also finds an infinite target."""
    shape = (market.n_bars, market.n_symbols)
    if isinstance(targets, pd.Series):
        targets = targets.to_frame()
    if isinstance(targets, pd.DataFrame):
        unknown = [c for c in targets.columns if c not in market.symbols]
        legs = [c for c in unknown if c in hedge]
        if legs:
            raise ValueError(
                f"{', '.join(legs)} in hedge mode: give targets to the legs "
                + ", ".join(f"{c}.long (>= 0) and {c}.short (<= 0)" for c in legs)
                + ", not to the symbol")
        if unknown:
            raise ValueError(
                f"targets have column(s) {unknown} that are not market symbols "
                f"({', '.join(market.symbols)})"
            )
        columns = list(targets.columns)
        if len(set(columns)) < len(columns):
            twice = targets.columns[targets.columns.duplicated()]
            raise ValueError(f"targets have the column {twice[0]!r} more than once; give each "
                             "symbol one column")
        values = targets.to_numpy()  # (one block of numbers when every column holds them)
        if values.dtype.kind not in "fiu":  # (a text, bool or nullable column: look at each)
            text = [c for c, dtype in zip(columns, targets.dtypes, strict=True)
                    if not (pd.api.types.is_numeric_dtype(dtype)
                            and not pd.api.types.is_bool_dtype(dtype))]
            if text:
                raise ValueError(f"targets column {text[0]!r} holds {targets[text[0]].dtype} "
                                 "values, not numbers (NaN = leave the position as it is)")
        index = targets.index
        if values.dtype == np.float64 and _on_the_bars(index, market):
            # (a strategy's frame on the market's own bars: no alignment to do)
            positions = slice(None)
        elif isinstance(index, pd.DatetimeIndex):
            index = index.tz_localize("UTC") if index.tz is None else index.tz_convert("UTC")
            if index.has_duplicates:
                twice = index[index.duplicated()]
                raise ValueError(f"targets have {len(twice)} row(s) at a time given before, "
                                 f"first {twice[0]}: one row per bar (which one is meant?); "
                                 "drop or merge the duplicates")
            positions = market.timestamps.get_indexer(index)
            if (positions < 0).any():
                bad = index[positions < 0][0]
                raise ValueError(
                    f"targets have {(positions < 0).sum()} row(s) at times that are not bars "
                    "of the "
                    f"market, first {bad}; align the targets to market.timestamps"
                )
        elif len(index) == market.n_bars:
            positions = np.arange(market.n_bars)
        else:
            raise ValueError(
                f"targets need a DatetimeIndex or exactly {market.n_bars} rows, got {len(index)}"
            )
        out = np.full(shape, np.nan)
        if isinstance(positions, slice):
            out[:, [market.symbol_index(c) for c in columns]] = values
        else:
            for column in columns:
                out[positions, market.symbol_index(column)] = targets[column].to_numpy(
                    dtype=float)
        array = out
    else:
        try:
            array = np.asarray(targets, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"targets must be numbers: a (bars, symbols) array or a DataFrame "
                             f"of target positions, got {type(targets).__name__} ({exc})") from None
        traded = market.n_symbols - len(held)  # collateral columns come last, never traded
        if array.ndim == 1 and traded == 1:
            array = array[:, None]
        if held and array.ndim == 2 and array.shape == (market.n_bars, traded):
            array = np.hstack([array, np.full((market.n_bars, len(held)), np.nan)])
        if array.shape != shape:
            raise ValueError(
                f"targets must have shape (bars, symbols) = {shape}, got {array.shape}"
                + (f" ({type(targets).__name__})" if array.ndim == 0 else "")
            )
    array = c_float(array, 2, "targets")
    has_target, _, infinite = rows_with_infinities(array)
    if infinite:
        t, i = np.argwhere(np.isinf(array))[0]
        raise ValueError(
            f"targets hold an infinite value at bar {t} ({market.timestamps[t]}), "
            f"symbol {market.symbols[i]}"
        )
    for symbol in hedge:
        for suffix, sign in ((".long", 1.0), (".short", -1.0)):
            i = market.symbol_index(symbol + suffix)
            wrong = np.flatnonzero(array[:, i] * sign < 0.0)
            if len(wrong):
                t = wrong[0]
                side = "long" if sign > 0 else "short"
                raise ValueError(
                    f"targets of {symbol}{suffix} must be {'>= 0' if sign > 0 else '<= 0'} (a "
                    f"hedge-mode {side} leg keeps its side), got {array[t, i]:g} at bar {t} "
                    f"({market.timestamps[t]})")
    return array, has_target


def _on_the_bars(index, market: Market) -> bool:
    """Whether a frame's index is the market's bars, one row each, in order (UTC times)."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) != market.n_bars:
        return False
    if index.tz is None or str(index.tz) != "UTC" or index.dtype != "datetime64[ns, UTC]":
        return False
    return bool(np.array_equal(index.asi8, market.index))
