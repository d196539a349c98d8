"""Return, risk and liquidation statistics of an equity curve and of a whole run.

Plain functions on pandas/numpy series, so that they can be checked by hand
on a few numbers. Annualisation uses the bar frequency (crypto trades every
day: 8,760 hourly bars a year). The run-level functions at the end
(``position_pnl``, ``position_stats``, ``run_metrics``) read a ``Result``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# --- return and risk of an equity curve ---------------------------------------------------


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


def cagr(equity: pd.Series, bars_per_year: float) -> float:
    """Compound annual growth rate: ``(final / initial) ** (1 / years) - 1``.

    The curve spans ``len(equity) - 1`` bars (its first point is the starting
    equity). An account that ended with nothing has a CAGR of -100%.

    Example:
        >>> round(cagr(pd.Series([100.0, 110.0, 121.0]), bars_per_year=2), 4)  # a year, +21%
        0.21
    """
    if len(equity) < 2 or not equity.iloc[0] > 0:
        return float("nan")
    growth = equity.iloc[-1] / equity.iloc[0]
    if growth <= 0:
        return -1.0
    years = (len(equity) - 1) / bars_per_year
    return float(growth ** (1.0 / years) - 1.0)


def volatility(equity: pd.Series, bars_per_year: float) -> float:
    """Annualised standard deviation of bar returns: ``std(r) * sqrt(bars per year)``."""
    r = bar_returns(equity)
    if len(r) < 2:
        return float("nan")
    return float(r.std(ddof=1) * np.sqrt(bars_per_year))


def sortino_ratio(equity: pd.Series, bars_per_year: float) -> float:
    """Annualised Sortino ratio: mean return over downside deviation, times sqrt(bars/yr).

    The downside deviation is ``sqrt(mean(min(r, 0)^2))`` over every bar (target
    return 0), so only falls count as risk. NaN when no bar lost money.
    """
    r = bar_returns(equity).to_numpy()
    if len(r) < 2:
        return float("nan")
    downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2))
    if downside == 0:
        return float("nan")
    return float(r.mean() / downside * np.sqrt(bars_per_year))


def calmar_ratio(equity: pd.Series, bars_per_year: float) -> float:
    """CAGR over the size of the maximum drawdown (NaN without a drawdown)."""
    mdd = max_drawdown(equity)
    if not mdd < 0:
        return float("nan")
    return float(cagr(equity, bars_per_year) / -mdd)


def max_drawdown_duration(equity: pd.Series) -> int:
    """The longest time under water, in bars: from a peak to the first bar back at that peak.

    A drawdown that has not recovered by the end lasts until the last bar.
    For ``[100, 90, 95, 100, 80]`` it is 3 (peak at bar 0, back at bar 3).

    Example:
        >>> max_drawdown_duration(pd.Series([100.0, 90, 95, 100, 80]))
        3
    """
    values = equity.to_numpy(dtype=float)
    if len(values) == 0:
        return 0
    peak = np.maximum.accumulate(values)
    at_peak = values >= peak
    # the bar of the last peak at or before each bar; the stretch from it to the bar is
    # under water unless the bar is itself a peak
    last_peak = np.maximum.accumulate(np.where(at_peak, np.arange(len(values)), 0))
    below = ~at_peak
    if not below.any():
        return 0
    length = np.arange(len(values)) - last_peak  # bars since that peak
    # a recovery bar ends the stretch one bar after the last bar under water
    ends = np.flatnonzero(below & np.append(~below[1:], True))
    durations = length[ends] + np.where(ends + 1 < len(values), 1, 0)
    return int(durations.max())


# --- how much the strategy used the market --------------------------------------------------


def exposure_time(gross_exposure: pd.Series) -> float:
    """Fraction of bars that closed with any open position (gross exposure above zero)."""
    if len(gross_exposure) == 0:
        return float("nan")
    return float((gross_exposure.to_numpy() > 0).mean())


def mean_gross_leverage(gross_exposure: pd.Series, equity: pd.Series) -> float:
    """Mean of gross exposure over equity per bar (bars with no equity left are skipped)."""
    gross = gross_exposure.to_numpy(dtype=float)
    eq = equity.to_numpy(dtype=float)
    alive = eq > 0
    if not alive.any():
        return float("nan")
    return float(np.mean(gross[alive] / eq[alive]))


def turnover(traded_notional: float, equity: pd.Series, bars_per_year: float) -> float:
    """Traded notional over mean equity, per year: 12.0 = the book traded 12 times a year."""
    mean_equity = float(equity.mean()) if len(equity) else float("nan")
    if not mean_equity > 0:
        return float("nan")
    return float(traded_notional / mean_equity * bars_per_year / len(equity))


# --- liquidation risk ----------------------------------------------------------------------


def distance_to_liquidation(
    positions: pd.DataFrame, liquidation_prices: pd.DataFrame, mark: pd.DataFrame
) -> pd.Series:
    """Per bar, how far the nearest open position's mark is from its liquidation price.

    ``|mark - liquidation price| / mark``, the smallest over open positions
    (0.08 = an 8% move against it would liquidate it); NaN on bars with no open
    position. A long that no positive price liquidates (liquidation price <= 0)
    counts as 1.0, the most a price can fall. Cross positions use the price at
    which that position would go with the others frozen, as ``Result.liquidation_prices``.
    """
    q = positions.to_numpy(dtype=float)
    lp = liquidation_prices.to_numpy(dtype=float)
    m = mark.to_numpy(dtype=float)
    open_ = (q != 0) & np.isfinite(lp) & (m > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        dist = np.abs(m - lp) / m
    dist = np.where((q > 0) & (lp <= 0), 1.0, dist)
    dist = np.where(open_, dist, np.inf)
    nearest = dist.min(axis=1) if dist.shape[1] else np.full(len(dist), np.inf)
    return pd.Series(np.where(np.isfinite(nearest), nearest, np.nan), index=positions.index,
                     name="distance_to_liquidation")


# --- a whole run --------------------------------------------------------------------------


def _marks(result) -> pd.DataFrame:
    """Mark at each bar's close, carried forward over bars a symbol has no price (as the engine)."""
    return result.market.frame("mark_close").ffill()


