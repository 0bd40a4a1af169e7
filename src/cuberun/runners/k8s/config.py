"""The k8s runner's bottom layer: its settings (image, namespace, volume, resources, labels),
where a parameter is inside the pod, the container's command and env, and the run policy."""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import UsageError
from cuberun.runners.batch import BatchRunner
from cuberun.runners.k8s.api import Api
from cuberun.runners.k8s.manifests import (
    ACCESS_MODES,
    PULL_POLICIES,
    dns_label,
    gib_quantity,
    job_name,
    label_value,
    memory_quantity,
    shm_quantity,
    unique_suffix,
)
from cuberun.schema import Field
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.gpus import GpuRequest
    from cuberun.policy import Policy
    from cuberun.resolve import ResolvedParam, ResolvedTask

MOUNT_ROOT = "/mnt/mlcube"
VOLUME_NAME = "workspace"
MANAGED_BY = "cuberun"
LABEL_CUBE = "app.kubernetes.io/name"
LABEL_TASK = "app.kubernetes.io/component"
LABEL_JOB = "cuberun.io/job"
MISSING = "???"  # OmegaConf's "mandatory" marker in the reference's settings
SCHEMA: dict[str, Field] = {
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


class K8sConfig(BatchRunner[_JobPlan, _JobRef]):
    """The settings and the task's container (paths, arguments, env, policy): what every layer above reads."""

    section: ClassVar[str]  # "k8s" (runner.py); kubeflow's "kubeflow": its cube section is never None

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
            from cuberun.runners.imagefile import refuse_image_file

            refuse_image_file(  # a container_config.yaml image file: the cluster's nodes pull images from a registry
                self, "Kubernetes nodes run OCI images pulled from a registry", "the cluster's nodes (they pull images from a registry)",
                "push the Docker image the SIF was built from to a registry the cluster reaches and pass -Prunner.image=REGISTRY/NAME:TAG, "
                "or run it with --platform=singularity",
                "load it and push it to a registry the cluster reaches (docker load -i ARCHIVE; docker tag IMAGE REGISTRY/NAME:TAG; "
                "docker push REGISTRY/NAME:TAG), then pass -Prunner.image=REGISTRY/NAME:TAG")
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

    def gpu_count(self, task: ResolvedTask | None = None) -> int:
        """--gpus, else a container_config.yaml task's own run_args.gpus, else platform.accelerator_count."""
        from cuberun.gpus import gpu_count

        return gpu_count(self.options.gpus, self.cube, task, platform=self.name, allocates="Kubernetes schedules", refuse=self._refuse_gpus)

    def _refuse_gpus(self, request: GpuRequest) -> UsageError:
        if request.all:
            return UsageError(f"--gpus=all cannot be expressed on {self.name}: Kubernetes schedules a number of GPUs", "give a count, e.g. --gpus=2")
        return UsageError(f"--gpus=device=... cannot be expressed on {self.name}: the scheduler picks the devices",
                          f"give a count, e.g. --gpus={len(request.devices)}")

    def resources(self, task: ResolvedTask | None = None) -> dict[str, dict[str, str]]:
        requests: dict[str, str] = {}
        limits: dict[str, str] = {}
        memory = self.memory()
        if memory:
            requests["memory"] = limits["memory"] = memory
        cpu = self._get("cpu")
        if cpu is not None:
            requests["cpu"] = limits["cpu"] = str(cpu)
        gpus = self.gpu_count(task)
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
    def workspace_rel(self, task: ResolvedTask, param: ResolvedParam) -> str:
        """A parameter's host path relative to the workspace, '/'-separated ('.' for the workspace
        itself); a path outside it cannot be mounted (the volume holds the workspace only)."""
        workspace = os.path.normpath(str(task.workspace))
        path = os.path.normpath(str(param.host_path))
        rel = os.path.relpath(path, workspace)
        if rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
            where = f"at {self.mount_path}" if param.mount_path is None else f"its {self.volume} volume, each volume through subPath"
            raise UsageError(
                f"task '{task.name}', {param.io} '{param.name}': {path} is outside the workspace {workspace}; "
                f"the {self.name} runner mounts only the workspace ({where})",
                f"put it under the workspace (and on the volume), or override {param.name}=RELATIVE/PATH",
            )
        return "/".join(rel.split(os.sep))

    def container_path(self, task: ResolvedTask, param: ResolvedParam) -> str:
        """Where a parameter's host path is inside the pod: `<mount>/<path relative to the workspace>`,
        or a container_config.yaml volume's own mount path."""
        rel = self.workspace_rel(task, param)
        if param.mount_path is not None:
            return param.mount_path
        return self.mount_path if rel == "." else posixpath.join(self.mount_path, rel)

    def container_args(self, task: ResolvedTask) -> tuple[list[str] | None, list[str]]:
        """(command, args): the entrypoint tokens replace the image ENTRYPOINT and drop the task name.
        A container_config.yaml task: its run_args entrypoint and command, no `--name=path` arguments."""
        if task.task.run_args is not None:
            return task.entrypoint, task.task_args(())
        params = [f"--{p.name}={self.container_path(task, p)}" for p in task.params]
        entry = task.entrypoint
        if entry:
            return entry, params
        return None, task.task_args(params)

    def env(self, task: ResolvedTask | None = None) -> list[dict[str, str]]:
        """The settings' `env`, then the task's own (container_config.yaml run_args.environment), then --env."""
        merged: dict[str, str] = {}
        for key, value in (self._get("env") or {}).items():
            merged[str(key)] = "" if value is None else (("true" if value else "false") if isinstance(value, bool) else str(value))
        if task is not None:
            merged.update(task.environment)
        merged.update(self.options.extra_env)
        return [{"name": k, "value": v} for k, v in merged.items()]

    def shm_size(self, task: ResolvedTask) -> str | None:
        """A container_config.yaml task's run_args.shm_size as a quantity (the /dev/shm emptyDir's sizeLimit)."""
        size = task.task.run_args.shm_size if task.task.run_args is not None else None
        return shm_quantity(size, f"{self.cube.file}: tasks.{task.name}.run_args.shm_size") if size is not None else None

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.k8s.policy import k8s_policy

        return k8s_policy(self, task)
