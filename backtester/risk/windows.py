"""Dated windows of market history: the crashes shipped with the package, windows named by
a date or an interval, and the worst windows of a market for a book."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..data.market import Market
from .book import Book, utc_time


@dataclass(frozen=True)
class CrashWindow:
    """A dated window of market history: the bars opening in ``[start, end)`` (UTC).

    ``symbols`` are the symbols the window is known for (XRP for the 2023-07-13 ruling);
    a replay may hold any symbol through it.

    Example:
        >>> w = CrashWindow("test", "2020-03-12", "2020-03-14", "two days")
        >>> w.start, w.hours
        (Timestamp('2020-03-12 00:00:00+0000', tz='UTC'), 48.0)
    """

    name: str
    start: pd.Timestamp
    end: pd.Timestamp
    description: str
    symbols: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        start, end = utc_time(self.start, "start"), utc_time(self.end, "end")
        if end <= start:
            raise ValueError(f"window {self.name!r}: end {end} is not after start {start}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "symbols", tuple(self.symbols))

    @property
    def hours(self) -> float:
        """The window's length in hours."""
        return (self.end - self.start) / pd.Timedelta(hours=1)


# Each window is the crash day and the next, UTC (the same window as crash_window("DATE")),
# chosen from Binance USDT-M hourly bars (last and mark): it opens at the midnight before the
# first leg of the move, with the market calm in the hours before, and holds the bottom (or
# top), the second leg where there was one, and the first rebound, which is what a short
# or a hedged book lives through after the move. Figures: the largest move from the
# window's first open, last price and mark.
CRASHES: tuple[CrashWindow, ...] = (
    CrashWindow(
        "covid-2020-03-12", "2020-03-12", "2020-03-14",
        "COVID crash: BTC from 7,938 at the open to 3,621.81 at 2020-03-13 02:00 (-54.4%; "
        "mark low 3,801.83, -52.1%) in two legs (10:00 and 23:00 on the 12th), ETH -56.8% "
        "(mark -55.2%), then back to 5,570 (-29.8%) by the window's end.",
        ("BTC_USDT", "ETH_USDT")),
    CrashWindow(
        "china-ban-2021-05-19", "2021-05-19", "2021-05-21",
        "China ban crash: BTC from 42,883 to 28,688 at 13:00 (-33.1%; mark -31.0%), ETH "
        "-58.5% (mark -47.7%), a second dip to 34,882 at 2021-05-20 00:00, and back to "
        "40,500 (-5.6%) by the end.",
        ("BTC_USDT", "ETH_USDT")),
    CrashWindow(
        "ftx-2022-11-08", "2022-11-08", "2022-11-10",
        "FTX collapse: BTC from 20,579 to 15,462.6 at 2022-11-09 22:00 (-24.9%; mark -24.5%), "
        "ETH -31.7%; ends before the 2022-11-10 CPI rally.",
        ("BTC_USDT", "ETH_USDT")),
    CrashWindow(
        "xrp-ruling-2023-07-13", "2023-07-13", "2023-07-15",
        "XRP ruling squeeze (XRP up): XRP from 0.4706 to 0.965 at 18:00 after the 15:00 "
        "ruling (+105%; mark +97.6%), settling at 0.718 (+52.5%) by the end; a short's "
        "crash.",
        ("XRP_USDT",)),
)


