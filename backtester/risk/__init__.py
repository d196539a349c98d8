"""Risk views of a book: how it fares through dated crashes of market history.

    >>> from backtester.risk import CRASHES
    >>> [w.name for w in CRASHES][0]
    'covid-2020-03-12'
"""

from .crashes import (
    CRASHES,
    Book,
    CrashReplay,
    CrashWindow,
    book_at,
    crash_window,
    portfolio,
    replay_crash,
    survival_buffer,
    surviving_leverage,
    worst_windows,
)

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
