"""Sweeps survive faults: a run that kills its worker or runs past its time limit fails alone,
workers die with their sweep, and unreadable files of an output folder are named and can be
repaired without losing or mixing anything."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
from fault_strategies import buffered_log, calls, misbehaving, noting_pid, pids

from backtester import load_market
from backtester.cli import main
from backtester.sweep import (
    isolation,
    read_equity,
    read_sweep,
    stop_kept_workers,
    sweep,
    workers,
)
from backtester.sweep.storage import CorruptSweepFile
from strategies import hedged_pair

pytestmark = pytest.mark.filterwarnings("ignore:binance_usdm has no")

METRIC_COLUMNS = ["final_equity", "total_return", "sharpe", "max_drawdown", "fees_paid",
                  "funding_paid", "worst_margin_ratio", "liquidations"]


@pytest.fixture(scope="module")
def market():
    """Two weeks of the embedded data: 336 hourly bars, BTC_USDT and ETH_USDT."""
    return load_market(start="2024-01-01", end="2024-01-15")


def faulty_grid(log: str, faults=("exit", "hang")) -> list[dict]:
    """Two well-behaved runs and one run per fault, all four in one chunk of 4."""
    return [{"fault": "none", "exposure": [1.0, 2.0], "log": log},
            {"fault": list(faults), "exposure": 1.0, "log": log}]


def calm_rows(market, log: str) -> pd.DataFrame:
    """The well-behaved runs of ``faulty_grid`` in an undisturbed in-process sweep."""
    return sweep(market, misbehaving, faulty_grid(log)[:1], target_kind="equity")


def row(table: pd.DataFrame, fault: str, exposure: float = 1.0) -> pd.Series:
    (found,) = table.index[(table["fault"] == fault) & (table["exposure"] == exposure)]
    return table.loc[found]


# --- a run that crashes or hangs ----------------------------------------------------------------


START_METHODS = pytest.mark.parametrize("start_method", ["fork", "spawn"])


@START_METHODS
def test_runs_that_kill_or_hang_their_worker_fail_alone_and_are_not_retried(market, tmp_path,
                                                                           start_method):
    log, out = str(tmp_path / "calls.txt"), tmp_path / "out"
    options = dict(backend="processes", workers=2, chunk_size=4, run_timeout=2,
                   target_kind="equity", out=out, start_method=start_method)
    table = sweep(market, misbehaving, faulty_grid(log), **options)

    assert row(table, "exit")["error"] == (
        "WorkerCrash: the worker process died while running this run (exit code 3)")
    assert row(table, "hang")["error"] == (
        "Timeout: the run took longer than the time limit (run_timeout=2 s); its worker "
        "process was stopped")
    assert table[table["error"].notna()][METRIC_COLUMNS].isna().all().all()
    # only the culprits failed: the other runs of their chunk are as in an undisturbed sweep
    pd.testing.assert_frame_equal(table[table["fault"] == "none"].reset_index(drop=True),
                                  calm_rows(market, log))
    assert len(list(out.glob("part-*.parquet"))) == 1  # the chunk's rows, written once

    before = calls(log)
    again = sweep(market, misbehaving, faulty_grid(log), **options)
    assert calls(log) == before  # a failed run is done: not run again
    pd.testing.assert_frame_equal(again, table)

    Path(log + ".healed").touch()
    retried = sweep(market, misbehaving, faulty_grid(log), retry_failed=True, **options)
    assert sorted(calls(log)[len(before):]) == ["exit 1", "hang 1"]
    assert retried["error"].isna().all()
    for fault in ("exit", "hang"):  # healed, each is the hedged pair at exposure 1
        pd.testing.assert_series_equal(row(retried, fault)[METRIC_COLUMNS],
                                       row(table, "none")[METRIC_COLUMNS], check_names=False)
    assert len(read_sweep(out)) == 4


@START_METHODS
def test_workers_run_their_exit_functions_when_the_sweep_ends(market, tmp_path, start_method):
    # a worker ends without tearing its interpreter down, but after its atexit functions:
    # a strategy's log file, buffered and closed at exit, holds every call. (A forked
    # worker that kept a copy of the other's input pipe would keep it from seeing its input
    # end: killed after the grace time, it would lose its lines.)
    log = str(tmp_path / "calls.log")
    exposures = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    table = sweep(market, buffered_log, {"exposure": exposures, "log": log},
                  backend="processes", workers=2, chunk_size=2, target_kind="equity",
                  start_method=start_method)
    assert table["error"].isna().all()
    lines = Path(log).read_text().splitlines()
    assert sorted(float(line.split()[1]) for line in lines) == exposures


@START_METHODS
def test_kept_workers_serve_the_next_sweep_of_another_market_and_stop_when_asked(market,
                                                                                  tmp_path,
                                                                                  start_method):
    # the second sweep runs in the processes the first kept (a worker still starting when
    # its sweep ended too), starts none, and gives on its own market the rows an in-process
    # sweep gives; stop_kept_workers ends them
    grid = {"exposure": [1.0, 2.0, 3.0, 4.0], "target_kind": "equity"}
    other = market.slice(0, 100)
    options = dict(backend="processes", workers=2, chunk_size=1, keep_workers=True,
                   start_method=start_method)

    def kept() -> set[int]:
        return {w.process.pid for w in isolation._KEPT}

    try:
        first_log, second_log = str(tmp_path / "first"), str(tmp_path / "second")
        first = sweep(market, noting_pid, {**grid, "log": first_log}, **options)
        workers = kept()
        assert len(workers) == 2 and pids(first_log) <= workers
        assert all(map(_alive, workers))  # still running after their sweep
        second = sweep(other, noting_pid, {**grid, "log": second_log}, **options)
        assert pids(second_log) <= workers and kept() == workers
        for table, data, log in ((first, market, first_log), (second, other, second_log)):
            expected = sweep(data, noting_pid, {**grid, "log": log})
            assert table.equals(expected)
    finally:
        assert stop_kept_workers() == 2
    assert not any(map(_alive, workers)) and not kept()
    assert stop_kept_workers() == 0
    with pytest.raises(ValueError, match="keep_workers keeps the worker processes"):
        sweep(market, noting_pid, {**grid, "log": first_log}, keep_workers=True)


def test_a_forked_worker_runs_a_strategy_that_cannot_be_pickled(market):
    # a closure (as a notebook's strategy is to a new process): a fork has it already; a
    # spawned worker would need it pickled, and the sweep says so before anything runs
    def closure(market, exposure=1.0):
        return hedged_pair(market, exposure=exposure)

    grid = {"exposure": [1.0, 2.0], "target_kind": "equity"}
    table = sweep(market, closure, grid, backend="processes", workers=2, chunk_size=1,
                  start_method="fork")
    assert table.drop(columns="run_id").equals(sweep(market, closure, grid)
                                               .drop(columns="run_id"))
    with pytest.raises(ValueError, match="cannot be sent to worker processes"):
        sweep(market, closure, grid, backend="processes", start_method="spawn")


def test_a_forked_worker_leaves_its_parents_exit_functions_to_the_parent(market, tmp_path):
    # this process's exit functions (its files, its kept workers) are not run by its forks
    # when they end; the strategy's own are (test_workers_run_their_exit_functions_...)
    marker = tmp_path / "exited"

    def note_exit() -> None:
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")

    import atexit

    atexit.register(note_exit)
    try:
        table = sweep(market, hedged_pair, {"exposure": [1.0, 2.0], "target_kind": "equity"},
                      backend="processes", workers=2, chunk_size=1, start_method="fork")
    finally:
        atexit.unregister(note_exit)
    assert table["error"].isna().all()
    assert not marker.exists()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads open files from /proc")
def test_a_forked_worker_holds_no_pipe_of_another_worker(market):
    # a fork inherits this process's ends of the earlier workers' pipes: a copy kept would
    # keep such a worker from seeing its input end when it is asked to stop (it would be
    # killed after the grace time, its exit functions not run)
    def pipes(pid: int) -> set[str]:
        return {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}

    grid = {"exposure": [1.0, 2.0, 3.0, 4.0], "target_kind": "equity"}
    try:
        sweep(market, hedged_pair, grid, backend="processes", workers=2, chunk_size=1,
              keep_workers=True, start_method="fork")
        kept = list(isolation._KEPT)
        assert len(kept) == 2 and all(w.forked for w in kept)
        for worker in kept:
            ends = {f"pipe:[{os.fstat(c.fileno()).st_ino}]" for c in (worker.inbox,
                                                                     worker.outbox)}
            assert ends <= pipes(worker.process.pid)  # its own
            for other in kept:
                if other is not worker:
                    assert not ends & pipes(other.process.pid)
    finally:
        stop_kept_workers()


def test_an_in_process_sweep_leaves_the_next_pool_free_to_fork():
    # it runs the one-thread batch on Python threads: numba's own threads (GNU OpenMP's,
    # which a fork breaks) are not started, not even to count them
    root = Path(__file__).resolve().parents[1]
    script = ("import sys, warnings\n"
              f"sys.path[:0] = [{str(root)!r}]\n"
              "warnings.simplefilter('ignore')\n"
              "from backtester import load_market\n"
              "from backtester.sweep import sweep, workers\n"
              "from strategies import hedged_pair\n"
              "sweep(load_market().slice(0, 200), hedged_pair, {'exposure': [1.0, 2.0]})\n"
              "print(workers.fork_is_safe())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "True"


def test_workers_are_forked_only_while_no_other_thread_runs(market):
    # a lock another thread holds at the fork would stay held in the worker: with a thread
    # running, the default start is a new process (which a closure cannot be sent to)
    import threading

    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert not workers.fork_is_safe()

        def closure(market, exposure=1.0):
            return hedged_pair(market, exposure=exposure)

        with pytest.raises(ValueError, match="cannot be sent to worker processes"):
            sweep(market, closure, {"exposure": [1.0]}, backend="processes")
    finally:
        stop.set()
        thread.join()


def test_the_dask_backend_isolates_runs_too(market, tmp_path):
    distributed = pytest.importorskip("distributed")
    log = str(tmp_path / "calls.txt")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        table = sweep(market, misbehaving, faulty_grid(log, ("segfault", "hang")), client=client,
                      chunk_size=4, run_timeout=2, target_kind="equity")
    assert row(table, "segfault")["error"] == (
        "WorkerCrash: the worker process died while running this run (exit code -11: SIGSEGV, "
        "a segmentation fault)")
    assert row(table, "hang")["error"].startswith("Timeout: ")
    pd.testing.assert_frame_equal(table[table["fault"] == "none"].reset_index(drop=True),
                                  calm_rows(market, log))


@START_METHODS
def test_a_strategy_file_runs_in_worker_processes_from_the_command_line(tmp_path, capsys,
                                                                        start_method):
    # --strategy path.py:NAME is imported under a name of its own, which a new process cannot
    # import by itself: spawned workers import the file before they unpickle the strategy
    (tmp_path / "my_pair.py").write_text(
        "import os\n"
        "from strategies import hedged_pair\n\n\n"
        "def my_pair(market, exposure=1.0):\n"
        "    if exposure == 2.0:\n"
        "        os._exit(9)\n"
        "    return hedged_pair(market, exposure=exposure)\n")
    out = tmp_path / "out"
    args = ["sweep", "--strategy", f"{tmp_path / 'my_pair.py'}:my_pair", "-p", "exposure=1,2",
            "-p", "leverage=5", "--start", "2024-01-01", "--end", "2024-01-08", "--backend",
            "processes", "--workers", "1", "--out", str(out), "--no-progress",
            "--start-method", start_method]
    assert main(args) == 0
    assert "2 runs, 1 failed" in capsys.readouterr().out
    table = read_sweep(out).set_index("exposure")
    assert table.loc[2, "error"] == ("WorkerCrash: the worker process died while running this "
                                     "run (exit code 9)")
    assert pd.isna(table.loc[1, "error"]) and table.loc[1, "final_equity"] > 0


def test_a_time_limit_needs_a_backend_that_can_stop_a_run(market, tmp_path, capsys):
    with pytest.raises(ValueError, match="backend='processes' or 'dask'"):
        sweep(market, hedged_pair, {"exposure": [1.0]}, run_timeout=5)
    with pytest.raises(ValueError, match="run_timeout is a number of seconds"):
        sweep(market, hedged_pair, {"exposure": [1.0]}, backend="processes", run_timeout=0)
    assert main(["sweep", "--run-timeout", "5", "--out", str(tmp_path)]) == 2
    assert "--run-timeout needs --backend processes" in capsys.readouterr().err


def test_a_start_method_is_one_the_processes_backend_has(market, tmp_path, capsys):
    with pytest.raises(ValueError, match="start_method is one of 'fork', 'spawn'"):
        sweep(market, hedged_pair, {"exposure": [1.0]}, backend="processes",
              start_method="forkserver")
    with pytest.raises(ValueError, match="the 'inprocess' backend starts none"):
        sweep(market, hedged_pair, {"exposure": [1.0]}, start_method="fork")
    assert main(["sweep", "--start-method", "spawn", "--out", str(tmp_path)]) == 2
    assert ("--start-method chooses how --backend processes starts its workers; --backend "
            "inprocess starts none") in capsys.readouterr().err


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"  # a zombie is dead, only not yet reaped


def _command(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _is_worker(pid: int) -> bool:
    """A sweep worker: spawned (``python -c BOOT``, whose command names child_main) or forked
    (the command of its sweep, the name sweep-worker)."""
    try:
        name = Path(f"/proc/{pid}/comm").read_bytes().strip()
    except OSError:
        name = b""
    return b"child_main" in _command(pid) or name == workers.FORKED_NAME


def _workers_of(pid: int) -> list[int]:
    """The sweep worker processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if parent == pid and _is_worker(int(entry.name)):
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@START_METHODS
def test_workers_die_when_their_sweep_is_killed(tmp_path, start_method):
    tests = Path(__file__).resolve().parent
    log = str(tmp_path / "calls.txt")
    script = (f"import sys; sys.path[:0] = [{str(tests)!r}, {str(tests.parent)!r}]\n"
              "from backtester import load_market, sweep\n"
              "from fault_strategies import misbehaving\n"
              "sweep(load_market().slice(0, 100), misbehaving, {'fault': 'hang', "
              f"'exposure': [1.0, 2.0], 'log': {log!r}}}, backend='processes', workers=2, "
              f"chunk_size=1, start_method={start_method!r})\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=tmp_path)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while len(calls(log)) < 2 and time.monotonic() < deadline and parent.poll() is None:
            time.sleep(0.1)
        assert len(calls(log)) == 2, "the sweep's two workers did not start their runs"
        workers = _workers_of(parent.pid)  # each inside a strategy that never returns
        assert len(workers) == 2
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 10
        while any(map(_alive, workers)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "a worker outlived its sweep"
    finally:  # whatever happened, leave no process behind
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for pid in set(workers) | set(_workers_of(parent.pid)):
            if _alive(pid) and _is_worker(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_worker_watches_its_parent_where_there_is_no_pdeathsig(tmp_path):
    marker = tmp_path / "watching"
    root = str(Path(__file__).resolve().parents[1])
    child = ("import os, sys, time\n"
             f"sys.path[:0] = [{root!r}]\n"
             "from backtester.sweep import workers\n"
             "def no_prctl(*args, **kwargs):\n"
             "    raise OSError('no PR_SET_PDEATHSIG on this system')\n"
             "workers.ctypes.CDLL = no_prctl\n"
             "workers.die_with_parent(os.getppid())\n"
             f"open({str(marker)!r}, 'w').close()\n"
             "time.sleep(60)\n")
    middle = ("import subprocess, sys, time\n"
              f"child = subprocess.Popen([sys.executable, '-c', {child!r}])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", middle], stdout=subprocess.PIPE)
    pid = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists() and _alive(pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 5
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(pid), "the worker outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        parent.stdout.close()
        if _alive(pid) and b"die_with_parent" in _command(pid):
            os.kill(pid, signal.SIGKILL)


# --- unreadable files of an output folder --------------------------------------------------------


def counting_pair(seen: list):
    def strategy(market, exposure=1.0):
        seen.append(exposure)
        return hedged_pair(market, exposure=exposure)
    return strategy


GRID = {"exposure": [1.0, 2.0], "margin_mode": ["cross", "isolated"], "target_kind": "equity"}


def truncate(path: Path) -> bytes:
    """Cut a file in half, as a copy or a disk fault might; returns what is left."""
    data = path.read_bytes()[: path.stat().st_size // 2]
    path.write_bytes(data)
    return data


def test_a_truncated_part_is_named_and_repair_moves_it_aside_and_reruns_its_runs(market,
                                                                                tmp_path):
    seen = []
    strategy = counting_pair(seen)
    first = sweep(market, strategy, GRID, out=tmp_path, chunk_size=2)  # one part per exposure
    part = tmp_path / "part-00002.parquet"
    left = truncate(part)

    with pytest.raises(CorruptSweepFile) as refused:
        sweep(market, strategy, GRID, out=tmp_path, chunk_size=2)
    assert str(part) in str(refused.value) and "repair=True" in str(refused.value)
    with pytest.raises(CorruptSweepFile, match="part-00002.parquet"):
        read_sweep(tmp_path)

    seen.clear()
    with pytest.warns(UserWarning, match="moved to .*_corrupt"):
        repaired = sweep(market, strategy, GRID, out=tmp_path, chunk_size=2, repair=True)
    assert seen == [2.0]  # the runs of the unreadable part, and only those, ran again
    assert (tmp_path / "_corrupt" / "part-00002.parquet").read_bytes() == left  # kept
    pd.testing.assert_frame_equal(repaired, first)
    pd.testing.assert_frame_equal(read_sweep(tmp_path).sort_values("run_id", ignore_index=True),
                                  first.sort_values("run_id", ignore_index=True))


def test_repair_of_an_equity_part_reruns_its_runs_for_their_curves(market, tmp_path):
    seen = []
    strategy = counting_pair(seen)
    table = sweep(market, strategy, GRID, out=tmp_path, chunk_size=2, equity=True)
    curves = read_equity(tmp_path)
    truncate(tmp_path / "_equity" / "part-00001.parquet")
    with pytest.raises(CorruptSweepFile, match="_equity/part-00001.parquet"):
        read_equity(tmp_path)

    seen.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sweep(market, strategy, GRID, out=tmp_path, chunk_size=2, equity=True, repair=True)
    assert seen == [1.0]
    assert sorted(p.relative_to(tmp_path / "_corrupt").as_posix()
                  for p in (tmp_path / "_corrupt").rglob("*.parquet")) == [
        "_equity/part-00001.parquet", "part-00001.parquet"]
    assert sorted(curves.columns) == sorted(table["run_id"])
    pd.testing.assert_frame_equal(read_equity(tmp_path), curves)


def test_a_truncated_sweep_json_is_named_with_what_to_do_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--start", "2024-01-01", "--end", "2024-01-08", "-p", "exposure=1,2",
            "-p", "leverage=5", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    meta = out / "_sweep.json"
    left = truncate(meta)  # as the earlier, non-atomic write left it when interrupted
    capsys.readouterr()

    assert main(args) == 2
    err = capsys.readouterr().err
    assert str(meta) in err and "--repair" in err and "repair=True" not in err

    assert main(args + ["--repair"]) == 0
    printed = capsys.readouterr().out
    assert "moved to" in printed and "2 runs, 0 failed" in printed
    assert (out / "_corrupt" / "_sweep.json").read_bytes() == left
    assert len(pd.read_parquet(out)) == 2  # nothing was run twice or lost
