"""Bybit, OKX and Kraken margin models against hand calculations (VENUES.md §3, §4, §5.1).

Every expected number is worked out in the comment beside it from the venue's published
formula (the E-* oracles of VENUES.md where there is one), not read off the engine.
Targets are base units decided at a close and filled at the next open (fill_at="open").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from helpers import NAN, units

import backtester.venues
from backtester import Market, load_venue, run

VENUE_DIR = Path(backtester.venues.__file__).parent
CLASSIC = "2024-06-01"  # Bybit: auto risk limit, MM on the entry value (before 2025-09-02)
NEW = "2025-10-01"  # Bybit: MM at mark, the fee to close counted in IM and MM


def mkt(symbols, bars, start="2024-06-01", bar="1h", funding_rate=None):
    """A Market from per-bar lists of (open, high, low, close), one tuple per symbol."""
    arr = np.array(bars, dtype=float)
    if arr.ndim == 2:
        arr = arr[:, None, :]
    return Market.from_arrays(symbols, arr[..., 0], arr[..., 1], arr[..., 2], arr[..., 3],
                              start=start, bar=bar, funding_rate=funding_rate)


def flat_bars(price, n):
    return [(price,) * 4] * n


def venue_with(tmp_path, name, symbols, **overrides):
    """Built-in venue ``name`` (its fees and dated rules) with only the ``symbols`` TOML tables
    given here, so that a test can list a second symbol or its own tier table."""
    text = (VENUE_DIR / f"{name}.toml").read_text()
    path = tmp_path / f"{name}.toml"
    path.write_text(text[:text.index("[[symbols.")] + symbols)
    return load_venue(path, **overrides)


def run1(m, targets, venue, mode="isolated", lev=50, **kw):
    return run(m, targets, venue=venue, margin_mode=mode, leverage=lev, target_kind="units",
               fill_at="open", path="path", **kw)


# --- Bybit (VENUES.md §3) ---------------------------------------------------------------------

BYBIT_TIER_1 = """
[[symbols.{}]]
source = "test: tier 1 of the BTCUSDT ladder (VENUES.md §3.2)"
tier_rule = "bracket"
tiers = [{{ floor = 0, cap = 2_000_000, max_leverage = 100, mmr = 0.005, imr = 0.01 }}]
"""


@pytest.mark.parametrize("side", [1, -1])
def test_bybit_classic_isolated_e_y1_liquidates_at_lp_and_settles_at_bankruptcy(side):
    # E-Y1: 1 BTC @ 20,000, 50x, MMR 0.5%: IM = 400, MM = 20,000 * 0.5% = 100 (entry value),
    # LP = 20,000 -+ (400 - 100) = 19,700 long / 20,300 short; BP = 20,000 -+ 400 = 19,600 /
    # 20,400 (§3.4: EP * (1 -+ 1/L)). The wick reaches the LP but not the BP.
    bar = (20000, 20000, 19650, 19650) if side > 0 else (20000, 20350, 20000, 20350)
    m = mkt(["BTC_USDT"], flat_bars(20000, 2) + [bar], start=CLASSIC)
    r = run1(m, units(3, [side]), load_venue("bybit_linear", taker_fee=0.0))
    assert r.liquidation_prices["BTC_USDT"].iloc[1] == pytest.approx(20000 - side * 300)
    liq = r.liquidations.iloc[0]
    assert liq["trigger_price"] == pytest.approx(20000 - side * 300)
    assert liq["price"] == pytest.approx(20000 - side * 400)  # settled at BP, not the LP
    assert liq["bankruptcy_price"] == pytest.approx(20000 - side * 400)
    assert liq["margin_lost"] == pytest.approx(400.0)  # the whole position margin
    assert liq["fee"] == 0.0 and liq["shortfall"] == 0.0 and not liq["partial"]
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(9600.0)  # 10,000 - 400
    assert r.equity.iloc[-1] == pytest.approx(9600.0)


@pytest.mark.parametrize("side", [1, -1])
def test_bybit_new_rules_e_y3_fee_to_close_in_margin(side):
    # From 2025-09-02, taker 0.055%, 1 BTC @ 20,000, 50x (E-Y3):
    # feeClose = 20,000 * (1 -+ 1/50) * 0.00055 = 10.78 long / 11.22 short
    # margin moved = 400 + feeClose = 410.78 / 411.22; opening fee 20,000 * 0.00055 = 11
    fee_close = 20000 * (1 - side / 50) * 0.00055
    assert fee_close == pytest.approx(10.78 if side > 0 else 11.22)
    margin = 400 + fee_close
    # MM(P) = P * 0.005 + feeClose, so the fee cancels: long 400 + (P - 20,000) = 0.005 P
    # -> LP = 19,600 / 0.995 = 19,698.49 (E-Y3); short 400 - (P - 20,000) = 0.005 P
    # -> LP = 20,400 / 1.005 = 20,298.51. BP = EP -+ (M - feeClose) = 19,600 / 20,400.
    lp = 19600 / 0.995 if side > 0 else 20400 / 1.005
    bp = 20000 - side * 400
    bar = (20000, 20000, 19650, 19650) if side > 0 else (20000, 20350, 20000, 20350)
    m = mkt(["BTC_USDT"], flat_bars(20000, 2) + [bar], start=NEW)
    r = run1(m, units(3, [side]), "bybit_linear")
    if side > 0:
        assert round(r.liquidation_prices["BTC_USDT"].iloc[1], 2) == 19698.49
    assert r.account["isolated_margin"].iloc[1] == pytest.approx(margin)
    assert r.account["wallet_balance"].iloc[1] == pytest.approx(10000 - 11 - margin)
    liq = r.liquidations.iloc[0]
    assert liq["trigger_price"] == pytest.approx(lp)
    assert liq["price"] == pytest.approx(bp) and liq["bankruptcy_price"] == pytest.approx(bp)
    assert liq["fee"] == pytest.approx(fee_close)  # the reserved fee to close is what it pays
    assert liq["margin_lost"] == pytest.approx(margin)
    # nothing comes back: the wallet stays at 10,000 - 11 - margin
    assert r.equity.iloc[-1] == pytest.approx(10000 - 11 - margin)


def test_bybit_gap_through_bankruptcy_price_loses_only_the_margin():
    # Classic 50x long 1 @ 20,000: margin 400, BP 19,600. Bar 3 opens at 19,500: the
    # position settles at BP, the trader loses 400, the insurance fund 1 * (19,600 - 19,500).
    bars = flat_bars(20000, 3) + [(19500, 19800, 19400, 19700)]
    m = mkt(["BTC_USDT"], bars, start=CLASSIC)
    r = run1(m, units(4, [1]), load_venue("bybit_linear", taker_fee=0.0))
    liq = r.liquidations.iloc[0]
    assert bool(liq["gapped"]) and liq["price"] == pytest.approx(19600.0)
    assert liq["margin_lost"] == pytest.approx(400.0)
    assert liq["shortfall"] == pytest.approx(100.0)
    assert r.equity.iloc[-1] == pytest.approx(9600.0)


def test_bybit_isolated_funding_comes_from_the_available_balance():
    # Classic 50x long 1 @ 20,000 (margin 400, LP 19,700), funding 1% at bar 2's open at mark
    # 20,000: payment 1 * 20,000 * 1% = 200, from the wallet (9,600 -> 9,400); the position
    # margin stays 400 so the LP stays 19,700 (VENUES.md §3.3).
    rate = np.full((3, 1), NAN)
    rate[2, 0] = 0.01
    m = mkt(["BTC_USDT"], flat_bars(20000, 3), start=CLASSIC, funding_rate=rate)
    r = run1(m, units(3, [1]), load_venue("bybit_linear", taker_fee=0.0))
    assert r.funding["payment"].tolist() == pytest.approx([200.0])
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(9400.0)
    assert r.account["isolated_margin"].iloc[-1] == pytest.approx(400.0)
    assert r.liquidation_prices["BTC_USDT"].iloc[-1] == pytest.approx(19700.0)


def test_bybit_isolated_funding_beyond_the_available_balance_moves_the_lp():
    # The same with a 450 deposit: the wallet keeps 50 after the open, so of the 200 funding
    # 50 comes from it and 150 from the margin: M = 250, LP = 20,000 - (250 - 100) = 19,850.
    rate = np.full((3, 1), NAN)
    rate[2, 0] = 0.01
    m = mkt(["BTC_USDT"], flat_bars(20000, 3), start=CLASSIC, funding_rate=rate)
    r = run1(m, units(3, [1]), load_venue("bybit_linear", taker_fee=0.0), initial_balance=450)
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(0.0, abs=1e-9)
    assert r.account["isolated_margin"].iloc[-1] == pytest.approx(250.0)
    assert r.liquidation_prices["BTC_USDT"].iloc[-1] == pytest.approx(19850.0)


def test_bybit_isolated_funding_first_uses_what_the_other_positions_leave_available(tmp_path):
    # Classic, 1,000 deposit, isolated (the UTA's one mode for the account): BTC 50x long 1 @
    # 20,000 (M = 400) and ETH 10x long 2 @ 2,000 (M = 400): wallet = available = 200. BTC
    # funding 1.5% at mark 20,000 = 300: 200 from the available balance, 100 from the margin
    # -> M = 300, LP = 20,000 - (300 - 100) = 19,800; the wallet is empty.
    # (Before issue 12 this test held ETH in cross mode, which the UTA does not allow beside
    # an isolated position: VENUES.md §3.1.)
    venue = venue_with(tmp_path, "bybit_linear", BYBIT_TIER_1.format("BTCUSDT")
                       + BYBIT_TIER_1.format("ETHUSDT"), taker_fee=0.0)
    rate = np.full((3, 2), NAN)
    rate[2, 0] = 0.015
    m = mkt(["BTC_USDT", "ETH_USDT"], [[(20000,) * 4, (2000,) * 4]] * 3, start=CLASSIC,
            funding_rate=rate)
    r = run1(m, units(3, [1, 2]), venue, initial_balance=1000, mode="isolated",
             lev={"BTC_USDT": 50, "ETH_USDT": 10})
    assert r.funding["payment"].tolist() == pytest.approx([300.0])
    assert r.account["isolated_margin"].iloc[-1] == pytest.approx(300.0 + 400.0)
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(0.0, abs=1e-9)
    assert r.liquidation_prices["BTC_USDT"].iloc[-1] == pytest.approx(19800.0)


@pytest.mark.parametrize("start,lp", [(CLASSIC, 19100.0), (NEW, 19000 / 0.995)])
def test_bybit_cross_single_position_settles_the_wallet_to_zero(start, lp):
    # Cross 50x long 1 @ 20,000 on a 1,000 deposit (IM 400), no fees.
    # classic: MM on the entry value = 100: 1,000 + (P - 20,000) = 100 -> P = 19,100
    # new: MM at the mark = 0.005 P: 1,000 + P - 20,000 = 0.005 P -> P = 19,000/0.995
    # = 19,095.48. Either way the 100 / 95.48 left is the position's share: it closes at
    # P - share/1 = 19,000 (the bankruptcy price) and the wallet ends at 0.
    m = mkt(["BTC_USDT"], flat_bars(20000, 2) + [(20000, 20000, 18900, 18900)], start=start)
    r = run1(m, units(3, [1]), load_venue("bybit_linear", taker_fee=0.0), mode="cross",
             initial_balance=1000)
    assert r.liquidation_prices["BTC_USDT"].iloc[1] == pytest.approx(lp, rel=1e-9)
    liq = r.liquidations.iloc[0]
    assert liq["mode"] == "cross"
    assert liq["trigger_price"] == pytest.approx(lp, rel=1e-9)
    assert liq["price"] == pytest.approx(19000.0, rel=1e-9)
    assert liq["margin_lost"] == pytest.approx(1000.0)
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(0.0, abs=1e-6)


def test_bybit_cross_gap_settles_at_the_bankruptcy_price_and_the_fund_takes_the_rest():
    # Classic cross 50x long 1 @ 20,000 on 1,000: BP = 20,000 - 1,000 = 19,000. Bar 3 opens at
    # 18,500: as for an isolated gap, the trader's fill is at the BP (realized -1,000, the
    # whole wallet) and the fund takes 1 * (19,000 - 18,500) = 500 beyond it.
    bars = flat_bars(20000, 3) + [(18500, 18600, 18400, 18500)]
    m = mkt(["BTC_USDT"], bars, start=CLASSIC)
    r = run1(m, units(4, [1]), load_venue("bybit_linear", taker_fee=0.0), mode="cross",
             initial_balance=1000)
    liq = r.liquidations.iloc[0]
    assert bool(liq["gapped"]) and liq["bankruptcy_price"] == pytest.approx(19000.0)
    assert liq["price"] == pytest.approx(19000.0)
    assert liq["realized_pnl"] == pytest.approx(-1000.0)
    assert liq["margin_lost"] == pytest.approx(1000.0)
    assert liq["shortfall"] == pytest.approx(500.0)
    assert r.equity.iloc[-1] == 0.0


def test_bybit_cross_shares_the_margin_balance_in_proportion_to_mm(tmp_path):
    # Classic cross, 4,000 deposit: BTC long 1 @ 20,000 (MM 100) and ETH long 5 @ 2,000
    # (MM 10,000 * 0.5% = 50), both 10x (ETH given BTC's ladder). ETH stays at 2,000, BTC falls:
    # 4,000 + (P - 20,000) = 150 -> P = 16,150. The 150 left is shared 100 : 50, so BTC
    # closes at 16,150 - 100/1 = 16,050 and ETH at 2,000 - 50/5 = 1,990; the wallet is
    # 4,000 - 3,950 - 50 = 0.
    venue = venue_with(tmp_path, "bybit_linear", BYBIT_TIER_1.format("BTCUSDT")
                       + BYBIT_TIER_1.format("ETHUSDT"), taker_fee=0.0)
    bars = [[(20000,) * 4, (2000,) * 4]] * 2 + [[(20000, 20000, 16000, 16000), (2000,) * 4]]
    m = mkt(["BTC_USDT", "ETH_USDT"], bars, start=CLASSIC)
    r = run1(m, units(3, [1, 5]), venue, mode="cross", lev=10, initial_balance=4000)
    liq = r.liquidations.set_index("symbol")
    assert liq["event"].nunique() == 1
    assert liq.loc["BTC_USDT", "trigger_price"] == pytest.approx(16150.0, rel=1e-9)
    assert liq.loc["BTC_USDT", "price"] == pytest.approx(16050.0, rel=1e-9)
    assert liq.loc["ETH_USDT", "price"] == pytest.approx(1990.0, rel=1e-9)
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(0.0, abs=1e-6)
    assert r.positions.iloc[-1].tolist() == [0.0, 0.0]


def test_bybit_partial_liquidation_steps_down_to_the_lower_tier_then_closes():
    # Classic, taker 0.055%, 200,000 deposit: long 120 BTC @ 20,000 at 20x. Entry value
    # 2,400,000 is in tier 2 (mmr 1%, ded = 2,000,000 * (1% - 0.5%) = 10,000):
    # M = 120,000; MM = 24,000 - 10,000 = 14,000; LP = 20,000 - 106,000/120 = 19,116.67.
    # Opening fee 2,400,000 * 0.00055 = 1,320 -> wallet 200,000 - 1,320 - 120,000 = 78,680.
    lp1 = 20000 - (120000 - 14000) / 120
    # At the LP the position's equity is MM = 14,000; tier 1 (cap 2M, mmr 0.5%, ded 0):
    # 14,000 * 2M/2.4M = 11,666.67 >= 2M * 0.5% = 10,000, so cut to 120 * 2/2.4 = 100 BTC:
    # 20 BTC sold at 19,116.67 with the taker fee 20 * 19,116.67 * 0.00055 = 210.28.
    cut_fee = 20 * lp1 * 0.00055
    # the rest: 100 BTC, M = 100,000, entry value 2M (tier 1): MM = 10,000,
    # LP = 20,000 - 90,000/100 = 19,100; BP = 20,000 - 100,000/100 = 19,000
    wallet_after_cut = 78680 + 20000 + 20 * (lp1 - 20000) - cut_fee  # released + PnL - fee
    bars = flat_bars(20000, 2) + [(20000, 20000, 19110, 19110), (19110, 19110, 19050, 19050)]
    m = mkt(["BTC_USDT"], bars, start=CLASSIC)
    r = run1(m, units(4, [120]), "bybit_linear", lev=20, initial_balance=200_000)
    liq = r.liquidations
    assert liq["partial"].tolist() == [True, False]
    assert liq["bar"].tolist() == [2, 3]
    cut, rest = liq.iloc[0], liq.iloc[1]
    assert cut["qty"] == pytest.approx(20.0)
    assert cut["price"] == pytest.approx(lp1) and cut["trigger_price"] == pytest.approx(lp1)
    assert cut["fee"] == pytest.approx(cut_fee)
    assert r.positions["BTC_USDT"].iloc[2] == pytest.approx(100.0)
    assert r.liquidation_prices["BTC_USDT"].iloc[2] == pytest.approx(19100.0)
    assert r.account["wallet_balance"].iloc[2] == pytest.approx(wallet_after_cut)
    assert rest["qty"] == pytest.approx(100.0)
    assert rest["trigger_price"] == pytest.approx(19100.0)
    assert rest["price"] == pytest.approx(19000.0)
    assert rest["margin_lost"] == pytest.approx(100000.0)
    assert r.equity.iloc[-1] == pytest.approx(wallet_after_cut)  # 80,803.05


def test_bybit_new_rules_partial_liquidation_keys_the_tier_on_the_notional_at_mark():
    # From 2025-09-02, no fees: long 120 BTC @ 20,000, 20x, M = 120,000; MM at the mark,
    # tier 2 (1%, ded 10,000): 120,000 + 120 (P - 20,000) = 1.2 P - 10,000
    # -> P = 2,270,000 / 118.8 = 19,107.74 (notional 2,292,929: tier 2 indeed).
    lp1 = 2_270_000 / 118.8
    # equity there = MM = 12,929.29; tier 1: 12,929.29 * 2M / 2,292,929 = 11,277 >= 10,000,
    # so keep the size worth 2M at the mark: 2,000,000 / 19,107.74 = 104.67 BTC, rounded down
    # to Bybit's quantity step of 0.001 BTC (instruments-info). The rest has 1,000 of margin
    # per BTC: LP = 19,000 / 0.995 = 19,095.48, BP = 19,000.
    keep = np.floor(2_000_000 / lp1 / 0.001) * 0.001
    bars = flat_bars(20000, 2) + [(20000, 20000, 19100, 19100), (19100, 19100, 19050, 19050)]
    m = mkt(["BTC_USDT"], bars, start=NEW)
    r = run1(m, units(4, [120]), load_venue("bybit_linear", taker_fee=0.0), lev=20,
             initial_balance=200_000)
    cut, rest = r.liquidations.iloc[0], r.liquidations.iloc[1]
    assert bool(cut["partial"]) and not rest["partial"]
    assert cut["price"] == pytest.approx(lp1) and cut["qty"] == pytest.approx(120 - keep)
    assert r.positions["BTC_USDT"].iloc[2] == pytest.approx(keep)
    assert r.liquidation_prices["BTC_USDT"].iloc[2] == pytest.approx(19000 / 0.995)
    assert rest["trigger_price"] == pytest.approx(19000 / 0.995)
    assert rest["price"] == pytest.approx(19000.0)
    # wallet: 200,000 - 120,000 at the open; the cut returns its margin share (1,000 per
    # BTC) plus its PnL, (120 - keep) * (lp1 - 20,000); the close at BP returns nothing
    assert r.equity.iloc[-1] == pytest.approx(80000 + (120 - keep) * (lp1 - 19000))


def test_bybit_new_rules_order_cost_includes_open_and_close_fees_e_y8():
    # E-Y8: long 1 BTC @ 50,000 at 10x, taker 0.055%: IM 5,000 + open 27.50 + close
    # 50,000 * 0.9 * 0.00055 = 24.75 -> 5,052.25. A 5,052 deposit cannot pay it.
    m = mkt(["BTC_USDT"], flat_bars(50000, 2), start=NEW)
    r = run1(m, units(2, [1]), "bybit_linear", lev=10, initial_balance=5052.0)
    rej = r.rejections.iloc[0]
    assert rej["reason"] == "insufficient_margin"
    assert rej["required"] == pytest.approx(5052.25)
    r = run1(m, units(2, [1]), "bybit_linear", lev=10, initial_balance=5052.5)
    assert len(r.rejections) == 0 and r.fills["qty"].iloc[0] == 1.0
    # what is left: 5,052.50 - 27.50 - (5,000 + 24.75) = 0.25
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(0.25)


# --- OKX (VENUES.md §4) -----------------------------------------------------------------------

OKX_BTC = """
[[symbols.BTCUSDT]]
valid_from = 2021-04-01
source = "test: E-O2's illustrative 0.4% mmr"
contract_size = 0.01
tiers = [{ floor = 0, cap = 100_000, max_leverage = 100, mmr = 0.004, imr = 0.01 }]
"""


@pytest.mark.parametrize("side", [1, -1])
def test_okx_isolated_e_o2_liquidation_price_and_fee(tmp_path, side):
    # E-O2: 1 BTC @ 60,000, 10x (M = 6,000), mmr 0.4%, taker 0.05%:
    # long (60,000 - 6,000) / (1 - 0.0045) = 54,244.10; short 66,000 / 1.0045 = 65,704.33
    lp = 54000 / 0.9955 if side > 0 else 66000 / 1.0045
    assert round(lp, 2) == (54244.10 if side > 0 else 65704.33)
    venue = venue_with(tmp_path, "okx_swap", OKX_BTC)
    bar = (60000, 60000, 50000, 50000) if side > 0 else (60000, 70000, 60000, 70000)
    m = mkt(["BTC_USDT"], flat_bars(60000, 2) + [bar])
    r = run1(m, units(3, [side]), venue, lev=10)
    assert r.liquidation_prices["BTC_USDT"].iloc[1] == pytest.approx(lp, rel=1e-12)
    liq = r.liquidations.iloc[0]
    assert liq["trigger_price"] == pytest.approx(lp) and liq["price"] == pytest.approx(lp)
    assert liq["fee"] == pytest.approx(lp * 0.0005)  # 27.12 / 32.85
    # at the LP, M + U = (mmr + fee) * P; after the fee the margin left is 0.4% * P and
    # returns to the wallet: 10,000 - 30 (opening fee) - 6,000 + 0.004 * LP
    assert liq["margin_lost"] == pytest.approx(6000 - 0.004 * lp)
    assert r.equity.iloc[-1] == pytest.approx(10000 - 30 - 6000 + 0.004 * lp)


@pytest.mark.parametrize("side", [1, -1])
def test_okx_chz_isolated_uses_the_1pct_tier_1_rate(side):
    # CHZ tier 1 (up to 5,000 contracts = 50,000 CHZ): mmr 1%, fee 0.05%. 10,000 CHZ @ 1.00,
    # 10x, M = 1,000: long (1 - 0.1) / (1 - 0.0105) = 0.909550; short 1.1 / 1.0105 = 1.088570
    lp = 0.9 / 0.9895 if side > 0 else 1.1 / 1.0105
    bar = (1.0, 1.0, 0.85, 0.85) if side > 0 else (1.0, 1.15, 1.0, 1.15)
    m = mkt(["CHZ_USDT"], flat_bars(1.0, 2) + [bar])
    r = run1(m, units(3, [side * 10_000]), load_venue("okx_swap", taker_fee=0.0), lev=10)
    assert r.liquidation_prices["CHZ_USDT"].iloc[1] == pytest.approx(lp, rel=1e-12)
    assert r.liquidations["price"].iloc[0] == pytest.approx(lp, rel=1e-12)
    # left after the 0.05% fee: 1% of 10,000 * LP, back to the wallet
    assert r.equity.iloc[-1] == pytest.approx(9000 + 0.01 * 10000 * lp)


def test_okx_tiers_are_by_size_in_contracts_not_by_notional():
    # 45,000 CHZ = 4,500 contracts (x 10): tier 1 (1%) although the notional at 2.00 is 90,000;
    # long 10x @ 2.00, M = 9,000: LP = (2 - 0.2) / (1 - 0.0105) = 1.819101
    m = mkt(["CHZ_USDT"], flat_bars(2.0, 2))
    r = run1(m, units(2, [45_000]), load_venue("okx_swap", taker_fee=0.0), lev=10,
             initial_balance=100_000)
    assert r.liquidation_prices["CHZ_USDT"].iloc[1] == pytest.approx(1.8 / 0.9895, rel=1e-12)
    # 60,000 CHZ = 6,000 contracts: tier 2, the whole position at 1.5% (no deduction):
    # @ 1.00, 10x: LP = 0.9 / (1 - 0.0155) = 0.914170
    m = mkt(["CHZ_USDT"], flat_bars(1.0, 2))
    r = run1(m, units(2, [60_000]), load_venue("okx_swap", taker_fee=0.0), lev=10,
             initial_balance=100_000)
    assert r.liquidation_prices["CHZ_USDT"].iloc[1] == pytest.approx(0.9 / 0.9845, rel=1e-12)


def test_okx_partial_liquidation_drops_two_tiers_then_closes():
    # 200,000 CHZ = 20,000 contracts: tier 4 (index 3, mmr 2.5%). Long @ 1.00, 10x, M = 20,000:
    # LP = 0.9 / (1 - 0.0255) = 0.923551. At the trigger it is cut to the cap two tiers down,
    # tier 2's 7,500 contracts = 75,000 CHZ: 125,000 CHZ sold at 0.923551, fee 0.05%.
    lp1 = 0.9 / 0.9745
    cut_fee = 125_000 * lp1 * 0.0005  # 57.72
    # the rest: 75,000 CHZ (tier 2, 1.5%), M = 20,000 * 75/200 = 7,500:
    # LP = (1 - 0.1) / (1 - 0.0155) = 0.914170, below 0.923551: safe after the cut
    lp2 = 0.9 / 0.9845
    bars = flat_bars(1.0, 2) + [(1.0, 1.0, 0.92, 0.92), (0.92, 0.92, 0.90, 0.90)]
    m = mkt(["CHZ_USDT"], bars)
    r = run1(m, units(4, [200_000]), load_venue("okx_swap", taker_fee=0.0), lev=10,
             initial_balance=100_000)
    liq = r.liquidations
    assert liq["partial"].tolist() == [True, False]
    cut, rest = liq.iloc[0], liq.iloc[1]
    assert cut["qty"] == pytest.approx(125_000) and cut["price"] == pytest.approx(lp1)
    assert cut["fee"] == pytest.approx(cut_fee)
    assert r.positions["CHZ_USDT"].iloc[2] == pytest.approx(75_000)
    assert r.liquidation_prices["CHZ_USDT"].iloc[2] == pytest.approx(lp2)
    assert rest["price"] == pytest.approx(lp2)
    assert rest["fee"] == pytest.approx(75_000 * lp2 * 0.0005)  # 34.28
    # wallet: 80,000 after the open; the cut returns 12,500 + 125,000 * (LP1 - 1) - fee;
    # the close returns what is left of 7,500, which is 1.5% of 75,000 * LP2 = 1,028.44
    expected = 80000 + 12500 + 125_000 * (lp1 - 1) - cut_fee + 0.015 * 75_000 * lp2
    assert r.equity.iloc[-1] == pytest.approx(expected)


def test_okx_cross_trigger_counts_the_liquidation_fee():
    # Cross long 10,000 CHZ @ 1.00, 10x, 1,000 deposit: equity 1,000 + 10,000 (P - 1) <= MM +
    # fee = 10,000 P (1% + 0.05%) -> P = 9,000 / 9,895 = 0.909550 (0.909091 without the fee).
    lp = 9000 / 9895
    m = mkt(["CHZ_USDT"], flat_bars(1.0, 2) + [(1.0, 1.0, 0.85, 0.85)])
    r = run1(m, units(3, [10_000]), load_venue("okx_swap", taker_fee=0.0), mode="cross",
             lev=10, initial_balance=1000)
    liq = r.liquidations.iloc[0]
    assert liq["trigger_price"] == pytest.approx(lp, rel=1e-9)
    assert liq["price"] == pytest.approx(lp, rel=1e-9)
    assert liq["fee"] == pytest.approx(10_000 * lp * 0.0005, rel=1e-9)  # 4.55
    # the wallet keeps the 1% MM: 1,000 - 10,000 (1 - LP) - 0.05% * 10,000 LP = 90.96
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(0.01 * 10_000 * lp, rel=1e-6)


def test_bybit_cross_step_down_cuts_the_position_to_a_lower_tier_then_settles():
    # Classic rules with the auto-era brackets (MM on the entry value): cross long 120 BTC @
    # 20,000 at 50x, 60,000 deposit, no fees. Entry value 2.4M is tier 2: MM = 2.4M x 1% -
    # 10,000 = 14,000. Trigger: 60,000 + 120 (P - 20,000) = 14,000 -> P1 = 19,616.667.
    # The free margin (MB less the other positions' MM) is 14,000; tier 1's MM at its 2M
    # limit is 10,000 <= 14,000, so the position is cut to 2M / 2.4M x 120 = 100 BTC at P1
    # (a partial row of 20 BTC). The rest: wallet 60,000 - 20 x 383.333 = 52,333.33, MM
    # 10,000, trigger 52,333.33 + 100 (P - 20,000) = 10,000 -> P2 = 19,576.667, where, in the
    # lowest tier, it is settled at its bankruptcy price P2 - 10,000 / 100 = 19,476.667.
    p1 = 20_000 - 46_000 / 120
    p2 = 20_000 - 42_333.3333333333 / 100
    bars = flat_bars(20000, 2) + [(20000, 20000, 19000, 19000)]
    m = mkt(["BTC_USDT"], bars, start=CLASSIC)
    r = run1(m, units(3, [120]), load_venue("bybit_linear", taker_fee=0.0), mode="cross",
             initial_balance=60_000)
    liq = r.liquidations
    assert liq["partial"].tolist() == [True, False]
    assert liq["event"].nunique() == 2
    cut, rest = liq.iloc[0], liq.iloc[1]
    assert cut["qty"] == pytest.approx(20.0) and cut["price"] == pytest.approx(p1)
    assert rest["qty"] == pytest.approx(100.0)
    assert rest["trigger_price"] == pytest.approx(p2, rel=1e-9)
    assert rest["price"] == pytest.approx(p2 - 100.0, rel=1e-9)
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(0.0, abs=1e-6)


def test_okx_cross_partial_liquidation_drops_two_tiers():
    # Cross long 200,000 CHZ (20,000 contracts, tier 4 at 2.5%) @ 1.00, 10x, 30,000 deposit,
    # no taker fee. Trigger: 30,000 + 200,000 (P - 1) = 200,000 P (2.5% + 0.05%)
    #   -> P1 = 170,000 / 194,900 = 0.872242; cut to tier 2's cap, 75,000 CHZ, paying the
    # liquidation fee on 125,000 P1. Left: wallet W = 30,000 + 125,000 (P1 - 1) - fee, and
    # 75,000 CHZ at 1.55%: W + 75,000 (P - 1) = 75,000 P x 1.55% -> P2 = (75,000 - W) /
    # (75,000 x 0.9845), below P1, so the cut made the account safe at P1.
    p1 = 170_000 / 194_900
    fee = 125_000 * p1 * 0.0005
    w = 30_000 + 125_000 * (p1 - 1) - fee
    p2 = (75_000 - w) / (75_000 * 0.9845)
    assert p2 < p1
    bars = flat_bars(1.0, 2) + [(1.0, 1.0, 0.80, 0.80)]
    m = mkt(["CHZ_USDT"], bars)
    r = run1(m, units(3, [200_000]), load_venue("okx_swap", taker_fee=0.0), mode="cross",
             lev=10, initial_balance=30_000)
    liq = r.liquidations
    assert liq["partial"].tolist() == [True, False]
    assert liq["qty"].iloc[0] == pytest.approx(125_000)
    assert liq["price"].iloc[0] == pytest.approx(p1, rel=1e-9)
    assert liq["fee"].iloc[0] == pytest.approx(fee, rel=1e-9)
    assert liq["price"].iloc[1] == pytest.approx(p2, rel=1e-9)


# --- Kraken spot margin (VENUES.md §5.1) ----------------------------------------------------

NO_FEES = dict(taker_fee=0.0, liquidation_fee=0.0, long_opening_fee=0.0, long_rollover_fee=0.0,
               short_opening_fee=0.0, short_rollover_fee=0.0)
KRAKEN_PAIR = """
[[symbols.{}]]
source = "test"
long_opening_fee = 0.0
long_rollover_fee = 0.0
short_opening_fee = 0.0
short_rollover_fee = 0.0
tiers = [{{ floor = 0, cap = inf, max_leverage = 5, mmr = 0.0 }}]
"""
KRAKEN_PAIRS = KRAKEN_PAIR.format("BTCUSD") + KRAKEN_PAIR.format("ETHUSD")


def test_kraken_refuses_isolated_margin():
    m = mkt(["BTC_USD"], flat_bars(20000, 2))
    with pytest.raises(ValueError):
        run1(m, units(2, [1]), "kraken_spot", mode="isolated", lev=5)


def test_kraken_e_k2_margin_call_at_13200_and_liquidation_at_11600():
    # E-K2: 1 BTC long @ 20,000 at 5x, trade balance 10,000: used margin 4,000.
    # call (80%): 10,000 + (P - 20,000) = 3,200 -> 13,200; liquidation (40%): 1,600 -> 11,600
    bars = flat_bars(20000, 2) + [
        (20000, 20000, 13250, 13250),  # level (10,000 - 6,750) / 4,000 = 81.25%: no call
        (13250, 13250, 13150, 13150),  # 3,150 / 4,000 = 78.75%: the call
        (13150, 13150, 11650, 11650),  # 1,650 / 4,000 = 41.25%: no liquidation yet
        (11650, 11650, 11000, 11000),  # through 11,600: liquidated there
    ]
    m = mkt(["BTC_USD"], bars)
    r = run1(m, units(6, [1]), load_venue("kraken_spot", **NO_FEES), mode="cross", lev=5)
    assert r.liquidation_prices["BTC_USD"].iloc[1] == pytest.approx(11600.0)
    calls = r.events[r.events["kind"] == "margin_call"]
    assert calls["bar"].tolist() == [3] and calls["symbol"].isna().all()
    assert calls["margin_level"].iloc[0] == pytest.approx(3150 / 4000)
    assert r.summary()["margin_calls"] == 1
    liq = r.liquidations
    assert liq["bar"].tolist() == [5]
    assert liq["trigger_price"].iloc[0] == pytest.approx(11600.0, rel=1e-9)
    assert liq["price"].iloc[0] == pytest.approx(11600.0, rel=1e-9)
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(1600.0, rel=1e-9)


def test_kraken_e_k3_short_used_margin_is_revalued_at_the_current_price():
    # E-K3: 5,000 account, short 0.2 BTC @ 50,000 at 5x: used 0.04 BTC = 2,000 (level 250%).
    # At 65,200: equity 5,000 - 0.2 * 15,200 = 1,960, used 0.04 * 65,200 = 2,608: 75.15%.
    # 40%: 5,000 - 0.2 (P - 50,000) = 0.4 * 0.04 P -> P = 15,000 / 0.216 = 69,444.44
    bars = flat_bars(50000, 2) + [(50000, 65200, 50000, 65200), (65200, 70000, 65200, 70000)]
    m = mkt(["BTC_USD"], bars)
    r = run1(m, units(4, [-0.2]), load_venue("kraken_spot", **NO_FEES), mode="cross", lev=5,
             initial_balance=5000)
    calls = r.events[r.events["kind"] == "margin_call"]
    assert calls["bar"].tolist() == [2]
    assert calls["margin_level"].iloc[0] == pytest.approx(1960 / 2608)
    liq = r.liquidations
    assert liq["bar"].tolist() == [3]
    assert liq["price"].iloc[0] == pytest.approx(15000 / 0.216, rel=1e-9)
    # left: 0.016 * 69,444.44 = 1,111.11
    assert r.equity.iloc[-1] == pytest.approx(0.016 * 15000 / 0.216, rel=1e-6)


@pytest.mark.parametrize("target", [0.4, 1.0])
def test_kraken_liquidates_fifo_oldest_first_until_above_the_target_level(tmp_path, target):
    # 10,000 account, 5x: BTC long 1 @ 20,000 opened at bar 1 (used 4,000), ETH long 10
    # @ 2,000 opened at bar 2 (used 4,000). ETH (the younger, the loser) falls, BTC stays:
    # 10,000 + 10 (P - 2,000) = 0.4 * 8,000 -> P = 1,320. FIFO closes BTC first, at 20,000
    # with the 0.4% fee 80: wallet 9,920; ETH alone: (9,920 - 6,800) / 4,000 = 78% > 40%.
    # liquidation_target_level 0.4 stops there; the default 1.0 goes on (78% < 100%): ETH
    # closes at its trigger price 1,320, fee 0.4% x 13,200 = 52.80.
    venue = venue_with(tmp_path, "kraken_spot", KRAKEN_PAIRS, taker_fee=0.0,
                       liquidation_target_level=target)
    bars = [[(20000,) * 4, (2000,) * 4]] * 3 + [[(20000,) * 4, (2000, 2000, 1300, 1300)]]
    m = mkt(["BTC_USD", "ETH_USD"], bars)
    targets = np.full((4, 2), NAN)
    targets[0] = [1, NAN]
    targets[1] = [NAN, 10]
    r = run1(m, targets, venue, mode="cross", lev=5)
    liq = r.liquidations
    if target == 0.4:
        assert liq["symbol"].tolist() == ["BTC_USD"]
        assert r.positions.iloc[-1].tolist() == [0.0, 10.0]
        # at the close (ETH 1,300): 9,920 + 10 * (1,300 - 2,000) = 2,920
        assert r.equity.iloc[-1] == pytest.approx(2920.0, rel=1e-9)
    else:
        assert liq["symbol"].tolist() == ["BTC_USD", "ETH_USD"]
        assert liq["price"].iloc[1] == pytest.approx(1320.0, rel=1e-9)
        assert liq["fee"].iloc[1] == pytest.approx(52.80, rel=1e-9)
        assert r.positions.iloc[-1].tolist() == [0.0, 0.0]
        assert r.equity.iloc[-1] == pytest.approx(9920 - 6800 - 52.80, rel=1e-9)  # 3,067.20
    assert liq["price"].iloc[0] == pytest.approx(20000.0)
    assert liq["fee"].iloc[0] == pytest.approx(80.0)
    assert liq["event"].nunique() == 1  # one liquidation, however many positions it closes


def kraken_btc_then_eth(tmp_path, btc_low, eth_units, **rules):
    """Kraken spot margin, 5x cross, no trading fee: long 1 BTC @ 20,000 (bar 1, the oldest),
    then ``eth_units`` ETH @ 2,000 (bar 2); in bar 3 BTC falls to ``btc_low``, ETH stays."""
    venue = venue_with(tmp_path, "kraken_spot", KRAKEN_PAIRS, taker_fee=0.0, **rules)
    bars = [[(20000,) * 4, (2000,) * 4]] * 3 + [[(20000, 20000, btc_low, btc_low),
                                                 (2000,) * 4]]
    targets = np.full((4, 2), NAN)
    targets[0] = [1, NAN]
    targets[1] = [NAN, eth_units]
    return run1(mkt(["BTC_USD", "ETH_USD"], bars), targets, venue, mode="cross", lev=5), venue


@pytest.mark.parametrize("target", [None, 0.4])
def test_kraken_closes_the_survivor_too_while_the_level_stays_below_100pct(tmp_path, target):
    # VENUES.md §5.1: used margin = cost / leverage, margin level = equity / used margin.
    # 10,000 account, two 5x longs of equal cost: BTC 1 @ 20,000 (the oldest, bar 1) and
    # ETH 10 @ 2,000 (bar 2), used margin 4,000 + 4,000 = 8,000; no trading or borrowing
    # fees, the 0.4% liquidation fee. BTC crashes, ETH stays at 2,000:
    #   40% level: 10,000 + 1 x (P - 20,000) = 0.4 x 8,000 = 3,200 -> P = 13,200.
    # FIFO closes BTC first, at 13,200: loss 6,800, fee 0.4% x 13,200 = 52.80, wallet
    # 10,000 - 6,800 - 52.80 = 3,147.20. ETH alone: level 3,147.20 / 4,000 = 78.68%: above
    # 40% (where the old rule stopped: liquidation_target_level=0.4) but below 100%, so by
    # default ETH is closed too, at 2,000 with the fee 0.4% x 20,000 = 80: wallet 3,067.20.
    rules = {} if target is None else {"liquidation_target_level": target}
    r, venue = kraken_btc_then_eth(tmp_path, 13000, 10, **rules)
    assert venue.rules()["liquidation_target_level"] == (1.0 if target is None else target)
    liq = r.liquidations
    assert liq["bar"].tolist() == [3] * len(liq)
    assert liq["price"].iloc[0] == pytest.approx(13200.0, rel=1e-9)
    assert liq["fee"].iloc[0] == pytest.approx(52.80, rel=1e-9)
    if target == 0.4:
        assert liq["symbol"].tolist() == ["BTC_USD"]
        assert r.positions.iloc[-1].tolist() == [0.0, 10.0]
        assert r.account["wallet_balance"].iloc[-1] == pytest.approx(3147.20, rel=1e-9)
        # the survivor's margin level 78.68%; the run's margin ratio is 40% / that level
        level = 3147.20 / 4000
        assert level == pytest.approx(0.7868)
        assert r.account["margin_ratio"].iloc[-1] == pytest.approx(0.4 / level, rel=1e-9)
    else:
        assert liq["symbol"].tolist() == ["BTC_USD", "ETH_USD"]
        assert liq["price"].iloc[1] == pytest.approx(2000.0)
        assert liq["fee"].iloc[1] == pytest.approx(80.0, rel=1e-9)
        assert r.positions.iloc[-1].tolist() == [0.0, 0.0]
        assert r.account["wallet_balance"].iloc[-1] == pytest.approx(3067.20, rel=1e-9)


def test_kraken_keeps_the_second_position_when_closing_the_oldest_gets_above_100pct(tmp_path):
    # 10,000 account, 5x: BTC 1 @ 20,000 (the oldest: used 4,000) and ETH 2.5 @ 2,000 (cost
    # 5,000: used 1,000); 5,000 used in all. BTC crashes, ETH stays at 2,000:
    #   40% level: 10,000 + (P - 20,000) = 0.4 x 5,000 = 2,000 -> P = 12,000.
    # BTC closes at 12,000, fee 0.4% x 12,000 = 48: wallet 10,000 - 8,000 - 48 = 1,952.
    # ETH alone: 1,952 / 1,000 = 195.2% > 100%: it survives under the default target.
    r, _ = kraken_btc_then_eth(tmp_path, 11000, 2.5)
    liq = r.liquidations
    assert liq["symbol"].tolist() == ["BTC_USD"]
    assert liq["price"].iloc[0] == pytest.approx(12000.0, rel=1e-9)
    assert liq["fee"].iloc[0] == pytest.approx(48.0, rel=1e-9)
    assert r.positions.iloc[-1].tolist() == [0.0, 2.5]
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(1952.0, rel=1e-9)
    assert r.account["margin_ratio"].iloc[-1] == pytest.approx(0.4 / (1952 / 1000), rel=1e-9)


@pytest.mark.parametrize("btc,opens", [(18500, False), (19500, True)])
def test_kraken_no_new_position_below_100pct_margin_level(tmp_path, btc, opens):
    # 5,000 account, BTC long 1 @ 20,000 at 5x: used 4,000. BTC at 18,500: level
    # 3,500 / 4,000 = 87.5% (no call): an ETH order is refused. At 19,500: 4,500 / 4,000 =
    # 112.5%, and ETH 1 @ 2,000 (used 400 <= available 4,500 - 4,000 = 500) fills.
    venue = venue_with(tmp_path, "kraken_spot", KRAKEN_PAIRS, **NO_FEES)
    bars = [[(20000,) * 4, (2000,) * 4]] * 2 + [[(btc,) * 4, (2000,) * 4]] * 2
    m = mkt(["BTC_USD", "ETH_USD"], bars)
    targets = np.full((4, 2), NAN)
    targets[0] = [1, NAN]
    targets[2] = [NAN, 1]
    r = run1(m, targets, venue, mode="cross", lev=5, initial_balance=5000)
    if opens:
        assert len(r.rejections) == 0 and r.positions["ETH_USD"].iloc[-1] == 1.0
    else:
        assert r.rejections["reason"].tolist() == ["margin_level_below_open_level"]
        assert r.rejections["bar"].tolist() == [3]
        assert r.positions["ETH_USD"].iloc[-1] == 0.0
    assert len(r.events[r.events["kind"] == "margin_call"]) == 0


def test_kraken_e_k5_long_opening_and_rollover_fees():
    # 2026 table: 0.025% opening and per 4 h on the quote a long borrows. 0.8 BTC @ 20,000
    # = 16,000 USD: opening fee 4.00 at the fill (bar 1, hour 1); rollovers after each full
    # 4 h: hours 5, 9, 13, 17, 21, 25 -> 6 x 4.00 = 24 over 24 h (E-K5).
    m = mkt(["BTC_USD"], flat_bars(20000, 26), start="2026-03-01")
    r = run1(m, units(26, [0.8]), load_venue("kraken_spot", taker_fee=0.0), mode="cross",
             lev=5)
    ev = r.events
    opening = ev[ev["kind"] == "opening_fee"]
    assert opening["bar"].tolist() == [1]
    assert opening["amount"].tolist() == pytest.approx([4.0])
    roll = ev[ev["kind"] == "rollover_fee"]
    assert roll["bar"].tolist() == [5, 9, 13, 17, 21, 25]
    assert roll["amount"].sum() == pytest.approx(24.0)
    assert r.summary()["borrowing_fees"] == pytest.approx(28.0)
    assert r.equity.iloc[-1] == pytest.approx(10000 - 28.0)


def test_kraken_short_fees_on_the_borrowed_base_at_the_current_price():
    # 2026 table: 0.01% on the BTC a short borrows. 2h bars; short 1 BTC filled at hour 2 @
    # 20,000: opening fee 2.00. 4h marks at hours 6 and 10 fall on bars 3 and 5, valued at
    # those opens: 1 * 22,000 * 0.01% = 2.20 and 1 * 18,000 * 0.01% = 1.80.
    bars = flat_bars(20000, 2) + [(21000,) * 4, (22000,) * 4, (20000,) * 4, (18000,) * 4]
    m = mkt(["BTC_USD"], bars, start="2026-03-01", bar="2h")
    r = run1(m, units(6, [-1]), load_venue("kraken_spot", taker_fee=0.0), mode="cross",
             lev=5)
    ev = r.events
    assert ev.loc[ev["kind"] == "opening_fee", "amount"].tolist() == pytest.approx([2.0])
    roll = ev[ev["kind"] == "rollover_fee"]
    assert roll["bar"].tolist() == [3, 5]
    assert roll["amount"].tolist() == pytest.approx([2.2, 1.8])


# --- every model keeps the books ------------------------------------------------------------


@pytest.mark.parametrize(("venue", "start", "modes", "leverage"), [
    # (Bybit UTA: one margin mode for the whole account)
    ("bybit_linear", CLASSIC, ("cross", "cross"), 20),
    ("bybit_linear", CLASSIC, ("isolated", "isolated"), 20),
    ("bybit_linear", NEW, ("cross", "cross"), 20),
    ("bybit_linear", NEW, ("isolated", "isolated"), 20),
    ("okx_swap", CLASSIC, ("cross", "isolated"), 20),
    ("kraken_spot", CLASSIC, ("cross", "cross"), 5),
])
@pytest.mark.parametrize("seed", range(3))
def test_equity_is_deposit_plus_pnl_minus_fees_funding_and_borrowing(venue, start, modes,
                                                                     leverage, seed):
    # equity at every bar = deposit + realized PnL of the fills + unrealized PnL replayed from
    # the fills - fees - funding - borrowing fees (+ the shortfall the fund covered where a
    # position closes at the trigger price; Bybit's fills are already at the bankruptcy price)
    from helpers import random_market
    from test_engine import replayed_unrealized_pnl

    m, targets = random_market(seed, start=start)
    mode = {"A": modes[0], "B": modes[1], "C": modes[seed % 2]}
    stand_in = {"*": "BTC_USDT"} if venue in ("bybit_linear", "okx_swap") else {}
    r = run(m, targets, venue=venue, margin_mode=mode, leverage=leverage, target_kind="equity",
            slippage=0.0005, stand_in=stand_in)
    n_bars = m.n_bars

    def per_bar(frame, column):
        out = np.zeros(n_bars)
        np.add.at(out, frame["bar"].to_numpy(), frame[column].to_numpy())
        return np.cumsum(out)

    covered = 0.0 if r.venue.model == "bybit_uta" else per_bar(r.liquidations, "shortfall")
    expected = (10_000 + per_bar(r.fills, "realized_pnl") + replayed_unrealized_pnl(r.fills, m)
                - per_bar(r.fills, "fee") - per_bar(r.funding, "payment")
                - per_bar(r.events, "amount") + covered)
    np.testing.assert_allclose(r.equity.to_numpy(), expected, rtol=1e-9, atol=1e-6)
    assert len(r.fills) > 10


def test_bybit_uta_refuses_a_mix_of_margin_modes_naming_the_option_and_the_symbols():
    # VENUES.md §3.1: the Unified Trading Account sets cross or isolated for the whole account
    m = mkt(["BTC_USDT", "ETH_USDT", "SOL_USDT"], [[(100,) * 4] * 3] * 2)
    mix = {"BTC_USDT": "cross", "ETH_USDT": "isolated", "SOL_USDT": "cross"}
    bybit = load_venue("bybit_linear", stand_in={"*": "BTCUSDT"})  # ETH, SOL: BTC's table
    with pytest.raises(ValueError, match=r"whole account.*margin_mode gives 'cross' for "
                                         r"BTC_USDT, SOL_USDT; 'isolated' for ETH_USDT"):
        run1(m, units(2, [1, 1, 1]), bybit, mode=mix, lev=5)
    # one mode for every symbol, as a mapping or as one word, is a Bybit run
    same = dict.fromkeys(mix, "isolated")
    assert len(run1(m, units(2, [1, 1, 1]), bybit, mode=same, lev=5).fills) == 3
    # a venue that sets the mode per symbol takes the mix
    assert len(run1(m, units(2, [1, 1, 1]), "flat", mode=mix, lev=5).fills) == 3


@pytest.mark.parametrize("venue", ["bybit_linear", "binance_usdm"])
def test_bybit_uta_mode_switch_sets_the_account_and_waits_until_no_position_is_open(venue):
    # BTC 20,000 and ETH 2,000 throughout, cross 10x, no fees. Callback orders, decided at the
    # close of bar t and carried out at the open of t + 1:
    #   bar 0: buy 1 BTC (cross);
    #   bar 1: switch ETH, flat, to isolated while BTC is open. Binance sets the mode per
    #          symbol: done, ETH isolated and BTC cross. Bybit's UTA sets it for the account:
    #          refused (a position is open), reason account_mode_switch_with_open_position;
    #   bar 2: close BTC and switch ETH again: reductions fill first, so on Bybit no position
    #          is open and the switch makes both columns isolated (Binance: nothing to do);
    #   bar 3: buy 2 ETH: isolated, its margin 2 x 2,000 / 10 = 400 leaves the wallet.
    from helpers import script

    from backtester.engine.enums import Mode, Order
    from backtester.strategy import Callback

    series = np.full((5, 6, 2), NAN)
    series[Order.TARGET, 0, 0] = 1.0
    series[Order.MODE, 1, 1] = Mode.ISOLATED
    series[Order.TARGET, 2, 0] = 0.0
    series[Order.MODE, 2, 1] = Mode.ISOLATED
    series[Order.TARGET, 3, 1] = 2.0
    m = mkt(["BTC_USDT", "ETH_USDT"], [[(20000,) * 4, (2000,) * 4]] * 6, start=CLASSIC)
    r = run(m, Callback(script, series=series),
            venue=load_venue(venue, taker_fee=0.0, stand_in={"ETH_USDT": "BTC_USDT"}),
            margin_mode="cross", leverage=10, target_kind="units")
    assert r.fills["qty"].tolist() == [1.0, -1.0, 2.0]
    assert r.account["isolated_margin"].iloc[-1] == pytest.approx(400.0)
    assert r.account["wallet_balance"].iloc[-1] == pytest.approx(10_000 - 400.0)
    if venue == "bybit_linear":
        assert r.rejections["reason"].tolist() == ["account_mode_switch_with_open_position"]
        assert r.rejections["bar"].tolist() == [2] and r.rejections["symbol"].tolist() == [
            "ETH_USDT"]
        assert r.output.mode.tolist() == [Mode.ISOLATED, Mode.ISOLATED]
    else:
        assert len(r.rejections) == 0
        assert r.output.mode.tolist() == [Mode.CROSS, Mode.ISOLATED]


def test_bybit_open_position_switches_to_the_new_margin_formula_on_2025_09_02():
    # Isolated long 1 BTC @ 20,000 at 50x, taker 0.055%, opened at 22:00 on 2025-09-01 under the
    # classic rules: margin 400 (no fee to close reserved then), LP = 20,000 - (400 - 100) =
    # 19,700. From the bar of 2025-09-02 00:00 the new formula applies to it: MM at mark plus
    # the fee to close 20,000 x (1 - 1/50) x 0.055% = 10.78, so LP = (400 - 10.78 - 20,000) /
    # (0.005 - 1) = 19,709.82... (Binance's form on the collateral less the fee).
    fee_close = 20_000 * 0.98 * 0.00055
    new_lp = (400 - fee_close - 20_000) / (0.005 - 1)
    m = mkt(["BTC_USDT"], flat_bars(20000, 6), start="2025-09-01 21:00")
    r = run1(m, units(6, [1]), load_venue("bybit_linear"), initial_balance=10_000)
    lp = r.liquidation_prices["BTC_USDT"]
    assert lp.loc["2025-09-01 22:00"].item() == pytest.approx(19_700.0)
    assert lp.loc["2025-09-01 23:00"].item() == pytest.approx(19_700.0)
    assert lp.loc["2025-09-02 00:00"].item() == pytest.approx(new_lp, rel=1e-12)
    assert r.rules_used()[-1].startswith("from 2025-09-02: margin_price=mark")


def test_okx_cascade_of_cuts_in_one_bar_on_several_symbols():
    # 550,000 CHZ = 55,000 contracts: tier 6 (index 5). A crash bar takes each of three
    # isolated positions down the ladder within the bar: cut to tier 4's cap (30,000
    # contracts), then to tier 2's (7,500), then closed: 3 records per symbol, 9 in the bar,
    # with the tiers' rates, and no position left.
    n = 3
    bars = [[(1.0,) * 4] * n] * 2 + [[(1.0, 1.0, 0.5, 0.5)] * n]
    m = mkt([f"CHZ{k}_USDT" for k in range(n)], bars)
    venue = load_venue("okx_swap", taker_fee=0.0)
    chz = venue.spec("CHZUSDT")
    from backtester.venues import Venue

    venue = Venue(name="okx chz", description="test", symbols={}, default=chz,
                  model="okx", rule_history=venue.rule_history)
    r = run1(m, units(3, [550_000] * n), venue, lev=10, initial_balance=1_000_000)
    liq = r.liquidations
    assert len(liq) == 3 * n
    for k in range(n):
        rows = liq[liq["symbol"] == f"CHZ{k}_USDT"]
        assert rows["partial"].tolist() == [True, True, False]
        assert rows["qty"].tolist() == pytest.approx([250_000, 225_000, 75_000])
    assert (r.positions.iloc[-1] == 0).all()


@pytest.mark.parametrize(("low", "call"), [(28_133.30, True), (28_135.0, False)])
def test_kraken_e_k1_margin_call_level_reached_at_28133(low, call):
    # E-K1: $10,000 account, long 1.5 BTC @ 30,000 at 5:1: used margin 9,000. At 28,133.30 the
    # loss is 1.5 x 1,866.70 = 2,800.05, equity 7,199.95, margin level 79.999%: the call. At
    # 28,135 the level is (10,000 - 2,797.50) / 9,000 = 80.03%: none.
    bars = flat_bars(30000, 2) + [(30000, 30000, low, 30000)]
    m = mkt(["BTC_USD"], bars)
    r = run1(m, units(3, [1.5]), load_venue("kraken_spot", **NO_FEES), mode="cross", lev=5)
    calls = r.events[r.events["kind"] == "margin_call"]
    assert len(calls) == int(call)
    if call:
        assert calls["margin_level"].iloc[0] == pytest.approx(7_199.95 / 9_000, abs=1e-9)


def test_kraken_e_k4_short_at_2x_opens_at_100pct_and_calls_at_54500():
    # E-K4: $5,000 account, short $10,000 of BTC @ 50,000 (0.2 BTC) at 2x: used margin 0.1 BTC
    # = $5,000, level 100% at the open (allowed: no position is open before it). At 54,500:
    # equity 5,000 - 0.2 x 4,500 = 4,100, used 0.1 x 54,500 = 5,450: 75.23%.
    bars = flat_bars(50000, 2) + [(50000, 54500, 50000, 50000)]
    m = mkt(["BTC_USD"], bars)
    r = run1(m, units(3, [-0.2]), load_venue("kraken_spot", **NO_FEES), mode="cross", lev=2,
             initial_balance=5_000)
    assert len(r.rejections) == 0
    calls = r.events[r.events["kind"] == "margin_call"]
    assert calls["margin_level"].tolist() == pytest.approx([4_100 / 5_450], abs=1e-12)


# --- Binance through the engine (VENUES.md §2.6) -----------------------------------------------


def test_binance_e_b2_cross_liquidation_prices_of_two_positions():
    # E-B2: WB 1,535,443.01; BTC long 109.488 @ 32,481.98, mark 31,967.27; ETH long 3,683.979 @
    # 1,456.84, mark 1,335.18; the 2021 brackets (BTC 2.5% / cum 16,300 at 3.5M, ETH 10% /
    # cum 135,365 at 4.9M). Binance's formula with the other position frozen gives LP(BTC) =
    # 26,316.89 and LP(ETH) = 1,153.26 (freqtrade asserts both), margin ratio 41.49%.
    # Filled at the opens with no fee (BTC at 20x, ETH at 4x: the brackets' caps).
    entry = (32_481.98, 1_456.84)
    mark = (31_967.27, 1_335.18)
    close = np.array([entry, entry])
    marks = (close.copy(), close.copy(), np.array([entry, mark]), np.array([entry, mark]))
    m = Market.from_arrays(["BTC_USDT", "ETH_USDT"], close, close, close, close, mark=marks,
                           start="2021-07-01")
    targets = np.array([[109.488, 3_683.979], [NAN, NAN]])
    r = run(m, targets, venue=load_venue("binance_usdm", taker_fee=0.0),
            margin_mode="cross", leverage={"BTC_USDT": 20, "ETH_USDT": 4},
            initial_balance=1_535_443.01)
    assert len(r.rejections) == 0 and len(r.liquidations) == 0
    lp = r.liquidation_prices.iloc[1]
    assert lp["BTC_USDT"] == pytest.approx(26_316.89, abs=0.005)
    assert lp["ETH_USDT"] == pytest.approx(1_153.26, abs=0.005)
    assert r.account["margin_ratio"].iloc[1] == pytest.approx(0.4149, abs=5e-5)


# --- Binance partial liquidation above bracket 1 (VENUES.md §2.7) -------------------------------
# The 2024 BTCUSDT brackets (§2.3.1): bracket 1 up to 50,000 at 0.4% (cum 0), bracket 2 from
# 50,000 to 600,000 at 0.5%, cum 50,000 x (0.5% - 0.4%) = 50. No trading fee; 10,000 deposit.

ISO_LP = (6_000 + 50 - 120_000) / (2 * 0.005 - 2)  # §2.5 isolated, bracket 2: 57,261.31
KEPT = 50_000 / ISO_LP  # the lower bracket's cap at the trigger: 0.873190 BTC
CUT = 2 - KEPT  # 1.126810 BTC, 64,522.61 of notional


@pytest.mark.parametrize("rule,fee_rate", [("lower_bracket", 0.003),
                                           ("lower_bracket", 0.0125), ("none", 0.0125)])
def test_binance_isolated_bracket_2_position_is_cut_to_the_lower_bracket_cap(rule, fee_rate):
    # Isolated long 2 BTC @ 60,000 at 20x: notional 120,000 (bracket 2), margin M = 6,000.
    # Trigger (§2.5, bracket 2 at the price): LP = (6,000 + 50 - 120,000) / (0.01 - 2)
    # = 57,261.31; notional there 114,522.61 (bracket 2), equity = MM = 522.61.
    # The IOC at 57,261.31 cuts it to 50,000 of notional: 1.126810 BTC (64,522.61) go.
    #  - fee 0.3% (the 2019-20 BTCUSDT rate): 193.57. The position keeps the order's
    #    proceeds: equity 522.61 - 193.57 = 329.05 > MM(50,000) = 200: compliant, the
    #    liquidation ends. Margin 6,000 + 1.126810 x (57,261.31 - 60,000) - 193.57 =
    #    2,720.44; the rest, 0.873190 BTC, in bracket 1: LP = (2,720.44 - 0.873190 x 60,000)
    #    / (0.873190 x 0.004 - 0.873190) = 57,112.93 (the bar's low 57,200 stays above it).
    #  - fee 1.25% (2024): 806.53 due on the cut, more than the equity 522.61: 522.61 charged
    #    (283.92 waived), nothing left: not compliant, the rest closes at the trigger too,
    #    its fee 625 all waived. The trader loses the margin, as with rule "none" (one close:
    #    522.61 charged, 1.25% x 114,522.61 - 522.61 = 908.92 waived).
    m = mkt(["BTC_USDT"], flat_bars(60000, 2) + [(60000, 60000, 57200, 57200)] * 2)
    venue = load_venue("binance_usdm", taker_fee=0.0, liquidation_fee=fee_rate,
                       partial_liquidation=rule)
    # (continuous sizes: the cut keeps exactly 50,000 of notional; with BTCUSDT's 0.001 BTC
    # step it keeps 0.873 BTC, as tests/test_real_history.py checks)
    r = run1(m, units(4, [2]), venue, lev=20, initial_balance=10_000, order_filters=False)
    liq = r.liquidations
    assert (liq["bar"] == 2).all() and liq["event"].nunique() == 1
    assert liq["price"].tolist() == pytest.approx([ISO_LP] * len(liq), rel=1e-12)
    equity_at_lp = 2 * ISO_LP * 0.005 - 50
    assert equity_at_lp == pytest.approx(522.61, abs=0.01)
    if rule == "none":
        assert liq["partial"].tolist() == [False]
        assert liq["fee"].iloc[0] == pytest.approx(522.613, abs=1e-3)
        assert liq["fee_waived"].iloc[0] == pytest.approx(908.92, abs=1e-2)
    else:
        cut = liq.iloc[0]
        assert cut["partial"] and cut["qty"] == pytest.approx(CUT, rel=1e-12)
        assert CUT * ISO_LP == pytest.approx(64_522.61, abs=0.01)
    if fee_rate == 0.003:
        fee = 0.003 * CUT * ISO_LP
        assert fee == pytest.approx(193.57, abs=0.01)
        margin = 6_000 + CUT * (ISO_LP - 60_000) - fee
        assert margin == pytest.approx(2_720.44, abs=0.01)
        new_lp = (margin - KEPT * 60_000) / (KEPT * 0.004 - KEPT)
        assert new_lp == pytest.approx(57_112.93, abs=0.01)
        assert len(liq) == 1 and liq["fee"].iloc[0] == pytest.approx(fee, rel=1e-9)
        assert r.positions["BTC_USDT"].iloc[-1] == pytest.approx(KEPT, rel=1e-12)
        assert r.liquidation_prices["BTC_USDT"].iloc[2] == pytest.approx(new_lp, rel=1e-9)
        assert r.account["isolated_margin"].iloc[-1] == pytest.approx(margin, rel=1e-9)
        assert r.account["wallet_balance"].iloc[-1] == pytest.approx(4_000.0, rel=1e-12)
        assert r.equity.iloc[-1] == pytest.approx(4_000 + margin + KEPT * (57_200 - 60_000))
    elif rule == "lower_bracket":
        assert liq["partial"].tolist() == [True, False]
        assert liq["fee"].tolist() == pytest.approx([522.613, 0.0], abs=1e-3)
        assert liq["fee_waived"].tolist() == pytest.approx([283.92, 625.0], abs=1e-2)
        assert liq["qty"].iloc[1] == pytest.approx(KEPT, rel=1e-12)
    if fee_rate == 0.0125:
        assert r.positions["BTC_USDT"].iloc[-1] == 0.0
        assert r.equity.iloc[-1] == pytest.approx(4_000.0, rel=1e-12)  # the margin is lost


def test_binance_small_isolated_position_in_bracket_1_is_closed_whole():
    # Long 0.5 BTC @ 60,000 at 20x: 30,000 (bracket 1), margin 1,500. LP = (1,500 - 30,000) /
    # (0.5 x 0.004 - 0.5) = 57,228.92; equity there = MM = 0.4% x 28,614.46 = 114.46, all of it
    # the 1.25% fee (357.68 due): "small accounts are fully liquidated" (§2.7).
    m = mkt(["BTC_USDT"], flat_bars(60000, 2) + [(60000, 60000, 57000, 57000)])
    r = run1(m, units(3, [0.5]), load_venue("binance_usdm", taker_fee=0.0,
                                            liquidation_fee=0.0125), lev=20)
    liq = r.liquidations
    assert liq["partial"].tolist() == [False]
    assert liq["qty"].iloc[0] == 0.5
    assert liq["price"].iloc[0] == pytest.approx(28_500 / 0.498, rel=1e-12)
    assert liq["fee"].iloc[0] == pytest.approx(114.458, abs=1e-3)
    assert liq["fee_waived"].iloc[0] == pytest.approx(357.681 - 114.458, abs=1e-3)
    assert r.equity.iloc[-1] == pytest.approx(10_000 - 1_500, rel=1e-12)


CROSS_LP = (120_000 - 10_000 + 70) / 1.99  # 55,311.56


@pytest.mark.parametrize("fee_rate", [0.003, 0.0125])
def test_binance_cross_cuts_the_bracket_2_position_and_keeps_the_account_if_compliant(fee_rate):
    # Cross, 10,000 deposit: BTC long 2 @ 60,000 at 20x (120,000, bracket 2) and ETH long 10 @
    # 3,000 at 20x (30,000, bracket 1: MM 120 at 3,000). BTC falls, ETH stays. Trigger
    # MB = total MM: 10,000 + 2 (P - 60,000) = (2P x 0.5% - 50) + 120 -> 1.99 P = 110,070,
    # P = 55,311.56 (BTC notional 110,623.12, bracket 2); MB = MM = 623.12.
    # BTC, the only position above bracket 1, is cut to 50,000: 60,623.12 of notional.
    #  - fee 0.3%: 181.87; MB 623.12 - 181.87 = 441.25 > MM 200 + 120 = 320: compliant, ETH
    #    and 0.903971 BTC are kept. Wallet 10,000 + 1.096029 x (55,311.56 - 60,000) - 181.87
    #    = 4,679.46; BTC's new price (ETH frozen): 4,679.46 + q (P - 60,000) = 0.004 q P + 120
    #    -> P = (q x 60,000 - 4,559.46) / (0.996 q) = 55,176.89 (the low 55,250 is above it).
    #  - fee 1.25%: 757.79 due, more than the margin balance 623.12 (623.12 charged, 134.67
    #    waived): MB 0 < 320, not compliant: BTC's rest and ETH close at the trigger with
    #    fees 625 + 375 = 1,000 that nothing is left to pay. The event's fees are waived in
    #    proportion (DESIGN §4, settle_deficit): 623.12 charged in all, each record keeping
    #    623.12 / 1,623.12 of what it charged; the account ends at 0.
    bars = [[(60000,) * 4, (3000,) * 4]] * 2 + [[(60000, 60000, 55250, 55250), (3000,) * 4]] * 2
    m = mkt(["BTC_USDT", "ETH_USDT"], bars)
    venue = load_venue("binance_usdm", taker_fee=0.0, liquidation_fee=fee_rate)
    r = run1(m, units(4, [2, 10]), venue, mode="cross", lev=20, initial_balance=10_000,
             order_filters=False)  # continuous sizes: the cut keeps exactly 50,000
    liq = r.liquidations
    kept = 50_000 / CROSS_LP
    cut_notional = 2 * CROSS_LP - 50_000
    assert cut_notional == pytest.approx(60_623.12, abs=0.01)
    assert liq["event"].nunique() == 1 and (liq["bar"] == 2).all()
    assert liq["symbol"].iloc[0] == "BTC_USDT" and liq["partial"].iloc[0]
    assert liq["qty"].iloc[0] == pytest.approx(2 - kept, rel=1e-9)
    assert liq["price"].iloc[0] == pytest.approx(CROSS_LP, rel=1e-9)
    if fee_rate == 0.003:
        fee = 0.003 * cut_notional
        wallet = 10_000 + (2 - kept) * (CROSS_LP - 60_000) - fee
        assert wallet == pytest.approx(4_679.46, abs=0.01)
        new_lp = (kept * 60_000 - wallet + 120) / (0.996 * kept)
        assert new_lp == pytest.approx(55_176.89, abs=0.01)
        assert len(liq) == 1 and liq["fee"].iloc[0] == pytest.approx(fee, rel=1e-9)
        assert r.positions.iloc[-1].tolist() == pytest.approx([kept, 10.0], rel=1e-9)
        assert r.account["wallet_balance"].iloc[-1] == pytest.approx(wallet, rel=1e-9)
        assert r.liquidation_prices["BTC_USDT"].iloc[2] == pytest.approx(new_lp, rel=1e-9)
    else:
        assert liq["symbol"].tolist() == ["BTC_USDT", "BTC_USDT", "ETH_USDT"]
        assert liq["partial"].tolist() == [True, False, False]
        share = 623.1156 / 1_623.1156
        assert liq["fee"].tolist() == pytest.approx([623.1156 * share, 625 * share,
                                                     375 * share], abs=1e-3)
        assert liq["fee"].sum() == pytest.approx(623.1156, abs=1e-3)
        assert liq["fee_waived"].sum() == pytest.approx(757.7890 + 1_000 - 623.1156, abs=1e-3)
        assert r.positions.iloc[-1].tolist() == [0.0, 0.0]
        assert r.equity.iloc[-1] == pytest.approx(0.0, abs=1e-6)


def test_a_cut_and_the_close_after_it_are_one_liquidated_position():
    # The isolated bracket-2 case above at 1.25%: the cut is not compliant, so the rest
    # closes in the same event: two records, one liquidation of one position, in run()'s
    # summary and in a sweep's compiled metrics alike.
    from backtester import sweep

    m = mkt(["BTC_USDT"], flat_bars(60000, 2) + [(60000, 60000, 57200, 57200)] * 2)
    venue = load_venue("binance_usdm", taker_fee=0.0, liquidation_fee=0.0125)
    r = run1(m, units(4, [2]), venue, lev=20, initial_balance=10_000, order_filters=False)
    assert r.liquidations["partial"].tolist() == [True, False]
    assert (r.summary()["liquidations"], r.summary()["liquidated_positions"]) == (1, 1)
    rows = sweep(m, lambda market, size: units(4, [size]),
                 {"size": [2.0], "venue": "binance_usdm", "margin_mode": "isolated",
                  "venue_overrides": [{"taker_fee": 0.0, "liquidation_fee": 0.0125}],
                  "leverage": 20,
                  "target_kind": "units", "order_filters": False}, progress=False)
    assert rows["error"].isna().all()
    assert (rows["liquidations"].iloc[0], rows["liquidated_positions"].iloc[0]) == (1, 1)


@pytest.mark.parametrize("mode", ["isolated", "cross"])
def test_a_short_whose_notional_climbs_back_is_cut_at_most_once_per_tier_in_a_bar(mode):
    # Short 30 BTC @ 20,000 at 20x (600,000: bracket 3 of 12), 0.3% fee. The bar climbs to
    # 40,000: each cut leaves the position at a bracket's cap, which the rising price pushes
    # back above, so it would be cut again and again on the way up (the record buffers, sized
    # for a cut per tier and bar, overflowed: the property tests' crash). A position takes at
    # most its tier count (12) of cuts in one bar; what is left then closes whole.
    m = mkt(["BTC_USDT"], flat_bars(20000, 2) + [(20000, 40000, 20000, 40000)] * 2,
            start="2025-01-01")
    venue = load_venue("binance_usdm", taker_fee=0.0, liquidation_fee=0.003)
    r = run1(m, units(4, [-30]), venue, mode=mode, lev=20, initial_balance=100_000,
             order_filters=False)
    liq = r.liquidations
    assert (liq["bar"] == 2).all()
    assert 2 <= int(liq["partial"].sum()) <= 12
    assert not liq["partial"].iloc[-1] and liq["qty"].sum() == pytest.approx(-30.0)
    assert r.positions["BTC_USDT"].iloc[-1] == 0.0
    assert np.isfinite(r.account.to_numpy()).all()
