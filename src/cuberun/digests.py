"""sha256 objects without loading OpenSSL where the data is small.

`import hashlib` loads OpenSSL's libcrypto: about a tenth of what `cuberun run` on docker
executes beyond the interpreter's own start-up, for a few digests of names and small files. The
interpreter's built-in sha256 (`_sha256`; `_sha2` from Python 3.12) gives the same digests and
loads in microseconds, but hashes several times slower per byte, so bulk data (large files, long
member lists, build contexts, image files) still goes through hashlib.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

BULK = 1 << 20  # bytes: from this size on, hashlib's (OpenSSL) sha256 is worth its loading
_SMALL: list[Callable[[bytes], Any]] = []


def _small() -> Callable[[bytes], Any]:
    if not _SMALL:
        try:
            from _sha256 import sha256 as small  # Python 3.11
        except ImportError:
            try:
                from _sha2 import sha256 as small  # Python 3.12+
            except ImportError:
                from hashlib import sha256 as small  # an interpreter without them
        _SMALL.append(small)
    return _SMALL[0]


def sha256(data: bytes = b"", *, size: int = 0) -> Any:
    """A sha256 object (update, hexdigest, digest) started with `data`; `size`: how many bytes
    are still to come (at least BULK: hashlib's)."""
    if size + len(data) >= BULK:
        import hashlib

        return hashlib.sha256(data)
    return _small()(data)
