"""The ssh runner: a task on another machine through the system's OpenSSH and rsync.

The user's ssh setup (``~/.ssh/config``, agents, jump hosts, keys, known_hosts) is used as is;
host keys are checked unless the user explicitly says otherwise. One connection is multiplexed
(ControlMaster) for all the ssh and rsync calls of a run.

Remote layout (``<root>`` = ``remote_root``, relative paths are under the remote $HOME)::

    <root>/venv/                          cuberun installed by `configure` (cuberun: venv)
    <root>/cuberun-src/                   the source tree or wheel it was installed from
    <root>/cubes/<name>-<hash>/           the cube sources (hash of the local host and cube path)
        workspace/...                     the task's inputs and outputs, mirroring the local workspace
        .cuberun/external/<hash>/<name>   inputs and outputs that live outside the workspace
        .cuberun/workspaces/<name>-<hash> the remote workspace when the local one is outside the cube
        .cuberun/pids/                    the pid of each running remote cuberun (for Ctrl-C)

A run: (1) one rsync sends the cube sources and the task's inputs (and its existing outputs, so
the remote state equals the local one); (2) ``ssh HOST <remote cuberun> run ...`` with every
parameter mapped to its remote path, every -P value and every run option, streamed live;
(3) one rsync brings the outputs and the remote run record back. The remote command is an argv
list turned into one shell-quoted string (the remote login shell is the only shell involved).
This side decides whether a task runs and runs its prerequisites itself, so the remote cuberun
gets --force --no-deps. Ctrl-C also interrupts the remote cuberun through its recorded pid.
The remote command line comes from runners/nested.py (the one option table slurm uses too), and
the remote cuberun tells its run id and its own errors through the versioned handshake lines
(`--handshake`), never through its human-readable output.

Limits: the remote login shell must understand POSIX single quotes (sh, bash, zsh, ksh); the
remote cuberun expands $VARS in parameter values once more, like any cuberun invocation.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import shlex
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, cast

from cuberun.errors import BackendError, CuberunError, UsageError, split_words
from cuberun.runners import nested
from cuberun.runners.base import Runner, Step, TaskPlan
from cuberun.runners.ssh_sync import CONTROL_DIR_ENV
from cuberun.schema import Field
from cuberun.valueclass import replace as replace_fields

if TYPE_CHECKING:
    from cuberun.process import Captured, Outcome
    from cuberun.resolve import ResolvedTask

from cuberun.runners.ssh_sync import (
    Item,
    Plan,
    Problem,
    Target,
    _hash,
    _inside,
    _last_line,
    _Sink,
    _slug,
    include_rules,
    rsync_pattern,
    rsync_problem,
    rsync_stats,
    ssh_problem,
)

DEFAULT_REMOTE_ROOT = ".cuberun/remote"
DEFAULT_PYTHON = "/usr/bin/python3"
INSTALL_MARKER = ".cuberun-install"
PROBE_TIMEOUT = 60.0
WHEEL_DIR = "<wheel-dir>"  # placeholders of the install steps, filled in when they run
WHEEL_FILE = "<wheel-file>"
MAX_SOCKET_PATH = 100  # sun_path is 104-108 bytes; ssh adds a random suffix while binding

# Never part of the cube sources sent to the remote (on top of the workspace): VCS data, caches,
# managed environments and container images (the remote platform builds or pulls its own).
SOURCE_EXCLUDES = (
    ".git/",
    ".hg/",
    ".svn/",
    "__pycache__/",
    "*.pyc",
    ".cuberun/",
    ".venv/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".ipynb_checkpoints/",
    "*.sif",
    "*.simg",
)
# What of a cuberun checkout is needed to pip-install it remotely.
INSTALL_EXCLUDES = (
    ".git/",
    "__pycache__/",
    "*.pyc",
    "/build/",
    "/dist/",
    "*.egg-info/",
    ".venv/",
    ".mypy_cache/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".cuberun/",
    "/tests/",
    "/examples/",
    "/benchmarks/",
    "/scripts/",
    "/docs/",
    "/.ci/",
    "/.benchmarks/",
)

# The remote side of a run: record the pid (for Ctrl-C), then become the remote cuberun, which
# stops the task when its stdin (kept open by this side) ends: the connection is gone.
RUN_WRAPPER = 'mkdir -p -- "${1%/*}" && echo $$ > "$1" && shift && export CUBERUN_HANGUP_ON_STDIN_EOF=1 && exec "$@"'
CANCEL_SCRIPT = 'kill -INT "$(cat -- "$1")" 2>/dev/null'
# exit 0: found; PROBE_ABSENT: not found. `command -v` alone exits 1 in bash but 127 in dash (Debian's
# /bin/sh), and 127 is also what a missing /bin/sh gives: name the answer ourselves.
PROBE_ABSENT = 3
PROBE_SCRIPT = f'if command -v "$1" >/dev/null 2>&1; then exit 0; else exit {PROBE_ABSENT}; fi'
INSTALLED_SCRIPT = 'test -x "$1/bin/cuberun" && cat -- "$1/' + INSTALL_MARKER + '"'
INSTALL_SCRIPT = (
    "set -e; venv=$1; py=$2; sig=$3; shift 3; "
    'if [ ! -x "$venv/bin/python" ]; then "$py" -m venv -- "$venv"; fi; '
    '"$venv/bin/python" -m pip uninstall -y -q cuberun >/dev/null 2>&1 || true; '
    '"$venv/bin/python" -m pip install --disable-pip-version-check -q "$@"; '
    'printf "%s\\n" "$sig" > "$venv/' + INSTALL_MARKER + '"'
)

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MLCUBE_PACKAGE = re.compile(r"^mlcube([-_][A-Za-z0-9_-]+)?([<>=!~ ].*)?$", re.IGNORECASE)


# -- the runner ------------------------------------------------------------------------------
def _far_identity(fp: Mapping[str, Any]) -> dict[str, Any]:
    """A remote runner fingerprint as the far end's identity: without the remote copy of the code
    (this side's code identity covers it; the copy lags until the next upload)."""
    return {k: v for k, v in fp.items() if k != "code"}


class SSHRunner(Runner):
    name = "ssh"
    section = None  # the platform entry configures it; the cube carries no host names
    schema: ClassVar[dict[str, Field]] = {
        "host": Field((str,), doc="ssh destination: an alias from the ssh config, or a host name (required)"),
        "user": Field((str,), doc="remote user (default: from the ssh config, else the local user)"),
        "port": Field((int,), doc="ssh port (default: from the ssh config, else 22)"),
        "identity_file": Field((str,), doc="private key file (ssh -i)"),
        "identify_file": Field((str,), doc="the reference's spelling of identity_file"),
        "authentication": Field((dict,), doc="the reference's {identify_file, identity_file, user}"),
        "ssh_config": Field((str,), doc="ssh config file (ssh -F); default: ~/.ssh/config"),
        "ssh_options": Field((list, dict), default=[], doc="extra ssh options: ['Key=Value', ...] or {Key: Value}"),
        "known_hosts": Field((str,), doc="known_hosts file (UserKnownHostsFile)"),
        "strict_host_key_checking": Field((str, bool), choices=("yes", "no", "ask", "accept-new", "off", True, False),
                                          doc="StrictHostKeyChecking; unset: the ssh config / OpenSSH default applies"),
        "connect_timeout": Field((int,), default=15, doc="ConnectTimeout in seconds (0: the ssh config or ssh default)"),
        "multiplex": Field((bool,), default=True, doc="share one connection for every ssh/rsync call (ControlMaster)"),
        "control_persist": Field((int,), default=60, doc="seconds the shared connection stays open after the last use"),
        "remote_root": Field((str,), default=DEFAULT_REMOTE_ROOT, doc="remote directory for cubes and the venv (relative: under $HOME)"),
        "platform": Field((str,), default="local", doc="the platform the remote cuberun runs the task on"),
        "cuberun": Field((str,), choices=("installed", "venv"), doc="installed: cuberun is on the remote PATH; venv: configure installs it"),
        "cuberun_path": Field((str,), default="cuberun", doc="the remote cuberun command (cuberun: installed)"),
        "cuberun_package": Field((str,), doc="pip requirement to install remotely instead of this machine's cuberun (cuberun: venv)"),
        "python": Field((str,), default=DEFAULT_PYTHON, doc="remote interpreter that creates the venv (absolute path recommended)"),
        "venv": Field((str,), doc="remote venv directory (default: <remote_root>/venv)"),
        "interpreter": Field((dict,), doc="the reference's {type: system|virtualenv, python, requirements, location, name}"),
        "remote_env": Field((dict,), default={}, env=True, doc="environment variables for the remote cuberun"),
        "rsync_excludes": Field((list,), default=[], doc="extra rsync exclude patterns for the cube sources"),
        "rsync_path": Field((str,), default="rsync", doc="the remote rsync command"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._target: Target | None = None
        self._connected = False
        self._cuberun_ready = False

    # -- configuration -------------------------------------------------------------------
    def _key(self, *parts: str) -> str:
        return ".".join(("platforms", self.platform, *parts))

    def _bad(self, key: str, problem: str, hint: str | None = None) -> UsageError:
        from cuberun.settings import settings_path

        return UsageError(f"{self._key(key)}: {problem}", hint or f"fix it in {settings_path()}")

    def _mapping(self, key: str, allowed: Sequence[str]) -> dict[str, Any]:
        value = self.config.get(key) or {}
        if not isinstance(value, dict):
            raise self._bad(key, f"must be a mapping, not {type(value).__name__}")
        for k in value:
            if k not in allowed:
                from cuberun.hints import did_you_mean

                raise self._bad(f"{key}.{k}", f"unknown key '{k}'", did_you_mean(str(k), allowed, "key"))
        return value

    @property
    def target(self) -> Target:
        if self._target is None:
            self._target = self._make_target()
        return self._target

    def _make_target(self) -> Target:
        cfg = self.config
        auth = self._mapping("authentication", ("identify_file", "identity_file", "user"))
        host = cfg.get("host")
        if not host:
            from cuberun.settings import settings_path

            raise UsageError(
                f"platform '{self.platform}' (runner ssh) has no host",
                f"add 'host: NAME' (an ssh alias or a host name) to platforms.{self.platform} in {settings_path()}",
            )
        host = str(host)
        if host.startswith("-") or any(c.isspace() for c in host):
            raise self._bad("host", f"'{host}' is not a valid host name or ssh alias")
        user = cfg.get("user") or auth.get("user")
        identity = cfg.get("identity_file") or cfg.get("identify_file") or auth.get("identity_file") or auth.get("identify_file")
        port = cfg.get("port")
        if port is not None and not 0 < int(port) < 65536:
            raise self._bad("port", f"{port} is not a port number")
        strict = cfg.get("strict_host_key_checking")
        if isinstance(strict, bool):
            strict = "yes" if strict else "no"
        options: list[str] = []
        raw = cfg.get("ssh_options") or []
        pairs = list(raw.items()) if isinstance(raw, dict) else [(o, None) for o in raw]
        for key, value in pairs:
            text = f"{key}={value}" if isinstance(raw, dict) else str(key)
            if not re.match(r"^[A-Za-z][A-Za-z0-9]*[= ]", text):
                raise self._bad("ssh_options", f"'{text}' is not an ssh option", "write options as Key=Value, e.g. ServerAliveInterval=30")
            options.append(text)
        timeout = cfg.get("connect_timeout")

        def expand(value: Any) -> str | None:
            return os.path.expanduser(str(value)) if value else None

        return Target(
            host=host,
            user=str(user) if user else None,
            port=int(port) if port else None,
            identity_file=expand(identity),
            ssh_config=expand(cfg.get("ssh_config")),
            known_hosts=expand(cfg.get("known_hosts")),
            strict_host_key_checking=str(strict) if strict else None,
            connect_timeout=int(timeout) if timeout else None,
            ssh_options=tuple(options),
            multiplex=bool(cfg.get("multiplex", True)),
            control_persist=int(cfg.get("control_persist") or 60),
        )

    def _interpreter(self) -> dict[str, Any]:
        return self._mapping("interpreter", ("type", "python", "requirements", "location", "name"))

    @property
    def remote_platform(self) -> str:
        return str(self.config.get("platform") or "local")

    @property
    def remote_root(self) -> str:
        """The remote root as a POSIX path; relative means under the remote $HOME."""
        root = str(self.config.get("remote_root") or DEFAULT_REMOTE_ROOT)
        if root == "~":
            root = "."
        elif root.startswith("~/"):
            root = root[2:] or "."
        elif root.startswith("~"):
            raise self._bad("remote_root", f"'{root}': only ~/ (the remote user's home) is understood", "write an absolute path")
        return posixpath.normpath(root)

    @property
    def mode(self) -> str:
        """How the remote cuberun is found: 'installed' or 'venv'."""
        mode = self.config.get("cuberun")
        if mode:
            return str(mode)
        return "venv" if self._interpreter().get("type") == "virtualenv" else "installed"

    @property
    def venv(self) -> str:
        if self.config.get("venv"):
            return posixpath.normpath(str(self.config["venv"]).removeprefix("~/"))
        interp = self._interpreter()
        if interp.get("type") == "virtualenv" and interp.get("location") and interp.get("name"):
            return posixpath.join(str(interp["location"]).removeprefix("~/"), str(interp["name"]))
        return posixpath.join(self.remote_root, "venv")

    @property
    def python(self) -> str:
        return str(self._interpreter().get("python") or self.config.get("python") or DEFAULT_PYTHON)

    def cuberun_argv(self) -> list[str]:
        if self.mode == "venv":
            return [posixpath.join(self.venv, "bin", "cuberun")]
        argv = split_words(str(self.config.get("cuberun_path") or "cuberun"), "ssh.cuberun_path")
        if not argv:
            raise self._bad("cuberun_path", "is empty")
        return argv

    def _extra_requirements(self) -> list[str]:
        """interpreter.requirements of the reference, minus the mlcube packages it needed."""
        reqs = self._interpreter().get("requirements") or []
        items = split_words(reqs, "ssh.remote_requirements") if isinstance(reqs, str) else [str(r) for r in reqs]
        return [r for r in items if not MLCUBE_PACKAGE.match(r)]

    def _remote_env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        raw = self.config.get("remote_env") or {}
        if not isinstance(raw, dict):
            raise self._bad("remote_env", "must be a mapping of NAME: value")
        for key, value in {**raw, **dict(self.options.extra_env)}.items():
            if not ENV_NAME.match(str(key)):
                raise self._bad(f"remote_env.{key}", f"'{key}' is not an environment variable name")
            env[str(key)] = "" if value is None else str(value)
        return env

    # -- ssh and rsync command lines (pure) ------------------------------------------------
    def control_dir(self) -> str:
        return os.environ.get(CONTROL_DIR_ENV) or f"/tmp/cuberun-ssh-{os.getuid()}"

    def control_path(self) -> str | None:
        t = self.target
        if not t.multiplex:
            return None
        path = f"{self.control_dir()}/{t.tag()}-%C"
        return path if len(path) - 2 + 40 <= MAX_SOCKET_PATH else None

    def ssh_base(self, *, control: bool = True) -> list[str]:
        """`ssh` and its options, without the destination. The user's own options come first:
        for ssh the first value given for an option wins."""
        t = self.target
        argv = ["ssh"]
        if t.ssh_config:
            argv += ["-F", t.ssh_config]
        for option in t.ssh_options:
            argv += ["-o", option]
        if t.port:
            argv += ["-p", str(t.port)]
        if t.user:
            argv += ["-l", t.user]
        if t.identity_file:
            argv += ["-i", t.identity_file]
        if t.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={t.known_hosts}"]
        if t.strict_host_key_checking:
            argv += ["-o", f"StrictHostKeyChecking={t.strict_host_key_checking}"]
        if t.connect_timeout:
            argv += ["-o", f"ConnectTimeout={t.connect_timeout}"]
        path = self.control_path() if control else None
        if path:
            argv += ["-o", "ControlMaster=auto", "-o", f"ControlPath={path}", "-o", f"ControlPersist={t.control_persist}"]
        return argv

    def ssh_argv(self, remote_argv: Sequence[str]) -> list[str]:
        """ssh HOST <one shell-quoted command string>: ssh always hands the command to the remote
        user's shell, so quoting once per argument here is the only quoting there is."""
        return [*self.ssh_base(), "--", self.target.host, shlex.join(remote_argv)]

    def test_command(self) -> str:
        t = self.target
        argv = ["ssh"] + (["-F", t.ssh_config] if t.ssh_config else []) + (["-p", str(t.port)] if t.port else [])
        argv += (["-l", t.user] if t.user else []) + [t.host, "true"]
        return shlex.join(argv)

    def rsync_spec(self, path: str) -> str:
        host = self.target.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{path}"

    def rsync_base(self) -> list[str]:
        return ["rsync", "-a", "--partial", "--protect-args", "-e", shlex.join(self.ssh_base())]

    def _rsync_path(self, before: str) -> str:
        """--rsync-path: a shell snippet the remote runs; used to prepare directories in the same
        connection instead of an extra round trip."""
        return f"--rsync-path={before} && {self.config.get('rsync_path') or 'rsync'}"

    # -- layout (pure) ----------------------------------------------------------------------
    def remote_plan(self, task: ResolvedTask | None = None) -> Plan:
        root = os.path.realpath(self.cube.root)
        ws = os.path.realpath(self.cube.workspace)
        ident = f"{_slug(self.cube.name)}-{_hash(socket.gethostname(), root)}"
        rcube = posixpath.join(self.remote_root, "cubes", ident)
        ws_rel: str | None = os.path.relpath(ws, root)
        if not _inside(ws, root) or ws == root:
            ws_rel = None
            rws = posixpath.join(rcube, ".cuberun", "workspaces", f"{_slug(os.path.basename(ws))}-{_hash(ws)}")
        else:
            assert ws_rel is not None
            rws = posixpath.join(rcube, *ws_rel.split(os.sep))
        items: list[Item] = []
        for p in task.params if task is not None else ():
            local = os.path.realpath(p.host_path)
            if _inside(local, ws):
                rel = "." if local == ws else os.path.relpath(local, ws).replace(os.sep, "/")
                remote = posixpath.normpath(posixpath.join(rws, rel))
                value = "./" + rel if rel.startswith("~") else rel
                items.append(Item(p.name, p.io, local, remote, rel, value))
            else:
                remote = posixpath.join(rcube, ".cuberun", "external", _hash(local, size=12), os.path.basename(local) or "root")
                value = remote if posixpath.isabs(remote) else "~/" + remote
                items.append(Item(p.name, p.io, local, remote, None, value))
        return Plan(root, ws, ws_rel, rcube, rws, tuple(items))

    def pid_file(self, plan: Plan, task: ResolvedTask) -> str:
        return posixpath.join(plan.rcube, ".cuberun", "pids", f"{_slug(task.name)}-{_hash(plan.ws, size=8)}.pid")

    def source_rules(self, plan: Plan) -> list[str]:
        """Excludes of the cube-source transfer (the workspace is handled by the caller)."""
        rules = ["- /workspace/"] if plan.ws_rel != "workspace" else []
        rules += [f"- {pattern}" for pattern in SOURCE_EXCLUDES]
        rules += [f"- {pattern}" for pattern in self._images_inside(plan)]
        rules += [f"- {pattern}" for pattern in self.config.get("rsync_excludes") or []]
        return rules

    def _images_inside(self, plan: Plan) -> list[str]:
        """Container image files/directories that the cube config puts inside the cube root."""
        found: list[str] = []
        for section, key in (("docker", "tar_file"), ("singularity", "image_dir")):
            sec = self.cube.raw_section(section) or {}
            value = sec.get(key)
            if not isinstance(value, str) or "${" in value:
                continue
            path = os.path.realpath(os.path.join(plan.root, value))
            if _inside(path, plan.root) and path != plan.root:
                found.append("/" + rsync_pattern(os.path.relpath(path, plan.root).replace(os.sep, "/")))
        return found

    def upload_argvs(self, plan: Plan, *, sources: bool = True, items: bool = True) -> list[list[str]]:
        """The rsync calls that bring the remote up to date: the cube sources and the workspace
        items in one transfer (when the workspace is inside the cube), then one per item outside."""
        argvs: list[list[str]] = []
        base = [*self.rsync_base(), "--delete", "--copy-unsafe-links", "--stats"]
        ws_items = [i.rel for i in plan.items if i.rel is not None] if items else []
        external = [i for i in plan.items if i.external] if items else []
        if plan.ws_rel is not None:
            prefix = plan.ws_rel.replace(os.sep, "/")
            rules = ["- /" + rsync_pattern(prefix + "/.cuberun/")]
            rules += include_rules(posixpath.normpath(posixpath.join(prefix, r)) for r in ws_items)
            if sources:
                rules += ["- /" + rsync_pattern(prefix + "/", wildcards=True) + "**", *self.source_rules(plan)]
            else:
                rules += ["- *"]
            argvs.append([*base, self._rsync_path(f"mkdir -p -- {shlex.quote(plan.rcube)}"), *[f"--filter={r}" for r in rules],
                          plan.root + "/", self.rsync_spec(plan.rcube + "/")])
        else:
            if sources:
                rules = self.source_rules(plan)
                argvs.append([*base, self._rsync_path(f"mkdir -p -- {shlex.quote(plan.rcube)}"), *[f"--filter={r}" for r in rules],
                              plan.root + "/", self.rsync_spec(plan.rcube + "/")])
            if ws_items:
                rules = ["- /.cuberun/", *include_rules(ws_items), "- *"]
                argvs.append([*base, self._rsync_path(f"mkdir -p -- {shlex.quote(plan.rws)}"), *[f"--filter={r}" for r in rules],
                              plan.ws + "/", self.rsync_spec(plan.rws + "/")])
        seen: set[str] = set()
        for item in external:
            if item.remote in seen:
                continue
            seen.add(item.remote)
            parent = posixpath.dirname(item.remote)
            if os.path.exists(item.local):
                argvs.append([*base, self._rsync_path(f"mkdir -p -- {shlex.quote(parent)}"), item.local, self.rsync_spec(parent + "/")])
        return argvs

    def remote_run_argv(self, task: ResolvedTask, plan: Plan, *, redact: bool = False) -> list[str]:
        """What the remote shell executes: the pid-recording wrapper around `cuberun run`."""
        prefix = self._env_prefix(redact)
        argv = nested.run_argv(self.cuberun_argv(), cube=plan.rcube, task=task.name, platform=self.remote_platform, workspace=plan.rws,
                               options=self.options, params=[f"{item.name}={item.value}" for item in plan.items])
        return ["/bin/sh", "-c", RUN_WRAPPER, "sh", self.pid_file(plan, task), *prefix, *argv]

    def cancel_argv(self, plan: Plan, task: ResolvedTask) -> list[str]:
        return self.ssh_argv(["/bin/sh", "-c", CANCEL_SCRIPT, "sh", self.pid_file(plan, task)])

    def fetch_argvs(self, plan: Plan, task: ResolvedTask, remote_run_id: str | None = None) -> list[list[str]]:
        """The rsync calls that bring the outputs (and the remote run record) back. The first
        also removes the remote pid file, in the same connection."""
        base = [*self.rsync_base(), "--delete", "--ignore-missing-args", "--stats"]
        outputs = [i for i in plan.items if i.io == "output"]
        sources = [self.rsync_spec(f"{plan.rws}/./{i.rel}") for i in outputs if i.rel is not None]
        rules: list[str] = []
        if remote_run_id:
            rules += ["+ /.cuberun/", "+ /.cuberun/runs/", "+ /" + rsync_pattern(f".cuberun/runs/{remote_run_id}/", wildcards=True) + "***"]
            sources.append(self.rsync_spec(f"{plan.rws}/./.cuberun/runs/{remote_run_id}"))
        rules.append("- /.cuberun/**")
        cleanup = f"rm -f -- {shlex.quote(self.pid_file(plan, task))};"
        argvs: list[list[str]] = []
        if sources:
            argvs.append([*base, f"--rsync-path={cleanup} {self.config.get('rsync_path') or 'rsync'}", "--relative",
                          *[f"--filter={r}" for r in rules], *sources, plan.ws + "/"])
        for item in outputs:
            if item.external:
                argvs.append([*base, self.rsync_spec(item.remote), os.path.dirname(item.local) + "/"])
        return argvs

    # -- local state (what this machine knows the remote has) ----------------------------------
    def _state_file(self, kind: str, *key: str) -> Path:
        from cuberun.paths import cache_dir

        t = self.target
        return cache_dir() / "ssh" / f"{kind}-{_hash(t.host, str(t.user), str(t.port), str(t.ssh_config), *key, size=20)}.json"

    @staticmethod
    def _read_state(path: Path) -> dict[str, Any]:
        from cuberun.safeio import read_json

        try:  # a damaged cache (a FIFO, too large, not JSON) is ignored and rewritten
            data = read_json(path, 16 << 20)
        except (CuberunError, ValueError, RecursionError):
            return {}
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _write_state(path: Path, data: Mapping[str, Any]) -> None:
        from cuberun.safeio import write_file

        try:
            write_file(path, json.dumps(dict(data), indent=1) + "\n", what="ssh state")
        except (OSError, CuberunError):
            pass  # the state only saves round trips

    def _install_state(self) -> Path:
        return self._state_file("install", self.venv)

    def _cube_state(self, plan: Plan) -> Path:
        return self._state_file("cube", plan.rcube)

    def sources_fingerprint(self, plan: Plan) -> str:
        """Names, sizes and mtimes of the cube sources (what the source sync would look at)."""
        h = hashlib.sha256()
        skip_dirs = {".git", ".hg", ".svn", "__pycache__", ".cuberun", ".venv", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
        ws = plan.ws
        count = 0
        for dirpath, dirnames, filenames in os.walk(plan.root):
            dirnames[:] = sorted(d for d in dirnames if d not in skip_dirs and os.path.join(dirpath, d) != ws
                                 and not (dirpath == plan.root and d == "workspace"))
            for name in sorted(filenames):
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                h.update(f"{os.path.relpath(os.path.join(dirpath, name), plan.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode(errors="replace"))
                count += 1
                if count > 50000:  # a huge tree: do not pretend to know; always sync
                    return "unknown-" + str(time.time())
        return h.hexdigest()

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
            filters = [f"--filter=- {p}" for p in INSTALL_EXCLUDES]
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

    # -- running commands --------------------------------------------------------------------
    def _fail(self, text: str, fallback: str, hint: str | None = None, direction: str | None = None, returncode: int = 1) -> BackendError:
        where = self.target.where()
        problem = ssh_problem(text, where, self.test_command())
        if problem is None and direction is not None:
            problem = rsync_problem(text, returncode, where, direction)
            if problem is None and returncode == 12 and not self._remote_rsync_present():
                # the remote shell's "not found" races rsync's own protocol error: ask directly
                problem = rsync_problem("rsync: command not found", 127, where, direction)
        if problem is not None:
            return BackendError(problem.message, problem.hint)
        return BackendError(f"{fallback}: {_last_line(text)}", hint)

    def _remote_rsync_present(self) -> bool:
        path = str(self.config.get("rsync_path") or "rsync")
        try:
            result = self._capture(self.ssh_argv(["/bin/sh", "-c", PROBE_SCRIPT, "sh", path]))
        except BackendError:
            return True  # cannot tell: keep rsync's own message
        return result.returncode != PROBE_ABSENT

    def _capture(self, argv: Sequence[str], timeout: float = PROBE_TIMEOUT) -> Captured:
        from cuberun.process import capture

        result = capture(argv, timeout=timeout)
        if result.missing:
            raise BackendError(f"{argv[0]} is not installed on this machine", "install OpenSSH's client and rsync (e.g. apt-get install openssh-client rsync)")
        return result

    def _ensure_connection(self) -> None:
        """Open (or find) the shared connection, so every failure to connect shows up here as one
        clear error, and any password prompt happens here, on the terminal."""
        if self._connected:
            return
        path = self.control_path()
        if path is not None and self._prepare_control_dir():
            check = self._capture([*self.ssh_base(), "-O", "check", "--", self.target.host], timeout=10)
            if check.returncode != 0:
                timeout = (self.target.connect_timeout or 30) + 60
                result = self._capture([*self.ssh_base(), "-f", "-N", "--", self.target.host], timeout=timeout)
                if result.returncode != 0:
                    raise self._fail(result.stderr, f"cannot connect to {self.target.where()}", f"try: {self.test_command()}")
        self._connected = True

    def _prepare_control_dir(self) -> bool:
        """The directory of the control sockets must be ours and private; else no multiplexing."""
        path = self.control_dir()
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
            st = os.lstat(path)
        except OSError:
            st = None
        import stat as stat_mod

        if st is None or not stat_mod.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            print(f"cuberun: warning: {path} is not a private directory of this user; not sharing ssh connections", file=sys.stderr)
            self._target = replace_fields(self.target, multiplex=False)
            return False
        return True

    def _transfer(self, argvs: Sequence[Sequence[str]], direction: str) -> tuple[Outcome | None, dict[str, Any]]:
        """Run rsync calls quietly; returns (the outcome if interrupted, stats)."""
        from cuberun import progress
        from cuberun.process import stream

        started = time.monotonic()
        text = ""
        for i, argv in enumerate(argvs):
            sink = _Sink()
            with progress.activity(f"{direction} ({self.target.host})", total=len(argvs), unit="rsync calls") as act:
                act.update(done=i)
                outcome = stream(argv, echo=sink.io())
            text += sink.text()
            if outcome.interrupted:
                return outcome, {}
            if outcome.exit_code != 0:
                raise self._fail(sink.text(), f"rsync ({direction}) failed with exit code {outcome.exit_code}",
                                 "run with --dry-run to see the rsync command", direction, outcome.exit_code)
        stats: dict[str, Any] = dict(rsync_stats(text))
        stats["seconds"] = round(time.monotonic() - started, 3)
        stats["calls"] = len(argvs)
        return None, stats

    def _remote(self, remote_argv: Sequence[str]) -> tuple[int, str]:
        """Run a remote command with its output on our stderr (install, configure)."""
        from cuberun.process import stream

        sink = _Sink(getattr(sys.stderr, "buffer", None))
        outcome = stream(self.ssh_argv(remote_argv), echo=sink.io())
        if outcome.interrupted:
            raise KeyboardInterrupt
        return outcome.exit_code, sink.text()

    def _remote_error(self, code: int, text: str, what: str, hint: str) -> BackendError:
        problem = ssh_problem("\n".join(text.splitlines()[-3:]), self.target.where(), self.test_command()) if code == 255 else None
        if problem is None and ("no space left on device" in text.lower() or "disk quota exceeded" in text.lower()):
            problem = Problem(f"the remote host {self.target.where()} is out of disk space", "free space there, or choose another remote_root")
        if problem is not None:
            return BackendError(problem.message, problem.hint)
        return BackendError(f"{what} on {self.target.host} failed with exit code {code}: {_last_line(text)}", hint)

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
                    interrupted, _ = self._transfer([argv], "upload")
                    if interrupted is not None:
                        raise KeyboardInterrupt
                elif kind == "remote" and pip_needed:
                    code, text = self._remote(argv)
                    if code != 0:
                        raise self._remote_error(code, text, "installing cuberun into the remote venv",
                                                 f"check that {self.python} exists there and can create venvs (Debian: apt-get install python3-venv)")

    # -- Runner interface --------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        from cuberun.process import which

        for tool in ("ssh", "rsync"):
            if which(tool) is None:
                return f"{tool} is not installed on this machine (the ssh runner uses OpenSSH and rsync). Hint: install it, e.g. apt-get install {'openssh-client' if tool == 'ssh' else 'rsync'}"
        return None

    def _env_prefix(self, redact: bool) -> list[str]:
        from cuberun.secretid import REDACTED, SECRET_NAME

        env = self._remote_env()
        if not env:
            return []
        return ["env", *[f"{k}={REDACTED if redact and SECRET_NAME.search(k) else v}" for k, v in env.items()]]

    def remote_configure_argv(self, plan: Plan, *, redact: bool = False) -> list[str]:
        argv = [*self.cuberun_argv(), "configure", f"--mlcube={plan.rcube}", f"--platform={self.remote_platform}", f"--workspace={plan.rws}"]
        argv += [f"-P{v}" for v in self.options.config_overrides if not v.startswith("runner.")]
        return [*self._env_prefix(redact), *argv]

    def _configure_needed(self, plan: Plan) -> bool:
        state = self._read_state(self._cube_state(plan))
        return state.get("sources") != self.sources_fingerprint(plan) or state.get("signature") != self._configure_signature(plan)

    def configure_steps(self) -> list[Step]:
        steps: list[Step] = []
        state = self._read_state(self._install_state())
        if self.mode == "venv" and (state.get("install"), state.get("sources")) != (self._install_signature(), self._source_signature()):
            steps += self.install_steps()
        plan = self.remote_plan()
        if self._configure_needed(plan):
            steps += [Step(tuple(a), "sync") for a in self.upload_argvs(plan, items=False)]
            steps.append(Step(tuple(self.ssh_argv(self.remote_configure_argv(plan, redact=True))), "configure"))
        return steps

    def configure(self) -> None:
        """Make the remote ready: cuberun there (cuberun: venv), the cube sources, then the
        remote platform's own configure (image build/pull, env). Quiet, and without a round trip,
        when neither the sources nor the platform changed since the last time."""
        self._ensure_connection()
        self._ensure_cuberun()
        plan = self.remote_plan()
        if not self._configure_needed(plan):
            return
        fingerprint = self.sources_fingerprint(plan)
        interrupted, _ = self._transfer(self.upload_argvs(plan, items=False), "upload")
        if interrupted is not None:
            raise KeyboardInterrupt
        print(f"cuberun: configuring cube '{self.cube.name}' on {self.target.host} (remote platform {self.remote_platform})",
              file=sys.stderr, flush=True)
        for attempt in (1, 2):
            code, text = self._remote(self.remote_configure_argv(plan))
            if code == 0:
                break
            if self._cuberun_missing_after(code):
                if self.mode != "venv" or attempt == 2:
                    raise self._missing_error()
                self._ensure_cuberun(force=True)
                continue
            raise self._remote_error(code, text, "the remote configure", "see its output above")
        self._write_state(self._cube_state(plan), {"sources": fingerprint, "signature": self._configure_signature(plan), "rcube": plan.rcube})

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        plan = self.remote_plan(task)
        steps = [Step(tuple(a), "sync") for a in self.upload_argvs(plan)]
        steps.append(Step(tuple(self.ssh_argv(self.remote_run_argv(task, plan, redact=True))), "run"))
        steps += [Step(tuple(a), "fetch") for a in self.fetch_argvs(plan, task)]
        return steps

    def sections(self) -> list[str] | None:
        return None  # the remote platform reads what its runner reads: not known on this side

    def far_end(self, task: ResolvedTask) -> dict[str, Any] | None:
        """The remote cuberun's identity of the task on its platform (`run --explain --json`):
        its interpreter and packages, image digest, environment... The code is left out: this
        side's code identity covers what is sent. {"unknown": why} when it cannot be asked."""
        from cuberun.errors import CuberunError

        try:
            self._ensure_connection()
            self._ensure_cuberun()
            plan = self.remote_plan(task)
            argv = [*self._env_prefix(False), *self.cuberun_argv(), "run", f"--mlcube={plan.rcube}", f"--task={task.name}",
                    f"--platform={self.remote_platform}", f"--workspace={plan.rws}", "--no-deps", "--explain", "--json",
                    "--allow-missing-inputs"]
            argv += [f"-P{value}" for value in self.options.config_overrides if not value.startswith("runner.")]
            argv += [f"{item.name}={item.value}" for item in plan.items]
            res = self._capture(self.ssh_argv(argv))
        except CuberunError as exc:
            return {"unknown": exc.lines()[0]}
        if res.returncode != 0:
            return {"unknown": f"the remote cuberun said: {_last_line(res.stderr) or 'exit ' + str(res.returncode)}"}
        try:
            report = json.loads(res.stdout)
            runner = report[-1]["identity"]["runner"]
        except (ValueError, LookupError, TypeError):
            return {"unknown": "the remote cuberun gave no identity (an older version?)"}
        return _far_identity(runner)

    def far_end_of(self, details: Mapping[str, Any]) -> dict[str, Any] | None:
        remote = details.get("remote") if isinstance(details, Mapping) else None
        record = remote.get("record") if isinstance(remote, Mapping) else None
        if not isinstance(record, str):
            return None
        from cuberun.safeio import read_json

        try:
            data = read_json(Path(record, "record.json"))
        except (CuberunError, ValueError, RecursionError):
            return None
        fp = data.get("runner_fingerprint") if isinstance(data, dict) else None
        return _far_identity(fp) if isinstance(fp, dict) else None

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The remote command and where it runs (not the sync commands: their ssh options, such as
        the control socket path, do not change the result)."""
        t = self.target
        plan = self.remote_plan(task)
        return {"runner": self.name, "command": [self.remote_run_argv(task, plan, redact=True)], "host": t.host, "user": t.user,
                "port": t.port, "ssh_config": t.ssh_config, "remote_platform": self.remote_platform,
                "code": self.cube_code().to_json()}

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

    def run(self, planned: TaskPlan, log_path: str) -> Outcome:
        from cuberun.process import STDIN_OPEN, Outcome, stream

        task = planned.task
        started = time.monotonic()
        self._ensure_connection()
        self._ensure_cuberun()
        plan = self.remote_plan(task)
        t = self.target
        details: dict[str, Any] = {
            "host": t.host, "user": t.user, "port": t.port, "remote_platform": self.remote_platform,
            "cube_dir": plan.rcube, "workspace": plan.rws,
        }
        interrupted, up = self._transfer(self.upload_argvs(plan), "upload")
        details["upload"] = up
        if interrupted is not None:
            return Outcome(interrupted.exit_code, time.monotonic() - started, True, received=interrupted.received,
                           details={"remote": details})
        remote = self.remote_run_argv(task, plan)
        cancel = self.cancel_argv(plan, task)

        def on_cancel() -> None:
            from cuberun.process import capture

            capture(cancel, timeout=15)

        out = getattr(sys.stdout, "buffer", None)
        with open(log_path, "ab") as log:
            for attempt in (1, 2):
                shown, logged = nested.HandshakeFilter(out), nested.HandshakeFilter(log)  # the remote cuberun's events are for us
                sink = _Sink(cast("IO[bytes]", shown))
                # stdin stays open (nothing is written): its end tells the remote cuberun we are gone
                outcome = stream(self.ssh_argv(remote), log=cast("IO[bytes]", logged), echo=sink.io(), on_cancel=on_cancel, stdin=STDIN_OPEN)
                shown.close()
                logged.close()
                if outcome.interrupted or outcome.exit_code not in (126, 127) or not self._cuberun_missing_after(outcome.exit_code):
                    break
                if self.mode != "venv" or attempt == 2:
                    raise self._missing_error()
                self._ensure_cuberun(force=True)
        if outcome.exit_code == 255 and not outcome.interrupted:
            problem = ssh_problem("\n".join(sink.text().splitlines()[-3:]), t.where(), self.test_command())
            if problem is not None:
                raise BackendError(problem.message, problem.hint)
            self._check_still_connected(task)
        last = nested.events(bytes(sink.tail))
        remote_run_id = nested.events(bytes(sink.head)).run_id or last.run_id
        if remote_run_id is None and outcome.exit_code != 0 and not outcome.interrupted:
            # the remote cuberun failed before it started the task (its handshake names the run when it does)
            mismatch = nested.mismatch(last, sink.text(), f"on {t.host}")
            if mismatch is not None:
                raise BackendError(mismatch, nested.MISMATCH_HINT, exit_code=outcome.exit_code)
            why = last.error or _last_line(sink.text())
            raise BackendError(f"the remote cuberun on {t.host} stopped before task '{task.name}' ran (exit {outcome.exit_code}): {why}",
                               exit_code=outcome.exit_code)
        details["run_id"] = remote_run_id
        details["exit_code"] = outcome.exit_code
        details["remote_seconds"] = round(outcome.elapsed, 3)
        if not outcome.interrupted:
            fetch_interrupted, down = self._transfer(self.fetch_argvs(plan, task, remote_run_id), "download")
            details["download"] = down
            if fetch_interrupted is not None:
                outcome = fetch_interrupted
            elif remote_run_id:
                details["record"] = record = self._adopt_record(plan, remote_run_id, log_path)
                details["hostname"] = self._remote_hostname(record)
        reason = None
        if outcome.exit_code != 0 and not outcome.interrupted:
            reason = f"failed with exit code {outcome.exit_code} on {t.host} (remote run {remote_run_id or '?'}; log {log_path})"
        return Outcome(outcome.exit_code, time.monotonic() - started, outcome.interrupted, outcome.signal, outcome.received, reason,
                       {"remote": details})

    def _check_still_connected(self, task: ResolvedTask) -> None:
        """ssh exited 255 without saying why: the task's own exit code, or the connection broke
        mid-run (sshd killed, network down)? Reconnecting tells them apart."""
        t = self.target
        probe = self._capture([*self.ssh_base(control=False), "--", t.host, "true"], timeout=(t.connect_timeout or 30) + 15)
        if probe.returncode == 0:
            return
        problem = ssh_problem(probe.stderr, t.where(), self.test_command())
        now = problem.message if problem is not None else _last_line(probe.stderr)
        raise BackendError(
            f"lost the connection to {t.where()} while task '{task.name}' was running (ssh exit 255; reconnecting: {now})",
            f"the remote cuberun stops the task when its session ends; check sshd and the network there, then run again; try: {self.test_command()}",
        )

    @staticmethod
    def _adopt_record(plan: Plan, remote_run_id: str, log_path: str) -> str | None:
        """Move the fetched remote run record next to the local one (<run dir>/remote/)."""
        fetched = os.path.join(plan.ws, ".cuberun", "runs", remote_run_id)
        target = os.path.join(os.path.dirname(log_path), "remote")
        if not os.path.isdir(fetched):
            return None
        try:
            if os.path.exists(target):
                import shutil

                shutil.rmtree(target)
            os.replace(fetched, target)
        except OSError:
            return fetched
        return target

    @staticmethod
    def _remote_hostname(record_dir: str | None) -> str | None:
        """The host name the remote cuberun recorded (what the ssh alias resolves to, in effect)."""
        if not record_dir:
            return None
        from cuberun.safeio import read_json

        try:
            data = read_json(Path(record_dir, "record.json"))
        except (CuberunError, ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        env = data.get("environment")
        host = data.get("host") or (env.get("host") if isinstance(env, dict) else None)
        return str(host) if host else None

    def inspect(self) -> dict[str, Any]:
        from cuberun.process import capture

        t = self.target
        plan = self.remote_plan()
        info: dict[str, Any] = {
            "runner": self.name, "platform": self.platform, "host": t.host, "remote_platform": self.remote_platform,
            "remote_dir": plan.rcube, "remote_workspace": plan.rws,
            "cuberun": {"mode": self.mode, "command": self.cuberun_argv(), **({"venv": self.venv} if self.mode == "venv" else {})},
        }
        resolved = capture([*self.ssh_base(control=False), "-G", "--", t.host], timeout=10)
        if resolved.returncode == 0:
            conf = dict(line.split(" ", 1) for line in resolved.stdout.splitlines() if " " in line)
            info["connection"] = {"hostname": conf.get("hostname"), "user": conf.get("user"), "port": int(conf.get("port") or 22)}
        self._ensure_connection()
        version = self._capture(self.ssh_argv(["/bin/sh", "-c", '"$@" --version', "sh", *self.cuberun_argv()]))
        if version.returncode == 255:
            raise self._fail(version.stderr, f"cannot reach {t.where()}")
        info["cuberun"]["version"] = version.stdout.strip().split()[-1] if version.returncode == 0 and version.stdout.strip() else None
        if version.returncode != 0:
            info["cuberun"]["error"] = _last_line(version.stderr or version.stdout)
        return info

    def describe_config(self) -> dict[str, Any]:
        return dict(self.config)