def covered_shortfall(liquidations: pd.DataFrame) -> np.ndarray:
    """The shortfall of each liquidation that its realized PnL includes: the deficit the
    insurance fund paid of a close at the market. A position settled at its bankruptcy
    price (Bybit) has its fill, and so its realized PnL, at that price already: nothing
    to add back."""
    return np.where(liquidations["settled_at_bankruptcy"].to_numpy(dtype=bool), 0.0,
                    liquidations["shortfall"].to_numpy(dtype=float))


def position_pnl(result) -> pd.DataFrame:
    """Cumulative PnL of each symbol at each bar's close, net of fees and funding.

    Cash-flow form, which needs no entry price: the position's value at mark,
    minus what its fills cost, minus fees (liquidation fees included) and funding
    paid, plus any bankruptcy shortfall the insurance fund paid of a close at the
    market (``covered_shortfall``). Summed over
    symbols it is the change in equity since the start.
    """
    q = result.positions  # (recorded, or rebuilt from the fills)
    index = q.index
    symbols = list(q.columns)

    def per_bar(frame: pd.DataFrame, values: np.ndarray) -> pd.DataFrame:
        out = np.zeros((len(index), len(symbols)))
        if len(frame):
            cols = pd.Index(symbols).get_indexer(frame["symbol"])
            np.add.at(out, (frame["bar"].to_numpy(), cols), values)
        return pd.DataFrame(out.cumsum(axis=0), index=index, columns=symbols)

    fills, funding, liq = result.fills, result.funding, result.liquidations
    cost = per_bar(fills, fills["qty"].to_numpy() * fills["price"].to_numpy())
    fees = per_bar(fills, fills["fee"].to_numpy())
    paid = per_bar(funding, funding["payment"].to_numpy())
    shortfall = per_bar(liq, covered_shortfall(liq))
    value = (q * _marks(result)).where(q != 0, 0.0)
    return value - cost - fees - paid + shortfall


