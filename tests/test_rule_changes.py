"""A venue's tier table changing inside a run applies from its date on, to open positions too.

Binance applies new brackets to positions already open (VENUES.md §2.3.3, the
2021-06-22 announcement). The test venue's maintenance margin rate steps from
0.5% to 2% at 05:00; everything else is held still so the change is all that moves.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from backtester import Market, run

STEPPED = """
name = "stepped"
model = "binance"
description = "test venue: the maintenance margin rate steps from 0.5% to 2% at 05:00"
funding_interval_hours = 8
source = "a test"

[fees]
taker_fee = 0.0
maker_fee = 0.0
liquidation_fee = 0.0

[[symbols.XUSDT]]
valid_from = 2024-01-01T00:00:00Z
tiers = [{ floor = 0, cap = inf, max_leverage = 20, mmr = 0.005 }]
{second}
"""
SECOND = """
[[symbols.XUSDT]]
valid_from = 2024-01-01T05:00:00Z
tiers = [{ floor = 0, cap = inf, max_leverage = 20, mmr = 0.02 }]
"""


@pytest.fixture
def stepped(tmp_path):
    path = tmp_path / "stepped.toml"
    path.write_text(STEPPED.replace("{second}", SECOND))
    return path


@pytest.fixture
def unchanged(tmp_path):
    path = tmp_path / "unchanged.toml"
    path.write_text(STEPPED.replace("{second}", ""))
    return path


def flat_market(n_bars=8, low_at=None, low=None):
    price = np.full((n_bars, 1), 100.0)
    lows = price.copy()
    if low_at is not None:
        lows[low_at, 0] = low
    return Market.from_arrays(["X_USDT"], price, price, lows, price, start="2024-01-01")


def hold(n_bars, qty):
    targets = np.full((n_bars, 1), np.nan)
    targets[0] = qty
    return targets


def test_cross_maintenance_margin_follows_the_table_in_force(stepped):
    # long 10 @ 100 from bar 1: MM = 1,000 x 0.5% = 5 until 04:00, 1,000 x 2% = 20 from 05:00
    r = run(flat_market(), hold(8, 10), venue=stepped, margin_mode="cross", leverage=5)
    mm = r.account["maintenance_margin"].to_numpy()
    np.testing.assert_allclose(mm[1:5], 5.0)
    np.testing.assert_allclose(mm[5:], 20.0)
    assert [s.tiers[0].mmr for s in r.specs["X_USDT"]] == [0.005, 0.02]


def test_isolated_liquidation_price_moves_when_the_table_changes(stepped, unchanged, tmp_path):
    # isolated long 10 @ 100 at 10x: margin 100. LP = (100 - 1,000) / (10 x mmr - 10):
    lp_before = 900 / (10 - 10 * 0.005)  # 90.452
    lp_after = 900 / (10 - 10 * 0.02)  # 91.837
    market = flat_market(low_at=6, low=91.0)  # a dip between the two prices, after 05:00
    r = run(market, hold(8, 10), venue=stepped, margin_mode="isolated", leverage=10)
    lps = r.liquidation_prices["X_USDT"].to_numpy()
    np.testing.assert_allclose(lps[1:5], lp_before)
    np.testing.assert_allclose(lps[5], lp_after)
    liq = r.liquidations
    assert liq["timestamp"].iloc[0].hour == 6
    assert liq["price"].iloc[0] == pytest.approx(lp_after)
    r.save(tmp_path / "run")
    labels = json.loads((tmp_path / "run" / "run.json").read_text())["venue_specs"]["X_USDT"]
    assert len(labels) == 2  # the run records both versions it ran under
    # under the old table alone the same dip does not reach the liquidation price
    r = run(market, hold(8, 10), venue=unchanged, margin_mode="isolated", leverage=10)
    assert len(r.liquidations) == 0


def long_ten(market):
    """Hold 10 units of the market's symbol from the first decision on."""
    return hold(market.n_bars, 10)


def test_a_sweep_applies_the_same_change_as_run(stepped):
    from backtester import sweep

    market = flat_market(low_at=6, low=91.0)
    rows = sweep(market, long_ten, {"venue": str(stepped), "margin_mode": ["isolated", "cross"],
                                    "leverage": 10, "target_kind": "units"})
    for _, row in rows.iterrows():
        expected = run(market, long_ten(market), venue=stepped, margin_mode=row["margin_mode"],
                       leverage=10).summary()
        for name, value in expected.items():
            assert row[name] == pytest.approx(value, nan_ok=True), name
    # the isolated run is liquidated only because the new table is in force at 06:00
    assert rows.set_index("margin_mode").loc["isolated", "liquidations"] == 1
