"""A sweep's output directory: a parquet dataset written one part per finished chunk.

Layout::

    OUT/part-00001.parquet ...        one summary row per run (read the folder with
                                      pandas.read_parquet(OUT))
    OUT/_equity/part-00001.parquet    per-run equity curves, long form, when asked for
    OUT/_sweep.json                   which market the sweep ran on
    OUT/_corrupt/                     files that could not be read, moved aside by a
                                      sweep with repair=True (their runs ran again)
    OUT/_report.html, _report.md      the report `backtester sweep` writes (heatmaps and
                                      the table of runs; the .md's figures in _report_files/,
                                      the .html's script _plotly.min.js)

Each part is written to a hidden temporary file and then linked under its
final name, and ``_sweep.json`` is replaced by a rename, so an interrupt loses at
most the chunk in flight and never leaves a half-written file. A file broken
otherwise (a disk fault, a copy cut short) is named in the error, which says what to
do. Names starting with ``_`` or ``.`` are skipped by parquet readers, so
``pd.read_parquet(OUT)`` sees the summary rows only.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import write_text
from ..data.market import Market
from ..engine.batch import COUNT_METRICS, FIGURES_VERSION, METRICS
from .grid import OPTION_DEFAULTS, RUN_OPTIONS, Grid, Run

META = "_sweep.json"
EQUITY_DIR = "_equity"
CORRUPT_DIR = "_corrupt"
OPTION_COLUMNS = ("margin_mode", "leverage", "venue", "venue_overrides", "initial_balance",
                  "target_kind", "sizing", "fill_at", "path", "slippage", "reduce_to_fit",
                  "instruments", "spot_fee", "position_mode", "collateral", "stand_in",
                  "order_filters", "window_start", "window_end")
RESERVED = {"run_id", "error", *OPTION_COLUMNS, *METRICS, *RUN_OPTIONS}


def _kind(values: list) -> str:
    """The column type of a parameter from every value the grid gives it."""
    if all(isinstance(v, bool | np.bool_) for v in values):
        return "bool"
    if all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
           for v in values):
        return "int"
    if all(isinstance(v, int | float | np.number) and not isinstance(v, bool | np.bool_)
           for v in values):
        return "float"
    if all(isinstance(v, str) for v in values):
        return "str"
    return "json"


def column_kinds(grid: Grid) -> dict[str, str]:
    """Column name -> bool/int/float/str/json for the parameters and options of the grid.

    Decided once from the whole grid, so that every part of the dataset has the
    same schema (a column of 1 and 1.5 is float in every part).
    """
    kinds = {}
    for name in grid.param_names():
        if name in RESERVED:
            raise ValueError(f"strategy parameter {name!r} has the name of a summary column; "
                             "rename the parameter")
        kinds[name] = _kind(grid.values(name))
    kinds["margin_mode"] = "str" if _kind(grid.values("margin_mode")) == "str" else "json"
    kinds["leverage"] = "float" if _kind(grid.values("leverage")) == "float" else "json"
    kinds["venue"] = "str"
    if any(grid.values("venue_overrides")):
        kinds["venue_overrides"] = "json"
    kinds.update(initial_balance="float", target_kind="str", fill_at="str", path="str",
                 slippage="float", reduce_to_fit="bool")
    # the options of spot legs, hedge mode and collateral, and the sizing of equity
    # fractions: columns only where the grid sets them (a strategy's plan may set them too:
    # the row shows what the run used)
    for name in ("sizing", "instruments", "position_mode", "collateral", "spot_fee",
                 "stand_in", "order_filters"):
        values = grid.values(name)
        if any(v != OPTION_DEFAULTS[name] for v in values):
            kinds[name] = {"spot_fee": "float", "order_filters": "bool"}.get(name) or (
                "str" if _kind(values) == "str" else "json")
    return kinds


def _column(values: list, kind: str):
    if kind == "json":
        return pd.array([json.dumps(v, sort_keys=True, default=str) for v in values],
                        dtype="string")
    if kind == "str":
        return pd.array(values, dtype="string")
    missing = any(v is None for v in values)  # a parameter one grid of a list does not set
    if kind == "bool":
        return pd.array(values, dtype="boolean") if missing else np.array(values, dtype=bool)
    if kind == "int":
        return pd.array(values, dtype="Int64") if missing else np.array(values, dtype=np.int64)
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def summary_frame(runs: list[Run], metrics: np.ndarray, errors: list, kinds: dict,
                  options: list | None = None) -> pd.DataFrame:
    """The summary rows of finished runs: id, parameters, options, metrics, error.

    ``options``: each run's options as it ran (the grid's over its strategy plan's), where
    known; otherwise the grid's."""
    columns: dict = {"run_id": pd.array([r.run_id for r in runs], dtype="string")}
    used = options if options is not None else [None] * len(runs)
    for name, kind in kinds.items():
        if name in RUN_OPTIONS:
            source = [(ran if ran is not None and name in ran else r.options).get(name)
                      for r, ran in zip(runs, used, strict=True)]
            if kind == "float":
                source = [v if isinstance(v, int | float) else None for v in source]
        else:
            source = [r.params.get(name) for r in runs]
        columns[name] = _column(source, kind)
    windows = [r.options["window"] for r in runs]
    position = {w: i for i, w in enumerate(dict.fromkeys(windows))}  # (each converted once)
    where = np.array([position[w] for w in windows], dtype=np.int64)
    for k, end in enumerate(("window_start", "window_end")):
        columns[end] = pd.to_datetime([w[k] for w in position], utc=True).as_unit("ns")[where]
    for j, name in enumerate(METRICS):
        values = metrics[:, j]
        columns[name] = (pd.array(np.where(np.isnan(values), None, values), dtype="Int64")
                         if name in COUNT_METRICS else values)
    columns["error"] = pd.array(errors, dtype="string")
    return pd.DataFrame(columns)


