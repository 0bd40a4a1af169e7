"""The singularity runner: a task in a Singularity / Apptainer SIF image.

Compatible with the reference's `singularity:` keys (`image`, `image_dir`, `build_args`,
`run_args`, `build_file`, the CLI-set `--network`, `--security`, `--nv`, `--vm-ram`,
`--vm-cpu`, `--mount_opts`) and its invocation contract: `run SIF <task> --p=/mlcube_ioN...`
without a task entrypoint, `exec SIF <entrypoint tokens> --p=...` with one (parameters kept,
also for a single-token entrypoint), `--bind HOST:/mlcube_ioN[:ro]` mounts.

Fixed, compared with the reference:
- argv lists, no shell; paths with spaces work, paths with ',' or ':' use `--mount`;
- the SIF keeps the name `singularity.image` also when it is built from the `docker:` section
  (the reference renames it to `alnum(docker.image).sif`); without `image` that name is the default;
- `image_dir` defaults to a per-cube cache directory (`$CUBERUN_CACHE_DIR` or
  `~/.cache/cuberun`, then `singularity/<name>-<hash of the cube root>`), not
  `${runtime.workspace}/.image`: another `--workspace` does not rebuild. Set
  `image_dir: ${runtime.workspace}/.image` for the reference's layout;
- configure skips only when the SIF is current: it exists and is newer than its recipe (or
  `docker-archive:` tar). A rebuild passes `--force`; a failed or interrupted build removes
  the partial SIF, so it is never mistaken for a current one;
- the docker fallback (no recipe, no SIF) prefers `docker-archive:<docker.tar_file>`, then
  `docker-daemon:<docker.image>` when the local Docker engine has the image (offline builds
  of locally built images), then `docker://<docker.image>`;
- `--nv` only when GPUs are requested (`--gpus=0` means none; `platform.accelerator_count`
  counts), `CUDA_VISIBLE_DEVICES` for counts and device lists (host indexes: singularity does
  not renumber devices);
- the version probe (`singularity --version`) runs only when a run needs `--env` (Singularity
  < 3.6 has no `--env`: `SINGULARITYENV_<NAME>` variables are used instead), and its output is
  parsed tolerantly (extra lines, `-ce`, distribution suffixes);
- for images from the `docker:` section, `--pwd` is the Dockerfile's WORKDIR, so relative
  entrypoints (`python 01_download.py`) work; `pwd:` overrides it.

Tested for real against Apptainer 1.4.5 (tests/integration/test_apptainer_real.py, through the
wrapper of scripts/backends/apptainer.sh, named by the `singularity` setting like any install);
the command lines are also pinned by golden tests.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from cuberun.errors import BackendError, CuberunError, Issue, RunnerUnavailable, SpecError, TaskFailed, UsageError
from cuberun.records import log_tail
from cuberun.runners.argv import env_value
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.base import Step, TaskPlan
from cuberun.runners.container import BindSyntax, ContainerRunner, EnvSyntax, last_error_line, pass_env, stream_to_stderr
from cuberun.schema import Field
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.gpus import GpuRequest
    from cuberun.policy import Policy
    from cuberun.process import Outcome
    from cuberun.resolve import ResolvedTask

# `--bind H:T[:ro]` like the reference; `--mount` when the path has ',' or ':' (which --bind splits on)
SINGULARITY_BIND = BindSyntax("--bind", splits_on=",:", src="src", dst="dst", ro="ro")

DEFAULT_RECIPE = "Singularity.recipe"
# build sources handed to `singularity build` as written (no local recipe file)
URI_PREFIXES = ("docker://", "docker-archive:", "docker-daemon:", "oci-archive:", "oci:", "library://", "oras://", "shub://", "localimage:")
PROBE_TIMEOUT = 20.0
FATAL = re.compile(r"^\s*FATAL:\s*(.*)$")
_VERSION = re.compile(r"\b(apptainer|singularity(?:-ce|-pro)?)\b[^\n\d]*?v?(\d+)\.(\d+)(?:\.(\d+))?", re.IGNORECASE)
_NUMBERS = re.compile(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?")


def alnum(text: str) -> str:
    """The reference's image-name mangling: keep ASCII letters and digits only."""
    return re.sub(r"[^A-Za-z0-9]", "", text)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.-")[:48] or "cube"


