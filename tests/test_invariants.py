"""The engine's invariants on generated markets and strategies (DESIGN.md §4; issue 11).

Every venue, margin mode, price path, fill timing and slippage, over markets with gaps,
jumps, missing bars, mark prices away from the last price, funding up to absurd rates and
price scales from 1e-8 to 1e8, traded by random targets (units, notional or equity
fractions; hedge legs; spot legs; collateral) or by a callback sending random orders
(targets, deltas, margin moves, leverage and mode changes). On every run:

- no exception, and nothing NaN or infinite in the account;
- the books balance at every bar: wallet + isolated margin = deposits + realized PnL -
  fees - funding - borrowing costs + the shortfall the insurance fund paid of closes at
  the market (``metrics.covered_shortfall``);
- the equity replayed from the fills alone (a second implementation of the entry and
  unrealized PnL) is the engine's;
- the trader never loses more than the margin: equity never below zero; an isolated
  liquidation loses at most the position's margin; its fee is at most what was left;
  the shortfall is exactly the deficit past the bankruptcy price; charged plus waived
  fee is the venue's rate on the closed notional;
- no fill that opens or adds is dust;
- bars of nothing but funding and the close (orders every few bars), which the bar loop
  hands to its quiet stretch, give the same figures, to the bit, as the same run with every
  bar through the loop's general path.

The suite runs a few hundred cases, derandomized (the same ones every time). The long
mode, for tens of thousands of random ones::

    BACKTESTER_PROPERTY_EXAMPLES=20000 python -m pytest tests/test_invariants.py -q -n 2

(``-n 2``: its four tests, each about as long, shared by two worker processes.)
"""

from __future__ import annotations

import os
import warnings
from unittest import mock

import numpy as np
import pandas as pd
from helpers import assert_same_figures, run_general, script
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backtester import Market, run
from backtester.engine import driver, enums
from backtester.engine.records import bar_room
from backtester.metrics import covered_shortfall
from backtester.strategy import Callback
from backtester.venues import load_venue

LONG = int(os.environ.get("BACKTESTER_PROPERTY_EXAMPLES", "0"))


def examples(short: int) -> settings:
    """``short`` derandomized cases in the suite; the long mode's count, random, when set."""
    return settings(max_examples=LONG or short, derandomize=not LONG, deadline=None,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


VENUES = {
    # modes; start dates (Bybit's 2025-09-01 start crosses its 2025-09-02 formula change);
    # symbols (listed ones with their own tiers, others on the venue's default spec)
    "binance_usdm": (("cross", "isolated"), ("2024-01-01",), ("BTC_USDT", "ETH_USDT")),
    "bybit_linear": (("cross", "isolated"), ("2021-01-01", "2025-09-01"),
                     ("BTC_USDT", "ETH_USDT", "SOL_USDT")),
    "okx_swap": (("cross", "isolated"), ("2024-01-01",), ("BTC_USDT", "CHZ_USDT", "ETH_USDT")),
    "kraken_spot": (("cross",), ("2024-01-01",), ("BTC_USDT", "ETH_USDT", "SOL_USDT")),
    "flat": (("cross", "isolated"), ("2024-01-01",), ("BTC_USDT", "ETH_USDT", "SOL_USDT")),
}
_venues: dict = {}


def venue(name):
    if name not in _venues:
        # Bybit and OKX list few symbols: the others are priced with BTCUSDT's table by choice
        stand_in = {"*": "BTCUSDT"} if name in ("bybit_linear", "okx_swap") else None
        _venues[name] = load_venue(name, stand_in=stand_in)
    return _venues[name]


# --- generated markets ---------------------------------------------------------------------


def make_market(rng, symbols, n_bars, start, log_price, vol, jumps, gaps, missing, mark_dev,
                funding, funding_every=8):
    """Bars of ``symbols``: fat-tailed moves of ``vol``, jumps (x or / up to 10) with
    probability ``jumps``, opens away from the last close with probability ``gaps``, bars
    missing with probability ``missing``, marks ``mark_dev`` from the last price and
    funding rates of size ``funding`` every ``funding_every`` hours."""
    n = len(symbols)
    moves = rng.standard_t(3, (n_bars, n)) * vol
    moves += np.where(rng.random((n_bars, n)) < jumps, rng.normal(0, 1.2, (n_bars, n)), 0.0)
    close = 10.0 ** np.asarray(log_price) * np.exp(np.cumsum(moves, axis=0))
    prev = np.vstack([close[:1], close[:-1]])
    gap = np.where(rng.random((n_bars, n)) < gaps, rng.normal(0, 0.4, (n_bars, n)), 0.0)
    open_ = prev * np.exp(gap + rng.normal(0, vol / 4, (n_bars, n)))
    high = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0, vol, (n_bars, n))))
    low = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0, vol, (n_bars, n))))
    off = 1.0 + rng.normal(0, mark_dev, (4, n_bars, n)) if mark_dev else np.ones((4, n_bars, n))
    mo, mc = open_ * off[0], close * off[3]
    mh = np.maximum(np.maximum(mo, mc), high * off[1])
    ml = np.minimum(np.minimum(mo, mc), low * off[2])
    gone = rng.random((n_bars, n)) < missing
    gone[0] = False  # every symbol has its first bar
    for a in (open_, high, low, close, mo, mh, ml, mc):
        a[gone] = np.nan
    rate = np.full((n_bars, n), np.nan)
    hours = (pd.Timestamp(start).hour + np.arange(n_bars)) % funding_every == 0
    rate[hours] = rng.normal(funding / 4, funding, (hours.sum(), n))
    rate[gone] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # suspicious data (deliberately) gives warnings
        return Market.from_arrays(symbols, open_, high, low, close, mark=(mo, mh, ml, mc),
                                  funding_rate=rate, start=start)


