"""Crash replay: would today's book survive a dated window of history (March 2020...)?

A replay holds a ``Book`` (what an account holds now, at today's prices) through a
``CrashWindow`` of market history, under each margin mode, with the venue's rules in force at
the book's time, and reports whether and when it is liquidated (``replay_crash``) and the
smallest equity that survives the window (``survival_buffer``).

How a replay is built (``_prepare``), all through the public API (``Market.from_arrays``,
``run``):

- **The path.** The window's bars (last OHLC, mark OHLC, funding rates) are taken from
  ``history`` and each symbol's prices are rescaled to the book's price: every last price is
  multiplied by ``book price / the window's first open`` and every mark by ``book price /
  the window's first mark open``. The window therefore starts at the book's price, and each
  series keeps its own returns from there (so the mark's divergence from the last price
  during the window is kept; the small one at its first bar is not). In Binance's klines
  a bar opens at the previous bar's close to the cent or nearly, so these are the returns
  relative to the bar before the window. Funding rates are the history's, paid on the
  rescaled notional. A book symbol may follow another symbol's path (``symbol_map``).
- **The set-up.** Two flat bars at the book's prices come first, labelled by the two bar
  times before the window. The book's positions are opened at the first one's close
  (``fill_at="close"``, no slippage, the venue's order filters off by default: the book is
  held, not traded), under the margin mode and the book's leverage: each isolated position
  takes ``notional / leverage`` as its margin and the rest stays in the wallet. The
  opening pays the venue's taker fee. To leave the book's equity untouched, that fee is
  added to the initial balance: a 2-bar probe run measures what the opening costs (the
  fee, and any opening fee the venue charges), and the replay deposits ``equity + cost``.
  Zeroing the fee instead (``venue_overrides``) would also change the margin of venues that
  count the taker fee in it (Bybit's fee to close, OKX).
- **Equity below the initial margin.** An exchange lets an account keep a cross book whose
  equity has fallen below its initial margin, but not open one. When the deposit cannot open
  the book, the replay opens it with a larger deposit and takes the difference back at the
  second set-up bar as a funding payment of every perpetual position (a rate of ``sign(q) *
  amount / the perpetuals' gross notional``): the wallet is then the book's equity, with
  nothing else changed. The runs' ``funding`` frame shows it at that bar; its rate is not
  the venue's. A venue that pays no funding (spot margin), or a book of spot holdings only,
  cannot do this: such a book is an error there (in a buffer search: it does not survive).
  An isolated book whose equity does not cover its positions' margins (and its spot
  holdings' cost) is an error.
- **Spot holdings.** A book's spot holdings (``Book.instruments``, the long leg of a funding
  carry) are held as ``run(instruments=...)`` holds them: paid in full from the wallet at
  the set-up, no leverage, no funding, never liquidated. Their path is the history's series
  of the same name (``BTC_USDT_SPOT`` in a market of ``strategies.funding_carry.
  carry_market``) or the one ``symbol_map`` names. In isolated mode their gain in a squeeze
  is out of reach of a short perpetual's margin; in cross mode too: the engine keeps a spot
  holding out of the cross margin balance (``MB = WB + sum(U_i, cross)``, its cost paid out
  of the wallet), as the venue keeps spot coins in another wallet. Only the perpetuals take
  the set-up's drain (above) and have a leverage; the buffers divide by the gross notional
  of both kinds (a carry's spot leg counts), and the equity they find includes the spot
  holdings' value.
- **The window.** Then no order: the book is held through the window's bars, with the
  venue's rules (tier tables, fees, model rules) in force at ``book.time`` for the whole
  run, whatever the window's dates (``_venue_at``).

Bars 0 and 1 of each run are the set-up; a liquidation there means the book was already
past its maintenance margin at its own prices.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..backtest import run
from ..data.market import Market
from ..data.validate import DataWarning, fmt_ts
from ..prepare.suspicious import suspicious_data
from ..result import Result
from ..venues import Venue, load_venue
from ..venues.venue import RuleSet
from .book import Book, book_at, portfolio
from .windows import CRASHES, CrashWindow, crash_window, worst_windows

__all__ = [
    "CRASHES",
    "Book",
    "CrashReplay",
    "CrashWindow",
    "book_at",
    "crash_window",
    "portfolio",
    "replay_crash",
    "survival_buffer",
    "surviving_leverage",
    "worst_windows",
]

SETUP_BARS = 2  # the flat bars before the window: the opening, then the balance set
MODES = ("cross", "isolated")
# run() options a replay passes through; the others it sets from the book
PASSED = ("path", "record_positions", "order_filters", "venue_overrides", "stand_in")
SET_BY_REPLAY = {
    "initial_balance": "the book's equity", "margin_mode": "margin_modes=",
    "leverage": "the book's leverage", "venue": "the book's venue",
    "target_kind": "the book's units", "fill_at": "the set-up bar's close",
    "slippage": "the book's prices (no slippage)", "reduce_to_fit": "the book's positions",
}
TOLERANCE = 1e-4  # of the gross notional: how far above the exact threshold a buffer may be
LARGEST_BUFFER = 64.0  # times the gross notional: beyond it, no buffer survives (inf)


@dataclass(frozen=True)
class CrashReplay:
    """A book held through a crash window, under each margin mode.

    - ``runs``: margin mode -> the ``Result`` of the book held through the window (bars 0
      and 1 are the set-up, see the module docstring);
    - ``buffers``: margin mode -> ``survival_buffer`` (empty when not computed);
    - ``leverages``: symbol -> the largest isolated leverage at which its position survives
      (``surviving_leverage``; empty when not computed).

    ``replay_crash`` makes one; its docstring has an example.
    """

    window: CrashWindow
    book: Book
    runs: dict
    buffers: dict = field(default_factory=dict)
    leverages: dict = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """One row per margin mode:

        - ``survived``: no liquidation in the window (nor at the set-up);
        - ``liquidations``: liquidation events (a cross liquidation is one event);
        - ``first_liquidation``, ``first_liquidated``: the bar (its open time) of the first
          one and the symbols it closed (NaT and "" when none); a time before the window's
          start is the set-up: the book was already past its maintenance margin;
        - ``worst_equity``, ``final_equity``: the lowest equity at a bar's close from the
          book's opening on, and the equity at the window's end (quote currency);
        - ``loss_pct``: ``100 * (1 - final_equity / book.equity)``;
        - ``buffer``: the smallest equity, as a fraction of the gross notional, with which
          the positions survive (``survival_buffer``; NaN when not computed);
        - ``max_leverage``: isolated only, the largest leverage at which every position
          survives (the smallest of ``leverages``).
        """
        rows = {}
        for mode, result in self.runs.items():
            liq = result.liquidations
            equity = result.equity.iloc[SETUP_BARS - 1:]
            first_time, first_symbols = pd.NaT, ""
            if len(liq):
                event = liq["event"].iloc[0]
                first_time = liq["timestamp"].iloc[0]
                first_symbols = ", ".join(dict.fromkeys(liq.loc[liq["event"] == event,
                                                                "symbol"]))
            final = float(equity.iloc[-1])
            leverage = (min(self.leverages.values()) if mode == "isolated" and self.leverages
                        else float("nan"))
            rows[mode] = {
                "survived": len(liq) == 0,
                "liquidations": int(result.summary()["liquidations"]),
                "first_liquidation": first_time,
                "first_liquidated": first_symbols,
                "worst_equity": float(equity.min()),
                "final_equity": final,
                "loss_pct": 100.0 * (1.0 - final / self.book.equity),
                "buffer": self.buffers.get(mode, float("nan")),
                "max_leverage": leverage,
            }
        frame = pd.DataFrame.from_dict(rows, orient="index")
        frame.index.name = "margin_mode"
        return frame


def replay_crash(book: Book, window, history: Market, *, margin_modes=MODES,
                 symbol_map=None, buffer: bool = True, tolerance: float = TOLERANCE,
                 **run_options) -> CrashReplay:
    """Hold ``book`` through ``window`` of ``history`` under each margin mode.

    - ``window``: anything ``crash_window`` reads (a shipped name, a date, ``"START/END"``,
      a ``CrashWindow``); ``history``: a Market covering it, e.g.
      ``load_market("path/to/binance_futures")`` (an error names the window, the symbols
      and the data's range when it does not);
    - ``margin_modes``: the modes to replay, each for the whole book;
    - ``symbol_map``: book symbol -> the history symbol whose path it follows (default: its
      own), e.g. ``{"SOL_USDT": "BTC_USDT"}`` to replay a SOL book on BTC's 2020 crash; a
      book symbol missing from the history is an error unless mapped;
    - ``buffer``: also search ``survival_buffer`` per mode and ``surviving_leverage``
      (a few dozen short runs), within ``tolerance`` of the gross notional;
    - ``run_options``: ``path``, ``record_positions``, ``order_filters`` (default False:
      the book's positions are held as given, not rounded to the venue's quantity step),
      ``venue_overrides``, ``stand_in``, as in ``run()``.

    How the window is rescaled to the book's prices and the book opened without a fee: the
    module docstring.

    Example:
        >>> import numpy as np
        >>> from backtester import Market
        >>> price = np.array([100.0, 95, 90, 85, 80, 85])          # -20%, then a rebound
        >>> o, c = price[:-1], price[1:]
        >>> history = Market.from_arrays("BTC_USDT", o, np.maximum(o, c), np.minimum(o, c), c,
        ...                              start="2024-03-01")
        >>> book = portfolio({"BTC_USDT": 1.0}, {"BTC_USDT": 60_000}, equity=6_000,
        ...                  leverage=10)
        >>> replay = replay_crash(book, "2024-03-01T00:00/2024-03-01T05:00", history)
        >>> replay.summary()["survived"].to_dict()
        {'cross': False, 'isolated': False}
        >>> str(replay.summary().loc["isolated", "first_liquidation"])   # 95 -> 90: -10%
        '2024-03-01 01:00:00+00:00'
        >>> round(replay.buffers["cross"], 3)      # 1 - 0.8 * (1 - 0.4%): the loss + MM
        0.203
    """
    modes = _margin_modes(margin_modes)
    replay = _prepare(book, crash_window(window), history, symbol_map, run_options)
    runs = {mode: _held(replay, mode, book.equity, _book_leverage(replay)) for mode in modes}
    buffers, leverages = {}, {}
    if buffer:
        _check_tolerance(tolerance)
        for mode in modes:
            buffers[mode], found = _survival(replay, mode, tolerance)
            if found is not None:
                leverages = found
    return CrashReplay(replay.window, book, runs, buffers, leverages)


def survival_buffer(book: Book, window, history: Market, margin_mode: str = "cross", *,
                    symbol_map=None, tolerance: float = TOLERANCE, **run_options) -> float:
    """The smallest equity, as a fraction of the book's gross notional, with which the same
    positions survive ``window`` with no liquidation (``inf``: none up to 64 times the
    notional). Spot holdings count in both: their notional in the gross, their value (paid
    in full) in the equity; a carry's answer is the spot cost plus what its short needs.

    Cross: a bisection on the account's equity, the positions fixed (an equity below their
    initial margin is set as the module docstring says). Isolated: a bisection, per
    position, on its margin (``notional / leverage``); the buffer is the sum of the
    smallest surviving margins (the venue's, Bybit's fee to close included), and
    ``surviving_leverage`` gives the leverages. A leverage is never above the venue's cap
    for the position's notional: where even that survives, its margin is the answer.

    Tolerance: the answer survives, and is at most ``tolerance`` (default 1e-4, i.e. 0.01%
    of the gross notional) above the exact threshold. A one-symbol long at bracket 1 of
    Binance, on a window whose lowest mark is ``r`` times its first, needs ``1 - r * (1 -
    mmr)``: the loss at the worst mark plus the maintenance margin there (plus funding).

    Example:
        >>> import numpy as np
        >>> from backtester import Market
        >>> o, c = np.array([100.0, 90, 80]), np.array([90.0, 80, 90])   # lowest: 0.8
        >>> history = Market.from_arrays("BTC_USDT", o, np.maximum(o, c), np.minimum(o, c), c,
        ...                              start="2024-03-01")
        >>> book = portfolio({"BTC_USDT": 0.5}, {"BTC_USDT": 60_000}, 3_000, leverage=10)
        >>> buffer = survival_buffer(book, "2024-03-01T00:00/2024-03-01T03:00", history)
        >>> abs(buffer - (1 - 0.8 * (1 - 0.004))) <= 1e-4
        True
    """
    modes = _margin_modes((margin_mode,))
    _check_tolerance(tolerance)
    replay = _prepare(book, crash_window(window), history, symbol_map, run_options)
    return _survival(replay, modes[0], tolerance)[0]


def surviving_leverage(book: Book, window, history: Market, *, symbol_map=None,
                       tolerance: float = TOLERANCE, **run_options) -> dict[str, float]:
    """Symbol -> the largest leverage at which its isolated position survives ``window``
    (within ``tolerance`` of the margin fraction ``1 / leverage``; capped by the venue's
    leverage cap for the position's notional; 0 where no margin up to 64 times the notional
    survives). Leverages are not rounded to whole numbers (Binance's are): round down.
    Perpetuals only: a spot holding has no leverage, and no entry.

    Example:
        >>> import numpy as np
        >>> from backtester import Market
        >>> o, c = np.array([100.0, 90, 80]), np.array([90.0, 80, 90])
        >>> history = Market.from_arrays("BTC_USDT", o, np.maximum(o, c), np.minimum(o, c), c,
        ...                              start="2024-03-01")
        >>> book = portfolio({"BTC_USDT": 0.5}, {"BTC_USDT": 60_000}, 3_000, leverage=10)
        >>> found = surviving_leverage(book, "2024-03-01T00:00/2024-03-01T03:00", history)
        >>> round(found["BTC_USDT"], 1)             # 1 / (1 - 0.8 * 0.996)
        4.9
    """
    _check_tolerance(tolerance)
    replay = _prepare(book, crash_window(window), history, symbol_map, run_options)
    return _survival(replay, "isolated", tolerance)[1]


# --- the replay market ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Replay:
    """A book and a window made ready to run: the replay market's arrays (set-up bars
    first), the venue frozen at the book's time and the run options."""

    book: Book
    window: CrashWindow
    symbols: tuple[str, ...]
    qty: np.ndarray
    prices: np.ndarray
    arrays: dict
    start: pd.Timestamp
    bar: pd.Timedelta
    venue: Venue
    options: dict
    pays_funding: bool
    spot: np.ndarray  # per symbol: a spot holding (paid in full, no leverage, no funding)
    probes: dict = field(default_factory=dict)

    @property
    def gross(self) -> float:
        """The gross notional of the book, spot holdings included."""
        return float(np.abs(self.qty * self.prices).sum())

    @property
    def perpetuals(self) -> tuple[str, ...]:
        return tuple(s for s, spot in zip(self.symbols, self.spot, strict=True) if not spot)

    @property
    def instruments(self) -> dict[str, str]:
        """``run()``'s ``instruments``: the spot holdings."""
        return {s: "spot" for s, spot in zip(self.symbols, self.spot, strict=True) if spot}

    def market(self, drain: float = 0.0) -> Market:
        """The replay market; ``drain`` > 0 takes that much from the wallet at the second
        set-up bar, as a funding payment of every perpetual position in proportion to its
        notional (a spot holding pays no funding)."""
        funding = self.arrays["funding"]
        if drain > 0.0:
            funding = funding.copy()
            perp_gross = float(np.abs(self.qty * self.prices)[~self.spot].sum())
            funding[SETUP_BARS - 1] = np.where(self.spot, np.nan,
                                               np.sign(self.qty) * drain / perp_gross)
        a = self.arrays
        return Market.from_arrays(self.symbols, a["open"], a["high"], a["low"], a["close"],
                                  mark=(a["mark_open"], a["mark_high"], a["mark_low"],
                                        a["mark_close"]),
                                  funding_rate=funding, volume=a["volume"], start=self.start,
                                  bar=self.bar)


