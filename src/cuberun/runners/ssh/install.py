"""cuberun on the remote host: found on its PATH (`cuberun: installed`) or installed into a venv
there (`cuberun: venv`) from this machine's checkout, a wheel of its version, or a pip requirement."""

from __future__ import annotations

import hashlib
import json
import posixpath
import shlex
import sys
from pathlib import Path
from typing import ClassVar

from cuberun.errors import BackendError
from cuberun.runners.base import Step
from cuberun.runners.ssh.connection import PROBE_SCRIPT, SSHConnection
from cuberun.runners.ssh.sync import Plan, _hash, _last_line

INSTALL_MARKER = ".cuberun-install"

WHEEL_DIR = "<wheel-dir>"  # placeholders of the install steps, filled in when they run
WHEEL_FILE = "<wheel-file>"

# What of a cuberun checkout is sent to pip-install it remotely, as rsync filter rules (first match
# wins): only what `pip install -e` reads (pyproject.toml, README.md, LICENSE and src/), without
# caches. An allow-list, so a developer's other venvs, data or build trees at the top of the
# checkout never travel (a .venv-* of 136 MB did, with a list of exclusions).
INSTALL_FILTERS = (
    "- __pycache__/",
    "- *.pyc",
    "- *.egg-info/",
    "- .mypy_cache/",
    "- .pytest_cache/",
    "- .ruff_cache/",
    "- .cuberun/",
    "+ /pyproject.toml",
    "+ /README.md",
    "+ /LICENSE",
    "+ /src/",
    "- /*",
)

INSTALLED_SCRIPT = 'test -x "$1/bin/cuberun" && cat -- "$1/' + INSTALL_MARKER + '"'
INSTALL_SCRIPT = (
    "set -e; venv=$1; py=$2; sig=$3; shift 3; "
    'if [ ! -x "$venv/bin/python" ]; then "$py" -m venv -- "$venv"; fi; '
    '"$venv/bin/python" -m pip uninstall -y -q cuberun >/dev/null 2>&1 || true; '
    '"$venv/bin/python" -m pip install --disable-pip-version-check -q "$@"; '
    'printf "%s\\n" "$sig" > "$venv/' + INSTALL_MARKER + '"'
)


