"""Image files (a `docker save` archive, a SIF, or their GnuPG-encrypted forms) from a local path
or an http(s) URL, checked against the sha256 the user gives.

A download is streamed into a private temporary file of cuberun's cache (`images/.part-*`, mode
0600), hashed on the way, bounded in size (`MAX_BYTES`, or the server's Content-Length) and in
idle time (`READ_TIMEOUT` per read), then checked and renamed to `images/sha256/<digest>`: a
second run finds it there and downloads nothing. A mismatch, an error or Ctrl-C removes the
temporary file, so the cache only ever holds files whose digest is their name. What is cached is
the file as downloaded: for the encrypted kinds, the ciphertext (decrypt.py makes the plain image
in a private temporary folder and deletes it).

The sha256 comes from `image_sha256:` (a cuberun extension of container_config.yaml), a
`#sha256=<hex>` suffix of the URL or path, or the caller (`--image-sha256`, `api.run(image_sha256=)`,
what MedPerf keeps on its server); when more than one is given they must agree. A URL needs one;
a local path is checked when one is given.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

from cuberun.errors import BackendError, UsageError
from cuberun.valueclass import dataclass

SHA256 = re.compile(r"^(sha256:)?([0-9a-fA-F]{64})$")
FRAGMENT = "#sha256="
MAX_BYTES = 64 << 30  # the largest download accepted (64 GiB)
READ_TIMEOUT = 60.0  # seconds without a byte before a download is given up
CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageSource:
    """Where the image file of a container_config.yaml cube comes from (cube.config["image_source"])."""

    kind: str  # DockerArchive | EncryptedDockerArchive | SingularityFile | EncryptedSingularityFile
    location: str  # an http(s) URL, or an absolute path
    sha256: str | None  # lower-case hex, or None (not given in the cube)
    encrypted: bool

    @property
    def is_url(self) -> bool:
        return is_url(self.location)

    @property
    def docker(self) -> bool:
        return "Docker" in self.kind

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "location": self.location, "sha256": self.sha256, "encrypted": self.encrypted}

    @classmethod
    def from_json(cls, data: Any) -> ImageSource | None:
        if not isinstance(data, dict):
            return None
        return cls(str(data["kind"]), str(data["location"]), data.get("sha256"), bool(data.get("encrypted")))


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def normalize_sha256(value: Any) -> str | None:
    """The lower-case hex of `value` (`<hex>` or `sha256:<hex>`), or None when it is not one."""
    match = SHA256.match(value.strip()) if isinstance(value, str) else None
    return match.group(2).lower() if match else None


def split_fragment(image: str) -> tuple[str, str | None]:
    """`URL#sha256=HEX` -> (URL, HEX as given); (image, None) without the suffix."""
    base, sep, digest = image.rpartition(FRAGMENT)
    return (base, digest) if sep else (image, None)


def source_of(cube: Any) -> ImageSource | None:
    config = getattr(cube, "config", None)
    return ImageSource.from_json(config.get("image_source")) if isinstance(config, dict) else None


def expected_sha256(source: ImageSource, given: str | None) -> str | None:
    """The digest to check: the caller's (`--image-sha256`) and the cube's must agree."""
    if given is None:
        return source.sha256
    digest = normalize_sha256(given)
    if digest is None:
        raise UsageError(f"--image-sha256 {given!r} is not a sha256", "give 64 hex digits, optionally prefixed with sha256:")
    if source.sha256 is not None and source.sha256 != digest:
        raise UsageError(f"--image-sha256 {digest} differs from the cube's image_sha256 {source.sha256}",
                         "give the digest of the file the cube names, or remove one of them")
    return digest


def cache_root() -> Path:
    from cuberun.paths import cache_dir

    return cache_dir() / "images"


def cached_path(digest: str) -> Path:
    return cache_root() / "sha256" / digest


def cached(digest: str | None) -> Path | None:
    """The cached file with this digest (named by it), if present."""
    if digest is None:
        return None
    path = cached_path(digest)
    return path if path.is_file() else None


def local_file(source: ImageSource, given_sha256: str | None = None) -> Path:
    """The image file of `source` on this host, checked: a path is hashed when a digest is known,
    a URL is downloaded into the cache unless a file with its digest is there already."""
    digest = expected_sha256(source, given_sha256)
    if not source.is_url:
        path = Path(source.location)
        if digest is not None:
            actual = _hash_file(path)
            if actual != digest:
                raise BackendError(f"sha256 mismatch for {path}: expected {digest}, got {actual}",
                                   "the file is not the one the digest names: get the right file, or fix the digest")
        return path
    if digest is None:
        raise UsageError(f"{source.kind} {source.location} has no sha256 to check the download against",
                         "add image_sha256: <hex> to container_config.yaml, append #sha256=<hex> to the URL, or pass --image-sha256")
    hit = cached(digest)
    return hit if hit is not None else download(source.location, digest)


def sha256_of(path: Path) -> str:
    """The sha256 of a local image file; a one-line error when it cannot be read."""
    return _hash_file(path)


def _hash_file(path: Path) -> str:
    from cuberun.fingerprint import NotRegular, file_sha256

    try:
        return file_sha256(str(path))
    except (OSError, NotRegular) as exc:
        raise BackendError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}", "give the path of a regular file") from None


def download(url: str, digest: str, *, max_bytes: int = MAX_BYTES) -> Path:
    """Stream `url` into the cache under its digest (see the module doc); returns the cached path."""
    import tempfile
    import urllib.error
    import urllib.request

    from cuberun import progress

    root = cache_root()
    (root / "sha256").mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(prefix=".part-", dir=root)  # mode 0600
    try:
        hasher = hashlib.sha256()
        request = urllib.request.Request(url, headers={"User-Agent": "cuberun"})
        try:
            with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as response, open(fd, "wb", closefd=False) as out:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if total is not None and total > max_bytes:
                    raise BackendError(f"{url} is {total} bytes, more than the {max_bytes} a download may have",
                                       "download it yourself and give its path")
                done = 0
                with progress.activity(f"downloading {url}", total=total, unit="bytes") as act:
                    while True:
                        chunk = response.read(CHUNK)
                        if not chunk:
                            break
                        done += len(chunk)
                        if done > max_bytes:
                            raise BackendError(f"{url} sent more than the {max_bytes} bytes a download may have",
                                               "download it yourself and give its path")
                        hasher.update(chunk)
                        out.write(chunk)
                        act.update(done=done)
                if total is not None and done != total:
                    raise BackendError(f"the download of {url} ended after {done} of {total} bytes", "try again")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            why = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
            raise BackendError(f"cannot download {url}: {why}", "check the URL and the network") from None
        actual = hasher.hexdigest()
        if actual != digest:
            raise BackendError(f"sha256 mismatch for {url}: expected {digest}, got {actual}",
                               "the server sent another file than the digest names; nothing was cached")
        target = cached_path(digest)
        os.chmod(part, 0o644)
        os.replace(part, target)
        part = ""
        return target
    finally:
        os.close(fd)
        if part:
            try:
                os.unlink(part)
            except FileNotFoundError:
                pass