def conform(frame: pd.DataFrame, kinds: dict) -> pd.DataFrame:
    """Rows read back from parquet with the dtypes ``summary_frame`` gives new rows."""
    frame = frame.copy()
    for name in ("run_id", "error", *(n for n, k in kinds.items() if k in ("str", "json"))):
        if name in frame:
            frame[name] = frame[name].astype("string")
    for name in ("window_start", "window_end"):
        if name in frame:
            frame[name] = pd.to_datetime(frame[name], utc=True).dt.as_unit("ns")
    for name in COUNT_METRICS:
        if name in frame:
            frame[name] = frame[name].astype("Int64")
    return frame


def equity_frame(runs: list[Run], curves: list, market: Market, bounds: list) -> pd.DataFrame:
    """Equity curves in long form: run_id, timestamp, equity (runs that failed have none)."""
    ids, stamps, values = [], [], []
    for r, curve, (a, b) in zip(runs, curves, bounds, strict=True):
        if curve is None:
            continue
        ids.append(np.full(len(curve), r.run_id, dtype=object))
        stamps.append(market.index[a:b])
        values.append(curve)
    if not ids:
        return pd.DataFrame({"run_id": pd.array([], dtype="string"),
                             "timestamp": pd.to_datetime([], utc=True), "equity": []})
    return pd.DataFrame({
        "run_id": pd.array(np.concatenate(ids), dtype="string"),
        "timestamp": pd.to_datetime(np.concatenate(stamps), utc=True),
        "equity": np.concatenate(values),
    })


def market_fingerprint(market: Market) -> dict:
    """What identifies the data a sweep ran on (symbols, bars, a hash of prices and times)."""
    digest = hashlib.sha256()
    for array in (market.index, market.close, market.mark_close, market.funding_rate):
        _hash_rows(digest, array)
    first = str(pd.Timestamp(int(market.index[0]), tz="UTC")) if market.n_bars else None
    last = str(pd.Timestamp(int(market.index[-1]), tz="UTC")) if market.n_bars else None
    return {"symbols": list(market.symbols), "bars": market.n_bars, "first": first,
            "last": last, "sha256": digest.hexdigest()[:16]}


def _hash_rows(digest, array: np.ndarray, rows: int = 4096) -> None:
    """Feed ``array``'s bytes in C order to ``digest``, a block of rows at a time: the same
    hash as its whole ``tobytes()``, without a copy of it (an ``absent`` series, a
    broadcast view of one number, would otherwise become a full array here)."""
    if array.size == 0 or array.flags.c_contiguous:
        digest.update(np.ascontiguousarray(array).tobytes() if array.size == 0 else
                      memoryview(np.ascontiguousarray(array)).cast("B"))
        return
    for start in range(0, array.shape[0], rows):
        digest.update(np.ascontiguousarray(array[start:start + rows]).tobytes())


class CorruptSweepFile(ValueError):
    """A file of a sweep's output folder that cannot be read, and what to do about it.

    ``str()`` says it in Python's terms (``repair=True``); ``message("--repair")`` in
    the command line's.
    """

    def __init__(self, path: Path, problem: str, remedy: str):
        self.path, self.problem, self.remedy = Path(path), problem, remedy
        super().__init__(self.message("repair=True"))

    def message(self, repair: str) -> str:
        return f"{self.path} cannot be read ({self.problem}). " + self.remedy.format(
            repair=repair)