def _prepare(book: Book, window: CrashWindow, history: Market, symbol_map,
             run_options: dict) -> _Replay:
    if not isinstance(book, Book):
        raise ValueError(f"book must be a Book (portfolio(...) or book_at(result, when)), got "
                         f"{type(book).__name__}")
    if not isinstance(history, Market):
        raise ValueError(f"history must be a backtester Market covering the window, e.g. "
                         f"load_market(...), got {type(history).__name__}")
    options = _run_options(run_options)
    symbols = book.symbols
    if not symbols:
        raise ValueError("the book holds no position: nothing to replay")
    columns = _history_columns(symbols, history, symbol_map)
    first, stop = _window_rows(window, history, symbols, columns)
    venue = load_venue(book.venue, stand_in=dict(options.pop("stand_in", {}) or {}),
                       **dict(options.pop("venue_overrides", {}) or {}))
    perpetuals = book.perpetuals  # spot holdings are outside the venue's perpetual tables
    for symbol in perpetuals:  # an unlisted symbol's error, a warning where no table is so old
        venue.spec(symbol, book.time)
    venue = _venue_at(venue, book.time)
    pays_funding = bool(perpetuals) and all(venue.spec(s).funding_interval_hours != 0
                                            for s in perpetuals)
    spot = np.array([book.is_spot(s) for s in symbols])
    qty = np.array([book.positions[s] for s in symbols])
    prices = np.array([book.prices[s] for s in symbols])
    rows = slice(first, stop)
    last_scale = prices / history.open[first, columns]
    mark_scale = prices / history.mark_open[first, columns]
    setup = np.tile(prices, (SETUP_BARS, 1))
    arrays = {}
    for name in ("open", "high", "low", "close"):
        arrays[name] = np.vstack([setup, getattr(history, name)[rows][:, columns] * last_scale])
        mark = getattr(history, f"mark_{name}")[rows][:, columns] * mark_scale
        arrays[f"mark_{name}"] = np.vstack([setup, mark])
    arrays["volume"] = np.vstack([np.zeros_like(setup), history.volume[rows][:, columns]])
    arrays["funding"] = np.vstack([np.full_like(setup, np.nan),
                                   history.funding_rate[rows][:, columns]])
    bar = pd.Timedelta(int(history.bar_ns), unit="ns")
    start = pd.Timestamp(int(history.index[first]), tz="UTC") - SETUP_BARS * bar
    options.setdefault("order_filters", False)
    return _Replay(book, window, symbols, qty, prices, arrays, start, bar, venue, options,
                   pays_funding, spot)


