"""The charliecloud runner's bottom layer: its configuration, the image it runs (a user
image_dir, a converted Docker image or an unpacked image archive (archive.py): where it is
stored, its Entrypoint/Cmd/WorkingDir/Env)
and the Docker engine side (the docker runner that pulls or builds it, `image inspect`)."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cuberun.errors import Issue, SpecError
from cuberun.runners.argv import program_name
from cuberun.runners.argv import tokens as as_tokens
from cuberun.runners.container import ContainerRunner
from cuberun.schema import Field
from cuberun.valueclass import dataclass, field

if TYPE_CHECKING:
    from cuberun.imagefetch import ImageSource
    from cuberun.resolve import ResolvedTask
    from cuberun.runners.docker import DockerRunner

METADATA = "image.json"
ROOTFS = "rootfs"
FORMAT = 1  # bump to force a re-conversion when the stored layout changes
PROBE_TIMEOUT = 60.0
CONVERTERS = ("export", "ch-convert")
SCHEMA: dict[str, Field] = {
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


class CharliecloudImage(ContainerRunner):
    """The configuration and the image: what every layer above reads."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._image_config: ImageConfig | None = None
        self._docker: DockerRunner | None = None
        self._token = os.urandom(4).hex()
        self._container = f"cuberun-chconv-{self._token}"
        self._archive_digest: str | None = None  # the sha256 of a DockerArchive (archive.py)
        self._private_store: Path | None = None  # an EncryptedDockerArchive's image, in its decryption folder
        self._verified: dict[str, Any] = {}  # the pin and lock checks of the converted image (verify.py)

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

    def archive_source(self) -> ImageSource | None:
        """The image file of a container_config.yaml DockerArchive / EncryptedDockerArchive (archive.py)."""
        from cuberun.runners.charliecloud import archive

        return archive.source(self)

    @property
    def store(self) -> Path:
        """The directory that holds one converted image: rootfs/ and image.json (an archive's:
        by its sha256, or a private folder for an encrypted one)."""
        value = self.config.get("images_dir")
        if isinstance(value, str) and value.strip():
            base = self.cube_path(value.strip())
        else:
            from cuberun.paths import cache_dir

            base = cache_dir() / "charliecloud"
        src = self.archive_source()
        if src is not None:
            from cuberun.runners.charliecloud import archive

            return archive.store(self, src, base)
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
        if self._private_store is None and (src := self.archive_source()) is not None and src.encrypted:
            return None  # not decrypted yet: there is no image
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
        src = self.archive_source()
        if src is not None:
            from cuberun.runners.charliecloud import archive

            return archive.image_config(self, src)
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
        """`docker image inspect IMAGE` (stdout only), or None when the image or engine is missing;
        its "Id" always sha256:-prefixed (podman gives the bare hex)."""
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
        if not isinstance(entry, dict):
            return None
        image_id = entry.get("Id")
        if isinstance(image_id, str) and image_id and not image_id.startswith("sha256:"):
            entry["Id"] = f"sha256:{image_id}"  # podman's bare hex: the id as docker, the docker runner and cuberun.lock write it
        return entry

