"""Margin-aware leverage: a leveraged book that watches its own margin and acts before the
liquidation engine does.

The book: a fixed fraction of equity per symbol (default: long BTC 1x, short ETH 1x, a
hedged pair, at 20x leverage: thin margins on a moderate book), rebalanced back to it
every ``rebalance_every`` bars. Two
guards, one per margin mode, checked at every close:

- **cross**: when the account's margin ratio (maintenance margin over margin balance;
  liquidation at 1) is above ``deleverage_at``, cut every cross position by the
  fraction ``cut``;
- **isolated**: when a position's liquidation price is nearer than ``topup_below``
  (fraction of the mark), add margin from the available balance to push it
  ``topup_to`` away; if the balance cannot pay for that, cut the position instead.

After a cut, scheduled rebalances wait ``cooldown`` bars, so the book does not lever
straight back up into a falling market. ``protect=False`` runs the same book without
the guards: the plain strategy to compare with
(``backtester run --strategy margin_aware --param protect=false``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from backtester.data.market import Market
from backtester.strategy import (
    Callback,
    Mode,
    Plan,
    StrategyDef,
    add_margin,
    available_balance,
    equity,
    isolated_margin_for,
    liquidation_distance,
    margin_ratio,
    mark_price,
    order_target,
    position,
    position_margin,
)

EVERY, DELEVERAGE_AT, CUT, COOLDOWN, TOPUP_BELOW, TOPUP_TO = range(6)  # params[...]
BOOK = 6  # params[BOOK + i]: symbol i's target, a signed fraction of equity (0: not traded)
LAST_CUT = 0  # memory[LAST_CUT] = 1 + the bar of the last cut (0: none yet)


@njit
def cut_position(t, ctx, orders, i, fraction):
    """Ask for symbol i's position to shrink by ``fraction`` (target in equity fractions)."""
    eq = equity(ctx, t)
    if eq > 0.0:
        order_target(orders, i, (1.0 - fraction) * position(ctx, i) * ctx.close[t, i] / eq)
        ctx.memory[LAST_CUT] = t + 1.0


@njit
def margin_aware_callback(t, ctx, orders, params):
    """Guard the margin (top up or cut), then rebalance the book on schedule (see module)."""
    n = ctx.close.shape[1]
    acted = False
    budget = 0.95 * available_balance(ctx)  # keep a little for fees and the open's moves
    for i in range(n):
        q = position(ctx, i)
        if q == 0.0 or ctx.mode[i] != Mode.ISOLATED:
            continue
        if liquidation_distance(ctx, i) < params[TOPUP_BELOW]:
            side = 1.0 if q > 0.0 else -1.0
            target_price = mark_price(ctx, i) * (1.0 - side * params[TOPUP_TO])
            need = isolated_margin_for(ctx, i, target_price) - position_margin(ctx, i)
            if need <= budget:
                add_margin(orders, i, need)
                budget -= need
            else:
                cut_position(t, ctx, orders, i, params[CUT])
            acted = True
    if margin_ratio(ctx, t) > params[DELEVERAGE_AT]:
        for i in range(n):
            if position(ctx, i) != 0.0 and ctx.mode[i] == Mode.CROSS:
                cut_position(t, ctx, orders, i, params[CUT])
        return True
    every = int(params[EVERY])
    cooling = ctx.memory[LAST_CUT] > 0.0 and t < ctx.memory[LAST_CUT] + params[COOLDOWN]
    if every > 0 and t % every == 0 and not cooling:
        for i in range(n):
            if params[BOOK + i] != 0.0 or position(ctx, i) != 0.0:
                order_target(orders, i, params[BOOK + i])
        acted = True
    return acted


def parse_book(market: Market, book: str) -> dict[str, float]:
    """``"BTC_USDT:1,ETH_USDT:-1"`` as {symbol: signed fraction of equity}."""
    weights = {}
    for item in filter(None, (part.strip() for part in book.split(","))):
        symbol, sep, value = item.partition(":")
        try:
            weights[symbol.strip()] = float(value) if sep else float("nan")
        except ValueError:
            weights[symbol.strip()] = float("nan")
        if not np.isfinite(weights[symbol.strip()]):
            raise ValueError(f"book entry {item!r}: write SYMBOL:FRACTION, e.g. BTC_USDT:3")
        market.symbol_index(symbol.strip())  # a clear error for an unknown symbol
    if not weights:
        raise ValueError("the book is empty: give SYMBOL:FRACTION pairs, e.g. BTC_USDT:2")
    return weights


def margin_aware(
    market: Market,
    book: str = "",
    leverage: float = 20.0,
    rebalance_every: int = 24,
    protect: bool = True,
    deleverage_at: float = 0.03,
    cut: float = 0.5,
    cooldown: int = 72,
    topup_below: float = 0.05,
    topup_to: float = 0.15,
) -> Plan:
    """Margin-aware leveraged book: de-lever on margin ratio (cross), top up (isolated).

    - ``book``: ``SYMBOL:FRACTION`` pairs, signed fractions of equity, e.g.
      ``"BTC_USDT:4"`` (default: 1x long the first symbol, 1x short the second).
    - ``leverage``: each position's leverage (initial margin = notional / leverage).
    - ``rebalance_every``: bars between rebalances back to the book.
    - ``protect``: False turns both guards off (the plain book).
    - ``deleverage_at`` / ``cut`` / ``cooldown``: when the cross margin ratio is above
      ``deleverage_at`` at a close, cut cross positions by the fraction ``cut``; no
      scheduled rebalance for ``cooldown`` bars after any cut.
    - ``topup_below`` / ``topup_to``: when an isolated position's liquidation price
      is nearer than ``topup_below`` (fraction of the mark), add margin to move it
      ``topup_to`` away, or cut the position by ``cut`` if the balance is short.

    Example:
        >>> from backtester import load_market, run
        >>> from strategies.margin_aware import margin_aware
        >>> market = load_market()
        >>> plain = run(market, margin_aware(market, protect=False), margin_mode="isolated")
        >>> guarded = run(market, margin_aware(market), margin_mode="isolated")
        >>> plain.summary()["liquidations"] > 0 == guarded.summary()["liquidations"]
        True
    """
    if not book:
        first, second = market.symbols[:2] if market.n_symbols > 1 else (market.symbols[0], "")
        book = f"{first}:1" + (f",{second}:-1" if second else "")
    weights = parse_book(market, book)
    if not 0 < cut <= 1:
        raise ValueError(f"cut is the fraction of a position to sell, in (0, 1], got {cut}")
    params = {"rebalance_every": rebalance_every,
              "deleverage_at": deleverage_at if protect else np.inf, "cut": cut,
              "cooldown": cooldown, "topup_below": topup_below if protect else 0.0,
              "topup_to": topup_to}
    params.update({f"book[{s}]": weights.get(s, 0.0) for s in market.symbols})
    name = "margin_aware" if protect else "margin_aware (unprotected)"
    return Plan(Callback(margin_aware_callback, params=params, memory=1, name=name),
                {"target_kind": "equity", "leverage": leverage})


STRATEGY = StrategyDef("margin_aware", margin_aware)
