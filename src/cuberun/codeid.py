"""The identity of a cube's code: the content of every file a result can depend on.

Two scopes:

- ``code`` (the local runner and the runners that run the cube's folder as it is): every file
  of the cube folder (and of the folder the host command was derived from), leaving out the
  workspace, cuberun's state, the cube file itself (its effect on a task is already in the
  task's identity), what the tasks write, version-control data, Python caches and virtualenvs,
  and what ``.cuberunignore`` — or, without one, ``.gitignore`` files and ``.dockerignore`` —
  exclude.
- ``docker`` (a build context cuberun builds an image from): exactly what ``docker build``
  sends, i.e. the context minus ``.dockerignore``, with directories, symlinks and the
  executable bit, as the image would have them.

Files are hashed with the same fast path as inputs: a file whose (size, mtime, inode, ctime)
is the one recorded is not read again. The record (per scope and folder) lives in the user's
cache dir; an entry whose mtime is within a second of when it was hashed is hashed again next
time (an edit in the same clock tick keeps the mtime). The member list of each code version a
task ran with is kept in the workspace (``.cuberun/state/code/``) to say what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from cuberun.ignorefiles import IgnoreRule, docker_last, docker_rules, git_ignored, git_rules
from cuberun.valueclass import dataclass

VERSION = 1
SNAPSHOT_DIR = Path(".cuberun") / "state" / "code"
KEEP_SNAPSHOTS = 32
RACY_NS = 1_000_000_000
BUILTIN_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "__pycache__", ".cuberun", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                          ".ipynb_checkpoints", ".tox", ".nox", ".hypothesis", ".eggs"})
BUILTIN_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", "~")
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")  # a directory holding one is a Python/conda environment
IGNORE_FILES = frozenset({".gitignore", ".dockerignore", ".cuberunignore"})  # they shape the code, they are not code


@dataclass(frozen=True)
class CodeId:
    sha256: str
    files: int
    bytes: int
    members: dict[str, str]  # relative path -> content digest (with "+x", "->target", "dir" in docker scope)
    roots: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "files": self.files, "roots": list(self.roots)}


# -- the walk ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    rel: str
    full: str
    kind: str  # "f" file, "l" symlink (not followed), "d" directory (docker scope only)
    st: os.stat_result | None
    link: str = ""


def walk(root: Path, scope: str, exclude: Iterable[str] = ()) -> list[_Entry]:
    """Every entry of `root` that belongs to the code (see the module doc), sorted by path."""
    excluded = {os.path.normpath(e) for e in exclude}
    top = str(root)
    found: list[_Entry] = []
    docker = scope == "docker"
    drules: list[IgnoreRule] = []
    grules: list[IgnoreRule] = []
    if docker:
        drules = docker_rules(_read_small(root / ".dockerignore"))
    else:
        own = root / ".cuberunignore"
        if os.path.isfile(own):
            grules = git_rules(_read_small(own))
        else:
            drules = docker_rules(_read_small(root / ".dockerignore"))
    use_gitignore = not docker and not os.path.isfile(root / ".cuberunignore")
    prune = not any(r.negate for r in drules)
    # stack of (dir path, rel, docker rule index of the dir, git rules in force)
    stack: list[tuple[str, str, int, list[IgnoreRule]]] = [(top, "", -1, grules)]
    while stack:
        path, rel, last, rules = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        names = {e.name for e in entries}
        if not docker and rel and any(m in names for m in ENV_MARKERS):
            continue  # a virtualenv or conda env inside the cube folder: not code
        if use_gitignore and ".gitignore" in names:
            rules = rules + git_rules(_read_small(Path(path) / ".gitignore"), rel)
        for entry in entries:
            name = entry.name
            full = entry.path
            if full in excluded:
                continue
            sub = name if not rel else f"{rel}/{name}"
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if not docker and (name in BUILTIN_DIRS or name in IGNORE_FILES or name.endswith(BUILTIN_SUFFIXES)):
                continue
            idx = docker_last(sub, drules, last) if drules else -1
            d_ignored = idx >= 0 and not drules[idx].negate
            g_ignored = bool(rules) and git_ignored(sub, name, is_dir, rules)
            if is_dir:
                if g_ignored or (d_ignored and prune):
                    continue
                if docker and not d_ignored:
                    found.append(_Entry(sub, full, "d", None))
                stack.append((full, sub, idx, rules))
                continue
            ignored = d_ignored or g_ignored
            if ignored:
                continue
            if is_link:
                try:
                    link = os.readlink(full)
                except OSError:
                    continue
                if not docker:
                    try:
                        st = os.stat(full)
                    except OSError:
                        st = None
                    if st is not None and stat.S_ISREG(st.st_mode):
                        found.append(_Entry(sub, full, "f", st))  # a linked file counts by its content
                        continue
                found.append(_Entry(sub, full, "l", None, link))
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append(_Entry(sub, full, "f", st))
            # sockets, FIFOs and devices are never code: left out, never opened
    found.sort(key=lambda e: e.rel)
    return found


def _read_small(path: Path) -> str:
    from cuberun.ignorefiles import _read

    return _read(path)


# -- the stat cache ----------------------------------------------------------------------------
def _cache_path(scope: str, root: Path) -> Path:
    from cuberun.runners.pyenv import cache_dir

    key = hashlib.sha256(f"{scope}\0{root}".encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return cache_dir() / "code" / f"{key}.json"


def _load_cache(path: Path, root: Path) -> tuple[dict[str, list[Any]], int]:
    try:
        if os.stat(path).st_size > (256 << 20):
            return {}, 0
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}, 0
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("root") != str(root):
        return {}, 0
    files = data.get("files")
    at = data.get("at")
    return (files if isinstance(files, dict) else {}), (at if isinstance(at, int) else 0)


def _save_cache(path: Path, root: Path, files: dict[str, list[Any]], at: int) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"version": VERSION, "root": str(root), "at": at, "files": files}, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        pass  # only a cache: the next run hashes again


# -- identity ----------------------------------------------------------------------------------
_SEEN: dict[str, CodeId] = {}  # the code identities this process computed, by digest (for save_snapshot)
_SEEN_LOCK = threading.Lock()


def identity(roots: Sequence[Path], scope: str = "code", exclude: Iterable[str] = (), label: str = "code") -> CodeId:
    """The code identity of `roots` now (callers keep it for the rest of their invocation)."""
    excl = tuple(sorted({os.path.normpath(str(e)) for e in exclude}))
    norm = tuple(_outermost([Path(os.path.normpath(str(r))) for r in roots]))
    result = _compute(norm, scope, excl, label)
    with _SEEN_LOCK:
        _SEEN.pop(result.sha256, None)
        _SEEN[result.sha256] = result
        while len(_SEEN) > 16:
            _SEEN.pop(next(iter(_SEEN)))
    return result


def _outermost(roots: Sequence[Path]) -> list[Path]:
    """Roots without those inside another root (kept in the given order)."""
    result: list[Path] = []
    for r in roots:
        s = str(r)
        if any(s == str(o) or s.startswith(str(o).rstrip(os.sep) + os.sep) for o in roots if o != r and len(str(o)) < len(s)):
            continue
        if r not in result:
            result.append(r)
    return result


def _compute(roots: Sequence[Path], scope: str, exclude: Sequence[str], label: str) -> CodeId:
    from cuberun.fingerprint import NotRegular, file_sha256
    from cuberun.progress import Progress

    members: dict[str, str] = {}
    total = 0
    several = len(roots) > 1
    for root in roots:
        started = time.time_ns()
        entries = walk(root, scope, exclude)
        cpath = _cache_path(scope, root)
        cached, at = _load_cache(cpath, root)
        fresh: dict[str, list[Any]] = {}
        todo: list[tuple[_Entry, int]] = []
        for e in entries:
            if e.kind != "f" or e.st is None:
                continue
            st = e.st
            key = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
            old = cached.get(e.rel)
            if (isinstance(old, list) and len(old) == 5 and old[:4] == key and st.st_mtime_ns < at - RACY_NS
                    and st.st_ctime_ns < at - RACY_NS):
                fresh[e.rel] = old
            else:
                todo.append((e, st.st_size))
        progress = Progress(f"{label} in {root}", sum(n for _, n in todo)) if todo else None
        try:
            for e, _ in todo:
                assert e.st is not None
                try:
                    digest = file_sha256(e.full, progress)
                except (OSError, NotRegular):
                    continue  # vanished or unreadable: not part of the code as far as we can see
                fresh[e.rel] = [e.st.st_size, e.st.st_mtime_ns, e.st.st_ino, e.st.st_ctime_ns, digest]
        finally:
            if progress is not None:
                progress.close()
        if todo or set(fresh) != set(cached):
            _save_cache(cpath, root, fresh, started)
        prefix = f"{root.name}/" if several else ""
        for e in entries:
            if e.kind == "f":
                row = fresh.get(e.rel)
                if row is None:
                    continue
                value = str(row[4])
                if scope == "docker" and e.st is not None and e.st.st_mode & 0o111:
                    value += "+x"
                total += int(row[0])
            elif e.kind == "l":
                value = "->" + e.link
            else:
                value = "dir"
            members[prefix + e.rel] = value
    h = hashlib.sha256(f"cuberun-code-v{VERSION}\0{scope}\n".encode())
    for rel in sorted(members):
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + members[rel].encode("utf-8", "surrogateescape") + b"\n")
    return CodeId(h.hexdigest(), sum(1 for v in members.values() if v != "dir"), total, members, tuple(str(r) for r in roots))


# -- what changed --------------------------------------------------------------------------------
def known(digest: str) -> CodeId | None:
    """A code identity computed by this process, by digest."""
    with _SEEN_LOCK:
        return _SEEN.get(digest)


def _snapshot_path(workspace: Path, digest: str) -> Path:
    return workspace / SNAPSHOT_DIR / f"{digest[:32]}.json"


def save_snapshot(workspace: Path, digest: str) -> None:
    """Keep the member list of a code version a task ran with (for explaining later changes)."""
    code = known(digest)
    if code is None:
        return
    path = _snapshot_path(workspace, digest)
    try:
        if path.is_file():
            os.utime(path)  # recently used: kept by the pruning below
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps({"sha256": digest, "members": code.members}, separators=(",", ":")), encoding="utf-8")
        os.replace(tmp, path)
        old = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
        for stale in old[:-KEEP_SNAPSHOTS]:
            stale.unlink(missing_ok=True)
    except OSError:
        pass  # only used to explain a change


def _load_snapshot(workspace: Path, digest: str) -> dict[str, str] | None:
    path = _snapshot_path(workspace, digest)
    try:
        if os.stat(path).st_size > (256 << 20):
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    members = data.get("members") if isinstance(data, dict) and data.get("sha256") == digest else None
    return members if isinstance(members, dict) else None


def explain(workspace: Path, old_digest: str, new_digest: str, names: int = 3) -> str:
    """'prog.py', 'lib/a.py and 2 more (1 added)', or '' when the old listing is not kept."""
    new = known(new_digest)
    old = _load_snapshot(workspace, old_digest) if isinstance(old_digest, str) else None
    if new is None or old is None:
        return ""
    return describe_diff(old, new.members, names)


def describe_diff(old: dict[str, str], new: dict[str, str], names: int = 3) -> str:
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    changed = sorted(k for k in new.keys() & old.keys() if new[k] != old[k])
    listed = [*changed, *(f"{a} (added)" for a in added), *(f"{r} (removed)" for r in removed)]
    if not listed:
        return ""
    text = ", ".join(listed[:names])
    if len(listed) > names:
        text += f" and {len(listed) - names} more"
    return text
