"""The docker runner's bottom layer: its configuration (image, engine, build context, binds, GPUs)
and what it asks the engine (the image probe, from the API socket or `image inspect`; availability)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

from cuberun.errors import BackendError, Issue, RunnerUnavailable, SpecError
from cuberun.runners import images
from cuberun.runners.container import BindSyntax, ContainerRunner, EnvSyntax, engine_problem, first_line
from cuberun.schema import Field
from cuberun.valueclass import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.codeid import CodeId
    from cuberun.gpus import GpuRequest
    from cuberun.process import Captured
    from cuberun.resolve import ResolvedTask

RUN_LABEL = "cuberun.run"
HASH_LABEL = "cuberun.context-hash"
STRATEGIES = ("pull", "auto", "always")
PROBE_TIMEOUT = 30.0
CANCEL_TIMEOUT = 10.0
NOT_FOUND = ("no such image", "image not known", "no such object", "not found")
DOCKER_BIND = BindSyntax("--volume")  # --mount when the path has a ':'; docker parses its fields as CSV
PODMAN_BIND = BindSyntax("--volume", csv=False)
DOCKER_ENV = EnvSyntax("-e", name_only=True)  # a secret: `-e NAME`, its value in the client's environment
SCHEMA: dict[str, Field] = {
    "image": Field((str,), doc="image reference (required)"),
    "docker": Field((str, list), default="docker", doc="the engine executable: docker, podman, 'sudo docker', nvidia-docker"),
    "env_args": Field((dict, str), default={}, env=True, doc="environment of the task: a mapping (-e K=V) or extra run arguments"),
    "gpu_args": Field((str, dict, list), default="", doc="extra run arguments when GPUs are requested"),
    "cpu_args": Field((str, dict, list), default="", doc="extra run arguments when no GPU is requested"),
    "build_args": Field((dict, str), default={}, doc="build arguments: a mapping (--build-arg K=V) or extra build arguments"),
    "build_context": Field((str,), default=".", doc="build context, relative to the cube root"),
    "build_file": Field((str,), default="Dockerfile", doc="recipe, relative to the build context"),
    "build_strategy": Field((str,), default="pull", choices=STRATEGIES, doc="pull | auto (rebuild when the context changed) | always"),
    "build_network": Field((str,), doc="network of RUN steps during builds (e.g. host)"),
    "--network": Field((str,), doc="--network=X for runs"),
    "--security-opt": Field((str,), doc="--security-opt=X for runs"),
    "--gpus": Field((str, int), doc="GPUs: all, N or device=a,b"),
    "--memory": Field((str, int), doc="--memory=X for runs"),
    "--cpuset-cpus": Field((str, int), doc="--cpuset-cpus=X for runs"),
    "--mount_opts": Field((str,), default="", choices=("", "ro", "rw"), doc="mount mode of every input"),
    "tar_file": Field((str,), doc="an image archive (docker save) loaded when the image is missing"),
    "run_as_user": Field((bool,), default=True, doc="run as the invoking user's uid:gid (-u) unless the args set a user"),
    "remove": Field((bool,), default=True, doc="remove the container when it exits (--rm)"),
    "network": Field((str,), doc="--network=X for runs (the CLI --network wins)"),
    "extra_run_args": Field((list, str), default=[], doc="more arguments for `docker run`"),
}


# -- helpers ---------------------------------------------------------------------------------
def _docker_context() -> str | None:
    """The client's current context from ~/.docker/config.json (None when unset or unreadable)."""
    try:
        with open(os.path.expanduser("~/.docker/config.json"), encoding="utf-8") as fh:
            value = json.load(fh).get("currentContext")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


@dataclass(frozen=True)
class ImageState:
    present: bool
    labels: dict[str, str]
    id: str | None = None
    repo_digests: tuple[str, ...] | None = None  # None: not asked (the CLI probe)


