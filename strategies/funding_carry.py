"""Funding carry: long spot, short the perpetual, the same number of coins, to collect funding.

The two legs cancel each other's price risk (net delta zero); what is left is the
funding the short perpetual receives while funding is positive (longs pay shorts).
The legs are not alike: the spot leg is paid in full, pays no funding and cannot be
liquidated, while the short perpetual is margined. In a rally the perpetual's loss
drains its margin while the spot gain sits in the spot holding, out of reach of the
futures account: so the strategy watches the perpetual's liquidation distance and
either tops up its isolated margin or resizes both legs (selling spot realizes its
gain into the wallet). A callback, since all of this depends on the account.

Data: the perpetual (bars, mark, funding) and a spot series of the same asset;
``carry_market()`` loads both (the embedded data has ``data/spot/BTC_USDT-1h.parquet``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numba import njit

from backtester.data import embedded_data_dir, load_market
from backtester.data.market import Market
from backtester.strategy import (
    Callback,
    Mode,
    Plan,
    StrategyDef,
    Sym,
    add_margin,
    available_balance,
    equity,
    isolated_margin_for,
    liquidation_distance,
    mark_price,
    order_target,
    position,
    position_margin,
)


def spot_symbol(symbol: str) -> str:
    """The market column of ``symbol``'s spot series, e.g. ``BTC_USDT_SPOT``."""
    return f"{symbol}_SPOT"


def carry_market(path=None, symbols=None, start=None, end=None, timeframe=None, *,
                 symbol: str = "BTC_USDT", spot_data: str | None = None, **_: object) -> Market:
    """The perpetual ``symbol`` and its spot series as one Market (columns ``symbol`` and
    ``symbol_SPOT``).

    ``path``: the perpetual's data directory (default: the embedded data);
    ``spot_data``: the directory of the spot bars, same file name (default:
    ``<path>/spot``). Bars are aligned on the union of both indexes: a spot bar
    missing during an outage is NaN there, and the spot leg cannot trade then.

    Example:
        >>> from strategies.funding_carry import carry_market
        >>> carry_market().symbols
        ('BTC_USDT', 'BTC_USDT_SPOT')
    """
    if symbols is not None and list(symbols) not in ([symbol], [symbol, spot_symbol(symbol)]):
        raise ValueError(f"funding_carry trades {symbol} and its spot series; choose the asset "
                         f"with --param symbol=..., not --symbols")
    perp = load_market(path, symbols=[symbol], timeframe=timeframe, start=start, end=end)
    source = perp.sources[symbol]
    spot_dir = Path(spot_data) if spot_data else Path(path or embedded_data_dir()) / "spot"
    spot_file = spot_dir / Path(source["ohlc"]).name
    if not spot_file.is_file():
        raise FileNotFoundError(
            f"funding_carry needs a spot series of {symbol}: no {spot_file}; pass the spot "
            "data directory with --param spot_data=DIR (e.g. shared/data/binance_spot)")
    files = {symbol: source, spot_symbol(symbol): {"ohlc": spot_file}}
    return load_market(files=files, start=start, end=end, timeframe=timeframe)


def trailing_funding(market: Market, symbol: str, prints: int) -> np.ndarray:
    """Per bar, the mean of ``symbol``'s last ``prints`` funding rates settled at or before
    that bar's open (NaN before the first): what the strategy knows at each close."""
    rate = market.funding_rate[:, market.symbol_index(symbol)]
    at = np.flatnonzero(~np.isnan(rate))
    out = np.full(market.n_bars, np.nan)
    if at.size == 0:
        return out
    c = np.cumsum(rate[at])
    k = np.arange(at.size)
    lo = np.maximum(k - prints, -1)
    means = (c - np.where(lo >= 0, c[np.maximum(lo, 0)], 0.0)) / (k - lo)
    out[at] = means
    filled = np.maximum.accumulate(np.where(~np.isnan(out), np.arange(market.n_bars), -1))
    ok = filled >= 0
    out[ok] = out[filled[ok]]
    return out


# --- the callback -----------------------------------------------------------------------------
PERP, SPOT_LEG, ALLOCATION, ENTER, EXIT, BAND, EVERY, MIN_DISTANCE, TOPUP_TO = range(9)
FUNDING = 0  # series[FUNDING, t, perp] = trailing mean funding rate known at close t


