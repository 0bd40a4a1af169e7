"""Managed Python environments for the local runner: one virtualenv per requirements hash,
kept in the user cache dir (never inside the cube), created once, shared by every cube.

A build that fails is remembered (`<key>.failed.json` beside the envs, with pip's output in
`<key>.log`): the next run with the same key says the same one-line reason at once instead of
building again, until asked (`--rebuild-env`). With `relax` (`--relax-pins`), pins that have no
build for the interpreter are relaxed first (pins.py) and each relaxation is kept in the env's
marker, for the run records.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cuberun.errors import BackendError
from cuberun.paths import cache_dir as cache_dir  # moved to cuberun.paths; re-exported for older imports
from cuberun.valueclass import dataclass, field

MARKER = ".cuberun-env.json"


class EnvBuildError(BackendError):
    """The managed env cannot be built; `reason` is the one-line why."""


@dataclass(frozen=True)
class EnvSpec:
    python: str  # interpreter that creates the venv
    requirement_files: tuple[Path, ...]
    packages: tuple[str, ...]
    constraint_files: tuple[Path, ...] = ()
    pip_options: tuple[str, ...] = ()  # where packages come from (--index-url, --find-links, ...)
    editables: tuple[str, ...] = ()  # local project paths installed with -e
    relax: bool = False
    version: str = ""  # the interpreter's version ("" = ask it)
    image_python: str | None = field(default=None)  # the Python the image runs (hints only, not in the key)
    source: str = ""  # where the interpreter was found (messages only)

    def python_version(self) -> str:
        return self.version or _python_version(self.python)

    def key(self) -> str:
        h = hashlib.sha256()
        h.update(os.path.realpath(self.python).encode())
        h.update(self.python_version().encode())
        for f in self.requirement_files:
            h.update(b"\0file\0")
            h.update(normalized(_read(f)))
        for f in nested_requirements(self.requirement_files):  # a nested -r/-c file is part of the env too
            h.update(b"\0nested\0" + str(f).encode("utf-8", "surrogateescape") + b"\0")
            h.update(normalized(_read(f)) if f.is_file() else b"<missing>")
        for p in sorted(self.packages):
            h.update(b"\0pkg\0" + p.encode())
        for f in self.constraint_files:
            h.update(b"\0constraint\0" + _read(f))
        for o in self.pip_options:
            h.update(b"\0opt\0" + o.encode())
        for e in self.editables:
            h.update(b"\0editable\0" + e.encode())
        if self.relax:
            h.update(b"\0relax-pins")
        return h.hexdigest()[:20]

    def path(self) -> Path:
        return cache_dir() / "envs" / self.key()

    def failure_path(self) -> Path:
        return cache_dir() / "envs" / f"{self.key()}.failed.json"

    def log_path(self) -> Path:
        return cache_dir() / "envs" / f"{self.key()}.log"

    def ready(self) -> bool:
        return (self.path() / MARKER).is_file()

    def bin_dir(self) -> Path:
        return self.path() / "bin"

    def marker(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path() / MARKER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def remembered_failure(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.failure_path().read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and data.get("key") == self.key() else None

    def pip_install(self, files: Sequence[Path] | None = None, packages: Sequence[str] | None = None, only_binary: Sequence[str] = ()) -> list[str]:
        argv = [str(self.path() / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", *self.pip_options]
        for f in self.constraint_files:
            argv += ["-c", str(f)]
        if only_binary:
            argv += ["--only-binary", ",".join(only_binary)]
        for f in self.requirement_files if files is None else files:
            argv += ["-r", str(f)]
        argv += list(self.packages if packages is None else packages)
        for e in self.editables:
            argv += ["-e", e]
        return argv

    def install_argvs(self) -> list[list[str]]:
        """The commands that create the env (what --dry-run shows)."""
        argvs = [[self.python, "-m", "venv", str(self.path())]]
        old_pip = _pip_for_old_python(self.python_version())
        if old_pip:
            argvs.append([str(self.path() / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--upgrade",
                          *self.pip_options, old_pip])
        if self.requirement_files or self.packages or self.editables:
            argvs.append(self.pip_install())
        return argvs


def normalized(text: bytes) -> bytes:
    """What of a requirements file decides the env: its logical lines without comments, blank
    lines and extra whitespace, and the requirement lines between two option lines (`-r`,
    `--index-url`, ...: kept in place, their order can matter) in a sorted order."""
    import re

    from cuberun.runners.reqfiles import _lines

    out: list[str] = []
    run: list[str] = []
    for line in _lines(text.decode("utf-8", "surrogateescape")):
        line = re.sub(r"\s*(===|==|>=|<=|~=|!=|<|>|,|;|\[|\])\s*", r"\1", " ".join(line.split()))
        if line.startswith("-"):
            out += [*sorted(run), line]
            run = []
        else:
            run.append(line)
    out += sorted(run)
    return "\n".join(out).encode("utf-8", "surrogateescape")


def _read(path: Path) -> bytes:
    """The first 4 MiB of a requirements file (b"" when it is not a regular file: never blocks on a FIFO)."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        return read_regular(path, 64 << 20, what="requirements file")[: 1 << 22]
    except CuberunError:
        return b""


