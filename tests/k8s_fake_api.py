"""Small fake Kubernetes and Kubeflow Pipelines API servers on 127.0.0.1 for the k8s and
kubeflow runners' tests (FakeKubeAPI here; FakeKFPAPI at the end).

It speaks the few calls the runner makes, with the JSON shapes of the real API:

    POST   /apis/batch/v1/namespaces/NS/jobs                       create a Job (and its pod)
    GET    /apis/batch/v1/namespaces/NS/jobs/NAME[/status]         the Job with its conditions
    DELETE /apis/batch/v1/namespaces/NS/jobs/NAME                  ?propagationPolicy=Background
    GET    /api/v1/namespaces/NS/pods?labelSelector=K=V            pods of a Job
    GET    /api/v1/namespaces/NS/pods/NAME                         one pod
    GET    /api/v1/namespaces/NS/pods/NAME/log[?follow=true]       the log, chunked while following
    GET    /api/v1/namespaces/NS/persistentvolumeclaims/NAME       404 unless created or listed
    POST   /api/v1/namespaces/NS/persistentvolumeclaims            create a PVC
    POST   /apis/networking.k8s.io/v1/namespaces/NS/networkpolicies       create a NetworkPolicy (403 with forbid_network_policies)
    DELETE /apis/networking.k8s.io/v1/namespaces/NS/networkpolicies/NAME  delete it

Each created Job gets one pod whose life is scripted by a `Behaviour` chosen from the Job (by
default from its container args): Pending for `start_delay`, then Running while it writes
`lines` (one every `line_delay` s), then terminated with `exit_code`. `hang=True` keeps it
Running (writing a line now and then) until the Job is deleted; `stream_breaks` and
`log_failures` make its log hard to get. Every request is recorded.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

TOKEN = "cuberun-test-token"


@dataclass
class Behaviour:
    lines: list[str] = field(default_factory=lambda: ["hello from the pod"])
    exit_code: int = 0
    start_delay: float = 0.2
    line_delay: float = 0.05
    hang: bool = False
    waiting_reason: str | None = None  # stay Pending with this container waiting reason
    stream_breaks: bool = False  # the follow stream drops its connection after its first chunk (a reset under load)
    log_failures: int = 0  # the first log requests without follow answer 500 (the kubelet unreachable)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any
    headers: dict[str, str]


@dataclass
class FakePod:
    name: str
    namespace: str
    job: str
    labels: dict[str, str]
    behaviour: Behaviour
    created: str
    phase: str = "Pending"
    state: dict[str, Any] = field(default_factory=dict)
    log: bytearray = field(default_factory=bytearray)
    log_failures: int = 0  # log requests answered 500 so far
    finished: threading.Event = field(default_factory=threading.Event)
    deleted: threading.Event = field(default_factory=threading.Event)

    def to_json(self) -> dict[str, Any]:
        statuses = []
        if self.state:
            statuses.append({"name": "task", "image": "img", "imageID": "", "ready": self.phase == "Running",
                             "restartCount": 0, "state": self.state})
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels, "creationTimestamp": self.created},
            "status": {"phase": self.phase, "containerStatuses": statuses},
        }


class FakeKubeAPI:
    def __init__(self, behaviour: Callable[[dict[str, Any]], Behaviour] | None = None) -> None:
        self.choose = behaviour or (lambda job: Behaviour())
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_jobs: list[tuple[str, str, str | None]] = []  # (namespace, name, propagationPolicy)
        self.pods: dict[tuple[str, str], FakePod] = {}
        self.pvcs: dict[tuple[str, str], dict[str, Any]] = {}
        self.network_policies: dict[tuple[str, str], dict[str, Any]] = {}
        self.forbid_network_policies = False
        self.refuse_deletes = 0  # this many DELETE requests get the connection closed unanswered (a server going down)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-kube-api", daemon=True)

    # -- lifecycle --------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKubeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for pod in list(self.pods.values()):
            pod.deleted.set()
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        path.write_text(json.dumps({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "tester", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake-context", "context": {"cluster": "fake", "user": "tester", "namespace": namespace}}],
            "current-context": "fake-context",
        }, indent=2))
        return path

    # -- queries for tests ------------------------------------------------------------------------
    def calls(self, method: str, contains: str = "") -> list[Request]:
        with self.lock:
            return [r for r in self.requests if r.method == method and contains in r.path]

    def created_jobs(self) -> list[dict[str, Any]]:
        return [r.body for r in self.calls("POST", "/jobs")]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    # -- the pod's life ---------------------------------------------------------------------------
    def _create_job(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        job = json.loads(json.dumps(body))
        job["metadata"].update(uid=f"uid-{name}", creationTimestamp=_now())
        job["status"] = {}
        template_labels = dict(((body.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})
        template_labels["batch.kubernetes.io/job-name"] = name
        pod = FakePod(f"{name}-abcde", namespace, name, template_labels, self.choose(body), _now())
        with self.lock:
            self.jobs[(namespace, name)] = job
            self.pods[(namespace, pod.name)] = pod
        threading.Thread(target=self._live, args=(pod,), daemon=True).start()
        return job

    def _live(self, pod: FakePod) -> None:
        b = pod.behaviour
        if pod.deleted.wait(b.start_delay):
            return
        if b.waiting_reason:
            with self.lock:
                pod.state = {"waiting": {"reason": b.waiting_reason, "message": f"simulated {b.waiting_reason}"}}
            return
        with self.lock:
            pod.phase = "Running"
            pod.state = {"running": {"startedAt": _now()}}
        for line in b.lines:
            if pod.deleted.wait(b.line_delay):
                return
            with self.lock:
                pod.log.extend(line.encode() + b"\n")
        if b.hang:
            n = 0
            while not pod.deleted.wait(0.2):
                n += 1
                with self.lock:
                    pod.log.extend(f"still running {n}\n".encode())
            return
        with self.lock:
            pod.phase = "Succeeded" if b.exit_code == 0 else "Failed"
            pod.state = {"terminated": {"exitCode": b.exit_code, "reason": "Completed" if b.exit_code == 0 else "Error",
                                        "startedAt": _now(), "finishedAt": _now()}}
            job = self.jobs.get((pod.namespace, pod.job))
            if job is not None:
                kind = "Complete" if b.exit_code == 0 else "Failed"
                cond: dict[str, Any] = {"type": kind, "status": "True", "lastTransitionTime": _now()}
                if kind == "Failed":
                    cond.update(reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
                job["status"] = {"conditions": [cond], "succeeded" if kind == "Complete" else "failed": 1}
        pod.finished.set()

    # -- HTTP ---------------------------------------------------------------------------------------
    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _record(self, body: Any) -> tuple[list[str], dict[str, list[str]]]:
                parsed = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parsed.query)
                with api.lock:
                    api.requests.append(Request(self.command, parsed.path, query, body, {k.lower(): v for k, v in self.headers.items()}))
                return [p for p in parsed.path.split("/") if p], query

            def _body(self) -> Any:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                return json.loads(raw) if raw else None

            def _send(self, status: int, data: Any) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _status(self, code: int, reason: str, message: str) -> None:
                self._send(code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "message": message, "code": code})

            def _authorized(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self._status(401, "Unauthorized", "Unauthorized")
                    return False
                return True

            def do_POST(self) -> None:
                body = self._body()
                parts, _ = self._record(body)
                if not self._authorized():
                    return
                if parts[:3] == ["apis", "batch", "v1"] and len(parts) == 6 and parts[5] == "jobs":
                    ns = parts[4]
                    if (ns, body["metadata"]["name"]) in api.jobs:
                        self._status(409, "AlreadyExists", f"jobs.batch \"{body['metadata']['name']}\" already exists")
                        return
                    self._send(201, api._create_job(ns, body))
                elif parts[:2] == ["api", "v1"] and len(parts) == 5 and parts[4] == "persistentvolumeclaims":
                    ns = parts[3]
                    with api.lock:
                        api.pvcs[(ns, body["metadata"]["name"])] = body
                    self._send(201, body)
                elif parts[:3] == ["apis", "networking.k8s.io", "v1"] and len(parts) == 6 and parts[5] == "networkpolicies":
                    if api.forbid_network_policies:
                        self._status(403, "Forbidden", f"networkpolicies.networking.k8s.io is forbidden: User \"tester\" cannot create "
                                                       f"resource \"networkpolicies\" in API group \"networking.k8s.io\" in the namespace \"{parts[4]}\"")
                        return
                    with api.lock:
                        api.network_policies[(parts[4], body["metadata"]["name"])] = body
                    self._send(201, body)
                else:
                    self._status(404, "NotFound", f"unknown path {self.path}")

            def do_DELETE(self) -> None:
                parts, query = self._record(self._body())
                with api.lock:
                    refuse = api.refuse_deletes > 0
                    api.refuse_deletes -= refuse
                if refuse:
                    self.close_connection = True  # no answer at all: the client sees the server gone
                    return
                if not self._authorized():
                    return
                if parts[:3] == ["apis", "batch", "v1"] and len(parts) == 7 and parts[5] == "jobs":
                    ns, name = parts[4], parts[6]
                    with api.lock:
                        job = api.jobs.pop((ns, name), None)
                        api.deleted_jobs.append((ns, name, (query.get("propagationPolicy") or [None])[0]))
                        pods = [p for p in api.pods.values() if p.job == name and p.namespace == ns]
                        for p in pods:
                            api.pods.pop((ns, p.name), None)
                    for p in pods:
                        p.deleted.set()
                    if job is None:
                        self._status(404, "NotFound", f"jobs.batch \"{name}\" not found")
                    else:
                        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                elif parts[:3] == ["apis", "networking.k8s.io", "v1"] and len(parts) == 7 and parts[5] == "networkpolicies":
                    with api.lock:
                        found = api.network_policies.pop((parts[4], parts[6]), None)
                    if found is None:
                        self._status(404, "NotFound", f"networkpolicies.networking.k8s.io \"{parts[6]}\" not found")
                    else:
                        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
                else:
                    self._status(404, "NotFound", f"unknown path {self.path}")

            def do_GET(self) -> None:
                parts, query = self._record(None)
                if not self._authorized():
                    return
                if parts[:3] == ["apis", "batch", "v1"] and len(parts) in (7, 8) and parts[5] == "jobs":
                    with api.lock:
                        job = api.jobs.get((parts[4], parts[6]))
                        data = json.loads(json.dumps(job)) if job else None
                    if data is None:
                        self._status(404, "NotFound", f"jobs.batch \"{parts[6]}\" not found")
                    else:
                        self._send(200, data)
                elif parts[:2] == ["api", "v1"] and len(parts) == 5 and parts[4] == "pods":
                    selector = (query.get("labelSelector") or [""])[0]
                    wanted = dict(item.split("=", 1) for item in selector.split(",") if "=" in item)
                    with api.lock:
                        items = [p.to_json() for p in api.pods.values()
                                 if p.namespace == parts[3] and all(p.labels.get(k) == v for k, v in wanted.items())]
                    self._send(200, {"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": items})
                elif parts[:2] == ["api", "v1"] and len(parts) == 6 and parts[4] == "pods":
                    with api.lock:
                        pod = api.pods.get((parts[3], parts[5]))
                        data = pod.to_json() if pod else None
                    if data is None:
                        self._status(404, "NotFound", f"pods \"{parts[5]}\" not found")
                    else:
                        self._send(200, data)
                elif parts[:2] == ["api", "v1"] and len(parts) == 7 and parts[4] == "pods" and parts[6] == "log":
                    self._log(parts[3], parts[5], _true((query.get("follow") or ["false"])[0]))
                elif parts[:2] == ["api", "v1"] and len(parts) == 6 and parts[4] == "persistentvolumeclaims":
                    with api.lock:
                        pvc = api.pvcs.get((parts[3], parts[5]))
                    if pvc is None:
                        self._status(404, "NotFound", f"persistentvolumeclaims \"{parts[5]}\" not found")
                    else:
                        self._send(200, pvc)
                else:
                    self._status(404, "NotFound", f"unknown path {self.path}")

            def _log(self, ns: str, name: str, follow: bool) -> None:
                with api.lock:
                    pod = api.pods.get((ns, name))
                if pod is None:
                    self._status(404, "NotFound", f"pods \"{name}\" not found")
                    return
                if not follow:
                    with api.lock:
                        failing = pod.log_failures < pod.behaviour.log_failures
                        pod.log_failures += failing
                        data = bytes(pod.log)
                    if failing:
                        self._status(500, "InternalError", f"Get \"https://node-1:10250/containerLogs/{ns}/{name}/task\": "
                                                           "dial tcp 10.0.0.2:10250: connect: connection refused")
                        return
                    self.send_response(200)
                    self.send_header("Content-Type", "text/plain")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                sent = 0
                try:
                    while True:
                        with api.lock:
                            data = bytes(pod.log[sent:])
                        if data:
                            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                            self.wfile.flush()
                            sent += len(data)
                            if pod.behaviour.stream_breaks:  # no last chunk: the client sees the stream end too soon
                                self.close_connection = True
                                self.connection.shutdown(socket.SHUT_RDWR)
                                return
                        if pod.finished.is_set() or pod.deleted.is_set():
                            with api.lock:
                                rest = bytes(pod.log[sent:])
                            if rest:
                                self.wfile.write(f"{len(rest):x}\r\n".encode() + rest + b"\r\n")
                            break
                        time.sleep(0.02)
                    self.wfile.write(b"0\r\n\r\n")
                    self.wfile.flush()
                except OSError:  # the client went away (e.g. cuberun closed the stream)
                    pass

        return Handler


def _true(value: str) -> bool:
    """Go's strconv.ParseBool, as the API server parses query flags (clients send true or True)."""
    return value in ("1", "t", "T", "TRUE", "true", "True")


