"""Bit-rotted pins: why a managed env cannot be built, and (on request) pins relaxed until it can.

A pin (`pandas==1.1.3`, `PyYAML~=5.3`) that has no build (wheel) for this interpreter is found
with pip itself, binary-only and without installing anything: `pip install --dry-run
--only-binary=:all: --no-deps PIN` fails with the list of the releases that do have one.

- `diagnose()` turns a failed `pip install` into one line: which requirement (and where it is
  written), why (`has no build for Python 3.11`), and the newest release that has one.
- `relax()` rewrites the requirement files so that each `==`/`~=` pin without a build becomes
  the newest release of the same major version that has one (else the newest that has one);
  each change is returned, for the run record.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cuberun.valueclass import dataclass

REQ_LINE = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")
PIN = re.compile(r"^(==|~=|===)\s*([0-9][^,\s;]*)$")
MAX_FILE = 1 << 20
MAX_DEPTH = 8


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def release(version: str) -> tuple[int, ...] | None:
    """The numeric release of a final version ('1.8.0+cpu' -> (1, 8, 0)); None for pre-releases."""
    match = re.match(r"^v?(\d+(?:\.\d+)*)(\+[A-Za-z0-9.]+)?$", version.strip())
    if not match:
        match = re.match(r"^v?(\d+(?:\.\d+)*)\.post\d+$", version.strip())
        if not match:
            return None
    return tuple(int(p) for p in match.group(1).split("."))


@dataclass
class Line:
    file: Path
    number: int
    text: str  # the line as written (continuations joined)
    name: str | None = None  # a requirement's name (None for options and blank lines)
    spec: str = ""  # the specifier part ('==1.1.3')

    @property
    def where(self) -> str:
        return f"{self.file.name}:{self.number}"

    @property
    def requirement(self) -> str:
        return self.text.split(" #")[0].strip()


def read_lines(path: Path, depth: int = 0) -> list[Line]:
    """A requirements file's lines; `-r` includes are read in place (bounded)."""
    from cuberun.dockerfile import read_text

    try:
        text = read_text(path)
    except OSError:
        return []
    out: list[Line] = []
    buf, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not buf:
            start = number
        if raw.rstrip().endswith("\\"):
            buf += raw.rstrip()[:-1] + " "
            continue
        line = (buf + raw).strip()
        buf = ""
        content = re.sub(r"(^|\s)#.*$", "", line).strip()
        include = re.match(r"^(-r|--requirement)(\s+|=)(\S+)$", content)
        if include and depth < MAX_DEPTH:
            out += read_lines(path.parent / include.group(3), depth + 1)
            continue
        entry = Line(path, start, line)
        if content and not content.startswith("-"):
            match = REQ_LINE.match(content)
            if match and "://" not in content and not content.startswith((".", "/")):
                entry.name, entry.spec = match.group(1), (match.group(3) or "").strip()
        out.append(entry)
    return out


def pinned(line: Line) -> tuple[str, str] | None:
    """('==', '1.1.3') for a pin that relax() may change, else None."""
    if line.name is None:
        return None
    match = PIN.match(line.spec.replace(" ", ""))
    return (match.group(1), match.group(2)) if match else None


# -- asking pip ------------------------------------------------------------------------------------
FROM_VERSIONS = re.compile(r"from versions: ([^)]*)\)")
NO_MATCH = re.compile(r"No matching distribution found for (\S+)")
REQUESTED = re.compile(r"The user requested (\S+)")


def wheel_versions(python: str, requirement: str, options: Sequence[str] = ()) -> list[str] | None:
    """The releases of a requirement's project that have a build for `python`, when the
    requirement itself has none (None: it has one, or pip did not say)."""
    from cuberun.process import capture

    argv = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", *options, requirement]
    result = capture(argv, timeout=300)
    if result.returncode == 0:
        return None
    text = result.stdout + result.stderr
    match = FROM_VERSIONS.search(text)
    if match is None:
        return [] if ("No matching distribution" in text or "conflicting dependencies" in text) else None
    listed = match.group(1).strip()
    return [] if listed in ("", "none") else [v.strip() for v in listed.split(",") if v.strip()]


