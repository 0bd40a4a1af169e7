"""cuberun commands. Each one parses options, calls the library, prints the result."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import click

from cuberun import __version__
from cuberun.hints import did_you_mean

# commands in modules of their own, imported only when used (start-up time), with the summary
# `cuberun --help` shows for them (tests/cli/test_help.py keeps it equal to the command's own)
LAZY = {
    "config": ("cuberun.cli.config_cmd:config", "Show and edit the settings file ($CUBERUN_SETTINGS or ~/.config/cuberun/settings.yaml)."),
    "create": ("cuberun.cli.create_cmd:create", "Create a new cube NAME from a template: mlcube.yaml, program, Dockerfile, workspace."),
    "env": ("cuberun.cli.env_cmd:env", "List, prune and rebuild the managed Python environments (the local runner's cache)."),
    "export": ("cuberun.cli.export_cmd:export", "Export a cube for another system (Backend.AI)."),  # Backend.AI kernel images
    "lock": ("cuberun.cli.lock_cmd:lock", "Write cuberun.lock next to the cube file: the digest of every image the cube's tasks use."),
    "migrate": ("cuberun.cli.migrate_cmd:migrate",  # legacy MLBox -> config 2.0
                "Write the config-2.0 mlcube.yaml of a legacy MLBox cube in PATH (a directory, or its root file)."),
    "runs": ("cuberun.cli.records_cmd:runs", "List the run records of a workspace."),
    "show": ("cuberun.cli.records_cmd:show", "Print one run record (RUN: its id, or a unique part of it)."),
    "graph": ("cuberun.cli.records_cmd:graph", "Print the task graph (dependencies inferred from paths, plus cuberun.depends_on)."),
    "export-provenance": ("cuberun.cli.records_cmd:export_provenance", "Write a Workflow Run RO-Crate (JSON-LD) for a run."),
    "report": ("cuberun.cli.records_cmd:report", "Write a self-contained HTML report of the runs in a workspace."),
}


def summary(command: click.Command) -> str:
    """A command's summary for the command list: its short help, or the whole first paragraph of
    its help (click's default cuts it at a width, or at the first '. ', as in 'e.g. ')."""
    if command.short_help:
        return " ".join(command.short_help.split())
    first = (command.help or "").strip().split("\n\n", 1)[0]
    return " ".join(first.replace("\b", " ").split())


class HelpGroup(click.Group):
    """A group whose command list shows every summary whole, wrapped instead of cut."""

    def summaries(self, ctx: click.Context) -> list[tuple[str, str]]:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command)))
        return rows

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = self.summaries(ctx)
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


class Group(HelpGroup):
    """Accept the reference's underscore spellings (show_config), suggest on typos, and load
    the rarely used commands lazily."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def summaries(self, ctx: click.Context) -> list[tuple[str, str]]:
        """Without importing the lazy commands (`cuberun --help` stays fast)."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name)
            if command is not None and not command.hidden:
                rows.append((name, summary(command)))
            elif command is None and name in LAZY:
                rows.append((name, LAZY[name][1]))
        return rows

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        for name in (cmd_name, cmd_name.replace("_", "-")):
            found = super().get_command(ctx, name)
            if found is not None:
                return found
            if name in LAZY:
                import importlib

                module, _, attr = LAZY[name][0].partition(":")
                command: click.Command = getattr(importlib.import_module(module), attr)
                self.add_command(command, name)
                return command
        return None

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            raise click.UsageError(f"unknown command '{name}' ({did_you_mean(name, self.list_commands(ctx), 'command')})", ctx)
        return super().resolve_command(ctx, args)


CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
PASSTHROUGH = {**CONTEXT, "ignore_unknown_options": True, "allow_extra_args": True}


@click.group(cls=Group, context_settings=CONTEXT)
@click.version_option(__version__, "--version", prog_name="cuberun", message="%(prog)s %(version)s")
@click.option("--debug", is_flag=True, help="Show a traceback for errors.")
@click.option("--log-level", "--log_level", "log_level", type=click.Choice(["critical", "error", "warning", "info", "debug"], case_sensitive=False),
              default="warning", help="Log level (accepted for compatibility with mlcube).")
def cli(debug: bool, log_level: str) -> None:
    """Run MLCube cubes anywhere: on the host, in containers, over SSH and on clusters."""


# -- shared options -------------------------------------------------------------------
def mlcube_option(f: Any) -> Any:
    return click.option("--mlcube", "mlcube", metavar="PATH", help="Cube directory, or its mlcube.yaml or container_config.yaml (default: current directory).")(f)


