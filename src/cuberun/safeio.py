"""Safe file I/O, used for every file cuberun reads from the user or writes for itself.

Reading: only regular files, with a size bound, opened so that a FIFO or a device can never
block or stream forever (`--mlcube=/dev/zero`, a FIFO as a settings file).

Writing: a file is written only where there is nothing or a regular file; a symbolic link is
written through (its target is replaced, the link stays); a directory, FIFO, socket or device is
refused. The new content goes to a temporary file beside the target and is renamed over it, so a
reader sees the old or the new content, never half of it. When the directory cannot take a
temporary file (no write permission there) but the file itself is writable, it is rewritten in place.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cuberun.errors import EXIT_USAGE, CuberunError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, NoReturn

_RETRY_IN_PLACE = (errno.EACCES, errno.EPERM, errno.EROFS)
MAX_SHOWN = 160  # characters of a path shown in a message


class FileProblem(CuberunError):
    """A path cuberun must read or write is of the wrong kind, or cannot be used."""

    exit_code = EXIT_USAGE

    def __init__(self, path: str | os.PathLike[str], problem: str, hint: str | None = None) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{shown(self.path)}: {problem}", hint)


def shown(path: str | os.PathLike[str]) -> str:
    """A path for a one-line message: very long paths are shortened in the middle."""
    text = os.fspath(path)
    if len(text) <= MAX_SHOWN:
        return text
    return f"{text[:60]}...{text[-60:]} ({len(text)} characters)"


def kind(mode: int) -> str:
    """What a file is, in words: 'a directory', 'a FIFO', ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "not a regular file"


def os_problem(exc: OSError | ValueError) -> str:
    """An OSError (or the ValueError of a NUL byte) in a few words."""
    if isinstance(exc, UnicodeError):
        return "the name is not ASCII, but the locale is ASCII-only (use a UTF-8 locale: export LC_ALL=C.UTF-8, or PYTHONUTF8=1)"
    if isinstance(exc, ValueError):
        return "the path contains a NUL byte" if "null" in str(exc) else str(exc)
    if exc.errno == errno.ELOOP:
        return "too many levels of symbolic links (a symbolic link loop?)"
    if exc.errno == errno.ENAMETOOLONG:
        return "the path is too long for the file system"
    if exc.errno == errno.EACCES or exc.errno == errno.EPERM:
        return "permission denied"
    return (exc.strerror or str(exc)).rstrip(".").lower() if exc.strerror else str(exc)


# -- reading -------------------------------------------------------------------------------


def read_regular(path: str | os.PathLike[str], limit: int, *, what: str = "file") -> bytes:
    """The content of a regular file of at most `limit` bytes, or a FileProblem. Never blocks on
    a FIFO (opened non-blocking, then refused) and never reads a device."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        if os.path.islink(name):
            raise FileProblem(name, f"{what} is a symbolic link to {shown(os.readlink(name))}, which does not exist") from None
        raise FileProblem(name, f"{what} does not exist") from None
    except (OSError, ValueError) as exc:
        try:
            mode = os.stat(name).st_mode  # a socket, a device without a driver: say what it is
        except (OSError, ValueError):
            mode = stat.S_IFREG
        if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
            raise FileProblem(name, f"{what} is {kind(mode)}, not a regular file") from None
        raise FileProblem(name, f"cannot read {what}: {os_problem(exc)}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(name, f"{what} is {kind(st.st_mode)}, not a regular file")
        if st.st_size > limit:
            raise FileProblem(name, f"{what} is too large ({st.st_size} bytes; the limit is {limit})")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:  # it grew while we read it
                raise FileProblem(name, f"{what} is too large (more than {limit} bytes)")
        return b"".join(chunks)
    except OSError as exc:
        raise FileProblem(name, f"cannot read {what}: {os_problem(exc)}") from None
    finally:
        os.close(fd)


def read_tail(path: str | os.PathLike[str], size: int) -> bytes | None:
    """The last `size` bytes of a regular file, or None (missing, not a regular file, unreadable)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError):
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        os.lseek(fd, max(0, st.st_size - size), os.SEEK_SET)
        chunks: list[bytes] = []
        left = size
        while left > 0:
            chunk = os.read(fd, left)
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_json(path: str | os.PathLike[str], limit: int = 64 * 1024 * 1024) -> object:
    """A JSON document from a regular file (FileProblem or ValueError otherwise)."""
    import json

    return json.loads(read_regular(path, limit).decode("utf-8"))


