"""The legacy MLBox formats: detect them and convert them into an equivalent config-2.0 cube.

Formats (contract section 7):

- ``mlbox-poc``: the MLBox proof of concept. ``mlbox.yaml`` names the tasks and their inputs and
  outputs; ``implementation/mlbox_implementation.yaml`` says how to run them (``direct_python``
  with ``main_file``, ``python`` with ``entrypoint``, or ``docker`` with ``image``/``command``/
  ``args``); ``tasks/<task>/<set>.yaml`` are parameter sets binding every input and output to a
  path relative to ``<box>/workspace``. The program receives the task as ``--mlbox_task=<task>``.
- ``mlbox-0.1``: the same layout as described in the original project documents (``mlbox.yaml``
  with ``type: mlbox``; the docker recipe in ``implementation/docker/dockerfiles/Dockerfile`` with
  the box root as its build context).
- ``1.0``: config 1.0, "MLCommons Box" / MLCube v1. A root file (``mlcube.yaml`` or
  ``mlbox.yaml``, ``schema_type: mlcube_root|mlbox_root``) lists task files; ``run/[<set>/]<task>.yaml``
  bind the parameters with ``$WORKSPACE``; ``platforms/*.yaml`` configure the runners. The task
  name is the first positional argument, as in config 2.0.
- ``pre-2.0``: the intermediate ``.mlcube.yaml`` (tasks with a list of ``{name, type, io}``).

The conversion keeps what the legacy program expects: a proof-of-concept task becomes a task
``entrypoint`` ending in ``--mlbox_task=<task>`` (so no positional task name is added), and a
bare-metal box gets a ``local:`` section with the command and the working directory the MLBox
runner used. Whatever cannot be expressed in config 2.0 is listed in ``Conversion.notes``.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any

from cuberun.errors import Issue, SpecError, UsageError
from cuberun.hints import did_you_mean
from cuberun.spec.model import DIRECTORY, FILE, INPUT, OUTPUT
from cuberun.valueclass import dataclass, field
from cuberun.yamlio import Document, KeyPath

if TYPE_CHECKING:
    from cuberun.spec.model import Cube

FORMAT_POC = "mlbox-poc"
FORMAT_MLBOX = "mlbox-0.1"
FORMAT_V1 = "1.0"
FORMAT_PRE2 = "pre-2.0"
LABELS = {
    FORMAT_POC: "MLBox proof of concept (mlbox.yaml + implementation/mlbox_implementation.yaml)",
    FORMAT_MLBOX: "MLBox 0.1 (mlbox.yaml with type: mlbox)",
    FORMAT_V1: "config 1.0 / MLCommons Box (root file with schema_type, tasks/, run/, platforms/)",
    FORMAT_PRE2: "pre-2.0 MLCube (tasks with lists of parameters)",
}

SHORT_LABELS = {FORMAT_POC: "MLBox proof of concept", FORMAT_MLBOX: "MLBox 0.1", FORMAT_V1: "config 1.0 (MLCommons Box)", FORMAT_PRE2: "pre-2.0 MLCube"}

MLBOX_FILE = "mlbox.yaml"
CUBE_FILE = "mlcube.yaml"
PRE2_FILE = ".mlcube.yaml"
IMPLEMENTATION_FILE = "implementation/mlbox_implementation.yaml"
POC_DOCKERFILE = "implementation/docker/dockerfiles/Dockerfile"
ROOT_SCHEMAS = ("mlbox_root", "mlcube_root")
TASK_SCHEMAS = ("mlbox_task", "mlcube_task")
INVOKE_SCHEMAS = ("mlbox_invoke", "mlcube_invoke")
TASK_FLAG = "--mlbox_task"
DEFAULT_SET = "default"
WORKSPACE_VARS = ("${WORKSPACE}", "$WORKSPACE")
BARE_METAL = ("direct_python", "python")
IMPLEMENTATION_TYPES = (*BARE_METAL, "docker", "standard_docker", "singularity", "exec")


@dataclass
class Conversion:
    """A legacy cube converted to a config-2.0 mapping (`config`), with what did not carry over."""

    format: str
    root: Path
    file: Path  # the legacy root file (mlbox.yaml, the config-1.0 root, .mlcube.yaml)
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what config 2.0 cannot express
    assumptions: list[str] = field(default_factory=list)  # what the conversion had to guess
    sources: list[Path] = field(default_factory=list)
    key_marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return LABELS[self.format]

    @property
    def short_label(self) -> str:
        return SHORT_LABELS[self.format]

    def document(self) -> Document:
        """The converted config as a Document: problems found later point into the legacy root file."""
        return Document(file=str(self.file), data=self.config, key_marks=dict(self.key_marks), value_marks=dict(self.key_marks))

    def summary(self) -> Issue:
        """The warning every command prints for a legacy cube: it names the format."""
        return Issue(
            f"legacy {self.short_label} cube (format {self.format}), converted to config 2.0 in memory",
            str(self.file),
            hint=f"`cuberun migrate {self.root}` writes it as config 2.0 and reports what does not carry over",
            severity="warning",
        )


# -- detection -------------------------------------------------------------------------------
def detect_data(data: Any, file: Path) -> str | None:
    """The legacy format of a loaded root file, or None for config 2.0 (or no cube at all)."""
    if not isinstance(data, dict):
        return None
    tasks = data.get("tasks")
    if data.get("schema_type") in ROOT_SCHEMAS or isinstance(tasks, list):
        return FORMAT_V1
    if isinstance(tasks, dict) and any(isinstance(body, dict) and isinstance(body.get("parameters"), list) for body in tasks.values()):
        return FORMAT_PRE2
    if file.name == MLBOX_FILE:
        return FORMAT_MLBOX if data.get("type") == "mlbox" else FORMAT_POC
    return None


def find_root_file(directory: Path) -> Path | None:
    """The legacy root file of a directory that has no mlcube.yaml: mlbox.yaml, or a
    .mlcube.yaml that defines tasks (a .mlcube.yaml without tasks holds user defaults)."""
    candidate = directory / MLBOX_FILE
    if candidate.is_file():
        return candidate
    candidate = directory / PRE2_FILE
    if candidate.is_file():
        import yaml

        try:
            data = yaml.safe_load(candidate.read_text(encoding="utf-8", errors="replace"))
        except yaml.YAMLError:
            return candidate  # let the loader report the syntax error with its position
        if isinstance(data, dict) and isinstance(data.get("tasks"), dict):
            return candidate
    return None


def detect(directory: Path) -> tuple[str, Path] | None:
    """(format, root file) of a legacy cube directory; None when it holds a config-2.0 cube or none."""
    from cuberun import yamlio

    for name in (CUBE_FILE, MLBOX_FILE, PRE2_FILE):
        file = directory / name
        if not file.is_file():
            continue
        try:
            data = yamlio.load(file, "cube file").data
        except SpecError:
            continue
        fmt = detect_data(data, file)
        if fmt is not None:  # a config-2.0 mlcube.yaml may sit next to legacy files (e.g. after migrate)
            return fmt, file
    return None


def convert_loaded(file: Path, doc: Document) -> Conversion | None:
    """Convert an already loaded root file when it is a legacy format; None for config 2.0."""
    fmt = detect_data(doc.data, file)
    if fmt is None:
        return None
    return _Converter(file, fmt).run(doc)


def convert(path: Path) -> Conversion:
    """Convert the legacy cube in a directory (or with this root file); SpecError if there is none."""
    from cuberun import yamlio

    path = Path(os.path.abspath(os.path.expanduser(str(path))))
    if path.is_dir():
        found = detect(path)
        root_file = found[1] if found else find_root_file(path)
        if root_file is None and (path / CUBE_FILE).is_file():
            root_file = path / CUBE_FILE  # config 2.0, or a file with a syntax error: loading it says which
        if root_file is None:
            raise SpecError([Issue(f"no legacy cube in {path}", hint="expected mlbox.yaml, or an mlcube.yaml with schema_type: mlcube_root")])
        path = root_file
    if not path.exists():
        raise SpecError([Issue(f"{path} does not exist", hint="pass the legacy cube's directory")])
    doc = yamlio.load(path, "cube file")
    conversion = convert_loaded(path, doc)
    if conversion is None:
        raise SpecError([Issue("already a config-2.0 cube", str(path), hint="there is nothing to migrate")])
    return conversion


# -- helpers ------------------------------------------------------------------------------------
def _text(doc: Document, path: KeyPath, value: Any) -> str | None:
    """A scalar as the file wrote it (so `version: 0.10` stays "0.10")."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, str):
        return value
    return doc.raw_scalars.get(path, str(value))


