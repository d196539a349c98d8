"""Trend following with leverage on several symbols: vectorized targets.

Each symbol is long when its fast moving average is above its slow one and short
below, sized by inverse volatility so that calmer symbols carry more notional; the
book's gross exposure is ``exposure`` times equity, rebalanced every
``rebalance_every`` bars. Everything is computed from closes up to each decision bar
(exponential averages and a trailing standard deviation): no look-ahead.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from backtester.data.market import Market
from backtester.strategy import Plan, StrategyDef


def trend_signals(market: Market, symbols: list[str], fast: int, slow: int,
                  vol_window: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(direction, volatility) per bar: the sign of fast EMA - slow EMA (NaN while the slow
    average has fewer than ``slow`` bars), and the trailing std of hourly log returns."""
    close = market.frame("close")[symbols]
    fast_ma = close.ewm(span=fast, min_periods=fast).mean()
    slow_ma = close.ewm(span=slow, min_periods=slow).mean()
    direction = np.sign(fast_ma - slow_ma)
    vol = np.log(close).diff().rolling(vol_window, min_periods=max(2, vol_window // 2)).std()
    return direction, vol


def trend_targets(
    market: Market,
    symbols: str = "",
    fast: int = 48,
    slow: int = 240,
    vol_window: int = 240,
    exposure: float = 2.0,
    rebalance_every: int = 24,
) -> pd.DataFrame:
    """Targets as signed fractions of equity (``target_kind="equity"``); see the module.

    Example:
        >>> from backtester import load_market
        >>> from strategies.trend import trend_targets
        >>> targets = trend_targets(load_market(), exposure=2.0)
        >>> bool((targets.abs().sum(axis=1).dropna().round(9) <= 2.0).all())
        True
    """
    chosen = [s.strip() for s in symbols.split(",") if s.strip()] or list(market.symbols)
    for s in chosen:
        market.symbol_index(s)  # a clear error for an unknown symbol
    if not (0 < fast < slow):
        raise ValueError(f"the fast average must be shorter than the slow one: fast={fast}, "
                         f"slow={slow}")
    if not exposure > 0:
        raise ValueError(f"exposure is the gross notional as a multiple of equity, got "
                         f"{exposure}")
    if int(rebalance_every) != rebalance_every or rebalance_every < 1:
        raise ValueError(f"rebalance_every is a whole number of bars >= 1, got {rebalance_every}")
    direction, vol = trend_signals(market, chosen, fast, slow, vol_window)
    inverse = 1.0 / vol.where(vol > 0)
    weights = direction * inverse
    weights = weights.div(weights.abs().sum(axis=1), axis=0) * exposure
    targets = pd.DataFrame(np.nan, index=market.timestamps, columns=chosen)
    rows = np.arange(0, market.n_bars, int(rebalance_every))
    targets.iloc[rows] = weights.iloc[rows].to_numpy()
    return targets


def trend_following(
    market: Market,
    symbols: str = "",
    fast: int = 48,
    slow: int = 240,
    vol_window: int = 240,
    exposure: float = 2.0,
    rebalance_every: int = 24,
    leverage: float = 5.0,
) -> Plan:
    """Trend following on several symbols: long above the slow average, short below.

    - ``symbols``: comma-separated symbols (default: every symbol of the market).
    - ``fast`` / ``slow``: spans (bars) of the two exponential moving averages.
    - ``vol_window``: bars of the trailing volatility that sizes each symbol.
    - ``exposure``: gross notional of the book as a multiple of equity.
    - ``rebalance_every``: bars between rebalances.
    - ``leverage``: each position's leverage (initial margin = notional / leverage).

    Example:
        >>> from backtester import load_market, run
        >>> from strategies.trend import trend_following
        >>> market = load_market()
        >>> result = run(market, trend_following(market))
        >>> result.summary()["fills"] > 0
        True
    """
    targets = trend_targets(market, symbols, fast, slow, vol_window, exposure, rebalance_every)
    return Plan(targets, {"target_kind": "equity", "leverage": leverage})


STRATEGY = StrategyDef("trend", trend_following)
