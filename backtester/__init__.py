"""backtester: leveraged, margined portfolio backtests with cross and isolated margin.

    >>> from backtester import load_market, run
    >>> market = load_market()                  # the embedded two-year hourly dataset
"""

__version__ = "0.1.0"

from pathlib import Path as _Path

from . import _numba_cache

# before any compiled module loads (the path unresolved: numba names its cache by it)
_numba_cache.refresh(_Path(__file__).parent)

from .backtest import run
from .compare import Comparison, compare
from .config import RunConfig
from .data import DataError, DataWarning, Market, import_csv, load_market
from .liquidation import bankruptcy_price, cross_liquidation_prices, liquidation_price
from .result import Result
from .sweep import sweep
from .venues import Venue, list_venues, load_venue

__all__ = [
    "Comparison",
    "DataError",
    "DataWarning",
    "Market",
    "Result",
    "RunConfig",
    "Venue",
    "bankruptcy_price",
    "compare",
    "cross_liquidation_prices",
    "import_csv",
    "liquidation_price",
    "list_venues",
    "load_market",
    "load_venue",
    "run",
    "sweep",
]
