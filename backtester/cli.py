"""``backtester`` on the command line: run, data import, venues."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import shutil
import sys
from pathlib import Path

from . import __version__
from ._first_run import load_then_choose
from .atomic import build_folder, staging_folder
from .cli_common import (
    PAIR_FLAGS,
    RUN_FLAGS,
    add_market_options,
    add_sizing_option,
    in_cli_terms,
    market_from_options,
    names,
    pair_legs,
    pair_symbols,
    quietly,
    strategy_from_options,
    wrapped,
)
from .result import REPORT_FILES, entries, saved_run_extras


def _add_run(sub) -> None:
    p = sub.add_parser(
        "run",
        help="backtest a strategy (default: the built-in hedged pair) under cross and isolated",
        description="Backtest a strategy under cross and/or isolated margin and save the equity "
        "curves, fills, liquidations and funding as parquet. Without --strategy: a "
        "notional-neutral hedged pair (long the first symbol, short the second).",
    )
    p.add_argument("--strategy", metavar="NAME",
                   help="a built-in strategy (hedged_pair, funding_carry, trend, margin_aware, "
                   "grid) or your own as path/to/file.py:NAME")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a strategy parameter, repeatable (e.g. --param exposure=2)")
    add_market_options(p, "symbols to load; without --strategy LONG,SHORT, e.g. "
                   "BTC_USDT,ETH_USDT")
    p.add_argument("--venue", default="binance_usdm", help="venue rules (default binance_usdm)")
    p.add_argument("--margin-mode", default="both", choices=("cross", "isolated", "both"),
                   help="margin mode of the perpetuals; 'both' runs each and compares (default)")
    p.add_argument("--leverage", type=float,
                   help="leverage of each position (default 10, or the strategy's own); a "
                   "strategy with a 'leverage' parameter not set by --param is given it")
    add_sizing_option(p)
    p.add_argument("--exposure", type=float,
                   help="default hedged pair: each leg's notional as a fraction of equity (1.0)")
    p.add_argument("--rebalance", type=int,
                   help="default hedged pair: bars between rebalances to equal and opposite "
                   "notionals (24)")
    p.add_argument("--balance", type=float, default=10_000.0, help="initial balance, USDT")
    p.add_argument("--collateral", action="append", default=[], metavar="COIN=AMOUNT",
                   help="coins held beside the balance that back the cross account: OKX "
                   "multi-currency margin, Binance Multi-Assets mode, Bybit unified account "
                   "(cross only); repeatable "
                   "(e.g. --collateral BTC=0.5)")
    p.add_argument("--stand-in", action="append", default=[], metavar="SYMBOL=LISTED",
                   help="price a symbol the venue does not list with a listed symbol's "
                   "tables, by choice, recorded in the run (e.g. --stand-in ADA_USDT=BTC_USDT; "
                   "'*=BTC_USDT' for every unlisted symbol); repeatable")
    p.add_argument("--no-order-filters", action="store_true",
                   help="trade any fraction: leave out the venue's quantity step, minimum "
                   "order and price tick (an idealisation)")
    p.add_argument("--path", default="path", choices=("path", "worst", "close"),
                   help="intrabar price path for liquidation checks (path)")
    p.add_argument("--fill-at", default="open", choices=("open", "close"),
                   help="fill at the next bar's open (default) or at the decision close")
    p.add_argument("--slippage", type=float, default=0.0, help="slippage as a fraction (0)")
    p.add_argument("--out", default="results", help="output directory (default ./results)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the runs saved in --out before (the whole folder)")
    p.add_argument("--no-plot", action="store_true", help="do not write equity.png")
    p.set_defaults(func=_cmd_run, flags={**RUN_FLAGS, **PAIR_FLAGS})


def _cmd_run(args) -> int:
    from .backtest import run
    from .data import load_market

    symbols = names(args.symbols)
    if args.strategy:
        args.flags = RUN_FLAGS  # a strategy's parameters are --param NAME=VALUE
        strategy, params = strategy_from_options(args)
        loader = strategy.load_market or load_market
        extra = params if strategy.load_market else {}
    elif args.param:
        raise ValueError("--param sets a strategy's parameters: give --strategy NAME too")
    else:
        symbols = pair_symbols(args)  # the pair loads its two legs only
        loader, extra = load_market, {}
    out = Path(args.out)
    check_run_out(out, args.overwrite)  # after the arguments' own errors, before the work
    cross_only = args.margin_mode == "both" and not venue_has_isolated(args.venue)
    modes = ("cross",) if cross_only else (
        ("cross", "isolated") if args.margin_mode == "both" else (args.margin_mode,))
    market = load_then_choose(
        args, len(modes), lambda: market_from_options(args, loader, symbols=symbols, **extra))
    if args.data is None and not (args.strategy and strategy.load_market):
        print("data: the embedded synthetic dataset (BTC/ETH-like bars, not real history); "
              "real data: --data DIR")
    if args.strategy:
        from .strategy import with_run_leverage

        plan = strategy.plan(market, **with_run_leverage(strategy, params,
                                                         _run_leverage(strategy, args)))
        orders, options = plan.orders, dict(plan.options)
        shown = ", ".join(f"{k}={v}" for k, v in params.items())
        label = f"strategy {strategy.name}" + (f" ({shown})" if shown else "")
        title = f"{strategy.name}"
    else:
        from strategies import hedged_pair

        exposure = 1.0 if args.exposure is None else args.exposure
        long, short = pair_legs(symbols, market)
        orders = hedged_pair(market, long=long, short=short, exposure=exposure,
                             rebalance_every=24 if args.rebalance is None else args.rebalance)
        options = {"target_kind": "equity"}
        label = f"long {long}, short {short}, exposure {exposure:g}x equity per leg"
        title = f"Hedged pair {long}/{short}"
    options.setdefault("leverage", 10.0)
    if args.leverage is not None:
        options["leverage"] = args.leverage
    if args.sizing is not None:
        options["sizing"] = args.sizing
    if cross_only:
        print(f"venue {args.venue} has cross margin only (spot margin): running cross")
    results = {}
    said: set[str] = set()  # (a note once, not once per mode; a run's own under its summary)
    for mode in modes:
        result = quietly(run, market, orders, said=said, listed=lambda r: r.warnings, **{
            **options, "venue": args.venue, "margin_mode": mode, "initial_balance": args.balance,
            "collateral": _amounts(args.collateral), "stand_in": _stand_ins(args.stand_in),
            "order_filters": not args.no_order_filters, "path": args.path,
            "fill_at": args.fill_at, "slippage": args.slippage})
        results[mode] = result
        print(f"\n== {mode} margin: {label} ==")
        print(result.describe())
        liq = result.liquidations
        if len(liq):
            print(f"  liquidations (first 5 of {len(liq)}):")
            cols = ["timestamp", "symbol", "mode", "qty", "price", "margin_lost", "fee"]
            print(liq[cols].head().to_string(index=False, float_format=lambda v: f"{v:,.2f}"))

    def write(folder: Path) -> None:
        """Every file of this command, into a new folder that then replaces --out whole."""
        for mode, result in results.items():
            result.save(folder / mode if len(modes) > 1 else folder)
        if not args.no_plot:
            from .plotting import plot_equity

            leverage = options["leverage"]
            lev_text = f"{leverage:g}x" if not isinstance(leverage, dict) else (
                "per-symbol leverage")
            plot_equity(results, folder / "equity.png", title=f"{title}, {lev_text}")

    build_folder(out, write)
    print()
    for mode in modes:
        print(f"{mode} margin files: {out / mode if len(modes) > 1 else out}/")
    if not args.no_plot:
        print(f"equity curve: {out / 'equity.png'}")
    return 0


def _run_leverage(strategy, args) -> float | None:
    """The leverage ``backtester run`` gives a strategy's ``leverage`` parameter: --leverage;
    without it, the CLI's default 10 only if the parameter has no default of its own
    (otherwise the strategy keeps its default, which its Plan passes on to the run)."""
    if args.leverage is not None:
        return args.leverage
    import inspect

    try:
        found = inspect.signature(strategy.build).parameters.get("leverage")
    except (TypeError, ValueError):
        return None
    return 10.0 if found is not None and found.default is inspect.Parameter.empty else None


def check_run_out(out: Path, overwrite: bool) -> None:
    """``backtester run --out``: a new or empty folder, or with --overwrite one that holds
    only runs that ``backtester run`` saved (it is replaced whole: no stale file survives)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder for the run's files")
    found = entries(out)
    if not found:
        return
    if not overwrite:
        raise ValueError(f"--out {out} is not empty (it holds {', '.join(found[:5])}"
                         f"{' ...' if len(found) > 5 else ''}); pass --overwrite to replace it "
                         "with this run's files, or give another --out")
    foreign = _not_run_output(out)
    if foreign:
        raise ValueError(f"--out {out} holds {', '.join(foreign[:5])}"
                         f"{' ...' if len(foreign) > 5 else ''}, which `backtester run` did not "
                         "write; --overwrite replaces the whole folder, so it replaces only a "
                         "folder of saved runs: move them, or give another --out")


