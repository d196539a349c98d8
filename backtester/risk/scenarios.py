"""The advice's scenarios on the history: crashes replayed on the strategy's book, and the
auto-deleveraging of a hedge's profitable leg (``advice.advise`` calls these)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from ..backtest import run
from ..data.market import Market
from ..strategy import Plan, StrategyDef
from .advice import Sentence
from .advice import _lev as lev_text
from .advice import _pct as pct

REFERENCE_LEVERAGE = 10.0


def plan_of(market: Market, strategy, params: Mapping):
    """What ``run()`` takes for ``strategy`` on ``market`` (a fixed book: its first bar)."""
    if isinstance(strategy, StrategyDef):
        return strategy.plan(market, **params)
    if isinstance(strategy, Mapping):
        targets = np.full((market.n_bars, market.n_symbols), np.nan)
        for symbol, value in strategy.items():
            targets[0, market.symbol_index(symbol)] = float(value)
        return targets
    return strategy(market, **params)


def reference_options(plan, run_options) -> dict:
    """The reference run's options: the run options, at the leverage they give, else the
    strategy's own (its Plan's), else 10x."""
    options = dict(run_options)
    if "leverage" not in options and not (isinstance(plan, Plan)
                                          and "leverage" in plan.options):
        options["leverage"] = REFERENCE_LEVERAGE
    return options


def reference_run(market, strategy, params, run_options, margin_mode="cross"):
    """The strategy on the history at its reference leverage (``reference_options``)."""
    plan = plan_of(market, strategy, params)
    return run(market, plan, margin_mode=margin_mode, record_positions=True,
               **reference_options(plan, run_options))


def _book_bar(result) -> int:
    """Today's book: the last bar if it holds positions, else the most exposed bar."""
    positions = result.positions
    if positions is None:
        return result.market.n_bars - 1
    gross = (positions.abs().to_numpy() * np.nan_to_num(result.market.close)).sum(axis=1)
    if gross[-1] > 0:
        return len(gross) - 1
    return int(np.argmax(gross))


def crash_part(reference, market, run_options, crash_history, windows):
    """Replay crash windows on the strategy's book under both modes: the book of
    ``reference`` (the strategy's run on ``market``, ``reference_run``).

    Returns ``(table, replays, sentences, gross notional of the book)``; the table has one
    row per window and mode (survived, the book's return through it, the equity
    ``buffer`` that survives as a share of the gross notional, and for isolated the
    largest surviving leverage, rounded down)."""
    from .book import book_at
    from .crashes import replay_crash
    from .windows import CRASHES, worst_windows

    bar = _book_bar(reference)
    book = book_at(reference, bar)
    gross = book.gross_notional
    if gross <= 0:
        return None, [], [Sentence("buffer", "The strategy holds no position in the history: "
                                   "there is no book to replay crashes on.", {})], None
    history = crash_history if crash_history is not None else market
    if windows:
        chosen = list(windows)
    else:  # the shipped crashes the history holds, and its own worst window besides them
        chosen = [w for w in CRASHES if _covers(history, w, book.positions)]
        for w in worst_windows(history, book=book, count=1 + len(chosen)):
            if not any(w.start < c.end and c.start < w.end for c in chosen):
                chosen.append(w)
                break
    # the replay takes the venue from the book (the reference run's)
    options = {k: v for k, v in run_options.items() if k in ("path", "stand_in",
                                                             "venue_overrides")}
    replays = [replay_crash(book, w, history, **options) for w in chosen]
    rows = []
    for replay in replays:
        summary = replay.summary()
        for mode, row in summary.iterrows():
            rows.append({"window": replay.window.name, "mode": mode,
                         "survived": "yes" if row["survived"] else "no",
                         "liquidations": int(row["liquidations"]),
                         "return": f"{-row['loss_pct']:+.1f}%",
                         "buffer": pct(row["buffer"]),
                         "max iso lev": _leverage_down(row["max_leverage"])})
    table = pd.DataFrame(rows)
    return table, replays, [buffer_sentence(book, replays)], gross


def _leverage_down(value: float) -> str:
    """A surviving leverage as a venue would set it: rounded down (to 0.1 under 10x)."""
    if value != value:
        return ""
    step = 0.1 if value < 10 else 1.0
    return lev_text(round(np.floor(value / step + 1e-9) * step, 1))


def _covers(history: Market, window, positions) -> bool:
    symbols = [s for s in positions if s in history.symbols]
    if len(symbols) < len(positions):
        return False
    ts = history.timestamps
    if window.start < ts[0] or window.end > ts[-1]:
        return False
    rows = (ts >= window.start) & (ts < window.end)
    cols = [history.symbol_index(s) for s in symbols]
    return bool(np.isfinite(history.close[np.ix_(rows, cols)]).all())


