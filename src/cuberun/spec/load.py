"""Load and validate `mlcube.yaml` (config 2.0): every problem is reported at once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cuberun.errors import Issue, SpecError
from cuberun.hints import closest, did_you_mean
from cuberun.schema import Field, validate_section
from cuberun.spec.interpolate import InterpolationError, Interpolator
from cuberun.spec.model import DIRECTORY, FILE, INPUT, OUTPUT, UNKNOWN, Cube, Param, Task
from cuberun.yamlio import Document, KeyPath, copy_data, dotted

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

CUBE_FILE = "mlcube.yaml"
CONTAINER_CONFIG_FILE = "container_config.yaml"  # MedPerf's (spec/container_config.py, loaded only for one)

METADATA_KEYS = ("name", "description", "authors", "version", "platform", "tasks")
OWN_SECTION = "cuberun"

PLATFORM_SCHEMA = {
    "accelerator_count": Field((int,), doc="number of accelerators the task needs"),
    "num_accelerators": Field((int,), doc="older spelling of accelerator_count"),
    "accelerator_maker": Field((str,)),
    "accelerator_model": Field((str,)),
    "host_memory_gb": Field((int, float)),
    "host_disk_space_gb": Field((int, float)),
    "need_internet_access": Field((bool,)),
}
OWN_SCHEMA = {"depends_on": Field((dict,), doc="task -> list of tasks it depends on")}
TASK_KEYS = ("entrypoint", "parameters", "timeout", "retries")  # timeout, retries: cuberun's (retry.py)
PARAMETERS_KEYS = ("inputs", "outputs")
PARAM_KEYS = ("type", "default", "opts")


def find_cube_file(mlcube: str | os.PathLike[str] | None) -> Path:
    """The cube file named by --mlcube (a directory or a YAML file; default: the CWD)."""
    path = Path(os.path.expanduser(str(mlcube))) if mlcube not in (None, "") else Path.cwd()
    path = Path(os.path.abspath(path))
    _check_readable(path)
    if path.is_dir():
        candidate = path / CUBE_FILE
        if candidate.is_file() or os.path.lexists(candidate):  # not a regular file: the loader says what it is
            return candidate  # also when a container_config.yaml is next to it: load_cube says so
        other = path / "container_config.yaml"
        if other.is_file():
            return other
        # -- legacy MLBox layouts (spec/legacy/): mlbox.yaml, or a .mlcube.yaml with tasks --
        from cuberun.spec import legacy

        legacy_file = legacy.find_root_file(path)
        if legacy_file is not None:
            return legacy_file
        if (path / legacy.IMPLEMENTATION_FILE).is_file():
            raise SpecError([Issue(f"no {CUBE_FILE} or mlbox.yaml in {path}",
                                   hint=f"{legacy.IMPLEMENTATION_FILE} belongs to a legacy MLBox, whose mlbox.yaml names the tasks")])
        # -- end legacy --
        raise SpecError([Issue(f"no {CUBE_FILE} in {path}", hint="pass --mlcube=DIR with the cube's directory, or the YAML file itself")])
    if path.exists():
        return path
    raise SpecError([Issue(f"{path} does not exist", hint="pass --mlcube=DIR with the cube's directory, or its mlcube.yaml")])


def _check_readable(path: Path) -> None:
    """A cube folder (or file) that cannot be looked into is a one-line error naming it."""
    import stat

    from cuberun.safeio import os_problem, shown

    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode) and not os.access(path, os.X_OK):  # its files cannot be reached
            raise PermissionError(13, "Permission denied", str(path))
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno == 20:  # ENOTDIR: a file given as --mlcube
            return
        where = "cube folder" if os.path.isdir(path) else "cube path"
        raise SpecError([Issue(f"cannot read the {where} {shown(path)}: {os_problem(exc)}",
                               hint="check its permissions (ls -ld), or run as a user who can read it")]) from None


def runner_section_names(config: Any) -> list[str]:
    """The runner sections of a loaded cube's config (built in or a plugin's), in registry order."""
    from cuberun.runners.registry import sections_in

    return sections_in(k for k in config if k not in METADATA_KEYS and k not in (OWN_SECTION, "runtime", "workspace"))


def known_top_level() -> tuple[str, ...]:
    """The top-level keys of a cube without a plugin: metadata, our own section and the built-in
    runners' sections (a plugin's section is known through registry.sections_in)."""
    from cuberun.runners.registry import builtin_sections

    return (*METADATA_KEYS, OWN_SECTION, *builtin_sections())


def parse_assignment(text: str, origin: str) -> tuple[str, str]:
    """Split `key=value` at the first '=' (the reference truncated `a=/x=y` to `/x`)."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SpecError([Issue(f"'{text}' is not of the form key=value", origin, hint="write it as key=value, e.g. -Pdocker.image=repo/name:tag")])
    return key, value


