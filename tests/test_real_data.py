"""Runs on real Binance USDT-M data (the shared folder; skipped where it is absent).

Expected figures are computed here straight from the parquet files with pandas,
independently of the loader and the engine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from backtester import load_market, run

START, END = "2021-01-01", "2022-01-01"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def binance():
    folder = SHARED / "binance_futures"
    if not (folder / "BTC_USDT-1h.parquet").exists():
        pytest.skip("shared Binance futures data not present")
    return folder


def test_hedged_run_on_binance_btc_eth_pays_the_funding_computed_from_the_files(binance):
    market = load_market(binance, symbols=["BTC_USDT", "ETH_USDT"], timeframe="1h",
                         start=START, end=END)
    qty = {"BTC_USDT": 0.5, "ETH_USDT": -5.0}
    targets = np.full((market.n_bars, 2), np.nan)
    targets[0] = [qty["BTC_USDT"], qty["ETH_USDT"]]  # decided at the first close
    result = run(market, targets, margin_mode="cross", leverage=2, initial_balance=200_000,
                 venue="binance_usdm")
    assert len(result.liquidations) == 0 and len(result.rejections) == 0
    opened = pd.Timestamp(START, tz="UTC") + pd.Timedelta(hours=1)  # filled at bar 1's open

    expected = 0.0
    for symbol, q in qty.items():
        rates = pd.read_parquet(binance / f"{symbol}_funding.parquet")
        marks = pd.read_parquet(binance / f"{symbol}_mark-1h.parquet").set_index("timestamp")
        window = rates[(rates["timestamp"] >= opened) & (rates["timestamp"] < END)]
        # held across each funding time: pays q * mark * rate (mark at the funding instant,
        # the mark bar opening then)
        mark_at = marks["open"].reindex(window["timestamp"]).to_numpy()
        assert not np.isnan(mark_at).any()
        expected += float((q * mark_at * window["funding_rate"].to_numpy()).sum())
        n_prints = len(window)
        assert (result.funding["symbol"] == symbol).sum() == n_prints  # 3 a day, all year
    assert result.funding["payment"].sum() == pytest.approx(expected, rel=1e-12)
    assert result.summary()["funding_paid"] == pytest.approx(expected, rel=1e-12)
    # and the run completed every bar of the year
    assert market.n_bars == 365 * 24 and np.isfinite(result.equity).all()
