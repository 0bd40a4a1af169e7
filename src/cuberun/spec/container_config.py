"""Load and validate MedPerf's `container_config.yaml` into the same Cube model as mlcube.yaml.

The format (see docs/container_config.md): `container_type`, `image`, and `tasks` mapping each
task to optional `run_args` (command, entrypoint, environment, gpus, shm_size) and
`input_volumes` / `output_volumes` ({name: {mount_path, type}}). The program reads and writes
the fixed mount paths and gets no `--name=path` arguments; the caller picks the host paths.

Host paths: `NAME=PATH` on the command line, else the workspace layout: a directory volume is
`WORKSPACE/NAME`, a file volume `WORKSPACE/NAME<suffix of its mount path>` (parameters_file
mounted at /x/parameters.yaml -> WORKSPACE/parameters_file.yaml).

What the runners get: `docker.image` (a DockerImage reference, or for a DockerArchive the image
id read from the archive's manifest.json with `docker.tar_file` to load it from), or
`singularity.image` (the SIF of a SingularityFile). An archive or SIF from an http(s) URL, one
with a sha256 to check, and the Encrypted* kinds also get `config["image_source"]`
(imagefetch.ImageSource): the runner downloads, checks and decrypts it at configure (the loader
never downloads; until then the image is a `cuberun-unloaded/...` placeholder). `name`,
`platform` (need_internet_access, accelerator_count) and `image_sha256` are cuberun extensions
of the format.
"""

from __future__ import annotations

