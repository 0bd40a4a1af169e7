"""The Backend.AI runner's config: its model (schema), the `backend.ai` client and its
environment (endpoint, keypair; never written anywhere), the kernel image and what the agent
will not read from it (ENTRYPOINT, WORKDIR), the workspace vfolder, one client call."""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.console import say
from cuberun.errors import BackendError, CuberunError, RunnerUnavailable, UsageError, split_words
from cuberun.process import shielded as _shielded
from cuberun.runners.backendai.session import SessionPlan, _last_line, default_vfolder
from cuberun.runners.batch import BatchRunner
from cuberun.schema import Field

if TYPE_CHECKING:
    from cuberun.process import Captured
    from cuberun.resolve import ResolvedTask

DEFAULT_MOUNT = "/mlcube_ws"
DEFAULT_MAX_WAIT = 7 * 24 * 3600.0
CLIENT_TIMEOUT = 120.0  # one create/info/logs/rm call
TRANSFER_TIMEOUT = 6 * 3600.0  # one upload or download
INFO_GRACE = 300.0  # after the watch: how long `session info` may take to show the end
LOG_GRACE = 60.0  # after the session ended: how long the manager may take to store its log
MANAGER_GRACE = 30.0  # after the watch: the manager unreachable this long (every call refused) means it is gone
EXIT_STOPPED_WAITING = 124
EXIT_BACKEND = 125
INSTALL_HINT = "pip install 'cuberun[backendai]' (or set the backendai platform's client to the backend.ai executable)"
ENDPOINT_HINT = "set BACKEND_ENDPOINT (and BACKEND_ACCESS_KEY, BACKEND_SECRET_KEY), or -Prunner.endpoint=URL"


class BackendAIConfig(BatchRunner[SessionPlan, SessionPlan]):
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
        from cuberun.runners.imagefile import refuse_image_file

        refuse_image_file(  # a container_config.yaml image file: agents run kernel images registered with the manager
            self, "Backend.AI agents run Docker kernel images registered with the manager",
            "the agents (they run kernel images registered with the manager)",
            "export the Docker image the SIF was built from as a kernel image (cuberun export backendai --build), push it to the "
            "manager's registry and pass -Prunner.image=REGISTRY/NAME:TAG, or run it with --platform=singularity",
            "load it (docker load -i ARCHIVE), export it as a kernel image (cuberun export backendai --build), push it to the "
            "manager's registry (rescanned), then pass -Prunner.image=REGISTRY/NAME:TAG")
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
