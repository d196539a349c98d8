"""Writing files and folders so that a crash leaves the old version or the new one, never a mix.

A file is written to a temporary name in its own folder and renamed over the old one
(``os.replace`` is atomic on one filesystem). A folder of files (a saved run) is built in a
temporary sibling folder and then swapped with the old one: in a single step where the
system can exchange two names (Linux ``renameat2``), else by moving the old folder aside
first and removing it only once the new one is in place.

    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "meta.json"
    >>> write_text(path, '{"a": 1}')
    >>> path.read_text()
    '{"a": 1}'
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path


def temporary_sibling(path: str | Path, tag: str) -> Path:
    """A hidden name next to ``path`` (same folder, so same filesystem) that nothing else uses.

    Hidden (a leading dot) so that parquet readers of the folder and globs skip it.
    """
    path = Path(path)
    return path.parent / f".{path.name}.{tag}-{uuid.uuid4().hex[:12]}"


def write_file(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``.

    If ``write`` fails (or the process dies), ``path`` still holds what it held before.
    """
    path = Path(path)
    tmp = temporary_sibling(path, "tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (flushed to disk before the rename)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())

    return write_file(path, write)


def staging_folder(target: str | Path) -> Path:
    """A new empty hidden folder beside ``target`` to build its next version in."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = temporary_sibling(target, "new")
    staged.mkdir()
    return staged


def replace_folder(staged: str | Path, target: str | Path) -> Path:
    """Put the folder ``staged`` in the place of ``target`` (which may not exist).

    At every moment ``target`` is either its old self or the complete new folder (on a
    system without an exchange of names, it is missing for the instant between two
    renames, with the old folder kept beside it). The old folder is removed only after
    the new one is in place.
    """
    staged, target = Path(staged), Path(target)
    if not target.exists():
        os.rename(staged, target)
        return target
    if _exchange(staged, target):
        shutil.rmtree(staged, ignore_errors=True)  # it now holds the old folder
        return target
    old = temporary_sibling(target, "old")
    os.rename(target, old)
    try:
        os.rename(staged, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return target


def build_folder(target: str | Path, build: Callable[[Path], object]) -> Path:
    """Call ``build(folder)`` on a staging folder, then swap it in for ``target``.

    If ``build`` fails, the staging folder is removed and ``target`` is untouched.
    """
    staged = staging_folder(target)
    try:
        build(staged)
        return replace_folder(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` in one step; False where the system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a C library older than glibc 2.28
        return False
    renameat2.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                          ctypes.c_uint)
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return done == 0  # EINVAL/ENOSYS: a filesystem or kernel without it; the fallback then