import os
import posixpath
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from cuberun.errors import Issue, SpecError
from cuberun.hints import closest, did_you_mean
from cuberun.schema import validate_section
from cuberun.spec.load import CONTAINER_CONFIG_FILE
from cuberun.spec.model import DIRECTORY, FILE, INPUT, OUTPUT, Cube, Param, RunArgs, Task
from cuberun.yamlio import Document, KeyPath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CONFIG_FILE = CONTAINER_CONFIG_FILE
FORMAT = "container_config"
DOCKER_IMAGE = "DockerImage"
DOCKER_ARCHIVE = "DockerArchive"
SINGULARITY_FILE = "SingularityFile"
ENCRYPTED = ("EncryptedDockerArchive", "EncryptedSingularityFile")
CONTAINER_TYPES = (DOCKER_IMAGE, DOCKER_ARCHIVE, ENCRYPTED[0], SINGULARITY_FILE, ENCRYPTED[1])
TOP_KEYS = ("container_type", "image", "tasks", "name", "platform", "image_sha256")
TASK_KEYS = ("run_args", "input_volumes", "output_volumes")
RUN_ARGS_KEYS = ("command", "entrypoint", "environment", "gpus", "shm_size")
VOLUME_KEYS = ("mount_path", "type")
MAX_MANIFEST = 1 << 20
_SHM = re.compile(r"^[0-9]+(\.[0-9]+)?\s*([bkmgBKMG]|[kmgKMG][bB])?$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def build(doc: Document, file: Path, *, workspace: str | os.PathLike[str] | None = None, overrides: Sequence[str] = ()) -> Cube:
    """The Cube of a container_config.yaml; SpecError lists every problem at once."""
    from cuberun.spec.load import PLATFORM_SCHEMA

    issues: list[Issue] = []
    warnings: list[Issue] = []
    root = file.parent
    data = doc.data
    if data is None:
        raise SpecError([Issue("the file is empty", doc.file, hint="a container_config.yaml needs 'container_type', 'image' and 'tasks'")])
    if not isinstance(data, dict):
        raise SpecError([doc.issue((), f"the top level must be a mapping, not {type(data).__name__}", "start with 'container_type:'", value=True)])
    if overrides:
        bad = [o for o in overrides if not o.startswith("runner.")]
        if bad:
            raise SpecError([Issue(f"-P {bad[0]}: a container_config.yaml cube has no config keys to override", "-P",
                                   hint="give volume paths as NAME=PATH; run options (--gpus, --network) as flags")])
    ws = Path(os.path.abspath(os.path.expanduser(str(workspace)))) if workspace else root / "workspace"
    if ws.exists() and not ws.is_dir():
        raise SpecError([Issue(f"the workspace {ws} is not a directory", hint="pass --workspace=DIR with a directory (it is created if missing)")])

    for key in data:
        if key not in TOP_KEYS:
            issues.append(doc.issue((key,), f"unknown top-level key '{key}'", did_you_mean(str(key), TOP_KEYS)))
    for key in ("container_type", "image", "tasks"):
        if key not in data:
            guess = closest(key, [str(k) for k in data if k not in TOP_KEYS])
            hint = f"'{guess}' looks like a misspelling of '{key}'" if guess else _MISSING_HINTS[key]
            issues.append(Issue(f"'{key}' is missing", doc.file, hint=hint))

    kind = data.get("container_type")
    if "container_type" in data and kind not in CONTAINER_TYPES:
        issues.append(doc.issue(("container_type",), f"'{kind}' is not a container type; expected one of {', '.join(CONTAINER_TYPES)}",
                                did_you_mean(str(kind), CONTAINER_TYPES), value=True))
        kind = None
    image = data.get("image")
    if "image" in data and (not isinstance(image, str) or not image.strip()):
        issues.append(doc.issue(("image",), "must be a non-empty string", "an image reference, or the path of the archive or SIF file", value=True))
        image = None
    sha256: str | None = None
    if "image_sha256" in data:
        from cuberun.imagefetch import normalize_sha256

        sha256 = normalize_sha256(data["image_sha256"])
        if sha256 is None:
            issues.append(doc.issue(("image_sha256",), f"{data['image_sha256']!r} is not a sha256", "write 64 hex digits, optionally prefixed with sha256:",
                                    value=True))
        elif kind == DOCKER_IMAGE:
            issues.append(doc.issue(("image_sha256",), "a DockerImage is pinned by its registry digest, not by image_sha256",
                                    "write image: NAME@sha256:<digest>, or remove image_sha256", value=True))
            sha256 = None

    name = data.get("name", root.name or "cube")
    if not isinstance(name, str) or not name.strip():
        issues.append(doc.issue(("name",), "must be a non-empty string", value=True))
        name = "cube"
    platform = data.get("platform") or {}
    validate_section(platform, PLATFORM_SCHEMA, ("platform",), doc, issues)
    if not isinstance(platform, dict):
        platform = {}

    config: dict[str, Any] = {"name": name, "platform": platform, "runtime": {"root": str(root), "workspace": str(ws)}, "workspace": str(ws)}
    if isinstance(kind, str) and isinstance(image, str):
        section = _image_section(doc, root, kind, image.strip(), sha256, issues)
        if section is not None:
            config[section[0]] = section[1]
            if section[2] is not None:
                config["image_source"] = section[2]

    tasks = _tasks(doc, data.get("tasks"), issues) if "tasks" in data else {}
    if issues:
        raise SpecError(issues)
    return Cube(file=file, root=root, workspace=ws, name=str(name), version=None, description=None, authors=[], platform=platform,
                tasks=tasks, config=config, doc=doc, warnings=warnings, format=FORMAT)


_MISSING_HINTS = {
    "container_type": "add 'container_type: DockerImage' (or DockerArchive, SingularityFile)",
    "image": "add 'image:' with the image reference (DockerImage) or the path of the archive / SIF file",
    "tasks": "add 'tasks:' mapping each task name to its run_args and volumes",
}


def _image_section(doc: Document, root: Path, kind: str, image: str, sha256: str | None,
                   issues: list[Issue]) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
    """The runner section of the image, and where its file comes from (imagefetch.ImageSource),
    None for a DockerImage or a plain local file with no digest to check."""
    from cuberun import imagefetch

    if kind == DOCKER_IMAGE:
        return "docker", {"image": image}, None
    location, given = imagefetch.split_fragment(image)
    if given is not None:
        digest = imagefetch.normalize_sha256(given)
        if digest is None:
            issues.append(doc.issue(("image",), f"'{given}' after #sha256= is not a sha256", "write 64 hex digits after #sha256=", value=True))
            return None
        if sha256 is not None and sha256 != digest:
            issues.append(doc.issue(("image",), f"#sha256={digest} differs from image_sha256 {sha256}", "give the digest once", value=True))
            return None
        sha256 = digest
    encrypted = kind in ENCRYPTED
    plain = kind.removeprefix("Encrypted")
    if imagefetch.is_url(location):
        cached = imagefetch.cached(sha256)
        path = cached
    elif re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
        issues.append(doc.issue(("image",), f"'{location.split('://', 1)[0]}' URLs are not supported", "give an http(s) URL or a local path", value=True))
        return None
    else:
        path = Path(os.path.expanduser(location))
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            what = "is not a regular file" if path.exists() else "does not exist"
            issues.append(doc.issue(("image",), f"the {kind} {path} {what}", "give the path of the file, relative to the cube's directory", value=True))
            return None
        location = str(path)
    source = None
    if encrypted or sha256 is not None or imagefetch.is_url(location):
        source = imagefetch.ImageSource(kind, location, sha256, encrypted).to_json()
    if encrypted or path is None:  # known once downloaded / decrypted, at configure
        placeholder = f"cuberun-unloaded/{kind.lower()}:{(sha256 or 'unknown')[:12]}"
        if plain == SINGULARITY_FILE:
            return "singularity", {"image": f"/cuberun-not-ready/{kind}.sif"}, source
        return "docker", {"image": placeholder}, source
    if plain == SINGULARITY_FILE:
        return "singularity", {"image": str(path)}, source
    image_id = archive_image_id(path)
    if isinstance(image_id, str) and image_id.startswith("error:"):
        issues.append(doc.issue(("image",), f"{path}: {image_id[6:]}", "give an archive written by `docker save` or `podman save`", value=True))
        return None
    return "docker", {"image": image_id, "tar_file": str(path)}, source


def archive_image_id(path: Path) -> str:
    """`sha256:<id>` of the image in a `docker save` archive (its config digest, the id the engine
    gives it once loaded), read from manifest.json; or 'error:<why>'."""
    import json
    import tarfile

    try:
        with tarfile.open(path, "r:*") as tar:
            member = None
            for _ in range(1_000_000):
                entry = tar.next()
                if entry is None:
                    break
                if entry.name.lstrip("./") == "manifest.json":
                    member = entry
                    break
            if member is None or not member.isfile() or member.size > MAX_MANIFEST:
                return "error:no manifest.json (of at most 1 MiB) in the archive"
            stream = tar.extractfile(member)
            manifest = json.loads(stream.read(MAX_MANIFEST)) if stream is not None else None
    except (OSError, tarfile.TarError, ValueError, EOFError) as exc:
        return f"error:cannot read the archive: {exc}"
    if not isinstance(manifest, list) or len(manifest) != 1 or not isinstance(manifest[0], dict):
        return "error:manifest.json must describe exactly one image"
    config = manifest[0].get("Config")
    match = re.search(r"([0-9a-f]{64})(\.json)?$", config) if isinstance(config, str) else None
    if match is None:
        return "error:manifest.json names no image config digest"
    return f"sha256:{match.group(1)}"


def _tasks(doc: Document, raw: Any, issues: list[Issue]) -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    if not isinstance(raw, dict):
        issues.append(doc.issue(("tasks",), "must be a mapping of task name to task", value=True))
        return tasks
    if not raw:
        issues.append(doc.issue(("tasks",), "no tasks are defined", "add at least one task, e.g. infer", value=True))
    for tname, body in raw.items():
        path: KeyPath = ("tasks", tname)
        if not isinstance(tname, str) or not _NAME.match(tname):
            issues.append(doc.issue(path, f"'{tname}' is not a valid task name", "use letters, digits, '_', '-' and '.'"))
            continue
        body = {} if body is None else body
        if not isinstance(body, dict):
            issues.append(doc.issue(path, f"a task must be a mapping with run_args and volumes, not {type(body).__name__}", value=True))
            continue
        for key in body:
            if key not in TASK_KEYS:
                issues.append(doc.issue((*path, key), f"unknown key '{key}' in task '{tname}'", did_you_mean(str(key), TASK_KEYS)))
        run_args = _run_args(doc, (*path, "run_args"), body.get("run_args"), issues)
        inputs = _volumes(doc, (*path, "input_volumes"), body.get("input_volumes"), INPUT, issues)
        outputs = _volumes(doc, (*path, "output_volumes"), body.get("output_volumes"), OUTPUT, issues)
        seen: dict[str, Param] = {}
        for p in inputs + outputs:
            if p.name in seen:
                issues.append(doc.issue(p.key, f"volume '{p.name}' is both an input and an output of task '{tname}'", "give the output another name"))
            other = next((q for q in seen.values() if q.mount_path == p.mount_path), None)
            if other is not None:
                issues.append(doc.issue((*p.key, "mount_path"), f"'{p.mount_path}' is also the mount path of volume '{other.name}'",
                                        "give each volume its own mount path", value=True))
            seen[p.name] = p
        tasks[tname] = Task(tname, None, tuple(inputs), tuple(outputs), run_args or RunArgs())
    return tasks


def env_value(value: Any) -> str:
    """A YAML value as an environment string (booleans as true/false, null as empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def _run_args(doc: Document, path: KeyPath, raw: Any, issues: list[Issue]) -> RunArgs | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        issues.append(doc.issue(path, f"must be a mapping with {', '.join(RUN_ARGS_KEYS)}, not {type(raw).__name__}", value=True))
        return None
    before = len(issues)
    for key in raw:
        if key not in RUN_ARGS_KEYS:
            issues.append(doc.issue((*path, key), f"'{key}' is not allowed in run_args (only {', '.join(RUN_ARGS_KEYS)})",
                                    did_you_mean(str(key), RUN_ARGS_KEYS)))
    command: tuple[str, ...] | None = None
    value = raw.get("command")
    if isinstance(value, str):
        try:
            command = tuple(shlex.split(value))
        except ValueError as exc:
            issues.append(doc.issue((*path, "command"), f"cannot be split into arguments: {exc}", "close the quote, or write the command as a list", value=True))
    elif isinstance(value, list) and all(_scalar(v) for v in value):
        command = tuple(str(v) for v in value)
    elif value is not None:
        issues.append(doc.issue((*path, "command"), "must be a string or a list of strings", value=True))
    entrypoint = raw.get("entrypoint")
    if entrypoint is not None and (not isinstance(entrypoint, str) or not entrypoint.strip()):
        issues.append(doc.issue((*path, "entrypoint"), "must be a non-empty string", "remove the key to keep the image's ENTRYPOINT", value=True))
        entrypoint = None
    env: list[tuple[str, str]] = []
    environment = raw.get("environment")
    if environment is not None and not isinstance(environment, dict):
        issues.append(doc.issue((*path, "environment"), "must be a mapping of variable name to value", value=True))
    elif isinstance(environment, dict):
        for key, val in environment.items():
            if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                issues.append(doc.issue((*path, "environment", key), f"'{key}' is not a valid variable name", "use letters, digits and '_'"))
            elif val is not None and not _scalar(val) and not isinstance(val, bool):
                issues.append(doc.issue((*path, "environment", key), "must be a string, a number or true/false", value=True))
            else:
                env.append((key, env_value(val)))
    gpus = _gpus(doc, (*path, "gpus"), raw.get("gpus"), issues)
    shm = raw.get("shm_size")
    if shm is not None and (not _scalar(shm) or not _SHM.match(str(shm))):
        issues.append(doc.issue((*path, "shm_size"), f"'{shm}' is not a size", "write a number with a unit, e.g. 2gb or 512m", value=True))
        shm = None
    if len(issues) > before:
        return None
    return RunArgs(command, entrypoint.strip() if isinstance(entrypoint, str) else None, tuple(env), gpus, str(shm) if shm is not None else None)


def _gpus(doc: Document, path: KeyPath, value: Any, issues: list[Issue]) -> str | None:
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if value == "all":
        return "all"
    if isinstance(value, list) and value and all(_scalar(v) and re.match(r"^[A-Za-z0-9-]+$", str(v)) for v in value):
        return "device=" + ",".join(str(v) for v in value)
    issues.append(doc.issue(path, f"{value!r} is not a GPU request", "write a count (0 = none), 'all', or a list of device ids", value=True))
    return None


def _volumes(doc: Document, path: KeyPath, raw: Any, io: str, issues: list[Issue]) -> list[Param]:
    if raw is None:
        return []
    if not isinstance(raw, dict):
        issues.append(doc.issue(path, "must be a mapping of volume name to {mount_path, type}", value=True))
        return []
    found: list[Param] = []
    for vname, spec in raw.items():
        vpath: KeyPath = (*path, vname)
        if not isinstance(vname, str) or not _NAME.match(vname):
            issues.append(doc.issue(vpath, f"'{vname}' is not a valid volume name", "use letters, digits, '_', '-' and '.'"))
            continue
        if not isinstance(spec, dict):
            issues.append(doc.issue(vpath, f"must be a mapping with mount_path and type, not {type(spec).__name__}", value=True))
            continue
        bad = False
        for key in spec:
            if key not in VOLUME_KEYS:
                issues.append(doc.issue((*vpath, key), f"unknown key '{key}' in volume '{vname}'", did_you_mean(str(key), VOLUME_KEYS)))
                bad = True
        for key in VOLUME_KEYS:
            if key not in spec:
                issues.append(doc.issue(vpath, f"volume '{vname}' has no '{key}'",
                                        "add 'type: file' or 'type: directory'" if key == "type" else "add the absolute path inside the container"))
                bad = True
        mount = spec.get("mount_path")
        if "mount_path" in spec:
            problem = _mount_problem(mount)
            if problem:
                issues.append(doc.issue((*vpath, "mount_path"), problem, "write an absolute path such as /mlcommons/volumes/data", value=True))
                bad = True
        vtype = spec.get("type")
        if "type" in spec and vtype not in (FILE, DIRECTORY):
            issues.append(doc.issue((*vpath, "type"), f"type '{vtype}' is not 'file' or 'directory'", did_you_mean(str(vtype), (FILE, DIRECTORY)), value=True))
            bad = True
        if bad:
            continue
        mount = posixpath.normpath(str(mount))
        default = vname if vtype == DIRECTORY else vname + posixpath.splitext(posixpath.basename(mount))[1]
        found.append(Param(name=vname, io=io, default=default, type=str(vtype), opts=None, key=vpath, mount_path=mount))
    return found


def _mount_problem(mount: Any) -> str | None:
    if not isinstance(mount, str) or not mount.strip():
        return "must be a non-empty string"
    if not mount.startswith("/"):
        return f"'{mount}' is not an absolute path"
    if any(part == ".." for part in mount.split("/")):
        return f"'{mount}' contains '..'"
    if posixpath.normpath(mount) == "/":
        return "the container's root cannot be a volume"
    if any(c in mount for c in ":,\n\0"):
        return f"'{mount}' contains ':', ',' or a control character, which a bind mount cannot express"
    return None
