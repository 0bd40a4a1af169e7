"""Find a Python interpreter by version on this machine (for `local.python`).

`local.python` may name a program (`python3.8`), a path, or a version (`3.8`, `3.8.18`). A
version is looked for, in order, on PATH (`python3.8`), in pyenv (`$PYENV_ROOT/versions`),
among uv-managed Pythons (`~/.local/share/uv/python`), and in conda installations (base and
envs). Every candidate is run once to learn its real version: pyenv shims that point nowhere,
and broken links, are skipped.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import sys

from cuberun.errors import BackendError
from cuberun.valueclass import dataclass


@dataclass(frozen=True)
class Interpreter:
    path: str  # what creates the env (the real executable, never a shim)
    version: str  # "3.8.18"
    source: str  # "PATH", "pyenv", "uv", "conda", "given path", "cuberun's own"

    @property
    def short(self) -> str:
        return ".".join(self.version.split(".")[:2])

    def describe(self) -> str:
        return f"Python {self.version} ({self.source}: {self.path})"


_PROBED: dict[str, Interpreter | None] = {}
PROBE = "import sys; print('.'.join(map(str, sys.version_info[:3]))); print(sys.executable)"


def probe(path: str, source: str) -> Interpreter | None:
    """Run `path` once: its version and real executable, or None when it does not run."""
    key = f"{source}\0{path}"
    if key not in _PROBED:
        from cuberun.process import capture

        result = capture([path, "-c", PROBE], timeout=30)
        lines = result.stdout.split()
        found = None
        if result.returncode == 0 and len(lines) >= 2 and re.match(r"^\d+\.\d+\.\d+$", lines[0]):
            real = lines[1] if os.path.isabs(lines[1]) else path
            found = Interpreter(real, lines[0], source)
        _PROBED[key] = found
    return _PROBED[key]


def own() -> Interpreter:
    return Interpreter(sys.executable, ".".join(map(str, sys.version_info[:3])), "cuberun's own")


def _version_of(text: str) -> tuple[int, ...] | None:
    match = re.match(r"^(?:python|py)?(\d+(?:\.\d+){0,2})$", text.strip())
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def _matches(found: Interpreter, wanted: tuple[int, ...]) -> bool:
    have = tuple(int(p) for p in found.version.split("."))
    return have[: len(wanted)] == wanted


def candidates(wanted: tuple[int, ...]) -> list[tuple[str, str]]:
    """(path, source) of every place a Python of this version may live, best first."""
    name = "python" + ".".join(map(str, wanted[:2]))
    found: list[tuple[str, str]] = []
    on_path = shutil.which(name)
    if on_path:
        found.append((on_path, "PATH"))
    if len(wanted) == 1:
        on_path = shutil.which(f"python{wanted[0]}")
        if on_path:
            found.append((on_path, "PATH"))
    roots = [os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")]
    prefix = ".".join(map(str, wanted))
    for root in roots:
        for path in sorted(glob.glob(os.path.join(root, "versions", f"{prefix}*", "bin", "python")), key=_natural, reverse=True):
            found.append((path, "pyenv"))
    uv_dir = os.environ.get("UV_PYTHON_INSTALL_DIR") or os.path.join(
        os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share"), "uv", "python"
    )
    for path in sorted(glob.glob(os.path.join(uv_dir, f"cpython-{prefix}*", "bin", "python3")), key=_natural, reverse=True):
        found.append((path, "uv"))
    conda_roots = [os.environ.get("CONDA_PREFIX", ""), os.environ.get("CONDA_EXE", "").rsplit("/bin/", 1)[0]]
    conda_roots += [os.path.expanduser(p) for p in ("~/miniconda3", "~/anaconda3", "~/miniforge3", "~/mambaforge", "/opt/conda")]
    for root in dict.fromkeys(r for r in conda_roots if r):
        for pattern in (os.path.join(root, "bin", name), os.path.join(root, "envs", "*", "bin", name)):
            for path in sorted(glob.glob(pattern)):
                found.append((path, "conda"))
    return list(dict.fromkeys(found))


def _natural(path: str) -> list[object]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path)]


def find(wanted: tuple[int, ...]) -> Interpreter | None:
    """The first working interpreter of this version (`(3, 8)` or `(3, 8, 18)`), or None."""
    if _matches(own(), wanted):
        return own()
    for path, source in candidates(wanted):
        found = probe(path, source)
        if found is not None and _matches(found, wanted):
            return found
    return None


def resolve(value: str | None) -> Interpreter:
    """The interpreter `local.python` names (None: cuberun's own)."""
    if not value:
        return own()
    text = str(value).strip()
    wanted = _version_of(text)
    if "/" in text or wanted is None:
        path = os.path.expanduser(text) if "/" in text else shutil.which(text)
        found = probe(path, "given path" if "/" in text else "PATH") if path else None
        if found is None:
            raise BackendError(
                f"local.python: cannot run the Python interpreter '{text}'",
                "set local.python to an installed interpreter: a path, a program on PATH, or a version such as 3.8",
            )
        return found
    found = find(wanted)
    if found is None:
        where = ", ".join(f"{v.short} ({v.source})" for v in installed())
        raise BackendError(
            f"local.python: no Python {text} is installed here (looked on PATH, in pyenv, uv and conda)",
            f"install it (e.g. pyenv install {text}) or choose one of: {where or 'none found'}",
        )
    return found


def installed() -> list[Interpreter]:
    """One interpreter per minor version found here (for hints)."""
    seen: dict[str, Interpreter] = {}
    mine = own()
    seen[mine.short] = mine
    for major, minor in [(2, 7)] + [(3, m) for m in range(5, 15)]:
        key = f"{major}.{minor}"
        if key in seen:
            continue
        for path, source in candidates((major, minor)):
            found = probe(path, source)
            if found is not None and found.short == key:
                seen[key] = found
                break
    return sorted(seen.values(), key=lambda i: tuple(int(p) for p in i.version.split(".")))
