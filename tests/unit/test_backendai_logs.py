"""The session log follower (backendai/sessions.py, _LogFollower): after a session ends, Backend.AI
26.x answers `session logs` with 500 until the manager has stored the kernel's log, so the last
fetch is retried (bounded) and a log that never comes is said in one line. The client calls are
a scripted stand-in here (the order of answers is the point); the real race is exercised by
tests/integration/test_backendai_real.py, whose copy task's last line is only in the stored log."""

from __future__ import annotations

import io
from collections.abc import Iterator

import pytest

from cuberun.process import Captured
from cuberun.runners.backendai import sessions
from cuberun.runners.backendai.sessions import _LogFollower

LIVE = "Kernel started\nservice up\n"
STORED = LIVE + "probe copy\ncopied 2 files\n"
GONE = Captured(1, "", "BackendAPIError: 500 Internal Server Error")


class Client:
    """Answers `session logs` with the next of its scripted answers (the last one repeats)."""

    def __init__(self, answers: list[Captured]) -> None:
        self.answers = answers
        self.calls = 0

    def _call(self, *args: str) -> Captured:
        assert args == ("session", "logs", "sid-1")
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer


class Clock:
    """The module's `time`: sleeping costs nothing, and each reading moves `step` seconds on."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.now = 0.0

    def sleep(self, _seconds: float) -> None:
        return None

    def monotonic(self) -> float:
        self.now += self.step
        return self.now


class Cancel:
    def __init__(self, requested: bool = False) -> None:
        self.requested = requested


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    said: list[str] = []
    monkeypatch.setattr(sessions, "time", Clock(step=0))
    monkeypatch.setattr(sessions, "say", said.append)
    yield said


def follower(client: Client) -> tuple[_LogFollower, io.BytesIO]:
    sink = io.BytesIO()
    return _LogFollower(client, "sid-1", [sink], 10.0), sink  # type: ignore[arg-type]


def test_the_last_fetch_waits_for_the_stored_log(no_waiting: list[str]) -> None:
    client = Client([Captured(0, LIVE, ""), GONE, GONE, Captured(0, STORED, "")])
    logs, sink = follower(client)
    assert logs.fetch_once()  # while the session ran
    logs.fetch_last("cube-copy", Cancel())
    assert sink.getvalue().decode() == STORED  # each line once, the last ones included
    assert client.calls == 4 and no_waiting == []


def test_a_log_that_never_comes_is_said_once(monkeypatch: pytest.MonkeyPatch, no_waiting: list[str]) -> None:
    monkeypatch.setattr(sessions, "time", Clock(step=7.0))
    client = Client([Captured(0, LIVE, ""), GONE])
    logs, sink = follower(client)
    logs.fetch_once()
    logs.fetch_last("cube-copy", Cancel())
    assert sink.getvalue().decode() == LIVE
    assert len(no_waiting) == 1 and "last log lines of session cube-copy could not be fetched" in no_waiting[0]
    assert "500 Internal Server Error" in no_waiting[0] and "backend.ai session logs sid-1" in no_waiting[0]
    assert client.calls < 20  # bounded by LOG_GRACE


@pytest.mark.parametrize("cancel", [True, False], ids=["cancelled", "never-ran"])
def test_no_wait_after_ctrl_c_or_for_a_kernel_that_never_ran(cancel: bool, no_waiting: list[str]) -> None:
    client = Client([GONE])
    logs, sink = follower(client)
    logs.ran = cancel  # a session that ran, then Ctrl-C; or one whose kernel never started: no log to wait for
    logs.fetch_last("cube-copy", Cancel(requested=cancel))
    assert client.calls == 1 and sink.getvalue() == b"" and no_waiting == []


def test_a_log_that_starts_over_is_shown_again_then_accepted(no_waiting: list[str]) -> None:
    rotated = "another start\n"
    client = Client([Captured(0, LIVE, ""), Captured(0, rotated, "")])
    logs, sink = follower(client)
    logs.fetch_once()
    logs.fetch_last("cube-copy", Cancel())
    assert sink.getvalue().decode() == LIVE + rotated and client.calls == 3

