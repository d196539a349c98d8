"""Batch research: many backtests over a grid of parameters, options and data windows.

``sweep(market, strategy, grid)`` runs every combination and returns one
summary row per run (parameters, the figures of ``Result.summary()``,
liquidations, worst margin ratio), writing them as a parquet dataset as runs
finish. Three backends: in-process (the runs of a chunk that share a market window
shared out over threads of compiled code while the next chunk is prepared: the fast
path), a local process pool, and Dask.

    >>> from backtester import load_market
    >>> from backtester.sweep import sweep
    >>> from strategies import hedged_pair
    >>> table = sweep(load_market().slice(0, 500), hedged_pair,
    ...               {"margin_mode": ["cross", "isolated"], "leverage": [5, 20]},
    ...               target_kind="equity")
    >>> table[["margin_mode", "leverage"]].values.tolist()
    [['cross', 5.0], ['cross', 20.0], ['isolated', 5.0], ['isolated', 20.0]]
"""

from .core import sweep
from .grid import RUN_OPTIONS, Grid, load_grid, run_id
from .isolation import stop_kept_workers
from .storage import read_equity, read_sweep

__all__ = ["RUN_OPTIONS", "Grid", "load_grid", "read_equity", "read_sweep", "run_id",
           "stop_kept_workers", "sweep"]