class DockerEngine(ContainerRunner):
    """The configuration and the engine probes: what the runner layer reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state: ImageState | None = None
        self._context_code: CodeId | None = None
        self._verified: dict[str, Any] = {}  # what images.verify found: the pinned digest, the lock entry

    # -- configuration ---------------------------------------------------------------------
    @property
    def is_podman(self) -> bool:
        return any(os.path.basename(tok) == "podman" for tok in self.executable)

    @property
    def engine(self) -> str:
        """The engine's name for messages: the first token that is not sudo or one of its options."""
        return self.program

    @property
    def image(self) -> str:
        value = self.config.get("image")
        if not isinstance(value, str) or not value.strip():
            raw = self.cube.raw_section("docker")
            path: tuple[str, ...] = ("docker",) if raw is not None else ()
            issue = self.cube.doc.issue(path, "docker.image is missing", "add it, or choose another --platform")
            raise SpecError([Issue("docker.image is missing", issue.file, issue.line, issue.column, None, issue.hint)])
        return value.strip()

    @property
    def strategy(self) -> str:
        value = self.config.get("build_strategy") or "pull"
        return str(value)

    @property
    def context(self) -> Path:
        return Path(os.path.normpath(self.cube.root / str(self.config.get("build_context") or ".")))

    @property
    def recipe(self) -> Path:
        return Path(os.path.normpath(self.context / str(self.config.get("build_file") or "Dockerfile")))

    def bind_args(self, layout: Any) -> list[str]:
        syntax = PODMAN_BIND if self.is_podman else DOCKER_BIND
        return [a for m in layout.mounts for a in syntax.args(m.host, m.target, m.readonly)]

    def gpu_request(self, spec: str | None = None) -> GpuRequest:
        return super().gpu_request(spec if spec is not None else self.option(self.options.gpus, "--gpus"))

    def task_gpus(self, task: ResolvedTask) -> GpuRequest:
        """The GPUs of `task`: --gpus / docker.--gpus, else a container_config.yaml task's own run_args.gpus."""
        own = task.task.run_args.gpus if task.task.run_args is not None else None
        cli = self.option(self.options.gpus, "--gpus")
        return self.gpu_request(cli if cli is not None else own)

    # -- talking to the engine ----------------------------------------------------------------
    def _capture(self, *args: str, timeout: float = PROBE_TIMEOUT) -> Captured:
        from cuberun.process import capture

        return capture([*self.executable, *args], timeout=timeout)

    def _daemon_problem(self, stderr: str) -> str | None:
        return engine_problem(stderr, self.engine, self.executable)

    def image_state(self, refresh: bool = False) -> ImageState:
        """Whether the image exists locally and its labels (one `image inspect`, cached)."""
        if self._state is not None and not refresh:
            return self._state
        image = self.image
        fast = self._api_image_state(image)
        if fast is not None:
            self._state = fast
            return fast
        res = self._capture("image", "inspect", "--format", "{{.Id}} {{json .Config.Labels}}", image)
        if res.missing:
            raise RunnerUnavailable(self._not_installed())
        if res.returncode == 0:
            first = res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""
            image_id, _, raw = first.partition(" ")
            try:
                labels = json.loads(raw) if raw else None
            except ValueError:
                labels = None
            labels = labels if isinstance(labels, dict) else {}
            state = ImageState(True, {str(k): str(v) for k, v in labels.items()}, image_id or None)
        else:
            problem = self._daemon_problem(res.stderr)
            if problem:
                raise RunnerUnavailable(problem)
            if not any(s in res.stderr.lower() for s in NOT_FOUND):
                raise BackendError(
                    f"'{shlex.join([*self.executable, 'image', 'inspect', image])}' failed (exit {res.returncode}): {first_line(res.stderr)}",
                    f"check that {self.engine} works: {' '.join(self.executable)} info",
                )
            state = ImageState(False, {})
        self._state = state
        return state

    def _api_image_state(self, image: str) -> ImageState | None:
        """The image lookup straight from the engine's API socket: the same answer as `docker image
        inspect` without starting the client (25-40 ms a run). Only for plain `docker` on a local
        unix socket; None (use the CLI, which also words every error) in any other case."""
        if self.executable != ["docker"] or os.environ.get("DOCKER_CONTEXT") or os.environ.get("DOCKER_CONFIG"):
            return None
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        if not host.startswith("unix://") or _docker_context() not in (None, "default"):
            return None
        import _socket  # the socket module's C core: socket.py's enum set-up costs more than this whole probe
        from urllib.parse import quote

        data = b""
        try:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            try:
                sock.settimeout(PROBE_TIMEOUT)
                sock.connect(host[len("unix://") :])
                sock.sendall(f"GET /images/{quote(image, safe='/:@')}/json HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
                while len(data) < (16 << 20):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            finally:
                sock.close()
        except OSError:
            return None
        head, _, body = data.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return None
        if status == 404:
            return ImageState(False, {})
        if status != 200:
            return None
        try:
            info = json.loads(body)
        except ValueError:
            return None
        labels = (info.get("Config") or {}).get("Labels") or {}
        digests = info.get("RepoDigests") or []
        return ImageState(True, {str(k): str(v) for k, v in labels.items()}, str(info.get("Id") or "") or None,
                          tuple(str(d) for d in digests) if isinstance(digests, list) else ())

    def _not_installed(self) -> str:
        return f"{self.engine} is not installed (no '{self.executable[0]}' on the PATH). Hint: install Docker or Podman, or use --platform=local"

    def unavailable_reason(self) -> str | None:
        tok = self.missing_executable()
        if tok is not None:
            return self._not_installed() if tok != "sudo" else "sudo is not installed. Hint: set docker: docker (without sudo)"
        try:
            self.image_state()
        except SpecError:
            return None  # docker.image is missing: reported by configure/run with its position
        except RunnerUnavailable as exc:
            return exc.lines()[0]
        return None

    # -- the image that runs ---------------------------------------------------------------
    def image_identity(self) -> dict[str, Any] | None:
        """The image that runs by id and registry digests (RepoDigests), for the run record: from
        the image probe when it came from the API socket, else one `image inspect`."""
        state = self.image_state()
        if not state.present or not state.id:
            return None
        image_id = state.id if state.id.startswith("sha256:") else f"sha256:{state.id}"
        digests = state.repo_digests
        if digests is None:
            res = self._capture("image", "inspect", "--format", "{{json .RepoDigests}}", self.image)
            try:
                found = json.loads(res.stdout) if res.returncode == 0 else []
            except ValueError:
                found = []
            digests = tuple(str(d) for d in found) if isinstance(found, list) else ()
            self._state = ImageState(state.present, state.labels, state.id, digests)
        return {"ref": self.image, "id": image_id, "digest": images.registry_digest(self.image, digests), "repo_digests": list(digests),
                **self._verified}
