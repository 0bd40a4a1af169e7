"""Test data as a fresh clone has it.

Tests that copy a folder of the repository (a re-created cube, an example) copy the files git
would put in a clone: tracked ones and new ones that are not ignored, taken from the working tree
so that uncommitted edits are what is tested. A file that exists here but is ignored by git (it
would never be committed) is left out, so the test fails here as it would in a clean clone, and
empty folders are not copied (git keeps none).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO


def checkout_files(folder: Path, root: Path = REPO) -> list[str]:
    """The paths (relative to `folder`) of the files a clone has under `folder`."""
    rel = folder.resolve().relative_to(root.resolve())
    listed = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", str(rel)],
                            capture_output=True, check=True, timeout=60).stdout.decode("utf-8", "surrogateescape")
    files = []
    for path in sorted(set(filter(None, listed.split("\0")))):
        source = root / path
        if not source.is_file() and not source.is_symlink():
            continue  # deleted in the working tree
        files.append(str(Path(path).relative_to(rel)))
    return files


def copy_checkout_folder(folder: Path, dest: Path, root: Path = REPO) -> Path:
    """Copy the files a clone has under `folder` to `dest` (created); returns `dest`."""
    files = checkout_files(folder, root)
    if not files:
        raise FileNotFoundError(f"no file of {folder} is tracked by git (or all of them are ignored)")
    dest.mkdir(parents=True, exist_ok=False)
    for rel in files:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(folder / rel, target, follow_symlinks=False)
    return dest
