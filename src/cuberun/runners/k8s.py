"""The k8s runner: each task becomes a Kubernetes `batch/v1` Job.

Contract (the reference's k8s keys, with its bugs fixed):
- the workspace is one volume mounted at `/mnt/mlcube/<pvc>` (the reference forgot the slash):
  a PersistentVolumeClaim (`volume: pvc`, the default; named by `pvc`, default the cube name,
  created by `configure` when `create_pvc: true`) or a `hostPath` for single-node clusters;
- a parameter at `<workspace>/<rel>` is passed as `--<param>=/mnt/mlcube/<pvc>/<rel>`; paths
  outside the workspace cannot be mounted and are an error;
- `[<task>] --p=...` as for containers, or the task's `entrypoint` tokens as the container
  command (task name dropped, parameters kept);
- resources from the cube's `platform` block (`host_memory_gb` -> memory request and limit,
  `accelerator_count` or `--gpus=N` -> `nvidia.com/gpu` limit), `--memory`, `cpu`;
- a task's time limit and retries (retry.py: `--timeout`/`--retries`, `tasks.<t>.timeout`/
  `retries`) are the Job's `activeDeadlineSeconds` (rounded up) and `backoffLimit`: a Job past
  its deadline is exit 124 (cuberun deletes it, its pods go with it); each pod is an attempt;
- `run` creates the Job, waits for its pod (polling, with a bounded start deadline), streams
  the pod's log, returns the container's exit code (a failed Job is a failure), and deletes
  the Job (propagation Background) unless `keep_jobs: true`. Ctrl-C / SIGTERM delete the Job
  and return 130 / 143.
- `--dry-run` prints the manifests (the PVC when configure would create it, then one Job per
  task) as multi-document YAML that `kubectl apply -f -` accepts: Job names are unique names
  chosen by cuberun (`generateName` would not work with `kubectl apply`).

Every manifest is checked by `check_manifest` (DNS-1123 names, label syntax, restart policy,
resource quantities, volume references) before it is printed or submitted. The `kubernetes`
package is imported only when the API server is contacted, so `--dry-run` works without it.

Limits: cuberun does not copy data to or from a PVC. Inputs are checked in the local workspace
(the same directory as the volume with hostPath; with a PVC keep the two in step, or pass
--allow-missing-inputs), and up-to-date decisions see only the local workspace too. Auth plugins
named in a kubeconfig (exec credential helpers) are run by the kubernetes client itself.
"""

from __future__ import annotations

import os
import posixpath
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, ClassVar

from cuberun.console import say, warn
from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, TaskFailed, UsageError
from cuberun.retry import limits
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.batch import BatchRunner
from cuberun.runners.k8s_manifests import (
    ACCESS_MODES,
    CONTAINER_NAME,
    PULL_POLICIES,
)
from cuberun.schema import Field
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedParam, ResolvedTask

from cuberun.runners.k8s_api import (
    Api,
    ApiError,
    Cancelled,
    LogFollower,
    _check_cancel,
    _condition,
    _container_status,
    _pod_name,
    _short,
    cancellable_sleep,
)
from cuberun.runners.k8s_manifests import (
    ManifestStep,
    dns_label,
    ensure_valid,
    gib_quantity,
    job_name,
    label_value,
    memory_quantity,
    native_limits,
    unique_suffix,
)
from cuberun.runners.k8s_policy import TMP_VOLUME, input_mounts, needs_network_policy, network_policy_manifest, security_contexts

MOUNT_ROOT = "/mnt/mlcube"
VOLUME_NAME = "workspace"
MANAGED_BY = "cuberun"
LABEL_CUBE = "app.kubernetes.io/name"
LABEL_TASK = "app.kubernetes.io/component"
LABEL_JOB = "cuberun.io/job"
MISSING = "???"  # OmegaConf's "mandatory" marker in the reference's settings
K8S_HINT = "pip install 'cuberun[k8s]'"
DELETE_TIMEOUT = 10.0
EXIT_TIMEOUT_CODE = 124  # a Job past its activeDeadlineSeconds (process.EXIT_TIMEOUT)
# waiting reasons that never resolve by themselves: fail at once instead of at the start deadline
FATAL_WAITING = ("InvalidImageName", "ErrImageNeverPull", "CreateContainerError", "RunContainerError")
SLOW_WAITING = ("ErrImagePull", "ImagePullBackOff", "CreateContainerConfigError", "ContainerCreating", "PodInitializing")



