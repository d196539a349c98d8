"""Grid (mean reversion): buy each step the price falls below an anchor, sell each step above.

Grid lines sit every ``spacing`` (a fraction of the anchor price) above and below the
anchor. At each close the strategy finds the line the price has crossed: ``k`` lines
above the anchor means a short of ``k x size`` (fraction of equity), ``k`` below a long
of the same size, at most ``levels`` lines deep. When the price runs ``levels + 2``
lines beyond the anchor, the grid gives up on mean reversion there: it moves the
anchor to the price and starts flat again (``recenter``). The anchor lives in the
callback's own memory, which is why this is a callback: where the grid is depends
on the path the price took.
"""

from __future__ import annotations

from numba import njit

from backtester.data.market import Market
from backtester.strategy import Callback, Plan, StrategyDef, order_target

SYMBOL, SPACING, LEVELS, SIZE, RECENTER = range(5)  # params[...]
ANCHOR, LEVEL = 0, 1  # memory[ANCHOR] = the anchor price (0: not set), memory[LEVEL]


@njit
def grid_level(price, anchor, spacing, levels):
    """Signed number of grid lines between ``anchor`` and ``price`` (towards zero), capped."""
    k = (price - anchor) / (anchor * spacing)
    k = float(int(k))  # towards zero: a line counts once it is crossed
    return max(-levels, min(levels, k)), abs(k) >= levels + 2


@njit
def grid_callback(t, ctx, orders, params):
    """Hold ``-level x size`` of equity, ``level`` the grid line the close has crossed."""
    i = int(params[SYMBOL])
    price = ctx.close[t, i]
    if price != price:
        return False
    if ctx.memory[ANCHOR] == 0.0:
        ctx.memory[ANCHOR] = price
        ctx.memory[LEVEL] = 0.0
        return False
    level, escaped = grid_level(price, ctx.memory[ANCHOR], params[SPACING], params[LEVELS])
    if escaped and params[RECENTER] > 0.0:
        ctx.memory[ANCHOR] = price
        level = 0.0
    if level == ctx.memory[LEVEL]:
        return False
    ctx.memory[LEVEL] = level
    order_target(orders, i, -level * params[SIZE])
    return True


def grid(
    market: Market,
    symbol: str = "",
    spacing: float = 0.02,
    levels: int = 5,
    size: float = 0.3,
    recenter: bool = True,
    leverage: float = 5.0,
) -> Plan:
    """Grid on one symbol: long below the anchor, short above, one step per grid line.

    - ``symbol``: the traded symbol (default: the market's first).
    - ``spacing``: distance between grid lines, a fraction of the anchor (0.02 = 2%).
    - ``levels``: the deepest line traded; the position is at most ``levels x size``.
    - ``size``: the position added per line, a fraction of equity.
    - ``recenter``: move the anchor to the price when it runs ``levels + 2`` lines away.
    - ``leverage``: the position's leverage.

    Example:
        >>> from backtester import load_market, run
        >>> from strategies.grid import grid
        >>> market = load_market()
        >>> result = run(market, grid(market, spacing=0.03))
        >>> result.summary()["fills"] > 0
        True
    """
    symbol = symbol or market.symbols[0]
    if not 0 < spacing < 1:
        raise ValueError(f"spacing is a fraction of the price in (0, 1), got {spacing}")
    if int(levels) != levels or levels < 1:
        raise ValueError(f"levels is a whole number >= 1, got {levels}")
    if not size > 0:
        raise ValueError(f"size is a positive fraction of equity per line, got {size}")
    params = {"symbol": market.symbol_index(symbol), "spacing": spacing, "levels": levels,
              "size": size, "recenter": float(recenter)}
    return Plan(Callback(grid_callback, params=params, memory=2, name="grid"),
                {"target_kind": "equity", "leverage": leverage})


STRATEGY = StrategyDef("grid", grid)
