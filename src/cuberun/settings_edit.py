"""Editing the settings file: what `cuberun config` does, as library functions.

Each function reads or changes a loaded `Settings` (settings.load_settings) and returns what it
did in one line; `save` writes the file (atomically). The CLI only parses and prints.
"""

from __future__ import annotations

import copy
from typing import Any

from cuberun.errors import CuberunError, UsageError
from cuberun.hints import did_you_mean
from cuberun.settings import Settings, save_settings


def own_platforms(settings: Settings) -> dict[str, Any]:
    """The platforms of the settings file itself (what can be edited), created when missing."""
    platforms = settings.data.setdefault("platforms", {})
    if not isinstance(platforms, dict):
        raise UsageError(f"{settings.path}: 'platforms' must be a mapping")
    return platforms


def save(settings: Settings) -> None:
    save_settings(settings)


def effective_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A platform entry with its runner's defaults under it: what a run of the platform uses."""
    from cuberun.runners import registry
    from cuberun.schema import defaults

    try:
        cls = registry.get(str(entry.get("runner")))
    except CuberunError:  # a runner that is not installed: the entry as written
        return entry
    return {"runner": entry.get("runner"), **dict(defaults(cls.schema).items()), **entry}


def _walk(data: Any, key: str) -> Any:
    node = data
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            choices = list(node) if isinstance(node, dict) else []
            raise UsageError(f"no settings key '{key}'", did_you_mean(part, choices, "key"))
    return node


def get_value(settings: Settings, key: str) -> Any:
    """A settings value by dotted key, with the runner's default when the settings leave it unset."""
    view: dict[str, Any] = {"platforms": dict(settings.platforms), "default_platform": settings.default_platform}
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "platforms" and parts[1] in settings.platforms:
        view["platforms"][parts[1]] = effective_entry(settings.platforms[parts[1]])
    return _walk(view, key)


def set_value(settings: Settings, key: str, value: str) -> str:
    """Set `default_platform` or `platforms.NAME.KEY[.SUB]` from the text `value`, typed by the
    runner's config model (a string key keeps the text; others read it like YAML)."""
    import yaml

    from cuberun.runners import registry
    from cuberun.schema import check_value, typed

    parts = key.split(".")
    if parts[0] not in ("platforms", "default_platform"):
        raise UsageError(f"cannot set '{key}'", "settable: default_platform, platforms.NAME.KEY")
    if parts == ["default_platform"]:
        if value not in settings.platforms:
            raise UsageError(f"unknown platform '{value}'", did_you_mean(value, sorted(settings.platforms), "platform"))
        settings.data["default_platform"] = value
        return f"default platform is now '{value}'"
    if len(parts) < 3:
        raise UsageError(f"cannot set '{key}'", "write platforms.NAME.KEY VALUE")
    name = parts[1]
    platforms = own_platforms(settings)
    if name not in platforms:
        if name not in settings.platforms:
            raise UsageError(f"unknown platform '{name}'", did_you_mean(name, sorted(settings.platforms), "platform"))
        platforms[name] = copy.deepcopy(settings.platforms[name])
    entry = platforms[name]
    runner_cls = registry.get(str(entry.get("runner")))
    if parts[2] != "runner" and parts[2] not in runner_cls.schema:
        raise UsageError(f"runner '{runner_cls.name}' has no setting '{parts[2]}'", did_you_mean(parts[2], sorted(runner_cls.schema), "setting"))
    node = entry
    for part in parts[2:-1]:
        node = node.setdefault(part, {})
    field = runner_cls.schema.get(parts[2]) if len(parts) == 3 else None
    if field is not None:
        new_value = typed(value, field)
        problem = check_value(parts[2], new_value, field)
        if problem:
            raise UsageError(f"{key}: {problem}")
    else:
        try:
            new_value = yaml.safe_load(value) if value != "" else None
        except yaml.YAMLError:
            new_value = value
    node[parts[-1]] = new_value
    settings.platforms[name] = entry
    return f"set {key}"


def create_platform(settings: Settings, runner: str, name: str) -> str:
    """A new platform NAME for RUNNER with the runner's defaults."""
    from cuberun.runners import registry
    from cuberun.schema import defaults

    cls = registry.get(runner)
    platforms = own_platforms(settings)
    if name in platforms:
        raise UsageError(f"platform '{name}' already exists in {settings.path}", "remove it first, or pick another name")
    platforms[name] = {"runner": runner, **{k: v for k, v in defaults(cls.schema).items() if v not in (None, {}, [])}}
    settings.platforms[name] = platforms[name]
    return f"created platform '{name}' (runner {runner})"


def copy_platform(settings: Settings, source: str, name: str) -> str:
    if source not in settings.platforms:
        raise UsageError(f"unknown platform '{source}'", did_you_mean(source, sorted(settings.platforms), "platform"))
    platforms = own_platforms(settings)
    if name in settings.platforms:
        raise UsageError(f"platform '{name}' already exists", "pick another name")
    platforms[name] = copy.deepcopy(settings.platforms[source])
    settings.platforms[name] = platforms[name]
    return f"copied platform '{source}' to '{name}'"


def rename_platform(settings: Settings, old: str, new: str) -> str:
    platforms = own_platforms(settings)
    if old not in platforms:
        raise UsageError(f"platform '{old}' is not defined in {settings.path}", "only platforms of the settings file can be renamed")
    if new in platforms:
        raise UsageError(f"platform '{new}' already exists", "pick another name")
    platforms[new] = platforms.pop(old)
    settings.platforms[new] = platforms[new]
    settings.platforms.pop(old, None)
    if settings.data.get("default_platform") == old:
        settings.data["default_platform"] = new
    return f"renamed platform '{old}' to '{new}'"


def remove_platform(settings: Settings, name: str) -> str:
    platforms = own_platforms(settings)
    if name not in platforms:
        raise UsageError(f"platform '{name}' is not defined in {settings.path}", did_you_mean(name, sorted(platforms), "platform"))
    del platforms[name]
    settings.platforms.pop(name, None)
    if settings.data.get("default_platform") == name:
        del settings.data["default_platform"]
    return f"removed platform '{name}'"


def runner_keys(runner: str) -> list[dict[str, Any]]:
    """A runner's config model, one row per key: name, type, default, choices, doc."""
    from cuberun.runners import registry

    rows = []
    for key, spec in registry.fields(runner).items():
        rows.append({"key": key, "type": spec.describe_type(), "default": spec.default,
                     **({"choices": list(spec.choices)} if spec.choices is not None else {}), "doc": spec.doc})
    return rows
