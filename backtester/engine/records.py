"""The event records the kernel writes, and the buffers that hold them.

Each ``record_*`` writes one row of an ``enums`` record dtype into its buffer of
the run's ``Records`` and counts it in ``records.counts`` (a writer takes the one
buffer it writes: a call passing every buffer would cost more than the write).
The kernel checks before each bar that the buffers have room for the bar's worst
case (``bar_room``) and stops at a bar that might overflow one; ``grow_records``
then makes room and the run goes on from there.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .enums import (
    N_COUNTS,
    TRUE,
    Count,
    Records,
    event_dt,
    fill_dt,
    funding_dt,
    liquidation_dt,
    rejection_dt,
)
from .jit import inner

# --- buffers -------------------------------------------------------------------------------


@inner(error_model='numpy')
def grow_buffer(buf, needed):
    """``buf`` itself when it holds ``needed`` rows, else a copy doubled until it does."""
    if buf.shape[0] >= needed:
        return buf
    size = max(buf.shape[0], 64)
    while size < needed:
        size *= 2
    new = np.empty(size, dtype=buf.dtype)
    for r in range(buf.shape[0]):  # (a slice assignment compiles numba's shape-error
        new[r] = buf[r]            # message formatting: 35 more functions on a cold start)
    return new


@inner(error_model='numpy', _nrt=False)
def bar_room(n, n_tiers_max, with_callback):
    """The most rows one bar can add to each buffer, ``(fills, liquidations, rejections,
    events)``, for ``n`` columns of tier tables ``n_tiers_max`` wide.

    Per column: an order fill (with a strategy callback: targets and its orders), a close
    where its data end, three liquidations (a position's, and a collateral sale after each
    of the bar's cross liquidations: at the open, along the path), and a partial cut per
    tier (each cut takes a position at least one tier down); a rejection (with a callback:
    each of its five order fields refused too) and that of a close where its data end; a
    rollover fee and an opening fee per fill, plus a margin call and a loan's interest for
    the account.
    """
    cuts = n * n_tiers_max
    fills = (5 * n if with_callback else 4 * n) + cuts
    rejects = 7 * n if with_callback else 2 * n
    return fills, 3 * n + cuts, rejects, 4 * n + 2


RECORD_DTYPES = (fill_dt, liquidation_dt, funding_dt, rejection_dt, event_dt)  # Records' order


@njit(cache=True, error_model='numpy')
def record_sizes(n, n_tiers_max, fill_rows, funding_rows):
    """The rows to allocate at first in each buffer of a run of ``n`` columns (in the order
    of ``Records``): ``fill_rows`` fills expected and one bar's worst case on top (the bar
    loop stops where a bar might not fit: without that room, a run whose fills come as
    expected would still copy its fills into a buffer twice as large near its end; more
    than expected grow by doubling), room for every funding payment, and one bar's worst
    case of the rest."""
    fills, liqs, rejects, events = bar_room(n, n_tiers_max, TRUE)
    return (max(64, fill_rows + fills), max(64, liqs), max(1, funding_rows), max(64, rejects),
            max(64, events))


@inner(error_model='numpy')
def new_records(n, n_tiers_max, fill_rows, funding_rows):
    """Empty record buffers of ``record_sizes``, allocated inside compiled code (a sweep's
    worker allocates them once for all its runs)."""
    fills, liqs, funding, rejects, events = record_sizes(n, n_tiers_max, fill_rows, funding_rows)
    return Records(np.empty(fills, dtype=fill_dt), np.empty(liqs, dtype=liquidation_dt),
                   np.empty(funding, dtype=funding_dt), np.empty(rejects, dtype=rejection_dt),
                   np.empty(events, dtype=event_dt), np.zeros(N_COUNTS, dtype=np.int64))


@inner(error_model='numpy')
def grow_records(records, n, n_tiers_max, with_callback):
    """``records`` with room for one more bar's worst case in every buffer (doubling the
    ones that lack it): called where the kernel stopped for want of room."""
    counts = records.counts
    fills, liqs, rejects, events = bar_room(n, n_tiers_max, with_callback)
    return Records(
        grow_buffer(records.fills, counts[Count.FILLS] + fills + 1),
        grow_buffer(records.liqs, counts[Count.LIQS] + liqs + 1),
        records.funding,  # sized for every funding rate of the market: it never fills up
        grow_buffer(records.rejects, counts[Count.REJECTS] + rejects + 1),
        grow_buffer(records.events, counts[Count.EVENTS] + events + 1),
        counts,
    )


# --- records ---------------------------------------------------------------------------------


@inner(error_model='numpy', _nrt=False)
def record_fill(fills, counts, t, i, qty, price, fee, realized, position_after, reason):
    c = counts[Count.FILLS]
    fills[c]["bar"] = t
    fills[c]["symbol"] = i
    fills[c]["qty"] = qty
    fills[c]["price"] = price
    fills[c]["fee"] = fee
    fills[c]["realized_pnl"] = realized
    fills[c]["position_after"] = position_after
    fills[c]["reason"] = reason
    counts[Count.FILLS] = c + 1


@inner(error_model='numpy', _nrt=False)
def record_rejection(rejects, counts, t, i, qty, price, required, available, reason):
    c = counts[Count.REJECTS]
    rejects[c]["bar"] = t
    rejects[c]["symbol"] = i
    rejects[c]["qty"] = qty
    rejects[c]["price"] = price
    rejects[c]["required"] = required
    rejects[c]["available"] = available
    rejects[c]["reason"] = reason
    counts[Count.REJECTS] = c + 1


@inner(error_model='numpy', _nrt=False)
def record_funding(funding, counts, t, i, qty, mark_price, rate, payment, mode):
    c = counts[Count.FUNDING]
    funding[c]["bar"] = t
    funding[c]["symbol"] = i
    funding[c]["qty"] = qty
    funding[c]["mark_price"] = mark_price
    funding[c]["rate"] = rate
    funding[c]["payment"] = payment
    funding[c]["mode"] = mode
    counts[Count.FUNDING] = c + 1


@inner(error_model='numpy', _nrt=False)
def record_liquidation(liqs, counts, t, event, i, mode, qty, entry_price, trigger_price, price,
                       bankrupt, gapped, partial):
    """One liquidated (or cut) position and its prices; returns its row, whose money
    (``record_settlement``) and ``equity_after`` the caller writes once they are known."""
    c = counts[Count.LIQS]
    liqs[c]["bar"] = t
    liqs[c]["event"] = event
    liqs[c]["symbol"] = i
    liqs[c]["mode"] = mode
    liqs[c]["qty"] = qty
    liqs[c]["entry_price"] = entry_price
    liqs[c]["trigger_price"] = trigger_price
    liqs[c]["price"] = price
    liqs[c]["bankruptcy_price"] = bankrupt
    liqs[c]["gapped"] = gapped
    liqs[c]["partial"] = partial
    liqs[c]["equity_after"] = np.nan
    liqs[c]["fee_waived"] = 0.0
    liqs[c]["settled_at_bankruptcy"] = False
    counts[Count.LIQS] = c + 1
    return c


@inner(error_model='numpy', _nrt=False)
def record_settlement(liqs, c, fee, fee_waived, realized, margin_lost, shortfall,
                      equity_before):
    """The money of liquidation row ``c``: the fee charged and the fee waived (nothing was left
    to pay it), the PnL realized, what the trader's margin lost, the shortfall past
    bankruptcy, and the equity before the event."""
    liqs[c]["fee"] = fee
    liqs[c]["fee_waived"] = fee_waived
    liqs[c]["realized_pnl"] = realized
    liqs[c]["margin_lost"] = margin_lost
    liqs[c]["shortfall"] = shortfall
    liqs[c]["equity_before"] = equity_before


@inner(error_model='numpy', _nrt=False)
def record_event(events, counts, t, i, kind, qty, price, rate, amount, level):
    c = counts[Count.EVENTS]
    events[c]["bar"] = t
    events[c]["symbol"] = i
    events[c]["kind"] = kind
    events[c]["qty"] = qty
    events[c]["price"] = price
    events[c]["rate"] = rate
    events[c]["amount"] = amount
    events[c]["margin_level"] = level
    counts[Count.EVENTS] = c + 1
