"""Requirements files and the files they pull in (`-r`/`--requirement`, `-c`/`--constraint`,
relative to the including file, as pip reads them), so that editing a nested `-r base.txt`
changes the managed env's identity just like editing the top file."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

MAX_FILES = 256
MAX_BYTES = 4 << 20
_OPTION = re.compile(r"^(?:-r|--requirement|-c|--constraint)(?:\s*=\s*|\s+|(?<=-r)|(?<=-c))(\S.*)$")
_VAR = re.compile(r"\$\{([A-Z0-9_]+)\}")


def _lines(text: str) -> list[str]:
    """Logical lines: continuations joined, comments removed (pip's rules)."""
    out: list[str] = []
    pending = ""
    for raw in text.splitlines():
        if raw.endswith("\\"):
            pending += raw[:-1]
            continue
        line = pending + raw
        pending = ""
        line = re.sub(r"(^|\s+)#.*$", "", line).strip()
        if line:
            out.append(line)
    if pending.strip():
        out.append(pending.strip())
    return out


def includes(path: Path) -> list[Path]:
    """The files one requirements file names with -r/-c (URLs are left out)."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:  # regular files only (a FIFO never blocks), the same bound as the env identity's read
        text = read_regular(path, 64 << 20, what="requirements file")[:MAX_BYTES].decode("utf-8", "replace")
    except CuberunError:
        return []
    found: list[Path] = []
    for line in _lines(text):
        m = _OPTION.match(line)
        if not m:
            continue
        target = _VAR.sub(lambda v: os.environ.get(v.group(1), ""), m.group(1).strip())
        if "://" in target:
            continue
        target = os.path.expanduser(target)
        found.append(Path(os.path.normpath(target if os.path.isabs(target) else os.path.join(path.parent, target))))
    return found


def closure(files: Sequence[Path]) -> list[Path]:
    """`files` and everything they include, depth first, each once (cycles are fine)."""
    seen: list[Path] = []
    stack = list(reversed(files))
    while stack and len(seen) < MAX_FILES:
        f = stack.pop()
        if f in seen:
            continue
        seen.append(f)
        stack.extend(reversed(includes(f)))
    return seen
