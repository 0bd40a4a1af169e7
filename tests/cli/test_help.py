"""Help texts: summaries whole (never cut mid-sentence), lazy commands not imported for --help."""

from __future__ import annotations

import importlib
import subprocess
import sys

import click
import pytest

from cuberun.cli.commands import LAZY, summary
from cuberun.cli.commands import cli as group
from tests.conftest import CLI


@pytest.mark.parametrize("columns", ["60", "80", "200"])
def test_top_level_help_shows_every_summary_whole(cli: CLI, columns: str) -> None:
    got = cli("--help", env={"COLUMNS": columns})
    assert got.returncode == 0
    assert not [line for line in commands_section(got.stdout) if line.endswith("...")]  # click's cut
    text = "".join(got.stdout.split())  # wrapped lines joined (textwrap may break after a hyphen)
    ctx = click.Context(cli_group())
    for name in cli_group().list_commands(ctx):
        command = cli_group().get_command(ctx, name)
        assert command is not None
        assert "".join(summary(command).split()) in text, name


def commands_section(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[lines.index("Commands:") + 1:]


def cli_group() -> click.Group:
    assert isinstance(group, click.Group)
    return group


def test_lazy_summaries_are_the_commands_own() -> None:
    for name, (target, text) in LAZY.items():
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert summary(command) == text, name


def test_config_help_shows_whole_examples(cli: CLI) -> None:
    got = cli("config", "--help", env={"COLUMNS": "80"})
    assert not [line for line in commands_section(got.stdout) if line.endswith("...")] and "Set a value, e.g.\n" not in got.stdout
    assert "`platforms.docker.docker podman` or `default_platform docker`" in " ".join(got.stdout.split())


def test_help_does_not_import_the_lazy_commands() -> None:
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print(sorted(m for m in sys.modules if m.startswith('cuberun.cli.')), file=sys.stderr))\n"
            "from cuberun.cli.main import main\nmain(['--help'])\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0
    assert got.stderr.strip() == "['cuberun.cli.commands', 'cuberun.cli.main']"
