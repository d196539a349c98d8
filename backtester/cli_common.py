"""What several commands share: the market-selection options and loading the market."""

from __future__ import annotations

import argparse
import re
import textwrap
import warnings
from collections.abc import Mapping

# the flag that sets each keyword a Python error message may name (``leverage='ten'``):
# the CLI prints such a message in its own terms (``--leverage 'ten'``)
WIDTH = 100  # the widest line the command line prints: tables in blocks, text wrapped
MARKET_FLAGS = {"symbols": "--symbols", "start": "--start", "end": "--end",
                "timeframe": "--timeframe"}
RUN_FLAGS = {**MARKET_FLAGS, "initial_balance": "--balance", "leverage": "--leverage",
             "slippage": "--slippage", "venue": "--venue", "path": "--path", "sizing": "--sizing",
             "fill_at": "--fill-at", "margin_mode": "--margin-mode",
             "collateral": "--collateral", "stand_in": "--stand-in",
             "order_filters": "--no-order-filters"}
PAIR_FLAGS = {"exposure": "--exposure", "rebalance_every": "--rebalance"}  # the default pair's


SIZING_HELP = ("what a fraction of equity sizes: 'exposure' (default: the notional, the same at "
               "any leverage) or 'margin' (the initial margin committed: notional = fraction x "
               "equity x leverage, so the exposure grows with the leverage)")


def add_sizing_option(parser) -> None:
    """``--sizing exposure|margin`` (``run(sizing=...)``); None when not given."""
    parser.add_argument("--sizing", choices=("exposure", "margin"), help=SIZING_HELP)


def in_cli_terms(message: str, flags: Mapping[str, str]) -> str:
    """A Python error message in the CLI's words: ``leverage='ten'`` -> ``--leverage 'ten'``,
    ``collateral['BTC']=-1.0`` -> ``--collateral BTC=-1.0``, ``give timeframe=`` -> ``give
    --timeframe``. Only keywords written with their ``=`` are rewritten."""
    for keyword, flag in flags.items():
        before = r"(?<![\w.\[/-])"
        message = re.sub(before + keyword + r"\[(['\"])(.*?)\1\]=", flag + r" \2=", message)
        message = re.sub(before + keyword + r"=(?=[^\s,;)])", flag + " ", message)
        message = re.sub(before + keyword + "=", flag, message)
    return message


