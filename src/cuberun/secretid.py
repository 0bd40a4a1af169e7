"""Keyed digests of secret values, so that a changed secret changes a task's identity without
the value (or a digest anyone could test guesses against) ever being written down.

The key is 32 random bytes in the user's cache dir (mode 0600), made on first use. A digest is
meaningful only on the machine and account that made it, which is all the up-to-date check needs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import stat
import threading

_KEY: bytes | None = None
_LOCK = threading.Lock()


def _key() -> bytes:
    global _KEY
    with _LOCK:
        if _KEY is None:
            _KEY = _load_or_make()
        return _KEY


def _read_key(path: os.PathLike[str]) -> bytes | None:
    """The stored key: a regular file of 32 to 64 bytes (never a FIFO or a device: a link to
    /dev/zero would make every key the same), else None."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        key = read_regular(path, 64, what="secret key")
    except CuberunError:
        return None
    return key if len(key) >= 32 else None


def _load_or_make() -> bytes:
    """The key from the user's cache dir, made there on first use (mode 0600, never over
    anything); a damaged regular key file is replaced. Without a place to keep it, this process's
    key still tells values apart within the run."""
    from cuberun.errors import CuberunError
    from cuberun.runners.pyenv import cache_dir
    from cuberun.safeio import make_dirs, write_file, write_new

    path = cache_dir() / "secret-key"
    key = _read_key(path)
    if key is not None:
        return key
    key = os.urandom(32)
    try:
        make_dirs(path.parent, what="cache folder")
        write_new(path, key, what="secret key", mode=0o600)
        return key
    except CuberunError:
        pass
    except OSError:
        return key
    theirs = _read_key(path)  # another cuberun made it first: use theirs
    if theirs is not None:
        return theirs
    try:
        if stat.S_ISREG(os.lstat(path).st_mode):  # a damaged key of ours (too short): made again
            write_file(path, key, what="secret key", mode=0o600)
            os.chmod(path, 0o600)
    except (CuberunError, OSError):
        pass
    return key


def secret_digest(value: str) -> str:
    return "hmac:" + hmac.new(_key(), value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:24]
