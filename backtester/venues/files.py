"""Read venue TOML files into ``Venue`` objects, and apply run-time overrides.

The file format is described in ``backtester/venues/__init__.py``. Every error
names the file, the symbol, the version and the tier, and says what to change.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .models import MarginModel, check_rule
from .registry import margin_model
from .spec import (
    FILTERS,
    SymbolSpec,
    VenueSpecError,
    normalise_symbol,
    tiers_from_table,
    to_timestamp,
)
from .venue import DiscountTiers, RuleSet, Venue

FEES = ("taker_fee", "maker_fee", "liquidation_fee")
TIER_OVERRIDES = ("mmr", "max_leverage")
# version keys that may also be set once at the top level for every version
_SHARED = ("funding_interval_hours", "funding_cap_mmr_multiple", "tier_rule", "tier_unit")
_TOP_KEYS = {"name", "description", "model", "source", "fees", "symbols", "default", "rules",
             "collateral", "params", "filters", *_SHARED}
_VERSION_KEYS = {"valid_from", "source", "tiers", "funding_rate_cap", "funding_rate_floor",
                 *FEES, *_SHARED}
_TIER_KEYS = ("floor", "cap", "max_leverage", "mmr")


def read_venue(path: Path) -> Venue:
    """The venue of a TOML file; errors start with the file's path."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise VenueSpecError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return venue_from_dict(data, default_name=path.stem)
    except VenueSpecError as exc:
        raise VenueSpecError(f"{path}: {exc}") from None


def _unknown_keys(where: str, table: Mapping[str, Any], allowed) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise VenueSpecError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}"
        )


def _date(where: str, value: Any, required: bool):
    if value is None:
        if required:
            raise VenueSpecError(f"{where}: valid_from is required when a symbol has versions")
        return None
    if not isinstance(value, dt.date):
        raise VenueSpecError(f"{where}: valid_from must be a TOML date such as 2024-05-30")
    return to_timestamp(value)


def venue_from_dict(data: Mapping[str, Any], default_name: str) -> Venue:
    """A ``Venue`` from the parsed TOML of a venue file."""
    _unknown_keys("top level", data, _TOP_KEYS)
    model = margin_model(data.get("model", "binance"))
    fees = data.get("fees", {})
    _unknown_keys("[fees]", fees, FEES)
    params = data.get("params", {})
    _unknown_keys("[params]", params, model.params)
    shared = {key: data[key] for key in _SHARED if key in data}
    defaults = {**fees, **params, **shared}
    hours = shared.get("funding_interval_hours", 8)
    if not (isinstance(hours, int | float) and hours >= 0):
        raise VenueSpecError(f"funding_interval_hours must be >= 0 (0 = no funding), "
                             f"got {hours!r}")
    symbols = data.get("symbols", {})
    if not isinstance(symbols, Mapping):
        raise VenueSpecError("symbols must be tables: [[symbols.BTCUSDT]]")
    history = {}
    for key, versions in symbols.items():
        name = normalise_symbol(key)
        if name in history:
            raise VenueSpecError(f"symbol {key} is listed twice (as {name})")
        history[name] = _versions(name, versions, defaults, model)
    filters = data.get("filters", {})
    if not isinstance(filters, Mapping):
        raise VenueSpecError("filters must be tables: [[filters.BTCUSDT]]")
    for key, versions in filters.items():
        name = normalise_symbol(key)
        if name not in history:
            raise VenueSpecError(f"[[filters.{key}]]: the symbol has no [[symbols.{key}]] "
                                 f"tier table")
        history[name] = _with_filters(history[name], _filter_versions(key, versions))
    default = _versions("default", data["default"], defaults, model) if "default" in data else ()
    if not history and not default:
        raise VenueSpecError("lists no [[symbols.NAME]] and no [[default]] spec")
    return Venue(
        name=str(data.get("name", default_name)),
        description=str(data.get("description", "")),
        symbols={},
        funding_interval_hours=float(hours),
        source=str(data.get("source", "")),
        history=history,
        default_history=default,
        model=model.name,
        rule_history=_rule_sets(data.get("rules", []), model),
        collateral={ccy.upper(): _discounts(ccy.upper(), v)
                    for ccy, v in data.get("collateral", {}).items()},
    )


def _rule_sets(tables: Any, model: MarginModel) -> tuple[RuleSet, ...]:
    if isinstance(tables, Mapping):
        tables = [tables]
    out = []
    for v, table in enumerate(tables):
        where = f"[[rules]] {v + 1}"
        valid_from = _date(where, table.get("valid_from"), required=v > 0)
        values = {}
        for key, value in table.items():
            if key in ("valid_from", "source"):
                continue
            try:
                values[key] = check_rule(model, key, value, where)
            except ValueError as exc:
                raise VenueSpecError(str(exc)) from None
        if out and out[-1].valid_from is not None and not valid_from > out[-1].valid_from:
            raise VenueSpecError(f"{where}: valid_from must be later than the previous one's")
        out.append(RuleSet(values, valid_from, str(table.get("source", ""))))
    return tuple(out)


