"""A stale numba cache is dropped when any source file of the package changes."""

from __future__ import annotations

from backtester import _numba_cache


def test_cache_files_are_dropped_when_any_source_changes_and_kept_otherwise(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "engine" / "__pycache__").mkdir(parents=True)
    (pkg / "engine" / "kernel.py").write_text("def simulate(): ...\n")
    (pkg / "engine" / "account.py").write_text("RATE = 1\n")
    cached = pkg / "engine" / "__pycache__" / "kernel.simulate-1.py311.nbi"

    cached.write_bytes(b"old")
    _numba_cache.refresh(pkg)  # first look: no stamp yet, so nothing is trusted
    assert not cached.exists()

    cached.write_bytes(b"compiled against RATE = 1")
    _numba_cache.refresh(pkg)  # nothing changed: the cache stays
    assert cached.exists()

    (pkg / "engine" / "account.py").write_text("RATE = 2\n")  # a dependency, not kernel.py
    _numba_cache.refresh(pkg)
    assert not cached.exists()


def test_a_cold_cache_is_told_apart_so_the_first_run_can_say_it_compiles(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "engine" / "__pycache__").mkdir(parents=True)
    assert not _numba_cache.kernels_cached(pkg)
    (pkg / "engine" / "__pycache__" / "kernel.simulate-1.py311.nbi").write_bytes(b"index")
    assert _numba_cache.kernels_cached(pkg)
