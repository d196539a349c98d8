"""The event records the kernel writes, and the buffers that hold them.

Each ``record_*`` writes one row of an ``enums`` record dtype and counts it;
the kernel checks before each bar that the buffers have room for the bar's worst
case, and ``grow_buffer`` doubles a buffer when it stops for want of it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .enums import (
    C_EVENTS,
    C_FILLS,
    C_FUNDING,
    C_LIQS,
    C_REJECTS,
)

# --- record buffers ----------------------------------------------------------------------


@njit(cache=True)
def grow_buffer(buf, needed):
    """``buf`` itself when it holds ``needed`` rows, else a copy doubled until it does.

    ``simulate`` stops at a bar whose events might overflow a buffer; its caller
    grows the buffers with this and resumes from that bar.
    """
    if buf.shape[0] >= needed:
        return buf
    size = max(buf.shape[0], 64)
    while size < needed:
        size *= 2
    new = np.empty(size, dtype=buf.dtype)
    new[: buf.shape[0]] = buf
    return new


# --- records ---------------------------------------------------------------------------


# Compiled without NRT (``_nrt=False``): these functions allocate nothing, and
# without NRT numba does not reference-count the arrays they receive. That count
# is atomic and costs ~75 ns per call, more than most of these functions' work.

@njit(cache=True, _nrt=False)
def record_fill(fills, counts, t, i, qty, price, fee, realized, position_after, reason):
    c = counts[C_FILLS]
    fills[c]["bar"] = t
    fills[c]["symbol"] = i
    fills[c]["qty"] = qty
    fills[c]["price"] = price
    fills[c]["fee"] = fee
    fills[c]["realized_pnl"] = realized
    fills[c]["position_after"] = position_after
    fills[c]["reason"] = reason
    counts[C_FILLS] = c + 1


@njit(cache=True, _nrt=False)
def record_rejection(rejects, counts, t, i, qty, price, required, available, reason):
    c = counts[C_REJECTS]
    rejects[c]["bar"] = t
    rejects[c]["symbol"] = i
    rejects[c]["qty"] = qty
    rejects[c]["price"] = price
    rejects[c]["required"] = required
    rejects[c]["available"] = available
    rejects[c]["reason"] = reason
    counts[C_REJECTS] = c + 1


@njit(cache=True, _nrt=False)
def record_funding(funding, counts, t, i, qty, mark_price, rate, payment, mode):
    c = counts[C_FUNDING]
    funding[c]["bar"] = t
    funding[c]["symbol"] = i
    funding[c]["qty"] = qty
    funding[c]["mark_price"] = mark_price
    funding[c]["rate"] = rate
    funding[c]["payment"] = payment
    funding[c]["mode"] = mode
    counts[C_FUNDING] = c + 1


@njit(cache=True, _nrt=False)
def record_liquidation(liqs, counts, t, event, i, mode, qty, entry_price, trigger_price, price,
                       fee, realized, margin_lost, equity_before, shortfall, gapped, bankrupt,
                       partial):
    c = counts[C_LIQS]
    liqs[c]["bar"] = t
    liqs[c]["event"] = event
    liqs[c]["symbol"] = i
    liqs[c]["mode"] = mode
    liqs[c]["qty"] = qty
    liqs[c]["entry_price"] = entry_price
    liqs[c]["trigger_price"] = trigger_price
    liqs[c]["price"] = price
    liqs[c]["fee"] = fee
    liqs[c]["realized_pnl"] = realized
    liqs[c]["margin_lost"] = margin_lost
    liqs[c]["equity_before"] = equity_before
    liqs[c]["equity_after"] = np.nan  # completed by the caller once the event is over
    liqs[c]["shortfall"] = shortfall
    liqs[c]["gapped"] = gapped
    liqs[c]["bankruptcy_price"] = bankrupt
    liqs[c]["partial"] = partial
    counts[C_LIQS] = c + 1


@njit(cache=True, _nrt=False)
def record_event(events, counts, t, i, kind, qty, price, rate, amount, level):
    c = counts[C_EVENTS]
    events[c]["bar"] = t
    events[c]["symbol"] = i
    events[c]["kind"] = kind
    events[c]["qty"] = qty
    events[c]["price"] = price
    events[c]["rate"] = rate
    events[c]["amount"] = amount
    events[c]["margin_level"] = level
    counts[C_EVENTS] = c + 1
