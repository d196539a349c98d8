"""``Result``: pandas views over the kernel's records, built on demand."""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from . import metrics
from .atomic import build_folder
from .config import RunConfig
from .data.market import Market
from .engine import enums
from .engine.driver import KernelOutput, funding_fields, funding_payments
from .engine.positions import positions_from_fills
from .venues.models import MarginModel

# the columns of ``Result.account``: the rows of the kernel's record (``enums.Out``), in order
ACCOUNT_COLUMNS = (
    "equity",
    "margin_ratio",
    "wallet_balance",
    "isolated_margin",
    "unrealized_pnl",
    "maintenance_margin",
    "gross_exposure",
    "net_exposure",
)
# what Result.save writes into a run's folder, and what `backtester report` adds to it
RUN_FILES = frozenset({"run.json", "account.parquet", "fills.parquet", "liquidations.parquet",
                       "funding.parquet", "rejections.parquet", "events.parquet",
                       "prices.parquet", "positions.parquet", "liquidation_prices.parquet"})
REPORT_FILES = frozenset({"report.html", "report.md", "report_files", "plotly.min.js"})


def _clauses(parts: list[str], width: int = 100) -> list[str]:
    """``parts`` joined by ", " into lines of at most ``width`` columns (a part longer than
    that on a line of its own), each line after the first indented by two."""
    lines = [parts[0]]
    for part in parts[1:]:
        if len(lines[-1]) + 2 + len(part) <= width:
            lines[-1] += ", " + part
        else:
            lines[-1] += ","
            lines.append("  " + part)
    return lines


