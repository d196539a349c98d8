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
