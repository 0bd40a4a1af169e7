"""The identity of the program a host task starts: which executable (resolved path), and for a
Python interpreter its version and the packages actually installed where it imports from.

Asking an interpreter for its version and import path costs a process start (20-40 ms), so the
answer is kept in the user's cache dir, keyed by the interpreter's path, the file's stat and the
variables that change its import path; the package set itself is read on every run (a listing
of the `*.dist-info` / `*.egg-info` folders of each import directory: a millisecond or two).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

PYTHON_NAME = re.compile(r"^(python|pypy)(\d+(\.\d+)*)?[mtw]?$")
PATH_VARS = ("PYTHONPATH", "PYTHONHOME", "PYTHONNOUSERSITE", "PYTHONUSERBASE", "PYTHONSAFEPATH")
PROBE = ("import json, os, sys\n"
         "print(json.dumps({'version': sys.version.split()[0], 'build': sys.version, 'executable': os.path.realpath(sys.executable),"
         " 'path': [p for p in sys.path if p and os.path.isdir(p)]}))")
_LOCK = threading.Lock()


def resolve(argv0: str, env_path: str | None, cwd: str | None) -> str | None:
    """Where `argv0` is found: PATH lookup for a bare name, else relative to the working dir."""
    if os.sep in argv0:
        full = argv0 if os.path.isabs(argv0) else os.path.join(cwd or os.getcwd(), argv0)
        return os.path.normpath(full) if os.path.exists(full) else None
    for folder in (env_path if env_path is not None else os.defpath).split(os.pathsep):  # shutil.which, without importing shutil
        full = os.path.join(folder or os.curdir, argv0)
        if os.path.isfile(full) and os.access(full, os.X_OK):
            return full
    return None


def identity(argv0: str, env: Mapping[str, str], cwd: str | None) -> dict[str, Any]:
    """{"path", "real", and "version"+"packages" for Python or "size"+"mtime_ns" otherwise}."""
    found = resolve(argv0, env.get("PATH", os.environ.get("PATH")), cwd)
    if found is None:
        return {"path": argv0, "missing": True}
    real = os.path.realpath(found)
    info: dict[str, Any] = {"path": found, "real": real}
    try:
        st = os.stat(real)
    except OSError:
        info["missing"] = True
        return info
    if not PYTHON_NAME.match(os.path.basename(found)) and not PYTHON_NAME.match(os.path.basename(real)):
        info["size"], info["mtime_ns"] = st.st_size, st.st_mtime_ns
        return info
    probe = _probe(found, real, st, env, cwd)
    if probe is None:
        info["size"], info["mtime_ns"] = st.st_size, st.st_mtime_ns
        return info
    info["real"] = probe["executable"]  # behind a launcher script (a pyenv shim): the interpreter it started
    info["version"] = probe["version"]
    info["build"] = probe["build"]
    info["packages"] = packages(probe["path"])
    return info


def _stat_key(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _probe(found: str, real: str, st: os.stat_result, env: Mapping[str, str], cwd: str | None) -> dict[str, Any] | None:
    """The interpreter's version, executable and import path; cached by the launcher's path and
    stat, the working dir and the variables that choose an interpreter or its import path (a
    launcher script such as a pyenv shim picks its interpreter by them); a hit is only used
    while the interpreter it found is unchanged."""
    from cuberun.paths import cache_dir

    chooser = [f"{k}={env.get(k, os.environ.get(k, ''))}" for k in (*PATH_VARS, "PYENV_VERSION")]
    key = "\0".join([found, real, str(st.st_size), str(st.st_mtime_ns), str(st.st_ino), str(cwd), *chooser])
    path = cache_dir() / "interpreters.json"
    with _LOCK:
        cache = _load(path)
        hit = cache.get(key)
        if (isinstance(hit, dict) and isinstance(hit.get("path"), list) and isinstance(hit.get("version"), str)
                and isinstance(hit.get("executable"), str) and hit.get("stat") == _stat_key(hit["executable"])):
            return hit
        own = os.path.realpath(sys.executable) == real and os.path.abspath(found) == os.path.abspath(sys.executable)
        if own and not any(k in env for k in PATH_VARS):
            answer: dict[str, Any] | None = {"version": sys.version.split()[0], "build": sys.version, "executable": real,
                                             "path": [p for p in sys.path if p and os.path.isdir(p)]}
        else:
            answer = _ask(found, env, cwd)
        if answer is None:
            return None
        answer["stat"] = _stat_key(answer["executable"])
        cache.pop(key, None)
        cache[key] = answer
        for stale in list(cache)[: max(0, len(cache) - 200)]:
            cache.pop(stale, None)
        _store(path, cache)
        return answer


def _ask(python: str, env: Mapping[str, str], cwd: str | None) -> dict[str, Any] | None:
    from cuberun.process import capture

    full = dict(os.environ)
    full.update(env)
    try:
        res = capture([python, "-c", PROBE], timeout=30, env=full, cwd=cwd if cwd and os.path.isdir(cwd) else None)
    except OSError:
        return None
    if res.returncode != 0:
        return None
    try:
        data = json.loads(res.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("path"), list):
        return None
    return {"version": str(data.get("version")), "build": str(data.get("build")), "executable": str(data.get("executable")),
            "path": [str(p) for p in data["path"]]}


def _load(path: os.PathLike[str]) -> dict[str, Any]:
    """The interpreter cache, or {} when absent or damaged (a FIFO, too large, not JSON, another
    shape): rebuilt then, never trusted. Each hit is checked again by _probe."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        data = json.loads(read_regular(path, 8 << 20, what="interpreter cache").decode("utf-8"))
    except (CuberunError, ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def _store(path: os.PathLike[str], data: dict[str, Any]) -> None:
    """Write the cache safely (never over a FIFO, device or folder; atomically)."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import write_file

    try:
        write_file(path, json.dumps(data), what="interpreter cache")
    except (CuberunError, OSError):
        pass  # only a cache


def _dist(name: str) -> tuple[str, str] | None:
    for suffix in (".dist-info", ".egg-info"):
        if name.endswith(suffix):
            stem = name[: -len(suffix)]
            project, _, rest = stem.partition("-")
            version = rest.split("-", 1)[0] if rest else "?"
            return re.sub(r"[-_.]+", "-", project).lower(), version
    return None


def packages(path: list[str]) -> dict[str, str]:
    """{project: version} of what is installed in the import directories (first one wins, as for
    imports)."""
    found: dict[str, str] = {}
    for directory in path:
        try:
            with os.scandir(directory) as it:
                names = [e.name for e in it]
        except OSError:
            continue
        for name in names:
            if not name.endswith("-info"):
                continue
            dist = _dist(name)
            if dist is not None and dist[0] not in found:
                found[dist[0]] = dist[1]
    return dict(sorted(found.items()))


def describe_packages(old: Mapping[str, str], new: Mapping[str, str], names: int = 3) -> str:
    """'numpy 2.3.1 -> 2.4.0, pandas 2.2.0 added' (at most `names` items, then 'and N more')."""
    items = [f"{k} {old[k]} -> {new[k]}" for k in sorted(old.keys() & new.keys()) if old[k] != new[k]]
    items += [f"{k} {new[k]} added" for k in sorted(new.keys() - old.keys())]
    items += [f"{k} {old[k]} removed" for k in sorted(old.keys() - new.keys())]
    text = ", ".join(items[:names])
    if len(items) > names:
        text += f" and {len(items) - names} more"
    return text
