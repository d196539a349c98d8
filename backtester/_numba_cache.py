"""Keep numba's on-disk cache in step with this package's source.

numba keys a cached function on its own file only: after an edit of
``engine/account.py`` it would go on loading a ``simulate`` compiled against the
old rules from ``kernel.py``'s cache, and silently simulate yesterday's margin
math. So, before any compiled module is imported, a digest of every source file
of the package is compared with the one stored beside the cache; when they differ,
every cached function of the package is dropped (and recompiled on first use).
Only numba's default cache location (``__pycache__`` folders) is handled.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

STAMP = "numba-sources.sha256"


def refresh(package_dir: Path) -> None:
    """Drop the package's numba cache files if any of its source files changed."""
    from numba.core import config

    if config.CACHE_DIR or config.DISABLE_JIT:
        return
    sources = sorted(package_dir.rglob("*.py"))
    digest = hashlib.sha256()
    for source in sources:
        digest.update(str(source.relative_to(package_dir)).encode() + source.read_bytes())
    stamp = package_dir / "__pycache__" / STAMP
    try:
        if stamp.exists() and stamp.read_text() == digest.hexdigest():
            return
        for cached in package_dir.rglob("__pycache__/*.nb[ic]"):
            cached.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only install: numba then caches elsewhere or not at all
        pass


def kernels_cached(package_dir: Path) -> bool:
    """Whether the simulation kernel is in numba's on-disk cache (False: the next run
    compiles it, a one-time cost of about 20 s). True where the cache is not
    the default one, which this module does not look into."""
    from numba.core import config

    if config.CACHE_DIR or config.DISABLE_JIT:
        return True
    return any((package_dir / "engine" / "__pycache__").glob("kernel.*.nbi"))
