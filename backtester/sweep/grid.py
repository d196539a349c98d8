"""The grid of a sweep: which runs it holds, in which order, and each run's stable id.

A grid is a mapping from names to values. The names of run options
(``RUN_OPTIONS``: margin_mode, leverage, venue, window...) set how a run is
simulated; every other name is a keyword argument of the strategy function. A
list is swept (every value is tried); any other value is fixed. A list of
grids is the union of their runs. Runs come out in a fixed order: data window
and venue outermost (runs that share them share one compiled batch call), then
the strategy parameters, then the other options, each in the order given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import itertools
import json
import math
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import RunConfig, choice
from ..engine.enums import SIZING_NAMES
from ..strategy import StrategyDef

# the run options a grid may set (every field of RunConfig but the record options, and the
# data window); every other name is a strategy parameter
RUN_OPTIONS = (
    "window", "venue", "venue_overrides", "margin_mode", "leverage", "initial_balance",
    "target_kind", "sizing", "fill_at", "path", "slippage", "reduce_to_fit", "instruments",
    "spot_fee", "position_mode", "collateral", "stand_in", "order_filters",
)
# options that select the batch (outermost): they change the venue's inputs to the kernel
_OUTER = ("window", "venue", "venue_overrides", "stand_in", "order_filters")
_DEFAULTS = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
             for f in dataclasses.fields(RunConfig)}
OPTION_DEFAULTS = {name: _DEFAULTS.get(name) for name in RUN_OPTIONS}  # window None: all bars
CONFIG_FIELDS = frozenset(_DEFAULTS)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its id, the strategy's keyword arguments and every run option.

    ``options`` holds every run option; ``given`` names those the grid (or the sweep's
    fixed options) set: the others are ``run()``'s defaults, which the options of a
    strategy's ``Plan`` override (as keyword options of ``run()`` override the plan's).
    ``keys`` holds each parameter's and option's canonical JSON text (what the id
    hashes), which the runner uses to share work between runs with equal values.
    """

    run_id: str
    params: dict
    options: dict
    keys: dict = dataclasses.field(default_factory=dict, compare=False, repr=False)
    given: frozenset = dataclasses.field(default_factory=frozenset, compare=False, repr=False)

    def config(self, plan_options: Mapping | None = None, **fixed) -> RunConfig:
        """The run's ``RunConfig``: ``fixed`` over the options given, over the strategy
        plan's, over ``run()``'s defaults."""
        fields = {**(plan_options or {}), **{k: self.options[k] for k in self.given
                                              if k != "window"}, **fixed}
        unknown = sorted(set(fields) - CONFIG_FIELDS)
        if unknown:
            raise TypeError(f"unknown run option(s) {', '.join(unknown)}; valid options: "
                            f"{', '.join(sorted(CONFIG_FIELDS))}")
        return RunConfig(**fields)

    def key(self, tag: str) -> str:
        """The canonical text of parameter ``p:NAME`` or option ``o:NAME``."""
        if tag not in self.keys:
            kind, name = tag.split(":", 1)
            self.keys[tag] = value_key((self.params if kind == "p" else self.options)[name])
        return self.keys[tag]

    def params_key(self) -> str:
        """One text for the whole parameter set (runs with equal parameters trade alike)."""
        return "\n".join(f"{name}={self.key(f'p:{name}')}" for name in sorted(self.params))


# --- values ------------------------------------------------------------------------------


def _window(value) -> tuple[str | None, str | None]:
    """A data window as (start, end) ISO UTC strings; None = that end of the market."""
    if value is None:
        return (None, None)
    if isinstance(value, str) or not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(
            f"a window is a pair [start, end] (start included, end excluded; empty or None "
            f"for an open end), e.g. ['2023-01-01', '2024-01-01']; got {value!r}"
        )
    ends = []
    for end in value:
        if end is None or end == "":
            ends.append(None)
            continue
        try:
            ts = pd.Timestamp(end)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"window {value!r}: {end!r} is not a time ({exc})") from None
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        ends.append(ts.isoformat())
    if ends[0] is not None and ends[1] is not None and ends[0] >= ends[1]:
        raise ValueError(f"window {value!r} ends before it starts")
    return (ends[0], ends[1])


def _is_single_window(value) -> bool:
    """(start, end) and [start, end] are one window; [[start, end], ...] a list of them."""
    if isinstance(value, tuple):
        return True
    return (isinstance(value, list) and len(value) == 2
            and all(v is None or isinstance(v, str | pd.Timestamp | np.datetime64) for v in value))


