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

Modules: walker.py (the walk: which files are code, the ignore files; imported on first use) <
statcache.py (the per-folder record of file stats and digests) < this module (the identity, the
early start in a forked child, what changed between two identities).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from cuberun.codeid.statcache import VERSION, _cache_path, _int, _load_json, _read_json, _save_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.codeid.walker import Entry

SNAPSHOT_DIR = Path(".cuberun") / "state" / "code"
KEEP_SNAPSHOTS = 32
RACY_NS = 1_000_000_000
EARLY_MIN_FILES = 1000  # start_early: a folder this large is walked in a forked child


class CodeId:
    """A code identity: its digest, file count and size, and (read on demand) the member list."""

    __slots__ = ("_load", "_members", "bytes", "files", "roots", "sha256")

    def __init__(self, sha256: str, files: int, size: int, roots: tuple[str, ...], members: dict[str, str] | None = None,
                 load: Callable[[], dict[str, str]] | None = None) -> None:
        self.sha256 = sha256
        self.files = files
        self.bytes = size
        self.roots = roots
        self._members = members
        self._load = load

    @property
    def members(self) -> dict[str, str]:
        """relative path -> content digest (with "+x", "->target", "dir" in docker scope)."""
        if self._members is None:
            self._members = self._load() if self._load is not None else {}
        return self._members

    def to_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "files": self.files, "roots": list(self.roots)}



# -- identity ----------------------------------------------------------------------------------
_SEEN: dict[str, CodeId] = {}  # the code identities this process computed, by digest (for save_snapshot)
_SEEN_LOCK = threading.Lock()


def _key(roots: Sequence[Path], scope: str, exclude: Iterable[str]) -> tuple[Any, ...]:
    excl = tuple(sorted({os.path.normpath(str(e)) for e in exclude}))
    return (tuple(_outermost([Path(os.path.normpath(str(r))) for r in roots])), scope, excl)


# a code identity started in a forked child at start-up (start_early), taken by identity()
_EARLY: list[tuple[tuple[Path, ...], frozenset[str], Any]] = []


def start_early(root: Path, exclude: Iterable[str]) -> None:
    """Compute the code identity of `root` in a forked child while this process starts up (on
    another core, the walk costs no time); identity() takes it when it asks for the same folder
    with exclusions that differ only outside it. Only for folders that held EARLY_MIN_FILES
    files last time: for a small folder the fork costs more than the walk."""
    key = _key([root], "code", exclude)
    last = _load_json(_cache_path("code", key[0][0]).with_suffix(".sum"), key[0][0], 1 << 16).get("files")
    if not isinstance(last, int) or last < EARLY_MIN_FILES:
        return

    def work() -> str:  # in the child, which exits right after: no garbage collection at all
        import gc

        gc.disable()
        code = _identity(key[0], "code", key[2], "code")
        return json.dumps({"sha256": code.sha256, "files": code.files, "bytes": code.bytes})

    from cuberun.codeid import walker  # noqa: F401 (imported once, here: this process needs it too)
    from cuberun.forkcall import fork_call

    forked = fork_call(work)
    if forked is not None:
        _EARLY.append((key[0], frozenset(key[2]), forked))


def _take_early(roots: tuple[Path, ...], exclude: Sequence[str]) -> CodeId | None:
    if not _EARLY:
        return None
    early_roots, early_excl, forked = _EARLY.pop()
    def under(path: str, folders: Iterable[Any]) -> bool:
        return any(path == str(f) or path.startswith(str(f).rstrip(os.sep) + os.sep) for f in folders)

    both = early_excl.intersection(exclude)
    differ = [p for p in early_excl.symmetric_difference(exclude) if under(p, roots) and not under(p, both)]
    if early_roots != roots or differ:
        forked.cancel()
        return None
    text = forked.result()
    try:
        data = json.loads(text.split("\n", 1)[1].rsplit("\nend", 1)[0]) if text else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
        return None

    def load() -> dict[str, str]:  # members are needed only to save or explain a change: computed again then
        return _identity(roots, "code", exclude, "code").members

    return CodeId(data["sha256"], _int(data.get("files")), _int(data.get("bytes")), tuple(str(r) for r in roots), load=load)


_WARNED: set[tuple[str, str]] = set()


def _warn_ignore_files(roots: Sequence[Path], scope: str) -> None:
    from cuberun.codeid.walker import ignore_problems
    from cuberun.console import warn

    for root in roots:
        if (str(root), scope) in _WARNED:
            continue
        _WARNED.add((str(root), scope))
        for line in ignore_problems(root, scope):
            warn(line)


