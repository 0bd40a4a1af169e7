"""What `run` would find wrong, found without running: the checks `validate` adds to loading.

- files the `local:` section names (requirements files, the working directory, the program);
- environment variable names in every runner section (`execve` refuses a name with '=' or
  nothing in it; shells and most engines accept only letters, digits and '_');
- `$VAR` / `${VAR}` in parameter paths that the environment does not set (the path would
  otherwise be used with the literal `$VAR` in it);
- each task's paths as `run` resolves them (outputs outside the workspace, outputs that alias
  inputs, the cube or cuberun's state: see resolve.resolve_task);
- inputs that do not exist and that no task writes (a warning: they may be copied in later).

`run` itself calls `variable_issues` and `env_name_issues` before anything starts.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cuberun.errors import Issue, SpecError
from cuberun.lazyre import LazyPattern
from cuberun.spec.model import Cube

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

ENV_NAME = LazyPattern(r"[A-Za-z_][A-Za-z0-9_]*")
VARIABLE = LazyPattern(r"\$(?:\{([^}]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
PYTHON_NAMES = ("python", "python3")


def unset_variables(value: str, environ: Mapping[str, str] | None = None) -> list[str]:
    """The `$NAME` / `${NAME}` in `value` that os.path.expandvars would leave as they are."""
    env = os.environ if environ is None else environ
    found = []
    for match in VARIABLE.finditer(value):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name not in env and f"${name}" not in found:
            found.append(name)
    return found


def variable_issues(cube: Cube, tasks: Iterable[str], overrides: Mapping[str, str] | None = None,
                    environ: Mapping[str, str] | None = None) -> list[Issue]:
    """A parameter path with a variable the environment does not set: one issue each."""
    overrides = overrides or {}
    issues = []
    for name in tasks:
        for p in cube.tasks[name].params:
            value = overrides.get(p.name, p.default)
            missing = unset_variables(value, environ)
            if not missing:
                continue
            shown = ", ".join(f"${m}" for m in missing)
            message = f"{shown} in '{value}' {'is' if len(missing) == 1 else 'are'} not set in the environment"
            hint = f"export {missing[0]}=..., or override {p.name}=PATH"
            if p.name in overrides:
                issues.append(Issue(f"task '{name}', {p.io} '{p.name}': {message}", hint=hint))
            else:
                issues.append(cube.doc.issue(p.key, message, hint, value=True))
    return issues


def env_name_problem(name: str) -> tuple[str, str] | None:
    """(severity, problem) for an environment variable name, or None when it is fine."""
    if name == "" or "=" in name or "\x00" in name:
        return "error", f"'{name}' cannot be an environment variable name (it is empty, or has '=' or a NUL in it)"
    if not ENV_NAME.fullmatch(name):
        return "warning", f"'{name}' is not a portable environment variable name (letters, digits and '_', not starting with a digit)"
    return None


def env_keys(schema: Any) -> list[str]:
    """The keys of a runner schema that hold a task's environment (name -> value): Field(env=True)."""
    return [key for key, spec in (schema or {}).items() if getattr(spec, "env", False)]


def env_name_issues(section: str, values: Any, where: Any = None, schema: Any = None) -> list[Issue]:
    """Problems of the names in a section's environment mappings (the keys its runner's schema
    marks env=True). `where(key_path)` gives an Issue's position (the cube file), else the key
    path alone is said."""
    if schema is None:
        from cuberun.runners.registry import section_schema

        schema = section_schema(section)
    issues = []
    for key in env_keys(schema):
        mapping = values.get(key) if isinstance(values, Mapping) else None
        if not isinstance(mapping, Mapping):
            continue
        for name in mapping:
            found = env_name_problem(str(name))
            if found is None:
                continue
            severity, problem = found
            hint = "use letters, digits and '_', e.g. MY_SETTING"
            if where is not None:
                issues.append(where((section, key, str(name)), problem, hint, severity))
            else:
                issues.append(Issue(problem, key=f"{section}.{key}.{name}", hint=hint, severity=severity))
    return issues


def runner_env_issues(runner: Any) -> list[Issue]:
    """The environment names of a runner's effective config (platform, cube section and -P)."""
    section = getattr(runner, "section", None) or getattr(runner, "name", "")
    return env_name_issues(str(section), getattr(runner, "config", {}), schema=getattr(runner, "schema", {}))