def choose(op: str, version: str, wheels: Sequence[str]) -> tuple[str, str] | None:
    """(specifier, chosen release) relaxing a pin: the newest release of the same major version
    at or above the pin that has a build, else the newest at or above it, else the newest."""
    pin = release(version)
    finals = sorted(((r, v) for v in wheels if (r := release(v)) is not None), key=lambda rv: rv[0])
    if pin is None or not finals:
        return None
    same = [(r, v) for r, v in finals if r[0] == pin[0] and r >= pin]
    if same:
        return f">={version.split('+')[0]},<{pin[0] + 1}", same[-1][1]
    newer = [(r, v) for r, v in finals if r >= pin]
    if newer:
        return f">={version.split('+')[0]}", newer[-1][1]
    return "", finals[-1][1]


@dataclass
class Relaxation:
    name: str
    requirement: str
    where: str
    relaxed_to: str
    reason: str
    installed: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"requirement": self.requirement, "where": self.where, "relaxed_to": self.relaxed_to, "reason": self.reason,
                "installed": self.installed}

    def describe(self) -> str:
        got = f" (installed {self.installed})" if self.installed else ""
        return f"{self.requirement} ({self.where}) -> {self.relaxed_to}{got}: {self.reason}"


def relax(python: str, version: str, files: Sequence[Path], packages: Sequence[str], out_dir: Path,
          options: Sequence[str] = ()) -> tuple[list[Path], list[str], list[Relaxation]]:
    """Rewrite the requirement files (into out_dir) and package specs with every pin that has no
    build for this interpreter relaxed. Returns the new files, packages and the relaxations."""
    short = ".".join(version.split(".")[:2])
    relaxations: list[Relaxation] = []

    def relaxed(spec_text: str, name: str, op: str, ver: str, where: str, extras: str = "", marker: str = "") -> str | None:
        wheels = wheel_versions(python, spec_text.split(";")[0].strip(), options)
        if wheels is None:
            return None
        pick = choose(op, ver, wheels)
        if pick is None:
            return None
        spec, newest = pick
        new = f"{name}{extras}{spec}{marker}"
        why = f"no build for Python {short}" + (f"; the newest release with one is {newest}" if newest else "")
        relaxations.append(Relaxation(name, spec_text, where, new.strip() or name, why))
        return new

    out_dir.mkdir(parents=True, exist_ok=True)
    new_files: list[Path] = []
    for n, path in enumerate(files):
        lines_out: list[str] = []
        for line in read_lines(path):
            pin = pinned(line)
            content = line.requirement
            if pin is not None and line.name is not None:
                match = REQ_LINE.match(content)
                extras, marker = (match.group(2) or "", match.group(4) or "") if match else ("", "")
                new = relaxed(content, line.name, pin[0], pin[1], line.where, extras, marker)
                if new is not None:
                    lines_out.append(f"{new}  # relaxed by cuberun from: {content}")
                    continue
            lines_out.append(_absolute_options(content, line.file.parent))
        target = out_dir / f"requirements-{n}.txt"
        target.write_text("\n".join(lines_out) + "\n", encoding="utf-8")
        new_files.append(target)
    new_packages: list[str] = []
    for spec_text in packages:
        match = REQ_LINE.match(spec_text)
        spec_pin = PIN.match((match.group(3) or "").replace(" ", "")) if match else None
        if match and spec_pin:
            new = relaxed(spec_text, match.group(1), spec_pin.group(1), spec_pin.group(2), "a pip install line", match.group(2) or "", match.group(4) or "")
            if new is not None:
                new_packages.append(new)
                continue
        new_packages.append(spec_text)
    return new_files, new_packages, relaxations


