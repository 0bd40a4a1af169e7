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

from cuberun.runners.ssh.install import INSTALL_FILTERS

REPO = Path(__file__).resolve().parents[2]
LIMIT = 4 << 20  # "a few MB"


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_the_self_install_upload_is_small(tmp_path: Path) -> None:
    filters = [f"--filter={rule}" for rule in INSTALL_FILTERS]
    got = subprocess.run(["rsync", "-a", "--dry-run", "--stats", *filters, f"{REPO}/", f"{tmp_path}/dest/"],
                         capture_output=True, text=True, timeout=120, check=True)
    match = re.search(r"Total file size: ([\d,]+) bytes", got.stdout)
    assert match is not None, got.stdout
    size = int(match.group(1).replace(",", ""))
    assert 0 < size < LIMIT, f"the self-install upload is {size} bytes: give its rsync the sync's progress options"


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_only_what_pip_reads_is_sent(tmp_path: Path) -> None:
    """An allow-list: other venvs, data and tool caches at the top of a checkout stay home."""
    repo = tmp_path / "repo"
    for rel in ("pyproject.toml", "README.md", "src/cuberun/__init__.py", "src/cuberun/__pycache__/x.pyc", "src/cuberun/.mypy_cache/m",
                ".venv-kubeflow/pyvenv.cfg", "data/big.bin", "tests/test_x.py", "notes.txt"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x")
    dest = tmp_path / "dest"
    filters = [f"--filter={rule}" for rule in INSTALL_FILTERS]
    subprocess.run(["rsync", "-a", *filters, f"{repo}/", f"{dest}/"], capture_output=True, text=True, timeout=120, check=True)
    sent = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert sent == ["README.md", "pyproject.toml", "src/cuberun/__init__.py"]
