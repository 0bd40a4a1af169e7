"""What a cube's Dockerfile makes its image run, derived for the host.

The parser follows the Dockerfile instructions of the final build stage in order, the way
`docker build` would: ARG and ENV values as they evolve (and `${VAR}` expansion), WORKDIR
changes, COPY/ADD lines (several sources, directories, wildcards, `--chown`; `--from` stages
and URLs are noted, not mapped), ENTRYPOINT/CMD in both forms, and every RUN line split into
its shell commands (`&&`, `||`, `;`, pipes, line continuations, heredocs, `cd`), each
recognised for what it is: a pip install (`pip`, `pip3`, `python -m pip`), a system package
install (`apt-get`, `apt`, `yum`, `dnf`, `apk`, `conda`, `mamba`), or something else.

Only pip requirements ever become the host's managed environment (`-r` files are resolved
against the WORKDIR in effect at that RUN line, through the COPY lines seen so far); system
packages and other RUN commands are reported, never acted on.

Modules: model.py (what a Dockerfile holds: its COPY lines, requirements, RUN commands; the base
image's Python) < reading.py (bounded reading, logical instructions, heredocs, `${VAR}` expansion)
< runlines.py (RUN lines split into shell commands: pip installs, system packages, the rest)
< parser.py (the final stage's instructions in order: `parse`, `parse_text`).
"""

from __future__ import annotations

from cuberun.dockerfile.model import BASE_PYTHONS, Copy, Dockerfile, Instruction, Requirement, RunCommand, base_python
from cuberun.dockerfile.parser import parse, parse_text
from cuberun.dockerfile.reading import HEREDOC, MAX_BYTES, expand, instructions_of, read_text
from cuberun.dockerfile.runlines import (
    PIP_FLAGS,
    PIP_PROGRAMS,
    PIP_SOURCE_OPTIONS,
    PIP_VALUE_OPTIONS,
    PYTHON_PROGRAMS,
    SHELL_KEYWORDS,
    SHELL_OPERATORS,
    SYSTEM_INSTALLERS,
    shell_commands,
)

__all__ = [
    "BASE_PYTHONS", "HEREDOC", "MAX_BYTES", "PIP_FLAGS", "PIP_PROGRAMS", "PIP_SOURCE_OPTIONS", "PIP_VALUE_OPTIONS",
    "PYTHON_PROGRAMS", "SHELL_KEYWORDS", "SHELL_OPERATORS", "SYSTEM_INSTALLERS", "Copy", "Dockerfile", "Instruction",
    "Requirement", "RunCommand", "base_python", "expand", "instructions_of", "parse", "parse_text", "read_text",
    "shell_commands",
]
