"""Each model's public calculators against the kernel's solver, on generated positions.

For every margin model, positions are drawn (sides, sizes across the symbol's
tiers, entries, leverages up to the tier's cap, margin added; for cross, the
other positions frozen at their marks and, on OKX, a collateral coin) and priced
twice: by the model's public calculator (the venue's closed form, in
``backtester.venues.<model>``, through ``backtester.liquidation``) and by the
kernel's solver on the kernel's own inputs (``venue.arrays`` packed as
``prepare`` packs them; ``engine.rules.solve_liquidation_price`` for an isolated
position, ``engine.account.position_liquidation_price`` on a ``Book`` for
cross). The two must agree, and at that price the kernel's trigger value (isolated:
margin + unrealized PnL - MM(P); cross: ``account.cross_trigger_value``) must be
zero.

Tolerances: prices within 1e-9 of the larger of the entry and the price (a
long's price near zero is a small difference of large terms: relative to the
price alone it would be noise); trigger values within 1e-9 of the money at stake
(the margin plus the notionals at those prices).
"""

from __future__ import annotations

import math
import textwrap
import tomllib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backtester import cross_liquidation_prices, liquidation_price
from backtester.engine import account, enums, rules
from backtester.prepare import default_symbol_rules, pack_tiers
from backtester.venues import load_venue
from backtester.venues.files import venue_from_dict

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
TOLERANCE = 1e-9

# OKX with tiers on the notional (bracket rule): the liquidation fee joins the rate
OKX_BRACKET = venue_from_dict(tomllib.loads(textwrap.dedent("""
    name = "okx_notional_tiers"
    model = "okx"
    [fees]
    taker_fee = 0.0005
    maker_fee = 0.0002
    liquidation_fee = 0.0005
    [[symbols.BTCUSDT]]
    tiers = [
      { floor = 0, cap = 500_000, max_leverage = 100, mmr = 0.004 },
      { floor = 500_000, cap = 2_000_000, max_leverage = 50, mmr = 0.01 },
      { floor = 2_000_000, cap = 8_000_000, max_leverage = 20, mmr = 0.025 },
    ]
""")), "okx_notional_tiers")

VENUES = {name: load_venue(name) for name in ("binance_usdm", "bybit_linear", "okx_swap",
                                              "kraken_spot")}
# (venue, symbol, date): tables and rules in force that each model's tests draw from
BINANCE = [("binance_usdm", s, at) for s in ("BTCUSDT", "ETHUSDT")
           for at in ("2020-01-01", "2021-06-01", "2024-06-01")]
BYBIT = [("bybit_linear", "BTCUSDT", at)  # manual (whole, entry), auto (entry), 2025 (mark)
         for at in ("2023-01-01", "2024-06-01", "2025-10-01")]
OKX = [("okx_swap", "CHZUSDT", "2024-01-01"), ("okx_swap", "BTCUSDT", "2024-01-01"),
       (OKX_BRACKET, "BTCUSDT", None)]
KRAKEN = [("kraken_spot", s, at) for s in ("BTCUSD", "BTCUSDT")
          for at in ("2024-01-01", "2026-03-01")]


def venue_of(name):
    return VENUES[name] if isinstance(name, str) else name


def kernel_columns(venue, symbols, at, leverages):
    """``(sym, tiers, n_tiers)`` as the kernel receives them (``prepare``'s packing)."""
    a = venue.arrays(symbols, at)
    sym = a.rules.copy()
    sym[enums.Sym.LEVERAGE] = leverages
    return sym, pack_tiers(a.floors, a.caps, a.mmrs, a.cums, a.max_leverage), a.n_tiers.copy()