def _discounts(currency: str, versions: Any) -> tuple[DiscountTiers, ...]:
    if isinstance(versions, Mapping):
        versions = [versions]
    out = []
    for v, version in enumerate(versions):
        where = f"collateral {currency}, version {v + 1}"
        _unknown_keys(where, version, {"valid_from", "source", "unit", "tiers"})
        rows = version.get("tiers")
        if not isinstance(rows, list) or not rows:
            raise VenueSpecError(f"{where}: tiers must be a non-empty list of "
                                 f"{{ floor, cap, rate }}")
        for k, row in enumerate(rows):
            _unknown_keys(f"{where}, tier {k + 1}", row, {"floor", "cap", "rate"})
        try:
            tiers = DiscountTiers(
                currency,
                tuple(float(r["floor"]) for r in rows), tuple(float(r["cap"]) for r in rows),
                tuple(float(r["rate"]) for r in rows), str(version.get("unit", "usd")),
                _date(where, version.get("valid_from"), required=len(versions) > 1),
                str(version.get("source", "")),
            )
        except KeyError as exc:
            raise VenueSpecError(f"{where}: a tier needs floor, cap and rate; missing "
                                 f"{exc.args[0]}") from None
        if out and not tiers.valid_from > out[-1].valid_from:
            raise VenueSpecError(f"{where}: valid_from must be later than version {v}'s")
        out.append(tiers)
    return tuple(out)


def _filter_versions(symbol: str, versions: Any) -> list[dict[str, Any]]:
    """The dated order filters of ``[[filters.SYMBOL]]`` (a filter a version leaves out is 0:
    none), oldest first."""
    if isinstance(versions, Mapping):
        versions = [versions]
    out: list[dict[str, Any]] = []
    for v, version in enumerate(versions):
        where = f"[[filters.{symbol}]] {v + 1}"
        if not isinstance(version, Mapping):
            raise VenueSpecError(f"{where}: a filter version is a table")
        _unknown_keys(where, version, {"valid_from", "source", "liquidation_fee", *FILTERS})
        valid_from = _date(where, version.get("valid_from"), required=len(versions) > 1)
        values = {}
        for key in FILTERS:
            value = version.get(key, 0.0)
            if not (isinstance(value, int | float) and not isinstance(value, bool)
                    and 0 <= value < float("inf")):
                raise VenueSpecError(f"{where}: {key} must be a number >= 0 (0 = no filter), "
                                     f"got {value!r}")
            values[key] = float(value)
        fee = version.get("liquidation_fee")
        if fee is not None and not (isinstance(fee, int | float) and 0 <= fee < 1):
            raise VenueSpecError(f"{where}: liquidation_fee must be a rate in [0, 1), "
                                 f"got {fee!r}")
        if out and not valid_from > out[-1]["valid_from"]:
            raise VenueSpecError(f"{where}: valid_from must be later than version {v}'s")
        out.append({"valid_from": valid_from, "source": str(version.get("source", "")),
                    "values": values, "liquidation_fee": fee})
    return out


def _with_filters(versions: tuple[SymbolSpec, ...], filters: list[dict[str, Any]]
                  ) -> tuple[SymbolSpec, ...]:
    """``versions`` with the order filters in force at each date: a version is split where a
    filter version starts. Before the first filter version, the first stands in (its source
    says so), as the earliest tier table does before its date. A filter version's
    ``liquidation_fee`` (Binance publishes it beside the filters, in exchangeInfo) replaces
    the tier version's from its own date on, never before."""
    first = versions[0].valid_from
    starts = {v.valid_from for v in versions[1:]} | {
        f["valid_from"] for f in filters
        if f["valid_from"] is not None and (first is None or f["valid_from"] > first)}
    out = []
    for start in [first, *sorted(starts)]:
        spec = [v for v in versions if v.valid_from is None
                or (start is not None and v.valid_from <= start)][-1]
        later = [f for f in filters if f["valid_from"] is None
                 or (start is not None and f["valid_from"] <= start)]
        chosen = later[-1] if later else filters[0]
        source = chosen["source"]
        if not later:
            source += f" (standing in before {chosen['valid_from'].date()})"
        fee = {} if not later or chosen["liquidation_fee"] is None else {
            "liquidation_fee": float(chosen["liquidation_fee"])}
        out.append(dataclasses.replace(spec, valid_from=start, filter_source=source,
                                       **chosen["values"], **fee))
    return tuple(out)


