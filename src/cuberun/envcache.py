"""The managed Python environments as a cache: list, prune, rebuild, and a size bound with
least-recently-used eviction.

An env is cuberun's when its folder in <cache>/envs is named by an env key and holds the marker
cuberun writes last (.cuberun-env.json): nothing else there is ever deleted. An env is in use
while a cuberun process holds a shared lock on `.<key>.inuse` (taken by pyenv.ensure for the
rest of that process and closed at its exit, or earlier by `release`); prune and eviction take
that lock exclusively without waiting, and leave an env whose lock they cannot get.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from cuberun.valueclass import dataclass, field

MARKER = ".cuberun-env.json"
USAGE = ".cuberun-used.json"
KEY = re.compile(r"^[0-9a-f]{20}$")
DEFAULT_LIMIT = 20 << 30  # bytes of envs kept before the least recently used are evicted
MAX_CUBES = 20
_HELD: dict[str, IO[str]] = {}  # .inuse path -> the open file holding its shared lock
_AT_EXIT = False


def envs_dir() -> Path:
    from cuberun.paths import cache_dir

    return cache_dir() / "envs"


def limit() -> int | None:
    """CUBERUN_ENV_CACHE_MAX: a size (20G, 500M, 0 = no bound); default 20 GiB."""
    raw = os.environ.get("CUBERUN_ENV_CACHE_MAX", "").strip()
    if not raw:
        return DEFAULT_LIMIT
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?", raw, re.IGNORECASE)
    if not m:
        from cuberun.errors import UsageError

        raise UsageError(f"CUBERUN_ENV_CACHE_MAX={raw!r} is not a size", "e.g. 20G, 500M, or 0 for no bound")
    size = int(float(m.group(1)) * (1 << (10 * " KMGT".index(m.group(2).upper() or " "))))
    return size or None


@dataclass
class Env:
    key: str
    path: Path
    size: int
    created: float
    last_used: float
    cubes: list[str] = field(default_factory=list)
    python: str = ""
    requirements: list[str] = field(default_factory=list)


def _json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.loads(fh.read(1 << 20))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def tree_size(path: Path) -> int:
    """Bytes on disk below path (symlinks not followed)."""
    total = 0
    stack = [str(path)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
        except OSError:
            continue
    return total


def is_ours(path: Path) -> bool:
    """A folder cuberun created: named by an env key, a real folder, with cuberun's marker."""
    return bool(KEY.match(path.name)) and path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def envs() -> list[Env]:
    """cuberun's envs, most recently used first (folders it did not write are not listed)."""
    found: list[Env] = []
    root = envs_dir()
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return []
    for path in entries:
        if not is_ours(path):
            continue
        marker, usage = _json(path / MARKER), _json(path / USAGE)
        try:
            created = (path / MARKER).stat().st_mtime
        except OSError:
            continue
        stored = marker.get("bytes")
        size = stored if isinstance(stored, int) else tree_size(path)
        last = usage.get("last_used")
        found.append(Env(path.name, path, int(size), created, float(last) if isinstance(last, (int, float)) else created,
                         [str(c) for c in usage.get("cubes") or []], str(marker.get("version") or ""),
                         [str(r) for r in marker.get("requirements") or []]))
    found.sort(key=lambda e: e.last_used, reverse=True)
    return found


def foreign() -> list[Path]:
    """What is in the envs folder that is no env of cuberun's and no file it keeps beside them."""
    try:
        entries = sorted(envs_dir().iterdir())
    except OSError:
        return []
    ours = re.compile(r"^\.?[0-9a-f]{20}(\.log|\.failed\.json|\.lock|\.inuse)?$")
    return [p for p in entries if not (is_ours(p) or (ours.match(p.name) and not p.is_dir()))]


def _inuse(key: str) -> Path:
    return envs_dir() / f".{key}.inuse"


def hold(key: str) -> None:
    """Mark the env in use by this process: a shared lock on its `.inuse` file, kept until
    `release` (at the latest when the process exits: closed by an atexit hook, never left to
    the garbage collector)."""
    path = str(_inuse(key))
    if path in _HELD:
        return
    try:
        envs_dir().mkdir(parents=True, exist_ok=True)
        fh = open(path, "a+", encoding="utf-8")
    except OSError:
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_SH)  # waits only while a prune deletes this very env
    except OSError:
        fh.close()
        return
    global _AT_EXIT
    if not _AT_EXIT:
        atexit.register(release)
        _AT_EXIT = True
    _HELD[path] = fh


def release(key: str | None = None) -> None:
    """Give up this process's hold on the env `key` (in the current cache), or on every env."""
    paths = list(_HELD) if key is None else [str(_inuse(key))]
    for path in paths:
        fh = _HELD.pop(path, None)
        if fh is not None:
            fh.close()  # closing the file drops the lock


def held(key: str) -> bool:
    return str(_inuse(key)) in _HELD


@contextmanager
def exclusive(key: str) -> Iterator[bool]:
    """True while no cuberun uses the env (and none can start to); False when one does."""
    if held(key):
        yield False
        return
    path = _inuse(key)
    try:
        fh = open(path, "a+", encoding="utf-8")
    except OSError:
        yield False
        return
    with fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True


def record_use(key: str, cube: str | None) -> None:
    """The env's last use and the cubes that used it (most recent first, a few)."""
    path = envs_dir() / key / USAGE
    data = _json(path)
    cubes = [c for c in data.get("cubes") or [] if isinstance(c, str) and c != cube]
    if cube:
        cubes.insert(0, cube)
    try:
        tmp = path.with_name(f"{USAGE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"last_used": time.time(), "cubes": cubes[:MAX_CUBES]}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass


def remove(env: Env) -> bool:
    """Delete one env of cuberun's that no cuberun uses, with the files kept beside it."""
    if not is_ours(env.path):
        return False
    with exclusive(env.key) as free:
        if not free:
            return False
        (env.path / MARKER).unlink()  # first: a half-deleted env is never taken for a ready one
        shutil.rmtree(env.path, ignore_errors=True)
        for name in (f"{env.key}.log", f"{env.key}.failed.json"):
            try:
                (env.path.parent / name).unlink()
            except OSError:
                pass
    return True


def prune(older_than_days: float | None, dry_run: bool = False) -> tuple[list[Env], list[Env]]:
    """(removed or, on a dry run, to remove; kept because in use). Without older_than_days: all."""
    cutoff = None if older_than_days is None else time.time() - older_than_days * 86400
    gone: list[Env] = []
    busy: list[Env] = []
    for env in envs():
        if cutoff is not None and env.last_used >= cutoff:
            continue
        if dry_run:
            with exclusive(env.key) as free:
                (gone if free else busy).append(env)
        elif remove(env):
            gone.append(env)
        else:
            busy.append(env)
    return gone, busy


def bound(keep: str) -> list[Env]:
    """Evict the least recently used envs (never `keep`, never one in use) until the cache is
    within its limit; returns those evicted."""
    cap = limit()
    if cap is None:
        return []
    all_envs = envs()
    total = sum(e.size for e in all_envs)
    evicted: list[Env] = []
    for env in reversed(all_envs):  # least recently used first
        if total <= cap:
            break
        if env.key != keep and remove(env):
            evicted.append(env)
            total -= env.size
    return evicted
