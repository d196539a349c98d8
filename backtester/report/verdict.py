"""The plain-language verdict of a comparison, built only from the runs' numbers.

Every sentence states something the records show: final equities, which
positions each run lost to liquidation, and, when one mode was liquidated and
the other not, the legs' PnL at that moment. A claim is made only when the
numbers behind it hold (e.g. "the winning leg carried the losing one" only if,
at that bar, under cross the other leg was in profit and the lost one in loss).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from .. import metrics
from ..engine.enums import Mode
from .tables import money, pct

# What leverage changes, in the words of README.md's section of that name (a test keeps the
# two in step); every comparison report carries it.
WHAT_LEVERAGE_CHANGES = (
    "Under cross margin at a fixed exposure, leverage changes only the initial margin an order "
    "needs, and so which orders are accepted, and the available balance left for new orders. "
    "It does not move the liquidation point: a cross account is liquidated when its equity "
    "falls to its maintenance margin, which depends on the notional, not on the leverage. "
    "So two cross runs whose orders are all accepted end alike at 2x and at 10x.\n\n"
    "Under isolated margin, leverage sets each position's margin (notional / leverage), and "
    "so its liquidation price: the higher the leverage, the closer to the entry price "
    "(Binance, a long: entry x (1 - 1/leverage) / (1 - maintenance margin rate)).\n\n"
    "With sizing=\"margin\", a fraction of equity is the initial margin committed, so the "
    "notional is fraction x equity x leverage: leverage scales the exposure, under both "
    "modes."
)


def margined(result) -> np.ndarray:
    """Per column, whether it is a futures position margined under a mode (cross or
    isolated): not a spot holding (paid in full) nor collateral."""
    return np.asarray(result.margin_mode) < Mode.SPOT


def run_kind(result) -> str:
    """``"cross"`` or ``"isolated"`` when every futures leg uses that mode, else ``"mixed"``.

    Spot legs and collateral are not margined per mode, so they do not count: a funding
    carry (spot long, perpetual short) is a cross run when its perpetual is cross."""
    modes = set(np.asarray(result.margin_mode)[margined(result)].tolist())
    return {frozenset({0}): "cross", frozenset({1}): "isolated"}.get(frozenset(modes), "mixed")


def run_label(result) -> str:
    """A short name for a run: its futures legs' margin mode and leverage ("cross 10x")."""
    leverage = np.unique(np.asarray(result.leverage, dtype=float)[margined(result)])
    lev = f"{leverage[0]:g}x" if len(leverage) == 1 else "mixed leverage"
    return f"{run_kind(result)} {lev}"


def _unmargined_note(results: Mapping) -> str:
    """What the comparison of modes leaves out: the spot legs and collateral, named."""
    first = next(iter(results.values()))
    symbols = np.asarray(first.market.symbols, dtype=object)
    modes = np.asarray(first.margin_mode)
    futures = list(symbols[modes < Mode.SPOT])
    spot = list(symbols[modes == Mode.SPOT])
    held = list(symbols[modes == Mode.COLLATERAL])
    if not spot and not held:
        return ""
    parts = []
    if spot:
        parts.append(f"the spot {'leg' if len(spot) == 1 else 'legs'} {_join(spot)} "
                     f"{'is' if len(spot) == 1 else 'are'} paid in full, never liquidated and "
                     "not margined under either mode")
    if held:
        parts.append(f"the collateral {_join(held)} backs the cross account in every run")
    legs = f"{'leg' if len(futures) == 1 else 'legs'} {_join(futures)}" if futures else "legs"
    return (f"Cross and isolated here are the margin modes of the futures {legs}: "
            + "; ".join(parts) + ".")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _when(timestamp) -> str:
    return pd.Timestamp(timestamp).strftime("%Y-%m-%d %H:%M UTC")


