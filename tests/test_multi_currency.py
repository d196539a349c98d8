"""OKX multi-currency margin (VENUES.md §4.5): coins held beside the USDT balance back the cross
account at their discounted value, and a negative USDT balance is a loan charged interest.

The okx_swap venue's stand-in for unlisted swaps is one tier: MMR 0.4%, liquidation fee
0.05% (in the trigger: equity <= MM + fee), taker 0.05%. BTC collateral takes BETH's
published discount tiers as a stand-in: 95% of the first 2M USD. Numbers by hand below.
"""

from __future__ import annotations

import numpy as np
import pytest

from backtester import Market, run
from backtester.venues import load_venue

T = 8


def btc_market(closes=None, low_at=None, low=None):
    close = np.full((T, 1), 20_000.0) if closes is None else np.asarray(closes, float)[:, None]
    lows = close.copy()
    if low_at is not None:
        lows[low_at, 0] = low
    return Market.from_arrays(["BTC_USDT"], close, close, lows, close)


def long_btc(qty, close_at=None):
    targets = np.full((T, 1), np.nan)
    targets[0] = qty
    if close_at is not None:
        targets[close_at] = 0.0
    return targets


def okx_run(market, targets, **options):
    options = {"venue": "okx_swap", "leverage": 10, "margin_mode": "cross", **options}
    return run(market, targets, **options)


def test_collateral_backs_an_order_the_quote_balance_cannot():
    # long 2 BTC @ 20,000 at 10x needs IM 4,000 + fee 20 = 4,020; 3,000 USDT is short of it,
    # 0.2 BTC of collateral adds 0.95 x 4,000 = 3,800 of discounted value: 6,800 available
    market = btc_market()
    alone = okx_run(market, long_btc(2.0), initial_balance=3_000)
    assert alone.rejections["reason"].tolist() == ["insufficient_margin"]
    assert alone.rejections["available"].iloc[0] == pytest.approx(3_000.0)
    backed = okx_run(market, long_btc(2.0), initial_balance=3_000, collateral={"btc": 0.2})
    assert len(backed.rejections) == 0
    assert backed.positions["BTC_USDT"].iloc[-1] == 2.0
    # the account starts with 3,000 + 0.2 x 20,000 = 7,000
    assert backed.summary()["initial_balance"] == pytest.approx(7_000.0)
    assert backed.account["equity"].iloc[1] == pytest.approx(7_000.0 - 20.0)


def test_the_cross_trigger_counts_the_discounted_collateral_and_sells_it_to_repay():
    # WB = 3,000 - 20 = 2,980. Trigger: adjEq = MM + liquidation fee:
    #   2,980 + 2 (P - 20,000) + 0.95 x 0.2 P = 2 P (0.004 + 0.0005)
    #   -> P (2 + 0.19 - 0.009) = 37,020 -> P = 37,020 / 2.181 = 16,973.865...
    # closing 2 BTC there: realized 2 (P - 20,000), fee 2 P x 0.05%; the wallet
    # 2,980 + realized - fee is negative and is repaid by selling BTC at P
    market = btc_market(low_at=5, low=15_000.0)
    result = okx_run(market, long_btc(2.0), initial_balance=3_000, collateral={"BTC": 0.2})
    p = 37_020 / 2.181
    liq = result.liquidations
    # the position, then the coins sold to repay (recorded as the liquidation of a holding)
    assert liq["symbol"].tolist() == ["BTC_USDT", "BTC"]
    assert liq["mode"].tolist() == ["cross", "collateral"]
    assert liq["event"].nunique() == 1
    assert liq["price"].iloc[0] == pytest.approx(p, rel=1e-9)
    wallet = 2_980 + 2 * (p - 20_000) - 2 * p * 0.0005
    sold = -wallet / p
    sale = result.fills[result.fills["symbol"] == "BTC"]
    assert sale["qty"].iloc[0] == pytest.approx(-sold, rel=1e-9)
    assert sale["reason"].iloc[0] == "liquidation"
    assert liq["qty"].iloc[1] == pytest.approx(sold, rel=1e-9)
    assert liq["price"].iloc[1] == pytest.approx(p, rel=1e-9)
    assert liq["fee"].iloc[1] == 0.0 and bool(liq["partial"].iloc[1])
    assert result.positions["BTC"].iloc[-1] == pytest.approx(0.2 - sold, rel=1e-9)
    assert result.account["wallet_balance"].iloc[-1] == pytest.approx(0.0, abs=1e-9)


def test_a_negative_quote_balance_is_a_loan_that_accrues_interest():
    # 1,000 USDT and 1 BTC; long 1 BTC @ 20,000 (no taker fee), closed at the open of bar 3
    # at 18,500: the wallet is 1,000 - 1,500 = -500, a loan. Interest is charged at each
    # later bar's open for the hour that ended: W <- W (1 + r), r = 10% / 8,760; bars 4..7
    # charge it 4 times: 500 ((1 + r)^4 - 1) in all.
    closes = [20_000, 20_000, 18_500, 18_500, 18_500, 18_500, 18_500, 18_500]
    market = btc_market(closes)
    result = okx_run(market, long_btc(1.0, close_at=2), initial_balance=1_000,
                     collateral={"BTC": 1.0}, venue=load_venue("okx_swap", taker_fee=0.0))
    r = 0.10 / 8_760
    interest = result.events[result.events["kind"] == "loan_interest"]
    assert len(interest) == 4
    assert interest["amount"].sum() == pytest.approx(500 * ((1 + r) ** 4 - 1), rel=1e-9)
    assert result.account["wallet_balance"].iloc[-1] == pytest.approx(-500 * (1 + r) ** 4,
                                                                      rel=1e-12)
    assert result.summary()["borrowing_fees"] == pytest.approx(500 * ((1 + r) ** 4 - 1))