def strip_workspace(value: str) -> str:
    """`$WORKSPACE/x` -> `x` (relative to the workspace); `$WORKSPACE` alone -> `.`."""
    for var in WORKSPACE_VARS:
        if value == var:
            return "."
        if value.startswith(var + "/"):
            rest = value[len(var) + 1 :].lstrip("/")
            return rest or "."
    return value


def _guess_type(default: str, root: Path, io: str) -> str | None:
    """The type of a parameter the legacy format left untyped: what exists in the default
    workspace decides; otherwise an output with a file extension is a file, else a directory."""
    from cuberun.resolve import expand_path

    path = expand_path(default, root / "workspace")[0]
    if path.is_dir():
        return DIRECTORY
    if path.is_file():
        return FILE
    if default.endswith(("/", "\\")):
        return DIRECTORY
    if io == OUTPUT:
        return FILE if PurePath(default).suffix else DIRECTORY
    return None


def _param(default: str, ptype: str | None) -> dict[str, Any]:
    return {"type": ptype, "default": default} if ptype else {"default": default}


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _flow(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=10_000)).strip()


class _Converter:
    """One conversion: loads the legacy files once each and collects every problem."""

    def __init__(self, file: Path, fmt: str) -> None:
        self.file = file
        self.root = file.parent
        self.fmt = fmt
        self.issues: list[Issue] = []
        self.notes: list[str] = []
        self.assumptions: list[str] = []
        self.sources: list[Path] = [file]
        self.marks: dict[KeyPath, tuple[int, int]] = {}

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def load(self, path: Path, what: str) -> Document | None:
        from cuberun import yamlio

        try:
            doc = yamlio.load(path, what)
        except SpecError as exc:
            self.issues.extend(exc.issues)
            return None
        self.sources.append(path)
        if doc.data is None:
            self.issues.append(Issue(f"{what} is empty", str(path)))
            return None
        if not isinstance(doc.data, dict):
            self.issues.append(doc.issue((), f"{what} must be a mapping, not {type(doc.data).__name__}", value=True))
            return None
        return doc

    def mark(self, target: KeyPath, doc: Document, source: KeyPath) -> None:
        if doc.file == str(self.file):
            line, col = doc.position(source)
            if line is not None and col is not None:
                self.marks[target] = (line, col)

    def run(self, doc: Document) -> Conversion:
        if doc.data is None:
            raise SpecError([Issue("the file is empty", doc.file, hint="a legacy MLBox root file needs 'name' and 'tasks'")])
        if not isinstance(doc.data, dict):
            raise SpecError([doc.issue((), f"the top level must be a mapping, not {type(doc.data).__name__}", value=True)])
        if self.fmt == FORMAT_V1:
            config = self.config_v1(doc)
        elif self.fmt == FORMAT_PRE2:
            config = self.config_pre2(doc)
        else:
            config = self.config_mlbox(doc)
        if self.issues:
            raise SpecError(self.issues)
        return Conversion(self.fmt, self.root, self.file, config, self.notes, self.assumptions, list(dict.fromkeys(self.sources)), self.marks)

    # -- shared pieces ------------------------------------------------------------------------
    def metadata(self, doc: Document, name_keys: Sequence[str] = ("name",)) -> dict[str, Any]:
        data = doc.data
        out: dict[str, Any] = {}
        for key in name_keys:
            name = _text(doc, (key,), data.get(key))
            if name and name.strip():
                out["name"] = name
                self.mark(("name",), doc, (key,))
                break
        else:
            present = [key for key in name_keys if key in data]
            if present:
                self.issues.append(doc.issue((present[0],), "must be a non-empty string", value=True))
            else:
                self.issues.append(Issue(f"'{name_keys[0]}' is missing", doc.file, hint=f"add '{name_keys[0]}: my_box' at the top level"))
        version = _text(doc, ("version",), data.get("version"))
        if version is not None:
            out["version"] = version
        description = data.get("description")
        if isinstance(description, str):
            out["description"] = description
        author = data.get("author")
        if isinstance(author, str) and author.strip():
            out["authors"] = [{"name": author}]
        elif isinstance(data.get("authors"), list):
            out["authors"] = data["authors"]
        return out

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

    # -- pre-2.0 ------------------------------------------------------------------------------------
    def config_pre2(self, doc: Document) -> dict[str, Any]:
        config = self.metadata(doc)
        for key in ("platform", "docker", "singularity"):
            if isinstance(doc.data.get(key), dict):
                config[key] = doc.data[key]
        tasks: dict[str, Any] = {}
        for tname, body in (doc.data.get("tasks") or {}).items():
            path: KeyPath = ("tasks", tname)
            if not isinstance(body, dict):
                self.issues.append(doc.issue(path, "a task must be a mapping with 'parameters'", value=True))
                continue
            raw_sets = body.get("tasks")
            sets: dict[str, Any] = raw_sets if isinstance(raw_sets, dict) else {}
            chosen = tname if tname in sets else next(iter(sets), None)
            bound = _pre2_bindings(sets[chosen]) if chosen is not None else {}
            params: dict[str, Any] = {}
            plist = body.get("parameters")
            if isinstance(plist, dict):  # a config-2.0 task among pre-2.0 ones
                tasks[tname] = body
                continue
            for j, spec in enumerate(plist or []):
                ppath: KeyPath = (*path, "parameters", j)
                if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or spec.get("io") not in (INPUT, OUTPUT):
                    self.issues.append(doc.issue(ppath, "must be a mapping {name, type, io: input|output}", value=True))
                    continue
                pname, io, ptype = spec["name"], spec["io"], spec.get("type")
                if ptype not in (FILE, DIRECTORY):
                    self.issues.append(doc.issue((*ppath, "type"), f"type of '{pname}' must be 'file' or 'directory'", value=True))
                    continue
                params.setdefault(io + "s", {})[pname] = _param(bound.get(pname) or pname, ptype)
            entry = body.get("entrypoint")
            tasks[tname] = {**({"entrypoint": entry} if isinstance(entry, str) else {}), **({"parameters": params} if params else {})}
            self.mark(path, doc, path)
        if "docker" not in config:
            self.notes.append("no docker section: add docker.image to run in a container")
        config["tasks"] = tasks
        return config


