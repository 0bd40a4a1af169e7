"""The Backend.AI runner: a task becomes a batch session, driven through the official client.

Design: cuberun runs the `backend.ai` executable (package `backend.ai-client`, the `backendai`
extra) out of process and imports nothing from it. The client brings ~85 packages and pins click
and rich, so it may live in its own virtualenv (`client: /opt/bai/bin/backend.ai`); it owns the
request signing, API-version negotiation, the storage-proxy transfer protocols and the event
stream, all of which change between manager releases. cuberun only builds argument lists and
reads the client's documented output. Endpoint and keys come from the client's own environment
variables (BACKEND_ENDPOINT, BACKEND_ACCESS_KEY, BACKEND_SECRET_KEY); cuberun never writes them
to a run record or a log.

How a task runs (`cuberun run --platform=backendai`):

1. The workspace lives in one vfolder (`vfolder`, default `cuberun-<cube name>`), created if
   missing and mounted at `mount_point` (default `/mlcube_ws`). Every parameter is a path under
   the workspace, so `--p=/mlcube_ioN/x` becomes `--p=/mlcube_ws/<path in the workspace>/x`.
2. The task's inputs are packed into one tar archive and uploaded (one `vfolder upload`). The
   23.9 client uploads directories file by file and fails on existing directories, and cannot
   download directories at all; one archive each way avoids both.
3. `session create IMAGE --type batch --enqueue-only -t NAME -c STARTUP -m VF:/mlcube_ws -r ...
   -e ... [--depends PREVIOUS]`. The agent ignores the image's ENTRYPOINT, so STARTUP is the
   whole command, shell-quoted into one string (the agent runs it with `/bin/sh -c`): unpack the
   inputs, create the output directories, `cd <WORKDIR>` and run `<ENTRYPOINT> [<task>]
   --p=/mlcube_ws/...`, pack the outputs, exit with the task's code.
4. `session watch NAME --output json` until the session ends, while `session logs NAME` is
   polled and copied to our stdout and the run log. Then the outputs archive is downloaded and
   unpacked into the workspace (only the declared outputs, never outside them).
5. `--task=a,b`: every session is created at once, each with `--depends` on the one before.

The exit code and the `session watch` pitfalls:

| what happened                                        | exit code                                  |
|------------------------------------------------------|--------------------------------------------|
| `session_success` event                              | its exitCode (0)                           |
| `session_failure` event                              | its exitCode (1 if absent or 0; 128+N for -N) |
| watch ended on `session_terminated`/`kernel_cancelled` (exit 0) without a success event | not trusted: `session info` decides; result SUCCESS -> 0, else the kernel's exit code or 1 |
| watch exit 3                                         | a task's exit 3 only with a `session_failure` event carrying exitCode 3; without one it is the client's --max-wait: cuberun stopped waiting, destroys the session, 124 |
| watch found no session ("No matching items": it already ended, or is not among the 10 newest) | `session info` decides (polled until the session ends) |
| Ctrl-C / SIGTERM                                     | `session rm` of this run's sessions, 128+signal |
| session create refused                               | 125 (BackendError)                         |
| the manager refuses every call for 30 s after the watch ended (killed, down) | 125 (ManagerLost: one line naming the session, which may still run, and how to remove it) |
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shlex
import signal
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar

from cuberun.console import say
from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, UsageError, split_words
from cuberun.process import shielded as _shielded
from cuberun.runners.backendai_session import (
    WAITING_STATES,
    Verdict,
    _last_line,
    _strip,
    default_vfolder,
    info_verdict,
    parse_watch_output,
    safe_extract,
    session_name,
    session_status,
    startup_command,
    watch_state,
    watch_verdict,
    workspace_relative,
)
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.batch import BatchRunner
from cuberun.runners.container_policy import backendai_flags, backendai_policy
from cuberun.schema import Field
from cuberun.secretid import SECRET_NAME
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    from cuberun.policy import Policy
    from cuberun.process import Captured, Outcome
    from cuberun.resolve import ResolvedTask

DEFAULT_MOUNT = "/mlcube_ws"
DEFAULT_MAX_WAIT = 7 * 24 * 3600.0
CLIENT_TIMEOUT = 120.0  # one create/info/logs/rm call
TRANSFER_TIMEOUT = 6 * 3600.0  # one upload or download
INFO_GRACE = 300.0  # after the watch: how long `session info` may take to show the end
MANAGER_GRACE = 30.0  # after the watch: the manager unreachable this long (every call refused) means it is gone
# what the client prints when it cannot reach the manager at all (not an API error)
_UNREACHABLE = re.compile(r"Request to the API endpoint has failed|ClientConnectorError|ServerDisconnectedError|Connection refused|"
                          r"Connect call failed|ClientOSError")
EXIT_STOPPED_WAITING = 124
EXIT_BACKEND = 125
INSTALL_HINT = "pip install 'cuberun[backendai]' (or set the backendai platform's client to the backend.ai executable)"
ENDPOINT_HINT = "set BACKEND_ENDPOINT (and BACKEND_ACCESS_KEY, BACKEND_SECRET_KEY), or -Prunner.endpoint=URL"
_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


# -- pure helpers (unit-tested) ------------------------------------------------------------------
@dataclass
class SessionPlan:
    """Everything one task's batch session needs (pure: built before anything runs)."""

    task: ResolvedTask
    name: str
    command: list[str]  # the task's command line inside the session
    startup: str  # the -c string
    inputs: list[str]  # workspace-relative paths packed and uploaded
    outputs: list[str]  # workspace-relative paths packed in the session and downloaded
    in_tar: str | None  # vfolder-relative archive names
    out_tar: str | None
    create_argv: list[str]  # with secrets in -e values redacted (for records and --dry-run)
    real_create_argv: list[str]
    session_id: str | None = None
    finished: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class BackendAIRunner(BatchRunner[SessionPlan, SessionPlan]):
    name = "backendai"
    section = "backendai"
    image_keys: ClassVar[tuple[str, str | None] | None] = ("image", None)
    schema: ClassVar[dict[str, Field]] = {
        "client": Field((str, list), default="backend.ai", doc="the backend.ai client executable (a path, e.g. in its own virtualenv)"),
        "image": Field((str,), doc="the kernel image as registered with the manager (default: docker.image with -backendai added to its tag)"),
        "endpoint": Field((str,), doc="manager URL (default: $BACKEND_ENDPOINT)"),
        "endpoint_type": Field((str,), choices=("api", "session"), doc="api (keypair) or session (webserver login); default: the client's"),
        "access_key_env": Field((str,), default="BACKEND_ACCESS_KEY", doc="environment variable holding the access key"),
        "secret_key_env": Field((str,), default="BACKEND_SECRET_KEY", doc="environment variable holding the secret key"),
        "vfolder": Field((str,), doc="vfolder holding the workspace (default: cuberun-<cube name>)"),
        "vfolder_host": Field((str,), doc="storage host for creating the vfolder (default: the manager's)"),
        "create_vfolder": Field((bool,), default=True, doc="create the vfolder when it does not exist"),
        "mount_point": Field((str,), default=DEFAULT_MOUNT, doc="where the vfolder is mounted in the session (absolute)"),
        "entrypoint": Field((str, list), doc="the image's ENTRYPOINT, when the image cannot be inspected locally ('' = none)"),
        "workdir": Field((str,), doc="the image's WORKDIR, when the image cannot be inspected locally"),
        "engine": Field((str,), default="docker", doc="container engine used to read ENTRYPOINT/WORKDIR from a local copy of the image"),
        "resources": Field((dict,), default={}, doc="session resources (-r KEY=VALUE), e.g. {cpu: 4, mem: 16g, cuda.device: 1}"),
        "resource_opts": Field((dict,), default={}, doc="--resource-opts KEY=VALUE, e.g. {shmem: 1g}"),
        "env_args": Field((dict,), default={}, env=True, doc="environment of the task (-e K=V), on top of docker.env_args"),
        "group": Field((str,), doc="project (group) of the sessions"),
        "scaling_group": Field((str,), doc="resource group (scaling group)"),
        "create_args": Field((list,), default=[], doc="more `session create` options"),
        "max_wait": Field((int, float, str), doc="seconds to wait for one session (queue + run); default 7 days"),
        "log_interval": Field((int, float, str), default=10.0, doc="seconds between log fetches while a session runs (0: only at the end)"),
        "session_prefix": Field((str,), default="cuberun", doc="prefix of the session names"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._image_config: tuple[list[str] | None, str | None] | None = None
        self._configured = False

    # -- configuration -------------------------------------------------------------------------
    @property
    def client(self) -> list[str]:
        value = self.config.get("client") or "backend.ai"
        argv = split_words(value, "a backendai setting") if isinstance(value, str) else [str(v) for v in value]
        return argv or ["backend.ai"]

    @property
    def image(self) -> str:
        value = self.config.get("image")
        if isinstance(value, str) and value.strip():
            return value.strip()
        docker = self.cube.raw_section("docker")
        if docker is not None:
            cube_image = self.cube.section("docker").get("image")
            if isinstance(cube_image, str) and cube_image.strip():
                from cuberun.backendai_export import derive_image_name

                return derive_image_name(cube_image.strip())
        raise UsageError(
            "backendai: no kernel image: set backendai.image (the image registered with the manager)",
            "build one with: cuberun export backendai --build, push it, then -Prunner.image=REGISTRY/NAME:TAG",
        )

    @property
    def vfolder(self) -> str:
        value = self.config.get("vfolder")
        return str(value) if value else default_vfolder(self.cube.name)

    @property
    def mount_point(self) -> str:
        value = str(self.config.get("mount_point") or DEFAULT_MOUNT)
        if not value.startswith("/"):
            raise UsageError(f"backendai.mount_point '{value}' is not absolute", "write e.g. /mlcube_ws")
        return posixpath.normpath(value)

    def endpoint(self) -> str | None:
        value = self.config.get("endpoint")
        return str(value) if value else (os.environ.get("BACKEND_ENDPOINT") or None)

    def public_env(self) -> dict[str, str]:
        """Client settings that may be shown (never the keys)."""
        env: dict[str, str] = {}
        if self.config.get("endpoint"):
            env["BACKEND_ENDPOINT"] = str(self.config["endpoint"])
        if self.config.get("endpoint_type"):
            env["BACKEND_ENDPOINT_TYPE"] = str(self.config["endpoint_type"])
        return env

    def client_env(self) -> dict[str, str]:
        env = {**os.environ, **self.public_env()}
        for key, standard in (("access_key_env", "BACKEND_ACCESS_KEY"), ("secret_key_env", "BACKEND_SECRET_KEY")):
            source = str(self.config.get(key) or standard)
            if source != standard and os.environ.get(source):
                env[standard] = os.environ[source]
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def unavailable_reason(self) -> str | None:
        from cuberun.process import which

        exe = self.client[0]
        if which(exe) is None:
            return f"the Backend.AI client is not installed (no '{exe}' on the PATH). Hint: {INSTALL_HINT}"
        if not self.endpoint():
            return f"no Backend.AI endpoint is configured. Hint: {ENDPOINT_HINT}"
        if str(self.config.get("endpoint_type") or os.environ.get("BACKEND_ENDPOINT_TYPE") or "api") == "api":
            for key, standard in (("access_key_env", "BACKEND_ACCESS_KEY"), ("secret_key_env", "BACKEND_SECRET_KEY")):
                source = str(self.config.get(key) or standard)
                if not os.environ.get(source):
                    return f"{source} is not set (the Backend.AI keypair). Hint: export {source}=..., or use endpoint_type: session"
        return None

    # -- the image: what the agent will not do for us ---------------------------------------------
    def image_command(self) -> tuple[list[str] | None, str | None]:
        """(ENTRYPOINT, WORKDIR) of the image: the config first, else a local copy of the kernel
        image or of the cube's docker image (`docker image inspect`; nothing is pulled)."""
        if self._image_config is not None:
            return self._image_config
        entry_cfg = self.config.get("entrypoint")
        workdir_cfg = self.config.get("workdir")
        entry: list[str] | None = None
        if entry_cfg is not None:
            entry = split_words(entry_cfg, "backendai.entrypoint") if isinstance(entry_cfg, str) else [str(t) for t in entry_cfg]
        workdir = str(workdir_cfg) if workdir_cfg else None
        if entry is None or workdir_cfg is None:
            from cuberun.backendai_export import inspect_image

            candidates = [self.image]
            docker = self.cube.raw_section("docker")
            if docker is not None:
                cube_image = self.cube.section("docker").get("image")
                if isinstance(cube_image, str) and cube_image not in candidates:
                    candidates.append(cube_image)
            engine = split_words(str(self.config.get("engine") or "docker"), "backendai.engine")
            from cuberun.process import which

            if engine and which(engine[0]) is not None:
                for candidate in candidates:
                    facts = inspect_image(engine, candidate)
                    if facts.present:
                        if entry is None:
                            entry = facts.entrypoint or []
                        if workdir_cfg is None:
                            workdir = facts.workdir
                        break
        self._image_config = (entry, workdir)
        return self._image_config

    def task_command(self, task: ResolvedTask, args: Sequence[str]) -> list[str]:
        if task.entrypoint:
            return [*task.entrypoint, *task.task_args(args)]
        entry, _ = self.image_command()
        if entry is None:
            raise UsageError(
                f"backendai: the ENTRYPOINT of {self.image} is unknown (the agent ignores it, so cuberun must pass it)",
                "pull or build the image locally (docker image inspect must find it), or set -Prunner.entrypoint='python3 /app/main.py'",
            )
        return [*entry, *task.task_args(args)]

    # -- plans (pure once the image is known) -------------------------------------------------------
    def new_session_name(self, task: ResolvedTask) -> str:
        """A session name for one run of `task`: the prefix, the task and a random part."""
        return session_name(str(self.config.get("session_prefix") or "cuberun"), task.name, os.urandom(4).hex())

    def plan(self, task: ResolvedTask) -> TaskPlan:
        """The task's steps under a session name chosen once for this run."""
        name = self.new_session_name(task)
        return TaskPlan(task, tuple(self._steps(self.session_plan(task, name=name))), {"session": name})

    def resources(self) -> list[tuple[str, str]]:
        from cuberun.gpus import effective_gpus

        res: dict[str, str] = {}
        memory = self.options.memory
        if memory:
            res["mem"] = str(memory)
        else:
            from cuberun.backendai_export import memory_label

            mem = memory_label(self.cube.platform.get("host_memory_gb"))
            if mem:
                res["mem"] = mem
        gpus = effective_gpus(self.options.gpus, self.cube.accelerator_count)
        if gpus.all:
            raise UsageError("backendai: --gpus=all cannot be requested from Backend.AI", "give a count, e.g. --gpus=2")
        if gpus.devices:
            raise UsageError("backendai: Backend.AI assigns GPUs itself; devices cannot be chosen", f"give a count: --gpus={len(gpus.devices)}")
        if gpus.count:
            res["cuda.device"] = str(gpus.count)
        for key, value in (self.config.get("resources") or {}).items():
            if value is None or value == "":
                res.pop(str(key), None)
            else:
                res[str(key)] = str(value)
        order = {"cpu": 0, "mem": 1, "cuda.device": 2, "cuda.shares": 3}
        return sorted(res.items(), key=lambda kv: (order.get(kv[0], 9), kv[0]))

    def environment(self) -> list[tuple[str, str]]:
        env: dict[str, str] = {}
        docker = self.cube.raw_section("docker")
        if docker is not None and isinstance(docker.get("env_args"), dict):
            for key, value in self.cube.section("docker").get("env_args", {}).items():
                env[str(key)] = "" if value is None else str(value)
        for key, value in (self.config.get("env_args") or {}).items():
            env[str(key)] = "" if value is None else str(value)
        env.update(self.options.extra_env)
        return list(env.items())

    def _ignored_options(self) -> list[str]:
        ignored = []
        for flag, value in (("--security", self.options.security), ("--cpu", self.options.cpus)):
            if value:
                ignored.append(flag)
        return ignored

    def session_plan(self, task: ResolvedTask, produced: Sequence[str] = (), after: str | None = None, name: str | None = None) -> SessionPlan:
        """The session for one task (named `name`, default: a new name). `produced`:
        workspace-relative outputs of the tasks before it in the same chain (already in the
        vfolder, so not uploaded); `after`: the session it depends on."""
        mount = self.mount_point
        name = name or self.new_session_name(task)
        inputs: list[str] = []
        outputs: list[str] = []
        output_dirs: list[str] = []
        args: list[str] = []
        for p in task.params:
            rel = workspace_relative(p.host_path, task.workspace)
            if rel is None:
                raise UsageError(
                    f"backendai: task '{task.name}', {p.io} '{p.name}': {p.host_path} is outside the workspace {task.workspace}",
                    "only the workspace travels to the vfolder: put it under the workspace, or choose another --workspace",
                )
            inside = mount if rel == "." else posixpath.join(mount, rel)
            args.append(f"--{p.name}={inside}")
            if p.io == "output":
                if rel not in outputs:
                    outputs.append(rel)
                folder = rel if p.type == "directory" else posixpath.dirname(rel)
                if folder and folder != "." and folder not in output_dirs:
                    output_dirs.append(folder)
            else:
                pending = any(rel == o or rel.startswith(o.rstrip("/") + "/") or o == "." for o in produced)
                if not pending and p.host_path.exists() and rel not in inputs:
                    inputs.append(rel)
        command = self.task_command(task, args)
        _, workdir = self.image_command()
        in_tar = f".cuberun-{name}-in.tar" if inputs else None
        out_tar = f".cuberun-{name}-out.tar" if outputs else None
        startup = startup_command(command, mount=mount, workdir=workdir, in_tar=in_tar, out_tar=out_tar, outputs=outputs, output_dirs=output_dirs)
        real, shown = self._create_argv(name, startup, after, backendai_flags(self.policy(task)))
        return SessionPlan(task, name, command, startup, inputs, outputs, in_tar, out_tar, shown, real)

    def policy(self, task: ResolvedTask) -> Policy:
        return backendai_policy(self, task)

    def _create_argv(self, name: str, startup: str, after: str | None, policy_flags: Sequence[str] = ()) -> tuple[list[str], list[str]]:
        head = [*self.client, "session", "create", self.image, "--type", "batch", "--enqueue-only", "-t", name, "-c", startup,
                "-m", f"{self.vfolder}:{self.mount_point}"]
        for key, value in self.resources():
            head += ["-r", f"{key}={value}"]
        for key, value in (self.config.get("resource_opts") or {}).items():
            head += ["--resource-opts", f"{key}={value}"]
        real, shown = list(head), list(head)
        for key, value in self.environment():
            real += ["-e", f"{key}={value}"]
            shown += ["-e", f"{key}=<redacted>" if SECRET_NAME.search(key) else f"{key}={value}"]
        tail: list[str] = list(policy_flags)
        if after:
            tail += ["--depends", after]
        if self.config.get("group"):
            tail += ["-g", str(self.config["group"])]
        if self.config.get("scaling_group"):
            tail += ["--scaling-group", str(self.config["scaling_group"])]
        tail += [str(a) for a in self.config.get("create_args") or []]
        return real + tail, shown + tail

    def _staging(self, task: ResolvedTask) -> Path:
        return Path(task.workspace) / ".cuberun" / "backendai"

    def _steps(self, plan: SessionPlan) -> list[Step]:
        stage = str(self._staging(plan.task))
        public = self.public_env()
        steps: list[Step] = []
        if plan.in_tar:
            steps.append(Step(("tar", "-cf", posixpath.join(stage, plan.in_tar), "-C", str(plan.task.workspace), "--", *plan.inputs), "pack"))
            steps.append(Step((*self.client, "vfolder", "upload", self.vfolder, plan.in_tar, "-b", stage), "upload", env=public))
        steps.append(Step(tuple(plan.create_argv), "submit", env=public))
        steps.append(Step((*self.client, "session", "watch", plan.name, "--output", "json", "--max-wait", str(int(self._max_wait()))), "wait", env=public))
        if plan.out_tar:
            steps.append(Step((*self.client, "vfolder", "download", self.vfolder, plan.out_tar, "-b", stage), "download", env=public))
        return steps

    def run_steps(self, task: ResolvedTask) -> list[Step]:
        return list(self.plan(task).steps)

    def configure_steps(self) -> list[Step]:
        steps = [Step((*self.client, "vfolder", "info", self.vfolder), "check-vfolder", env=self.public_env())]
        if self.config.get("create_vfolder", True):
            host = self.config.get("vfolder_host")
            steps.append(Step((*self.client, "vfolder", "create", self.vfolder, *([str(host)] if host else [])), "create-vfolder (if missing)",
                              env=self.public_env()))
        return steps

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """What the result depends on: the task's command in the session, the image, where the
        workspace is mounted, resources and environment (secret values redacted). Not the session
        name, the transfer archives or the dependencies, which change from run to run."""
        plan = self.session_plan(task, name="-")
        _, workdir = self.image_command()
        from cuberun.secretid import secret_digest

        env = [f"{k}={secret_digest(v)}" if SECRET_NAME.search(k) else f"{k}={v}" for k, v in self.environment()]
        return {"runner": self.name, "command": [plan.command], "image": self.image, "vfolder": self.vfolder, "mount_point": self.mount_point,
                "workdir": workdir, "resources": [f"{k}={v}" for k, v in self.resources()], "env": env}

    def inspect(self) -> dict[str, Any]:
        entry, workdir = self.image_command()
        return {"runner": self.name, "platform": self.platform, "image": self.image, "vfolder": self.vfolder, "mount_point": self.mount_point,
                "endpoint": self.endpoint(), "client": shlex.join(self.client), "entrypoint": entry, "workdir": workdir}

    # -- talking to the client -------------------------------------------------------------------
    def _call(self, *args: str, timeout: float = CLIENT_TIMEOUT, shield: bool = False, input: str | None = None) -> Captured:
        from cuberun.process import capture

        argv = [*self.client, *args]
        if not shield:
            return capture(argv, env=self.client_env(), timeout=timeout, input=input)
        with _shielded():
            return capture(argv, env=self.client_env(), timeout=timeout, input=input)

    def _fail(self, what: str, res: Captured, hint: str | None = None) -> CuberunError:
        if res.missing:
            return RunnerUnavailable(f"the Backend.AI client is not installed (no '{self.client[0]}')", INSTALL_HINT)
        text = res.stdout + "\n" + res.stderr
        if "object has no attribute '_val'" in text:  # backend.ai-client 23.9 with yarl >= 1.10: every signed request fails
            hint = "backend.ai-client 23.9 needs yarl<1.10 in its environment: pip install 'yarl<1.10'"
        return BackendError(f"backend.ai {what} failed (exit {res.returncode}): {_last_line(text) or 'no output'}",
                            hint or f"check the endpoint ({self.endpoint()}) and the keypair; the command was: backend.ai {what}")

    def configure(self) -> None:
        """Make sure the vfolder exists (created when missing and create_vfolder is on)."""
        if self._configured:
            return
        res = self._call("vfolder", "info", self.vfolder)
        if res.missing:
            raise RunnerUnavailable(f"the Backend.AI client is not installed (no '{self.client[0]}')", INSTALL_HINT)
        if res.returncode != 0:
            if not self.config.get("create_vfolder", True):
                raise self._fail(f"vfolder info {self.vfolder}", res, "create the vfolder, or set create_vfolder: true")
            host = self.config.get("vfolder_host")
            created = self._call("vfolder", "create", self.vfolder, *([str(host)] if host else []), shield=True)
            if created.returncode != 0:
                raise self._fail(f"vfolder create {self.vfolder}", created, "check the storage host (backend.ai vfolder list-hosts) and your quota")
            say(f"created vfolder {self.vfolder} for the workspace")
        self._configured = True

    def _seconds(self, key: str, default: float) -> float:
        value = self.config.get(key)
        if value is None or value == "":
            return default
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"backendai.{key} '{value}' is not a number of seconds", f"write e.g. {key}: {int(default)}") from None
        if number < 0:
            raise UsageError(f"backendai.{key} {value} is negative", f"write e.g. {key}: {int(default)}")
        return number

    def _max_wait(self) -> float:
        return self._seconds("max_wait", DEFAULT_MAX_WAIT) or DEFAULT_MAX_WAIT

    # -- the batch hooks (the loop is BatchRunner.run_batch) --------------------------------------
    def plan_batch(self, planned: Sequence[TaskPlan]) -> list[SessionPlan]:
        for flag in self._ignored_options():
            say(f"warning: {flag} does not apply to Backend.AI sessions (set backendai.resources instead); ignored")
        for task in (p.task for p in planned):
            if any(r.name == "network" and r.source == "runner" for r in self.policy(task).relaxations):
                say(f"warning: task '{task.name}': Backend.AI cannot run a session without a network (its API has no such option): "
                    "the session keeps the cluster's network (recorded in the run record's policy)")
                break
        if not self._configured:
            self.configure()
        plans: list[SessionPlan] = []
        produced: list[str] = []
        for item in planned:  # every config problem surfaces before anything is uploaded or created
            plan = self.session_plan(item.task, produced, plans[-1].name if plans else None, item.value("session"))
            produced += plan.outputs
            plans.append(plan)
        return plans

    def stage(self, plan: SessionPlan) -> None:
        self._upload(plan)

    def submit(self, plan: SessionPlan, after: SessionPlan | None) -> SessionPlan:
        self._create(plan, after.session_id or after.name if after is not None else None)
        return plan

    def follow(self, submission: SessionPlan, later: Sequence[SessionPlan], log_path: str, cancel: Any) -> Outcome:
        return self._follow(submission, log_path, cancel)

    def cancel(self, submissions: Sequence[SessionPlan], current: SessionPlan | None, outcome: Outcome | None) -> None:
        self._destroy([p for p in submissions if not p.finished])

    def interrupted(self, submitted: Sequence[SessionPlan], cancel: Any) -> Outcome:
        from cuberun.process import Outcome

        self._destroy([p for p in submitted if not p.finished])
        sig = cancel.received or signal.SIGINT
        return Outcome(128 + sig, 0.0, interrupted=True, received=sig, reason="interrupted before the sessions ran")

    def _upload(self, plan: SessionPlan) -> None:
        if not plan.in_tar:
            return
        stage = self._staging(plan.task)
        stage.mkdir(parents=True, exist_ok=True)
        archive = stage / plan.in_tar
        try:
            with tarfile.open(archive, "w") as tar:
                for rel in plan.inputs:
                    tar.add(str(Path(plan.task.workspace) / rel), arcname=rel, recursive=True)
            size = archive.stat().st_size
            say(f"uploading {len(plan.inputs)} input(s) of task '{plan.task.name}' ({size} bytes) to vfolder {self.vfolder}")
            res = self._call("vfolder", "upload", self.vfolder, plan.in_tar, "-b", str(stage), timeout=TRANSFER_TIMEOUT)
            if res.returncode != 0:
                raise self._fail(f"vfolder upload {self.vfolder} {plan.in_tar}", res)
        finally:
            try:
                archive.unlink()
            except OSError:
                pass

    def _create(self, plan: SessionPlan, after: str | None) -> None:
        if after:
            real, shown = self._create_argv(plan.name, plan.startup, after)
            plan.real_create_argv, plan.create_argv = real, shown
        res = self._call(*plan.real_create_argv[len(self.client) :], shield=True)
        text = _strip(res.stdout + "\n" + res.stderr)
        if res.returncode != 0 or "has an error during scheduling" in text:
            raise self._fail(f"session create {self.image} (task '{plan.task.name}')", res,
                             f"check that the image {self.image} is registered (backend.ai admin image list), the resources and the vfolder")
        match = _UUID.search(text)
        plan.session_id = match.group(0) if match else None
        plan.details = {"session": plan.name, "session_id": plan.session_id, "image": self.image, "vfolder": self.vfolder,
                        "endpoint": self.endpoint()}
        wait = f", after {after}" if after else ""
        say(f"created batch session {plan.name}{f' ({plan.session_id})' if plan.session_id else ''} for task '{plan.task.name}'{wait}")

    def _waiting(self, plan: SessionPlan) -> Any:
        """The progress display of the session's wait before its task runs (queued, preparing, pulling)."""
        from cuberun.progress import Waiting

        return Waiting(f"Backend.AI session {plan.name} (task '{plan.task.name}') waits to start", WAITING_STATES)

    def _follow(self, plan: SessionPlan, log_path: str, cancel: Any) -> Outcome:
        from cuberun import progress
        from cuberun.process import Outcome, stream

        start = time.monotonic()
        max_wait = self._max_wait()
        buffer = io.BytesIO()
        stop = threading.Event()
        with open(log_path, "ab") as log:
            sinks: list[IO[bytes] | None] = [getattr(sys.stdout, "buffer", None), log]
            # by ID: Backend.AI 26.x answers `session logs NAME` with 404 once the session has ended,
            # so the final fetch (which carries the task's last lines) must use the session ID
            logs = _LogFollower(self, plan.session_id or plan.name, sinks, self._seconds("log_interval", 10.0))
            poller = threading.Thread(target=logs.loop, args=(stop,), daemon=True)
            poller.start()
            waiting = self._waiting(plan)

            def event(line: str) -> None:  # the session's events as they come: the wait is shown until it starts
                found = watch_state(line)
                if found is not None:
                    waiting.state(*found)

            try:
                watch = [*self.client, "session", "watch", plan.name, "--output", "json", "--max-wait", str(int(max_wait))]
                outcome = stream(watch, env=self.client_env(), log=buffer, echo=progress.line_sink(event),
                                 on_cancel=lambda: self._destroy([plan], quiet=True))
            finally:
                waiting.close()
                stop.set()
                poller.join(timeout=CLIENT_TIMEOUT + 5)
            if outcome.interrupted:
                self._destroy([plan])
                return Outcome(outcome.exit_code, time.monotonic() - start, interrupted=True, received=outcome.received,
                               reason="interrupted; the session was terminated", details=plan.details)
            events, no_match = parse_watch_output(buffer.getvalue().decode("utf-8", "replace"))
            verdict = watch_verdict(events, outcome.exit_code, no_match)
            if verdict.kind == "timeout":
                self._destroy([plan])
                logs.fetch_once()
                return Outcome(EXIT_STOPPED_WAITING, time.monotonic() - start, reason=f"session {plan.name} gave no result within {int(max_wait)} s; "
                               "it was terminated", details=plan.details)
            if verdict.kind in ("ended", "unknown"):
                confirmed = self._confirm(plan, cancel)
                if confirmed is None:
                    logs.fetch_once()
                    if cancel.requested:
                        self._destroy([plan])
                        sig = cancel.received or signal.SIGINT
                        return Outcome(128 + sig, time.monotonic() - start, interrupted=True, received=sig, details=plan.details)
                    return Outcome(EXIT_BACKEND, time.monotonic() - start, details=plan.details,
                                   reason=f"the outcome of session {plan.name} could not be established ({verdict.reason})")
                verdict = confirmed
            plan.finished = True
            logs.fetch_once()
        self._download(plan, verdict.kind == "success")
        code = verdict.exit_code if verdict.exit_code is not None else (0 if verdict.kind == "success" else 1)
        return Outcome(code, time.monotonic() - start, reason=None if code == 0 else f"failed: {verdict.reason} (session {plan.name})",
                       details=plan.details)

    def _confirm(self, plan: SessionPlan, cancel: Any) -> Verdict | None:
        """Poll `session info` until the session has ended (bounded by INFO_GRACE); a manager that
        refuses every call for MANAGER_GRACE is gone: ManagerLost names the session left behind."""
        if not plan.session_id:
            return None
        deadline = time.monotonic() + INFO_GRACE
        interval = 0.5
        lost_since: float | None = None
        waiting = self._waiting(plan)  # a session `session watch` missed may still wait to start
        try:
            while time.monotonic() < deadline and not cancel.requested:
                res = self._call("--output", "json", "session", "info", plan.session_id)
                if res.returncode != 0 and _UNREACHABLE.search(res.stdout + res.stderr):
                    lost_since = lost_since or time.monotonic()
                    if time.monotonic() - lost_since >= MANAGER_GRACE:
                        raise ManagerLost(
                            f"lost contact with the Backend.AI manager at {self.endpoint() or 'BACKEND_ENDPOINT'} while session {plan.name} "
                            f"({plan.session_id}, task '{plan.task.name}') ran: it refused every call for {int(MANAGER_GRACE)} s",
                            f"the session may still run on its agent: backend.ai session rm {plan.session_id} once the manager is back",
                        )
                else:
                    lost_since = None
                if res.returncode == 0:
                    try:
                        data = json.loads(res.stdout)
                        items = data.get("items") or []
                    except (ValueError, AttributeError):
                        items = []
                    if items and isinstance(items[0], dict):
                        waiting.state(session_status(items[0]), str(items[0].get("status_info") or ""))
                        verdict = info_verdict(items[0])
                        if verdict is not None:
                            return verdict
                time.sleep(interval)
                interval = min(interval * 2, 10.0)
            return None
        finally:
            waiting.close()

    def _download(self, plan: SessionPlan, succeeded: bool) -> None:
        if not plan.out_tar:
            return
        stage = self._staging(plan.task)
        stage.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="download-", dir=str(stage)) as tmp:
            res = self._call("vfolder", "download", self.vfolder, plan.out_tar, "-b", tmp, timeout=TRANSFER_TIMEOUT)
            archive = Path(tmp) / plan.out_tar
            if res.returncode != 0 or not archive.is_file():
                if succeeded:
                    say(f"warning: no outputs came back from session {plan.name} ({_last_line(res.stdout + res.stderr) or 'no archive'}); "
                        "does the image have tar?")
                return
            written = safe_extract(archive, Path(plan.task.workspace), plan.outputs)
            say(f"downloaded {len(written)} output file(s) of task '{plan.task.name}' from vfolder {self.vfolder}")
        self._call("vfolder", "rm", self.vfolder, plan.out_tar, input="y\n")  # the client asks for confirmation

    def _destroy(self, plans: Sequence[SessionPlan], quiet: bool = False) -> None:
        names = [p.name for p in plans if not p.finished]
        if not names:
            return
        res = self._call("session", "rm", *names, shield=True)
        for p in plans:
            p.finished = True
        if not quiet:
            if res.returncode == 0:
                say(f"terminated session(s) {', '.join(names)}")
            else:
                text = res.stdout + res.stderr
                why = f"the manager at {self.endpoint() or 'BACKEND_ENDPOINT'} does not answer" if _UNREACHABLE.search(text) else _last_line(text)
                say(f"warning: could not terminate session(s) {', '.join(names)}: {why}; check with: backend.ai ps")


class ManagerLost(BackendError):
    """The manager stopped answering while a session ran: the session could not be removed."""


class _LogFollower:
    """Copies new container log text of a session (`session logs NAME`) to our sinks."""

    def __init__(self, runner: BackendAIRunner, name: str, sinks: Sequence[IO[bytes] | None], interval: float) -> None:
        self.runner = runner
        self.name = name
        self.sinks = sinks
        self.interval = interval
        self.seen = ""
        self.lock = threading.Lock()

    def fetch_once(self) -> None:
        res = self.runner._call("session", "logs", self.name)
        if res.returncode != 0:
            return
        text = res.stdout
        with self.lock:
            if text.startswith(self.seen):
                new = text[len(self.seen) :]
            else:  # the log was cut or rotated: show it again from the start
                new = text
            self.seen = text
        if new:
            data = new.encode("utf-8", "replace")
            for sink in self.sinks:
                if sink is None:
                    continue
                try:
                    sink.write(data)
                    sink.flush()
                except (BrokenPipeError, ValueError):
                    pass

    def loop(self, stop: threading.Event) -> None:
        if self.interval <= 0:
            return
        while not stop.wait(self.interval):
            self.fetch_once()