def platform_option(f: Any) -> Any:
    return click.option("--platform", metavar="NAME", help="Platform from the settings (default: local).")(f)


def workspace_option(f: Any) -> Any:
    return click.option("--workspace", metavar="DIR", help="Workspace directory (default: <cube>/workspace).")(f)


def p_option(f: Any) -> Any:
    return click.option("-P", "-p", "params", multiple=True, metavar="KEY=VALUE", help="Override a config value, e.g. -Pdocker.image=x:1.")(f)


def _load(mlcube: str | None, workspace: str | None, params: Sequence[str]) -> Any:
    from cuberun.cli.run_cmd import _load as load  # click-free (the `run` fast path uses it too)

    return load(mlcube, workspace, params)


def quiet_options(f: Any) -> Any:
    f = click.option("--verbose", "-v", is_flag=True, help="Show the tools' own output too (pip's, during an env build).")(f)
    return click.option("--quiet", "-q", is_flag=True, help="No progress display, no summary: only warnings, errors and the task's output.")(f)


def _progress_options(quiet: bool, verbose: bool) -> None:
    from cuberun.cli.run_cmd import _progress_options as progress_options

    progress_options(quiet, verbose)


# -- run ---------------------------------------------------------------------------------
@cli.command(context_settings=PASSTHROUGH)
@mlcube_option
@click.option("--task", "task", metavar="A,B", help="Task(s) to run, comma-separated (default: the only task, or all in order).")
@platform_option
@workspace_option
@p_option
@click.option("--dry-run", is_flag=True, help="Print the exact commands instead of running them.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (with --dry-run: the steps).")
@click.option("--gpus", metavar="SPEC", help="GPUs: all, N (0 = none), or device=0,1.")
@click.option("--network", metavar="NAME", help="Container network (docker --network); default: none, unless the cube declares platform.need_internet_access.")
@click.option("--timeout", "timeout", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop each attempt of a task after SECONDS (over the cube's tasks.<t>.timeout): the task exits 124; "
                   "its container is removed (k8s: the Job's activeDeadlineSeconds; slurm: also --time in minutes).")
@click.option("--retries", "retries", type=click.IntRange(0, 100), metavar="N",
              help="Run a failed task (non-zero exit or timeout) up to N more times (over the cube's tasks.<t>.retries; k8s: backoffLimit).")
@click.option("--retry-delay", "retry_delay", type=click.FloatRange(min=0), metavar="SECONDS",
              help="Wait before the second attempt (default 2), doubled for each later one, at most 300.")
@click.option("--allow-run-args", is_flag=True, help="Let the cube's raw container run arguments through beyond the allow-list (recorded as a relaxation).")
@click.option("--no-lock", is_flag=True, help="Docker/podman: do not verify the image against cuberun.lock (see `cuberun lock`).")
@click.option("--image-sha256", "image_sha256", metavar="HEX", help="The sha256 of a container_config.yaml archive or SIF file (checked; a URL needs one).")
@click.option("--decryption-key", "decryption_key", metavar="FILE", help="File holding the passphrase of an Encrypted* container_config.yaml image (GnuPG symmetric).")
@click.option("--security", metavar="OPT", help="Container security option.")
@click.option("--memory", metavar="SIZE", help="Memory limit, e.g. 4g.")
@click.option("--cpu", "cpus", metavar="SET", help="CPU set, e.g. 0-3.")
@click.option("--mount", type=click.Choice(["ro", "rw"]), help="Mount mode for every input (default: ro, or the parameter's opts).")
@click.option("--allow-missing-inputs", is_flag=True, help="Warn instead of failing when an input does not exist.")
@click.option("--relax-pins", is_flag=True, help="Local: relax ==/~= pins that have no build for the interpreter (each one is recorded).")
@click.option("--rebuild-env", is_flag=True, help="Local: build the managed Python env again, even after a remembered failure.")
@click.option("--strict-outputs", is_flag=True, help="Fail a task that exits 0 without writing a declared output.")
@click.option("--force", is_flag=True, help="Run even when the task is up to date.")
@click.option("--explain", is_flag=True, help="Say which tasks would run and why (with --json: and each task's identity); run nothing.")
@click.option("--no-deps", is_flag=True, help="Do not run the tasks that produce this task's inputs.")
@click.option("--sweep", "sweeps", multiple=True, metavar="KEY=V1,V2", help="Run the task once per value (repeat for a grid).")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=1, show_default=True, help="Independent tasks or sweep variants run at once.")
@click.option("--handshake", type=int, hidden=True, help="Set by an outer cuberun (ssh, slurm): write event lines for it (this version).")
@quiet_options
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def run(ctx: click.Context, mlcube: str | None, task: str | None, platform: str | None, workspace: str | None, params: tuple[str, ...],
        dry_run: bool, as_json: bool, gpus: str | None, network: str | None, timeout: float | None, retries: int | None,
        retry_delay: float | None, allow_run_args: bool, no_lock: bool, image_sha256: str | None, decryption_key: str | None, security: str | None,
        memory: str | None,
        cpus: str | None, mount: str | None, allow_missing_inputs: bool, relax_pins: bool, rebuild_env: bool, strict_outputs: bool,
        force: bool, explain: bool, no_deps: bool, sweeps: tuple[str, ...],
        jobs: int, handshake: int | None, quiet: bool, verbose: bool, overrides: tuple[str, ...]) -> int:
    """Run task(s) of a cube. Parameter overrides follow as NAME=PATH.

    The legacy MLBox form BOX[:TASK[/PARAMSET]] is accepted as --mlcube or as the first argument:
    PARAMSET (tasks/TASK/PARAMSET.yaml, or run/PARAMSET/TASK.yaml in config 1.0) sets the
    parameters, and NAME=PATH overrides still win."""
    from cuberun.cli.run_cmd import run_command

    return run_command(mlcube=mlcube, task=task, platform=platform, workspace=workspace, params=params, dry_run=dry_run, as_json=as_json,
                       gpus=gpus, network=network, timeout=timeout, retries=retries, retry_delay=retry_delay, allow_run_args=allow_run_args, no_lock=no_lock, image_sha256=image_sha256,
                       decryption_key=decryption_key, security=security, memory=memory,
                       cpus=cpus, mount=mount, allow_missing_inputs=allow_missing_inputs, relax_pins=relax_pins, rebuild_env=rebuild_env,
                       strict_outputs=strict_outputs, force=force, explain=explain, no_deps=no_deps, sweeps=sweeps, jobs=jobs,
                       handshake=handshake, quiet=quiet, verbose=verbose, overrides=(*overrides, *ctx.args),
                       known_options=lambda: sorted({opt for p in ctx.command.params for opt in getattr(p, "opts", [])}))


