"""The stat cache: per scope and folder, the (size, mtime, inode, ctime) and digest of every file
last hashed, in the user's cache dir; read and written safely, rebuilt when damaged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 1


def _cache_path(scope: str, root: Path) -> Path:
    from cuberun.paths import cache_dir

    key = hashlib.sha256(f"{scope}\0{root}".encode("utf-8", "surrogateescape")).hexdigest()[:24]
    return cache_dir() / "code" / f"{key}.json"


def _load_json(path: Path, root: Path, limit: int) -> dict[str, Any]:
    """A cache record of `root`, or {} when there is none or it is damaged (not a regular file,
    too large, not JSON, another shape, another folder): a damaged cache is rebuilt, never trusted."""
    data = _read_json(path, limit)
    if not isinstance(data, dict) or data.get("version") != VERSION or data.get("root") != str(root):
        return {}
    return data


def _read_json(path: Path, limit: int) -> Any:
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        return json.loads(read_regular(path, limit, what="cache file").decode("utf-8"))
    except (CuberunError, ValueError, RecursionError):
        return None


def _save_json(path: Path, data: dict[str, Any], what: str = "code cache") -> None:
    """Write a cache record safely (safeio: never over a FIFO, device or folder; atomically)."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import write_file

    try:
        write_file(path, json.dumps(data, separators=(",", ":")), what=what)
    except (CuberunError, OSError):
        pass  # only a cache: the next run hashes again


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