def _option(name: str, value):
    """A run option in its normal form (the form ids are computed from). Checked where every
    run option is checked, ``RunConfig.check``, with the same messages as ``run()``."""
    if name == "window":
        return _window(value)
    if name == "venue" and not isinstance(value, str | Path):  # (a run id needs a name)
        raise ValueError(f"venue in a sweep is a built-in venue name or the path of a "
                         f".toml venue file, got {type(value).__name__}")
    if name == "sizing":  # alone: whether it fits target_kind is the run's check
        choice("sizing", value, SIZING_NAMES)
        return value
    dataclasses.replace(RunConfig(), **{name: value}).check()
    if name in ("initial_balance", "slippage", "spot_fee"):
        return float(value)
    if name == "leverage":
        if isinstance(value, Mapping):
            return {str(k): float(v) for k, v in sorted(value.items())}
        return float(value)
    if name in ("margin_mode", "position_mode"):
        return dict(sorted(value.items())) if isinstance(value, Mapping) else value
    if name in ("target_kind", "fill_at", "path"):
        return value
    if name in ("reduce_to_fit", "order_filters"):
        return bool(value)
    if name == "stand_in":
        return {str(k): str(v) for k, v in sorted(value.items())}
    if name == "instruments":
        return {str(k): v for k, v in sorted(value.items())}
    if name == "collateral":
        return {str(k).upper(): float(v) for k, v in sorted(value.items())}
    if name == "venue":
        return str(value)
    if name == "venue_overrides":
        return {str(k): float(v) for k, v in sorted(value.items())}
    raise AssertionError(name)


