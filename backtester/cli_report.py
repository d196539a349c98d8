"""``backtester compare`` and ``backtester report``: the comparison and saved-run reports."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from ._first_run import load_then_choose
from .cli_common import (
    PAIR_FLAGS,
    RUN_FLAGS,
    WIDTH,
    add_market_options,
    add_sizing_option,
    market_from_options,
    names,
    numbers,
    pair_legs,
    pair_symbols,
    quietly,
    strategy_from_options,
)


def _venues(text: str) -> list[str]:
    try:
        return names(text, "--venue")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--venue ")) from None


def add_compare_parser(sub) -> None:
    """Register ``backtester compare``."""
    p = sub.add_parser(
        "compare",
        help="run a strategy (default: the hedged pair) under cross and isolated margin and "
        "write a comparison report",
        description="Backtest a strategy (default: the built-in notional-neutral hedged pair, "
        "long the first symbol, short the second) under cross and isolated margin, at one or "
        "several leverages and venues; print the metrics side by side and a verdict, and write "
        "report.html (interactive; plotly.min.js beside it, no network needed) and report.md.",
    )
    p.add_argument("--strategy", metavar="NAME",
                   help="compare a built-in strategy (hedged_pair, funding_carry, trend, "
                   "margin_aware, grid) or your own, path/to/file.py:NAME, instead of the "
                   "default hedged pair; built at each --leverage (a 'leverage' parameter not "
                   "set by --param gets it)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of --strategy, repeatable (e.g. --param fast=12)")
    add_market_options(p, "LONG,SHORT symbols, e.g. BTC_USDT,ETH_USDT (with --strategy: the "
                       "symbols to load)")
    p.add_argument("--venue", type=_venues, default=["binance_usdm"],
                   help="venue rules, or several separated by commas (binance_usdm)")
    p.add_argument("--leverage", type=numbers, default=[10.0],
                   help="leverage of each leg, or several separated by commas, e.g. 5,10,20 (10)")
    p.add_argument("--exposure", type=float,
                   help="default hedged pair: each leg's notional as a fraction of equity (1.0; "
                   "with --sizing margin: of equity as each leg's initial margin)")
    p.add_argument("--rebalance", type=int,
                   help="default hedged pair: bars between rebalances to equal and opposite "
                   "notionals (24)")
    add_sizing_option(p)
    p.add_argument("--balance", type=float, default=10_000.0, help="initial balance, USDT")
    p.add_argument("--path", default="path", choices=("path", "worst", "close"),
                   help="intrabar price path for liquidation checks (path)")
    p.add_argument("--fill-at", default="open", choices=("open", "close"),
                   help="fill at the next bar's open (default) or at the decision close")
    p.add_argument("--slippage", type=float, default=0.0, help="slippage as a fraction (0)")
    p.add_argument("--out", default="results/compare",
                   help="directory for report.html and report.md (results/compare)")
    p.add_argument("--title", help="report title")
    p.add_argument("--save-runs", action="store_true",
                   help="also save each run's parquet files in a sub-directory of --out")
    p.set_defaults(func=_cmd_compare, flags={**RUN_FLAGS, **PAIR_FLAGS})


def _cmd_compare(args) -> int:
    from .compare import compare

    symbols = names(args.symbols)
    options = {"initial_balance": args.balance, "path": args.path, "fill_at": args.fill_at,
               "slippage": args.slippage}
    if args.sizing is not None:
        options["sizing"] = args.sizing
    if args.strategy:
        args.flags = RUN_FLAGS  # a strategy's parameters are --param NAME=VALUE
        strategy, params = strategy_from_options(args)
        market = load_then_choose(args, _runs(args), lambda: market_from_options(
            args, strategy.load_market, **(params if strategy.load_market else {})))
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        title = args.title or (f"{strategy.name}" + (f" ({shown})" if shown else "")
                               + ": cross vs isolated")
        comparison = quietly(compare, market, strategy, params=params, leverage=args.leverage,
                             venue=args.venue, title=title, **options)
    else:
        from strategies import hedged_pair

        if args.param:
            raise ValueError("--param sets a strategy's parameters: give --strategy NAME too")
        symbols = pair_symbols(args)  # the pair loads its two legs only
        market = load_then_choose(args, _runs(args),
                                  lambda: market_from_options(args, symbols=symbols))
        long, short = pair_legs(symbols, market)
        exposure = 1.0 if args.exposure is None else args.exposure
        targets = hedged_pair(market, long=long, short=short, exposure=exposure,
                              rebalance_every=24 if args.rebalance is None else args.rebalance)
        per_leg = ("equity as margin per leg" if args.sizing == "margin"
                   else "equity per leg")
        title = args.title or (f"Hedged pair long {long} / short {short}, {exposure:g}x "
                               f"{per_leg}: cross vs isolated")
        comparison = quietly(compare, market, targets, leverage=args.leverage,
                             venue=args.venue, title=title, target_kind="equity", **options)
    out = Path(args.out)
    html = comparison.to_html(out / "report.html")
    markdown = comparison.to_markdown(out / "report.md")
    if args.save_runs:
        for label, result in comparison.results.items():
            result.save(out / label.replace(" ", "_"))
    print(f"\n{comparison.to_text(WIDTH)}\n")
    print(f"report: {html}\n        {markdown}")
    return 0


def _runs(args) -> int:
    """The runs ``backtester compare`` makes: each venue's modes at each leverage."""
    from .cli import venue_has_isolated

    return len(args.leverage) * sum(2 if venue_has_isolated(v) else 1 for v in args.venue)


