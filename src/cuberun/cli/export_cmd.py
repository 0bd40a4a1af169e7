"""`cuberun export`: a cube in another system's format. `export backendai` writes (and builds) a
Backend.AI kernel image: the cube image plus the `ai.backend.*` labels, or any Dockerfile with
the labels added to its final stage."""

from __future__ import annotations

import os
import re
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from cuberun.errors import BackendError, RunnerUnavailable, UsageError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DEFAULT_OUTPUT = "Dockerfile.backendai"


@click.group(context_settings=CONTEXT)
def export() -> None:
    """Export a cube for another system (Backend.AI)."""


def _say(message: str) -> None:
    from cuberun.console import say

    say(message)


def _write(path: str, text: str) -> Path | None:
    """Write atomically (rewriting the input in place is safe); '-' prints to stdout."""
    if path == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return None
    target = Path(path).expanduser().resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=str(target.parent))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
        if target.exists():
            os.chmod(tmp, target.stat().st_mode & 0o7777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return target


def _engine(value: str | None) -> list[str]:
    argv = shlex.split(value) if value else ["docker"]
    return argv or ["docker"]


def _build(engine: Sequence[str], dockerfile_text: str, tag: str, context: Path | None) -> None:
    """Build with the real engine, as the docker runner builds (runners.docker.build_recipe)."""
    from cuberun.runners.docker import build_recipe

    build_recipe(engine, dockerfile_text, tag, context)


def _verify(engine: Sequence[str], tag: str) -> dict[str, str]:
    from cuberun.backendai_export import REQUIRED, inspect_image

    facts = inspect_image(engine, tag)
    missing = [k for k in REQUIRED if k not in facts.labels]
    if not facts.present or missing:
        raise BackendError(f"the built image {tag} lacks the labels {', '.join(missing) or '(image not found)'}")
    return facts.labels


def _resolve_args(text: str, base: str | None) -> str | None:
    """`FROM ${BASE}` with the default of a global `ARG BASE=...` substituted (None if unresolved)."""
    if base is None:
        return None
    if "$" not in base:
        return base
    defaults: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if line.upper().startswith("FROM "):
            break
        m = re.match(r"(?i)^ARG\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            value = m.group(2).strip()
            defaults[m.group(1)] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value
    out = re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", lambda m: defaults.get(m.group(1) or m.group(2), "\0"), base)
    return None if "\0" in out else out


@export.command("backendai", context_settings=CONTEXT)
@click.option("--mlcube", metavar="PATH", help="Cube directory or its mlcube.yaml (default: current directory).")
@click.option("--dockerfile", "dockerfile", metavar="FILE", help="Rewrite this Dockerfile instead (labels added to its final stage).")
@click.option("--platform", metavar="NAME", default="docker", show_default=True, help="Docker-type platform giving the cube image and the engine.")
@click.option("-P", "-p", "params", multiple=True, metavar="KEY=VALUE", help="Override a config value, e.g. -Pdocker.image=x:1.")
@click.option("--output", "-o", metavar="FILE", help=f"Where to write the Dockerfile ('-': stdout). Default: <cube>/{DEFAULT_OUTPUT}; stdout with --dockerfile.")
@click.option("--base-distro", metavar="NAME", help="ai.backend.base-distro, e.g. ubuntu22.04 (default: from the image's /etc/os-release).")
@click.option("--min-cpu", metavar="N", help="ai.backend.resource.min.cpu (default 1).")
@click.option("--min-mem", metavar="SIZE", help="ai.backend.resource.min.mem, e.g. 4g (default: platform.host_memory_gb, else 1g).")
@click.option("--gpu", type=click.IntRange(min=0), metavar="N", help="CUDA GPUs: min.cuda.device and accelerators labels (default: platform.accelerator_count).")
@click.option("--runtime-type", type=click.Choice(["app", "python"]), help="ai.backend.runtime-type (default app).")
@click.option("--runtime-path", metavar="PATH", help="ai.backend.runtime-path (default: the image's python3).")
@click.option("--features", metavar="LIST", help="ai.backend.features (default: batch uid-match, plus query user-input for python).")
@click.option("--service-ports", metavar="LIST", help="ai.backend.service-ports, e.g. jupyter:http:8080 (default: none).")
@click.option("--build", is_flag=True, help="Build the image with the container engine and check its labels.")
@click.option("--tag", "-t", metavar="IMAGE", help="Name of the built image (default: the cube image with -backendai added to its tag).")
@click.option("--context", "context", metavar="DIR", help="Build context with --dockerfile (default: the Dockerfile's directory).")
@click.option("--engine", metavar="EXE", help="Container engine with --dockerfile (default docker; with --mlcube the platform's).")
@click.option("--no-inspect", is_flag=True, help="Do not look into the image: take the values from the flags and defaults only.")
def backendai(mlcube: str | None, dockerfile: str | None, platform: str, params: tuple[str, ...], output: str | None, base_distro: str | None,
              min_cpu: str | None, min_mem: str | None, gpu: int | None, runtime_type: str | None, runtime_path: str | None,
              features: str | None, service_ports: str | None, build: bool, tag: str | None, context: str | None, engine: str | None,
              no_inspect: bool) -> int:
    """Write a Backend.AI kernel image recipe: FROM the cube image, plus every required
    ai.backend.* label (values read from the image where possible; flags win)."""
    from cuberun.backendai_export import LabelOptions

    options = LabelOptions(base_distro, min_cpu, min_mem, gpu, runtime_type, runtime_path, features, service_ports)
    options.validate()
    if dockerfile and mlcube:
        raise UsageError("--mlcube and --dockerfile exclude each other", "give the cube, or the Dockerfile to rewrite")
    if dockerfile:
        if params:
            raise UsageError("-P applies to cubes, not to --dockerfile", "drop -P, or use --mlcube")
        return _from_dockerfile(Path(dockerfile), options, output or "-", build, tag, context, _engine(engine), no_inspect)
    if context:
        raise UsageError("--context applies to --dockerfile", "a cube's kernel image needs no build context")
    return _from_cube(mlcube, platform, params, options, output, build, tag, engine, no_inspect)


def _from_cube(mlcube: str | None, platform: str, params: Sequence[str], options: Any, output: str | None, build: bool, tag: str | None,
               engine_opt: str | None, no_inspect: bool) -> int:
    from cuberun.backendai_export import (
        PREFIX,
        ImageFacts,
        choose_labels,
        derive_image_name,
        describe_choices,
        probe_image,
        render_dockerfile,
    )
    from cuberun.cli.commands import _load
    from cuberun.execute import make_runner
    from cuberun.runners.base import RunOptions
    from cuberun.runners.docker import DockerRunner

    cube = _load(mlcube, None, params)
    runner = make_runner(cube, platform, RunOptions(), params)
    if not isinstance(runner, DockerRunner):
        raise UsageError(f"platform '{platform}' uses the {runner.name} runner", "export needs a docker-type platform (docker, podman) for the cube image")
    image = runner.image
    engine = _engine(engine_opt) if engine_opt else list(runner.executable)
    if build:
        reason = runner.unavailable_reason()
        if reason:
            raise RunnerUnavailable(reason)
        runner.configure()  # the cube image itself: built or pulled per build_strategy when missing
    notes: list[str] = []
    if no_inspect:
        facts = ImageFacts(image)
        notes.append("the image was not inspected (--no-inspect)")
    else:
        facts = probe_image(engine, image)
        notes += facts.notes
        if not facts.present:
            notes.append(
                f"image {image} is not present locally, so base distro and runtime path are defaults: "
                f"build or pull it first (cuberun configure --platform={platform}), or pass --base-distro and --runtime-path"
            )
    existing = {k: v for k, v in facts.labels.items() if k.startswith(PREFIX)}
    choices = choose_labels(options, facts=facts, platform=cube.platform, existing=existing)
    text = render_dockerfile(image, choices, notes)
    target = output or str(cube.root / "Dockerfile.backendai")
    written = _write(target, text)
    for note in notes:
        _say(f"note: {note}")
    for line in describe_choices(choices):
        _say(f"label {line}")
    if written is not None:
        _say(f"wrote {written}")
    if build:
        name = tag or derive_image_name(image)
        _build(engine, text, name, None)
        _verify(engine, name)
        _say(f"built {name} with every required ai.backend label. Next: push it to the cluster registry and have it rescanned")
        if output == "-":
            return 0
        print(name)
    return 0


def _from_dockerfile(path: Path, options: Any, output: str, build: bool, tag: str | None, context: str | None, engine: list[str],
                     no_inspect: bool) -> int:
    from cuberun.backendai_export import PREFIX, ImageFacts, choose_labels, final_stage_labels, probe_image, rewrite_dockerfile

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}", "check the --dockerfile path") from None
    if build and not tag:
        raise UsageError("--build with --dockerfile needs --tag", "name the image, e.g. --tag myorg/kernel:1")
    own, inherited, base = final_stage_labels(text)
    base = _resolve_args(text, base)
    notes: list[str] = []
    facts = ImageFacts(base or "the base image")
    if base and base != "scratch" and not no_inspect:
        facts = probe_image(engine, base)
        notes += facts.notes
        if not facts.present:
            notes.append(f"base image {base} is not present locally: missing values are defaults (or pass the flags)")
    elif not no_inspect:
        notes.append("the final stage's base image cannot be inspected: missing values are defaults (or pass the flags)")
    existing = {**{k: v for k, v in facts.labels.items() if k.startswith(PREFIX)}, **inherited,
                **{k: v for k, v in own.items() if k.startswith(PREFIX)}}
    choices = choose_labels(options, facts=facts, platform=None, existing=existing)
    updates = {c.key: c.value for c in choices if c.source == "flag"}
    additions = {c.key: c.value for c in choices if c.source != "flag"}
    result = rewrite_dockerfile(text, updates, additions)
    written = _write(output, result.text)
    for note in notes:
        _say(f"note: {note}")
    for key, value in result.kept.items():
        _say(f"label {key}={value} (kept)")
    for key, (old, new) in result.updated.items():
        _say(f"label {key}={new} (updated, was {old})")
    sources = {c.key: c.source for c in choices}
    for key, value in result.added.items():
        _say(f"label {key}={value} (added; {sources.get(key, 'flag')})")
    for key in result.removed_duplicates:
        _say(f"removed a duplicate {key} (Docker applies the last one, which was kept)")
    if written is not None:
        _say(f"wrote {written}")
    if build:
        assert tag is not None
        ctx = Path(context).expanduser().resolve() if context else path.resolve().parent
        _build(engine, result.text, tag, ctx)
        _verify(engine, tag)
        _say(f"built {tag} with every required ai.backend label")
    return 0
