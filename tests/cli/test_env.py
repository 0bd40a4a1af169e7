"""`cuberun env list|prune|rebuild` through the CLI, on a cache laid out as cuberun writes it,
with folders and files of someone else's beside the envs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import CLI, write_tree
from tests.unit.test_envcache import make_env


def test_list_and_prune_leave_what_cuberun_did_not_create(cli: CLI, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    envs = cache / "envs"
    envs.mkdir(parents=True)
    now = time.time()
    make_env(envs, "a" * 20, used=now - 90 * 86400, size=4096, cube="/cubes/old")
    make_env(envs, "b" * 20, used=now, size=8192, cube="/cubes/new")
    write_tree(envs, {"someones-venv/bin/python": "x", "README.txt": "mine", ("c" * 20) + "/lib/x.py": "no marker: not ours"})
    env = {"CUBERUN_CACHE_DIR": str(cache)}

    listed = cli("env", "list", env=env)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["KEY", "SIZE", "PYTHON", "LAST", "USED", "CUBES"]
    assert lines[1].startswith("b" * 20) and lines[1].endswith("/cubes/new") and "8.0 KiB" in lines[1]
    assert lines[2].startswith("a" * 20) and lines[2].endswith("/cubes/old")
    assert lines[3].startswith("2 environments, 12.0 KiB in ")
    data = json.loads(cli("env", "list", "--json", env=env).stdout)
    assert [e["key"] for e in data] == ["b" * 20, "a" * 20] and data[0]["cubes"] == ["/cubes/new"]

    dry = cli("env", "prune", "--older-than", "30", "--dry-run", env=env)
    assert dry.returncode == 0 and dry.stdout.splitlines()[0].startswith(f"would remove {'a' * 20} (4.0 KiB")
    assert (envs / ("a" * 20)).is_dir()
    pruned = cli("env", "prune", "--older-than", "30", env=env)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {'a' * 20}" in pruned.stdout and "removed 1 environment, 4.0 KiB" in pruned.stdout
    assert f"left alone {envs / 'someones-venv'}: not created by cuberun" in pruned.stdout
    assert not (envs / ("a" * 20)).exists() and (envs / ("b" * 20)).is_dir()

    everything = cli("env", "prune", env=env)
    assert everything.returncode == 0 and not (envs / ("b" * 20)).exists()
    assert (envs / "someones-venv" / "bin" / "python").is_file() and (envs / "README.txt").is_file()
    assert (envs / ("c" * 20) / "lib" / "x.py").is_file()
    assert cli("env", "list", env=env).stdout.startswith("no environments in ")


def test_rebuild_needs_a_managed_env(cli: CLI, tmp_path: Path) -> None:
    cube = write_tree(tmp_path / "plain", {"mlcube.yaml": "name: plain\nlocal:\n  command: python3 x.py\ntasks:\n  t: {parameters: {}}\n",
                                           "x.py": ""})
    got = cli("env", "rebuild", f"--mlcube={cube}")
    assert got.returncode == 2
    assert got.stderr.startswith("cuberun: error: cube 'plain' has no managed environment on the local platform")