@st.composite
def positions(draw, cases, n=1):
    """``(venue, at, [(symbol, qty, entry, mark, leverage), ...])``: up to ``n`` positions on
    one venue and date (distinct symbols), each sized inside one of its tiers (in the
    tier's unit: the notional at entry, or the size), at a leverage up to that tier's
    cap, its mark up to 30% away from its entry."""
    name, first, at = draw(st.sampled_from(cases))
    venue = venue_of(name)
    symbols = [first] + [s for v, s, d in cases if v == name and d == at and s != first]
    if venue.default_history:  # unlisted symbols take the venue's default spec
        symbols += [s for s in ("ETHUSDT", "SOLUSDT") if s not in symbols]
    rows = []
    for symbol in symbols[:n]:
        sym, tiers, n_tiers = kernel_columns(venue, [symbol], at, [1.0])
        k = draw(st.integers(0, min(int(n_tiers[0]), 6) - 1))
        floor = tiers[enums.TierField.FLOOR, 0, k]
        cap = tiers[enums.TierField.CAP, 0, k]
        cap = cap if math.isfinite(cap) else 2.0 * floor + 1e6
        # (inside, not at the cap: size x entry may round past it, into the next tier)
        key = floor + (cap - floor) * draw(st.floats(0.01, 0.99))
        entry = 10.0 ** draw(st.floats(-2.0, 5.0))
        size = key if sym[enums.Sym.MM_RULE, 0] == enums.MM.BY_SIZE else key / entry
        side = draw(st.sampled_from((1.0, -1.0)))
        leverage = draw(st.floats(1.0, float(tiers[enums.TierField.MAX_LEVERAGE, 0, k])))
        mark = entry * (1.0 + draw(st.floats(-0.3, 0.3)))
        rows.append((symbol, side * size, entry, mark, leverage))
    return venue, at, rows


def check_same_price(public, kernel, entry):
    assert public == pytest.approx(kernel, rel=0, abs=TOLERANCE * max(entry, abs(kernel)))


# --- isolated: the public calculator and engine.rules.solve_liquidation_price ---------------


def isolated_case(venue, at, row, extra_share):
    """``(public price, kernel price, kernel trigger value at it, scale)`` of one isolated
    position opened at ``leverage`` with ``extra_share`` of its initial margin added."""
    symbol, qty, entry, _mark, leverage = row
    sym, tiers, n_tiers = kernel_columns(venue, [symbol], at, [leverage])
    opened = rules.isolated_margin_to_open(0, qty, entry, sym)  # what the kernel parks in it
    extra = extra_share * abs(qty) * entry / leverage
    margin = opened + extra
    kernel = rules.solve_liquidation_price(0, qty, entry, margin, sym, tiers, n_tiers)
    public = liquidation_price(qty, entry, venue=venue, symbol=symbol, at=at,
                               leverage=leverage, extra_margin=extra)
    trigger = margin + qty * (kernel - entry) - rules.maintenance_margin(
        0, qty, entry, kernel, sym, tiers, n_tiers)
    return public, kernel, trigger, margin + abs(qty) * max(abs(kernel), entry)


def check_isolated(case, extra_share):
    venue, at, (row,) = case
    public, kernel, trigger, scale = isolated_case(venue, at, row, extra_share)
    check_same_price(public, kernel, row[2])
    if kernel > 0.0:
        assert abs(trigger) <= TOLERANCE * scale


SHARES = st.one_of(st.just(0.0), st.floats(0.0, 1.0))


@SETTINGS
@given(positions(BINANCE), SHARES)
def test_binance_isolated_price_is_the_kernels(case, extra_share):
    check_isolated(case, extra_share)


@SETTINGS
@given(positions(BYBIT), SHARES)
def test_bybit_isolated_price_is_the_kernels_in_every_era(case, extra_share):
    check_isolated(case, extra_share)


@SETTINGS
@given(positions(OKX), SHARES)
def test_okx_isolated_price_is_the_kernels(case, extra_share):
    check_isolated(case, extra_share)


@SETTINGS
@given(positions(BINANCE + OKX))
def test_an_isolated_margin_given_outright_prices_as_the_margin_it_holds(case):
    # margin given (not leverage): the position holds exactly that (no reserve on these)
    venue, at, ((symbol, qty, entry, _mark, leverage),) = case
    margin = abs(qty) * entry / leverage
    sym, tiers, n_tiers = kernel_columns(venue, [symbol], at, [leverage])
    kernel = rules.solve_liquidation_price(0, qty, entry, margin, sym, tiers, n_tiers)
    public = liquidation_price(qty, entry, venue=venue, symbol=symbol, at=at, margin=margin)
    check_same_price(public, kernel, entry)


def test_kraken_has_no_isolated_price():
    with pytest.raises(ValueError, match="no isolated mode"):
        liquidation_price(1.0, 100.0, venue="kraken_spot", symbol="BTCUSD", leverage=2)


# --- cross: cross_liquidation_prices and account.position_liquidation_price ------------------


