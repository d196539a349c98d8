"""Keep numba's on-disk cache in step with this package's source.

numba keys a cached function on its own file only: after an edit of
``engine/account.py`` it would go on loading a ``simulate`` compiled against the
old rules from ``kernel.py``'s cache (and a sweep's batch, from ``batch.py``'s, with
the old ``simulate`` linked in), and silently simulate yesterday's margin math. So,
before any compiled module is imported, a digest of every source file of the package
is compared with the one stored beside the cache; when they differ, every cached
function of the package is dropped (and recompiled on first use).

numba caches in one of three places, and each is looked after: the ``__pycache__``
folders beside the sources; the folder ``NUMBA_CACHE_DIR`` names, when it is set; or,
where the sources' folders cannot be written (a read-only install), the user's cache
folder. In the last two, a source folder's functions go to a subfolder named after it
(``numba``'s ``get_suitable_cache_subpath``), and the stamp of the digest sits beside
them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

STAMP = "numba-sources.sha256"
CACHED = ("*.nbi", "*.nbc")  # numba's index and data files


def refresh(package_dir: Path) -> None:
    """Drop the package's numba cache files if any of its source files changed."""
    from numba.core import config

    if config.DISABLE_JIT:
        return
    sources = sorted(package_dir.rglob("*.py"))
    digest = hashlib.sha256()
    for source in sources:
        digest.update(str(source.relative_to(package_dir)).encode() + source.read_bytes())
    text = digest.hexdigest()
    folders = sorted({source.parent for source in sources})
    if config.CACHE_DIR:
        places = [_elsewhere(Path(config.CACHE_DIR), package_dir, folders)]
    else:
        places = [([folder / "__pycache__" for folder in folders],
                   package_dir / "__pycache__" / STAMP, package_dir),
                  _elsewhere(_user_wide(), package_dir, folders)]
    failed = False
    for k, (caches, stamp, root) in enumerate(places):
        # (the user's cache folder: numba's where the sources' own cannot be written, or one
        # it has used for them before)
        if k and not failed and not root.exists():
            continue
        try:
            _keep_in_step(caches, stamp, text)
        except OSError:  # this place cannot be written: numba caches in the next one
            failed = True


def kernels_cached(package_dir: Path, kernel: str = "engine.kernel.simulate") -> bool:
    """Whether the simulation kernel (or ``kernel``, another compiled function of the
    package: a sweep's "engine.batch.run_batch_serial") is in numba's on-disk cache (False:
    the next run compiles it, a one-time cost of about 20 s)."""
    from numba.core import config

    if config.DISABLE_JIT:
        return True
    *folder, stem, function = kernel.split(".")
    source = package_dir.joinpath(*folder)
    if config.CACHE_DIR:
        folders = [Path(config.CACHE_DIR) / _subpath(source)]
    else:
        folders = [source / "__pycache__", _user_wide() / _subpath(source)]
    return any(any(place.glob(f"{stem}.{function}-*.nbi")) for place in folders)


def compile_lock(package_dir: Path) -> CompileLock:
    """The lock a background compile of the kernels holds (``engine.precompile.for_later``),
    in the folder of numba's cache of the engine."""
    from numba.core import config

    engine = package_dir / "engine"
    if config.CACHE_DIR:
        folders = [Path(config.CACHE_DIR) / _subpath(engine)]
    else:
        folders = [engine / "__pycache__", _user_wide() / _subpath(engine)]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / "backtester-compiling.lock"
            path.touch()
            return CompileLock(path)
        except OSError:
            continue
    return CompileLock(None)


class CompileLock:
    """An advisory lock on a file (``fcntl.flock``; where there is none, or no file could be
    made, a lock never held)."""

    def __init__(self, path: Path | None):
        self.path, self._file = path, None
        try:
            import fcntl
        except ImportError:
            fcntl = None
        self._fcntl = fcntl if path is not None else None

    def acquire(self) -> bool:
        """Hold the lock, unless another process does (False then). Held until the process
        ends."""
        if self._fcntl is None:
            return True
        self._file = open(self.path, "a")  # noqa: SIM115 (kept open: it holds the lock)
        try:
            self._fcntl.flock(self._file, self._fcntl.LOCK_EX | self._fcntl.LOCK_NB)
        except OSError:
            self._file.close()
            self._file = None
            return False
        return True

    def held_elsewhere(self) -> bool:
        if self._fcntl is None or self._file is not None:
            return False
        with open(self.path, "a") as file:
            try:
                self._fcntl.flock(file, self._fcntl.LOCK_SH | self._fcntl.LOCK_NB)
            except OSError:
                return True
            self._fcntl.flock(file, self._fcntl.LOCK_UN)
        return False

    def wait(self) -> None:
        """Return once no other process holds the lock."""
        if self._fcntl is None or self._file is not None:
            return
        with open(self.path, "a") as file:
            self._fcntl.flock(file, self._fcntl.LOCK_SH)
            self._fcntl.flock(file, self._fcntl.LOCK_UN)


def _keep_in_step(caches: list[Path], stamp: Path, digest: str) -> None:
    """Drop the cache files in ``caches`` unless ``stamp`` holds ``digest``; then write it
    (OSError where the place cannot be written)."""
    if stamp.exists() and stamp.read_text() == digest:
        return
    for folder in caches:
        for pattern in CACHED:
            for cached in folder.glob(pattern):
                cached.unlink(missing_ok=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(digest)


def _elsewhere(root: Path, package_dir: Path, folders: list[Path]
               ) -> tuple[list[Path], Path, Path]:
    """The cache folders of ``folders``' sources under ``root`` (as numba names them), the
    stamp's file there, and ``root``."""
    return ([root / _subpath(folder) for folder in folders],
            root / f"{_subpath(package_dir)}.{STAMP}", root)


def _subpath(folder: Path) -> str:
    """The subfolder of a cache root where numba keeps the functions of ``folder``'s
    sources."""
    from numba.core.caching import _CacheLocator

    return _CacheLocator.get_suitable_cache_subpath(str(folder / "__init__.py"))


def _user_wide() -> Path:
    """numba's cache folder for sources whose own folder cannot be written."""
    from numba.misc.appdirs import AppDirs

    return Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)
