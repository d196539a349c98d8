"""Strategies in two forms (DESIGN.md §6), and how ``run()`` and the CLI find them.

**Vectorized**: a function of the Market returning target positions per bar and
symbol (see ``backtester.run``). Fast, and ideal for sweeps.

**Event-driven**: a callback that numba compiles, called at every bar's close with
a read-only view of the account and the market up to that bar. It decides from
what the account is *now* (positions, margins, liquidation prices, margin ratio),
which targets computed in advance cannot::

    callback(t, ctx, orders, params) -> bool

- ``t``: the bar that just closed.
- ``ctx``: an ``engine.enums.BarContext``: the market arrays (``ctx.close[t, i]``...),
  the account (``ctx.state``, ``ctx.account``, ``ctx.out``) and ``ctx.memory``, the
  strategy's own scratch array. Read it through the helpers below
  (``position(ctx, i)``, ``leverage(ctx, i)``, ``liquidation_price(ctx, i)``,
  ``margin_ratio(ctx, t)``...). Rows after ``t`` are the future: never read them.
- ``orders``: write the orders for the next fill with ``order_target``,
  ``order_delta``, ``add_margin``, ``remove_margin``, ``set_leverage`` and
  ``set_margin_mode``, and return True; return False when there is nothing to do.
  Targets and deltas are in the run's ``target_kind`` (units, notional or fraction
  of equity; a fraction sizes the exposure, or with ``sizing="margin"`` the initial
  margin committed, so fraction x equity x leverage of notional). Orders fill at the
  next open (``fill_at="open"``); what the account refuses is recorded in
  ``Result.rejections`` with a reason, never raised.
- ``params``: the strategy's parameters, a float64 array (plain numbers: pass a
  symbol as its column index).

Wrap it in a ``Callback`` to run it; a strategy the CLI can run is a function
``build(market, **parameters)`` returning a ``Plan`` (see ``strategies/``).

**The run's leverage.** A callback reads each symbol's leverage as it is now with
``leverage(ctx, i)`` (the run's, or what ``set_leverage`` made it). A strategy function
or ``StrategyDef`` that sizes by the leverage takes a parameter named ``leverage``:
when you do not set that parameter yourself, ``backtester run --strategy`` (with
``--leverage``), ``compare`` (its leverage, each in turn) and ``sweep`` (each run's, where
the grid sets ``leverage``) pass it the run's leverage, a per-symbol leverage as the
mapping {symbol: leverage}. Without a leverage given, the function keeps its own default;
return it in the ``Plan``'s options (``{"leverage": leverage}``, as ``strategies/`` do) so
that the run uses the leverage the strategy sized for.

Example:
    >>> from numba import njit
    >>> from backtester import load_market, run
    >>> from backtester.strategy import Callback, order_target
    >>> @njit
    ... def long_btc_daily(t, ctx, orders, params):
    ...     if t % 24 != 0:
    ...         return False
    ...     order_target(orders, 0, params[0])     # symbol 0 at params[0] x equity
    ...     return True
    >>> market = load_market()
    >>> result = run(market, Callback(long_btc_daily, params=[0.5]), target_kind="equity")
    >>> int(result.summary()["liquidations"])
    0
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
from numba.core.errors import NumbaError

from .engine import driver
from .engine.account import available_balance as _available_balance
from .engine.account import position_liquidation_price, removable_margin
from .engine.enums import (  # noqa: F401  (re-exported for strategy authors)
    Account,
    BarContext,
    Book,
    Mode,
    Order,
    Out,
    State,
    Sym,
    TierField,
)
from .engine.jit import inner
from .engine.rules import initial_margin
from .engine.rules import maintenance_margin as _maintenance_margin


class StrategyError(ValueError):
    """A strategy that cannot run, explained for its author (raised before or after numba)."""


# --- reading the account (compiled helpers for callbacks) --------------------------------------


@inner(_nrt=False)
def _book(ctx):
    """The kernel's ``Book`` over the view's arrays (the account functions take one)."""
    return Book(ctx.state, ctx.tier, ctx.account, ctx.mode, ctx.sym, ctx.tiers, ctx.n_tiers,
                ctx.rules)


@inner(_nrt=False)
def position(ctx, i):
    """Signed position of symbol i in base units (long > 0)."""
    return ctx.state[State.QTY, i]


@inner(_nrt=False)
def leverage(ctx, i):
    """Symbol i's leverage now: the run's, or what ``set_leverage`` made it (1 for spot).

    Example (in a callback: margin of 20% of equity, whatever the leverage):
        ``order_target(orders, i, 0.2 * leverage(ctx, i))`` with ``target_kind="equity"``
        commits 0.2 x equity as initial margin, as ``sizing="margin"`` does.
    """
    return ctx.sym[Sym.LEVERAGE, i]


@inner(_nrt=False)
def entry_price(ctx, i):
    """Average entry price of symbol i's position (0 when flat)."""
    return ctx.state[State.ENTRY, i]