def names(text: str | None, flag: str = "--symbols") -> list[str] | None:
    """``"BTC_USDT, ETH_USDT"`` -> ``["BTC_USDT", "ETH_USDT"]``; None -> None. Text that names
    nothing (``","``) or a name twice is an error naming ``flag``."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"{flag} {text!r} names nothing: give names separated by commas")
    twice = sorted({p for p in parts if parts.count(p) > 1})
    if twice:
        raise ValueError(f"{flag} names {', '.join(twice)} twice")
    return parts


def pair_legs(symbols: list[str] | None, market=None) -> tuple[str, str]:
    """The default hedged pair's (long, short), in the CLI's terms: two symbols from
    ``--symbols LONG,SHORT``, or the market's two when it holds exactly two. Without a
    ``market``: only check what ``--symbols`` gives (before loading anything)."""
    if symbols is not None:
        if len(symbols) != 2:
            raise ValueError(f"the default hedged pair needs two symbols, --symbols LONG,SHORT "
                             f"(e.g. BTC_USDT,ETH_USDT); --symbols gives {len(symbols)}: "
                             f"{','.join(symbols)}. Or give --strategy")
        return symbols[0], symbols[1]
    if market is None:
        return "", ""
    if market.n_symbols != 2:
        raise ValueError(f"the data holds {market.n_symbols} symbol(s) "
                         f"({', '.join(market.symbols)}); the default hedged pair needs two: "
                         "choose them with --symbols LONG,SHORT. Or give --strategy")
    return market.symbols[0], market.symbols[1]


def pair_symbols(args) -> list[str]:
    """The default hedged pair's two legs, the only symbols it loads: ``--symbols LONG,SHORT``,
    else the folder's (``--data``, or the embedded dataset) BTC and ETH where it holds both
    (long BTC, short ETH: the pair most researchers start from), else its first two symbols
    in the order it lists them (by name); with a note when the folder holds more."""
    symbols = names(args.symbols)
    if symbols is not None:
        pair_legs(symbols)
        return symbols
    from .data.loader import folder_symbols

    found = folder_symbols(args.data, args.timeframe)
    if len(found) < 2:
        where = f"--data {args.data}" if args.data is not None else "the embedded dataset"
        raise ValueError(f"{where} holds {len(found)} symbol(s)"
                         + (f" with {args.timeframe} bars" if args.timeframe else "")
                         + f" ({', '.join(found) or 'none'}); the default hedged pair needs two, "
                         "--symbols LONG,SHORT. Or give --strategy")
    pair, which = default_pair(found)
    if len(found) > 2:
        print(f"note: the default hedged pair trades the folder's {which}, long {pair[0]}, "
              f"short {pair[1]} (of {len(found)}); choose them with --symbols LONG,SHORT")
    return pair


def default_pair(symbols: list[str]) -> tuple[list[str], str]:
    """``([long, short], which)`` of a folder's symbols: its BTC and ETH (the first of each by
    name, whatever the quote: ``BTC_USDT``, ``BTC/USDT:USDT``), else its first two."""
    first: dict[str, str] = {}
    for symbol in symbols:
        base = symbol.replace("/", "_").split("_")[0].upper()
        first.setdefault(base, symbol)
    if "BTC" in first and "ETH" in first:
        return [first["BTC"], first["ETH"]], "BTC and ETH"
    return list(symbols[:2]), "first two symbols"


def add_market_options(parser, symbols_help: str) -> None:
    """``--data --symbols --timeframe --start --end``: which bars a command runs on."""
    parser.add_argument("--data", help="data directory (default: the embedded dataset)")
    parser.add_argument("--symbols", help=symbols_help)
    parser.add_argument("--timeframe",
                        help="bar length to load when the directory has several, e.g. 1h")
    parser.add_argument("--start", type=iso_time,
                        help="first bar (inclusive), YYYY-MM-DD[THH:MM], e.g. 2023-01-01")
    parser.add_argument("--end", type=iso_time, help="last bar (exclusive), YYYY-MM-DD[THH:MM]")
    parser.add_argument("--common-window", action="store_true",
                        help="trim the data to the window in which every symbol has bars "
                        "(default: each symbol trades from its first bar, with a note)")


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2})?)?(Z|[+-]\d{2}:?\d{2})?")


def iso_time(text: str) -> str:
    """A ``--start``/``--end`` value: only ISO dates (YYYY-MM-DD, optionally a time): a date
    such as 01/05/2021 is 1 May in one country and 5 January in another, and pandas would
    read it silently as the latter."""
    if not _ISO.fullmatch(text.strip()):
        raise argparse.ArgumentTypeError(
            f"{text!r}: give the date as YYYY-MM-DD, optionally with a time (2021-05-01, "
            f"2021-05-01T08:00); other spellings are ambiguous (01/05/2021: May or January?)")
    return text.strip()


def quietly(call, *args, said: set[str] | None = None, listed=None, **kwargs):
    """Call, then print each distinct warning once as a note. ``said``: notes printed
    already (not again), to which these are added; ``listed(value)``: the notes the value
    shows itself (a Result's ``warnings``, which ``describe()`` lists), not printed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call(*args, **kwargs)
    said = set() if said is None else said
    kept = set(listed(value)) if listed is not None else set()
    print_notes({str(w.message) for w in caught} - said - kept)
    said |= {str(w.message) for w in caught}
    return value


def print_notes(messages) -> None:
    """Each message once, in order, as a note wrapped to the console's width."""
    for message in sorted(set(messages)):
        print(wrapped(f"note: {message}"))


def wrapped(text: str, indent: str = "", more: str = "  ") -> str:
    """``text`` wrapped to ``WIDTH`` columns after ``indent``, its further lines indented by
    ``more`` again; words (paths, numbers) never split."""
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent + more,
                         break_long_words=False, break_on_hyphens=False)


def market_from_options(args, loader=None, symbols=None, **extra):
    """The Market the market options select (``loader`` defaults to ``load_market``;
    ``symbols`` to ``--symbols``, else every symbol of the folder)."""
    if loader is None:
        from .data import load_market as loader
    if symbols is None:
        symbols = names(args.symbols)
    if getattr(args, "common_window", False):
        import inspect

        from .data import load_market

        if loader is not load_market and "align" not in inspect.signature(loader).parameters:
            raise ValueError("--common-window trims the folder's data, but this strategy loads "
                             "its own market (its load_market takes no align=)")
        extra = {**extra, "align": "common"}
    return quietly(loader, args.data, symbols=symbols, start=args.start,
                   end=args.end, timeframe=args.timeframe, **extra)


def strategy_from_options(args):
    """``--strategy NAME --param KEY=VALUE``: the strategy and its typed parameters. The
    default hedged pair's ``--exposure`` / ``--rebalance`` are refused beside ``--strategy``
    (its parameters are ``--param``s)."""
    from .strategy import load_strategy

    strategy = load_strategy(args.strategy)
    for flag, value in (("--exposure", getattr(args, "exposure", None)),
                        ("--rebalance", getattr(args, "rebalance", None))):
        if value is not None:
            raise ValueError(
                f"{flag} sets the default hedged pair; with --strategy use --param KEY=VALUE "
                f"(parameters of {strategy.name}: {', '.join(strategy.parameters)})")
    return strategy, strategy.parse(args.param)


def numbers(text: str, example: str = "5,10,20") -> list[float]:
    """``"5,10,20"`` -> ``[5.0, 10.0, 20.0]`` for a flag taking numbers separated by commas."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, e.g. {example}; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"give at least one number, e.g. {example}")
    return values