def _problem(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _corrupt_part(path: Path, exc: BaseException) -> CorruptSweepFile:
    folder = path.parent.parent if path.parent.name == EQUITY_DIR else path.parent
    return CorruptSweepFile(path, _problem(exc),
                            f"Run the sweep again with {{repair}}: it moves the file to "
                            f"{folder / CORRUPT_DIR}/ and runs the runs it held again")


def _read_part(path: Path, **kwargs) -> pa.Table:
    """A part file as a table; a ``CorruptSweepFile`` naming it if it cannot be read."""
    try:
        return pq.read_table(path, **kwargs)
    except (pa.ArrowException, OSError, KeyError, ValueError) as exc:
        raise _corrupt_part(path, exc) from exc


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("part-*.parquet"))


def _write_part(table: pa.Table, folder: Path, number: int, exact: bool = False) -> int:
    """Write ``table`` as part ``number`` or the next free number (``exact``: that number
    or FileExistsError); returns the number used."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".tmp-{uuid.uuid4().hex}.parquet"
    pq.write_table(table, tmp)
    try:
        while True:
            try:
                os.link(tmp, folder / f"part-{number:05d}.parquet")
                return number
            except FileExistsError:  # another sweep into the same folder took it
                if exact:
                    raise
                number += 1
    finally:
        tmp.unlink()


def _move_aside(path: Path, folder: Path) -> Path:
    """Move a file of the sweep in ``folder`` to ``folder/_corrupt/`` (same relative path)."""
    target = folder / CORRUPT_DIR / path.relative_to(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while target.exists():
        n += 1
        target = target.with_name(f"{path.stem}-{n}{path.suffix}")
    os.replace(path, target)
    return target


def _dedupe(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run id: the last successful one, else the last failure."""
    if frame.empty:
        return frame
    ok = frame["error"].isna().to_numpy()
    order = np.lexsort((np.arange(len(frame)), ok))  # failures first, each in written order
    keep = frame.iloc[order].drop_duplicates("run_id", keep="last")
    return keep.sort_index()


