"""Venue rows from the exchanges' own API responses (``backtester venues import``).

A user who saved what an exchange's public API returned can add any symbol, or a newer
table, to a venue: each response becomes dated ``[[symbols.X]]`` tier versions and
``[[filters.X]]`` order-filter versions of the venue's TOML format. Read here:

=========  ==========================================  =========================================
venue      tiers                                       order filters (and per-symbol fees)
=========  ==========================================  =========================================
Binance    ``GET /fapi/v1/leverageBracket``; also      ``GET /fapi/v1/exchangeInfo``: PRICE_FILTER,
           ccxt's parse of it (freqtrade's             MARKET_LOT_SIZE (LOT_SIZE where absent),
           ``binance_leverage_tiers.json``)            MIN_NOTIONAL; ``liquidationFee``
Bybit      ``GET /v5/market/risk-limit``               ``GET /v5/market/instruments-info``
OKX        ``GET /api/v5/public/position-tiers``       ``GET /api/v5/public/instruments``
           (sizes in contracts)                        (``ctVal``: the contract size)
=========  ==========================================  =========================================

Each row is dated by the response's own time (Binance ``serverTime``, Bybit ``time``)
or by the date the user gives; a response with neither is refused. The maintenance
amount a response carries (Binance ``cum``, Bybit ``mmDeduction``) is not copied (the
venue format derives it from floors and rates) but checked against that derivation.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .spec import VenueSpecError, derive_cums, normalise_symbol

_CUM_TOLERANCE = 1e-6  # relative: a published maintenance amount is exact up to rounding


@dataclass
class Imported:
    """What one response says of one symbol: a tier table and/or filters, on a date."""

    symbol: str  # the venue's spelling, e.g. BTCUSDT
    valid_from: dt.date
    source: str
    tiers: list[dict[str, float]] | None = None  # floor, cap, max_leverage, mmr[, imr]
    filters: dict[str, float] | None = None  # tick_size, qty_step, min_qty, min_notional
    #                                           (Binance: and its liquidation_fee)
    fields: dict[str, float] = field(default_factory=dict)  # OKX: contract_size


class ResponseError(ValueError):
    """A response that cannot be read; the message names the file and the entry."""


def _num(where: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ResponseError(f"{where}: not a number: {value!r}") from None
    if math.isnan(out):
        raise ResponseError(f"{where}: not a number: {value!r}")
    return out


def _date_of_ms(ms: Any) -> dt.date:
    return dt.datetime.fromtimestamp(int(ms) / 1000, tz=dt.UTC).date()


def _check_cums(where: str, floors: list[float], mmrs: list[float], published: list[float]
                ) -> None:
    derived = derive_cums(floors, mmrs)
    for k, (have, want) in enumerate(zip(published, derived, strict=True)):
        if abs(have - want) > max(1.0, abs(want)) * _CUM_TOLERANCE:
            raise ResponseError(
                f"{where}, tier {k + 1}: the published maintenance amount {have:,.6g} differs "
                f"from cum_k = cum_(k-1) + floor_k x (mmr_k - mmr_(k-1)) = {want:,.6g}; the "
                f"venue format derives it, so this table cannot be imported as it is")


def _ladder(where: str, rows: Sequence[tuple[float, float, float, float | None]]
            ) -> list[dict[str, float]]:
    """Tiers from (cap, mmr, max_leverage, imr) rows sorted by cap: each floor is the cap
    below it."""
    out, floor = [], 0.0
    for cap, mmr, lev, imr in sorted(rows, key=lambda r: r[0]):
        tier = {"floor": floor, "cap": cap, "max_leverage": lev, "mmr": mmr}
        if imr is not None:
            tier["imr"] = imr
        out.append(tier)
        floor = cap
    if not out:
        raise ResponseError(f"{where}: no tiers")
    return out


# --- Binance -----------------------------------------------------------------------------

def _binance_brackets(where: str, symbol: str, brackets: Sequence[Mapping[str, Any]]
                      ) -> list[dict[str, float]]:
    rows = sorted(brackets, key=lambda b: _num(where, b["notionalFloor"]))
    tiers, cums = [], []
    for b in rows:
        at = f"{where}, {symbol} bracket {b.get('bracket', '?')}"
        cap = _num(at, b["notionalCap"])
        cap = math.inf if cap >= 9e18 else cap  # Binance's int64 maximum: no cap
        tiers.append({"floor": _num(at, b["notionalFloor"]), "cap": cap,
                      "max_leverage": _num(at, b["initialLeverage"]),
                      "mmr": _num(at, b["maintMarginRatio"])})
        cums.append(None if b.get("cum") is None else _num(at, b["cum"]))
    if None not in cums:  # a published maintenance amount is checked, never copied
        _check_cums(f"{where}, {symbol}", [t["floor"] for t in tiers],
                    [t["mmr"] for t in tiers], cums)
    return tiers


def binance_leverage_bracket(data: Any, where: str, date: dt.date | None) -> list[Imported]:
    """``GET /fapi/v1/leverageBracket``: ``[{symbol, brackets: [...]}, ...]`` (or one)."""
    if date is None:
        raise ResponseError(f"{where}: a leverageBracket response carries no time; give its "
                           f"date (--date YYYY-MM-DD)")
    entries = [data] if isinstance(data, Mapping) else data
    out = []
    for entry in entries:
        symbol = normalise_symbol(entry["symbol"])
        out.append(Imported(symbol, date, f"{where} (Binance GET /fapi/v1/leverageBracket)",
                            tiers=_binance_brackets(where, symbol, entry["brackets"])))
    return out


def ccxt_leverage_tiers(data: Mapping[str, Any], where: str, date: dt.date | None
                        ) -> list[Imported]:
    """ccxt's ``fetch_leverage_tiers`` of Binance USDⓈ-M (freqtrade keeps it as
    ``binance_leverage_tiers.json``): ``{"BTC/USDT:USDT": [{..., "info": bracket}]}``.
    Only USDT-settled perpetuals are read; each tier's raw ``info`` (the bracket) is used
    where present."""
    if date is None:
        raise ResponseError(f"{where}: a leverage-tiers file carries no time; give its date "
                           f"(--date YYYY-MM-DD)")
    out = []
    for pair, rows in data.items():
        if ":" in pair and not pair.endswith(":USDT"):
            continue
        if not pair.split(":")[0].endswith("/USDT"):
            continue
        symbol = normalise_symbol(pair)
        brackets = []
        for r in rows:
            info = r.get("info") or {}
            brackets.append({
                "bracket": info.get("bracket", r.get("tier")),
                "notionalFloor": info.get("notionalFloor", r.get("minNotional")),
                "notionalCap": info.get("notionalCap", r.get("maxNotional")),
                "initialLeverage": info.get("initialLeverage", r.get("maxLeverage")),
                "maintMarginRatio": info.get("maintMarginRatio",
                                             r.get("maintenanceMarginRate")),
                "cum": info.get("cum"),  # (absent from ccxt's own fields: not checked)
            })
        if any(b["notionalFloor"] is None or b["notionalCap"] is None for b in brackets):
            raise ResponseError(f"{where}, {pair}: a tier has no notional floor or cap")
        out.append(Imported(symbol, date, f"{where} (ccxt leverage tiers of Binance "
                                          f"/fapi/v1/leverageBracket)",
                            tiers=_binance_brackets(where, symbol, brackets)))
    return out


def binance_exchange_info(data: Mapping[str, Any], where: str, date: dt.date | None
                          ) -> list[Imported]:
    """``GET /fapi/v1/exchangeInfo``: each perpetual's filters and liquidation fee."""
    if "serverTime" in data:
        date = _date_of_ms(data["serverTime"])
    if date is None:
        raise ResponseError(f"{where}: no serverTime; give the response's date (--date)")
    out = []
    for s in data["symbols"]:
        if s.get("contractType", "PERPETUAL") != "PERPETUAL":
            continue
        symbol = normalise_symbol(s["symbol"])
        at = f"{where}, {symbol}"
        filters = {f["filterType"]: f for f in s.get("filters", [])}
        lot = filters.get("MARKET_LOT_SIZE") or filters.get("LOT_SIZE") or {}
        values = {
            "tick_size": _num(at, filters.get("PRICE_FILTER", {}).get("tickSize", 0)),
            "qty_step": _num(at, lot.get("stepSize", 0)),
            "min_qty": _num(at, lot.get("minQty", 0)),
            "min_notional": _num(at, filters.get("MIN_NOTIONAL", {}).get(
                "notional", filters.get("MIN_NOTIONAL", {}).get("minNotional", 0))),
        }
        if "liquidationFee" in s:  # published beside the filters: dated with them
            values["liquidation_fee"] = _num(at, s["liquidationFee"])
        out.append(Imported(symbol, date, f"{where} (Binance GET /fapi/v1/exchangeInfo)",
                            filters=values))
    return out


