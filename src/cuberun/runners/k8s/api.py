"""Talking to the Kubernetes API server: errors, cancellation, log following."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from cuberun.console import warn
from cuberun.errors import BackendError, RunnerUnavailable
from cuberun.runners.k8s.manifests import CONTAINER_NAME, REQUEST_TIMEOUT
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    pass

LOG_GRACE = 30.0  # after a pod ended and its log stream broke: how long the log request is retried


# -- talking to the API server -------------------------------------------------------------------
class Cancelled(Exception):
    """Ctrl-C / SIGTERM arrived (process.CANCEL) while a run waited on the cluster."""


def _check_cancel() -> None:
    from cuberun.process import CANCEL

    if CANCEL.requested:
        raise Cancelled()


def cancellable_sleep(seconds: float) -> None:
    """Sleep, waking every 50 ms to notice a Ctrl-C (the handler only records it)."""
    end = time.monotonic() + seconds
    while True:
        _check_cancel()
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(0.05, left))


class ApiError(BackendError):
    """The API server answered with an error status."""

    def __init__(self, message: str, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint)
        self.status = status


@dataclass
class Api:
    """The few calls the runner makes, on top of the official client (JSON in, JSON out: the
    client's model classes are skipped, so no client-side validation trips over partial objects)."""

    batch: Any
    core: Any
    host: str
    exception: type[Exception]
    networking: Any = None  # NetworkingV1Api: the run policy's NetworkPolicy

    def call(self, what: str, fn: Callable[..., Any], *args: Any, ok404: bool = False, timeout: float = REQUEST_TIMEOUT, **kwargs: Any) -> Any:
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
        except self.exception as exc:
            status = getattr(exc, "status", None)
            if ok404 and status == 404:
                return None
            raise ApiError(f"Kubernetes API: {what} failed: {_api_message(exc)}", _api_hint(status, self.host), status=status) from None
        except Exception as exc:  # urllib3 / socket errors: the server is unreachable
            raise RunnerUnavailable(
                f"cannot reach the Kubernetes API server at {self.host} ({what}): {type(exc).__name__}: {_short(exc)}",
                "check the kubeconfig (-Prunner.kubeconfig=PATH, -Prunner.context=NAME) and that the cluster is up: kubectl cluster-info",
            ) from None
        data = resp.data
        return json.loads(data) if data else {}


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""


def _api_message(exc: Exception) -> str:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = None
    if body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = str(body)[:300]
    reason = getattr(exc, "reason", None)
    return f"HTTP {status} {reason or ''}".strip() + (f": {message}" if message else "")


def _api_hint(status: int | None, host: str) -> str:
    if status in (401, 403):
        return "check the credentials and RBAC rights in the kubeconfig (create/delete jobs, list pods, read pods/log)"
    if status == 404:
        return "check the namespace (-Prunner.namespace=NAME)"
    if status == 409:
        return "an object with that name exists already; run again"
    if status == 422:
        return "the manifest was rejected; cuberun run --dry-run prints it"
    return f"the API server is {host}"


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind and cond.get("status") == "True":
            return dict(cond)
    return None


def _container_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        if status.get("name") == CONTAINER_NAME:
            return dict(status)
    return {}


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


class LogFollower(threading.Thread):
    """Follows a pod's log (`follow=true`) into our stdout and the run log, counting bytes so
    that whatever a broken stream missed can be fetched once the container has ended."""

    def __init__(self, api: Api, namespace: str, pod: str, sinks: Sequence[IO[bytes] | None]) -> None:
        super().__init__(name=f"log-{pod}", daemon=True)
        self.api = api
        self.namespace = namespace
        self.pod = pod
        self.sinks = sinks
        self.written = 0
        self.complete = False  # the stream ended while the container had ended too
        self.error: str | None = None
        self._resp: Any = None
        self._closed = threading.Event()

    def emit(self, data: bytes) -> None:
        for sink in self.sinks:
            if sink is None:
                continue
            try:
                sink.write(data)
                sink.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass
        self.written += len(data)

    def run(self) -> None:
        try:
            # no timeout: a task may be silent for hours; the main thread bounds the wait and closes this stream
            self._resp = self.api.core.read_namespaced_pod_log(
                self.pod, self.namespace, container=CONTAINER_NAME, follow=True, _preload_content=False
            )
            for chunk in self._resp.stream(65536, decode_content=True):
                if chunk:
                    self.emit(chunk)
            if not self._closed.is_set():
                pod = self.api.call("read pod", self.api.core.read_namespaced_pod, self.pod, self.namespace, ok404=True)
                self.complete = pod is None or "terminated" in (_container_status(pod).get("state") or {})
        except Exception as exc:
            if not self._closed.is_set():
                self.error = f"{type(exc).__name__}: {_short(exc)}"
                if os.environ.get("CUBERUN_DEBUG") == "1":
                    warn(f"following the log of pod {self.pod} failed: {self.error}")
        finally:
            self._release()

    def _release(self) -> None:
        resp = self._resp
        if resp is not None:
            try:
                resp.release_conn()
            except Exception:
                pass

    def close(self) -> None:
        self._closed.set()
        resp = self._resp
        if resp is not None:
            try:
                resp.close()
            except Exception:
                pass

    def catch_up(self, grace: float = LOG_GRACE, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = cancellable_sleep) -> None:
        """After the container ended: print what the stream did not deliver (the bytes past those
        shown). The stream breaks under load (a reset, a timeout), and the one log request made
        then can fail the same way: it is retried, backing off from 0.25 s to 4 s and bounded by
        `grace`, on a server error (5xx, 429), a timeout or a lost connection; not on 404 (the pod
        is gone, its log with it) or another refusal. A cancel stops it (Cancelled). When the log
        never comes, one warning names the pod and the command that shows its log."""
        deadline = clock() + grace
        interval = 0.25
        while True:
            _check_cancel()
            try:
                data = self._read_log(max(5.0, min(REQUEST_TIMEOUT, deadline - clock())))
            except Exception as exc:
                answered = isinstance(exc, self.api.exception)
                if answered and getattr(exc, "status", None) == 404:
                    warn(f"the last log lines of pod {self.pod} were not shown: the pod is gone (HTTP 404), its log with it")
                    return
                retry = _transient(exc, self.api.exception)
                if retry and clock() + interval <= deadline:
                    sleep(interval)
                    interval = min(interval * 2, 4.0)
                    continue
                error = _api_message(exc) if answered else f"{type(exc).__name__}: {_short(exc)}"
                within = f" within {grace:g} s" if retry else ""
                warn(f"the last log lines of pod {self.pod} could not be fetched{within} ({error}); "
                     f"see: kubectl logs {self.pod} -n {self.namespace} -c {CONTAINER_NAME}")
                return
            if len(data) > self.written:
                self.emit(data[self.written :])
            return

    def _read_log(self, timeout: float) -> bytes:
        """The container's whole log (one request, not following)."""
        resp = self.api.core.read_namespaced_pod_log(
            self.pod, self.namespace, container=CONTAINER_NAME, _preload_content=False, _request_timeout=timeout
        )
        try:
            return bytes(resp.data or b"")
        finally:
            try:
                resp.release_conn()
            except Exception:
                pass


def _transient(exc: Exception, api_exception: type[Exception]) -> bool:
    """A failure that the same request may not meet again: the server's error (5xx), its
    throttling (429), no HTTP answer at all (a reset, a timeout, a refused connection)."""
    if isinstance(exc, api_exception):
        status = getattr(exc, "status", None)
        return not status or status == 429 or status >= 500  # 0: the client's own connection error (SSL, proxy)
    from urllib3.exceptions import HTTPError

    return isinstance(exc, (OSError, HTTPError))