def add_report_parser(sub) -> None:
    """Register ``backtester report``."""
    p = sub.add_parser(
        "report",
        help="write the report of a saved run (or of the runs saved in its sub-directories)",
        description="Render the HTML and Markdown report of a run saved by `backtester run` or "
        "Result.save(). A directory whose sub-directories hold saved runs (as `backtester run "
        "--margin-mode both` writes) gives a comparison report of them.",
    )
    p.add_argument("result_dir", metavar="RESULT_DIR", help="directory holding run.json")
    p.add_argument("--data", help="the data directory the run used ('embedded' for the "
                   "embedded dataset): the report reads the run's full bars from it (mark "
                   "prices, funding) instead of the closes saved with the run, which a run "
                   "saved without prices.parquet needs for the mark-price figures (distance "
                   "to liquidation, per-position PnL)")
    p.add_argument("--timeframe", help="with --data: the bar length to read when the "
                   "directory holds several, e.g. 1h (default: the saved run's)")
    p.add_argument("--out", help="report path without suffix (default RESULT_DIR/report)")
    p.add_argument("--title", help="report title")
    p.set_defaults(func=_cmd_report, flags={"timeframe": "--timeframe"})


def _saved_runs(folder: Path) -> dict[str, Path]:
    """label -> folder of the saved run(s) that RESULT_DIR names."""
    if (folder / "run.json").is_file():
        runs = {folder.name: folder}
    else:
        runs = {d.name: d for d in sorted(folder.iterdir()) if (d / "run.json").is_file()} \
            if folder.is_dir() else {}
    if not runs:
        raise FileNotFoundError(
            f"{folder} holds no saved run: expected run.json (written by `backtester run` or "
            "Result.save) in it or in its sub-directories")
    return runs


def _timeframe_in(directory: Path, symbols: list[str], bar_ns: int | None) -> str | None:
    """The label of the bar files of ``symbols`` in ``directory`` whose length is ``bar_ns``
    (``BTC_USDT-1h.parquet``: ``1h``), when every symbol has one; else None."""
    from .data.validate import DataError, timeframe_ns

    if bar_ns is None:
        return None
    found = []
    for symbol in symbols:
        labels = []
        for file in sorted(directory.glob(f"{symbol}-*.parquet")):
            label = file.name[len(symbol) + 1:-len(".parquet")]
            try:
                if timeframe_ns(label) == bar_ns:
                    labels.append(label)
            except DataError:  # not a bar file's name
                continue
        if not labels:
            return None
        found.append(labels[0])
    return found[0] if found and len(set(found)) == 1 else None


def _carry_symbol(result, directory: Path) -> str | None:
    """The perpetual of a funding-carry run, whose symbols are the perpetual and its spot
    series (``BTC_USDT`` and ``BTC_USDT_SPOT``) and whose spot bars are in DATA/spot/ as
    ``carry_market`` reads them; None for any other run."""
    from strategies.funding_carry import spot_symbol

    symbols = list(result.market.symbols)
    if len(symbols) != 2 or symbols[1] != spot_symbol(symbols[0]):
        return None
    if dict(result.config.instruments or {}).get(symbols[1]) != "spot":
        return None
    if any(directory.glob(f"{symbols[1]}-*.parquet")):
        return None  # the spot series is a symbol of the directory: read it as one
    return symbols[0]