def _absolute_options(content: str, base: Path) -> str:
    """Option lines with file paths made absolute (the rewritten file lives elsewhere)."""
    match = re.match(r"^(-c|--constraint|-e|--editable|-f|--find-links)(\s+|=)(\S+)$", content)
    if match and not re.match(r"^[a-z][a-z0-9+.-]*://", match.group(3)) and not os.path.isabs(match.group(3)):
        return f"{match.group(1)} {base / match.group(3)}"
    return content


# -- diagnosis ---------------------------------------------------------------------------------------
def failing_requirement(log: str) -> str | None:
    """The requirement pip failed on, from its output."""
    match = NO_MATCH.search(log)
    if match:
        return match.group(1)
    for pattern in (r"Failed building wheel for (\S+)", r"Could not build wheels for (\S+)", r"Failed to build (?:installable wheels.*?\()?([^\s)]+)"):
        match = re.search(pattern, log)
        if match:
            return str(match.group(1)).rstrip(",")
    error_at = min((i for i in (log.find("error: subprocess-exited-with-error"), log.find("ERROR:")) if i >= 0), default=-1)
    head = log[:error_at] if error_at >= 0 else log
    collecting = re.findall(r"^Collecting (\S+)", head, re.MULTILINE)  # pip's own, not a build subprocess's
    if collecting and error_at >= 0:
        return str(collecting[-1])
    requested = REQUESTED.findall(log)
    return str(requested[0]) if requested else None


def last_error(log: str) -> str:
    errors = [line.strip() for line in log.splitlines() if line.strip().startswith(("ERROR:", "error:"))]
    return errors[-1][:300] if errors else "pip install failed"


def find_line(name: str, files: Sequence[Path], packages: Sequence[str]) -> tuple[str, str] | None:
    """(requirement as written, where) of a project's requirement."""
    wanted = canonical(re.split(r"[\[=<>!~;\s]", name, maxsplit=1)[0])
    for path in files:
        for line in read_lines(path):
            if line.name and canonical(line.name) == wanted:
                return line.requirement, line.where
    for spec in packages:
        match = REQ_LINE.match(spec)
        if match and canonical(match.group(1)) == wanted:
            return spec, ""
    return None


@dataclass
class Diagnosis:
    reason: str  # one line, no trailing period
    requirement: str | None = None
    suggestion: str | None = None  # what --relax-pins would use instead


def diagnose(python: str, version: str, log: str, files: Sequence[Path], packages: Sequence[str], options: Sequence[str] = ()) -> Diagnosis:
    short = ".".join(version.split(".")[:2])
    failing = failing_requirement(log)
    if failing is None:
        return Diagnosis(last_error(log))
    written = find_line(failing, files, packages)
    requirement, where = written if written else (failing, None)
    label = f"{requirement} ({where})" if where else requirement
    wheels = wheel_versions(python, requirement.split(";")[0].strip(), options)
    if wheels is None:
        return Diagnosis(f"{label} did not install: {last_error(log)}", requirement)
    if not wheels:
        if re.search(r"from versions: none\)", log) and NO_MATCH.search(log):
            return Diagnosis(f"{label}: no release of it is found on the package index{_index_note(options)}", requirement)
        return Diagnosis(f"{label} has no build for Python {short} on this platform, and building it from source failed", requirement)
    finals = [v for v in wheels if release(v) is not None]
    match = REQ_LINE.match(requirement)
    pin = PIN.match((match.group(3) or "").replace(" ", "")) if match else None
    pick = choose(pin.group(1), pin.group(2), wheels) if pin else None
    newest = finals[-1] if finals else wheels[-1]
    suggestion = pick[1] if pick else None
    return Diagnosis(f"{label} has no build for Python {short} (releases with one: {_span(finals or wheels)}; newest {newest})",
                     requirement, suggestion)


def _index_note(options: Sequence[str]) -> str:
    return f" (with the Dockerfile's pip options {' '.join(options)})" if options else ""


def _span(versions: Sequence[str]) -> str:
    return versions[0] if len(versions) == 1 else f"{versions[0]} ... {versions[-1]}"