@st.composite
def scenarios(draw, callback=False, funding_every=(8,), funding=(0.0, 1e-4, 3e-3, 0.1),
              venues=None):
    name = draw(st.sampled_from(sorted(venues or VENUES)))
    modes, starts, listed = VENUES[name]
    start = draw(st.sampled_from(starts))
    n = draw(st.integers(1, len(listed)))
    n_bars = draw(st.integers(2, 120))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    log_price = [draw(st.floats(-8.0, 8.0)) for _ in range(n)]
    market = make_market(
        rng, listed[:n], n_bars, start, log_price,
        vol=draw(st.sampled_from([0.001, 0.01, 0.05, 0.2])),
        jumps=draw(st.sampled_from([0.0, 0.05, 0.2])),
        gaps=draw(st.sampled_from([0.0, 0.1, 0.4])),
        missing=draw(st.sampled_from([0.0, 0.1, 0.4])),
        mark_dev=draw(st.sampled_from([0.0, 0.002, 0.015])),
        funding=draw(st.sampled_from(funding)),
        funding_every=draw(st.sampled_from(funding_every)),
    )
    v = venue(name)
    symbols = list(market.symbols)
    spot = []
    if n > 1 and draw(st.booleans()) and draw(st.booleans()):
        spot = [symbols[-1]]
    perps = [s for s in symbols if s not in spot]
    hedge = (not callback and not spot and name == "binance_usdm"
             and draw(st.booleans()) and draw(st.booleans()))
    options = dict(
        venue=v,
        # (a venue whose margin mode is the account's, Bybit UTA, takes one for every symbol)
        margin_mode=(dict.fromkeys(perps, draw(st.sampled_from(modes)))
                     if v.margin_model.account_margin_mode
                     else {s: draw(st.sampled_from(modes)) for s in perps}),
        leverage={s: 1.0 + draw(st.floats(0.0, 1.0)) * (v.spec(s, start).max_leverage - 1.0)
                  for s in perps},
        path=draw(st.sampled_from(["path", "worst", "close"])),
        fill_at=draw(st.sampled_from(["open", "close"])),
        slippage=draw(st.sampled_from([0.0, 0.0005, 0.01])),
        reduce_to_fit=draw(st.booleans()),
        target_kind=draw(st.sampled_from(["units", "notional", "equity"])),
        initial_balance=draw(st.sampled_from([10_000.0, 10_000.0, 10_000.0, 3e6, 1e9, 1e-2,
                                              1e-300, 5e-324])),
    )
    if spot:
        options["instruments"] = {spot[0]: "spot"}
    if hedge:
        options["position_mode"] = "hedge"
    # collateral: OKX multi-currency margin; Binance Multi-Assets mode and Bybit's unified
    # account, cross only
    model = v.margin_model
    all_cross = all(m == "cross" for m in options["margin_mode"].values())
    if model.collateral and "BTC" in v.collateral \
            and (all_cross or not model.collateral_cross_only) \
            and "BTC_USDT" in symbols and draw(st.booleans()):
        coins = draw(st.floats(0.0, 2.0)) * options["initial_balance"] / market.close[0, 0]
        if coins > 0.0 and np.isfinite(coins):
            options["collateral"] = {"BTC": coins}
    # orders: equity fractions up to a few times the leverage, in the run's unit
    exposure = draw(st.sampled_from([0.5, 2.0, 10.0, 100.0]))
    density = draw(st.sampled_from([0.1, 0.5, 1.0]))
    fractions = np.where(rng.random((n_bars, n)) < density,
                         rng.normal(0.0, exposure, (n_bars, n)), np.nan)
    fractions[rng.random((n_bars, n)) < 0.1] = 0.0
    for s in spot:  # a spot leg is held, never short
        fractions[:, symbols.index(s)] = np.abs(fractions[:, symbols.index(s)])
    amounts = in_unit(fractions, options, market)
    if callback:
        if "collateral" in options:  # the coins held are a column of their own, at the end
            amounts = np.hstack([amounts, np.full((n_bars, 1), np.nan)])
        return market, options, random_orders(rng, amounts, options, name, start, symbols,
                                                  perps)
    if hedge:
        legs = {}
        for i, s in enumerate(symbols):
            legs[f"{s}.long"] = np.abs(amounts[:, i])
            legs[f"{s}.short"] = -np.abs(in_unit(
                np.where(rng.random(n_bars) < density, rng.normal(0, exposure, n_bars),
                         np.nan)[:, None], options, market)[:, 0])
        return market, options, pd.DataFrame(legs, index=market.timestamps)
    return market, options, amounts


