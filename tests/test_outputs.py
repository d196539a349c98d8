"""Saved outputs never mix runs: Result.save replaces a saved run whole or not at all,
`backtester run --out` and `backtester data import --out` refuse to overwrite unless told,
and a crash while writing leaves the old files as they were."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from backtester import Result, atomic, load_market, run
from backtester.cli import main
from strategies import hedged_pair


@pytest.fixture(scope="module")
def market():
    return load_market(start="2024-01-01", end="2024-01-15")


@pytest.fixture(scope="module")
def two_runs(market):
    """Two runs that differ in every file: cross 5x with positions (saved), isolated 50x
    without (so the second saves no positions.parquet)."""
    targets = hedged_pair(market, exposure=3.0)
    first = run(market, targets, target_kind="equity", margin_mode="cross", leverage=5)
    second = run(market, targets, target_kind="equity", margin_mode="isolated", leverage=50,
                 record_positions=False)
    assert first.summary() != second.summary()
    return first, second


def hidden_leftovers(folder):
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


# --- Result.save ------------------------------------------------------------------------------


def test_saving_over_a_saved_run_replaces_it_whole(tmp_path, two_runs):
    first, second = two_runs
    folder = tmp_path / "run"
    first.save(folder)
    assert (folder / "positions.parquet").exists()
    second.save(folder)
    assert not (folder / "positions.parquet").exists()  # nothing of the first run survives
    loaded = Result.load(folder)
    assert loaded.summary() == pytest.approx(second.summary(), nan_ok=True)
    assert json.loads((folder / "run.json").read_text())["config"]["margin_mode"] == {
        "BTC_USDT": "isolated", "ETH_USDT": "isolated"}
    assert hidden_leftovers(folder) == []


def test_a_crash_while_saving_leaves_the_old_run_whole(tmp_path, two_runs, monkeypatch):
    first, second = two_runs
    folder = tmp_path / "run"
    first.save(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    written = []
    real = pd.DataFrame.to_parquet

    def crash_on_third_file(self, path, *args, **kwargs):
        if len(written) == 2:  # two files of the new run are written, then the process "dies"
            raise OSError("disk full")
        written.append(path)
        return real(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash_on_third_file)
    with pytest.raises(OSError, match="disk full"):
        second.save(folder)
    monkeypatch.undo()
    assert len(written) == 2 and all(Path(p).parent != folder for p in written)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    loaded = Result.load(folder)
    assert loaded.summary() == pytest.approx(first.summary(), nan_ok=True)
    pd.testing.assert_frame_equal(loaded.liquidations, first.liquidations,
                                  check_dtype=False)
    assert hidden_leftovers(folder) == []  # the half-built new run was removed


def test_save_refuses_a_folder_that_is_not_a_saved_run(tmp_path, two_runs):
    first, _ = two_runs
    (tmp_path / "notes.txt").write_text("my notes")
    with pytest.raises(ValueError, match="holds no saved run.*notes.txt"):
        first.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "my notes"

    folder = tmp_path / "run"
    first.save(folder)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="also notes.txt"):
        first.save(folder)
    assert (folder / "notes.txt").exists()

    with pytest.raises(ValueError, match="is a file"):
        first.save(tmp_path / "notes.txt")


def test_save_with_overwrite_false_refuses_a_saved_run(tmp_path, two_runs):
    first, second = two_runs
    first.save(tmp_path / "run")
    with pytest.raises(ValueError, match="overwrite=True"):
        second.save(tmp_path / "run", overwrite=False)
    assert Result.load(tmp_path / "run").summary() == pytest.approx(first.summary(),
                                                                   nan_ok=True)


def test_without_an_exchange_of_names_a_failed_swap_puts_the_old_folder_back(tmp_path,
                                                                              monkeypatch):
    target, staged = tmp_path / "target", tmp_path / "staged"
    target.mkdir()
    (target / "a").write_text("old")
    staged.mkdir()
    (staged / "a").write_text("new")
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    renames = []
    real = atomic.os.rename

    def second_rename_fails(src, dst):
        renames.append((src, dst))
        if len(renames) == 2:
            raise OSError("interrupted")
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "rename", second_rename_fails)
    with pytest.raises(OSError, match="interrupted"):
        atomic.replace_folder(staged, target)
    assert (target / "a").read_text() == "old"
    monkeypatch.undo()
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    atomic.replace_folder(staged, target)
    assert (target / "a").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["target"]


def test_an_atomic_write_that_fails_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "_sweep.json"
    atomic.write_text(path, '{"market": "old"}')

    def fail(fd):
        raise OSError("power cut")  # the new text is written, not yet renamed into place

    monkeypatch.setattr(atomic.os, "fsync", fail)
    with pytest.raises(OSError, match="power cut"):
        atomic.write_text(path, '{"market": "new"}')
    assert path.read_text() == '{"market": "old"}'
    assert [p.name for p in tmp_path.iterdir()] == ["_sweep.json"]


# --- backtester run --out ---------------------------------------------------------------------

RUN = ["run", "--start", "2024-01-01", "--end", "2024-01-08", "--no-plot"]


def test_run_refuses_a_folder_with_files_unless_overwrite_and_then_leaves_nothing_stale(
        tmp_path, capsys):
    out = tmp_path / "out"
    assert main(RUN + ["--margin-mode", "cross", "--out", str(out)]) == 0
    assert (out / "run.json").exists()
    capsys.readouterr()

    assert main(RUN + ["--margin-mode", "both", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is not empty" in err and "--overwrite" in err
    assert json.loads((out / "run.json").read_text())["config"]["margin_mode"]["BTC_USDT"] \
        == "cross"  # refused: the first run is as it was

    assert main(RUN + ["--margin-mode", "both", "--out", str(out), "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cross", "isolated"]  # no stale run.json
    capsys.readouterr()
    assert main(["report", str(out)]) == 0  # a comparison of the two saved runs
    printed = capsys.readouterr().out
    assert "cross" in printed and "isolated" in printed


def test_run_overwrite_never_replaces_files_it_did_not_write(tmp_path, capsys):
    (tmp_path / "thesis.tex").write_text("years of work")
    assert main(RUN + ["--out", str(tmp_path), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "thesis.tex" in err and "did not write" in err
    assert (tmp_path / "thesis.tex").read_text() == "years of work"


def test_run_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "results.txt"
    path.write_text("x")
    assert main(RUN + ["--out", str(path)]) == 2
    assert f"--out {path} is a file" in capsys.readouterr().err
    assert path.read_text() == "x"


# --- backtester data import --out -------------------------------------------------------------

CSV = ("timestamp,open,high,low,close,volume\n"
       "2024-01-01T00:00:00Z,100,101,99,{close},10\n"
       "2024-01-01T01:00:00Z,100.5,102,100,101,12\n")


def test_data_import_refuses_to_replace_a_file_unless_overwrite(tmp_path, capsys):
    csv = tmp_path / "bars.csv"
    out = tmp_path / "data"
    args = ["data", "import", str(csv), "--symbol", "TEST_USDT", "--out", str(out)]
    csv.write_text(CSV.format(close=100.5))
    assert main(args) == 0
    csv.write_text(CSV.format(close=99.5))
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "TEST_USDT-1h.parquet" in err and "--overwrite" in err
    assert pd.read_parquet(out / "TEST_USDT-1h.parquet")["close"].tolist() == [100.5, 101.0]
    assert main(args + ["--overwrite"]) == 0
    assert pd.read_parquet(out / "TEST_USDT-1h.parquet")["close"].tolist() == [99.5, 101.0]
    assert sorted(p.name for p in out.iterdir()) == ["TEST_USDT-1h.parquet"]


def test_data_import_out_naming_a_file_is_a_clear_error(tmp_path, capsys):
    csv = tmp_path / "bars.csv"
    csv.write_text(CSV.format(close=100.5))
    assert main(["data", "import", str(csv), "--symbol", "T_USDT", "--out", str(csv)]) == 2
    assert f"--out {csv} is a file" in capsys.readouterr().err