def _not_run_output(folder: Path) -> list[str]:
    """What in ``folder`` a ``backtester run`` (and a ``backtester report`` of it) did not write:
    one saved run, or one per margin mode in cross/ and isolated/, and equity.png."""
    extras = saved_run_extras(folder)
    if extras is not None:
        return [name for name in extras if name != "equity.png"]
    foreign, runs = [], 0
    for name in entries(folder):
        if name in ("cross/", "isolated/") and saved_run_extras(folder / name) is not None:
            runs += 1
            foreign += [name + extra for extra in saved_run_extras(folder / name)]
        elif name.rstrip("/") not in REPORT_FILES | {"equity.png"}:
            foreign.append(name)
    return foreign if runs else entries(folder)


def _add_data(sub) -> None:
    p = sub.add_parser("data", help="data utilities")
    dsub = p.add_subparsers(dest="data_command", required=True)
    imp = dsub.add_parser("import", help="convert a CSV file to the parquet layout")
    imp.add_argument("csv", help="the CSV file")
    imp.add_argument("--symbol", required=True, help="symbol name, e.g. BTC_USDT")
    imp.add_argument("--kind", default="ohlc", choices=("ohlc", "mark", "funding"))
    imp.add_argument("--out", required=True, help="destination directory")
    imp.add_argument("--overwrite", action="store_true",
                     help="replace the file of this symbol and kind if --out holds one")
    imp.add_argument("--timestamp-column", help="name of the time column (detected if omitted)")
    imp.add_argument("--timeframe", help="bar length, e.g. 1h (inferred if omitted)")
    imp.set_defaults(func=_cmd_data_import, flags={
        "timestamp_column": "--timestamp-column", "timeframe": "--timeframe",
        "symbol": "--symbol", "kind": "--kind"})
    _add_data_download(dsub)


