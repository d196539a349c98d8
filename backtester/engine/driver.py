"""Drive the kernel from Python: allocate the run's state and buffers, grow them, resume.

Numpy only (no pandas): this is the thin layer that benchmarks and sweeps call
directly, below the validating ``backtester.run``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import enums
from .kernel import C_FILLS, C_FUNDING, C_LIQS, C_REJECTS, N_OUT, new_state, simulate


@dataclass
class KernelOutput:
    """What one kernel run produced (plain numpy)."""

    account: np.ndarray  # (N_OUT, T) per-bar series, rows as in kernel.OUT_*
    fills: np.ndarray
    liquidations: np.ndarray
    funding: np.ndarray
    rejections: np.ndarray
    positions: np.ndarray | None  # (T, N) when recorded
    liquidation_prices: np.ndarray | None  # (T, N) when recorded
    state: np.ndarray  # (N_STATE, N) final state, rows as in kernel.S_*
    wallet_balance: float


def _doubled(buf: np.ndarray, needed: int) -> np.ndarray:
    size = max(buf.shape[0], 64)
    while size < needed:
        size *= 2
    new = np.empty(size, dtype=buf.dtype)
    new[: buf.shape[0]] = buf
    return new


def simulate_arrays(
    *, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate, targets,
    target_kind: int, mode, leverage, floors, caps, mmrs, cums, max_leverage, n_tiers,
    taker_fee, liq_fee, initial_balance: float, slippage: float = 0.0,
    fill_at: int = enums.FILL_NEXT_OPEN, path: int = enums.PATH_OHLC,
    reduce_to_fit: bool = False, record_positions: bool = False, fill_hint: int | None = None,
) -> KernelOutput:
    """Run the kernel over all bars; arrays must already be validated and float64/int64."""
    n_bars, n = open_.shape
    has_target = ~np.isnan(targets).all(axis=1)
    has_funding = ~np.isnan(funding_rate).all(axis=1)
    n_funding = int(np.count_nonzero(~np.isnan(funding_rate)))
    if fill_hint is None:
        fill_hint = 2 * int(has_target.sum()) * n
    fills = np.empty(max(64, min(fill_hint, 1 << 20)), dtype=enums.fill_dt)
    liqs = np.empty(64, dtype=enums.liquidation_dt)
    funding = np.empty(max(1, n_funding), dtype=enums.funding_dt)
    rejects = np.empty(64, dtype=enums.rejection_dt)
    out = np.full((N_OUT, n_bars), np.nan)
    shape = (n_bars, n) if record_positions else (0, n)
    positions = np.full(shape, np.nan)
    liq_prices = np.full(shape, np.nan)
    counts = np.zeros(5, dtype=np.int64)
    state, tier, account = new_state(n, float(initial_balance))
    start = 0
    while True:
        start = simulate(
            start, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate,
            has_funding, targets, has_target, target_kind, mode, leverage, floors, caps, mmrs,
            cums, max_leverage, n_tiers, taker_fee, liq_fee, float(slippage), fill_at, path,
            bool(reduce_to_fit), bool(record_positions), state, tier, account, out, positions,
            liq_prices, fills, liqs, funding, rejects, counts,
        )
        if start >= n_bars:
            break
        # a bar's worst case: a fill and a liquidation per symbol, a rejection per symbol
        fills = _doubled(fills, counts[C_FILLS] + 2 * n + 1)
        liqs = _doubled(liqs, counts[C_LIQS] + n + 1)
        rejects = _doubled(rejects, counts[C_REJECTS] + n + 1)
    return KernelOutput(
        account=out,
        fills=fills[: counts[C_FILLS]].copy(),
        liquidations=liqs[: counts[C_LIQS]].copy(),
        funding=funding[: counts[C_FUNDING]].copy(),
        rejections=rejects[: counts[C_REJECTS]].copy(),
        positions=positions if record_positions else None,
        liquidation_prices=liq_prices if record_positions else None,
        state=state,
        wallet_balance=float(account[0]),
    )