def _data_market(results: dict, data: str, timeframe: str | None):
    """The runs' bars read from ``--data``: their symbols over their window, at their bar
    length unless ``--timeframe`` says otherwise."""
    import pandas as pd

    from .data import embedded_data_dir, load_market
    from .data.validate import timeframe_label

    first = next(iter(results.values()))
    symbols = list(first.market.symbols)
    differ = [label for label, r in results.items() if list(r.market.symbols) != symbols]
    if differ:
        raise ValueError(f"--data: the runs hold different symbols ({', '.join(differ)} "
                         f"differ from the first, {', '.join(symbols)}); report them one at a "
                         "time")
    bar_ns = first.market.bar_ns if first.market.n_bars > 1 else None
    start = min(r.equity.index[0] for r in results.values())
    end = max(r.equity.index[-1] for r in results.values()) + pd.Timedelta(bar_ns or 1, "ns")
    start, end = (f"{t:%Y-%m-%d %H:%M}" if t == t.floor("min") else t.isoformat()
                  for t in (start, end))
    path = None if data == "embedded" else data
    directory = embedded_data_dir() if path is None else Path(path)
    carry = _carry_symbol(first, directory)
    if timeframe is None:  # the run's own, when the directory holds several
        timeframe = _timeframe_in(directory, [carry] if carry else symbols, bar_ns)
    try:
        if carry:
            from strategies.funding_carry import carry_market

            market = quietly(carry_market, path, start=start, end=end, timeframe=timeframe,
                             symbol=carry)
        else:
            market = quietly(load_market, path, symbols=symbols, start=start, end=end,
                             timeframe=timeframe)
    except ValueError as exc:  # (a DataError) said in the report's terms
        raise ValueError(f"--data {data}, the run's bars from {start} to {end}: "
                         f"{exc}") from None
    if bar_ns is not None and market.bar_ns != bar_ns:
        raise ValueError(f"--data {data}: its bars are {timeframe_label(market.bar_ns)} long "
                         f"but the run's are {timeframe_label(bar_ns)}; give --timeframe "
                         f"{timeframe_label(bar_ns)}, or the data the run used")
    return market


def _load_runs(folder: Path, data: str | None, timeframe: str | None = None) -> dict:
    from .result import Result

    if timeframe is not None and not data:
        raise ValueError("--timeframe chooses the bars read from --data: give --data too")
    runs = _saved_runs(folder)
    results = {}
    for label, path in runs.items():
        try:
            results[label] = Result.load(path)
        except (ValueError, KeyError, OSError) as exc:  # a damaged or partial save
            what = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError | OSError) else exc
            raise ValueError(f"{path}: not a readable saved run ({what}); save it again with "
                             "`backtester run` or Result.save") from exc
    if data:
        market = _data_market(results, data, timeframe)
        try:
            results = {label: Result.load(path, market) for label, path in runs.items()}
        except ValueError as exc:  # the data do not hold the run's bars
            raise ValueError(f"--data {data}: {exc}") from None
    return results


def _cmd_report(args) -> int:
    from .compare import Comparison
    from .report import run_report
    from .report.tables import console_table, wrap

    folder = Path(args.result_dir)
    results = _load_runs(folder, args.data, args.timeframe)
    stem = Path(args.out) if args.out else folder / "report"
    if len(results) == 1:
        (label, result), = results.items()
        title = args.title or f"Backtest {label}: {', '.join(result.market.symbols)}"
        paths = [run_report(result, stem.with_suffix(".html"), title),
                 run_report(result, stem.with_suffix(".md"), title)]
        print("\n".join(textwrap.fill(line, WIDTH, subsequent_indent="  ")
                        if len(line) > WIDTH else line
                        for line in result.describe().splitlines()))
    else:
        comparison = Comparison(results, title=args.title)
        paths = [comparison.to_html(stem.with_suffix(".html")),
                 comparison.to_markdown(stem.with_suffix(".md"))]
        print(console_table(comparison.formatted_table(), WIDTH))
        print(f"\n{wrap(comparison.verdict, WIDTH, keep=tuple(results))}\n")
    print(f"report: {paths[0]}\n        {paths[1]}")
    return 0
