"""The singularity runner's bottom layer: its configuration, the engine's version, and the SIF
image (its name and folder, where it is built from, whether it is current, its working directory)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuberun.errors import Issue, SpecError
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.container import BindSyntax, ContainerRunner
from cuberun.schema import Field
from cuberun.valueclass import dataclass

if TYPE_CHECKING:
    from cuberun.gpus import GpuRequest

# `--bind H:T[:ro]` like the reference; `--mount` when the path has ',' or ':' (which --bind splits on)
SINGULARITY_BIND = BindSyntax("--bind", splits_on=",:", src="src", dst="dst", ro="ro")

DEFAULT_RECIPE = "Singularity.recipe"
# build sources handed to `singularity build` as written (no local recipe file)
URI_PREFIXES = ("docker://", "docker-archive:", "docker-daemon:", "oci-archive:", "oci:", "library://", "oras://", "shub://", "localimage:")
PROBE_TIMEOUT = 20.0
FATAL = re.compile(r"^\s*FATAL:\s*(.*)$")
_VERSION = re.compile(r"\b(apptainer|singularity(?:-ce|-pro)?)\b[^\n\d]*?v?(\d+)\.(\d+)(?:\.(\d+))?", re.IGNORECASE)
_NUMBERS = re.compile(r"\bv?(\d+)\.(\d+)(?:\.(\d+))?")

SCHEMA: dict[str, Field] = {
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


class SingularityImage(ContainerRunner):
    """The configuration, the version probe and the SIF image: what the runner layer reads."""

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