def position_stats(result) -> pd.DataFrame:
    """Per-symbol statistics of a run, one row per symbol.

    Columns: ``trades`` (strategy fills), ``traded_notional``, ``realized_pnl``
    (liquidations included), ``unrealized_pnl`` (at the last close), ``fees``
    (trading), ``liquidation_fees``, ``funding`` (paid; negative = received),
    ``liquidations`` (positions lost), ``margin_lost`` (to liquidation),
    ``net_pnl`` (all of it; the column sums to the change in equity) and
    ``time_in_market`` (fraction of bars closed with a position).

    Example:
        >>> from backtester import load_market, run
        >>> from strategies import hedged_pair
        >>> m = load_market()
        >>> r = run(m, hedged_pair(m), target_kind="equity", leverage=10)
        >>> list(position_stats(r).index)
        ['BTC_USDT', 'ETH_USDT']
    """
    symbols = list(result.market.symbols)
    fills, funding, liq = result.fills, result.funding, result.liquidations
    forced = fills["reason"].isin(("liquidation", "adl"))  # the venue's closes, not trades

    def by_symbol(values: pd.Series) -> pd.Series:
        return values.groupby(fills["symbol"]).sum().reindex(symbols, fill_value=0.0)

    notional = (fills["qty"] * fills["price"]).abs()
    stats = pd.DataFrame(index=pd.Index(symbols, name="symbol"))
    stats["trades"] = by_symbol((~forced).astype(int))
    stats["traded_notional"] = by_symbol(notional)
    stats["realized_pnl"] = by_symbol(fills["realized_pnl"])
    stats["fees"] = by_symbol(fills["fee"].where(~forced, 0.0))
    stats["liquidation_fees"] = by_symbol(fills["fee"].where(forced, 0.0))
    stats["funding"] = funding.groupby("symbol")["payment"].sum().reindex(symbols, fill_value=0.0)
    stats["liquidations"] = liq.groupby("symbol").size().reindex(symbols, fill_value=0)
    stats["margin_lost"] = liq.groupby("symbol")["margin_lost"].sum().reindex(
        symbols, fill_value=0.0)
    shortfall = pd.Series(covered_shortfall(liq), index=liq.index).groupby(
        liq["symbol"]).sum().reindex(symbols, fill_value=0.0)
    if result.positions is not None and len(result.positions):
        net = position_pnl(result).iloc[-1]
        stats["net_pnl"] = net
        # realized + unrealized is the cash-flow PnL before fees, funding and shortfall
        stats["unrealized_pnl"] = (net + stats["fees"] + stats["liquidation_fees"]
                                   + stats["funding"] - shortfall - stats["realized_pnl"])
        stats["time_in_market"] = (result.positions != 0).mean()
    else:
        stats["net_pnl"] = np.nan
        stats["unrealized_pnl"] = np.nan
        stats["time_in_market"] = np.nan
    stats["trades"] = stats["trades"].astype(int)
    stats["liquidations"] = stats["liquidations"].astype(int)
    order = ["trades", "traded_notional", "realized_pnl", "unrealized_pnl", "fees",
             "liquidation_fees", "funding", "liquidations", "margin_lost", "net_pnl",
             "time_in_market"]
    return stats[order]


