"""The k8s runner's follow layer: waiting for a Job (polling it and its pods, a bounded start
deadline, fatal waiting reasons), following each pod's log, and each pod as an attempt."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

from cuberun.console import say
from cuberun.errors import BackendError, TaskFailed
from cuberun.runners.k8s.api import Api, LogFollower, _check_cancel, _condition, _container_status, _pod_name, cancellable_sleep
from cuberun.runners.k8s.client import K8sClient
from cuberun.runners.k8s.config import LABEL_JOB
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    pass

EXIT_TIMEOUT_CODE = 124  # a Job past its activeDeadlineSeconds (process.EXIT_TIMEOUT)
# waiting reasons that never resolve by themselves: fail at once instead of at the start deadline
FATAL_WAITING = ("InvalidImageName", "ErrImageNeverPull", "CreateContainerError", "RunContainerError")
SLOW_WAITING = ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "ContainerCreating", "PodInitializing")


@dataclass
class _Watch:
    """What the wait for one Job saw: each pod that ended (an attempt: backoffLimit starts a new
    pod after a failed one), and whether the Job hit its activeDeadlineSeconds."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    deadline: str | None = None  # the Job's DeadlineExceeded message


class K8sFollow(K8sClient):
    """Waiting for one Job and following its pods' logs."""

    def _wait(self, api: Api, name: str, task: str, sinks: Sequence[IO[bytes] | None], watch: _Watch) -> int:
        """Poll the Job and its pods until the Job's outcome is known; follow each pod's log."""
        interval = max(0.05, self.seconds("poll_interval", 2.0))
        start_timeout = self.seconds("start_timeout", 600)
        selector = f"{LABEL_JOB}={name}"
        followers: dict[str, LogFollower] = {}
        from cuberun.progress import Waiting

        self._queue = Waiting(f"Job {name} (task '{task}') waits to start")
        try:
            return self._poll(api, name, task, sinks, interval, start_timeout, selector, followers, watch)
        finally:
            self._queue.close()
            # never leave a thread writing to stdout behind (it would abort the interpreter at exit)
            for follower in followers.values():
                if follower.is_alive():
                    follower.close()
                    follower.join(2.0)

    def _poll(self, api: Api, name: str, task: str, sinks: Sequence[IO[bytes] | None], interval: float, start_timeout: float,
              selector: str, followers: dict[str, LogFollower], watch: _Watch) -> int:
        finished: set[str] = set()
        pending_since: dict[str, float] = {}
        noted: set[str] = set()
        created = time.monotonic()
        last_code: int | None = None
        while True:
            _check_cancel()
            job = api.call(f"read Job {name}", api.batch.read_namespaced_job, name, self.namespace, ok404=True)
            if job is None:
                raise TaskFailed(f"Job {self.namespace}/{name} disappeared while task '{task}' ran (deleted by someone else?)", 1)
            listing = api.call(f"list pods of Job {name}", api.core.list_namespaced_pod, self.namespace, label_selector=selector)
            pods = sorted(listing.get("items") or [], key=lambda p: str((p.get("metadata") or {}).get("creationTimestamp") or ""))
            for pod in pods:
                pname = _pod_name(pod)
                if not pname or pname in finished:
                    continue
                status = _container_status(pod)
                state = status.get("state") or {}
                phase = (pod.get("status") or {}).get("phase")
                if pname not in followers and ("running" in state or "terminated" in state or phase in ("Running", "Succeeded", "Failed")):
                    self._queue.close()  # before the pod's log reaches stdout
                    follower = LogFollower(api, self.namespace, pname, sinks)
                    followers[pname] = follower
                    follower.start()
                terminated = state.get("terminated")
                if terminated is None and phase in ("Succeeded", "Failed"):
                    terminated = {"exitCode": 0 if phase == "Succeeded" else 1, "reason": (pod.get("status") or {}).get("reason")}
                if terminated is not None:
                    finished.add(pname)
                    self._finish_log(followers.get(pname))
                    code = int(terminated.get("exitCode") or 0)
                    last_code = code
                    watch.attempts.append({"attempt": len(watch.attempts) + 1, "exit_code": code, "pod": pname,
                                           **_pod_seconds(terminated)})
                    reason = terminated.get("reason")
                    if code != 0:
                        detail = f" ({reason})" if reason and reason not in ("Error",) else ""
                        say(f"pod {pname} exited with code {code}{detail}")
                        if reason == "OOMKilled":
                            say("hint: the container ran out of memory; raise --memory (or platform.host_memory_gb)")
                    continue
                if pname in followers:
                    continue
                # still waiting to start
                since = pending_since.setdefault(pname, time.monotonic())
                waiting = state.get("waiting") or {}
                reason, message = waiting.get("reason"), waiting.get("message")
                unschedulable = next((c for c in (pod.get("status") or {}).get("conditions") or []
                                      if c.get("type") == "PodScheduled" and c.get("status") == "False"), None)
                if reason in FATAL_WAITING:
                    raise BackendError(f"pod {pname} of task '{task}' cannot start: {reason}: {message or ''}".rstrip(": "),
                                       "check the image name and the task's entrypoint (cuberun run --dry-run prints the Job)")
                note = reason if reason in SLOW_WAITING and reason not in ("ContainerCreating", "PodInitializing") else None
                if unschedulable is not None:
                    note = f"Unschedulable: {unschedulable.get('message') or unschedulable.get('reason')}"
                self._queue.state("Pending", note or reason or "")
                if note and note not in noted:
                    noted.add(note)
                    say(f"pod {pname} is waiting: {note}" + (f" ({message})" if message and not unschedulable else ""))
                if time.monotonic() - since > start_timeout:
                    raise BackendError(
                        f"pod {pname} of task '{task}' did not start within {start_timeout:g} s" + (f": {note}" if note else ""),
                        "check the cluster (kubectl describe pod " + pname + f" -n {self.namespace}) or raise -Prunner.start_timeout=SECONDS",
                    )
            complete = _condition(job, "Complete") or _condition(job, "SuccessCriteriaMet")
            failed = _condition(job, "Failed") or _condition(job, "FailureTarget")
            active = [p for p in pods if _pod_name(p) not in finished]
            if failed and failed.get("reason") == "DeadlineExceeded":  # the cluster stops its pods; the Job's deletion removes them
                watch.deadline = str(failed.get("message") or "DeadlineExceeded")
                return EXIT_TIMEOUT_CODE
            if complete and not active:
                self._finish_all(followers, finished)
                return 0
            if failed and not active:
                self._finish_all(followers, finished)
                if last_code is not None and last_code != 0:
                    return last_code
                reason = failed.get("reason") or "Failed"
                raise TaskFailed(f"Job {self.namespace}/{name} of task '{task}' failed: {reason}: {failed.get('message') or ''}".rstrip(": "), 1)
            if not pods and time.monotonic() - created > start_timeout:
                raise BackendError(f"no pod of Job {self.namespace}/{name} appeared within {start_timeout:g} s",
                                   f"check the Job's events: kubectl describe job {name} -n {self.namespace}")
            cancellable_sleep(interval)

    @staticmethod
    def _finish_log(follower: LogFollower | None, wait: float = 10.0) -> None:
        """The container has ended: let the log stream drain (bounded), then fetch what it missed."""
        if follower is None:
            return
        end = time.monotonic() + wait
        while follower.is_alive() and time.monotonic() < end:
            _check_cancel()
            follower.join(0.05)
        if follower.is_alive():
            follower.close()
            follower.join(2.0)
        if not follower.complete:
            follower.catch_up()

    def _finish_all(self, followers: Mapping[str, LogFollower], finished: set[str]) -> None:
        for pname, follower in followers.items():
            if pname not in finished:
                self._finish_log(follower)


def _pod_seconds(terminated: Mapping[str, Any]) -> dict[str, float]:
    """How long a pod's container ran, from its terminated state's timestamps (whole seconds)."""
    from datetime import datetime

    try:
        start = datetime.fromisoformat(str(terminated["startedAt"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(terminated["finishedAt"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return {}
    return {"elapsed_s": max(0.0, (end - start).total_seconds())}
