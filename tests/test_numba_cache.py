"""A stale numba cache is dropped when any source file of the package changes."""

from __future__ import annotations

import pytest

from backtester import _numba_cache


@pytest.fixture(autouse=True)
def caches_beside_the_sources(monkeypatch):
    """numba's default place, whatever the environment says: a NUMBA_CACHE_DIR set for the
    whole suite (as on a shared cluster) would move every cache the tests look for."""
    from numba.core import config

    monkeypatch.setattr(config, "CACHE_DIR", "")


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


def make_package(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "engine").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "engine" / "kernel.py").write_text("def simulate(): ...\n")
    (pkg / "engine" / "account.py").write_text("RATE = 1\n")
    return pkg


def numba_folder(root, source_folder):
    """Where numba caches the functions of ``source_folder`` under a cache root (numba's own
    naming: the folder's name and a hash of its path)."""
    from numba.core.caching import _CacheLocator

    return root / _CacheLocator.get_suitable_cache_subpath(str(source_folder / "kernel.py"))


def test_a_cache_folder_named_by_numba_cache_dir_is_kept_in_step_too(tmp_path, monkeypatch):
    """With ``NUMBA_CACHE_DIR`` set, numba caches every function there, in a subfolder per
    source folder; a sweep's batch (``batch.py``) holds the kernel of ``kernel.py`` linked
    in, so an edit of ``kernel.py`` alone must drop it as well."""
    from numba.core import config

    pkg = make_package(tmp_path)
    (pkg / "engine" / "batch.py").write_text("def run_batch(): ...\n")
    root = tmp_path / "cache"
    monkeypatch.setattr(config, "CACHE_DIR", str(root))
    folder = numba_folder(root, pkg / "engine")
    assert not _numba_cache.kernels_cached(pkg)
    folder.mkdir(parents=True)
    batch = folder / "batch.run_batch-1.py311.nbi"
    kernel = folder / "kernel.simulate-1.py311.nbi"
    for f in (batch, kernel):
        f.write_bytes(b"compiled against the old kernel")
    _numba_cache.refresh(pkg)  # no stamp yet: nothing trusted
    assert not batch.exists() and not kernel.exists()

    batch.write_bytes(b"compiled")
    kernel.write_bytes(b"compiled")
    assert _numba_cache.kernels_cached(pkg)
    _numba_cache.refresh(pkg)  # nothing changed
    assert batch.exists() and kernel.exists()
    (pkg / "engine" / "kernel.py").write_text("def simulate(): return 1\n")
    _numba_cache.refresh(pkg)
    assert not batch.exists() and not kernel.exists()
    assert not (pkg / "engine" / "__pycache__").exists()  # (numba does not cache there now)


def test_a_read_only_install_keeps_the_users_cache_folder_in_step(tmp_path, monkeypatch):
    """Where the package's own folder cannot be written, numba caches in the user's cache
    folder; the stamp goes there, and a change of the sources drops what is cached there.
    (The package's ``__pycache__`` is a file here: no user, root included, can write in it.)"""
    pkg = make_package(tmp_path)
    (pkg / "__pycache__").write_text("not a folder")
    root = tmp_path / "user-cache"
    monkeypatch.setattr(_numba_cache, "_user_wide", lambda: root)
    folder = numba_folder(root, pkg / "engine")
    folder.mkdir(parents=True)
    cached = folder / "kernel.simulate-1.py311.nbi"
    cached.write_bytes(b"old")
    _numba_cache.refresh(pkg)  # this place was never stamped: dropped
    assert not cached.exists()
    cached.write_bytes(b"new")
    _numba_cache.refresh(pkg)
    assert cached.exists()
    assert _numba_cache.kernels_cached(pkg)
    (pkg / "engine" / "account.py").write_text("RATE = 2\n")
    _numba_cache.refresh(pkg)
    assert not cached.exists()


def test_the_users_cache_folder_is_left_alone_while_the_package_caches_beside_its_sources(
        tmp_path, monkeypatch):
    """A package whose folders can be written caches there: no stamp is written into the
    user's cache folder, nor is that folder made."""
    pkg = make_package(tmp_path)
    root = tmp_path / "user-cache"
    monkeypatch.setattr(_numba_cache, "_user_wide", lambda: root)
    _numba_cache.refresh(pkg)
    assert (pkg / "__pycache__" / _numba_cache.STAMP).exists()
    assert not root.exists()
