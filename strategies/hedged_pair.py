"""Hedged pair: long one asset, short another, notional- or beta-neutral.

Two forms of the same strategy:

- ``hedged_pair(market, ...)``: vectorized targets, rebalanced on a schedule;
- ``pair_callback`` (``STRATEGY``, ``backtester run --strategy hedged_pair``): the
  same rebalancing as a compiled callback, which can also rebalance on drift, when
  a leg's notional strays from its target by more than a band. Drift depends on
  the positions actually held, which targets computed in advance cannot see.

With ``drift_band=0`` the two give identical results (``tests/test_callbacks.py``).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
from numba import njit

from backtester.data.market import Market
from backtester.strategy import Callback, Plan, StrategyDef, equity, order_target, position

HEDGES = ("notional", "beta")


def hedge_ratios(market: Market, long: str, short: str, window: int = 720) -> np.ndarray:
    """Per bar, the short leg's notional per unit of long notional that neutralises beta.

    The beta of the long asset's hourly log returns on the short asset's, over the
    ``window`` bars up to and including each close (so the decision at close t
    uses nothing later); 1.0 (notional-neutral) until ``window // 4`` bars exist.
    """
    a = np.log(market.frame("close")[long]).diff()
    b = np.log(market.frame("close")[short]).diff()
    minimum = max(2, window // 4)
    beta = a.rolling(window, min_periods=minimum).cov(b) / b.rolling(
        window, min_periods=minimum).var()
    return beta.fillna(1.0).to_numpy()


def _legs(market: Market, long: str | None, short: str | None) -> tuple[str, str]:
    if market.n_symbols < 2 and (long is None or short is None):
        raise ValueError("a hedged pair needs two symbols; the market holds "
                         f"{', '.join(market.symbols)}")
    long = long or market.symbols[0]
    short = short or market.symbols[1]
    for symbol in (long, short):
        market.symbol_index(symbol)  # a clear error for an unknown symbol
    if long == short:
        raise ValueError(f"long and short must be different symbols, both are {long!r}")
    return long, short


def _check(exposure: float, rebalance_every: int, hedge: str) -> None:
    if not (isinstance(exposure, int | float | np.number) and 0 < exposure < np.inf):
        raise ValueError(f"exposure={exposure!r}: must be a positive fraction of equity per leg "
                         "(1.0 = one times equity)")
    if (not isinstance(rebalance_every, int | float | np.number)
            or int(rebalance_every) != rebalance_every or rebalance_every < 0):
        raise ValueError(f"rebalance_every={rebalance_every!r}: must be a whole number of bars "
                         ">= 1 (0: only on drift)")
    if hedge not in HEDGES:
        raise ValueError(f"hedge must be one of {', '.join(HEDGES)}, got {hedge!r}")


def hedged_pair(
    market: Market,
    long: str | None = None,
    short: str | None = None,
    exposure: float = 1.0,
    rebalance_every: int = 24,
    *,
    hedge: str = "notional",
    beta_window: int = 720,
) -> pd.DataFrame:
    """Targets of a hedged pair, as fractions of equity (``target_kind="equity"``).

    - ``long`` / ``short``: the symbols of the two legs (default: the market's
      first and second symbol).
    - ``exposure``: the long leg's notional as a fraction of account equity (1.0 =
      one times equity long). How much margin that takes depends on the leverage.
    - ``rebalance_every``: bars between rebalances back to the target notionals
      (24 = daily on hourly bars); in between the legs drift with prices.
    - ``hedge``: ``"notional"`` (the short leg's notional equals the long's) or
      ``"beta"`` (the short leg is ``beta x exposure``, with the trailing beta of
      ``hedge_ratios`` over ``beta_window`` bars).

    Example:
        >>> from backtester import load_market, run
        >>> from strategies import hedged_pair
        >>> market = load_market()
        >>> targets = hedged_pair(market, exposure=2.0, rebalance_every=24)
        >>> result = run(market, targets, target_kind="equity", leverage=10)
        >>> sorted(targets.columns)
        ['BTC_USDT', 'ETH_USDT']
    """
    long, short = _legs(market, long, short)
    _check(exposure, rebalance_every, hedge)
    if rebalance_every < 1:
        raise ValueError(f"rebalance_every={rebalance_every!r}: must be a whole number of bars "
                         ">= 1")
    values = np.full((market.n_bars, 2), np.nan)
    rows = slice(0, None, int(rebalance_every))
    ratio = hedge_ratios(market, long, short, beta_window) if hedge == "beta" else np.ones(
        market.n_bars)
    values[rows, 0] = exposure
    values[rows, 1] = -exposure * ratio[rows]
    # (filled as an array, then framed: a sweep calls this once per parameter set; the
    # columns' Index made once, as pandas makes a list of names one at 20 us a call)
    return pd.DataFrame(values, index=market.timestamps, columns=_columns(long, short),
                        copy=False)


@lru_cache(maxsize=64)
def _columns(long: str, short: str) -> pd.Index:
    return pd.Index([long, short])


# --- the callback: params and series layout ---------------------------------------------------
LONG, SHORT, EXPOSURE, EVERY, BAND = range(5)  # params[...]
RATIO = 0  # series[RATIO, t, short] = the short leg's hedge ratio at close t


@njit
def pair_callback(t, ctx, orders, params):
    """Rebalance both legs to their targets on schedule, or when a leg drifts too far.

    Targets, as fractions of equity: long ``exposure``, short ``-exposure x ratio``.
    Drift: a leg's notional at the close differs from its target by more than
    ``band x exposure x equity``.
    """
    long = int(params[LONG])
    short = int(params[SHORT])
    exposure = params[EXPOSURE]
    every = int(params[EVERY])
    band = params[BAND]
    ratio = ctx.series[RATIO, t, short]
    scheduled = every > 0 and t % every == 0
    drifted = False
    if band > 0.0 and not scheduled:
        eq = equity(ctx, t)
        if eq <= 0.0:
            return False
        off_long = position(ctx, long) * ctx.close[t, long] / eq - exposure
        off_short = position(ctx, short) * ctx.close[t, short] / eq + exposure * ratio
        drifted = max(abs(off_long), abs(off_short)) > band * exposure
    if not (scheduled or drifted):
        return False
    order_target(orders, long, exposure)
    order_target(orders, short, -exposure * ratio)
    return True


def hedged_pair_strategy(
    market: Market,
    long: str | None = None,
    short: str | None = None,
    exposure: float = 1.0,
    rebalance_every: int = 24,
    drift_band: float = 0.0,
    hedge: str = "notional",
    beta_window: int = 720,
) -> Plan:
    """Hedged pair (long one symbol, short another), rebalanced on a schedule and/or on drift.

    Parameters as ``hedged_pair``, plus ``drift_band``: also rebalance when a leg's
    notional strays from its target by more than this fraction of ``exposure`` (0 =
    schedule only; ``rebalance_every=0`` = drift only).

    Example:
        >>> from backtester import load_market, run
        >>> from strategies.hedged_pair import hedged_pair_strategy
        >>> market = load_market()
        >>> plan = hedged_pair_strategy(market, exposure=2, rebalance_every=0, drift_band=0.1)
        >>> run(market, plan, leverage=10).summary()["liquidations"]
        0
    """
    long, short = _legs(market, long, short)
    _check(exposure, rebalance_every, hedge)
    if not drift_band >= 0:
        raise ValueError(f"drift_band is a fraction >= 0 of the exposure, got {drift_band}")
    if rebalance_every == 0 and drift_band == 0:
        raise ValueError("rebalance_every=0 and drift_band=0 would never rebalance: set one")
    series = np.ones((1, market.n_bars, market.n_symbols))
    if hedge == "beta":
        series[RATIO, :, market.symbol_index(short)] = hedge_ratios(market, long, short,
                                                                    beta_window)
    params = {"long": market.symbol_index(long), "short": market.symbol_index(short),
              "exposure": exposure, "rebalance_every": rebalance_every, "drift_band": drift_band}
    callback = Callback(pair_callback, params=params, series=series, name="hedged_pair")
    return Plan(callback, {"target_kind": "equity"})


STRATEGY = StrategyDef("hedged_pair", hedged_pair_strategy)
