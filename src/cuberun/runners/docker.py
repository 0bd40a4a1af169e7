"""The docker runner: a task in a Docker or Podman container.

Compatible with the reference's `docker:` keys and invocation contract (`/mlcube_ioN` mounts,
`[<task>] --p=/mlcube_ioN[/file]`, `--entrypoint=FIRST IMAGE REST... --p=...`), with its bugs
fixed: argv lists (no shell), `--rm` plus a unique name and label so that no container is left
behind (also on Ctrl-C and failures), the host user's uid:gid inside the container, inputs
read-only by default, one GPU model (`--gpus` + CUDA_VISIBLE_DEVICES), proxy variables passed
to builds and runs, and single-token entrypoints that keep their parameters.

`build_strategy: auto` labels each image it builds with a hash of the build inputs (the
context without what `.dockerignore` excludes, the recipe, the build args) and rebuilds when
the hash changes, so an unchanged cube costs one `docker image inspect`.

The same runner drives Podman (`docker: podman`): runs get `--pull=never`, because the image is
always made present first and short names must never be resolved against a registry.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import BackendError, CuberunError, Issue, RunnerUnavailable, SpecError, TaskFailed
from cuberun.ignorefiles import IgnoreRule, is_ignored, read_dockerignore  # noqa: F401 - re-exported for older imports
from cuberun.records import log_tail
from cuberun.runners import images
from cuberun.runners.argv import env_value
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.container import (  # noqa: F401 - PROXY_VARS re-exported for older imports
    DAEMON_DOWN,
    PROXY_VARS,
    BindSyntax,
    ContainerRunner,
    EnvSyntax,
    engine_problem,
    first_line,
    last_error_line,
    pass_env,
    proxy_env,
    stream_to_stderr,
    user_spec,
)
from cuberun.schema import Field
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.codeid import CodeId
    from cuberun.gpus import GpuRequest
    from cuberun.policy import Policy
    from cuberun.process import Captured, Outcome
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
ENGINE_ERROR = re.compile(r"^(docker: |Error: |Error response from daemon|Unable to find image|.*OCI runtime)", re.IGNORECASE)


def gpus_value(gpus: GpuRequest) -> str | None:
    """A GPU request as `docker run --gpus` takes it (a device list quoted: the engine splits at commas)."""
    if gpus.all:
        return "all"
    if gpus.devices:
        return '"device=' + ",".join(gpus.devices) + '"'
    if gpus.count:
        return str(gpus.count)
    return None


# -- the build context hash ----------------------------------------------------------------
def context_hash(context: Path, recipe: Path, build_args: Any = None, code: CodeId | None = None) -> str:
    """sha256 of everything a build reads: the context (minus .dockerignore; see codeid.py, files
    hashed with the stat fast path), the recipe and the build args. Proxy variables and the build
    network are left out: they do not change the image."""
    import hashlib

    from cuberun.codeid import identity
    from cuberun.fingerprint import NotRegular, file_sha256

    if code is None:
        code = identity([context], "docker", label="build context")
    digest = hashlib.sha256(b"cuberun-context-v2\n")
    digest.update(code.sha256.encode() + b"\n")
    try:
        name = recipe.relative_to(context).as_posix()
    except ValueError:
        name = recipe.name
    try:
        recipe_digest = file_sha256(str(recipe))
    except (OSError, NotRegular):
        recipe_digest = "-"
    digest.update(f"recipe\0{name}\0{recipe_digest}\n".encode("utf-8", "surrogateescape"))
    digest.update(b"args\0" + json.dumps(build_args, sort_keys=True, default=str).encode() + b"\n")
    return digest.hexdigest()


# -- helpers ---------------------------------------------------------------------------------
def _docker_context() -> str | None:
    """The client's current context from ~/.docker/config.json (None when unset or unreadable)."""
    try:
        with open(os.path.expanduser("~/.docker/config.json"), encoding="utf-8") as fh:
            value = json.load(fh).get("currentContext")
    except (OSError, ValueError, AttributeError):
        return None
    return str(value) if value else None


def _has_flag(tokens: Sequence[str], *names: str) -> bool:
    for tok in tokens:
        for name in names:
            if tok == name or tok.startswith(name + "="):
                return True
            if len(name) == 2 and tok.startswith(name) and not tok.startswith("--"):  # -u1000:1000
                return True
    return False


def _last_error_line(text: str) -> str:
    return last_error_line(text, lambda line: ENGINE_ERROR.match(line) is not None)


@dataclass(frozen=True)
class ImageState:
    present: bool
    labels: dict[str, str]
    id: str | None = None
    repo_digests: tuple[str, ...] | None = None  # None: not asked (the CLI probe)


