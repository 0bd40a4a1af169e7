"""The last log fetch of a pod (k8s/api.py, LogFollower.catch_up): when the follow stream broke
(a reset or a timeout under load), the one log request made after the container ended can fail
the same way; it is retried with back-off (bounded), not for a pod that is gone, stopped by a
cancel, and a log that never comes is said in one line with the kubectl command that shows it.
The API client is a scripted stand-in here (the order of its answers is the point), time an
injected clock; the real runner is exercised by tests/integration/test_k8s_real.py."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from typing import Any

import pytest
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from cuberun.process import CANCEL
from cuberun.runners.k8s import api as k8s_api
from cuberun.runners.k8s.api import LOG_GRACE, Api, Cancelled, LogFollower

SHOWN = b"step 1\nstep 2\n"  # what the follow stream delivered before it broke
WHOLE = SHOWN + b"step 3\ndone\n"


class ApiException(Exception):
    def __init__(self, status: int, reason: str, body: str = "") -> None:
        super().__init__(f"({status}) {reason}")
        self.status, self.reason, self.body = status, reason, body


class Response:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.released = False

    def release_conn(self) -> None:
        self.released = True


class Core:
    """Answers `read_namespaced_pod_log` with the next of its scripted answers (the last one repeats)."""

    def __init__(self, answers: list[bytes | Exception]) -> None:
        self.answers = answers
        self.calls: list[dict[str, Any]] = []
        self.responses: list[Response] = []

    def read_namespaced_pod_log(self, pod: str, namespace: str, **kwargs: Any) -> Response:
        assert (pod, namespace, kwargs["container"], kwargs.get("follow")) == ("pod-1", "ns", "task", None)
        answer = self.answers[min(len(self.calls), len(self.answers) - 1)]
        self.calls.append(kwargs)
        if isinstance(answer, Exception):
            raise answer
        self.responses.append(Response(answer))
        return self.responses[-1]


class Clock:
    """Sleeping moves the clock on, nothing else does; `then` runs after the n-th sleep."""

    def __init__(self, then: dict[int, Any] | None = None) -> None:
        self.now = 0.0
        self.slept: list[float] = []
        self.then = then or {}

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept.append(seconds)
        action = self.then.get(len(self.slept))
        if action is not None:
            action()


@pytest.fixture()
def warned(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    said: list[str] = []
    monkeypatch.setattr(k8s_api, "warn", said.append)
    yield said


def follower(answers: list[bytes | Exception]) -> tuple[LogFollower, Core, io.BytesIO]:
    core = Core(answers)
    sink = io.BytesIO()
    logs = LogFollower(Api(batch=None, core=core, host="https://k8s.test:6443", exception=ApiException), "ns", "pod-1", [sink])
    logs.emit(SHOWN)  # as the follow stream did
    return logs, core, sink


def catch_up(logs: LogFollower, clock: Clock) -> None:
    logs.catch_up(clock=clock.monotonic, sleep=clock.sleep)


def test_server_errors_are_retried_until_the_log_comes_and_nothing_is_shown_twice(warned: list[str]) -> None:
    logs, core, sink = follower([ApiException(500, "Internal Server Error"), ApiException(503, "Service Unavailable"), WHOLE])
    clock = Clock()
    catch_up(logs, clock)
    assert sink.getvalue() == WHOLE and logs.written == len(WHOLE)
    assert len(core.calls) == 3 and clock.slept == [0.25, 0.5] and warned == []
    assert all(resp.released for resp in core.responses)


@pytest.mark.parametrize("failure", [
    ProtocolError("Connection aborted.", ConnectionResetError(104, "Connection reset by peer")),
    ReadTimeoutError(None, "/api/v1/namespaces/ns/pods/pod-1/log", "Read timed out."),  # type: ignore[arg-type]
    ConnectionRefusedError(111, "Connection refused"),
    ApiException(429, "Too Many Requests"),
], ids=["reset", "timeout", "refused", "throttled"])
def test_lost_connections_and_timeouts_are_retried(failure: Exception, warned: list[str]) -> None:
    logs, core, sink = follower([failure, failure, failure, WHOLE])
    clock = Clock()
    catch_up(logs, clock)
    assert sink.getvalue() == WHOLE and len(core.calls) == 4 and clock.slept == [0.25, 0.5, 1.0] and warned == []


def test_a_pod_that_is_gone_is_asked_once(warned: list[str]) -> None:
    logs, core, sink = follower([ApiException(404, "Not Found"), WHOLE])
    clock = Clock()
    catch_up(logs, clock)
    assert sink.getvalue() == SHOWN and len(core.calls) == 1 and clock.slept == []
    assert warned == ["the last log lines of pod pod-1 were not shown: the pod is gone (HTTP 404), its log with it"]


def test_a_refusal_is_not_retried_and_names_the_command(warned: list[str]) -> None:
    logs, core, sink = follower([ApiException(403, "Forbidden", '{"message": "pods \\"pod-1\\" is forbidden"}'), WHOLE])
    clock = Clock()
    catch_up(logs, clock)
    assert sink.getvalue() == SHOWN and len(core.calls) == 1 and clock.slept == []
    assert warned == ['the last log lines of pod pod-1 could not be fetched (HTTP 403 Forbidden: pods "pod-1" is forbidden); '
                      "see: kubectl logs pod-1 -n ns -c task"]


def test_a_log_that_never_comes_is_said_once_within_the_bound(warned: list[str]) -> None:
    logs, core, sink = follower([ApiException(500, "Internal Server Error")])
    clock = Clock()
    catch_up(logs, clock)
    assert sink.getvalue() == SHOWN
    assert sum(clock.slept) <= LOG_GRACE and max(clock.slept) == 4.0 and len(core.calls) == len(clock.slept) + 1 < 20
    assert warned == [f"the last log lines of pod pod-1 could not be fetched within {LOG_GRACE:g} s (HTTP 500 Internal Server Error); "
                      "see: kubectl logs pod-1 -n ns -c task"]
    # each request's own timeout is bounded by what is left of the wait (never below 5 s)
    timeouts = [call["_request_timeout"] for call in core.calls]
    assert timeouts[0] == 30.0 and min(timeouts) == 5.0 and timeouts == sorted(timeouts, reverse=True)


def test_a_cancel_stops_the_retries(monkeypatch: pytest.MonkeyPatch, warned: list[str]) -> None:
    logs, core, sink = follower([ApiException(502, "Bad Gateway"), WHOLE])
    clock = Clock(then={1: lambda: monkeypatch.setattr(CANCEL, "received", signal.SIGINT)})
    with pytest.raises(Cancelled):
        catch_up(logs, clock)
    assert len(core.calls) == 1 and sink.getvalue() == SHOWN and warned == []


def test_a_stream_that_delivered_everything_adds_nothing(warned: list[str]) -> None:
    logs, core, sink = follower([SHOWN])
    catch_up(logs, Clock())
    assert sink.getvalue() == SHOWN and len(core.calls) == 1 and warned == []