# --- Bybit -------------------------------------------------------------------------------

def _bybit_list(data: Mapping[str, Any], where: str, date: dt.date | None):
    result = data.get("result", data)
    if "time" in data:
        date = _date_of_ms(data["time"])
    if date is None:
        raise ResponseError(f"{where}: no time field; give the response's date (--date)")
    return result.get("list", []), date


def bybit_risk_limit(data: Mapping[str, Any], where: str, date: dt.date | None
                     ) -> list[Imported]:
    """``GET /v5/market/risk-limit`` (category linear): each symbol's risk-limit ladder;
    a tier's cap is its ``riskLimitValue``, its floor the tier below's."""
    rows, date = _bybit_list(data, where, date)
    by_symbol: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_symbol.setdefault(normalise_symbol(r["symbol"]), []).append(r)
    out = []
    for symbol, entries in by_symbol.items():
        at = f"{where}, {symbol}"
        ladder = _ladder(at, [(_num(at, r["riskLimitValue"]), _num(at, r["maintenanceMargin"]),
                               _num(at, r["maxLeverage"]), _num(at, r["initialMargin"]))
                              for r in entries])
        if all("mmDeduction" in r and r["mmDeduction"] not in ("", None) for r in entries):
            ordered = sorted(entries, key=lambda r: _num(at, r["riskLimitValue"]))
            _check_cums(at, [t["floor"] for t in ladder], [t["mmr"] for t in ladder],
                        [_num(at, r["mmDeduction"]) for r in ordered])
        out.append(Imported(symbol, date, f"{where} (Bybit GET /v5/market/risk-limit)",
                            tiers=ladder))
    return out


