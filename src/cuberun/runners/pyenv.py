"""Managed Python environments for the local runner: one virtualenv per requirements hash,
kept in the user cache dir (never inside the cube), created once, shared by every cube."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cuberun.errors import BackendError
from cuberun.valueclass import dataclass

MARKER = ".cuberun-env.json"


def cache_dir() -> Path:
    env = os.environ.get("CUBERUN_CACHE_DIR")
    if env:
        return Path(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cuberun"


@dataclass(frozen=True)
class EnvSpec:
    python: str  # interpreter that creates the venv
    requirement_files: tuple[Path, ...]
    packages: tuple[str, ...]

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(os.path.realpath(self.python).encode())
        h.update(_python_version(self.python).encode())
        for f in self.requirement_files:
            h.update(b"\0file\0")
            h.update(f.read_bytes())
        for p in sorted(self.packages):
            h.update(b"\0pkg\0" + p.encode())
        return h.hexdigest()[:20]

    def path(self) -> Path:
        return cache_dir() / "envs" / self.key()

    def ready(self) -> bool:
        return (self.path() / MARKER).is_file()

    def bin_dir(self) -> Path:
        return self.path() / "bin"

    def install_argvs(self) -> list[list[str]]:
        """The commands that create the env (what --dry-run shows)."""
        where = str(self.path())
        argvs = [[self.python, "-m", "venv", where]]
        pip = [str(self.path() / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
        if self.requirement_files or self.packages:
            install = list(pip)
            for f in self.requirement_files:
                install += ["-r", str(f)]
            install += list(self.packages)
            argvs.append(install)
        return argvs


_VERSIONS: dict[str, str] = {}


def _python_version(python: str) -> str:
    if python == sys.executable:
        return sys.version
    if python not in _VERSIONS:
        from cuberun.process import capture

        result = capture([python, "-c", "import sys; print(sys.version)"], timeout=30)
        if result.returncode != 0:
            raise BackendError(f"cannot run the Python interpreter '{python}': {result.stderr.strip() or 'exit ' + str(result.returncode)}",
                               "set local.python to an installed interpreter (e.g. python3)")
        _VERSIONS[python] = result.stdout.strip()
    return _VERSIONS[python]


def ensure(spec: EnvSpec, log: Sequence[object] = ()) -> Path:
    """Create the env if it is missing (under a lock, so parallel runs build it once)."""
    import fcntl
    import shutil

    from cuberun.process import stream

    target = spec.path()
    if spec.ready():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    from cuberun.safeio import open_lock_file, write_file

    with open(open_lock_file(lock_path), "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if spec.ready():
            return target
        if target.exists():
            shutil.rmtree(target)  # a half-built env from an interrupted run
        print(f"cuberun: creating Python environment {target}", file=sys.stderr, flush=True)
        for argv in spec.install_argvs():
            outcome = stream(argv, echo=getattr(sys.stderr, "buffer", None))
            if outcome.exit_code != 0:
                shutil.rmtree(target, ignore_errors=True)
                what = "pip install" if "pip" in argv else "venv creation"
                raise BackendError(
                    f"{what} failed with exit code {outcome.exit_code} while creating {target}",
                    "check the requirements and the package index; the output is above",
                    exit_code=outcome.exit_code if outcome.interrupted else None,
                )
        write_file(
            target / MARKER,
            json.dumps({"python": spec.python, "requirements": [str(f) for f in spec.requirement_files], "packages": list(spec.packages)}),
            what="environment marker",
        )
    return target
