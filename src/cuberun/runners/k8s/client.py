"""The k8s runner's client layer: the `kubernetes` package (imported only here, when the API
server is contacted), the kubeconfig, configure (the workspace PVC) and deleting Jobs and
NetworkPolicies (retried while the API server is unreachable)."""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from cuberun.console import say, warn
from cuberun.errors import BackendError, CuberunError, RunnerUnavailable
from cuberun.runners.k8s.api import Api, ApiError, _short
from cuberun.runners.k8s.plan import K8sPlan

if TYPE_CHECKING:
    pass

K8S_HINT = "pip install 'cuberun[k8s]'"
DELETE_TIMEOUT = 10.0


class K8sClient(K8sPlan):
    """The API client, configure, and deletes."""

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

    # -- deleting ------------------------------------------------------------------------------
    def delete_job(self, name: str) -> None:
        api = self.api()
        api.call(f"delete Job {name}", api.batch.delete_namespaced_job, name, self.namespace, ok404=True,
                 timeout=DELETE_TIMEOUT, propagation_policy="Background")

    def delete_network_policy(self, name: str) -> None:
        api = self.api()
        api.call(f"delete NetworkPolicy {name}", api.networking.delete_namespaced_network_policy, name, self.namespace, ok404=True,
                 timeout=DELETE_TIMEOUT)

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