def bybit_instruments(data: Mapping[str, Any], where: str, date: dt.date | None
                      ) -> list[Imported]:
    """``GET /v5/market/instruments-info`` (category linear): price tick and lot filters."""
    rows, date = _bybit_list(data, where, date)
    out = []
    for r in rows:
        if r.get("contractType", "LinearPerpetual") != "LinearPerpetual":
            continue
        symbol = normalise_symbol(r["symbol"])
        at = f"{where}, {symbol}"
        lot = r.get("lotSizeFilter", {})
        values = {"tick_size": _num(at, r.get("priceFilter", {}).get("tickSize", 0)),
                  "qty_step": _num(at, lot.get("qtyStep", 0)),
                  "min_qty": _num(at, lot.get("minOrderQty", 0)),
                  "min_notional": _num(at, lot.get("minNotionalValue", 0) or 0)}
        out.append(Imported(symbol, date, f"{where} (Bybit GET /v5/market/instruments-info)",
                            filters=values))
    return out


# --- OKX ---------------------------------------------------------------------------------

def _okx_symbol(inst: str) -> str:
    """``BTC-USDT-SWAP`` or the family ``BTC-USDT`` -> ``BTCUSDT``."""
    return normalise_symbol(inst.removesuffix("-SWAP"))


def okx_position_tiers(data: Mapping[str, Any], where: str, date: dt.date | None
                       ) -> list[Imported]:
    """``GET /api/v5/public/position-tiers`` (instType SWAP): tiers by size in contracts,
    the whole position at its tier's rate."""
    if date is None:
        raise ResponseError(f"{where}: an OKX response carries no time; give its date (--date)")
    by_symbol: dict[str, list[Mapping[str, Any]]] = {}
    for r in data["data"]:
        name = r.get("instFamily") or r.get("uly") or r.get("instId")
        by_symbol.setdefault(_okx_symbol(name), []).append(r)
    out = []
    for symbol, entries in by_symbol.items():
        at = f"{where}, {symbol}"
        ladder = _ladder(at, [(_num(at, r["maxSz"]), _num(at, r["mmr"]), _num(at, r["maxLever"]),
                               _num(at, r["imr"])) for r in entries])
        out.append(Imported(symbol, date, f"{where} (OKX GET /api/v5/public/position-tiers)",
                            tiers=ladder))
    return out