def _join(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _side(qty: float) -> str:
    return "long" if qty > 0 else "short"


def _counts(result) -> str:
    liq = result.liquidations
    counts = liq.groupby("symbol").size()
    return ", ".join(f"{s} {counts[s]}" for s in result.market.symbols if s in counts)


def losses(label: str, result) -> str:
    """What ``label`` lost to liquidation, as a clause ("isolated lost 3 positions ...")."""
    liq = result.liquidations
    if not len(liq):
        return f"{label} lost no position to liquidation"
    margin = float(liq["margin_lost"].sum())
    shortfall = float(liq["shortfall"].sum())
    events = int(liq["event"].nunique())
    if run_kind(result) == "cross":
        text = (f"{label} was liquidated {_plural(events, 'time')}, closing "
                f"{_plural(len(liq), 'position')} ({_counts(result)}) and losing "
                f"{money(margin)} of margin")
    else:
        text = (f"{label} lost {_plural(len(liq), 'position')} to liquidation "
                f"({_counts(result)}), {money(margin)} of margin")
    if shortfall > 0:
        text += f", plus {money(shortfall)} of bankruptcy shortfall left to the insurance fund"
    return text


def _held_same_legs(a, b, bar: int) -> bool:
    """Both runs held positions of the same signs in every symbol at the close before ``bar``."""
    if bar < 1 or a.positions is None or b.positions is None:
        return False
    return bool((np.sign(a.positions.iloc[bar - 1]) == np.sign(b.positions.iloc[bar - 1])).all()
                and (a.positions.iloc[bar - 1] != 0).any())


def _cross_survived(c_label, c, i_label, i) -> str:
    """Why cross kept what isolated lost: the other legs' profit at that moment, if it was one."""
    first = i.liquidations.iloc[0]
    bar, symbol = int(first["bar"]), first["symbol"]
    ratio = c.account["margin_ratio"]
    peak = f"margin ratio peaked at {pct(float(ratio.max()))} (liquidation at 100%)."
    pnl = metrics.position_pnl(c).iloc[bar] if c.positions is not None else None
    # only a futures leg's profit is in the cross margin balance (a spot holding's is not)
    futures = set(np.asarray(c.market.symbols, dtype=object)[margined(c)])
    winners = [] if pnl is None else [w for w in pnl.index
                                      if w != symbol and w in futures and pnl[w] > 0]
    if not (winners and pnl[symbol] < 0):
        return (f"{_cap(c_label)}'s shared margin balance never fell to its maintenance "
                f"margin: its {peak}")
    holder = (f"{c_label} held the same legs: its" if _held_same_legs(c, i, bar)
              else f"{c_label}'s")
    legs = _join([f"its {w} leg at {money(pnl[w], signed=True)}" for w in winners])
    return (f"When {i_label} first lost a position ({symbol} {_side(first['qty'])}, "
            f"{_when(first['timestamp'])}), {holder} {symbol} leg stood at "
            f"{money(pnl[symbol], signed=True)} since the start and {legs}. Under cross that "
            "profit stays in the one shared margin balance, which kept the account's margin "
            f"ratio at {pct(float(ratio.iloc[bar]))} that bar (liquidation at 100%); over the "
            f"run {c_label}'s {peak}")


def _cross_liquidated(c_label, c, i_label, i) -> str:
    """How the first cross liquidation happened, and what isolated kept that cross lost."""
    liq = c.liquidations
    event = liq[liq["event"] == liq["event"].iloc[0]]
    loser = event.loc[event["realized_pnl"].idxmin()]
    text = (f"On {_when(loser['timestamp'])} {c_label}'s margin balance fell to its maintenance "
            f"margin: {loser['symbol']} {_side(loser['qty'])} was at "
            f"{money(loser['realized_pnl'], signed=True)} against its entry price")
    others = event.drop(index=loser.name)
    if len(others):
        closed = ", ".join(f"{r.symbol} {_side(r.qty)} {money(r.realized_pnl, signed=True)}"
                           for r in others.itertuples())
        text += f", and every cross position was closed with it ({closed})."
    else:
        text += ", and it was the account's only position."
    lost_c = set(liq["symbol"])
    lost_i = set(i.liquidations["symbol"])
    held_i = set(i.positions.columns[(i.positions != 0).any()]) if i.positions is not None \
        else set(i.fills["symbol"])
    kept = [s for s in c.market.symbols if s in lost_c - lost_i and s in held_i]
    if not len(i.liquidations):
        text += (f" Under {i_label} each position could lose only its own margin, and none "
                 "reached its liquidation price.")
    elif kept:
        text += (f" {_cap(i_label)} never lost {_join(kept)}: an isolated position can lose "
                 "only its own margin.")
    return text


def _rejected(result) -> str:
    rej = result.rejections
    if not len(rej):
        return "no order rejected"
    reasons = rej.groupby("reason").size()
    detail = ", ".join(f"{reason.replace('_', ' ')} {n}" for reason, n in reasons.items())
    return f"{_plural(len(rej), 'order')} rejected ({detail})"


def pair_verdict(c_label: str, c, i_label: str, i) -> str:
    """The verdict of one cross run against one isolated run of the same strategy."""
    cm, im = metrics.run_metrics(c), metrics.run_metrics(i)
    cf, if_ = cm["final_equity"], im["final_equity"]
    text = (f"{_cap(c_label)} ended at {money(cf)} ({pct(cm['total_return'], True)}), "
            f"{i_label} at {money(if_)} ({pct(im['total_return'], True)})")
    diff = cf - if_
    if abs(diff) < 0.005:
        text += ": both ended at the same equity."
    else:
        higher = c_label if diff > 0 else i_label
        text += f"; {higher} ended {money(abs(diff))} higher."
    text += f" {_cap(losses(i_label, i))}; {losses(c_label, c)}."
    c_liq, i_liq = len(c.liquidations), len(i.liquidations)
    if c_liq:
        text += " " + _cross_liquidated(c_label, c, i_label, i)
    elif i_liq:
        text += " " + _cross_survived(c_label, c, i_label, i)
    else:
        text += (f" {_cap(c_label)} paid {money(cm['fees_paid'])} in fees and "
                 f"{money(cm['funding_paid'])} in funding, {_rejected(c)}; {i_label} paid "
                 f"{money(im['fees_paid'])} and {money(im['funding_paid'])}, {_rejected(i)}.")
    text += (f" Max drawdown: {c_label} {pct(cm['max_drawdown'])}, {i_label} "
             f"{pct(im['max_drawdown'])}")
    distances = (cm["min_distance_to_liquidation"], im["min_distance_to_liquidation"])
    if any(np.isfinite(d) for d in distances):
        text += (f"; closest distance to liquidation: {c_label} {pct(distances[0])}, "
                 f"{i_label} {pct(distances[1])}")
    text += "."
    return text


def _group_key(result) -> tuple:
    return (tuple(np.asarray(result.leverage, dtype=float).tolist()), result.venue.name,
            getattr(result.config, "sizing", "exposure"))


def build_verdict(results: Mapping) -> str:
    """Paragraphs (blank-line separated): a ranking when there are more than two runs, then
    one paragraph per cross/isolated pair of the same leverage and venue."""
    groups: dict[tuple, dict[str, list[str]]] = {}
    for label, result in results.items():
        groups.setdefault(_group_key(result), {}).setdefault(run_kind(result), []).append(label)
    paragraphs = []
    paired = set()
    if len(results) > 2 or not any(len(g.get("cross", [])) == len(g.get("isolated", [])) == 1
                                   for g in groups.values()):
        finals = {label: float(r.equity.iloc[-1]) for label, r in results.items()}
        ret = {label: metrics.total_return(pd.concat(
            [pd.Series([r.config.initial_balance]), r.equity], ignore_index=True))
            for label, r in results.items()}
        top, bottom = max(finals.values()), min(finals.values())
        # runs within a cent of the extreme share the place: name them all
        best = [label for label, v in finals.items() if abs(v - top) < 0.005]
        worst = [label for label, v in finals.items() if abs(v - bottom) < 0.005]
        if len(best) == len(results):
            every = "Both" if len(results) == 2 else f"All {len(results)}"
            text = f"{every} runs ended at {money(top)} ({pct(ret[best[0]], True)})."
        else:
            text = (f"Of {len(results)} runs, {_join(best)} ended highest at {money(top)} "
                    f"({pct(ret[best[0]], True)}) and {_join(worst)} lowest at "
                    f"{money(bottom)} ({pct(ret[worst[0]], True)}).")
        liquidated = ", ".join(f"{label} {len(r.liquidations)}" for label, r in results.items())
        text += f" Positions lost to liquidation: {liquidated}."
        alike = _alike_across_leverage(results)
        if alike:
            text += " " + alike
        paragraphs.append(text)
    for group in groups.values():
        if len(group.get("cross", [])) == len(group.get("isolated", [])) == 1:
            c_label, i_label = group["cross"][0], group["isolated"][0]
            paragraphs.append(pair_verdict(c_label, results[c_label], i_label,
                                           results[i_label]))
            paired |= {c_label, i_label}
    for label, result in results.items():
        if label not in paired and len(results) <= 2:
            paragraphs.append(_cap(losses(label, result)) + ".")
    note = _unmargined_note(results)
    if note:
        paragraphs.append(note)
    return "\n\n".join(paragraphs)


def _alike_across_leverage(results: Mapping) -> str:
    """Why cross runs at several leverages ended alike, when they did and no order of theirs
    was refused: at the same exposure, leverage sets only the margin an order needs."""
    groups: dict[tuple, list[str]] = {}
    for label, result in results.items():
        by_margin = getattr(result.config, "sizing", "exposure") == "margin"
        if run_kind(result) == "cross" and not by_margin:
            groups.setdefault(result.venue.name, []).append(label)
    sentences = []
    for labels in groups.values():
        leverages = {tuple(np.asarray(results[la].leverage, dtype=float)) for la in labels}
        finals = [float(results[la].equity.iloc[-1]) for la in labels]
        if (len(leverages) > 1 and max(finals) - min(finals) < 0.005
                and not any(len(results[la].rejections) for la in labels)):
            text = (f"{_cap(_join(labels))} ended alike: they held the same exposure, and "
                    "under cross leverage sets only the initial margin an order needs (none "
                    "was refused here), not the liquidation point, where the equity meets the "
                    "maintenance margin of the notional.")
            if any(getattr(results[la].config, "target_kind", "") == "equity" for la in labels):
                text += (" With sizing 'margin' an equity fraction is the margin committed, "
                         "and the exposure grows with the leverage.")
            sentences.append(text)
    return " ".join(sentences)