@inner(_nrt=False)
def mark_price(ctx, i):
    """Last mark price of symbol i (what margin and liquidation are computed on)."""
    return ctx.state[State.MARK, i]


@inner(_nrt=False)
def notional(ctx, i):
    """``|q| * mark`` of symbol i's position, in quote."""
    return abs(ctx.state[State.QTY, i]) * ctx.state[State.MARK, i]


@inner(_nrt=False)
def position_margin(ctx, i):
    """Margin backing symbol i's position: an isolated position's own margin, a spot
    holding's cost, a cross position's initial margin (``|q| * entry / leverage`` and the
    venue's fee counted in the margin)."""
    if ctx.mode[i] == Mode.CROSS:
        q = ctx.state[State.QTY, i]
        if q == 0.0:
            return 0.0
        return initial_margin(i, q, ctx.state[State.ENTRY, i], ctx.state[State.MARK, i], ctx.sym)
    return ctx.state[State.ISO_MARGIN, i]


@inner(_nrt=False)
def maintenance_margin(ctx, i):
    """Maintenance margin of symbol i's position at its mark, under the venue's model
    (tiered; 0 for spot)."""
    q = ctx.state[State.QTY, i]
    if q == 0.0 or ctx.mode[i] >= Mode.SPOT:
        return 0.0
    return _maintenance_margin(i, q, ctx.state[State.ENTRY, i], ctx.state[State.MARK, i], ctx.sym,
                               ctx.tiers, ctx.n_tiers)


@inner(_nrt=False)
def liquidation_price(ctx, i):
    """Mark price at which symbol i's position is liquidated, all else fixed (NaN: flat or
    spot). Cross: Binance's formula with the other cross positions at their marks."""
    return position_liquidation_price(i, _book(ctx))


@inner(_nrt=False)
def liquidation_distance(ctx, i):
    """How far the mark may move against symbol i's position before it is liquidated, as a
    fraction of the mark (0.1 = a 10% adverse move); inf when it never is."""
    lp = liquidation_price(ctx, i)
    q = ctx.state[State.QTY, i]
    mark = ctx.state[State.MARK, i]
    if q == 0.0 or lp != lp or (q > 0.0 and lp <= 0.0):
        return np.inf
    return (mark - lp) / mark if q > 0.0 else (lp - mark) / mark


@inner(_nrt=False)
def isolated_margin_for(ctx, i, price):
    """Margin an isolated position needs so that it is liquidated only at ``price`` (solves
    ``M + q * (price - entry) == MM(price)``); compare with ``position_margin``."""
    q = ctx.state[State.QTY, i]
    entry = ctx.state[State.ENTRY, i]
    mm = _maintenance_margin(i, q, entry, price, ctx.sym, ctx.tiers, ctx.n_tiers)
    return mm - q * (price - entry)


@inner(_nrt=False)
def free_isolated_margin(ctx, i):
    """Isolated margin symbol i could give back now (``remove_margin`` beyond it is refused)."""
    return removable_margin(i, _book(ctx))


