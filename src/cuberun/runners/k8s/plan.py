"""The k8s runner's manifests layer (pure): the Job, PersistentVolumeClaim and NetworkPolicy of a
task, each checked before it is printed or submitted, and the plan (the dry-run steps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cuberun.retry import limits
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.k8s.config import LABEL_CUBE, LABEL_JOB, MANAGED_BY, VOLUME_NAME, K8sConfig
from cuberun.runners.k8s.manifests import CONTAINER_NAME, ManifestStep, ensure_valid, label_value, native_limits
from cuberun.runners.k8s.policy import (
    SHM_VOLUME,
    TMP_VOLUME,
    fixed_mounts,
    input_mounts,
    needs_network_policy,
    network_policy_manifest,
    security_contexts,
)

if TYPE_CHECKING:
    from cuberun.policy import Policy
    from cuberun.resolve import ResolvedTask


class K8sPlan(K8sConfig):
    """The manifests of a run and the plan of a task."""

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
        env = self.env(task)
        if env:
            container["env"] = env
        resources = self.resources(task)
        if resources:
            container["resources"] = resources
        policy = self.policy(task)
        pod_security, container_security = security_contexts(self, policy)
        container["securityContext"] = container_security
        mounts, volumes = self.mounts(task, policy)
        container["volumeMounts"] = mounts
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
        pod["volumes"] = volumes
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

    def mounts(self, task: ResolvedTask, policy: Policy) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(the container's volumeMounts, the pod's volumes). An mlcube.yaml task: the workspace at
        `mount_path`, its inputs again read-only over it, a private /tmp. A container_config.yaml
        task: its volumes at their own mount paths (no workspace mount), /tmp, and /dev/shm as a
        memory emptyDir of run_args.shm_size; a volume mounted at /tmp or /dev/shm itself replaces those."""
        if task.task.run_args is None:
            mount: dict[str, Any] = {"name": VOLUME_NAME, "mountPath": self.mount_path}
            if self.sub_path:
                mount["subPath"] = self.sub_path
            inputs = input_mounts(self, task, policy, VOLUME_NAME)
            if any(m["mountPath"] == self.mount_path for m in inputs):  # the whole workspace is an input
                mount["readOnly"] = True
                inputs = [m for m in inputs if m["mountPath"] != self.mount_path]
            return [mount, *inputs, {"name": TMP_VOLUME, "mountPath": "/tmp"}], [self.volume_spec(), {"name": TMP_VOLUME, "emptyDir": {}}]
        mounts = fixed_mounts(self, task, policy, VOLUME_NAME)
        volumes = [self.volume_spec()] if mounts else []
        taken = {m["mountPath"] for m in mounts}
        if "/tmp" not in taken:
            mounts.append({"name": TMP_VOLUME, "mountPath": "/tmp"})
            volumes.append({"name": TMP_VOLUME, "emptyDir": {}})
        shm = self.shm_size(task)
        if shm is not None and "/dev/shm" not in taken:
            mounts.append({"name": SHM_VOLUME, "mountPath": "/dev/shm"})
            volumes.append({"name": SHM_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": shm}})
        return mounts, volumes

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
        if type(self).run_steps is not K8sPlan.run_steps:  # a runner on top of this one with steps of its own (kubeflow)
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