def _now() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"


# -- Kubeflow Pipelines ------------------------------------------------------------------------------
class FakeKFPAPI:
    """A fake Kubeflow Pipelines v2beta1 REST API on 127.0.0.1, for the real `kfp.Client`:

        GET  /apis/v2beta1/healthz                 {"multi_user": false}
        GET  /apis/v2beta1/experiments?filter=...  experiments with that display name
        POST /apis/v2beta1/experiments             create one
        POST /apis/v2beta1/runs                    create a run (the compiled pipeline_spec inside)
        GET  /apis/v2beta1/runs/ID                 the run: state and task details from `states`
        POST /apis/v2beta1/runs/ID:terminate       terminate it

    `states` scripts what successive GETs of a run return: a list of (run state, {task: state}).
    The last entry repeats; a run that was terminated reports CANCELED.
    """

    def __init__(self, states: list[tuple[str, dict[str, str]]]) -> None:
        self.states = states
        self.lock = threading.Lock()
        self.requests: list[Request] = []
        self.experiments: list[dict[str, Any]] = []
        self.runs: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.terminated: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="fake-kfp-api", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeKFPAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def _run_view(self, run_id: str) -> dict[str, Any]:
        run = dict(self.runs[run_id])
        n = self.polls.get(run_id, 0)
        self.polls[run_id] = n + 1
        state, tasks = self.states[min(n, len(self.states) - 1)]
        if run_id in self.terminated:
            state = "CANCELED"
        run["state"] = state
        run["run_details"] = {"task_details": [
            {"display_name": name, "state": tstate, **({"error": {"message": f"{name} failed: exit status 3"}} if tstate == "FAILED" else {})}
            for name, tstate in tasks.items()
        ]}
        if state == "FAILED":
            run["error"] = {"message": "the pipeline failed"}
        return run

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(self, status: int, data: Any) -> None:
                raw = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _record(self) -> tuple[str, dict[str, list[str]], Any]:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                body = json.loads(raw) if raw else None
                parsed = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(parsed.query)
                with api.lock:
                    api.requests.append(Request(self.command, parsed.path, query, body, {k.lower(): v for k, v in self.headers.items()}))
                return parsed.path, query, body

            def do_GET(self) -> None:
                path, query, _ = self._record()
                with api.lock:
                    if path == "/apis/v2beta1/healthz":
                        self._send(200, {"multi_user": False})
                    elif path == "/apis/v2beta1/experiments":
                        predicate = (json.loads((query.get("filter") or ["{}"])[0]).get("predicates") or [{}])[0]
                        wanted = predicate.get("stringValue", predicate.get("string_value"))
                        found = [e for e in api.experiments if e["display_name"] == wanted]
                        self._send(200, {"experiments": found, "total_size": len(found)} if found else {})
                    elif path.startswith("/apis/v2beta1/runs/") and path.split("/")[-1] in api.runs:
                        self._send(200, api._run_view(path.split("/")[-1]))
                    else:
                        self._send(404, {"error": f"not found: {path}", "code": 5, "message": f"not found: {path}"})

            def do_POST(self) -> None:
                path, _, body = self._record()
                with api.lock:
                    if path == "/apis/v2beta1/experiments":
                        exp = {"experiment_id": f"exp-{len(api.experiments) + 1}", "display_name": body["display_name"]}
                        api.experiments.append(exp)
                        self._send(200, exp)
                    elif path == "/apis/v2beta1/runs":
                        run_id = f"run-{len(api.runs) + 1}"
                        api.runs[run_id] = {**body, "run_id": run_id, "state": "PENDING"}
                        self._send(200, api.runs[run_id])
                    elif path.startswith("/apis/v2beta1/runs/") and path.endswith(":terminate"):
                        api.terminated.append(path.split("/")[-1].split(":")[0])
                        self._send(200, {})
                    else:
                        self._send(404, {"error": f"not found: {path}", "code": 5, "message": f"not found: {path}"})

        return Handler
