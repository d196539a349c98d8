"""``backtester sweep``: a grid of backtests from the command line, one parquet row per run."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from .cli_common import (
    MARKET_FLAGS,
    WIDTH,
    add_market_options,
    market_from_options,
    print_notes,
    wrapped,
)

DEFAULT_GRID = {
    "margin_mode": ["cross", "isolated"],
    "leverage": [2, 5, 10, 20],
    "exposure": [0.5, 1.0, 2.0],
}
SHOWN = ["sharpe", "total_return", "max_drawdown", "liquidations", "liquidation_loss",
         "worst_margin_ratio", "fills", "rejected_orders"]
# how the console shows them: a short header, and the figure's format
SHOWN_AS = {"sharpe": ("sharpe", "{:.2f}"), "total_return": ("return", "{:+.1%}"),
            "max_drawdown": ("max dd", "{:.1%}"), "liquidations": ("liqs", "{:,.0f}"),
            "liquidation_loss": ("liq loss", "{:,.0f}"), "worst_margin_ratio": ("worst MR",
                                                                               "{:.1%}"),
            "fills": ("fills", "{:,.0f}"), "rejected_orders": ("rejected", "{:,.0f}")}
RUINED = -0.99  # a run that lost this much of its account is not ranked by its Sharpe


def best_table(best, swept: list[str]) -> str:
    """The best runs as console text: a rank, the swept parameters as they were given, the
    figures with short headers (``SHOWN_AS``; percentages as such), in blocks of columns
    within 100 columns (each block repeating the rank)."""
    import pandas as pd

    from .report.tables import console_table

    def shown(value) -> str:
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, pd.Timestamp):  # (a window's bounds)
            return f"{value:%Y-%m-%d}" if value == value.normalize() else f"{value:%Y-%m-%d %H:%M}"
        return str(value)

    table = pd.DataFrame({"#": [str(k) for k in range(1, len(best) + 1)]})
    for column in swept:
        table[column] = [shown(value) for value in best[column]]
    for column in SHOWN:
        if column in best.columns:
            header, form = SHOWN_AS[column]
            table[header] = ["" if value != value else form.format(value)
                             for value in best[column]]
    return console_table(table, WIDTH)


def _whole(least: int):
    """An argparse type: a whole number >= ``least``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {least}, got {text!r}")
        return value
    return parse


