"""Return, risk and liquidation statistics of an equity curve.

Plain functions on pandas/numpy series, so that they can be checked by hand
on a few numbers. Annualisation uses the bar frequency (crypto trades every
day: 8,760 hourly bars a year).
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def total_return(equity: pd.Series) -> float:
    """Final equity over initial equity, minus one."""
    if len(equity) == 0 or equity.iloc[0] == 0:
        return float("nan")
    return float(equity.iloc[-1] / equity.iloc[0] - 1.0)


def bar_returns(equity: pd.Series) -> pd.Series:
    """Simple returns bar to bar; a bar after equity reached zero has return 0 (nothing left)."""
    values = equity.to_numpy(dtype=float)
    prev = values[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, values[1:] / prev - 1.0, 0.0)
    return pd.Series(r, index=equity.index[1:])


def drawdown(equity: pd.Series) -> pd.Series:
    """Drawdown at each bar: equity over its running peak, minus one (<= 0)."""
    peak = equity.cummax()
    with np.errstate(divide="ignore", invalid="ignore"):
        dd = np.where(peak > 0, equity / peak - 1.0, 0.0)
    return pd.Series(dd, index=equity.index)


def max_drawdown(equity: pd.Series) -> float:
    """The largest peak-to-trough fall, as a negative fraction (-0.25 = a 25% fall)."""
    if len(equity) == 0:
        return float("nan")
    return float(drawdown(equity).min())


def sharpe_ratio(equity: pd.Series, bars_per_year: float) -> float:
    """Annualised Sharpe ratio of bar returns (zero risk-free rate): mean / std * sqrt(bars/yr)."""
    r = bar_returns(equity)
    if len(r) < 2:
        return float("nan")
    std = r.std(ddof=1)
    if not np.isfinite(std) or std == 0:
        return float("nan")
    return float(r.mean() / std * np.sqrt(bars_per_year))