@inner(_nrt=False)
def equity(ctx, t):
    """Account equity at the close of bar t: wallet + isolated margins + unrealized PnL."""
    return ctx.out[Out.EQUITY, t]


@inner(_nrt=False)
def margin_ratio(ctx, t):
    """Cross maintenance margin over cross margin balance at close t (liquidation at 1)."""
    return ctx.out[Out.MARGIN_RATIO, t]


@inner(_nrt=False)
def wallet_balance(ctx):
    """Wallet balance: deposits + realized PnL - fees - funding, less isolated margins."""
    return ctx.account[Account.WALLET]


@inner(_nrt=False)
def available_balance(ctx):
    """Balance free for new margin: wallet + cross unrealized PnL - cross initial margin."""
    return _available_balance(_book(ctx))


# --- writing orders ------------------------------------------------------------------------------


@inner(_nrt=False)
def order_target(orders, i, amount):
    """Ask for symbol i's position to become ``amount`` (in the run's target_kind)."""
    orders[Order.TARGET, i] = amount


@inner(_nrt=False)
def order_delta(orders, i, amount):
    """Ask to change symbol i's position by ``amount`` (target_kind units; adds up)."""
    d = orders[Order.DELTA, i]
    orders[Order.DELTA, i] = amount if d != d else d + amount


@inner(_nrt=False)
def add_margin(orders, i, amount):
    """Move ``amount`` of quote from the available balance into isolated position i."""
    m = orders[Order.MARGIN, i]
    orders[Order.MARGIN, i] = amount if m != m else m + amount


@inner(_nrt=False)
def remove_margin(orders, i, amount):
    """Take ``amount`` of quote out of isolated position i back to the wallet."""
    add_margin(orders, i, -amount)


@inner(_nrt=False)
def set_leverage(orders, i, leverage):
    """Change symbol i's leverage (within the max leverage of its position's tier)."""
    orders[Order.LEVERAGE, i] = leverage


@inner(_nrt=False)
def set_margin_mode(orders, i, mode):
    """Switch symbol i to ``Mode.CROSS`` or ``Mode.ISOLATED``; refused while it holds a position.

    On a venue whose margin mode is the account's (Bybit UTA) the switch sets every
    symbol's mode, and is refused while any position is open."""
    orders[Order.MODE, i] = mode


# --- a callback ready to run ---------------------------------------------------------------------

_COMPILED: dict[Any, Any] = {}


@dataclass(frozen=True, eq=False)
class Callback:
    """An event-driven strategy for ``run()``: the function and its inputs.

    - ``function``: ``f(t, ctx, orders, params) -> bool``, ``@njit`` or plain
      Python (it is compiled either way, with bounds checking on).
    - ``params``: its parameters, plain numbers: a sequence, or a mapping
      name -> number (kept in order; the names only make messages clearer).
    - ``series``: (K, T, N) series computed before the run (indicators), seen as
      ``ctx.series``; a (T, N) array is one series.
    - ``memory``: the size of ``ctx.memory`` (zeros at the start), or its
      initial values.
    - ``name``: how messages name it (default: the function's name).
    """

    function: Callable
    params: Sequence[float] | Mapping[str, float] = ()
    series: np.ndarray | None = None
    memory: int | Sequence[float] = 0
    name: str = ""

    @cached_property
    def label(self) -> str:
        return self.name or getattr(self.function, "__name__", "callback")

    @cached_property
    def param_values(self) -> np.ndarray:
        items = (list(self.params.items()) if isinstance(self.params, Mapping)
                 else [(f"params[{k}]", v) for k, v in enumerate(self.params)])
        values = []
        for name, value in items:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise StrategyError(
                    f"parameter {name} of {self.label} must be a plain number, got {value!r}; "
                    "pass a symbol as its column index (market.symbol_index(name)) and a "
                    "choice as a number")
            values.append(float(value))
        return np.array(values, dtype=np.float64)

    def series_array(self, n_bars: int, n_symbols: int) -> np.ndarray | None:
        if self.series is None:
            return None
        series = np.asarray(self.series, dtype=np.float64)
        if series.ndim == 2:
            series = series[None]
        if series.ndim != 3 or series.shape[1:] != (n_bars, n_symbols):
            raise StrategyError(
                f"series of {self.label} must have shape (K, bars, symbols) = "
                f"(K, {n_bars}, {n_symbols}) or (bars, symbols), got {np.shape(self.series)}")
        return series

    def memory_array(self) -> np.ndarray:
        if isinstance(self.memory, (int, np.integer)):
            return np.zeros(int(self.memory))
        return np.array(self.memory, dtype=np.float64)

    def compiled(self):
        """The compiled callback (compiled once per function per process)."""
        py_func = getattr(self.function, "py_func", self.function)
        if py_func not in _COMPILED:
            _check_arity(py_func, self.label)
            try:
                _COMPILED[py_func] = driver.compile_callback(py_func)
            except NumbaError as exc:
                raise StrategyError(_explain_compile_error(self.label, py_func, exc)) from None
        return _COMPILED[py_func]