STRING_KEYS = ("version", "name", "image", "tag", "description")  # kept as written outside a runner section


def typed_value(raw: str, existing: Any, key_name: str = "", spec: Any = None) -> Any:
    """A -P value: typed by the runner's Field when the key is a runner section's (`spec`); else
    like YAML, but kept a string where a string is expected (a string now, metadata, versions)."""
    from cuberun.schema import typed

    if spec is not None:
        return typed(raw, spec)
    if isinstance(existing, str) or key_name in STRING_KEYS:
        return raw
    return typed(raw, None)


def _runner_field(parts: Sequence[str]) -> Any:
    """The Field of a runner section's key (`docker.image`), None for anything else."""
    if len(parts) != 2 or parts[0] in METADATA_KEYS or parts[0] == OWN_SECTION:
        return None
    from cuberun.errors import CuberunError
    from cuberun.runners.registry import section_schema, sections_in

    if not sections_in([parts[0]]):
        return None
    try:
        return (section_schema(parts[0]) or {}).get(parts[1])
    except CuberunError:  # the runner is not installed: typed like YAML
        return None


def apply_overrides(data: dict[str, Any], assignments: Sequence[str], origin: str = "-P") -> dict[str, Any]:
    """Merge `-Pkey.path=value` assignments into a copy of the config."""
    if not assignments:
        return dict(data)
    result = copy_data(data)
    for text in assignments:
        key, raw = parse_assignment(text, origin)
        parts = key.split(".")
        if any(not p for p in parts):
            raise SpecError([Issue(f"'{key}' is not a valid key path", origin, hint="write dotted keys like docker.image")])
        node: Any = result
        for part in parts[:-1]:
            nxt = node.get(part) if isinstance(node, dict) else None
            if nxt is None:
                nxt = {}
                node[part] = nxt
            elif not isinstance(nxt, dict):
                raise SpecError([Issue(f"cannot set '{key}': '{part}' is not a mapping", origin)])
            node = nxt
        node[parts[-1]] = typed_value(raw, node.get(parts[-1]), parts[-1], _runner_field(parts))
    return result


def is_container_config(file: Path, data: Any) -> bool:
    """A MedPerf container_config.yaml (spec/container_config.py), by its name or its `container_type`."""
    return file.name == CONTAINER_CONFIG_FILE or (isinstance(data, dict) and "container_type" in data)