def cross_book(venue, at, rows, wallet, collateral):
    """The kernel's ``Book`` of a cross account holding ``rows`` at their marks, on
    ``wallet``, and ``collateral`` coins ``{currency: (coins, price)}`` in columns of
    their own (their discount tiers where the maintenance rates go, as ``prepare``
    lays them out)."""
    symbols = [r[0] for r in rows]
    sym, tiers, n_tiers = kernel_columns(venue, symbols, at, [r[4] for r in rows])
    qty = [r[1] for r in rows]
    entry = [r[2] for r in rows]
    mark = [r[3] for r in rows]
    mode = [enums.Mode.CROSS] * len(rows)
    for currency, (coins, price) in collateral.items():
        table = venue.discount_tiers(currency, at)
        floors, caps, rates, k = table.arrays()
        width = max(tiers.shape[2], k)
        tiers = np.pad(tiers, ((0, 0), (0, 0), (0, width - tiers.shape[2])), mode="edge")
        column = np.zeros((enums.N_TIER_FIELDS, 1, width))
        column[enums.TierField.FLOOR, 0] = np.pad(floors, (0, width - k), constant_values=np.inf)
        column[enums.TierField.CAP, 0] = np.pad(caps, (0, width - k), constant_values=np.inf)
        column[enums.TierField.MMR, 0] = np.pad(rates, (0, width - k))
        column[enums.TierField.MAX_LEVERAGE, 0] = 1.0
        tiers = np.concatenate([tiers, column], axis=1)
        n_tiers = np.append(n_tiers, k)
        rows_c = default_symbol_rules(1)
        rows_c[enums.Sym.LEVERAGE] = 1.0
        rows_c[enums.Sym.DISCOUNT_IN_COIN] = 1.0 if table.unit == "coin" else 0.0
        sym = np.concatenate([sym, rows_c], axis=1)
        qty, entry, mark = qty + [coins], entry + [price], mark + [price]
        mode.append(enums.Mode.COLLATERAL)
    n = len(qty)
    state = np.zeros((enums.N_STATE, n))
    state[enums.State.QTY], state[enums.State.ENTRY], state[enums.State.MARK] = qty, entry, mark
    state[enums.State.ISO_MARGIN] = np.where(np.array(mode) == enums.Mode.COLLATERAL,
                                             np.array(qty) * np.array(entry), 0.0)
    state[enums.State.LIQ_PX] = np.nan
    balance = np.zeros(enums.N_ACCOUNT)
    balance[enums.Account.WALLET] = wallet
    return enums.Book(state, np.zeros(n, dtype=np.int64), balance,
                      np.array(mode, dtype=np.int64), np.ascontiguousarray(sym),
                      np.ascontiguousarray(tiers), n_tiers.astype(np.int64),
                      venue.account_rules(at))


def check_cross(case, wallet_share, collateral=None):
    venue, at, rows = case
    collateral = collateral or {}
    initial = sum(abs(q) * e / lev for _, q, e, _, lev in rows)
    wallet = wallet_share * initial
    book = cross_book(venue, at, rows, wallet, collateral)
    account_now = cross_liquidation_prices(
        [r[:4] for r in rows], wallet, venue=venue, at=at,
        leverage={r[0]: r[4] for r in rows}, collateral=collateral)
    marks = book.state[enums.State.MARK].copy()
    for i, (symbol, _qty, entry, _mark, _lev) in enumerate(rows):
        kernel = account.position_liquidation_price(i, book)
        check_same_price(account_now.positions.loc[symbol, "liquidation_price"], kernel, entry)
        if kernel > 0.0:
            prices = marks.copy()
            prices[i] = kernel
            scale = abs(wallet) + np.abs(book.state[enums.State.QTY] * prices).sum()
            assert abs(account.cross_trigger_value(book, prices)) <= TOLERANCE * scale


WALLETS = st.floats(0.2, 5.0)


@SETTINGS
@given(positions(BINANCE, n=2), WALLETS)
def test_binance_cross_price_is_the_kernels_with_the_others_frozen(case, wallet_share):
    check_cross(case, wallet_share)


@SETTINGS
@given(positions(BYBIT, n=2), WALLETS)
def test_bybit_cross_price_is_the_kernels_in_every_era(case, wallet_share):
    check_cross(case, wallet_share)


@SETTINGS
@given(positions(OKX, n=2), WALLETS, st.floats(0.0, 2.0), st.floats(100.0, 100_000.0))
def test_okx_cross_price_is_the_kernels_with_collateral_frozen(case, wallet_share, coins,
                                                               price):
    collateral = {"BTC": (coins, price)} if case[0] is not OKX_BRACKET else {}
    check_cross(case, wallet_share, collateral)


@SETTINGS
@given(positions(KRAKEN, n=2), WALLETS)
def test_kraken_cross_price_is_the_margin_level_price(case, wallet_share):
    check_cross(case, wallet_share)