# -- bindings and parameter sets ------------------------------------------------------------------
def _bindings(doc: Document, base: KeyPath, declared: Sequence[str] | None, task: str, issues: list[Issue]) -> dict[str, str]:
    """A mapping of parameter name -> path; unknown names and non-string paths are issues."""
    node = doc.data
    for part in base:
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        return {}
    if not isinstance(node, dict):
        issues.append(doc.issue(base, "must be a mapping of parameter name to path", value=True))
        return {}
    result: dict[str, str] = {}
    for name, value in node.items():
        path: KeyPath = (*base, name)
        if declared is not None and name not in declared:
            issues.append(doc.issue(path, f"task '{task}' has no parameter '{name}'", did_you_mean(name, declared, "parameter")))
            continue
        if isinstance(value, dict) and isinstance(value.get("path"), str):  # the k8s variant: {path, k8s: {pvc}}
            value = value["path"]
        if not isinstance(value, str) or not value.strip():
            issues.append(doc.issue(path, f"must be a path string, not {type(value).__name__} {value!r}", "quote the value", value=True))
            continue
        result[name] = strip_workspace(value)
    return result


def _invoke_bindings(doc: Document, declared: Sequence[str] | None, issues: list[Issue], task: str = "") -> dict[str, str]:
    schema = doc.data.get("schema_type")
    if schema is not None and schema not in INVOKE_SCHEMAS:
        issues.append(doc.issue(("schema_type",), f"schema_type '{schema}' is not an invoke schema", "expected mlcube_invoke or mlbox_invoke", value=True))
    task = task or str(doc.data.get("task_name") or "")
    result = _bindings(doc, ("input_binding",), declared, task, issues)
    result.update(_bindings(doc, ("output_binding",), declared, task, issues))
    return result


