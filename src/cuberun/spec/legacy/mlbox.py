"""The MLBox proof of concept and MLBox 0.1: mlbox.yaml, implementation/, tasks/<task>/<set>.yaml."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from typing import Any

from cuberun.errors import Issue
from cuberun.hints import did_you_mean
from cuberun.spec.legacy.base import _Base, _flow, _guess_type, _param, _tokens
from cuberun.spec.legacy.bindings import _bindings
from cuberun.spec.legacy.formats import (
    BARE_METAL,
    DEFAULT_SET,
    IMPLEMENTATION_FILE,
    IMPLEMENTATION_TYPES,
    POC_DOCKERFILE,
    TASK_FLAG,
)
from cuberun.spec.model import DIRECTORY, INPUT, OUTPUT
from cuberun.yamlio import Document, KeyPath


class _MLBox(_Base):
    """MLBox proof of concept and MLBox 0.1."""

    # -- MLBox proof of concept and MLBox 0.1 --------------------------------------------------
    def config_mlbox(self, doc: Document) -> dict[str, Any]:
        data = doc.data
        config = self.metadata(doc, ("name", "box_name"))
        prefix = ""
        cmdline = data.get("commandline_config")
        if isinstance(cmdline, dict) and cmdline.get("pass_mlbox_args"):
            prefix = "mlbox_"  # the fake_model variant passes --mlbox_<name>=path
            self.notes.append("commandline_config.pass_mlbox_args: the parameters are named mlbox_<name>, so the program still receives --mlbox_<name>=PATH")

        tasks = self.mlbox_tasks(doc, prefix)
        impl_doc: Document | None = None
        impl: dict[str, Any] = {}
        base: KeyPath = ()
        impl_path = self.root / IMPLEMENTATION_FILE
        if impl_path.is_file():
            impl_doc = self.load(impl_path, "implementation file")
            impl = impl_doc.data if impl_doc is not None else {}
        elif isinstance(data.get("container"), dict):  # the fake_model variant: the container is in mlbox.yaml
            impl_doc, base = doc, ("container",)
            impl = {"implementation_type": "standard_docker", **data["container"]}
        else:
            self.issues.append(
                Issue(f"{IMPLEMENTATION_FILE} is missing", doc.file, hint="a legacy MLBox says how to run its tasks in implementation/mlbox_implementation.yaml")
            )
        entry: list[str] | None = None
        if impl_doc is not None:
            kind = impl.get("implementation_type") or data.get("implementation_type") or data.get("implementation")
            entry = self.mlbox_implementation(impl_doc, base, kind, impl, config)
        config_tasks: dict[str, Any] = {}
        for tname, params in tasks.items():
            body: dict[str, Any] = {}
            if entry is not None:
                body["entrypoint"] = shlex.join([*entry, f"{TASK_FLAG}={tname}"])
            if params:
                body["parameters"] = params
            config_tasks[tname] = body
            self.mark(("tasks", tname), doc, ("tasks", tname))
        config["tasks"] = config_tasks
        return config

    def mlbox_tasks(self, doc: Document, prefix: str) -> dict[str, dict[str, Any]]:
        """Task declarations of mlbox.yaml, with defaults and types from tasks/<task>/default.yaml."""
        raw = doc.data.get("tasks")
        result: dict[str, dict[str, Any]] = {}
        if raw is None:
            self.issues.append(Issue("'tasks' is missing", doc.file, hint="the mlbox.yaml of a legacy MLBox maps each task name to its inputs and outputs"))
            return result
        if not isinstance(raw, dict) or not raw:
            self.issues.append(doc.issue(("tasks",), "must be a mapping of task name to {inputs, outputs}", value=True))
            return result
        tasks: list[tuple[str, KeyPath, dict[str, list[str]], dict[str, str], dict[str, str], bool]] = []
        for tname, body in raw.items():
            path: KeyPath = ("tasks", tname)
            if body is None:
                body = {}
            if not isinstance(body, dict):
                self.issues.append(doc.issue(path, "a task must be a mapping with 'inputs' and 'outputs'", value=True))
                continue
            for key in body:
                if key not in ("inputs", "outputs", "description", "desc"):
                    self.issues.append(doc.issue((*path, key), f"unknown key '{key}' in task '{tname}'", did_you_mean(key, ("inputs", "outputs"))))
            declared: dict[str, list[str]] = {}
            for io in (INPUT, OUTPUT):
                group = body.get(io + "s")
                gpath: KeyPath = (*path, io + "s")
                if group is None:
                    names: list[str] = []
                elif isinstance(group, dict):
                    names = [str(k) for k in group]
                elif isinstance(group, list) and all(isinstance(n, str) for n in group):
                    names = list(group)
                else:
                    self.issues.append(doc.issue(gpath, f"must be a mapping of {io} name to its description", value=True))
                    names = []
                declared[io] = names
            sets = self.poc_sets(tname)
            defaults: dict[str, str] = {}
            samples: dict[str, str] = {}  # paths that tell the types when there is no default set
            if DEFAULT_SET in sets:
                defaults = self.poc_bindings(tname, DEFAULT_SET, declared[INPUT] + declared[OUTPUT]) or {}
                samples = defaults
            elif sets:
                self.notes.append(
                    f"task '{tname}' has no default parameter set (tasks/{tname}/default.yaml): each parameter defaults to its own name; "
                    f"choose a set with BOX:{tname}/SET ({', '.join(sets)})"
                )
                samples = self.poc_bindings(tname, sets[0], declared[INPUT] + declared[OUTPUT]) or {}
            tasks.append((tname, path, declared, defaults, samples, DEFAULT_SET in sets))
        # outputs first: an input another task produces takes that output's type
        produced: dict[str, str] = {}
        typed: dict[tuple[str, str, str], tuple[str, str | None]] = {}
        for io in (OUTPUT, INPUT):
            for tname, _, declared, defaults, samples, has_default in tasks:
                for pname in declared[io]:
                    default = defaults.get(pname)
                    if default is None:
                        default = pname
                        if has_default:
                            self.notes.append(f"task '{tname}', {io} '{pname}': not bound in tasks/{tname}/default.yaml; it defaults to '{pname}'")
                    sample = samples.get(pname, default)
                    ptype = _guess_type(sample, self.root, io)
                    if io == OUTPUT:
                        produced.setdefault(os.path.normpath(sample), ptype or DIRECTORY)
                        if not (self.root / "workspace" / sample).exists():
                            self.assumptions.append(f"task '{tname}', output '{pname}': '{sample}' is taken as a {ptype} (the legacy format has no types)")
                    elif ptype is None:
                        ptype = produced.get(os.path.normpath(sample))
                    typed[(tname, io, pname)] = (default, ptype)
        for tname, path, declared, _, _, _ in tasks:
            params: dict[str, Any] = {}
            for io in (INPUT, OUTPUT):
                group_out: dict[str, Any] = {}
                for pname in declared[io]:
                    group_out[prefix + pname] = _param(*typed[(tname, io, pname)])
                    self.mark(("tasks", tname, "parameters", io + "s", prefix + pname), doc, (*path, io + "s", pname))
                if group_out:
                    params[io + "s"] = group_out
            result[tname] = params
        return result

    def poc_sets(self, task: str) -> list[str]:
        folder = self.root / "tasks" / task
        return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []

    def poc_bindings(self, task: str, name: str, declared: Sequence[str]) -> dict[str, str] | None:
        path = self.root / "tasks" / task / f"{name}.yaml"
        doc = self.load(path, "parameter set")
        if doc is None:
            return None
        bindings = _bindings(doc, (), declared, task, self.issues)
        for pname in bindings:
            if bindings[pname].startswith("workspace/"):
                self.notes.append(f"{self.rel(path)}: '{bindings[pname]}' is relative to the workspace, so it means workspace/{bindings[pname]}")
        return bindings

    def mlbox_implementation(self, doc: Document, base: KeyPath, kind: Any, impl: dict[str, Any], config: dict[str, Any]) -> list[str] | None:
        """Runner sections for the implementation; returns the command each task entrypoint starts with."""
        if kind not in IMPLEMENTATION_TYPES:
            if kind is None:
                self.issues.append(Issue("'implementation_type' is missing", doc.file, hint="one of " + ", ".join(IMPLEMENTATION_TYPES)))
            else:
                key: KeyPath = (*base, "implementation_type")
                self.issues.append(doc.issue(key, f"unknown implementation_type '{kind}'", did_you_mean(str(kind), IMPLEMENTATION_TYPES), value=True))
            return None
        if kind in ("docker", "standard_docker"):
            return self.docker_implementation(doc, base, impl, config)
        if kind in BARE_METAL:
            return self.python_implementation(doc, impl, config, kind)
        where = "implementation/singularity/recipes" if kind == "singularity" else "its configure/run commands"
        self.notes.append(f"implementation_type '{kind}' is not converted ({where}): add a docker or local section to run the tasks")
        return None

    def python_implementation(self, doc: Document, impl: dict[str, Any], config: dict[str, Any], kind: str) -> list[str] | None:
        """direct_python: `cd implementation; python MAIN_FILE ...`; python: `python ENTRYPOINT ...` from the box root."""
        key = "main_file" if kind == "direct_python" else "entrypoint"
        program = impl.get(key)
        if not isinstance(program, str) or not program.strip():
            if key in impl:
                self.issues.append(doc.issue((key,), "must be a path to the program", value=True))
            else:
                self.issues.append(Issue(f"'{key}' is missing", doc.file, hint=f"implementation_type {kind} needs '{key}: main.py'"))
            return None
        workdir = "implementation" if kind == "direct_python" else "."
        if not (self.root / workdir / program).is_file():
            self.issues.append(doc.issue((key,), f"{self.rel(self.root / workdir / program)} does not exist", value=True))
        local: dict[str, Any] = {}
        python = "python"
        interpreter = impl.get("interpreter")
        raw_system = impl.get("system")
        system: dict[str, Any] = raw_system if isinstance(raw_system, dict) else {}
        if interpreter in (None, "", "current", "system") and not system.get("interpreter"):
            local["env"] = "current"  # the interpreter cuberun runs on, like the MLBox runner's sys.executable
        elif interpreter == "system":
            python = str(system["interpreter"])
            local["env"] = "system"
        else:
            self.notes.append(f"interpreter '{interpreter}' ({_flow(impl.get(str(interpreter)))}) is replaced by a venv managed by cuberun")
            settings = impl.get(str(interpreter))
            if isinstance(settings, dict) and settings.get("base_interpreter"):
                local["python"] = str(settings["base_interpreter"])
        requirements = impl.get("requirements")
        if isinstance(requirements, str) and requirements.strip():
            if requirements.endswith(".txt"):
                local["requirements"] = requirements
            else:
                local["packages"] = requirements.split()
            local.pop("env", None)  # requirements need the managed venv
        command = [python, program]
        config["local"] = {"command": shlex.join(command), "workdir": workdir, **local}
        return command

    def docker_implementation(self, doc: Document, base: KeyPath, impl: dict[str, Any], config: dict[str, Any]) -> list[str] | None:
        image = impl.get("image")
        if not isinstance(image, str) or not image.strip():
            if "image" in impl:
                self.issues.append(doc.issue((*base, "image"), "must be an image name", value=True))
            else:
                self.issues.append(Issue("'image' is missing", doc.file, hint="a docker implementation needs 'image: repo/name:tag'"))
            return None
        docker: dict[str, Any] = {"image": image}
        recipe = self.root / POC_DOCKERFILE
        configure = impl.get("configure", "build")
        if configure == "build" and recipe.is_file():
            docker.update(build_context=".", build_file=POC_DOCKERFILE, build_strategy="auto")
            ignore = self.root / ".dockerignore"
            if not (ignore.is_file() and "workspace" in ignore.read_text(encoding="utf-8", errors="replace")):
                self.notes.append("the build context is the box root, workspace/ included: every run changes it, so the image is rebuilt "
                                  "(from the layer cache) before the next run; a .dockerignore listing workspace/ avoids that")
        elif configure == "build":
            self.notes.append(f"configure: build, but there is no {POC_DOCKERFILE}: the image is pulled")
        elif configure != "pull":
            self.notes.append(f"configure: {configure} is not supported: the image is pulled")
        runtime = impl.get("docker_runtime")
        if runtime not in (None, "", "docker"):
            self.notes.append(f"docker_runtime: {runtime} is not carried over: request GPUs with --gpus=all (or platform.accelerator_count)")
        for key in ("docker_args", "run_args"):
            if impl.get(key):
                self.notes.append(f"{key}: {_flow(impl[key])} is not carried over (docker run options of the MLBox runner); "
                                  "add the ones you still need to docker.extra_run_args")
        config["docker"] = docker
        self.notes.append("the tasks start the program inside the image: run them with --platform=docker (a docker MLBox has no bare-metal command)")
        entry = _tokens(impl.get("command"))
        if entry:
            entry += _tokens(impl.get("args"))
            return entry
        if impl.get("args"):
            self.notes.append(f"args: {_flow(impl['args'])} without a command is not carried over")
        if recipe.is_file():
            from cuberun import dockerfile

            df = dockerfile.parse(recipe, self.root)
            if df.entrypoint and not df.entrypoint_shell_form:
                return list(df.entrypoint)
            if df.entrypoint:
                self.notes.append(f"{POC_DOCKERFILE}: the shell-form ENTRYPOINT ignores arguments, so --mlbox_task cannot reach the program")
                return None
        self.notes.append(
            "the image's ENTRYPOINT is unknown (no command and no Dockerfile): the task name is passed as the first argument "
            "instead of --mlbox_task; add entrypoint: '<program> --mlbox_task=<task>' to each task"
        )
        return None