def _run_options(run_options: dict) -> dict:
    for name in run_options:
        if name in SET_BY_REPLAY:
            raise ValueError(f"{name}= is set by the replay from {SET_BY_REPLAY[name]}; "
                             f"options a replay passes to run(): {', '.join(PASSED)}")
        if name not in PASSED:
            raise ValueError(f"unknown replay option {name}=; options a replay passes to "
                             f"run(): {', '.join(PASSED)}")
    return dict(run_options)


def _history_columns(symbols, history: Market, symbol_map) -> list[int]:
    """The history column whose path each book symbol follows."""
    if symbol_map is not None and not isinstance(symbol_map, Mapping):
        raise ValueError(f"symbol_map={symbol_map!r}: give a mapping book symbol -> history "
                         "symbol, e.g. {'SOL_USDT': 'BTC_USDT'}")
    mapping = dict(symbol_map or {})
    unknown = sorted(set(mapping) - set(symbols))
    if unknown:
        raise ValueError(f"symbol_map= names {', '.join(unknown)}, which the book does not "
                         f"hold (it holds {', '.join(symbols)})")
    columns = []
    for symbol in symbols:
        source = mapping.get(symbol, symbol)
        if source not in history.symbols:
            how = (f"symbol_map maps it to {source!r}, which the history does not hold"
                   if symbol in mapping else
                   f"replay it on another symbol's path with symbol_map={{'{symbol}': "
                   f"'{history.symbols[0]}'}}")
            raise ValueError(f"book symbol {symbol} is not in the history (it holds "
                             f"{', '.join(history.symbols)}): {how}")
        columns.append(history.symbol_index(source))
    return columns


