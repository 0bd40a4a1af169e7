"""The body of `cuberun run`, and a parser of its plain spellings that needs no click.

`cuberun run` is the command whose own time is overhead on every task (the docker runner's
target is 1.15x a raw `docker run`), and importing click is a fifth of that. `parse_plain`
reads the common spellings (`--opt=VALUE` of the string options, the long flags, each at most
once) into the keyword arguments click would pass; anything else (a short option, a separate
value, a typed or repeated option, a parameter override, --help) returns None and goes through
click as before. Both paths end in `run_command`. tests/cli/test_run_plain.py checks that the
table below agrees with the click command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence

from cuberun.errors import UsageError
from cuberun.hints import did_you_mean

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# `--name=VALUE` options of `run` taken without click: option -> keyword argument (type str)
PLAIN_VALUES = {
    "--mlcube": "mlcube", "--task": "task", "--platform": "platform", "--workspace": "workspace", "--gpus": "gpus",
    "--network": "network", "--security": "security", "--memory": "memory", "--cpu": "cpus", "--image-sha256": "image_sha256",
    "--decryption-key": "decryption_key",
}
# flags of `run` taken without click (long forms): option -> keyword argument
PLAIN_FLAGS = {
    "--dry-run": "dry_run", "--json": "as_json", "--allow-run-args": "allow_run_args", "--no-lock": "no_lock", "--allow-missing-inputs": "allow_missing_inputs",
    "--relax-pins": "relax_pins", "--rebuild-env": "rebuild_env", "--strict-outputs": "strict_outputs", "--force": "force",
    "--explain": "explain", "--no-deps": "no_deps", "--quiet": "quiet", "--verbose": "verbose",
}
# the other keyword arguments, at click's defaults
PLAIN_DEFAULTS: dict[str, Any] = {"params": (), "timeout": None, "retries": None, "retry_delay": None, "mount": None, "sweeps": (), "jobs": 1, "handshake": None, "overrides": ()}


def parse_plain(args: Sequence[str]) -> dict[str, Any] | None:
    """The keyword arguments of `run_command` for `run ARGS` (without `run`), or None when the
    arguments need click (see the module's text)."""
    kwargs: dict[str, Any] = {**PLAIN_DEFAULTS, **dict.fromkeys(PLAIN_VALUES.values()), **dict.fromkeys(PLAIN_FLAGS.values(), False)}
    seen: set[str] = set()
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in seen:
            return None
        if eq and name in PLAIN_VALUES:
            kwargs[PLAIN_VALUES[name]] = value
        elif not eq and name in PLAIN_FLAGS:
            kwargs[PLAIN_FLAGS[name]] = True
        else:
            return None
        seen.add(name)
    return kwargs


def _click_options() -> list[str]:
    """Every option spelling of the click command `run` (for did-you-mean hints)."""
    from cuberun.cli.commands import run

    return sorted({opt for p in run.params for opt in getattr(p, "opts", [])})


# -- shared with the other commands -------------------------------------------------
def _load(mlcube: str | None, workspace: str | None, params: Sequence[str]) -> Any:
    from cuberun.spec import load_cube

    for item in params:
        if "=" not in item:
            raise UsageError(f"-P '{item}' is not of the form key=value", "e.g. -Pdocker.build_strategy=auto")
    cube = load_cube(mlcube, workspace=workspace, overrides=params)
    for w in cube.warnings:
        print(f"cuberun: warning: {w.render()}", file=sys.stderr)
    return cube


def _split_extra(args: Sequence[str], known_options: Callable[[], list[str]]) -> list[str]:
    """Extra arguments are parameter overrides (name=value or --name=value)."""
    overrides = []
    for arg in args:
        if arg.startswith("-") and "=" not in arg:
            raise UsageError(f"unknown option '{arg}'", did_you_mean(arg, known_options(), "option"))
        overrides.append(arg)
    return overrides


def _check_dash_overrides(overrides: Sequence[str], cube: Any, tasks: Sequence[str], known_options: Callable[[], list[str]]) -> None:
    params = {p.name for t in tasks for p in cube.tasks[t].params}
    for item in overrides:
        if item.startswith("-"):
            name = item.lstrip("-").split("=", 1)[0]
            if name not in params:
                hint = did_you_mean("--" + name, known_options() + ["--" + p for p in sorted(params)], "option")
                raise UsageError(f"unknown option '--{name}'", hint)


def _progress_options(quiet: bool, verbose: bool) -> None:
    from cuberun import progress

    if quiet and verbose:
        raise UsageError("--quiet and --verbose exclude each other", "choose one")
    progress.configure(quiet=quiet, verbose=verbose)


def _record_time() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() - 1))


