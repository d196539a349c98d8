"""Auto-deleveraging (ADL): how exposed each position is, and what losing one leg does.

When a bankrupt trader's position cannot be taken over by the insurance fund, the venue
closes opposite positions of other traders at the bankrupt one's price, the most
profitable and most levered first (VENUES.md §2.7, §3.8, §6.5). A hedge is exposed
through its *profitable* leg: taken away, it leaves the other leg naked.

- ``adl_ranks(result)``: each open position's ranking score at each close, by the
  venue's published formula (the higher, the nearer the front of the ADL queue). A single
  account cannot know the queue itself (the venue ranks its score among every trader's):
  the score is the account's side of it.
- ``adl_stress(market, strategy, at=...)``: the strategy run as usual, and again with one
  leg deleveraged at one bar and, by default, never reopened: what is left of the hedge.

**Formulas** (``adl_score``), for a position of ``q`` units at entry ``E`` and mark ``P``,
unrealized PnL ``U = q (P - E)``, with what backs it (``Result.margins``): an isolated
position its own margin ``M`` (wallet), ``M + U`` (margin balance) and its maintenance
margin; a cross position the account's wallet balance ``WB``, margin balance ``MB`` and
every cross position's maintenance margin ``MM``:

- ``binance`` (VENUES.md §2.7, the 2019-20 text; the current one is unpublished, §9):
  ``max(0, U) / max(1, wallet) x MM / margin balance`` (the ratio 0 when the margin
  balance is <= 0). Cross: the position's own ``U`` over the account's ``WB``, times the
  account's margin ratio.
- ``bybit`` (VENUES.md §3.8, Bybit's and BitMEX's): ``PnL% = U / (|q| E)``, effective
  leverage ``|q| P / (margin balance)`` (``MarkValue - BankruptValue`` is the margin
  balance: isolated ``M + U``, cross ``MB``); score ``PnL% x leverage`` in profit,
  ``PnL% / leverage`` otherwise.
- OKX and Kraken: VENUES.md gives no formula; Binance's stands in, and the output says so
  (``attrs["adl_formula"]``, the stress summary's ``ranking`` row).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..backtest import run_prepared
from ..config import RunConfig
from ..data.market import Market
from ..engine import enums
from ..engine.adl import adl_pause, without_orders_for
from ..engine.driver import rows_with_values
from ..prepare import PrepareCache, prepare_run, split_plan
from ..result import Result
from ..venues.models import MarginModel

FORMULAS = ("binance", "bybit")
MOST_PROFITABLE = "most_profitable"


def adl_formula(venue, formula: str | None = None) -> tuple[str, str]:
    """``(formula, label)``: the ranking formula to use for ``venue`` and how the output
    names it. ``formula`` chooses one of ``FORMULAS`` by hand; None takes the venue's own,
    or Binance's as a named stand-in where VENUES.md gives none (OKX, Kraken).

    Example:
        >>> from backtester import load_venue
        >>> adl_formula(load_venue("okx_swap"))[1]
        'binance (stand-in: VENUES.md gives no ADL formula for the okx model)'
    """
    if formula is not None:
        if formula not in FORMULAS:
            raise ValueError(f"formula={formula!r}: must be one of "
                             f"{', '.join(map(repr, FORMULAS))} (or None: the venue's own)")
        return formula, formula
    model = getattr(venue, "margin_model", None) or MarginModel()
    if model.adl_ranking:
        return model.adl_ranking, model.adl_ranking
    return "binance", (f"binance (stand-in: VENUES.md gives no ADL formula for the "
                       f"{model.name} model)")


def adl_score(formula: str, qty, entry, mark, wallet, margin_balance, maintenance):
    """The ADL ranking score of positions (numbers or numpy arrays, element by element);
    the module docstring gives the formulas and what backs a cross or isolated position.

    Example (an isolated long of 1 at 100, marked at 110, holding 10 of margin, its
    maintenance margin 0.55: Binance's ``10 / 10 x 0.55 / 20``, Bybit's ``0.1 x 110 / 20``):
        >>> round(float(adl_score("binance", 1.0, 100.0, 110.0, 10.0, 20.0, 0.55)), 12)
        0.0275
        >>> round(float(adl_score("bybit", 1.0, 100.0, 110.0, 10.0, 20.0, 0.55)), 12)
        0.55
    """
    qty, entry, mark, wallet, margin_balance, maintenance = (
        np.asarray(a, dtype=np.float64) for a in (qty, entry, mark, wallet, margin_balance,
                                                   maintenance))
    upnl = qty * (mark - entry)
    solvent = margin_balance > 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        if formula == "binance":
            pnl = np.maximum(upnl, 0.0) / np.maximum(wallet, 1.0)
            ratio = np.where(solvent, maintenance / np.where(solvent, margin_balance, 1.0), 0.0)
            return pnl * ratio
        if formula == "bybit":
            pnl = upnl / (np.abs(qty) * entry)
            leverage = np.where(solvent, np.abs(qty) * mark / np.where(solvent, margin_balance,
                                                                       1.0), np.inf)
            return np.where(pnl > 0.0, pnl * leverage, pnl / leverage)
    raise ValueError(f"formula={formula!r}: must be one of {', '.join(map(repr, FORMULAS))}")


def _margin_arrays(result: Result, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(positions, margins (N_MARGIN_FIELDS, T, N), marks)`` of a run that recorded them."""
    if result.positions is None or getattr(result, "_margins", None) is None:
        raise ValueError(f"{what} needs each position's margins at each close: run with "
                         "record_margins=True (they are not saved with a run)")
    marks = result.market.frame("mark_close").ffill().to_numpy()  # the engine's last mark
    return result.positions.to_numpy(), result._margins, marks