def add_sweep_parser(sub) -> None:
    """Register ``backtester sweep`` on the CLI's subparsers."""
    p = sub.add_parser(
        "sweep",
        help="run a grid of backtests (parameters x margin mode x leverage x venue x window)",
        description="Run every combination of a grid of strategy parameters and run options, "
        "write one summary row per run to a parquet dataset as runs finish, and print the best. "
        "Rerunning into the same --out skips the runs already done. Without --grid or -p the "
        f"grid is {DEFAULT_GRID} (the built-in hedged pair, long the first symbol).",
    )
    p.add_argument("--grid", help="TOML file of the grid: name = [values] (a list is swept, "
                   "anything else fixed)")
    p.add_argument("-p", "--param", action="append", default=[], metavar="NAME=V1,V2,...",
                   help="a grid entry (repeatable; overrides --grid), e.g. -p leverage=5,10,20 "
                   "-p margin_mode=cross,isolated -p window=2023-01-01..2024-01-01,2024-01-01..")
    p.add_argument("--strategy", default="strategies:hedged_pair", metavar="NAME",
                   help="a built-in strategy (hedged_pair, funding_carry, trend, margin_aware, "
                   "grid), your own as path/to/file.py:NAME, or MODULE:FUNCTION, a function "
                   "f(market, **params) returning targets (fractions of equity unless "
                   "--target-kind says otherwise), a Callback or a Plan (default: "
                   "strategies:hedged_pair, the vectorized hedged pair)")
    p.add_argument("--target-kind", choices=("units", "notional", "equity"),
                   help="what the strategy's targets mean, unless the grid sets it (default: "
                   "the strategy's own; equity for a function returning bare targets)")
    p.add_argument("--sizing", choices=("exposure", "margin"),
                   help="what a fraction of equity sizes, unless the grid sets it (-p "
                   "sizing=exposure,margin sweeps both): 'exposure' (default: the notional) or "
                   "'margin' (the initial margin: notional = fraction x equity x leverage)")
    add_market_options(p, "symbols to load, e.g. BTC_USDT,ETH_USDT")
    p.add_argument("--backend", default="inprocess", choices=("inprocess", "processes", "dask"),
                   help="where runs execute (inprocess: numba threads; processes: a local "
                   "pool; dask: a Dask cluster). A run whose strategy crashes its process is "
                   "recorded as failed on processes and dask; inprocess, it ends the sweep")
    p.add_argument("--workers", type=_whole(1), help="threads or processes (default: all cores)")
    p.add_argument("--start-method", choices=("fork", "spawn"),
                   help="how --backend processes starts a worker: fork (a copy of this "
                   "process, ready at once) or spawn (a new Python process: about a second of "
                   "CPU each). Default: fork where it is safe (Linux), else spawn")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies dask)")
    p.add_argument("--out", default="sweep_results", help="output directory (sweep_results)")
    p.add_argument("--equity", action="store_true",
                   help="also save every run's equity curve (under OUT/_equity/)")
    p.add_argument("--chunk-size", type=_whole(1), help="runs per task / part file")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    p.add_argument("--run-timeout", type=float, metavar="SECONDS",
                   help="stop a run that takes longer (its strategy's call, or its simulation) "
                   "and record it as failed; needs --backend processes or dask (default: no "
                   "limit)")
    p.add_argument("--repair", action="store_true",
                   help="move files of --out that cannot be read to OUT/_corrupt/ and run "
                   "their runs again")
    p.add_argument("--top", type=_whole(0), default=10,
                   help="rows of the best runs to print (10)")
    p.add_argument("--no-progress", action="store_true", help="no progress line on stderr")
    p.add_argument("--no-report", action="store_true",
                   help="write no report (by default OUT/_report.html and OUT/_report.md: "
                   "heatmaps of the return, Sharpe, drawdown and liquidations over the swept "
                   "parameters, per margin mode, and the table of runs)")
    p.set_defaults(func=_cmd_sweep, flags=MARKET_FLAGS)


