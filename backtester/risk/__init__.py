"""Risk of a strategy beyond its one history: resampled markets and the probability of
liquidation (``bootstrap``, ``montecarlo``), dated crashes replayed on a book (``crashes``),
and auto-deleveraging (``adl``: each position's ADL ranking score, and a stress scenario
that takes one leg of a hedge away); and the advice built on them (``advice``: ``backtester
advise``).

    >>> from backtester.risk import CRASHES
    >>> [w.name for w in CRASHES][0]
    'covid-2020-03-12'
"""

from .adl import AdlStress, adl_formula, adl_ranks, adl_score, adl_stress
from .advice import Advice, Sentence, advise
from .bootstrap import Bootstrap, Paths, optimal_block_length, path_seed
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
from .montecarlo import Configuration, LiquidationRisk, liquidation_risk

__all__ = [
    "CRASHES",
    "AdlStress",
    "Advice",
    "Book",
    "Bootstrap",
    "Configuration",
    "CrashReplay",
    "CrashWindow",
    "LiquidationRisk",
    "Paths",
    "Sentence",
    "adl_formula",
    "adl_ranks",
    "adl_score",
    "adl_stress",
    "advise",
    "book_at",
    "crash_window",
    "liquidation_risk",
    "optimal_block_length",
    "path_seed",
    "portfolio",
    "replay_crash",
    "survival_buffer",
    "surviving_leverage",
    "worst_windows",
]
