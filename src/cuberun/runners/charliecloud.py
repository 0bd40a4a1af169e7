"""The charliecloud runner: a task in a Charliecloud directory image, run with `ch-run`.

Unprivileged (user namespaces; no daemon, no setuid), so it fits HPC login and compute nodes.

Image: either a directory image the user already has (`image_dir:`, e.g. from `ch-image build`
or `ch-convert`), used as is, or the cube's Docker image (`image:`, default `docker.image`)
converted into a directory image under `images_dir` (default `$CUBERUN_CACHE_DIR` or
`~/.cache/cuberun`, then `charliecloud/`). Conversion makes the image present in the Docker
engine first (through the docker runner: pull, or build with `docker.build_strategy`), then
`docker create` + `docker export -o TAR` + `docker rm`, and extracts the tar with Python's
tarfile, refusing absolute and `..` members and any member or hard link that would land outside
the image (device files are skipped: ch-run binds the host's /dev). The image config
(Entrypoint, Cmd, WorkingDir, Env) from `docker image inspect` is stored in `image.json` next to
the `rootfs/` directory, with the image ID: configure converts again only when the ID changed,
and runs without any Docker engine once converted (an HPC node without Docker). With
`converter: ch-convert`, Charliecloud's `ch-convert -i docker -o dir` does the conversion
(Debian's charliecloud-builders package; it pulls in buildah and docker.io, so the built-in
export is the default).

Run: `ch-run --unset-env=* --env-no-expand --set-env=K=V... -t --cd=WORKDIR -b HOST:/mlcube_ioN
... IMAGE -- <ENTRYPOINT> [task] --p=/mlcube_ioN/...` (a task entrypoint replaces ENTRYPOINT
and CMD, and the task name is dropped, as with Docker). The task's environment is the image's
Env, then PATH (if the image sets none), HOME=/tmp, USER, the host's proxy variables,
`env_vars`, CUDA_VISIBLE_DEVICES; the host environment is not passed (`clean_env: false`
passes it). `/tmp` is private to the task (`private_tmp`), the image is read-only unless
`write: true`, and the task runs as the invoking user (an image's USER is not applied), so
outputs are owned by that user.
ch-run needs `$USER`: it is set for ch-run when the environment lacks it. ch-run execs the task
(no supervisor process), so Ctrl-C reaches the task's process group directly.

Limits (Charliecloud 0.31): bind mounts are always read-write (`ch-run -b` has no read-only
mode), so inputs are NOT read-only under this runner; a bind target must exist in the image,
so the `/mlcube_ioN` mount points are created in the image directory (a user `image_dir` must
be writable once, or already contain them); host paths containing ':' cannot be bound; there
is no network isolation (the task shares the host network); GPUs need the NVIDIA libraries
injected into the image beforehand (`ch-fromhost --nvidia`); only CUDA_VISIBLE_DEVICES is set.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import BackendError, BusyError, Issue, RunnerUnavailable, SpecError, TaskFailed, UsageError
from cuberun.records import log_tail
from cuberun.runners.argv import program_name
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.container import BindSyntax, ContainerRunner, EnvSyntax, pass_env, proxy_env
from cuberun.runners.rootfs import rmtree, safe_extract
from cuberun.schema import Field
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:

    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.progress import Activity
    from cuberun.resolve import ResolvedTask
    from cuberun.runners.docker import DockerRunner

METADATA = "image.json"
ROOTFS = "rootfs"
FORMAT = 1  # bump to force a re-conversion when the stored layout changes
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CH_BIND = BindSyntax("-b", mount_flag=None, ro_suffix="")  # ch-run binds read-write only; no way to bind a path with ':'
# `--set-env=K=V`; a secret's value is read by ch-run from its stdin (`--set-env=/dev/stdin`), never from argv
CH_ENV = EnvSyntax("--set-env", joined=True)
SECRET_ENV_FILE = "/dev/stdin"
MAX_SECRET_INPUT = 60000  # below a pipe's buffer: written before ch-run starts
PROBE_TIMEOUT = 60.0
EXPORT_TIMEOUT = 3600.0
LOCK_TIMEOUT = 3600.0  # waiting for another conversion of the same image
CH_ERROR = re.compile(r"^ch-run\[\d+\]: (?:error: )?(.*?)(?: \([\w.]+:\d+(?: \d+)?\))?\s*$")
CH_FAILURE_CODES = (1, 31)  # ch-run's own failures: 1 (0.31), 31 (later versions)
CONVERTERS = ("export", "ch-convert")


# -- the image's run configuration -----------------------------------------------------------------
@dataclass
class ImageConfig:
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    origin: str = ""

    @classmethod
    def from_docker(cls, config: dict[str, Any], origin: str) -> ImageConfig:
        env: dict[str, str] = {}
        for item in config.get("Env") or []:
            key, _, value = str(item).partition("=")
            if key:
                env[key] = value
        return cls(
            [str(t) for t in config.get("Entrypoint") or []],
            [str(t) for t in config.get("Cmd") or []],
            str(config.get("WorkingDir") or "/"),
            env,
            origin,
        )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")[:60] or "image"


def _user_name() -> str:
    name = os.environ.get("USER") or os.environ.get("LOGNAME")
    if name:
        return name
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())


class CharliecloudRunner(ContainerRunner):
    name = "charliecloud"
    section = "charliecloud"
    executable_key = "ch_run"
    default_executable = "ch-run"
    bind_syntax = CH_BIND
    identity_labels: ClassVar[Mapping[str, str]] = {"image_id": "image digest"}
    image_keys: ClassVar[tuple[str, str | None] | None] = ("image", "image_id")
    schema: ClassVar[dict[str, Field]] = {
        "image": Field((str,), doc="the Docker image to convert (default: docker.image)"),
        "image_dir": Field((str,), doc="an existing directory image to run (no conversion)"),
        "images_dir": Field((str,), doc="where converted images are kept (default: the cuberun cache, charliecloud/)"),
        "docker": Field((str, list), doc="the engine used for conversion (default: docker.docker, else docker)"),
        "converter": Field((str,), default="export", choices=CONVERTERS, doc="export (docker export + tarfile) or ch-convert"),
        "ch_run": Field((str, list), default="ch-run", doc="the ch-run executable"),
        "entrypoint": Field((str, list), doc="the image ENTRYPOINT, when the image has no metadata (an image_dir)"),
        "workdir": Field((str,), doc="working directory inside the image (default: the image's WorkingDir)"),
        "env_vars": Field((dict,), default={}, env=True, doc="environment variables of the task"),
        "run_args": Field((str, list), default="", doc="more ch-run arguments"),
        "clean_env": Field((bool,), default=True, doc="start from an empty environment (--unset-env=*) plus the image's Env"),
        "private_tmp": Field((bool,), default=True, doc="a private /tmp for the task (-t)"),
        "write": Field((bool,), default=False, doc="mount the image read-write (-w)"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._image_config: ImageConfig | None = None
        self._docker: DockerRunner | None = None
        self._token = os.urandom(4).hex()
        self._container = f"cuberun-chconv-{self._token}"

    # -- configuration ---------------------------------------------------------------------------
    @property
    def ch_run(self) -> list[str]:
        return self.executable

    @property
    def engine(self) -> list[str]:
        value = self.config.get("docker") or self.docker_section().get("docker") or "docker"
        return as_tokens(value) or ["docker"]

    @property
    def engine_name(self) -> str:
        return program_name(self.engine, "docker")

    @property
    def user_image(self) -> Path | None:
        value = self.config.get("image_dir")
        return self.cube_path(value.strip()) if isinstance(value, str) and value.strip() else None

    @property
    def image_ref(self) -> str:
        value = self.config.get("image") or self.docker_section().get("image")
        if not isinstance(value, str) or not value.strip():
            raw = self.cube.raw_section("charliecloud")
            path: tuple[str, ...] = ("charliecloud",) if raw is not None else (("docker",) if self.cube.raw_section("docker") is not None else ())
            issue = self.cube.doc.issue(path, "no image for charliecloud: set charliecloud.image_dir, charliecloud.image or docker.image")
            raise SpecError([Issue(issue.message, issue.file, issue.line, issue.column, None,
                                   "point image_dir at a directory image (ch-image, ch-convert), or name a Docker image to convert")])
        return value.strip()

    @property
    def store(self) -> Path:
        """The directory that holds one converted image: rootfs/ and image.json."""
        value = self.config.get("images_dir")
        if isinstance(value, str) and value.strip():
            base = self.cube_path(value.strip())
        else:
            from cuberun.paths import cache_dir

            base = cache_dir() / "charliecloud"
        import hashlib

        ref = self.image_ref
        return base / f"{_slug(ref)}-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"

    @property
    def rootfs(self) -> Path:
        user = self.user_image
        return user if user is not None else self.store / ROOTFS

    @property
    def converter(self) -> str:
        return str(self.config.get("converter") or "export")

    def stored_metadata(self) -> dict[str, Any] | None:
        if self.user_image is not None:
            return None
        try:
            data = json.loads((self.store / METADATA).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("format") != FORMAT or not (self.store / ROOTFS).is_dir():
            return None
        return data

    # -- the image's configuration ------------------------------------------------------------------
    def image_config(self) -> ImageConfig:
        """Entrypoint, Cmd, WorkingDir and Env of the image, from (first found): image.json of a
        converted image; `ch/metadata.json` of a ch-image directory; the engine's image config
        (before conversion, for --dry-run); the cube's Dockerfile. `entrypoint`, `workdir` and
        `env_vars` in the config override them."""
        if self._image_config is None:
            self._image_config = self._find_image_config()
        ic = self._image_config
        out = ImageConfig(list(ic.entrypoint), list(ic.cmd), ic.workdir, dict(ic.env), ic.origin)
        if self.config.get("entrypoint"):
            out.entrypoint, out.cmd = as_tokens(self.config["entrypoint"]), []
        if isinstance(self.config.get("workdir"), str) and self.config["workdir"].strip():
            out.workdir = self.config["workdir"].strip()
        return out

    def _find_image_config(self) -> ImageConfig:
        meta = self.stored_metadata()
        if meta is not None and isinstance(meta.get("config"), dict):
            return ImageConfig.from_docker(meta["config"], str(self.store / METADATA))
        user = self.user_image
        if user is not None:
            ch_meta = user / "ch" / "metadata.json"
            try:
                data = json.loads(ch_meta.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = None
            found = self._from_dockerfile()
            if isinstance(data, dict):
                env = {str(k): str(v) for k, v in (data.get("env") or {}).items()} if isinstance(data.get("env"), dict) else {}
                found.env = {**found.env, **env}
                if isinstance(data.get("cwd"), str) and data["cwd"]:
                    found.workdir = data["cwd"]
                found.origin = f"{ch_meta} + {found.origin}" if found.origin else str(ch_meta)
            return found
        live = self._inspect_engine(quiet=True)
        if live is not None:
            return ImageConfig.from_docker(live.get("Config") or {}, f"{self.engine_name} image inspect {self.image_ref}")
        return self._from_dockerfile()

    def _from_dockerfile(self) -> ImageConfig:
        from cuberun import dockerfile

        docker = self.docker_section()
        context = Path(os.path.normpath(self.cube.root / str(docker.get("build_context") or ".")))
        recipe = context / str(docker.get("build_file") or "Dockerfile")
        if not recipe.is_file():
            return ImageConfig()
        df = dockerfile.parse(recipe, context)
        entry = list(df.entrypoint or [])
        if entry and df.entrypoint_shell_form:
            entry = ["/bin/sh", "-c", shlex.join(entry)]
        return ImageConfig(entry, list(df.cmd or []) if not entry else [], df.workdir or "/", {}, str(recipe))

    def command(self, task: ResolvedTask) -> list[str]:
        """What runs inside the image, before the task arguments (Docker's rules: a task
        entrypoint replaces ENTRYPOINT and CMD; otherwise ENTRYPOINT, and the arguments replace CMD)."""
        entry = task.entrypoint
        if entry:
            return entry
        ic = self.image_config()
        if ic.entrypoint:
            return ic.entrypoint
        return []  # the task name itself is the command, as `docker run IMAGE task ...` would do

    # -- steps (pure, apart from the cached image config) ------------------------------------------------
    def task_env(self) -> dict[str, str]:
        from cuberun.gpus import effective_gpus

        ic = self.image_config()
        env = dict(ic.env)
        clean = bool(self.config.get("clean_env", True))
        if clean:
            env.setdefault("PATH", DEFAULT_PATH)
        env.setdefault("HOME", "/tmp")
        env["USER"] = _user_name()
        if clean:
            env.update(proxy_env(env))
        for key, value in (self.config.get("env_vars") or {}).items():
            env[str(key)] = "" if value is None else str(value)
        env.update(self.options.extra_env)
        if self.options.gpus is not None or self.cube.accelerator_count > 0:
            visible = effective_gpus(self.options.gpus, self.cube.accelerator_count).cuda_visible_devices()
            if visible is not None and "CUDA_VISIBLE_DEVICES" not in (self.config.get("env_vars") or {}):
                env["CUDA_VISIBLE_DEVICES"] = visible
        return env

    def run_argv(self, task: ResolvedTask) -> tuple[list[str], dict[str, str]]:
        """The ch-run command, and the secret variables ch-run reads from its stdin."""
        from cuberun.runners.container_policy import charliecloud_prefix

        cfg = self.config
        argv = [*charliecloud_prefix(self.policy(task)), *self.ch_run]
        if cfg.get("clean_env", True):
            argv.append("--unset-env=*")
        argv.append("--env-no-expand")
        more, secrets = pass_env(self.task_env().items(), CH_ENV)
        argv += more
        if secrets:
            argv.append(f"--set-env={SECRET_ENV_FILE}")
        if cfg.get("private_tmp", True):
            argv.append("--private-tmp")
        if cfg.get("write", False):
            argv.append("--write")
        argv.append(f"--cd={self.image_config().workdir or '/'}")
        layout = task.layout()
        for m in layout.mounts:
            if not CH_BIND.can_bind(m.host):
                raise UsageError(f"task '{task.name}': ch-run cannot bind {m.host} (the path contains ':')",
                                 "move the data to a path without ':' or override the parameter")
        argv += self.bind_args(layout)
        argv += as_tokens(cfg.get("run_args"))
        argv += [str(self.rootfs), "--", *self.command(task), *task.task_args(layout.args)]
        return argv, secrets

    def conversion_steps(self) -> list[Step]:
        """The commands of a conversion. The export is then extracted in-process into
        `.rootfs.new-<token>`, which replaces `rootfs` when complete."""
        image = self.image_ref
        store = self.store
        if self.converter == "ch-convert":
            kind = "podman" if self.engine_name == "podman" else "docker"
            return [Step(("ch-convert", "-i", kind, "-o", "dir", image, str(store / f".{ROOTFS}.new-{self._token}")), "convert")]
        return [
            Step((*self.engine, "create", f"--name={self._container}", image, "true"), "convert"),
            Step((*self.engine, "export", "-o", str(store / f".export-{self._token}.tar"), self._container), "convert"),
            Step((*self.engine, "rm", "-f", self._container), "convert"),
        ]

    def configure_steps(self) -> list[Step]:
        if self.user_image is not None:
            return []
        live = self._inspect_engine(quiet=True)
        meta = self.stored_metadata()
        if live is not None and meta is not None and meta.get("id") == live.get("Id"):
            return []
        if live is None and meta is not None and self._engine_problem() is not None:
            return []  # no engine here: the converted image is used as is
        steps: list[Step] = []
        if live is None:
            steps += self.docker_runner().configure_steps()
        return steps + self.conversion_steps()

    # -- the Docker side ------------------------------------------------------------------------------
    def docker_runner(self) -> DockerRunner:
        """The docker runner for the cube's image: pull or build it like `--platform=docker`."""
        if self._docker is None:
            from cuberun.runners.docker import DockerRunner
            from cuberun.settings import effective_config

            overrides: dict[str, Any] = {"image": self.image_ref, "docker": list(self.engine)}
            config = effective_config(DockerRunner.schema, {"runner": "docker"}, self.docker_section(), overrides, "built-in")
            self._docker = DockerRunner(self.cube, config, self.platform, self.options)
        return self._docker

    def _engine_problem(self) -> str | None:
        from cuberun.process import which

        tok = next((t for t in self.engine if t != "sudo" and not t.startswith("-")), self.engine[0])
        if which(tok) is None:
            return f"{self.engine_name} is not installed (no '{tok}' on the PATH)"
        return None

    def _inspect_engine(self, quiet: bool = False) -> dict[str, Any] | None:
        """`docker image inspect IMAGE` (stdout only), or None when the image or engine is missing."""
        if self._engine_problem() is not None:
            return None
        from cuberun.process import capture

        try:
            image = self.image_ref
        except SpecError:
            if quiet:
                return None
            raise
        res = capture([*self.engine, "image", "inspect", image], timeout=PROBE_TIMEOUT)
        if res.returncode != 0:
            return None
        try:
            data = json.loads(res.stdout)
        except ValueError:
            return None
        entry = data[0] if isinstance(data, list) and data else data
        return entry if isinstance(entry, dict) else None

    # -- availability ---------------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        exe = self.missing_executable(self.ch_run[:1])
        if exe is not None:
            return (
                f"Charliecloud is not installed (no '{exe}' on the PATH). "
                "Hint: install it (Debian/Ubuntu: apt-get install charliecloud-runtime; HPC: module load charliecloud), "
                "or set -Prunner.ch_run=PATH"
            )
        return None

    # -- configure ------------------------------------------------------------------------------------
    def configure(self) -> None:
        """Make the directory image ready: check a user image_dir, or convert the Docker image
        when it is new or changed. Quiet when nothing changed."""
        from cuberun.runners import imagefile

        imagefile.refuse_encrypted(self)
        user = self.user_image
        if user is not None:
            if not user.is_dir():
                raise UsageError(f"charliecloud image_dir {user} is not a directory",
                                 "point image_dir at a directory image (ch-image build, ch-convert), or drop it to convert docker.image")
            self._configured = True
            return
        meta = self.stored_metadata()
        problem = self._engine_problem()
        if problem is None:
            docker = self.docker_runner()
            reason = docker.unavailable_reason()
            if reason is not None:
                if meta is None:
                    raise RunnerUnavailable(
                        f"cannot convert {self.image_ref} for Charliecloud: {reason.split('. Hint: ')[0]}. "
                        f"Hint: start {self.engine_name} (check DOCKER_HOST), or convert where it runs and share "
                        f"-P{self.section}.images_dir, or point -P{self.section}.image_dir at a directory image"
                    )
                print(f"cuberun: note: using the converted image {self.rootfs} ({str(meta.get('id'))[:19]}): {reason}", file=sys.stderr)
                self._configured = True
                return
            docker.configure()  # pull, or build per docker.build_strategy (quiet when present)
            live = self._inspect_engine()
            if live is None:
                raise BackendError(f"{self.engine_name} has no image {self.image_ref} after configure",
                                   f"check: {' '.join(self.engine)} image inspect {self.image_ref}")
            if meta is None or meta.get("id") != live.get("Id"):
                with self._store_lock():
                    meta = self.stored_metadata()  # another cuberun may have converted it meanwhile
                    if meta is None or meta.get("id") != live.get("Id"):
                        self._convert(live, "no converted image yet" if meta is None else "the Docker image changed")
        elif meta is None:
            raise RunnerUnavailable(
                f"cannot convert {self.image_ref} for Charliecloud: {problem}. "
                f"Hint: convert it where {self.engine_name} runs (cuberun configure --platform={self.platform}) and share "
                f"{self.store.parent} (-P{self.section}.images_dir=DIR), or point -P{self.section}.image_dir at a directory image"
            )
        # else: no engine on this machine (an HPC node): the converted image is used as is
        self._configured = True

    @contextmanager
    def _store_lock(self) -> Iterator[None]:
        """One conversion per image at a time (another cuberun may be converting it)."""
        import fcntl

        store = self.store
        store.mkdir(parents=True, exist_ok=True)
        with open(store / ".lock", "a+", encoding="utf-8") as fh:
            start = time.monotonic()
            told = False
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() - start > LOCK_TIMEOUT:
                        raise BusyError(f"another cuberun has been converting {self.image_ref} for {LOCK_TIMEOUT:.0f} s ({store})",
                                        "wait for it, or remove the stale process") from None
                    if not told:
                        print(f"cuberun: waiting for another cuberun converting {self.image_ref}", file=sys.stderr, flush=True)
                        told = True
                    time.sleep(0.5)
            yield

    def _convert(self, live: dict[str, Any], why: str) -> None:
        import io
        import tarfile

        from cuberun import progress
        from cuberun.process import capture, stream
        from cuberun.safeio import write_file

        store = self.store
        store.mkdir(parents=True, exist_ok=True)
        token = self._token
        new = store / f".{ROOTFS}.new-{token}"
        tar = store / f".export-{token}.tar"
        image = self.image_ref
        start = time.monotonic()
        print(f"cuberun: converting {image} into a Charliecloud directory image ({why}): {store / ROOTFS}", file=sys.stderr, flush=True)
        skipped: list[str] = []
        try:
            with progress.activity(f"converting {image} for Charliecloud", tick=_ExportSize(store)) as act:
                if self.converter == "ch-convert":
                    (step,) = self.conversion_steps()
                    act.phase("ch-convert")
                    tail = io.BytesIO()
                    echo = progress.shows_output()  # on a terminal the live line stands for its output (-v shows it)
                    outcome = stream(step.argv, log=tail, echo=act.sink(convert_line, echo=echo))
                    if outcome.interrupted:
                        raise TaskFailed(f"the conversion of {image} was interrupted", outcome.exit_code)
                    if outcome.exit_code != 0:
                        if not echo:  # show the end of what was hidden
                            sys.stderr.write(tail.getvalue()[-4096:].decode("utf-8", "replace"))
                        raise BackendError(f"'{shlex.join(step.argv)}' failed with exit code {outcome.exit_code}", "its output is above")
                else:
                    create, export, remove = self.conversion_steps()
                    try:
                        for step, phase in ((create, "creating a container"), (export, "exporting")):
                            act.phase(phase, unit="bytes" if step is export else "")
                            res = capture(step.argv, timeout=EXPORT_TIMEOUT)
                            if res.returncode != 0:
                                detail = (res.stderr.strip() or res.stdout.strip()).splitlines()
                                raise BackendError(
                                    f"converting {image} failed: '{shlex.join(step.argv)}' exited with {res.returncode}: {detail[-1] if detail else ''}",
                                    f"check that {self.engine_name} works and that {store} has space",
                                )
                    finally:
                        capture(remove.argv, timeout=PROBE_TIMEOUT)
                    try:
                        act.phase("extracting", total=tar.stat().st_size, unit="bytes")
                        skipped = safe_extract(tar, new, done=lambda n: act.update(done=n))
                    except (tarfile.TarError, OSError) as exc:
                        raise BackendError(f"cannot extract the export of {image}: {exc}", f"check the free space in {store}") from None
            meta = {
                "format": FORMAT,
                "image": image,
                "id": live.get("Id"),
                "repo_digests": live.get("RepoDigests") or [],
                "created": live.get("Created"),
                "converted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "converter": self.converter,
                "config": {k: (live.get("Config") or {}).get(k) for k in ("Entrypoint", "Cmd", "WorkingDir", "Env", "User")},
                "skipped": skipped[:50],
            }
            current = store / ROOTFS
            old = store / f".{ROOTFS}.old-{token}"
            if current.exists():
                current.rename(old)
            new.rename(current)
            write_file(store / METADATA, json.dumps(meta, indent=2) + "\n", what="image metadata")
            rmtree(old)
        finally:
            for leftover in (tar, new, store / f".{METADATA}.{token}"):
                try:
                    rmtree(leftover)
                except OSError:
                    pass
        self._image_config = None
        print(f"cuberun: converted {image} in {time.monotonic() - start:.1f} s", file=sys.stderr)

    # -- run ----------------------------------------------------------------------------------------------
    def ensure_mount_points(self, targets: Sequence[str]) -> None:
        """ch-run binds only onto existing directories: create /mlcube_ioN in the image."""
        rootfs = self.rootfs
        for target in targets:
            path = rootfs / target.lstrip("/")
            if path.is_dir():
                continue
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise BackendError(
                    f"cannot create the mount point {target} in the image {rootfs}: {exc.strerror}",
                    f"create it once with write access (mkdir {path}), or use a converted image",
                ) from None

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.container_policy import charliecloud_policy

        return charliecloud_policy(self, task)

    def check_network_isolation(self) -> None:
        """The network off needs a user and network namespace around ch-run: say so in one line
        when this host cannot make one (never run the task with the host's network instead)."""
        from cuberun.process import capture
        from cuberun.runners.container_policy import UNSHARE_NET

        res = capture([*UNSHARE_NET, sys.executable, "-c", ""], timeout=PROBE_TIMEOUT)  # a program that is there whatever the PATH
        if res.returncode != 0:
            raise BackendError(f"cannot run ch-run without the network: `{' '.join(UNSHARE_NET)}` failed: "
                               f"{_last_error(res.stderr) or f'exit {res.returncode}'}",
                               "ch-run 0.31 has no network isolation of its own; install util-linux >= 2.38 and allow unprivileged user "
                               "namespaces, or run with the host's network: --network=host (recorded)")

    def before_run(self, plan: TaskPlan) -> None:
        from cuberun.policy import OFF

        task = plan.task
        if self.policy(task).network == OFF:
            self.check_network_isolation()
        self.ensure_mount_points([m.target for m in task.layout().mounts])
        wanted_ro = [p.name for p in task.params if p.io == "input" and (self.options.mount or p.opts) == "ro"]
        if wanted_ro:
            print(f"cuberun: warning: task '{task.name}': ch-run binds read-write, so input(s) {', '.join(wanted_ro)} "
                  "are not read-only under Charliecloud", file=sys.stderr)

    def client_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = dict(os.environ)  # the secrets (`extra`) go through stdin: see client_stdin
        env.setdefault("USER", _user_name())  # ch-run refuses to start without $USER
        return env

    def client_stdin(self, extra: Mapping[str, str]) -> bytes | None:
        """The `--set-env` file of the secret variables: `NAME='VALUE'` lines (ch-run strips the
        outer quotes and, with --env-no-expand, expands nothing)."""
        if not extra:
            return None
        bad = [k for k, v in extra.items() if "\n" in v or "\0" in v]
        if bad:
            raise UsageError(f"the value of {bad[0]} holds a line break, which ch-run cannot be given", "pass it in a file instead")
        data = "".join(f"{k}='{v}'\n" for k, v in extra.items()).encode("utf-8", "surrogateescape")
        if len(data) > MAX_SECRET_INPUT:
            raise UsageError(f"the secret variables ({', '.join(extra)}) are larger than {MAX_SECRET_INPUT} bytes", "pass large values in a file")
        return data

    def failure(self, plan: TaskPlan, outcome: Outcome, log_path: str) -> Exception | None:
        task = plan.task
        if outcome.exit_code in CH_FAILURE_CODES and outcome.signal is None:
            line = _ch_error(log_tail(log_path))
            if line:
                if "can't execve" in line:
                    return BackendError(f"the container of task '{task.name}' could not run its command: {line}",
                                        "check the task's entrypoint and the image's ENTRYPOINT (--dry-run prints the command)", exit_code=127)
                return BackendError(f"ch-run could not start task '{task.name}': {line}",
                                    "check the image directory and the bind paths (--dry-run prints the command)")
        return None

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The ch-run command plus the image's identity: a converted image's Docker image ID, or,
        for an image_dir, its ch-image metadata (edit a directory image in place: use --force)."""
        argv, secrets = self.run_argv(task)
        fp: dict[str, Any] = {"runner": self.name, "command": [argv]}
        if secrets:
            fp["env"] = self.env_identity(secrets)
        user = self.user_image
        if user is None:
            meta = self.stored_metadata()
            fp["image"] = self.image_ref
            fp["image_id"] = meta.get("id") if meta else None
        else:
            import hashlib

            try:
                fp["image_metadata"] = hashlib.sha256((user / "ch" / "metadata.json").read_bytes()).hexdigest()
            except OSError:
                fp["image_metadata"] = None
        return fp

    # -- inspect --------------------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        info: dict[str, Any] = {"runner": self.name, "platform": self.platform, "rootfs": str(self.rootfs),
                                "exists": self.rootfs.is_dir()}
        if self.user_image is None:
            meta = self.stored_metadata()
            info["image"] = self.image_ref
            info["id"] = meta.get("id") if meta else None
            info["converted"] = meta.get("converted") if meta else None
            live = self._inspect_engine(quiet=True)
            info["engine_id"] = live.get("Id") if live else None
            info["up_to_date"] = (meta.get("id") == live.get("Id")) if (meta and live) else None
        ic = self.image_config()
        info["entrypoint"] = ic.entrypoint
        info["workdir"] = ic.workdir
        info["config_from"] = ic.origin
        return info


class _ExportSize:
    """The bytes `docker export -o` has written so far (the activity's tick): the files directly
    in the image's store folder but its metadata and lock (the docker CLI writes a temporary
    file there and renames it at the end; podman writes the tar itself)."""

    def __init__(self, store: Path) -> None:
        self.store = store

    def __call__(self, act: Activity) -> None:
        if act.stage != "exporting":
            return
        total = 0
        try:
            with os.scandir(self.store) as entries:
                for entry in entries:
                    if entry.name not in (METADATA, ".lock") and entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            return
        act.update(done=total)


def convert_line(line: str, act: Activity) -> None:
    """Progress from one line of ch-convert's output: the line itself, as what it does now."""
    act.update(note=line[:80])


def _ch_error(text: str) -> str | None:
    """ch-run's own error, when it is the last thing in the log (ch-run fails before the task runs)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if lines:
        m = CH_ERROR.match(lines[-1])
        if m:
            return m.group(1)
    return None




def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
