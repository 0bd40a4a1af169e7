"""Named platforms: built-ins < the reference's ~/mlcube.yaml < our settings file.

A platform names a runner and its config. The effective runner config for a run is, lowest
to highest: the runner's defaults, the platform entry, the cube's section for that runner,
then `-Prunner.key=value`. The settings file is never rewritten implicitly.
"""

from __future__ import annotations

import os
from pathlib import Path

from cuberun.errors import CuberunError, Issue, SpecError, UsageError
from cuberun.hints import did_you_mean
from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PLATFORM = "local"


def builtin_platforms() -> dict[str, dict[str, Any]]:
    """platform name -> entry: one per built-in runner and its aliases (the registry says which)."""
    from cuberun.runners import registry

    return registry.platforms()


def settings_path() -> Path:
    env = os.environ.get("CUBERUN_SETTINGS")
    if env:
        return Path(os.path.expanduser(env))
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cuberun" / "settings.yaml"


def reference_settings_path() -> Path:
    env = os.environ.get("MLCUBE_SYSTEM_SETTINGS")
    return Path(os.path.expanduser(env)) if env else Path(os.path.expanduser("~")) / "mlcube.yaml"


@dataclass
class Settings:
    path: Path
    data: dict[str, Any]  # our file's content (what `config set` edits)
    platforms: dict[str, dict[str, Any]]  # the merged view
    origin: dict[str, str] = field(default_factory=dict)  # platform -> where it was defined

    @property
    def default_platform(self) -> str:
        value = self.data.get("default_platform")
        return value if isinstance(value, str) and value else DEFAULT_PLATFORM


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    from cuberun import yamlio

    if not os.path.lexists(path) or (os.path.islink(path) and not os.path.exists(path) and _dangling(path)):
        return {}  # missing, or a dangling link (its target is created when `config` edits it)
    doc = yamlio.load(path, what)
    if doc.data is None:
        return {}
    if not isinstance(doc.data, dict):
        raise SpecError([doc.issue((), "must be a mapping with a 'platforms' section", value=True)])
    platforms = doc.data.get("platforms")
    if platforms is not None and not isinstance(platforms, dict):
        raise SpecError([doc.issue(("platforms",), "must be a mapping of platform name to runner config", value=True)])
    for name, entry in (platforms or {}).items():
        if not isinstance(entry, dict):
            raise SpecError([doc.issue(("platforms", name), "must be a mapping with a 'runner' key", value=True)])
        if not isinstance(entry.get("runner"), str):
            raise SpecError([doc.issue(("platforms", name), f"platform '{name}' has no 'runner'", "add runner: docker (or local, ssh, ...)")])
    for key in doc.data:
        if key not in ("platforms", "default_platform", "runners", "storage"):
            raise SpecError([doc.issue((key,), f"unknown settings key '{key}'", did_you_mean(key, ("platforms", "default_platform")))])
    return doc.data


def _dangling(path: Path) -> bool:
    """A symbolic link whose target is missing (not a loop, not unreadable)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def load_settings() -> Settings:
    path = settings_path()
    platforms: dict[str, dict[str, Any]] = {k: dict(v) for k, v in builtin_platforms().items()}
    origin = dict.fromkeys(platforms, "built-in")
    ref = reference_settings_path()
    from cuberun.safeio import is_regular

    if is_regular(ref) and ref != path:
        try:
            ref_data = _read_yaml(ref, "reference settings file")
        except CuberunError:
            ref_data = {}  # a broken (or unreadable) file of the other tool must not stop us
        if "tasks" not in ref_data:  # ~/mlcube.yaml can also be a cube in $HOME
            for name, entry in (ref_data.get("platforms") or {}).items():
                platforms[name] = {k: v for k, v in entry.items() if v is not None}
                origin[name] = str(ref)
    data = _read_yaml(path, "settings file")
    for name, entry in (data.get("platforms") or {}).items():
        platforms[name] = dict(entry)
        origin[name] = str(path)
    return Settings(path, data, platforms, origin)


def platform_entry(settings: Settings, name: str) -> dict[str, Any]:
    entry = settings.platforms.get(name)
    if entry is None:
        from cuberun.runners.registry import plugin_names

        if name in plugin_names():  # a runner from an installed plugin is also a platform of its name
            return {"runner": name}
        known = sorted(settings.platforms)
        raise UsageError(
            f"unknown platform '{name}'",
            did_you_mean(name, known, "platform") + f" (platforms: {', '.join(known)}; settings: {settings.path})",
        )
    from cuberun.yamlio import copy_data

    return copy_data(entry)


def effective_config(
    runner_schema: Any, entry: dict[str, Any], cube_section: dict[str, Any], runner_overrides: dict[str, Any], origin: str
) -> dict[str, Any]:
    """Merge runner defaults < platform entry < cube section < -Prunner.x, then validate."""
    from cuberun.schema import defaults, validate_section
    from cuberun.yamlio import copy_data

    config = defaults(runner_schema)
    issues: list[Issue] = []
    plat = {k: v for k, v in entry.items() if k != "runner"}
    if origin.endswith("mlcube.yaml"):
        plat = {k: v for k, v in plat.items() if k in runner_schema}
    validate_section(plat, runner_schema, (), None, issues, file=origin)
    for layer in (plat, cube_section, runner_overrides):
        for key, value in layer.items():
            if value is not None:
                config[key] = copy_data(value)
    validate_section(runner_overrides, runner_schema, ("runner",), None, issues, file="-P")
    if issues:
        raise SpecError(issues)
    return config


def save_settings(settings: Settings) -> None:
    """Write `settings.data` back to the settings file, keeping its comments, key order and
    layout (a round trip through ruamel.yaml, imported only here), through a symbolic link."""
    from cuberun import yamlio
    from cuberun.safeio import read_regular, write_file

    text = None
    if os.path.exists(settings.path):
        text = read_regular(settings.path, yamlio.MAX_BYTES, what="settings file").decode("utf-8-sig", "replace")
    write_file(settings.path, round_trip(text, settings.data), what="settings file", durable=True,
               hint="point $CUBERUN_SETTINGS at a regular file")


def round_trip(text: str | None, data: dict[str, Any]) -> str:
    """`data` as YAML laid out like `text` (its comments, order and styles kept where the
    values did not change)."""
    import io

    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.default_flow_style = False
    try:
        doc = yaml.load(text) if text and text.strip() else None
    except YAMLError:
        doc = None
    if not isinstance(doc, dict):
        doc = {}
    _merge(doc, data)
    out = io.StringIO()
    yaml.dump(doc, out)
    return out.getvalue()


def _merge(target: dict[str, Any], new: dict[str, Any]) -> None:
    from cuberun.yamlio import copy_data

    for key in [k for k in target if k not in new]:
        del target[key]
    for key, value in new.items():
        if isinstance(target.get(key), dict) and isinstance(value, dict):
            _merge(target[key], value)
        elif key not in target or target[key] != value or isinstance(target[key], bool) != isinstance(value, bool):
            target[key] = copy_data(value)