# -- configure ---------------------------------------------------------------------------
@cli.command()
@mlcube_option
@platform_option
@workspace_option
@p_option
@click.option("--dry-run", is_flag=True, help="Print what configure would run.")
@click.option("--relax-pins", is_flag=True, help="Local: relax ==/~= pins that have no build for the interpreter.")
@click.option("--rebuild-env", is_flag=True, help="Local: build the managed Python env again, even after a remembered failure.")
@quiet_options
def configure(mlcube: str | None, platform: str | None, workspace: str | None, params: tuple[str, ...], dry_run: bool, relax_pins: bool,
              rebuild_env: bool, quiet: bool, verbose: bool) -> int:
    """Prepare a platform for a cube: build or pull the image, create the env."""
    _progress_options(quiet, verbose)
    from cuberun.errors import RunnerUnavailable
    from cuberun.execute import make_runner
    from cuberun.runners.base import RunOptions

    cube = _load(mlcube, workspace, params)
    runner = make_runner(cube, platform, RunOptions(relax_pins=relax_pins, rebuild_env=rebuild_env), params)
    if dry_run:
        for step in runner.configure_steps():
            print(step.display())
        return 0
    reason = runner.unavailable_reason()
    if reason:
        raise RunnerUnavailable(reason)
    runner.configure()
    if not quiet:
        print(f"cuberun: cube '{cube.name}' is configured for platform '{runner.platform}'", file=sys.stderr)
    return 0


# -- describe / show-config / validate / inspect -----------------------------------------
from cuberun.describe import describe_data, param_type  # noqa: E402 - the data of `describe --json` (a core module, for cuberun.api)
from cuberun.describe import run_args_data as _run_args_data  # noqa: E402


def _run_args_text(t: Any) -> str:
    if t.run_args is None:
        return ""
    import shlex

    data = _run_args_data(t)
    parts = [f"entrypoint: {data['entrypoint']}"] if data["entrypoint"] else []
    if data["command"] is not None:
        parts.append(f"command: {shlex.join(data['command'])}")
    parts += [f"{k}: {data[k]}" for k in ("gpus", "shm_size") if data[k]]
    parts += [f"env {k}={v}" for k, v in data["environment"].items()]
    return f"  ({'; '.join(parts)})" if parts else ""