def canonical(value) -> Any:
    """``value`` as plain JSON data, numbers as floats (24 and 24.0 are the same run)."""
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return float(value)
    if isinstance(value, str | type(None)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, Sequence | np.ndarray):
        return [canonical(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return repr(value)


def strategy_name(strategy: Callable) -> str:
    """``module:qualname`` of a strategy function (of a ``StrategyDef``'s build function):
    part of every run id."""
    if isinstance(strategy, StrategyDef):
        strategy = strategy.build
    return f"{getattr(strategy, '__module__', '?')}:{getattr(strategy, '__qualname__', strategy)}"


def run_id(strategy: str, params: Mapping, options: Mapping) -> str:
    """A stable id of a run: a hash of the strategy's name, its parameters and its options.

    Example:
        >>> a = run_id("strategies.hedged_pair:hedged_pair", {"rebalance_every": 24}, {})
        >>> a == run_id("strategies.hedged_pair:hedged_pair", {"rebalance_every": 24.0}, {})
        True
    """
    entries = {f"p:{k}": value_key(v) for k, v in params.items()}
    entries.update({f"o:{k}": value_key(v) for k, v in options.items()})
    return _hash(strategy, entries)


def value_key(value) -> str:
    """The canonical JSON text of one value (numbers as floats, mappings sorted)."""
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"))


# options added after sweeps were first saved, with the text of their default: an id leaves
# such an option out while it holds its default, so that every run of an earlier sweep keeps
# its id (and a rerun into that sweep's folder resumes it instead of running it again)
_LATER_OPTIONS = {"o:sizing": value_key("exposure")}


def _hash(strategy: str, entries: Mapping[str, str]) -> str:
    text = "\n".join([strategy] + [f"{name}={entries[name]}" for name in sorted(entries)
                                    if _LATER_OPTIONS.get(name) != entries[name]])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


# --- the grid -----------------------------------------------------------------------------


class Grid:
    """The runs of a sweep, expanded lazily (a 100,000-run grid is a few small lists).

    ``spec`` is a mapping name -> value or list of values, or a list of such
    mappings (their union); ``defaults`` are fixed run options under the grid.
    Only a list is swept: a tuple, a mapping or a scalar is one fixed value.

    Example:
        >>> g = Grid({"exposure": [1.0, 2.0], "margin_mode": ["cross", "isolated"]},
        ...          strategy="strategies:hedged_pair")
        >>> len(g), [r.params["exposure"] for r in g]
        (4, [1.0, 1.0, 2.0, 2.0])
    """

    def __init__(self, spec: Mapping | Sequence[Mapping], *, strategy: str,
                 defaults: Mapping | None = None):
        specs = [spec] if isinstance(spec, Mapping) else list(spec)
        if not specs or not all(isinstance(s, Mapping) for s in specs):
            raise ValueError("a grid is a mapping of names to values (a list is swept), or a "
                             "list of such mappings")
        defaults = dict(defaults or {})
        unknown = sorted(set(defaults) - set(RUN_OPTIONS))
        if unknown:
            raise ValueError(f"unknown run option(s) {', '.join(unknown)}; run options are "
                             f"{', '.join(RUN_OPTIONS)} (strategy parameters go in the grid)")
        self.strategy = strategy
        self._parts = [self._part({**defaults, **s}) for s in specs]

    @staticmethod
    def _part(spec: Mapping) -> list[tuple[str, bool, list]]:
        axes = {}
        for name, value in spec.items():
            name = str(name)
            if name == "window":
                values = [value] if value is None or _is_single_window(value) else value
            else:
                values = value if isinstance(value, list) else [value]
            if not values:
                raise ValueError(f"grid entry {name!r} is an empty list: nothing to run")
            is_option = name in RUN_OPTIONS
            if is_option:
                values = [_option(name, v) for v in values]
            axes[name] = (is_option, values)
        given = frozenset(n for n in axes if n in RUN_OPTIONS)
        for name in RUN_OPTIONS:
            if name not in axes:
                axes[name] = (True, [_option(name, OPTION_DEFAULTS[name])])
        outer = list(_OUTER)
        params = [n for n, (opt, _) in axes.items() if not opt]
        inner = [n for n in axes if n in RUN_OPTIONS and n not in _OUTER]
        return [(n, axes[n][0], axes[n][1], n in given) for n in outer + params + inner]

    def __len__(self) -> int:
        return sum(math.prod(len(values) for _, _, values, _ in part) for part in self._parts)

    def __iter__(self) -> Iterator[Run]:
        return self._walk(True)

    def run_ids(self) -> Iterator[str]:
        """The runs' ids, in grid order, without the runs (a sweep's first pass over a grid:
        which runs are there, and in what order)."""
        return self._walk(False)

    def runs(self, ids: Iterable[str]) -> Iterator[Run]:
        """The runs, in grid order, given their ids from ``run_ids`` (not hashed again)."""
        return self._walk(True, iter(ids))

    def _walk(self, make_runs: bool, ids: Iterator[str] | None = None):
        for part in self._parts:
            names = [n for n, _, _, _ in part]
            tags = [f"{'o' if opt else 'p'}:{n}" for n, opt, _, _ in part]
            is_option = [o for _, o, _, _ in part]
            given = frozenset(n for n, _, _, g in part if g)
            # each value's JSON text once, not once per run: ids of 100,000 runs stay cheap
            axes = [list(zip(values, map(value_key, values), strict=True))
                    for _, _, values, _ in part]
            # the id's text, line by line in the order of the sorted tags (_hash), each line
            # made once per value; the axes of one value fixed once: a run then costs three
            # dict copies, the lines of its swept axes, one join and one sha256
            place = {j: k + 1 for k, j in enumerate(sorted(range(len(tags)),
                                                           key=tags.__getitem__))}
            lines = [["" if _LATER_OPTIONS.get(tags[j]) == key else f"{tags[j]}={key}"
                      for _, key in axes[j]] for j in range(len(tags))]
            base_params = {n: axes[j][0][0] for j, n in enumerate(names) if not is_option[j]}
            base_options = {n: axes[j][0][0] for j, n in enumerate(names) if is_option[j]}
            base_keys = {tag: axes[j][0][1] for j, tag in enumerate(tags)}
            base_text = [self.strategy] + [""] * len(tags)
            for j in range(len(tags)):
                base_text[place[j]] = lines[j][0]
            swept = [j for j in range(len(axes)) if len(axes[j]) > 1]
            for combo in itertools.product(*(range(len(axes[j])) for j in swept)):
                if ids is not None:  # (the ids of a first pass)
                    digest = next(ids)
                else:
                    text = base_text.copy()
                    for j, c in zip(swept, combo, strict=True):
                        text[place[j]] = lines[j][c]
                    digest = hashlib.sha256("\n".join(filter(None, text)).encode()
                                            ).hexdigest()[:20]
                if not make_runs:  # (the id alone)
                    yield digest
                    continue
                params, options, keys = base_params.copy(), base_options.copy(), base_keys.copy()
                for j, c in zip(swept, combo, strict=True):
                    value, key = axes[j][c]
                    (options if is_option[j] else params)[names[j]] = value
                    keys[tags[j]] = key
                yield Run(digest, params, options, keys, given)

    def param_names(self) -> list[str]:
        """The strategy parameters the grid sets, in order of first appearance."""
        names: dict[str, None] = {}
        for part in self._parts:
            names.update({n: None for n, opt, _, _ in part if not opt})
        return list(names)

    def values(self, name: str) -> list:
        """Every value the grid gives ``name`` (a strategy parameter or run option)."""
        out = []
        for part in self._parts:
            for n, _, values, _ in part:
                if n == name:
                    out.extend(values)
        return out

    def check_strategy(self, strategy: Callable) -> None:
        """A clear error when the grid names a parameter the strategy does not take."""
        if isinstance(strategy, StrategyDef):
            strategy = strategy.build
        try:
            signature = inspect.signature(strategy)
        except (TypeError, ValueError):
            return
        kinds = {p.kind for p in signature.parameters.values()}
        if inspect.Parameter.VAR_KEYWORD in kinds:
            return
        accepted = [n for i, n in enumerate(signature.parameters) if i > 0]
        unknown = [n for n in self.param_names() if n not in accepted]
        if unknown:
            raise ValueError(
                f"{strategy_name(strategy)} takes no parameter {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join(accepted) or 'only the market'}, and the run options are "
                f"{', '.join(RUN_OPTIONS)}"
            )


def load_grid(path: str | Path) -> dict:
    """Read a grid from a TOML file: each key a strategy parameter or run option.

    A list is swept, any other value fixed; a window is ``["start", "end"]``
    ("" for an open end) and several are a list of those::

        margin_mode = ["cross", "isolated"]
        leverage = [2, 5, 10]
        exposure = [0.5, 1.0, 2.0]
        window = [["2023-01-01", "2024-01-01"], ["2024-01-01", ""]]
        target_kind = "equity"
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    if not data:
        raise ValueError(f"{path}: the grid is empty; give at least one name = [values]")
    return data
