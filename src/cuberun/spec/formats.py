"""`cuberun migrate --to=...`: mlcube.yaml <-> container_config.yaml, where both can express the cube.

mlcube.yaml -> container_config.yaml: every parameter becomes a volume at a fixed mount path
(`/mlcommons/volumes/NAME`, a file parameter at `/mlcommons/volumes/NAME/NAME<its suffix>`) and
the command passes `--NAME=<mount path>` exactly as the mlcube contract does, so the program
runs unchanged. Host defaults become the workspace layout (WORKSPACE/NAME...), reported.

container_config.yaml -> mlcube.yaml: only volumes the command passes as `--NAME=<mount path>`
(trailing arguments) can become parameters: mlcube.yaml cannot say "mount here, pass nothing".

Whatever the target cannot express is one UsageError listing each item (nothing is written).
"""

from __future__ import annotations

import posixpath
import shlex
from typing import Any

from cuberun.errors import UsageError
from cuberun.spec.model import DIRECTORY, FILE, OUTPUT, UNKNOWN, Cube, Task
from cuberun.valueclass import dataclass, field

VOLUMES = "/mlcommons/volumes"
# docker: keys that change nothing about what runs (they say how the image is made or fetched)
_DOCKER_BUILD_KEYS = ("build_context", "build_file", "build_strategy", "build_args", "build_network", "docker")


@dataclass
class Converted:
    data: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what changed (host paths, dropped build keys)


def _refuse(what: str, problems: list[str]) -> UsageError:
    return UsageError(f"{what} cannot express: " + "; ".join(problems),
                      "change the cube so both formats can express it, or keep it in its current format")


def to_container_config(cube: Cube) -> Converted:
    problems: list[str] = []
    notes: list[str] = []
    docker = cube.raw_section("docker") or {}
    image = docker.get("image")
    if not isinstance(image, str) or not image.strip():
        problems.append("a cube without docker.image (container_config.yaml names one image)")
    kind, image_value = "DockerImage", image
    tar = docker.get("tar_file")
    if isinstance(image, str) and image.startswith("sha256:") and isinstance(tar, str):
        kind, image_value = "DockerArchive", tar
    env: dict[str, str] = {}
    for key, value in docker.items():
        if key in ("image", "tar_file") or value in (None, "", {}, []):
            continue
        if key == "env_args" and isinstance(value, dict):
            from cuberun.spec.container_config import env_value

            env = {str(k): env_value(v) for k, v in value.items()}
        elif key in _DOCKER_BUILD_KEYS:
            notes.append(f"docker.{key} dropped: container_config.yaml runs a ready image (build and push it first)")
        elif key in ("run_as_user", "remove") and value is True:
            continue
        else:
            problems.append(f"docker.{key} (container_config.yaml has no raw run arguments)")
    for section in cube.config:
        if section not in ("docker", "name", "version", "description", "authors", "platform", "tasks", "runtime", "workspace"):
            notes.append(f"section '{section}' dropped")
    if cube.depends_on:
        problems.append("cuberun.depends_on (container_config.yaml has no task dependencies)")
    for task in cube.tasks.values():
        for key in ("timeout", "retries"):
            if getattr(task, key) is not None:
                problems.append(f"tasks.{task.name}.{key} (container_config.yaml has no time limits or retries; pass --{key} to cuberun run)")
    gpus = cube.accelerator_count
    tasks: dict[str, Any] = {}
    for task in cube.tasks.values():
        tasks[task.name] = _task_to_volumes(task, env, gpus, problems, notes)
    if problems:
        raise _refuse("container_config.yaml", problems)
    data: dict[str, Any] = {"name": cube.name, "container_type": kind, "image": image_value}
    platform = {k: v for k, v in cube.platform.items() if k == "need_internet_access"}
    if platform:
        data["platform"] = platform
    data["tasks"] = tasks
    return Converted(data, notes)


def _task_to_volumes(task: Task, env: dict[str, str], gpus: int, problems: list[str], notes: list[str]) -> dict[str, Any]:
    where = f"task '{task.name}'"
    volumes: dict[str, dict[str, Any]] = {"input_volumes": {}, "output_volumes": {}}
    args: list[str] = []
    for p in task.params:
        if p.type == UNKNOWN:
            problems.append(f"{where}, input '{p.name}' has no type (add type: file or type: directory)")
            continue
        if p.io != OUTPUT and p.opts == "rw":
            problems.append(f"{where}, input '{p.name}' is writable (opts: rw); container_config.yaml inputs are read-only")
            continue
        mount = f"{VOLUMES}/{p.name}"
        if p.type == FILE:
            mount += "/" + p.name + posixpath.splitext(p.default.replace("\\", "/"))[1]  # NAME<suffix>: the same after a round trip
        volumes["output_volumes" if p.io == OUTPUT else "input_volumes"][p.name] = {"mount_path": mount, "type": p.type}
        args.append(f"--{p.name}={mount}")
        layout = p.name if p.type == DIRECTORY else p.name + posixpath.splitext(mount)[1]
        if layout != p.default.rstrip("/"):
            notes.append(f"{where}, {p.io} '{p.name}': host path {p.default} is now {layout} in the workspace (or give {p.name}=PATH)")
    run_args: dict[str, Any] = {}
    if task.entrypoint:
        tokens = shlex.split(task.entrypoint)
        run_args["entrypoint"] = tokens[0]
        run_args["command"] = [*tokens[1:], *args]
    else:
        run_args["command"] = [task.name, *args]
    if env:
        run_args["environment"] = dict(env)
    if gpus:
        run_args["gpus"] = gpus
    out: dict[str, Any] = {"run_args": run_args}
    out.update({k: v for k, v in volumes.items() if v})
    return out