class Result:
    """Everything one backtest produced.

    DataFrames (built lazily, cached):

    - ``account``: per bar, ``equity`` (wallet + isolated margin + unrealized
      PnL), ``wallet_balance``, ``isolated_margin``, ``unrealized_pnl``,
      ``maintenance_margin`` (all positions), ``margin_ratio`` (cross MM over
      cross margin balance; liquidation at >= 1; 0 without cross positions),
      ``gross_exposure`` and ``net_exposure`` (quote, at mark);
    - ``fills``, ``liquidations``, ``funding``, ``rejections``: one row per event;
    - ``events``: the other account events, one row each: spot-margin borrowing fees
      (``opening_fee``, ``rollover_fee``, with the rate and amount) and margin calls
      (``margin_call``, symbol None, with the margin level);
    - ``positions``: (bars x symbols) each column's position at each close: recorded with
      ``record_positions=True``, else rebuilt from the fills (the same numbers);
    - ``liquidation_prices``: (bars x symbols) each position's liquidation price at each
      close: recorded with ``record_positions=True``, else computed when first asked, by
      running the same inputs again with the record on (one more run);
    - ``margins``: each position's entry price and what backs it at each close, when
      recorded (``record_margins=True``); ``adl_ranks()`` ranks the positions from it.

    ``warnings``: legal but suspicious data the run went ahead with (a funding rate beyond
    the venue's cap, a mark far from the last price), one line each; ``describe()`` shows
    them and ``save`` keeps them in run.json.
    """

    def __init__(self, *, market: Market, config, venue, output: KernelOutput, margin_mode,
                 leverage, specs: dict | None = None, initial_equity: float | None = None,
                 warnings=(), rerun: Callable[[], KernelOutput] | None = None):
        self.market = market
        self.config = config
        self.venue = venue
        self.output = output
        self.margin_mode = margin_mode
        self.leverage = leverage
        self.specs = specs or {}
        self.warnings: list[str] = list(warnings)
        # what the account held at the start: the deposit, plus collateral coins at their
        # first mark (multi-currency margin); returns are measured from it
        self.initial_equity = float(config.initial_balance if initial_equity is None
                                    else initial_equity)
        self._account = output.account
        self._fills = output.fills
        self._liquidations = output.liquidations
        self._funding = output.funding
        self._rejections = output.rejections
        self._account_events = (output.events if output.events is not None
                                else np.zeros(0, dtype=enums.event_dt))
        self._positions = output.positions
        self._liquidation_prices = output.liquidation_prices
        self._margins = getattr(output, "margins", None)
        self._initial_positions = getattr(output, "initial_positions", None)
        # the same run with positions and liquidation prices recorded (``run`` gives it when
        # they were not): what ``liquidation_prices`` calls when first asked
        self._rerun = rerun

    # --- frames ---------------------------------------------------------------------

    @cached_property
    def account(self) -> pd.DataFrame:
        # (a view of the kernel's per-bar record, not a copy)
        return pd.DataFrame(self._account.T, index=self.market.timestamps,
                            columns=list(ACCOUNT_COLUMNS), copy=False)

    @cached_property
    def equity(self) -> pd.Series:
        """The equity at each bar's close (a view of the kernel's record, not a copy)."""
        return pd.Series(self._account[enums.Out.EQUITY], index=self.market.timestamps,
                         name="equity", copy=False)

    @property
    def returns(self) -> pd.Series:
        """Simple returns of the equity at each bar's close, the first bar's from the initial
        equity (so they compound to ``total_return``), 0 after the equity reached zero:
        what quantstats or empyrical take.

        Example:
            >>> from backtester import load_market, run
            >>> from strategies import hedged_pair
            >>> m = load_market()
            >>> r = run(m, hedged_pair(m), target_kind="equity", leverage=5)
            >>> growth = float((1 + r.returns).prod() - 1)
            >>> abs(growth - r.summary()["total_return"]) < 1e-12
            True
        """
        values = np.concatenate([[float(self.initial_equity)], self.equity.to_numpy()])
        r = metrics.bar_returns(pd.Series(values)).to_numpy()
        return pd.Series(r, index=self.market.timestamps, name="returns")

    @property
    def label(self) -> str:
        """The run's margin mode and leverage in a few words: ``"cross 10x"``, or ``"mixed"``
        when its columns differ."""
        margined = [(enums.MARGIN_MODE_NAMES[m], float(lev)) for m, lev in
                    zip(self.margin_mode, self.leverage, strict=True) if m < enums.Mode.SPOT]
        if margined and len(set(margined)) == 1:
            return f"{margined[0][0]} {margined[0][1]:g}x"
        return "mixed" if margined else "spot"

    def _events(self, records: np.ndarray | dict, names: dict[str, tuple[str, ...]]
                ) -> pd.DataFrame:
        """One row per record (``records``: a record array, or its fields by name)."""
        fields = records if isinstance(records, dict) else {
            name: records[name] for name in records.dtype.names}
        frame = pd.DataFrame(fields)
        frame.insert(0, "timestamp", self.market.timestamps[frame["bar"].to_numpy()])
        symbols = np.asarray((*self.market.symbols, None), dtype=object)  # -1: the account
        frame["symbol"] = symbols[frame["symbol"].to_numpy()] if len(frame) else []
        for column, words in names.items():
            frame[column] = np.asarray(words, dtype=object)[frame[column].to_numpy()] if len(
                frame) else []
        return frame

    @cached_property
    def fills(self) -> pd.DataFrame:
        return self._events(self._fills, {"reason": enums.FILL_REASON_NAMES})

    @cached_property
    def liquidations(self) -> pd.DataFrame:
        return self._events(self._liquidations, {"mode": enums.MARGIN_MODE_NAMES})

    @cached_property
    def funding(self) -> pd.DataFrame:
        return self._events(funding_fields(self._funding), {"mode": enums.MARGIN_MODE_NAMES})

    @cached_property
    def rejections(self) -> pd.DataFrame:
        return self._events(self._rejections, {"reason": enums.REJECT_REASON_NAMES})

    @cached_property
    def events(self) -> pd.DataFrame:
        """Borrowing fees and margin calls (spot margin), one row each."""
        return self._events(self._account_events, {"kind": enums.EVENT_NAMES})

    @cached_property
    def positions(self) -> pd.DataFrame:
        """Each column's position (signed, base units) at each bar's close.

        Recorded by the kernel with ``record_positions=True``; otherwise rebuilt from the
        fills (``engine.positions``: every change of a position is a fill, which records
        the position after it), the same numbers bit for bit, at no cost to the run.
        """
        values = self._positions if self._positions is not None else self._rebuilt_positions()
        return pd.DataFrame(values, index=self.market.timestamps,
                            columns=list(self.market.symbols), copy=False)

    def _rebuilt_positions(self) -> np.ndarray:
        fills = self._fills
        n = self.market.n_symbols
        initial = (np.zeros(n) if self._initial_positions is None
                   else np.ascontiguousarray(self._initial_positions, dtype=np.float64))
        bar = np.ascontiguousarray(fills["bar"], dtype=np.int64)
        symbol = np.ascontiguousarray(fills["symbol"], dtype=np.int64)
        after = np.ascontiguousarray(fills["position_after"], dtype=np.float64)
        keep = (symbol >= 0) & (symbol < n)
        if not keep.all():  # (a loaded run's fill of a symbol it does not hold)
            bar, symbol, after = bar[keep], symbol[keep], after[keep]
        if bar.size > 1 and (bar[1:] < bar[:-1]).any():  # the kernel records them in order
            order = np.argsort(bar, kind="stable")
            bar, symbol, after = bar[order], symbol[order], after[order]
        return positions_from_fills(bar, symbol, after, initial, self.market.n_bars)

    @cached_property
    def liquidation_prices(self) -> pd.DataFrame | None:
        """Each open position's liquidation price at each bar's close (cross: the others
        frozen at their marks); NaN where flat.

        Recorded with ``record_positions=True``. Otherwise computed the first time it is
        asked: the run is replayed with the record on (the same kernel inputs, held by the
        Result until then; the replay must give the same fills and equity, or this raises),
        which costs one more run. None for a run loaded from a folder saved without them.
        """
        if self._liquidation_prices is None and self._rerun is not None:
            self._replay_recorded()
        if self._liquidation_prices is None:
            return None
        return pd.DataFrame(self._liquidation_prices, index=self.market.timestamps,
                            columns=list(self.market.symbols), copy=False)

    def _replay_recorded(self) -> None:
        """Run again with positions and liquidation prices recorded; keep the prices."""
        output = self._rerun()
        same = (len(output.fills) == len(self._fills)
                and np.array_equal(output.account[enums.Out.EQUITY],
                                   self._account[enums.Out.EQUITY], equal_nan=True))
        if not same:
            raise RuntimeError(
                "the liquidation prices were not recorded, and replaying the run to compute "
                "them gave other fills or equity (a strategy callback that is not "
                "deterministic?): run with record_positions=True to record them")
        self._liquidation_prices = output.liquidation_prices
        self._rerun = None  # (its inputs are no longer needed)

    @cached_property
    def margins(self) -> pd.DataFrame | None:
        """What backs each open position at each bar's close (recorded with
        ``record_margins=True``; None otherwise): columns (field, symbol), fields
        ``entry_price``, ``wallet_balance``, ``margin_balance`` and ``maintenance_margin``.
        An isolated position's are its own (the margin it holds, that plus its unrealized
        PnL, its maintenance margin); a cross position's the account's (the wallet, the
        cross margin balance, every cross position's maintenance margin). NaN where flat.
        ``margins["entry_price"]`` is a (bars x symbols) frame. Not saved with the run.
        """
        if self._margins is None:
            return None
        return pd.concat({name: pd.DataFrame(self._margins[f], index=self.market.timestamps,
                                             columns=list(self.market.symbols))
                          for f, name in enumerate(enums.MARGIN_FIELD_NAMES)}, axis=1)

    def adl_ranks(self, formula: str | None = None) -> pd.DataFrame:
        """Each open position's auto-deleveraging score at each close, by the venue's
        published ranking formula (``backtester.risk.adl_ranks`` documents it; the run needs
        ``record_margins=True``).

        Example:
            >>> from backtester import load_market, run
            >>> from strategies import hedged_pair
            >>> m = load_market().slice(0, 100)
            >>> r = run(m, hedged_pair(m), target_kind="equity", record_margins=True)
            >>> r.adl_ranks().attrs["adl_formula"]
            'binance'
        """
        from .risk.adl import adl_ranks

        return adl_ranks(self, formula=formula)

    # --- summary ----------------------------------------------------------------------

    def summary(self) -> dict:
        """The headline figures of the run, as a dict (see ``metrics`` for definitions)."""
        equity = self.equity
        liq = self._liquidations
        fills = self._fills
        strategy_fees = float(fills["fee"][fills["reason"] != enums.FillReason.LIQUIDATION].sum())
        ratio = self.account["margin_ratio"]
        events = self._account_events
        borrowing = events["amount"][events["kind"] != enums.EventKind.MARGIN_CALL]
        return {
            "initial_balance": self.initial_equity,
            "final_equity": float(equity.iloc[-1]) if len(equity) else float("nan"),
            "total_return": metrics.total_return(
                pd.concat([pd.Series([self.initial_equity]), equity], ignore_index=True)
            ),
            "max_drawdown": metrics.max_drawdown(
                pd.concat([pd.Series([self.initial_equity]), equity], ignore_index=True)
            ),
            "sharpe": metrics.sharpe_ratio(equity, self.market.bars_per_year),
            "liquidations": int(len(np.unique(liq["event"]))) if len(liq) else 0,
            # a position once per event (a partial cut and the close after it are two records)
            "liquidated_positions": int(len(np.unique(liq[["event", "symbol"]]))),
            "liquidation_loss": float(liq["margin_lost"].sum()),
            "liquidation_fees": float(liq["fee"].sum()),
            "liquidation_fees_waived": float(liq["fee_waived"].sum()),
            "bankruptcy_shortfall": float(liq["shortfall"].sum()),
            "fees_paid": strategy_fees,
            "funding_paid": float(funding_payments(self._funding).sum()),
            "borrowing_fees": float(borrowing.sum()),
            "margin_calls": int((events["kind"] == enums.EventKind.MARGIN_CALL).sum()),
            "worst_margin_ratio": float(ratio.max()) if len(ratio) else float("nan"),
            "fills": int(((fills["reason"] != enums.FillReason.LIQUIDATION)
                          & (fills["reason"] != enums.FillReason.ADL)).sum()),
            "rejected_orders": int(len(self._rejections)),
        }

    def rules_used(self) -> list[str]:
        """The venue's dated rule changes in force at some bar of the run (Bybit's margin
        formula, Kraken's levels...), oldest first, as ``"from DATE: key=value, ..."``."""
        history = getattr(self.venue, "rule_history", ())
        if not history or not self.market.n_bars:
            return []
        end = pd.Timestamp(int(self.market.index[-1]), tz="UTC")
        return [f"from {r.valid_from.date() if r.valid_from is not None else 'the start'}: "
                + ", ".join(f"{k}={v}" for k, v in r.values.items())
                for r in history if r.valid_from is None or r.valid_from <= end]

    def __repr__(self) -> str:
        """One line: venue, modes, span and the headline figures (not the object's address)."""
        if not self.market.n_bars:
            return f"<Result {self.venue.name}: no bars>"
        s = self.summary()
        return (f"<Result {self.venue.name}, {self._modes_text()}, "
                f"{self.market.timestamps[0]:%Y-%m-%d} -> {self.market.timestamps[-1]:%Y-%m-%d}"
                f" ({self.market.n_bars} bars): final equity {s['final_equity']:,.2f} "
                f"({s['total_return']:+.2%}), {s['liquidations']} liquidation(s)>")

    def describe(self) -> str:
        """The summary as aligned text lines, for a terminal."""
        s = self.summary()
        sizing = []
        if getattr(self.config, "target_kind", "") == "equity":  # what a fraction sized
            sizing = (["sizing margin (equity fractions as initial margin, x leverage)"]
                      if getattr(self.config, "sizing", "exposure") == "margin"
                      else ["sizing exposure (equity fractions as notional)"])
        modes = self._modes_text().split(", ")
        lines = _clauses([f"venue {self.venue.name}", f"margin {modes[0]}", *modes[1:],
                          f"path {self.config.path}", f"fills at {self.config.fill_at}",
                          *sizing])
        symbols = list(self.market.symbols)
        lines += _clauses([f"{self.market.timestamps[0]} -> {self.market.timestamps[-1]} "
                           f"({self.market.n_bars} bars", *symbols[:-1], f"{symbols[-1]})"])
        rows = [
            ("initial balance", f"{s['initial_balance']:,.2f}"),
            ("final equity", f"{s['final_equity']:,.2f}"),
            ("total return", f"{s['total_return']:.2%}"),
            ("max drawdown", f"{s['max_drawdown']:.2%}"),
            ("sharpe (annualised)", f"{s['sharpe']:.2f}"),
            ("liquidations", f"{s['liquidations']} ({s['liquidated_positions']} positions)"),
            ("liquidation loss", f"{s['liquidation_loss']:,.2f}"),
            ("liquidation fees", f"{s['liquidation_fees']:,.2f}"
             + (f" ({s['liquidation_fees_waived']:,.2f} more waived: nothing left to pay)"
                if s["liquidation_fees_waived"] > 0 else "")),
            ("bankruptcy shortfall", f"{s['bankruptcy_shortfall']:,.2f}"),
            ("trading fees", f"{s['fees_paid']:,.2f}"),
        ]
        # the model's rows: cost of carry and risk (funding and the margin ratio, or spot
        # margin's borrowing fees and margin level); a venue no longer loadable: a futures one
        rows += getattr(self.venue, "margin_model", MarginModel()).summary_rows(self, s)
        rows.append(("fills / rejected", f"{s['fills']} / {s['rejected_orders']}"))
        borrowed: dict[str, set] = {}  # the user's choice, recorded: never a silent stand-in
        for sym, versions in self.specs.items():
            for spec in versions:
                if getattr(spec, "stand_in", ""):
                    borrowed.setdefault(spec.stand_in, set()).add(sym)
        for table, syms in sorted(borrowed.items()):
            text = f"{table}'s table for {', '.join(sorted(syms))} (stand_in)"
            for k, line in enumerate(textwrap.wrap(text, 72)):
                rows.append(("stand-in tables" if k == 0 else "", line))
        if not getattr(self.config, "order_filters", True):
            rows.append(("order filters", "off: any fraction traded (order_filters=False)"))
        width = max(len(k) for k, _ in rows)
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        if self.warnings:
            lines.append(f"  warnings ({len(self.warnings)}):")
            lines += [textwrap.fill(text, 100, initial_indent="    - ", subsequent_indent=" " * 6,
                                    break_long_words=False, break_on_hyphens=False)
                      for text in self.warnings]
        return "\n".join(lines)

    def _modes_text(self) -> str:
        parts = [
            f"{sym} {enums.MARGIN_MODE_NAMES[m]} {lev:g}x"
            for sym, m, lev in zip(self.market.symbols, self.margin_mode, self.leverage,
                                   strict=True)
        ]
        return ", ".join(parts)

    def metrics(self) -> dict:
        """The summary plus CAGR, volatility, Sortino, Calmar, drawdown duration, exposure,
        turnover and the closest distance to liquidation (``metrics.run_metrics``)."""
        return metrics.run_metrics(self)

    def stats(self) -> pd.Series:
        """``metrics()`` as a pandas Series named by the run's ``label`` (``pd.concat`` of
        several runs' stats gives a table)."""
        return pd.Series(self.metrics(), name=self.label)

    def plot(self, path=None, title: str | None = None):
        """The equity curve with each liquidation marked on it, and the drawdown below, as
        a matplotlib Figure (saved to ``path`` when given: .png, .svg, .pdf)."""
        from .report.figures import run_figure

        figure = run_figure(self, title)
        if path is not None:
            figure.savefig(path)
        return figure

    def _repr_html_(self) -> str:
        """In a notebook: the one-line summary, the headline figures and the equity plot."""
        import base64
        import html as _html

        from .report.figures import png_bytes
        from .report.tables import format_metrics

        if not self.market.n_bars:
            return f"<pre>{_html.escape(repr(self))}</pre>"
        table = format_metrics(pd.DataFrame({self.label: self.metrics()}))
        picture = base64.b64encode(png_bytes(self.plot(), dpi=70)).decode()
        return (f"<p><code>{_html.escape(repr(self))}</code></p>"
                f"{table.to_html(index=False, border=0)}"
                f'<img src="data:image/png;base64,{picture}" style="max-width:100%">')

    # --- persistence ----------------------------------------------------------------------

    def save(self, directory, *, overwrite: bool = True) -> Path:
        """Write every frame as parquet, plus run.json (config and summary), to ``directory``.

        The files are written to a temporary folder beside ``directory`` that then takes
        its place, so a crash leaves the run saved there before or this one, never a mix.
        A run saved there before is replaced whole (``overwrite=False``: refused); a
        folder that holds anything else is refused (nothing but saved runs is replaced).

        The positions and liquidation prices at every close are saved too (computed now if
        the run did not record them), unless the run was given ``record_positions=False``.

        Example:
            >>> import tempfile
            >>> from backtester import load_market, run
            >>> from strategies import hedged_pair
            >>> market = load_market().slice(0, 200)
            >>> folder = Path(tempfile.mkdtemp()) / "run"
            >>> _ = run(market, hedged_pair(market), target_kind="equity").save(folder)
            >>> (folder / "run.json").exists()
            True
        """
        target = Path(directory)
        check_save_target(target, overwrite)
        return build_folder(target, self._write_files)

    def _write_files(self, out: Path) -> None:
        self.account.to_parquet(out / "account.parquet")
        for name in ("fills", "liquidations", "funding", "rejections", "events"):
            getattr(self, name).to_parquet(out / f"{name}.parquet", index=False)
        # the run's prices, so that a saved run can be reported on without its data
        pd.concat({"close": self.market.frame("close"),
                   "mark_close": self.market.frame("mark_close")}, axis=1).to_parquet(
            out / "prices.parquet")
        # the per-bar positions and liquidation prices, unless the run was told not to keep
        # them (record_positions=False); the default run's are computed here
        if getattr(self.config, "record_positions", None) is not False:
            self.positions.to_parquet(out / "positions.parquet")
            if self.liquidation_prices is not None:
                self.liquidation_prices.to_parquet(out / "liquidation_prices.parquet")
        config = {
            f.name: _plain(getattr(self.config, f.name)) for f in dataclasses.fields(self.config)
        }
        config["venue"] = self.venue.name
        config["margin_mode"] = dict(zip(self.market.symbols, (
            enums.MARGIN_MODE_NAMES[m] for m in self.margin_mode), strict=True))
        config["leverage"] = dict(zip(self.market.symbols, map(float, self.leverage), strict=True))
        meta = {
            "config": config,
            "symbols": list(self.market.symbols),
            "start": str(self.market.timestamps[0]),
            "end": str(self.market.timestamps[-1]),
            "venue_specs": {sym: [spec.label for spec in versions]
                            for sym, versions in self.specs.items()},
            "venue_rules": self.rules_used(),
            "summary": self.summary(),
            "warnings": self.warnings,
        }
        if self._initial_positions is not None and np.any(self._initial_positions):
            # (collateral coins held from the start: with the fills, the positions)
            meta["initial_positions"] = [float(q) for q in self._initial_positions]
        (out / "run.json").write_text(json.dumps(meta, indent=2, default=str))

    @classmethod
    def load(cls, directory, market: Market | None = None) -> Result:
        """Read back a run that ``save`` wrote (read-only use: frames, summary, reports).

        Only closing prices are saved (``prices.parquet``: close and mark close):
        pass the ``market`` the run used (it must hold the saved symbols and bars)
        for the full bars; without it open/high/low are NaN and the closes are the
        saved ones, enough for mark-based figures (liquidation distance,
        per-position PnL).
        """
        folder = Path(directory)
        meta = json.loads((folder / "run.json").read_text())
        symbols = tuple(meta["symbols"])
        account = pd.read_parquet(folder / "account.parquet")
        index = account.index.as_unit("ns").asi8
        if market is None:
            market = _priceless_market(symbols, index, folder / "prices.parquet")
        else:
            market = _saved_window(market, symbols, index, folder)
        frames = {name: pd.read_parquet(folder / f"{name}.parquet")
                  for name in ("fills", "liquidations", "funding", "rejections")}
        events_file = folder / "events.parquet"  # runs saved before events existed have none
        events = (_records(pd.read_parquet(events_file), enums.event_dt, symbols,
                           {"kind": enums.EVENT_NAMES})
                  if events_file.exists() else np.zeros(0, dtype=enums.event_dt))
        grids = {name: pd.read_parquet(folder / f"{name}.parquet").to_numpy(dtype=float)
                 if (folder / f"{name}.parquet").exists() else None
                 for name in ("positions", "liquidation_prices")}
        saved = meta["config"]
        fields = {f.name for f in dataclasses.fields(RunConfig)}
        config = RunConfig(**{k: v for k, v in saved.items() if k in fields})
        try:
            from .venues import load_venue

            venue = load_venue(saved["venue"], **dict(saved.get("venue_overrides") or {}))
        except Exception:  # a venue file that is gone or changed: keep its name only
            venue = _NamedVenue(saved["venue"])
        state = np.full((enums.N_STATE, len(symbols)), np.nan)
        output = KernelOutput(
            account=np.ascontiguousarray(account[list(ACCOUNT_COLUMNS)].to_numpy().T),
            fills=_records(frames["fills"], enums.fill_dt, symbols,
                           {"reason": enums.FILL_REASON_NAMES}),
            liquidations=_records(frames["liquidations"], enums.liquidation_dt, symbols,
                                  {"mode": enums.MARGIN_MODE_NAMES}),
            funding=_records(frames["funding"], enums.funding_dt, symbols,
                             {"mode": enums.MARGIN_MODE_NAMES}),
            rejections=_records(frames["rejections"], enums.rejection_dt, symbols,
                                {"reason": enums.REJECT_REASON_NAMES}),
            events=events, positions=grids["positions"],
            liquidation_prices=grids["liquidation_prices"],
            state=state, wallet_balance=float(account["wallet_balance"].iloc[-1]),
            initial_positions=np.array(meta.get("initial_positions", [0.0] * len(symbols)),
                                       dtype=np.float64),
        )
        mode = np.array([enums.MARGIN_MODE_NAMES.index(saved["margin_mode"][s])
                         for s in symbols], dtype=np.int64)
        leverage = np.array([saved["leverage"][s] for s in symbols], dtype=np.float64)
        return cls(market=market, config=config, venue=venue, output=output, margin_mode=mode,
                   leverage=leverage, warnings=meta.get("warnings", ()))


