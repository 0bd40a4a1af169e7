"""The legacy formats: their names, files and schema keys, the result of a conversion
(`Conversion`), and telling a legacy cube from a config-2.0 one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cuberun.errors import Issue, SpecError
from cuberun.valueclass import dataclass, field
from cuberun.yamlio import Document, KeyPath

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
        from cuberun import yamlio

        try:
            data = yamlio.load(candidate, "cube file").data
        except SpecError:
            return candidate  # let the loader report the problem with its position
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
