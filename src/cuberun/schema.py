"""A small declarative schema for config sections: types, choices, defaults, did-you-mean.

Runners declare their config with it, and the cube loader and settings reuse it, so every
section is checked the same way and every problem gets a key path and a position.
"""

from __future__ import annotations

from collections.abc import Mapping

from cuberun.errors import Issue
from cuberun.hints import did_you_mean
from cuberun.valueclass import dataclass
from cuberun.yamlio import Document, KeyPath

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a mapping", list: "a list"}


@dataclass(frozen=True)
class Field:
    types: tuple[type, ...] = (str,)
    default: Any = None
    choices: tuple[Any, ...] | None = None
    doc: str = ""
    nullable: bool = True
    env: bool = False  # the key holds a task's environment (name -> value): its names are checked

    def describe_type(self) -> str:
        return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in self.types)


Schema = Mapping[str, Field]


def check_value(name: str, value: Any, spec: Field) -> str | None:
    """A problem with `value` for field `spec`, or None."""
    if value is None:
        return None if spec.nullable else "must be set"
    ok = any(isinstance(value, t) and not (t in (int, float) and isinstance(value, bool)) for t in spec.types)
    if not ok and float in spec.types and isinstance(value, int) and not isinstance(value, bool):
        ok = True
    if not ok:
        return f"must be {spec.describe_type()}, not {type(value).__name__} {value!r}"
    if spec.choices is not None and value not in spec.choices:
        return f"'{value}' is not allowed; expected one of " + ", ".join(f"'{c}'" for c in spec.choices)
    return None


def validate_section(
    data: Any, schema: Schema, path: KeyPath, doc: Document | None, issues: list[Issue], *, what: str = "key", file: str | None = None
) -> None:
    """Check a mapping against a schema, appending one Issue per problem."""

    def issue(sub: KeyPath, message: str, hint: str | None = None, value: bool = False) -> Issue:
        if doc is not None:
            return doc.issue(sub, message, hint, value=value)
        from cuberun.yamlio import dotted

        return Issue(message, file, None, None, dotted(sub) or None, hint)

    if data is None:
        return
    if not isinstance(data, dict):
        issues.append(issue(path, f"must be a mapping, not {type(data).__name__}", value=True))
        return
    for key, value in data.items():
        spec = schema.get(key)
        if spec is None:
            issues.append(issue((*path, key), f"unknown {what} '{key}'", did_you_mean(key, schema.keys())))
            continue
        problem = check_value(key, value, spec)
        if problem:
            hint = None
            if spec.choices is not None and isinstance(value, str):
                from cuberun.hints import closest

                guess = closest(value, [str(c) for c in spec.choices])
                hint = f"did you mean '{guess}'?" if guess else None
            elif str in spec.types and isinstance(value, (int, float)):
                hint = "quote the value to make it a string"
            issues.append(issue((*path, key), problem, hint, value=True))


def typed(raw: str, spec: Field | None, origin: str = "-P") -> Any:
    """A `-P` value typed by the key's Field: read like YAML when the result is a type the key
    takes, else kept as written when the key takes a string (`image=123` stays "123"). Without a
    Field: YAML, but a float stays the text (versions like 1.10)."""
    import yaml

    from cuberun import yamlio

    if raw == "":
        return None
    try:
        value = yamlio.load_value(raw, origin)  # aliases bounded, as in cube files
    except yaml.YAMLError:
        return raw
    if spec is None:
        return raw if isinstance(value, float) else value
    if value is None or isinstance(value, str):
        return value  # `null` unsets; a quoted '' or 'x y' is the string inside the quotes
    if check_value("", value, spec) is None:
        return value
    return raw if str in spec.types else value


def defaults(schema: Schema) -> dict[str, Any]:
    from cuberun.yamlio import copy_data

    return {k: copy_data(f.default) for k, f in schema.items()}
