"""A platform name -> a configured runner: the settings' platform entry (its runner class from the
registry), the cube's section and `-Prunner.*`, merged by the runner's schema.

Part of the contract, beside base.py and registry.py: the core builds the runner of a run here,
and a runner that runs another one (slurm's job platform) builds it here too, never through the
orchestration (`cuberun.execute`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from cuberun.errors import Issue, SpecError
from cuberun.valueclass import replace as replace_fields

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.runners.base import Runner, RunOptions
    from cuberun.spec.model import Cube


def split_runner_overrides(overrides: Sequence[str], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`-Prunner.key=value` -> {key: value}, each value typed by the runner's Field for the key."""
    from cuberun.schema import typed
    from cuberun.spec.load import parse_assignment

    result: dict[str, Any] = {}
    for item in overrides:
        if item.startswith("runner."):
            key, raw = parse_assignment(item, "-P")
            name = key[len("runner.") :]
            result[name] = typed(raw, (schema or {}).get(name))
    return result


def _format_platform(cube: Cube) -> str | None:
    """A container_config.yaml cube runs in a container, never on the host: docker, or
    singularity for a SIF (the user's --platform still wins)."""
    if cube.format != "container_config":
        return None
    return "singularity" if "singularity" in cube.config else "docker"


def make_runner(cube: Cube, platform: str | None, options: RunOptions, overrides: Sequence[str] = ()) -> Runner:
    from cuberun import settings as settings_mod
    from cuberun.runners import registry
    from cuberun.spec.interpolate import InterpolationError, Interpolator

    settings = settings_mod.load_settings()
    name = platform or _format_platform(cube) or settings.default_platform
    entry = settings_mod.platform_entry(settings, name)
    runner_cls = registry.get(entry["runner"])
    section = cube.section(runner_cls.section) if runner_cls.section else {}  # its ${...} resolved (once)
    origin = settings.origin.get(name, "built-in")
    runner_overrides = split_runner_overrides(overrides, runner_cls.schema)
    try:  # the layers not resolved yet: the platform entry and -Prunner.* (never the cube section again)
        interp = Interpolator(cube.config)
        entry = interp.resolve(entry)
        runner_overrides = interp.resolve(runner_overrides)
    except InterpolationError as exc:
        raise SpecError([Issue(exc.message, origin if origin != "built-in" else str(cube.file), key=f"platforms.{name}", hint=exc.hint)]) from None
    config = settings_mod.effective_config(runner_cls.schema, entry, section, runner_overrides, origin)
    if not options.config_overrides:
        options = replace_fields(options, config_overrides=tuple(o for o in overrides if not o.startswith("runner.")))
    return runner_cls(cube, config, name, options)
