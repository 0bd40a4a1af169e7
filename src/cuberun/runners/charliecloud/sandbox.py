"""What ch-run runs under: a user and mount namespace of its own in which each input is bound onto
itself read-only (ch-run 0.31 binds read-write only), and, when the network is off, a network
namespace of its own (only a loopback that is down).

Run as a script by its path (`python -I -S sandbox.py [--net] [--ro PATH]... [--rw PATH]... -- CMD...`),
never imported by cuberun: it uses the standard library only, so it starts in a few milliseconds.
ch-run then makes its own user namespace inside this one; a read-only mount made here is locked
read-only for everything inside, so the task cannot remount it read-write.

Exit codes: the command's own (this process becomes the command), or 125 with one line on stderr
(`cuberun-sandbox: ...`) when the namespace or a mount cannot be made."""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC = 32, 4096, 16384
MS_NOATIME, MS_NODIRATIME, MS_RELATIME = 1024, 2048, 1 << 21
MS_PRIVATE = 1 << 18
# statvfs f_flag bit -> mount flag: a remount must keep the flags the mount has (a user namespace
# may not clear nosuid/nodev/noexec/atime flags it inherited: the remount would fail with EPERM)
KEEP_FLAGS = ((2, MS_NOSUID), (4, MS_NODEV), (8, MS_NOEXEC), (1024, MS_NOATIME), (2048, MS_NODIRATIME), (4096, MS_RELATIME))
FAILED = 125
PREFIX = "cuberun-sandbox: "


class SandboxError(Exception):
    pass


def parse(argv: list[str]) -> tuple[bool, list[str], list[str], list[str]]:
    net = False
    ro: list[str] = []
    rw: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return net, ro, rw, argv[i + 1:]
        if arg == "--net":
            net = True
        elif arg in ("--ro", "--rw") and i + 1 < len(argv):
            (ro if arg == "--ro" else rw).append(argv[i + 1])
            i += 1
        else:
            raise SandboxError(f"bad argument {arg!r} (usage: sandbox.py [--net] [--ro PATH]... [--rw PATH]... -- CMD...)")
        i += 1
    raise SandboxError("no command after --")


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"{what}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter(net: bool) -> None:
    """A user namespace mapping our own uid and gid, with a mount (and network) namespace it owns."""
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    _check(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | (CLONE_NEWNET if net else 0)), "cannot create a user namespace")
    try:
        _write("/proc/self/setgroups", "deny")
    except FileNotFoundError:
        pass
    _write("/proc/self/uid_map", f"{uid} {uid} 1")
    _write("/proc/self/gid_map", f"{gid} {gid} 1")
    _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "cannot make the mounts private")


def bind(path: str, readonly: bool) -> None:
    """Bind `path` onto itself, then set it read-only or read-write (a bind copies the flags of the
    mount it comes from, so an output inside a read-only input would be read-only without the
    remount); the flags the mount had otherwise are kept."""
    libc = ctypes.CDLL(None, use_errno=True)
    raw = os.fsencode(path)
    _check(libc.mount(raw, raw, None, MS_BIND | MS_REC, None), f"cannot bind {path}")
    kept = os.statvfs(path).f_flag
    flags = MS_REMOUNT | MS_BIND | (MS_RDONLY if readonly else 0)
    for bit, flag in KEEP_FLAGS:
        if kept & bit:
            flags |= flag
    _check(libc.mount(None, raw, None, flags, None), f"cannot make {path} {'read-only' if readonly else 'writable'}")


def main(argv: list[str]) -> int:
    try:
        net, ro, rw, command = parse(argv)
        if not command:
            raise SandboxError("no command after --")
        enter(net)
        for path in ro:
            bind(path, True)
        for path in rw:  # a writable output inside a read-only input
            bind(path, False)
    except (SandboxError, OSError) as exc:
        os.write(2, f"{PREFIX}{exc}\n".encode(errors="replace"))
        return FAILED
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        os.write(2, f"{PREFIX}cannot run {command[0]}: {exc.strerror}\n".encode(errors="replace"))
    return FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
