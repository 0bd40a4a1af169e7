"""The fenced code blocks of the documentation, and how the tests run the shell ones.

Convention (README.md, "Development"): every fence has a language; `bash`/`sh`/`shell` blocks
are commands, run in file order in a fresh copy of the repository as if typed into one shell,
offline unless the line before the fence is `<!-- doctest: network -->`; a block that must not
run is marked `<!-- doctest: skip: REASON -->`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHELL = {"bash", "sh", "shell"}
NOT_COMMANDS = {"text", "yaml", "yml", "json", "python", "toml", "ini", "dockerfile", "mermaid", "dot", "console"}
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)(.*)$")
MARKER = re.compile(r"^<!--\s*doctest:\s*(.*?)\s*-->\s*$")


@dataclass
class Block:
    file: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    mode: str  # "offline", "network", "skip" or "" (not a shell block)
    reason: str = ""
    problem: str = ""  # why the block breaks the convention

    def where(self) -> str:
        return f"{self.file}:{self.line}"


def documents(root: Path = REPO) -> list[Path]:
    """README.md first (it makes the virtualenv the others use), then docs/, then the examples."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md")), *sorted((root / "examples").glob("*/README.md"))]


def blocks(path: Path, root: Path = REPO) -> list[Block]:
    rel = str(path.relative_to(root))
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang, _rest = m.groups()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence)) and lines[i].strip().strip(fence[0]) == ""):
            body.append(lines[i][len(indent):] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        marker = MARKER.match(lines[start - 1].strip()) if start > 0 else None
        block = Block(rel, start + 1, lang.lower(), "\n".join(body) + "\n", "")
        if marker:
            spec = marker.group(1)
            if spec == "network":
                block.mode = "network"
            elif spec.startswith("skip:") and spec[5:].strip():
                block.mode, block.reason = "skip", spec[5:].strip()
            else:
                block.problem = f"unknown doctest marker '{spec}' (use 'network' or 'skip: REASON')"
        if not block.lang:
            block.problem = "a fenced block without a language: write ```bash for commands, ```text for output or a synopsis"
        elif block.lang in SHELL:
            block.mode = block.mode or "offline"
        elif block.lang not in NOT_COMMANDS:
            block.problem = f"unknown block language '{block.lang}' (commands: {', '.join(sorted(SHELL))}; not run: text, yaml, python, ...)"
        elif marker and not block.problem:
            block.problem = "a doctest marker on a block that is not a shell block"
        found.append(block)
    return found


def commands(block: Block) -> list[tuple[int, str]]:
    """The block's commands with their line numbers: continuation lines joined, comment-only and
    empty lines left out (they are prose or expected output)."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for n, line in enumerate(block.text.splitlines(), start=block.line + 1):
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if not pending:
            first = n
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        out.append((first, "\n".join(pending)))
        pending = []
    if pending:
        out.append((first, "\n".join(pending)))
    return out


def script(block: Block) -> str:
    """A bash script that runs the block's commands one by one and stops at the first that fails,
    saying which (an `a && b` line fails when any part of it does)."""
    parts = ["if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi  # the reader's shell after command 1"]
    for line, command in commands(block):
        parts.append(command)
        parts.append(f'__rc=$?; if [ "$__rc" != 0 ]; then echo "doctest: {block.file}:{line} exited with $__rc" >&2; exit "$__rc"; fi')
    return "\n".join(parts) + "\n"


def offline_prefix() -> list[str] | None:
    """A command prefix that runs a program without any network (a new network namespace with no
    interface up), or None when this machine cannot make one."""
    exe = shutil.which("unshare")
    if exe is None:
        return None
    for prefix in ([exe, "--net", "--"], [exe, "--user", "--map-root-user", "--net", "--"]):
        try:
            # no packet is sent to find out: the namespace must have no interface but loopback
            probe = subprocess.run([*prefix, sys.executable, "-c", "import socket; exit(0 if [n for _, n in socket.if_nameindex()] == ['lo'] else 1)"],
                                   capture_output=True, timeout=30, check=False)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return None


def copy_checkout(dest: Path, root: Path = REPO) -> Path:
    """The repository's files as a fresh clone has them (tracked and new, not ignored), taken from
    the working tree so that uncommitted edits are what is tested."""
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, check=True, timeout=60).stdout.decode("utf-8", "surrogateescape")
    for rel in filter(None, listed.split("\0")):
        src = root / rel
        if not src.is_file() or (src.is_symlink() and not src.exists()):
            continue  # deleted in the working tree, or a dangling link
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    return dest


def user_environment(home: Path, cache: Path) -> dict[str, str]:
    """A new user's shell: their own HOME (no settings, no ~/mlcube.yaml), no virtualenv active,
    and the test session's env cache (a managed env is built once per session)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUBERUN_", "MLCUBE_", "PYTEST", "VIRTUAL_ENV", "PYTHON"))}
    ours = {str(Path(sys.prefix) / "bin"), str(REPO / ".venv" / "bin")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p not in ours)
    env.update(HOME=str(home), CUBERUN_CACHE_DIR=str(cache), LC_ALL="C.UTF-8", COLUMNS="100")
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("XDG_CACHE_HOME", None)
    return env
