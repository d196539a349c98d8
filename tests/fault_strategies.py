"""Strategies that crash or hang their process, for the sweep fault tests.

In a module of their own so that the worker processes of a sweep can import them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from strategies import hedged_pair


def misbehaving(market, exposure: float = 1.0, fault: str = "none", log: str = ""):
    """The hedged pair, except that ``fault="exit"`` ends the process at once (as a crash
    of native code or the out-of-memory killer would), ``"segfault"`` dies of SIGSEGV and
    ``"hang"`` never returns. Each call appends ``fault exposure`` to the file ``log``;
    once a file ``log + ".healed"`` exists, every fault behaves."""
    if log:
        line = f"{fault} {exposure:g}\n".encode()
        fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(fd, line)  # unbuffered: the process may end on the next line
        os.close(fd)
        if Path(log + ".healed").exists():
            fault = "none"
    if fault == "exit":
        os._exit(3)
    if fault == "segfault":
        import ctypes

        ctypes.string_at(0)  # reads address 0
    if fault == "hang":
        time.sleep(3600)
    return hedged_pair(market, exposure=exposure)


def calls(log: str) -> list[str]:
    """The calls ``misbehaving`` logged, one ``"fault exposure"`` text each."""
    return Path(log).read_text().splitlines() if Path(log).exists() else []


def buffered_log(market, exposure: float = 1.0, log: str = ""):
    """The hedged pair, noting each call in ``log`` through a file kept open and buffered
    (as a ``logging.FileHandler`` keeps it), flushed and closed by an ``atexit`` function:
    lines a worker's exit would lose if it skipped its exit functions."""
    if log:
        global _BUFFERED
        if _BUFFERED is None:
            import atexit

            _BUFFERED = open(log, "a", buffering=1 << 20)  # noqa: SIM115 (closed at exit)
            atexit.register(_BUFFERED.close)
        _BUFFERED.write(f"{os.getpid()} {exposure:g}\n")
    return hedged_pair(market, exposure=exposure)


_BUFFERED = None


def noting_pid(market, exposure: float = 1.0, log: str = ""):
    """The hedged pair, appending ``pid exposure`` to the file ``log`` at each call."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.write(fd, f"{os.getpid()} {exposure:g}\n".encode())
    os.close(fd)
    return hedged_pair(market, exposure=exposure)


def pids(log: str) -> set[int]:
    """The processes ``noting_pid`` ran in."""
    return {int(line.split()[0]) for line in calls(log)}