def _local_issues(cube: Cube) -> list[Issue]:
    raw = cube.raw_section("local")
    if raw is None:
        return []
    try:
        local = cube.section("local")
    except SpecError as exc:
        return exc.issues
    doc = cube.doc
    issues: list[Issue] = []
    reqs = local.get("requirements")
    entries = [(("local", "requirements"), reqs)] if isinstance(reqs, str) else \
        [(("local", "requirements", i), r) for i, r in enumerate(reqs)] if isinstance(reqs, list) else []
    for key, rel in entries:
        path = cube.root / str(rel)
        if not path.exists():
            issues.append(doc.issue(key, f"requirements file {path} does not exist", "create it, or fix the path (relative to the cube folder)",
                                    value=True))
        elif not path.is_file():
            issues.append(doc.issue(key, f"requirements file {path} is not a regular file", "point to the requirements text file", value=True))
    workdir = cube.root
    if isinstance(local.get("workdir"), str):
        workdir = cube.root / local["workdir"]
        if not workdir.is_dir():
            what = "does not exist" if not workdir.exists() else "is not a directory"
            issues.append(doc.issue(("local", "workdir"), f"working directory {workdir} {what}", "give a folder relative to the cube folder",
                                    value=True))
            return issues
    else:
        docker = cube.raw_section("docker") or {}
        if isinstance(docker.get("build_context"), str):
            workdir = Path(os.path.normpath(cube.root / docker["build_context"]))
    command = local.get("command")
    tokens: list[str] = []
    if isinstance(command, str):
        try:
            tokens = shlex.split(command)
        except ValueError as exc:
            issues.append(doc.issue(("local", "command"), f"cannot be split into words: {exc}", "balance the quotes", value=True))
    elif isinstance(command, list):
        tokens = [str(t) for t in command]
    if len(tokens) >= 2 and os.path.basename(tokens[0]) in PYTHON_NAMES and tokens[1].endswith(".py"):
        program = Path(os.path.expanduser(tokens[1]))
        program = program if program.is_absolute() else workdir / program
        if not program.is_file():
            issues.append(doc.issue(("local", "command"), f"the program {program} does not exist", "fix the command, or local.workdir",
                                    value=True, severity="warning"))
    return issues


def _env_issues(cube: Cube) -> list[Issue]:
    from cuberun.spec.load import runner_section_names

    issues = []
    for section in runner_section_names(cube.config):
        raw = cube.raw_section(section)
        if raw is not None:
            issues += env_name_issues(section, raw, lambda key, problem, hint, severity: cube.doc.issue(key, problem, hint, severity=severity))
    return issues


def _task_issues(cube: Cube) -> list[Issue]:
    """Each task resolved as `run` resolves it, inputs not required to exist yet."""
    from cuberun.resolve import expand_path, resolve_task

    issues: list[Issue] = []
    for name in cube.tasks:
        try:
            # resolve_task also applies the safety invariants on outputs (an output aliasing an
            # input, the cube, the workspace root or cuberun's state) where they are on this branch
            resolve_task(cube, name, {}, allow_missing_inputs=True, check_inputs=False)
        except SpecError as exc:
            issues.extend(i for i in exc.issues if i not in issues)
    # ----- aliasing outputs: safety.output_issues (trust-safety, issue 11) runs inside resolve_task above
    produced = {str(expand_path(p.default, cube.workspace)[0]).rstrip("/") or "/" for t in cube.tasks.values() for p in t.outputs}

    def written(path: str) -> bool:  # the path or a folder above it is an output: a look-up per level, not a scan of every output
        here = path.rstrip("/") or "/"
        while True:
            if here in produced:
                return True
            parent = os.path.dirname(here)
            if parent == here:
                return False
            here = parent

    for t in cube.tasks.values():
        for p in t.inputs:
            if unset_variables(p.default):
                continue
            path = str(expand_path(p.default, cube.workspace)[0])
            if os.path.lexists(path) or written(path):
                continue
            issues.append(cube.doc.issue(p.key, f"task '{t.name}', input '{p.name}': {path} does not exist, and no task writes it",
                                         f"create it before running, or override {p.name}=PATH", value=True, severity="warning"))
    return issues


def cube_issues(cube: Cube) -> tuple[list[Issue], list[Issue]]:
    """(errors, warnings) that `validate` reports beyond loading the cube."""
    found = _local_issues(cube) + _env_issues(cube) + variable_issues(cube, cube.tasks)
    if not any(i.severity == "error" for i in found):
        found += _task_issues(cube)  # paths resolve only once their variables are set
    errors = [i for i in found if i.severity != "warning"]
    warnings = [i for i in found if i.severity == "warning"]
    return errors, warnings


def preflight(cube: Cube, runner: Any, tasks: Sequence[str], overrides: Mapping[str, str]) -> None:
    """What `run` checks before it starts anything: unset path variables, environment names.
    Errors raise SpecError (all at once); warnings are printed."""
    from cuberun.console import warn

    found = variable_issues(cube, tasks, overrides) + runner_env_issues(runner)
    for issue in found:
        if issue.severity == "warning":
            warn(issue.render())
    errors = [i for i in found if i.severity != "warning"]
    if errors:
        raise SpecError(errors)
