"""What a parsed Dockerfile holds: its COPY lines (container path to host path), pip
requirements, RUN commands, ENTRYPOINT/CMD, ENV, labels; the Python version of common base images."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from cuberun.valueclass import dataclass, field

# Python versions of common base images (the image's `python3`), for hints about bit-rotted pins
BASE_PYTHONS = {
    "ubuntu:16.04": "3.5", "ubuntu:18.04": "3.6", "ubuntu:20.04": "3.8", "ubuntu:22.04": "3.10", "ubuntu:24.04": "3.12",
    "debian:stretch": "3.5", "debian:buster": "3.7", "debian:bullseye": "3.9", "debian:bookworm": "3.11", "debian:trixie": "3.13",
    "debian:9": "3.5", "debian:10": "3.7", "debian:11": "3.9", "debian:12": "3.11", "debian:13": "3.13",
}



@dataclass
class Copy:
    """One source of a COPY/ADD line: where it lands in the image and which host path it is."""

    dest: str  # absolute container path (a directory when `into` is true)
    host: Path
    into: bool  # the source's contents go under dest (a directory source, or dest is a directory)
    line: int


@dataclass
class Requirement:
    """A `pip install` argument: a requirement spec, a `-r`/`-c` file or a local project path."""

    kind: str  # "spec", "file", "constraint", "path"
    value: str  # the spec (`pandas==1.1.3`) or the container path as written
    line: int
    host: Path | None = None  # files and paths: the host file the COPY lines put there
    editable: bool = False


@dataclass
class RunCommand:
    line: int
    text: str
    kind: str  # "pip", "system", "other"
    workdir: str


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int
    heredocs: list[str] = field(default_factory=list)  # bodies of `<<EOF` documents


@dataclass
class Dockerfile:
    path: Path
    context: Path
    instructions: list[Instruction]
    entrypoint: list[str] | None = None
    entrypoint_shell_form: bool = False
    entrypoint_line: int = 0
    cmd: list[str] | None = None
    cmd_shell_form: bool = False
    cmd_line: int = 0
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)  # the final stage's ENV, in order
    copies: list[Copy] = field(default_factory=list)
    requirements: list[Requirement] = field(default_factory=list)
    pip_options: list[str] = field(default_factory=list)  # index/find-links options of the pip lines
    system_packages: list[str] = field(default_factory=list)
    runs: list[RunCommand] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    base_image: str | None = None
    stages: int = 0

    # -- what older callers read ----------------------------------------------------------
    @property
    def requirement_files(self) -> list[str]:
        return [r.value for r in self.requirements if r.kind == "file"]

    @property
    def pip_packages(self) -> list[str]:
        return [r.value for r in self.requirements if r.kind == "spec"]

    @property
    def other_runs(self) -> list[str]:
        return [r.text for r in self.runs if r.kind == "other"]

    def python_version(self) -> str | None:
        """The Python version the image's `python3` most likely is (from FROM), or None."""
        return base_python(self.base_image)

    def to_host(self, container_path: str, upto: int | None = None) -> Path | None:
        """The host path a container path comes from, through the COPY lines (those before line
        `upto` only, when given). The latest COPY that provides the path wins."""
        path = posixpath.normpath(posixpath.join(self.workdir, container_path))
        fallback: Path | None = None
        for copy in reversed(self.copies):
            if upto is not None and copy.line >= upto:
                continue
            if not copy.into:
                if path == copy.dest:
                    return copy.host
                continue
            if path == copy.dest:
                return copy.host
            prefix = copy.dest.rstrip("/") + "/"
            if path.startswith(prefix):
                candidate = copy.host / path[len(prefix) :]
                if candidate.exists():
                    return candidate
                if fallback is None:
                    fallback = candidate
        return fallback

    def covered(self, container_path: str) -> bool:
        """True when some COPY line puts something at or under this container path."""
        path = posixpath.normpath(container_path)
        return any(c.dest == path or c.dest.startswith(path.rstrip("/") + "/") or path.startswith(c.dest.rstrip("/") + "/") for c in self.copies)


def base_python(image: str | None) -> str | None:
    if not image:
        return None
    name = image.split("@")[0]
    last = name.rsplit("/", 1)[-1]
    match = re.match(r"^python:(\d+)\.(\d+)", last)
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    match = re.search(r"[-_]py(\d)(\d+)\b", last)  # e.g. tensorflow:2.3.0-py37
    if match:
        return f"{match.group(1)}.{match.group(2)}"
    tag_match = re.match(r"^([a-z0-9._-]+):([A-Za-z0-9._-]+)$", last)
    if tag_match:
        base, tag = tag_match.groups()
        for key, version in BASE_PYTHONS.items():
            kbase, ktag = key.split(":")
            if base == kbase and (tag == ktag or tag.startswith(ktag + "-") or tag.startswith(ktag + ".")):
                return version
    return None