def crash_window(spec) -> CrashWindow:
    """A ``CrashWindow`` from a window, a shipped name, a date or an interval.

    - a ``CrashWindow``: itself;
    - a shipped name (``CRASHES``): ``"covid-2020-03-12"``, ``"china-ban-2021-05-19"``,
      ``"ftx-2022-11-08"``, ``"xrp-ruling-2023-07-13"``;
    - a date, ``"2021-05-19"`` (or a ``date``): that UTC day and the next, 48 hours from
      its midnight, as the shipped windows are;
    - an interval ``"START/END"`` of ISO times (naive = UTC), END excluded:
      ``"2022-11-08T12:00/2022-11-09T12:00"``.

    Example:
        >>> crash_window("2021-05-19").end
        Timestamp('2021-05-21 00:00:00+0000', tz='UTC')
        >>> crash_window("covid-2020-03-12").symbols
        ('BTC_USDT', 'ETH_USDT')
    """
    if isinstance(spec, CrashWindow):
        return spec
    names = {w.name: w for w in CRASHES}
    if isinstance(spec, str) and spec.strip() in names:
        return names[spec.strip()]
    if isinstance(spec, str) and "/" in spec:
        first, _, last = spec.partition("/")
        start, end = utc_time(first.strip(), "START"), utc_time(last.strip(), "END")
        return CrashWindow(spec.strip(), start, end, f"{start} to {end} (UTC, end excluded)")
    if isinstance(spec, str | datetime.date):
        try:
            day = pd.Timestamp(spec)
        except (TypeError, ValueError):
            day = None
        if day is not None and day is not pd.NaT and day == day.normalize():
            day = utc_time(day, "date")
            return CrashWindow(f"{day:%Y-%m-%d}", day, day + pd.Timedelta(days=2),
                               f"{day:%Y-%m-%d} and the next day (UTC)")
    raise ValueError(f"window={spec!r}: give a shipped crash ({', '.join(names)}), a date "
                     "such as '2021-05-19' (that UTC day and the next), an interval "
                     "'START/END' of ISO times, or a CrashWindow")


def worst_windows(market: Market, *, hours: float = 48, count: int = 3,
                  book: Book | None = None, symbol_map=None) -> list[CrashWindow]:
    """The ``count`` windows of ``hours`` in ``market`` with the largest adverse move, worst
    first, none overlapping another.

    Without a book, a window's move is the largest excursion of any symbol's mark from the
    window's first mark open (up or down: ``max(high) / open - 1`` or ``1 - min(low) /
    open``). With a ``book``, it is the largest loss of the book held through the window at
    the book's prices: each position's returns from the window's first mark open applied to
    its notional, every position at its adverse extreme of each bar (the low for a long,
    the high for a short) at once, a conservative view; funding is left out. A book with
    perpetual positions is scored by their loss alone: its spot holdings (``Book.
    instruments``, a carry's long leg) are paid in full and never liquidated, and their gain
    backs no perpetual's margin (in cross as in isolated), so a carry's worst window is the
    one where its short perpetual loses most (a book of spot holdings only: their loss).
    The book's symbols, spot ones included, must be in the market and have a bar throughout
    a window (``symbol_map`` maps a book symbol to a market column).
    Windows are named by their interval, ``"START/END"``, which ``crash_window`` reads back.

    Example:
        >>> from backtester import load_market
        >>> [w.name for w in worst_windows(load_market(), hours=24, count=2)]
        ['2023-03-11T06:00/2023-03-12T06:00', '2023-04-11T12:00/2023-04-12T12:00']
    """
    if not isinstance(market, Market):
        raise ValueError(f"market must be a backtester Market, got {type(market).__name__}")
    if isinstance(count, bool) or not isinstance(count, int | np.integer) or count < 1:
        raise ValueError(f"count={count!r}: must be a positive whole number of windows")
    length = _window_bars(market, hours)
    step = np.diff(market.index)
    if len(step) and not (step == market.bar_ns).all():
        raise ValueError("worst_windows needs a market without missing bar times (its index "
                         "has gaps): load it with align='union'")
    first = market.mark_open[: market.n_bars - length + 1]
    if book is None:
        score, symbol, up = _largest_moves(market, first, length)
    else:
        score = _book_losses(market, first, length, book, symbol_map)
    picked = _non_overlapping(score, length, count)
    windows = []
    for s in picked:
        start = market.timestamps[s]
        end = start + pd.Timedelta(int(length * market.bar_ns), unit="ns")
        name = f"{start:%Y-%m-%dT%H:%M}/{end:%Y-%m-%dT%H:%M}"
        if book is None:
            what = (f"{market.symbols[symbol[s]]} mark {'+' if up[s] else '-'}"
                    f"{score[s]:.1%} from the window's first open")
            symbols = (market.symbols[symbol[s]],)
        else:
            whose = "perpetuals' loss" if book.perpetuals and book.instruments else "book loss"
            what = (f"{whose} {score[s]:,.2f} at its worst point "
                    f"({score[s] / book.equity:.1%} of its equity {book.equity:,.2f})")
            symbols = book.symbols
        windows.append(CrashWindow(name, start, end, f"{hours:g}h window: {what}", symbols))
    return windows