def _where(py_func) -> str:
    try:
        file = inspect.getsourcefile(py_func)
        line = inspect.getsourcelines(py_func)[1]
        return f"{file}:{line}"
    except (OSError, TypeError):
        return "<unknown file>"


def _check_arity(py_func, label: str) -> None:
    try:
        names = list(inspect.signature(py_func).parameters)
    except (TypeError, ValueError):
        return
    if len(names) != 4:
        raise StrategyError(
            f"strategy callback {label} ({_where(py_func)}) takes {len(names)} argument(s) "
            f"({', '.join(names)}); a callback takes exactly four: (t, ctx, orders, params)")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _explain_compile_error(label: str, py_func, exc: Exception) -> str:
    text = _ANSI.sub("", str(exc)).replace(str(driver.context_type()), "BarContext")
    # numba repeats the source excerpt for each pass; the first block says it all
    lines = [ln for ln in text.splitlines() if ln.strip()]
    keep = []
    for ln in lines[1:]:
        if ln.startswith("During:"):
            break
        keep.append(ln)
    detail = "\n    ".join(keep) or text
    hint = ""
    if "none to bool" in text:
        hint = ("\n  It must return True when it wrote orders and False otherwise, on every "
                "path (a function that falls off its end returns None).")
    elif "Unknown attribute" in text and "BarContext" in text:
        hint = (f"\n  ctx has the fields {', '.join(BarContext._fields)}; read the account "
                "with the helpers in backtester.strategy (position, equity, margin_ratio...).")
    return (f"strategy callback {label} ({_where(py_func)}) cannot be compiled by numba, which "
            "runs it inside the bar loop. Use only numbers, numpy arrays and the helpers of "
            "backtester.strategy in it (no pandas, dicts of Python objects, prints of "
            f"objects...).{hint}\n  numba says:\n    {detail}")


def explain_runtime_error(callback: Callback, bar: int, when: str, exc: Exception) -> str:
    """A message for an exception raised inside a callback at ``bar`` (``when``: its time)."""
    py_func = getattr(callback.function, "py_func", callback.function)
    hint = ""
    if isinstance(exc, IndexError):
        hint = (" An index is outside an array: orders and the state rows have one column "
                "per symbol, ctx.series has shape (K, bars, symbols), ctx.memory has the size "
                "the Callback gave it.")
    return (f"strategy callback {callback.label} ({_where(py_func)}) raised "
            f"{type(exc).__name__} at bar {bar} ({when}): {exc}.{hint}")