def _add_data_download(dsub) -> None:
    from .cli_common import iso_time
    from .data.download import BASE_URL

    d = dsub.add_parser("download", help="fetch history from Binance's public data archive "
                                         "(checksums verified, resumable) into the parquet "
                                         "layout")
    d.add_argument("--venue", required=True, choices=("binance",),
                   help="the archive to fetch from (binance: USDT-M futures)")
    d.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    d.add_argument("--start", required=True, type=iso_time, help="first bar, YYYY-MM-DD")
    d.add_argument("--end", required=True, type=iso_time,
                   help="end of the window (exclusive), YYYY-MM-DD")
    d.add_argument("--timeframe", default="1h", help="bar length (default 1h)")
    d.add_argument("--out", required=True, help="data folder to write the parquet files into")
    d.add_argument("--overwrite", action="store_true",
                   help="replace the files of these symbols if --out holds them")
    d.add_argument("--cache", help="where the archive's zip files are kept, so that a second "
                                   "run resumes (default: OUT/.binance-archive)")
    d.add_argument("--base-url", default=BASE_URL, help=f"the archive (default {BASE_URL})")
    d.set_defaults(func=_cmd_data_download, flags={
        "timeframe": "--timeframe", "start": "--start", "end": "--end", "symbols": "--symbols"})