def run_metrics(result) -> dict:
    """Every headline figure of a run, as a dict (keys as ``METRICS``).

    Starts from ``Result.summary()`` (same total return, drawdown and Sharpe)
    and adds CAGR, volatility, Sortino, Calmar, drawdown duration, exposure,
    turnover and the liquidation distance. Level statistics use the equity curve
    with the initial balance in front (the run starts there); return statistics
    use bar returns of the recorded equity, as the summary's Sharpe does.
    ``worst_margin_ratio`` is NaN for a run without cross positions (the ratio
    is a cross-account quantity; isolated risk shows in the liquidation distance).
    """
    s = result.summary()
    bpy = result.market.bars_per_year
    equity = result.equity
    curve = pd.concat([pd.Series([s["initial_balance"]]), equity], ignore_index=True)
    account = result.account
    fills = result.fills
    traded = float((fills["qty"] * fills["price"]).abs().sum()) if len(fills) else 0.0
    distance = float("nan")
    if result.positions is not None and result.liquidation_prices is not None:
        d = distance_to_liquidation(result.positions, result.liquidation_prices, _marks(result))
        distance = float(d.min()) if d.notna().any() else float("nan")
    has_cross = bool((np.asarray(result.margin_mode) == 0).any())
    duration = max_drawdown_duration(curve)
    return {
        "initial_balance": s["initial_balance"],
        "final_equity": s["final_equity"],
        "total_return": s["total_return"],
        "cagr": cagr(curve, bpy),
        "volatility": volatility(equity, bpy),
        "sharpe": s["sharpe"],
        "sortino": sortino_ratio(equity, bpy),
        "calmar": calmar_ratio(curve, bpy),
        "max_drawdown": s["max_drawdown"],
        "max_drawdown_days": duration * result.market.bar_ns / 86_400e9,
        "exposure_time": exposure_time(account["gross_exposure"]),
        "mean_gross_leverage": mean_gross_leverage(account["gross_exposure"], equity),
        "turnover": turnover(traded, equity, bpy),
        "fees_paid": s["fees_paid"],
        "funding_paid": s["funding_paid"],
        "liquidations": s["liquidations"],
        "liquidated_positions": s["liquidated_positions"],
        "liquidation_loss": s["liquidation_loss"],
        "liquidation_fees": s["liquidation_fees"],
        "liquidation_fees_waived": s["liquidation_fees_waived"],
        "bankruptcy_shortfall": s["bankruptcy_shortfall"],
        "min_distance_to_liquidation": distance,
        "worst_margin_ratio": s["worst_margin_ratio"] if has_cross else float("nan"),
        "fills": s["fills"],
        "rejected_orders": s["rejected_orders"],
    }


# display name and format of each run metric, in table order (used by reports)
METRICS: dict[str, tuple[str, str]] = {
    "initial_balance": ("initial balance", "money"),
    "final_equity": ("final equity", "money"),
    "total_return": ("total return", "pct"),
    "cagr": ("CAGR", "pct"),
    "volatility": ("volatility (annualised)", "pct"),
    "sharpe": ("Sharpe", "ratio"),
    "sortino": ("Sortino", "ratio"),
    "calmar": ("Calmar", "ratio"),
    "max_drawdown": ("max drawdown", "pct"),
    "max_drawdown_days": ("longest drawdown (days)", "days"),
    "exposure_time": ("time in market", "pct"),
    "mean_gross_leverage": ("mean gross exposure / equity", "ratio"),
    "turnover": ("turnover (x equity / year)", "ratio"),
    "fees_paid": ("trading fees", "money"),
    "funding_paid": ("funding paid", "money"),
    "liquidations": ("liquidation events", "int"),
    "liquidated_positions": ("positions liquidated", "int"),
    "liquidation_loss": ("margin lost to liquidation", "money"),
    "liquidation_fees": ("liquidation fees", "money"),
    "liquidation_fees_waived": ("liquidation fees waived", "money"),
    "bankruptcy_shortfall": ("bankruptcy shortfall", "money"),
    "min_distance_to_liquidation": ("closest distance to liquidation", "pct"),
    "worst_margin_ratio": ("worst cross margin ratio", "pct"),
    "fills": ("fills", "int"),
    "rejected_orders": ("rejected orders", "int"),
}