def _listing(names: list[str], shown: int = 5) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def entries(folder: Path) -> list[str]:
    """The names in ``folder``, sorted, a folder's with a trailing slash."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())


def saved_run_extras(folder: Path) -> list[str] | None:
    """None if ``folder`` holds no saved run (no run.json); else the names in it that
    neither ``Result.save`` nor ``backtester report`` wrote."""
    if not (folder / "run.json").is_file():
        return None
    return [name for name in entries(folder) if name.rstrip("/") not in RUN_FILES | REPORT_FILES]


def check_save_target(target: Path, overwrite: bool) -> None:
    """Refuse to save a run where saving would destroy something that is not a saved run."""
    if not target.exists():
        return
    if not target.is_dir():
        raise ValueError(f"{target} is a file; a run is saved as a folder of files: give the "
                         "path of a new or empty folder")
    extras = saved_run_extras(target)
    if extras is None:
        found = entries(target)
        if found:
            raise ValueError(f"{target} is not empty and holds no saved run (it holds "
                             f"{_listing(found)}); saving replaces a saved run only: give a "
                             "new or empty folder")
        return
    if extras:
        raise ValueError(f"{target} holds a saved run and also {_listing(extras)}, which saving "
                         "over the run would delete: move them, or give another folder")
    if not overwrite:
        raise ValueError(f"{target} holds a saved run; pass overwrite=True to replace it, or "
                         "give another folder")


class _NamedVenue:
    """Stands in for a venue that can no longer be loaded: reports need only its name."""

    def __init__(self, name: str):
        self.name = name


def _records(frame: pd.DataFrame, dtype: np.dtype, symbols, names: dict) -> np.ndarray:
    """A saved event frame back into the kernel's record array (names -> codes)."""
    records = np.zeros(len(frame), dtype=dtype)
    for field_name in dtype.names:
        if field_name not in frame:  # a field added after the run was saved
            records[field_name] = np.nan if records[field_name].dtype.kind == "f" else 0
            continue
        column = frame[field_name]
        if field_name == "symbol":
            column = pd.Index(symbols).get_indexer(column)
        elif field_name in names:
            column = pd.Index(names[field_name]).get_indexer(column)
        records[field_name] = np.asarray(column)
    return records


