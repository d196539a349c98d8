"""Advice: cross or isolated, for this strategy, at which leverage, in words and numbers.

``advise(market, strategy, ...)`` answers the three questions users come with, for their
own strategy, from figures it computes:

1. **Which mode is safer, at which leverage, and where the answer flips**: from the
   probability of losing half the account within the horizon on resampled markets
   (``montecarlo.liquidation_risk``), then the expected shortfall of the terminal equity.
2. **How a beginner should configure it**: the largest leverage, per mode, whose simulated
   probability of any liquidation within the horizon stays under a threshold (its upper
   confidence bound, so that too few paths never pass for safety).
3. **Whether and when the mode can be switched**: the venue's rule (per symbol or for the
   account, only while flat), and what switching costs (closing and reopening the book).

With the history's own runs (``sweep``: every mode and leverage on the data given), the
replay of dated crashes on the strategy's book (``risk.crashes``) and the stress of an
auto-deleveraged hedge leg (``risk.adl``). Every sentence is made by a function of the
figures (the ``*_sentence`` functions below) and carries them (``Sentence.numbers``): a
sentence changes when the numbers behind it change.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._compile_progress import shows_first_compile
from ..data.market import Market
from ..venues import Venue, load_venue
from .montecarlo import (
    DEFAULT_LEVERAGES,
    LiquidationRisk,
    expected_shortfall,
    liquidation_risk,
)

MODES = ("cross", "isolated")
# a configuration that refused more of its orders than this did not run the strategy: it has
# no verdict, and cannot be a beginner's setting however rarely it is liquidated
MOST_REFUSED = 0.5


@dataclass(frozen=True)
class Sentence:
    """One piece of advice: its ``topic``, its ``text`` and the figures it was derived from."""

    topic: str
    text: str
    numbers: Mapping = field(default_factory=dict)


def _pct(p: float, digits: int = 1) -> str:
    if p != p:
        return "n/a"
    if 0 < p < 10 ** -(digits + 2):
        return f"<{10 ** -digits:g}%"
    return f"{p * 100:.{digits}f}%"


def _lev(x: float) -> str:
    return f"{x:g}x"


def _ranges(levels: Sequence[float]) -> str:
    """``[1, 2, 3, 10]`` of a sorted grid -> "1x to 3x, 10x" style text (by grid neighbours)."""
    return ", ".join(_lev(v) for v in levels) if len(levels) <= 2 else \
        f"{_lev(levels[0])} to {_lev(levels[-1])}"


# --- the comparison of the modes -----------------------------------------------------------


def mode_verdicts(table: pd.DataFrame, ruin: float = 0.5, paths: pd.DataFrame | None = None,
                  level: float = 0.95) -> pd.DataFrame:
    """Per leverage (and other swept option), which mode is safer on the simulated paths.

    The primary figure is the probability of losing ``ruin`` of the account at some bar
    (``p_loss_{ruin}``). The modes ran on the same paths, so with ``paths`` (the per-path
    figures of ``LiquidationRisk.paths``) their difference is judged path by path
    (McNemar's test with continuity correction: of the paths where exactly one mode lost,
    does one mode lose significantly more often); without, by separated confidence
    intervals. When the difference is not significant, the expected shortfall of the
    terminal return decides (higher is safer) if it differs by a point or more and
    significantly (a paired bootstrap of the paths with ``paths``, else separated
    intervals); otherwise the modes are "alike". Columns: the configuration keys,
    ``safer`` (cross / isolated / alike), ``by`` (the figure that decided), each mode's
    figures, and ``only_cross`` / ``only_isolated`` (paths where only that mode lost, with
    ``paths``).
    """
    from .montecarlo import _z

    key = f"p_loss_{ruin * 100:g}"
    keys = [c for c in _config_keys(table) if c != "margin_mode"]
    z = _z(level)
    rows = []
    for values, group in table.groupby(keys, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        by_mode = {m: group[group["margin_mode"] == m] for m in MODES}
        if any(len(g) != 1 for g in by_mode.values()):
            continue
        c, i = by_mode["cross"].iloc[0], by_mode["isolated"].iloc[0]
        row = dict(zip(keys, values, strict=True))
        row.update({f"cross_{key}": c[key], f"isolated_{key}": i[key],
                    "cross_p_liquidation": c["p_liquidation"],
                    "isolated_p_liquidation": i["p_liquidation"],
                    "cross_es5_return": c["es5_return"], "isolated_es5_return": i["es5_return"]})
        diff = c[key] - i[key]
        if paths is not None:  # each mode's paths of this configuration, in path order
            parts = {mode: _paths_of(paths, mode, {k: row[k] for k in keys}) for mode in MODES}
            lost = {mode: (part["lowest_equity"].to_numpy() / part["initial_equity"]
                           .to_numpy()) <= 1.0 - ruin + 1e-12 for mode, part in parts.items()}
            only_c = int((lost["cross"] & ~lost["isolated"]).sum())
            only_i = int((lost["isolated"] & ~lost["cross"]).sum())
            row.update(only_cross=only_c, only_isolated=only_i)
            n_disc = only_c + only_i
            significant = n_disc > 0 and (abs(only_c - only_i) - 1) ** 2 / n_disc > z * z
        else:
            significant = (c[f"{key}_high"] < i[f"{key}_low"]
                           or i[f"{key}_high"] < c[f"{key}_low"])
        es_diff = c["es5_return"] - i["es5_return"]
        if paths is not None:  # the shortfalls' difference, paths resampled in pairs
            returns = {mode: part["total_return"].to_numpy() for mode, part in parts.items()}
            rng = np.random.default_rng(0)
            n = returns["cross"].size
            draws = [expected_shortfall(returns["cross"][idx])
                     - expected_shortfall(returns["isolated"][idx])
                     for idx in (rng.integers(0, n, n) for _ in range(400))]
            alpha = (1 - level) / 2
            lo, hi = np.quantile(draws, [alpha, 1 - alpha])
            es_significant = abs(es_diff) >= 0.01 and (lo > 0 or hi < 0)
        else:
            es_significant = abs(es_diff) >= 0.01 and (c["es5_low"] > i["es5_high"]
                                                       or i["es5_low"] > c["es5_high"])
        refused = max(c.get("refused_share", 0.0), i.get("refused_share", 0.0))
        row.update(cross_refused=c.get("refused_share", 0.0),
                   isolated_refused=i.get("refused_share", 0.0))
        if refused > MOST_REFUSED:
            row.update(safer="refused", by="refused_share")
        elif significant:
            row.update(safer="cross" if diff < 0 else "isolated", by=key)
        elif es_significant:
            row.update(safer="cross" if c["es5_return"] > i["es5_return"] else "isolated",
                       by="es5_return")
        else:
            row.update(safer="alike", by="both")
        rows.append(row)
    return pd.DataFrame(rows)


def _paths_of(paths: pd.DataFrame, mode: str, config: Mapping) -> pd.DataFrame:
    """The per-path rows of one mode under one configuration, in path order."""
    mask = (paths["margin_mode"] == mode).to_numpy()
    for key, value in config.items():
        column = paths[key].to_numpy()
        mask = mask & (np.isclose(column, value) if key == "leverage" else column == value)
    return paths[mask].sort_values("path")


def _config_keys(table: pd.DataFrame) -> list[str]:
    """The configuration columns of a risk table (margin_mode, leverage, swept options)."""
    stop = list(table.columns).index("paths")
    return list(table.columns[:stop])


def safer_sentence(verdicts: pd.DataFrame, ruin: float = 0.5, horizon: str = "a year"
                   ) -> Sentence:
    """Which mode is safer at each leverage, and where the answer flips."""
    key = f"p_loss_{ruin * 100:g}"
    if verdicts.empty:
        return Sentence("safer", "Both modes must be simulated to compare them.", {})
    v = verdicts.sort_values("leverage")
    parts = []
    flips = []
    numbers = {}
    previous = None  # the last definite answer: a flip is from one mode to the other
    for _, row in v.iterrows():
        numbers[_lev(row["leverage"])] = {
            "safer": row["safer"], f"cross_{key}": row[f"cross_{key}"],
            f"isolated_{key}": row[f"isolated_{key}"], "cross_es5": row["cross_es5_return"],
            "isolated_es5": row["isolated_es5_return"]}
        if row["safer"] in ("alike", "refused"):
            continue
        if previous is not None and row["safer"] != previous:
            flips.append((row["leverage"], previous, row["safer"]))
        previous = row["safer"]
    groups: list[tuple[str, list]] = []
    for _, row in v.iterrows():
        if groups and groups[-1][0] == row["safer"]:
            groups[-1][1].append(row)
        else:
            groups.append((row["safer"], [row]))
    for safer, rows in groups:
        levels = [r["leverage"] for r in rows]
        worst = rows[-1]
        figures = (f"probability of losing {ruin:.0%} within {horizon}: cross "
                   f"{_pct(worst[f'cross_{key}'])}, isolated {_pct(worst[f'isolated_{key}'])}"
                   f" at {_lev(worst['leverage'])}")
        if safer == "refused":
            parts.append(f"at {_ranges(levels)} most orders were refused (cross "
                         f"{_pct(worst['cross_refused'], 0)}, isolated "
                         f"{_pct(worst['isolated_refused'], 0)} at {_lev(worst['leverage'])}: "
                         "the account cannot carry this sizing), so no verdict")
        elif safer == "alike":
            parts.append(f"at {_ranges(levels)} the modes are alike ({figures}; expected "
                         f"shortfall {_pct(worst['cross_es5_return'])} vs "
                         f"{_pct(worst['isolated_es5_return'])})")
        else:
            other = "isolated" if safer == "cross" else "cross"
            why = figures if worst["by"] != "es5_return" else (
                f"no significant difference in the probability of losing {ruin:.0%} "
                f"({_pct(worst[f'cross_{key}'])} vs {_pct(worst[f'isolated_{key}'])}), but "
                f"the worst 5% of paths end at {_pct(worst[f'{safer}_es5_return'])} in "
                f"{safer} against {_pct(worst[f'{other}_es5_return'])}")
            parts.append(f"{safer} is safer at {_ranges(levels)} ({why})")
    text = "Safer mode: " + "; ".join(parts) + "."
    if flips:
        lev, before, after = flips[0]
        text += f" The answer flips at {_lev(lev)}: from {before} to {after}."
        numbers["flip"] = {"leverage": lev, "from": before, "to": after}
    elif previous is not None:
        text += " The answer does not flip over the leverages simulated."
    return Sentence("safer", text, numbers)


def beginner_sentence(table: pd.DataFrame, threshold: float = 0.05,
                      horizon: str = "a year") -> Sentence:
    """Per mode, the largest leverage whose probability of any liquidation stays under
    ``threshold`` (its upper confidence bound does), and the setting to start with."""
    numbers = {"threshold": threshold}
    parts = []
    best = None
    for mode in MODES:
        rows = table[table["margin_mode"] == mode].sort_values("leverage")
        if rows.empty:
            continue
        # the largest leverage below which every simulated leverage also passed; a setting
        # that refuses most orders is no setting (skipped), and the first one carried whose
        # probability is not under the threshold ends the search
        carried = rows[rows.get("refused_share", 0.0) <= MOST_REFUSED] \
            if "refused_share" in rows else rows
        passing = []
        for _, row in carried.iterrows():
            if row["p_liquidation_high"] < threshold:
                passing.append(row)
            else:
                break
        if passing:
            row = passing[-1]
            numbers[mode] = {"leverage": row["leverage"], "p_liquidation": row["p_liquidation"],
                             "p_liquidation_high": row["p_liquidation_high"]}
            parts.append(f"{mode} up to {_lev(row['leverage'])} (probability of a liquidation "
                         f"within {horizon} {_pct(row['p_liquidation'])}, at most "
                         f"{_pct(row['p_liquidation_high'])} at 95% confidence)")
            if best is None or row["leverage"] > best[1] or (
                    row["leverage"] == best[1] and row["p_liquidation"] < best[2]):
                best = (mode, row["leverage"], row["p_liquidation"])
        elif len(carried):
            low = carried.iloc[0]
            numbers[mode] = {"leverage": None, "lowest": low["leverage"],
                             "p_liquidation": low["p_liquidation"],
                             "p_liquidation_high": low["p_liquidation_high"]}
            parts.append(f"{mode}: no leverage simulated (even {_lev(low['leverage'])}: "
                         f"{_pct(low['p_liquidation'])}, at most "
                         f"{_pct(low['p_liquidation_high'])})")
        else:
            numbers[mode] = {"leverage": None, "refused": True}
            parts.append(f"{mode}: the account refused most orders at every leverage "
                         "simulated")
    text = (f"For a beginner (a liquidation within {horizon} less likely than "
            f"{_pct(threshold, 0)}): " + "; ".join(parts) + ".")
    if best is not None:
        text += f" Start with {best[0]} margin at {_lev(best[1])} or less"
        rows = table[table["margin_mode"] == best[0]]
        if len(rows) > 1 and rows["p_liquidation"].nunique() == 1:
            text += (f" (its probability is the same at every leverage simulated: at this "
                     f"sizing, leverage does not move {best[0]} margin's liquidation point)")
        text += "."
        numbers["start"] = {"margin_mode": best[0], "leverage": best[1]}
    else:
        text += " No simulated setting meets it: lower the exposure, not only the leverage."
    return Sentence("beginner", text, numbers)


def per_option(risk: LiquidationRisk, ruin: float, threshold: float, horizon: str
               ) -> list[Sentence]:
    """The "safer" and "beginner" sentences, one pair per value of the other swept options
    (e.g. each sizing), each prefixed with it: a leverage's answer is read along one
    sizing, never across two."""
    table, paths = risk.table, risk.paths
    others = [k for k in _config_keys(table) if k not in ("margin_mode", "leverage")]
    if not others:
        return [safer_sentence(mode_verdicts(table, ruin, paths), ruin, horizon),
                beginner_sentence(table, threshold, horizon)]
    out = []
    for values, part in table.groupby(others, sort=False):
        values = values if isinstance(values, tuple) else (values,)
        label = ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True))
        mask = np.ones(len(paths), dtype=bool)
        for k, v in zip(others, values, strict=True):
            mask &= (paths[k] == v).to_numpy()
        for sentence in (safer_sentence(mode_verdicts(part, ruin, paths[mask]), ruin, horizon),
                         beginner_sentence(part, threshold, horizon)):
            out.append(Sentence(sentence.topic, f"With {label}: {sentence.text}",
                                {**sentence.numbers, **dict(zip(others, values, strict=True))}))
    return out


def leverage_sentence(history: pd.DataFrame) -> Sentence | None:
    """What leverage changed in the history's runs, per mode, at the strategy's sizing."""
    if history is None or history.empty or "leverage" not in history:
        return None
    numbers = {}
    parts = []
    for mode in MODES:
        rows = history[(history["margin_mode"] == mode) & history["error"].isna()]
        if len(rows) < 2:
            continue
        spread = float(rows["final_equity"].max() - rows["final_equity"].min())
        liqs = rows.set_index("leverage")["liquidations"].astype(int).to_dict()
        rejected = rows.set_index("leverage")["rejected_orders"].astype(int).to_dict()
        numbers[mode] = {"final_equity_spread": spread, "liquidations": liqs,
                         "rejected_orders": rejected}
        lo, hi = min(liqs), max(liqs)
        if spread <= 1e-6 * max(1.0, abs(float(rows["final_equity"].mean()))):
            parts.append(f"under {mode}, leverage {_lev(lo)} to {_lev(hi)} changed nothing "
                         f"(final equity identical): at a fixed exposure leverage only sets "
                         f"the margin an order needs")
        else:
            parts.append(f"under {mode}, final equity spread {spread:,.0f} from {_lev(lo)} to "
                         f"{_lev(hi)} (liquidations {liqs[lo]} at {_lev(lo)}, {liqs[hi]} at "
                         f"{_lev(hi)}; rejected orders {rejected[lo]} and {rejected[hi]})")
    if not parts:
        return None
    text = ("In the history: " + "; ".join(parts) + ". Under cross margin the liquidation "
            "point is the account's equity against the maintenance margin of the notional, "
            "which leverage does not set; under isolated margin leverage sets each position's "
            "margin, and so its liquidation price.")
    return Sentence("leverage", text, numbers)


def switch_sentence(venue: Venue, gross_notional: float | None = None,
                    taker_fee: float | None = None) -> Sentence:
    """Whether and when the venue lets the margin mode be switched, and what it costs
    (closing and reopening ``gross_notional`` at ``taker_fee`` each way)."""
    model = venue.margin_model
    modes = tuple(model.margin_modes)
    numbers = {"venue": venue.name, "margin_modes": list(modes),
               "account_margin_mode": bool(model.account_margin_mode)}
    if "isolated" not in modes:
        return Sentence("switch", f"On {venue.name} the only margin mode is {modes[0]}: there "
                        "is nothing to switch.", numbers)
    if model.account_margin_mode:
        text = (f"On {venue.name} the margin mode is the account's: a switch sets every "
                "position's mode, and only while no position is open (the simulator refuses "
                "it otherwise: account_mode_switch_with_open_position).")
    else:
        text = (f"On {venue.name} each symbol has its own margin mode, switched only while "
                "that symbol holds no position (refused otherwise: "
                "mode_switch_with_open_position): to switch, close the position first.")
    if gross_notional and taker_fee is not None:
        fee = float(taker_fee)
        if fee >= 0:
            cost = 2 * fee * gross_notional
            numbers.update(taker_fee=fee, gross_notional=gross_notional, switch_cost=cost)
            text += (f" Closing and reopening this book ({gross_notional:,.0f} gross notional) "
                     f"costs about {cost:,.2f} in taker fees ({fee:.3%} each way), besides the "
                     "price moving while it is flat.")
    return Sentence("switch", text, numbers)


def _taker_fee(venue: Venue, market: Market) -> float | None:
    """The taker fee of the market's first symbol the venue prices, at the market's end."""
    for symbol in market.symbols:
        try:
            return float(venue.spec(symbol, market.timestamps[-1]).taker_fee)
        except (KeyError, ValueError):
            continue
    return None


# --- the whole advice ------------------------------------------------------------------------


@dataclass
class Advice:
    """What ``advise`` found: ``sentences`` (the advice, each with its numbers), ``risk``
    (the simulation), ``history`` (the history's own runs, one row per configuration),
    ``crashes`` (the replayed crash windows: a summary table and the replays), ``adl`` (the
    stress of an auto-deleveraged hedge leg, or None) and ``info`` (what was run)."""

    title: str
    sentences: list[Sentence]
    risk: LiquidationRisk
    history: pd.DataFrame
    crashes: pd.DataFrame | None = None
    replays: list = field(default_factory=list)
    adl: object | None = None
    info: dict = field(default_factory=dict)

    def sentence(self, topic: str) -> Sentence:
        for s in self.sentences:
            if s.topic == topic:
                return s
        raise KeyError(f"no sentence on {topic!r}; topics: "
                       f"{', '.join(s.topic for s in self.sentences)}")

    def risk_table(self) -> pd.DataFrame:
        """The simulation's figures, formatted to read (percentages, days), under 100
        columns: ``P(liq) [95%]`` with its interval, the probability of losing each ruin
        threshold, the expected shortfall and median of the return, and the median day of
        the first liquidation among the paths liquidated, and the share of orders refused."""
        t = self.risk.table
        keys = _config_keys(t)
        out = t[keys].rename(columns={"margin_mode": "mode", "leverage": "lev"})
        out["lev"] = out["lev"].map(_lev)
        out["P(liq) [95%]"] = [f"{_pct(p)} [{_pct(lo)}-{_pct(hi)}]" for p, lo, hi in
                               zip(t["p_liquidation"], t["p_liquidation_low"],
                                   t["p_liquidation_high"], strict=True)]
        for q in self.risk.info["ruin"]:
            out[f"lose {q:.0%}"] = t[f"p_loss_{q * 100:g}"].map(_pct)
        out["ES 5%"] = t["es5_return"].map(_pct)
        out["median"] = t["median_return"].map(_pct)
        out["liq day"] = t["first_liquidation_days_median"].map(
            lambda v: "-" if v != v else f"{v:.0f}")
        out["refused"] = t["refused_share"].map(lambda v: _pct(v, 0))
        return out

    def text(self, width: int = 100) -> str:
        """The advice as plain text, wrapped at ``width`` columns."""
        import textwrap

        lines = [self.title, "=" * min(width, len(self.title)), ""]
        for s in self.sentences:
            lines += textwrap.wrap(s.text, width, initial_indent="- ", subsequent_indent="  ")
        lines += [""] + textwrap.wrap(_describe_simulation(self.risk.info), width)
        return "\n".join(lines)

    def to_json(self, path) -> Path:
        path = Path(path)
        data = {"title": self.title, "info": self.info, "simulation": self.risk.info,
                "sentences": [{"topic": s.topic, "text": s.text, "numbers": s.numbers}
                              for s in self.sentences],
                "risk": self.risk.table.to_dict(orient="records")}
        path.write_text(json.dumps(data, indent=1, default=_plain))
        return path

    def blocks(self) -> list:
        from ..report.render import Heading, Plot, Table, Text
        from .figures import crash_figure, risk_figure
        from .interactive import crash_plot, risk_plot

        blocks = [Text(_describe_simulation(self.risk.info), "note"), Heading("Advice")]
        blocks += [Text(s.text, "verdict") for s in self.sentences]
        blocks += [Heading("Probability of liquidation and of ruin, by leverage"),
                   Plot("risk", lambda: risk_figure(self.risk),
                        "Simulated over the horizon on resampled markets; bands: 95% "
                        "confidence intervals.", lambda: risk_plot(self.risk)),
                   Table(self.risk_table(), index=False)]
        if self.history is not None and not self.history.empty:
            blocks += [Heading("In the history"), Table(_history_table(self.history),
                                                        index=False)]
        if self.crashes is not None and len(self.crashes):
            blocks += [Heading("Crashes replayed on the strategy's book"),
                       Table(self.crashes, index=False)]
            for replay in self.replays:
                blocks.append(Plot(f"crash_{replay.window.name}",
                                   lambda replay=replay: crash_figure(replay),
                                   interactive=lambda replay=replay: crash_plot(replay)))
        if self.adl is not None:
            blocks += [Heading("Auto-deleveraging of the profitable leg"),
                       Table(self.adl.summary(), index=True)]
        from ..report.verdict import WHAT_LEVERAGE_CHANGES

        blocks += [Heading("What leverage changes"), Text(WHAT_LEVERAGE_CHANGES)]
        return blocks

    def to_html(self, path) -> Path:
        from ..report.render import write

        return write(self.title, self.blocks(), Path(path).with_suffix(".html"))

    def to_markdown(self, path) -> Path:
        from ..report.render import write

        return write(self.title, self.blocks(), Path(path).with_suffix(".md"))

    def __repr__(self) -> str:
        return self.text()


def _describe_simulation(info: Mapping) -> str:
    drift = "history's drift kept" if info.get("drift_kept", True) else "drift removed"
    return (f"Simulation: {info['paths']:,} resampled paths of {info['days']:g} days "
            f"({info['bars']:,} bars) from the history {info['history_start'][:10]} to "
            f"{info['history_end'][:10]} ({', '.join(info['symbols'])}), stationary block "
            f"bootstrap with mean blocks of {info['mean_block_bars']:g} bars "
            f"({info['block_rule']}), {drift}, "
            f"seed {info['seed']}; venue {info.get('venue', '?')}; "
            f"{info['seconds']:.1f} s.")


def _history_table(history: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in ("margin_mode", "leverage", "sizing") if c in history]
    out = history[cols].copy()
    out["leverage"] = out["leverage"].map(_lev)
    out["return"] = history["total_return"].map(lambda v: _pct(v))
    out["max drawdown"] = history["max_drawdown"].map(lambda v: _pct(v))
    out["liquidations"] = history["liquidations"].astype("Int64")
    out["rejected"] = history["rejected_orders"].astype("Int64")
    return out


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


@shows_first_compile("advise")
def advise(
    market: Market,
    strategy,
    *,
    params: Mapping | None = None,
    venue: str | Venue = "binance_usdm",
    leverages: Sequence[float] = DEFAULT_LEVERAGES,
    options: Mapping[str, Sequence] | None = None,
    n_paths: int = 1000,
    days: float = 365.0,
    seed: int = 0,
    block: float | None = None,
    drift: bool = True,
    threshold: float = 0.05,
    ruin: float = 0.5,
    crash_history: Market | None = None,
    windows: Sequence | None = None,
    adl: bool = True,
    title: str | None = None,
    progress=None,
    **run_options,
) -> Advice:
    """Cross or isolated for ``strategy``, at which leverage: the advice, from computed numbers.

    - ``strategy``: a ``StrategyDef``, a function ``f(market, **params)`` (targets, a
      Callback or a Plan), or a fixed book ``{symbol: target}`` (see ``liquidation_risk``).
    - ``leverages`` x both margin modes (x ``options``, e.g. ``{"sizing": ["exposure",
      "margin"]}``) are run on the history (a sweep) and on ``n_paths`` resampled paths of
      ``days`` days (``liquidation_risk``, seeded ``seed``, mean block ``block`` bars or
      Politis and White's rule; ``drift=False`` removes the history's drift).
    - ``threshold``: the probability of a liquidation within the horizon a beginner accepts.
    - ``ruin``: the loss that counts as losing the account when comparing the modes (0.5).
    - ``crash_history``: a Market holding dated crash windows (e.g. real history) to
      replay on the strategy's book; ``windows``: which (names of ``crashes.CRASHES``, dates,
      ``"START/END"``); by default the shipped windows (``CRASHES``) that the history
      (``crash_history``, else ``market``) covers, and its own worst window besides them.
    - ``adl``: also stress the auto-deleveraging of the most profitable leg of a hedge.

    Example:
        >>> from backtester import load_market
        >>> from backtester.risk import advise
        >>> advice = advise(load_market(), {"BTC_USDT": 1.0, "ETH_USDT": -1.0},
        ...                 leverages=[2, 10], n_paths=50, days=30, target_kind="equity",
        ...                 adl=False)
        >>> [s.topic for s in advice.sentences][:2]
        ['safer', 'beginner']
    """
    from ..sweep import sweep

    params = dict(params or {})
    venue_obj = venue if isinstance(venue, Venue) else load_venue(venue)
    run_options = {**run_options, "venue": venue}
    risk = liquidation_risk(market, strategy, leverages=leverages, margin_modes=MODES,
                            options=options, n_paths=n_paths, days=days, seed=seed,
                            block=block, drift=drift, params=params,
                            ruin=sorted({0.5, 0.9, 0.99, float(ruin)}),
                            progress=progress, **run_options)
    horizon = "a year" if abs(days - 365) < 1 else f"{days:g} days"
    sentences = per_option(risk, ruin, threshold, horizon)
    history = _history_runs(market, strategy, params, leverages, options, run_options, sweep)
    said = leverage_sentence(history)
    if said is not None:
        sentences.append(said)
    from .scenarios import adl_part, crash_part, reference_run

    # the strategy's own run on the history, whose book the crashes and the ADL stress use
    reference = reference_run(market, strategy, params, run_options)
    crashes, replays, crash_sentences, gross = crash_part(reference, market, run_options,
                                                          crash_history, windows)
    sentences += crash_sentences
    adl_result = None
    if adl:
        adl_result, adl_sentence = adl_part(reference, market, strategy, params, run_options)
        if adl_sentence is not None:
            sentences.append(adl_sentence)
    sentences.append(switch_sentence(venue_obj, gross, _taker_fee(venue_obj, market)))
    label = getattr(strategy, "name", None) or getattr(strategy, "__name__", None) or "the book"
    title = title or f"Cross or isolated margin for {label} on {venue_obj.name}"
    info = {"strategy": str(label), "params": params, "venue": venue_obj.name,
            "leverages": list(leverages), "threshold": threshold, "ruin": ruin,
            "market": {"symbols": list(market.symbols), "start": str(market.timestamps[0]),
                       "end": str(market.timestamps[-1])}}
    return Advice(title, sentences, risk, history, crashes, replays, adl_result, info)


def _history_runs(market, strategy, params, leverages, options, run_options, sweep):
    """Every mode x leverage (x option) on the history itself: one summary row each."""
    from ..strategy import StrategyDef

    if isinstance(strategy, Mapping):
        targets = np.full((market.n_bars, market.n_symbols), np.nan)
        for symbol, value in strategy.items():
            targets[0, market.symbol_index(symbol)] = float(value)

        def build(m):
            return targets
        fn = build
    elif isinstance(strategy, StrategyDef) or callable(strategy):
        fn = strategy
    else:
        return pd.DataFrame()
    grid = {"margin_mode": list(MODES), "leverage": [float(v) for v in leverages],
            **{k: list(v) for k, v in dict(options or {}).items()}, **params}
    return sweep(market, fn, grid, **run_options)