class DockerRunner(ContainerRunner):
    name = "docker"
    section = "docker"
    executable_key = "docker"
    default_executable = "docker"
    bind_syntax = DOCKER_BIND
    identity_labels: ClassVar[Mapping[str, str]] = {"image_id": "image digest", "locked": "locked image digest (cuberun.lock)"}
    image_keys: ClassVar[tuple[str, str | None] | None] = ("image", "image_id")
    schema: ClassVar[dict[str, Field]] = {
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

    # -- steps (pure) ----------------------------------------------------------------------
    def build_argv(self, hash_value: str | None = None) -> list[str]:
        argv = [*self.executable, "build", "--force-rm"]  # no intermediate container survives a failed step
        network = self.config.get("build_network")
        if network:
            argv.append(f"--network={network}")
        build_args = self.config.get("build_args") or {}
        names: list[str] = []
        if isinstance(build_args, Mapping):
            for key, value in build_args.items():
                argv += ["--build-arg", f"{key}={env_value(value)}"]
                names.append(str(key))
        else:
            tokens = as_tokens(build_args)
            argv += tokens
            names = [t.split("=", 1)[0] for t in tokens]
        for key, value in proxy_env(names):
            argv += ["--build-arg", f"{key}={value}"]
        digest = hash_value or self.context_hash()
        argv += ["--label", f"{HASH_LABEL}={digest}", "-t", self.image, "-f", str(self.recipe), str(self.context)]
        return argv

    def context_code(self) -> CodeId:
        """The build context's code identity (computed once per runner: one invocation)."""
        if self._context_code is None:
            from cuberun.codeid import identity

            self._context_code = identity([self.context], "docker", label="build context")
        return self._context_code

    def context_hash(self) -> str:
        return context_hash(self.context, self.recipe, self.config.get("build_args") or {}, self.context_code())

    def _tar_file(self) -> Path | None:
        value = self.config.get("tar_file")
        if not value:
            return None
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else self.cube.root / path

    def _fetch_step(self) -> Step:
        tar = self._tar_file()
        if tar is not None and tar.is_file():
            return Step((*self.executable, "load", "--input", str(tar)), "load")
        return Step(tuple(images.pull_argv(self.executable, self.is_podman, self.image)), "pull")

    def configure_steps(self) -> list[Step]:
        from cuberun.runners import imagefile

        archive = imagefile.docker_steps(self)  # a container_config.yaml archive (URL, encrypted)
        if archive is not None:
            return archive
        if self.strategy != "pull" and self.recipe.is_file():
            return [Step(tuple(self.build_argv()), "build")]
        return images.lock_steps(self) or [self._fetch_step()]

    def plan(self, task: ResolvedTask) -> TaskPlan:
        """The run of `task` under a container name of its own (parallel sweep variants of one
        task get their own), chosen once, so the run record shows the container that really ran."""
        name = new_container_name(task.name)
        argv, env = self.run_argv(task, name)
        return TaskPlan(task, (Step(tuple(argv), "run", None, env),), {"container": name})

    def run_argv(self, task: ResolvedTask, name: str | None = None) -> tuple[list[str], dict[str, str]]:
        """`docker run ...` for a task (in container `name`, default: a new one), and the
        environment variables the engine must pass on."""
        cfg = self.config
        gpus = self.task_gpus(task)
        user_args = as_tokens(cfg.get("gpu_args") if gpus.wanted else cfg.get("cpu_args"))
        extra = as_tokens(cfg.get("extra_run_args"))
        argv = [*self.executable, "run"]
        if cfg.get("remove", True):
            argv.append("--rm")
        argv += [f"--name={name or new_container_name(task.name)}", f"--label={RUN_LABEL}=1"]
        if self.is_podman:
            argv.append("--pull=never")
        mapped = bool(cfg.get("run_as_user", True)) and not _has_flag(user_args + extra, "-u", "--user")
        if mapped:
            argv += ["-u", user_spec()]
        from cuberun.runners.container_policy import docker_flags

        argv += docker_flags(self.policy(task), user_args + extra)  # the run policy: no network, no capabilities, ...
        argv += user_args
        for flag, value in (
            ("--security-opt", self.option(self.options.security, "--security-opt")),
            ("--memory", self.option(self.options.memory, "--memory")),
            ("--cpuset-cpus", self.option(self.options.cpus, "--cpuset-cpus")),
        ):
            if value is not None and not _has_flag(user_args, flag):
                argv.append(f"{flag}={value}")
        if gpus.wanted and not _has_flag(user_args + extra, "--gpus"):
            argv.append(f"--gpus={gpus_value(gpus)}")
        if task.task.run_args is not None and task.task.run_args.shm_size:
            argv.append(f"--shm-size={task.task.run_args.shm_size}")
        entry = task.entrypoint
        if entry:
            argv.append(f"--entrypoint={entry[0]}")

        # environment: env_args, RunOptions.extra_env, proxies, GPUs, HOME for a mapped user
        env: dict[str, str] = {}
        names: list[str] = []

        def add_env(*items: tuple[str, str]) -> None:
            names.extend(k for k, _ in items)
            more, secret = pass_env(items, DOCKER_ENV, via_env=not self.uses_sudo)  # sudo drops our env
            argv.extend(more)
            env.update(secret)

        env_args = cfg.get("env_args") or {}
        if isinstance(env_args, Mapping):
            add_env(*((str(k), env_value(v)) for k, v in env_args.items()))
        else:
            tokens = as_tokens(env_args)
            argv += tokens
            names += [t.split("=", 1)[0] for t in tokens if not t.startswith("-")]
        add_env(*task.environment.items())  # container_config.yaml run_args.environment
        add_env(*self.options.extra_env.items())
        add_env(*proxy_env(names))
        if gpus.devices and "CUDA_VISIBLE_DEVICES" not in names:
            # only the requested devices exist inside the container, renumbered from 0
            add_env(("CUDA_VISIBLE_DEVICES", ",".join(str(i) for i in range(len(gpus.devices)))))
        if mapped and os.getuid() != 0 and "HOME" not in names:
            add_env(("HOME", "/tmp"))  # an unknown uid gets HOME=/, which it cannot write
        argv += extra

        layout = self.layout(task)
        argv += self.bind_args(layout)
        argv.append(self.image)
        if entry:
            argv += entry[1:]
        argv += task.task_args(layout.args)
        return argv, env

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

    def lock_images(self, pull: bool = False) -> tuple[str, dict[str, dict[str, str]]] | None:
        return images.lock_image(self, pull)

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.container_policy import docker_policy

        return docker_policy(self, task)

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

    # -- configure -------------------------------------------------------------------------
    def configure(self) -> None:
        """Make the image present: build (auto: only when the context changed; always: every
        time) or load/pull it when missing (a locked one by its digest), then verify it against
        its pinned digest and the lock file (images.py). Quiet when there is nothing to do."""
        from cuberun.runners import imagefile

        if imagefile.prepare_docker(self):  # a container_config.yaml archive: downloaded, checked, decrypted, loaded
            self._configured = True
            return
        if images.prepare(self):
            self._state = None
        state = self.image_state()
        if self.strategy != "pull" and self.recipe.is_file():
            digest = self.context_hash()
            if self.strategy == "always":
                self._build(digest, "build_strategy is always")
            elif not state.present:
                self._build(digest, "the image is missing")
            elif HASH_LABEL in state.labels and state.labels[HASH_LABEL] != digest:
                self._build(digest, "the build context changed")
            # else: up to date, or an image cuberun did not build (pulled or tagged by hand): used as is
        elif not state.present:
            self._fetch()
        self._verified = images.verify(self)
        self._configured = True

    def _build(self, digest: str, why: str) -> None:
        argv = self.build_argv(digest)
        outcome, text = stream_to_stderr(argv, f"building {self.image} ({why})")
        if outcome.interrupted:
            raise TaskFailed(f"the build of {self.image} was interrupted", outcome.exit_code)
        if outcome.exit_code != 0:
            problem = self._daemon_problem(text)
            if problem:
                raise RunnerUnavailable(problem)
            hint = f"fix {self.recipe} (the build output is above)"
            if not self.config.get("build_network"):
                hint += f"; RUN steps that need the network may need -P{self.section}.build_network=host"
            raise BackendError(f"building image {self.image} failed with exit code {outcome.exit_code}: {_last_error_line(text)}", hint)
        self._state = None  # probed again (for the new image id) only if someone asks

    def _fetch(self) -> None:
        step = self._fetch_step()
        what = "loading" if step.purpose == "load" else "pulling"
        outcome, text = stream_to_stderr(step.argv, f"{what} {self.image} (not present locally)")
        if outcome.interrupted:
            raise TaskFailed(f"{what} {self.image} was interrupted", outcome.exit_code)
        if outcome.exit_code != 0:
            problem = self._daemon_problem(text)
            if problem:
                raise RunnerUnavailable(problem)
            recipe = self.recipe
            build_hint = (
                f"build it from {recipe} with -P{self.section}.build_strategy=auto, or tag a local image: {self.engine} tag SOURCE {self.image}"
                if recipe.is_file()
                else f"tag a local image with exactly this name: {self.engine} tag SOURCE {self.image}"
            )
            raise BackendError(f"cannot {what[:-3]} image {self.image} (exit {outcome.exit_code}): {_last_error_line(text)}", build_hint)
        self._state = None

    # -- run ---------------------------------------------------------------------------------
    def _remove_container(self, name: str, *, kill: bool) -> None:
        if kill:
            self._capture("kill", name, timeout=CANCEL_TIMEOUT)
        if self.config.get("remove", True):
            self._capture("rm", "-f", name, timeout=CANCEL_TIMEOUT)

    def _cleanup_after(self, name: str, interrupted: bool) -> None:
        """Make sure the container is gone after an interrupted or broken run. When the client
        was stopped, a create request may still have been in flight: look once more shortly after."""
        if not self.config.get("remove", True):
            self._capture("kill", name, timeout=CANCEL_TIMEOUT)
            return
        for attempt in range(2 if interrupted else 1):
            if interrupted:  # SIGKILL first: podman's `rm -f` waits 10 s for SIGTERM, as long as our timeout
                self._capture("kill", name, timeout=CANCEL_TIMEOUT)
            res = self._capture("rm", "-f", name, timeout=CANCEL_TIMEOUT)
            if res.returncode == 0 and res.stdout.strip():
                return
            if attempt == 0 and interrupted:
                time.sleep(0.5)

    def on_cancel(self, plan: TaskPlan) -> Callable[[], None]:
        name = plan.value("container")
        return lambda: self._remove_container(name, kill=True)

    def watchdog_cleanup(self, plan: TaskPlan) -> list[list[str]]:
        """The container goes with a killed cuberun (removed, or killed when `remove` is off)."""
        name = plan.value("container")
        return [[*self.executable, "rm", "-f", name] if self.config.get("remove", True) else [*self.executable, "kill", name]]

    def after_run(self, plan: TaskPlan, outcome: Outcome) -> None:
        if outcome.details and outcome.details.get("timed_out"):
            self._cleanup_after(plan.value("container"), True)  # stopped by --timeout: the container must be gone
            return
        if outcome.interrupted or outcome.signal is not None or outcome.exit_code in (125, 126, 127):
            self._cleanup_after(plan.value("container"), outcome.interrupted or outcome.signal is not None)

    def failure(self, plan: TaskPlan, outcome: Outcome, log_path: str) -> Exception | None:
        task = plan.task
        lost = self._engine_lost(task, outcome)
        if lost is not None:
            return lost
        if outcome.exit_code in (125, 126, 127):
            text = log_tail(log_path)
            line = _last_error_line(text)
            if outcome.exit_code == 125 and ENGINE_ERROR.match(line):
                problem = self._daemon_problem(text)
                if problem:
                    return RunnerUnavailable(problem)
                return BackendError(f"{self.engine} could not start the container for task '{task.name}': {line}", "check the image and the run arguments (--dry-run prints them)")
            if "oci runtime" in line.lower() or "executable file not found" in line.lower():
                return BackendError(
                    f"the container of task '{task.name}' could not run its command (exit {outcome.exit_code}): {line}",
                    "check the task's entrypoint and the image's ENTRYPOINT",
                    exit_code=outcome.exit_code,
                )
        if outcome.exit_code == 137 and outcome.signal is None:
            memory = self.option(self.options.memory, "--memory")
            limit = f" (now {memory})" if memory else ""
            return TaskFailed(
                f"task '{task.name}' was killed (SIGKILL, exit 137): possibly out of memory",
                137,
                f"raise --memory{limit}, or lower the task's memory use; the log is {log_path}",
            )
        return None

    def _engine_lost(self, task: ResolvedTask, outcome: Outcome) -> BackendError | None:
        """A failed run caused by the engine, not the task: the `run` client itself was killed by a
        signal (the task's own death reaches us as its exit code), or the daemon went away while
        the task ran (a stopping daemon kills its containers: 137 or 143; a vanished one: 125)."""
        import signal

        if outcome.signal is not None:
            try:
                name = signal.Signals(outcome.signal).name
            except ValueError:
                name = f"signal {outcome.signal}"
            return BackendError(
                f"'{self.engine} run' was killed by {name} while task '{task.name}' was running; its container was removed",
                "the task did not fail by itself: find what killed the engine client, then run again",
            )
        if outcome.exit_code not in (125, 137, 143):
            return None
        probe = self._capture("version", timeout=PROBE_TIMEOUT)
        if probe.returncode == 0 or not any(s in probe.stderr.lower() for s in DAEMON_DOWN):
            return None
        host = os.environ.get("DOCKER_HOST")
        where = f" at {host}" if host else ""
        return BackendError(
            f"the {self.engine} daemon{where} went away while task '{task.name}' was running (its container exited with {outcome.exit_code})",
            f"start the daemon again (check its log), then run again; {self.engine} ps -a --filter label={RUN_LABEL}=1 lists what is left",
        )

    def identity(self, plan: TaskPlan) -> dict[str, Any]:
        """The run command without its random container name (env values and run arguments are
        in it; secret values, passed through the engine's environment, as keyed digests), the
        image id (a rebuilt or re-pulled image makes the task out of date) and, when cuberun
        built the image from the cube's build context, that context's code identity (to say
        which file changed)."""
        step = plan.steps[-1]
        env = step.env
        name = f"--name={plan.value('container')}"
        command = [f"--name={_name_prefix(plan.task.name)}*" if a == name else a for a in step.argv]
        state = self.image_state()
        fp: dict[str, Any] = {"runner": self.name, "command": [command], "image": self.image, "image_id": state.id}
        locked = images.locked_value(self)
        if locked:
            fp["locked"] = locked
        if env:
            fp["env"] = self.env_identity(env, digest_all=True)
        if self.strategy != "pull" and self.recipe.is_file() and state.labels.get(HASH_LABEL) == self.context_hash():
            fp["build_context"] = self.context_code().to_json()
        return fp

    # -- inspect -------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        reason = self.unavailable_reason()
        if reason:
            raise RunnerUnavailable(reason)
        image = self.image
        res = self._capture("image", "inspect", image)
        if res.returncode != 0:
            raise CuberunError(f"image {image} is not present locally", f"run: cuberun configure --platform={self.platform}")
        try:
            data = json.loads(res.stdout)
            entry = data[0] if isinstance(data, list) else data
        except (ValueError, IndexError, KeyError):
            raise BackendError(f"cannot parse the output of {self.engine} image inspect {image}") from None
        config = entry.get("Config") or {}
        labels = config.get("Labels") or entry.get("Labels") or {}
        digests = entry.get("RepoDigests") or []
        current = None
        if self.recipe.is_file():
            current = self.context_hash()
        recorded = labels.get(HASH_LABEL)
        return {
            "runner": self.name,
            "platform": self.platform,
            "engine": " ".join(self.executable),
            "image": image,
            "id": entry.get("Id"),
            "digest": digests[0].split("@", 1)[1] if digests and "@" in digests[0] else None,
            "repo_digests": digests,
            "created": entry.get("Created"),
            "build_strategy": self.strategy,
            "context_hash": recorded,
            "current_context_hash": current,
            "up_to_date": (recorded == current) if (recorded and current) else None,
            "labels": labels,
        }


def new_container_name(task: str) -> str:
    """A container name for one run of `task`: its prefix and a random part."""
    return f"{_name_prefix(task)}{os.urandom(4).hex()}"


def _name_prefix(task: str) -> str:
    """`cuberun-<task>-`, with the task name reduced to what a container name allows."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("_.-") or "task"
    return f"cuberun-{safe[:40]}-"





def build_recipe(executable: Sequence[str], recipe_text: str, tag: str, context: Path | None = None) -> None:
    """Build image `tag` from a Dockerfile given as text, with the engine `executable`, the way the
    runner builds a cube image (--force-rm, output streamed, the engine's error line on failure).
    The context is `context`, or an empty folder (a FROM + LABEL recipe needs no files)."""
    import io
    import sys
    import tempfile

    from cuberun.process import stream

    with tempfile.TemporaryDirectory(prefix="cuberun-build-") as tmp:
        recipe = Path(tmp) / "Dockerfile"
        recipe.write_text(recipe_text, encoding="utf-8")
        ctx = context if context is not None else Path(tmp) / "context"
        ctx.mkdir(exist_ok=True)
        argv = [*executable, "build", "--force-rm", "-t", tag, "-f", str(recipe), str(ctx)]
        print(f"cuberun: building {tag}: {shlex.join(argv)}", file=sys.stderr, flush=True)
        tail = io.BytesIO()
        outcome = stream(argv, log=tail, echo=getattr(sys.stderr, "buffer", None))
    text = tail.getvalue()[-8192:].decode("utf-8", "replace")
    if outcome.interrupted:
        raise TaskFailed(f"the build of {tag} was interrupted", outcome.exit_code)
    if outcome.exit_code != 0:
        raise BackendError(f"building {tag} failed with exit code {outcome.exit_code}: {_last_error_line(text) or 'no output'}",
                           "the build output is above")