def _pre2_bindings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): strip_workspace(v) for k, v in value.items() if isinstance(v, str)}


def _v1_image(data: dict[str, Any]) -> str | None:
    for section in ("container", "configuration"):
        node = data.get(section)
        if isinstance(node, dict) and isinstance(node.get("image"), str):
            return str(node["image"])
    if isinstance(data.get("image"), str):
        return str(data["image"])
    for cfg in data.get("runner_configs") or []:
        image = cfg.get("exec", {}).get("container", {}).get("image") if isinstance(cfg, dict) else None
        if isinstance(image, str):
            return image
    return None


def _ssh_entry(data: Mapping[str, Any]) -> dict[str, Any]:
    """A cuberun settings platform entry for a legacy ssh platform file."""
    entry: dict[str, Any] = {"runner": "ssh", "host": data.get("host") or "HOST"}
    if data.get("user"):
        entry["user"] = data["user"]
    auth = data.get("authentication")
    if isinstance(auth, dict) and auth:
        entry["authentication"] = auth
    remote = data.get("platform")
    entry["platform"] = PurePath(str(remote)).stem if isinstance(remote, str) and remote else "docker"
    return entry


@dataclass(frozen=True)
class ParamSet:
    name: str
    file: str
    bindings: dict[str, str]


def paramset(cube: Cube, task: str, name: str) -> ParamSet:
    """The bindings of parameter set NAME of TASK, read from the legacy files next to the cube:
    tasks/<task>/<name>.yaml (MLBox), run/<name>/<task>.yaml (config 1.0), or the task's `tasks:`
    in a pre-2.0 file. Paths are relative to the workspace; they become parameter overrides."""
    from cuberun import yamlio

    root = cube.root
    declared = [p.name for p in cube.tasks[task].params]
    issues: list[Issue] = []
    prefixed = declared and all(n.startswith("mlbox_") for n in declared) and cube.format in (FORMAT_POC, FORMAT_MLBOX)

    def check(bindings: dict[str, str], doc: Document, origin: str) -> ParamSet:
        if prefixed:
            bindings = {n if n.startswith("mlbox_") else "mlbox_" + n: v for n, v in bindings.items()}
        unknown = [n for n in bindings if n not in declared]
        for n in unknown:
            issues.append(doc.issue((n,), f"task '{task}' has no parameter '{n}'", did_you_mean(n, declared, "parameter")))
        if issues:
            raise SpecError(issues)
        return ParamSet(name, origin, bindings)

    poc = root / "tasks" / task / f"{name}.yaml"
    if poc.is_file():
        doc = yamlio.load(poc, "parameter set")
        if doc.data is None:
            return ParamSet(name, str(poc), {})
        return check(_bindings(doc, (), None, task, issues), doc, str(poc))
    folder = root / "run" / name
    if folder.is_dir():
        candidates = [folder / f"{task}.yaml", *sorted(p for p in folder.glob("*.yaml") if p.stem != task)]
        for path in candidates:
            if not path.is_file():
                continue
            doc = yamlio.load(path, "invoke file")
            if not isinstance(doc.data, dict):
                continue
            named = doc.data.get("task_name")
            if (named or path.stem) != task:
                continue
            bindings = _invoke_bindings(doc, None, issues, task)
            return check(bindings, doc, str(path))
    for source in (root / PRE2_FILE, root / CUBE_FILE):
        if source.is_file() and cube.format == FORMAT_PRE2:
            doc = yamlio.load(source, "cube file")
            sets = ((doc.data or {}).get("tasks") or {}).get(task, {}).get("tasks") or {}
            if isinstance(sets, dict) and name in sets:
                return ParamSet(name, str(source), _pre2_bindings(sets[name]))
    if name == DEFAULT_SET:
        return ParamSet(name, "", {})  # the cube's defaults are the default set
    available = sorted(set(_available_sets(root, task)))
    looked = f"tasks/{task}/{name}.yaml or run/{name}/{task}.yaml"
    hint = did_you_mean(name, available, "parameter set") if available else f"task '{task}' has no parameter sets; drop '/{name}'"
    raise UsageError(f"no parameter set '{name}' for task '{task}' in {root} (looked for {looked})", hint)