def buffer_sentence(book, replays) -> Sentence:
    """The equity buffer that survives the worst replayed crash, per mode, against the
    book's own.

    A book with spot holdings (a funding carry's long leg) counts them in the gross notional
    and in the equity; they have no leverage, so the isolated part names the perpetuals'
    leverage, and its buffer is their margins plus the spot holdings' cost."""
    gross = book.gross_notional
    held = book.equity / gross
    spot = [s for s in book.symbols if book.is_spot(s)]
    numbers = {"gross_notional": gross, "equity": book.equity, "held_buffer": held,
               "time": str(book.time), "spot_holdings": spot}
    worst = {}
    for replay in replays:
        for mode, need in replay.buffers.items():
            if mode not in worst or need > worst[mode][0]:
                worst[mode] = (need, replay)
    if not worst:
        return Sentence("buffer", "No crash window was replayed.", numbers)
    parts = []
    for mode, (need, replay) in worst.items():
        numbers[mode] = {"buffer": need, "window": replay.window.name}
        if mode == "isolated" and replay.leverages:
            # an isolated position has its own margin: what counts is its leverage
            short = {sym: (book.leverage_of(sym), lev) for sym, lev in replay.leverages.items()
                     if book.leverage_of(sym) > lev}
            lev = min(replay.leverages.values())
            numbers[mode].update(max_leverage=lev, book_leverage=max(
                book.leverage_of(sym) for sym in replay.leverages))
            verdict = ("its leverage survives" if not short else "at its " + ", ".join(
                f"{lev_text(have)} {sym} does not" for sym, (have, _) in short.items()))
            if not spot:
                parts.append(f"isolated: leverage at most {_leverage_down(lev)} per position "
                             f"(margins of {pct(need)} of the notional) to survive "
                             f"{replay.window.name} ({verdict})")
                continue
            which = "the perpetual" if len(replay.leverages) == 1 else "each perpetual"
            parts.append(f"isolated: leverage at most {_leverage_down(lev)} on {which} "
                         f"(its margin and the spot holdings' cost: {pct(need)} of the "
                         f"notional; the spot gain does not reach that margin) to survive "
                         f"{replay.window.name} ({verdict})")
            continue
        verdict = "it holds enough" if held >= need else f"it is short by {pct(need - held)}"
        counted = (" (the spot holdings' value included, though it does not count in the "
                   "cross margin balance)" if spot and mode == "cross" else "")
        parts.append(f"{mode}: equity of at least {pct(need)} of the notional{counted} to "
                     f"survive {replay.window.name} ({verdict})")
    holdings = f", spot holdings {', '.join(spot)} included" if spot else ""
    text = (f"Crash buffer: the strategy's book of {book.time:%Y-%m-%d %H:%M} ({gross:,.0f} gross "
            f"notional{holdings}, equity {pct(held)} of it) needs, against the worst crash "
            "replayed, " + "; ".join(parts) + ".")
    return Sentence("buffer", text, numbers)


def adl_part(reference, market, strategy, params, run_options):
    """The auto-deleveraging stress of the profitable leg, for a hedge (positions of both
    signs at once in the ``reference`` run); ``(AdlStress or None, Sentence or None)``."""
    from .adl import adl_stress

    positions = reference.positions
    if positions is None:
        return None, None
    q = positions.to_numpy()
    hedged = ((q > 0).any(axis=1) & (q < 0).any(axis=1)).any()
    if not hedged:
        return None, None
    plan = plan_of(market, strategy, params)
    options = reference_options(plan, run_options)
    stresses = {}
    for mode in ("cross", "isolated"):
        try:
            stresses[mode] = adl_stress(market, plan, at="worst", margin_mode=mode,
                                        **options)
        except ValueError:  # no leg in profit at any close: nothing to deleverage
            continue
    if not stresses:
        return None, None
    parts = []
    numbers = {}
    for mode, s in stresses.items():
        base, hit = s.figures(s.base), s.figures(s.stressed)
        numbers[mode] = {"leg": s.leg, "time": str(s.time), "base_final": base["final_equity"],
                         "stressed_final": hit["final_equity"],
                         "liquidations_after": hit["liquidations_after"],
                         "base_liquidations_after": base["liquidations_after"]}
        parts.append(f"{mode}: final equity {hit['final_equity']:,.0f} instead of "
                     f"{base['final_equity']:,.0f}, {hit['liquidations_after']} liquidation(s) "
                     f"after it (against {base['liquidations_after']})")
    first = next(iter(stresses.values()))
    text = (f"Auto-deleveraging: if the most profitable leg ({first.leg}) had been taken at "
            f"its highest ADL score ({first.time:%Y-%m-%d %H:%M}) and the rest held unhedged, "
            + "; ".join(parts) + ".")
    return first if len(stresses) == 1 else stresses.get("cross"), Sentence("adl", text,
                                                                           numbers)
