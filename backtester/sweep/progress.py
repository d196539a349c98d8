"""A one-line progress report on stderr: runs done, runs per second, time left."""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "--:--"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class Progress:
    """Prints ``sweep  1,200/10,000 runs  2,345 runs/s  ETA 00:04  (3 failed)``.

    On a terminal the line is redrawn in place (at most 5 times a second);
    elsewhere (a log file, CI) a line is printed every 10 seconds. The rate
    counts only the runs of this call, not those skipped as already done.
    """

    def __init__(self, total: int, skipped: int = 0, stream: TextIO | None = None,
                 enabled: bool = True):
        self.total = total
        self.skipped = skipped
        self.done = 0
        self.failed = 0
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self._shown = 0.0

    def update(self, done: int, failed: int = 0) -> None:
        """Count ``done`` more finished runs, ``failed`` of them with an error."""
        self.done += done
        self.failed += failed
        now = time.perf_counter()
        if self.enabled and now - self._shown >= (0.2 if self.tty else 10.0):
            self._show(now)

    def line(self, now: float | None = None) -> str:
        elapsed = (now or time.perf_counter()) - self.start
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        left = self.total - self.skipped - self.done
        eta = left / rate if rate > 0 else float("nan")
        text = (f"sweep  {self.skipped + self.done:,}/{self.total:,} runs  {rate:,.0f} runs/s  "
                f"ETA {_clock(eta)}")
        if self.skipped:
            text += f"  ({self.skipped:,} already done)"
        if self.failed:
            text += f"  ({self.failed:,} failed)"
        return text

    def _show(self, now: float) -> None:
        self._shown = now
        end = "\r" if self.tty else "\n"
        self.stream.write(self.line(now).ljust(78 if self.tty else 0) + end)
        self.stream.flush()

    def close(self) -> None:
        """The final line (elapsed time instead of the ETA)."""
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        rate = self.done / elapsed if elapsed > 0 else float("nan")
        text = (f"sweep  {self.skipped + self.done:,}/{self.total:,} runs  {rate:,.0f} runs/s  "
                f"done in {_clock(elapsed)}")
        if self.skipped:
            text += f"  ({self.skipped:,} already done)"
        if self.failed:
            text += f"  ({self.failed:,} failed)"
        self.stream.write(text.ljust(78 if self.tty else 0) + "\n")
        self.stream.flush()
