"""Keyed digests of secret values, so that a changed secret changes a task's identity without
the value (or a digest anyone could test guesses against) ever being written down.

The key is 32 random bytes in the user's cache dir (mode 0600), made on first use. A digest is
meaningful only on the machine and account that made it, which is all the up-to-date check needs.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping

# the one pattern of environment variable names whose values are secrets: their values never
# appear in argv, a dry run, a record or an identity (a keyed digest stands in)
SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSW|PASSWD|PWD|CREDENTIAL|AUTH)", re.IGNORECASE)
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
        if _KEY is not None:
            return _KEY
        from cuberun.paths import cache_dir

        path = cache_dir() / "secret-key"
        key = b""
        try:
            with open(path, "rb") as fh:
                key = fh.read(64)
        except OSError:
            pass
        if len(key) < 32:
            key = os.urandom(32)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(key)
            except FileExistsError:  # another cuberun made it first: use theirs
                try:
                    with open(path, "rb") as fh:
                        key = fh.read(64) or key
                except OSError:
                    pass
            except OSError:
                pass  # no place to keep it: this process's key still tells values apart within the run
        _KEY = key
        return key


def secret_digest(value: str) -> str:
    import hashlib  # here: records import this module for the pattern, at every start
    import hmac

    return "hmac:" + hmac.new(_key(), value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()[:24]
