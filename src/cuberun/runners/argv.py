"""Small helpers the container runners share for turning config values into argv items."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from cuberun.errors import split_words

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def tokens(value: Any) -> list[str]:
    """A config value as argv items: a string (shlex-split), a list, or a mapping of flags
    ({network: host, privileged: true} -> --network=host --privileged)."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return split_words(value, "a setting")
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    if isinstance(value, Mapping):
        out: list[str] = []
        for key, val in value.items():
            flag = str(key) if str(key).startswith("-") else f"--{key}"
            if val is None or val is True:
                out.append(flag)
            elif val is not False:
                out.append(f"{flag}={val}")
        return out
    return [str(value)]


def env_value(value: Any) -> str:
    """A YAML value as an environment string (booleans as true/false, null as empty)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def program_name(argv: Sequence[str], default: str) -> str:
    """The executable's name for messages: the first token that is not sudo or one of its options."""
    for tok in argv:
        if tok != "sudo" and not tok.startswith("-"):
            return os.path.basename(tok)
    return default


def uses_sudo(argv: Sequence[str]) -> bool:
    return any(os.path.basename(t) == "sudo" for t in argv)
