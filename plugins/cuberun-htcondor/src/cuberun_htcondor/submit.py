"""HTCondor submit descriptions as data: ordered (command, value) pairs rendered by one pure
function, with every user value quoted by HTCondor's own rules (never a shell).

Quoting (condor_submit's "new syntax"): `arguments` and `environment` are one double-quoted
string; an item holding white space or quotes is wrapped in single quotes with `'` doubled,
and every `"` is doubled. `$` would start a submit macro (`$(Cluster)`), so a literal `$` in a
user value becomes `$(DOLLAR)`, the macro condor_submit predefines for it. Newlines, carriage
returns and NUL cannot be written in a submit file at all: they are refused with the key path.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from cuberun.errors import UsageError
from cuberun.valueclass import dataclass

_UNWRITABLE = re.compile(r"[\n\r\x00]")
_COMMAND = re.compile(r"^\+?[A-Za-z_][A-Za-z0-9_.]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Literal(str):
    """A value written exactly as given (our own macros, e.g. `$(Cluster)`): never escaped."""


def check(value: str, what: str) -> str:
    if _UNWRITABLE.search(value):
        raise UsageError(f"{what}: {value!r} holds a newline, carriage return or NUL, which a submit description cannot hold",
                         "remove the control character")
    return value


def escape(value: str, what: str) -> str:
    """A user value in a submit command: `$` made literal."""
    return check(value, what).replace("$", "$(DOLLAR)")


def path_value(path: str, what: str) -> str:
    if path != path.strip():
        raise UsageError(f"{what}: {path!r} starts or ends with white space, which condor_submit strips", "rename the file or folder")
    return escape(path, what)


def _quote_item(item: str, what: str) -> str:
    item = escape(item, what).replace('"', '""')
    if item == "" or any(c in item for c in " \t'\""):
        return "'" + item.replace("'", "''") + "'"
    return item


def arguments(argv: Sequence[str], what: str = "arguments") -> str:
    return '"' + " ".join(_quote_item(a, what) for a in argv) + '"'


def environment(env: Mapping[str, str], what: str = "environment") -> str:
    items = []
    for name, value in sorted(env.items()):
        if not _ENV_NAME.match(name):
            raise UsageError(f"{what}: {name!r} is not an environment variable name", "use letters, digits and _")
        items.append(f"{name}={_quote_item(value, f'{what}.{name}')}")
    return '"' + " ".join(items) + '"'


def file_list(paths: Iterable[str], what: str) -> str:
    out = []
    for p in paths:
        if "," in p:
            raise UsageError(f"{what}: {p!r} holds a comma, which separates the items of an HTCondor file list", "rename it")
        out.append(path_value(p, what))
    return ", ".join(out)


def _remap_item(path: str, what: str, bad: str) -> str:
    if any(c in path for c in bad):
        shown = " or ".join(repr(c) for c in bad)
        raise UsageError(f"{what}: {path!r} holds {shown}, which transfer_output_remaps cannot hold", "rename it, or use files: shared")
    return path_value(path, what)


def remaps(pairs: Sequence[tuple[str, str]], what: str) -> str:
    # HTCondor 25 splits each item at its first '=' and keeps a backslash as it is: a target may hold '='
    items = [_remap_item(name, what, ';="') + " = " + _remap_item(target, what, ';"') for name, target in pairs]
    return '"' + "; ".join(items) + '"'


def check_queue(statement: str) -> str:
    """The queue statement: one line, or `queue VAR from (` + one line per item + `)`."""
    lines = statement.split("\n")
    if len(lines) > 1 and not (lines[0].endswith("from (") and lines[-1] == ")" and all(ln and not ln.startswith(")") for ln in lines[1:-1])):
        raise UsageError(f"a queue statement cannot hold {statement!r}", "this is a bug in the submit description")
    return "\n".join(check(ln, "queue") for ln in lines)


@dataclass(frozen=True)
class SubmitDescription:
    """What condor_submit reads: (command, value) pairs, then one `queue` statement."""

    commands: tuple[tuple[str, str], ...]
    queue: str = "queue"

    def render(self) -> str:
        lines = []
        for key, value in self.commands:
            if not _COMMAND.match(key):
                raise UsageError(f"htcondor submit command {key!r} is not a valid name", "use letters, digits, _ and . (custom attributes start with +)")
            lines.append(f"{key} = {check(value, key)}")
        lines.append(check_queue(self.queue))
        return "\n".join(lines) + "\n"

    def get(self, key: str) -> str | None:
        for k, v in self.commands:
            if k == key:
                return v
        return None