def parse_value(text: str):
    """A grid value from the command line: int, float, true/false, or the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_param(text: str) -> tuple[str, list]:
    """``NAME=V1,V2`` -> (NAME, [V1, V2]); a window is START..END (either side may be empty)."""
    name, sep, values = text.partition("=")
    name = name.strip().replace("-", "_")
    if not sep or not name or not values.strip():
        raise ValueError(f"-p {text!r}: write NAME=V1,V2,... e.g. -p leverage=5,10,20")
    items = [v for v in values.split(",") if v.strip()]
    if name == "window":
        windows = []
        for item in items:
            start, dots, end = item.partition("..")
            if not dots:
                raise ValueError(f"-p window: {item!r} is not START..END, e.g. "
                                 "2023-01-01..2024-01-01 (an empty side is open)")
            windows.append([start.strip() or None, end.strip() or None])
        return name, windows
    return name, [parse_value(v) for v in items]


def _strategy(spec: str):
    """The ``StrategyDef`` that ``--strategy`` names: a built-in name, a file's ``NAME``, or a
    ``MODULE:FUNCTION`` (a function is wrapped, as ``backtester run`` does: bare targets it
    returns are fractions of equity)."""
    from .strategy import BUILTIN_STRATEGIES, StrategyDef, load_strategy

    if spec in BUILTIN_STRATEGIES or spec.rpartition(":")[0].endswith(".py"):
        return load_strategy(spec)
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"--strategy {spec!r}: give a built-in strategy "
                         f"({', '.join(BUILTIN_STRATEGIES)}), path/to/file.py:NAME or "
                         "MODULE:FUNCTION, e.g. strategies:hedged_pair")
    try:
        function = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--strategy {spec}: cannot import it ({exc})") from None
    if isinstance(function, StrategyDef):
        return function
    if not callable(function):
        raise ValueError(f"--strategy {spec} is not a function")
    return StrategyDef(name, function)


def _loader_params(strategy, grid: dict) -> dict:
    """The grid's fixed strategy parameters that the strategy's own data loader reads (the
    funding carry's ``symbol`` and ``spot_data``): they select the data, so one value each."""
    if strategy.load_market is None:
        return {}
    from .sweep import RUN_OPTIONS

    fixed = {}
    for name, value in grid.items():
        if name in RUN_OPTIONS or name not in strategy.parameters:
            continue
        if isinstance(value, list):
            if len(value) > 1:
                raise ValueError(f"-p {name}: {strategy.name} loads its data by {name}; sweep "
                                 f"one value of it per sweep, got {value}")
            value = value[0]
        fixed[name] = value
    return fixed


def _check_sweep_options(args) -> None:
    """The options a sweep would refuse, in the command line's terms, before data loads."""
    from pathlib import Path

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder for the sweep's parquet "
                         "dataset")
    if args.run_timeout is not None:
        if not args.run_timeout > 0:
            raise ValueError(f"--run-timeout is a number of seconds > 0, got {args.run_timeout}")
        if args.backend == "inprocess" and not args.scheduler:
            raise ValueError("--run-timeout needs --backend processes (or dask): a run is "
                             "stopped by stopping its worker process, and --backend inprocess "
                             "runs in this one")
    if args.start_method is not None and (args.backend != "processes" or args.scheduler):
        raise ValueError(f"--start-method chooses how --backend processes starts its workers; "
                         f"--backend {'dask' if args.scheduler else args.backend} starts none")


def _cmd_sweep(args) -> int:
    from .sweep import load_grid, sweep
    from .sweep.storage import CorruptSweepFile

    _check_sweep_options(args)
    strategy = _strategy(args.strategy)
    grid = load_grid(args.grid) if args.grid else {}
    for text in args.param:
        name, values = parse_param(text)
        grid[name] = values
    if not grid:
        grid = dict(DEFAULT_GRID)
    if args.target_kind:
        grid.setdefault("target_kind", args.target_kind)
    if args.sizing:
        grid.setdefault("sizing", args.sizing)
    market = market_from_options(args, strategy.load_market, **_loader_params(strategy, grid))
    print(wrapped(
        f"sweep of {args.strategy} on {', '.join(market.symbols)}, {market.n_bars:,} bars "
        f"({market.timestamps[0]} .. {market.timestamps[-1]}), backend {args.backend}"
        + (f" at {args.scheduler}" if args.scheduler else "")))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            table = sweep(market, strategy, grid, out=args.out, backend=args.backend,
                          workers=args.workers, scheduler=args.scheduler,
                          chunk_size=args.chunk_size, equity=args.equity,
                          retry_failed=args.retry_failed, run_timeout=args.run_timeout,
                          repair=args.repair, progress=not args.no_progress,
                          start_method=args.start_method)
    except CorruptSweepFile as exc:
        raise ValueError(exc.message("--repair")) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: the runs finished so far are saved in {args.out}/; run the same "
              "command again to resume", file=sys.stderr)
        return 130
    print_notes(str(w.message) for w in caught)  # once each, not once per run
    failed = table[table["error"].notna()]
    print(f"{len(table):,} runs, {len(failed):,} failed; summary rows in {args.out}/ "
          f"(pandas.read_parquet('{args.out}'))")
    if len(failed):
        counts = failed["error"].value_counts()
        for message, count in counts.head(3).items():
            print(wrapped(f"{count} run(s) failed: {message}", "  "))
    ok = table[table["error"].isna()]
    if len(ok) and args.top > 0:
        swept = [c for c, values in grid.items() if isinstance(values, list) and len(values) > 1
                 and c in table.columns]
        if "window" in grid and isinstance(grid["window"], list):
            swept += ["window_start", "window_end"]
        # a run that lost the account can still show a fine Sharpe (its returns stop when
        # the equity is gone): it is counted apart, never ranked
        # nor can a run whose orders were mostly refused (it barely traded the strategy)
        ruined = ok["total_return"] <= RUINED
        refused = ~ruined & (ok["rejected_orders"] > ok["fills"])
        ranked = ok[~ruined & ~refused]
        best = ranked.sort_values("sharpe", ascending=False, na_position="last").head(args.top)
        if ruined.any():
            print(f"{int(ruined.sum()):,} run(s) lost the account ({-RUINED:.0%} or more): "
                  f"not ranked")
        if refused.any():
            print(f"{int(refused.sum()):,} run(s) had more orders rejected than filled: not "
                  f"ranked (their rows are in {args.out})")
        if len(best):
            print(f"best {len(best)} by Sharpe:")
            print(best_table(best, swept))
    if len(ok) and not args.no_report:
        paths = write_report(ok, grid, args.out, f"Sweep of {args.strategy} on "
                             f"{', '.join(market.symbols)}", failed=len(failed))
        print(f"report: {paths[0]}\n        {paths[1]}")
    return 0


