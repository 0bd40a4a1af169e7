"""A release as users get it: `python -m build` (an sdist, then the wheel built from it), installed
into a fresh virtualenv (not editable), runs the main job offline and scaffolds cubes from its
packaged templates. The wheel and its virtualenv are made once per test session."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.backends import skip_or_fail
from tests.conftest import EXAMPLES
from tests.docs.doctest_blocks import REPO, copy_checkout, offline_prefix, user_environment

pytestmark = pytest.mark.slow


class Release:
    def __init__(self, root: Path, cache: Path) -> None:
        timings: dict[str, float] = {}
        start = time.monotonic()
        source = copy_checkout(root / "source")  # the build writes build/ and *.egg-info: never into the repository
        dist = root / "dist"
        subprocess.run([sys.executable, "-m", "build", "--outdir", str(dist), str(source)], check=True, capture_output=True, timeout=900)
        timings["build"] = time.monotonic() - start
        wheels = sorted(dist.glob("cuberun-*.whl"))
        assert len(wheels) == 1 and len(sorted(dist.glob("cuberun-*.tar.gz"))) == 1, sorted(p.name for p in dist.iterdir())
        self.wheel = wheels[0]
        start = time.monotonic()
        self.venv = root / "venv"
        base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
        subprocess.run([base, "-m", "venv", str(self.venv)], check=True, capture_output=True, timeout=300)
        subprocess.run([str(self.venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(self.wheel)],
                       check=True, capture_output=True, timeout=900)
        timings["venv and install"] = time.monotonic() - start
        self.timings = timings
        (root / "home").mkdir()
        self.env = user_environment(root / "home", cache)
        self.offline = offline_prefix()

    def cuberun(self, *args: str, cwd: Path, offline: bool = False, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        prefix: list[str] = []
        if offline:
            if self.offline is None:
                skip_or_fail("no network namespace can be made here (unshare --net, or a user namespace) to run offline")
            prefix = self.offline or []
        return subprocess.run([*prefix, str(self.venv / "bin" / "cuberun"), *args], cwd=cwd, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Release:
    return Release(tmp_path_factory.mktemp("release"), cache_dir)


def test_wheel_holds_the_package_data(release: Release) -> None:
    print("seconds:", {k: round(v, 1) for k, v in release.timings.items()})
    names = set(zipfile.ZipFile(release.wheel).namelist())
    templates = REPO / "src" / "cuberun" / "templates"
    expected = {"cuberun/templates/" + str(p.relative_to(templates)) for p in templates.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert expected <= names, sorted(expected - names)
    assert {"cuberun/templates/single/main.py.tmpl", "cuberun/templates/pipeline/workspace/parameters.yaml"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(release.wheel).read(entry_points).decode()
    assert "cuberun = cuberun.cli.main:main" in text and "local = cuberun.runners.local:LocalRunner" in text
    installed = subprocess.run([str(release.venv / "bin" / "python"), "-c", "import cuberun, sys; print(cuberun.__file__)"],
                               capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    assert installed.startswith(str(release.venv)) and "site-packages" in installed  # not the repository's source: not editable


def test_wheel_runs_the_main_job_offline(release: Release, tmp_path: Path) -> None:
    cube = tmp_path / "digits"
    shutil.copytree(EXAMPLES / "digits", cube, ignore=shutil.ignore_patterns(".cuberun", "data", "model", "logs", "report.json"))
    start = time.monotonic()
    configured = release.cuberun("configure", f"--mlcube={cube}", cwd=tmp_path)  # the managed env: from the package index, once
    assert configured.returncode == 0, configured.stderr
    middle = time.monotonic()
    ran = release.cuberun("run", f"--mlcube={cube}", cwd=tmp_path, offline=True)
    assert ran.returncode == 0, ran.stderr
    print(f"seconds: configure {middle - start:.1f}, offline run {time.monotonic() - middle:.1f}")
    report = json.loads((cube / "workspace" / "report.json").read_text())
    assert report["accuracy"] > 0.9
    again = release.cuberun("run", f"--mlcube={cube}", cwd=tmp_path, offline=True)
    assert again.returncode == 0 and again.stderr.count("skipping task") == 3, again.stderr


@pytest.mark.parametrize("template", ["single", "pipeline"])
def test_wheel_scaffolds_cubes_that_run_offline(release: Release, tmp_path: Path, template: str) -> None:
    made = release.cuberun("create", "fresh", f"--template={template}", cwd=tmp_path, offline=True)
    assert made.returncode == 0, made.stderr
    ran = release.cuberun("run", "--mlcube=fresh", cwd=tmp_path, offline=True)
    assert ran.returncode == 0, ran.stderr
    output = tmp_path / "fresh" / "workspace" / ("metrics.json" if template == "pipeline" else "output/result.json")
    assert json.loads(output.read_text())