def _window_rows(window: CrashWindow, history: Market, symbols, columns) -> tuple[int, int]:
    """The history rows of the window's bars; an error naming the window, the symbols and
    the data's range unless every bar of it is there for every symbol replayed."""
    index, bar = history.index, history.bar_ns
    first = int(np.searchsorted(index, window.start.value, side="left"))
    stop = int(np.searchsorted(index, window.end.value, side="left"))
    rows = slice(first, stop)
    spanned = (stop > first and index[first] - window.start.value < bar
               and index[stop - 1] + bar >= window.end.value)
    regular = bool((np.diff(index[rows]) == bar).all())
    missing = [s for s, c in zip(symbols, columns, strict=True)
               if not (spanned and regular) or np.isnan(history.open[rows, c]).any()]
    if missing:
        ranges = []
        for s, c in zip(symbols, columns, strict=True):
            if s not in missing:
                continue
            held = np.flatnonzero(~np.isnan(history.open[:, c]))
            source = history.symbols[c]
            name = s if source == s else f"{s} (on {source}'s path)"
            ranges.append(f"{name} has bars from {fmt_ts(index[held[0]])} to "
                          f"{fmt_ts(index[held[-1]])}" if len(held) else f"{name} has none")
        gaps = "" if regular else "; the history's bar times have gaps in the window"
        raise ValueError(f"window {window.name} ({window.start} to {window.end}, end excluded) "
                         f"is not covered by the history for {', '.join(missing)}: "
                         f"{'; '.join(ranges)}{gaps}")
    return first, stop


