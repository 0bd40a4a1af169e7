"""Why the ssh runner's self-install upload (`cuberun: venv`) has no byte progress of its own:
the checkout it sends, with install.py's filters, is about 1.3 MB (a wheel of it is smaller
still), well under a second on any link an ssh runner is used over; the slow part of an install
is the remote pip, not the transfer. The transfer still runs under a progress activity
(`uploading cuberun to HOST`, connection._transfer), so a slow link shows the elapsed time.
This test keeps that reasoning true: when the upload grows past a few MB it fails, and the
install's rsync should then get the sync's --info=progress2 options (commands.PROGRESS_OPTIONS)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cuberun.runners.ssh.install import INSTALL_EXCLUDES

REPO = Path(__file__).resolve().parents[2]
LIMIT = 4 << 20  # "a few MB"


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_the_self_install_upload_is_small(tmp_path: Path) -> None:
    filters = [f"--filter=- {p}" for p in INSTALL_EXCLUDES]
    got = subprocess.run(["rsync", "-a", "--dry-run", "--stats", *filters, f"{REPO}/", f"{tmp_path}/dest/"],
                         capture_output=True, text=True, timeout=120, check=True)
    match = re.search(r"Total file size: ([\d,]+) bytes", got.stdout)
    assert match is not None, got.stdout
    size = int(match.group(1).replace(",", ""))
    assert 0 < size < LIMIT, f"the self-install upload is {size} bytes: give its rsync the sync's progress options"
