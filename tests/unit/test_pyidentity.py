"""The program a host task starts: interpreter, version, installed packages; nested requirements."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cuberun import pyidentity
from cuberun.runners.pyenv import EnvSpec
from cuberun.runners.reqfiles import closure
from tests.conftest import write_tree


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))


def test_packages_are_read_from_the_import_folders(tmp_path: Path) -> None:
    for name in ("numpy-2.3.1.dist-info", "Typing_Extensions-4.12.0.dist-info", "old_pkg-1.0-py3.11.egg-info", "notapkg"):
        (tmp_path / "site" / name).mkdir(parents=True)
    (tmp_path / "later" / "numpy-1.0.dist-info").mkdir(parents=True)
    found = pyidentity.packages([str(tmp_path / "site"), str(tmp_path / "later"), str(tmp_path / "missing")])
    assert found == {"numpy": "2.3.1", "old-pkg": "1.0", "typing-extensions": "4.12.0"}
    assert pyidentity.describe_packages({"numpy": "2.3.1", "a": "1"}, {"numpy": "2.4.0", "b": "2"}) == "numpy 2.3.1 -> 2.4.0, b 2 added, a 1 removed"


def test_identity_of_an_interpreter_and_of_another_program(tmp_path: Path) -> None:
    me = pyidentity.identity(sys.executable, {}, None)
    assert me["version"] == sys.version.split()[0] and me["packages"].get("pytest")
    again = pyidentity.identity(sys.executable, {}, None)  # from the cache
    assert again == me
    link = tmp_path / "bin" / "python3"
    link.parent.mkdir()
    link.symlink_to(sys.executable)
    other = pyidentity.identity("python3", {"PATH": str(link.parent)}, None)  # asked once, then cached
    assert other["path"] == str(link) and other["version"] == me["version"]
    sh = pyidentity.identity("sh", {"PATH": "/bin:/usr/bin"}, None)
    assert "version" not in sh and sh["size"] > 0
    assert pyidentity.identity("no-such-program-here", {"PATH": str(tmp_path)}, None) == {"path": "no-such-program-here", "missing": True}


def test_nested_requirement_files_are_part_of_the_env(tmp_path: Path) -> None:
    write_tree(tmp_path, {"requirements.txt": "numpy\n-r sub/base.txt  # comment\n--constraint=c.txt\n-rx.txt\n-r https://h/r.txt\n",
                          "sub/base.txt": "-r ../requirements.txt\n-c ../c2.txt\n", "c.txt": "", "c2.txt": "", "x.txt": ""})
    top = tmp_path / "requirements.txt"
    assert [p.relative_to(tmp_path).as_posix() for p in closure([top])] == ["requirements.txt", "sub/base.txt", "c2.txt", "c.txt", "x.txt"]
    spec = EnvSpec(sys.executable, (top,), ())
    key = spec.key()
    (tmp_path / "sub" / "base.txt").write_text("-r ../requirements.txt\n-c ../c2.txt\npandas\n")
    assert spec.key() != key
    (tmp_path / "c2.txt").write_text("numpy<3\n")
    assert len({key, spec.key()}) == 2
