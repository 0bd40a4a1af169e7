"""Plain data classes for a loaded, validated cube."""

from __future__ import annotations

from pathlib import Path

from cuberun.errors import Issue, SpecError
from cuberun.valueclass import dataclass, field
from cuberun.yamlio import Document, KeyPath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

INPUT = "input"
OUTPUT = "output"
FILE = "file"
DIRECTORY = "directory"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Param:
    name: str
    io: str  # INPUT or OUTPUT
    default: str
    type: str  # FILE, DIRECTORY or UNKNOWN (decided at run time for inputs)
    opts: str | None = None  # "ro", "rw" or None
    key: KeyPath = ()
    # container_config.yaml volumes: the fixed path inside the container (no --name=path argument)
    mount_path: str | None = None


@dataclass(frozen=True)
class RunArgs:
    """A container_config.yaml task's `run_args`: the program reads fixed mount paths and gets
    no `--name=path` arguments; the command follows the image, the entrypoint replaces the image's."""

    command: tuple[str, ...] | None = None
    entrypoint: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    gpus: str | None = None  # the --gpus forms: "all", "N", "device=a,b"
    shm_size: str | None = None


@dataclass(frozen=True)
class Task:
    name: str
    entrypoint: str | None
    inputs: tuple[Param, ...]
    outputs: tuple[Param, ...]
    run_args: RunArgs | None = None  # set for container_config.yaml tasks
    timeout: float | None = None  # seconds per attempt (`tasks.<t>.timeout`); --timeout wins (retry.py)
    retries: int | None = None  # attempts after a failed first one (`tasks.<t>.retries`); --retries wins

    @property
    def params(self) -> tuple[Param, ...]:
        return self.inputs + self.outputs

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None


@dataclass
class Cube:
    """A validated cube. `config` is the merged configuration used for interpolation."""

    file: Path
    root: Path
    workspace: Path
    name: str
    version: str | None
    description: str | None
    authors: list[dict[str, Any]]
    platform: dict[str, Any]
    tasks: dict[str, Task]
    config: dict[str, Any]
    doc: Document
    depends_on: dict[str, list[str]] = field(default_factory=dict)
    warnings: list[Issue] = field(default_factory=list)
    format: str = "2.0"

    @property
    def accelerator_count(self) -> int:
        value = self.platform.get("accelerator_count", self.platform.get("num_accelerators"))
        return int(value) if isinstance(value, int) else 0

    def raw_section(self, name: str) -> dict[str, Any] | None:
        value = self.config.get(name)
        return value if isinstance(value, dict) else None

    def section(self, name: str) -> dict[str, Any]:
        """A runner section with its `${...}` references resolved ({} when absent)."""
        from cuberun.spec.interpolate import InterpolationError, Interpolator

        raw = self.config.get(name)
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            raise SpecError([self.doc.issue((name,), f"must be a mapping, not {type(raw).__name__}", value=True)])
        interp = Interpolator(self.config)
        out: dict[str, Any] = {}
        issues: list[Issue] = []
        for key, value in raw.items():
            try:
                out[key] = interp.resolve(value)
            except InterpolationError as exc:
                issues.append(self.doc.issue((name, key), exc.message, exc.hint, value=True))
        if issues:
            raise SpecError(issues)
        return out

    def resolve_value(self, value: Any, key: KeyPath = ()) -> Any:
        from cuberun.spec.interpolate import InterpolationError, Interpolator

        try:
            return Interpolator(self.config).resolve(value)
        except InterpolationError as exc:
            raise SpecError([self.doc.issue(key, exc.message, exc.hint, value=True)]) from None
