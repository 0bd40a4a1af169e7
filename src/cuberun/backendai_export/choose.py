"""Choosing each label's value (flags, the image's labels, its facts, the cube, defaults) and saying where it came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cuberun.backendai_export.image import ImageFacts
from cuberun.backendai_export.labels import (
    _MEM,
    _SERVICE_PORT,
    ACCELERATORS,
    BASE_DISTRO,
    CORECOUNT,
    DEFAULT_BASE_DISTRO,
    DEFAULT_CORECOUNT,
    DEFAULT_MIN_CPU,
    DEFAULT_MIN_MEM,
    DEFAULT_RUNTIME_PATH,
    FEATURES,
    KERNELSPEC,
    MIN_CPU,
    MIN_CUDA,
    MIN_MEM,
    ORDER,
    RUNTIME_PATH,
    RUNTIME_TYPE,
    RUNTIME_TYPES,
    SERVICE_PORTS,
    features_for,
    memory_label,
)
from cuberun.errors import UsageError
from cuberun.valueclass import dataclass


@dataclass(frozen=True)
class LabelOptions:
    """The command-line flags (None: not given)."""

    base_distro: str | None = None
    min_cpu: str | None = None
    min_mem: str | None = None
    gpu: int | None = None
    runtime_type: str | None = None
    runtime_path: str | None = None
    features: str | None = None
    service_ports: str | None = None

    def validate(self) -> None:
        if self.runtime_type is not None and self.runtime_type not in RUNTIME_TYPES:
            raise UsageError(f"--runtime-type '{self.runtime_type}' is not allowed", "use app or python")
        if self.min_mem is not None and not _MEM.match(self.min_mem):
            raise UsageError(f"--min-mem '{self.min_mem}' is not a size", "write e.g. 512m, 1g or 16g")
        if self.min_cpu is not None:
            try:
                ok = float(self.min_cpu) > 0
            except ValueError:
                ok = False
            if not ok:
                raise UsageError(f"--min-cpu '{self.min_cpu}' is not a positive number", "write e.g. 1 or 4")
        if self.gpu is not None and self.gpu < 0:
            raise UsageError(f"--gpu {self.gpu} is negative", "write a count of GPUs, 0 for none")
        if self.runtime_path is not None and not self.runtime_path.startswith("/"):
            raise UsageError(f"--runtime-path '{self.runtime_path}' is not absolute", "write e.g. /usr/bin/python3")
        if self.service_ports:
            for item in self.service_ports.split(","):
                if not _SERVICE_PORT.match(item.strip()):
                    raise UsageError(f"--service-ports item '{item}' is not name:proto:port", "proto is http, tcp, pty or preopen")


@dataclass
class Choice:
    key: str
    value: str
    source: str  # "flag", "image label", "image", "cube platform", "default", "kept"


def choose_labels(
    options: LabelOptions,
    *,
    facts: ImageFacts | None = None,
    platform: Mapping[str, Any] | None = None,
    existing: Mapping[str, str] | None = None,
) -> list[Choice]:
    """The label values, in block order. Precedence: flag > `existing` (labels the image or the
    Dockerfile already has) > facts read from the image > the cube's platform block > default."""
    existing = dict(existing or {})
    platform = dict(platform or {})
    chosen: dict[str, Choice] = {}

    def pick(key: str, flag: str | None, *candidates: tuple[str | None, str]) -> None:
        if flag is not None:
            chosen[key] = Choice(key, flag, "flag")
            return
        if key in existing:
            chosen[key] = Choice(key, existing[key], "kept")
            return
        for value, source in candidates:
            if value is not None and value != "":
                chosen[key] = Choice(key, value, source)
                return

    image = facts.image if facts else "the image"
    pick(KERNELSPEC, None, ("1", "default"))
    pick(CORECOUNT, None, (DEFAULT_CORECOUNT, "default"))
    runtime_type = options.runtime_type or existing.get(RUNTIME_TYPE) or "app"
    features = options.features
    if features is None and options.runtime_type is not None:
        features = features_for(options.runtime_type)  # follows --runtime-type
    pick(FEATURES, features, (features_for(runtime_type), f"runtime type {runtime_type}"))
    pick(BASE_DISTRO, options.base_distro, (facts.base_distro if facts else None, f"/etc/os-release of {image}"), (DEFAULT_BASE_DISTRO, "default"))
    pick(MIN_CPU, options.min_cpu, (DEFAULT_MIN_CPU, "default"))
    pick(MIN_MEM, options.min_mem, (memory_label(platform.get("host_memory_gb")), "platform.host_memory_gb"), (DEFAULT_MIN_MEM, "default"))
    if options.gpu != 0:  # --gpu 0: no GPU labels, whatever the cube asks for
        count = platform.get("accelerator_count", platform.get("num_accelerators"))
        cube_gpus = str(count) if isinstance(count, int) and not isinstance(count, bool) and count > 0 else None
        gpu_flag = str(options.gpu) if options.gpu else None
        pick(MIN_CUDA, gpu_flag, (cube_gpus, "platform.accelerator_count"))
        if MIN_CUDA in chosen:
            pick(ACCELERATORS, "cuda" if gpu_flag else None, ("cuda", "GPUs requested"))
    pick(RUNTIME_TYPE, options.runtime_type, ("app", "default"))
    pick(RUNTIME_PATH, options.runtime_path, (facts.runtime_path if facts else None, f"the python of {image}"), (DEFAULT_RUNTIME_PATH, "default"))
    pick(SERVICE_PORTS, options.service_ports)
    return [chosen[k] for k in ORDER if k in chosen]


def describe_choices(choices: Sequence[Choice]) -> list[str]:
    return [f"{c.key}={c.value} ({c.source})" for c in choices]