def _cmd_data_download(args) -> int:
    import warnings

    from .cli_common import names
    from .data import load_market, write_market
    from .data.download import download_binance
    from .data.layouts import project_symbol
    from .data.validate import timeframe_ns

    symbols = [project_symbol(s) for s in names(args.symbols)]
    tf = args.timeframe
    timeframe_ns(tf)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give the data folder to write into")
    targets = [out / f"{s}{kind}" for s in symbols
               for kind in (f"-{tf}.parquet", f"_mark-{tf}.parquet", "_funding.parquet")]
    held = [p.name for p in targets if p.exists()]
    if held and not args.overwrite:
        raise ValueError(f"--out {out} already holds {', '.join(held)}; pass --overwrite to "
                         "replace them, or give another --out")
    cache = Path(args.cache) if args.cache else out / ".binance-archive"
    notes = download_binance(symbols, args.start, args.end, cache, timeframe=tf,
                             base_url=args.base_url)
    for sym, lines in notes.items():
        for line in lines:
            print(f"note: {sym}: {line}", file=sys.stderr)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        market = load_market(cache, symbols=symbols, start=args.start, end=args.end,
                             timeframe=tf)
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    staged = staging_folder(out / "download")
    try:
        written = write_market(market, staged)
        for p in written:
            os.replace(p, out / p.name)
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    for p in written:
        print(f"wrote {out / p.name}")
    return 0


def _cmd_data_import(args) -> int:
    from .data import import_csv

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give the data folder to write the parquet "
                         "file into")
    created = not out.exists()
    staged = staging_folder(out / "import")  # in --out: the final rename stays on one disk
    try:
        written = import_csv(args.csv, staged, args.symbol, kind=args.kind,
                             timestamp_column=args.timestamp_column, timeframe=args.timeframe)
        path = out / written.name
        if path.exists() and not args.overwrite:
            raise ValueError(f"--out {out} already holds {path.name}; pass --overwrite to "
                             "replace it, or give another --out")
        os.replace(written, path)
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    print(f"wrote {path}")
    return 0


def _amounts(pairs: list[str]) -> dict[str, float]:
    """``["BTC=0.5"]`` -> ``{"BTC": 0.5}`` (a clear error for anything else)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        try:
            out[key.strip().upper()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise ValueError(f"--collateral takes COIN=AMOUNT, e.g. BTC=0.5; got {pair!r}")
    return out


def _stand_ins(pairs: list[str]) -> dict[str, str]:
    """``["ADA_USDT=BTC_USDT"]`` -> ``{"ADA_USDT": "BTC_USDT"}`` (a clear error otherwise)."""
    out = {}
    for pair in pairs:
        key, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not key or not value:
            raise ValueError(f"--stand-in takes SYMBOL=LISTED, e.g. ADA_USDT=BTC_USDT (or "
                             f"'*=BTC_USDT'); got {pair!r}")
        out[key] = value
    return out


def venue_has_isolated(name: str) -> bool:
    """Whether a venue's margin model has an isolated mode (spot margin has not)."""
    from .venues import load_venue

    return "isolated" in load_venue(name).margin_model.margin_modes


def _add_venues(sub) -> None:
    p = sub.add_parser("venues", help="list venues, their symbols and tiers; 'venues import' "
                                      "adds symbols from saved API responses")
    p.add_argument("name", nargs="?", help="show one venue's tiers in full")
    p.set_defaults(func=_cmd_venues)