class SweepStore:
    """The output directory of a sweep (see the module docstring).

    ``repair=True`` moves the files that cannot be read to ``_corrupt/`` (a part with
    its equity part, so that its runs run again with their curves) instead of refusing
    them; ``repaired`` lists the files moved.
    """

    def __init__(self, directory: str | Path, market: Market, repair: bool = False):
        self.folder = Path(directory)
        self.repaired: list[Path] = []
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"sweep output {self.folder} is a file; give a directory")
        self.folder.mkdir(parents=True, exist_ok=True)
        fingerprint = market_fingerprint(market)
        meta = self.folder / META
        saved = self._read_meta(meta, repair)
        if saved is not None:
            if saved.get("market") != fingerprint:
                raise ValueError(
                    f"{self.folder} holds a sweep on other market data ({saved.get('market')}); "
                    f"this market is {fingerprint}. Resume with the same data, or give another "
                    "output directory"
                )
            self._check_figures(saved)
        elif _parts(self.folder) and not self.repaired:
            raise ValueError(f"{self.folder} holds parquet parts but no {META}: not a sweep "
                             "output; give another output directory")
        else:
            self._check_figures({})  # (parts left after a repair moved _sweep.json aside)
            write_text(meta, json.dumps({"market": fingerprint, "metrics": list(METRICS),
                                         "figures_version": FIGURES_VERSION}, indent=2))
        if repair:
            self._repair()
        self._next = len(_parts(self.folder)) + 1

    def _check_figures(self, saved: dict) -> None:
        """A folder written by a version of backtester whose runs report other figures is
        not resumed: its rows and the new ones would mix two engines' results."""
        version = saved.get("figures_version")
        if version is not None and version != FIGURES_VERSION:
            raise ValueError(
                f"{self.folder} holds a sweep written by another version of backtester, whose "
                f"rules give other figures (figures version {version}; this one's is "
                f"{FIGURES_VERSION}): resuming it would mix the two versions' results. Give "
                "another output directory, or move this one away")
        metrics = saved.get("metrics")
        if metrics is None:  # (written before the figures were recorded: a part's columns)
            parts = _parts(self.folder)
            try:
                names = set(pq.read_schema(parts[0]).names) if parts else set(METRICS)
            except (pa.ArrowException, OSError, ValueError):
                return  # (an unreadable part is named, with what to do, when it is read)
            missing = [m for m in METRICS if m not in names]
            if not missing:
                return
        elif list(metrics) == list(METRICS):
            return
        else:
            missing = [m for m in METRICS if m not in metrics]
        what = f"it lacks {', '.join(missing)}" if missing else "in another order"
        raise ValueError(
            f"{self.folder} holds a sweep written by another version of backtester, whose runs "
            f"report other figures ({what}): resuming it would mix the two versions' results. "
            "Give another output directory, or move this one away")

    def _read_meta(self, meta: Path, repair: bool) -> dict | None:
        """What ``_sweep.json`` says; None if there is none (or a corrupt one moved aside)."""
        if not meta.exists():
            return None
        try:
            saved = json.loads(meta.read_text())
            if not isinstance(saved, dict):
                raise ValueError(f"a JSON object was expected, found {type(saved).__name__}")
            return saved
        except (ValueError, UnicodeDecodeError) as exc:
            if not repair:
                raise CorruptSweepFile(
                    meta, _problem(exc),
                    f"It records which market data the sweep ran on. If the parts in "
                    f"{self.folder} were run on this data, run the sweep again with {{repair}}: "
                    f"the file is moved to {self.folder / CORRUPT_DIR}/ and written anew; "
                    "otherwise give another output folder") from exc
        self.repaired.append(_move_aside(meta, self.folder))
        return None

    def _repair(self) -> None:
        """Read every part whole; move those that cannot be read (and their pairs) aside."""
        equity_dir = self.folder / EQUITY_DIR
        bad = set()
        for part in _parts(self.folder) + _parts(equity_dir):
            try:
                _read_part(part)
            except CorruptSweepFile:
                bad.add(part.name)  # the summary part and the equity part of one chunk
        for name in sorted(bad):
            for part in (self.folder / name, equity_dir / name):
                if part.exists():
                    self.repaired.append(_move_aside(part, self.folder))

    def done_ids(self, retry_failed: bool = False) -> set[str]:
        """Ids of the runs already in the dataset (successful ones only if ``retry_failed``)."""
        done: set[str] = set()
        for part in _parts(self.folder):
            table = _read_part(part, columns=["run_id", "error"])
            ids = table.column("run_id").to_pylist()
            if retry_failed:
                errors = table.column("error").to_pylist()
                ids = [i for i, e in zip(ids, errors, strict=True) if e is None]
            done.update(ids)
        return done

    def write(self, summary: pd.DataFrame, equity: pd.DataFrame | None = None) -> Path:
        """Append one finished chunk (and its equity curves) as new part files, the two
        under one number."""
        number = self._next
        rows = pa.Table.from_pandas(summary, preserve_index=False)
        while True:
            if equity is not None:
                number = _write_part(pa.Table.from_pandas(equity, preserve_index=False),
                                     self.folder / EQUITY_DIR, number)
            try:
                number = _write_part(rows, self.folder, number, exact=equity is not None)
                break
            except FileExistsError:  # another sweep took the number in the summary only
                (self.folder / EQUITY_DIR / f"part-{number:05d}.parquet").unlink()
                number += 1
        self._next = number + 1
        return self.folder / f"part-{number:05d}.parquet"

    def read(self) -> pd.DataFrame:
        """Every run in the dataset, one row each (a retried failure shows its success)."""
        return read_sweep(self.folder)


def read_sweep(directory: str | Path) -> pd.DataFrame:
    """The summary rows of a sweep's output directory, one per run, in the order written.

    Parts written by different grids may hold different columns; missing ones are NA.

    Example:
        >>> import tempfile
        >>> from backtester import load_market, sweep
        >>> from strategies import hedged_pair
        >>> out = tempfile.mkdtemp()
        >>> _ = sweep(load_market().slice(0, 500), hedged_pair, {"leverage": [2, 5]}, out=out,
        ...           target_kind="equity")
        >>> len(read_sweep(out))
        2
    """
    parts = _parts(Path(directory))
    if not parts:
        return pd.DataFrame()
    frames = [_read_part(p).to_pandas() for p in parts]
    return _dedupe(pd.concat(frames, ignore_index=True)).reset_index(drop=True)


def read_equity(directory: str | Path, run_ids=None) -> pd.DataFrame:
    """Equity curves saved by ``sweep(..., equity=True)``: one column per run id, by timestamp.

    ``run_ids`` picks some runs (default all); runs over different windows hold
    NaN outside their own bars.
    """
    folder = Path(directory) / EQUITY_DIR
    parts = _parts(folder)
    if not parts:
        raise FileNotFoundError(f"{folder} holds no equity curves: run the sweep with "
                                "equity=True (--equity on the command line)")
    filters = None if run_ids is None else [("run_id", "in", list(run_ids))]
    frame = pd.concat([_read_part(p, filters=filters).to_pandas() for p in parts],
                      ignore_index=True)
    frame = frame.drop_duplicates(["run_id", "timestamp"], keep="last")
    wide = frame.pivot(index="timestamp", columns="run_id", values="equity")
    if run_ids is not None:
        wide = wide.reindex(columns=list(run_ids))
    wide.columns.name = None
    return wide