def okx_instruments(data: Mapping[str, Any], where: str, date: dt.date | None
                    ) -> list[Imported]:
    """``GET /api/v5/public/instruments`` (instType SWAP): contract size and filters; the lot
    size and minimum size (contracts) become base units."""
    if date is None:
        raise ResponseError(f"{where}: an OKX response carries no time; give its date (--date)")
    out = []
    for r in data["data"]:
        if r.get("instType", "SWAP") != "SWAP" or r.get("settleCcy", "USDT") != "USDT":
            continue
        symbol = _okx_symbol(r["instId"])
        at = f"{where}, {symbol}"
        size = _num(at, r["ctVal"])
        values = {"tick_size": _num(at, r.get("tickSz", 0)),
                  "qty_step": _num(at, r.get("lotSz", 0)) * size,
                  "min_qty": _num(at, r.get("minSz", 0)) * size,
                  "min_notional": 0.0}
        out.append(Imported(symbol, date, f"{where} (OKX GET /api/v5/public/instruments)",
                            filters=values, fields={"contract_size": size}))
    return out


# --- which reader ------------------------------------------------------------------------

READERS = {
    "binance_leverage_bracket": binance_leverage_bracket,
    "binance_ccxt_tiers": ccxt_leverage_tiers,
    "binance_exchange_info": binance_exchange_info,
    "bybit_risk_limit": bybit_risk_limit,
    "bybit_instruments": bybit_instruments,
    "okx_position_tiers": okx_position_tiers,
    "okx_instruments": okx_instruments,
}
VENUE_OF = {"binance": "binance", "bybit": "bybit_uta", "okx": "okx"}  # reader -> model


def detect(data: Any) -> str | None:
    """The kind of response ``data`` is (a key of ``READERS``), or None."""
    if isinstance(data, list) and data and isinstance(data[0], Mapping) \
            and "brackets" in data[0]:
        return "binance_leverage_bracket"
    if not isinstance(data, Mapping):
        return None
    if "brackets" in data and "symbol" in data:
        return "binance_leverage_bracket"
    if "symbols" in data and isinstance(data["symbols"], list):
        return "binance_exchange_info"
    if isinstance(data.get("result"), Mapping) and isinstance(data["result"].get("list"), list):
        rows = data["result"]["list"]
        if rows and "riskLimitValue" in rows[0]:
            return "bybit_risk_limit"
        if rows and "lotSizeFilter" in rows[0]:
            return "bybit_instruments"
    if isinstance(data.get("data"), list) and data["data"]:
        row = data["data"][0]
        if "maxSz" in row and "mmr" in row:
            return "okx_position_tiers"
        if "ctVal" in row:
            return "okx_instruments"
    values = list(data.values())
    if values and all(isinstance(v, list) for v in values) and any(
            v and isinstance(v[0], Mapping) and "maintenanceMarginRate" in v[0] for v in values):
        return "binance_ccxt_tiers"
    return None