def test_collateral_is_not_traded_and_pays_no_funding():
    rate = np.full((T, 1), np.nan)
    rate[3, 0] = 0.001
    close = np.full((T, 1), 20_000.0)
    market = Market.from_arrays(["BTC_USDT"], close, close, close, close, funding_rate=rate)
    result = okx_run(market, long_btc(0.1), initial_balance=3_000, collateral={"BTC": 0.5})
    # only the perpetual pays: 0.1 x 20,000 x 0.1% = 2
    assert result.funding["symbol"].tolist() == ["BTC_USDT"]
    assert result.funding["payment"].iloc[0] == pytest.approx(2.0)
    assert result.positions["BTC"].iloc[-1] == 0.5


@pytest.mark.parametrize(("collateral", "venue", "message"), [
    ({"BTC": 1.0}, "kraken_spot", r"collateral \(multi-currency margin\) is what the binance, "
                                  "bybit_uta and okx models simulate; venue kraken_spot"),
    ({"USDT": 1.0}, "okx_swap", "USDT is the quote balance: give it as initial_balance"),
    ({"SOL": 1.0}, "okx_swap", "collateral SOL needs a SOL_USDT price column"),
    ({"BTC": -1.0}, "okx_swap", r"collateral\['BTC'\]=-1.0: must be a positive amount"),
])
def test_bad_collateral_is_refused_clearly(collateral, venue, message):
    with pytest.raises(ValueError, match=message):
        run(btc_market(), long_btc(0.1), venue=venue, leverage=10, collateral=collateral)


def test_a_loan_left_alone_is_liquidated_when_the_collateral_no_longer_covers_it():
    # 1,000 USDT and 1 BTC: long 1 BTC @ 20,000 closed at 18,500 (no fee) leaves a loan of 500
    # (bar 3). Interest is charged at the opens of bars 4 and 5: the loan is 500 (1 + r)^2. In
    # bar 5 BTC slides from 18,500 to 400: the account, with no position left, triggers where
    # the discounted coin covers the loan no more, 0.95 P = 500 (1 + r)^2, and that much of
    # the coin is sold there to repay it: 0.95 BTC; 0.05 BTC is left, worth 22.50 at 450
    r = 0.10 / 8_760
    loan = 500 * (1 + r) ** 2
    close = np.array([20_000, 20_000, 18_500, 18_500, 18_500, 450, 450, 450], float)
    open_ = close.copy()
    open_[5] = 18_500
    high = np.maximum(open_, close)
    low = np.minimum(open_, close)
    low[5] = 400
    market = Market.from_arrays(["BTC_USDT"], open_, high, low, close)
    result = okx_run(market, long_btc(1.0, close_at=2), initial_balance=1_000,
                     collateral={"BTC": 1.0}, venue=load_venue("okx_swap", taker_fee=0.0))
    liq = result.liquidations
    p = loan / 0.95
    assert liq["symbol"].tolist() == ["BTC"] and liq["bar"].tolist() == [5]
    assert liq["price"].iloc[0] == pytest.approx(p, rel=1e-9)
    assert liq["qty"].iloc[0] == pytest.approx(0.95, rel=1e-9)
    assert liq["shortfall"].iloc[0] == 0.0
    assert result.positions["BTC"].iloc[-1] == pytest.approx(0.05, rel=1e-9)
    assert result.account["wallet_balance"].iloc[5] == pytest.approx(0.0, abs=1e-9)
    assert result.equity.iloc[-1] == pytest.approx(0.05 * 450, rel=1e-9)


def test_a_loan_gapped_past_its_collateral_leaves_a_shortfall_not_a_debt():
    # the same loan, but bar 5 opens at 450: at the open (before that bar's interest) the loan
    # is 500 (1 + r); the whole coin sold at 450 repays 450 of it, and the 50.0057 left is
    # the deficit past bankruptcy: the shortfall; the account ends at zero, not below
    r = 0.10 / 8_760
    close = np.array([20_000, 20_000, 18_500, 18_500, 18_500, 450, 450, 450], float)
    market = btc_market(close)
    result = okx_run(market, long_btc(1.0, close_at=2), initial_balance=1_000,
                     collateral={"BTC": 1.0}, venue=load_venue("okx_swap", taker_fee=0.0))
    liq = result.liquidations
    assert liq["symbol"].tolist() == ["BTC"] and bool(liq["gapped"].iloc[0])
    assert liq["qty"].iloc[0] == 1.0
    assert liq["shortfall"].iloc[0] == pytest.approx(500 * (1 + r) - 450, rel=1e-9)
    assert result.equity.iloc[5:].tolist() == [0.0, 0.0, 0.0]
    assert result.summary()["bankruptcy_shortfall"] == pytest.approx(500 * (1 + r) - 450)