def adl_ranks(result: Result, formula: str | None = None) -> pd.DataFrame:
    """Each open position's ADL ranking score at each bar's close (bars x symbols; NaN where
    flat, and for spot and collateral holdings, which ADL never takes).

    The score is the venue's (``formula=None``: Binance's or Bybit's, Binance's as a named
    stand-in elsewhere; or ``"binance"`` / ``"bybit"`` by choice), from the run's positions,
    entry prices, marks and what backs each position: isolated, its own margin; cross, the
    account's margin balance (the module docstring gives the formulas). The run must have
    recorded them: ``run(..., record_margins=True)``. ``attrs["adl_formula"]`` names the
    formula used.

    Example:
        >>> from backtester import load_market, run
        >>> from strategies import hedged_pair
        >>> m = load_market().slice(0, 100)
        >>> r = run(m, hedged_pair(m), target_kind="equity", leverage=10, record_margins=True)
        >>> ranks = adl_ranks(r)
        >>> ranks.shape, ranks.attrs["adl_formula"]
        ((100, 2), 'binance')
    """
    name, label = adl_formula(result.venue, formula)
    qty, margins, marks = _margin_arrays(result, "adl_ranks")
    field = enums.MarginField
    entry = margins[field.ENTRY]
    scores = adl_score(name, qty, entry, marks, margins[field.WALLET], margins[field.BALANCE],
                       margins[field.MAINTENANCE])
    scores = np.where((qty != 0.0) & np.isfinite(entry), scores, np.nan)
    frame = pd.DataFrame(scores, index=result.market.timestamps,
                         columns=list(result.market.symbols))
    frame.attrs["adl_formula"] = label
    return frame


# --- the stress scenario ---------------------------------------------------------------------


