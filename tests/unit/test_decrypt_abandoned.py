"""A decrypted image whose cuberun was killed with SIGKILL (nothing of it could run to delete it)
is deleted by the next decryption; a live cuberun's folder and folders that are not cuberun's are
left alone. Real gpg, a real process killed by its PID."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from cuberun import decrypt
from tests.conftest import gpg_encrypt

pytestmark = pytest.mark.skipif(shutil.which("gpg") is None, reason="gpg is not installed")

HOLDER = """
import sys
from pathlib import Path
from cuberun import decrypt
with decrypt.decrypted(Path(sys.argv[1]), Path(sys.argv[2]), "image.tar") as plain:
    print(plain, flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
"""


def _holder(tmp_path: Path, tmp_root: Path) -> tuple[subprocess.Popen[str], Path]:
    plain, enc, key = tmp_path / "image.tar", tmp_path / "image.tar.gpg", tmp_path / "key"
    plain.write_bytes(b"secret image bytes " * 100)
    key.write_text("passphrase\n")
    if not enc.exists():
        gpg_encrypt(plain, enc, key)
    env = {**os.environ, "TMPDIR": str(tmp_root)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(enc), str(key)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()  # blocks until the image is decrypted (or the process ended)
    assert line, proc.wait(60)
    return proc, Path(line)


def test_a_killed_cuberuns_decrypted_image_is_deleted_by_the_next_decryption(tmp_path: Path) -> None:
    tmp_root = tmp_path / "tmp"
    tmp_root.mkdir()
    killed, plain = _holder(tmp_path, tmp_root)
    live, live_plain = _holder(tmp_path, tmp_root)
    foreign = tmp_root / f"{decrypt.PREFIX}not-ours"  # the prefix, but no owner lock: never touched
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    try:
        os.kill(killed.pid, signal.SIGKILL)
        assert killed.wait(60) == -signal.SIGKILL
        assert plain.is_file()  # nothing of the killed process could delete it
        assert decrypt.remove_abandoned(str(tmp_root)) == [plain.parent]
        assert not plain.parent.exists()
        assert live_plain.is_file() and (foreign / "keep.txt").read_text() == "mine"
    finally:
        for proc in (killed, live):
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    pipe.close()
            proc.wait(60)
    assert not live_plain.parent.exists()  # its own block deleted it when stdin closed
    assert sorted(p.name for p in tmp_root.iterdir()) == [foreign.name]
