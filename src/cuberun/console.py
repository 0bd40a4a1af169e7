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
        except (OSError, ValueError):  # a closed pipe, a full disk under a log: never stops a run
            pass


def warn(message: str) -> None:
    say(f"warning: {message}")