def load_cube(
    mlcube: str | os.PathLike[str] | None = None,
    *,
    workspace: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> Cube:
    """Load, interpolate and validate a cube; raise SpecError listing every problem."""
    from cuberun import yamlio

    file = find_cube_file(mlcube)
    doc = yamlio.load(file, "cube file")
    if is_container_config(file, doc.data):
        from cuberun.spec import container_config  # here: a large module, for MedPerf cubes only

        return container_config.build(doc, file, workspace=workspace, overrides=overrides)
    # -- legacy MLBox formats (spec/legacy/): converted to config 2.0 in memory --
    conversion = None
    if _maybe_legacy(file, doc.data):  # a cheap test first: the legacy package is large
        from cuberun.spec import legacy

        conversion = legacy.convert_loaded(file, doc)
    if conversion is not None:
        cube = build_cube(conversion.document(), file, workspace=workspace, overrides=overrides, env=env, fmt=conversion.format)
        cube.warnings.append(conversion.summary())
        return cube
    # -- end legacy --
    cube = build_cube(doc, file, workspace=workspace, overrides=overrides, env=env)
    other = file.parent / CONTAINER_CONFIG_FILE
    if file.name == CUBE_FILE and other.is_file() and Path(os.path.abspath(os.path.expanduser(str(mlcube or ".")))).is_dir():
        cube.warnings.append(Issue(f"{file.parent} holds both {CUBE_FILE} and {CONTAINER_CONFIG_FILE}: using {CUBE_FILE}", str(file),
                                   hint=f"pass --mlcube={other} to run the other one", severity="warning"))
    return cube


def _maybe_legacy(file: Path, data: Any) -> bool:
    if file.name != CUBE_FILE:
        return True
    if not isinstance(data, dict):
        return False
    tasks = data.get("tasks")
    return "schema_type" in data or isinstance(tasks, list) or (
        isinstance(tasks, dict) and any(isinstance(body, dict) and isinstance(body.get("parameters"), list) for body in tasks.values())
    )


def build_cube(
    doc: Document,
    file: Path,
    *,
    workspace: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    env: dict[str, str] | None = None,
    fmt: str = "2.0",
) -> Cube:
    issues: list[Issue] = []
    warnings: list[Issue] = []
    root = file.parent
    data = doc.data
    if data is None:
        raise SpecError([Issue("the file is empty", doc.file, hint="a cube needs 'name', 'tasks' and usually a 'docker' section")])
    if not isinstance(data, dict):
        raise SpecError([doc.issue((), f"the top level must be a mapping, not {type(data).__name__}", "start with 'name:' and 'tasks:'", value=True)])

    ws = Path(os.path.abspath(os.path.expanduser(str(workspace)))) if workspace else root / "workspace"
    from cuberun.safety import workspace_issue

    problem = workspace_issue(ws)
    if problem is not None:
        raise SpecError([problem])
    cube_overrides = [o for o in overrides if not o.startswith("runner.")]
    data = apply_overrides(data, cube_overrides)
    config: dict[str, Any] = dict(data)
    runtime = dict(config.get("runtime") or {}) if isinstance(config.get("runtime"), dict) else {}
    runtime.update(root=str(root), workspace=str(ws))
    config["runtime"] = runtime
    config["workspace"] = str(ws)

    # top-level keys
    from cuberun.runners.registry import sections_in

    known = known_top_level()
    runner_sections = sections_in(k for k in data if k not in METADATA_KEYS and k != OWN_SECTION)  # plugins' too
    for key in data:
        if key in known or key in ("runtime", "workspace") or key in runner_sections:
            continue
        guess = closest(key, known)
        if guess is not None and guess not in data:
            issues.append(doc.issue((key,), f"unknown top-level key '{key}'", f"did you mean '{guess}'?"))
        else:
            warnings.append(doc.issue((key,), f"unknown top-level key '{key}' is ignored", severity="warning"))

    interp = Interpolator(config, env)

    def resolve(path: KeyPath, value: Any) -> Any:
        try:
            return interp.resolve(value)
        except InterpolationError as exc:
            issues.append(doc.issue(path, exc.message, exc.hint, value=True))
            return None

    # metadata
    name = resolve(("name",), data.get("name"))
    if name is None and "name" not in data:
        issues.append(Issue("'name' is missing", doc.file, hint="add 'name: my_cube' at the top level"))
    elif (not isinstance(name, (str, int, float)) or isinstance(name, bool) or str(name).strip() == "") and "name" in data:
        issues.append(doc.issue(("name",), "must be a non-empty string", value=True))
    version_raw = data.get("version")
    version = None
    if version_raw is not None:
        if isinstance(version_raw, (dict, list)):
            issues.append(doc.issue(("version",), "must be a string", value=True))
        else:
            # `version: 1.10` is YAML's float 1.1: keep the text as written
            text = version_raw if isinstance(version_raw, str) else doc.raw_scalars.get(("version",), str(version_raw))
            version = str(resolve(("version",), text))
            config["version"] = version
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        issues.append(doc.issue(("description",), "must be a string", value=True))
    authors = data.get("authors") or []
    if not isinstance(authors, list):
        issues.append(doc.issue(("authors",), "must be a list of {name, email, org}", value=True))
        authors = []

    platform = data.get("platform") or {}
    validate_section(platform, PLATFORM_SCHEMA, ("platform",), doc, issues)
    platform = resolve(("platform",), platform) if isinstance(platform, dict) else {}
    if isinstance(platform, dict):
        for key in ("accelerator_count", "num_accelerators"):
            count = platform.get(key)
            if isinstance(count, int) and not isinstance(count, bool) and count < 0:
                issues.append(doc.issue(("platform", key), "must be 0 or more", value=True))

    own = data.get(OWN_SECTION)
    validate_section(own, OWN_SCHEMA, (OWN_SECTION,), doc, issues)

    tasks = _load_tasks(doc, data, resolve, issues)
    depends_on = _load_depends_on(doc, own, tasks, issues)

    # runner sections present in the cube are checked against their runner's schema
    from cuberun.runners.registry import section_schema

    for section in runner_sections:
        schema = section_schema(section)
        if schema is not None:
            validate_section(data[section], schema, (section,), doc, issues)

    if issues:
        raise SpecError(_blame_overrides(issues, cube_overrides))
    return Cube(
        file=file,
        root=root,
        workspace=ws,
        name=str(name),
        version=version,
        description=description,
        authors=authors,
        platform=platform if isinstance(platform, dict) else {},
        tasks=tasks,
        config=config,
        doc=doc,
        depends_on=depends_on,
        warnings=warnings,
        format=fmt,
    )


def _blame_overrides(issues: list[Issue], overrides: Sequence[str]) -> list[Issue]:
    """Problems in values that came from -P are reported against -P, not the file."""
    keys = [o.partition("=")[0].strip() for o in overrides]
    result = []
    for issue in issues:
        key = issue.key or ""
        if any(key == k or key.startswith(k + ".") for k in keys):
            issue = Issue(issue.message, "-P", None, None, issue.key, issue.hint, issue.severity)
        result.append(issue)
    return result


def _load_tasks(doc: Document, data: dict[str, Any], resolve: Any, issues: list[Issue]) -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    if "tasks" not in data:
        guess = closest("tasks", [k for k in data if k != "tasks"])
        hint = f"'{guess}' looks like a misspelling of 'tasks'" if guess else "add 'tasks:' mapping each task name to its parameters"
        issues.append(Issue("'tasks' is missing", doc.file, hint=hint))
        return tasks
    raw = data["tasks"]
    if isinstance(raw, list):
        issues.append(
            doc.issue(("tasks",), "'tasks' is a list: this looks like a config 1.0 (MLCommons Box) cube", "config 2.0 maps each task name to its entrypoint and parameters", value=True)
        )
        return tasks
    if not isinstance(raw, dict):
        issues.append(doc.issue(("tasks",), "must be a mapping of task name to task", value=True))
        return tasks
    if not raw:
        issues.append(doc.issue(("tasks",), "no tasks are defined", "add at least one task", value=True))
    for tname, body in raw.items():
        path: KeyPath = ("tasks", tname)
        if not tname.strip():
            issues.append(doc.issue(path, "a task name must not be empty"))
            continue
        if body is None:
            body = {}
        if not isinstance(body, dict):
            issues.append(doc.issue(path, f"a task must be a mapping with 'entrypoint' and 'parameters', not {type(body).__name__}", value=True))
            continue
        for key in body:
            if key not in TASK_KEYS:
                issues.append(doc.issue((*path, key), f"unknown key '{key}' in task '{tname}'", did_you_mean(key, TASK_KEYS)))
        entrypoint = resolve((*path, "entrypoint"), body.get("entrypoint"))
        if entrypoint is not None and not isinstance(entrypoint, str):
            issues.append(doc.issue((*path, "entrypoint"), "must be a string command line", value=True))
            entrypoint = None
        elif isinstance(entrypoint, str) and not entrypoint.strip():
            issues.append(doc.issue((*path, "entrypoint"), "must not be empty", "remove the key to use the image's ENTRYPOINT", value=True))
        elif isinstance(entrypoint, str):
            import shlex

            from cuberun.errors import quote_problem

            try:
                shlex.split(entrypoint)
            except ValueError as exc:
                issues.append(doc.issue((*path, "entrypoint"), quote_problem(entrypoint, exc),
                                        "balance the quotes (or escape them with \\)", value=True))
        params = body.get("parameters")
        inputs: list[Param] = []
        outputs: list[Param] = []
        if params is not None:
            if not isinstance(params, dict):
                issues.append(doc.issue((*path, "parameters"), "must be a mapping with 'inputs' and 'outputs'", value=True))
            else:
                for key in params:
                    if key not in PARAMETERS_KEYS:
                        issues.append(doc.issue((*path, "parameters", key), f"unknown key '{key}'", did_you_mean(key, PARAMETERS_KEYS)))
                for io, bucket in ((INPUT, inputs), (OUTPUT, outputs)):
                    group = params.get(io + "s")
                    gpath: KeyPath = (*path, "parameters", io + "s")
                    if group is None:
                        continue
                    if not isinstance(group, dict):
                        issues.append(doc.issue(gpath, "must be a mapping of parameter name to path", value=True))
                        continue
                    for pname, spec in group.items():
                        param = _load_param(doc, (*gpath, pname), pname, io, spec, resolve, issues)
                        if param is not None:
                            bucket.append(param)
        seen = {p.name for p in inputs}
        for p in outputs:
            if p.name in seen:
                issues.append(doc.issue(p.key, f"parameter '{p.name}' is both an input and an output of task '{tname}'", "give the output another name"))
        timeout, retries = _load_limits(doc, path, body, resolve, issues)
        tasks[tname] = Task(tname, entrypoint, tuple(inputs), tuple(outputs), timeout=timeout, retries=retries)
    return tasks


def _load_limits(doc: Document, path: KeyPath, body: dict[str, Any], resolve: Any, issues: list[Issue]) -> tuple[float | None, int | None]:
    """A task's `timeout` (seconds, more than 0) and `retries` (attempts after the first, 0-100)."""
    from cuberun.retry import MAX_RETRIES

    timeout = resolve((*path, "timeout"), body.get("timeout")) if "timeout" in body else None
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0 or timeout != timeout):
        issues.append(doc.issue((*path, "timeout"), "must be a number of seconds more than 0", "e.g. 'timeout: 600'", value=True))
        timeout = None
    retries = resolve((*path, "retries"), body.get("retries")) if "retries" in body else None
    if retries is not None and (isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES):
        issues.append(doc.issue((*path, "retries"), f"must be a whole number from 0 to {MAX_RETRIES} (attempts after the first)",
                                "e.g. 'retries: 2'", value=True))
        retries = None
    return (float(timeout) if timeout is not None else None), retries