def _venue_at(venue: Venue, at: pd.Timestamp | None) -> Venue:
    """``venue`` with the versions in force at ``at`` (None: the latest) in force always:
    its tier tables, fees and filters, model rules and collateral tiers."""

    def in_force(versions):
        current = versions[0]
        for version in versions:
            if at is None or version.valid_from is None or version.valid_from <= at:
                current = version
        return dataclasses.replace(current, valid_from=None)

    history = {name: (in_force(versions),) for name, versions in venue.history.items()}
    default = (in_force(venue.default_history),) if venue.default_history else ()
    collateral = {c: (in_force(v),) for c, v in venue.collateral.items()}
    when = "the latest rules" if at is None else f"rules in force at {at}"
    return dataclasses.replace(venue, description=f"{venue.description} ({when})", symbols={},
                               default=None, history=history, default_history=default,
                               rule_history=(RuleSet(venue.rules(at)),),
                               collateral=collateral)


def _margin_modes(margin_modes) -> tuple[str, ...]:
    if isinstance(margin_modes, str):
        margin_modes = (margin_modes,)
    modes = tuple(margin_modes)
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise ValueError(f"margin_modes={margin_modes!r}: give 'cross', 'isolated' or both, "
                         "each once")
    return modes


def _check_tolerance(tolerance) -> None:
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or not (
            0.0 < tolerance < 1.0):
        raise ValueError(f"tolerance={tolerance!r}: must be a fraction of the gross notional "
                         "in (0, 1), e.g. 1e-4")