def in_unit(fractions, options, market):
    """Equity fractions as amounts of the run's target unit (at the first close)."""
    kind = options["target_kind"]
    if kind == "equity":
        return fractions
    notional = fractions * options["initial_balance"]
    if kind == "notional":
        return notional
    first = pd.DataFrame(market.close).bfill().to_numpy()[0]
    return notional / first[: fractions.shape[1]]


def random_orders(rng, amounts, options, name, start, symbols, perps):
    """A callback sending every kind of order at random: targets, deltas, margin added or
    removed, leverage changes (some above the cap), mode switches."""
    n_bars, n = amounts.shape
    series = np.full((enums.N_ORDER_FIELDS, n_bars, n), np.nan)
    use_delta = rng.random((n_bars, n)) < 0.3
    series[enums.Order.TARGET] = np.where(use_delta, np.nan, amounts)
    series[enums.Order.DELTA] = np.where(use_delta, amounts / 2, np.nan)
    sparse = rng.random((3, n_bars, n)) < 0.15
    margin = rng.normal(0, 0.2, (n_bars, n)) * options["initial_balance"]
    series[enums.Order.MARGIN] = np.where(sparse[0], margin, np.nan)
    for i, s in enumerate(symbols):
        if s not in perps:
            continue  # (the collateral column, if any, is past the symbols: no orders)
        cap = venue(name).spec(s, start).max_leverage
        lev = rng.uniform(1.0, cap * 1.2, n_bars)
        series[enums.Order.LEVERAGE, :, i] = np.where(sparse[1, :, i], lev, np.nan)
        if len(VENUES[name][0]) > 1:
            series[enums.Order.MODE, :, i] = np.where(sparse[2, :, i],
                                                      rng.integers(0, 2, n_bars), np.nan)
    return Callback(script, series=series)


# --- the invariants ------------------------------------------------------------------------


def per_bar(frame, values, n_bars):
    out = np.zeros(n_bars)
    np.add.at(out, frame["bar"].to_numpy(), np.asarray(values, dtype=float))
    return np.cumsum(out)


