"""Runner registry: the single source of runner names, platforms, cube sections and schemas.

Built-in runners are listed here by dotted path; third-party ones come from the
`cuberun.runners` entry point group. Nothing backend-specific is imported until a runner (or
its schema) is asked for; entry points are scanned only when a name is not built in (or when
everything is listed), so start-up stays fast. settings.py, sweep.py, the spec loader and the
CLI ask this module; no other module lists runners.
"""

from __future__ import annotations

import importlib
from functools import cache

from cuberun.errors import RunnerUnavailable, UsageError
from cuberun.hints import did_you_mean
from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.runners.base import Runner
    from cuberun.schema import Schema

ENTRY_POINT_GROUP = "cuberun.runners"


@dataclass(frozen=True)
class RunnerInfo:
    """What is known of a built-in runner without importing it."""

    target: str  # "module:Class"
    section: str | None  # the cube section it reads (None: configured by its platform entry only)
    extra: str | None = None  # the pip extra that provides its dependencies
    # more platforms on this runner: name -> the entry's config beside `runner:`
    aliases: dict[str, dict[str, Any]] = field(default_factory=dict)


BUILTIN: dict[str, RunnerInfo] = {
    "local": RunnerInfo("cuberun.runners.local:LocalRunner", "local"),
    "docker": RunnerInfo("cuberun.runners.docker:DockerRunner", "docker", aliases={"podman": {"docker": "podman"}}),
    "singularity": RunnerInfo("cuberun.runners.singularity:SingularityRunner", "singularity", aliases={"apptainer": {"singularity": "apptainer"}}),
    "charliecloud": RunnerInfo("cuberun.runners.charliecloud:CharliecloudRunner", "charliecloud"),
    "ssh": RunnerInfo("cuberun.runners.ssh:SSHRunner", None),
    "slurm": RunnerInfo("cuberun.runners.slurm:SlurmRunner", "slurm"),
    "k8s": RunnerInfo("cuberun.runners.k8s:KubernetesRunner", "k8s", "k8s"),
    "kubeflow": RunnerInfo("cuberun.runners.kubeflow:KubeflowRunner", "kubeflow", "kubeflow"),
    "backendai": RunnerInfo("cuberun.runners.backendai:BackendAIRunner", "backendai", "backendai"),
}

# cube sections that are known although no runner reads them (so they never warn as unknown):
# `ssh:` is read by no runner (the platform entry configures it), but older cubes carry it
EXTRA_SECTIONS = ("ssh",)


@cache
def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    found: dict[str, str] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def names() -> list[str]:
    """Every runner that can be named: built in, or installed through an entry point."""
    return sorted(set(BUILTIN) | set(_entry_points()))


def plugin_names() -> list[str]:
    """Runners installed through an entry point that are not built in."""
    return sorted(set(_entry_points()) - set(BUILTIN))


def builtin_sections() -> tuple[str, ...]:
    """The cube sections built-in runners read (known without scanning entry points)."""
    found = [info.section or (name if name in EXTRA_SECTIONS else "") for name, info in BUILTIN.items()]
    return tuple(dict.fromkeys(s for s in [*found, *EXTRA_SECTIONS] if s))


def cube_sections() -> tuple[str, ...]:
    """Every cube section a runner reads: the built-in ones, then each plugin's (a plugin reads
    the section named like itself unless its class says otherwise)."""
    return (*builtin_sections(), *(n for n in plugin_names() if n not in builtin_sections()))


def sections_in(keys: Any) -> list[str]:
    """The runner sections among `keys` (a cube's top-level keys), built-in ones first in the
    registry's order. Entry points are scanned only when a key is not a built-in section."""
    present = set(keys)
    builtin = builtin_sections()
    found = [s for s in builtin if s in present]
    rest = present - set(builtin)
    if rest:
        found += [n for n in plugin_names() if n in rest]
    return found


def platforms() -> dict[str, dict[str, Any]]:
    """The built-in platforms: one per runner (named like it), plus the runners' aliases."""
    result: dict[str, dict[str, Any]] = {}
    for name, info in BUILTIN.items():
        result[name] = {"runner": name}
        for alias, entry in info.aliases.items():
            result[alias] = {"runner": name, **entry}
    return result


def plugin_platforms() -> dict[str, dict[str, Any]]:
    """One platform per installed plugin runner, named like it (entry points are scanned: asked
    only when a platform name is not otherwise known)."""
    return {name: {"runner": name} for name in plugin_names()}


def _import(target: str, name: str) -> type[Runner]:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        info = BUILTIN.get(name)
        extra = info.extra if info else None
        hint = f"pip install 'cuberun[{extra}]'" if extra else f"install the package that provides module '{exc.name}'"
        raise RunnerUnavailable(f"runner '{name}' cannot be loaded: module '{exc.name}' is not installed", hint) from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise RunnerUnavailable(f"runner '{name}': {module_name} has no attribute '{attr}'")
    return cls  # type: ignore[no-any-return]


def _target(name: str) -> str | None:
    info = BUILTIN.get(name)
    return info.target if info else _entry_points().get(name)


def get(name: str) -> type[Runner]:
    target = _target(name)
    if target is None:
        if name in platforms():
            raise RunnerUnavailable(f"'{name}' is a platform of runner '{platforms()[name]['runner']}', not a runner", "pass it as --platform")
        raise UsageError(f"unknown runner '{name}'", did_you_mean(name, names(), "runner"))
    return _import(target, name)


def section_schema(section: str) -> Schema | None:
    """The schema of a cube section: the runner named like the section (built in, or a plugin)
    declares it; only that one runner module is imported. None: no runner reads it."""
    target = _target(section)
    if target is None:
        return None
    try:
        cls = _import(target, section)
    except RunnerUnavailable:
        return None  # a broken plugin: its own run says why
    return cls.section_schema() if cls.section == section else None


def fields(name: str) -> Schema:
    """A runner's config keys (name -> Field): for `cuberun config keys` and -P typing."""
    return get(name).schema
