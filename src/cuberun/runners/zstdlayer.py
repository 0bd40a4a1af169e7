"""Image layers compressed with zstd (`application/vnd.oci.image.layer.v1.tar+zstd`: images
pushed with `podman push --compression-format=zstd` or BuildKit's `compression=zstd`, saved
from an engine that keeps them): known by their first bytes, never by a name, and decompressed
by the `zstd` program (no Python zstd module is needed). The compressed layer is copied into a
private temporary file (mode 0600) in `work` (the folder of the image being unpacked: the
store, or an encrypted archive's private folder) and deleted when the layer is done; zstd's
output is read through a pipe, bounded to rootfs.MAX_LAYER_BYTES (as every layer's members
are). A missing zstd or a corrupt layer is one BackendError naming the layer.
"""
from __future__ import annotations

import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import IO

from cuberun.errors import BackendError
from cuberun.runners import rootfs

MAGIC = b"\x28\xb5\x2f\xfd"  # a zstd frame
SKIPPABLE = b"\x2a\x4d\x18"  # a skippable frame: 0x184D2A50..5F, little-endian (zstd accepts one first)
CHUNK = 1 << 20
INSTALL = "install zstd (Debian/Ubuntu: apt-get install zstd; RHEL/Fedora: dnf install zstd) and run again"


def is_zstd(head: bytes) -> bool:
    """Whether a stream starting with `head` (its first 4 bytes or more) is zstd-compressed."""
    return head[:4] == MAGIC or (len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == SKIPPABLE)


def sniff(stream: IO[bytes]) -> bool:
    """Whether the seekable `stream` (a layer in an archive) is zstd-compressed; left at its start."""
    start = stream.tell()
    head = stream.read(4)
    stream.seek(start)
    return is_zstd(head)


class Bounded:
    """A read-only stream over `raw` that refuses to give more than `limit` bytes in all."""

    def __init__(self, raw: IO[bytes], limit: int, what: str) -> None:
        self.raw = raw
        self.limit = limit
        self.what = what
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:  # all of it, in bounded chunks
            return b"".join(iter(lambda: self.read(CHUNK), b""))
        if size == 0:
            return b""
        data = self.raw.read(max(min(size, self.limit + 1 - self.count), 1))
        self.count += len(data)
        if self.count > self.limit:
            raise BackendError(f"{self.what} is larger than {self.limit} bytes uncompressed",
                               "the layer is not a plain image layer (a compression bomb?): check where the archive comes from")
        return data

    def drain(self) -> None:
        """Read what follows the end of the tar (padding), still bounded."""
        while self.read(CHUNK):
            pass


@contextmanager
def decompressed(stream: IO[bytes], work: Path, what: str, copied: Callable[[int], None] | None = None) -> Iterator[Bounded]:
    """The uncompressed bytes of the zstd-compressed `stream`, as a stream (`what` names the
    layer in errors; `copied` is told the compressed bytes read so far)."""
    from cuberun.process import piped, which

    exe = which("zstd")
    if exe is None:
        raise BackendError(f"{what} is compressed with zstd and there is no zstd program on the PATH", INSTALL)
    fd, name = tempfile.mkstemp(prefix=".layer-", suffix=".zst", dir=work)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as out:
            done = 0
            while chunk := stream.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if copied is not None:
                    copied(done)
        with ExitStack() as stack:
            compressed = stack.enter_context(open(name, "rb"))  # its standard input: zstd's messages then name no file
            try:
                pipe = stack.enter_context(piped([exe, "-d", "-c", "-q", "--no-progress"], stdin=compressed.fileno()))
            except OSError as exc:
                raise BackendError(f"cannot start {exe} to decompress {what}: {exc.strerror or exc}", INSTALL) from None
            reader = Bounded(pipe.stdout, rootfs.MAX_LAYER_BYTES, what)
            failed: Exception | None = None
            try:
                yield reader
                reader.drain()
            except Exception as exc:
                if not isinstance(exc, (tarfile.TarError, OSError, EOFError)):
                    raise
                failed = exc  # the tar's reading failed: zstd's own error, if any, tells why
            code, error = pipe.finish()
            error = re.sub(r"^(zstd: )?/\*stdin\*\\ ?: ", "", error)
            if code > 0 or (code < 0 and failed is None):  # a SIGPIPE is ours when the tar failed first
                raise BackendError(f"cannot decompress {what}: zstd: {error or f'exit code {code}'}",
                                   "the layer is corrupt or truncated: save or download the archive again") from None
            if failed is not None:
                raise failed
    finally:
        os.unlink(name)


def zstd_layers(path: Path) -> list[str]:
    """The layers of the `docker save` archive `path` (manifest.json's) that are zstd-compressed;
    [] when it has none or cannot be read (this only adds a hint to an engine's own error)."""
    import json
    import posixpath

    try:
        with tarfile.open(path, "r:*") as tar:
            members = {posixpath.normpath(m.name.lstrip("/")): m for m in tar.getmembers()}
            manifest_file = tar.extractfile(members["manifest.json"])
            manifest = json.loads(manifest_file.read(1 << 20)) if manifest_file is not None else []
            found = []
            for entry in manifest if isinstance(manifest, list) else []:
                for name in entry.get("Layers") or [] if isinstance(entry, dict) else []:
                    member = members.get(posixpath.normpath(str(name).lstrip("/")))
                    stream = tar.extractfile(member) if member is not None else None
                    if stream is not None and is_zstd(stream.read(4)):
                        found.append(str(name))
            return found
    except (tarfile.TarError, OSError, EOFError, KeyError, ValueError):
        return []
