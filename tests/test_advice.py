"""Advice sentences (backtester.risk.advice): each is a function of figures, and changes when
they change. The tables here are made by hand, so every expected word is worked out here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from backtester import load_venue
from backtester.risk.advice import (
    beginner_sentence,
    leverage_sentence,
    mode_verdicts,
    safer_sentence,
    switch_sentence,
)
from backtester.risk.montecarlo import wilson


def risk_table(cross_loss, isolated_loss, cross_liq, isolated_liq, leverages=(2, 5, 10),
               n=1000, es=None, refused=None):
    """A risk table as liquidation_risk makes it, from chosen probabilities (n paths)."""
    rows = []
    for mode, losses, liqs in (("cross", cross_loss, cross_liq),
                               ("isolated", isolated_loss, isolated_liq)):
        for k, lev in enumerate(leverages):
            row = {"margin_mode": mode, "leverage": float(lev), "paths": n}
            for key, p in (("p_liquidation", liqs[k]), ("p_loss_50", losses[k])):
                low, high = wilson(round(p * n), n)
                row.update({key: p, f"{key}_low": float(low), f"{key}_high": float(high)})
            row["es5_return"] = -0.3 if es is None else es[mode][k]
            row["es5_low"], row["es5_high"] = row["es5_return"] - 0.05, row["es5_return"] + 0.05
            row["refused_share"] = 0.0 if refused is None else refused[mode][k]
            rows.append(row)
    return pd.DataFrame(rows)


def test_the_safer_mode_and_where_it_flips():
    table = risk_table(cross_loss=[0.0, 0.01, 0.30], isolated_loss=[0.02, 0.05, 0.10],
                       cross_liq=[0.0, 0.01, 0.30], isolated_liq=[0.05, 0.20, 0.60])
    v = mode_verdicts(table)
    assert v["safer"].tolist() == ["cross", "cross", "isolated"]
    s = safer_sentence(v)
    assert "cross is safer at 2x, 5x" in s.text
    assert "isolated is safer at 10x" in s.text
    assert "flips at 10x: from cross to isolated" in s.text
    assert "cross 30.0%, isolated 10.0% at 10x" in s.text
    assert s.numbers["flip"] == {"leverage": 10.0, "from": "cross", "to": "isolated"}
    # the numbers change: isolated loses half the account more often at 10x too -> no flip
    table2 = risk_table(cross_loss=[0.0, 0.01, 0.30], isolated_loss=[0.02, 0.05, 0.40],
                        cross_liq=[0.0, 0.01, 0.30], isolated_liq=[0.05, 0.20, 0.60])
    s2 = safer_sentence(mode_verdicts(table2))
    assert "cross is safer at 2x to 10x" in s2.text
    assert "does not flip" in s2.text and "flip" not in s2.numbers


def test_equal_ruin_is_decided_by_the_expected_shortfall_or_called_alike():
    # shortfall intervals are +-5 points here: 25 points apart separate, 0.5 do not
    es = {"cross": [-0.45, -0.30, -0.30], "isolated": [-0.20, -0.30, -0.305]}
    table = risk_table(cross_loss=[0.0, 0.0, 0.0], isolated_loss=[0.0, 0.0, 0.0],
                       cross_liq=[0.0, 0.0, 0.0], isolated_liq=[0.0, 0.1, 0.2], es=es)
    v = mode_verdicts(table)
    # 2x: same ruin, isolated's worst 5% end 25 points higher; 5x, 10x: within a point
    assert v["safer"].tolist() == ["isolated", "alike", "alike"]
    assert v["by"].tolist() == ["es5_return", "both", "both"]
    text = safer_sentence(v).text
    assert "isolated is safer at 2x (no significant difference in the probability of " \
           "losing 50% (0.0% vs 0.0%)" in text
    assert "-20.0% in isolated against -45.0%" in text
    assert "at 5x, 10x the modes are alike" in text


def test_the_beginners_leverage_is_the_last_one_under_the_threshold():
    # n = 1000: Wilson upper bounds of 1%, 2%, 4% and 20% are 1.8%, 3.1%, 5.4%, 22.6%
    table = risk_table(cross_loss=[0, 0, 0, 0], isolated_loss=[0, 0, 0, 0],
                       cross_liq=[0.01, 0.02, 0.04, 0.20], isolated_liq=[0.0, 0.04, 0.3, 0.5],
                       leverages=(1, 2, 3, 5))
    s = beginner_sentence(table, threshold=0.05)
    # cross passes at 1x and 2x (3.1% < 5%), not at 3x (upper bound 5.4%); isolated at 1x
    assert s.numbers["cross"]["leverage"] == 2.0
    assert s.numbers["isolated"]["leverage"] == 1.0
    assert "cross up to 2x" in s.text and "isolated up to 1x" in s.text
    assert s.numbers["start"] == {"margin_mode": "cross", "leverage": 2.0}
    # a looser threshold moves the answer: 3x passes under 6%
    s2 = beginner_sentence(table, threshold=0.06)
    assert s2.numbers["cross"]["leverage"] == 3.0 and "cross up to 3x" in s2.text
    # none passes: the sentence says so and names the lowest leverage's figure
    s3 = beginner_sentence(table, threshold=0.005)
    assert s3.numbers["cross"]["leverage"] is None
    assert "cross: no leverage simulated (even 1x: 1.0%, at most 1.8%)" in s3.text
    assert "isolated up to 1x" in s3.text  # 0 of 1000: upper bound 0.38%


def test_the_switch_rule_is_the_venues():
    binance, bybit, kraken = (load_venue(v) for v in ("binance_usdm", "bybit_linear",
                                                      "kraken_spot"))
    fee = binance.spec("BTC_USDT").taker_fee
    s = switch_sentence(binance, gross_notional=100_000, taker_fee=fee)
    assert "each symbol has its own margin mode" in s.text
    assert s.numbers["taker_fee"] == fee
    assert s.numbers["switch_cost"] == pytest.approx(2 * fee * 100_000)
    assert f"{2 * fee * 100_000:,.2f}" in s.text
    assert "the margin mode is the account's" in switch_sentence(bybit).text
    assert "only margin mode is cross" in switch_sentence(kraken).text


def test_what_leverage_changed_in_the_history():
    history = pd.DataFrame({
        "margin_mode": ["cross"] * 3 + ["isolated"] * 3,
        "leverage": [2.0, 5.0, 10.0] * 2,
        "final_equity": [11_000.0, 11_000.0, 11_000.0, 11_000.0, 9_500.0, 4_000.0],
        "liquidations": [0, 0, 0, 0, 1, 3], "rejected_orders": [0, 0, 0, 0, 0, 0],
        "error": [np.nan] * 6})
    s = leverage_sentence(history)
    assert "under cross, leverage 2x to 10x changed nothing" in s.text
    assert "under isolated, final equity spread 7,000 from 2x to 10x (liquidations 0 at 2x, " \
           "3 at 10x" in s.text
    history.loc[2, "final_equity"] = 10_000.0  # cross changes with leverage now
    assert "under cross, final equity spread 1,000" in leverage_sentence(history).text


def test_the_modes_are_compared_path_by_path():
    # the same 100 paths under both modes at one leverage: only-cross and only-isolated
    # losses decide (McNemar, continuity-corrected: (|b - c| - 1)^2 / (b + c) > 1.96^2)
    def frame(lost_cross, lost_isolated):
        rows = []
        for mode, lost in (("cross", lost_cross), ("isolated", lost_isolated)):
            for p in range(100):
                rows.append({"path": p, "margin_mode": mode, "leverage": 5.0,
                             "lowest_equity": 4_000.0 if p in lost else 9_000.0,
                             "initial_equity": 10_000.0, "total_return": -0.1})
        return pd.DataFrame(rows)
    both = set(range(20))
    # b = 10 (only cross), c = 2: (8 - 1)^2 / 12 = 4.08 > 3.84: significant, isolated safer
    paths = frame(both | set(range(20, 30)), both | {30, 31})
    table = risk_table([0.30], [0.22], [0.3], [0.22], leverages=(5,), n=100,
                       es={"cross": [-0.5], "isolated": [-0.5]})
    v = mode_verdicts(table, paths=paths)
    assert (v.loc[0, "only_cross"], v.loc[0, "only_isolated"]) == (10, 2)
    assert v.loc[0, "safer"] == "isolated" and v.loc[0, "by"] == "p_loss_50"
    # b = 8, c = 2: (6 - 1)^2 / 10 = 2.5: not significant, and the shortfalls are equal
    paths = frame(both | set(range(20, 28)), both | {30, 31})
    v = mode_verdicts(table, paths=paths)
    assert v.loc[0, "safer"] == "alike"


def test_settings_that_refuse_most_orders_get_no_verdict_and_are_no_beginners_setting():
    # at 10x the account refused 80% of the isolated orders: no verdict there, and the
    # beginner's isolated leverage stops below it though its liquidation rate is 0
    refused = {"cross": [0.0, 0.0, 0.1], "isolated": [0.0, 0.0, 0.8]}
    table = risk_table(cross_loss=[0.0, 0.0, 0.0], isolated_loss=[0.0, 0.0, 0.0],
                       cross_liq=[0.0, 0.0, 0.0], isolated_liq=[0.0, 0.0, 0.0],
                       refused=refused)
    v = mode_verdicts(table)
    assert v["safer"].tolist() == ["alike", "alike", "refused"]
    text = safer_sentence(v).text
    assert "at 10x most orders were refused (cross 10%, isolated 80% at 10x" in text
    s = beginner_sentence(table, threshold=0.05)
    assert s.numbers["isolated"]["leverage"] == 5.0 and s.numbers["cross"]["leverage"] == 10.0
    # refused at the lowest leverage (the account cannot carry the orders' margin there):
    # skipped, not an end of the search
    refused = {"cross": [0.9, 0.0, 0.0], "isolated": [0.9, 0.0, 0.0]}
    table = risk_table(cross_loss=[0.0, 0.0, 0.0], isolated_loss=[0.0, 0.0, 0.0],
                       cross_liq=[0.0, 0.0, 0.0], isolated_liq=[0.0, 0.0, 0.3],
                       refused=refused)
    s = beginner_sentence(table, threshold=0.05)
    assert s.numbers["cross"]["leverage"] == 10.0 and s.numbers["isolated"]["leverage"] == 5.0


def test_alike_then_a_mode_is_not_a_flip():
    table = risk_table(cross_loss=[0.0, 0.01, 0.02], isolated_loss=[0.0, 0.05, 0.10],
                       cross_liq=[0.0, 0.01, 0.02], isolated_liq=[0.0, 0.2, 0.6])
    s = safer_sentence(mode_verdicts(table))
    assert "at 2x the modes are alike" in s.text and "cross is safer at 5x, 10x" in s.text
    assert "flip" not in s.numbers and "does not flip" in s.text


# --- the whole advice, end to end --------------------------------------------------------


@pytest.fixture(scope="module")
def no_funding():
    from backtester import Market, load_market

    m = load_market()
    return Market.from_arrays(m.symbols, m.open, m.high, m.low, m.close,
                              mark=(m.mark_open, m.mark_high, m.mark_low, m.mark_close),
                              start=str(m.timestamps[0]), bar="1h")


def test_advice_on_a_single_long_follows_the_liquidation_prices(no_funding):
    # a long of 0.1 BTC held 60 days on venue "flat" (MMR 0.5%): on each resampled path the
    # isolated position is liquidated iff a mark low after the fill reaches Binance's
    # LP = (EP - EP / L - open loss) / (1 - MMR) (see tests/test_risk.py); the cross account
    # (10,000 behind ~6,800 of notional) iff the mark falls to where the equity meets MM
    from backtester.risk import Bootstrap, advise

    leverages = [2, 5, 10, 25, 50]
    n, days = 150, 60
    advice = advise(no_funding, {"BTC_USDT": 0.1}, leverages=leverages, n_paths=n,
                    days=days, seed=5, block=48, venue="flat", target_kind="units",
                    initial_balance=10_000, adl=False, threshold=0.10)
    paths = Bootstrap(no_funding, block=48).paths(n, days * 24, seed=5)
    entry, mark0 = paths.open[:, 1, 0], paths.mark_open[:, 1, 0]
    lowest = paths.mark_low[:, 1:, 0].min(axis=1)
    expected_iso = {}
    for lev in leverages:
        lp = (entry - entry / lev - np.maximum(entry - mark0, 0.0)) / (1 - 0.005)
        expected_iso[lev] = (lowest <= lp).mean()
    table = advice.risk.table
    iso = table[table["margin_mode"] == "isolated"].set_index("leverage")["p_liquidation"]
    for lev in leverages:
        assert iso[float(lev)] == pytest.approx(expected_iso[lev])
    # the beginner's isolated leverage: the last leverage of the grid whose Wilson upper
    # bound stays under 10%
    passing = None
    for lev in leverages:
        if wilson(round(expected_iso[lev] * n), n)[1] >= 0.10:
            break
        passing = float(lev)
    s = advice.sentence("beginner")
    assert (s.numbers["isolated"]["leverage"] if passing is not None else None) == passing
    # cross: wallet 10,000 - fee behind the position; liquidated iff the loss reaches the
    # equity less MM: 0.1 (EP - M) >= W - 0.1 M 0.005, far beyond any 60-day path here
    cross = table[table["margin_mode"] == "cross"]["p_liquidation"]
    wallet = 10_000 - 0.1 * entry * 0.0005
    m_star = (0.1 * entry - wallet) / (0.1 * (1 - 0.005))
    assert (cross == (lowest <= m_star).mean()).all()
    assert "Safer mode" in advice.sentence("safer").text
    assert advice.sentence("switch").numbers["venue"] == "flat"


def test_advise_on_the_command_line(tmp_path, capsys):
    from backtester.cli import main

    code = main(["advise", "--paths", "20", "--days", "30", "--leverage", "2,10", "--no-adl",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "Safer mode" in out and "For a beginner" in out and "Crash buffer" in out
    assert max(len(line) for line in out.splitlines() if not line.startswith("Simulation")) \
        <= 100
    for name in ("advice.html", "advice.md", "advice.json"):
        assert (tmp_path / name).stat().st_size > 0
    html = (tmp_path / "advice.html").read_text()
    assert "Probability of liquidation and of ruin" in html
    # its figures interactive, drawn by the plotly.js written beside it; the PNGs in the .md
    assert '<script src="plotly.min.js"></script>' in html and "https://" not in html
    assert (tmp_path / "plotly.min.js").is_file()
    assert "](advice_files/risk.png)" in (tmp_path / "advice.md").read_text()
    assert (tmp_path / "advice_files" / "risk.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("argv, flag", [
    (["--paths", "5"], "--paths"),
    (["--book", "BTC_USDT=1", "--strategy", "trend"], "--book"),
    (["--threshold", "2"], "--threshold"),
    (["--book", "XRP_USDT=1"], "--book"),
])
def test_advise_errors_name_the_flag(tmp_path, capsys, argv, flag):
    from backtester.cli import main

    assert main(["advise", "--out", str(tmp_path), *argv]) == 2
    assert flag in capsys.readouterr().err
