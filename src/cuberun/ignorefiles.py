"""Ignore files: `.dockerignore` with Docker's rules, `.gitignore` and `.cuberunignore` with git's.

Both are read into a list of `Rule`s and applied while walking a tree top-down (see
`codeid.walk`): Docker lets the last pattern that matches a path *or one of its parents* decide
(so `!keep` can re-include a file under an ignored directory); git lets the last pattern that
matches the path itself decide and never looks inside an ignored directory.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from pathlib import Path

from cuberun.valueclass import dataclass

MAX_IGNORE_BYTES = 1 << 20  # an ignore file larger than this is read only up to here


@dataclass(frozen=True)
class IgnoreRule:
    pattern: re.Pattern[str]
    negate: bool
    dir_only: bool = False  # git: a trailing slash matches directories only
    anchored: bool = True  # git: a slash before the end ties the pattern to its file's directory
    base: str = ""  # git: the directory (relative to the walk root, posix) of the file holding the rule


def translate(pattern: str) -> str:
    """A glob (Go filepath.Match / git wildmatch, with `**`) as a regular expression."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                i += 2
                if i < n and pattern[i] == "/":
                    out.append("(?:.*/)?")
                    i += 1
                else:
                    out.append(".*")
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1 : end]
                if body.startswith(("!", "^")):
                    body = "^" + body[1:]
                out.append("[" + body.replace("\\", "\\\\") + "]")
                i = end
        elif c == "\\" and i + 1 < n:
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _read(path: Path) -> str:
    """An ignore file's text: regular files only, bounded; '' when absent or unreadable."""
    import stat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return ""
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return ""
        return os.read(fd, MAX_IGNORE_BYTES).decode("utf-8", "replace")
    except OSError:
        return ""
    finally:
        os.close(fd)


# -- Docker ------------------------------------------------------------------------------------
def docker_rules(text: str) -> list[IgnoreRule]:
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        if negate:
            line = line[1:].strip()
        line = posixpath.normpath(line.replace("\\", "/")).lstrip("/") if line else line
        if line in ("", "."):
            continue
        try:
            rules.append(IgnoreRule(re.compile(translate(line) + r"\Z", re.DOTALL), negate))
        except re.error:
            continue
    return rules


def read_dockerignore(context: Path) -> list[IgnoreRule]:
    return docker_rules(_read(context / ".dockerignore"))


def docker_last(rel: str, rules: Sequence[IgnoreRule], parent_last: int = -1) -> int:
    """Index of the last rule matching `rel` or one of its parents, given that of its parent dir."""
    for i in range(len(rules) - 1, parent_last, -1):
        if rules[i].pattern.match(rel):
            return i
    return parent_last


def is_ignored(rel: str, rules: Sequence[IgnoreRule]) -> bool:
    """Docker's rule: the last pattern that matches the path, or one of its parents, decides."""
    last = -1
    parts = rel.split("/")
    for i in range(len(parts)):
        last = docker_last("/".join(parts[: i + 1]), rules, last)
    return last >= 0 and not rules[last].negate


# -- git ---------------------------------------------------------------------------------------
def git_rules(text: str, base: str = "") -> list[IgnoreRule]:
    """Rules of one .gitignore-style file in directory `base` (relative to the walk root)."""
    rules: list[IgnoreRule] = []
    for raw in text.splitlines():
        line = raw.rstrip("\n\r")
        if not line.strip() or line.startswith("#"):
            continue
        while line.endswith(" ") and not line.endswith("\\ "):
            line = line[:-1]
        negate = line.startswith("!")
        if negate or line.startswith("\\!") or line.startswith("\\#"):
            line = line[1:]
        dir_only = line.endswith("/")
        line = line.rstrip("/")
        if not line:
            continue
        anchored = "/" in line
        line = line.lstrip("/")
        try:
            rules.append(IgnoreRule(re.compile(translate(line) + r"\Z", re.DOTALL), negate, dir_only, anchored, base))
        except re.error:
            continue
    return rules


def git_ignored(rel: str, name: str, is_dir: bool, rules: Sequence[IgnoreRule]) -> bool:
    """git's rule for one path (its parent directories are known not to be ignored)."""
    for rule in reversed(rules):
        if rule.dir_only and not is_dir:
            continue
        if rule.base:
            if not rel.startswith(rule.base + "/"):
                continue
            sub = rel[len(rule.base) + 1 :]
        else:
            sub = rel
        if rule.pattern.match(sub if rule.anchored else name):
            return not rule.negate
    return False
