"""Each column's position at each close, rebuilt from the fill records.

Every change of a position is a fill record: a strategy's fill, a liquidation (a close
or a partial cut), an auto-deleveraging close, a close where a column's data end, a
collateral sale. Each record carries the position after it (``fill_dt.position_after``,
the kernel's own number), so the position at the close of bar t is the ``position_after``
of the column's last fill at a bar <= t, or the position the account opened with (a
collateral holding; 0 otherwise): exactly what ``record_positions`` writes at each close,
bit for bit, without the (T, N) record.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, error_model='numpy')
def positions_from_fills(bar, symbol, position_after, initial, n_bars):
    """(T, N) positions at each close from fills in the order recorded (bars non-decreasing):
    ``bar``, ``symbol`` and ``position_after`` are the fill records' fields, ``initial`` (N,)
    the positions the account opened with."""
    n = initial.shape[0]
    out = np.empty((n_bars, n))
    held = initial.copy()
    k = 0
    m = bar.shape[0]
    for t in range(n_bars):
        while k < m and bar[k] <= t:
            held[symbol[k]] = position_after[k]
            k += 1
        for i in range(n):
            out[t, i] = held[i]
    return out
