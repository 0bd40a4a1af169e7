"""Progress of long hashing on stderr: nothing for the first seconds, then bytes done of the
total and the rate. On a terminal one line is rewritten in place; otherwise (a log, a pipe) a
plain line is written every few seconds, so logs stay readable."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

DELAY = 2.0  # seconds of hashing before the first progress line
TTY_INTERVAL = 0.25
PLAIN_INTERVAL = 5.0


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - the loop returns


class Progress:
    """`add(n)` after each chunk hashed; `close()` at the end (ends a rewritten line)."""

    def __init__(self, what: str, total: int, *, stream: TextIO | None = None, delay: float = DELAY,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.total = total
        self.done = 0
        self.stream = stream
        self.delay = delay
        self.clock = clock
        self.start = clock()
        self.next = self.start + delay
        self.shown = False
        self._tty: bool | None = None

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def tty(self) -> bool:
        if self._tty is None:
            try:
                self._tty = bool(self._out().isatty())
            except (AttributeError, ValueError, OSError):
                self._tty = False
        return self._tty

    def add(self, n: int) -> None:
        self.done += n
        now = self.clock()
        if now >= self.next:
            self._show(now)

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total > 0 else ""
        return f"cuberun: hashing {self.what}: {human(self.done)} of {human(self.total)}{pct}, {human(self.done / elapsed)}/s"

    def _show(self, now: float) -> None:
        from cuberun.console import _LOCK

        text = self.line(now)
        tty = self.tty()
        with _LOCK:
            try:
                out = self._out()
                out.write(f"\r{text}\x1b[K" if tty else text + "\n")
                out.flush()
            except (OSError, ValueError):
                pass
        self.shown = True
        self.next = now + (TTY_INTERVAL if tty else PLAIN_INTERVAL)

    def close(self) -> None:
        if self.shown and self.tty():
            now = self.clock()
            self._show(now)
            try:
                self._out().write("\n")
                self._out().flush()
            except (OSError, ValueError):
                pass