class SSHInstall(SSHConnection):
    """Bringing the remote cuberun to this machine's version, and telling when it is missing."""

    def _configure_signature(self, plan: Plan) -> str:
        return _hash(self.remote_platform, plan.rws, *self.cuberun_argv(), *self.options.config_overrides,
                     json.dumps(self._remote_env(), sort_keys=True), self._install_signature() if self.mode == "venv" else "", size=20)

    # -- cuberun on the remote ---------------------------------------------------------------
    @staticmethod
    def _package_dir() -> Path:
        import cuberun

        return Path(cuberun.__file__).resolve().parent

    @classmethod
    def _checkout(cls) -> Path | None:
        """The project root when cuberun runs from a source checkout (src layout, editable)."""
        pkg = cls._package_dir()
        project = pkg.parent.parent
        if pkg.parent.name == "src" and (project / "pyproject.toml").is_file():
            return project
        return None

    _signature_cache: ClassVar[dict[str, str]] = {}

    def _source_kind(self) -> str:
        """Where the remote cuberun comes from: 'package' (cuberun_package, from the remote's index),
        'checkout' (this machine's source tree, synced and installed editable, so a changed tree
        costs one rsync), or 'wheel' (built from this machine's installed version)."""
        if self.config.get("cuberun_package"):
            return "package"
        return "checkout" if self._checkout() is not None else "wheel"

    def _install_signature(self) -> str:
        """What pip installs remotely: changes when it must run again (version, dependencies)."""
        from cuberun import __version__

        kind = self._source_kind()
        h = hashlib.sha256(f"{__version__}\0{kind}\0{self.config.get('cuberun_package')}\0{self.python}\0".encode())
        for req in self._extra_requirements():
            h.update(req.encode() + b"\0")
        checkout = self._checkout()
        if kind == "checkout" and checkout is not None:
            h.update((checkout / "pyproject.toml").read_bytes())
        return h.hexdigest()[:20]

    def _source_signature(self) -> str:
        """The files of this machine's cuberun package (what the remote checkout copy must equal)."""
        if self._source_kind() != "checkout":
            return ""
        pkg = self._package_dir()
        key = str(pkg)
        if key not in self._signature_cache:
            h = hashlib.sha256()
            for f in sorted(p for p in pkg.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"):
                h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes() + b"\0")
            self._signature_cache[key] = h.hexdigest()[:20]
        return self._signature_cache[key]

    def _install_actions(self, *, redact: bool = False) -> list[tuple[str, list[str]]]:
        """How configure puts cuberun into the remote venv (cuberun: venv), as ("local" | "sync" |
        "remote", argv) actions; WHEEL_DIR/WHEEL_FILE are filled in when they run."""
        src_dir = posixpath.join(self.remote_root, "cuberun-src")
        mkdir = self._rsync_path(f"mkdir -p -- {shlex.quote(src_dir)}")
        kind = self._source_kind()
        actions: list[tuple[str, list[str]]] = []
        local_src = src_dir if posixpath.isabs(src_dir) else "./" + src_dir
        if kind == "package":
            spec = [str(self.config.get("cuberun_package"))]
        elif kind == "checkout":
            checkout = self._checkout()
            filters = [f"--filter={rule}" for rule in INSTALL_FILTERS]
            actions.append(("sync", [*self.rsync_base(), "--delete", mkdir, *filters, f"{checkout}/", self.rsync_spec(src_dir + "/")]))
            spec = ["-e", local_src]
        else:
            from cuberun import __version__

            actions.append(("local", [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-w", WHEEL_DIR,
                                      f"cuberun=={__version__}"]))
            actions.append(("sync", [*self.rsync_base(), "--delete", mkdir, WHEEL_DIR + "/", self.rsync_spec(src_dir + "/")]))
            spec = [posixpath.join(local_src, WHEEL_FILE)]
        script = [*self._env_prefix(redact), "/bin/sh", "-c", INSTALL_SCRIPT, "sh", self.venv, self.python, self._install_signature(), *spec, *self._extra_requirements()]
        actions.append(("remote", script))
        return actions

    def install_steps(self) -> list[Step]:
        return [Step(tuple(self.ssh_argv(argv) if kind == "remote" else argv), "install") for kind, argv in self._install_actions(redact=True)]

    def _remote_has_cuberun(self) -> bool:
        argv = self.cuberun_argv()
        if self.mode == "venv":
            result = self._capture(self.ssh_argv(["/bin/sh", "-c", INSTALLED_SCRIPT, "sh", self.venv]))
            return result.returncode == 0 and result.stdout.strip() == self._install_signature()
        result = self._capture(self.ssh_argv(["/bin/sh", "-c", PROBE_SCRIPT, "sh", argv[0]]))
        if result.returncode == 255:
            raise self._fail(result.stderr, f"cannot reach {self.target.where()}")
        return result.returncode == 0

    def _ensure_cuberun(self, *, force: bool = False) -> None:
        """cuberun: venv -> bring the remote venv to this machine's cuberun when needed. The local
        state remembers what was installed, so an unchanged setup costs no round trip."""
        if self.mode != "venv" or (self._cuberun_ready and not force):
            return
        path = self._install_state()
        state = self._read_state(path)
        installed, sources = self._install_signature(), self._source_signature()
        if force or state.get("install") != installed or state.get("sources") != sources:
            self._install(sync_only=not force and state.get("install") == installed)
        self._write_state(path, {"install": installed, "sources": sources, "venv": self.venv, "host": self.target.host})
        self._cuberun_ready = True

    def _install(self, *, sync_only: bool = False) -> None:
        """Run the install actions; with `sync_only` (pip already ran for this signature) only
        refresh the synced source tree. Skips pip when the remote venv already has this signature."""
        import tempfile

        from cuberun.process import capture

        actions = self._install_actions()
        pip_needed = not sync_only and (self._source_kind() != "checkout" or not self._remote_has_cuberun())
        if pip_needed:
            print(f"cuberun: installing cuberun into {self.target.host}:{self.venv}", file=sys.stderr, flush=True)
        wheel = WHEEL_FILE
        with tempfile.TemporaryDirectory(prefix="cuberun-wheel-") as tmp:
            for kind, template in actions:
                argv = [a.replace(WHEEL_DIR, tmp).replace(WHEEL_FILE, wheel) for a in template]
                if kind == "local" and pip_needed:
                    result = capture(argv, timeout=600)
                    wheels = sorted(Path(tmp).glob("cuberun-*.whl"))
                    if result.returncode != 0 or not wheels:
                        raise BackendError(f"cannot build a cuberun wheel to install remotely: {_last_line(result.stderr)}",
                                           "set cuberun_package to a pip requirement the remote can install, or use cuberun: installed")
                    wheel = wheels[0].name
                elif kind == "sync" and (pip_needed or self._source_kind() == "checkout"):
                    interrupted, _ = self._transfer([argv], "upload", f"uploading cuberun to {self.target.host}")
                    if interrupted is not None:
                        raise KeyboardInterrupt
                elif kind == "remote" and pip_needed:
                    code, text = self._remote(argv)
                    if code != 0:
                        raise self._remote_error(code, text, "installing cuberun into the remote venv",
                                                 f"check that {self.python} exists there and can create venvs (Debian: apt-get install python3-venv)")

    def _missing_error(self) -> BackendError:
        name = self.cuberun_argv()[0]
        if self.mode == "venv":
            return BackendError(f"cuberun is missing from the remote venv {self.target.host}:{self.venv} even after installing it",
                                f"check the remote python ({self.python}) and pip; run: cuberun configure --platform={self.platform}")
        return BackendError(
            f"cuberun is not installed on {self.target.where()} ('{name}' not found by the remote shell)",
            f"set 'cuberun: venv' on platform '{self.platform}' and run: cuberun configure --platform={self.platform}"
            " (or set cuberun_path to the remote cuberun)",
        )

    def _cuberun_missing_after(self, exit_code: int) -> bool:
        return exit_code in (126, 127) and not self._remote_has_cuberun()
