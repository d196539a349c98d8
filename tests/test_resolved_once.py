"""Venue specs are resolved once per venue object, symbol and time (issue 15), and that changes
nothing: a run under a venue that has resolved everything before gives the very bits of a
run under a fresh copy, and no venue ever gets another venue's spec."""

from __future__ import annotations

import dataclasses
import os
import pickle
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest

from backtester import Market, load_market, run
from backtester.venues import Venue, load_venue, tiers_from_table
from backtester.venues.spec import SymbolSpec
from strategies import hedged_pair

# a window across dated versions: Binance's tables of 2024-02-03 and 2024-05-30, Bybit's
# tables and rules of 2024-03-12 and 2024-04-11
WINDOW = ("2024-01-25", "2024-06-05")
CONFIGS = [("binance_usdm", "cross", 20), ("binance_usdm", "isolated", 20),
           ("bybit_linear", "cross", 10), ("bybit_linear", "isolated", 20),
           ("okx_swap", "cross", 10), ("okx_swap", "isolated", 20),
           ("kraken_spot", "cross", 5)]
RECORDS = ("fills", "liquidations", "funding", "rejections", "events")


@pytest.fixture(scope="module")
def market():
    return load_market(start=WINDOW[0], end=WINDOW[1])


def fresh(venue: Venue) -> Venue:
    """An equal venue that has resolved nothing yet (a pickled venue leaves its memo)."""
    copy = pickle.loads(pickle.dumps(venue))
    assert copy == venue and not copy._memo
    return copy


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal dtype, shape and bytes, field by field (a record's padding bytes are not data)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    names = a.dtype.names or (None,)
    return all(np.ascontiguousarray(a if n is None else a[n]).tobytes()
               == np.ascontiguousarray(b if n is None else b[n]).tobytes() for n in names)


@pytest.mark.parametrize(("name", "mode", "leverage"), CONFIGS)
def test_a_run_under_a_venue_resolved_before_is_bit_identical_to_one_under_a_fresh_copy(
        market, name, mode, leverage):
    targets = hedged_pair(market, exposure=3.0, rebalance_every=48)
    options = dict(margin_mode=mode, leverage=leverage, target_kind="equity")
    venue = load_venue(name, stand_in={"*": "BTCUSDT"} if name in ("bybit_linear", "okx_swap")
                       else None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (notes on tables older than the data)
        reference = run(market, targets, venue=fresh(venue), **options)
        run(market, targets, venue=venue, **options)  # resolves everything ...
        again = run(market, targets, venue=venue, **options)  # ... and this reads the memo
    assert venue._memo
    assert same_bits(reference.output.account, again.output.account)
    for records in RECORDS:
        assert same_bits(getattr(reference.output, records), getattr(again.output, records))
    assert {s: [v.label for v in versions] for s, versions in reference.specs.items()} == \
        {s: [v.label for v in versions] for s, versions in again.specs.items()}
    assert reference.summary() == again.summary()


def test_dated_versions_resolve_from_the_memo_as_they_do_fresh():
    venue = load_venue("bybit_linear")
    times = ["2023-06-01", "2024-03-12", "2024-04-10", "2024-04-11", "2025-09-02", None]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = [(venue.spec("BTCUSDT", at), venue.rules(at)) for at in times]
        again = [(venue.spec("BTCUSDT", at), venue.rules(at)) for at in times]
        reference = [(fresh(venue).spec("BTCUSDT", at), fresh(venue).rules(at)) for at in times]
    assert first == again == reference
    assert len({spec.valid_from for spec, _ in first}) > 2  # several versions, still apart
    assert first[-2][1]["margin_price"] == "mark" != first[0][1]["margin_price"]


def test_a_run_across_a_dated_version_still_runs_under_both(market):
    venue = load_venue("binance_usdm")
    targets = hedged_pair(market, exposure=1.0, rebalance_every=48)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(2):
            result = run(market, targets, venue=venue, leverage=5, target_kind="equity")
            dates = [str(s.valid_from.date()) for s in result.specs["BTC_USDT"]]
            assert dates[-2:] == ["2024-02-03", "2024-05-30"]


def hand_made(name: str, mmr: float, taker_fee: float) -> Venue:
    spec = SymbolSpec("BTCUSDT", tiers_from_table([(0, float("inf"), 50, mmr)]), taker_fee,
                      0.0, 0.01)
    return Venue(name=name, description="by hand", symbols={}, default=spec)


def test_venues_built_by_hand_with_one_name_never_share_a_spec(market):
    a, b = hand_made("hand", 0.01, 0.0004), hand_made("hand", 0.005, 0.0001)
    for _ in range(2):
        assert a.spec("ETH_USDT").tiers[0].mmr == 0.01
        assert b.spec("ETH_USDT").tiers[0].mmr == 0.005
        assert a.arrays(["BTC_USDT"]).mmrs[0, 0] == 0.01
        assert b.arrays(["BTC_USDT"]).mmrs[0, 0] == 0.005
    targets = hedged_pair(market.slice(0, 200), exposure=1.0, rebalance_every=24)
    rates = []
    for venue in (a, b, a):
        fills = run(market.slice(0, 200), targets, venue=venue, leverage=5,
                    target_kind="equity").output.fills
        rates.append(np.unique(np.round(fills["fee"] / np.abs(fills["qty"] * fills["price"]),
                                        10)).tolist())
    assert rates == [[0.0004], [0.0001], [0.0004]]


def test_overrides_and_stand_ins_make_venues_of_their_own():
    base = load_venue("binance_usdm")
    assert base.spec("BTCUSDT").taker_fee == 0.0005
    cheap = load_venue("binance_usdm", taker_fee=0.0001)
    assert cheap.spec("BTCUSDT").taker_fee == 0.0001
    assert base.spec("BTCUSDT").taker_fee == 0.0005
    okx = load_venue("okx_swap")
    with pytest.raises(KeyError):
        okx.spec("ETHUSDT")
    standing = load_venue("okx_swap", stand_in={"*": "BTCUSDT"})
    assert standing.spec("ETHUSDT").stand_in == "BTCUSDT"
    with pytest.raises(KeyError):  # the base venue still lists no ETH
        okx.spec("ETHUSDT")


VENUE_FILE = """
name = "edited"
model = "binance"
description = "a venue file edited between runs"
funding_interval_hours = 8

[fees]
taker_fee = {fee}
maker_fee = 0.0002
liquidation_fee = 0.0125

[[default]]
tiers = [{{ floor = 0, cap = inf, max_leverage = 50, mmr = {mmr} }}]
"""


def test_a_venue_file_edited_between_runs_is_read_and_resolved_again(tmp_path, market):
    path = tmp_path / "edited.toml"
    path.write_text(textwrap.dedent(VENUE_FILE.format(fee=0.0004, mmr=0.01)))
    before = load_venue(str(path))
    assert before.spec("BTCUSDT").taker_fee == 0.0004
    path.write_text(textwrap.dedent(VENUE_FILE.format(fee=0.00015, mmr=0.005)))
    os.utime(path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    after = load_venue(str(path))
    assert after is not before
    assert after.spec("BTCUSDT").taker_fee == 0.00015
    assert after.arrays(["BTCUSDT"]).mmrs[0, 0] == 0.005
    assert before.spec("BTCUSDT").taker_fee == 0.0004  # a venue already loaded is frozen
    other = tmp_path / "other.toml"  # the same name from another path: its own contents
    other.write_text(textwrap.dedent(VENUE_FILE.format(fee=0.0003, mmr=0.01)))
    assert load_venue(str(other)).spec("BTCUSDT").taker_fee == 0.0003
    small = market.slice(0, 100)
    targets = hedged_pair(small, exposure=1.0, rebalance_every=24)
    fee = run(small, targets, venue=str(path), leverage=5, target_kind="equity").fills["fee"]
    assert fee.sum() == pytest.approx(run(small, targets, venue=fresh(after), leverage=5,
                                          target_kind="equity").fills["fee"].sum())


def test_shared_kernel_arrays_are_read_only():
    arrays = load_venue("binance_usdm").arrays(["BTCUSDT"], at="2024-01-01")
    with pytest.raises(ValueError, match="read-only"):
        arrays.mmrs[0, 0] = 0.5
    first, second = (load_venue("binance_usdm").account_rules() for _ in range(2))
    assert not np.shares_memory(first, second)  # each a copy, the kernel's to write


def test_the_note_of_a_time_before_every_version_comes_on_every_call():
    venue = load_venue("binance_usdm")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        venue.spec("BTCUSDT", at="2015-01-01")
        venue.spec("BTCUSDT", at="2015-01-01")
    assert len(caught) == 2 and "earlier times use that one" in str(caught[1].message)


def memo_entries(venue: Venue, what: str) -> int:
    """How many of ``what`` (``"rule_versions"``, ``"column_options"``) the venue keeps."""
    return sum(1 for key in venue._memo if key[:2] == ("made", what))


def test_runs_of_windows_under_the_same_versions_share_their_rule_arrays_and_no_other(market):
    """The rule arrays and column options a run builds are kept on the venue by the versions
    in force at its bars, not by their dates: a window under the versions another ran under
    builds nothing, one under other versions builds its own, and every run gives the bits of
    a run under a fresh copy of the venue. (Binance's BTC and ETH tables change on
    2023-12-12, 2024-02-03 and 2024-05-30.)"""
    venue = fresh(load_venue("binance_usdm"))  # (a memo no other test fills)
    windows = [("2024-01-25", "2024-02-01", 1),  # under 2023-12-12's tables: new
               ("2024-02-05", "2024-02-20", 1),  # under 2024-02-03's: new
               ("2024-02-10", "2024-03-01", 0),  # under them too, on other dates: shared
               ("2024-01-28", "2024-02-10", 1),  # across 2024-02-03: new
               ("2024-05-20", "2024-06-05", 1),  # across 2024-05-30: new
               ("2024-01-26", "2024-02-02", 0),  # under 2023-12-12's again: shared
               ("2024-01-29", "2024-02-12", 1)]  # across 2024-02-03 from another bar: new
    for start, end, new in windows:
        window = load_market(start=start, end=end)
        targets = hedged_pair(window, exposure=3.0, rebalance_every=24)
        options = dict(margin_mode="isolated", leverage=20, target_kind="equity")
        before = memo_entries(venue, "rule_versions")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run(window, targets, venue=venue, **options)
            reference = run(window, targets, venue=fresh(venue), **options)
        assert memo_entries(venue, "rule_versions") == before + new, (start, end)
        assert same_bits(reference.output.account, result.output.account), (start, end)
        for records in RECORDS:
            assert same_bits(getattr(reference.output, records),
                             getattr(result.output, records)), (start, end, records)
        assert {s: [v.label for v in versions] for s, versions in result.specs.items()} == \
            {s: [v.label for v in versions] for s, versions in reference.specs.items()}
    assert memo_entries(venue, "column_options") == 2  # at the first bars: two sets in force


def two_versions(max_leverage: tuple[float, float]) -> Venue:
    """A venue by hand whose one table caps leverage at ``max_leverage[0]`` from 2024-01-01
    and at ``max_leverage[1]`` from 2024-01-03."""
    specs = tuple(
        dataclasses.replace(
            SymbolSpec("BTCUSDT", tiers_from_table([(0, float("inf"), cap, 0.01)]), 0.0005,
                       0.0002, 0.01),
            valid_from=pd.Timestamp(when, tz="UTC"))
        for cap, when in zip(max_leverage, ("2024-01-01", "2024-01-03"), strict=True))
    return Venue(name="two", description="by hand", symbols={}, default_history=specs)


def test_a_leverage_is_checked_against_the_cap_in_force_at_each_runs_start():
    venue = two_versions((50, 20))
    prices = np.linspace(100.0, 110.0, 96)
    targets = np.full((96, 1), np.nan)
    targets[0] = 1.0
    early, late = (Market.from_arrays(["BTC"], prices, prices * 1.01, prices * 0.99, prices,
                                      start=start) for start in ("2024-01-01", "2024-01-04"))
    for _ in range(2):  # the second time from the memo
        assert run(early, targets, venue=venue, leverage=30).summary()["liquidations"] == 0
        with pytest.raises(ValueError, match="exceeds two's cap of 20x"):
            run(late, targets, venue=venue, leverage=30)


def test_the_note_of_a_first_bar_before_every_table_comes_on_every_run():
    venue = two_versions((50, 20))
    prices = np.full(24, 100.0)
    before = Market.from_arrays(["BTC"], prices, prices, prices, prices, start="2023-12-30")
    targets = np.full((24, 1), np.nan)
    notes = []
    for _ in range(3):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run(before, targets, venue=venue, leverage=5)
        notes.append({str(w.message) for w in caught
                      if "earlier times use that one" in str(w.message)})
    assert notes[0] == notes[1] == notes[2] == {
        "two has no default tier table before 2024-01-01; earlier times use that one (add the "
        "older table to the venue file)"}
    assert memo_entries(venue, "rule_versions") == 1  # (the later runs from the memo)


def test_a_runs_specs_are_its_own(market):
    venue = load_venue("binance_usdm")
    window = market.slice(0, 48)
    targets = hedged_pair(window, exposure=1.0, rebalance_every=24)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first = run(window, targets, venue=venue, leverage=5, target_kind="equity")
        first.specs.clear()
        second = run(window, targets, venue=venue, leverage=5, target_kind="equity")
    assert set(second.specs) == {"BTC_USDT", "ETH_USDT"}


def test_a_run_after_the_callers_arrays_changed_reads_them_as_they_are_now():
    """``Market.from_arrays`` shares the caller's memory (documented): what a run keeps
    between runs (the venue's memo, the market's views) holds no copy of prices, so a run
    after the arrays changed in place gives what a new market of them gives."""
    prices = np.linspace(100.0, 120.0, 48)[:, None] * np.array([1.0, 0.5])
    o, h, lo, c = (np.ascontiguousarray(prices * k) for k in (1.0, 1.01, 0.99, 1.0))
    market = Market.from_arrays(["BTC", "ETH"], o, h, lo, c)
    targets = np.full((48, 2), np.nan)
    targets[0] = [0.5, -0.5]
    options = dict(venue="flat", leverage=5, target_kind="equity")
    first = run(market, targets, **options).output.account.copy()
    for a in (o, h, lo, c):
        a[24:] *= 0.8
    again = run(market, targets, **options).output.account
    anew = run(Market.from_arrays(["BTC", "ETH"], o, h, lo, c), targets, **options)
    assert not np.array_equal(first, again)
    assert same_bits(again, anew.output.account)
