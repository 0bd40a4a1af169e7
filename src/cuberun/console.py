"""Messages to the user on stderr: whole lines, safe to call from parallel tasks."""

from __future__ import annotations

import sys
import threading

_LOCK = threading.Lock()


def say(message: str) -> None:
    with _LOCK:
        try:
            sys.stderr.write(f"cuberun: {message}\n")
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):
            pass


def warn(message: str) -> None:
    say(f"warning: {message}")
