"""Where cuberun keeps its own state outside a cube: the user cache folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """$CUBERUN_CACHE_DIR, else $XDG_CACHE_HOME/cuberun, else ~/.cache/cuberun."""
    env = os.environ.get("CUBERUN_CACHE_DIR")
    if env:
        return Path(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cuberun"