def _available_sets(root: Path, task: str) -> list[str]:
    found = [p.stem for p in (root / "tasks" / task).glob("*.yaml")] if (root / "tasks" / task).is_dir() else []
    run = root / "run"
    if run.is_dir():
        found += [d.name for d in run.iterdir() if d.is_dir() and (d / f"{task}.yaml").is_file()]
    return found


# -- the seed's BOX[:TASK[/PARAMSET]] syntax ------------------------------------------------------
@dataclass(frozen=True)
class BoxRef:
    path: str
    task: str | None = None
    paramset: str | None = None


def parse_box_ref(text: str) -> BoxRef:
    """`./box:train/default` -> (./box, train, default). An existing path is taken whole."""
    if ":" not in text or os.path.exists(os.path.expanduser(text)):
        return BoxRef(text)
    path, _, spec = text.rpartition(":")
    task, _, name = spec.partition("/")
    task, name = task.strip(), name.strip()
    if not task:
        raise UsageError(f"'{text}' names no task after ':'", "write BOX:TASK or BOX:TASK/PARAMSET")
    if "/" in name:
        raise UsageError(f"'{text}': a parameter set name cannot contain '/'", "write BOX:TASK/PARAMSET")
    return BoxRef(path or ".", task, name or None)


def _looks_like_box(arg: str) -> bool:
    return ":" in arg or "/" in arg or os.sep in arg or os.path.isdir(os.path.expanduser(arg))


