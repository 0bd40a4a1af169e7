"""The ssh and rsync command lines of a run and the remote layout of a task (pure: what
`--dry-run` prints and the golden tests pin)."""

from __future__ import annotations

import os
import posixpath
import shlex
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cuberun.runners import nested
from cuberun.runners.ssh.config import SSHConfig
from cuberun.runners.ssh.sync import CONTROL_DIR_ENV, Item, Plan, _hash, _inside, _slug, include_rules, rsync_pattern

if TYPE_CHECKING:
    from cuberun.resolve import ResolvedTask

# the transfers of a run: --stats for the run record, the overall progress as one machine-readable
# line per update, with the whole file list sent first (no incremental recursion) so that the
# percentage is of the whole transfer
PROGRESS_OPTIONS = ("--stats", "--info=progress2", "--no-inc-recursive")
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

# The remote side of a run: record the pid (for Ctrl-C), then become the remote cuberun, which
# stops the task when its stdin (kept open by this side) ends: the connection is gone.
RUN_WRAPPER = 'mkdir -p -- "${1%/*}" && echo $$ > "$1" && shift && export CUBERUN_HANGUP_ON_STDIN_EOF=1 && exec "$@"'
CANCEL_SCRIPT = 'kill -INT "$(cat -- "$1")" 2>/dev/null'


class SSHCommands(SSHConfig):
    """Command lines: ssh and rsync options, uploads, the remote `cuberun run`, fetches."""

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
        base = [*self.rsync_base(), "--delete", "--copy-unsafe-links", *PROGRESS_OPTIONS]
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
        from cuberun.retry import limits

        prefix = self._env_prefix(redact)
        argv = nested.run_argv(self.cuberun_argv(), cube=plan.rcube, task=task.name, platform=self.remote_platform, workspace=plan.rws,
                               options=self.options, params=[f"{item.name}={item.value}" for item in plan.items],
                               retried=limits(self.options, task.task).retries > 0)
        return ["/bin/sh", "-c", RUN_WRAPPER, "sh", self.pid_file(plan, task), *prefix, *argv]

    def cancel_argv(self, plan: Plan, task: ResolvedTask) -> list[str]:
        return self.ssh_argv(["/bin/sh", "-c", CANCEL_SCRIPT, "sh", self.pid_file(plan, task)])

    def fetch_argvs(self, plan: Plan, task: ResolvedTask, remote_run_id: str | None = None) -> list[list[str]]:
        """The rsync calls that bring the outputs (and the remote run record) back. The first
        also removes the remote pid file, in the same connection."""
        base = [*self.rsync_base(), "--delete", "--ignore-missing-args", *PROGRESS_OPTIONS]
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