# -- the runner -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _JobPlan:
    task: str
    manifest: dict[str, Any]
    network_policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class _JobRef:
    name: str
    task: str
    started: float


@dataclass
class _Watch:
    """What the wait for one Job saw: each pod that ended (an attempt: backoffLimit starts a new
    pod after a failed one), and whether the Job hit its activeDeadlineSeconds."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    deadline: str | None = None  # the Job's DeadlineExceeded message


class KubernetesRunner(BatchRunner[_JobPlan, _JobRef]):
    supports_chain = False  # one Job per task; a chain runs task by task
    native_retries = True  # retries are the Job's backoffLimit: a new pod after a failed one (retry.py)
    enforces_timeout = True  # the Job's activeDeadlineSeconds
    outputs_on_host = False  # on the PersistentVolumeClaim: not checkable from here
    name = "k8s"
    section = "k8s"
    schema: ClassVar[dict[str, Field]] = {
        "image": Field((str,), doc="container image (default: docker.image)"),
        "namespace": Field((str,), default="default", doc="namespace of the Jobs (and the PVC)"),
        "pvc": Field((str,), doc="PersistentVolumeClaim holding the workspace (default: the cube name as a DNS-1123 name)"),
        "volume": Field((str,), default="pvc", choices=("pvc", "hostPath"), doc="pvc | hostPath (single-node clusters)"),
        "host_path": Field((str,), doc="hostPath: the node directory with the workspace (default: the local workspace path)"),
        "sub_path": Field((str,), default="", doc="the workspace's directory inside the volume (default: its root)"),
        "create_pvc": Field((bool,), default=False, doc="configure creates the PVC when it does not exist"),
        "storage": Field((str, int, float), doc="PVC size: a quantity, or a number of GiB (default: platform.host_disk_space_gb, else 1Gi)"),
        "storage_class": Field((str,), doc="PVC storage class (default: the cluster's default class)"),
        "access_mode": Field((str,), default="ReadWriteOnce", choices=ACCESS_MODES, doc="PVC access mode"),
        "kubeconfig": Field((str,), doc="kubeconfig file (default: $KUBECONFIG or ~/.kube/config; in-cluster config as fallback)"),
        "context": Field((str,), doc="kubeconfig context (default: the current context)"),
        "in_cluster": Field((bool,), doc="use the in-cluster service account config (default: only when no kubeconfig exists)"),
        "backoff_limit": Field((int,), default=0, doc="Job retries before it counts as failed"),
        "keep_jobs": Field((bool,), default=False, doc="keep finished Jobs (and their pods and logs) instead of deleting them"),
        "active_deadline_seconds": Field((int,), doc="the cluster stops the Job after this many seconds"),
        "ttl_seconds_after_finished": Field((int,), doc="the cluster deletes finished Jobs after this many seconds (with keep_jobs)"),
        "start_timeout": Field((int, float, str), default=600, doc="seconds a pod may stay Pending (scheduling, image pull) before the run fails"),
        "poll_interval": Field((int, float, str), default=2.0, doc="seconds between status polls"),
        "delete_retry": Field((int, float, str), default=60, doc="seconds to keep trying to delete a Job while the API server is unreachable"),
        "memory": Field((str, int), doc="memory request and limit (default: platform.host_memory_gb; --memory wins)"),
        "cpu": Field((str, int, float), doc="CPU request and limit, e.g. 2 or 500m"),
        "gpu_resource": Field((str,), default="nvidia.com/gpu", doc="the extended resource that counts GPUs"),
        "image_pull_policy": Field((str,), choices=PULL_POLICIES, doc="Always | IfNotPresent | Never"),
        "image_pull_secrets": Field((list, str), default=[], doc="names of registry secrets"),
        "service_account": Field((str,), doc="service account of the pods"),
        "node_selector": Field((dict,), default={}, doc="node labels the pods must match"),
        "labels": Field((dict,), default={}, doc="extra labels of the Jobs and pods"),
        "env": Field((dict,), default={}, env=True, doc="environment variables of the task"),
        "run_as": Field((str, int), doc="uid[:gid] of the task (default: the host user's; the pod runs with runAsNonRoot unless uid 0)"),
        "read_only_root": Field((bool,), default=True, doc="the image's root filesystem read-only (a private emptyDir /tmp is writable)"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._network_policies = False  # a NetworkPolicy was (or may have been) created by this run
        self._api: Api | None = None
        self._context: str | None = None

    # -- configuration ---------------------------------------------------------------------------
    def _get(self, key: str) -> Any:
        value = self.config.get(key)
        return None if value is None or value == "" or value == MISSING else value

    def seconds(self, key: str, default: float) -> float:
        """A duration setting (-P passes '0.5' as a string: floats are not typed, to keep versions intact)."""
        value = self._get(key)
        if value is None:
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"{self.name} setting {key}: '{value}' is not a number of seconds", f"e.g. -Prunner.{key}={default:g}") from None
        if number <= 0:
            raise UsageError(f"{self.name} setting {key}: must be more than 0 seconds, not {value}", f"e.g. -Prunner.{key}={default:g}")
        return number

    @property
    def image(self) -> str:
        value = self._get("image")
        if value is None:
            value = (self.cube.section("docker") or {}).get("image") if self.cube.raw_section("docker") else None
        if not isinstance(value, str) or not value.strip():
            raise UsageError(f"the {self.name} runner needs an image", f"set docker.image in {self.cube.file}, or -Prunner.image=IMAGE")
        return value.strip()

    @property
    def namespace(self) -> str:
        return str(self._get("namespace") or "default")

    @property
    def volume(self) -> str:
        return str(self._get("volume") or "pvc")

    @property
    def pvc(self) -> str:
        value = self._get("pvc")
        return str(value) if value is not None else dns_label(self.cube.name, 63, "workspace")

    @property
    def mount_path(self) -> str:
        return f"{MOUNT_ROOT}/{self.pvc}"

    @property
    def sub_path(self) -> str:
        value = str(self._get("sub_path") or "").strip("/")
        return posixpath.normpath(value) if value else ""

    @property
    def host_path(self) -> str:
        value = self._get("host_path")
        return os.path.abspath(os.path.expanduser(str(value))) if value is not None else str(self.cube.workspace)

    def storage(self) -> str:
        value = self._get("storage")
        if value is None:
            disk = self.cube.platform.get("host_disk_space_gb")
            if isinstance(disk, (int, float)) and not isinstance(disk, bool) and disk > 0:
                return gib_quantity(disk)
            return "1Gi"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return gib_quantity(value)
        return str(value)

    def memory(self) -> str | None:
        if self.options.memory:
            return memory_quantity(self.options.memory, "--memory")
        value = self._get("memory")
        if value is not None:
            return str(value)  # a Kubernetes quantity (or a number of bytes); checked with the manifest
        gb = self.cube.platform.get("host_memory_gb")
        if isinstance(gb, (int, float)) and not isinstance(gb, bool) and gb > 0:
            return gib_quantity(gb)
        return None

    def gpu_count(self) -> int:
        from cuberun.gpus import effective_gpus

        request = effective_gpus(self.options.gpus, self.cube.accelerator_count)
        if request.all:
            raise UsageError(f"--gpus=all cannot be expressed on {self.name}: Kubernetes schedules a number of GPUs", "give a count, e.g. --gpus=2")
        if request.devices:
            raise UsageError(
                f"--gpus=device=... cannot be expressed on {self.name}: the scheduler picks the devices", f"give a count, e.g. --gpus={len(request.devices)}"
            )
        return request.count

    def resources(self) -> dict[str, dict[str, str]]:
        requests: dict[str, str] = {}
        limits: dict[str, str] = {}
        memory = self.memory()
        if memory:
            requests["memory"] = limits["memory"] = memory
        cpu = self._get("cpu")
        if cpu is not None:
            requests["cpu"] = limits["cpu"] = str(cpu)
        gpus = self.gpu_count()
        if gpus:
            limits[str(self._get("gpu_resource") or "nvidia.com/gpu")] = str(gpus)
        out: dict[str, dict[str, str]] = {}
        if requests:
            out["requests"] = requests
        if limits:
            out["limits"] = limits
        return out

    def new_job_name(self, task: str) -> str:
        """A fresh Job name (random suffix): decided once per run of a task, in its plan."""
        return job_name(self.cube.name, task, unique_suffix())

    def labels(self, task: str, job: str | None = None) -> dict[str, str]:
        labels = {str(k): str(v) for k, v in (self._get("labels") or {}).items()}
        labels.update(
            {
                LABEL_CUBE: label_value(self.cube.name) or "cube",
                LABEL_TASK: label_value(task) or "task",
                "app.kubernetes.io/managed-by": MANAGED_BY,
            }
        )
        if job:
            labels[LABEL_JOB] = job
        return labels

    # -- paths and arguments -----------------------------------------------------------------------
    def container_path(self, task: ResolvedTask, param: ResolvedParam) -> str:
        """Where a parameter's host path is inside the pod: `<mount>/<path relative to the workspace>`."""
        workspace = os.path.normpath(str(task.workspace))
        path = os.path.normpath(str(param.host_path))
        rel = os.path.relpath(path, workspace)
        if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
            raise UsageError(
                f"task '{task.name}', {param.io} '{param.name}': {path} is outside the workspace {workspace}; "
                f"the {self.name} runner mounts only the workspace (at {self.mount_path})",
                f"put it under the workspace (and on the volume), or override {param.name}=RELATIVE/PATH",
            )
        return self.mount_path if rel == "." else posixpath.join(self.mount_path, *rel.split(os.sep))

    def container_args(self, task: ResolvedTask) -> tuple[list[str] | None, list[str]]:
        """(command, args): the entrypoint tokens replace the image ENTRYPOINT and drop the task name."""
        params = [f"--{p.name}={self.container_path(task, p)}" for p in task.params]
        entry = task.entrypoint
        if entry:
            return entry, params
        return None, task.task_args(params)

    def env(self) -> list[dict[str, str]]:
        merged: dict[str, str] = {}
        for key, value in (self._get("env") or {}).items():
            merged[str(key)] = "" if value is None else (("true" if value else "false") if isinstance(value, bool) else str(value))
        merged.update(self.options.extra_env)
        return [{"name": k, "value": v} for k, v in merged.items()]

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.k8s_policy import k8s_policy

        return k8s_policy(self, task)

    # -- manifests (pure) --------------------------------------------------------------------------
    def volume_spec(self) -> dict[str, Any]:
        if self.volume == "hostPath":
            return {"name": VOLUME_NAME, "hostPath": {"path": self.host_path, "type": "DirectoryOrCreate"}}
        return {"name": VOLUME_NAME, "persistentVolumeClaim": {"claimName": self.pvc}}

    def job_manifest(self, task: ResolvedTask, name: str) -> dict[str, Any]:
        command, args = self.container_args(task)
        container: dict[str, Any] = {"name": CONTAINER_NAME, "image": self.image}
        if self._get("image_pull_policy"):
            container["imagePullPolicy"] = self._get("image_pull_policy")
        if command:
            container["command"] = command
        container["args"] = args
        env = self.env()
        if env:
            container["env"] = env
        resources = self.resources()
        if resources:
            container["resources"] = resources
        policy = self.policy(task)
        pod_security, container_security = security_contexts(self, policy)
        container["securityContext"] = container_security
        mount: dict[str, Any] = {"name": VOLUME_NAME, "mountPath": self.mount_path}
        if self.sub_path:
            mount["subPath"] = self.sub_path
        inputs = input_mounts(self, task, policy, VOLUME_NAME)
        if any(m["mountPath"] == self.mount_path for m in inputs):  # the whole workspace is an input
            mount["readOnly"] = True
            inputs = [m for m in inputs if m["mountPath"] != self.mount_path]
        container["volumeMounts"] = [mount, *inputs, {"name": TMP_VOLUME, "mountPath": "/tmp"}]
        pod: dict[str, Any] = {"restartPolicy": "Never"}
        if self._get("service_account"):
            pod["serviceAccountName"] = self._get("service_account")
        if self._get("node_selector"):
            pod["nodeSelector"] = {str(k): str(v) for k, v in self._get("node_selector").items()}
        secrets_ = self._get("image_pull_secrets")
        if secrets_:
            names = [secrets_] if isinstance(secrets_, str) else list(secrets_)
            pod["imagePullSecrets"] = [{"name": str(n)} for n in names]
        pod["securityContext"] = pod_security
        pod["containers"] = [container]
        pod["volumes"] = [self.volume_spec(), {"name": TMP_VOLUME, "emptyDir": {}}]
        spec: dict[str, Any] = {"backoffLimit": int(self.config.get("backoff_limit") or 0)}
        for key, field_name in (("active_deadline_seconds", "activeDeadlineSeconds"), ("ttl_seconds_after_finished", "ttlSecondsAfterFinished")):
            if self._get(key) is not None:
                spec[field_name] = int(self._get(key))
        spec.update(native_limits(limits(self.options, task.task)))  # --timeout/--retries, tasks.<t>.timeout/retries win
        labels = self.labels(task.name, name)
        spec["template"] = {"metadata": {"labels": dict(labels)}, "spec": pod}
        manifest = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": labels,
                "annotations": {"cuberun.io/cube-file": str(self.cube.file), "cuberun.io/task-name": task.name},
            },
            "spec": spec,
        }
        ensure_valid(manifest, f"Job for task '{task.name}'")
        return manifest

    def pvc_manifest(self) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "accessModes": [str(self._get("access_mode") or "ReadWriteOnce")],
            "resources": {"requests": {"storage": self.storage()}},
        }
        if self._get("storage_class"):
            spec["storageClassName"] = self._get("storage_class")
        manifest = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {
                "name": self.pvc,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, LABEL_CUBE: label_value(self.cube.name) or "cube"},
            },
            "spec": spec,
        }
        ensure_valid(manifest, f"PersistentVolumeClaim '{self.pvc}'")
        return manifest

    def creates_pvc(self) -> bool:
        return self.volume == "pvc" and bool(self.config.get("create_pvc"))

    def configure_steps(self) -> list[Step]:
        if not self.creates_pvc():
            return []
        return [ManifestStep(("kubectl", "apply", "-f", "-"), "pvc", manifest=self.pvc_manifest())]

    def network_policy(self, task: ResolvedTask, name: str) -> dict[str, Any] | None:
        """The deny-all NetworkPolicy of the task's pod (named as its Job), when the policy has the network off."""
        if not needs_network_policy(self.policy(task)):
            return None
        manifest = network_policy_manifest(name, self.namespace, self.labels(task.name, name), {LABEL_JOB: name})
        ensure_valid(manifest, f"NetworkPolicy for task '{task.name}'")
        return manifest

    def plan(self, task: ResolvedTask) -> TaskPlan:
        """The Job's name is decided here, once per run of the task (`value("job")`)."""
        if type(self).run_steps is not KubernetesRunner.run_steps:  # a runner on top of this one with steps of its own (kubeflow)
            return super().plan(task)
        name = self.new_job_name(task.name)
        steps: list[Step] = []
        netpol = self.network_policy(task, name)
        if netpol is not None:
            steps.append(ManifestStep(("kubectl", "apply", "-f", "-"), "network-policy", manifest=netpol))
        steps.append(ManifestStep(("kubectl", "apply", "-f", "-"), "run", manifest=self.job_manifest(task, name)))
        return TaskPlan(task, tuple(steps), {"job": name})

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        return list(self.plan(task).steps)

    # -- the client ------------------------------------------------------------------------------
    def _import(self) -> Any:
        try:
            import kubernetes
            import kubernetes.client
            import kubernetes.config
        except ImportError:
            raise RunnerUnavailable(f"the {self.name} runner needs the 'kubernetes' package", K8S_HINT) from None
        return kubernetes

    def unavailable_reason(self) -> str | None:
        try:
            self._import()
        except RunnerUnavailable as exc:
            return exc.lines()[0]
        return None

    def _load_config(self) -> tuple[Any, str, bool]:
        """(client configuration, context name, in-cluster) from the kubeconfig or the pod's service account."""
        kubernetes = self._import()  # Any: the client's own annotations are partial (untyped config loaders)
        client, kconfig = kubernetes.client, kubernetes.config

        cfg = client.Configuration()
        path = self._get("kubeconfig")
        context = self._get("context")
        in_cluster = self.config.get("in_cluster")
        if in_cluster is True:
            try:
                kconfig.load_incluster_config(client_configuration=cfg)
            except kconfig.ConfigException as exc:
                raise RunnerUnavailable(f"in_cluster is set, but this is not a pod with a service account: {_short(exc)}") from None
            return cfg, "in-cluster", True
        if path is not None:
            path = os.path.expanduser(str(path))
            if not os.path.isfile(path):
                raise RunnerUnavailable(f"kubeconfig {path} does not exist", "fix -Prunner.kubeconfig=PATH")
        else:
            env = os.environ.get("KUBECONFIG", "")
            candidates = [p for p in env.split(os.pathsep) if p] if env else [os.path.expanduser("~/.kube/config")]
            if not any(os.path.isfile(p) for p in candidates):
                if in_cluster is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                    try:
                        kconfig.load_incluster_config(client_configuration=cfg)
                        return cfg, "in-cluster", True
                    except kconfig.ConfigException:
                        pass
                raise RunnerUnavailable(
                    f"no kubeconfig found ({'KUBECONFIG=' + env if env else '~/.kube/config'}) and not running inside a cluster",
                    "set -Prunner.kubeconfig=PATH (or KUBECONFIG), or run where kubectl works",
                )
        try:
            kconfig.load_kube_config(config_file=path, context=context, client_configuration=cfg, persist_config=False)
            contexts, active = kconfig.list_kube_config_contexts(config_file=path)
        except (kconfig.ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
            raise RunnerUnavailable(f"cannot load the kubeconfig {path or '(default)'}: {_short(exc)}", "check it with: kubectl config view") from None
        name = str(context or (active or {}).get("name") or "")
        return cfg, name, False

    def api(self) -> Api:
        if self._api is None:
            cfg, context, _ = self._load_config()
            kubernetes = self._import()
            client = kubernetes.client
            ApiException = kubernetes.client.exceptions.ApiException

            api_client = client.ApiClient(cfg)
            self._context = context
            self._api = Api(client.BatchV1Api(api_client), client.CoreV1Api(api_client), str(cfg.host), ApiException,
                            client.NetworkingV1Api(api_client))
        return self._api

    # -- configure -----------------------------------------------------------------------------
    def configure(self) -> None:
        """Check the workspace volume: the PVC must exist (or is created with `create_pvc`)."""
        if self.volume != "pvc":
            return
        api = self.api()
        try:
            found = api.call(f"read PersistentVolumeClaim {self.namespace}/{self.pvc}", api.core.read_namespaced_persistent_volume_claim,
                             self.pvc, self.namespace, ok404=True)
        except ApiError as exc:
            if exc.status != 403:
                raise
            warn(f"cannot check PersistentVolumeClaim {self.namespace}/{self.pvc} (forbidden); assuming it exists")
            return
        if found is not None:
            return
        if not self.creates_pvc():
            raise BackendError(
                f"PersistentVolumeClaim '{self.pvc}' does not exist in namespace '{self.namespace}'",
                "create it (with the workspace's data on it), set -Prunner.pvc=NAME, or let configure create it: -Prunner.create_pvc=true",
            )
        manifest = self.pvc_manifest()
        api.call(f"create PersistentVolumeClaim {self.pvc}", api.core.create_namespaced_persistent_volume_claim, self.namespace, manifest)
        say(f"created PersistentVolumeClaim {self.namespace}/{self.pvc} ({manifest['spec']['resources']['requests']['storage']})")

    # -- run -----------------------------------------------------------------------------------
    def _warn_ignored_options(self) -> None:
        for flag, value in (("--security", self.options.security), ("--cpu", self.options.cpus)):
            if value:
                warn(f"{flag}={value} does not apply to the {self.name} runner and is ignored"
                     + (" (set cpu: in the platform for CPU requests)" if flag == "--cpu" else ""))

    def delete_job(self, name: str) -> None:
        api = self.api()
        api.call(f"delete Job {name}", api.batch.delete_namespaced_job, name, self.namespace, ok404=True,
                 timeout=DELETE_TIMEOUT, propagation_policy="Background")

    def delete_network_policy(self, name: str) -> None:
        api = self.api()
        api.call(f"delete NetworkPolicy {name}", api.networking.delete_namespaced_network_policy, name, self.namespace, ok404=True,
                 timeout=DELETE_TIMEOUT)

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

    def _cleanup(self, name: str) -> bool:
        """Delete the Job, then its NetworkPolicy (if any)."""
        gone = self._cleanup_object(name, "Job", self.delete_job)
        return self._cleanup_network_policy(name) and gone

    def _cleanup_network_policy(self, name: str) -> bool:
        if not self._network_policies:
            return True
        return self._cleanup_object(name, "NetworkPolicy", self.delete_network_policy)

    def _cleanup_object(self, name: str, kind: str, delete: Any) -> bool:
        """Delete a Job or NetworkPolicy; while the API server is unreachable, try again with
        backoff for `delete_retry` seconds (a second Ctrl-C stops trying). False, with one line
        that names the object to delete by hand, when it could not be deleted."""
        from cuberun.process import CANCEL

        deadline = time.monotonic() + self.seconds("delete_retry", 60)
        pause = 0.5
        told = False
        while True:
            try:
                delete(name)
                if told:
                    say(f"deleted {kind} {self.namespace}/{name}: the API server answered again")
                return True
            except RunnerUnavailable as exc:  # unreachable: it may come back (a restart)
                problem = exc.lines()[0]
                if time.monotonic() + pause > deadline or CANCEL.count >= 2:
                    break
                if not told:
                    say(f"the Kubernetes API server is unreachable; trying to delete {kind} {self.namespace}/{name} "
                        f"for {max(0.0, deadline - time.monotonic()):.0f} s more (Ctrl-C again to stop)")
                    told = True
                time.sleep(pause)
                pause = min(pause * 2, 5.0)
            except CuberunError as exc:
                problem = exc.lines()[0]
                break
        warn(f"could not delete {kind} {self.namespace}/{name} (delete it by hand: kubectl delete {kind.lower()} {name} -n {self.namespace}): {problem}")
        return False

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

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """Stable across runs (the Job name is random): the container's command line, image,
        resources and volume."""
        command, args = self.container_args(task)
        return {
            "runner": self.name,
            "command": [[*(command or []), *args]],
            "image": self.image,
            "resources": self.resources(),
            "volume": self.volume_spec(),
            "mount_path": self.mount_path,
            "env": _env_identity(self.env()),
        }

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


def _pod_seconds(terminated: Mapping[str, Any]) -> dict[str, float]:
    """How long a pod's container ran, from its terminated state's timestamps (whole seconds)."""
    from datetime import datetime

    try:
        start = datetime.fromisoformat(str(terminated["startedAt"]).replace("Z", "+00:00"))
        end = datetime.fromisoformat(str(terminated["finishedAt"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return {}
    return {"elapsed_s": max(0.0, (end - start).total_seconds())}


def _env_identity(env: Sequence[Mapping[str, str]]) -> dict[str, str]:
    """Environment variables for an identity: values, with secret ones as keyed digests."""
    from cuberun.secretid import SECRET_NAME, secret_digest

    return {e["name"]: secret_digest(e["value"]) if SECRET_NAME.search(e["name"]) else e["value"] for e in env}