# -- versions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Version:
    flavour: str  # "apptainer", "singularity", "singularity-ce", ...
    numbers: tuple[int, int, int]
    text: str

    @property
    def is_apptainer(self) -> bool:
        return self.flavour == "apptainer"

    def supports_env_flag(self) -> bool:
        """`--env` exists in Apptainer and in Singularity >= 3.6."""
        return self.is_apptainer or self.numbers >= (3, 6, 0)

    def supports_mount_flag(self) -> bool:
        """`--mount` exists in Apptainer and in SingularityCE >= 3.9."""
        return self.is_apptainer or self.numbers >= (3, 9, 0)


def parse_version(text: str, flavour_hint: str = "singularity") -> Version | None:
    """Tolerant: `singularity version 3.8.7-1.el8`, `apptainer version 1.2.5`,
    `singularity-ce version 4.1.0-jammy`, `3.7.4`, warnings before or after. None if no number."""
    for line in text.splitlines():
        m = _VERSION.search(line)
        if m:
            nums = (int(m.group(2)), int(m.group(3)), int(m.group(4) or 0))
            return Version(m.group(1).lower(), nums, line.strip())
    for line in text.splitlines():
        if "warn" in line.lower() or "error" in line.lower():
            continue
        m = _NUMBERS.search(line)
        if m:
            nums = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
            return Version(flavour_hint, nums, line.strip())
    return None


# -- image sources -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    kind: str  # recipe | uri | docker | docker-daemon | docker-archive
    spec: str  # the last argument of `singularity build`
    origin: str  # where it came from, for messages
    stamp: Path | None = None  # a local file the SIF must be newer than
    from_docker_section: bool = False


def _with_tag(image: str) -> str:
    """`docker-daemon:` needs an explicit tag."""
    if "@" in image:
        return image
    last = image.rsplit("/", 1)[-1]
    return image if ":" in last else image + ":latest"


