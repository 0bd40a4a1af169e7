"""Runner registry: built-in runners by dotted path, third-party ones from entry points.

Nothing backend-specific is imported until a runner is used; entry points are scanned only
when a name is not built in (or when everything is listed), so start-up stays fast.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from cuberun.errors import RunnerUnavailable, UsageError
from cuberun.hints import did_you_mean

if TYPE_CHECKING:
    from cuberun.runners.base import Runner
    from cuberun.schema import Schema

ENTRY_POINT_GROUP = "cuberun.runners"

# runner name -> "module:Class"
BUILTIN: dict[str, str] = {
    "local": "cuberun.runners.local:LocalRunner",
    "docker": "cuberun.runners.docker:DockerRunner",
    "ssh": "cuberun.runners.ssh:SSHRunner",
    "slurm": "cuberun.runners.slurm:SlurmRunner",
    "singularity": "cuberun.runners.singularity:SingularityRunner",
    "charliecloud": "cuberun.runners.charliecloud:CharliecloudRunner",
    "k8s": "cuberun.runners.k8s:KubernetesRunner",
    "kubeflow": "cuberun.runners.kubeflow:KubeflowRunner",
    "backendai": "cuberun.runners.backendai:BackendAIRunner",
}

# cube sections that runners (built-in, or planned) read; known so they never warn as unknown
KNOWN_SECTIONS = ("local", "docker", "singularity", "charliecloud", "ssh", "slurm", "k8s", "kubeflow", "backendai")

# pip extras that provide optional runners
EXTRAS = {"k8s": "k8s", "kubeflow": "kubeflow", "backendai": "backendai"}


@cache
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def _version() -> str:
    from cuberun import __version__

    return __version__


def names() -> list[str]:
    return sorted(set(BUILTIN) | set(_entry_points()))


def cube_sections() -> tuple[str, ...]:
    return KNOWN_SECTIONS


def _import(target: str, name: str) -> type[Runner]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(name)
        hint = f"pip install 'cuberun[{extra}]'" if extra else f"install the package that provides module '{exc.name}'"
        raise RunnerUnavailable(f"runner '{name}' cannot be loaded: module '{exc.name}' is not installed", hint) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise RunnerUnavailable(f"runner '{name}': {module_name} has no attribute '{attr}'")
    return cls  # type: ignore[no-any-return]


def get(name: str) -> type[Runner]:
    target = BUILTIN.get(name) or _entry_points().get(name)
    if target is None:
        if name in KNOWN_SECTIONS or name == "podman":
            raise RunnerUnavailable(f"runner '{name}' is not available in cuberun {_version()}", "see the support table in the README")
        raise UsageError(f"unknown runner '{name}'", did_you_mean(name, names(), "runner"))
    return _import(target, name)


def plugin_names() -> list[str]:
    """Runners installed by other packages (entry points) that are not built in."""
    return sorted(set(_entry_points()) - set(BUILTIN))


def section_schema(section: str) -> Schema | None:
    """The schema of a cube section: runners read the section named like themselves, so only
    that one runner module is imported (a plugin's, only when the cube has its section)."""
    target = BUILTIN.get(section) or (_entry_points().get(section) if section not in KNOWN_SECTIONS else None)
    if target is None:
        return None
    try:
        cls = _import(target, section)
    except RunnerUnavailable:
        return None  # a broken plugin: its own run says why
    return cls.section_schema() if cls.section == section else None
