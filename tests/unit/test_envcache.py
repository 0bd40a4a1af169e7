"""The env cache: normalised keys, list, prune and eviction never touching a folder cuberun
did not create nor an env a running cuberun uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cuberun import envcache
from cuberun.runners.pyenv import MARKER, EnvSpec, normalized


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("CUBERUN_ENV_CACHE_MAX", raising=False)
    (tmp_path / "cache" / "envs").mkdir(parents=True)
    return tmp_path / "cache" / "envs"


def key_of(tmp_path: Path, text: str, name: str = "requirements.txt") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return EnvSpec(sys.executable, (path,), ()).key()


@pytest.mark.parametrize("variant", [
    "numpy==1.26.4\n# a comment\nsix\n",
    "six\n\n\nnumpy==1.26.4   # pinned\n",
    "  six  \nnumpy == 1.26.4\n",
    "six\\\n\nnumpy==1.26.4\n",
])
def test_comments_whitespace_and_order_of_requirements_share_a_key(tmp_path: Path, variant: str) -> None:
    assert key_of(tmp_path, variant, "b.txt") == key_of(tmp_path, "six\nnumpy==1.26.4\n")


@pytest.mark.parametrize("other", [
    "six\nnumpy==1.26.3\n",  # another version
    "six\nnumpy==1.26.4\nrequests\n",  # another package
    "--index-url http://127.0.0.1:1/simple\nsix\nnumpy==1.26.4\n",  # where packages come from
])
def test_what_changes_the_env_changes_the_key(tmp_path: Path, other: str) -> None:
    assert key_of(tmp_path, other, "b.txt") != key_of(tmp_path, "six\nnumpy==1.26.4\n")


def test_option_lines_keep_their_place() -> None:
    a = normalized(b"-r base.txt\nsix\n-r extra.txt\nnumpy\n")
    assert normalized(b"-r extra.txt\nsix\n-r base.txt\nnumpy\n") != a  # -r order matters
    assert normalized(b"-r base.txt\nsix\nnumpy\n-r extra.txt\n") != a  # a requirement does not move across an option line
    assert normalized(b"-r base.txt\n# x\nsix\n-r extra.txt\nnumpy  # y\n") == a


def make_env(envs: Path, key: str, *, used: float, size: int = 1000, cube: str = "/cubes/a") -> Path:
    path = envs / key
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").write_bytes(b"x" * size)
    (path / MARKER).write_text(json.dumps({"version": "3.11.7", "requirements": ["/r.txt"], "bytes": size}), encoding="utf-8")
    (path / envcache.USAGE).write_text(json.dumps({"last_used": used, "cubes": [cube]}), encoding="utf-8")
    (envs / f"{key}.log").write_text("pip said", encoding="utf-8")
    return path


def test_list_prune_and_foreign_folders(cache: Path) -> None:
    now = time.time()
    old = make_env(cache, "a" * 20, used=now - 40 * 86400)
    new = make_env(cache, "b" * 20, used=now)
    foreign = cache / "my-own-venv"
    (foreign / "bin").mkdir(parents=True)
    (cache / "notes.txt").write_text("mine", encoding="utf-8")
    lookalike = cache / ("c" * 20)  # named like an env, but without cuberun's marker: not ours
    (lookalike / "lib").mkdir(parents=True)

    assert [e.key for e in envcache.envs()] == ["b" * 20, "a" * 20]
    assert envcache.envs()[1].cubes == ["/cubes/a"] and envcache.envs()[1].size == 1000
    assert sorted(p.name for p in envcache.foreign()) == ["c" * 20, "my-own-venv", "notes.txt"]

    gone, busy = envcache.prune(30, dry_run=True)
    assert [e.key for e in gone] == ["a" * 20] and not busy and old.is_dir()
    gone, busy = envcache.prune(30)
    assert [e.key for e in gone] == ["a" * 20] and not old.exists() and not (cache / f"{'a' * 20}.log").exists()
    gone, _ = envcache.prune(None)
    assert [e.key for e in gone] == ["b" * 20] and not new.exists()
    assert foreign.is_dir() and (cache / "notes.txt").is_file() and lookalike.is_dir()


def test_an_env_in_use_by_another_cuberun_is_kept(cache: Path, tmp_path: Path) -> None:
    key = "d" * 20
    env = make_env(cache, key, used=0)
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time, pathlib; from cuberun import envcache; envcache.hold(sys.argv[1]); "
         "pathlib.Path(sys.argv[2]).write_text('held'); sys.stdin.read()", key, str(ready)],
        stdin=subprocess.PIPE, env={**os.environ, "CUBERUN_CACHE_DIR": str(cache.parent)},
    )
    try:
        for _ in range(600):  # bounded: 60 s at most
            if ready.exists() or holder.poll() is not None:
                break
            time.sleep(0.1)
        assert ready.exists()
        gone, busy = envcache.prune(None)
        assert not gone and [e.key for e in busy] == [key] and (env / MARKER).is_file()
        assert envcache.bound(keep="x") == [] or env.is_dir()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    gone, busy = envcache.prune(None)
    assert [e.key for e in gone] == [key] and not env.exists()


def test_size_bound_evicts_the_least_recently_used(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i, key in enumerate(["1" * 20, "2" * 20, "3" * 20]):
        make_env(cache, key, used=1000.0 + i, size=4096)
    monkeypatch.setenv("CUBERUN_ENV_CACHE_MAX", "9K")  # room for two
    evicted = envcache.bound(keep="1" * 20)  # the oldest was just built: never evicted
    assert [e.key for e in evicted] == ["2" * 20]
    assert sorted(e.key for e in envcache.envs()) == ["1" * 20, "3" * 20]
    monkeypatch.setenv("CUBERUN_ENV_CACHE_MAX", "0")
    assert envcache.limit() is None and envcache.bound(keep="") == []


def test_record_use_keeps_the_latest_cubes(cache: Path) -> None:
    make_env(cache, "e" * 20, used=0)
    for cube in ["/a", "/b", "/a"]:
        envcache.record_use("e" * 20, cube)
    [env] = envcache.envs()
    assert env.cubes == ["/a", "/b", "/cubes/a"] and env.last_used > 1000  # most recent first, each once


def test_a_damaged_env_is_named_with_the_way_out(cache: Path, tmp_path: Path) -> None:
    from cuberun.errors import CuberunError
    from cuberun.runners import pyenv

    spec = EnvSpec(sys.executable, (), ("six",), version="3.11.7")
    target = spec.path()
    (target / "bin").mkdir(parents=True)
    (target / MARKER).write_text("{}", encoding="utf-8")
    (target / "pyvenv.cfg").write_text("home = /nowhere\n", encoding="utf-8")
    (target / "bin" / "python").symlink_to(tmp_path / "gone" / "python3")
    with pytest.raises(CuberunError) as exc:
        pyenv.ensure(spec)
    message, hint = exc.value.lines()[0], " ".join(exc.value.lines())
    assert message.startswith(f"the Python environment {target} is damaged: {target}/bin/python points to {tmp_path}/gone/python3, which is gone")
    assert "--rebuild-env" in hint and "cuberun env rebuild" in hint
    (target / "bin" / "python").unlink()
    (target / "bin" / "python").symlink_to(sys.executable)
    assert pyenv.damaged(target) is None
    (target / "pyvenv.cfg").unlink()
    assert pyenv.damaged(target) == f"{target}/pyvenv.cfg is missing"


def test_a_hold_is_closed_by_release_on_failure_and_at_exit(cache: Path, tmp_path: Path) -> None:
    from cuberun.errors import CuberunError
    from cuberun.runners import pyenv

    key = "f" * 20
    envcache.hold(key)
    assert envcache.held(key)
    with envcache.exclusive(key) as free:  # this process uses it: not free
        assert not free
    envcache.release(key)
    assert not envcache.held(key)
    with envcache.exclusive(key) as free:
        assert free
    # an env that cannot be used (damaged) is not kept held
    spec = EnvSpec(sys.executable, (), ("six",), version="3.11.7")
    (spec.path() / "bin").mkdir(parents=True)
    (spec.path() / MARKER).write_text("{}", encoding="utf-8")
    with pytest.raises(CuberunError):
        pyenv.ensure(spec)
    assert not envcache.held(spec.key())
    # a process that holds an env and exits leaves no unclosed file behind (-X dev shows a ResourceWarning)
    got = subprocess.run([sys.executable, "-X", "dev", "-W", "error::ResourceWarning", "-c",
                          "import sys; from cuberun import envcache; envcache.hold(sys.argv[1]); envcache.hold(sys.argv[1])", key],
                         capture_output=True, text=True, timeout=60, env={**os.environ, "CUBERUN_CACHE_DIR": str(cache.parent)}, check=False)
    assert got.returncode == 0 and "ResourceWarning" not in got.stderr, got.stderr