def split_run_args(mlcube: str | None, task: str | None, args: Sequence[str]) -> tuple[str | None, str | None, str | None, list[str]]:
    """`cuberun run [--mlcube=]BOX[:TASK[/PARAMSET]] ...`: the cube, task and parameter set, and
    the remaining arguments (overrides). Only the first bare argument may name the cube."""
    rest = list(args)
    ref: BoxRef | None = parse_box_ref(mlcube) if mlcube else None
    for i, arg in enumerate(rest):
        if arg.startswith("-") or "=" in arg:
            continue
        if _looks_like_box(arg):
            if mlcube:
                raise UsageError(f"the cube is given twice: --mlcube={mlcube} and '{arg}'", "name it once, as --mlcube=BOX[:TASK[/SET]] or as the first argument")
            ref = parse_box_ref(arg)
            del rest[i]
        break
    if ref is None:
        return mlcube, task, None, rest
    if ref.task is not None and task and task != ref.task:
        raise UsageError(f"the task is given twice: --task={task} and '{ref.task}' in {ref.path}:{ref.task}", "name it once")
    return ref.path, task or ref.task, ref.paramset, rest


def paramset_overrides(cube: Cube, tasks: Sequence[str], name: str | None) -> dict[str, str]:
    """The overrides of a parameter set (empty without one); it names exactly one task."""
    if not name:
        return {}
    if len(tasks) != 1:
        raise UsageError(f"parameter set '{name}' needs exactly one task, not {', '.join(tasks)}", "write BOX:TASK/PARAMSET")
    return dict(paramset(cube, tasks[0], name).bindings)


# -- migrate ----------------------------------------------------------------------------------------
def migrated_text(conversion: Conversion) -> str:
    """The config-2.0 file: a header naming the source format and what was not carried over."""
    from cuberun import yamlio

    sources = ", ".join(Path(s).relative_to(conversion.root).as_posix() if Path(s).is_relative_to(conversion.root) else str(s)
                        for s in conversion.sources)
    lines = [
        f"# Config 2.0, converted by `cuberun migrate` from the {conversion.label} files here:",
        f"#   {sources}",
    ]
    if conversion.format in (FORMAT_POC, FORMAT_MLBOX, FORMAT_V1):
        lines.append("# Parameter sets stay where they are: `cuberun run DIR:TASK/SET` still applies them.")
    if conversion.notes:
        lines.append("# Not carried over:")
        lines += [f"#   - {n}" for n in conversion.notes]
    if conversion.assumptions:
        lines.append("# Assumed (check these):")
        lines += [f"#   - {n}" for n in conversion.assumptions]
    return "\n".join(lines) + "\n" + yamlio.dump(conversion.config)


def default_output(conversion: Conversion) -> Path:
    """mlcube.yaml next to the legacy files, or mlcube.v2.yaml when mlcube.yaml IS the legacy root."""
    target = conversion.root / CUBE_FILE
    if target.resolve() == conversion.file.resolve():
        return conversion.root / "mlcube.v2.yaml"
    return target
