"""`cuberun run` without click (cli/run_cmd.parse_plain): the same keyword arguments click gives,
and click for every spelling the plain parser does not take."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from cuberun.cli.commands import run
from cuberun.cli.run_cmd import PLAIN_DEFAULTS, PLAIN_FLAGS, PLAIN_VALUES, parse_plain


def click_kwargs(args: list[str]) -> dict[str, object]:
    """What click passes to `run` for ARGS (its extra arguments folded into `overrides`, as `run` does)."""
    ctx = run.make_context("run", list(args))
    params = dict(ctx.params)
    params["overrides"] = (*params.get("overrides", ()), *ctx.args)
    return params


def test_the_tables_agree_with_the_click_command() -> None:
    by_name = {p.name: p for p in run.params}
    for opt, name in PLAIN_VALUES.items():
        p = by_name[name]
        assert isinstance(p, click.Option) and opt in p.opts and not p.is_flag and not p.multiple and p.type == click.STRING, opt
    for opt, name in PLAIN_FLAGS.items():
        p = by_name[name]
        assert isinstance(p, click.Option) and opt in p.opts and p.is_flag, opt
    assert set(PLAIN_DEFAULTS) | set(PLAIN_VALUES.values()) | set(PLAIN_FLAGS.values()) == set(by_name)


@pytest.mark.parametrize("args", [
    [],
    ["--mlcube=cube", "--task=hello", "--platform=docker", "--network=none", "--force"],
    ["--task=a,b", "--workspace=", "--gpus=device=0,1", "--security=no-new-privileges", "--memory=4g", "--cpu=0-3"],
    [*PLAIN_FLAGS],
])
def test_plain_spellings_give_what_click_gives(args: list[str]) -> None:
    assert parse_plain(args) == click_kwargs(args)


@pytest.mark.parametrize("args", [
    ["--help"], ["-h"], ["--mlcube", "cube"], ["-q"], ["-j", "2"], ["--jobs=2"], ["--timeout=5"], ["--mount=rw"], ["-Pdocker.image=x"],
    ["--sweep=a=1,2"], ["--handshake=1"], ["--force", "--force"], ["--task=a", "--task=b"], ["--force=yes"], ["--name=x"], ["name=x"],
    ["box:hello"], ["--"], ["--debug"],
])
def test_other_spellings_go_through_click(args: list[str]) -> None:
    assert parse_plain(args) is None


def test_plain_run_does_not_import_click() -> None:
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('click' in sys.modules, file=sys.stderr))\n"
            "from cuberun.cli.main import main\nmain(['run', '--mlcube=/nonexistent/cube', '--task=x'])\n")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert got.returncode != 0 and got.stderr.startswith("cuberun: error: ")
    assert got.stderr.strip().splitlines()[-1] == "False"