@njit
def carry_callback(t, ctx, orders, params):
    """Hold ``units`` of spot long and of the perpetual short while funding pays.

    Enter when the trailing funding rate is above ``enter``, leave below ``exit``.
    ``units = allocation x equity / (spot price + perp price / leverage)``: the spot
    cost plus the perpetual's initial margin use ``allocation`` of equity. While
    held, in this order of priority:

    - the perpetual is within ``min_distance`` of liquidation: an isolated one gets
      margin to push it ``topup_to`` away if the balance allows; otherwise both legs
      are halved (reductions always fill, and selling spot frees cash);
    - every ``rebalance_every`` bars both legs are resized to ``units``;
    - when the legs differ by more than ``band``, the larger one is cut to match.
    """
    perp = int(params[PERP])
    spot = int(params[SPOT_LEG])
    ps = ctx.close[t, spot]
    pp = ctx.close[t, perp]
    if ps != ps or pp != pp:
        return False
    qs = position(ctx, spot)
    qp = position(ctx, perp)
    rate = ctx.series[FUNDING, t, perp]
    holding = qs > 0.0
    wanted = rate > params[ENTER] or (holding and rate > params[EXIT])
    if not wanted:
        if holding or qp != 0.0:
            order_target(orders, spot, 0.0)
            order_target(orders, perp, 0.0)
            return True
        return False
    units = params[ALLOCATION] * equity(ctx, t) / (ps + pp / ctx.sym[Sym.LEVERAGE, perp])
    if not holding:
        order_target(orders, spot, units)
        order_target(orders, perp, -units)
        return True
    if qp < 0.0 and liquidation_distance(ctx, perp) < params[MIN_DISTANCE]:
        if ctx.mode[perp] == Mode.ISOLATED:
            # a short is liquidated above the mark: the margin that moves that topup_to above
            target_price = mark_price(ctx, perp) * (1.0 + params[TOPUP_TO])
            need = isolated_margin_for(ctx, perp, target_price) - position_margin(ctx, perp)
            if 0.0 < need <= available_balance(ctx):
                add_margin(orders, perp, need)
                return True
        order_target(orders, spot, 0.5 * qs)
        order_target(orders, perp, 0.5 * qp)
        return True
    every = int(params[EVERY])
    if every > 0 and t % every == 0:
        order_target(orders, spot, units)
        order_target(orders, perp, -units)
        return True
    if abs(qs + qp) > params[BAND] * qs:
        if qs > -qp:
            order_target(orders, spot, -qp)
        else:
            order_target(orders, perp, -qs)
        return True
    return False


def funding_carry(
    market: Market,
    symbol: str = "BTC_USDT",
    allocation: float = 0.9,
    leverage: float = 2.0,
    enter: float = 0.00005,
    exit: float = 0.0,
    funding_window: int = 9,
    band: float = 0.01,
    rebalance_every: int = 168,
    min_distance: float = 0.15,
    topup_to: float = 0.3,
    spot_data: str | None = None,
) -> Plan:
    """Funding carry: long spot, short the perpetual of one asset, delta-neutral.

    - ``symbol``: the perpetual; its spot series is the column ``symbol_SPOT``
      (``carry_market`` loads both; ``spot_data`` is read by it).
    - ``allocation``: the fraction of equity the two legs use (spot cost plus the
      perpetual's initial margin).
    - ``leverage``: the perpetual's leverage (the spot leg has none).
    - ``enter`` / ``exit``: hold the carry while the mean of the last
      ``funding_window`` funding rates is above ``enter`` (and, once in, above
      ``exit``); rates are per 8 h (0.0001 = 0.01%).
    - ``band``: re-match the legs (cutting the larger) when they differ by more
      than this fraction.
    - ``rebalance_every``: bars between resizings to ``allocation`` of equity.
    - ``min_distance`` / ``topup_to``: when the perpetual is within
      ``min_distance`` of liquidation (fraction of the mark), add isolated margin
      to move it ``topup_to`` away, or, if that is not affordable or the margin is
      cross, halve both legs.

    Example:
        >>> from backtester import run
        >>> from strategies.funding_carry import carry_market, funding_carry
        >>> market = carry_market()
        >>> result = run(market, funding_carry(market))
        >>> result.summary()["funding_paid"] < 0     # received
        True
    """
    perp_i = market.symbol_index(symbol)
    spot = spot_symbol(symbol)
    if spot not in market.symbols:
        raise ValueError(f"funding_carry needs {symbol}'s spot series as column {spot}; load "
                         f"the market with strategies.funding_carry.carry_market()")
    for name, value in (("allocation", allocation), ("leverage", leverage)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")
    if not allocation <= 1:
        raise ValueError(f"allocation is the fraction of equity used, at most 1, got {allocation}")
    series = np.zeros((1, market.n_bars, market.n_symbols))
    series[FUNDING, :, perp_i] = trailing_funding(market, symbol, int(funding_window))
    params = {"perp": perp_i, "spot": market.symbol_index(spot), "allocation": allocation,
              "enter": enter, "exit": exit, "band": band, "rebalance_every": rebalance_every,
              "min_distance": min_distance, "topup_to": topup_to}
    return Plan(Callback(carry_callback, params=params, series=series, name="funding_carry"),
                {"target_kind": "units", "instruments": {spot: "spot"}, "leverage": leverage})


STRATEGY = StrategyDef("funding_carry", funding_carry, load_market=carry_market)
