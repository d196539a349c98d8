"""Margin models: the base every venue model builds on (DESIGN.md §7a).

A venue file names its ``model``; each model lives in one module (``binance``,
``bybit``, ``okx``, ``kraken``), listed in ``registry``. A model says:

- what the venue allows: its margin modes, position modes and collateral;
- which dated rule parameters (``[[rules]]``) and per-symbol parameters (``params``
  of a version) a venue file may set, with their defaults and meaning;
- how a symbol's spec and the rules in force become the kernel's rule rows
  (``symbol_rows``, ``account_rows``: ``engine.enums.Sym.*`` and ``AccountRule.*``);
- its rows of ``Result.describe()``;
- its reference calculators: the liquidation and bankruptcy prices of one position,
  the venue's published closed forms. They take the maintenance margin, the tier of
  a size and the fees counted in the margin from ``engine.rules`` (each rule is
  written once, there); only the price formulas are the venue's own.

``backtester/venues/MODELS.md`` says what the engine simulates of each model.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..engine import enums
from ..engine import rules as engine_rules
from .spec import SymbolSpec, VenueArrays, VenueSpecError


@dataclass(frozen=True)
class Rule:
    """One dated rule parameter of a model: its default, its allowed values, its meaning."""

    default: Any
    meaning: str
    choices: tuple = ()  # allowed values for a word; empty = a number or a bool like default


@dataclass(frozen=True)
class Columns:
    """Positions' rule rows and tier tables in the kernel's layout, the arguments of
    ``engine.rules`` functions for column ``i``: ``sym`` (N_SYMBOL_FIELDS, N), ``tiers``
    (N_TIER_FIELDS, N, K) and ``n_tiers`` (N,)."""

    sym: np.ndarray
    tiers: np.ndarray
    n_tiers: np.ndarray

    @classmethod
    def from_arrays(cls, arrays: VenueArrays, leverage: Sequence[float]) -> Columns:
        """The columns of ``Venue.arrays(...)`` with each position's ``leverage`` (NaN: none)."""
        tiers = np.empty((enums.N_TIER_FIELDS,) + arrays.floors.shape)
        field = enums.TierField
        for row, values in ((field.FLOOR, arrays.floors), (field.CAP, arrays.caps),
                            (field.MMR, arrays.mmrs), (field.CUM, arrays.cums),
                            (field.MAX_LEVERAGE, arrays.max_leverage)):
            tiers[row] = values
        sym = np.array(arrays.rules, dtype=np.float64)
        sym[enums.Sym.LEVERAGE] = leverage
        return cls(sym, tiers, arrays.n_tiers.copy())

    @classmethod
    def bare(cls, rows: Mapping[int, Any], n: int = 1, floors=(0.0,), caps=(math.inf,),
             mmrs=(0.0,)) -> Columns:
        """``n`` columns with only the rule ``rows`` given (``{Sym.*: value or (n,) values}``)
        and one tier table (bounds and rates; cum 0): the layout of a rule that needs no
        venue, such as a fee or a discount."""
        sym = np.zeros((enums.N_SYMBOL_FIELDS, n))
        sym[enums.Sym.PARTNER] = -1.0
        for row, value in rows.items():
            sym[row] = value
        tiers = np.zeros((enums.N_TIER_FIELDS, n, len(floors)))
        tiers[enums.TierField.FLOOR] = floors
        tiers[enums.TierField.CAP] = caps
        tiers[enums.TierField.MMR] = mmrs
        tiers[enums.TierField.MAX_LEVERAGE] = 1.0
        return cls(sym, tiers, np.full(n, len(floors), dtype=np.int64))


