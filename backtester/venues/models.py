"""Margin models: what each venue's rules are made of, and which ones ``run()`` simulates.

A venue file names its ``model``; the model fixes which dated rule parameters
(``[[rules]]``) and which per-symbol parameters (``params`` of a version) the file
may set, with their defaults and meaning. ``backtester/venues/MODELS.md`` says
what the engine simulates of each model and what it still needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    """One dated rule parameter of a model: its default, its allowed values, its meaning."""

    default: Any
    meaning: str
    choices: tuple = ()  # allowed values for a word; empty = a number or a bool like default


@dataclass(frozen=True)
class Model:
    """A venue's margin model: its rule parameters and per-symbol parameters."""

    name: str
    description: str
    rules: Mapping[str, Rule]
    params: Mapping[str, str]  # per-symbol-version parameter -> meaning


MODELS: dict[str, Model] = {
    "binance": Model(
        "binance",
        "futures, MM = notional x mmr - cum by notional bracket at mark; liquidation when "
        "margin balance <= MM; liquidation (clearance) fee on the closed notional",
        rules={},
        params={},
    ),
    "bybit_uta": Model(
        "bybit_uta",
        "Bybit Unified Trading Account, linear contracts: risk-limit tiers with mmDeduction, "
        "settlement at the bankruptcy price, tier step-down, account MM rate for cross",
        rules={
            "margin_price": Rule("entry", "price that values the position for isolated MM: "
                                 "'entry' (classic) or 'mark' (from 2025-09-02)",
                                 ("entry", "mark")),
            "fee_to_close_in_margin": Rule(False, "IM and MM include the taker fee to close "
                                           "at the bankruptcy price (from 2025-09-02)"),
            "risk_limit": Rule("manual", "'manual': the trader picks a tier; 'auto': the tier "
                               "follows the position value (from 2024-03-12)",
                               ("manual", "auto")),
            "partial_liquidation": Rule("step_down", "'step_down': a triggered position above "
                                        "the lowest tier is first cut to a lower tier's limit "
                                        "(VENUES.md §3.6); 'none': always a full close",
                                        ("step_down", "none")),
        },
        params={},
    ),
    "okx": Model(
        "okx",
        "OKX: position tiers in contracts, the whole position at its tier's rate (no "
        "deduction); liquidation when equity <= MM + liquidation fee; multi-currency "
        "adjusted equity with discount tiers",
        rules={
            "liquidation_fee_in_trigger": Rule(True, "the trigger is equity <= MM + "
                                               "liquidation fee (margin ratio <= 100%)"),
            "partial_liquidation": Rule("two_tiers", "position reduction before a full close: "
                                        "'two_tiers' (tier >= 3 drops two tiers), 'to_tier_1' "
                                        "(legacy 2020 rule) or 'none'",
                                        ("two_tiers", "to_tier_1", "none")),
            "loan_rate": Rule(0.0, "multi-currency margin: yearly interest rate on a negative "
                              "quote balance (the loan that auto-borrowing makes of it)"),
        },
        params={"contract_size": "base units per contract (OKX ctVal)"},
    ),
    "kraken_spot": Model(
        "kraken_spot",
        "Kraken spot margin: real borrowings (longs borrow quote, shorts base), margin level "
        "= equity / used margin, call at 80%, liquidation at 40%, opening and 4-hourly "
        "rollover fees, cross over every margin position",
        rules={
            "open_level": Rule(1.0, "no new margin position below this margin level"),
            "margin_call_level": Rule(0.8, "margin level of the margin call (an event)"),
            "liquidation_level": Rule(0.4, "margin level of the automatic liquidation"),
            "rollover_hours": Rule(4.0, "hours between rollover fees on borrowed amounts"),
        },
        params={
            "long_opening_fee": "rate on the quote a long borrows, charged once at opening",
            "long_rollover_fee": "rate on the quote a long borrows, per rollover period",
            "short_opening_fee": "rate on the base a short borrows, charged once at opening",
            "short_rollover_fee": "rate on the base a short borrows, per rollover period",
        },
    ),
}

# The margin models the engine kernel simulates today (``run()`` refuses the others).
ENGINE_MODELS: tuple[str, ...] = ("binance", "bybit_uta", "okx", "kraken_spot")


def check_rule(model: str, key: str, value: Any, where: str) -> Any:
    """``value`` if it is a valid setting of rule ``key`` of ``model``; else ValueError."""
    rules = MODELS[model].rules
    if key not in rules:
        allowed = ", ".join(sorted(rules)) or "none"
        raise ValueError(f"{where}: unknown rule {key!r} for model {model}; allowed: {allowed}")
    rule = rules[key]
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


def default_rules(model: str) -> dict[str, Any]:
    """Every rule of ``model`` at its default (before any dated change)."""
    return {key: rule.default for key, rule in MODELS[model].rules.items()}