def to_mlcube(cube: Cube) -> Converted:
    problems: list[str] = []
    notes: list[str] = []
    docker = cube.config.get("docker")
    sing = cube.config.get("singularity")
    data: dict[str, Any] = {"name": cube.name}
    platform = dict(cube.platform)
    envs: set[tuple[tuple[str, str], ...]] = set()
    gpu_values: set[str | None] = set()
    shm_values: set[str | None] = set()
    tasks: dict[str, Any] = {}
    for task in cube.tasks.values():
        ra = task.run_args
        assert ra is not None
        envs.add(ra.environment)
        gpu_values.add(ra.gpus)
        shm_values.add(ra.shm_size)
        tasks[task.name] = _task_to_parameters(task, problems)
    if len(envs) > 1:
        problems.append("environments that differ between tasks (mlcube.yaml has one docker.env_args)")
    if len(gpu_values) > 1 or any(g not in (None, "0") and not str(g).isdigit() for g in gpu_values):
        problems.append("GPU requests that differ between tasks or name devices (mlcube.yaml has one platform.accelerator_count)")
    if len(shm_values) > 1:
        problems.append("shm sizes that differ between tasks")
    if problems:
        raise _refuse("mlcube.yaml", problems)
    gpus = next(iter(gpu_values), None)
    if gpus and gpus != "0":
        platform["accelerator_count"] = int(gpus)
    if platform:
        data["platform"] = platform
    def relative(path: Any) -> Any:
        text = str(path)
        root = str(cube.root).rstrip("/") + "/"
        return text[len(root):] if text.startswith(root) else text

    if isinstance(docker, dict):
        section: dict[str, Any] = dict(docker)
        if "tar_file" in section:
            section["tar_file"] = relative(section["tar_file"])
        env = next(iter(envs), ())
        if env:
            section["env_args"] = dict(env)
        shm = next(iter(shm_values), None)
        if shm:
            section["cpu_args"] = section["gpu_args"] = f"--shm-size={shm}"
        data["docker"] = section
    if isinstance(sing, dict):
        data["singularity"] = {**sing, "image": relative(sing.get("image"))}
    data["tasks"] = tasks
    return Converted(data, notes)


def _task_to_parameters(task: Task, problems: list[str]) -> dict[str, Any]:
    ra = task.run_args
    assert ra is not None
    where = f"task '{task.name}'"
    command = list(ra.command or ())
    params = {p.name: p for p in task.params}
    passed: list[str] = []
    while command and command[-1].startswith("--") and "=" in command[-1]:
        name, _, value = command[-1][2:].partition("=")
        p = params.get(name)
        if p is None or p.mount_path != value:
            break
        passed.insert(0, name)
        command.pop()
    fixed = [name for name in params if name not in passed]
    if fixed:
        problems.append(f"{where}: volume(s) {', '.join(fixed)} used at fixed mount paths, not passed as --NAME=PATH arguments at the end "
                        "of the command (mlcube.yaml passes every parameter as an argument)")
    body: dict[str, Any] = {}
    if ra.entrypoint:
        body["entrypoint"] = shlex.join([ra.entrypoint, *command])
    elif command != [task.name]:
        problems.append(f"{where}: command {shlex.join(list(ra.command or ()))!r} (without an entrypoint, mlcube.yaml passes the task name first)")
    parameters: dict[str, Any] = {}
    for io in ("inputs", "outputs"):
        group = task.inputs if io == "inputs" else task.outputs
        if group:
            parameters[io] = {p.name: {"type": p.type, "default": p.default + ("/" if p.type == DIRECTORY else "")} for p in group}
    if parameters:
        body["parameters"] = parameters
    return body


def header(target: str, source: str, notes: list[str]) -> str:
    lines = [f"# {target}, converted by `cuberun migrate` from {source}"]
    if notes:
        lines.append("# Changed (check these):")
        lines += [f"#   - {n}" for n in notes]
    return "\n".join(lines) + "\n"