def identity(roots: Sequence[Path], scope: str = "code", exclude: Iterable[str] = (), label: str = "code") -> CodeId:
    """The code identity of `roots` now (callers keep it for the rest of their invocation)."""
    key = _key(roots, scope, exclude)
    _warn_ignore_files(key[0], scope)
    if scope == "code":
        early = _take_early(key[0], key[2])
        if early is not None:
            _remember(early)
            return early
    return _identity(key[0], key[1], key[2], label)


def _identity(norm: Sequence[Path], scope: str, excl: Sequence[str], label: str) -> CodeId:
    parts = [_root_identity(root, scope, excl, label) for root in norm]
    if len(parts) == 1:
        result = parts[0]
    else:
        h = hashlib.sha256(f"cuberun-code-v{VERSION}\0{scope}\0roots\n".encode())
        for root, part in zip(norm, parts, strict=True):
            h.update(f"{root.name}\0{part.sha256}\n".encode("utf-8", "surrogateescape"))

        prefixed = [(r.name + "/", p) for r, p in zip(norm, parts, strict=True)]

        def load() -> dict[str, str]:
            return {prefix + rel: v for prefix, p in prefixed for rel, v in p.members.items()}

        result = CodeId(h.hexdigest(), sum(p.files for p in parts), sum(p.bytes for p in parts), tuple(str(r) for r in norm), load=load)
    _remember(result)
    return result


def _remember(code: CodeId) -> None:
    with _SEEN_LOCK:
        _SEEN.pop(code.sha256, None)
        _SEEN[code.sha256] = code
        while len(_SEEN) > 16:
            _SEEN.pop(next(iter(_SEEN)))


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


def _stat_digest(entries: Sequence[Entry], docker: bool) -> tuple[str, int]:
    """A digest of every entry's path and stat (what the fast path compares: mode, inode, device,
    links, owner, size, whole-second times), and an upper bound of the newest mtime/ctime among
    the files (ns). Whole seconds suffice because a file changed within a second of the last
    hashing is never taken on trust (see RACY_NS). Computed at C speed: this runs on every check."""
    from operator import itemgetter

    names = [e[0] if e[3] is not None else f"{e[0]}\0{e[2]}\0{e[4]}" for e in entries]
    stats = [e[3] for e in entries if e[3] is not None]
    h = hashlib.sha256("\0\0".join(names).encode("utf-8", "surrogateescape"))
    h.update(b"\0" + str(hash(tuple(stats))).encode())  # hash of a tuple of integers: the same in every process
    newest = 0
    if stats:
        newest = (max(max(map(itemgetter(stat.ST_MTIME), stats)), max(map(itemgetter(stat.ST_CTIME), stats))) + 1) * 1_000_000_000
    return h.hexdigest(), newest


def _member_value(kind: str, st: os.stat_result | None, link: str, digest: str, docker: bool) -> str:
    if kind == "f":
        return digest + ("+x" if docker and st is not None and st.st_mode & 0o111 else "")
    return "->" + link if kind == "l" else "dir"