# --- plans, the registry and loading -------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What a strategy hands to ``run()``: its orders and the run options they assume.

    - ``orders``: target positions (a (T, N) array or DataFrame) or a ``Callback``.
    - ``options``: ``RunConfig`` fields the strategy relies on, e.g.
      ``{"target_kind": "equity"}`` or ``{"instruments": {"BTC_USDT_SPOT": "spot"}}``;
      options given to ``run()`` itself win over them.
    """

    orders: Any
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StrategyDef:
    """A strategy the CLI can run: ``build(market, **parameters) -> Plan`` and its name.

    ``load_market(path, symbols, start, end, timeframe, **parameters)``, when
    given, loads the market the strategy needs (the funding carry adds its spot
    series); otherwise the CLI loads ``path`` as usual.
    """

    name: str
    build: Callable[..., Any]
    load_market: Callable[..., Any] | None = None

    @property
    def parameters(self) -> dict[str, Any]:
        """Parameter names and defaults (from ``build``'s signature, ``market`` left out)."""
        sig = inspect.signature(self.build)
        return {n: (None if p.default is inspect.Parameter.empty else p.default)
                for n, p in list(sig.parameters.items())[1:]
                if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.build) or "").split("\n")[0]

    def parse(self, pairs: Sequence[str]) -> dict[str, Any]:
        """``["key=value", ...]`` as typed parameters (the type of each default)."""
        known = self.parameters
        out: dict[str, Any] = {}
        for pair in pairs:
            key, sep, text = pair.partition("=")
            key = key.strip()
            if not sep or not key:
                raise StrategyError(f"--param takes key=value, got {pair!r}")
            if key not in known:
                raise StrategyError(
                    f"unknown parameter {key!r} for strategy {self.name}; its parameters are: "
                    + ", ".join(f"{k} (default {v!r})" for k, v in known.items()))
            out[key] = _convert(self.name, key, text.strip(), known[key])
        return out

    def plan(self, market, **params) -> Plan:
        """Build the plan, checking the parameter names and what ``build`` returns."""
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise StrategyError(
                f"unknown parameter(s) {', '.join(unknown)} for strategy {self.name}; its "
                f"parameters are: {', '.join(self.parameters)}")
        made = self.build(market, **params)
        if isinstance(made, Plan):
            return made
        if isinstance(made, Callback):
            return Plan(made)
        if isinstance(made, np.ndarray) or hasattr(made, "columns"):
            shape = (market.n_bars, market.n_symbols)
            if isinstance(made, np.ndarray) and made.shape != shape:
                raise StrategyError(
                    f"strategy {self.name} returned targets of shape {made.shape}; they need "
                    f"one row per bar and one column per symbol: {shape} "
                    f"({', '.join(market.symbols)})")
            return Plan(made, {"target_kind": "equity"})
        raise StrategyError(
            f"strategy {self.name} returned {type(made).__name__}; a strategy returns a Plan, a "
            "Callback, or targets (an array or DataFrame of equity fractions)")


def _convert(name: str, key: str, text: str, default):
    try:
        if isinstance(default, bool):
            if text.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise ValueError
            return text.lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        kind = {bool: "true or false", int: "a whole number", float: "a number"}[type(default)]
        raise StrategyError(
            f"parameter {key} of strategy {name} takes {kind}, got {text!r}") from None
    return None if text.lower() == "none" and default is None else text


def takes_leverage(strategy) -> bool:
    """Whether a strategy function (or a ``StrategyDef``'s build function) has a parameter
    named ``leverage``, which ``run --strategy``, ``compare`` and ``sweep`` fill with the
    run's leverage when it is not set (a ``**kwargs`` catch-all does not count).

    Example:
        >>> takes_leverage(load_strategy("trend")), takes_leverage(lambda market: None)
        (True, False)
    """
    build = strategy.build if isinstance(strategy, StrategyDef) else strategy
    try:
        parameter = inspect.signature(build).parameters.get("leverage")
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD,
                                                        parameter.KEYWORD_ONLY)


def with_run_leverage(strategy, params: Mapping[str, Any], leverage) -> dict[str, Any]:
    """``params`` with ``leverage`` added when the strategy takes a ``leverage`` parameter
    that ``params`` does not set (``leverage`` None: nothing added). A mapping symbol ->
    leverage is passed as a plain dict.

    Example:
        >>> with_run_leverage(load_strategy("trend"), {"fast": 12}, 20.0)
        {'fast': 12, 'leverage': 20.0}
        >>> with_run_leverage(load_strategy("trend"), {"leverage": 3.0}, 20.0)
        {'leverage': 3.0}
    """
    out = dict(params)
    if leverage is not None and "leverage" not in out and takes_leverage(strategy):
        out["leverage"] = dict(leverage) if isinstance(leverage, Mapping) else leverage
    return out


