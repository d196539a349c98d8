"""``backtester compare`` and ``backtester report``: the comparison and saved-run reports."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_common import (
    PAIR_FLAGS,
    RUN_FLAGS,
    add_market_options,
    market_from_options,
    names,
    pair_legs,
    quietly,
)


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas, e.g. 5,10,20; got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one number, e.g. 10")
    return values


def _venues(text: str) -> list[str]:
    try:
        return names(text, "--venue")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--venue ")) from None


def add_compare_parser(sub) -> None:
    """Register ``backtester compare``."""
    p = sub.add_parser(
        "compare",
        help="run the hedged pair under cross and isolated margin and write a comparison report",
        description="Backtest the built-in notional-neutral hedged pair (long the first symbol, "
        "short the second) under cross and isolated margin, at one or several leverages and "
        "venues; print the metrics side by side and a verdict, and write report.html (self-"
        "contained) and report.md.",
    )
    add_market_options(p, "LONG,SHORT symbols, e.g. BTC_USDT,ETH_USDT")
    p.add_argument("--venue", type=_venues, default=["binance_usdm"],
                   help="venue rules, or several separated by commas (binance_usdm)")
    p.add_argument("--leverage", type=_floats, default=[10.0],
                   help="leverage of each leg, or several separated by commas, e.g. 5,10,20 (10)")
    p.add_argument("--exposure", type=float, default=1.0,
                   help="each leg's notional as a fraction of equity (1.0)")
    p.add_argument("--rebalance", type=int, default=24,
                   help="bars between rebalances to equal and opposite notionals (24)")
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
    from strategies import hedged_pair

    from .compare import compare

    symbols = names(args.symbols)
    pair_legs(symbols)  # before loading: --symbols must name the two legs
    market = market_from_options(args)
    long, short = pair_legs(symbols, market)
    targets = hedged_pair(market, long=long, short=short, exposure=args.exposure,
                          rebalance_every=args.rebalance)
    title = args.title or (f"Hedged pair long {long} / short {short}, {args.exposure:g}x equity "
                           "per leg: cross vs isolated")
    comparison = quietly(
        compare, market, targets, leverage=args.leverage, venue=args.venue, title=title,
        target_kind="equity", initial_balance=args.balance, path=args.path,
        fill_at=args.fill_at, slippage=args.slippage)
    out = Path(args.out)
    html = comparison.to_html(out / "report.html")
    markdown = comparison.to_markdown(out / "report.md")
    if args.save_runs:
        for label, result in comparison.results.items():
            result.save(out / label.replace(" ", "_"))
    print(f"\n{title}\n")
    print(comparison.formatted_table().to_string(index=False))
    print(f"\n{comparison.verdict}\n")
    print(f"report: {html}\n        {markdown}")
    return 0


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
    p.add_argument("--data", help="the data directory the run used, to add the mark-price "
                   "figures (distance to liquidation, per-position PnL); 'embedded' for the "
                   "embedded dataset")
    p.add_argument("--out", help="report path without suffix (default RESULT_DIR/report)")
    p.add_argument("--title", help="report title")
    p.set_defaults(func=_cmd_report)


def _load_runs(folder: Path, data: str | None) -> dict:
    from .result import Result

    if (folder / "run.json").is_file():
        runs = {folder.name: folder}
    else:
        runs = {d.name: d for d in sorted(folder.iterdir()) if (d / "run.json").is_file()} \
            if folder.is_dir() else {}
    if not runs:
        raise FileNotFoundError(
            f"{folder} holds no saved run: expected run.json (written by `backtester run` or "
            "Result.save) in it or in its sub-directories")
    market = None
    if data:
        import json

        from .data import load_market

        meta = json.loads((next(iter(runs.values())) / "run.json").read_text())
        market = quietly(load_market, None if data == "embedded" else data,
                          symbols=meta["symbols"])
    results = {}
    for label, path in runs.items():
        try:
            results[label] = Result.load(path, market)
        except (ValueError, KeyError, OSError) as exc:  # a damaged or partial save
            what = f"{type(exc).__name__}: {exc}" if isinstance(exc, KeyError | OSError) else exc
            raise ValueError(f"{path}: not a readable saved run ({what}); save it again with "
                             "`backtester run` or Result.save") from exc
    return results


def _cmd_report(args) -> int:
    from .compare import Comparison
    from .report import run_report

    folder = Path(args.result_dir)
    results = _load_runs(folder, args.data)
    stem = Path(args.out) if args.out else folder / "report"
    if len(results) == 1:
        (label, result), = results.items()
        title = args.title or f"Backtest {label}: {', '.join(result.market.symbols)}"
        paths = [run_report(result, stem.with_suffix(".html"), title),
                 run_report(result, stem.with_suffix(".md"), title)]
        print(result.describe())
    else:
        comparison = Comparison(results, title=args.title)
        paths = [comparison.to_html(stem.with_suffix(".html")),
                 comparison.to_markdown(stem.with_suffix(".md"))]
        print(comparison.formatted_table().to_string(index=False))
        print(f"\n{comparison.verdict}\n")
    print(f"report: {paths[0]}\n        {paths[1]}")
    return 0
