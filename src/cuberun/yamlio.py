"""YAML loading that keeps the line and column of every key and value.

Values come back as plain Python (dict/list/str/int/float/bool/None). Mapping keys are
always the raw key text, so `on:` stays the string "on". Errors become Issues with a
position instead of parser tracebacks.
"""

from __future__ import annotations

import os
from pathlib import Path

from cuberun.errors import Issue, SpecError
from cuberun.valueclass import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TypeVar

    _T = TypeVar("_T")

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_EXPANSION = 100_000  # values aliases may add to a document beyond those written

KeyPath = tuple[str | int, ...]


def copy_data(value: _T) -> _T:
    """A deep copy of plain data (dicts, lists and tuples of scalars: what this module loads, settings,
    schema defaults): copy.deepcopy without importing `copy` and `weakref` on every run. Aliases
    come out as separate copies (the loader refuses recursive ones)."""
    if isinstance(value, dict):
        return {k: copy_data(v) for k, v in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [copy_data(v) for v in value]  # type: ignore[return-value]
    if isinstance(value, tuple):
        return tuple(copy_data(v) for v in value)  # type: ignore[return-value]
    return value


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
    """Read a small UTF-8 text file or raise a one-line SpecError (a regular file only: a FIFO,
    a device or a directory is refused without being read)."""
    from cuberun.safeio import FileProblem, read_regular

    shown = str(path)
    try:
        data = read_regular(path, MAX_BYTES, what=what)
    except FileProblem as exc:
        problem, hint = exc.problem, exc.hint
        if problem.endswith("is a directory, not a regular file"):
            problem = f"{what} is a directory, not a file"
        elif problem.endswith("permission denied"):
            hint = "check its permissions (ls -l), or run as a user who can read it"
        elif problem.endswith("not a regular file"):
            hint = f"give the path of the {what} itself"
        raise SpecError([Issue(problem, shown, hint=hint)]) from None
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
            check_expansion(node, file)
            doc.data = _convert(loader, node, (), doc, 0)
        return doc
    finally:
        loader.dispose()


def check_expansion(root: Any, file: str) -> None:
    """Refuse a document whose aliases (*name) would expand it beyond a bound, or refer to
    themselves: a few hundred bytes of nested aliases otherwise expand to billions of values.
    Linear in the number of distinct nodes (each is sized once)."""
    import yaml

    limit_extra = MAX_ALIAS_EXPANSION
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        if finished:
            open_nodes.discard(key)
            sizes[key] = min(1 + sum(sizes[id(c)] for c in children), 1 << 62)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            mark = node.start_mark
            raise SpecError([Issue("a YAML alias refers to the node that contains it (a recursive structure)", file, mark.line + 1,
                                   mark.column + 1, hint="remove the alias, or point it at another anchor")])
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in sizes)
    expanded, distinct = sizes[id(root)], len(sizes)
    if expanded > distinct + limit_extra:
        raise SpecError([Issue(f"YAML aliases expand the document to {expanded} values ({distinct} written; at most {limit_extra} more "
                               "are allowed)", file,
                               hint="use fewer or smaller aliases (*name) of anchors (&name)")])


def load_value(text: str, origin: str) -> Any:
    """A small YAML value (a -P value, a `config set` value), with aliases bounded as in files."""

    loader = _loader_class()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_expansion(node, origin)
        return loader.construct_document(node)
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
    from cuberun.digests import sha256

    base = os.environ.get("CUBERUN_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "cuberun")
    name = sha256(os.path.abspath(path).encode("utf-8", "surrogateescape")).hexdigest()[:32]
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
    from cuberun.errors import CuberunError
    from cuberun.safeio import read_regular

    try:
        entry = json.loads(read_regular(cache, 4 * MAX_BYTES).decode("utf-8"))
        if entry.get("v") != _CACHE_VERSION or entry.get("id") != ident or entry.get("file") != str(path):
            return None
        doc = Document(file=str(path), data=entry["data"])
        doc.key_marks = {tuple(k): (line, col) for k, line, col in entry["key_marks"]}
        doc.value_marks = {tuple(k): (line, col) for k, line, col in entry["value_marks"]}
        doc.raw_scalars = {tuple(k): raw for k, raw in entry["raw_scalars"]}
        return doc
    except (CuberunError, ValueError, KeyError, TypeError):
        return None


def _cache_put(path: Path, doc: Document) -> None:
    import json

    from cuberun.errors import CuberunError

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
        from cuberun.safeio import write_file

        write_file(cache, text, what="parse cache")
    except (OSError, TypeError, ValueError, CuberunError):
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


def write_atomic(path: Path, text: str, *, what: str = "file", hint: str | None = None) -> Path:
    """Write a file so that readers see the old or the new content, never half of it; never over
    a directory, FIFO or device, and through a symbolic link (see safeio.write_file)."""
    from cuberun.safeio import write_file

    return write_file(path, text, what=what, hint=hint, durable=True)
