"""`cuberun config`: the system settings file (platforms), every operation working."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from cuberun.cli.commands import HelpGroup


@click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
def config() -> None:
    """Show and edit the settings file ($CUBERUN_SETTINGS or ~/.config/cuberun/settings.yaml)."""


def _settings() -> Any:
    from cuberun.settings import load_settings

    return load_settings()


def _save(settings: Any, message: str) -> None:
    from cuberun import settings_edit

    settings_edit.save(settings)
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


@config.command("get")
@click.argument("key")
def get_cmd(key: str) -> None:
    """Print a settings value (with the runner's default when the settings leave it unset), e.g. platforms.docker.docker."""
    from cuberun import settings_edit, yamlio

    value = settings_edit.get_value(_settings(), key)
    print(yamlio.dump(value) if isinstance(value, (dict, list)) else ("null" if value is None else value), end="" if isinstance(value, (dict, list)) else "\n")


@config.command("set")
@click.argument("key")
@click.argument("value")
def set_cmd(key: str, value: str) -> None:
    """Set a value, e.g. `platforms.docker.docker podman` or `default_platform docker`."""
    from cuberun import settings_edit

    settings = _settings()
    _save(settings, settings_edit.set_value(settings, key, value))


@config.command("create-platform")
@click.argument("runner")
@click.argument("name")
def create_platform(runner: str, name: str) -> None:
    """Create platform NAME for RUNNER with the runner's defaults."""
    from cuberun import settings_edit

    settings = _settings()
    _save(settings, settings_edit.create_platform(settings, runner, name))


@config.command("copy-platform")
@click.argument("source")
@click.argument("name")
def copy_platform(source: str, name: str) -> None:
    """Copy platform SOURCE to a new platform NAME."""
    from cuberun import settings_edit

    settings = _settings()
    _save(settings, settings_edit.copy_platform(settings, source, name))


@config.command("rename-platform")
@click.argument("old")
@click.argument("new")
def rename_platform(old: str, new: str) -> None:
    """Rename a platform defined in the settings file."""
    from cuberun import settings_edit

    settings = _settings()
    _save(settings, settings_edit.rename_platform(settings, old, new))


@config.command("remove-platform")
@click.argument("name")
def remove_platform(name: str) -> None:
    """Remove a platform defined in the settings file."""
    from cuberun import settings_edit

    settings = _settings()
    _save(settings, settings_edit.remove_platform(settings, name))


@config.command("keys")
@click.argument("runner")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def keys_cmd(runner: str, as_json: bool) -> None:
    """List a runner's config keys (its config model): type, default and what each does."""
    from cuberun import settings_edit

    rows = settings_edit.runner_keys(runner)
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    width = max((len(r["key"]) for r in rows), default=0)
    for r in rows:
        default = "" if r["default"] in (None, {}, []) else f" (default: {r['default']})"
        choices = f" one of {', '.join(map(str, r['choices']))}" if r.get("choices") else ""
        print(f"{r['key']:<{width}}  {r['type']}{choices}{default}" + (f": {r['doc']}" if r["doc"] else ""))