def is_regular(path: str | os.PathLike[str]) -> bool:
    """A regular file (through symbolic links), without ever raising."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


# -- writing -------------------------------------------------------------------------------


def target_of(path: str | os.PathLike[str], *, what: str = "file", hint: str | None = None) -> Path:
    """Where writing `path` really writes: the path itself, or the final target of a symbolic
    link. A FileProblem when that is a directory, a FIFO, a device or a socket, or cannot be used."""
    name = os.fspath(path)
    try:
        st = os.lstat(name)
    except FileNotFoundError:
        return Path(name)
    except (OSError, ValueError) as exc:
        blocker = _blocker(os.path.dirname(os.path.abspath(name))) if isinstance(exc, OSError) and exc.errno == errno.ENOTDIR else None
        if blocker is not None:
            raise FileProblem(blocker[0], f"cannot write {what} {shown(name)}: this is {blocker[1]}, not a folder", "move it away") from None
        raise FileProblem(name, f"cannot write {what}: {os_problem(exc)}", hint) from None
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(name)
        try:
            st = os.stat(name)
        except FileNotFoundError:
            if not os.path.isdir(os.path.dirname(real)):
                raise FileProblem(name, f"cannot write {what}: it is a symbolic link to {shown(real)}, whose folder does not exist", hint) from None
            return Path(real)  # a dangling link: its target is created through it
        except (OSError, ValueError) as exc:
            raise FileProblem(name, f"cannot write {what}: {os_problem(exc)}", hint) from None
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(name, f"cannot write {what}: it is a symbolic link to {kind(st.st_mode)} ({shown(real)})", hint)
        return Path(real)
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem(name, f"cannot write {what}: it is {kind(st.st_mode)}", hint or "give the path of a new or regular file")
    return Path(name)


def write_file(
    path: str | os.PathLike[str],
    data: bytes | str,
    *,
    what: str = "file",
    hint: str | None = None,
    make_parents: bool = True,
    durable: bool = False,
    mode: int = 0o666,
) -> Path:
    """Write `data` to `path` atomically and safely (see the module's docstring); return the
    file really written. Out-of-space errors are raised as OSError naming the file."""
    payload = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    return _atomic(path, lambda fd: _write_all(fd, payload), payload, what=what, hint=hint, make_parents=make_parents,
                   durable=durable, mode=mode)


def write_from(path: str | os.PathLike[str], fill: Callable[[int], None], *, what: str = "file", hint: str | None = None,
               mode: int = 0o666) -> Path:
    """Like write_file, with the content written by `fill(fd)` (e.g. streamed from an archive)."""
    return _atomic(path, fill, None, what=what, hint=hint, make_parents=True, durable=False, mode=mode)


def copy_file(source: str | os.PathLike[str], dest: str | os.PathLike[str], *, what: str = "file", hint: str | None = None) -> Path:
    """Copy a regular file (never a FIFO or a device) to `dest`, written like write_file."""
    name = os.fspath(source)
    try:
        src = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except (OSError, ValueError) as exc:
        raise FileProblem(name, f"cannot read {what}: {os_problem(exc)}") from None
    try:
        st = os.fstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(name, f"cannot copy {what}: it is {kind(st.st_mode)}, not a regular file")

        def fill(fd: int) -> None:
            while True:
                chunk = os.read(src, 1 << 20)
                if not chunk:
                    return
                _write_all(fd, chunk)

        return _atomic(dest, fill, None, what=what, hint=hint, make_parents=True, durable=False, mode=0o666)
    finally:
        os.close(src)


def _atomic(
    path: str | os.PathLike[str], fill: Callable[[int], None], payload: bytes | None, *, what: str, hint: str | None,
    make_parents: bool, durable: bool, mode: int,
) -> Path:
    target = target_of(path, what=what, hint=hint)
    folder = target.parent
    if make_parents:
        make_dirs(folder, what=f"the folder of the {what}")
    try:
        existing = os.stat(target).st_mode
    except OSError:
        existing = None
    tmp = folder / f".{target.name[:200]}.{os.getpid()}.{os.urandom(3).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno in _RETRY_IN_PLACE and existing is not None and payload is not None:
            _write_in_place(target, payload, what, hint)
            return target
        _raise_write(target, exc, what, hint)
    try:
        try:
            if existing is not None:
                os.fchmod(fd, stat.S_IMODE(existing))
            fill(fd)
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        target_of(target, what=what, hint=hint)  # still nothing or a regular file at the last moment
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            _raise_write(target, exc, what, hint)
        raise
    return target


def write_new(path: str | os.PathLike[str], data: bytes | str, *, what: str = "file", hint: str | None = None, mode: int = 0o666) -> Path:
    """Create a file that must not exist yet (never follows a symbolic link)."""
    payload = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    except FileExistsError:
        try:
            what_is = kind(os.lstat(name).st_mode)
        except OSError:
            what_is = "something"
        raise FileProblem(name, f"cannot create {what}: there is already {what_is} there", hint or "remove it, or choose another place") from None
    except OSError as exc:
        _raise_write(Path(name), exc, what, hint)
    try:
        _write_all(fd, payload)
    finally:
        os.close(fd)
    return Path(name)


def make_dirs(path: str | os.PathLike[str], *, what: str = "folder", hint: str | None = None) -> None:
    """mkdir -p, with a FileProblem naming the culprit (a file in the way, no permission)."""
    name = os.fspath(path)
    try:
        os.makedirs(name, exist_ok=True)
        return
    except FileExistsError:
        pass
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, exc.strerror, name) from None
        blocker = _blocker(name)
        if blocker is not None:
            raise FileProblem(blocker[0], f"cannot create {what} {shown(name)}: this is {blocker[1]}, not a folder",
                              hint or "move it away, or choose another place") from None
        raise FileProblem(name, f"cannot create {what}: {os_problem(exc)}", hint or "choose a place you can write to") from None
    blocker = _blocker(name) or (name, "not a folder")
    raise FileProblem(blocker[0], f"cannot create {what} {shown(name)}: this is {blocker[1]}, not a folder",
                      hint or "move it away, or choose another place")


def _blocker(name: str) -> tuple[str, str] | None:
    """The first component of `name` that exists and is not a directory (through links)."""
    probe = os.path.abspath(name)
    parts: list[str] = []
    while True:
        parts.append(probe)
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    for candidate in reversed(parts):
        try:
            st = os.stat(candidate)
        except FileNotFoundError:
            return None
        except OSError:
            try:
                lst = os.lstat(candidate)
            except OSError:
                return None
            if stat.S_ISLNK(lst.st_mode):
                return candidate, "a symbolic link that cannot be followed (a loop, or its target is missing)"
            return None
        if not stat.S_ISDIR(st.st_mode):
            return candidate, kind(st.st_mode)
    try:
        lst = os.lstat(name)
        if stat.S_ISLNK(lst.st_mode):
            return name, "a dangling symbolic link"
    except OSError:
        pass
    return None


def _write_all(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _write_in_place(target: Path, payload: bytes, what: str, hint: str | None) -> None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        _raise_write(target, exc, what, hint)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem(target, f"cannot write {what}: it is {kind(st.st_mode)}", hint)
        os.ftruncate(fd, 0)
        _write_all(fd, payload)
    except OSError as exc:
        _raise_write(target, exc, what, hint)
    finally:
        os.close(fd)


def _raise_write(target: Path, exc: OSError, what: str, hint: str | None) -> NoReturn:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise OSError(exc.errno, exc.strerror, str(target)) from None
    raise FileProblem(target, f"cannot write {what}: {os_problem(exc)}", hint) from None


def open_lock_file(path: str | os.PathLike[str]) -> int:
    """A read-write descriptor of a lock file (created if missing): a regular file only, never
    through a symbolic link, never blocking on a FIFO."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise OSError(exc.errno, exc.strerror, name) from None
        problem = "is a symbolic link" if os.path.islink(name) else f"cannot be opened: {os_problem(exc)}"
        hint = ("make its folder writable for you, or use another --workspace" if exc.errno in (errno.EACCES, errno.EPERM) and not os.path.islink(name)
                else "remove it; cuberun creates its lock files itself")
        raise FileProblem(name, f"the lock file {problem}", hint) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileProblem(name, f"the lock file is {kind(st.st_mode)}", "remove it; cuberun creates its lock files itself")
    return fd


def rmtree(path: Path) -> None:
    """Remove a tree that may contain read-only directories (images do)."""
    import shutil
    import sys

    def fix(func: Any, target: str, _exc: Any) -> None:
        try:
            parent = os.path.dirname(target)
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR | stat.S_IXUSR)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, os.stat(target).st_mode | stat.S_IWUSR | stat.S_IXUSR | stat.S_IRUSR)
            func(target)
        except OSError:
            pass

    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=fix)
        else:
            shutil.rmtree(path, onerror=fix)