def _root_identity(root: Path, scope: str, exclude: Sequence[str], label: str) -> CodeId:
    from cuberun.codeid.walker import walk

    docker = scope == "docker"
    started = time.time_ns()
    entries = walk(root, scope, exclude)
    stat_sha, newest = _stat_digest(entries, docker)
    cpath = _cache_path(scope, root)
    spath = cpath.with_suffix(".sum")
    summary = _load_json(spath, root, 1 << 16)
    if summary.get("stat") == stat_sha and isinstance(summary.get("at"), int) and newest < summary["at"] - RACY_NS \
            and isinstance(summary.get("sha256"), str):
        def load() -> dict[str, str]:  # the digests of the (unchanged) files, from the full record
            files = _load_json(cpath, root, 256 << 20).get("files")
            rows = files if isinstance(files, dict) else {}

            def digest(rel: str) -> str:
                row = rows.get(rel)
                return str(row[4]) if isinstance(row, list) and len(row) == 5 else ""

            return {rel: _member_value(kind, st, link, digest(rel), docker) for rel, _, kind, st, link in entries}

        return CodeId(summary["sha256"], _int(summary.get("files")), _int(summary.get("bytes")), (str(root),), load=load)
    from cuberun.fingerprint import NotRegular, file_sha256  # not on the path above (an unchanged folder)
    from cuberun.progress import Progress

    data = _load_json(cpath, root, 256 << 20)
    raw_files = data.get("files")
    cached: dict[str, Any] = raw_files if isinstance(raw_files, dict) else {}
    raw_at = data.get("at")
    at: int = raw_at if isinstance(raw_at, int) else 0
    fresh: dict[str, list[Any]] = {}
    todo: list[Entry] = []
    for e in entries:
        st = e[3]
        if e[2] != "f" or st is None:
            continue
        key = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]
        old = cached.get(e[0])
        if isinstance(old, list) and len(old) == 5 and old[:4] == key and st.st_mtime_ns < at - RACY_NS and st.st_ctime_ns < at - RACY_NS:
            fresh[e[0]] = old
        else:
            todo.append(e)
    progress = Progress(f"{label} in {root}", sum(e[3].st_size for e in todo if e[3] is not None)) if todo else None
    try:
        for rel, full, _, st, _ in todo:
            assert st is not None
            try:
                digest = file_sha256(full, progress)
            except (OSError, NotRegular):
                continue  # vanished or unreadable: not part of the code as far as we can see
            fresh[rel] = [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, digest]
    finally:
        if progress is not None:
            progress.close()
    members: dict[str, str] = {}
    total = files = 0
    for rel, _, kind, st, link in entries:
        if kind == "f":
            row = fresh.get(rel)
            if row is None:
                continue
            total += int(row[0])
            files += 1
            members[rel] = _member_value(kind, st, link, str(row[4]), docker)
        else:
            members[rel] = _member_value(kind, st, link, "", docker)
            files += kind == "l"
    h = hashlib.sha256(f"cuberun-code-v{VERSION}\0{scope}\n".encode())
    for rel in sorted(members):
        h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + members[rel].encode("utf-8", "surrogateescape") + b"\n")
    sha = h.hexdigest()
    if todo or set(fresh) != set(cached) or at != started:
        _save_json(cpath, {"version": VERSION, "root": str(root), "at": started, "files": fresh})
    _save_json(spath, {"version": VERSION, "root": str(root), "at": started, "stat": stat_sha, "sha256": sha, "files": files, "bytes": total})
    return CodeId(sha, files, total, (str(root),), members=members)


# -- what changed --------------------------------------------------------------------------------
def known(digest: str) -> CodeId | None:
    """A code identity computed by this process, by digest."""
    with _SEEN_LOCK:
        return _SEEN.get(digest)


def _snapshot_path(workspace: Path, digest: str) -> Path:
    return workspace / SNAPSHOT_DIR / f"{digest[:32]}.json"


def save_snapshot(workspace: Path, digest: str) -> None:
    """Keep the member list of a code version a task ran with (for explaining later changes)."""
    from cuberun.safeio import is_regular

    code = known(digest)
    if code is None:
        return
    path = _snapshot_path(workspace, digest)
    try:
        if is_regular(path) and not os.path.islink(path):
            os.utime(path)  # recently used: kept by the pruning below
            return
        _save_json(path, {"sha256": digest, "members": code.members}, what="code listing")
        _prune_snapshots(path.parent)
    except OSError:
        pass  # only used to explain a change


def _prune_snapshots(folder: Path) -> None:
    """Keep the newest KEEP_SNAPSHOTS listings; only regular files named like ours are removed."""
    kept: list[tuple[int, str]] = []
    try:
        with os.scandir(folder) as it:
            for entry in it:
                if not entry.name.endswith(".json") or len(entry.name) != 37 or entry.name.startswith("."):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    kept.append((st.st_mtime_ns, entry.path))
    except OSError:
        return
    for _, stale in sorted(kept)[:-KEEP_SNAPSHOTS]:
        try:
            os.unlink(stale)
        except OSError:
            pass


def _load_snapshot(workspace: Path, digest: str) -> dict[str, str] | None:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        return None  # a digest from a damaged state file: never a path
    data = _read_json(_snapshot_path(workspace, digest), 256 << 20)
    members = data.get("members") if isinstance(data, dict) and data.get("sha256") == digest else None
    if not isinstance(members, dict):
        return None
    return {str(k): str(v) for k, v in members.items()}


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


LAZY = ("walk", "ignore_problems", "BUILTIN_DIRS", "BUILTIN_SUFFIXES", "ENV_MARKERS", "IGNORE_FILES", "SKIP_NAMES")


def __getattr__(name: str) -> Any:
    """`codeid.walk` and the walk's names, from walker.py (imported on first use: it reads the ignore files)."""
    if name not in LAZY:
        raise AttributeError(f"module 'cuberun.codeid' has no attribute '{name}'")
    from cuberun.codeid import walker

    return getattr(walker, name)
