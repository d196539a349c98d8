"""Small helpers the preparation modules share."""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np


def option_key(value):
    """A hashable, canonical form of an option value (mappings sorted), for cache keys."""
    if isinstance(value, str | int | float | bool | None):
        return value
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), option_key(v)) for k, v in value.items())) if value else ()
    return json.dumps(value, sort_keys=True, default=str)


def c_float(a, ndim: int, name: str) -> np.ndarray:
    """``a`` as a writeable C-contiguous float64 array of ``ndim`` dimensions: the one type the
    compiled code is compiled for (numba types read-only arrays apart)."""
    a = np.ascontiguousarray(a, dtype=np.float64)
    if a.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {a.shape}")
    if not a.flags.writeable:
        a = a.copy()
    return a


def read_view(a: np.ndarray, name: str, views: dict | None = None) -> np.ndarray:
    """A market array as compiled code that only reads it takes it: C-contiguous float64 and
    writeable (numba types read-only arrays apart, so they would compile every function
    again). The array itself; or, for a read-only view of writeable memory (what
    ``Market.from_arrays`` holds), a writeable view of the same memory, not a copy; else a
    copy. ``views``: arrays already seen (by identity), so that one array stays one (the
    mark arrays of a market without them are its price arrays)."""
    if views is not None and id(a) in views:
        return views[id(a)][1]
    out = a
    if a.dtype == np.float64 and a.flags.c_contiguous and not a.flags.writeable:
        out = a.view()
        try:
            out.flags.writeable = True  # the memory is writeable: only this view was not
        except ValueError:
            out = a.copy()
    out = c_float(out, 2, name)
    if views is not None:
        views[id(a)] = (a, out)  # (a kept alive with its id)
    return out
