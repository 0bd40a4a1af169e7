"""Kubernetes names, quantities and manifest checks (what kubernetes-validate misses); pure."""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cuberun.errors import UsageError
from cuberun.runners.base import Step
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    pass

CONTAINER_NAME = "task"
REQUEST_TIMEOUT = 30.0
ACCESS_MODES = ("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
JOB_RESTART_POLICIES = ("Never", "OnFailure")
HOST_PATH_TYPES = ("", "DirectoryOrCreate", "Directory", "FileOrCreate", "File", "Socket", "CharDevice", "BlockDevice")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")
_LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_QUANTITY = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E|[eE][+-]?\d+)?\Z")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*\Z")
_DOCKER_SIZE = re.compile(r"^(\d+)\s*([bkmgtp])b?\Z", re.IGNORECASE)
_STANDARD_RESOURCES = ("cpu", "memory", "ephemeral-storage", "storage")



# -- names and quantities -----------------------------------------------------------------------
def dns_label(text: str, max_len: int = 63, fallback: str = "x") -> str:
    """`text` as a DNS-1123 label: lowercase alphanumerics and '-', at most max_len characters."""
    out = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    out = out[:max_len].rstrip("-")
    return out or fallback


def unique_suffix(length: int = 5) -> str:
    """Like the API server's generateName suffix: lowercase letters and digits."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def job_name(cube: str, task: str, suffix: str) -> str:
    """`cuberun-<cube>-<task>-<suffix>`, at most 63 characters (Job names become pod labels)."""
    base = dns_label(f"cuberun-{cube}-{task}", 63 - len(suffix) - 1)
    return f"{base}-{suffix}"


def label_value(text: str) -> str:
    """`text` as a valid label value (at most 63 characters of [A-Za-z0-9-_.], alphanumeric ends)."""
    out = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63]
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", out)


def is_quantity(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value >= 0
    return isinstance(value, str) and bool(_QUANTITY.match(value)) and not value.startswith("-")


def gib_quantity(value: float) -> str:
    """A size in GiB (a cube's host_memory_gb / host_disk_space_gb) as a quantity: 2 -> 2Gi, 0.5 -> 512Mi."""
    mib = round(float(value) * 1024)
    if mib <= 0:
        raise UsageError(f"a size of {value} GB is too small", "give at least 0.001 GB")
    return f"{mib // 1024}Gi" if mib % 1024 == 0 else f"{mib}Mi"


def memory_quantity(value: str | int | float, what: str) -> str:
    """A memory size (--memory, docker-style) as a Kubernetes quantity. Docker's one-letter units
    are binary whatever their case (`4g`, `4G`, `512m`, `1gb` -> 4Gi, 4Gi, 512Mi, 1Gi; note that
    Kubernetes reads `512m` as milli-bytes); other quantities (`1.5Gi`, `1e9`) and numbers of
    bytes are kept."""
    if isinstance(value, bool):
        raise UsageError(f"{what}: {value!r} is not a memory size", "write e.g. 4Gi or 4g")
    if isinstance(value, (int, float)):
        if value <= 0:
            raise UsageError(f"{what}: {value!r} is not a memory size", "write e.g. 4Gi or 4g")
        return str(int(value)) if float(value).is_integer() else str(value)
    text = str(value).strip()
    m = _DOCKER_SIZE.match(text)
    if m:  # docker's units are binary whatever their case: 4g, 4G, 4gb = 4Gi
        number, unit = m.group(1), m.group(2).upper()
        return number if unit == "B" else f"{number}{unit}i"
    if is_quantity(text):
        return text
    raise UsageError(f"{what}: '{value}' is not a memory size", "write a Kubernetes quantity (4Gi, 512Mi) or docker's form (4g, 512m)")


_SHM_SIZE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([bkmg]?)b?\Z", re.IGNORECASE)
_BINARY = (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10))


