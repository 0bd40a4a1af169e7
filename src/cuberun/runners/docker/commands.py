"""The docker runner's pure helpers: the `--gpus` value, run flags, container names, the engine's
error lines, the build context hash, and a build from a recipe given as text (`cuberun export`)."""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Sequence
from pathlib import Path

from cuberun.errors import BackendError, TaskFailed
from cuberun.lazyre import LazyPattern
from cuberun.runners.container import last_error_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from cuberun.codeid import CodeId
    from cuberun.gpus import GpuRequest

ENGINE_ERROR = LazyPattern(r"^(docker: |Error: |Error response from daemon|Unable to find image|.*OCI runtime)", re.IGNORECASE)


def gpus_value(gpus: GpuRequest) -> str | None:
    """A GPU request as `docker run --gpus` takes it (a device list quoted: the engine splits at commas)."""
    if gpus.all:
        return "all"
    if gpus.devices:
        return '"device=' + ",".join(gpus.devices) + '"'
    if gpus.count:
        return str(gpus.count)
    return None


# -- the build context hash ----------------------------------------------------------------
def context_hash(context: Path, recipe: Path, build_args: Any = None, code: CodeId | None = None) -> str:
    """sha256 of everything a build reads: the context (minus .dockerignore; see codeid.py, files
    hashed with the stat fast path), the recipe and the build args. Proxy variables and the build
    network are left out: they do not change the image."""
    import hashlib

    from cuberun.codeid import identity
    from cuberun.fingerprint import NotRegular, file_sha256

    if code is None:
        code = identity([context], "docker", label="build context")
    digest = hashlib.sha256(b"cuberun-context-v2\n")
    digest.update(code.sha256.encode() + b"\n")
    try:
        name = recipe.relative_to(context).as_posix()
    except ValueError:
        name = recipe.name
    try:
        recipe_digest = file_sha256(str(recipe))
    except (OSError, NotRegular):
        recipe_digest = "-"
    digest.update(f"recipe\0{name}\0{recipe_digest}\n".encode("utf-8", "surrogateescape"))
    digest.update(b"args\0" + json.dumps(build_args, sort_keys=True, default=str).encode() + b"\n")
    return digest.hexdigest()


def _has_flag(tokens: Sequence[str], *names: str) -> bool:
    for tok in tokens:
        for name in names:
            if tok == name or tok.startswith(name + "="):
                return True
            if len(name) == 2 and tok.startswith(name) and not tok.startswith("--"):  # -u1000:1000
                return True
    return False


def _last_error_line(text: str) -> str:
    return last_error_line(text, lambda line: ENGINE_ERROR.match(line) is not None)


def new_container_name(task: str) -> str:
    """A container name for one run of `task`: its prefix and a random part."""
    return f"{_name_prefix(task)}{os.urandom(4).hex()}"


def _name_prefix(task: str) -> str:
    """`cuberun-<task>-`, with the task name reduced to what a container name allows."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", task).strip("_.-") or "task"
    return f"cuberun-{safe[:40]}-"


def build_recipe(executable: Sequence[str], recipe_text: str, tag: str, context: Path | None = None) -> None:
    """Build image `tag` from a Dockerfile given as text, with the engine `executable`, the way the
    runner builds a cube image (--force-rm, output streamed, the engine's error line on failure).
    The context is `context`, or an empty folder (a FROM + LABEL recipe needs no files)."""
    import io
    import sys
    import tempfile

    from cuberun.process import stream

    with tempfile.TemporaryDirectory(prefix="cuberun-build-") as tmp:
        recipe = Path(tmp) / "Dockerfile"
        recipe.write_text(recipe_text, encoding="utf-8")
        ctx = context if context is not None else Path(tmp) / "context"
        ctx.mkdir(exist_ok=True)
        argv = [*executable, "build", "--force-rm", "-t", tag, "-f", str(recipe), str(ctx)]
        print(f"cuberun: building {tag}: {shlex.join(argv)}", file=sys.stderr, flush=True)
        tail = io.BytesIO()
        outcome = stream(argv, log=tail, echo=getattr(sys.stderr, "buffer", None))
    text = tail.getvalue()[-8192:].decode("utf-8", "replace")
    if outcome.interrupted:
        raise TaskFailed(f"the build of {tag} was interrupted", outcome.exit_code)
    if outcome.exit_code != 0:
        raise BackendError(f"building {tag} failed with exit code {outcome.exit_code}: {_last_error_line(text) or 'no output'}",
                           "the build output is above")
