"""GnuPG symmetric decryption of an encrypted image (EncryptedDockerArchive, EncryptedSingularityFile).

`gpg --batch --decrypt --passphrase-file KEYFILE` writes the plain image into a fresh private
folder (mode 0700, `cuberun-decrypted-*` in the temporary directory, $TMPDIR), with a GnuPG home
of its own inside it (the user's keyring and agent are not touched, the passphrase is not
cached: --no-symkey-cache). The passphrase is read by gpg from the user's file: it is never on a
command line, in the environment, in a log or in the run record. The folder is deleted when the
`decrypted` block ends, whatever ends it (success, failure, Ctrl-C); a failed decryption (a
wrong passphrase) leaves nothing behind and is one line. `Holder` keeps a decrypted file for the
length of an invocation (a SIF that several tasks run) and deletes it on `release`, or at the
latest when the process exits.
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
    folder = Path(tempfile.mkdtemp(prefix=PREFIX))  # 0700
    _LIVE.add(folder)
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


def remove(folder: Path) -> None:
    """Delete a decryption folder, also what a runner unpacked in it (read-only directories of an image)."""
    from cuberun.runners.rootfs import rmtree

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