def read_response(path: str | Path, date: dt.date | None = None) -> tuple[str, list[Imported]]:
    """``(kind, rows)`` of one saved response file; errors name the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ResponseError(f"{path}: cannot read it as JSON: {exc}") from None
    kind = detect(data)
    if kind is None:
        raise ResponseError(
            f"{path}: not a response this tool reads; it reads Binance leverageBracket / "
            f"exchangeInfo (or ccxt's leverage tiers), Bybit risk-limit / instruments-info, "
            f"OKX position-tiers / instruments")
    try:
        return kind, READERS[kind](data, path.name, date)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ResponseError(f"{path}: a {kind} response without the field {exc}") from None


# --- TOML rows -----------------------------------------------------------------------------

def _fmt(x: float) -> str:
    if x == math.inf:
        return "inf"
    if float(x).is_integer() and abs(x) < 1e15:
        return f"{int(x):_}"
    return repr(float(x))


def _toml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def toml_rows(rows: Iterable[Imported], model: str, defaults: Mapping[str, Any] | None = None
              ) -> str:
    """The ``[[symbols.X]]`` and ``[[filters.X]]`` tables of ``rows`` (one symbol's rows
    oldest first), in the venue format. For an OKX table the version says its tiers are
    in contracts and needs the contract size (from an instruments response of the same
    import, or ``defaults['contract_size']``)."""
    defaults = dict(defaults or {})
    rows = sorted(rows, key=lambda r: (r.symbol, r.valid_from))
    out = []
    fields_of = {}
    for r in rows:
        fields_of.setdefault(r.symbol, {}).update(r.fields)
    for r in rows:
        if r.tiers is None:
            continue
        fields = {**defaults, **fields_of.get(r.symbol, {})}
        lines = [f"[[symbols.{r.symbol}]]", f"valid_from = {r.valid_from.isoformat()}",
                 f"source = {_toml_str(r.source)}"]
        if model == "okx":
            if "contract_size" not in fields:
                raise ResponseError(
                    f"{r.source}: OKX tiers of {r.symbol} are in contracts; import its "
                    f"instruments response too (ctVal, the contract size)")
            lines += ['tier_rule = "whole"', 'tier_unit = "contracts"',
                      f"contract_size = {_fmt(fields['contract_size'])}"]
        if model == "bybit_uta":
            lines.append('tier_rule = "bracket"')
        lines.append("tiers = [")
        for t in r.tiers:
            cells = ", ".join(f"{k} = {_fmt(t[k])}" for k in ("floor", "cap", "max_leverage",
                                                              "mmr", "imr") if k in t)
            lines.append(f"  {{ {cells} }},")
        lines.append("]")
        out.append("\n".join(lines))
    for r in rows:
        if r.filters is None:
            continue
        lines = [f"[[filters.{r.symbol}]]", f"valid_from = {r.valid_from.isoformat()}",
                 f"source = {_toml_str(r.source)}"]
        lines += [f"{k} = {_fmt(v)}" for k, v in r.filters.items()]
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def latest_per_kind(rows: Iterable[Imported]) -> list[Imported]:
    """``rows`` oldest first per symbol, without a row that repeats the one before it (the
    same tiers and fields, or the same filters): a new version only where a value changed."""
    out: list[Imported] = []
    last: dict[tuple[str, str], Imported] = {}
    for r in sorted(rows, key=lambda r: (r.symbol, r.valid_from)):
        for kind, value in (("tiers", r.tiers), ("filters", r.filters)):
            if value is None:
                continue
            prev = last.get((r.symbol, kind))
            same = prev is not None and getattr(prev, kind) == value and (
                kind == "filters" or prev.fields == r.fields)
            if same:
                continue
            part = Imported(r.symbol, r.valid_from, r.source,
                            tiers=value if kind == "tiers" else None,
                            filters=value if kind == "filters" else None, fields=r.fields)
            last[(r.symbol, kind)] = part
            out.append(part)
    return out


def import_into(base: str | Path, responses: Sequence[str | Path], date: dt.date | None = None,
                symbols: Sequence[str] | None = None) -> tuple[str, list[Imported]]:
    """The text of a venue file: ``base``'s (a built-in name or a path) with the tier and
    filter versions of ``responses`` added, and the rows added. Only ``symbols`` (any
    spelling) when given. The text is checked by loading it before it is returned: a row
    dated at or before a version the base already has is refused, naming both."""
    import tomllib

    from . import _resolve
    from .files import venue_from_dict
    from .registry import margin_model

    base_path = _resolve(base) if not isinstance(base, Path) else base
    text = base_path.read_text(encoding="utf-8")
    model = margin_model(tomllib.loads(text).get("model", "binance")).name
    rows: list[Imported] = []
    for path in responses:
        kind, found = read_response(path, date)
        if VENUE_OF[kind.split("_")[0]] != model:
            raise ResponseError(f"{path}: a {kind.split('_')[0]} response cannot go into "
                               f"{base_path.name} (model {model})")
        rows += found
    if symbols:
        wanted = {normalise_symbol(s) for s in symbols}
        missing = wanted - {r.symbol for r in rows}
        if missing:
            raise ResponseError(f"the responses hold no {', '.join(sorted(missing))}")
        rows = [r for r in rows if r.symbol in wanted]
    if not rows:
        raise ResponseError("the responses hold no USDT perpetual to import")
    # a symbol's fields (contract size, liquidation fee) go with every tier version of it
    fields: dict[str, dict[str, float]] = {}
    for r in rows:
        fields.setdefault(r.symbol, {}).update(r.fields)
    for r in rows:
        r.fields = dict(fields[r.symbol])
    rows = latest_per_kind(rows)
    stamp = ", ".join(sorted({Path(p).name for p in responses}))
    added = toml_rows(rows, model)
    text = (text.rstrip("\n") + f"\n\n# --- imported from {stamp} (backtester venues import) "
            f"---\n\n" + added)
    try:
        venue_from_dict(tomllib.loads(text), default_name=base_path.stem)
    except VenueSpecError as exc:
        raise ResponseError(f"the imported rows do not fit {base_path.name}: {exc}") from None
    return text, rows