def _print_summary(cube: Any, mlcube: str | None, results: Sequence[Any] = (), failed_since: str | None = None) -> None:
    from cuberun import summary as summary_mod

    # after a failure: the results the error carries (this invocation's, skips included), else the records written since it started
    records = summary_mod.records_since(cube.workspace, failed_since) if failed_since and not results else []
    text = summary_mod.render(summary_mod.collect(cube.workspace, results, records, mlcube=mlcube))
    try:
        sys.stdout.flush()
        print(text, file=sys.stderr, flush=True)
    except OSError:
        pass


# -- run ---------------------------------------------------------------------------------
def run_command(*, mlcube: str | None, task: str | None, platform: str | None, workspace: str | None, params: tuple[str, ...],
                dry_run: bool, as_json: bool, gpus: str | None, network: str | None, timeout: float | None, retries: int | None,
                retry_delay: float | None, allow_run_args: bool, no_lock: bool,
                image_sha256: str | None, decryption_key: str | None, security: str | None, memory: str | None, cpus: str | None, mount: str | None, allow_missing_inputs: bool, relax_pins: bool,
                rebuild_env: bool, strict_outputs: bool, force: bool, explain: bool, no_deps: bool, sweeps: tuple[str, ...], jobs: int,
                handshake: int | None, quiet: bool, verbose: bool, overrides: tuple[str, ...],
                known_options: Callable[[], list[str]] = _click_options) -> int:
    """`cuberun run` once its options are parsed (by click, or by parse_plain). `known_options`:
    the command's option spellings, asked only for a did-you-mean hint."""
    from cuberun.execute import make_runner, run_tasks
    from cuberun.gpus import parse_gpus
    from cuberun.resolve import parse_overrides, select_tasks
    from cuberun.runners.base import RunOptions

    if handshake is not None:
        from cuberun.handshake import check_version

        check_version(handshake)
    _progress_options(quiet, verbose)
    summarize = not quiet and handshake is None  # an outer cuberun (ssh, slurm) prints its own summary
    rest = list(overrides)
    paramset = None
    if (mlcube and ":" in mlcube) or any(not a.startswith("-") and "=" not in a for a in rest):
        from cuberun.spec import legacy  # legacy MLBox: BOX[:TASK[/PARAMSET]]

        mlcube, task, paramset, rest = legacy.split_run_args(mlcube, task, rest)
    extra = _split_extra(rest, known_options)
    parse_gpus(gpus)
    cube = _load(mlcube, workspace, params)
    names = select_tasks(cube, task)
    # overrides may name parameters of the tasks that run first (the inferred dependencies) too
    from cuberun import graph

    involved = graph.order(cube, names, with_deps=not no_deps)
    _check_dash_overrides(extra, cube, involved, known_options)
    values = parse_overrides(extra, [cube.tasks[n] for n in names] + [cube.tasks[n] for n in involved if n not in names])
    if paramset:
        from cuberun.spec import legacy

        values = {**legacy.paramset_overrides(cube, names, paramset), **values}
    options = RunOptions(gpus=gpus, network=network, security=security, memory=memory, cpus=cpus, mount=mount,
                         allow_missing_inputs=allow_missing_inputs, relax_pins=relax_pins, rebuild_env=rebuild_env,
                         strict_outputs=strict_outputs, allow_run_args=allow_run_args, timeout=timeout, retries=retries, retry_delay=retry_delay, ignore_lock=no_lock,
                         image_sha256=image_sha256, decryption_key=decryption_key)
    runner = make_runner(cube, platform, options, params)

    from cuberun import checks, graph

    checks.preflight(cube, runner, graph.order(cube, names, with_deps=not no_deps, overrides=values), values)
    from cuberun.errors import TaskFailed

    started = _record_time()
    try:
        results = run_tasks(cube, runner, names, values, dry_run=dry_run, as_json=as_json, force=force, with_deps=not no_deps,
                            sweeps=sweeps, jobs=jobs, explain=explain)
    except TaskFailed as exc:
        if not dry_run and not explain and not as_json and summarize:
            _print_summary(cube, mlcube, getattr(exc, "results", ()), failed_since=started)
        raise
    if as_json and not dry_run and not explain:
        from cuberun import summary as summary_mod

        print(json.dumps({"tasks": [{"task": r.task, "exit_code": r.exit_code, "status": r.status, "run_id": r.run_id, "reason": r.reason,
                                     **({"sweep": r.sweep} if r.sweep else {})} for r in results],
                          "summary": summary_mod.collect(cube.workspace, results, mlcube=mlcube)}, indent=2))
    elif not dry_run and not explain and summarize:
        _print_summary(cube, mlcube, results)
    if any(r.status == "succeeded-with-warnings" for r in results):
        summary = ", ".join(f"{r.label}: {r.status}" for r in results)
        print(f"cuberun: finished with warnings ({summary})", file=sys.stderr)
    return 0
