"""What every legacy conversion shares: loading the legacy files once each, collecting every
problem, key positions for messages, metadata, and small value helpers."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from cuberun.errors import Issue, SpecError
from cuberun.spec.legacy.formats import (
    WORKSPACE_VARS,
)
from cuberun.spec.model import DIRECTORY, FILE, OUTPUT
from cuberun.yamlio import Document, KeyPath


# -- helpers ------------------------------------------------------------------------------------
def _text(doc: Document, path: KeyPath, value: Any) -> str | None:
    """A scalar as the file wrote it (so `version: 0.10` stays "0.10")."""
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, str):
        return value
    return doc.raw_scalars.get(path, str(value))


def strip_workspace(value: str) -> str:
    """`$WORKSPACE/x` -> `x` (relative to the workspace); `$WORKSPACE` alone -> `.`."""
    for var in WORKSPACE_VARS:
        if value == var:
            return "."
        if value.startswith(var + "/"):
            rest = value[len(var) + 1 :].lstrip("/")
            return rest or "."
    return value


def _guess_type(default: str, root: Path, io: str) -> str | None:
    """The type of a parameter the legacy format left untyped: what exists in the default
    workspace decides; otherwise an output with a file extension is a file, else a directory."""
    from cuberun.resolve import expand_path

    path = expand_path(default, root / "workspace")[0]
    if path.is_dir():
        return DIRECTORY
    if path.is_file():
        return FILE
    if default.endswith(("/", "\\")):
        return DIRECTORY
    if io == OUTPUT:
        return FILE if PurePath(default).suffix else DIRECTORY
    return None


def _param(default: str, ptype: str | None) -> dict[str, Any]:
    return {"type": ptype, "default": default} if ptype else {"default": default}


def _tokens(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list):
        return [str(v) for v in value]
    return [str(value)]


def _flow(data: Any) -> str:
    import yaml

    return str(yaml.safe_dump(data, default_flow_style=True, sort_keys=False, width=10_000)).strip()


class _Base:
    """One conversion: loads the legacy files once each and collects every problem."""

    def __init__(self, file: Path, fmt: str) -> None:
        self.file = file
        self.root = file.parent
        self.fmt = fmt
        self.issues: list[Issue] = []
        self.notes: list[str] = []
        self.assumptions: list[str] = []
        self.sources: list[Path] = [file]
        self.marks: dict[KeyPath, tuple[int, int]] = {}

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def load(self, path: Path, what: str) -> Document | None:
        from cuberun import yamlio

        try:
            doc = yamlio.load(path, what)
        except SpecError as exc:
            self.issues.extend(exc.issues)
            return None
        self.sources.append(path)
        if doc.data is None:
            self.issues.append(Issue(f"{what} is empty", str(path)))
            return None
        if not isinstance(doc.data, dict):
            self.issues.append(doc.issue((), f"{what} must be a mapping, not {type(doc.data).__name__}", value=True))
            return None
        return doc

    def mark(self, target: KeyPath, doc: Document, source: KeyPath) -> None:
        if doc.file == str(self.file):
            line, col = doc.position(source)
            if line is not None and col is not None:
                self.marks[target] = (line, col)


    # -- shared pieces ------------------------------------------------------------------------
    def metadata(self, doc: Document, name_keys: Sequence[str] = ("name",)) -> dict[str, Any]:
        data = doc.data
        out: dict[str, Any] = {}
        for key in name_keys:
            name = _text(doc, (key,), data.get(key))
            if name and name.strip():
                out["name"] = name
                self.mark(("name",), doc, (key,))
                break
        else:
            present = [key for key in name_keys if key in data]
            if present:
                self.issues.append(doc.issue((present[0],), "must be a non-empty string", value=True))
            else:
                self.issues.append(Issue(f"'{name_keys[0]}' is missing", doc.file, hint=f"add '{name_keys[0]}: my_box' at the top level"))
        version = _text(doc, ("version",), data.get("version"))
        if version is not None:
            out["version"] = version
        description = data.get("description")
        if isinstance(description, str):
            out["description"] = description
        author = data.get("author")
        if isinstance(author, str) and author.strip():
            out["authors"] = [{"name": author}]
        elif isinstance(data.get("authors"), list):
            out["authors"] = data["authors"]
        return out