def _cmd_venues(args) -> int:
    from .venues import list_venues, load_venue

    def day(ts) -> str:
        return "" if ts is None else str(ts.date())

    def pct(fraction: float) -> str:
        return f"{fraction * 100:.4g}%"

    names = [args.name] if args.name else list_venues()
    for name in names:
        venue = load_venue(name)
        allows = venue.margin_model.capabilities()
        print(f"{venue.name} (model {venue.model}: {allows}):")
        print(wrapped(venue.description, "  ", ""))
        for k, rule_set in enumerate(venue.rule_history):
            since = day(rule_set.valid_from) or "always"
            until = (day(venue.rule_history[k + 1].valid_from)
                     if k + 1 < len(venue.rule_history) else "now")
            values = ", ".join(f"{key}={value}" for key, value in rule_set.values.items())
            print(wrapped(f"rules {since} .. {until}: {values}", "  "))
        for k, (symbol, spec, until) in enumerate(venue.versions()):
            if k == 0:
                print(f"  {'symbol':<13} {'valid':<24} {'tiers':>5} {'max lev':>7} "
                      f"{'taker':>7} {'liq. fee':>8}  funding (cap)")
            since = day(spec.valid_from) or "always"
            span = f"{since} .. {day(until) or 'now'}"
            funding = (f"{spec.funding_interval_hours:g}h" if spec.funding_interval_hours
                       else "none")
            if spec.funding_rate_cap is not None:
                funding += f" (±{pct(spec.funding_rate_cap)})"
            print(f"  {symbol:<13} {span:<24} {len(spec.tiers):>5} "
                  f"{spec.max_leverage:>6g}x {pct(spec.taker_fee):>7} "
                  f"{pct(spec.liquidation_fee):>8}  {funding}")
            if not args.name:
                continue
            if spec.source:
                print(wrapped(f"source: {spec.source}", " " * 6))
            if any(spec.filters.values()):
                print(wrapped("order filters: " + ", ".join(
                    f"{k} {v:g}" for k, v in spec.filters.items() if v)
                    + f", max position {spec.max_position:,.0f}", " " * 6))
                print(wrapped(f"from: {spec.filter_source}", " " * 8))
            for key, value in spec.params.items():
                print(f"      {key} = {value:g}")
            unit = "notional" if spec.tier_unit == "quote" else "contracts"
            deduction = "cum" if spec.tier_rule == "bracket" else "(whole position, no cum)"
            print(f"      tier  {unit + ' from':>17} - {'to':<15}  mmr      {deduction}")
            for k, tier in enumerate(spec.tiers, 1):
                imr = f"  imr {tier.imr:.2%}" if tier.imr is not None else ""
                print(f"      {k:>4}  {tier.floor:>17,.0f} - {tier.cap:<15,.0f}  "
                      f"{tier.mmr:<7.2%}  {tier.cum:>14,.2f}  max {tier.max_leverage:g}x{imr}")
        if args.name and venue.rule_history:
            print("  rules:")
            for rule_set in venue.rule_history:
                values = ", ".join(f"{k} = {v}" for k, v in rule_set.values.items())
                print(wrapped(f"from {day(rule_set.valid_from) or 'the start'}: {values}",
                           " " * 4))
        for currency, versions in venue.collateral.items():
            for tiers in versions:
                print(f"  collateral {currency} from {day(tiers.valid_from) or 'always'}: "
                      f"{len(tiers.rates)} discount tier(s), bounds in {tiers.unit}")
                if args.name:
                    for lo, hi, rate in zip(tiers.floors, tiers.caps, tiers.rates, strict=True):
                        print(f"      {lo:>17,.0f} - {hi:<15,.0f}  x {rate:g}")
    return 0


def _venues_import_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="backtester venues import",
        description="Write a venue file with the tiers and order filters of saved API "
                    "responses added: Binance leverageBracket / exchangeInfo (or ccxt's "
                    "leverage tiers), Bybit risk-limit / instruments-info, OKX "
                    "position-tiers / instruments.")
    p.add_argument("responses", nargs="+", help="saved JSON responses")
    p.add_argument("--venue", required=True,
                   help="the venue to add them to: a built-in name or a .toml file")
    p.add_argument("--out", required=True, help="the venue file to write (.toml)")
    p.add_argument("--date", help="the responses' date, YYYY-MM-DD, for those that carry no "
                                  "time (Binance leverageBracket, OKX)")
    p.add_argument("--symbols", help="only these symbols, comma-separated (default: all)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


def _cmd_venues_import(argv: list[str]) -> int:
    import datetime as dt

    from .atomic import write_text
    from .venues.importer import import_into

    args = _venues_import_parser().parse_args(argv)
    out = Path(args.out)
    if out.suffix != ".toml":
        raise ValueError(f"--out {out}: a venue file ends in .toml")
    if out.exists() and not args.overwrite:
        raise ValueError(f"--out {out} exists; pass --overwrite to replace it")
    date = None
    if args.date:
        try:
            date = dt.date.fromisoformat(args.date)
        except ValueError:
            raise ValueError(f"--date {args.date!r}: give a date as YYYY-MM-DD") from None
    symbols = [s for s in (args.symbols or "").split(",") if s.strip()]
    text, rows = import_into(args.venue, args.responses, date, symbols or None)
    write_text(out, text)
    for r in rows:
        what = (f"{len(r.tiers)} tier(s)" if r.tiers is not None
                else "filters " + ", ".join(f"{k} {v:g}" for k, v in r.filters.items()))
        print(f"  {r.symbol:<12} from {r.valid_from}  {what}")
    print(f"wrote {out} ({len(rows)} version(s) added); use it with --venue {out}")
    return 0


class _Parser(argparse.ArgumentParser):
    """The command line's parser: an unknown flag gets a "did you mean" (--levrage ->
    --leverage) from the flags of the command given, and a flag of another command is
    named as such (``report --leverage``: an option of compare, run, sweep...)."""

    def parse_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str):
        if message.startswith("unrecognized arguments:"):
            commands = {name: sub for action in self._actions
                        if isinstance(action, argparse._SubParsersAction)
                        for name, sub in action.choices.items()}
            command = next((w for w in getattr(self, "_argv", []) if w in commands), None)
            every = sorted({f for sub in commands.values() for f in sub._option_string_actions})
            own = sorted(commands[command]._option_string_actions) if command else every
            hints = []
            for word in message.split(":", 1)[1].split():
                if not word.startswith("--"):
                    continue
                flag = word.split("=")[0]
                close = difflib.get_close_matches(flag, own, n=1)
                if close:
                    hints.append(f"{word}: did you mean {close[0]}?")
                elif command and flag in every:
                    others = sorted(name for name, sub in commands.items()
                                    if flag in sub._option_string_actions)
                    hints.append(f"{flag} is an option of backtester {', '.join(others)}, "
                                 f"not of backtester {command}")
            if hints:
                message += " (" + "; ".join(hints) + ")"
        super().error(message)


