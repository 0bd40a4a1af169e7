"""GnuPG symmetric decryption of an encrypted image (EncryptedDockerArchive, EncryptedSingularityFile).

`gpg --batch --decrypt --passphrase-file KEYFILE` writes the plain image into a fresh private
folder (mode 0700, `cuberun-decrypted-*` in the temporary directory, $TMPDIR), with a GnuPG home
of its own inside it (the user's keyring and agent are not touched, the passphrase is not
cached: --no-symkey-cache). The passphrase is read by gpg from the user's file: it is never on a
command line, in the environment, in a log or in the run record. The folder is deleted when the
`decrypted` block ends, whatever ends it (success, failure, Ctrl-C); a failed decryption (a
wrong passphrase) leaves nothing behind and is one line. `Holder` keeps a decrypted file for the
length of an invocation (a SIF that several tasks run) and deletes it on `release`, or at the
latest when the process exits. A folder whose cuberun was killed (SIGKILL: nothing of it could
run) is deleted by the next decryption: each folder holds an `owner.lock` that its cuberun keeps
locked (flock) while the folder lives; a folder whose lock can be taken has no owner left.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from cuberun.errors import BackendError, RunnerUnavailable, UsageError

PREFIX = "cuberun-decrypted-"
OWNER_LOCK = "owner.lock"
TIMEOUT = 3600.0
GPG = "gpg"


def key_file(value: str | os.PathLike[str] | None, what: str) -> Path:
    """The passphrase file the user gave (`--decryption-key`), checked to be a regular file."""
    if value is None or not str(value).strip():
        raise UsageError(f"{what} is encrypted and no passphrase file was given",
                         "pass --decryption-key=FILE (api: decryption_key=FILE), a file holding the passphrase")
    path = Path(os.path.abspath(os.path.expanduser(str(value))))
    if not path.is_file():
        why = "is not a regular file" if path.exists() else "does not exist"
        raise UsageError(f"the passphrase file {path} {why}", "pass --decryption-key=FILE with the file that holds the passphrase")
    return path


def gpg_argv(encrypted: Path, key: Path, output: Path, home: Path) -> list[str]:
    """The decryption command (pure): batch mode, no terminal, loopback passphrase from the file,
    and no gpg-agent: a symmetric decryption needs none, and an agent started for the private
    home would outlive cuberun (until it notices its socket is gone)."""
    return [GPG, "--batch", "--quiet", "--no-tty", "--no-autostart", "--no-symkey-cache", "--pinentry-mode", "loopback", "--homedir", str(home),
            "--passphrase-file", str(key), "--decrypt", "--output", str(output), str(encrypted)]


@contextmanager
def decrypted(encrypted: Path, key: Path, name: str) -> Iterator[Path]:
    """The plain content of `encrypted` as `<private folder>/<name>`, deleted when the block ends."""
    from cuberun.process import capture, which

    if which(GPG) is None:
        raise RunnerUnavailable(f"gpg is not installed (no '{GPG}' on the PATH): it decrypts {encrypted}. Hint: install GnuPG (apt install gpg)")
    remove_abandoned()
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))  # 0700
    _LIVE.add(folder)
    owner = _own(folder)
    try:
        home = folder / "gnupg"
        home.mkdir(mode=0o700)
        output = folder / name
        res = capture(gpg_argv(encrypted, key, output, home), timeout=TIMEOUT)
        if res.returncode != 0 or not output.is_file():
            lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
            why = lines[-1] if lines else f"gpg exited with {res.returncode}"
            hint = ("check that the passphrase file holds the passphrase the image was encrypted with"
                    if "bad session key" in why.lower() or "decryption failed" in why.lower() else "check the file and the passphrase file")
            raise BackendError(f"cannot decrypt {encrypted} with the passphrase in {key}: {why}", hint)
        shutil.rmtree(home, ignore_errors=True)  # the keybox, the random seed: nothing of it stays
        os.utime(output, ns=(encrypted.stat().st_atime_ns, encrypted.stat().st_mtime_ns))  # stable identity across decryptions
        yield output
    finally:
        remove(folder)
        os.close(owner)


def _own(folder: Path) -> int:
    """Lock the folder's owner file for as long as this process keeps the folder."""
    import fcntl

    staging = folder / (OWNER_LOCK + ".new")  # locked before it gets the name a sweeper looks for
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.rename(staging, folder / OWNER_LOCK)
    return fd


def remove_abandoned(root: str | None = None) -> list[Path]:
    """Delete the decryption folders (ours: our uid, our prefix, our lock file) whose cuberun is
    gone: their lock is free. Anything else in the temporary directory is left alone."""
    import fcntl

    base = Path(root or tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = [e for e in os.scandir(base) if e.name.startswith(PREFIX)]
    except OSError:
        return removed
    for entry in entries[:1000]:
        try:
            st = entry.stat(follow_symlinks=False)
            if not entry.is_dir(follow_symlinks=False) or st.st_uid != os.geteuid():
                continue
            fd = os.open(os.path.join(entry.path, OWNER_LOCK), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue  # not one of ours (or not readable): never touched
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its cuberun still runs
        try:
            remove(Path(entry.path))
            removed.append(Path(entry.path))
        finally:
            os.close(fd)
    return removed


def remove(folder: Path) -> None:
    """Delete a decryption folder, also what a runner unpacked in it (read-only directories of an image)."""
    from cuberun.safeio import rmtree

    try:
        rmtree(folder)
    except OSError:
        pass
    shutil.rmtree(folder, ignore_errors=True)
    _LIVE.discard(folder)


_LIVE: set[Path] = set()


@atexit.register
def _remove_left() -> None:
    for folder in list(_LIVE):
        remove(folder)


class Holder:
    """Decrypted files kept until `release` (an invocation's SIF)."""

    def __init__(self) -> None:
        self._stack = ExitStack()

    def hold(self, encrypted: Path, key: Path, name: str) -> Path:
        return self._stack.enter_context(decrypted(encrypted, key, name))

    def release(self) -> None:
        self._stack.close()