def _tier_rows(where: str, rows: Any) -> list[tuple[float, ...]]:
    if not isinstance(rows, list) or not rows:
        raise VenueSpecError(f"{where}: tiers must be a non-empty list of tables")
    table = []
    for k, row in enumerate(rows):
        at = f"{where}, tier {k + 1}"
        if not isinstance(row, Mapping):
            raise VenueSpecError(f"{at}: a tier is a table {{ floor, cap, max_leverage, mmr }}")
        if "cum" in row:
            raise VenueSpecError(
                f"{at}: remove 'cum': the maintenance amount is derived from the floors and "
                f"rates (cum_k = cum_(k-1) + floor_k * (mmr_k - mmr_(k-1))), never typed in"
            )
        _unknown_keys(at, row, (*_TIER_KEYS, "imr"))
        missing = [key for key in _TIER_KEYS if key not in row]
        if missing:
            raise VenueSpecError(f"{at}: missing {', '.join(missing)}")
        keys = (*_TIER_KEYS, "imr") if "imr" in row else _TIER_KEYS
        if not all(isinstance(row[key], int | float) for key in keys):
            raise VenueSpecError(f"{at}: floor, cap, max_leverage, mmr and imr must be numbers")
        table.append(tuple(row[key] for key in keys))
    return table


def _versions(name: str, versions: Any, defaults: Mapping[str, Any],
              model: MarginModel) -> tuple[SymbolSpec, ...]:
    if isinstance(versions, Mapping):
        versions = [versions]
    if not versions:
        raise VenueSpecError(f"symbol {name}: no tier table")
    model_params = model.params
    specs = []
    for v, version in enumerate(versions):
        where = f"symbol {name}, version {v + 1}"
        _unknown_keys(where, version, _VERSION_KEYS | set(model_params))
        valid_from = _date(where, version.get("valid_from"), required=len(versions) > 1)
        merged = {**defaults, **version}
        rule = merged.get("tier_rule", "bracket")
        try:
            tiers = tiers_from_table(_tier_rows(where, version.get("tiers")), rule=rule)
        except VenueSpecError as exc:
            raise VenueSpecError(f"{where}: {exc}") from None
        rates = {key: merged.get(key) for key in FEES}
        missing = [key for key, value in rates.items() if value is None]
        if missing:
            raise VenueSpecError(f"{where}: no {', '.join(missing)} here or in [fees]")
        cap, floor = merged.get("funding_rate_cap"), merged.get("funding_rate_floor")
        multiple = merged.get("funding_cap_mmr_multiple")
        if multiple is not None and cap is None and floor is None:
            # Binance: |rate| <= multiple x MMR of the lowest tier (VENUES.md §2.9)
            cap = round(multiple * tiers[0].mmr, 12)
            floor = -cap
        spec = SymbolSpec(
            symbol=name,
            tiers=tiers,
            valid_from=valid_from,
            source=str(version.get("source", "")),
            funding_interval_hours=float(merged.get("funding_interval_hours", 8)),
            funding_rate_cap=cap,
            funding_rate_floor=floor,
            tier_rule=rule,
            tier_unit=merged.get("tier_unit", "quote"),
            params={key: merged[key] for key in model_params if key in merged},
            **rates,
        )
        if specs and not spec.valid_from > specs[-1].valid_from:
            raise VenueSpecError(f"{where}: valid_from must be later than version {v}'s")
        specs.append(spec)
    return tuple(specs)


def apply_overrides(venue: Venue, overrides: Mapping[str, Any]) -> Venue:
    """``venue`` with fees, params, rules (and single-tier rates) replaced everywhere.

    A rule override is added as a rule set without a date, so it holds at every
    time, after every dated change.
    """
    single_tier = all(
        len(spec.tiers) == 1
        for versions in (*venue.history.values(), venue.default_history) for spec in versions
    )
    model = venue.margin_model
    accepted = (FEES + tuple(model.params) + tuple(model.rules)
                + (TIER_OVERRIDES if single_tier else ()))
    unknown = sorted(set(overrides) - set(accepted))
    if unknown:
        why = "" if single_tier else f" ({venue.name} has tiered tables: no mmr/max_leverage)"
        raise ValueError(
            f"unknown venue override(s) {', '.join(unknown)} for {venue.name}; "
            f"accepted: {', '.join(accepted)}{why}"
        )
    rules = {k: check_rule(model, k, v, f"override of {venue.name}")
             for k, v in overrides.items() if k in model.rules}

    def change(spec: SymbolSpec) -> SymbolSpec:
        fields: dict[str, Any] = {k: float(v) for k, v in overrides.items() if k in FEES}
        tier_fields = {k: float(v) for k, v in overrides.items() if k in TIER_OVERRIDES}
        if tier_fields:
            fields["tiers"] = (dataclasses.replace(spec.tiers[0], **tier_fields),)
        params = {k: v for k, v in overrides.items() if k in model.params}
        if params:
            fields["params"] = {**spec.params, **params}
        try:
            return dataclasses.replace(spec, **fields)
        except VenueSpecError as exc:
            raise ValueError(
                f"venue {venue.name} with overrides {dict(overrides)}: {exc}"
            ) from None

    return dataclasses.replace(
        venue,
        symbols={},
        history={name: tuple(map(change, v)) for name, v in venue.history.items()},
        default=None,
        default_history=tuple(map(change, venue.default_history)),
        rule_history=venue.rule_history + ((RuleSet(rules, None, "override"),) if rules else ()),
    )
