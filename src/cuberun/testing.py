"""A small kit for testing a runner, ours or a plugin's: cube builders, an isolated settings and
cache setup, the dry-run plan of a task (what golden tests pin), a task run end to end, and fake
executables for unit tests of command construction.

Use it as a pytest plugin (`pytest_plugins = ["cuberun.testing"]` in a conftest.py) for the
`cuberun_home` fixture, or call the functions directly. Nothing here is imported by cuberun
itself; pytest is needed only for the fixture.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cuberun.execute import TaskResult
    from cuberun.process import Captured
    from cuberun.runners.base import Runner, RunOptions, Step

ISOLATION_VARS = ("CUBERUN_SETTINGS", "MLCUBE_SYSTEM_SETTINGS", "XDG_CACHE_HOME", "CUBERUN_CACHE_DIR")


def make_cube(root: Path, text: str, files: Mapping[str, str | bytes] | None = None) -> Path:
    """A cube folder: `mlcube.yaml` from `text` (dedented) plus `files` (relative paths; inputs
    go under 'workspace/...'). Returns the folder."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "mlcube.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    for rel, content in (files or {}).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def isolated_env(home: Path, settings: str | None = None) -> dict[str, str]:
    """Environment variables that keep cuberun's settings and caches under `home` (never the
    user's): an optional settings file text, no ~/mlcube.yaml, a cache of its own."""
    home.mkdir(parents=True, exist_ok=True)
    path = home / "settings.yaml"
    if settings is not None:
        path.write_text(textwrap.dedent(settings), encoding="utf-8")
    return {
        "CUBERUN_SETTINGS": str(path),
        "MLCUBE_SYSTEM_SETTINGS": str(home / "no-mlcube.yaml"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "CUBERUN_CACHE_DIR": str(home / "cache" / "cuberun"),
    }


def make_runner(cube_dir: Path, platform: str, *params: str, options: RunOptions | None = None) -> Runner:
    """The runner a `cuberun run --platform=PLATFORM -P...` would use for this cube."""
    from cuberun.runners.base import RunOptions
    from cuberun.runners.factory import make_runner as _make
    from cuberun.spec.load import load_cube

    cube = load_cube(cube_dir, overrides=params)
    return _make(cube, platform, options or RunOptions(), params)


def plan(cube_dir: Path, platform: str, task: str, *params: str, overrides: Mapping[str, str] | None = None,
         options: RunOptions | None = None) -> list[Step]:
    """What `--dry-run` would print for one task (configure steps, then the task's), as Steps:
    the pure function a golden test pins. Inputs need not exist."""
    from cuberun.resolve import resolve_task

    runner = make_runner(cube_dir, platform, *params, options=options)
    rt = resolve_task(runner.cube, task, dict(overrides or {}), allow_missing_inputs=True)
    return [*runner.configure_steps(), *runner.run_steps(rt)]


def plan_lines(cube_dir: Path, platform: str, task: str, *params: str, **kwargs: Any) -> list[str]:
    """`plan` as the shell-quoted lines `--dry-run` prints, with `cube_dir` shown as `<cube>`
    so that a golden file does not depend on where the test ran."""
    lines = [step.display() for step in plan(cube_dir, platform, task, *params, **kwargs)]
    return [line.replace(str(cube_dir), "<cube>") for line in lines]


def run_task(cube_dir: Path, platform: str, task: str, *params: str, overrides: Mapping[str, str] | None = None,
             force: bool = False, options: RunOptions | None = None) -> list[TaskResult]:
    """Run one task for real, in this process, as `cuberun run` does (up-to-date check, records)."""
    from cuberun.execute import run_tasks

    runner = make_runner(cube_dir, platform, *params, options=options)
    return run_tasks(runner.cube, runner, [task], dict(overrides or {}), force=force)


def run_cli(*args: str, env: Mapping[str, str], cwd: Path | None = None, timeout: float = 300) -> Captured:
    """`python -m cuberun ARGS` in a subprocess with `env` added to this one's environment:
    returncode, stdout and stderr (text)."""
    from cuberun.process import capture

    return capture([sys.executable, "-m", "cuberun", *args], cwd=str(cwd) if cwd else None, env={**os.environ, **env}, timeout=timeout)


def records(workspace: Path) -> list[dict[str, Any]]:
    """The run records of a workspace, oldest first."""
    from cuberun.records import list_runs

    return list_runs(workspace)


def fake_executable(folder: Path, name: str, script: str) -> Path:
    """An executable `folder/name` running the POSIX shell `script` (for unit tests of how a runner
    calls a backend's program and reads its answers). Put `folder` first on PATH to use it."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + textwrap.dedent(script), encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def dry_run_json(cube_dir: Path, platform: str, task: str, *params: str, env: Mapping[str, str]) -> dict[str, Any]:
    """`cuberun run --dry-run --json` through the real CLI, parsed."""
    proc = run_cli("run", f"--mlcube={cube_dir}", f"--platform={platform}", f"--task={task}", "--dry-run", "--json",
                   *(f"-P{p}" for p in params), env=env)
    if proc.returncode != 0:
        raise AssertionError(f"cuberun run --dry-run failed ({proc.returncode}): {proc.stderr.strip()}")
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


try:  # the fixture, when pytest is there (it is, whenever this module is used as a plugin)
    import pytest
except ImportError:  # pragma: no cover - the functions above work without pytest
    pass
else:

    @pytest.fixture
    def cuberun_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
        """Isolated settings and cache for one test, set in this process's environment; the
        mapping is also what to pass to `run_cli(env=...)`."""
        env = isolated_env(tmp_path / "cuberun-home")
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env


__all__ = [
    "ISOLATION_VARS",
    "dry_run_json",
    "fake_executable",
    "isolated_env",
    "make_cube",
    "make_runner",
    "plan",
    "plan_lines",
    "records",
    "run_cli",
    "run_task",
]
