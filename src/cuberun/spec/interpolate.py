"""OmegaConf-compatible `${...}` interpolation, without importing OmegaConf.

Supported, as real cubes use it: `${a.b}` node references (typed when the whole string is
one reference), `${oc.env:X}` / `${oc.env:X,default}` (and the older `${env:X}`), nested
references inside resolver arguments, and `\\${` escapes. A reference to a key that the
config does not have, but the environment does (`${HOME}`), takes the environment value:
the reference implementation crashes on it although its docs promise it works.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class InterpolationError(Exception):
    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


_MISSING = object()
MAX_CHAIN = 50  # references followed one after the other (a -> b -> c ...)


class Interpolator:
    def __init__(self, config: Mapping[str, Any], env: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.env = os.environ if env is None else env
        self._stack: list[str] = []

    # -- public -------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        """Resolve every string inside `value` (recursively for dicts and lists)."""
        if self._stack:
            return self._resolve(value)
        try:
            return self._resolve(value)
        except RecursionError:
            raise InterpolationError("the interpolation nests too deeply", "reference the values more directly") from None

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.resolve_string(value)
        if isinstance(value, dict):
            return {k: self._resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v) for v in value]
        return value

    def resolve_string(self, text: str) -> Any:
        if "${" not in text:
            return text
        parts, whole = self._parse(text, 0, top=True)
        if whole is not _MISSING:
            return whole
        return "".join(parts)

    def lookup(self, key: str) -> Any:
        """The resolved value at a dotted key path."""
        if key in self._stack:
            chain = " -> ".join([*self._stack[self._stack.index(key) :], key])
            raise InterpolationError(f"interpolation cycle: {chain}")
        if len(self._stack) >= MAX_CHAIN:
            raise InterpolationError(f"interpolation chain longer than {MAX_CHAIN} references: {self._stack[0]} -> {self._stack[1]} -> ... -> {key}",
                                     "reference the final value directly")
        node: Any = self.config
        for part in key.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = _MISSING
                break
        if node is _MISSING:
            if "." not in key and key in self.env:
                return self.env[key]
            hint = "define it in the cube" if "." in key else "define it in the cube, or use ${oc.env:" + key + "} for an environment variable"
            if "." in key:
                from cuberun.runners.registry import cube_sections

                head, rest = key.split(".", 1)
                if head not in self.config and head in cube_sections():  # a runner's section the cube does not have
                    hint = f"add a '{head}:' section with '{rest}', or choose another --platform"
            raise InterpolationError(f"interpolation key '{key}' not found", hint)
        self._stack.append(key)
        try:
            return self._resolve(node)
        finally:
            self._stack.pop()

    # -- parsing ------------------------------------------------------------------------
    def _parse(self, text: str, pos: int, top: bool) -> tuple[list[str], Any]:
        """Parse from `pos` to the end of text; returns the pieces, and the typed value when
        the whole text is exactly one interpolation."""
        pieces: list[str] = []
        i = pos
        n = len(text)
        single: Any = _MISSING
        count = 0
        literal = False
        while i < n:
            if text.startswith("\\${", i):
                pieces.append("${")
                literal = True
                i += 3
                continue
            if text.startswith("${", i):
                end = self._matching_brace(text, i + 2)
                inner = text[i + 2 : end]
                value = self._evaluate(inner)
                count += 1
                single = value
                pieces.append("" if value is None else _to_text(value))
                i = end + 1
                continue
            pieces.append(text[i])
            literal = True
            i += 1
        whole = single if (count == 1 and not literal) else _MISSING
        return pieces, whole

    @staticmethod
    def _matching_brace(text: str, start: int) -> int:
        depth = 1
        i = start
        while i < len(text):
            if text.startswith("${", i):
                depth += 1
                i += 2
                continue
            if text[i] == "}":
                depth -= 1
                if depth == 0:
                    return i
            i += 1
        raise InterpolationError(f"unclosed interpolation in '{text}'", "every '${' needs a closing '}'")

    def _evaluate(self, inner: str) -> Any:
        inner = inner.strip()
        if not inner:
            raise InterpolationError("empty interpolation '${}'")
        head, sep, rest = inner.partition(":")
        if sep and all(ch.isalnum() or ch in "._" for ch in head) and not head.startswith("."):
            return self._call(head, rest)
        if "${" in inner:
            inner = _to_text(self.resolve_string(inner))
        if inner.startswith("."):
            raise InterpolationError(f"relative interpolation '${{{inner}}}' is not supported", "use the full key path")
        return self.lookup(inner)

    def _call(self, name: str, argtext: str) -> Any:
        args = [self.resolve_string(a.strip()) for a in _split_args(argtext)]
        if name in ("oc.env", "env"):
            if not args or not args[0]:
                raise InterpolationError(f"${{{name}:...}} needs a variable name")
            var = str(args[0])
            if var in self.env:
                return self.env[var]
            if len(args) > 1:
                default = args[1]
                if isinstance(default, str) and len(default) >= 2 and default[0] == default[-1] and default[0] in "'\"":
                    default = default[1:-1]
                return None if default == "null" else default
            raise InterpolationError(
                f"environment variable '{var}' is not set", f"export {var}=..., or give a default: ${{oc.env:{var},DEFAULT}}"
            )
        if name == "oc.select":
            try:
                return self.lookup(str(args[0]))
            except InterpolationError:
                return args[1] if len(args) > 1 else None
        raise InterpolationError(f"unknown resolver '{name}'", "supported: oc.env, oc.select")


def _split_args(text: str) -> list[str]:
    args: list[str] = []
    depth = 0
    current = ""
    quote = ""
    for ch in text:
        if quote:
            current += ch
            if ch == quote:
                quote = ""
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(current)
            current = ""
            continue
        current += ch
    args.append(current)
    return args


def _to_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