class SingularityRunner(ContainerRunner):
    name = "singularity"
    section = "singularity"
    executable_key = "singularity"
    default_executable = "singularity"
    bind_syntax = SINGULARITY_BIND
    schema: ClassVar[dict[str, Field]] = {
        "image": Field((str,), doc="SIF file name inside image_dir (or an absolute path); default: alnum(docker.image).sif"),
        "image_dir": Field((str,), doc="SIF directory; default: a per-cube cache dir (the reference: ${runtime.workspace}/.image)"),
        "singularity": Field((str, list), default="singularity", doc="the executable: singularity, apptainer, 'sudo singularity'"),
        "build_args": Field((str, list), default="--fakeroot", doc="arguments of `build`"),
        "run_args": Field((str, list), default="", doc="arguments of `run` and `exec`"),
        "build_file": Field((str,), default=DEFAULT_RECIPE, doc="a recipe relative to the cube root, docker://IMAGE, docker-archive:TAR, ..."),
        "tar_file": Field((str,), doc="a `docker save` archive to build from (also read from docker.tar_file)"),
        "pwd": Field((str,), doc="working directory inside the container (--pwd); default: the Dockerfile WORKDIR for docker images"),
        "env_args": Field((dict,), default={}, env=True, doc="environment variables of the task (--env K=V)"),
        "--network": Field((str,), doc="--network=X (set by --network)"),
        "--security": Field((str,), doc="--security=X (set by --security)"),
        "--nv": Field((str, int, bool), doc="GPUs (set by --gpus): all, N or device=a,b"),
        "--vm-ram": Field((str, int), doc="--vm-ram=X (set by --memory)"),
        "--vm-cpu": Field((str, int), doc="--vm-cpu=X (set by --cpu)"),
        "--mount_opts": Field((str,), default="", choices=("", "ro", "rw"), doc="mount mode of every input"),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._version: Version | None = None
        self._version_probed = False
        self._daemon_has: dict[str, bool] = {}

    # -- configuration -------------------------------------------------------------------------
    @property
    def image_name(self) -> str:
        value = self.config.get("image")
        if isinstance(value, str) and value.strip():
            return value.strip()
        docker_image = self.docker_section().get("image")
        if isinstance(docker_image, str) and docker_image.strip():
            return alnum(docker_image) + ".sif"
        return alnum(f"{self.cube.name}{self.cube.version or ''}") + ".sif"

    @property
    def image_dir(self) -> Path:
        value = self.config.get("image_dir")
        if isinstance(value, str) and value.strip():
            return self.cube_path(value.strip())
        import hashlib

        from cuberun.paths import cache_dir

        key = hashlib.sha256(str(self.cube.root).encode("utf-8", "surrogateescape")).hexdigest()[:10]
        return cache_dir() / "singularity" / f"{_slug(self.cube.name)}-{key}"

    @property
    def sif(self) -> Path:
        name = os.path.expanduser(self.image_name)
        return Path(name) if os.path.isabs(name) else self.image_dir / name

    def _docker_has_image(self, image: str) -> bool:
        """Whether the local Docker engine has `image` (for `docker-daemon:`); False when there
        is no usable docker (Podman's storage is not reachable through docker-daemon:)."""
        if image in self._daemon_has:
            return self._daemon_has[image]
        from cuberun.process import capture, which

        exe = as_tokens(self.docker_section().get("docker") or "docker") or ["docker"]
        found = False
        if not any(os.path.basename(t) == "podman" for t in exe) and which(exe[0]) is not None:
            res = capture([*exe, "image", "inspect", "--format", "{{.Id}}", image], timeout=PROBE_TIMEOUT)
            found = res.returncode == 0 and bool(res.stdout.strip())
        self._daemon_has[image] = found
        return found

    def source(self, probe: bool = True) -> Source:
        """What the SIF is built from: the build_file (recipe or URI), else the docker section.
        `probe=False` skips asking the Docker engine (then docker:// stands for docker-daemon:)."""
        build_file = str(self.config.get("build_file") or DEFAULT_RECIPE).strip()
        if build_file.startswith(URI_PREFIXES):
            if build_file.startswith("docker-archive:"):
                tar = self.cube_path(build_file[len("docker-archive:") :])
                return Source("docker-archive", f"docker-archive:{tar}", "singularity.build_file", tar)
            return Source("uri", build_file, "singularity.build_file")
        recipe = self.cube_path(build_file)
        if recipe.is_file():
            return Source("recipe", str(recipe), "singularity.build_file", recipe)
        if build_file != DEFAULT_RECIPE:
            raise SpecError([self._issue(("singularity", "build_file"), f"recipe {recipe} does not exist",
                                         "fix the path (relative to the cube root), or use docker://IMAGE")])
        docker = self.docker_section()
        tar_value = self.config.get("tar_file") or docker.get("tar_file")
        if isinstance(tar_value, str) and tar_value.strip():
            tar = self.cube_path(tar_value.strip())
            if tar.is_file():
                return Source("docker-archive", f"docker-archive:{tar}", "docker.tar_file", tar, True)
        image = docker.get("image")
        if isinstance(image, str) and image.strip():
            image = image.strip()
            if probe and self._docker_has_image(image):
                return Source("docker-daemon", f"docker-daemon:{_with_tag(image)}", "docker.image (local Docker engine)", None, True)
            return Source("docker", f"docker://{image}", "docker.image", None, True)
        raise SpecError([self._issue(
            ("singularity",) if self.cube.raw_section("singularity") is not None else (),
            f"no image source for singularity: no SIF at {self.sif}, no recipe {recipe}, and no docker.image",
            "set singularity.build_file (a recipe, docker://IMAGE or docker-archive:TAR), or docker.image",
        )])

    def _issue(self, path: tuple[str, ...], message: str, hint: str) -> Issue:
        issue = self.cube.doc.issue(path, message, hint)
        return Issue(message, issue.file, issue.line, issue.column, None, hint)

    def sif_current(self) -> bool:
        """The SIF exists and is newer than its recipe / archive (a URI source never goes stale)."""
        sif = self.sif
        if not sif.is_file():
            return False
        try:
            stamp = self.source(probe=False).stamp
        except SpecError:
            return True  # a prebuilt SIF with nothing to build it from (a container_config.yaml SingularityFile)
        if stamp is not None and stamp.exists():
            return sif.stat().st_mtime >= stamp.stat().st_mtime
        return True

    def version(self) -> Version | None:
        """`<exe> --version`, parsed tolerantly; None when it cannot be run or parsed."""
        if not self._version_probed:
            from cuberun.process import capture

            self._version_probed = True
            res = capture([*self.executable, "--version"], timeout=PROBE_TIMEOUT)
            if res.returncode == 0:
                self._version = parse_version(res.stdout + "\n" + res.stderr, self.program)
        return self._version

    def gpu_request(self, spec: str | None = None) -> GpuRequest:
        spec = spec if spec is not None else self.options.gpus
        if spec is None:
            nv = self.config.get("--nv")
            if nv is True:
                spec = "all"
            elif nv is not None and nv is not False and nv != "":
                spec = str(nv)
        return super().gpu_request(spec)

    def workdir(self) -> str | None:
        value = self.config.get("pwd")
        if isinstance(value, str) and value.strip():
            return value.strip()
        try:
            source = self.source(probe=False)
        except SpecError:
            return None
        if not source.from_docker_section:
            return None
        from cuberun import dockerfile

        docker = self.docker_section()
        context = Path(os.path.normpath(self.cube.root / str(docker.get("build_context") or ".")))
        recipe = context / str(docker.get("build_file") or "Dockerfile")
        if not recipe.is_file():
            return None
        try:
            workdir = dockerfile.parse(recipe, context).workdir
        except OSError:
            return None
        return workdir if workdir and workdir != "/" else None

    # -- steps (pure, apart from the cached probes) -------------------------------------------------
    def build_argv(self, source: Source, force: bool = False) -> list[str]:
        argv = [*self.executable, "build", *as_tokens(self.config.get("build_args"))]
        if force and "--force" not in argv and "-F" not in argv:
            argv.append("--force")
        return [*argv, str(self.sif), source.spec]

    def configure_steps(self) -> list[Step]:
        if self.sif_current():
            return []
        source = self.source()
        return [Step(tuple(self.build_argv(source, force=self.sif.exists())), "build", str(self.cube.root))]

    def task_env(self) -> dict[str, str]:
        """Variables the task gets: env_args, the invocation's extra env, GPUs."""
        env: dict[str, str] = {}
        for key, value in (self.config.get("env_args") or {}).items():
            env[str(key)] = env_value(value)
        env.update(self.options.extra_env)
        gpus = self.gpu_request()
        if gpus.wanted and "CUDA_VISIBLE_DEVICES" not in env:
            visible = gpus.cuda_visible_devices()
            if visible:
                env["CUDA_VISIBLE_DEVICES"] = visible
        return env

    def run_argv(self, task: ResolvedTask) -> tuple[list[str], dict[str, str]]:
        """`singularity run|exec ...` for a task, and the variables its process needs."""
        cfg = self.config
        entry = task.entrypoint
        from cuberun.runners.container_policy import singularity_flags

        user_args = as_tokens(cfg.get("run_args"))
        argv = [*self.executable, "exec" if entry else "run", *singularity_flags(self.policy(task), user_args), *user_args]
        for flag, value in (("--security", self.option(self.options.security, "--security")),):
            if value is not None:
                argv.append(f"{flag}={value}")
        if self.gpu_request().wanted and "--nv" not in argv:
            argv.append("--nv")
        for flag, value in (
            ("--vm-ram", self.option(self.options.memory, "--vm-ram")),
            ("--vm-cpu", self.option(self.options.cpus, "--vm-cpu")),
        ):
            if value is not None:
                argv.append(f"{flag}={value}")
        process_env: dict[str, str] = {}
        task_env = {**task.environment, **self.task_env()}  # container_config.yaml run_args.environment first
        if task_env:
            version = self.version()
            # a secret's value (and, before Singularity 3.6, every value) travels as <PREFIX>ENV_<NAME> in the client's environment
            prefix = "APPTAINERENV_" if (version.is_apptainer if version else self.program == "apptainer") else "SINGULARITYENV_"
            if version is None or version.supports_env_flag():
                more, process_env = pass_env(task_env.items(), EnvSyntax("--env", secret_prefix=prefix))
                argv += more
            else:  # Singularity < 3.6: no --env
                process_env.update({f"{prefix}{k}": v for k, v in task_env.items()})
        workdir = self.workdir()
        if workdir:
            argv += ["--pwd", workdir]
        layout = self.layout(task)
        if any("," in m.host or ":" in m.host for m in layout.mounts):
            version = self.version()
            if version is not None and not version.supports_mount_flag():
                raise UsageError(
                    f"task '{task.name}': {self.program} {'.'.join(map(str, version.numbers))} cannot bind paths containing ',' or ':' "
                    "(--mount needs SingularityCE 3.9 or Apptainer)",
                    "rename the directory or override the parameter with another path",
                )
        argv += self.bind_args(layout)
        argv.append(str(self.sif))
        if entry:
            argv += entry
        argv += task.task_args(layout.args)
        return argv, process_env

    def policy(self, task: ResolvedTask) -> Policy:
        from cuberun.runners.container_policy import singularity_policy

        return singularity_policy(self, task)

    # -- availability ----------------------------------------------------------------------------
    def _not_installed(self, tok: str) -> str:
        return (
            f"{self.program} is not installed (no '{tok}' on the PATH). "
            "Hint: install Apptainer or SingularityCE (the executable is set with -Prunner.singularity=PATH; "
            "--platform=apptainer uses apptainer), or use --platform=charliecloud or docker"
        )

    def unavailable_reason(self) -> str | None:
        tok = self.missing_executable()
        if tok == "sudo":
            return f"sudo is not installed. Hint: set -Prunner.singularity={self.program} (without sudo)"
        return self._not_installed(tok) if tok is not None else None

    # -- configure ---------------------------------------------------------------------------------
    def configure(self) -> None:
        """Build the SIF unless it is current. Quiet when there is nothing to do."""
        from cuberun.runners import imagefile

        imagefile.prepare_sif(self)  # a container_config.yaml SIF: downloaded, checked, decrypted
        if self.sif_current():
            self._configured = True
            return
        reason = self.unavailable_reason()
        if reason:
            raise RunnerUnavailable(reason)
        source = self.source()
        sif = self.sif
        existed = sif.exists()
        why = "the recipe is newer than the SIF" if existed else "no SIF yet"
        argv = self.build_argv(source, force=existed)
        try:
            sif.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BackendError(f"cannot create the image directory {sif.parent}: {exc.strerror}",
                               "set -Psingularity.image_dir=DIR to a writable directory") from None
        before = sif.stat().st_mtime_ns if existed else None
        outcome, text = stream_to_stderr(argv, f"building {sif} from {source.spec} ({why})", cwd=str(self.cube.root))
        if outcome.exit_code != 0:
            self._remove_partial(sif, before)
            if outcome.interrupted:
                raise TaskFailed(f"the build of {sif} was interrupted", outcome.exit_code)
            raise BackendError(
                f"building {sif} from {source.spec} failed with exit code {outcome.exit_code}: {_last_error(text)}",
                self._build_hint(source),
            )
        self._configured = True

    @staticmethod
    def _remove_partial(sif: Path, before: int | None) -> None:
        try:
            st = sif.stat()
        except OSError:
            return
        if before is None or st.st_mtime_ns != before:
            try:
                sif.unlink()
            except OSError:
                pass

    def _build_hint(self, source: Source) -> str:
        if source.kind == "recipe":
            return f"fix {source.spec} (the build output is above); without --fakeroot support set -Psingularity.build_args="
        if source.kind == "docker":
            return "check the image name and the registry access; a locally built image is used through docker-daemon: when the Docker engine has it"
        return "the build output is above"

    # -- run -----------------------------------------------------------------------------------------
    def failure(self, plan: TaskPlan, outcome: Outcome, log_path: str) -> Exception | None:
        task = plan.task
        if outcome.exit_code == 255:
            line = _fatal_line(log_tail(log_path))
            if line:
                return BackendError(f"{self.program} could not run task '{task.name}': {line}", "check the SIF and the run arguments (--dry-run prints them)")
        return None

    def fingerprint(self, task: ResolvedTask) -> dict[str, Any]:
        """The run command (its --env values included) and variables passed through the client's
        environment, plus the SIF's identity (size and mtime: a rebuild changes them, and hashing
        a multi-GB SIF on every run would be slow); for a SIF built from a recipe, the code
        identity of the folder it is built in (a `%files` line copies from there)."""
        argv, env = self.run_argv(task)
        try:
            st = self.sif.stat()
            sif: list[int] | None = [st.st_size, st.st_mtime_ns]
        except OSError:
            sif = None
        fp: dict[str, Any] = {"runner": self.name, "command": [argv], "sif": sif}
        if env:
            fp["env"] = self.env_identity(env)
        try:
            recipe = self.source(probe=False).kind == "recipe"
        except CuberunError:
            recipe = False
        if recipe:
            fp["build_context"] = self.cube_code().to_json()
        return fp

    # -- inspect -------------------------------------------------------------------------------------
    def inspect(self) -> dict[str, Any]:
        sif = self.sif
        info: dict[str, Any] = {
            "runner": self.name,
            "platform": self.platform,
            "executable": " ".join(self.executable),
            "sif": str(sif),
            "exists": sif.is_file(),
        }
        try:
            source = self.source(probe=False)
            info["source"] = source.spec
            info["current"] = self.sif_current()
        except SpecError as exc:
            info["source"] = None
            info["problem"] = exc.lines()[0]
        if sif.is_file():
            import hashlib

            digest = hashlib.sha256()
            with open(sif, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(chunk)
            info["hash"] = digest.hexdigest()
        if self.unavailable_reason() is None:
            version = self.version()
            info["version"] = version.text if version else None
        return info


def _last_error(text: str) -> str:
    return last_error_line(text, lambda line: FATAL.match(line) is not None)


def _fatal_line(text: str) -> str | None:
    for line in reversed(text.splitlines()):
        m = FATAL.match(line)
        if m:
            return m.group(1).strip() or line.strip()
    return None