def main(argv: list[str] | None = None) -> int:
    """The command line (``argv``: its words, default ``sys.argv[1:]``). Called without
    ``argv``, as the command, a first run may start again interpreted
    (``backtester._first_run``)."""
    as_command, argv = argv is None, sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["venues", "import"]:
        try:
            return _cmd_venues_import(argv[2:])
        except (ValueError, KeyError, FileNotFoundError) as exc:
            print(f"backtester: error: {exc}", file=sys.stderr)
            return 2
    args = parse(argv)
    try:
        with contextlib.ExitStack() as stack:
            if args.command in ("run", "compare", "sweep", "advise"):
                _first_run_of(args, as_command, stack)
            return int(args.func(args) or 0)
    except BrokenPipeError:  # (``backtester venues | head``: the reader has had enough)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, KeyError, FileNotFoundError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        message = in_cli_terms(str(message), getattr(args, "flags", {}))
        print(f"backtester: error: {message}", file=sys.stderr)
        return 2


def parse(argv: list[str]) -> argparse.Namespace:
    """The command's options (argparse's usage error, and exit, on a bad one)."""
    parser = _Parser(
        prog="backtester",
        description="Backtest leveraged portfolios under cross and isolated margin.",
    )
    parser.add_argument("--version", action="version", version=f"backtester {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    _add_data(sub)
    _add_venues(sub)
    from .cli_sweep import add_sweep_parser
    add_sweep_parser(sub)
    from .cli_report import add_compare_parser, add_report_parser
    add_compare_parser(sub)
    add_report_parser(sub)
    from .cli_advise import add_advise_parser
    add_advise_parser(sub)
    return parser.parse_args(argv)


def _first_run_of(args, as_command: bool, stack: contextlib.ExitStack) -> None:
    """On a cold cache: say what the first minute is spent on, and show it progress; on two
    CPUs, compile parts of the kernel side by side. A small run or comparison started as
    the command instead runs interpreted while the kernels compile in the background
    (``args.first_run``: the choice, made once the command's data are loaded)."""
    from . import _first_run
    from ._compile_progress import KERNELS, compiling_shown
    from ._numba_cache import kernels_cached
    from .engine import precompile

    note = _first_run.started_again_note()
    if note:
        print(note, file=sys.stderr, flush=True)
    package = Path(__file__).resolve().parent
    # (the package's path as numba names its cache by: unresolved)
    if kernels_cached(Path(__file__).parent, KERNELS[args.command]):
        return
    parallel = precompile.worth_it(package)

    def compile_now() -> None:
        progress = stack.enter_context(compiling_shown(args.command, True, parallel))
        if parallel:
            precompile.start_compiling_in_parallel(package, progress.busy)

    if (as_command and args.command in _first_run.COMMANDS
            and _first_run.choice() != "compile"):
        first = args.first_run = _first_run.FirstRun(sys.argv[1:], Path(__file__).parent,
                                                     compile_now)
        first.hold()
        stack.callback(first.release)  # (an error before the choice: what it printed first)
    else:
        compile_now()


if __name__ == "__main__":
    sys.exit(main())
