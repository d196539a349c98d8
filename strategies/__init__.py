"""Example strategies to copy from. Each module holds one strategy with its parameters
documented, and a ``STRATEGY`` that ``backtester run --strategy NAME`` finds:

- ``hedged_pair``: long one asset, short another, notional- or beta-neutral, rebalanced on
  a schedule (``hedged_pair()``, vectorized targets) or on drift (a callback);
- ``funding_carry``: long spot, short the perpetual, delta-neutral, collecting funding;
- ``trend``: trend following with leverage on several symbols (vectorized);
- ``margin_aware``: a leveraged book that de-levers when the margin ratio climbs and tops
  up isolated margin near liquidation (a callback);
- ``grid``: a mean-reversion grid around an anchor price (a callback).
"""

from .hedged_pair import hedged_pair

__all__ = ["hedged_pair"]
