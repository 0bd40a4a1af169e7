"""Messages to the user on stderr: whole lines, safe to call from parallel tasks."""

from __future__ import annotations

import sys
import threading

_LOCK = threading.Lock()


def say(message: str) -> None:
    with _LOCK:
        try:
            sys.stderr.write(f"cuberun: {message}\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed pipe, a full disk under a log: never stops a run
            pass


def warn(message: str) -> None:
    say(f"warning: {message}")


_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\a": "\\a", "\b": "\\b", "\f": "\\f", "\v": "\\v", "\x1b": "\\E"}


def _is_control(ch: str) -> bool:
    """C0 and C1 controls, DEL, the Unicode line separators, and the bytes of a file name that
    are not UTF-8 (decoded with surrogateescape)."""
    code = ord(ch)
    return code < 0x20 or 0x7F <= code < 0xA0 or ch in "\u2028\u2029" or 0xDC80 <= code <= 0xDCFF


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in _NAMED and ch != "\x1b":
        return _NAMED[ch]
    if 0xDC80 <= code <= 0xDCFF:
        return f"\\x{code - 0xDC00:02x}"  # the undecodable byte itself
    return f"\\x{code:02x}" if code < 0x80 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """`text` with its control characters written as escapes (\\n, \\x1b, ...), so that a path or a
    name shown to people can never move the cursor, clear the screen or split a line."""
    if not any(_is_control(ch) for ch in text):
        return text
    return "".join(_escape(ch) if _is_control(ch) else ch for ch in text)


def shell_quote(arg: str) -> str:
    """One argument quoted for a POSIX shell, as shlex.quote does; one with control characters
    (a newline, an escape sequence) in bash's $'...' form, so the printed line stays one line,
    shows no raw control character, and still pastes into bash as the same argument."""
    import shlex

    if not any(_is_control(ch) for ch in arg):
        return shlex.quote(arg)
    out = []
    for ch in arg:
        if ch in "\\'":
            out.append("\\" + ch)
        elif _is_control(ch):
            out.append(_NAMED.get(ch) or _escape(ch))
        else:
            out.append(ch)
    return "$'" + "".join(out) + "'"
