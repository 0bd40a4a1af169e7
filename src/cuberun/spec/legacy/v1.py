"""Config 1.0 (MLCommons Box / MLCube v1): a root file listing task files, run/[<set>/]<task>.yaml
bindings, platforms/*.yaml."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

from cuberun.errors import Issue
from cuberun.hints import did_you_mean
from cuberun.spec.legacy.base import _Base, _flow, _guess_type, _param
from cuberun.spec.legacy.bindings import _invoke_bindings, _ssh_entry, _v1_image
from cuberun.spec.legacy.formats import (
    TASK_SCHEMAS,
)
from cuberun.spec.model import DIRECTORY, FILE, INPUT, OUTPUT
from cuberun.yamlio import Document, KeyPath


class _V1(_Base):
    """Config 1.0."""

    # -- config 1.0 ---------------------------------------------------------------------------------
    def config_v1(self, doc: Document) -> dict[str, Any]:
        config = self.metadata(doc)
        raw = doc.data.get("tasks")
        tasks: dict[str, Any] = {}
        if "tasks" not in doc.data:
            self.issues.append(Issue("'tasks' is missing", doc.file, hint="list the task files: tasks: ['tasks/hello.yaml']"))
        elif not isinstance(raw, list) or not raw:
            self.issues.append(doc.issue(("tasks",), "must be a list of task files, e.g. ['tasks/hello.yaml']", value=True))
        defaults = self.v1_default_bindings()
        for i, item in enumerate(raw if isinstance(raw, list) else []):
            if not isinstance(item, str) or not item.strip():
                self.issues.append(doc.issue(("tasks", i), "must be the path of a task file", value=True))
                continue
            path = self.root / item
            tname = PurePath(item).stem
            if not path.is_file():
                self.issues.append(doc.issue(("tasks", i), f"task file {item} does not exist", "a config 1.0 (MLCommons Box) root file "
                                             "lists task files, relative to its directory", value=True))
                continue
            tdoc = self.load(path, "task file")
            if tdoc is None:
                continue
            schema = tdoc.data.get("schema_type")
            if schema is not None and schema not in TASK_SCHEMAS:
                self.issues.append(tdoc.issue(("schema_type",), f"schema_type '{schema}' is not a task schema", "expected mlcube_task or mlbox_task", value=True))
            bound, bound_file = defaults.get(tname, ({}, None))
            params: dict[str, Any] = {}
            for io in (INPUT, OUTPUT):
                group: dict[str, Any] = {}
                items = tdoc.data.get(io + "s") or []
                untyped: set[str] = set()
                if isinstance(items, dict):  # MLBox (mlspeclib era): {name: {}} with the type left to the filesystem
                    items = [{"name": k, **(v if isinstance(v, dict) else {})} for k, v in items.items()]
                    untyped = {str(i["name"]) for i in items if "type" not in i}
                if not isinstance(items, list):
                    self.issues.append(tdoc.issue((io + "s",), "must be a list of {name, type}", value=True))
                    continue
                for j, spec in enumerate(items):
                    ppath: KeyPath = (io + "s", j)
                    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                        self.issues.append(tdoc.issue(ppath, "must be a mapping with 'name' and 'type'", value=True))
                        continue
                    pname = spec["name"]
                    ptype = spec.get("type")
                    if pname in untyped:
                        ptype = _guess_type(bound.get(pname) or pname, self.root, io) or FILE
                        self.assumptions.append(f"task '{tname}', {io} '{pname}' has no type: taken as a {ptype}")
                    if ptype not in (FILE, DIRECTORY):
                        self.issues.append(tdoc.issue((*ppath, "type") if "type" in spec else ppath, f"type of '{pname}' must be 'file' or 'directory'",
                                                      did_you_mean(str(ptype), (FILE, DIRECTORY)) if ptype else "add type: file or type: directory",
                                                      value=True))
                        continue
                    default = bound.get(pname)
                    if default is None:
                        default = pname
                        where = bound_file or f"run/{tname}.yaml"
                        self.notes.append(f"task '{tname}', {io} '{pname}': not bound in {where}; it defaults to '{pname}'")
                    group[pname] = _param(default, ptype)
                if group:
                    params[io + "s"] = group
            tasks[tname] = {"parameters": params} if params else {}
            self.mark(("tasks", tname), doc, ("tasks", i))
        for tname, (_, bfile) in defaults.items():
            if tname not in tasks and isinstance(raw, list):
                self.notes.append(f"{bfile} binds task '{tname}', which the root file does not list")
        docker = self.v1_platforms()
        if docker:
            config["docker"] = docker
        config["tasks"] = tasks
        return config

    def v1_invoke_files(self, folder: Path) -> dict[str, tuple[Document, Path]]:
        """task name -> invoke file in a run/ folder (by its task_name; the file stem otherwise)."""
        found: dict[str, tuple[Document, Path]] = {}
        if not folder.is_dir():
            return found
        for path in sorted(folder.glob("*.yaml")):
            doc = self.load(path, "invoke file")
            if doc is None:
                continue
            if "input_binding" not in doc.data and "output_binding" not in doc.data and "task_name" not in doc.data:
                continue  # e.g. run/<set>/platform-docker.yaml
            task = doc.data.get("task_name")
            task = task if isinstance(task, str) and task else path.stem
            if task not in found or path.stem == task:
                found[task] = (doc, path)
        return found

    def v1_default_bindings(self) -> dict[str, tuple[dict[str, str], str | None]]:
        result: dict[str, tuple[dict[str, str], str | None]] = {}
        for task, (doc, path) in self.v1_invoke_files(self.root / "run").items():
            result[task] = (_invoke_bindings(doc, None, self.issues), self.rel(path))
        return result

    def v1_platforms(self) -> dict[str, Any]:
        folder = self.root / "platforms"
        docker: dict[str, Any] = {}
        mlbox_docker = self.root / "mlbox_docker.yaml"  # MLBox (mlspeclib era): the docker implementation, beside mlbox.yaml
        if mlbox_docker.is_file():
            doc = self.load(mlbox_docker, "docker implementation file")
            if doc is not None:
                self.v1_docker(doc, self.rel(mlbox_docker), docker)
                if not folder.is_dir():
                    return docker
        if not folder.is_dir():
            self.notes.append("no platforms/docker.yaml: there is no docker image; add docker.image to run in a container")
            return docker
        for path in sorted(folder.glob("*.yaml")):
            doc = self.load(path, "platform file")
            if doc is None:
                continue
            data = doc.data
            rel = self.rel(path)
            platform = data.get("platform")
            pname = platform.get("name") if isinstance(platform, dict) else platform if isinstance(platform, str) else None
            if path.stem == "ssh" or "host" in data:
                self.notes.append(f"{rel}: ssh platforms live in the cuberun settings, not in the cube; add one, e.g. "
                                  f"platforms: {{{path.stem}: {_flow(_ssh_entry(data))}}}, then run with --platform={path.stem}")
            elif path.stem == "docker" or pname in ("docker", "nvidia-docker") or data.get("schema_type") == "mlbox_docker":
                self.v1_docker(doc, rel, docker)
            elif path.stem == "singularity" or pname == "singularity":
                image = _v1_image(data)
                self.notes.append(f"{rel}: the singularity image {image or '(none)'} is not carried over: cuberun builds its own SIF from docker.image; "
                                  "to keep a prebuilt one, set singularity: {image: FILE.sif, image_dir: DIR}")
            elif all(isinstance(v, dict) for v in data.values()) and any("runner" in v for v in data.values()):
                for name, entry in data.items():
                    self.notes.append(f"{rel}: platform '{name}' belongs in the cuberun settings: platforms: {{{name}: {_flow(_ssh_entry(entry))}}}")
            else:
                self.notes.append(f"{rel}: platform '{pname or path.stem}' is not converted")
        if not docker.get("image"):
            self.notes.append("no docker image in platforms/ or mlbox_docker.yaml: add docker.image to run in a container")
        return docker

    def v1_docker(self, doc: Document, rel: str, docker: dict[str, Any]) -> None:
        data = doc.data
        image = _v1_image(data)
        if image is None:
            self.issues.append(Issue("no image in the docker platform file", doc.file, hint="set container.image: repo/name:tag"))
            return
        images = {c.get("exec", {}).get("container", {}).get("image") for c in data.get("runner_configs") or [] if isinstance(c, dict)}
        if len(images - {None}) > 1:
            self.notes.append(f"{rel}: several images per task ({', '.join(sorted(str(i) for i in images - {None}))}); config 2.0 has one: {image}")
        docker["image"] = image
        if (self.root / "build" / "Dockerfile").is_file():
            docker.update(build_context="build", build_file="Dockerfile", build_strategy="auto")
        container = data.get("container") if isinstance(data.get("container"), dict) else {}
        runtime = container.get("runtime") or data.get("docker_runtime")
        if runtime not in (None, "", "docker", "runc"):
            self.notes.append(f"{rel}: runtime {runtime} is not carried over: request GPUs with --gpus=all (or platform.accelerator_count)")
        env = container.get("env")
        if isinstance(env, dict):
            docker["env_args"] = {str(k): "" if v is None else str(v) for k, v in env.items()}
        elif isinstance(env, list):
            docker["env_args"] = {str(e["name"]): str(e.get("value", "")) for e in env if isinstance(e, dict) and "name" in e}
        configuration = data.get("configuration") if isinstance(data.get("configuration"), dict) else {}
        if configuration.get("parameters"):
            self.notes.append(f"{rel}: docker run parameters '{configuration['parameters']}' are not carried over; "
                              "add the ones you still need to docker.extra_run_args")