@dataclass(frozen=True)
class AdlStress:
    """A run and the same run with one leg auto-deleveraged (``adl_stress``).

    - ``base``, ``stressed``: the two ``Result``\\ s (margins recorded);
    - ``leg``: the column deleveraged; ``bar`` / ``time``: the bar at whose close;
    - ``price``: the close's price (the leg's mark at that close); ``entry_price``: its
      entry; ``qty``: the signed position closed (the fill, reason ``"adl"``, is ``-qty``);
    - ``realized_pnl``: ``qty x (price - entry_price)``; ``fee``: what the close paid
      (none on Binance, the maker fee on Bybit);
    - ``score``: the leg's ADL score at that close in the base run; ``formula``: which;
    - ``reopen``: whether the strategy's later orders for the leg were carried out.
    """

    base: Result
    stressed: Result
    leg: str
    bar: int
    time: pd.Timestamp
    price: float
    entry_price: float
    qty: float
    realized_pnl: float
    fee: float
    score: float
    formula: str
    reopen: bool

    def figures(self, result: Result) -> dict:
        """What the leg's loss did to ``result`` (the base or the stressed run): final
        equity, max drawdown, liquidation events after the ADL bar (and which positions),
        and the worst margin ratio of any open position at a close after it (maintenance
        margin / margin balance: a cross position's is the account's, an isolated one's its
        own; inf past a margin balance of 0, 0 with nothing open)."""
        summary = result.summary()
        liq = result.liquidations
        later = liq[liq["bar"] > self.bar]
        _, margins, _ = _margin_arrays(result, "the stress figures")
        field = enums.MarginField
        balance = margins[field.BALANCE, self.bar + 1:]
        maintenance = margins[field.MAINTENANCE, self.bar + 1:]
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(balance > 0.0, maintenance / balance, np.inf)
        ratio = ratio[np.isfinite(balance)]
        return {
            "final_equity": summary["final_equity"],
            "max_drawdown": summary["max_drawdown"],
            "liquidations_after": int(later["event"].nunique()),
            "liquidated_after": ", ".join(f"{s} (bar {b})" for s, b in
                                          zip(later["symbol"], later["bar"], strict=True)),
            "worst_margin_ratio_after": float(ratio.max()) if ratio.size else 0.0,
        }

    def summary(self) -> pd.DataFrame:
        """The ADL event and its effect, base vs stressed: one row per figure, columns
        ``base`` and ``stressed`` (the event's rows hold a value under ``stressed`` only).

        Example:
            >>> from backtester import load_market
            >>> from strategies import hedged_pair
            >>> m = load_market().slice(0, 200)
            >>> s = adl_stress(m, hedged_pair(m), at="worst", target_kind="equity", leverage=10)
            >>> list(s.summary().columns)
            ['base', 'stressed']
        """
        event = {"leg": self.leg, "bar": self.bar, "time": self.time, "price": self.price,
                 "entry_price": self.entry_price, "qty_closed": self.qty,
                 "realized_pnl": self.realized_pnl, "fee": self.fee, "adl_score": self.score,
                 "ranking": self.formula, "reopen": self.reopen}
        rows = {name: (None, value) for name, value in event.items()}
        base, stressed = self.figures(self.base), self.figures(self.stressed)
        rows.update({name: (base[name], stressed[name]) for name in base})
        return pd.DataFrame.from_dict(rows, orient="index", columns=["base", "stressed"])

    def describe(self) -> str:
        """The summary as text lines, for a terminal."""
        lines = [f"ADL of {self.leg} at bar {self.bar} ({self.time}): {self.qty:+g} closed at "
                 f"{self.price:,.6g} (entry {self.entry_price:,.6g}), realized "
                 f"{self.realized_pnl:,.2f}, fee {self.fee:,.2f}; score {self.score:.6g} "
                 f"({self.formula}); {'reopened' if self.reopen else 'not reopened'}"]
        base, stressed = self.figures(self.base), self.figures(self.stressed)
        shown = {"final_equity": "{:,.2f}", "max_drawdown": "{:.2%}",
                 "liquidations_after": "{}", "liquidated_after": "{}",
                 "worst_margin_ratio_after": "{:.4f}"}
        lines.append(f"  {'':<26} {'base':>16}  {'stressed':>16}")
        for name, form in shown.items():
            lines.append(f"  {name:<26} {form.format(base[name]) or '-':>16}  "
                         f"{form.format(stressed[name]) or '-':>16}")
        return "\n".join(lines)