def shm_quantity(value: str, what: str) -> str:
    """A container_config.yaml `shm_size` (docker's --shm-size: a number, optionally with b, k, m
    or g, binary whatever the case; bytes without a unit) as a quantity: 2gb -> 2Gi, 1.5g -> 1536Mi."""
    from fractions import Fraction

    m = _SHM_SIZE.match(str(value).strip())
    if m is None:
        raise UsageError(f"{what}: '{value}' is not a size", "write a number with a unit, e.g. 2gb or 512m")
    scale = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    size = int(-(-Fraction(m.group(1)) * scale // 1))  # whole bytes, rounded up
    if size <= 0:
        raise UsageError(f"{what}: '{value}' is not more than 0 bytes", "write a size such as 2gb, or remove shm_size")
    for suffix, unit in _BINARY:
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


# -- manifest checks (what kubernetes-validate does not catch) --------------------------------------
def _check_label(problems: list[str], where: str, value: Any, *, subdomain: bool = False) -> None:
    if not isinstance(value, str) or not value:
        problems.append(f"{where}: must be a non-empty string")
        return
    limit = 253 if subdomain else 63
    pattern = _DNS_SUBDOMAIN if subdomain else _DNS_LABEL
    kind = "DNS-1123 subdomain" if subdomain else "DNS-1123 label"
    if len(value) > limit or not pattern.match(value):
        problems.append(f"{where}: '{value}' is not a valid {kind} (at most {limit} lowercase letters, digits, '-'{', .' if subdomain else ''}; alphanumeric ends)")


def _check_qualified_name(problems: list[str], where: str, key: Any) -> None:
    if not isinstance(key, str) or not key:
        problems.append(f"{where}: a key must be a non-empty string")
        return
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        problems.append(f"{where}: the prefix of '{key}' is not a valid DNS-1123 subdomain")
    if len(name) > 63 or not _LABEL_NAME.match(name):
        problems.append(f"{where}: '{key}' is not a valid qualified name (at most 63 of [A-Za-z0-9-_.], alphanumeric ends)")


def _check_labels(problems: list[str], where: str, labels: Any) -> None:
    if labels is None:
        return
    if not isinstance(labels, Mapping):
        problems.append(f"{where}: must be a mapping")
        return
    for key, value in labels.items():
        _check_qualified_name(problems, f"{where}.{key}", key)
        if not isinstance(value, str) or len(value) > 63 or (value and not _LABEL_NAME.match(value)):
            problems.append(f"{where}.{key}: '{value}' is not a valid label value (at most 63 of [A-Za-z0-9-_.], alphanumeric ends)")


def _check_resources(problems: list[str], where: str, resources: Any) -> None:
    if not isinstance(resources, Mapping):
        return
    for kind in ("requests", "limits"):
        block = resources.get(kind) or {}
        for key, value in block.items():
            at = f"{where}.{kind}.{key}"
            if key not in _STANDARD_RESOURCES and not str(key).startswith("hugepages-"):
                _check_qualified_name(problems, at, key)
            if not is_quantity(value):
                problems.append(f"{at}: '{value}' is not a valid quantity (e.g. 2Gi, 500m, 1)")
            elif "/" in str(key) and not re.fullmatch(r"\+?\d+", str(value)):
                problems.append(f"{at}: extended resources take whole numbers, not '{value}'")
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    for key, value in requests.items():
        if "/" in str(key) and key in limits and str(limits[key]) != str(value):
            problems.append(f"{where}.requests.{key}: must equal the limit for an extended resource")


def _check_pod_spec(problems: list[str], where: str, spec: Any, restart_policies: Sequence[str]) -> None:
    if not isinstance(spec, Mapping):
        problems.append(f"{where}: must be a mapping")
        return
    policy = spec.get("restartPolicy")
    if policy not in restart_policies:
        problems.append(f"{where}.restartPolicy: '{policy}' is not allowed here; expected one of {', '.join(restart_policies)}")
    if spec.get("serviceAccountName") is not None:
        _check_label(problems, f"{where}.serviceAccountName", spec.get("serviceAccountName"), subdomain=True)
    _check_labels(problems, f"{where}.nodeSelector", spec.get("nodeSelector"))
    for i, secret in enumerate(spec.get("imagePullSecrets") or []):
        _check_label(problems, f"{where}.imagePullSecrets[{i}].name", (secret or {}).get("name"), subdomain=True)
    volumes: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        at = f"{where}.volumes[{i}]"
        name = vol.get("name")
        _check_label(problems, f"{at}.name", name)
        if name in volumes:
            problems.append(f"{at}.name: '{name}' is used twice")
        volumes.add(name)
        claim = vol.get("persistentVolumeClaim")
        if claim is not None:
            _check_label(problems, f"{at}.persistentVolumeClaim.claimName", claim.get("claimName"), subdomain=True)
        host = vol.get("hostPath")
        if host is not None:
            if not str(host.get("path") or "").startswith("/"):
                problems.append(f"{at}.hostPath.path: '{host.get('path')}' must be an absolute path")
            if host.get("type", "") not in HOST_PATH_TYPES:
                problems.append(f"{at}.hostPath.type: '{host.get('type')}' is not one of {', '.join(t for t in HOST_PATH_TYPES if t)}")
    containers = spec.get("containers") or []
    if not containers:
        problems.append(f"{where}.containers: at least one container is required")
    _check_security(problems, where, spec.get("securityContext"), containers)
    names: set[str] = set()
    for i, c in enumerate(containers):
        at = f"{where}.containers[{i}]"
        _check_label(problems, f"{at}.name", c.get("name"))
        if c.get("name") in names:
            problems.append(f"{at}.name: '{c.get('name')}' is used twice")
        names.add(c.get("name"))
        image = c.get("image")
        if not isinstance(image, str) or not image.strip() or image != image.strip():
            problems.append(f"{at}.image: must be a non-empty image reference without surrounding spaces")
        if c.get("imagePullPolicy") is not None and c.get("imagePullPolicy") not in PULL_POLICIES:
            problems.append(f"{at}.imagePullPolicy: '{c.get('imagePullPolicy')}' is not one of {', '.join(PULL_POLICIES)}")
        _check_resources(problems, f"{at}.resources", c.get("resources"))
        for j, env in enumerate(c.get("env") or []):
            if not _ENV_NAME.match(str(env.get("name") or "")):
                problems.append(f"{at}.env[{j}].name: '{env.get('name')}' is not a valid environment variable name")
        mounts: set[str] = set()
        for j, mount in enumerate(c.get("volumeMounts") or []):
            mat = f"{at}.volumeMounts[{j}]"
            if mount.get("name") not in volumes:
                problems.append(f"{mat}.name: no volume named '{mount.get('name')}'")
            path = str(mount.get("mountPath") or "")
            if not path.startswith("/") or ":" in path:
                problems.append(f"{mat}.mountPath: '{path}' must be an absolute path without ':'")
            if path in mounts:
                problems.append(f"{mat}.mountPath: '{path}' is mounted twice")
            mounts.add(path)
            sub = mount.get("subPath")
            if sub and (sub.startswith("/") or ".." in sub.split("/")):
                problems.append(f"{mat}.subPath: '{sub}' must be a relative path without '..'")


def check_manifest(doc: Mapping[str, Any]) -> list[str]:
    """Problems the API server would reject but the OpenAPI schema does not express: DNS-1123
    names, label syntax, Job restart policies, quantities, volume references. [] when fine."""
    problems: list[str] = []
    kind = doc.get("kind")
    meta = doc.get("metadata") or {}
    where = f"{kind}"
    if kind == "Job":
        _check_label(problems, f"{where}.metadata.name", meta.get("name"))
    else:
        _check_label(problems, f"{where}.metadata.name", meta.get("name"), subdomain=True)
    if meta.get("namespace") is not None:
        _check_label(problems, f"{where}.metadata.namespace", meta.get("namespace"))
    _check_labels(problems, f"{where}.metadata.labels", meta.get("labels"))
    if meta.get("annotations") is not None:
        for key in meta["annotations"]:
            _check_qualified_name(problems, f"{where}.metadata.annotations.{key}", key)
    spec = doc.get("spec") or {}
    if kind == "Job":
        for key, low in (("backoffLimit", 0), ("activeDeadlineSeconds", 1), ("ttlSecondsAfterFinished", 0), ("completions", 0), ("parallelism", 0)):
            value = spec.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < low):
                problems.append(f"{where}.spec.{key}: must be an integer of at least {low}, not {value!r}")
        template = spec.get("template") or {}
        _check_labels(problems, f"{where}.spec.template.metadata.labels", (template.get("metadata") or {}).get("labels"))
        _check_pod_spec(problems, f"{where}.spec.template.spec", template.get("spec"), JOB_RESTART_POLICIES)
    elif kind == "PersistentVolumeClaim":
        modes = spec.get("accessModes") or []
        if not modes:
            problems.append(f"{where}.spec.accessModes: at least one access mode is required")
        for mode in modes:
            if mode not in ACCESS_MODES:
                problems.append(f"{where}.spec.accessModes: '{mode}' is not one of {', '.join(ACCESS_MODES)}")
        storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage")
        if storage is None or not is_quantity(storage) or str(storage).strip("+0.") == "":
            problems.append(f"{where}.spec.resources.requests.storage: '{storage}' is not a positive quantity (e.g. 10Gi)")
        if spec.get("storageClassName"):
            _check_label(problems, f"{where}.spec.storageClassName", spec["storageClassName"], subdomain=True)
    elif kind == "Pod":
        _check_pod_spec(problems, f"{where}.spec", spec, ("Always", "OnFailure", "Never"))
    elif kind == "NetworkPolicy":
        selector = spec.get("podSelector")
        if not isinstance(selector, Mapping):
            problems.append(f"{where}.spec.podSelector: is required (an empty selector would select every pod of the namespace)")
        else:
            _check_labels(problems, f"{where}.spec.podSelector.matchLabels", selector.get("matchLabels"))
            if not selector.get("matchLabels") and not selector.get("matchExpressions"):
                problems.append(f"{where}.spec.podSelector: selects every pod of the namespace; cuberun selects only its Job's pod")
        for kind_ in spec.get("policyTypes") or []:
            if kind_ not in ("Ingress", "Egress"):
                problems.append(f"{where}.spec.policyTypes: '{kind_}' is not one of Ingress, Egress")
    return problems


def _check_security(problems: list[str], where: str, pod_ctx: Any, containers: Sequence[Any]) -> None:
    """What the API server or the kubelet would refuse in the security contexts."""
    pod_ctx = pod_ctx if isinstance(pod_ctx, Mapping) else {}
    for key in ("runAsUser", "runAsGroup", "fsGroup"):
        value = pod_ctx.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            problems.append(f"{where}.securityContext.{key}: must be a non-negative integer, not {value!r}")
    for i, c in enumerate(containers):
        ctx = c.get("securityContext") if isinstance(c, Mapping) else None
        if not isinstance(ctx, Mapping):
            continue
        at = f"{where}.containers[{i}].securityContext"
        user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot")) is True and user == 0:
            problems.append(f"{at}: runAsNonRoot with runAsUser 0 never starts (the kubelet refuses it)")
        if ctx.get("privileged") is True and ctx.get("allowPrivilegeEscalation") is False:
            problems.append(f"{at}: allowPrivilegeEscalation false cannot be set with privileged true (the API server refuses it)")
        caps = ctx.get("capabilities") or {}
        for key in ("add", "drop"):
            for cap in caps.get(key) or []:
                if not isinstance(cap, str) or not re.fullmatch(r"[A-Z_]+", cap):
                    problems.append(f"{at}.capabilities.{key}: '{cap}' is not a capability name (e.g. ALL, NET_RAW)")


def ensure_valid(doc: Mapping[str, Any], what: str) -> None:
    problems = check_manifest(doc)
    if problems:
        raise UsageError(
            f"the {what} would be rejected by Kubernetes: " + "; ".join(problems),
            "fix the k8s platform settings (cuberun show-config --platform=NAME prints them) or the -Prunner.KEY=VALUE overrides",
        )


def native_limits(limits: Any) -> dict[str, int]:
    """A task's limits (retry.Limits) as Job spec fields: the timeout as `activeDeadlineSeconds`
    (whole seconds, rounded up; it bounds the Job, all its pods together), the retries as
    `backoffLimit` (the Job starts a new pod after a failed one, with Kubernetes' own back-off)."""
    import math

    spec: dict[str, int] = {}
    if limits.timeout is not None:
        spec["activeDeadlineSeconds"] = max(1, math.ceil(limits.timeout))
    if limits.retries_source is not None:
        spec["backoffLimit"] = int(limits.retries)
    return spec


# -- the dry-run / record form of a manifest -----------------------------------------------------
@dataclass(frozen=True)
class ManifestStep(Step):
    """A Kubernetes object cuberun creates. `--dry-run` prints it as a YAML document (so the
    output of several steps is a multi-document stream for `kubectl apply -f -`); the record
    and `--dry-run --json` carry it as `manifest`. argv is the equivalent kubectl command."""

    manifest: Mapping[str, Any] = field(default_factory=dict)

    def display(self) -> str:
        from cuberun import yamlio

        return "---\n" + yamlio.dump(_plain(self.manifest)).rstrip("\n")

    def to_json(self) -> dict[str, Any]:
        data = super().to_json()
        data["manifest"] = _plain(self.manifest)
        return data


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


