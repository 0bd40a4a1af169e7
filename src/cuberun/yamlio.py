"""YAML loading that keeps the line and column of every key and value.

Values come back as plain Python (dict/list/str/int/float/bool/None). Mapping keys are
always the raw key text, so `on:` stays the string "on". Errors become Issues with a
position instead of parser tracebacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cuberun.errors import Issue, SpecError
from cuberun.valueclass import dataclass, field

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64

KeyPath = tuple[str | int, ...]


def dotted(path: KeyPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass
class Document:
    """A loaded YAML file: its data, and where each key path stands in the file."""

    file: str
    data: Any
    key_marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    value_marks: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    raw_scalars: dict[KeyPath, str] = field(default_factory=dict)

    def position(self, path: KeyPath, *, value: bool = False) -> tuple[int | None, int | None]:
        marks = self.value_marks if value else self.key_marks
        probe = path
        while True:
            if probe in marks:
                return marks[probe]
            if not value and probe in self.value_marks:
                return self.value_marks[probe]
            if not probe:
                return (None, None)
            probe = probe[:-1]

    def issue(
        self, path: KeyPath, message: str, hint: str | None = None, *, value: bool = False, severity: str = "error"
    ) -> Issue:
        line, col = self.position(path, value=value)
        return Issue(message, self.file, line, col, dotted(path) or None, hint, severity)


def _loader_class() -> Any:
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: Path, what: str = "file") -> str:
    """Read a small UTF-8 text file or raise a one-line SpecError."""
    shown = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise SpecError([Issue(f"{what} is too large ({size} bytes; the limit is {MAX_BYTES})", shown)])
        data = path.read_bytes()
    except IsADirectoryError:
        raise SpecError([Issue(f"{what} is a directory, not a file", shown)]) from None
    except FileNotFoundError:
        raise SpecError([Issue(f"{what} does not exist", shown)]) from None
    except PermissionError:
        raise SpecError([Issue(f"cannot read {what}: permission denied", shown)]) from None
    except OSError as exc:
        raise SpecError([Issue(f"cannot read {what}: {exc.strerror or exc}", shown)]) from None
    if b"\x00" in data:
        raise SpecError([Issue(f"{what} is binary, not YAML text", shown, hint="point to the mlcube.yaml text file")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError([Issue("not valid UTF-8 text", shown, line, hint="save the file as UTF-8")]) from None


def parse(text: str, file: str) -> Document:
    """Parse YAML text into a Document; a syntax error raises SpecError with its position."""
    import yaml

    loader = _loader_class()(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            problem = (exc.problem or exc.context or "invalid YAML").rstrip(".")
            line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
            raise SpecError(
                [Issue(f"invalid YAML: {problem}", file, line, col, hint="check the brackets, quotes and indentation")]
            ) from None
        except yaml.reader.ReaderError as exc:
            before = text[: exc.position]
            line, col = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
            char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
            raise SpecError([Issue(f"invalid YAML: unacceptable character {char}: {exc.reason}", file, line, col,
                                   hint="remove control characters from the file")]) from None
        except yaml.YAMLError as exc:
            raise SpecError([Issue("invalid YAML: " + " ".join(str(exc).split()), file)]) from None
        doc = Document(file=file, data=None)
        if node is not None:
            doc.data = _convert(loader, node, (), doc, 0)
        return doc
    finally:
        loader.dispose()


def load(path: Path, what: str = "file") -> Document:
    """Parse a YAML file, through a cache of parsed documents keyed by the file's identity
    (size, mtime, inode): a repeated command skips importing and running the YAML parser."""
    cached = _cache_get(path)
    if cached is not None:
        _cache_used(path)
        return cached
    doc = parse(read_text(path, what), str(path))
    _cache_put(path, doc)
    _cache_prune(path)
    return doc


_CACHE_VERSION = 1
# the parse cache is a least-recently-used cache: at most this many entries and bytes (an entry's
# modification time is its last use); the oldest go when a new entry is written
CACHE_MAX_ENTRIES = 256
CACHE_MAX_BYTES = 32 * 1024 * 1024


def _cache_used(path: Path) -> None:
    cache = _cache_file(path)
    if cache is not None:
        try:
            os.utime(cache)
        except OSError:
            pass


def _cache_prune(path: Path, max_entries: int | None = None, max_bytes: int | None = None) -> list[Path]:
    """Remove the least recently used entries of the cache folder of `path` beyond the bounds
    (and temporary files of writers that died); only files named as the cache names them.
    Returns what was removed."""
    import re
    import stat
    import time

    cache = _cache_file(path)
    if cache is None:
        return []
    limit_n = CACHE_MAX_ENTRIES if max_entries is None else max_entries
    limit_b = CACHE_MAX_BYTES if max_bytes is None else max_bytes
    entry_name = re.compile(r"[0-9a-f]{32}\.json")
    temp_name = re.compile(r"\.[0-9a-f]{32}\.json\.[0-9]+\.tmp")
    entries: list[tuple[int, int, Path]] = []
    removed: list[Path] = []
    now = time.time()
    try:
        with os.scandir(cache.parent) as it:
            for item in it:
                try:
                    st = item.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if entry_name.fullmatch(item.name):
                    entries.append((st.st_mtime_ns, st.st_size, Path(item.path)))
                elif temp_name.fullmatch(item.name) and now - st.st_mtime > 3600:
                    removed.append(Path(item.path))
    except OSError:
        return []
    entries.sort(reverse=True)  # most recently used first
    kept_n = kept_b = 0
    for _mtime, size, entry in entries:
        if entry == cache or (kept_n < limit_n and kept_b + size <= limit_b):
            kept_n += 1
            kept_b += size
        else:
            removed.append(entry)
    for old in removed:
        try:
            old.unlink()
        except OSError:
            pass
    return removed


def _cache_file(path: Path) -> Path | None:
    if os.environ.get("CUBERUN_NO_PARSE_CACHE"):
        return None
    import hashlib

    base = os.environ.get("CUBERUN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cuberun")
    name = hashlib.sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return Path(base) / "parsed" / f"{name}.json"


def _identity(path: Path) -> list[int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns]


def _cache_get(path: Path) -> Document | None:
    import json

    cache = _cache_file(path)
    ident = _identity(path)
    if cache is None or ident is None:
        return None
    try:
        entry = json.loads(cache.read_text(encoding="utf-8"))
        if entry.get("v") != _CACHE_VERSION or entry.get("id") != ident or entry.get("file") != str(path):
            return None
        doc = Document(file=str(path), data=entry["data"])
        doc.key_marks = {tuple(k): (line, col) for k, line, col in entry["key_marks"]}
        doc.value_marks = {tuple(k): (line, col) for k, line, col in entry["value_marks"]}
        doc.raw_scalars = {tuple(k): raw for k, raw in entry["raw_scalars"]}
        return doc
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _cache_put(path: Path, doc: Document) -> None:
    import json

    cache = _cache_file(path)
    ident = _identity(path)
    if cache is None or ident is None:
        return
    entry = {
        "v": _CACHE_VERSION,
        "id": ident,
        "file": str(path),
        "data": doc.data,
        "key_marks": [[list(k), line, col] for k, (line, col) in doc.key_marks.items()],
        "value_marks": [[list(k), line, col] for k, (line, col) in doc.value_marks.items()],
        "raw_scalars": [[list(k), raw] for k, raw in doc.raw_scalars.items()],
    }
    try:
        text = json.dumps(entry, allow_nan=False)
        if json.loads(text)["data"] != doc.data:
            return  # something YAML has and JSON has not (dates, tuples): no cache for this file
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, cache)
    except (OSError, TypeError, ValueError):
        return


def _convert(loader: Any, node: Any, path: KeyPath, doc: Document, depth: int) -> Any:
    import yaml

    if depth > MAX_DEPTH:
        line, col = node.start_mark.line + 1, node.start_mark.column + 1
        raise SpecError([Issue(f"nesting is deeper than {MAX_DEPTH} levels", doc.file, line, col, dotted(path[:3]) + "...")])
    doc.value_marks.setdefault(path, (node.start_mark.line + 1, node.start_mark.column + 1))
    if isinstance(node, yaml.MappingNode):
        try:
            loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            raise SpecError([doc.issue(path, f"invalid merge key: {exc.problem}", value=True)]) from None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                raise SpecError([Issue("a mapping key must be a plain scalar", doc.file, line, col, dotted(path) or None)])
            key = str(key_node.value)
            sub = (*path, key)
            if key in result:
                line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                first = doc.key_marks.get(sub, (None, None))[0]
                raise SpecError(
                    [Issue(f"duplicate key '{key}'", doc.file, line, col, dotted(sub), hint=f"it is already set on line {first}")]
                )
            doc.key_marks[sub] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
            result[key] = _convert(loader, value_node, sub, doc, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, (*path, i), doc, depth + 1) for i, item in enumerate(node.value)]
    doc.raw_scalars[path] = str(node.value)
    try:
        return loader.construct_object(node, deep=True)
    except yaml.MarkedYAMLError as exc:
        raise SpecError([doc.issue(path, f"invalid value: {exc.problem or exc.context}", value=True)]) from None
    except yaml.YAMLError as exc:
        raise SpecError([doc.issue(path, "invalid value: " + " ".join(str(exc).split()), value=True)]) from None
    except ValueError as exc:
        raise SpecError([doc.issue(path, f"invalid value: {exc}", value=True)]) from None


def dump(data: Any) -> str:
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=False, allow_unicode=True))


def write_atomic(path: Path, text: str) -> None:
    """Write a file so that readers see the old or the new content, never half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
