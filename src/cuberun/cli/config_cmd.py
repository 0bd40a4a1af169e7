"""`cuberun config`: the system settings file (platforms), every operation working."""

from __future__ import annotations

import copy
import json
import sys
from typing import Any

import click

from cuberun.cli.commands import HelpGroup
from cuberun.errors import CuberunError, UsageError
from cuberun.hints import did_you_mean


@click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
def config() -> None:
    """Show and edit the settings file ($CUBERUN_SETTINGS or ~/.config/cuberun/settings.yaml)."""


def _settings() -> Any:
    from cuberun.settings import load_settings

    return load_settings()


def _own_platforms(settings: Any) -> dict[str, Any]:
    platforms = settings.data.setdefault("platforms", {})
    if not isinstance(platforms, dict):
        raise UsageError(f"{settings.path}: 'platforms' must be a mapping")
    return platforms


def _save(settings: Any, message: str) -> None:
    from cuberun.settings import save_settings

    save_settings(settings)
    print(f"{message} ({settings.path})", file=sys.stderr)


@config.command("path")
def path_cmd() -> None:
    """Print the settings file path."""
    from cuberun.settings import settings_path

    print(settings_path())


@config.command("list")
@click.option("--json", "as_json", is_flag=True)
def list_cmd(as_json: bool) -> None:
    """List every platform (built-in, from ~/mlcube.yaml, and from the settings file)."""
    from cuberun import yamlio

    settings = _settings()
    if as_json:
        print(json.dumps({"settings": str(settings.path), "default_platform": settings.default_platform, "platforms": settings.platforms,
                          "origin": settings.origin}, indent=2))
        return
    print(f"# settings file: {settings.path}")
    print(f"# default platform: {settings.default_platform}")
    print(yamlio.dump({"platforms": settings.platforms}), end="")


def _walk(data: Any, key: str) -> Any:
    node = data
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            choices = list(node) if isinstance(node, dict) else []
            raise UsageError(f"no settings key '{key}'", did_you_mean(part, choices, "key"))
    return node


def _effective(entry: dict[str, Any]) -> dict[str, Any]:
    """A platform entry with its runner's defaults under it: what a run of the platform uses."""
    from cuberun.runners import registry
    from cuberun.schema import defaults

    try:
        cls = registry.get(str(entry.get("runner")))
    except CuberunError:  # a runner that is not installed: the entry as written
        return entry
    return {"runner": entry.get("runner"), **{k: v for k, v in defaults(cls.schema).items()}, **entry}


@config.command("get")
@click.argument("key")
def get_cmd(key: str) -> None:
    """Print a settings value (with the runner's default when the settings leave it unset), e.g. platforms.docker.docker."""
    from cuberun import yamlio

    settings = _settings()
    view = {"platforms": dict(settings.platforms), "default_platform": settings.default_platform}
    parts = key.split(".")
    if len(parts) > 2 and parts[0] == "platforms" and parts[1] in settings.platforms:
        view["platforms"][parts[1]] = _effective(settings.platforms[parts[1]])
    value = _walk(view, key)
    print(yamlio.dump(value) if isinstance(value, (dict, list)) else ("null" if value is None else value), end="" if isinstance(value, (dict, list)) else "\n")


@config.command("set")
@click.argument("key")
@click.argument("value")
def set_cmd(key: str, value: str) -> None:
    """Set a value, e.g. `platforms.docker.docker podman` or `default_platform docker`."""
    import yaml

    from cuberun import yamlio
    from cuberun.runners import registry

    settings = _settings()
    parts = key.split(".")
    if parts[0] not in ("platforms", "default_platform"):
        raise UsageError(f"cannot set '{key}'", "settable: default_platform, platforms.NAME.KEY")
    try:
        typed = yamlio.load_value(value, "value") if value != "" else None
    except yaml.YAMLError:
        typed = value
    if parts == ["default_platform"]:
        if value not in settings.platforms:
            raise UsageError(f"unknown platform '{value}'", did_you_mean(value, sorted(settings.platforms), "platform"))
        settings.data["default_platform"] = value
        _save(settings, f"default platform is now '{value}'")
        return
    if len(parts) < 3:
        raise UsageError(f"cannot set '{key}'", "write platforms.NAME.KEY VALUE")
    name = parts[1]
    platforms = _own_platforms(settings)
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
    field = runner_cls.schema.get(parts[2])
    new_value = value if (field is not None and str in field.types and len(parts) == 3) else typed
    if field is not None and len(parts) == 3:
        from cuberun.schema import check_value

        problem = check_value(parts[2], new_value, field)
        if problem:
            raise UsageError(f"{key}: {problem}")
    node[parts[-1]] = new_value
    _save(settings, f"set {key}")


@config.command("create-platform")
@click.argument("runner")
@click.argument("name")
def create_platform(runner: str, name: str) -> None:
    """Create platform NAME for RUNNER with the runner's defaults."""
    from cuberun.runners import registry
    from cuberun.schema import defaults

    settings = _settings()
    cls = registry.get(runner)
    platforms = _own_platforms(settings)
    if name in platforms:
        raise UsageError(f"platform '{name}' already exists in {settings.path}", "remove it first, or pick another name")
    platforms[name] = {"runner": runner, **{k: v for k, v in defaults(cls.schema).items() if v not in (None, {}, [])}}
    _save(settings, f"created platform '{name}' (runner {runner})")


@config.command("copy-platform")
@click.argument("source")
@click.argument("name")
def copy_platform(source: str, name: str) -> None:
    """Copy platform SOURCE to a new platform NAME."""
    settings = _settings()
    if source not in settings.platforms:
        raise UsageError(f"unknown platform '{source}'", did_you_mean(source, sorted(settings.platforms), "platform"))
    platforms = _own_platforms(settings)
    if name in settings.platforms:
        raise UsageError(f"platform '{name}' already exists", "pick another name")
    platforms[name] = copy.deepcopy(settings.platforms[source])
    _save(settings, f"copied platform '{source}' to '{name}'")


@config.command("rename-platform")
@click.argument("old")
@click.argument("new")
def rename_platform(old: str, new: str) -> None:
    """Rename a platform defined in the settings file."""
    settings = _settings()
    platforms = _own_platforms(settings)
    if old not in platforms:
        raise UsageError(f"platform '{old}' is not defined in {settings.path}", "only platforms of the settings file can be renamed")
    if new in platforms:
        raise UsageError(f"platform '{new}' already exists", "pick another name")
    platforms[new] = platforms.pop(old)
    if settings.data.get("default_platform") == old:
        settings.data["default_platform"] = new
    _save(settings, f"renamed platform '{old}' to '{new}'")


@config.command("remove-platform")
@click.argument("name")
def remove_platform(name: str) -> None:
    """Remove a platform defined in the settings file."""
    settings = _settings()
    platforms = _own_platforms(settings)
    if name not in platforms:
        raise UsageError(f"platform '{name}' is not defined in {settings.path}", did_you_mean(name, sorted(platforms), "platform"))
    del platforms[name]
    if settings.data.get("default_platform") == name:
        del settings.data["default_platform"]
    _save(settings, f"removed platform '{name}'")