def _window_bars(market: Market, hours) -> int:
    if isinstance(hours, bool) or not isinstance(hours, int | float | np.number) or not (
            hours > 0):
        raise ValueError(f"hours={hours!r}: must be a positive number of hours")
    bars = hours * 3_600e9 / market.bar_ns
    if abs(bars - round(bars)) > 1e-9 or round(bars) < 1:
        raise ValueError(f"hours={hours!r} is not a whole number of the market's "
                         f"{market.bar_ns / 3_600e9:g}h bars")
    if round(bars) > market.n_bars:
        raise ValueError(f"hours={hours!r} is longer than the market ({market.n_bars} bars)")
    return int(round(bars))


def _largest_moves(market: Market, first: np.ndarray, length: int):
    """Per window start: the largest excursion of any symbol from its first mark open, that
    symbol, and whether it was up."""
    n_starts = first.shape[0]
    top = np.full(first.shape, -np.inf)
    bottom = np.full(first.shape, np.inf)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(length):
            top = np.fmax(top, market.mark_high[j: j + n_starts] / first)
            bottom = np.fmin(bottom, market.mark_low[j: j + n_starts] / first)
        rise, fall = top - 1.0, 1.0 - bottom
        move = np.fmax(rise, fall)
    move[~np.isfinite(move)] = -np.inf
    symbol = np.argmax(move, axis=1)
    rows = np.arange(n_starts)
    return move[rows, symbol], symbol, rise[rows, symbol] >= fall[rows, symbol]


def _book_losses(market: Market, first: np.ndarray, length: int, book: Book, symbol_map):
    """Per window start: the book's largest loss along the window (quote currency), every
    position at its adverse extreme of each bar; -inf where a symbol has no bar."""
    mapping = dict(symbol_map or {})
    columns, notional = [], []
    scored = set(book.perpetuals) or set(book.symbols)  # spot legs back no margin
    for symbol in book.symbols:
        column = mapping.get(symbol, symbol)
        if column not in market.symbols:
            raise ValueError(f"book symbol {symbol} is not in the market (it holds "
                             f"{', '.join(market.symbols)}); map it to one of them with "
                             f"symbol_map={{'{symbol}': '{market.symbols[0]}'}}")
        columns.append(market.symbol_index(column))
        notional.append(book.positions[symbol] * book.prices[symbol] if symbol in scored
                        else 0.0)
    if not columns:
        raise ValueError("the book holds no position")
    notional = np.array(notional)
    long = notional > 0.0
    n_starts = first.shape[0]
    base = first[:, columns]
    loss = np.full(n_starts, -np.inf)
    for j in range(length):
        adverse = np.where(long, market.mark_low[j: j + n_starts, columns],
                           market.mark_high[j: j + n_starts, columns])
        loss = np.fmax(loss, -((adverse / base - 1.0) * notional).sum(axis=1))
    loss[np.isnan(loss)] = -np.inf
    invalid = np.zeros(n_starts, dtype=bool)
    for j in range(length):  # a symbol with no bar somewhere in the window: not a window
        invalid |= np.isnan(market.mark_low[j: j + n_starts, columns]).any(axis=1)
    loss[invalid | np.isnan(base).any(axis=1)] = -np.inf
    return loss


def _non_overlapping(score: np.ndarray, length: int, count: int) -> list[int]:
    """The starts of the ``count`` best windows, best first, no two within ``length`` bars."""
    order = np.argsort(-score, kind="stable")
    taken = np.zeros(len(score), dtype=bool)
    picked = []
    for s in order:
        if len(picked) == count or not np.isfinite(score[s]):
            break
        if taken[s]:
            continue
        picked.append(int(s))
        taken[max(0, s - length + 1): s + length] = True
    return picked
