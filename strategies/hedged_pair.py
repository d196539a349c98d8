"""Hedged pair: long one asset, short another, notional-neutral, rebalanced on a schedule."""

from __future__ import annotations

import numpy as np
import pandas as pd

from backtester.data.market import Market


def hedged_pair(
    market: Market,
    long: str | None = None,
    short: str | None = None,
    exposure: float = 1.0,
    rebalance_every: int = 24,
) -> pd.DataFrame:
    """Targets of a notional-neutral pair, as fractions of equity (``target_kind="equity"``).

    - ``long`` / ``short``: the symbols of the two legs (default: the market's
      first and second symbol).
    - ``exposure``: each leg's notional as a fraction of account equity (1.0 =
      one times equity long and one times short; the gross exposure is twice it).
      How much margin that takes depends on the run's leverage.
    - ``rebalance_every``: bars between rebalances back to equal and opposite
      notionals (24 = daily on hourly bars); in between the legs drift with prices.

    Example:
        >>> from backtester import load_market, run
        >>> from strategies import hedged_pair
        >>> market = load_market()
        >>> targets = hedged_pair(market, exposure=2.0, rebalance_every=24)
        >>> result = run(market, targets, target_kind="equity", leverage=10)
        >>> sorted(targets.columns)
        ['BTC_USDT', 'ETH_USDT']
    """
    if market.n_symbols < 2 and (long is None or short is None):
        raise ValueError("a hedged pair needs two symbols; the market holds "
                         f"{', '.join(market.symbols)}")
    long = long or market.symbols[0]
    short = short or market.symbols[1]
    for symbol in (long, short):
        market.symbol_index(symbol)  # a clear error for an unknown symbol
    if long == short:
        raise ValueError(f"long and short must be different symbols, both are {long!r}")
    if not exposure > 0:
        raise ValueError(f"exposure is a positive fraction of equity per leg, got {exposure}")
    if int(rebalance_every) != rebalance_every or rebalance_every < 1:
        raise ValueError(f"rebalance_every is a whole number of bars >= 1, got {rebalance_every}")
    targets = pd.DataFrame(np.nan, index=market.timestamps, columns=[long, short])
    rows = np.arange(0, market.n_bars, int(rebalance_every))
    targets.iloc[rows, 0] = exposure
    targets.iloc[rows, 1] = -exposure
    return targets