@dataclass(frozen=True)
class Position:
    """One position as the reference calculators take it: column ``i`` of ``columns``.

    ``qty`` is signed, in base units; ``spec`` and ``rules`` are the symbol's spec and
    the model's rules in force.
    """

    qty: float
    entry_price: float
    i: int
    columns: Columns
    spec: SymbolSpec
    rules: Mapping[str, Any]

    @property
    def side(self) -> float:
        return 1.0 if self.qty > 0 else -1.0

    @property
    def size(self) -> float:
        return abs(self.qty)

    @property
    def leverage(self) -> float:
        return float(self.columns.sym[enums.Sym.LEVERAGE, self.i])

    def tier(self) -> int:
        """The tier that holds the position at its entry (the engine's lookup, 0-based)."""
        c = self.columns
        key = engine_rules.tier_key(self.i, self.qty, self.entry_price, self.entry_price, c.sym)
        return int(engine_rules.tier_from(key, 0, self.i, c.tiers, c.n_tiers))

    def tier_table(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(floors, caps, mmrs, cums)`` of the position's tiers, in the kernel's units
        (bounds on the notional, or on the size in base units)."""
        table = self.columns.tiers[:, self.i, :self.columns.n_tiers[self.i]]
        field = enums.TierField
        return table[field.FLOOR], table[field.CAP], table[field.MMR], table[field.CUM]

    def maintenance_margin(self, price: float) -> float:
        """The engine's maintenance margin of the position at mark ``price``."""
        c = self.columns
        return float(engine_rules.maintenance_margin(self.i, self.qty, self.entry_price, price,
                                                     c.sym, c.tiers, c.n_tiers))

    def fee_in_margin(self, price: float) -> float:
        """The fee the venue counts inside the position's margin (the engine's rule)."""
        return float(engine_rules.fee_in_margin(self.i, self.qty, self.entry_price, price,
                                         self.columns.sym))


MARGIN_MODES = ("cross", "isolated")


class MarginModel:
    """A venue's margin model; each model's module subclasses it and makes one instance.

    The base is a plain futures account (one-way positions, cross and isolated
    margin, no collateral, no rule parameters): the ``binance`` model is it with
    its formulas and hedge mode.
    """

    name: str = "futures"
    description: str = ""
    rules: Mapping[str, Rule] = {}
    params: Mapping[str, str] = {}  # per-symbol-version parameter -> meaning
    margin_modes: tuple[str, ...] = MARGIN_MODES
    modes_note: str = ""  # why a margin mode is missing, for the error that refuses it
    position_modes: tuple[str, ...] = ("one_way",)
    collateral: bool = False  # other currencies may back the cross account (multi-currency)
    # the margin mode is the account's, not each symbol's (Bybit UTA): a run gives every
    # symbol one mode, and a callback's switch sets them all, only while none is open
    account_margin_mode: bool = False
    account_mode_note: str = ""  # where the venue says so, for the error that refuses a mix
    # with collateral held, every margined position must be cross (Binance Multi-Assets
    # mode): a run refuses isolated, and a callback's switch to isolated is refused
    collateral_cross_only: bool = False
    collateral_note: str = ""  # the venue's name for its collateral mode, for errors
    # auto-deleveraging (``backtester.risk.adl``): the venue's published ranking formula,
    # "binance" or "bybit" ("": VENUES.md gives none; Binance's then stands in, named so),
    # and the fee rate of the deleveraged trader's close, a spec field ("": none)
    adl_ranking: str = ""
    adl_fee: str = ""

    def __repr__(self) -> str:
        return f"<margin model {self.name}>"

    # --- what the venue allows ----------------------------------------------------------

    def check_margin_mode(self, mode: str, where: str, symbols: Sequence[str] = ()) -> None:
        """Raise ``ValueError`` unless the model has margin ``mode`` (``where``: the venue)."""
        if mode in self.margin_modes:
            return
        note = f" ({self.modes_note})" if self.modes_note else ""
        given = f" for {', '.join(symbols)}" if symbols else ""
        others = " or ".join(f"'{m}'" for m in self.margin_modes)
        raise ValueError(f"{where} follows the {self.name} model{note}; it has no {mode} mode, "
                         f"but margin_mode is '{mode}'{given}: use margin_mode={others}")

    def check_one_margin_mode(self, symbols_by_mode: Mapping[str, Sequence[str]],
                              where: str) -> None:
        """Raise ``ValueError`` if the venue sets the margin mode for the whole account and the
        run gives its symbols different modes (``symbols_by_mode``: mode -> its symbols)."""
        given = {mode: symbols for mode, symbols in symbols_by_mode.items() if symbols}
        if not self.account_margin_mode or len(given) < 2:
            return
        note = f" ({self.account_mode_note})" if self.account_mode_note else ""
        mix = "; ".join(f"'{mode}' for {', '.join(symbols)}" for mode, symbols in given.items())
        raise ValueError(f"{where} follows the {self.name} model, whose margin mode is set for "
                         f"the whole account{note}, but margin_mode gives {mix}: give every "
                         f"symbol the same mode, e.g. margin_mode='cross'")

    def capabilities(self) -> str:
        """What the venue allows, in a few words: ``cross, isolated; one_way, hedge``."""
        text = f"{', '.join(self.margin_modes)}; {', '.join(self.position_modes)}"
        return text + ("; collateral" if self.collateral else "")

    def leverage_matters(self, rules_in_force: Mapping[str, Any]) -> bool:
        """Whether a position's maintenance margin depends on its leverage under these rules
        (the public calculators then need it, in cross mode too)."""
        return False

    # --- the kernel's rule rows -----------------------------------------------------------

    def symbol_rows(self, spec: SymbolSpec, rules_in_force: Mapping[str, Any]
                    ) -> dict[int, float]:
        """The model's rule rows (``{Sym.*: value}``) of one symbol under these rules; rows
        not named keep the defaults of ``kernel_rules``."""
        return {}

    def account_rows(self, rules_in_force: Mapping[str, Any]) -> dict[int, float]:
        """The model's account rules (``{AccountRule.*: value}``); the others are 0."""
        return {}

    def kernel_rules(self, specs: Sequence[SymbolSpec], rules_in_force: Mapping[str, Any],
                     venue: str = "") -> np.ndarray:
        """The kernel's rule rows (``enums.Sym.*``, (N_SYMBOL_FIELDS, N)) of ``specs``: the
        fees and order filters of each spec, then the model's rows. The leverage row is
        left 0 (the run's)."""
        out = np.zeros((enums.N_SYMBOL_FIELDS, len(specs)))
        out[enums.Sym.PARTNER] = -1.0
        for i, spec in enumerate(specs):
            out[enums.Sym.TAKER_FEE, i] = spec.taker_fee
            out[enums.Sym.LIQ_FEE, i] = spec.liquidation_fee
            out[enums.Sym.CUT_FEE, i] = spec.liquidation_fee
            out[enums.Sym.QTY_STEP, i] = spec.qty_step
            out[enums.Sym.MIN_QTY, i] = spec.min_qty
            out[enums.Sym.MIN_NOTIONAL, i] = spec.min_notional
            out[enums.Sym.TICK_SIZE, i] = spec.tick_size
            for row, value in self.symbol_rows(spec, rules_in_force).items():
                out[row, i] = value
            if (spec.tier_rule == "whole" and out[enums.Sym.MM_RULE, i] == enums.MM.BRACKET
                    and len(spec.tiers) > 1):
                raise VenueSpecError(
                    f"venue {venue}, {spec.label}: tier_rule 'whole' on notional tiers "
                    f"valued at the mark makes MM jump at every tier bound along a bar's price "
                    f"path, which the engine does not simulate; use bracket tiers, tiers in "
                    f"contracts, or MM on the entry value (Bybit's margin_price = 'entry')")
        return out

    def account_rules(self, rules_in_force: Mapping[str, Any]) -> np.ndarray:
        """The kernel's account rules (``enums.AccountRule.*``, (N_ACCOUNT_RULES,))."""
        out = np.zeros(enums.N_ACCOUNT_RULES)
        out[enums.AccountRule.ACCOUNT_MARGIN_MODE] = 1.0 if self.account_margin_mode else 0.0
        for row, value in self.account_rows(rules_in_force).items():
            out[row] = value
        return out

    def columns(self, specs: Sequence[SymbolSpec], rules_in_force: Mapping[str, Any],
                leverage: Sequence[float], venue: str = "") -> Columns:
        """``specs`` as the kernel's columns under these rules, with each one's leverage."""
        arrays = VenueArrays.from_specs(specs, rules=self.kernel_rules(specs, rules_in_force,
                                                                       venue))
        return Columns.from_arrays(arrays, leverage)

    # --- Result.describe() ----------------------------------------------------------------

    def summary_rows(self, result, summary: Mapping[str, Any]) -> list[tuple[str, str]]:
        """The model's rows of ``Result.describe()``: a futures account's cost of carry is
        funding, its risk the cross margin ratio."""
        cross = (np.asarray(result.margin_mode) == enums.Mode.CROSS).any()
        return [
            ("funding paid", f"{summary['funding_paid']:,.2f}"),
            ("worst margin ratio", f"{summary['worst_margin_ratio']:.2%}" if cross
             else "n/a (no cross position)"),
        ]

    # --- reference calculators ------------------------------------------------------------

    def position_margin(self, position: Position, margin: float) -> float:
        """What an isolated position holds when the trader gave it ``margin`` (the initial
        margin plus any added)."""
        return margin

    def liquidation_price(self, position: Position, backing: float, margin_mode: str) -> float:
        """Mark price at which ``position`` is liquidated, everything else fixed.

        ``backing``: what backs it: its isolated margin (``position_margin``), or in
        cross mode ``WB - TMM1 + UPNL1`` (the wallet, less the other positions' MM,
        plus their unrealized PnL and any collateral, at their marks).
        """
        raise NotImplementedError(f"the {self.name} model has no liquidation price formula")

    def collateral_value(self, tiers, coins: float, price_usd: float) -> float:
        """Discounted value (quote) of ``coins`` of a collateral currency at ``price_usd`` by
        its ``DiscountTiers``: what the coins add to the cross margin balance (models
        with ``collateral`` only): OKX's progressive discount (VENUES.md §4.5); a one-tier
        table is a plain haircut (Binance), bounds in coins a tiered ratio (Bybit)."""
        if not self.collateral:
            raise NotImplementedError(f"the {self.name} model has no collateral")
        from .okx import currency_adjusted_equity

        floors, caps, rates, n = tiers.arrays()
        return currency_adjusted_equity(float(coins), float(price_usd), floors, caps, rates, n,
                                        tiers.unit == "usd")

    def bankruptcy_price(self, position: Position, backing: float, margin_mode: str) -> float:
        """Mark price at which the position's equity is zero: ``EP - s * backing / Q``
        (``backing``: its isolated margin, or in cross ``WB + UPNL1``)."""
        return position.entry_price - backing / position.qty


def check_rule(model: MarginModel, key: str, value: Any, where: str) -> Any:
    """``value`` if it is a valid setting of rule ``key`` of ``model``; else ValueError."""
    model_rules = model.rules
    if key not in model_rules:
        allowed = ", ".join(sorted(model_rules)) or "none"
        raise ValueError(f"{where}: unknown rule {key!r} for model {model.name}; "
                         f"allowed: {allowed}")
    rule = model_rules[key]
    if rule.choices:
        if value not in rule.choices:
            raise ValueError(f"{where}: rule {key} must be one of {', '.join(rule.choices)}, "
                             f"got {value!r}")
    elif isinstance(rule.default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: rule {key} must be true or false, got {value!r}")
    elif not (isinstance(value, int | float) and not isinstance(value, bool) and value >= 0):
        raise ValueError(f"{where}: rule {key} must be a number >= 0, got {value!r}")
    return value


def default_rules(model: MarginModel) -> dict[str, Any]:
    """Every rule of ``model`` at its default (before any dated change)."""
    return {key: rule.default for key, rule in model.rules.items()}