def _load_param(doc: Document, path: KeyPath, name: str, io: str, spec: Any, resolve: Any, issues: list[Issue]) -> Param | None:
    if not name.strip() or any(ch.isspace() for ch in name) or "=" in name:
        issues.append(doc.issue(path, f"'{name}' is not a valid parameter name", "use letters, digits, '_' and '-'"))
        return None
    opts = None
    ptype = None
    if spec is None:
        default: Any = None
    elif isinstance(spec, str):
        default = spec
    elif isinstance(spec, dict):
        for key in spec:
            if key not in PARAM_KEYS:
                issues.append(doc.issue((*path, key), f"unknown key '{key}' in parameter '{name}'", did_you_mean(key, PARAM_KEYS)))
        default = spec.get("default")
        ptype = spec.get("type")
        opts = spec.get("opts")
        if ptype is not None and ptype not in (FILE, DIRECTORY):
            hint = did_you_mean(str(ptype), (FILE, DIRECTORY))
            issues.append(doc.issue((*path, "type"), f"type '{ptype}' is not 'file' or 'directory'", hint, value=True))
            ptype = None
        if opts is not None and opts not in ("ro", "rw"):
            issues.append(doc.issue((*path, "opts"), f"opts '{opts}' is not 'ro' or 'rw'", did_you_mean(str(opts), ("ro", "rw")), value=True))
            opts = None
        if io == OUTPUT and opts == "ro":
            issues.append(doc.issue((*path, "opts"), f"output '{name}' cannot be read-only", "remove 'opts: ro' from the output", value=True))
    else:
        issues.append(doc.issue(path, f"must be a path string or a mapping with type/default/opts, not {type(spec).__name__}", value=True))
        return None
    if default is not None and not isinstance(default, str):
        issues.append(doc.issue((*path, "default") if isinstance(spec, dict) else path, f"default must be a string path, not {type(default).__name__} {default!r}", "quote the value", value=True))
        return None
    if default is None or default == "":
        default = name
    default = resolve((*path, "default") if isinstance(spec, dict) else path, default)
    if default is None:
        return None
    default = str(default)
    if ptype is None:
        ptype = DIRECTORY if default.endswith(("/", "\\")) else UNKNOWN
    if io == OUTPUT and ptype == UNKNOWN:
        issues.append(
            doc.issue(path, f"output '{name}' has no type", "add 'type: file' or 'type: directory', or end a directory path with '/'", value=True)
        )
        return None
    return Param(name=name, io=io, default=default, type=ptype, opts=opts, key=path)


def _load_depends_on(doc: Document, own: Any, tasks: dict[str, Task], issues: list[Issue]) -> dict[str, list[str]]:
    result: dict[str, list[str]] = {}
    if not isinstance(own, dict) or not isinstance(own.get("depends_on"), dict):
        return result
    for tname, deps in own["depends_on"].items():
        path: KeyPath = (OWN_SECTION, "depends_on", tname)
        if tname not in tasks and tasks:
            issues.append(doc.issue(path, f"unknown task '{tname}'", did_you_mean(tname, tasks)))
            continue
        if isinstance(deps, str):
            deps = [deps]
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            issues.append(doc.issue(path, "must be a list of task names", value=True))
            continue
        for d in deps:
            if d not in tasks:
                issues.append(doc.issue(path, f"unknown task '{d}'", did_you_mean(d, tasks), value=True))
        result[tname] = list(deps)
    return result


__all__ = ["CUBE_FILE", "apply_overrides", "build_cube", "dotted", "find_cube_file", "load_cube", "parse_assignment"]