def adl_stress(market: Market, strategy, *, at, leg: str = MOST_PROFITABLE, reopen: bool = False,
               config: RunConfig | None = None, **run_options) -> AdlStress:
    """Run ``strategy`` on ``market``, then again with one leg auto-deleveraged at bar ``at``.

    - ``strategy``: what ``run()`` takes: targets, a ``Callback`` or a ``Plan``;
      ``config`` and ``run_options`` are ``run()``'s (``margin_mode=``, ``leverage=``...).
    - ``at``: a bar index, a timestamp of a bar, or ``"worst"``: the bar where the leg's
      ADL score (``adl_ranks`` of the base run) was highest.
    - ``leg``: a column of the run (a symbol; a hedge-mode leg ``SYM.long``), or
      ``"most_profitable"``: the open position with the largest unrealized PnL at that
      close (with ``at="worst"``: the bar where that position's score was highest). ADL
      takes only positions in profit: none at that close is an error (name a leg to force
      a losing one).
    - ``reopen``: False (default) drops every later order of the strategy for the leg, so
      the rest of the hedge goes on unhedged; True carries them out (a target strategy's
      leg comes back at its next target).

    The ADL lands at the end of bar ``at``, after everything of the bar, the strategy's
    decision at its close included: the leg is closed whole at its mark at that close. The
    venue fills ADL at the bankruptcy price of the liquidated counterparty, which a single
    account cannot know; the mark is the neutral choice. The close pays no trading fee on
    Binance (and the maker fee on Bybit, VENUES.md §3.8); the stressed run records it as a
    fill with reason ``"adl"``. Both runs record margins (``record_margins``).

    Example:
        >>> from backtester import load_market
        >>> from strategies import hedged_pair
        >>> m = load_market().slice(0, 200)
        >>> s = adl_stress(m, hedged_pair(m), at=100, margin_mode="isolated",
        ...                target_kind="equity", leverage=10)
        >>> s.leg in m.symbols, int(s.stressed.fills["reason"].eq("adl").sum())
        (True, 1)
    """
    if not isinstance(reopen, bool | np.bool_):
        raise ValueError(f"reopen={reopen!r}: must be True or False")
    orders, plan_options = split_plan(strategy)
    config = (config or RunConfig()).replace(**{**plan_options, **run_options})
    config = config.replace(record_positions=True, record_margins=True)
    prepared = prepare_run(market, orders, config, PrepareCache())
    base = run_prepared(prepared)
    bar, column = _choose(base, at, leg)
    name = base.market.symbols[column]
    entry = float(base._margins[enums.MarginField.ENTRY, bar, column])
    score = float(adl_ranks(base).iloc[bar, column])
    done: list = []
    pause = adl_pause(bar, column, _fee_rate(prepared, name, bar), not reopen, done)
    stressed = run_prepared(_without_leg(prepared, bar, column) if not reopen else prepared,
                            pause)
    closed, price, realized, fee = done[0]
    return AdlStress(base=base, stressed=stressed, leg=name, bar=bar,
                     time=base.market.timestamps[bar], price=float(price), entry_price=entry,
                     qty=-float(closed), realized_pnl=float(realized), fee=float(fee),
                     score=score, formula=adl_formula(base.venue)[1], reopen=bool(reopen))


def _fee_rate(prepared, column_name: str, bar: int) -> float:
    """The fee rate of the deleveraged trader's close at ``bar`` (the model's ``adl_fee``)."""
    venue = prepared.venue
    field = venue.margin_model.adl_fee
    if not field:
        return 0.0
    symbol = column_name.rsplit(".", 1)[0] if column_name.endswith((".long", ".short")) \
        else column_name
    return float(getattr(venue.spec(symbol, prepared.market.timestamps[bar]), field))


def _without_leg(prepared, bar: int, column: int):
    """The prepared run with every order for ``column`` filled after bar ``bar``'s close
    dropped: target rows from the one that fills next (row ``bar`` with fills at the next
    open, row ``bar + 1`` with fills at the close); a callback's orders from bar ``bar + 1``
    (those it wrote at ``bar`` are dropped at the pause)."""
    inputs = prepared.inputs
    if prepared.callback is not None:
        function = without_orders_for(prepared.callback.function, column, bar + 1)
        inputs = dataclasses.replace(
            inputs, callback=dataclasses.replace(inputs.callback, function=function))
    else:
        trading = inputs.trading
        first = bar if trading.fill_at == enums.FillAt.NEXT_OPEN else bar + 1
        targets = trading.targets.copy()  # (shared with the base run and the prepare cache)
        targets[first:, column] = np.nan
        has_target, _ = rows_with_values(targets)
        inputs = dataclasses.replace(inputs, trading=trading._replace(targets=targets,
                                                                      has_target=has_target))
    return dataclasses.replace(prepared, inputs=inputs)