# built-in strategies: name -> "module:attribute" (imported on demand)
BUILTIN_STRATEGIES = {
    "hedged_pair": "strategies.hedged_pair:STRATEGY",
    "funding_carry": "strategies.funding_carry:STRATEGY",
    "trend": "strategies.trend:STRATEGY",
    "margin_aware": "strategies.margin_aware:STRATEGY",
    "grid": "strategies.grid:STRATEGY",
}


def as_strategy_def(obj, name: str, where: str) -> StrategyDef:
    """``obj`` as a ``StrategyDef``: itself, or a function ``build(market, **parameters)``
    wrapped under ``name`` (a compiled callback alone is refused, ``where`` naming it)."""
    if isinstance(obj, StrategyDef):
        return obj
    if callable(obj) and not hasattr(obj, "py_func"):
        return StrategyDef(name, obj)
    raise StrategyError(
        f"{where} is a {type(obj).__name__}; --strategy needs a StrategyDef or a function "
        "build(market, **parameters) returning a Plan, a Callback or targets (an @njit "
        "callback alone does not say its parameters: wrap it in such a function)")


# strategies loaded from files: module name -> file. A worker process of a sweep imports
# them again (``import_strategy_files``) before it unpickles the strategy, which refers to
# its module by that name.
FILE_MODULES: dict[str, str] = {}


def _file_module_name(path: Path) -> str:
    return f"_user_strategy_{re.sub(r'[^0-9a-zA-Z_]', '_', str(path.resolve()))}"


def _exec_file_module(module_name: str, path: Path):
    """Import the file ``path`` as module ``module_name`` (registered in ``sys.modules``:
    numba and dataclasses look modules up by name); a ``StrategyError`` if it fails."""
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        raise StrategyError(f"strategy file {path} failed to import: "
                            f"{type(exc).__name__}: {exc}") from exc
    return module


def import_strategy_files(files: Mapping[str, str]) -> None:
    """Import the strategy files ``files`` (``FILE_MODULES`` of another process) that this
    process has not imported yet."""
    for module_name, path in files.items():
        if module_name not in sys.modules:
            _exec_file_module(module_name, Path(path))
            FILE_MODULES[module_name] = path


def load_strategy(spec: str) -> StrategyDef:
    """A built-in strategy by name, or ``path/to/file.py:NAME`` from a file.

    Example:
        >>> load_strategy("trend").name
        'trend'
    """
    if spec in BUILTIN_STRATEGIES:
        module, attr = BUILTIN_STRATEGIES[spec].split(":")
        return as_strategy_def(getattr(importlib.import_module(module), attr), spec, spec)
    path_text, sep, attr = spec.rpartition(":")
    if not sep or not path_text.endswith(".py"):
        close = difflib.get_close_matches(spec, list(BUILTIN_STRATEGIES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise StrategyError(
            f"unknown strategy {spec!r}{hint}: built-in strategies are "
            f"{', '.join(BUILTIN_STRATEGIES)}, or give path/to/file.py:NAME")
    path = Path(path_text)
    if not path.is_file():
        raise StrategyError(f"strategy file {path} does not exist")
    module_name = _file_module_name(path)
    module = _exec_file_module(module_name, path)
    FILE_MODULES[module_name] = str(path.resolve())
    if not hasattr(module, attr):
        found = sorted(k for k, v in vars(module).items()
                       if not k.startswith("_") and (isinstance(v, StrategyDef) or (
                           inspect.isfunction(v) and v.__module__ == module_name)))
        raise StrategyError(f"strategy file {path} has no {attr!r}; it defines: "
                            f"{', '.join(found) or 'nothing usable'}")
    return as_strategy_def(getattr(module, attr), attr, f"{path}:{attr}")
