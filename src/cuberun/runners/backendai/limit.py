"""A task's time limit on Backend.AI (`tasks.<t>.timeout`, `--timeout`), counted by cuberun from
when the task's session started, never from when it was queued: the first `*_started` event of
`session watch`, or, when the watch missed it (a session already running when the watch began,
e.g. the second of a chain), `session info` showing the session RUNNING. The task therefore
gets at least its limit, never less. At the limit cuberun terminates the session through the
path Ctrl-C takes (`session rm`); the outcome is exit 124 with `timed_out` in the record, worded
as on the other runners. Pure: the clock is injectable."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

RUNNING = "RUNNING"  # watch_state's state once the session started; `session info` statuses RUNNING, RUNNING_DEGRADED


class SessionClock:
    """When the session started (None: not yet known) and whether its limit has passed."""

    def __init__(self, limit: float, now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.now = now
        self.started_at: float | None = None
        self.fired = False

    def event(self, state: str) -> None:
        """A `session watch` state (session.watch_state): the first RUNNING starts the clock."""
        if state == RUNNING and self.started_at is None:
            self.started_at = self.now()

    def observed(self, status: str) -> None:
        """A `session info` status: a running session starts the clock if no event did (it started
        before this moment, so the task gets a little more than its limit, never less)."""
        if status.startswith(RUNNING) and self.started_at is None:
            self.started_at = self.now()

    def expired(self) -> bool:
        """True from the moment the task has run `limit` seconds (stream's `expired`)."""
        if not self.fired and self.started_at is not None and self.now() - self.started_at >= self.limit:
            self.fired = True
        return self.fired


def limit_value(limit: float) -> int | float:
    """The limit as recorded: whole seconds as an int (3, not 3.0)."""
    return int(limit) if limit == int(limit) else limit


def timed_out(limit: float, session: str, terminated: bool) -> tuple[str, dict[str, Any]]:
    """(reason, details) of a task stopped at its limit: the other runners' words (retry.py puts
    the cube's key in place of `--timeout` when the limit came from the cube) naming the session,
    and `timed_out`/`timeout` for the record and the retries."""
    if terminated:
        reason = f"timed out after {limit:g} s (--timeout) and was stopped: session {session} was terminated"
    else:
        reason = (f"timed out after {limit:g} s (--timeout) and was stopped; session {session} could not be terminated: "
                  f"check with backend.ai ps, remove it with backend.ai session rm {session}")
    return reason, {"timed_out": True, "timeout": limit_value(limit)}


def poll_start(info: Callable[[], str | None], clock: SessionClock, stop: Any, first: float = 1.0, most: float = 15.0) -> None:
    """Ask `info` (the session's status, None when unknown) until the clock has started or `stop`
    is set: every `first` seconds at first, backing off to `most` (a session queued for hours
    costs one client call every `most` seconds)."""
    interval = first
    while clock.started_at is None and not stop.wait(interval):
        status = info()
        if status:
            clock.observed(status)
        interval = min(interval * 1.5, most)