def nested_requirements(files: Sequence[Path]) -> list[Path]:
    from cuberun.runners.reqfiles import closure

    return [f for f in closure(files) if f not in files]


_VERSIONS: dict[str, str] = {}


def _python_version(python: str) -> str:
    if python == sys.executable:
        return ".".join(map(str, sys.version_info[:3]))
    if python not in _VERSIONS:
        from cuberun.runners.pythons import probe

        found = probe(python, "given path")
        if found is None:
            raise BackendError(f"cannot run the Python interpreter '{python}'", "set local.python to an installed interpreter (e.g. python3, or a version such as 3.8)")
        _VERSIONS[python] = found.version
    return _VERSIONS[python]


def ensure(spec: EnvSpec, *, rebuild: bool = False, cube: str | None = None) -> Path:
    """Create the env if it is missing (under a lock, so parallel runs build it once); mark it
    in use by this process and note the cube that uses it (envcache.py)."""
    from cuberun import envcache

    key = spec.key()
    had = envcache.held(key)
    envcache.hold(key)
    try:
        target = _ensure(spec, rebuild)
    except BaseException:
        if not had:  # this process will not use it after all
            envcache.release(key)
        raise
    envcache.record_use(key, cube)
    return target


def _ensure(spec: EnvSpec, rebuild: bool) -> Path:
    import fcntl

    target = spec.path()
    if spec.ready() and not rebuild:
        damage = damaged(target)
        if damage:
            raise EnvBuildError(f"the Python environment {target} is damaged: {damage}",
                                "build it again: add --rebuild-env, or run cuberun env rebuild --mlcube=CUBE")
        return target
    remembered = spec.remembered_failure()
    if remembered is not None and not rebuild:
        raise EnvBuildError(
            f"cannot build the Python environment: {remembered.get('reason')} (remembered from the attempt at {remembered.get('time')})",
            f"{remembered.get('hint')}; or add --rebuild-env to try again",
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    from cuberun.safeio import open_lock_file

    with open(open_lock_file(lock_path), "r+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if spec.ready() and not rebuild:
            return target
        if target.exists():
            shutil.rmtree(target)  # a half-built env from an interrupted run, or --rebuild-env
        try:
            spec.failure_path().unlink()
        except OSError:
            pass
        _build(spec, target)
    return target


def damaged(target: Path) -> str | None:
    """What is wrong with a built env (its interpreter gone or not runnable, its pyvenv.cfg
    gone), or None; a stat or two, no process."""
    python = target / "bin" / "python"
    if not os.path.exists(python):  # follows the link: a venv's python points at its base interpreter
        return f"{python} is missing" if not os.path.islink(python) else f"{python} points to {os.readlink(python)}, which is gone"
    if not os.access(python, os.X_OK):
        return f"{python} is not executable"
    if not (target / "pyvenv.cfg").is_file():
        return f"{target / 'pyvenv.cfg'} is missing"
    return None


def _build(spec: EnvSpec, target: Path) -> None:
    from cuberun import envcache, progress
    from cuberun.console import say

    version = spec.python_version()
    log_path = spec.log_path()
    started = time.monotonic()
    say("building the cube's Python environment once; later runs reuse it")
    say(f"creating Python environment {target} with Python {version}{f' ({spec.source})' if spec.source else ''}; "
        f"pip's output goes to {log_path}{'' if progress.verbose() else ' (-v shows it here)'}")
    with open(log_path, "wb") as log, progress.activity("building the Python environment", tick=_InstallCounter(target)) as act:
        act.phase("creating the virtualenv")
        code = _step(spec.install_argvs()[0], log, act)
        if code != 0:
            shutil.rmtree(target, ignore_errors=True)
            raise BackendError(f"creating the virtualenv {target} with {spec.python} failed (exit {code})", f"see {log_path}",
                               exit_code=code if code >= 128 else None)
        steps = spec.install_argvs()
        if len(steps) > 1 and steps[1][-1].startswith("pip<"):  # the pip a venv of this Python brings cannot read today's indexes
            act.phase(f"upgrading pip ({steps[1][-1]})")
            code = _step(steps[1], log, act)
            if code != 0:
                shutil.rmtree(target, ignore_errors=True)
                raise BackendError(f"upgrading pip ({steps[1][-1]}) in {target} failed (exit {code})", f"see {log_path}")
        files, packages, only_binary = list(spec.requirement_files), list(spec.packages), []
        relaxations: list[Any] = []
        if spec.relax and (files or packages):
            from cuberun.runners import pins

            act.phase("checking pins")
            python = str(target / "bin" / "python")
            files, packages, relaxations = pins.relax(python, version, files, packages, target / "cuberun-requirements", spec.pip_options)
            only_binary = sorted({pins.canonical(r.name) for r in relaxations})
            for r in relaxations:
                say(f"--relax-pins: {r.describe()}")
        code = 0
        if files or packages or spec.editables:
            act.phase("resolving", unit="packages")
            code = _step(spec.pip_install(files, packages, only_binary), log, act)
    if code != 0:
        reason, hint = _explain_failure(spec, target, version, log_path)
        shutil.rmtree(target, ignore_errors=True)
        if code < 128:  # an interrupted build is not remembered
            _remember(spec, reason, hint)
        raise EnvBuildError(f"cannot build the Python environment: {reason}", hint, exit_code=code if code >= 128 else None)
    if relaxations:
        _installed_versions(target, relaxations)
    from cuberun.safeio import write_file

    write_file(
        target / MARKER,
        json.dumps({
            "python": spec.python, "version": version, "requirements": [str(f) for f in spec.requirement_files], "packages": list(spec.packages),
            "relaxed": [r.to_json() for r in relaxations], "seconds": round(time.monotonic() - started, 1), "bytes": envcache.tree_size(target),
        }),
        what="environment marker",
    )
    say(f"Python environment ready in {time.monotonic() - started:.0f} s")
    for gone in envcache.bound(keep=spec.key()):
        say(f"removed the least recently used environment {gone.key} ({progress.human(gone.size)}, last used "
            f"{time.strftime('%Y-%m-%d', time.localtime(gone.last_used))}) to keep the cache under CUBERUN_ENV_CACHE_MAX")


def _wheel_name(text: str) -> str:
    """`numpy 2.4.6 (18 MB)` of `/x/numpy-2.4.6-cp311-....whl (18 MB)`, or of a URL."""
    name, _, size = text.partition(" (")
    base = name.strip().rsplit("/", 1)[-1]
    if base.endswith((".whl", ".tar.gz", ".zip")):
        base = " ".join(base.split("-")[:2])
    size = size.split(")", 1)[0] if size and size[0].isdigit() else ""
    return base[:50] + (f" ({size})" if size else "")


def pip_line(line: str, act: Any) -> None:
    """Progress from one line of pip's output: packages collected while resolving and
    downloading, then the count being installed (counted from the env, see _count_installed)."""
    word, _, rest = line.partition(" ")
    if word == "Collecting":
        act.update(advance=1, note=rest.split(" ", 1)[0])
    elif word == "Processing" and rest:  # a local wheel or archive
        act.update(advance=1, note=_wheel_name(rest))
    elif word in ("Downloading", "Using") and rest:  # "Downloading x.whl (18 MB)", "Using cached x.whl (..)"
        act.update(note="downloading " + _wheel_name(rest.removeprefix("cached ")))
    elif line.startswith("Building wheels for collected packages:"):
        act.phase("building wheels", done=0, total=len(line.split(":", 1)[1].split(",")), unit="packages")
    elif line.startswith("Installing collected packages:"):
        act.phase("installing", done=0, total=len(line.split(":", 1)[1].split(",")), unit="packages")
    elif line.startswith("Successfully installed"):
        act.update(done=act.total or 0)


class _InstallCounter:
    """pip installs without a word per package: count the packages' metadata folders that
    appear in the env's site-packages while the 'installing' phase lasts."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.before: int | None = None

    def _count(self) -> int:
        n = 0
        for lib in self.target.glob("lib*/python*/site-packages"):
            try:
                n += sum(1 for e in os.scandir(lib) if e.name.endswith(".dist-info"))
            except OSError:
                pass
        return n

    def __call__(self, act: Any) -> None:
        if act.stage != "installing":
            if act.stage == "resolving":  # nothing is installed yet: what the venv brought (pip, setuptools)
                self.before = self._count()
            return
        if self.before is None:
            self.before = self._count()
        done = self._count() - self.before
        if act.total and 0 <= done < act.total and done != act.done:
            act.update(done=done)


def _pip_for_old_python(version: str) -> str | None:
    """The newest pip that supports an old interpreter, when its venv brings an older one."""
    short = ".".join(version.split(".")[:2])
    return {"3.5": "pip<21", "3.6": "pip<22", "3.7": "pip<24.1"}.get(short)


def _step(argv: list[str], log: Any, act: Any) -> int:
    """One command of the build: its output to the log, to the progress display (parsed), and
    with -v to stderr."""
    from cuberun.process import stream

    log.write(("$ " + " ".join(argv) + "\n").encode())
    log.flush()
    outcome = stream(argv, log=log, echo=act.sink(pip_line))
    return outcome.exit_code


def _explain_failure(spec: EnvSpec, target: Path, version: str, log_path: Path) -> tuple[str, str]:
    from cuberun.runners import pins

    try:
        with open(log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - (1 << 20)))
            log = fh.read().decode("utf-8", "replace")
    except OSError:
        log = ""
    python = str(target / "bin" / "python")
    diagnosis = pins.diagnose(python, version, log, spec.requirement_files, spec.packages, spec.pip_options)
    return diagnosis.reason, failure_hint(spec, version, diagnosis.suggestion, log_path)


def failure_hint(spec: EnvSpec, version: str, suggestion: str | None, log_path: Path) -> str:
    """The concrete ways past a managed env that cannot be built."""
    options: list[str] = []
    if not spec.relax:
        options.append("--relax-pins" + (f" (uses {suggestion}, the newest release with a build)" if suggestion else " (newest releases with a build)"))
    short = ".".join(version.split(".")[:2])
    if spec.image_python and spec.image_python != short:
        from cuberun.runners import pythons

        found = pythons.find(tuple(int(p) for p in spec.image_python.split(".")))
        where = f"found: {found.describe()}" if found else "not installed here: e.g. pyenv install " + spec.image_python
        options.append(f"-Plocal.python={spec.image_python} (the image's Python; {where})")
    else:
        options.append("-Plocal.python=VERSION (another interpreter)")
    options.append("-Plocal.requirements=FILE with pins that install")
    options.append("-Plocal.env=current (the Python cuberun runs in)")
    return "; ".join(options) + f"; pip's output: {log_path}"


def _remember(spec: EnvSpec, reason: str, hint: str) -> None:
    data = {"key": spec.key(), "reason": reason, "hint": hint, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "log": str(spec.log_path()),
            "python": spec.python, "version": spec.python_version()}
    from cuberun.errors import CuberunError
    from cuberun.safeio import write_file

    try:
        write_file(spec.failure_path(), json.dumps(data), what="failure memory")
    except (OSError, CuberunError):
        pass


def _installed_versions(target: Path, relaxations: Sequence[Any]) -> None:
    from cuberun.process import capture

    code = (
        "import json, sys\n"
        "try:\n    from importlib.metadata import version\n"
        "except ImportError:\n    import pkg_resources\n    version = lambda n: pkg_resources.get_distribution(n).version\n"
        "out = {}\n"
        "for n in sys.argv[1:]:\n    try:\n        out[n] = version(n)\n    except Exception:\n        pass\n"
        "print(json.dumps(out))\n"
    )
    names = [r.name for r in relaxations]
    result = capture([str(target / "bin" / "python"), "-c", code, *names], timeout=60)
    try:
        found = json.loads(result.stdout or "{}")
    except ValueError:
        return
    for r, name in zip(relaxations, names, strict=False):
        r.installed = found.get(name)
