"""The runners: one module per backend, found through the registry (runners/registry.py)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


MOVED = {"dockerfile": "cuberun.dockerfile", "pyidentity": "cuberun.pyidentity"}  # to the core: not backends


def __getattr__(name: str) -> Any:
    """`from cuberun.runners import dockerfile` keeps working for modules that moved to the core."""
    target = MOVED.get(name)
    if target is None:
        raise AttributeError(f"module 'cuberun.runners' has no attribute '{name}'")
    import importlib

    return importlib.import_module(target)
