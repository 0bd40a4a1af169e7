"""The run policy (cuberun.policy) mapped onto a Kubernetes Job; pure (no client, no cluster).

- the pod runs as the host user's uid:gid (or `run_as: UID[:GID]`) with `runAsNonRoot: true`;
  uid 0 (cuberun itself run as root, or `run_as: 0`) cannot be non-root: the pod then runs as
  root, recorded as the relaxation `user`;
- the container: `allowPrivilegeEscalation: false`, `privileged: false`, every capability dropped,
  `readOnlyRootFilesystem: true` (`read_only_root: false` relaxes it) and an `emptyDir` at /tmp
  (a private, writable /tmp);
- every input is mounted again read-only over the workspace volume (`subPath`, `readOnly: true`);
  outputs stay on the writable workspace mount; a container_config.yaml task gets no workspace
  mount, only its volumes at their mount paths (`subPath`), inputs read-only, outputs writable;
- no network: a NetworkPolicy selecting only the Job's pod (label `cuberun.io/job`) with no
  ingress and no egress rule (deny all), created before the Job and deleted after it. It is
  enforced only where the cluster's network plugin implements NetworkPolicy (Calico, Cilium, ...);
  without one the API server stores it and nothing enforces it. `--network=NAME` (any name but
  `none`) or `platform.need_internet_access: true` leave it out (recorded).
"""

from __future__ import annotations

import os
import posixpath
from typing import TYPE_CHECKING, Any

from cuberun.errors import UsageError
from cuberun.policy import OFF, Policy, Relaxation, decide
from cuberun.valueclass import replace

if TYPE_CHECKING:
    from cuberun.resolve import ResolvedTask
    from cuberun.runners.k8s.config import K8sConfig

TMP_VOLUME = "tmp"
SHM_VOLUME = "shm"


def _source(runner: K8sConfig, key: str) -> str:
    return "cube" if key in (runner.cube.raw_section(runner.section) or {}) else "settings"


def run_as(runner: K8sConfig) -> tuple[int, int | None, str]:
    """(uid, gid, source) of the pod: `run_as` (cube or settings), else the host user's ("host")."""
    value = runner._get("run_as")
    if value is None:
        return os.getuid(), os.getgid(), "host"
    uid, _, gid = str(value).partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise UsageError(f"run_as: '{value}' is not uid[:gid]", "write e.g. run_as: '1000:1000'")
    return int(uid), int(gid) if gid else None, _source(runner, "run_as")


def k8s_policy(runner: K8sConfig, task: ResolvedTask) -> Policy:
    keep = bool(runner.config.get("keep_jobs"))
    policy = decide(
        need_internet=runner.cube.platform.get("need_internet_access") is True,
        cli_network=runner.options.network,
        settings_network=None,
        cube_network=None,
        input_mode=runner.options.mount or None,
        input_mode_source="cli",
        host_user=(True, "cube"),
        remove=(not keep, _source(runner, "keep_jobs")),
        raw_args=(),
        allow_run_args=runner.options.allow_run_args,
        writable_inputs=[p.name for p in task.params if p.io == "input" and p.opts == "rw"],
    )
    more: list[Relaxation] = []
    uid, _, source = run_as(runner)
    if uid == 0:
        why = "cuberun runs as root; set run_as: UID:GID for a non-root pod" if source == "host" else "run_as: 0"
        more.append(Relaxation("user", f"the pod runs as root (uid 0): {why}", source))
    if runner.config.get("read_only_root", True) is False:
        more.append(Relaxation("writable-root", "the image's root filesystem is writable (read_only_root: false)", _source(runner, "read_only_root")))
    if not more:
        return policy
    return replace(policy, relaxations=(*policy.relaxations, *more))


def _rel(task: ResolvedTask, path: str) -> str:
    return os.path.relpath(os.path.normpath(path), os.path.normpath(str(task.workspace)))


def input_mounts(runner: K8sConfig, task: ResolvedTask, policy: Policy, volume: str) -> list[dict[str, Any]]:
    """Read-only mounts of the inputs over the workspace mount (the same volume, `subPath`).
    Outputs are never inside inputs (resolve refuses that), so no output is made read-only; an
    input that is the whole workspace (a task without outputs) gives a mount at the workspace's
    own path: the caller makes the workspace mount read-only instead."""
    if not policy.inputs_read_only:
        return []
    mounts: list[dict[str, Any]] = []
    seen: set[str] = set()
    for p in task.params:
        if p.io != "input" or p.opts == "rw":
            continue
        target = runner.container_path(task, p)
        if target in seen:
            continue
        seen.add(target)
        rel = _rel(task, str(p.host_path)).replace(os.sep, "/")
        if rel == ".":
            mounts.append({"name": volume, "mountPath": target, "readOnly": True})
            continue
        sub = posixpath.join(runner.sub_path, rel) if runner.sub_path else rel
        mounts.append({"name": volume, "mountPath": target, "subPath": sub, "readOnly": True})
    return mounts


def fixed_mounts(runner: K8sConfig, task: ResolvedTask, policy: Policy, volume: str) -> list[dict[str, Any]]:
    """A container_config.yaml task: each volume at its own mount path, from the workspace volume
    (`subPath`): inputs read-only (unless the policy relaxes that), outputs writable. The workspace
    itself is not mounted, so an input is reachable only through its read-only mount."""
    mounts: list[dict[str, Any]] = []
    for p in task.params:
        target = runner.container_path(task, p)
        sub = "/".join(part for part in (runner.sub_path, runner.workspace_rel(task, p)) if part and part != ".")
        mount: dict[str, Any] = {"name": volume, "mountPath": target}
        if sub:
            mount["subPath"] = sub
        if p.io == "input" and policy.inputs_read_only and p.opts != "rw":
            mount["readOnly"] = True
        mounts.append(mount)
    return mounts


def security_contexts(runner: K8sConfig, policy: Policy) -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod securityContext, container securityContext)."""
    uid, gid, _ = run_as(runner)
    pod: dict[str, Any] = {"runAsUser": uid}
    if gid is not None:
        pod["runAsGroup"] = gid
    if uid != 0:
        pod["runAsNonRoot"] = True
    container: dict[str, Any] = {
        "allowPrivilegeEscalation": False,
        "privileged": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": runner.config.get("read_only_root", True) is not False,
    }
    return pod, container


def network_policy_manifest(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str]) -> dict[str, Any]:
    """Deny all ingress and egress of the pods matching `selector` (no rules of either kind)."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
        "spec": {"podSelector": {"matchLabels": dict(selector)}, "policyTypes": ["Ingress", "Egress"]},
    }


def needs_network_policy(policy: Policy) -> bool:
    return policy.network == OFF