REPORT_METRICS = ["total_return", "sharpe", "max_drawdown"]  # (liquidations: always added)


def report_axes(grid: dict, table) -> tuple[str, str, str | None]:
    """The heatmaps' (x, y, group) for a sweep's report: the first two parameters the runs
    vary (leverage first), one panel per margin mode; with one parameter, margin modes are
    the rows; with none, leverage by margin mode."""
    names = ["window" if name == "window" else name for name in grid]
    varied = [n for n in names if n in table.columns and n != "margin_mode"
              and table[n].astype(str).nunique() > 1]
    varied.sort(key=lambda n: n != "leverage")
    if len(varied) >= 2:
        return varied[0], varied[1], "margin_mode"
    if varied:
        return varied[0], "margin_mode", None
    return "leverage", "margin_mode", None


def write_report(ok, grid: dict, out, title: str, failed: int = 0) -> tuple:
    """Write a sweep's report, ``OUT/_report.html`` (its script ``OUT/_plotly.min.js``) and
    ``OUT/_report.md`` (figures in ``OUT/_report_files/``): names starting with ``_`` are not
    read as the sweep's parquet dataset. ``ok`` holds the runs that did not fail."""
    from pathlib import Path

    import pandas as pd

    from .report.documents import sweep_blocks
    from .report.render import Text, write

    frame = ok.drop(columns=[c for c in ("error",) if c in ok.columns])
    for column in ("window_start", "window_end"):
        if column in frame.columns and frame[column].isna().all():
            frame = frame.drop(columns=column)
    if "window_start" in frame.columns:  # a window as one readable value, START..END
        def day(t):
            return "" if pd.isna(t) else f"{pd.Timestamp(t):%Y-%m-%d}"
        frame = frame.assign(window=[f"{day(a)}..{day(b)}" for a, b in zip(
            frame["window_start"], frame.get("window_end", frame["window_start"]),
            strict=True)])
    x, y, group = report_axes(grid, frame)
    metrics = [m for m in REPORT_METRICS if m in frame.columns]
    blocks = sweep_blocks(frame.reset_index(drop=True), x, y, metrics, group)
    if failed:
        blocks.insert(0, Text(f"{failed} run(s) failed and are not shown (their rows, with "
                              "the error, are in the sweep's parquet dataset).", "note"))
    ruined = int((frame["total_return"] <= RUINED).sum()) if "total_return" in frame else 0
    if ruined:
        blocks.insert(0, Text(f"{ruined} run(s) lost the account ({-RUINED:.0%} or more): "
                              "their Sharpe ratio, over the bars before the loss, says "
                              "nothing of the risk taken.", "note"))
    folder = Path(out)
    # "_": not read as a part of the sweep's parquet dataset, as _report.html
    return (write(title, blocks, folder / "_report.html", script="_plotly.min.js"),
            write(title, blocks, folder / "_report.md"))
