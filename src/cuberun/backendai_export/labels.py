"""The `ai.backend.*` kernel labels: their names, order and defaults, and the pure helpers for their values."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from typing import Any

PREFIX = "ai.backend."
KERNELSPEC = "ai.backend.kernelspec"
CORECOUNT = "ai.backend.envs.corecount"
FEATURES = "ai.backend.features"
BASE_DISTRO = "ai.backend.base-distro"
MIN_CPU = "ai.backend.resource.min.cpu"
MIN_MEM = "ai.backend.resource.min.mem"
MIN_CUDA = "ai.backend.resource.min.cuda.device"
ACCELERATORS = "ai.backend.accelerators"
RUNTIME_TYPE = "ai.backend.runtime-type"
RUNTIME_PATH = "ai.backend.runtime-path"
SERVICE_PORTS = "ai.backend.service-ports"

# the order of the block (the hand-written block of the MLPerf-on-Backend.AI notes, GPU labels after memory)
ORDER = (KERNELSPEC, CORECOUNT, FEATURES, BASE_DISTRO, MIN_CPU, MIN_MEM, MIN_CUDA, ACCELERATORS, RUNTIME_TYPE, RUNTIME_PATH, SERVICE_PORTS)
REQUIRED = (KERNELSPEC, FEATURES, BASE_DISTRO, MIN_CPU, MIN_MEM, RUNTIME_TYPE, RUNTIME_PATH)
RUNTIME_TYPES = ("app", "python")
DEFAULT_CORECOUNT = "OPENBLAS_NUM_THREADS,OMP_NUM_THREADS,NPROC"
DEFAULT_BASE_DISTRO = "ubuntu22.04"
DEFAULT_RUNTIME_PATH = "/usr/bin/python3"
DEFAULT_MIN_CPU = "1"
DEFAULT_MIN_MEM = "1g"
PROBE_TIMEOUT = 120.0
_MEM = re.compile(r"^\d+(\.\d+)?[kmgtp]?$", re.IGNORECASE)
_SERVICE_PORT = re.compile(r"^[A-Za-z0-9_.-]+:(http|tcp|pty|preopen):\d+$")
# prints sys.executable, then the os-release text (after a marker line)
_PY_PROBE = (
    "import sys\n"
    "print(sys.executable)\n"
    "print('--os-release--')\n"
    "for p in ('/etc/os-release', '/usr/lib/os-release'):\n"
    "    try:\n"
    "        print(open(p).read()); break\n"
    "    except OSError:\n"
    "        pass\n"
)


def features_for(runtime_type: str) -> str:
    """`batch uid-match` for every kernel (batch sessions; the agent matches the user's uid);
    a python runtime also serves code snippets (`query`) and interactive input (`user-input`)."""
    names = {"batch", "uid-match"}
    if runtime_type == "python":
        names |= {"query", "user-input"}
    return " ".join(sorted(names))


def parse_os_release(text: str) -> str | None:
    """`/etc/os-release` -> a Backend.AI base-distro name: ID + VERSION_ID cut to major.minor
    (debian12, ubuntu22.04, alpine3.18, centos7). None when there is no ID."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, raw = line.partition("=")
        try:
            parts = shlex.split(raw)
        except ValueError:
            parts = [raw.strip("'\"")]
        values[key.strip()] = parts[0] if parts else ""
    distro = values.get("ID", "").strip().lower()
    if not distro:
        return None
    version = values.get("VERSION_ID", "").strip()
    if version:
        pieces = version.split(".")
        version = ".".join(pieces[:2])
    return re.sub(r"[^a-z0-9.]+", "", distro + version) or None


def memory_label(value: Any) -> str | None:
    """platform.host_memory_gb -> a label value: 16 -> '16g', 0.5 -> '512m'."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if number <= 0:
        return None
    if number == int(number):
        return f"{int(number)}g"
    return f"{max(1, round(number * 1024))}m"


def derive_image_name(image: str) -> str:
    """The kernel image's default name: the cube image with `-backendai` added to its tag
    (`mlcommons/mnist:0.0.1` -> `mlcommons/mnist:0.0.1-backendai`; no tag -> `latest-backendai`)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        return f"{name}-backendai"
    return f"{name}:latest-backendai"


def quote_value(value: str) -> str:
    """A Dockerfile LABEL value in double quotes: `\\`, `"` and `$` escaped (LABEL expands $VAR)."""
    out = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    out = out.replace("\n", " ")
    return f'"{out}"'


def label_block(labels: Sequence[tuple[str, str]], escape: str = "\\") -> str:
    """One LABEL instruction, a key per line, continuation lines aligned under the first key."""
    if not labels:
        return ""
    lines = [f"{key}={quote_value(value)}" for key, value in labels]
    indent = " " * len("LABEL ")
    text = "LABEL " + lines[0]
    for line in lines[1:]:
        text += f" {escape}\n{indent}{line}"
    return text + "\n"