def _book_leverage(replay: _Replay) -> dict[str, float]:
    """The book's leverage of each perpetual (spot holdings have none)."""
    return {s: replay.book.leverage_of(s) for s in replay.perpetuals}


# --- holding the book -----------------------------------------------------------------------


def _run(replay: _Replay, mode: str, balance: float, leverage: dict, drain: float = 0.0,
         bars: int | None = None) -> Result:
    market = replay.market(drain)
    if bars is not None:
        market = market.slice(0, bars)
    targets = np.full((market.n_bars, len(replay.symbols)), np.nan)
    targets[0] = replay.qty
    options = dict(target_kind="units", fill_at="close", margin_mode=mode, leverage=leverage,
                   initial_balance=balance, venue=replay.venue, instruments=replay.instruments,
                   **replay.options)
    if drain <= 0.0:
        return run(market, targets, **options)
    with warnings.catch_warnings():  # the drain's rate is ours, not the data's
        warnings.simplefilter("ignore", DataWarning)
        result = run(market, targets, **options)
    result.warnings = list(suspicious_data(replay.market(), replay.venue,
                                           frozenset(replay.instruments)))
    return result


def _refusals(result: Result, replay: _Replay) -> list[tuple[str, str]]:
    """``(symbol, reason)`` of every position the set-up did not open as the book holds it."""
    fills = result.fills
    opened = fills[(fills["bar"] == 0) & (fills["reason"] == "strategy")]
    held = dict(zip(opened["symbol"], opened["position_after"], strict=True))
    rejected = result.rejections
    reasons = dict(zip(rejected["symbol"], rejected["reason"], strict=True))
    out = []
    for symbol, q in zip(replay.symbols, replay.qty, strict=True):
        got = held.get(symbol, 0.0)
        if abs(got - q) > 1e-12 * abs(q):
            out.append((symbol, reasons.get(symbol, f"opened {got:g} of {q:g} units (the "
                                                     "venue's order filters)")))
    return out


