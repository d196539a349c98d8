"""``backtester advise``: cross or isolated, for a strategy, at which leverage."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .cli_common import (
    RUN_FLAGS,
    add_market_options,
    market_from_options,
    names,
    numbers,
    quietly,
    strategy_from_options,
)

ADVISE_FLAGS = {**RUN_FLAGS, "leverages": "--leverage", "n_paths": "--paths", "days": "--days",
                "seed": "--seed", "threshold": "--threshold", "ruin": "--ruin",
                "windows": "--window", "window": "--window", "block": "--block",
                "drift": "--no-drift",
                "crash_history": "--crash-data"}


def _floats(text: str) -> list[float]:
    values = numbers(text, "1,2,5,10")
    if any(not v > 0 for v in values):
        raise argparse.ArgumentTypeError(f"give leverages > 0 separated by commas, got {text!r}")
    return sorted(set(values))


def _book(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        symbol, sep, value = part.partition("=")
        try:
            out[symbol.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not symbol.strip():
            raise argparse.ArgumentTypeError(
                f"--book takes SYMBOL=TARGET pairs separated by commas, e.g. "
                f"BTC_USDT=1,ETH_USDT=-1; got {text!r}")
    return out


def add_advise_parser(sub) -> None:
    """Register ``backtester advise``."""
    p = sub.add_parser(
        "advise",
        help="cross or isolated margin, at which leverage, for a strategy: advice with its "
             "numbers",
        description="Run a strategy on the history and on resampled markets (a stationary "
        "block bootstrap) under cross and isolated margin at each leverage, replay crashes on "
        "its book and stress an auto-deleveraged hedge leg; print advice derived from the "
        "numbers and write an HTML, Markdown and JSON report.")
    add_market_options(p, "symbols to load (default: all in the data)")
    p.add_argument("--strategy", metavar="NAME", default=None,
                   help="a strategy of strategies/ or path/to/file.py:NAME (default: the "
                        "hedged pair, long the first symbol, short the second)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a strategy parameter (repeatable)")
    p.add_argument("--book", type=_book, metavar="SYM=TARGET,...",
                   help="a fixed book instead of a strategy, e.g. BTC_USDT=1,ETH_USDT=-1 "
                        "(fractions of equity, see --target-kind), ordered at the first bar "
                        "and held")
    p.add_argument("--target-kind", choices=("units", "notional", "equity"), default=None,
                   help="what --book's numbers mean (default equity)")
    p.add_argument("--venue", default="binance_usdm", help="venue rules (binance_usdm)")
    p.add_argument("--leverage", type=_floats, default=[1, 2, 3, 5, 10, 20],
                   help="leverages to compare, e.g. 1,2,3,5,10,20 (the default)")
    p.add_argument("--sizing", default=None, metavar="exposure,margin",
                   help="also compare sizings (run option sizing), e.g. exposure,margin")
    p.add_argument("--balance", type=float, default=10_000.0, help="initial balance, USDT")
    p.add_argument("--paths", type=int, default=1000,
                   help="resampled paths per configuration (1000)")
    p.add_argument("--days", type=float, default=365.0, help="horizon of each path, days (365)")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (0)")
    p.add_argument("--block", type=float, default=None,
                   help="mean block length in bars (default: Politis-White's rule)")
    p.add_argument("--no-drift", action="store_true",
                   help="remove each symbol's mean return from the resampled paths (a bull "
                        "market's drift otherwise favours longs)")
    p.add_argument("--threshold", type=float, default=0.05,
                   help="probability of a liquidation within the horizon a beginner accepts "
                        "(0.05)")
    p.add_argument("--ruin", type=float, default=0.5,
                   help="loss that counts as losing the account when comparing modes (0.5)")
    p.add_argument("--crash-data", metavar="DIR",
                   help="a data directory holding dated crash windows to replay (default: "
                        "--data): the shipped crashes it covers and its own worst window")
    p.add_argument("--window", action="append", default=[], metavar="WINDOW",
                   help="a crash window to replay: a shipped name (covid-2020-03-12...), a "
                        "date (that day and the next) or START/END; repeatable")
    p.add_argument("--no-adl", action="store_true",
                   help="skip the auto-deleveraging stress of the hedge's profitable leg")
    p.add_argument("--out", default="results/advice",
                   help="directory for advice.html, advice.md and advice.json")
    p.add_argument("--title", help="report title")
    p.set_defaults(func=_cmd_advise, flags=ADVISE_FLAGS)


def _cmd_advise(args) -> int:
    from .data import load_market
    from .risk import advise
    if args.paths < 10:
        raise ValueError(f"--paths {args.paths}: give at least 10 paths (1000 for advice "
                         "worth reading)")
    if not 0 < args.threshold < 1:
        raise ValueError(f"--threshold {args.threshold}: a probability between 0 and 1")
    if not 0 < args.ruin <= 1:
        raise ValueError(f"--ruin {args.ruin}: a loss fraction in (0, 1]")
    if args.book and (args.strategy or args.param):
        raise ValueError("--book is a fixed book: give either --book or --strategy/--param")
    if args.target_kind and not args.book:
        raise ValueError("--target-kind says what --book's numbers mean: give --book too")
    run_options = {"initial_balance": args.balance}
    params: dict = {}
    loader, extra = load_market, {}
    if args.book:
        strategy = args.book
        run_options["target_kind"] = args.target_kind or "equity"
        label = "the book " + ", ".join(f"{s} {v:+g}" for s, v in args.book.items())
    else:
        args.strategy = args.strategy or "hedged_pair"
        strategy, params = strategy_from_options(args)
        if strategy.load_market:
            loader, extra = strategy.load_market, params
        label = f"strategy {strategy.name}"
    market = market_from_options(args, loader, **extra)
    if args.book:
        unknown = sorted(set(args.book) - set(market.symbols))
        if unknown:
            raise ValueError(f"--book names {', '.join(unknown)}, not in the data "
                             f"({', '.join(market.symbols)})")
    if args.data is None:
        print("data: the embedded synthetic dataset (BTC/ETH-like bars, not real history); "
              "real data: --data DIR")
    crash_history = None
    if args.crash_data:
        crash_history = quietly(load_market, args.crash_data, symbols=names(args.symbols),
                                timeframe=args.timeframe)
    options = None
    if args.sizing:
        options = {"sizing": names(args.sizing, "--sizing")}
    print(f"advising on {label}: {len(args.leverage)} leverages x 2 modes"
          f"{' x ' + str(len(options['sizing'])) + ' sizings' if options else ''}, "
          f"{args.paths:,} resampled paths of {args.days:g} days each...", flush=True)
    started = time.perf_counter()
    advice = quietly(
        advise, market, strategy, params=params, venue=args.venue, leverages=args.leverage,
        options=options, n_paths=args.paths, days=args.days, seed=args.seed,
        threshold=args.threshold, ruin=args.ruin, crash_history=crash_history,
        windows=args.window or None, adl=not args.no_adl, title=args.title,
        block=args.block, drift=not args.no_drift, progress=_progress(args.paths), **run_options)
    print(file=sys.stderr)
    print()
    print(advice.text(width=100))
    print()
    print(advice.risk_table().to_string(index=False))
    if advice.crashes is not None and len(advice.crashes):
        print()
        print(advice.crashes.to_string(index=False))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    html = advice.to_html(out / "advice.html")
    markdown = advice.to_markdown(out / "advice.md")
    data = advice.to_json(out / "advice.json")
    print(f"\nreport: {html}\n        {markdown}\n        {data}")
    print(f"({time.perf_counter() - started:.1f} s)")
    return 0


def _progress(total: int):
    """A line redrawn on a terminal; elsewhere (a log, a pipe) a line when all are done."""
    live = sys.stderr.isatty()

    def show(done: int, _total: int) -> None:
        if live:
            print(f"\r  simulated {done:,} / {total:,} paths", end="", file=sys.stderr,
                  flush=True)
        elif done >= total:
            print(f"  simulated {done:,} / {total:,} paths", file=sys.stderr, flush=True)
    return show
