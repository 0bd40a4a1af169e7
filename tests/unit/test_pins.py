"""Bit-rotted pins: reading requirement files, pip's failures, and how a pin is relaxed."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import pytest

from cuberun.errors import BackendError
from cuberun.runners import pins, pyenv, pythons
from tests.conftest import write_tree

# pip's output when an old pin's source build fails (its build subprocess collects others first)
BUILD_FAILURE = """Collecting pandas==1.1.3
  Downloading pandas-1.1.3.tar.gz (5.2 MB)
  Installing build dependencies: started
  Installing build dependencies: finished with status 'error'
  error: subprocess-exited-with-error

  × pip subprocess to install build dependencies did not run successfully.
  ╰─> [3 lines of output]
      Collecting setuptools
      Collecting numpy==1.17.3
        error: subprocess-exited-with-error
      [end of output]
error: subprocess-exited-with-error
"""


def test_release_and_choose() -> None:
    assert pins.release("1.8.0+cpu") == (1, 8, 0) and pins.release("3.0.0rc0") is None and pins.release("1.0.post2") == (1, 0)
    wheels = ["1.5.0", "1.5.3", "2.0.0", "3.0.0rc0", "3.1.1"]
    assert pins.choose("==", "1.1.3", wheels) == (">=1.1.3,<2", "1.5.3")  # the same major version first
    assert pins.choose("~=", "5.3", ["6.0", "6.0.4"]) == (">=5.3", "6.0.4")  # else the newest above the pin
    assert pins.choose("==", "9.0", ["1.0", "2.0"]) == ("", "2.0")  # else the newest there is
    assert pins.choose("==", "1.0", []) is None


def test_failing_requirement_is_pips_own_not_a_build_subprocess() -> None:
    assert pins.failing_requirement(BUILD_FAILURE) == "pandas==1.1.3"
    assert pins.failing_requirement("ERROR: No matching distribution found for torch==1.8.0+cpu\n") == "torch==1.8.0+cpu"
    conflict = "ERROR: Cannot install torch==1.8.0+cpu because ...\nThe conflict is caused by:\n    The user requested torch==1.8.0+cpu\n"
    assert pins.failing_requirement(conflict) == "torch==1.8.0+cpu"
    assert pins.failing_requirement("something else entirely\n") is None


def test_requirement_lines_includes_and_pins(tmp_path: Path) -> None:
    write_tree(tmp_path, {
        "requirements.txt": "--find-links https://x.invalid/wheels\n# a comment\npandas==1.1.3  # old\n-r more/base.txt\nrequests[security]\n",
        "more/base.txt": "PyYAML~=5.3\nnumpy>=1.0 ; python_version >= '3'\n",
    })
    lines = pins.read_lines(tmp_path / "requirements.txt")
    named = [(line.name, pins.pinned(line), line.where) for line in lines if line.name]
    assert named == [("pandas", ("==", "1.1.3"), "requirements.txt:3"), ("PyYAML", ("~=", "5.3"), "base.txt:1"),
                     ("numpy", None, "base.txt:2"), ("requests", None, "requirements.txt:5")]
    assert pins.find_line("PANDAS", [tmp_path / "requirements.txt"], []) == ("pandas==1.1.3", "requirements.txt:3")


def test_relax_rewrites_only_pins_without_a_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_tree(tmp_path, {"requirements.txt": "-c constraints.txt\npandas==1.1.3\nwget==3.2\nsix==1.16.0\n", "constraints.txt": ""})
    answers = {"pandas==1.1.3": ["1.5.3", "2.2.0"], "wget==3.2": [], "six==1.16.0": None, "numpy==1.19.5": None}
    monkeypatch.setattr(pins, "wheel_versions", lambda python, req, options=(): answers[req])
    files, packages, relaxed = pins.relax("python", "3.11.7", [tmp_path / "requirements.txt"], ["numpy==1.19.5"], tmp_path / "out")
    assert files[0].read_text().splitlines() == [f"-c {tmp_path / 'constraints.txt'}", "pandas>=1.1.3,<2  # relaxed by cuberun from: pandas==1.1.3",
                                                 "wget==3.2", "six==1.16.0"]
    assert [r.describe() for r in relaxed] == ["pandas==1.1.3 (requirements.txt:2) -> pandas>=1.1.3,<2: no build for Python 3.11; "
                                               "the newest release with one is 1.5.3"]
    assert packages == ["numpy==1.19.5"]  # it has a build (the fake pip says so): kept


def fake_python(path: Path, version: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\necho {version}\necho {path}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_interpreters_by_version_skip_broken_shims(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shim = tmp_path / "bin" / "python3.8"
    shim.parent.mkdir()
    shim.write_text("#!/bin/sh\necho 'pyenv: python3.8: command not found' >&2\nexit 127\n")
    shim.chmod(0o755)
    real = fake_python(tmp_path / "pyenv" / "versions" / "3.8.18" / "bin" / "python", "3.8.18")
    monkeypatch.setenv("PATH", f"{shim.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setattr(pythons, "_PROBED", {})
    found = pythons.resolve("3.8")
    assert (found.path, found.version, found.source) == (str(real), "3.8.18", "pyenv")
    assert pythons.resolve("python3.8").source == "pyenv"
    with pytest.raises(BackendError) as err:
        pythons.resolve("2.5")
    assert err.value.message == "local.python: no Python 2.5 is installed here (looked on PATH, in pyenv, uv and conda)"
    with pytest.raises(BackendError):
        pythons.resolve(str(shim))  # a path that does not run
    assert pythons.resolve(None).path == sys.executable


@pytest.mark.slow
def test_a_failed_env_is_remembered_until_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUBERUN_CACHE_DIR", str(tmp_path / "cache"))
    # --no-index (as a Dockerfile's pip line may say): pip fails at once, without the network
    spec = pyenv.EnvSpec(sys.executable, (), ("cuberun-test-no-such-project-zz==1.0",), pip_options=("--no-index",))
    with pytest.raises(pyenv.EnvBuildError) as first:
        pyenv.ensure(spec)
    assert first.value.message == ("cannot build the Python environment: cuberun-test-no-such-project-zz==1.0: "
                                   "no release of it is found on the package index (with the Dockerfile's pip options --no-index)")
    assert "--relax-pins" in str(first.value.hint) and f"pip's output: {spec.log_path()}" in str(first.value.hint)
    assert not spec.path().exists() and spec.failure_path().is_file()
    with pytest.raises(pyenv.EnvBuildError) as second:
        pyenv.ensure(spec)
    assert second.value.message.startswith(first.value.message + " (remembered from the attempt at ")
    assert str(second.value.hint).endswith("or add --rebuild-env to try again")
    with pytest.raises(pyenv.EnvBuildError) as third:
        pyenv.ensure(spec, rebuild=True)  # tried again, for real
    assert third.value.message == first.value.message