def _bar_of(market: Market, at) -> int:
    """The bar index ``at`` names (an index or a bar's timestamp)."""
    n = market.n_bars
    if isinstance(at, bool | np.bool_):
        raise ValueError(f"at={at!r}: give a bar index, a bar's timestamp or 'worst'")
    if isinstance(at, int | np.integer):
        if not 0 <= at < n:
            raise ValueError(f"at={at}: the market has bars 0 to {n - 1}")
        return int(at)
    try:
        when = pd.Timestamp(at)
    except (TypeError, ValueError):
        raise ValueError(f"at={at!r}: give a bar index, a bar's timestamp or 'worst'") from None
    when = when.tz_localize("UTC") if when.tz is None else when.tz_convert("UTC")
    found = int(market.timestamps.get_indexer([when])[0])
    if found < 0:
        raise ValueError(f"at={at!r} is not a bar of the market (bars from "
                         f"{market.timestamps[0]} to {market.timestamps[-1]}); give a bar's "
                         "open time or its index")
    return found


def _choose(base: Result, at, leg) -> tuple[int, int]:
    """``(bar, column)`` of the deleveraging, from ``at`` and ``leg`` (see ``adl_stress``)."""
    market = base.market
    symbols = list(market.symbols)
    qty = base.positions.to_numpy()
    ranks = adl_ranks(base).to_numpy()
    margined = base.margin_mode < enums.Mode.SPOT
    if not isinstance(leg, str):
        raise ValueError(f"leg={leg!r}: give a symbol of the run or {MOST_PROFITABLE!r}")
    if leg != MOST_PROFITABLE:
        if leg not in symbols:
            legs = [s for s in symbols if s.startswith(f"{leg}.")]
            hint = (f"; in hedge mode it is two legs: {', '.join(legs)}" if legs else
                    f"; the run's symbols are {', '.join(symbols)}")
            raise ValueError(f"leg={leg!r} is not a column of the run{hint} (or give "
                             f"{MOST_PROFITABLE!r})")
        column = symbols.index(leg)
        if not margined[column]:
            raise ValueError(f"leg={leg!r} is a {enums.MARGIN_MODE_NAMES[base.margin_mode[column]]}"
                             " holding: ADL takes perpetual positions only")
    upnl = qty * (market.frame("mark_close").ffill().to_numpy()
                  - base._margins[enums.MarginField.ENTRY])
    upnl = np.where((qty != 0.0) & margined[None, :], upnl, np.nan)
    profit = np.where(upnl > 0.0, upnl, -np.inf)  # (NaN, flat: never the most profitable)
    leaders = profit.argmax(axis=1)  # each close's most profitable position
    if isinstance(at, str) and at == "worst":
        if leg == MOST_PROFITABLE:
            any_profit = np.isfinite(profit.max(axis=1))
            best = np.where(any_profit, ranks[np.arange(len(qty)), leaders], np.nan)
            if not np.isfinite(best).any():
                raise ValueError("at='worst': no position of the run is ever in profit at a "
                                 "close, and ADL takes only positions in profit; name a leg "
                                 "and a bar to force one")
            bar = int(np.nanargmax(best))
            return bar, int(leaders[bar])
        if not np.isfinite(ranks[:, column]).any():
            raise ValueError(f"at='worst': leg {leg!r} never holds a position at a close")
        return int(np.nanargmax(ranks[:, column])), column
    bar = _bar_of(market, at)
    when = f"bar {bar} ({market.timestamps[bar]})"
    if leg == MOST_PROFITABLE:
        if not np.isfinite(profit[bar].max()):
            raise ValueError(f"no position is in profit at the close of {when}, and ADL takes "
                             "only positions in profit; name a leg to force a losing one")
        return bar, int(leaders[bar])
    if qty[bar, column] == 0.0:
        raise ValueError(f"leg {leg!r} holds no position at the close of {when}: nothing for "
                         "ADL to take")
    return bar, column
