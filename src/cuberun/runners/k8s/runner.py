"""The k8s runner (the Runner contract): the batch hooks (one task, one Job: plan, submit,
follow, cancel, Ctrl-C), the fingerprint and inspect.
The layers below: config.py < plan.py < client.py < follow.py (see the package docstring)."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.console import say, warn
from cuberun.errors import BackendError
from cuberun.retry import limits
from cuberun.runners.base import TaskPlan
from cuberun.runners.k8s.api import ApiError, Cancelled, _check_cancel
from cuberun.runners.k8s.config import SCHEMA, _JobPlan, _JobRef
from cuberun.runners.k8s.follow import K8sFollow, _Watch
from cuberun.runners.k8s.manifests import ManifestStep
from cuberun.schema import Field

if TYPE_CHECKING:
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask


class KubernetesRunner(K8sFollow):
    supports_chain = False  # one Job per task; a chain runs task by task
    native_retries = True  # retries are the Job's backoffLimit: a new pod after a failed one (retry.py)
    enforces_timeout = True  # the Job's activeDeadlineSeconds
    outputs_on_host = False  # on the PersistentVolumeClaim: not checkable from here
    name = "k8s"
    section = "k8s"
    schema: ClassVar[dict[str, Field]] = SCHEMA

    # -- run -----------------------------------------------------------------------------------
    def _warn_ignored_options(self) -> None:
        for flag, value in (("--security", self.options.security), ("--cpu", self.options.cpus)):
            if value:
                warn(f"{flag}={value} does not apply to the {self.name} runner and is ignored"
                     + (" (set cpu: in the platform for CPU requests)" if flag == "--cpu" else ""))

    # -- the batch hooks (the loop is BatchRunner.run_batch; one task, one Job) ---------------------
    def plan_batch(self, planned: Sequence[TaskPlan]) -> list[_JobPlan]:
        plans = []
        for p in planned:  # the plan's own manifests: the Job name it decided
            by_purpose = {s.purpose: s for s in p.steps if isinstance(s, ManifestStep)}
            netpol = by_purpose.get("network-policy")
            plans.append(_JobPlan(p.task.name, dict(by_purpose["run"].manifest), dict(netpol.manifest) if netpol is not None else None))
        self.api()
        self._warn_ignored_options()
        return plans

    def submit(self, plan: _JobPlan, after: _JobRef | None) -> _JobRef:
        from cuberun.process import CANCEL

        started = time.monotonic()
        name = str(plan.manifest["metadata"]["name"])
        api = self.api()
        if plan.network_policy is not None:  # before the Job: its pod never runs without it
            self._network_policies = True
            try:
                api.call(f"create NetworkPolicy {name}", api.networking.create_namespaced_network_policy, self.namespace, plan.network_policy)
            except ApiError as exc:
                raise BackendError(
                    f"cannot create the NetworkPolicy that keeps task '{plan.task}' off the network: {exc.lines()[0]}",
                    "the run policy has the network off: allow creating networkpolicies in namespace "
                    f"{self.namespace}, or run with the pod network: --network=pod (recorded)") from None
            except BaseException:
                if CANCEL.requested:  # interrupted while the request was on its way: it may have been created
                    self._cleanup_network_policy(name)
                raise
            say(f"created NetworkPolicy {self.namespace}/{name} (no ingress, no egress)")
        try:
            api.call(f"create Job {name}", api.batch.create_namespaced_job, self.namespace, plan.manifest)
        except BaseException:
            if CANCEL.requested:  # interrupted while the request was on its way: it may have been created
                self._cleanup(name)
            else:
                self._cleanup_network_policy(name)
            raise
        say(f"created Job {self.namespace}/{name} (image {self.image})")
        return _JobRef(name, plan.task, started)

    def follow(self, submission: _JobRef, later: Sequence[_JobRef], log_path: str, cancel: Any) -> Outcome:
        from cuberun.process import EXIT_TIMEOUT, Outcome

        job = submission
        watch = _Watch()
        try:
            with open(log_path, "ab") as log:
                _check_cancel()
                code = self._wait(self.api(), job.name, job.task, [getattr(sys.stdout, "buffer", None), log], watch)
        except Cancelled:
            return self.interrupted([job], cancel)
        if self.config.get("keep_jobs"):
            say(f"keeping Job {self.namespace}/{job.name} (keep_jobs)")
            self._cleanup_network_policy(job.name)
        else:
            self._cleanup(job.name)
        details: dict[str, Any] = {"job": job.name, "namespace": self.namespace}
        lim = limits(self.options, self.cube.tasks[job.task])
        if lim.retries:  # the Job's pods were the attempts
            details.update(attempts=watch.attempts, max_attempts=lim.attempts)
        if watch.deadline is not None:
            deadline = int(lim.timeout) if lim.timeout is not None and lim.timeout == int(lim.timeout) else lim.timeout
            return Outcome(EXIT_TIMEOUT, time.monotonic() - job.started, details={**details, "timed_out": True, "timeout": deadline},
                           reason=f"timed out: Job {self.namespace}/{job.name} ran past its activeDeadlineSeconds and was stopped "
                                  f"({watch.deadline})")
        return Outcome(code, time.monotonic() - job.started, details=details)

    def cancel(self, submissions: Sequence[_JobRef], current: _JobRef | None, outcome: Outcome | None) -> None:
        if outcome is not None:
            return  # follow deleted (or kept) the Job of a finished run
        for job in submissions:
            self._cleanup(job.name)

    def interrupted(self, submitted: Sequence[_JobRef], cancel: Any) -> Outcome:
        from cuberun.process import Outcome

        sig = cancel.received or signal.SIGINT
        if not submitted:  # cancelled before this task could start
            return Outcome(128 + sig, 0.0, interrupted=True, received=sig)
        job = submitted[0]
        say(f"interrupted: deleting Job {self.namespace}/{job.name}")
        gone = self._cleanup(job.name)
        what = "deleted" if gone else f"NOT deleted: kubectl delete job {job.name} -n {self.namespace}"
        return Outcome(128 + sig, time.monotonic() - job.started, interrupted=True, received=sig,
                       reason=f"was interrupted (Job {self.namespace}/{job.name} {what})", details={"job": job.name, "namespace": self.namespace})

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """Stable across runs (the Job name is random): the container's command line, image,
        resources and volume."""
        command, args = self.container_args(task)
        identity: dict[str, Any] = {
            "runner": self.name,
            "command": [[*(command or []), *args]],
            "image": self.image,
            "resources": self.resources(task),
            "volume": self.volume_spec(),
            "mount_path": self.mount_path,
            "env": _env_identity(self.env(task)),
        }
        if task.task.run_args is not None:  # container_config.yaml: where each volume is, /dev/shm
            identity["mounts"], _ = self.mounts(task, self.policy(task))
        return identity

    # -- inspect -------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        cfg, context, in_cluster = self._load_config()
        info: dict[str, Any] = {
            "runner": self.name,
            "platform": self.platform,
            "context": context,
            "in_cluster": in_cluster,
            "server": cfg.host,
            "namespace": self.namespace,
            "kubeconfig": None if in_cluster else (self._get("kubeconfig") or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")),
            "image": self.image,
            "volume": self.volume,
            "mount_path": self.mount_path,
        }
        if self.volume == "pvc":
            info["pvc"] = self.pvc
            info["create_pvc"] = self.creates_pvc()
        else:
            info["host_path"] = self.host_path
        return info


def _env_identity(env: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Environment variables for an identity: values, with secret ones as keyed digests."""
    from cuberun.secretid import SECRET_NAME, secret_digest

    return {e["name"]: secret_digest(e["value"]) if SECRET_NAME.search(e["name"]) else e["value"] for e in env}