def replayed_equity_terms(r):
    """Unrealized PnL at each close, from the fills alone: the entry is the average price of
    what built the position, kept by fills that reduce it, the fill price of a flip; coins
    held as collateral enter at their first mark."""
    m = r.market
    qty = dict.fromkeys(m.symbols, 0.0)
    entry = dict.fromkeys(m.symbols, 0.0)
    held = {coin.upper(): amount for coin, amount in (r.config.collateral or {}).items()}
    for k, s in enumerate(m.symbols):
        if r.margin_mode[k] == enums.Mode.COLLATERAL:
            marks = m.mark_open[:, k]
            qty[s], entry[s] = float(held[s]), marks[~np.isnan(marks)][0]
    by_bar = {t: g for t, g in r.fills.groupby("bar")}
    marks = pd.DataFrame(m.mark_close).ffill().to_numpy()
    out = np.zeros(m.n_bars)
    for t in range(m.n_bars):
        if t in by_bar:
            for s, dq, price in zip(by_bar[t]["symbol"], by_bar[t]["qty"], by_bar[t]["price"],
                                    strict=True):
                q = qty[s]
                new = q + dq
                if abs(new) <= 1e-12 * max(abs(q), abs(dq)):
                    new = 0.0
                if q == 0.0 or (q > 0) == (dq > 0):
                    entry[s] = (abs(q) * entry[s] + abs(dq) * price) / abs(new)
                elif new != 0.0 and (new > 0) != (q > 0):
                    entry[s] = price
                qty[s] = new
        out[t] = sum(qty[s] * (marks[t, k] - entry[s]) for k, s in enumerate(m.symbols)
                     if qty[s] != 0.0)
    return out


def describe(r):
    """What a case exercised (``pytest --hypothesis-show-statistics`` counts them)."""
    liq = r.liquidations
    event(f"venue {r.venue.name}")
    for what, happened in (("fills", len(r.fills) > 0), ("liquidations", len(liq) > 0),
                           ("gapped liquidations", liq["gapped"].any()),
                           ("partial liquidations", liq["partial"].any()),
                           ("fees waived", (liq["fee_waived"] > 0).any()),
                           ("shortfall", (liq["shortfall"] > 0).any()),
                           ("rejections", len(r.rejections) > 0),
                           ("void at the open", (r.rejections["reason"]
                                                 == "position_liquidated_at_open").any()),
                           ("dust refused", (r.rejections["reason"] == "dust").any())):
        if happened:
            event(what)