@cli.command()
@mlcube_option
@workspace_option
@p_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def describe(mlcube: str | None, workspace: str | None, params: tuple[str, ...], as_json: bool) -> int:
    """Describe a cube: metadata, tasks and their parameters."""
    cube = _load(mlcube, workspace, params)
    data = describe_data(cube)
    if as_json:
        print(json.dumps(data, indent=2))
        return 0
    lines = [f"{cube.name}:{cube.version or 'latest'}"]
    if cube.description:
        lines.append(f"  {cube.description.strip()}")
    lines += [f"  file:      {cube.file}", f"  workspace: {cube.workspace}"]
    if cube.platform:
        lines.append("  platform:  " + ", ".join(f"{k}={v}" for k, v in cube.platform.items()))
    if data["sections"]:
        lines.append("  runners:   " + ", ".join(data["sections"]))
    lines.append("tasks:")
    for t in cube.tasks.values():
        lines.append(f"  {t.name}" + (f"  (entrypoint: {t.entrypoint})" if t.entrypoint else "") + _run_args_text(t))
        for p in t.params:
            ptype, inferred = param_type(cube, p)
            opts = f", {p.opts}" if p.opts else ""
            mount = f" -> {p.mount_path}" if p.mount_path else ""
            lines.append(f"    {p.io:<6} {p.name} = {p.default}{mount}  ({ptype}{', inferred' if inferred else ''}{opts})")
    from cuberun.console import printable

    print("\n".join(printable(line) for line in lines))
    return 0


@cli.command("show-config", context_settings=PASSTHROUGH)
@mlcube_option
@platform_option
@workspace_option
@p_option
@click.option("--resolve", is_flag=True, help="Resolve ${...} references.")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def show_config(mlcube: str | None, platform: str | None, workspace: str | None, params: tuple[str, ...], resolve: bool,
                overrides: tuple[str, ...]) -> int:
    """Print the effective configuration of a cube and platform as YAML."""
    from cuberun import yamlio
    from cuberun.execute import make_runner
    from cuberun.runners.base import RunOptions

    cube = _load(mlcube, workspace, params)
    runner = make_runner(cube, platform, RunOptions(), params)
    config = dict(cube.config)
    if resolve:
        config = cube.resolve_value(config)
    config["runner"] = dict(runner.describe_config(), runner=runner.name)
    config["platform_name"] = runner.platform
    print(yamlio.dump(config), end="")
    return 0


@cli.command()
@mlcube_option
@platform_option
@workspace_option
@p_option
def validate(mlcube: str | None, platform: str | None, workspace: str | None, params: tuple[str, ...]) -> int:
    """Check a cube (and a platform's config for it) without running anything.

    What run would refuse before starting (the local section's files, environment variable
    names, unset $VARs in paths, outputs outside the workspace) is reported, every problem at once."""
    from cuberun.checks import cube_issues
    from cuberun.execute import make_runner
    from cuberun.runners.base import RunOptions

    cube = _load(mlcube, workspace, params)
    errors, warnings = cube_issues(cube)
    for w in warnings:
        print(f"cuberun: warning: {w.render()}", file=sys.stderr)
    if errors:
        from cuberun.errors import SpecError

        raise SpecError(errors)
    if platform:
        runner = make_runner(cube, platform, RunOptions(), params)
        problems = runner.launch_problems(list(cube.tasks))
        if problems:
            from cuberun.errors import Issue, SpecError

            hint = f"see cuberun show-config --platform={runner.platform}, or run these tasks on another platform"
            raise SpecError([Issue(p, hint=hint) for p in problems])
    count = len(cube.warnings) + len(warnings)
    print(f"{cube.file}: ok ({len(cube.tasks)} task{'s' if len(cube.tasks) != 1 else ''}, {count} warning{'s' if count != 1 else ''})")
    return 0


@cli.command()
@mlcube_option
@platform_option
@workspace_option
@p_option
@click.option("--format", "fmt", type=click.Choice(["json", "yaml"]), default="json")
@click.option("--output-file", metavar="PATH", help="Write to a file instead of stdout.")
def inspect(mlcube: str | None, platform: str | None, workspace: str | None, params: tuple[str, ...], fmt: str,
            output_file: str | None) -> int:
    """Print what a platform knows about the cube (image digest, env, ...)."""
    from cuberun import yamlio
    from cuberun.execute import make_runner
    from cuberun.runners.base import RunOptions

    cube = _load(mlcube, workspace, params)
    info = make_runner(cube, platform, RunOptions(), params).inspect()
    text = json.dumps(info, indent=2) + "\n" if fmt == "json" else yamlio.dump(info)
    if output_file:
        from pathlib import Path

        yamlio.write_atomic(Path(output_file).expanduser().absolute(), text, what="output file",
                            hint="give the path of a new or regular file, e.g. --output-file inspect.json")
    else:
        print(text, end="")
    return 0
