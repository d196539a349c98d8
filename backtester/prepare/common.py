"""Small helpers the preparation modules share."""

from __future__ import annotations

import bisect
import json
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..venues import Venue


def option_key(value):
    """A hashable, canonical form of an option value (mappings sorted), for cache keys."""
    if isinstance(value, str | int | float | bool | None):
        return value
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), option_key(v)) for k, v in value.items())) if value else ()
    return json.dumps(value, sort_keys=True, default=str)


def in_force(venue: Venue, symbols: tuple[str, ...], times) -> tuple[int, ...]:
    """At each time (ns since the epoch), how many of the dated versions of ``symbols``' rules
    (their tables and fees, the model's rules: ``Venue.version_starts``) are in force: at
    times with equal counts the same versions of all of them are in force (a memo key that
    holds across dates)."""
    starts = venue.version_starts(symbols)
    return tuple(bisect.bisect_right(starts, t) for t in times)


def c_float(a, ndim: int, name: str) -> np.ndarray:
    """``a`` as a writeable C-contiguous float64 array of ``ndim`` dimensions: the one type the
    compiled code is compiled for (numba types read-only arrays apart)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not a.flags.writeable:
        a = a.copy()
    return a


def read_view(a: np.ndarray, name: str) -> np.ndarray:
    """A market array as compiled code that only reads it takes it: C-contiguous float64 and
    writeable (numba types read-only arrays apart, so they would compile every function
    again). The array itself; or, for a read-only view of writeable memory (what
    ``Market.from_arrays`` holds), a writeable view of the same memory, not a copy; else a
    copy."""
    out = a
    if a.dtype == np.float64 and a.flags.c_contiguous and not a.flags.writeable:
        out = a.view()
        try:
            out.flags.writeable = True  # the memory is writeable: only this view was not
        except ValueError:
            out = a.copy()
    return c_float(out, 2, name)


_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # Market -> read_view's memo


def market_view(market, name: str) -> np.ndarray:
    """``read_view`` of the market's array ``name`` (``"close"``, ``"mark_low"``, ...), made
    once per market object and kept while it lives when it is a view: a market's arrays are
    fixed (it is frozen) and a view shares their memory, so it never goes stale. An array
    numba cannot take as it is would be copied, and a copy is made again at each call, so
    that it shows what the memory holds then."""
    views = _VIEWS.get(market)
    if views is None:
        views = _VIEWS[market] = {}
    a = getattr(market, name)
    found = views.get(id(a))
    if found is not None:
        return found[1]
    out = read_view(a, name)
    if np.may_share_memory(out, a):  # (a view; a copy is memory of its own)
        views[id(a)] = (a, out)  # (a kept alive with its id)
    return out