def check(r):
    describe(r)
    n_bars = r.market.n_bars
    account = r.account
    assert np.isfinite(account.to_numpy()).all(), account[~np.isfinite(account).all(axis=1)]
    fills, liq, funding, events = r.fills, r.liquidations, r.funding, r.events
    for frame, columns in ((fills, ["qty", "price", "fee", "realized_pnl", "position_after"]),
                           (liq, ["qty", "price", "fee", "fee_waived", "realized_pnl",
                                  "margin_lost", "shortfall", "equity_before",
                                  "equity_after"]),
                           (funding, ["payment"]), (events, ["amount"])):
        assert np.isfinite(frame[columns].to_numpy(dtype=float)).all(), frame
    # a position pays (or receives) a funding bar's rate once
    assert not funding.duplicated(["bar", "symbol"]).any(), funding
    # the scale of the money moved so far: the tolerance of sums over it
    scale = (r.initial_equity + per_bar(fills, (fills["qty"] * fills["price"]).abs(), n_bars)
             + per_bar(funding, funding["payment"].abs(), n_bars)
             + per_bar(events, events["amount"].abs(), n_bars))
    tol = 1e-9 * scale

    # the books balance at every bar
    books = (r.initial_equity + per_bar(fills, fills["realized_pnl"], n_bars)
             - per_bar(fills, fills["fee"], n_bars) - per_bar(funding, funding["payment"], n_bars)
             - per_bar(events, events["amount"], n_bars)
             + per_bar(liq, covered_shortfall(liq), n_bars))
    held = (account["wallet_balance"] + account["isolated_margin"]).to_numpy()
    bad = np.abs(held - books) > tol
    assert not bad.any(), f"books off at bar {np.argmax(bad)}: {held[bad][:3]} vs {books[bad][:3]}"
    # the equity from the fills alone
    upnl = replayed_equity_terms(r)
    equity = account["equity"].to_numpy()
    bad = np.abs(equity - (held + upnl)) > tol + 1e-9 * np.abs(upnl)
    assert not bad.any(), f"equity off at bar {np.argmax(bad)}: {equity[bad][:3]}"
    # the trader never loses more than the margin
    assert (equity >= -tol).all(), f"equity below zero: {equity.min()}"

    assert (liq[["fee", "fee_waived", "shortfall"]].to_numpy() >= 0.0).all()
    whole = liq[~liq["partial"].astype(bool)]
    iso = whole[whole["mode"] == "isolated"]
    q, entry, price = iso["qty"], iso["entry_price"], iso["price"]
    bankrupt = iso["bankruptcy_price"]
    at_bankruptcy = iso["settled_at_bankruptcy"].astype(bool)
    margin = q * (entry - bankrupt) + np.where(at_bankruptcy, iso["fee"], 0.0)
    small = 1e-9 * (q.abs() * (entry + price)) + 1e-9 * r.initial_equity
    assert (iso["margin_lost"] <= np.maximum(margin, 0.0) + small).all(), iso
    market_close = iso[~at_bankruptcy]
    deficit = np.maximum(market_close["qty"] * (market_close["bankruptcy_price"]
                                                - market_close["price"]), 0.0)
    # (to a billionth of the notional: a settlement at the bankruptcy price computes the
    # deficit from sums of that size, whose rounding is ~1e-16 of them)
    assert np.allclose(market_close["shortfall"], deficit, rtol=1e-9,
                       atol=small[~at_bankruptcy].max() if len(market_close) else 0.0)
    left = np.maximum(market_close["qty"] * (market_close["price"]
                                             - market_close["bankruptcy_price"]), 0.0)
    assert (market_close["fee"] <= left + small[~at_bankruptcy]).all()
    assert (iso.loc[at_bankruptcy, "price"] == iso.loc[at_bankruptcy, "bankruptcy_price"]).all()
    # charged + waived = the venue's rate on the closed notional (closes at the market)
    trig = whole[~whole["settled_at_bankruptcy"].astype(bool) & (whole["mode"] != "collateral")]
    if len(trig) and r.venue.name != "bybit_linear":
        rate = [r.venue.spec(s.split(".")[0], ts).liquidation_fee
                for s, ts in zip(trig["symbol"], trig["timestamp"], strict=True)]
        due = trig["qty"].abs() * trig["price"] * np.asarray(rate)
        assert np.allclose(trig["fee"] + trig["fee_waived"], due, rtol=1e-9, atol=1e-300)
    # no dust: every fill that opens or adds is worth at least 1e-12 of the quote currency
    trades = fills[fills["reason"] != "liquidation"]
    after = trades["position_after"]
    opening = after.abs() > (after - trades["qty"]).abs()
    assert ((trades["qty"] * trades["price"]).abs()[opening] >= 1e-12).all(), trades
    # the venue's order filters: every position a fill or a partial cut leaves is a whole
    # number of quantity steps, and what an order opens reaches the minimum quantity and
    # notional (no dust position on a venue that publishes filters)
    if not getattr(r.config, "order_filters", True):
        return
    for symbol, versions in r.specs.items():
        step = versions[0].qty_step  # (the generated runs do not cross a filter change)
        if step <= 0 or any(v.qty_step != step for v in versions):
            continue
        legs = [c for c in r.market.symbols if c.split(".")[0] == symbol]
        # (the fills of liquidations are there too: a partial cut's fill holds what it left)
        left = fills.loc[fills["symbol"].isin(legs), "position_after"]
        steps = left.abs() / step
        off = np.abs(steps - np.round(steps)) > 1e-6 * np.maximum(1.0, steps)
        assert not off.any(), (symbol, step, left[off])
        mine = trades[trades["symbol"].isin(legs)]
        after, before = mine["position_after"], mine["position_after"] - mine["qty"]
        flipped = (after * before) < 0
        opened = np.where(flipped, after.abs(), np.maximum(after.abs() - before.abs(), 0.0))
        minimum = min(v.min_notional for v in versions)
        small = (opened > 0) & (opened * mine["price"] < minimum * (1 - 1e-9))
        assert not small.any(), mine[small]



def run_and_check(case):
    market, options, strategy = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (generated data is suspicious on purpose)
        result = run(market, strategy, **options)
    check(result)


@examples(400)
@given(scenarios())
def test_invariants_hold_for_random_targets(case):
    run_and_check(case)


@examples(150)
@given(scenarios(callback=True))
def test_invariants_hold_for_random_callback_orders(case):
    run_and_check(case)


# --- the bar loop's quiet stretch does a bar as the full loop does -------------------------------


