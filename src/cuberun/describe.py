"""The data of `cuberun describe --json` (used by the CLI and cuberun.api)."""

from __future__ import annotations

from typing import Any


def param_type(cube: Any, p: Any) -> tuple[str, bool]:
    """(type, inferred): an input without a type is a directory when its default path is one in
    the workspace, else a file, as `run` decides."""
    from cuberun.spec.model import DIRECTORY, FILE, UNKNOWN

    if p.type != UNKNOWN:
        return p.type, False
    from cuberun.resolve import expand_path

    try:
        path, _ = expand_path(p.default, cube.workspace)
        return (DIRECTORY if path.is_dir() else FILE), True
    except (OSError, ValueError):
        return FILE, True


def _param_data(cube: Any, p: Any) -> dict[str, Any]:
    ptype, inferred = param_type(cube, p)
    return {"type": ptype, "default": p.default, **({"opts": p.opts} if p.opts else {}), **({"inferred": True} if inferred else {}),
            **({"mount_path": p.mount_path} if p.mount_path else {})}


def describe_data(cube: Any) -> dict[str, Any]:
    from cuberun.spec.load import runner_section_names

    return {
        "name": cube.name,
        "version": cube.version,
        "description": cube.description,
        "authors": cube.authors,
        "file": str(cube.file),
        "root": str(cube.root),
        "workspace": str(cube.workspace),
        "format": cube.format,
        "platform": cube.platform,
        "tasks": {
            t.name: {
                "entrypoint": t.entrypoint,
                **({"run_args": run_args_data(t)} if t.run_args is not None else {}),
                "inputs": {p.name: _param_data(cube, p) for p in t.inputs},
                "outputs": {p.name: _param_data(cube, p) for p in t.outputs},
            }
            for t in cube.tasks.values()
        },
        "sections": runner_section_names(cube.config),
    }


def run_args_data(t: Any) -> dict[str, Any]:
    ra = t.run_args
    return {"command": list(ra.command) if ra.command is not None else None, "entrypoint": ra.entrypoint,
            "environment": dict(ra.environment), "gpus": ra.gpus, "shm_size": ra.shm_size}
