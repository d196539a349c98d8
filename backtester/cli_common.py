"""What several commands share: the market-selection options and loading the market."""

from __future__ import annotations

import warnings


def names(text: str | None) -> list[str] | None:
    """``"BTC_USDT, ETH_USDT"`` -> ``["BTC_USDT", "ETH_USDT"]``; None or empty -> None."""
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()] or None


def add_market_options(parser, symbols_help: str) -> None:
    """``--data --symbols --timeframe --start --end``: which bars a command runs on."""
    parser.add_argument("--data", help="data directory (default: the embedded dataset)")
    parser.add_argument("--symbols", help=symbols_help)
    parser.add_argument("--timeframe",
                        help="bar length to load when the directory has several, e.g. 1h")
    parser.add_argument("--start", help="first bar (inclusive), e.g. 2023-01-01")
    parser.add_argument("--end", help="last bar (exclusive)")


def quietly(call, *args, **kwargs):
    """Call, then print each distinct warning once as a note."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call(*args, **kwargs)
    for message in sorted({str(w.message) for w in caught}):
        print(f"note: {message}")
    return value


def market_from_options(args, loader=None, **extra):
    """The Market the market options select (``loader`` defaults to ``load_market``)."""
    if loader is None:
        from .data import load_market as loader
    return quietly(loader, args.data, symbols=names(args.symbols), start=args.start,
                   end=args.end, timeframe=args.timeframe, **extra)