def _refusal_error(refused, replay: _Replay, mode: str, what: str) -> ValueError:
    listed = "; ".join(f"{s} {replay.book.positions[s]:g} units: {reason}"
                       for s, reason in refused)
    return ValueError(f"the venue {replay.venue.name} refuses to open the book in {mode} mode "
                      f"({what}): {listed}")


def _probe(replay: _Replay, mode: str, leverage: dict) -> tuple[float, float, float]:
    """``(cost, isolated margin, balance)``: what opening the book costs (the fee and any
    opening fee), what it moves into isolated margins (and spot holdings' cost: the engine
    keeps it there), and the deposit that opened it, from a run of the set-up bars only
    with a deposit that covers any margin (and the spot holdings' cost: ``gross`` has it)."""
    key = (mode, tuple(leverage.values()))
    if key not in replay.probes:
        notional = dict(zip(replay.symbols, np.abs(replay.qty * replay.prices), strict=True))
        margins = float(sum(notional[s] / leverage[s] for s in replay.perpetuals))
        balance = replay.book.equity + 2.0 * margins + replay.gross
        result = _run(replay, mode, balance, leverage, bars=SETUP_BARS)
        refused = _refusals(result, replay)
        if refused:
            raise _refusal_error(refused, replay, mode, "whatever the balance")
        account = result.account.iloc[0]
        replay.probes[key] = (balance - float(account["equity"]),
                              float(account["isolated_margin"]), balance)
    return replay.probes[key]


MARGIN_REFUSALS = ("insufficient_margin", "margin_level_below_open_level")


def _held(replay: _Replay, mode: str, equity: float, leverage: dict,
          refused_ok: bool = False) -> Result | None:
    """The run of the book held through the window with ``equity`` at the book's prices
    (None, with ``refused_ok``, where the venue cannot open the book with that equity)."""
    cost, _, balance = _probe(replay, mode, leverage)
    # a hair more than the equity, so that a book whose equity is exactly its margin opens
    # whatever the rounding of ``notional / leverage``
    slack = 1e-12 * (equity + replay.gross)
    result = _run(replay, mode, equity + cost + slack, leverage)
    refused = _refusals(result, replay)
    if refused:
        short = all(reason in MARGIN_REFUSALS for _, reason in refused)
        if not short or mode != "cross" or not replay.pays_funding:
            if refused_ok and short:
                return None
            need = "" if not short else (
                "; an isolated book needs at least the margins of its positions"
                + (" and the cost of its spot holdings" if replay.spot.any() else "") + ", "
                if mode == "isolated" else "; ") + "lower the leverage or raise the equity"
            raise _refusal_error(refused, replay, mode, f"equity {equity:,.2f}, leverage "
                                 f"{_leverage_text(leverage)}{need}")
        result = _run(replay, mode, balance, leverage, drain=balance - cost - equity)
    liq = result.liquidations
    if not (len(liq) and liq["bar"].iloc[0] < SETUP_BARS):
        reached = float(result.equity.iloc[SETUP_BARS - 1])
        if abs(reached - equity) > 1e-9 * (equity + replay.gross):
            raise RuntimeError(f"replay set-up reached equity {reached!r}, not {equity!r}")
    return result


