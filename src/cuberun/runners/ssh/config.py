"""The ssh platform entry: its schema, the target host, the remote layout and how the remote
cuberun is found (`cuberun: installed | venv`)."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Sequence
from typing import Any

from cuberun.errors import UsageError, split_words
from cuberun.runners.base import Runner
from cuberun.runners.ssh.sync import Target
from cuberun.schema import Field

DEFAULT_REMOTE_ROOT = ".cuberun/remote"
DEFAULT_PYTHON = "/usr/bin/python3"

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MLCUBE_PACKAGE = re.compile(r"^mlcube([-_][A-Za-z0-9_-]+)?([<>=!~ ].*)?$", re.IGNORECASE)


SCHEMA: dict[str, Field] = {
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


class SSHConfig(Runner):
    """The ssh runner's configuration (the platform entry; the cube carries no host names)."""

    enforces_timeout = True  # the remote cuberun gets --timeout (nested.py) and reads the cube's own limits

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