@st.composite
def sparse_scenarios(draw, everies=(1, 5, 17, 60), fill_at=None, funding_every=(1, 2, 8),
                     funding=(3e-3, 0.03, 0.1), venues=None):
    """A scenario of random targets whose orders come every ``every`` bars only, so that most
    bars have nothing but funding and the close: the bars ``engine.kernel.quiet_stretch``
    takes, with positions held through gaps and funding (up to every bar, and up to absurd
    rates) that liquidates. ``fill_at``: the runs' (default: drawn); ``venues``: those
    drawn from (default: all of ``VENUES``)."""
    market, options, strategy = draw(scenarios(funding_every=funding_every, funding=funding,
                                               venues=venues))
    if fill_at is not None:
        options = {**options, "fill_at": fill_at}
    every = draw(st.sampled_from(everies))
    keep = (np.arange(len(market.timestamps)) % every == 0)[:, None]
    if isinstance(strategy, pd.DataFrame):  # (hedge legs)
        strategy = strategy.where(np.broadcast_to(keep, strategy.shape))
    else:
        strategy = np.where(keep, strategy, np.nan)
    return market, options, strategy


@examples(200)
@given(sparse_scenarios(), st.booleans())
def test_the_quiet_stretch_changes_no_figure(case, recorded):
    """A run hands its quiet bars (nothing but funding and the close, no liquidation
    possible) to the quiet stretch, which must do the same arithmetic in the same order and
    leave a bar it cannot finish as it found it: the run's account, fills, liquidations,
    funding, rejections, events and positions are the same bits as those of the same run
    with every bar through the bar loop's general path, recording each bar's positions or
    not (``recorded``: recording changes no figure either)."""
    market, options, strategy = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (generated data is suspicious on purpose)
        quiet = run(market, strategy, **options)
        general = run_general(market, strategy, **options, record_positions=recorded)
    event(f"liquidations: {'some' if len(general.liquidations) else 'none'}")
    assert_same_figures(quiet, general)


# --- a run stopped where its record buffers might overflow goes on as if it had not -----------


def tight_records(n, n_tiers_max, fill_rows, funding_rows):
    """``records.record_sizes`` with no room to spare: one bar's worst case (and every funding
    payment, as the kernel assumes)."""
    fills, liqs, rejects, events = driver._interpreted(bar_room)(n, n_tiers_max, True)
    return fills + 1, liqs + 1, max(1, funding_rows), rejects + 1, events + 1


def grow_tightly(records, n, n_tiers_max, with_callback):
    """``driver.grow_records`` growing each short buffer to one bar's worst case more than it
    holds, no more: the bar loop then stops again at nearly every bar after one with events."""
    counts = records.counts
    room = driver._interpreted(bar_room)(n, n_tiers_max, with_callback)
    grown = []
    for buffer, used, more in zip((records.fills, records.liqs, records.rejects, records.events),
                                  (counts[enums.Count.FILLS], counts[enums.Count.LIQS],
                                   counts[enums.Count.REJECTS], counts[enums.Count.EVENTS]),
                                  room, strict=True):
        needed = used + more + 1
        if buffer.shape[0] < needed:
            new = np.empty(needed, dtype=buffer.dtype)
            new[:buffer.shape[0]] = buffer
            buffer = new
        grown.append(buffer)
    fills, liqs, rejects, events = grown
    return enums.Records(fills, liqs, records.funding, rejects, events, counts)


@examples(200)
@given(sparse_scenarios(everies=(2, 3), fill_at="open", funding_every=(1, 2),
                        funding=(0.01, 0.03, 0.1), venues=("binance_usdm", "flat")))
def test_a_run_stopped_for_record_room_changes_no_figure(case):
    """The bar loop stops at a bar whose events might not fit the record buffers and goes on
    from that bar once they have grown (``driver.run_bars``). Where it stops depends on the
    buffers it was given (a sweep's worker hands each run those of the runs before it). With
    buffers of one bar's room, grown by one bar's room, it stops at nearly every other bar
    after one with events: the run's account, fills, liquidations, funding, rejections and
    events are those of the run with room to spare, to the bit. (Orders filled at the open
    every few bars, funding up to every bar: the quiet stretch then begins the bar after a
    fill, and may have paid its funding where the loop stops.)"""
    market, options, strategy = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (generated data is suspicious on purpose)
        roomy = run(market, strategy, **options, record_positions=False)
        with mock.patch.object(driver, "record_sizes", tight_records), \
                mock.patch.object(driver, "grow_records", grow_tightly):
            tight = run(market, strategy, **options, record_positions=False)
    event(f"fills: {'over' if len(roomy.fills) > 16 else 'up to'} 16")
    pd.testing.assert_frame_equal(tight.account, roomy.account, check_exact=True)
    for name in ("fills", "liquidations", "funding", "rejections", "events"):
        pd.testing.assert_frame_equal(getattr(tight, name), getattr(roomy, name),
                                      check_exact=True, obj=name)
