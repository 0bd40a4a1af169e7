"""The walk: every entry of a folder that belongs to the code (see the package doc), with the
built-in exclusions and the ignore files (`.cuberunignore`, `.gitignore`, `.dockerignore`)."""

from __future__ import annotations

import gc
import os
import stat
from collections.abc import Callable, Iterable
from operator import itemgetter
from pathlib import Path

from cuberun.ignorefiles import IgnoreRule, docker_rules, git_ignored, git_rules

BUILTIN_DIRS = frozenset({".git", ".hg", ".svn", ".bzr", "__pycache__", ".cuberun", ".pytest_cache", ".mypy_cache", ".ruff_cache",
                          ".ipynb_checkpoints", ".tox", ".nox", ".hypothesis", ".eggs"})
BUILTIN_SUFFIXES = (".pyc", ".pyo", ".swp", ".swo", "~")
ENV_MARKERS = ("pyvenv.cfg", "conda-meta")  # a directory holding one is a Python/conda environment
IGNORE_FILES = frozenset({".gitignore", ".dockerignore", ".cuberunignore"})  # they shape the code, they are not code
DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)

# -- the walk ----------------------------------------------------------------------------------
# an entry: (relative path, absolute path, kind "f" file / "l" link not followed / "d" directory
# (docker scope only), stat of a file or None, link target or "")
Entry = tuple[str, str, str, "os.stat_result | None", str]
SKIP_NAMES = BUILTIN_DIRS | IGNORE_FILES


def walk(root: Path, scope: str, exclude: Iterable[str] = ()) -> list[Entry]:
    """Every entry of `root` that belongs to the code (see the module doc), sorted by path (the
    order in which directories are read does not matter)."""
    excluded = {os.path.normpath(e) for e in exclude}
    top = str(root)
    found: list[Entry] = []
    docker = scope == "docker"
    drules: list[IgnoreRule] = []
    grules: list[IgnoreRule] = []
    own = root / ".cuberunignore"
    own_exists = os.path.lexists(own)
    if docker:
        drules = docker_rules(_read_small(root / ".dockerignore"))
    elif own_exists:  # an unusable one (a FIFO, too large) leaves nothing out: see ignore_problems
        grules = git_rules(_read_small(own))
    else:
        drules = docker_rules(_read_small(root / ".dockerignore"))
    use_gitignore = not docker and not own_exists
    prune = not any(r.negate for r in drules)
    # a .dockerignore pattern without ** matches paths of its own depth only: try just those
    by_depth: dict[int, list[int]] = {}
    deep: list[int] = []
    for i, rule in enumerate(drules):
        text = rule.pattern.pattern.replace("[^/]", "")
        if ".*" in text or "[" in text:  # ** (or a character class that might hold a slash): any depth
            deep.append(i)
        else:
            by_depth.setdefault(text.count("/"), []).append(i)

    candidates: dict[int, list[int]] = {}

    def candidates_for(depth: int) -> list[int]:
        order = candidates.get(depth)
        if order is None:
            order = candidates[depth] = sorted([*by_depth.get(depth, ()), *deep], reverse=True)
        return order

    def last_rule(sub: str, depth: int, last: int) -> int:
        for i in candidates_for(depth):
            if i <= last:
                break
            if drules[i].pattern.match(sub):
                return i
        return last

    # stack of (dir path, rel prefix ("" or "a/b/"), docker rule index of the dir, git rules in force)
    stack: list[tuple[str, str, int, list[IgnoreRule]]] = [(top, "", -1, grules)]
    collecting = gc.isenabled()
    gc.disable()  # thousands of tuples and stats, no cycle among them: the collector's passes would only cost time
    try:
        _walk_all(stack, found, excluded, docker, drules, prune, use_gitignore, candidates_for, last_rule)
    finally:
        if collecting:
            gc.enable()
    found.sort(key=itemgetter(0))  # paths are unique: the same order as sorting the tuples, at less cost
    return found


