"""Drive the kernel from Python: allocate the run's state and buffers, grow them, resume.

Numpy only (no pandas): the thin layer that ``backtester.run``, benchmarks and
sweeps call once their inputs are validated arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import enums
from .enums import (
    A_EQUITY_PREV,
    A_WALLET,
    C_FILLS,
    C_FUNDING,
    C_LIQS,
    C_REJECTS,
    N_ACCOUNT,
    N_COUNTS,
    N_OUT,
    N_STATE,
    S_LAST_CLOSE,
    S_LIQ_PX,
    S_MARK,
)
from .kernel import simulate


@dataclass
class KernelOutput:
    """What one kernel run produced (plain numpy)."""

    account: np.ndarray  # (N_OUT, T) per-bar series, rows as enums.OUT_*
    fills: np.ndarray
    liquidations: np.ndarray
    funding: np.ndarray
    rejections: np.ndarray
    positions: np.ndarray | None  # (T, N) when recorded
    liquidation_prices: np.ndarray | None  # (T, N) when recorded
    state: np.ndarray  # (N_STATE, N) final state, rows as enums.S_*
    wallet_balance: float


def new_state(n_symbols: int, initial_balance: float):
    """A flat account holding ``initial_balance``: (state, tier, account) arrays."""
    state = np.zeros((N_STATE, n_symbols))
    state[S_LIQ_PX] = np.nan
    state[S_MARK] = np.nan
    state[S_LAST_CLOSE] = np.nan
    tier = np.zeros(n_symbols, dtype=np.int64)
    account = np.zeros(N_ACCOUNT)
    account[A_WALLET] = initial_balance
    account[A_EQUITY_PREV] = initial_balance
    return state, tier, account


def _doubled(buf: np.ndarray, needed: int) -> np.ndarray:
    if buf.shape[0] >= needed:
        return buf
    size = max(buf.shape[0], 64)
    while size < needed:
        size *= 2
    new = np.empty(size, dtype=buf.dtype)
    new[: buf.shape[0]] = buf
    return new


def simulate_arrays(
    *, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate, targets,
    target_kind: int, mode, sym, tiers, n_tiers, initial_balance: float, slippage: float = 0.0,
    fill_at: int = enums.FILL_NEXT_OPEN, path: int = enums.PATH_OHLC,
    reduce_to_fit: bool = False, record_positions: bool = False,
) -> KernelOutput:
    """Run the kernel over every bar. Inputs must be validated, C-contiguous float64/int64.

    ``sym`` is (N_SYMBOL_FIELDS, N) and ``tiers`` (N_TIER_FIELDS, N, K), laid out
    as in ``enums``.
    """
    n_bars, n = open_.shape
    has_target = ~np.isnan(targets).all(axis=1)
    has_funding = ~np.isnan(funding_rate).all(axis=1)
    n_funding = int(np.count_nonzero(~np.isnan(funding_rate)))
    # a fill per symbol per target row is the common case; more grow by doubling
    fills = np.empty(max(64, min(int(has_target.sum()) * n + 2 * n, 1 << 22)), dtype=enums.fill_dt)
    liqs = np.empty(max(64, n), dtype=enums.liquidation_dt)
    funding = np.empty(max(1, n_funding), dtype=enums.funding_dt)
    rejects = np.empty(max(64, n), dtype=enums.rejection_dt)
    out = np.empty((N_OUT, n_bars))
    shape = (n_bars, n) if record_positions else (0, n)
    positions = np.empty(shape)
    liq_prices = np.empty(shape)
    counts = np.zeros(N_COUNTS, dtype=np.int64)
    state, tier, account = new_state(n, float(initial_balance))
    start = 0
    while True:
        start = simulate(
            start, open_, close, mark_open, mark_high, mark_low, mark_close, funding_rate,
            has_funding, targets, has_target, target_kind, mode, sym, tiers, n_tiers,
            float(slippage), fill_at, path, bool(reduce_to_fit), bool(record_positions), state,
            tier, account, out, positions, liq_prices, fills, liqs, funding, rejects, counts,
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
        wallet_balance=float(account[A_WALLET]),
    )


def pack_tiers(floors, caps, mmrs, cums, max_leverage) -> np.ndarray:
    """Stack (N, K) tier tables into the kernel's (N_TIER_FIELDS, N, K) layout."""
    tiers = np.empty((enums.N_TIER_FIELDS,) + np.shape(floors))
    tiers[enums.TIER_FLOOR] = floors
    tiers[enums.TIER_CAP] = caps
    tiers[enums.TIER_MMR] = mmrs
    tiers[enums.TIER_CUM] = cums
    tiers[enums.TIER_MAX_LEVERAGE] = max_leverage
    return tiers


def pack_symbol_params(leverage, taker_fee, liquidation_fee) -> np.ndarray:
    """Stack per-symbol parameters into the kernel's (N_SYMBOL_FIELDS, N) layout."""
    sym = np.empty((enums.N_SYMBOL_FIELDS, len(leverage)))
    sym[enums.SYM_LEVERAGE] = leverage
    sym[enums.SYM_TAKER_FEE] = taker_fee
    sym[enums.SYM_LIQ_FEE] = liquidation_fee
    return sym
