"""Keyed digests of secret values, so that a changed secret changes a task's identity without
the value (or a digest anyone could test guesses against) ever being written down.

The key is 32 random bytes in the user's cache dir (mode 0600), made on first use. A digest is
meaningful only on the machine and account that made it, which is all the up-to-date check needs.
"""

from __future__ import annotations

import os
import re
import stat
import threading
from collections.abc import Mapping

from cuberun.lazyre import LazyPattern

# the one pattern of environment variable names whose values are secrets: their values never
# appear in argv, a dry run, a record or an identity (a keyed digest stands in)
SECRET_NAME = LazyPattern(r"(KEY|TOKEN|SECRET|PASSW|PASSWD|PWD|CREDENTIAL|AUTH)", re.IGNORECASE)
REDACTED = "***"


def is_secret(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def redact_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: (REDACTED if is_secret(k) else v) for k, v in env.items()}

_KEY: bytes | None = None
_LOCK = threading.Lock()


def _key() -> bytes:
    global _KEY
    with _LOCK:
        if _KEY is None:
            _KEY = _load_or_make()
        return _KEY


def _read_key(path: os.PathLike[str]) -> tuple[bytes | None, str]:
    """The stored key (a regular file of 32 to 64 bytes; never a FIFO or a device: a link to
    /dev/zero would make every key the same), or None and why not."""
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        key = read_regular(path, 64, what="it")
    except CuberunError as exc:
        return None, str(getattr(exc, "problem", exc.message))
    return (key, "") if len(key) >= 32 else (None, f"it holds {len(key)} bytes, not 32 to 64")


def _load_or_make() -> bytes:
    """The key from the user's cache dir, made there on first use (mode 0600, never over
    anything); a damaged regular key file is made again. Without a place to keep it (a FIFO or a
    device in its place, no cache folder), this process's key still tells values apart within
    the run, with a warning: every run then sees secret values as changed."""
    from cuberun.errors import CuberunError
    from cuberun.paths import cache_dir
    from cuberun.safeio import make_dirs, os_problem, write_file, write_new

    path = cache_dir() / "secret-key"
    key, why = _read_key(path)
    if key is not None:
        return key
    key = os.urandom(32)
    try:
        make_dirs(path.parent, what="cache folder")
        if not os.path.lexists(path):
            write_new(path, key, what="secret key", mode=0o600)
            return key
    except CuberunError as exc:
        theirs, _ = _read_key(path)  # another cuberun made it first: use theirs
        if theirs is not None:
            return theirs
        if not os.path.lexists(path):
            _cannot_keep(path, str(getattr(exc, "problem", exc.message)))
            return key
    except OSError as exc:
        _cannot_keep(path, os_problem(exc))
        return key
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            _cannot_keep(path, why)
            return key
        write_file(path, key, what="secret key", mode=0o600)  # a damaged key (too short): made again
        os.chmod(path, 0o600)
    except CuberunError as exc:
        _cannot_keep(path, str(getattr(exc, "problem", exc.message)))
    except OSError as exc:
        _cannot_keep(path, os_problem(exc))
    return key


def _cannot_keep(path: os.PathLike[str], why: str) -> None:
    from cuberun.console import warn

    warn(f"cannot keep the secret key {os.fspath(path)}: {why}; secret env vars look changed on every run (remove it, or fix its folder)")


def secret_digest(value: str) -> str:
    import hashlib  # here: records import this module for the pattern, at every start
    import hmac

    return "hmac:" + hmac.new(_key(), value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:24]