def _priceless_market(symbols: tuple, index: np.ndarray, prices_file: Path) -> Market:
    """A Market of the saved bars: the saved closes where a prices file exists, else NaN."""
    nan = np.full((len(index), len(symbols)), np.nan)
    close = mark_close = nan
    if prices_file.exists():
        prices = pd.read_parquet(prices_file)
        close = np.ascontiguousarray(prices["close"][list(symbols)].to_numpy(dtype=float))
        mark_close = np.ascontiguousarray(
            prices["mark_close"][list(symbols)].to_numpy(dtype=float))
    steps = np.diff(index)
    bar_ns = int(steps.min()) if len(steps) else 3_600_000_000_000
    return Market(symbols=symbols, index=index, open=nan, high=nan, low=nan, close=close,
                  volume=nan, mark_open=nan, mark_high=nan, mark_low=nan, mark_close=mark_close,
                  funding_rate=nan, bar_ns=bar_ns, has_mark=(False,) * len(symbols))


def _saved_window(market: Market, symbols: tuple, index: np.ndarray, folder: Path) -> Market:
    """The bars of ``market`` that the saved run covered; an error if it does not hold them."""
    if tuple(market.symbols) != symbols:
        raise ValueError(f"{folder}: the run holds {', '.join(symbols)} but the market given "
                         f"holds {', '.join(market.symbols)}; load the same symbols in that order")
    start = int(np.searchsorted(market.index, index[0]))
    window = market.index[start:start + len(index)]
    if len(window) != len(index) or not np.array_equal(window, index):
        raise ValueError(f"{folder}: the market given does not hold the run's {len(index)} bars "
                         f"from {pd.Timestamp(int(index[0]), tz='UTC')}; load the data the run "
                         "used")
    return market.slice(start, start + len(index))


def _plain(value):
    """A config value as JSON-friendly data."""
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    if isinstance(value, dict) or hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