def _leverage_text(leverage: dict) -> str:
    values = set(leverage.values())
    if len(values) == 1:
        return f"{values.pop():g}x"
    return ", ".join(f"{s} {v:g}x" for s, v in leverage.items())


# --- the smallest buffer that survives ------------------------------------------------------


def _survival(replay: _Replay, mode: str, tolerance: float):
    """``(buffer, leverages)``: the smallest surviving equity over the gross notional, and
    for isolated the largest surviving leverage of each symbol (None for cross)."""
    if mode == "cross":
        return _cross_buffer(replay, tolerance), None
    return _isolated_buffer(replay, tolerance)


def _cross_buffer(replay: _Replay, tolerance: float) -> float:
    gross = replay.gross
    leverage = _book_leverage(replay)

    def survives(equity: float) -> bool:
        result = _held(replay, "cross", equity, leverage, refused_ok=True)
        return result is not None and len(result.liquidations) == 0

    low, high = 0.0, gross
    while not survives(high):
        low, high = high, 2.0 * high
        if high > LARGEST_BUFFER * gross:
            return math.inf
    while high - low > tolerance * gross:
        middle = 0.5 * (low + high)
        if survives(middle):
            high = middle
        else:
            low = middle
    return float(high / gross)


def _isolated_buffer(replay: _Replay, tolerance: float):
    """Each position's smallest surviving margin fraction ``f = 1 / leverage``, all searched
    together: isolated positions are liquidated one by one, so one run tests every symbol's
    candidate at once."""
    symbols = replay.perpetuals  # a spot holding has no margin to search: it is paid in full
    notional = np.abs(replay.qty * replay.prices)[~replay.spot]
    smallest = np.array([1.0 / _leverage_cap(replay, s, n)
                         for s, n in zip(symbols, notional, strict=True)])
    low, high = smallest.copy(), smallest.copy()  # low: liquidated; high: survives
    searching = _isolated_liquidated(replay, smallest)  # even at the cap: search above it
    high[searching] = np.maximum(1.0, smallest[searching])
    while searching.any():  # an upper bound that survives: 1x, then 2, 4... times notional
        liquidated = _isolated_liquidated(replay, np.where(np.isfinite(high), high, 1.0))
        searching &= liquidated
        low[searching] = high[searching]
        high[searching] *= 2.0
        gone = searching & (high > LARGEST_BUFFER)
        high[gone] = np.inf
        searching &= ~gone
    while True:
        open_ = np.isfinite(high) & (high - low > tolerance)
        if not open_.any():
            break
        middle = np.where(open_, 0.5 * (low + high), np.where(np.isfinite(high), high, 1.0))
        liquidated = _isolated_liquidated(replay, middle)
        high = np.where(open_ & ~liquidated, middle, high)
        low = np.where(open_ & liquidated, middle, low)
    leverages = {s: float(1.0 / f if np.isfinite(f) else 0.0)
                 for s, f in zip(symbols, high, strict=True)}
    if not np.isfinite(high).all():
        return math.inf, leverages
    _, margin, _ = _probe(replay, "isolated", dict(leverages))
    return float(margin / replay.gross), leverages


def _isolated_liquidated(replay: _Replay, fractions: np.ndarray) -> np.ndarray:
    """Which perpetual positions are liquidated in the window, each isolated with the margin
    ``fraction * notional``, the wallet left empty (spot holdings paid in full)."""
    leverage = {s: 1.0 / f for s, f in zip(replay.perpetuals, fractions, strict=True)}
    _, margin, _ = _probe(replay, "isolated", leverage)
    result = _held(replay, "isolated", margin, leverage)
    hit = set(result.liquidations["symbol"])
    return np.array([s in hit for s in replay.perpetuals], dtype=bool)


def _leverage_cap(replay: _Replay, symbol: str, notional: float) -> float:
    """The venue's leverage cap for ``symbol``'s position: that of the tier its size is in."""
    spec = replay.venue.spec(symbol)
    size = notional
    if spec.tier_unit != "quote":  # tiers in contracts: the size in contracts
        size = abs(replay.book.positions[symbol]) / spec.params.get("contract_size", 1.0)
    return spec.tiers[spec.tier_for_notional(size)].max_leverage