def _walk_all(stack: list[tuple[str, str, int, list[IgnoreRule]]], found: list[Entry], excluded: set[str], docker: bool,
              drules: list[IgnoreRule], prune: bool, use_gitignore: bool, candidates_for: Callable[[int], list[int]],
              last_rule: Callable[[str, int, int], int]) -> None:
    while stack:
        path, prefix, last, rules = stack.pop()
        # the folder is opened once and listed through its descriptor: each file's stat is then
        # an fstatat() of its name in that folder (one system call per file, with no look-up of
        # the whole path again), the file type comes from the listing (d_type), not from a stat
        try:
            dir_fd = os.open(path, DIR_FLAGS)
        except OSError:
            continue
        try:
            _walk_dir(path, prefix, last, rules, dir_fd, stack, found, excluded, docker, drules, prune, use_gitignore,
                      candidates_for, last_rule)
        finally:
            os.close(dir_fd)


def _walk_dir(path: str, prefix: str, last: int, rules: list[IgnoreRule], dir_fd: int, stack: list[tuple[str, str, int, list[IgnoreRule]]],
              found: list[Entry], excluded: set[str], docker: bool, drules: list[IgnoreRule], prune: bool, use_gitignore: bool,
              candidates_for: Callable[[int], list[int]], last_rule: Callable[[str, int, int], int]) -> None:
    """One folder of walk(): its entries into `found`, its sub-folders onto `stack`."""
    isreg = stat.S_ISREG
    base = path if path.endswith(os.sep) else path + os.sep
    try:
        with os.scandir(dir_fd) as it:
            entries = list(it)
    except OSError:
        return
    if not docker:
        names = [e.name for e in entries]
        if prefix and any(m in names for m in ENV_MARKERS):
            return  # a virtualenv or conda env inside the cube folder: not code
        if use_gitignore and ".gitignore" in names:
            rules = rules + git_rules(_read_small(Path(path) / ".gitignore"), prefix[:-1])
    depth = prefix.count("/")
    ruled = bool(rules) or last >= 0 or bool(drules and candidates_for(depth))
    # the excluded paths directly in this folder, by name (the common case: none)
    here = {p[len(base):] for p in excluded if p.startswith(base) and os.sep not in p[len(base):]}
    for entry in entries:
        name = entry.name
        if not docker and (name in SKIP_NAMES or name.endswith(BUILTIN_SUFFIXES)):
            continue
        if not ruled:  # the common case: no ignore rule can apply here
            try:
                if entry.is_file(follow_symlinks=False):
                    if name not in here:
                        found.append((prefix + name, base + name, "f", entry.stat(follow_symlinks=False), ""))
                    continue
            except OSError:
                continue
        full = base + name
        if full in excluded:
            continue
        sub = prefix + name
        try:
            is_link = entry.is_symlink()
            is_dir = not is_link and entry.is_dir(follow_symlinks=False)
        except OSError:
            continue
        idx = last
        d_ignored = g_ignored = False
        if ruled:
            idx = last_rule(sub, depth, last) if drules else -1
            d_ignored = idx >= 0 and not drules[idx].negate
            g_ignored = bool(rules) and git_ignored(sub, name, is_dir, rules)
        if is_dir:
            if g_ignored or (d_ignored and prune):
                continue
            if docker and not d_ignored:
                found.append((sub, full, "d", None, ""))
            stack.append((full, sub + "/", idx, rules))
            continue
        if d_ignored or g_ignored:
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
                if st is not None and isreg(st.st_mode):
                    found.append((sub, full, "f", st, ""))  # a linked file counts by its content
                    continue
            found.append((sub, full, "l", None, link))
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if isreg(st.st_mode):
            found.append((sub, full, "f", st, ""))
        # sockets, FIFOs and devices are never code: left out, never opened


def _read_small(path: Path) -> str:
    from cuberun.ignorefiles import read_ignore_file

    return read_ignore_file(path)


def ignore_problems(root: Path, scope: str = "code") -> list[str]:
    """One line per ignore file of `root` that exists but cannot be used (a FIFO, a device, a
    folder, too large, unreadable): it is then left out entirely, so more files count as code
    (a needless re-run at worst, never a stale result)."""
    from cuberun.ignorefiles import ignore_file_problem

    names = [".dockerignore"] if scope == "docker" else [".cuberunignore", ".gitignore", ".dockerignore"]
    found = []
    for name in names:
        problem = ignore_file_problem(root / name)
        if problem:
            found.append(f"ignoring {root / name}: {problem}; the files it would leave out count as "
                         + ("part of the build context" if scope == "docker" else "code"))
    return found
